//! PQ4 group chats and verification over real nodes (docs/messaging.md "Groups",
//! "Verification"): real `constella` processes, real chat clients with their own device state.

mod common;

use common::chat::{device_home, three_nodes};

use std::path::Path;
use std::time::Duration;

use common::chat::{PASSWORD, chat_env, chat_ok, raw_send, read_json, read_until, register};
use common::{Cluster, Node, agreed_leader, keys_by_peer_id, output_text};
use serde_json::Value;

const AGREE: Duration = Duration::from_secs(60);

/// `group members NAME --json` on a device.
fn members(node: &Node, home: &Path, group: &str) -> Value {
    let out = chat_ok(node, home, &["group", "members", group, "--json"]);
    serde_json::from_str(out.trim()).unwrap()
}

fn names(value: &Value, field: &str) -> Vec<String> {
    value[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// (from, text, flagged, group) of each item.
fn items(list: &[Value]) -> Vec<(String, String, bool, Option<String>)> {
    list.iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
                m["flagged"].as_bool().unwrap(),
                m.get("group").and_then(|g| g.as_str()).map(str::to_owned),
            )
        })
        .collect()
}

fn group_line(from: &str, text: &str) -> (String, String, bool, Option<String>) {
    (from.into(), text.into(), false, Some("team".into()))
}

