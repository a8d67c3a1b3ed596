//! Nodes behind NAT, measured in the namespace test bed (`tests/common/nat_bed.rs`: real
//! nftables NAT routers; needs root). Five nodes: charlie and delta public, alpha and bravo
//! each behind an endpoint-independent ("cone") NAT, echo behind a symmetric NAT. Figures:
//!
//! - hole-punch success rate over `NAT_ROUNDS` (20) attempts per pair type. cone↔cone: the
//!   direct alpha–bravo connection is killed (`ss -K` on bravo's host), they meet again through
//!   a relay and DCUtR tries; success is a direct connection again. cone↔symmetric: echo is
//!   restarted, meets alpha and bravo through relays, and DCUtR tries with each (two attempts
//!   a round). An attempt ends at a direct connection, at a "hole punch failed" line naming the
//!   pair in either log, or after 30 s;
//! - the RPC round trip (`stats`, CLI included) from alpha to bravo (direct after the punch)
//!   and to echo (relayed): median of `NAT_RPCS` (10);
//! - the relay bandwidth an idle NAT-ed member uses when it stays relayed: echo's bytes through
//!   relays (sent + received, below noise: what the relays forward for it) over
//!   `NAT_IDLE_SECS` (60), per second.
//!
//! Run: `cargo bench --bench nat` (as root). Asserts nothing about time; prints figures.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::nat_bed::{ALPHA, BRAVO, ECHO, Mapping, NatBed, NatNet, link, stats_of};
use common::netns::agree;
use common::{Node, wait_for};
use support::{env_or, percentile};

/// How long one hole-punch attempt may take before it counts as failed.
const ATTEMPT: Duration = Duration::from_secs(30);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe benches this way.
    }
    let rounds = env_or("NAT_ROUNDS", 20) as usize;
    let rpcs = env_or("NAT_RPCS", 10) as usize;
    let idle_secs = env_or("NAT_IDLE_SECS", 60);
    let Some(bed) = NatBed::new(&[
        Mapping::Independent,
        Mapping::Independent,
        Mapping::Symmetric,
    ]) else {
        return;
    };
    let started = Instant::now();
    let mut net = NatNet::start(&bed);
    let names = net.names();
    net.or_logs(|| {
        let (_, took) = agree(&net.all(), &names, &[], Duration::from_secs(90));
        println!(
            "start: 2 public + 3 NAT-ed nodes all alive everywhere {:.1} s after the first start ({:.1} s after agreement began)",
            started.elapsed().as_secs_f64(),
            took.as_secs_f64()
        );
        wait_direct(&net.nodes[ALPHA], &net.nodes[BRAVO], Duration::from_secs(60));
    });

    let (mut cone, mut cone_times) = (0, Vec::new());
    let (mut mixed, mut mixed_tries) = (0, 0);
    for round in 0..rounds {
        net.or_logs(|| {
            // cone ↔ cone: cut the direct connection; they meet through a relay again.
            let (a, b) = (&net.nodes[ALPHA], &net.nodes[BRAVO]);
            if link(a, "bravo").as_deref() != Some("direct") {
                wait_direct(a, b, ATTEMPT);
            }
            let marks = (a.log_text().len(), b.log_text().len());
            let cut = Instant::now();
            let base = punches(a) + punches(b);
            kill_direct(b, &bed.lab.ip(2));
            match attempt(a, b, marks, base) {
                true => {
                    cone += 1;
                    cone_times.push(cut.elapsed());
                }
                false => eprintln!("round {round}: cone↔cone attempt failed"),
            }
        });
        // cone ↔ symmetric: restart echo; it meets alpha and bravo through relays.
        let marks: Vec<usize> = net.nodes.iter().map(|n| n.log_text().len()).collect();
        net.nodes[ECHO].stop();
        net.nodes[ECHO].start();
        net.or_logs(|| {
            agree(&net.all(), &names, &[], Duration::from_secs(60));
            for other in [ALPHA, BRAVO] {
                mixed_tries += 1;
                let (o, e) = (&net.nodes[other], &net.nodes[ECHO]);
                if attempt(o, e, (marks[other], marks[ECHO]), punches(o)) {
                    mixed += 1;
                }
            }
        });
    }
    cone_times.sort();
    println!(
        "hole punch cone↔cone: {cone}/{rounds} succeeded{}",
        if cone_times.is_empty() {
            String::new()
        } else {
            format!(
                " (cut -> direct again: median {:.2} s, max {:.2} s)",
                percentile(&cone_times, 0.5).as_secs_f64(),
                cone_times[cone_times.len() - 1].as_secs_f64()
            )
        }
    );
    println!("hole punch cone↔symmetric: {mixed}/{mixed_tries} succeeded");

    net.or_logs(|| {
        let n = &net;
        wait_direct(&n.nodes[ALPHA], &n.nodes[BRAVO], ATTEMPT);
        for (target, what) in [("bravo", "direct"), ("echo", "relayed")] {
            assert_eq!(link(&n.nodes[ALPHA], target).as_deref(), Some(what));
            let mut times: Vec<Duration> = (0..rpcs)
                .map(|_| {
                    let t = Instant::now();
                    stats_of(&n.nodes[ALPHA], target).expect("stats");
                    t.elapsed()
                })
                .collect();
            times.sort();
            println!(
                "stats {target} from alpha ({what}), CLI included: median {:.1} ms, max {:.1} ms (n = {rpcs})",
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3
            );
        }

        // Idle: nothing asked for 10 s, then echo's relayed bytes over the window.
        std::thread::sleep(Duration::from_secs(10));
        let before = relayed(&n.nodes[ECHO]);
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(idle_secs));
        let after = relayed(&n.nodes[ECHO]);
        let secs = t.elapsed().as_secs_f64();
        let (sent, received) = (after.0 - before.0, after.1 - before.1);
        println!(
            "relay bandwidth at idle for echo (symmetric NAT, relayed to alpha and bravo, 5 members): {:.0} B/s ({:.0} sent + {:.0} received, over {secs:.0} s; {} relayed connections); per relayed pair {:.0} B/s",
            (sent + received) as f64 / secs,
            sent as f64 / secs,
            received as f64 / secs,
            after.2,
            (sent + received) as f64 / secs / 2.0
        );
    });
}

