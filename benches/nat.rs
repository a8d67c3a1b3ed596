//! Nodes behind NAT, measured in the namespace test bed (`tests/common/nat_bed.rs`: real
//! nftables NAT routers; needs root). Five nodes: charlie and delta public, alpha and bravo
//! each behind an endpoint-independent ("cone") NAT, echo behind a symmetric NAT. Figures:
//!
//! - hole-punch success rate over `NAT_ROUNDS` (20) attempts per pair type, each on a fresh
//!   bed (the pair meets for the first time, through a relay): cone↔cone is alpha–bravo,
//!   cone↔symmetric is alpha–echo and bravo–echo (two a round). An attempt succeeds when a
//!   punch is counted and both see the other `"direct"`; it fails at a "hole punch failed" line
//!   naming the pair in either log, or after 30 s. Also the time from the first start until all
//!   five are alive everywhere, and until alpha–bravo is direct;
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
    let mappings = [
        Mapping::Independent,
        Mapping::Independent,
        Mapping::Symmetric,
    ];
    let (mut cone, mut cone_times) = (0, Vec::new());
    let (mut mixed, mut mixed_tries) = (0, 0);
    let mut starts = Vec::new();
    let mut last = None;
    for round in 0..rounds.max(1) {
        // A fresh bed each round: the pairs meet for the first time, through a relay.
        let Some(bed) = NatBed::new(&mappings) else {
            return;
        };
        let started = Instant::now();
        let net = NatNet::start(&bed);
        let names = net.names();
        net.or_logs(|| {
            agree(&net.all(), &names, &[], Duration::from_secs(90));
            starts.push(started.elapsed());
            if attempt(&net.nodes[ALPHA], &net.nodes[BRAVO]) {
                cone += 1;
                cone_times.push(started.elapsed());
            } else {
                eprintln!("round {round}: cone↔cone attempt failed");
            }
            for other in [ALPHA, BRAVO] {
                mixed_tries += 1;
                if attempt(&net.nodes[other], &net.nodes[ECHO]) {
                    mixed += 1;
                }
            }
        });
        if round + 1 == rounds.max(1) {
            last = Some((bed, net));
        }
    }
    starts.sort();
    cone_times.sort();
    println!(
        "start: 2 public + 3 NAT-ed nodes all alive everywhere: median {:.1} s, max {:.1} s after the first start (n = {})",
        percentile(&starts, 0.5).as_secs_f64(),
        starts[starts.len() - 1].as_secs_f64(),
        starts.len()
    );
    println!(
        "hole punch cone↔cone: {cone}/{rounds} succeeded{}",
        if cone_times.is_empty() {
            String::new()
        } else {
            format!(
                " (first start -> direct: median {:.1} s, max {:.1} s)",
                percentile(&cone_times, 0.5).as_secs_f64(),
                cone_times[cone_times.len() - 1].as_secs_f64()
            )
        }
    );
    println!("hole punch cone↔symmetric: {mixed}/{mixed_tries} succeeded");

    let Some((_bed, net)) = last else { return };
    net.or_logs(|| {
        let n = &net;
        for (target, what) in [("bravo", "direct"), ("echo", "relayed")] {
            wait_for(Duration::from_secs(30), "the expected link", || {
                (link(&n.nodes[ALPHA], target).as_deref() == Some(what)).then_some(())
            });
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
        let alpha = relayed(&n.nodes[ALPHA]);
        println!(
            "  alpha (cone NAT, direct to bravo after the punch) has {} relayed connections",
            alpha.2
        );
    });
}

/// Successful hole punches `node` counted since its start.
fn punches(node: &Node) -> u64 {
    node.status()
        .and_then(|s| s["nat"]["hole_punches"].as_u64())
        .unwrap_or(0)
}

/// Whether the hole punch between `a` and `b` (fresh nodes) ends on a direct connection: true
/// once a punch was counted and both see the other direct; false at a "hole punch failed"
/// line naming the other in either log, or after [`ATTEMPT`].
fn attempt(a: &Node, b: &Node) -> bool {
    let failed = |node: &Node, other: &str| {
        node.log_text()
            .lines()
            .any(|l| l.contains("hole punch failed") && l.contains(&format!("member={other}")))
    };
    let start = Instant::now();
    loop {
        if punches(a) + punches(b) > 0
            && link(a, &b.name).as_deref() == Some("direct")
            && link(b, &a.name).as_deref() == Some("direct")
        {
            return true;
        }
        if failed(a, &b.name) || failed(b, &a.name) || start.elapsed() > ATTEMPT {
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
