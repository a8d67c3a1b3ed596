//! PQ4 chat over real nodes (docs/messaging.md): accounts, 1:1 messages through replicated
//! mailboxes, failures of holders.

mod common;

use common::chat::three_nodes;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ciborium::Value as Cbor;
use common::chat::{Follower, PASSWORD, chat_env, chat_ok, register};
use common::{Cluster, Node, agreed_leader, keys_by_peer_id, output_text, wait_for};
use serde_json::Value;

// Generous: the tests of this file run in parallel, each with its own 3-4 nodes and Argon2id
// (64 MiB) per command, on a small shared machine.
const AGREE: Duration = Duration::from_secs(60);

/// `constella chat ARGS --home HOME --password-stdin` on `node` with the password on stdin.
fn chat(node: &Node, home: &Path, password: &str, args: &[&str]) -> Output {
    chat_env(node, home, password, args, &[])
}

/// One request straight to a node's `pq4.sock` (CBOR frame), its answer as a CBOR value.
fn raw(node: &Node, v: u64, op: &str, fields: Vec<(&str, Cbor)>) -> Cbor {
    use std::io::{Read, Write};
    let body = Cbor::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Cbor::Text(k.to_owned()), v))
            .collect(),
    );
    let request = Cbor::Map(vec![
        (Cbor::Text("v".into()), Cbor::Integer(v.into())),
        (
            Cbor::Text("op".into()),
            Cbor::Map(vec![(Cbor::Text(op.into()), body)]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&request, &mut bytes).unwrap();
    let mut stream = std::os::unix::net::UnixStream::connect(node.dir.join("pq4.sock")).unwrap();
    stream
        .write_all(&(bytes.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&bytes).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).unwrap();
    ciborium::from_reader(answer.as_slice()).unwrap()
}

/// Queues `envelope` for bob as if alice sent it, straight through the service.
fn raw_send(node: &Node, envelope: &[u8]) -> Cbor {
    raw(
        node,
        1,
        "Send",
        vec![
            ("from", Cbor::Text("alice".into())),
            ("to", Cbor::Text("bob".into())),
            ("envelope", Cbor::Bytes(envelope.to_vec())),
        ],
    )
}

/// The variant name of an answer (`Sent`, `Error`, `Unsupported`, …).
fn variant(answer: &Cbor) -> String {
    match answer {
        Cbor::Text(t) => t.clone(),
        Cbor::Map(m) => m[0].0.as_text().unwrap().to_owned(),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn invite(node: &Node) -> String {
    node.ok(&["chat", "invite"]).trim().to_owned()
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
    wait_for(Duration::from_secs(60), "messages to arrive", || {
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
    // A message waits until every device of bob has it: the first device reading it does
    // not take it from the second. (A sender new to bob: both devices hold the account's
    // prekeys, so both can answer the handshake. Ratchet sessions are per device, so a
    // session that started before the second device existed is not readable there.)
    let erin = cluster.root.path().join("erin-device");
    register(n1, &erin, "erin");
    chat_ok(n1, &erin, &["send", "@bob", "for every device"]);
    let first = read_until(n2, &bob, 1);
    assert_eq!(
        first,
        vec![("erin".to_owned(), "for every device".to_owned(), false)]
    );
    assert!(read(n2, &bob).is_empty());
    let second = read_until(cluster.node("charlie"), &bob2, 1);
    assert_eq!(second, first);
    assert!(read(cluster.node("charlie"), &bob2).is_empty());
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

#[test]
fn a_tampered_message_is_flagged_a_replay_refused_and_versions_negotiated() {
    let cluster = three_nodes();
    let (alice, bob) = homes(cluster.root.path());
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    let copy = cluster.root.path().join("envelope");
    let copy_text = copy.to_str().unwrap();
    let out = chat_env(
        n1,
        &alice,
        PASSWORD,
        &["send", "@bob", "genuine"],
        &[("CONSTELLA_TEST_CHAT_ENVELOPE_OUT", copy_text)],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(read_until(n2, &bob, 1)[0].1, "genuine");

    // The same envelope again: refused (the mailbox remembers what bob acknowledged, and bob's
    // device would refuse it as a replay too).
    let envelope = std::fs::read(&copy).unwrap();
    assert_eq!(variant(&raw_send(n1, &envelope)), "Sent");
    assert!(read(n2, &bob).is_empty());

    // A message of alice's with one byte of its signature changed (the envelope ends with
    // the ratchet message's signature): shown flagged, never dropped silently.
    let out = chat_env(
        n1,
        &alice,
        PASSWORD,
        &["send", "@bob", "will be tampered"],
        &[
            ("CONSTELLA_TEST_CHAT_ENVELOPE_OUT", copy_text),
            ("CONSTELLA_TEST_CHAT_DROP", "1"),
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let mut envelope = std::fs::read(&copy).unwrap();
    let last = envelope.len() - 3;
    envelope[last] ^= 0x01;
    assert_eq!(variant(&raw_send(n1, &envelope)), "Sent");
    let got = read_until(n2, &bob, 1);
    assert!(got[0].2, "not flagged: {got:?}");
    assert_eq!(got[0].0, "alice");

    // Versions: v and v-1 are served, a newer one is told what is.
    let ask = |v| {
        variant(&raw(
            n1,
            v,
            "GetBundle",
            vec![("username", Cbor::Text("nobody".into()))],
        ))
    };
    assert_eq!(ask(0), "Error"); // served: UserNotFound
    assert_eq!(ask(1), "Error");
    assert_eq!(ask(2), "Unsupported");
}

#[test]
fn prekeys_run_out_and_a_lost_message_is_reported() {
    let cluster = three_nodes();
    let root = cluster.root.path();
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    let bob = root.join("bob-device");
    // Bob registers with a single one-time prekey.
    let code = invite(n2);
    let out = chat_env(
        n2,
        &bob,
        PASSWORD,
        &[
            "register",
            "--username",
            "bob",
            "--email",
            "bob@example.org",
            "--invite",
            &code,
        ],
        &[("CONSTELLA_TEST_CHAT_OPKS", "1")],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    // Two senders: the first handshake takes the prekey, the second proceeds without one.
    let (alice, erin) = (root.join("alice-device"), root.join("erin-device"));
    register(n1, &alice, "alice");
    register(n1, &erin, "erin");
    chat_ok(n1, &alice, &["send", "@bob", "from alice"]);
    chat_ok(n1, &erin, &["send", "@bob", "from erin"]);
    assert!(
        n1.log_text()
            .contains("bundle handed out without a one-time prekey"),
        "{}",
        n1.log_text()
    );
    let mut got = read_until(n2, &bob, 2);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".to_owned(), "from alice".to_owned(), false),
            ("erin".to_owned(), "from erin".to_owned(), false)
        ]
    );
    // Bob's device was told at that contact that none were left, and uploaded more: the next
    // bundle carries a one-time prekey again.
    wait_for(
        Duration::from_secs(30),
        "bob's new one-time prekeys",
        || {
            n2.log_text()
                .contains("one-time prekeys uploaded")
                .then_some(())
        },
    );
    let bundle = raw(
        n1,
        1,
        "GetBundle",
        vec![("username", Cbor::Text("bob".into()))],
    );
    assert_eq!(variant(&bundle), "Bundle");
    let opk = bundle.as_map().unwrap()[0].1.as_map().unwrap();
    let opk = &opk
        .iter()
        .find(|(k, _)| k.as_text() == Some("opk"))
        .unwrap()
        .1;
    assert!(
        !opk.is_null(),
        "no one-time prekey after the refill: {bundle:?}"
    );
    // A handshake with one of the new prekeys works (bob's device kept their private halves).
    let frank = root.join("frank-device");
    register(n1, &frank, "frank");
    chat_ok(n1, &frank, &["send", "@bob", "from frank"]);
    assert_eq!(
        read_until(n2, &bob, 1),
        vec![("frank".to_owned(), "from frank".to_owned(), false)]
    );

    // Alice's second message never reaches the mailbox; the third shows the gap, and bob is
    // told one message was lost.
    let out = chat_env(
        n1,
        &alice,
        PASSWORD,
        &["send", "@bob", "lost"],
        &[("CONSTELLA_TEST_CHAT_DROP", "1")],
    );
    assert!(out.status.success());
    chat_ok(n1, &alice, &["send", "@bob", "after the gap"]);
    let mut stderr = String::new();
    wait_for(Duration::from_secs(60), "the message after the gap", || {
        let out = chat(n2, &bob, PASSWORD, &["read", "--json"]);
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter()
            .any(|m| m["text"] == "after the gap")
            .then_some(())
    });
    assert!(stderr.contains("1 message(s) from @alice lost"), "{stderr}");
}

#[test]
fn records_move_to_new_holders_so_only_the_fourth_node_can_serve_them() {
    use constella_behaviours::pq4;
    let names = ["alpha", "bravo", "charlie", "delta"];
    let mut cluster = Cluster::start(&names, &[100; 4], Some(keys_by_peer_id(4)));
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &names, AGREE);
    // Bob's three holders, and the one node that is not one.
    let ids: Vec<libp2p::PeerId> = cluster
        .nodes
        .iter()
        .map(|n| n.node_id().parse().unwrap())
        .collect();
    let holders = pq4::closest(&pq4::user_key("bob"), &ids, 3);
    let name_of = |id: &libp2p::PeerId| names[ids.iter().position(|i| i == id).unwrap()];
    let holder_names: Vec<&str> = holders.iter().map(name_of).collect();
    let outsider = *names.iter().find(|n| !holder_names.contains(n)).unwrap();

    let root = cluster.root.path().to_owned();
    let (alice, bob) = homes(&root);
    register(cluster.node(outsider), &alice, "alice");
    register(cluster.node(outsider), &bob, "bob");
    for i in 0..3 {
        chat_ok(
            cluster.node(outsider),
            &alice,
            &["send", "@bob", &format!("h{i}")],
        );
    }
    // The holders die one after another; after each death the survivors hand records to the
    // new holder set. In the end only the outsider is left, with copies it got by hand-off.
    let mut alive: Vec<&str> = names.to_vec();
    for dead in &holder_names {
        alive.retain(|n| n != dead);
        let handoffs = |cluster: &Cluster| -> usize {
            alive
                .iter()
                .map(|n| cluster.node(n).log_text().matches("handed off").count())
                .sum()
        };
        let mark = handoffs(&cluster);
        cluster.node_mut(dead).kill();
        let survivors: Vec<&Node> = alive.iter().map(|n| cluster.node(n)).collect();
        let offline: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !alive.contains(n))
            .collect();
        common::agreed_leader_without(&survivors, &alive, &offline, Duration::from_secs(30));
        if alive.len() > 1 {
            // Someone handed records off after this change (the outsider or a survivor).
            wait_for(Duration::from_secs(60), "a hand-off", || {
                (handoffs(&cluster) > mark).then_some(())
            });
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let got = read_until(cluster.node(outsider), &bob, 3);
    let texts: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(texts, ["h0", "h1", "h2"]);
}

#[test]
fn a_client_outside_the_network_chats_via_a_member() {
    let cluster = three_nodes();
    let root = cluster.root.path().to_owned();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let via = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", n3.port, n3.node_id());
    let (laptop, bob) = (root.join("laptop"), root.join("bob-device"));
    register(n2, &bob, "bob");
    // The laptop runs no node: every command goes --via charlie over libp2p.
    let code = invite(n1);
    chat_ok(
        n1,
        &laptop,
        &[
            "--via",
            &via,
            "register",
            "--username",
            "lena",
            "--email",
            "lena@example.org",
            "--invite",
            &code,
        ],
    );
    chat_ok(
        n1,
        &laptop,
        &["--via", &via, "send", "@bob", "from outside"],
    );
    assert_eq!(read_until(n2, &bob, 1)[0].1, "from outside");
    chat_ok(n2, &bob, &["send", "@lena", "hello lena"]);
    let mut got = Vec::new();
    wait_for(Duration::from_secs(60), "bob's answer via charlie", || {
        let out = chat_ok(n1, &laptop, &["--via", &via, "read", "--json"]);
        let list: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
        got.extend(list);
        (!got.is_empty()).then_some(())
    });
    assert_eq!(got[0]["text"], "hello lena");
    assert_eq!(got[0]["from"], "bob");
    // `read --follow` over --via outlives the member's cut of non-member connections
    // (about 12 s): the client dials again, logs in again and goes on.
    let follow = Follower::start(n1, &laptop, &["--via", &via]);
    // The cut is a rule about time: let it pass.
    std::thread::sleep(Duration::from_secs(14));
    chat_ok(n2, &bob, &["send", "@lena", "after the cut"]);
    let line = follow.next(Duration::from_secs(60), "the message after the cut");
    assert!(line.contains("after the cut"), "{line}");
    drop(follow);

    // A non-member may not make invites, and a wrong password gets it nothing.
    let out = chat(n1, &laptop, PASSWORD, &["--via", &via, "invite"]);
    assert!(
        output_text(&out).contains("NotAMember"),
        "{}",
        output_text(&out)
    );
    let out = chat(
        n1,
        &root.join("laptop2"),
        "wrong password!",
        &["--via", &via, "login", "--username", "lena"],
    );
    assert!(
        output_text(&out).contains("AuthenticationFailed"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn a_message_older_than_the_retention_is_reported_lost() {
    let names = ["alpha", "bravo", "charlie"];
    let cluster = Cluster::start_with(&names, &[100; 3], Some(keys_by_peer_id(3)), |node| {
        node.env
            .push(("CONSTELLA_PQ4_RETENTION_SECS".into(), "8".into()));
    });
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &names, AGREE);
    let (alice, bob) = homes(cluster.root.path());
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    chat_ok(n1, &alice, &["send", "@bob", "too old"]);
    // The retention is a rule about time: let it pass. (8 s, so that "fresh" is still young
    // when bob reads it on a loaded machine: the read runs Argon2id first.)
    std::thread::sleep(Duration::from_secs(9));
    chat_ok(n1, &alice, &["send", "@bob", "fresh"]);
    let out = chat(n2, &bob, PASSWORD, &["read", "--json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let texts: Vec<&str> = list.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["fresh"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 message(s) from @alice lost"), "{stderr}");
}

#[test]
fn failed_logins_are_counted_on_the_holders_so_switching_nodes_does_not_reset_them() {
    let cluster = three_nodes();
    let root = cluster.root.path().to_owned();
    register(cluster.node("alpha"), &root.join("bob-device"), "bob");
    // Five wrong passwords, spread over the three nodes: no node coordinated five itself.
    for (i, node) in ["alpha", "bravo", "charlie", "alpha", "bravo"]
        .iter()
        .enumerate()
    {
        let out = chat(
            cluster.node(node),
            &root.join(format!("guess-{i}")),
            "not bob's password",
            &["login", "--username", "bob"],
        );
        assert!(
            output_text(&out).contains("AuthenticationFailed"),
            "attempt {i} on {node}: {}",
            output_text(&out)
        );
    }
    // The sixth attempt, on the node that saw only one failure, with the right password: the
    // account's holders refuse it.
    let out = chat(
        cluster.node("charlie"),
        &root.join("bob-second"),
        PASSWORD,
        &["login", "--username", "bob"],
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("RateLimited"),
        "{}",
        output_text(&out)
    );
    assert!(!root.join("bob-second").join("device.cbor").exists());
    // Another account is not affected.
    register(cluster.node("charlie"), &root.join("alice-device"), "alice");
    chat_ok(
        cluster.node("charlie"),
        &root.join("alice-second"),
        &["login", "--username", "alice"],
    );
}

#[test]
fn a_message_is_pushed_to_a_following_device_as_it_arrives() {
    let names = ["alpha", "bravo", "charlie"];
    let cluster = Cluster::start_with(&names, &[100; 3], Some(keys_by_peer_id(3)), |node| {
        node.env.push((
            "RUST_LOG".into(),
            "info,constella::daemon::chat=debug".into(),
        ));
    });
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &names, AGREE);
    let (alice, bob) = homes(cluster.root.path());
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    // Bob's second device is a laptop outside the network, through charlie over libp2p.
    let via = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", n3.port, n3.node_id());
    let laptop = cluster.root.path().join("bob-laptop");
    chat_ok(n3, &laptop, &["--via", &via, "login", "--username", "bob"]);
    let local = Follower::start(n2, &bob, &[]);
    let remote = Follower::start(n3, &laptop, &["--via", &via]);
    let logged = |node: &Node, what: &str, from: &str| {
        node.log_text()
            .lines()
            .any(|l| l.contains(what) && l.contains(&format!("from={from}")))
    };
    // Both waits are held open at their members (each follower's first wait found nothing).
    wait_for(
        Duration::from_secs(30),
        "bob's mailbox to be watched for both devices",
        || {
            (logged(n2, "mailbox watched", "chat socket")
                && logged(n3, "mailbox watched", "chat client"))
            .then_some(())
        },
    );
    // Every message reaches both devices: one device's acknowledgement does not take it from
    // the other.
    for text in ["pushed one", "pushed two", "pushed three"] {
        chat_ok(n1, &alice, &["send", "@bob", text]);
        for (device, follower) in [("local", &local), ("via", &remote)] {
            let line = follower.next(Duration::from_secs(60), text);
            assert!(line.contains(text), "{device}: {line}");
        }
    }
    // Each member answered a held wait because a holder told it, not by asking again: the
    // local client's (chat socket) and the --via client's.
    assert!(
        logged(n2, "mailbox wait answered by a push", "chat socket"),
        "{}",
        n2.log_text()
    );
    assert!(
        logged(n3, "mailbox wait answered by a push", "chat client"),
        "{}",
        n3.log_text()
    );
}

#[test]
fn a_message_leaves_the_mailbox_only_when_every_device_acknowledged_it() {
    let cluster = three_nodes();
    let root = cluster.root.path().to_owned();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (erin, bob) = (root.join("erin-device"), root.join("bob-device"));
    register(n1, &erin, "erin");
    register(n2, &bob, "bob");
    // Bob's second device logs in and then stays away.
    let bob2 = root.join("bob-second-device");
    chat_ok(n3, &bob2, &["login", "--username", "bob"]);
    chat_ok(n1, &erin, &["send", "@bob", "one"]);
    chat_ok(n1, &erin, &["send", "@bob", "two"]);
    let texts = |items: &[(String, String, bool)]| -> Vec<String> {
        items.iter().map(|m| m.1.clone()).collect()
    };
    // The first device reads and acknowledges both; it is not shown them again.
    assert_eq!(texts(&read_until(n2, &bob, 2)), ["one", "two"]);
    assert!(read(n2, &bob).is_empty());
    // They are still queued for the second device: a third device enrolled now still finds
    // them in the mailbox (its sessions began later, so they may not open there).
    let bob3 = root.join("bob-third-device");
    chat_ok(n1, &bob3, &["login", "--username", "bob"]);
    let third = read_until(n1, &bob3, 2);
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(third.iter().all(|m| m.0 == "erin"), "{third:?}");
    // The second device gets everything, readable.
    assert_eq!(
        read_until(n3, &bob2, 2),
        vec![
            ("erin".to_owned(), "one".to_owned(), false),
            ("erin".to_owned(), "two".to_owned(), false)
        ]
    );
    // Every device acknowledged them: they are gone from the mailbox, so a fourth device
    // enrolled now finds nothing, while a newer message still reaches it.
    let bob4 = root.join("bob-fourth-device");
    chat_ok(n2, &bob4, &["login", "--username", "bob"]);
    assert!(read(n2, &bob4).is_empty());
    chat_ok(n1, &erin, &["send", "@bob", "three"]);
    let fourth = read_until(n2, &bob4, 1);
    assert_eq!(fourth.len(), 1, "{fourth:?}");
}

#[test]
fn one_name_registered_on_both_sides_of_a_partition_one_wins_and_the_loser_is_told() {
    use common::netns::{Lab, Net, agree};
    let Some(lab) = Lab::new(3) else { return };
    let net = Net::start(&lab, 3);
    let root = tempfile::tempdir().unwrap();
    net.or_logs(|| {
        let all: Vec<&Node> = net.nodes.iter().collect();
        let names = net.names(&[0, 1, 2]);
        agree(&all, &names, &[], AGREE);
        lab.partition(&[0, 1], &[2]);
        agree(&all[..2], &names[..2], &names[2..], AGREE);
        wait_for(AGREE, "charlie to see the others offline", || {
            let answer = all[2].ask_socket(r#"{"command":"peers"}"#)?;
            let peers = answer.get("peers")?.as_array()?.clone();
            peers
                .iter()
                .filter(|p| p["name"] != "charlie")
                .all(|p| p["status"] == "offline")
                .then_some(())
        });
        // carol on each side, the majority's first: both succeed (each side's holders are
        // the members it can reach).
        let (first, second) = (root.path().join("first"), root.path().join("second"));
        let register_on = |node: &Node, home: &Path, email: &str| {
            let code = invite(node);
            chat_ok(
                node,
                home,
                &[
                    "register",
                    "--username",
                    "carol",
                    "--email",
                    email,
                    "--invite",
                    &code,
                ],
            );
        };
        register_on(all[0], &first, "carol1@example.org");
        register_on(all[2], &second, "carol2@example.org");

        lab.heal();
        agree(&all, &names, &[], AGREE);
        // Exactly one account wins everywhere: every node serves the same identity for carol,
        // the earlier registration's.
        let identity = |node: &Node| {
            let answer = raw(
                node,
                1,
                "Identity",
                vec![("username", Cbor::Text("carol".into()))],
            );
            format!("{answer:?}")
        };
        let winner = wait_for(AGREE, "one carol everywhere", || {
            let seen: Vec<String> = all.iter().map(|n| identity(n)).collect();
            (seen.iter().all(|s| *s == seen[0])).then(|| seen[0].clone())
        });
        assert!(winner.contains("Bundle"), "{winner}");
        // The winner's device works on every node; the loser's is told why on next use, by
        // any node, and over --via the login says so too.
        for node in &all {
            chat_ok(node, &first, &["read"]);
            let out = chat(node, &second, PASSWORD, &["read"]);
            assert!(!out.status.success());
            assert!(
                output_text(&out).contains("RegistrationLost")
                    && output_text(&out).contains("UserAlreadyExists")
                    && output_text(&out).contains("partition"),
                "{}",
                output_text(&out)
            );
        }
        let out = chat(all[0], &second, PASSWORD, &["send", "@carol", "hello"]);
        assert!(
            output_text(&out).contains("RegistrationLost"),
            "{}",
            output_text(&out)
        );
        // Over --via from inside charlie's namespace: the login itself says so (the member
        // remembers the losing registration's verifier).
        let via = format!(
            "/ip4/{}/tcp/{}/p2p/{}",
            lab.ip(1),
            all[1].port,
            all[1].node_id()
        );
        let out = {
            use std::io::Write;
            let mut child = std::process::Command::new("ip")
                .args(["netns", "exec", &lab.ns(2), common::BIN, "--state-dir"])
                .arg(&all[2].dir)
                .args([
                    "chat",
                    "--home",
                    second.to_str().unwrap(),
                    "--password-stdin",
                ])
                .args(["--via", &via, "read"])
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
            child.wait_with_output().unwrap()
        };
        assert!(
            output_text(&out).contains("RegistrationLost"),
            "{}",
            output_text(&out)
        );
    });
}
