//! A node under a flood of half-open connections (TCP connected, no handshake): how many it
//! closes at once (the pending-incoming limit), and its RSS, descriptors and CPU meanwhile.
//! `cargo bench --bench flood`; `CONSTELLA_BENCH_CONNECTIONS` (default 1000) sets the size.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Node, closed_by_remote, wait_for};

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn main() {
    let connections = support::env_or("CONSTELLA_BENCH_CONNECTIONS", 1000);
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(100);
    node.start();
    let pid = node.pid();
    wait_for(Duration::from_secs(10), "2 s of uptime", || {
        (node.status()?["uptime_secs"].as_u64()? >= 2).then_some(())
    });
    println!(
        "idle: RSS {:.1} MiB, {} descriptors",
        support::rss_kib(pid) as f64 / 1024.0,
        descriptors(pid)
    );

    let cpu_before = support::cpu_ticks(pid);
    let started = Instant::now();
    let flood: Vec<TcpStream> = (0..connections)
        .map(|_| {
            let stream = TcpStream::connect(node.addr()).expect("connect");
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let closed = flood.iter().filter(|s| closed_by_remote(s)).count();
    let cpu = (support::cpu_ticks(pid) - cpu_before) as f64 / 100.0;
    let answers = node.cli(&["status"]).status.success();
    println!(
        "{connections} half-open connections held 5 s: {closed} closed by the node at once, RSS {:.1} MiB, {} descriptors, CPU {:.1} % of a core, status answers: {answers}",
        support::rss_kib(pid) as f64 / 1024.0,
        descriptors(pid),
        100.0 * cpu / started.elapsed().as_secs_f64()
    );
    // The rest time out in their upgrade (10 s).
    wait_for(Duration::from_secs(20), "the upgrades to time out", || {
        (descriptors(pid) < 40).then_some(())
    });
    println!(
        "after the upgrade timeout: RSS {:.1} MiB, {} descriptors ({:.0} s after the flood began)",
        support::rss_kib(pid) as f64 / 1024.0,
        descriptors(pid),
        started.elapsed().as_secs_f64()
    );
}