#[test]
fn a_group_across_three_nodes_adds_removes_refuses_a_forged_removal_and_loses_a_leaver() {
    let cluster = three_nodes();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let [alice, bob, carol, dave, erin] =
        ["alice", "bob", "carol", "dave", "erin"].map(|n| device_home(&cluster, n));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    register(n3, &carol, "carol");
    register(n1, &dave, "dave");
    register(n2, &erin, "erin");

    // A group of four across three nodes; the key reaches each member through its pairwise
    // session, and a message reaches all.
    let out = chat_ok(
        n1,
        &alice,
        &["group", "create", "team", "@bob", "@carol", "@dave"],
    );
    assert!(out.contains("created group team with 4 member(s)"), "{out}");
    let mut captured_before_add = Vec::new();
    let before = cluster.root.path().join("before-add.frame");
    let sent = chat_env(
        n1,
        &alice,
        PASSWORD,
        &["group", "send", "team", "hello team"],
        &[("CONSTELLA_TEST_CHAT_ENVELOPE_OUT", before.to_str().unwrap())],
    );
    assert!(sent.status.success(), "{}", output_text(&sent));
    captured_before_add.extend(std::fs::read(&before).unwrap());
    for (node, dev) in [(n2, &bob), (n3, &carol), (n1, &dave)] {
        let (got, said) = read_until(node, dev, 1);
        assert_eq!(
            items(&got),
            vec![group_line("alice", "hello team")],
            "{said}"
        );
        assert!(said.contains("you are in group team now"), "{said}");
    }
    // Any member sends to the others.
    chat_ok(n2, &bob, &["group", "send", "team", "hi from bob"]);
    for (node, dev) in [(n1, &alice), (n3, &carol), (n1, &dave)] {
        let (got, _) = read_until(node, dev, 1);
        assert_eq!(items(&got), vec![group_line("bob", "hi from bob")]);
    }
    let view = members(n3, &carol, "team");
    assert_eq!(names(&view, "members"), ["alice", "bob", "carol", "dave"]);
    assert_eq!(names(&view, "admins"), ["alice"]);

    // carol is no admin: her own client refuses; with the test knob she forges the removal of
    // dave anyway. The network refuses her record, and every member's client refuses her key.
    let out = chat_env(
        n3,
        &carol,
        PASSWORD,
        &["group", "remove", "team", "@dave"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("NotAnAdmin"),
        "{}",
        output_text(&out)
    );
    let out = chat_env(
        n3,
        &carol,
        PASSWORD,
        &["group", "remove", "team", "@dave"],
        &[("CONSTELLA_TEST_CHAT_FORGE_GROUP", "1")],
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("not an admin"),
        "{}",
        output_text(&out)
    );
    for (node, dev) in [(n1, &alice), (n2, &bob)] {
        let (got, said) = read_json(node, dev);
        assert!(got.is_empty(), "{got:?}");
        assert!(said.contains("refused a group key from @carol"), "{said}");
        let view = members(node, dev, "team");
        assert_eq!(view["epoch"], 0);
        assert_eq!(names(&view, "members"), ["alice", "bob", "carol", "dave"]);
    }
    // dave was left out of the forger's shares: nothing for him, and he still reads the group.
    chat_ok(n1, &alice, &["group", "send", "team", "still four"]);
    for (node, dev) in [(n2, &bob), (n3, &carol), (n1, &dave)] {
        let (got, _) = read_until(node, dev, 1);
        assert_eq!(items(&got), vec![group_line("alice", "still four")]);
    }

    // The admin removes dave: the key rotates; dave's real client learns it and cannot read
    // what is sent after, even when it lands in his mailbox.
    let out = chat_ok(n1, &alice, &["group", "remove", "team", "@dave"]);
    assert!(
        out.contains("removed @dave from team (key epoch 1)"),
        "{out}"
    );
    let (got, said) = read_json(n1, &dave);
    assert!(got.is_empty(), "{got:?}");
    assert!(said.contains("you were removed from group team"), "{said}");
    let after = cluster.root.path().join("after-remove.frame");
    let sent = chat_env(
        n1,
        &alice,
        PASSWORD,
        &["group", "send", "team", "secret after dave"],
        &[("CONSTELLA_TEST_CHAT_ENVELOPE_OUT", after.to_str().unwrap())],
    );
    assert!(sent.status.success(), "{}", output_text(&sent));
    for (node, dev) in [(n2, &bob), (n3, &carol)] {
        let (got, _) = read_until(node, dev, 1);
        assert_eq!(items(&got), vec![group_line("alice", "secret after dave")]);
    }
    // Nothing was queued for dave; a copy pushed into his mailbox is not readable to him.
    assert!(read_json(n1, &dave).0.is_empty());
    assert_eq!(
        raw_send(n1, "alice", "dave", &std::fs::read(&after).unwrap()),
        "Sent"
    );
    let (got, _) = read_until(n1, &dave, 1);
    assert_eq!(got.len(), 1);
    assert!(got[0]["flagged"].as_bool().unwrap(), "{got:?}");
    assert!(
        !got[0]["text"].as_str().unwrap().contains("secret"),
        "{got:?}"
    );
    assert_eq!(members(n1, &dave, "team")["member"], false);

    // The admin adds erin: she reads what follows, not what came before.
    let out = chat_ok(n1, &alice, &["group", "add", "team", "@erin"]);
    assert!(out.contains("added @erin to team (key epoch 2)"), "{out}");
    chat_ok(n1, &alice, &["group", "send", "team", "welcome erin"]);
    let (got, said) = read_until(n2, &erin, 1);
    assert_eq!(
        items(&got),
        vec![group_line("alice", "welcome erin")],
        "{said}"
    );
    assert_eq!(raw_send(n2, "alice", "erin", &captured_before_add), "Sent");
    let (got, _) = read_until(n2, &erin, 1);
    assert!(got[0]["flagged"].as_bool().unwrap(), "{got:?}");
    assert!(!got[0]["text"].as_str().unwrap().contains("hello team"));
    for (node, dev) in [(n2, &bob), (n3, &carol)] {
        let (got, _) = read_until(node, dev, 1);
        assert_eq!(items(&got), vec![group_line("alice", "welcome erin")]);
    }

    // bob leaves: alice's client carries out the removal when it reads the request.
    let out = chat_ok(n2, &bob, &["group", "leave", "team"]);
    assert!(out.contains("left team"), "{out}");
    let (_, said) = read_json(n1, &alice);
    assert!(
        said.contains("@bob left team; removed (key epoch 3)"),
        "{said}"
    );
    let view = members(n1, &alice, "team");
    assert_eq!(names(&view, "members"), ["alice", "carol", "erin"]);
    chat_ok(n1, &alice, &["group", "send", "team", "three of us"]);
    for (node, dev) in [(n3, &carol), (n2, &erin)] {
        let (got, _) = read_until(node, dev, 1);
        assert_eq!(items(&got), vec![group_line("alice", "three of us")]);
    }
    assert!(read_json(n2, &bob).0.is_empty());

    // The coordinating nodes audited the changes (§18): who and which group, no contents.
    let audited = |node: &Node| -> Vec<Value> {
        serde_json::from_str(&node.ok(&["audit", "--since", "1h", "--json"])).unwrap()
    };
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["event_type"].as_str())
            .filter(|k| k.starts_with("chat_group"))
            .map(str::to_owned)
            .collect()
    };
    let on_alpha = audited(n1);
    let alpha_kinds = kinds(&on_alpha);
    assert!(
        alpha_kinds.contains(&"chat_group_created".to_owned()),
        "{alpha_kinds:?}"
    );
    assert!(
        alpha_kinds.contains(&"chat_group_members_changed".to_owned()),
        "{alpha_kinds:?}"
    );
    let on_charlie = audited(n3);
    let refused: Vec<&Value> = on_charlie
        .iter()
        .filter(|e| e["event_type"] == "chat_group_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{on_charlie:?}");
    assert_eq!(refused[0]["who"], "pq4:@carol");
    let text = serde_json::to_string(&on_alpha).unwrap();
    assert!(!text.contains("hello team") && !text.contains("secret after dave"));
}

