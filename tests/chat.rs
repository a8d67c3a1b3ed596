//! PQ4 chat over real nodes (docs/messaging.md): accounts, 1:1 messages through replicated
//! mailboxes, failures of holders.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{Cluster, Node, agreed_leader, keys_by_peer_id, output_text, wait_for};
use serde_json::Value;

const AGREE: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse battery";

fn three_nodes() -> Cluster {
    let cluster = Cluster::start(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
    );
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE);
    cluster
}

/// `constella chat ARGS --home HOME --password-stdin` on `node` with the password on stdin.
fn chat(node: &Node, home: &Path, password: &str, args: &[&str]) -> Output {
    let mut all = vec!["chat", "--home", home.to_str().unwrap(), "--password-stdin"];
    all.extend_from_slice(args);
    node.cli_with(&all, &[], Some(&format!("{password}\n")))
}

fn chat_ok(node: &Node, home: &Path, args: &[&str]) -> String {
    let out = chat(node, home, PASSWORD, args);
    assert!(
        out.status.success(),
        "{} chat {args:?} failed: {}",
        node.name,
        output_text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn invite(node: &Node) -> String {
    node.ok(&["chat", "invite"]).trim().to_owned()
}

fn register(node: &Node, home: &Path, name: &str) {
    let code = invite(node);
    let email = format!("{name}@example.org");
    chat_ok(
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
    );
}

/// Messages read now, as (from, text, flagged).
fn read(node: &Node, home: &Path) -> Vec<(String, String, bool)> {
    let out = chat_ok(node, home, &["read", "--json"]);
    let list: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    list.iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
                m["flagged"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Reads until `count` messages came (or the deadline), returning all of them.
fn read_until(node: &Node, home: &Path, count: usize) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    wait_for(Duration::from_secs(20), "messages to arrive", || {
        got.extend(read(node, home));
        (got.len() >= count).then_some(())
    });
    got
}

fn homes(root: &Path) -> (PathBuf, PathBuf) {
    (root.join("alice-device"), root.join("bob-device"))
}

#[test]
fn alice_and_bob_chat_both_ways_across_nodes() {
    let cluster = three_nodes();
    let (alice, bob) = homes(cluster.root.path());
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");

    chat_ok(n1, &alice, &["send", "@bob", "hello bob"]);
    chat_ok(n1, &alice, &["send", "@bob", "second"]);
    let got = read_until(n2, &bob, 2);
    assert_eq!(
        got,
        vec![
            ("alice".to_owned(), "hello bob".to_owned(), false),
            ("alice".to_owned(), "second".to_owned(), false)
        ]
    );
    chat_ok(n2, &bob, &["send", "@alice", "hi alice"]);
    let got = read_until(n1, &alice, 1);
    assert_eq!(got, vec![("bob".to_owned(), "hi alice".to_owned(), false)]);
    chat_ok(n1, &alice, &["send", "@bob", "third"]);
    assert_eq!(read_until(n2, &bob, 1)[0].1, "third");
    // Nothing is shown twice.
    assert!(read(n2, &bob).is_empty());

    // Device state is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(bob.join("device.cbor"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second device of bob logs in with the password (through the third node); a wrong
    // password is refused and changes nothing.
    let bob2 = cluster.root.path().join("bob-second-device");
    let out = chat(
        cluster.node("charlie"),
        &bob2,
        "wrong password!",
        &["login", "--username", "bob"],
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("AuthenticationFailed"),
        "{}",
        output_text(&out)
    );
    assert!(!bob2.join("device.cbor").exists());
    let out = chat(
        cluster.node("charlie"),
        &bob2,
        PASSWORD,
        &["login", "--username", "nobody"],
    );
    assert!(
        output_text(&out).contains("UserNotFound"),
        "{}",
        output_text(&out)
    );
    chat_ok(
        cluster.node("charlie"),
        &bob2,
        &["login", "--username", "bob"],
    );
    // A wrong password on an existing device is refused too.
    let out = chat(n2, &bob, "not the password", &["read"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("wrong password"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn messages_wait_for_an_offline_recipient_and_survive_a_killed_holder() {
    let mut cluster = three_nodes();
    let (alice, bob) = homes(cluster.root.path());
    register(cluster.node("alpha"), &alice, "alice");
    register(cluster.node("bravo"), &bob, "bob");
    // Bob is offline (no client runs); alice sends five messages.
    for i in 0..5 {
        chat_ok(
            cluster.node("alpha"),
            &alice,
            &["send", "@bob", &format!("m{i}")],
        );
    }
    // Every node holds bob's mailbox (k = 3 of 3); one of them crashes.
    cluster.node_mut("charlie").kill();
    let got = read_until(cluster.node("bravo"), &bob, 5);
    let texts: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    // The crashed holder returns with its copies; none is shown twice.
    cluster.node_mut("charlie").start();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE);
    std::thread::sleep(Duration::from_secs(1));
    assert!(read(cluster.node("charlie"), &bob).is_empty());
    chat_ok(cluster.node("charlie"), &alice, &["send", "@bob", "after"]);
    assert_eq!(read_until(cluster.node("bravo"), &bob, 1)[0].1, "after");
}

#[test]
fn two_registrations_of_one_name_racing_on_two_nodes_one_wins() {
    let cluster = three_nodes();
    let root = cluster.root.path().to_owned();
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    let (c1, c2) = (invite(n1), invite(n2));
    let (h1, h2) = (root.join("first"), root.join("second"));
    let results = std::thread::scope(|s| {
        let a = s.spawn(|| {
            chat(
                n1,
                &h1,
                PASSWORD,
                &[
                    "register",
                    "--username",
                    "carol",
                    "--email",
                    "c1@example.org",
                    "--invite",
                    &c1,
                ],
            )
        });
        let b = s.spawn(|| {
            chat(
                n2,
                &h2,
                PASSWORD,
                &[
                    "register",
                    "--username",
                    "carol",
                    "--email",
                    "c2@example.org",
                    "--invite",
                    &c2,
                ],
            )
        });
        [a.join().unwrap(), b.join().unwrap()]
    });
    let won = results.iter().filter(|o| o.status.success()).count();
    let texts: Vec<String> = results.iter().map(output_text).collect();
    assert_eq!(won, 1, "{texts:?}");
    let loser = results.iter().find(|o| !o.status.success()).unwrap();
    let text = output_text(loser);
    assert!(
        text.contains("UserAlreadyExists") || text.contains("Conflict"),
        "{text}"
    );
    // An invite is used once.
    let out = chat(
        n1,
        &root.join("third"),
        PASSWORD,
        &[
            "register",
            "--username",
            "dave",
            "--email",
            "d@example.org",
            "--invite",
            &c1,
        ],
    );
    let used_once = !out.status.success() || !results[0].status.success();
    assert!(used_once, "{}", output_text(&out));
}