/// Waits until `a` and `b` each see a direct connection to the other.
fn wait_direct(a: &Node, b: &Node, deadline: Duration) {
    wait_for(deadline, "a direct connection", || {
        (link(a, &b.name).as_deref() == Some("direct")
            && link(b, &a.name).as_deref() == Some("direct"))
        .then_some(())
    });
}

/// Kills `node`'s TCP connections to `ip` port 7000 (no TIME_WAIT is left: the socket is
/// aborted with a reset, as a router reboot or a cut cable would end it).
fn kill_direct(node: &Node, ip: &str) {
    let mut command = Command::new(&node.prefix[0]);
    command.args(&node.prefix[1..]);
    let out = command
        .args(["ss", "-K", "dst", ip, "dport", "=", ":7000"])
        .output()
        .expect("ss -K");
    assert!(out.status.success(), "ss -K: {}", common::output_text(&out));
}

/// Successful hole punches `node` counted since its start.
fn punches(node: &Node) -> u64 {
    node.status()
        .and_then(|s| s["nat"]["hole_punches"].as_u64())
        .unwrap_or(0)
}

/// Whether the hole punch between `a` and `b` (their logs read after `marks`) ends on a direct
/// connection: true once their punch counters passed `base` and both see it direct; false at a
/// "hole punch failed" line naming the other in either log, or after [`ATTEMPT`].
fn attempt(a: &Node, b: &Node, marks: (usize, usize), base: u64) -> bool {
    let failed = |node: &Node, mark: usize, other: &str| {
        let text = node.log_text();
        text.get(mark..).is_some_and(|tail| {
            tail.lines()
                .any(|l| l.contains("hole punch failed") && l.contains(&format!("member={other}")))
        })
    };
    let start = Instant::now();
    loop {
        if punches(a) + punches(b) > base
            && link(a, &b.name).as_deref() == Some("direct")
            && link(b, &a.name).as_deref() == Some("direct")
        {
            return true;
        }
        if failed(a, marks.0, &b.name) || failed(b, marks.1, &a.name) || start.elapsed() > ATTEMPT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (sent, received, relayed connections) of `node`'s `status --json` `nat`.
fn relayed(node: &Node) -> (u64, u64, u64) {
    let status = node.status().expect("status");
    let nat = &status["nat"];
    (
        nat["relayed_bytes_sent"].as_u64().unwrap_or(0),
        nat["relayed_bytes_received"].as_u64().unwrap_or(0),
        nat["relayed_connections"].as_u64().unwrap_or(0),
    )
}