#[test]
fn the_key_rotates_after_100_messages_and_two_concurrent_rotations_end_on_one_key() {
    let cluster = three_nodes();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|n| device_home(&cluster, n));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    register(n3, &carol, "carol");
    chat_ok(
        n1,
        &alice,
        &[
            "group", "create", "team", "@bob", "@carol", "--admin", "@bob",
        ],
    );
    for (node, dev) in [(n2, &bob), (n3, &carol)] {
        let (_, said) = read_json(node, dev);
        assert!(said.contains("you are in group team now"), "{said}");
    }

    // The 101st message of one sender goes under a new key (§8).
    let out = chat_env(
        n1,
        &alice,
        PASSWORD,
        &["group", "send", "team", "m"],
        &[("CONSTELLA_TEST_CHAT_GROUP_REPEAT", "101")],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("rotated the key of team (key epoch 1)"),
        "{}",
        output_text(&out)
    );
    let (got, said) = read_until(n2, &bob, 101);
    let texts: Vec<String> = (1..=101).map(|i| format!("m #{i}")).collect();
    assert_eq!(
        items(&got),
        texts
            .iter()
            .map(|t| group_line("alice", t))
            .collect::<Vec<_>>(),
        "{said}"
    );
    assert_eq!(members(n2, &bob, "team")["epoch"], 1);
    assert_eq!(read_until(n3, &carol, 101).0.len(), 101);

    // Two admins rotate at once (§13), both from the same base, stored at the same moment.
    let barrier = cluster.root.path().join("barrier");
    std::fs::create_dir_all(&barrier).unwrap();
    let barrier_env = [(
        "CONSTELLA_TEST_CHAT_GROUP_BARRIER",
        barrier.to_str().unwrap(),
    )];
    let outcomes = std::thread::scope(|s| {
        let a = s.spawn(|| {
            chat_env(
                n1,
                &alice,
                PASSWORD,
                &["group", "rotate", "team"],
                &barrier_env,
            )
        });
        let b = s.spawn(|| {
            chat_env(
                n2,
                &bob,
                PASSWORD,
                &["group", "rotate", "team"],
                &barrier_env,
            )
        });
        common::wait_for(AGREE, "both rotations ready", || {
            (barrier.join("alice.ready").exists() && barrier.join("bob.ready").exists())
                .then_some(())
        });
        std::fs::write(barrier.join("go"), b"").unwrap();
        [a.join().unwrap(), b.join().unwrap()]
    });
    let said: Vec<String> = outcomes.iter().map(output_text).collect();
    assert!(outcomes.iter().any(|o| o.status.success()), "{said:?}");
    // Everyone reads what came; then all three hold the same version, and the loser was told.
    let mut told = said
        .iter()
        .any(|s| s.contains("Conflict: a concurrent change of team"));
    let mut views = Vec::new();
    for (node, dev) in [(n1, &alice), (n2, &bob), (n3, &carol)] {
        let (_, said) = read_json(node, dev);
        told |= said.contains("lost to a concurrent one");
        views.push(members(node, dev, "team"));
    }
    assert!(told, "the loser was not told: {said:?}");
    for view in &views {
        assert_eq!(view["epoch"], 2, "{views:?}");
        assert_eq!(view["by"], views[0]["by"], "{views:?}");
    }
    // And one key: each admin's next message opens everywhere.
    chat_ok(n1, &alice, &["group", "send", "team", "from alice"]);
    chat_ok(n2, &bob, &["group", "send", "team", "from bob"]);
    let (got, said) = read_until(n3, &carol, 2);
    let mut got = items(&got);
    got.sort();
    assert_eq!(
        got,
        vec![
            group_line("alice", "from alice"),
            group_line("bob", "from bob")
        ],
        "{said}"
    );
    assert_eq!(
        items(&read_until(n1, &alice, 1).0),
        vec![group_line("bob", "from bob")]
    );
    assert_eq!(
        items(&read_until(n2, &bob, 1).0),
        vec![group_line("alice", "from alice")]
    );
}

