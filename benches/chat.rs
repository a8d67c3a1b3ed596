//! PQ4 chat figures over three real nodes on 127.0.0.1 (docs/messaging.md):
//! - registration and login time of the CLI, and Argon2id (m = 64 MiB, t = 3, p = 4) alone;
//! - message latency alice (through node 1) → bob (through node 2), both online: alice in
//!   `chat open @bob`, bob in `chat read --follow --json` (a mailbox wait held open by node 2
//!   and answered when a holder stores the message), from the line written to alice's stdin
//!   to the line printed by bob's client; p50/p99; the same for bob's second device, a client
//!   with no node following `--via` node 3 over libp2p;
//! - throughput of one sender (lines written at once to `chat open`, until bob saw all);
//! - bytes on disk per queued message (growth of every holder's `pq4.redb` while bob is away);
//! - recovery end to end (seed 004 §15): `chat recover` with the registration's code on another
//!   node, and until the recovered device read a message sent after it.
//!
//! `cargo bench --bench chat` (release), or `cargo bench --profile dev --bench chat` to reuse a
//! debug build (dependencies, crypto included, are optimised in dev builds too).
//! `CONSTELLA_BENCH_MESSAGES` (default 50) and `CONSTELLA_BENCH_QUEUED` (default 300).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::chat::three_nodes;
use common::{BIN, Node};
use constella_keys::{KdfParams, PasswordKey};
use support::{env_or, percentile};

const PASSWORD: &str = "correct horse battery";

fn chat(node: &Node, home: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    chat_output(node, home, args);
    start.elapsed()
}

