//! The audit log through the real CLI and daemon: what `constella audit` shows, and that
//! `audit --verify` names the entry that was changed, removed or moved.

mod common;

use std::fs;

use common::Node;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn log_lines(node: &Node) -> Vec<String> {
    fs::read_to_string(node.dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Replaces the log with `lines` and the head with `head` (each failed check also records
/// that the log was read, so every case starts again from the same files).
fn write_lines(node: &Node, lines: &[String], head: &[u8]) {
    fs::write(node.dir.join("audit.log"), lines.join("\n") + "\n").unwrap();
    fs::write(node.dir.join("audit.head"), head).unwrap();
}

/// `audit --verify` fails with one line that starts with `expected`.
fn refused_with(node: &Node, expected: &str) {
    let out = node.cli(&["audit", "--verify"]);
    assert!(!out.status.success(), "a tampered log verified");
    let error = stderr(&out);
    let lines: Vec<&str> = error
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "{error}");
    assert!(
        lines[0].starts_with(&format!("error: {expected}")),
        "{error}"
    );
}

#[test]
fn the_cli_shows_verifies_and_pinpoints_tampering() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(100);
    let out = node.cli(&["audit"]);
    assert!(stderr(&out).contains("no audit log"), "{}", stderr(&out));
    node.start();
    for _ in 0..3 {
        node.invite("5m");
    }
    node.ok(&["access", "grant", "@viewer_v", "viewer"]);
    node.stop();

    // The entries, newest included, and never the invite token.
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["audit", "--since", "1h", "--json"])).unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "invite_issued",
            "invite_issued",
            "invite_issued",
            "role_granted"
        ]
    );
    assert_eq!(entries[0]["node"], "delta-01");
    assert_eq!(entries[0]["from"], "control socket");
    assert!(entries[0]["who"].as_str().unwrap().contains("uid "));
    let raw = fs::read_to_string(node.dir.join("audit.log")).unwrap();
    assert!(
        !raw.contains("invite_issued"),
        "entries are encrypted at rest"
    );
    let text = node.ok(&["audit"]);
    assert!(
        text.contains("role_granted") && text.contains("username=@viewer_v"),
        "{text}"
    );
    // Reading the log is audited too.
    let out = node.ok(&["audit", "--verify"]);
    assert!(out.starts_with("audit log verified: 6 entries"), "{out}");

    let good = log_lines(&node);
    let head = fs::read(node.dir.join("audit.head")).unwrap();
    // A flipped byte in entry 2.
    let mut flipped = good.clone();
    let mut bytes = flipped[1].clone().into_bytes();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    flipped[1] = String::from_utf8(bytes).unwrap();
    write_lines(&node, &flipped, &head);
    refused_with(&node, "audit log entry 2:");
    // A dropped line.
    let mut dropped = good.clone();
    dropped.remove(2);
    write_lines(&node, &dropped, &head);
    refused_with(&node, "audit log entry 3:");
    // A swapped pair.
    let mut swapped = good.clone();
    swapped.swap(3, 4);
    write_lines(&node, &swapped, &head);
    refused_with(&node, "audit log entry 4:");
    // The newest entries cut off.
    write_lines(&node, &good[..5], &head);
    refused_with(&node, "audit log head:");
    // Put back, it verifies again.
    write_lines(&node, &good, &head);
    assert!(
        node.ok(&["audit", "--verify"])
            .starts_with("audit log verified")
    );
}