#[test]
fn fingerprints_match_a_changed_verified_key_stops_sending_and_groups_work_via_a_member() {
    let cluster = three_nodes();
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    let [alice, bob] = ["alice", "bob"].map(|n| device_home(&cluster, n));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    let a = chat_ok(n1, &alice, &["fingerprint", "@bob"]);
    let b = chat_ok(n2, &bob, &["fingerprint", "@alice"]);
    let lines = |s: &str| s.lines().take(2).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(lines(&a), lines(&b));
    for line in lines(&a) {
        let digits: String = line.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(digits.len(), 60, "{line}");
    }
    assert!(a.contains("not verified"), "{a}");
    let out = chat_ok(n1, &alice, &["verify", "@bob"]);
    assert!(out.contains("@bob is verified"), "{out}");
    let json: Value =
        serde_json::from_str(chat_ok(n1, &alice, &["fingerprint", "@bob", "--json"]).trim())
            .unwrap();
    assert_eq!(json["verified"], true);
    chat_ok(n1, &alice, &["send", "@bob", "checked"]);

    // bob's key as alice verified it differs from the network's now (the verified record is
    // altered on alice's device, as a key change of bob would leave it): shown loudly, and
    // sending is refused without a confirmation.
    alter_verified(&alice, "bob");
    let out = chat_env(n1, &alice, PASSWORD, &["fingerprint", "@bob"], &[]);
    assert!(out.status.success());
    assert!(
        output_text(&out).contains("IDENTITY KEY HAS CHANGED"),
        "{}",
        output_text(&out)
    );
    let out = chat_env(n1, &alice, PASSWORD, &["send", "@bob", "unconfirmed"], &[]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("KeyChanged"),
        "{}",
        output_text(&out)
    );
    // Verifying again (after comparing) accepts the current key.
    chat_ok(n1, &alice, &["verify", "@bob"]);
    chat_ok(n1, &alice, &["send", "@bob", "confirmed"]);
    let (got, _) = read_until(n2, &bob, 2);
    let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["checked", "confirmed"]);

    // Groups work the same for a client outside the network (`--via` a member): lena, an admin,
    // joins, rotates (her record is stored through charlie) and writes; bob reads it.
    let n3 = cluster.node("charlie");
    let via = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", n3.port, n3.node_id());
    let lena = device_home(&cluster, "lena");
    let code = n3.ok(&["chat", "invite"]).trim().to_owned();
    chat_ok(
        n1,
        &lena,
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
        &alice,
        &[
            "group", "create", "team", "@bob", "@lena", "--admin", "@lena",
        ],
    );
    let (_, said) = read_json(n2, &bob);
    assert!(said.contains("you are in group team now"), "{said}");
    let out = chat_env(n1, &lena, PASSWORD, &["--via", &via, "read", "--json"], &[]);
    assert!(
        output_text(&out).contains("you are in group team now"),
        "{}",
        output_text(&out)
    );
    let out = chat_ok(n1, &lena, &["--via", &via, "group", "rotate", "team"]);
    assert!(out.contains("key epoch 1"), "{out}");
    chat_ok(
        n1,
        &lena,
        &["--via", &via, "group", "send", "team", "from outside"],
    );
    let (got, said) = read_until(n2, &bob, 1);
    assert_eq!(
        items(&got),
        vec![group_line("lena", "from outside")],
        "{said}"
    );
    assert_eq!(members(n1, &alice, "team")["by"], "lena");
}

