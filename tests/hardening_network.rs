//! Hardening of the network's own exchanges, with real `constella` processes: a `leave` that
//! waits for a member to acknowledge it, a join admitted only once the joiner confirms, a
//! healthy network that refuses nothing, and joins during a stranger flood.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;

#[test]
fn a_healthy_network_refuses_no_gossip() {
    let cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[10, 20, 30], None);
    cluster.or_logs(|| {
        common::agreed_leader(
            &cluster.nodes.iter().collect::<Vec<_>>(),
            &["alpha", "bravo", "charlie"],
            Duration::from_secs(20),
        );
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            for node in &cluster.nodes {
                let status = node.status().expect("status");
                let rejected = &status["rejected_gossip"];
                let refused: u64 = rejected
                    .as_object()
                    .expect("rejected_gossip is an object")
                    .values()
                    .map(|v| v.as_u64().unwrap_or(u64::MAX))
                    .sum();
                assert_eq!(refused, 0, "{} refused gossip: {rejected}", node.name);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}