fn spawn_chat(node: &Node, home: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&node.dir)
        .args(["chat", "--home", home.to_str().unwrap(), "--password-stdin"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.as_mut().unwrap(), "{PASSWORD}").unwrap();
    child
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn register(node: &Node, home: &Path, name: &str) -> Duration {
    let code = node.ok(&["chat", "invite"]).trim().to_owned();
    let email = format!("{name}@example.org");
    chat(
        node,
        home,
        &[
            "register",
            "--username",
            name,
            "--email",
            &email,
            "--invite",
            &code,
        ],
    )
}

fn main() {
    let messages = env_or("CONSTELLA_BENCH_MESSAGES", 50) as usize;
    let queued = env_or("CONSTELLA_BENCH_QUEUED", 300) as usize;
    let cluster = three_nodes();
    let root = cluster.root.path();
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));

    // Argon2id alone, in-process.
    let mut argon: Vec<Duration> = (0..5)
        .map(|i| {
            let start = Instant::now();
            PasswordKey::derive(PASSWORD, [i as u8; 16], KdfParams::PRODUCTION).unwrap();
            start.elapsed()
        })
        .collect();
    argon.sort();
    println!(
        "argon2id m=64MiB t=3 p=4: median {:.0} ms (5 runs)",
        ms(argon[2])
    );

    // Registration and login (whole CLI processes: Argon2id, key generation, 3 holders).
    let mut reg: Vec<Duration> = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|name| register(n1, &root.join(format!("{name}-device")), name))
        .collect();
    reg.sort();
    println!(
        "register (CLI process, incl. 1 Argon2id, 100 OPKs): median {:.0} ms, max {:.0} ms (5 runs)",
        ms(reg[2]),
        ms(reg[4])
    );
    let mut login: Vec<Duration> = (0..5)
        .map(|i| {
            chat(
                cluster.node("charlie"),
                &root.join(format!("carol-login-{i}")),
                &["login", "--username", "carol"],
            )
        })
        .collect();
    login.sort();
    println!(
        "login (CLI process, incl. 1 Argon2id, challenge-response): median {:.0} ms, max {:.0} ms (5 runs)",
        ms(login[2]),
        ms(login[4])
    );

    // Latency: both online. Bob follows on two devices: one through node 2's socket, and a
    // laptop with no node through charlie over libp2p (`--via`; its wait is held at most 3 s
    // and the member cuts a non-member's connection about every 12 s, then it logs in again).
    let (alice, bob) = (root.join("alice-device"), root.join("bob-device"));
    let n3 = cluster.node("charlie");
    let via = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", n3.port, n3.node_id());
    let laptop = root.join("bob-laptop");
    chat(n3, &laptop, &["--via", &via, "login", "--username", "bob"]);
    let mut reader = spawn_chat(n2, &bob, &["read", "--follow", "--json"]);
    let local = printed(&mut reader);
    let mut remote_reader = spawn_chat(n3, &laptop, &["--via", &via, "read", "--follow", "--json"]);
    let remote = printed(&mut remote_reader);
    let mut sender = spawn_chat(n1, &alice, &["open", "@bob"]);
    let input = sender.stdin.as_mut().unwrap();
    writeln!(input, "warm-up").unwrap();
    seen(&local, "warm-up");
    seen(&remote, "warm-up");
    let mut latency = Vec::new();
    let mut latency_via = Vec::new();
    for i in 0..messages {
        let text = format!("latency {i}");
        let sent = Instant::now();
        writeln!(input, "{text}").unwrap();
        latency.push(seen(&local, &text) - sent);
        latency_via.push(seen(&remote, &text) - sent);
    }
    latency.sort();
    latency_via.sort();
    println!(
        "latency alice(node 1) -> bob(node 2), both online, pushed to bob's held-open wait: p50 {:.0} ms, p99 {:.0} ms ({messages} messages)",
        ms(percentile(&latency, 0.5)),
        ms(percentile(&latency, 0.99))
    );
    println!(
        "latency alice(node 1) -> bob's second device --via node 3 (libp2p client), same messages: p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&latency_via, 0.5)),
        ms(percentile(&latency_via, 0.99))
    );
    let _ = remote_reader.kill();
    let _ = remote_reader.wait();
    let wait = |text: &str| seen(&local, text);

    // Throughput of one sender.
    let burst = messages * 2;
    let start = Instant::now();
    for i in 0..burst {
        writeln!(input, "burst {i}").unwrap();
    }
    let last = format!("burst {}", burst - 1);
    let end = wait(&last);
    let secs = (end - start).as_secs_f64();
    println!(
        "throughput of one sender (chat open, every message sealed, stored and put on 3 holders): {:.1} messages/s ({burst} in {secs:.2} s)",
        burst as f64 / secs
    );

    // Bytes on disk per queued message: bob goes away, alice queues.
    let _ = reader.kill();
    let _ = reader.wait();
    let size = |node: &Node| std::fs::metadata(node.dir.join("pq4.redb")).unwrap().len();
    let before: Vec<u64> = cluster.nodes.iter().map(size).collect();
    let start = Instant::now();
    for i in 0..queued {
        writeln!(input, "queued message number {i:05}").unwrap();
    }
    // The last one is stored once every holder grew by it: wait for the sender to finish.
    drop(sender.stdin.take());
    let _ = sender.wait();
    let took = start.elapsed();
    let after: Vec<u64> = cluster.nodes.iter().map(size).collect();
    let per: Vec<String> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| format!("{:.0}", (*a as f64 - *b as f64) / queued as f64))
        .collect();
    println!(
        "bytes on disk per queued message with a 27-byte text (pq4.redb growth per holder / {queued}; envelope ~{} B): {} (queued in {:.1} s)",
        envelope_size(),
        per.join(", "),
        took.as_secs_f64()
    );

    // Recovery end to end (seed 004 §15): a user who lost every device recovers on another
    // node with the code shown once at registration (whole CLI process: Argon2id, the code
    // checked on the holders, new keys, old devices revoked), then reads a message alice sent
    // after the recovery.
    let mut recovering = Vec::new();
    let mut reading = Vec::new();
    for i in 0..3 {
        let name = format!("rita{i}");
        let code = n1.ok(&["chat", "invite"]).trim().to_owned();
        let email = format!("{name}@example.org");
        let old = root.join(format!("{name}-device"));
        let out = chat_output(
            n1,
            &old,
            &[
                "register",
                "--username",
                &name,
                "--email",
                &email,
                "--invite",
                &code,
            ],
        );
        let recovery = out
            .lines()
            .find_map(|l| l.split_once("recovery code").map(|(_, rest)| rest))
            .and_then(|rest| rest.rsplit(' ').next())
            .expect("registration shows the recovery code")
            .to_owned();
        let new = root.join(format!("{name}-new-device"));
        let start = Instant::now();
        chat(
            n3,
            &new,
            &["recover", "--username", &name, "--code", &recovery],
        );
        recovering.push(start.elapsed());
        chat(n1, &alice, &["send", &format!("@{name}"), "welcome back"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !chat_output(n3, &new, &["read", "--json"]).contains("welcome back") {
            assert!(
                Instant::now() < deadline,
                "{name}'s recovered device never read the message"
            );
        }
        reading.push(start.elapsed());
    }
    recovering.sort();
    reading.sort();
    println!(
        "recovery (CLI process on another node: Argon2id, code checked on the holders, new keys, old devices revoked): median {:.0} ms, max {:.0} ms; until the recovered device read a message sent after it: median {:.0} ms, max {:.0} ms (3 users)",
        ms(recovering[1]),
        ms(recovering[2]),
        ms(reading[1]),
        ms(reading[2])
    );
}

/// A chat command that must succeed; what it printed on stdout.
fn chat_output(node: &Node, home: &Path, args: &[&str]) -> String {
    let mut all = vec!["chat", "--home", home.to_str().unwrap(), "--password-stdin"];
    all.extend_from_slice(args);
    let out = node.cli_with(&all, &[], Some(&format!("{PASSWORD}\n")));
    assert!(
        out.status.success(),
        "chat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The texts a `read --follow --json` child prints, each with when it was printed.
fn printed(child: &mut Child) -> mpsc::Receiver<(String, Instant)> {
    let (seen_tx, seen_rx) = mpsc::channel::<(String, Instant)>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let text = value["text"].as_str().unwrap_or_default().to_owned();
            if seen_tx.send((text, Instant::now())).is_err() {
                break;
            }
        }
    });
    seen_rx
}

/// When `text` was printed (earlier lines are skipped).
fn seen(lines: &mpsc::Receiver<(String, Instant)>, text: &str) -> Instant {
    loop {
        let (got, at) = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("message within 30 s");
        if got == text {
            return at;
        }
    }
}

/// The size of a chat envelope with a 26-byte text and no handshake (113 B identity, header,
/// ciphertext, 114 B signature, CBOR).
fn envelope_size() -> usize {
    use constella_keys::{Content, Envelope, KeyStore, Session, x3dh};
    let mut rng = rand::rng();
    let alice = KeyStore::generate_with_one_time_prekeys(1, &mut rng).unwrap();
    let mut bob = KeyStore::generate_with_one_time_prekeys(1, &mut rng).unwrap();
    let bundle = bob.bundle(None).verify().unwrap();
    let (initial, secret) = x3dh::initiate(alice.identity(), &bundle, &mut rng).unwrap();
    let _ = x3dh::respond(&mut bob, &initial);
    let mut session = Session::new(secret, &mut rng).unwrap();
    let content = Content::chat("queued message number 00000");
    Envelope::seal(&mut session, alice.identity(), None, 0, &content)
        .unwrap()
        .to_bytes()
        .len()
}
