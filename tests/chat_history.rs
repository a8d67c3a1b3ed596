//! PQ4 history transfer over real nodes (docs/messaging.md "History transfer", seed 004 §17):
//! real `constella` processes, real chat clients each with its own device state.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::chat::{PASSWORD, chat_env, chat_ok, device_home, read_until, register, three_nodes};
use common::{BIN, Cluster, Node, agreed_leader, keys_by_peer_id, output_text, wait_for};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `chat history show --json`: the texts, oldest first.
fn history(node: &Node, home: &Path) -> Vec<String> {
    let out = chat_ok(node, home, &["history", "show", "--json"]);
    let items: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    items
        .iter()
        .map(|i| i["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A chat command that must fail; everything it said.
fn chat_fails(node: &Node, home: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = chat_env(node, home, PASSWORD, args, env);
    assert!(
        !out.status.success(),
        "chat {args:?} should have failed: {}",
        output_text(&out)
    );
    output_text(&out)
}

/// `chat history export` on `node` with extra environment: the code it printed.
fn export(node: &Node, home: &Path, env: &[(&str, &str)]) -> String {
    let out = chat_env(node, home, PASSWORD, &["history", "export", "--qr"], env);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    // The QR code is printed too (half blocks).
    assert!(said.contains('▀') || said.contains('▄'), "{said}");
    said.lines()
        .find_map(|l| l.strip_prefix("code: "))
        .unwrap_or_else(|| panic!("no code in {said}"))
        .trim()
        .to_owned()
}

/// Alice (on alpha) and bob (on bravo) exchange six messages; alice logs in on a second device
/// (on charlie). Answers the two devices' homes and the texts alice's first device holds.
fn alice_with_a_new_device(cluster: &Cluster) -> (std::path::PathBuf, std::path::PathBuf) {
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (alice, bob, tablet) = (
        device_home(cluster, "alice"),
        device_home(cluster, "bob"),
        device_home(cluster, "alice-tablet"),
    );
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    for i in 1..=3 {
        chat_ok(n1, &alice, &["send", "@bob", &format!("alice to bob {i}")]);
    }
    read_until(n2, &bob, 3);
    for i in 1..=3 {
        chat_ok(n2, &bob, &["send", "@alice", &format!("bob to alice {i}")]);
    }
    read_until(n1, &alice, 3);
    chat_ok(
        n3,
        &tablet,
        &["login", "--username", "alice", "--device-name", "tablet"],
    );
    (alice, tablet)
}

fn expected() -> Vec<String> {
    let mut all: Vec<String> = (1..=3).map(|i| format!("alice to bob {i}")).collect();
    all.extend((1..=3).map(|i| format!("bob to alice {i}")));
    all
}

/// Chunk files of an import in progress on a device.
fn chunks_held(home: &Path) -> usize {
    let dir = home.join("history-import");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".chunk"))
        .count()
}

#[test]
fn history_moves_to_a_new_device_resumes_after_interruptions_and_outlives_a_holder() {
    let mut cluster = three_nodes();
    let (alice, tablet) = alice_with_a_new_device(&cluster);
    let (n1, n3) = (cluster.node("alpha"), cluster.node("charlie"));
    assert_eq!(history(n1, &alice), expected());
    assert!(history(n3, &tablet).is_empty());

    // Small chunks, so the transfer has many.
    let code = export(n1, &alice, &[("CONSTELLA_TEST_HISTORY_CHUNK_BYTES", "64")]);

    // A chunk fails after two: nothing imported, two chunks kept.
    let said = chat_fails(
        n3,
        &tablet,
        &["history", "import", &code],
        &[("CONSTELLA_TEST_HISTORY_STOP_AFTER", "2")],
    );
    assert!(said.contains("stopped after 2 chunk(s)"), "{said}");
    assert!(history(n3, &tablet).is_empty());
    assert_eq!(chunks_held(&tablet), 2);

    // The client is killed mid-transfer (SIGKILL) after it stored more chunks.
    let mut child = spawn_import(n3, &tablet, &code, 400);
    wait_for(Duration::from_secs(60), "more chunks to arrive", || {
        (chunks_held(&tablet) >= 4).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = chunks_held(&tablet);
    assert!(kept >= 4, "{kept}");
    assert!(history(n3, &tablet).is_empty());

    // The next import continues where it stopped and merges the history.
    let out = chat_env(n3, &tablet, PASSWORD, &["history", "import", &code], &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("resuming an interrupted import: {kept} of")),
        "{said}"
    );
    assert!(said.contains("imported 6 message(s)"), "{said}");
    assert_eq!(history(n3, &tablet), expected());
    assert_eq!(chunks_held(&tablet), 0);

    // Imported: the holders deleted it, the code does nothing more.
    let said = chat_fails(n3, &tablet, &["history", "import", &code], &[]);
    assert!(said.contains("TransferNotFound"), "{said}");
    assert_eq!(history(n3, &tablet), expected());

    // The node that coordinated each step audited it.
    let audited = |node: &Node, kind: &str| -> Vec<Value> {
        let events: Vec<Value> =
            serde_json::from_str(&node.ok(&["audit", "--since", "1h", "--json"])).unwrap();
        events
            .into_iter()
            .filter(|e| e["event_type"] == kind)
            .collect()
    };
    let exported = audited(n1, "chat_history_exported");
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0]["who"], "pq4:@alice");
    let imported = audited(n3, "chat_history_imported");
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert_eq!(imported[0]["details"]["messages"], "6");

    // A holder dies during a transfer: the chunks come from the other two (k = 3).
    chat_ok(n1, &alice, &["send", "@bob", "one more"]);
    let code = export(n1, &alice, &[("CONSTELLA_TEST_HISTORY_CHUNK_BYTES", "64")]);
    let child = spawn_import(n3, &tablet, &code, 200);
    wait_for(Duration::from_secs(60), "the first chunks", || {
        (chunks_held(&tablet) >= 2).then_some(())
    });
    cluster.node_mut("bravo").kill();
    let out = child.wait_with_output().unwrap();
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("imported 7 message(s)"), "{said}");
    assert!(said.contains("(1 new on this device)"), "{said}");
    let n3 = cluster.node("charlie");
    let mut all = expected();
    all.push("one more".to_owned());
    assert_eq!(history(n3, &tablet), all);
}