/// Flips one byte of the identity `device.cbor` records as verified for `peer`.
fn alter_verified(home: &Path, peer: &str) {
    use ciborium::Value as Cbor;
    let path = home.join("device.cbor");
    let mut stored: Cbor = ciborium::from_reader(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let Cbor::Map(fields) = &mut stored else {
        panic!("device.cbor is not a map")
    };
    let (_, verified) = fields
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("verified"))
        .unwrap();
    let Cbor::Map(entries) = verified else {
        panic!("verified is not a map")
    };
    let (_, identity) = entries
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(peer))
        .unwrap();
    let Cbor::Bytes(bytes) = identity else {
        panic!("identity is not bytes")
    };
    bytes[0] ^= 1;
    let mut out = Vec::new();
    ciborium::into_writer(&stored, &mut out).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn a_group_record_moves_to_new_holders_when_its_holders_die() {
    use constella_behaviours::pq4;
    let names = ["alpha", "bravo", "charlie", "delta"];
    let mut cluster = Cluster::start(&names, &[100; 4], Some(keys_by_peer_id(4)));
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &names, AGREE);
    let ids: Vec<libp2p::PeerId> = cluster
        .nodes
        .iter()
        .map(|n| n.node_id().parse().unwrap())
        .collect();
    let [alice, bob] = ["alice", "bob"].map(|n| device_home(&cluster, n));
    register(cluster.node("alpha"), &alice, "alice");
    register(cluster.node("alpha"), &bob, "bob");
    chat_ok(
        cluster.node("alpha"),
        &alice,
        &["group", "create", "team", "@bob"],
    );
    // The group's id decides its holders; the one node that is not one serves at the end.
    let view = members(cluster.node("alpha"), &alice, "team");
    let gid = hex::decode(view["id"].as_str().unwrap()).unwrap();
    let holders = pq4::closest(&constella_behaviours::pq4_groups::group_key(&gid), &ids, 3);
    let name_of = |id: &libp2p::PeerId| names[ids.iter().position(|i| i == id).unwrap()];
    let holder_names: Vec<&str> = holders.iter().map(name_of).collect();
    let outsider = *names.iter().find(|n| !holder_names.contains(n)).unwrap();
    let mut alive: Vec<&str> = names.to_vec();
    for dead in &holder_names {
        alive.retain(|n| n != dead);
        let handoffs = |cluster: &Cluster| -> usize {
            alive
                .iter()
                .map(|n| {
                    cluster
                        .node(n)
                        .log_text()
                        .matches("pq4 records handed off")
                        .count()
                })
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
            common::wait_for(Duration::from_secs(60), "a group hand-off", || {
                (handoffs(&cluster) > mark).then_some(())
            });
            // One pass hands off accounts, mailboxes and groups, and logs once it is done.
        }
    }
    // Only the outsider is left: it still has the group (a change needs the held version).
    let node = cluster.node(outsider);
    let out = chat_ok(node, &alice, &["group", "rotate", "team"]);
    assert!(out.contains("key epoch 1"), "{out}");
    chat_ok(node, &alice, &["group", "send", "team", "still here"]);
    let (got, said) = read_until(node, &bob, 1);
    assert_eq!(
        items(&got),
        vec![group_line("alice", "still here")],
        "{said}"
    );
}

