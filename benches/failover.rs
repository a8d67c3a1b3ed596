//! Failover and idle-cost benchmark (prints figures; asserts nothing about time).
//!
//! Starts 3 real nodes on 127.0.0.1, kills the leader with SIGKILL 10 times (restarting it each
//! time) and measures the time from the kill until both survivors name the same new leader; then
//! measures how long the restarted node takes to be alive on every node again, and each node's
//! CPU and RSS while idle for 60 s.
//!
//! Run: `cargo bench --bench failover` (env FAILOVER_ROUNDS, IDLE_SECS to change the sizes).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{Cluster, Node, agreed_leader};
use support::{cpu_ticks, env_or, percentile, rss_kib};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe benches this way.
    }
    let rounds = env_or("FAILOVER_ROUNDS", 10);
    let idle_secs = env_or("IDLE_SECS", 60);
    let names = ["alpha", "bravo", "charlie"];
    let mut cluster = Cluster::start(&names, &[100, 100, 100], None);
    let all: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&all, &names, Duration::from_secs(20));

    let mut samples = Vec::new();
    let mut rejoin = Vec::new();
    for round in 0..rounds {
        let nodes: Vec<&Node> = cluster.nodes.iter().collect();
        let leader = agreed_leader(&nodes, &names, Duration::from_secs(20));
        let survivors: Vec<String> = names
            .iter()
            .filter(|n| **n != leader)
            .map(|n| n.to_string())
            .collect();
        let killed_at = Instant::now();
        cluster.node_mut(&leader).kill();
        let elapsed = loop {
            let seen: Vec<Option<(String, usize)>> = survivors
                .iter()
                .map(|n| cluster.node(n).leader_and_alive())
                .collect();
            let agreed = seen.iter().all(|s| {
                s.as_ref().is_some_and(|(l, alive)| {
                    *l != leader && *alive == 2 && Some(l) == seen[0].as_ref().map(|x| &x.0)
                })
            });
            if agreed {
                break killed_at.elapsed();
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no new leader after 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        println!(
            "round {round:2}: killed {leader:8} -> new leader after {:7.1} ms",
            elapsed.as_secs_f64() * 1e3
        );
        samples.push(elapsed.as_secs_f64() * 1e3);
        let restarted_at = Instant::now();
        cluster.node_mut(&leader).start();
        loop {
            let back = names.iter().all(|n| {
                cluster
                    .node(n)
                    .leader_and_alive()
                    .is_some_and(|(_, alive)| alive == 3)
            });
            if back {
                break;
            }
            assert!(
                restarted_at.elapsed() < Duration::from_secs(30),
                "restarted node not alive after 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        rejoin.push(restarted_at.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    if !samples.is_empty() {
        println!(
            "failover after SIGKILL over {rounds} rounds: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9),
            samples[samples.len() - 1]
        );
    }

    rejoin.sort_by(f64::total_cmp);
    if !rejoin.is_empty() {
        println!(
            "restart from the state file until alive on every node (process start included): median {:.1} ms, max {:.1} ms",
            percentile(&rejoin, 0.5),
            rejoin[rejoin.len() - 1]
        );
    }

    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &names, Duration::from_secs(20));
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid()).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = started.elapsed().as_secs_f64();
    for ((node, pid), before) in cluster.nodes.iter().zip(&pids).zip(before) {
        let cpu = (cpu_ticks(*pid) - before) as f64 / ticks_per_sec / wall * 100.0;
        println!(
            "idle {:8}: CPU {cpu:.2} % over {wall:.0} s, RSS {:.1} MiB",
            node.name,
            rss_kib(*pid) as f64 / 1024.0
        );
    }
}