/// The letters of a code, as `chat history export` prints them (base32, RFC 4648, lower case).
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn unbase32(text: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'-') {
        acc = ((acc << 5) | ALPHABET.iter().position(|a| *a == c).unwrap() as u32) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn base32(bytes: &[u8]) -> String {
    let (mut out, mut acc, mut bits) = (String::new(), 0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The same transfer id with another master key and a valid check value: a forged code only
/// the network can refuse.
fn forged(code: &str) -> String {
    let mut raw = unbase32(code);
    assert_eq!(raw.len(), 8 + 32 + 3);
    raw[8] ^= 1;
    let check = Sha256::new()
        .chain_update(b"PQ4 history code")
        .chain_update(&raw[..8])
        .chain_update(&raw[8..40])
        .finalize();
    raw[40..].copy_from_slice(&check[..3]);
    base32(&raw)
}

#[test]
fn a_tampered_forged_or_expired_history_code_is_refused_and_changes_nothing() {
    let cluster = Cluster::start_with(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
        |node| {
            node.env
                .push(("CONSTELLA_PQ4_HISTORY_TTL_MS".into(), "20000".into()));
        },
    );
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(
        &nodes,
        &["alpha", "bravo", "charlie"],
        Duration::from_secs(60),
    );
    let (alice, tablet) = alice_with_a_new_device(&cluster);
    let (n1, n3) = (cluster.node("alpha"), cluster.node("charlie"));

    // A changed letter: refused before anything is asked.
    let code = export(n1, &alice, &[]);
    let mut letters: Vec<char> = code.chars().collect();
    letters[7] = if letters[7] == 'a' { 'b' } else { 'a' };
    let tampered: String = letters.into_iter().collect();
    let said = chat_fails(n3, &tablet, &["history", "import", &tampered], &[]);
    assert!(said.contains("invalid history code"), "{said}");
    assert_eq!(
        said.trim_end()
            .lines()
            .last()
            .map(|l| l.starts_with("error: invalid history code")),
        Some(true)
    );
    let said = chat_fails(n3, &tablet, &["history", "import", "not-a-code"], &[]);
    assert!(said.contains("invalid history code"), "{said}");

    // A forged key: the first is refused, the second cancels the transfer (§17.2), and the
    // right code then finds nothing.
    let forged = forged(&code);
    let said = chat_fails(n3, &tablet, &["history", "import", &forged], &[]);
    assert!(said.contains("wrong history transfer key"), "{said}");
    let said = chat_fails(n3, &tablet, &["history", "import", &forged], &[]);
    assert!(said.contains("TransferCancelled"), "{said}");
    let said = chat_fails(n3, &tablet, &["history", "import", &code], &[]);
    assert!(said.contains("TransferNotFound"), "{said}");
    assert!(history(n3, &tablet).is_empty());

    // Expired: refused, deleted from the holders (asked again it is gone), nothing imported.
    let code = export(n1, &alice, &[]);
    // The holders keep a transfer 20 s in this cluster: let that time pass.
    std::thread::sleep(Duration::from_secs(21));
    let said = chat_fails(n3, &tablet, &["history", "import", &code], &[]);
    assert!(said.contains("TransferExpired"), "{said}");
    let said = chat_fails(n3, &tablet, &["history", "import", &code], &[]);
    assert!(said.contains("TransferNotFound"), "{said}");
    assert!(history(n3, &tablet).is_empty());
    assert_eq!(chunks_held(&tablet), 0);

    // Refusals are audited by the coordinating node, never with a key.
    let events: Vec<Value> =
        serde_json::from_str(&n3.ok(&["audit", "--since", "1h", "--json"])).unwrap();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "chat_history_refused")
        .collect();
    let reasons: Vec<&str> = refused
        .iter()
        .filter_map(|e| e["details"]["reason"].as_str())
        .collect();
    for reason in [
        "AuthenticationFailed",
        "TransferCancelled",
        "TransferExpired",
    ] {
        assert!(reasons.contains(&reason), "{refused:?}");
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&code.replace('-', "")) && !text.contains(&code));
}

/// `chat history import CODE` on `node`'s device `home`, running in the background with a
/// delay of `delay_ms` before each chunk (so a test can interrupt it mid-transfer).
fn spawn_import(node: &Node, home: &Path, code: &str, delay_ms: u64) -> std::process::Child {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&node.dir)
        .args(["chat", "--home", home.to_str().unwrap(), "--password-stdin"])
        .args(["history", "import", code])
        .env("RUST_LOG", "warn")
        .env(
            "CONSTELLA_TEST_HISTORY_CHUNK_DELAY_MS",
            delay_ms.to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    child
}
