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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn leave_names_the_member_that_acknowledged_it() {
    let mut cluster = Cluster::start(&["alpha", "bravo"], &[10, 20], None);
    cluster.or_logs(|| {
        common::agreed_leader(
            &cluster.nodes.iter().collect::<Vec<_>>(),
            &["alpha", "bravo"],
            Duration::from_secs(20),
        );
        let out = cluster.node("bravo").cli(&["leave", "--yes"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("alpha confirmed"),
            "stdout: {}",
            text(&out.stdout)
        );
        assert!(
            !text(&out.stderr).contains("no member confirmed"),
            "{}",
            text(&out.stderr)
        );
    });
    assert!(cluster.node_mut("bravo").wait_exit().success());
}

#[test]
fn a_leave_no_member_hears_is_recorded_and_says_so_on_stderr() {
    let mut cluster = Cluster::start(&["alpha", "bravo"], &[10, 20], None);
    common::agreed_leader(
        &cluster.nodes.iter().collect::<Vec<_>>(),
        &["alpha", "bravo"],
        Duration::from_secs(20),
    );
    cluster.node_mut("alpha").kill();
    let started = Instant::now();
    let out = cluster.node("bravo").cli(&["leave", "--yes"]);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "a recorded leave exits 0: {stderr}");
    assert!(
        stderr.contains("no member confirmed")
            && stderr.contains("constella remove NAME")
            && stderr.contains("offline"),
        "stderr: {stderr}"
    );
    assert!(text(&out.stdout).contains("Left network"));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "waited {took:?} for an acknowledgement (bound 3 s)"
    );
    assert!(cluster.node_mut("bravo").wait_exit().success());
    let state = cluster.node("bravo").state_json().expect("state");
    assert_eq!(state["left"], true, "the leave is recorded: {state}");
    assert!(state.get("network_secret").is_none());
}
