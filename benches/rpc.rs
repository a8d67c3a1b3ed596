//! RPC figures between two real nodes on 127.0.0.1: GetStats and GetPeers round trips through
//! the caller's control socket (as `constella stats` and the bot use them), and the idle CPU,
//! RSS and thread count of both daemons before and after the calls (on-demand measurement
//! must leave nothing running behind).
//!
//! `cargo bench --bench rpc` (release), or `cargo bench --profile dev --bench rpc` to reuse a
//! debug build. `CONSTELLA_BENCH_CALLS` (default 200) and `CONSTELLA_BENCH_IDLE_SECS`
//! (default 10) change the sizes.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, agreed_leader};
use support::{cpu_ticks, env_or, percentile};

/// One control-socket exchange; returns the answer line.
fn call(socket: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(socket).expect("control socket");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    answer
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .trim()
        .to_owned()
}

/// CPU use of each process over `window`, in % of one core.
fn idle_cpu(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    std::thread::sleep(window);
    pids.iter()
        .zip(before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / window.as_secs_f64())
        .collect()
}

fn round_trips(socket: &Path, request: &str, expect: &str, calls: u64) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            let answer = call(socket, request);
            let took = start.elapsed();
            assert!(answer.contains(expect), "unexpected answer: {answer}");
            took
        })
        .collect();
    times.sort();
    times
}

fn report(what: &str, times: &[Duration]) {
    let total: Duration = times.iter().sum();
    println!(
        "{what:<26} n={} p50={:.1} ms p99={:.1} ms max={:.1} ms mean={:.1} ms",
        times.len(),
        percentile(times, 0.50).as_secs_f64() * 1e3,
        percentile(times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / times.len() as f64,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let calls = env_or("CONSTELLA_BENCH_CALLS", 200);
    let idle = Duration::from_secs(env_or("CONSTELLA_BENCH_IDLE_SECS", 10));
    let cluster = Cluster::start(&["alpha", "bravo"], &[100, 100], None);
    let nodes: Vec<&common::Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo"], Duration::from_secs(15));
    let (alpha, bravo) = (cluster.node("alpha"), cluster.node("bravo"));
    let pids = [alpha.pid(), bravo.pid()];
    let socket = alpha.dir.join("control.sock");
    // Let start-up work (identify, kad, first gossip) settle before the idle window.
    std::thread::sleep(Duration::from_secs(3));

    let rss = |pid| status_field(pid, "VmRSS:");
    let threads = |pid| status_field(pid, "Threads:");
    let before = idle_cpu(&pids, idle);
    let rss_before: Vec<String> = pids.iter().map(|p| rss(*p)).collect();
    let threads_before: Vec<String> = pids.iter().map(|p| threads(*p)).collect();

    let ticks_before = cpu_ticks(bravo.pid());
    let started = Instant::now();
    let stats = round_trips(
        &socket,
        r#"{"command":"stats","target":"bravo"}"#,
        "\"stats\"",
        calls,
    );
    let stats_wall = started.elapsed();
    let stats_ticks = cpu_ticks(bravo.pid()) - ticks_before;
    let peers = round_trips(
        &socket,
        r#"{"command":"peers_of","target":"bravo"}"#,
        "\"peers_of\"",
        calls,
    );
    let threads_right_after: Vec<String> = pids.iter().map(|p| threads(*p)).collect();

    // The blocking pool keeps an idle thread for 10 s; wait that out, then measure idle again.
    std::thread::sleep(Duration::from_secs(11));
    let after = idle_cpu(&pids, idle);
    let rss_after: Vec<String> = pids.iter().map(|p| rss(*p)).collect();
    let threads_after: Vec<String> = pids.iter().map(|p| threads(*p)).collect();

    println!("constella RPC between two nodes on 127.0.0.1 ({calls} calls each)");
    report("GetStats round trip", &stats);
    report("GetPeers round trip", &peers);
    println!(
        "GetStats cost on the target: {:.2} ms CPU per call ({stats_ticks} ticks over {calls} calls, {:.1} s)",
        stats_ticks as f64 * 10.0 / calls as f64,
        stats_wall.as_secs_f64()
    );
    for (i, name) in ["alpha (caller)", "bravo (target)"].iter().enumerate() {
        println!(
            "{name:<15} idle CPU before {:.2} % after {:.2} % | RSS before {} after {} | threads before {} right after {} after {}",
            before[i],
            after[i],
            rss_before[i],
            rss_after[i],
            threads_before[i],
            threads_right_after[i],
            threads_after[i]
        );
    }
}
