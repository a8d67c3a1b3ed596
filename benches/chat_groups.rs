//! PQ4 group chat figures over three real nodes on 127.0.0.1 (docs/messaging.md "Groups"):
//! - group send latency to N members: alice (node 1) runs `chat group send`; every member
//!   runs `chat read --follow --json` (members spread over the three nodes); from the start of
//!   the send command to the last member printing the message; p50/p90 over the rounds, and
//!   the send command alone (encrypt once, queue for every member);
//! - rotation for N members: `chat group rotate` (record stored, key sealed and queued for each
//!   member), and from its start until every member printed a message sent right after it
//!   (so the new key was installed everywhere);
//! - bytes: what one `group send` and one `group rotate` queue in the members' mailboxes (the
//!   client's debug lines `group traffic queued in a mailbox bytes=N`; each entry is stored on
//!   the 3 holders of its mailbox).
//!
//! `cargo bench --profile dev --bench chat_groups` (reuses the debug build).
//! `CONSTELLA_BENCH_GROUP_SIZES` (default `3,10`; `3,10,50` if the machine can take 50
//! followers, each a client polling every 100 ms), `CONSTELLA_BENCH_ROUNDS` (default 10).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::chat::{PASSWORD, chat_env, chat_ok, register, three_nodes};
use common::{BIN, Node};
use support::{env_or, percentile};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A member's `chat read --follow --json`; each printed line goes to `lines` as (member, text).
fn follow(node: &Node, home: &Path, who: usize, lines: mpsc::Sender<(usize, String)>) -> Child {
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&node.dir)
        .args(["chat", "--home", home.to_str().unwrap(), "--password-stdin"])
        .args(["read", "--follow", "--json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.as_mut().unwrap(), "{PASSWORD}").unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let text = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["text"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if lines.send((who, text)).is_err() {
                break;
            }
        }
    });
    child
}

/// A chat command that must succeed, with the group client's debug lines on; the bytes it
/// queued in mailboxes and in how many entries.
fn queued(node: &Node, home: &Path, args: &[&str]) -> (usize, usize) {
    let out = chat_env(
        node,
        home,
        PASSWORD,
        args,
        &[("RUST_LOG", "warn,constella::chat::group=debug")],
    );
    assert!(
        out.status.success(),
        "{args:?}: {}",
        common::output_text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sizes: Vec<usize> = stderr
        .lines()
        .filter(|l| l.contains("group traffic queued in a mailbox"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("bytes="))
                .and_then(|n| n.trim_end_matches(',').parse().ok())
        })
        .collect();
    (sizes.iter().sum(), sizes.len())
}

/// Waits until each of `n` members printed `text`.
fn all_saw(lines: &mpsc::Receiver<(usize, String)>, n: usize, text: &str) {
    let mut seen = vec![false; n];
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.iter().any(|s| !s) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (who, got) = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("not every member saw {text:?} within 120 s"));
        if got == text {
            seen[who] = true;
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CONSTELLA_BENCH_GROUP_SIZES")
        .unwrap_or_else(|_| "3,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds = env_or("CONSTELLA_BENCH_ROUNDS", 10) as usize;
    let cluster = three_nodes();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let root = cluster.root.path();
    let alice = root.join("alice");
    register(nodes[0], &alice, "alice");
    let most = sizes.iter().copied().max().unwrap_or(0);
    let mut members = Vec::new();
    for i in 0..most {
        let name = format!("m{i}");
        let home = root.join(&name);
        register(nodes[i % 3], &home, &name);
        members.push((name, home, nodes[i % 3]));
    }
    println!("group figures, {rounds} rounds each (debug build of our code unless --release)");
    for size in sizes {
        let group = format!("g{size}");
        let mut args = vec!["group".to_owned(), "create".into(), group.clone()];
        args.extend(members[..size].iter().map(|(n, _, _)| format!("@{n}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chat_ok(nodes[0], &alice, &args);
        let (tx, rx) = mpsc::channel();
        let mut followers: Vec<Child> = members[..size]
            .iter()
            .enumerate()
            .map(|(i, (_, home, node))| follow(node, home, i, tx.clone()))
            .collect();
        // Warm-up: every follower joined and is polling.
        chat_ok(nodes[0], &alice, &["group", "send", &group, "warm-up"]);
        all_saw(&rx, size, "warm-up");
        let mut delivered = Vec::new();
        let mut command = Vec::new();
        let mut send_bytes = (0, 0);
        for r in 0..rounds {
            let text = format!("round {r}");
            let start = Instant::now();
            send_bytes = queued(nodes[0], &alice, &["group", "send", &group, &text]);
            command.push(start.elapsed());
            all_saw(&rx, size, &text);
            delivered.push(start.elapsed());
        }
        delivered.sort();
        command.sort();
        println!(
            "group send to {size:>2} members: every member has it p50 {:.0} ms, p90 {:.0} ms; the send command p50 {:.0} ms",
            ms(percentile(&delivered, 0.5)),
            ms(percentile(&delivered, 0.9)),
            ms(percentile(&command, 0.5)),
        );
        println!(
            "bytes of one group send to {size:>2} members: {} B in {} mailbox entries ({} B each; x3 holders = {} B stored)",
            send_bytes.0,
            send_bytes.1,
            send_bytes.0 / send_bytes.1.max(1),
            send_bytes.0 * 3,
        );
        let mut rotate = Vec::new();
        let mut reached = Vec::new();
        let mut rotate_bytes = (0, 0);
        for r in 0..rounds.min(5) {
            let text = format!("after rotation {r}");
            let start = Instant::now();
            rotate_bytes = queued(nodes[0], &alice, &["group", "rotate", &group]);
            rotate.push(start.elapsed());
            chat_ok(nodes[0], &alice, &["group", "send", &group, &text]);
            all_saw(&rx, size, &text);
            reached.push(start.elapsed());
            // Each round as it ends, so a round that times out later keeps the earlier ones.
            println!(
                "  rotation round {r} for {size:>2} members: rotate command {:.0} ms, every member read under the new key after {:.0} ms",
                ms(*rotate.last().unwrap()),
                ms(*reached.last().unwrap()),
            );
        }
        rotate.sort();
        reached.sort();
        println!(
            "rotation for {size:>2} members: the rotate command p50 {:.0} ms; until every member read a message under the new key p50 {:.0} ms (max {:.0})",
            ms(percentile(&rotate, 0.5)),
            ms(percentile(&reached, 0.5)),
            ms(*reached.last().unwrap()),
        );
        println!(
            "bytes of one rotation for {size:>2} members: {} B of key shares in {} mailbox entries ({} B each; x3 holders = {} B stored)",
            rotate_bytes.0,
            rotate_bytes.1,
            rotate_bytes.0 / rotate_bytes.1.max(1),
            rotate_bytes.0 * 3,
        );
        for mut child in followers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
