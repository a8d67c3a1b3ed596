//! Scale benchmark (prints figures; asserts nothing about time).
//!
//! Starts N real nodes on 127.0.0.1 (env SCALE_NODES, default 20; the design target is 2 to 100),
//! then measures: the time until every node sees all N alive and names the same leader; each
//! node's idle CPU and RSS over IDLE_SECS (default 20), after SETTLE_SECS (default 12); and the time from SIGKILL of the leader
//! until all survivors agree on the next one.
//!
//! Run: `SCALE_NODES=100 cargo bench --bench scale`. On one 2-core machine all N nodes share the
//! two cores, so per-node CPU here is an upper bound of what one node costs on its own VPS.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{Cluster, Node};
use support::{cpu_ticks, env_or, rss_kib};

/// Waits until every node in `nodes` sees `alive` nodes alive and all name one leader.
fn converge(nodes: &[&Node], alive: usize, deadline: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let views: Vec<Option<(String, usize)>> =
            nodes.iter().map(|n| n.leader_and_alive()).collect();
        if let Some(Some((leader, _))) = views.first()
            && views
                .iter()
                .all(|v| v.as_ref().is_some_and(|(l, a)| l == leader && *a == alive))
        {
            return (leader.clone(), started.elapsed());
        }
        assert!(
            started.elapsed() < deadline,
            "no convergence on {alive} alive within {deadline:?}; views (leader, alive): {views:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_or("SCALE_NODES", 20) as usize;
    let idle_secs = env_or("IDLE_SECS", 20);
    let names: Vec<String> = (0..n).map(|i| format!("node-{i:03}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let priorities = vec![100; n];
    let started = Instant::now();
    // Every tenth start (and the last), so a run that stalls still shows how the cost of a
    // join grew with the network.
    let mut cluster = Cluster::start_reporting(
        &name_refs,
        &priorities,
        None,
        |_| {},
        |i, took| {
            if (i + 1) % 10 == 0 || i + 1 == n {
                let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
                println!(
                    "node {} joined and answered status in {:.2} s (load average {})",
                    i + 1,
                    took.as_secs_f64(),
                    load.split_whitespace().next().unwrap_or("?")
                );
            }
        },
    );
    let all_started = started.elapsed();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let (leader, converged) = converge(&nodes, n, Duration::from_secs(120));
    println!(
        "{n} nodes: joined and started in {:.1} s; all see {n} alive and one leader {:.2} s after the last start",
        all_started.as_secs_f64(),
        converged.as_secs_f64()
    );

    // Steady state first: on a ring each node closes the connections it no longer wants (the
    // joins' first contacts) after the mesh grace, 10 s (docs/design.md, Partial mesh).
    let settle_secs = env_or("SETTLE_SECS", 12);
    println!("settling {settle_secs} s (SETTLE_SECS) before the idle measurement");
    std::thread::sleep(Duration::from_secs(settle_secs));
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid()).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let idle_started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = idle_started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / 100.0 / wall * 100.0)
        .collect();
    let rss: Vec<f64> = pids.iter().map(|p| rss_kib(*p) as f64 / 1024.0).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "idle over {wall:.0} s: CPU per node mean {:.2} %, max {:.2} % (all nodes together {:.1} % of one core); RSS per node mean {:.1} MiB, max {:.1} MiB",
        mean(&cpu),
        max(&cpu),
        cpu.iter().sum::<f64>(),
        mean(&rss),
        max(&rss)
    );

    let killed_at = Instant::now();
    cluster.node_mut(&leader).kill();
    let survivors: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|node| node.name != leader)
        .collect();
    let (next, _) = converge(&survivors, n - 1, Duration::from_secs(60));
    println!(
        "failover: killed leader {leader}; all {} survivors agree on {next} after {:.0} ms",
        n - 1,
        killed_at.elapsed().as_secs_f64() * 1e3
    );
}
