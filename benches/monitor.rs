//! Monitoring figures with real daemons on 127.0.0.1: idle CPU and RSS of a node with the
//! sampler on and of one with it off (`--no-sampling`), side by side over the same window, and
//! the time of a `/metrics` scrape.
//!
//! `cargo bench --bench monitor` (release), or `cargo bench --profile dev --bench monitor` to
//! reuse a debug build. `CONSTELLA_BENCH_IDLE_SECS` (default 120; a sample is taken every 10 s,
//! so keep it a multiple of 10) and `CONSTELLA_BENCH_SCRAPES` (default 200) change the sizes.
//! The disk used by 30 days of history and the chart render time are measured in-process:
//! `cargo test --release --bin constella -- --ignored --nocapture figures_`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, free_port};
use support::{cpu_ticks, env_or, percentile, rss_kib};

fn scrape(port: u16) -> usize {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    response.len()
}

fn main() {
    let idle = Duration::from_secs(env_or("CONSTELLA_BENCH_IDLE_SECS", 120));
    let scrapes = env_or("CONSTELLA_BENCH_SCRAPES", 200);
    let port = free_port();
    // Two one-node networks: the same daemon with the sampler on and off.
    let on = Cluster::start_with(&["sampling"], &[100], None, |node| {
        node.run_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
    });
    let off = Cluster::start_with(&["quiet"], &[100], None, |node| {
        node.run_args = vec!["--no-sampling".into()];
    });
    let pids = [on.nodes[0].pid(), off.nodes[0].pid()];
    // Start-up settles; the first samples create the ring files.
    std::thread::sleep(Duration::from_secs(12));
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    std::thread::sleep(idle);
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / idle.as_secs_f64())
        .collect();
    println!(
        "idle over {} s: sampling on {:.2} % CPU, RSS {:.1} MiB | sampling off {:.2} % CPU, RSS {:.1} MiB",
        idle.as_secs(),
        cpu[0],
        rss_kib(pids[0]) as f64 / 1024.0,
        cpu[1],
        rss_kib(pids[1]) as f64 / 1024.0,
    );
    let history = on.nodes[0].dir.join("history");
    let du = std::process::Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(&history)
        .output()
        .unwrap();
    println!(
        "history on disk after {} s: {} (apparent size is fixed: 414,752 B per series)",
        idle.as_secs() + 12,
        String::from_utf8_lossy(&du.stdout).trim()
    );

    let mut times: Vec<Duration> = Vec::new();
    let mut bytes = 0;
    for _ in 0..scrapes {
        let start = Instant::now();
        bytes = scrape(port);
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "/metrics scrape (HTTP round trip, {bytes} B answer) n={scrapes} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}
