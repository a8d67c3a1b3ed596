//! Telegram bot benchmark (prints figures; asserts only correctness, nothing about time).
//!
//! Three real nodes host the bot against the fake Bot API server of the tests
//! (tests/common/fake_telegram.rs). It measures:
//! - the owner's command round trip in a steady network (`/start` → the node list is sent);
//! - bot failover: kill -9 of the leader, the owner writes at once, time until the next
//!   leader's bot answers (the old leader is restarted and leads again between rounds);
//! - idle cost: CPU and RSS of the polling leader and of a standby node.
//!
//! Run: `cargo bench --bench bot` (env BOT_ROUNDS, BOT_COMMANDS, IDLE_SECS change the sizes).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::fake_telegram::{FakeTelegram, TgUser};
use common::{Cluster, Node, agreed_leader, wait_for};
use support::{cpu_ticks, env_or, percentile, rss_kib};

const TOKEN: &str = "123456789:AAHfakeTokenForConstellaBenchmark_012345";
const OWNER: u64 = 5001;

fn summary(samples: &mut [f64]) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms, p90 {:.1} ms, max {:.1} ms ({} samples)",
        percentile(samples, 0.5),
        percentile(samples, 0.9),
        samples[samples.len() - 1],
        samples.len()
    )
}

/// Sends `text` and returns how long until a message from the bot satisfies `check`, polling
/// the fake server every millisecond.
fn round_trip(
    fake: &FakeTelegram,
    owner: &TgUser,
    text: &str,
    check: impl Fn(&common::fake_telegram::BotMessage) -> bool,
) -> (Duration, String) {
    let known = fake.messages_to(OWNER).len();
    let start = Instant::now();
    fake.send_text(owner, text);
    loop {
        let messages = fake.messages_to(OWNER);
        if let Some(m) = messages.iter().skip(known).find(|m| check(m)) {
            return (start.elapsed(), m.sent_by.clone());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no answer to {text}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_or("BOT_ROUNDS", 5);
    let commands = env_or("BOT_COMMANDS", 30);
    let idle_secs = env_or("IDLE_SECS", 30);
    let fake = FakeTelegram::start(TOKEN);
    let names = ["alpha", "bravo", "charlie"];
    let mut cluster = Cluster::start_with(&names, &[1, 2, 100], None, |node: &mut Node| {
        node.init_args = vec!["--bot-token".into(), TOKEN.into()];
        node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
    });
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &names, Duration::from_secs(15)),
        "alpha"
    );
    let owner = TgUser::new(OWNER, "owner_test");
    wait_for(Duration::from_secs(10), "alpha polls", || {
        fake.polls().iter().any(|p| p.node == "alpha").then_some(())
    });

    let is_list = |m: &common::fake_telegram::BotMessage| m.text.starts_with("Узлы сети");
    let mut latencies = Vec::new();
    for _ in 0..commands {
        let (took, _) = round_trip(&fake, &owner, "/start", is_list);
        latencies.push(took.as_secs_f64() * 1e3);
    }
    println!(
        "owner command round trip (/start → node list, 3 nodes): {}",
        summary(&mut latencies)
    );

    let mut failovers = Vec::new();
    for round in 0..rounds {
        cluster.node_mut("alpha").kill();
        let (took, by) = round_trip(&fake, &owner, "/help", |m| m.text.starts_with("Constella"));
        assert_eq!(by, "bravo", "round {round}");
        failovers.push(took.as_secs_f64() * 1e3);
        cluster.node_mut("alpha").start();
        let nodes: Vec<&Node> = cluster.nodes.iter().collect();
        agreed_leader(&nodes, &names, Duration::from_secs(30));
        // alpha leads again once it polls; wait for that before the next round.
        let back = Instant::now();
        wait_for(Duration::from_secs(10), "alpha polls again", || {
            fake.polls()
                .iter()
                .any(|p| p.node == "alpha" && p.started >= back - Duration::from_secs(5))
                .then_some(())
        });
        let (_, by) = round_trip(&fake, &owner, "/start", is_list);
        assert_eq!(by, "alpha", "round {round}: alpha leads the bot again");
    }
    println!(
        "bot failover (kill -9 of the leader → the next leader answers the owner's message sent at once): {}",
        summary(&mut failovers)
    );
    let delivered = fake.delivered();
    let twice = delivered
        .values()
        .filter(|nodes| {
            let mut n = (*nodes).clone();
            n.dedup();
            n.len() > 1
        })
        .count();
    println!(
        "updates delivered to more than one node: {twice} of {}",
        delivered.len()
    );

    let ticks_per_sec = 100.0;
    let pids: Vec<(String, u32)> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.pid()))
        .collect();
    let before: Vec<u64> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let polls_before = fake.polls().len();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = start.elapsed().as_secs_f64();
    for ((name, pid), before) in pids.iter().zip(before) {
        let cpu = (cpu_ticks(*pid) - before) as f64 / ticks_per_sec / wall * 100.0;
        let role = if name == "alpha" {
            "leader, polling"
        } else {
            "standby"
        };
        println!(
            "idle {idle_secs} s: {name} ({role}): CPU {cpu:.2} %, RSS {:.1} MiB",
            rss_kib(*pid) as f64 / 1024.0
        );
    }
    println!(
        "long polls while idle: {} in {idle_secs} s (10 s poll timeout)",
        fake.polls().len() - polls_before
    );
}