/// Three nodes whose group holders give members `secs` to acknowledge a key (§8.2).
fn three_nodes_with_ack_bound(secs: &str) -> Cluster {
    let cluster = Cluster::start_with(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
        |node| {
            node.env
                .push(("CONSTELLA_PQ4_GROUP_ACK_SECS".into(), secs.into()));
        },
    );
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE);
    cluster
}

#[test]
fn a_member_that_does_not_acknowledge_a_key_in_time_is_shown_inactive_to_the_admins() {
    let cluster = three_nodes_with_ack_bound("3");
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let [alice, bob, carol, dave] =
        ["alice", "bob", "carol", "dave"].map(|n| device_home(&cluster, n));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    register(n3, &carol, "carol");
    register(n1, &dave, "dave");
    chat_ok(
        n1,
        &alice,
        &["group", "create", "team", "@bob", "@carol", "@dave"],
    );
    // bob and dave install the key (and acknowledge it); carol's device stays away.
    for (node, home) in [(n2, &bob), (n1, &dave)] {
        let (_, said) = read_json(node, home);
        assert!(said.contains("you are in group team now"), "{said}");
    }
    let team = members(n1, &alice, "team");
    assert!(
        names(&team, "acknowledged").contains(&"bob".to_owned()),
        "{team}"
    );
    assert!(
        !names(&team, "acknowledged").contains(&"carol".to_owned()),
        "{team}"
    );

    // Past the bound the holders mark carol inactive and tell the admin.
    let said = common::wait_for(
        Duration::from_secs(60),
        "the admin to be told of an inactive member",
        || {
            let (_, said) = read_json(n1, &alice);
            said.contains("did not acknowledge").then_some(said)
        },
    );
    let line = said
        .lines()
        .find(|l| l.contains("did not acknowledge"))
        .unwrap();
    assert!(
        line.contains("group team: @carol did not acknowledge the key of epoch 0 in time"),
        "{said}"
    );
    assert!(!line.contains("@bob") && !line.contains("@dave"), "{said}");
    let team = members(n1, &alice, "team");
    assert_eq!(names(&team, "inactive"), vec!["carol"], "{team}");
    assert_eq!(
        names(&team, "acknowledged"),
        vec!["alice", "bob", "dave"],
        "{team}"
    );
    let text = chat_ok(n1, &alice, &["group", "members", "team"]);
    assert!(
        text.contains("@carol (inactive: did not acknowledge a key in time)"),
        "{text}"
    );
    // The notice goes to admins only; a member's view shows the same status from the holders.
    let (_, said) = read_json(n1, &dave);
    assert!(!said.contains("did not acknowledge"), "{said}");
    assert_eq!(
        names(&members(n3, &dave, "team"), "inactive"),
        vec!["carol"]
    );
    let logged = [n1, n2, n3]
        .iter()
        .any(|n| n.log_text().contains("marked inactive"));
    assert!(logged, "a holder logs the marking");

    // carol comes back: her client installs the key and acknowledges it; she is active again.
    let (_, said) = read_json(n3, &carol);
    assert!(said.contains("you are in group team now"), "{said}");
    let team = members(n1, &alice, "team");
    assert!(names(&team, "inactive").is_empty(), "{team}");
    assert_eq!(names(&team, "acknowledged").len(), 4, "{team}");

    // A new key: until its members acknowledge it only its author holds it; a member that
    // acknowledged the old one is not inactive for that.
    chat_ok(n2, &bob, &["group", "rotate", "team"]);
    let team = members(n2, &bob, "team");
    assert_eq!(team["epoch"], 1);
    assert!(names(&team, "acknowledged").contains(&"bob".to_owned()));
    for (node, home) in [(n1, &alice), (n3, &carol), (n1, &dave)] {
        read_json(node, home);
    }
    let team = members(n1, &alice, "team");
    assert_eq!(names(&team, "acknowledged").len(), 4, "{team}");
    assert!(names(&team, "inactive").is_empty(), "{team}");
}
