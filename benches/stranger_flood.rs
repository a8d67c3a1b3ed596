//! A node under a stranger flood: RSS and CPU of one real node while 1,000 outsiders (each its
//! own libp2p identity, noise handshake done, back 1 s after the node closes it) hold idle
//! connections to it, and the latency of joins made meanwhile.
//!
//! `cargo bench --bench stranger_flood` (release), or `cargo bench --profile dev --bench stranger_flood` to reuse
//! a debug build. `CONSTELLA_BENCH_STRANGERS` (default 1000), `CONSTELLA_BENCH_JOINS`
//! (default 5) and `CONSTELLA_BENCH_WINDOW_SECS` (default 20) change the sizes.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Node, wait_for};
use support::flood::StrangerFlood;
use support::{cpu_ticks, env_or, percentile, rss_kib};

/// CPU (% of one core) over `window`, and the highest RSS sampled every 250 ms meanwhile.
fn load(pid: u32, window: Duration) -> (f64, u64) {
    let before = cpu_ticks(pid);
    let started = Instant::now();
    let mut peak = rss_kib(pid);
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(250));
        peak = peak.max(rss_kib(pid));
    }
    let cpu = (cpu_ticks(pid) - before) as f64 / started.elapsed().as_secs_f64();
    (cpu, peak)
}

fn connected_peers(node: &Node) -> u64 {
    node.status()
        .and_then(|s| s["connected_peers"].as_u64())
        .unwrap_or(0)
}

fn main() {
    let strangers = env_or("CONSTELLA_BENCH_STRANGERS", 1000) as usize;
    let joins = env_or("CONSTELLA_BENCH_JOINS", 5);
    let window = Duration::from_secs(env_or("CONSTELLA_BENCH_WINDOW_SECS", 20));
    let root = tempfile::tempdir().unwrap();
    let mut alpha = Node::new(root.path(), "alpha");
    alpha.init(10);
    alpha.start();
    let pid = alpha.pid();

    let (idle_cpu, idle_rss) = load(pid, window);
    println!("idle node:            CPU {idle_cpu:5.1} % of a core, RSS {idle_rss} KiB");

    let addr = format!("/ip4/127.0.0.1/tcp/{}", alpha.port)
        .parse()
        .unwrap();
    let flood = StrangerFlood::start(addr, strangers, Duration::from_secs(1));
    let counts = flood.counts();
    let started = Instant::now();
    wait_for(
        Duration::from_secs(120),
        "every stranger connected once",
        || (counts.established.load(Ordering::Relaxed) >= strangers as u64).then_some(()),
    );
    println!(
        "flood: {strangers} strangers connected once within {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let established_before = counts.established.load(Ordering::Relaxed);
    let (flood_cpu, flood_rss) = load(pid, window);
    let churn = (counts.established.load(Ordering::Relaxed) - established_before) as f64
        / window.as_secs_f64();
    println!(
        "under the flood:      CPU {flood_cpu:5.1} % of a core, peak RSS {flood_rss} KiB, {} connections open at the node, {} held by strangers, {churn:.0} new stranger connections/s",
        connected_peers(&alpha),
        counts.open.load(Ordering::Relaxed)
    );

    let mut latencies = Vec::new();
    for i in 0..joins {
        let link = alpha.invite("5m");
        let joiner = Node::new(root.path(), &format!("joiner-{i}"));
        let started = Instant::now();
        let out = joiner.cli_owned(&joiner.join_args(&link, 100 + i as u32));
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "join {i} failed during the flood: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        latencies.push(took);
    }
    latencies.sort();
    println!(
        "join during the flood ({joins} joins): p50 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    );
    drop(flood);
    let (after_cpu, after_rss) = load(pid, Duration::from_secs(5));
    println!(
        "after the flood (5 s): CPU {after_cpu:5.1} % of a core, RSS {after_rss} KiB, {} connections open",
        connected_peers(&alpha)
    );
}
