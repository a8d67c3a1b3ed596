//! PQ4 history transfer figures (seed 004 §17, docs/messaging.md "History transfer") over three
//! real nodes on 127.0.0.1: alice sends `CONSTELLA_BENCH_HISTORY` (default 1,000) messages to
//! bob through `chat open`; bob reads them, logs in on a second device, exports his history
//! and imports it there. Printed: the export and import times (whole CLI processes, each with
//! its Argon2id unlock, so `history show` on the old device is printed as the baseline), the
//! sealed bytes moved and their chunks, and the size of the history file on each device.
//!
//! `cargo bench --profile dev --bench chat_history` (debug build of our code, dependencies
//! optimised) or `cargo bench --bench chat_history` (release).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::chat::{PASSWORD, register, three_nodes};
use common::{BIN, Node};
use support::env_or;

/// A chat command that must succeed: its stdout and how long the process took.
fn chat(node: &Node, home: &Path, args: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let mut all = vec!["chat", "--home", home.to_str().unwrap(), "--password-stdin"];
    all.extend_from_slice(args);
    let out = node.cli_with(&all, &[], Some(&format!("{PASSWORD}\n")));
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "chat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let count = env_or("CONSTELLA_BENCH_HISTORY", 1000) as usize;
    let cluster = three_nodes();
    let root = cluster.root.path();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (alice, bob, tablet) = (
        root.join("alice-device"),
        root.join("bob-device"),
        root.join("bob-tablet"),
    );
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");

    // Alice sends `count` messages of ~40 bytes; bob reads them (his history).
    let start = Instant::now();
    let mut sender = Command::new(BIN)
        .arg("--state-dir")
        .arg(&n1.dir)
        .args([
            "chat",
            "--home",
            alice.to_str().unwrap(),
            "--password-stdin",
        ])
        .args(["open", "@bob"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let input = sender.stdin.as_mut().unwrap();
        writeln!(input, "{PASSWORD}").unwrap();
        for i in 0..count {
            writeln!(input, "history message number {i:05} from alice").unwrap();
        }
    }
    drop(sender.stdin.take());
    assert!(sender.wait().unwrap().success());
    let mut reader = Command::new(BIN)
        .arg("--state-dir")
        .arg(&n2.dir)
        .args(["chat", "--home", bob.to_str().unwrap(), "--password-stdin"])
        .args(["read", "--follow", "--json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(reader.stdin.as_mut().unwrap(), "{PASSWORD}").unwrap();
    let last = format!("history message number {:05} from alice", count - 1);
    for line in BufReader::new(reader.stdout.take().unwrap()).lines() {
        if line.unwrap().contains(&last) {
            break;
        }
    }
    let _ = reader.kill();
    let _ = reader.wait();
    println!(
        "setup: {count} messages sent and read in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Bob's second device, the export on the first and the import on the second.
    chat(
        n3,
        &tablet,
        &["login", "--username", "bob", "--device-name", "tablet"],
    );
    let (shown, baseline) = chat(n2, &bob, &["history", "show", "--json"]);
    let held: Vec<serde_json::Value> = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(held.len(), count, "bob's history");
    let (said, export) = chat(n2, &bob, &["history", "export"]);
    let code = said
        .lines()
        .find_map(|l| l.strip_prefix("code: "))
        .expect("a code")
        .trim()
        .to_owned();
    let summary = said.lines().next().unwrap_or_default().to_owned();
    let (said, import) = chat(n3, &tablet, &["history", "import", &code]);
    assert!(
        said.contains(&format!("imported {count} message(s)")),
        "{said}"
    );
    let (shown, _) = chat(n3, &tablet, &["history", "show", "--json"]);
    let moved: Vec<serde_json::Value> = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(moved.len(), count);
    let size = |home: &Path| std::fs::metadata(home.join("history.cbor")).unwrap().len();
    println!("export: {summary}");
    println!(
        "history transfer of {count} messages: export {:.0} ms, import {:.0} ms (CLI processes; \
         `history show` on the old device, unlock and decrypt only: {:.0} ms)",
        ms(export),
        ms(import),
        ms(baseline)
    );
    println!(
        "history file (sealed): old device {} B, new device {} B",
        size(&bob),
        size(&tablet)
    );
}
