//! PQ4 devices over real nodes (docs/messaging.md "Devices", seed 004 §14): real `constella`
//! processes, real chat clients each with its own device state.

mod common;

use common::chat::{device_home, three_nodes};

use std::path::Path;
use std::time::Duration;

use common::chat::{PASSWORD, chat_env, chat_ok, read_json, read_until, register};
use common::{Cluster, Node, agreed_leader, keys_by_peer_id, output_text};
use serde_json::Value;

const AGREE: Duration = Duration::from_secs(60);

/// `chat devices --json`.
fn devices(node: &Node, home: &Path) -> Vec<Value> {
    let out = chat_ok(node, home, &["devices", "--json"]);
    serde_json::from_str(out.trim()).unwrap()
}

/// A chat command that must fail; everything it said.
fn chat_fails(node: &Node, home: &Path, args: &[&str]) -> String {
    let out = chat_env(node, home, PASSWORD, args, &[]);
    assert!(
        !out.status.success(),
        "chat {args:?} should have failed: {}",
        output_text(&out)
    );
    output_text(&out)
}

fn texts(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn two_devices_get_messages_a_revoked_one_gets_nothing_more_and_the_last_one_stays() {
    let cluster = three_nodes();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (alice, bob, laptop) = (
        device_home(&cluster, "alice"),
        device_home(&cluster, "bob"),
        device_home(&cluster, "bob-laptop"),
    );
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    chat_ok(
        n3,
        &laptop,
        &["login", "--username", "bob", "--device-name", "laptop"],
    );

    // Two devices, each with its own id and key; the first one is told about the second.
    let list = devices(n2, &bob);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|d| d["revoked"] == false));
    let this: Vec<&Value> = list.iter().filter(|d| d["this"] == true).collect();
    assert_eq!(this.len(), 1);
    let laptop_id = list
        .iter()
        .find(|d| d["name"] == "laptop")
        .and_then(|d| d["id"].as_str())
        .expect("the laptop is listed")
        .to_owned();
    assert_eq!(laptop_id.len(), 32);
    let on_laptop = devices(n3, &laptop);
    assert_eq!(
        on_laptop
            .iter()
            .find(|d| d["this"] == true)
            .and_then(|d| d["id"].as_str()),
        Some(laptop_id.as_str())
    );

    // A group with bob in it, and messages that reach both of bob's devices.
    chat_ok(n1, &alice, &["group", "create", "team", "@bob"]);
    chat_ok(n1, &alice, &["send", "@bob", "to both devices"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["to both devices"]);
    let (got, _) = read_until(n3, &laptop, 1);
    assert_eq!(texts(&got), vec!["to both devices"]);
    chat_ok(n1, &alice, &["group", "send", "team", "group hello"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["group hello"]);
    let (got, _) = read_until(n3, &laptop, 1);
    assert_eq!(texts(&got), vec!["group hello"]);

    // The phone revokes the laptop by its name: the revocation is signed by the phone's
    // own device key, and bob's groups get a new key.
    let out = chat_env(n2, &bob, PASSWORD, &["revoke", "laptop"], &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("revoked device \"laptop\" ({laptop_id})")),
        "{said}"
    );
    assert!(
        said.contains("rotated the key of team (key epoch 1)"),
        "{said}"
    );
    let list = devices(n2, &bob);
    let revoked = list.iter().find(|d| d["id"] == laptop_id.as_str()).unwrap();
    assert_eq!(revoked["revoked"], true, "{list:?}");

    // The revoked laptop reads nothing more, through any node, and cannot log in again.
    chat_ok(n1, &alice, &["send", "@bob", "after the revocation"]);
    for node in [n3, n1] {
        let said = chat_fails(node, &laptop, &["read", "--json"]);
        assert!(said.contains("DeviceRevoked"), "{said}");
    }
    let said = chat_fails(n3, &laptop, &["login", "--username", "bob"]);
    assert!(said.contains("DeviceRevoked"), "{said}");
    let said = chat_fails(n3, &laptop, &["devices"]);
    assert!(said.contains("DeviceRevoked"), "{said}");
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["after the revocation"]);

    // The phone still gets group messages under the new key (alice installs it first).
    let (_, said) = read_json(n1, &alice);
    assert!(!said.contains("refused"), "{said}");
    let team = chat_ok(n1, &alice, &["group", "members", "team", "--json"]);
    assert!(team.contains("\"epoch\":1"), "{team}");
    chat_ok(n1, &alice, &["group", "send", "team", "under the new key"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["under the new key"]);

    // §14.2: the last active device, an already revoked one, an unknown one.
    let phone_id = this[0]["id"].as_str().unwrap().to_owned();
    let said = chat_fails(n2, &bob, &["revoke", &phone_id]);
    assert!(said.contains("LastActiveDevice"), "{said}");
    let said = chat_fails(n2, &bob, &["revoke", &laptop_id]);
    assert!(said.contains("AlreadyRevoked"), "{said}");
    let said = chat_fails(n2, &bob, &["revoke", "ffffffff"]);
    assert!(said.contains("DeviceNotFound"), "{said}");

    // A third device logging in is reported to the phone at its next read.
    let tablet = device_home(&cluster, "bob-tablet");
    chat_ok(
        n1,
        &tablet,
        &["login", "--username", "bob", "--device-name", "tablet"],
    );
    let (_, said) = read_json(n2, &bob);
    assert!(said.contains("a new device \"tablet\""), "{said}");
    assert_eq!(devices(n1, &tablet).len(), 3);

    // The coordinating nodes audited registrations, logins, the new device and the
    // revocation, never a password.
    let audited = |node: &Node| -> Vec<Value> {
        serde_json::from_str(&node.ok(&["audit", "--since", "1h", "--json"])).unwrap()
    };
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["event_type"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let on_alpha = audited(n1);
    let on_bravo = audited(n2);
    let on_charlie = audited(n3);
    assert!(kinds(&on_alpha).contains(&"chat_registered".to_owned()));
    assert!(kinds(&on_charlie).contains(&"chat_login".to_owned()));
    let added: Vec<&Value> = on_charlie
        .iter()
        .filter(|e| e["event_type"] == "chat_device_added")
        .collect();
    assert_eq!(added.len(), 1, "{on_charlie:?}");
    assert_eq!(added[0]["who"], "pq4:@bob");
    assert_eq!(added[0]["details"]["device"], laptop_id.as_str());
    let revoked: Vec<&Value> = on_bravo
        .iter()
        .filter(|e| e["event_type"] == "chat_device_revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{on_bravo:?}");
    assert_eq!(revoked[0]["details"]["device"], laptop_id.as_str());
    assert!(kinds(&on_bravo).contains(&"chat_device_revoke_refused".to_owned()));
    assert!(kinds(&on_charlie).contains(&"chat_revoked_device_refused".to_owned()));
    for events in [&on_alpha, &on_bravo, &on_charlie] {
        let text = serde_json::to_string(events).unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains("to both devices"));
    }
}

/// `fingerprint @peer --json` on a device: the 60 digits of each user.
fn fingerprints(node: &Node, home: &Path, peer: &str) -> Value {
    let out = chat_env(node, home, PASSWORD, &["fingerprint", peer, "--json"], &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_key_update_reaches_contacts_sessions_continue_and_two_devices_updating_at_once_agree() {
    let cluster = three_nodes();
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (alice, bob, laptop, erin) = (
        device_home(&cluster, "alice"),
        device_home(&cluster, "bob"),
        device_home(&cluster, "bob-laptop"),
        device_home(&cluster, "erin"),
    );
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    register(n3, &erin, "erin");
    chat_ok(
        n3,
        &laptop,
        &["login", "--username", "bob", "--device-name", "laptop"],
    );
    // alice talks with bob and verified him; erin only verified him (no session: she is the
    // contact that is not told and learns it at her next contact, §11.2); alice's group
    // includes bob.
    chat_ok(n1, &alice, &["verify", "@bob"]);
    chat_ok(n3, &erin, &["verify", "@bob"]);
    chat_ok(n1, &alice, &["group", "create", "team", "@bob"]);
    chat_ok(n1, &alice, &["send", "@bob", "before"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["before"]);
    let old = fingerprints(n1, &alice, "@bob")["users"]["bob"].clone();

    // bob updates his keys on the phone: alice is told in her session.
    let out = chat_env(n2, &bob, PASSWORD, &["update-keys"], &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("updated the keys of @bob; told 1 contact(s)"),
        "{said}"
    );
    assert!(
        said.contains("rotated the key of team (key epoch 1)"),
        "{said}"
    );
    let (got, said) = read_json(n1, &alice);
    assert!(got.iter().all(|i| i["flagged"] == false), "{got:?}");
    assert!(said.contains("@bob UPDATED THEIR IDENTITY KEY"), "{said}");
    let now = fingerprints(n1, &alice, "@bob");
    assert_ne!(now["users"]["bob"], old);
    assert_eq!(now["changed"], true, "verified before the update: {now}");
    assert_eq!(
        now["users"]["bob"],
        fingerprints(n2, &bob, "@alice")["users"]["bob"]
    );
    // Sending to a verified contact whose key changed asks first; after verifying again the
    // same session carries on both ways.
    let said = chat_fails(n1, &alice, &["send", "@bob", "unconfirmed"]);
    assert!(said.contains("KeyChanged"), "{said}");
    chat_ok(n1, &alice, &["verify", "@bob"]);
    chat_ok(n1, &alice, &["send", "@bob", "after"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["after"]);
    assert_eq!(got[0]["flagged"], false);
    chat_ok(n2, &bob, &["send", "@alice", "signed with my new key"]);
    let (got, _) = read_until(n1, &alice, 1);
    assert_eq!(texts(&got), vec!["signed with my new key"]);
    assert_eq!(got[0]["flagged"], false);
    // The group goes on under bob's new identity.
    chat_ok(n2, &bob, &["group", "send", "team", "group, new key"]);
    let (got, _) = read_until(n1, &alice, 1);
    assert_eq!(texts(&got), vec!["group, new key"]);
    assert_eq!(got[0]["flagged"], false, "{got:?}");

    // erin was not told; bob's first message to her carries the new identity, and her client
    // follows the chain from the key she verified.
    chat_ok(n2, &bob, &["send", "@erin", "hello erin"]);
    let (got, said) = read_until(n3, &erin, 1);
    assert_eq!(texts(&got), vec!["hello erin"]);
    assert_eq!(got[0]["flagged"], false);
    assert!(said.contains("@bob UPDATED THEIR IDENTITY KEY"), "{said}");

    // bob's laptop follows the new keys at its next command.
    let out = chat_env(n3, &laptop, PASSWORD, &["devices"], &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("were updated on another device"), "{said}");
    assert_eq!(
        fingerprints(n3, &laptop, "@alice")["users"]["bob"],
        now["users"]["bob"]
    );

    // Both devices update at once (§13): exactly one wins, the other is told and follows.
    let barrier = cluster.root.path().join("keys-barrier");
    std::fs::create_dir_all(&barrier).unwrap();
    let env = [(
        "CONSTELLA_TEST_CHAT_KEYS_BARRIER",
        barrier.to_str().unwrap(),
    )];
    let outs = std::thread::scope(|s| {
        let phone = s.spawn(|| chat_env(n2, &bob, PASSWORD, &["update-keys"], &env));
        let lap = s.spawn(|| chat_env(n3, &laptop, PASSWORD, &["update-keys"], &env));
        common::wait_for(Duration::from_secs(60), "both updates ready", || {
            let ready = std::fs::read_dir(&barrier)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                })
                .count();
            (ready == 2).then_some(())
        });
        std::fs::write(barrier.join("go"), b"").unwrap();
        [phone.join().unwrap(), lap.join().unwrap()]
    });
    let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "{}\n---\n{}",
        output_text(&outs[0]),
        output_text(&outs[1])
    );
    let loser = if won[0] { 1 } else { 0 };
    assert!(
        output_text(&outs[loser]).contains("Conflict"),
        "{}",
        output_text(&outs[loser])
    );
    // The loser follows the winner; every side sees the same identity.
    let (node, device) = if loser == 0 {
        (n2, &bob)
    } else {
        (n3, &laptop)
    };
    let out = chat_env(node, device, PASSWORD, &["devices"], &[]);
    assert!(
        output_text(&out).contains("were updated on another device"),
        "{}",
        output_text(&out)
    );
    let phone_view = fingerprints(n2, &bob, "@alice")["users"]["bob"].clone();
    assert_eq!(
        fingerprints(n3, &laptop, "@alice")["users"]["bob"],
        phone_view
    );
    assert_eq!(fingerprints(n1, &alice, "@bob")["users"]["bob"], phone_view);
    assert_ne!(phone_view, now["users"]["bob"]);

    let events: Vec<Value> =
        serde_json::from_str(&n2.ok(&["audit", "--since", "1h", "--json"])).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "chat_keys_updated" && e["who"] == "pq4:@bob"),
        "{events:?}"
    );
}

#[test]
fn a_user_who_lost_every_device_recovers_with_the_code_and_wrong_codes_are_locked_out() {
    let cluster = Cluster::start_with(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
        |node| {
            node.env
                .push(("CONSTELLA_PQ4_RECOVERY_DELAY_MS".into(), "3000".into()));
        },
    );
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE);
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (alice, bob, bob_new) = (
        device_home(&cluster, "alice"),
        device_home(&cluster, "bob"),
        device_home(&cluster, "bob-new"),
    );
    register(n1, &alice, "alice");
    // bob keeps the recovery code his registration showed once.
    let code = n2.ok(&["chat", "invite"]).trim().to_owned();
    let out = chat_ok(
        n2,
        &bob,
        &[
            "register",
            "--username",
            "bob",
            "--email",
            "bob@example.org",
            "--invite",
            &code,
        ],
    );
    let recovery = out
        .lines()
        .find_map(|l| l.split_once("recovery code").map(|(_, rest)| rest))
        .and_then(|rest| rest.rsplit(' ').next())
        .expect("the recovery code is shown")
        .to_owned();
    assert_eq!(recovery.len(), 44, "{out}");
    chat_ok(n1, &alice, &["group", "create", "team", "@bob"]);
    chat_ok(n1, &alice, &["send", "@bob", "before"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["before"]);
    chat_ok(n1, &alice, &["verify", "@bob"]);

    // bob lost his device. Wrong codes: three are refused, then even the right one waits.
    let wrong = "0000000000000000000000000000000000000000";
    let recover = |code: &str| {
        chat_env(
            n3,
            &bob_new,
            PASSWORD,
            &["recover", "--username", "bob", "--code", code],
            &[],
        )
    };
    for _ in 0..3 {
        let out = recover(wrong);
        assert!(!out.status.success());
        assert!(
            output_text(&out).contains("wrong recovery code"),
            "{}",
            output_text(&out)
        );
    }
    let out = recover(&recovery);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("RateLimited") && output_text(&out).contains("try again in"),
        "{}",
        output_text(&out)
    );
    assert!(
        !bob_new.join("device.cbor").exists(),
        "nothing half-written"
    );
    let said = common::wait_for(Duration::from_secs(30), "the lock-out to end", || {
        let out = recover(&recovery);
        out.status.success().then(|| output_text(&out))
    });
    assert!(said.contains("recovered @bob on this device"), "{said}");
    assert!(said.contains("new recovery code"), "{said}");

    // The old device is revoked; the new one is the account's only active device.
    let said = chat_fails(n2, &bob, &["read"]);
    assert!(
        said.contains("DeviceRevoked") && said.contains("recovered"),
        "{said}"
    );
    let list = devices(n3, &bob_new);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        list.iter().filter(|d| d["revoked"] == false).count(),
        1,
        "{list:?}"
    );
    // The old code no longer works.
    let out = recover(&recovery);
    assert!(!out.status.success());

    // alice hears from the recovered bob: loudly told, and her client re-invites him to the
    // group she administers; he reads what follows.
    chat_ok(n3, &bob_new, &["send", "@alice", "I am back"]);
    let (got, said) = read_until(n1, &alice, 1);
    assert_eq!(texts(&got), vec!["I am back"]);
    assert_eq!(got[0]["flagged"], false);
    assert!(said.contains("@bob RECOVERED THEIR ACCOUNT"), "{said}");
    assert!(said.contains("re-invited @bob to team"), "{said}");
    let (_, said) = read_json(n3, &bob_new);
    assert!(said.contains("you are in group team now"), "{said}");
    chat_ok(n1, &alice, &["group", "send", "team", "welcome back"]);
    let (got, _) = read_until(n3, &bob_new, 1);
    assert_eq!(texts(&got), vec!["welcome back"]);
    assert_eq!(got[0]["group"], "team");

    let events: Vec<Value> =
        serde_json::from_str(&n3.ok(&["audit", "--since", "1h", "--json"])).unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(kinds.contains(&"chat_recovered"), "{kinds:?}");
    assert!(kinds.contains(&"chat_recovery_refused"), "{kinds:?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&recovery) && !text.contains(wrong));
}

#[test]
fn a_device_updates_its_keys_itself_once_they_are_older_than_the_period_and_contacts_see_it() {
    let cluster = three_nodes();
    let (n1, n2) = (cluster.node("alpha"), cluster.node("bravo"));
    let (alice, bob) = (device_home(&cluster, "alice"), device_home(&cluster, "bob"));
    register(n1, &alice, "alice");
    register(n2, &bob, "bob");
    chat_ok(n1, &alice, &["send", "@bob", "hello bob"]);
    let (got, _) = read_until(n2, &bob, 1);
    assert_eq!(texts(&got), vec!["hello bob"]);
    let before = fingerprints(n1, &alice, "@bob")["users"]["bob"].clone();

    let with_period = |secs: &str| {
        let out = chat_env(
            n2,
            &bob,
            PASSWORD,
            &["read", "--json"],
            &[("CONSTELLA_PQ4_KEY_UPDATE_SECS", secs)],
        );
        assert!(out.status.success(), "{}", output_text(&out));
        // stdout stays the command's own output.
        let items: Vec<Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(&out)));
        assert!(items.is_empty(), "{items:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Keys younger than the period (an hour) are left alone.
    let said = with_period("3600");
    assert!(!said.contains("updating them"), "{said}");
    assert_eq!(fingerprints(n1, &alice, "@bob")["users"]["bob"], before);

    // With a 1 s period, bob's next command finds his keys (made at registration) too old and
    // updates them itself.
    let said = common::wait_for(Duration::from_secs(30), "an automatic key update", || {
        let said = with_period("1");
        said.contains("updating them").then_some(said)
    });
    assert!(said.contains("the keys of @bob were made"), "{said}");
    assert!(
        said.contains("updated the keys of @bob; told 1 contact(s)"),
        "{said}"
    );
    // Now they are fresh: an hour's period leaves them alone again.
    let said = with_period("3600");
    assert!(!said.contains("updating them"), "{said}");

    // alice is told in her session and sees the new fingerprint, the same bob sees.
    let (_, said) = read_json(n1, &alice);
    assert!(said.contains("@bob updated their identity key"), "{said}");
    let now = fingerprints(n1, &alice, "@bob")["users"]["bob"].clone();
    assert_ne!(now, before);
    assert_eq!(now, fingerprints(n2, &bob, "@alice")["users"]["bob"]);
    chat_ok(n2, &bob, &["send", "@alice", "new keys"]);
    let (got, _) = read_until(n1, &alice, 1);
    assert_eq!(texts(&got), vec!["new keys"]);
    assert_eq!(got[0]["flagged"], false);
    let events: Vec<Value> =
        serde_json::from_str(&n2.ok(&["audit", "--since", "1h", "--json"])).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "chat_keys_updated" && e["who"] == "pq4:@bob"),
        "{events:?}"
    );
}

#[test]
fn a_second_revocation_during_one_is_told_in_progress_and_a_group_that_cannot_rotate_is_a_partial_failure()
 {
    // alpha holds a revocation's claim for 3 s before applying it, so a second revocation
    // really arrives while the first is in progress.
    let cluster = Cluster::start_with(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
        |node| {
            if node.name == "alpha" {
                node.env
                    .push(("CONSTELLA_TEST_PQ4_REVOKE_HOLD_MS".into(), "3000".into()));
            }
        },
    );
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE);
    let (n1, n2, n3) = (
        cluster.node("alpha"),
        cluster.node("bravo"),
        cluster.node("charlie"),
    );
    let (alice, phone, laptop, tablet) = (
        device_home(&cluster, "alice"),
        device_home(&cluster, "bob"),
        device_home(&cluster, "bob-laptop"),
        device_home(&cluster, "bob-tablet"),
    );
    register(n2, &alice, "alice");
    register(n1, &phone, "bob");
    for (node, home, name) in [(n2, &laptop, "laptop"), (n3, &tablet, "tablet")] {
        chat_ok(
            node,
            home,
            &["login", "--username", "bob", "--device-name", name],
        );
    }

    // §14.2 item 4: the phone revokes the tablet through alpha; while alpha holds the claim,
    // the laptop's revocation of the tablet through bravo is refused.
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| chat_env(n1, &phone, PASSWORD, &["revoke", "tablet"], &[]));
        common::wait_for(Duration::from_secs(60), "alpha to hold the claim", || {
            n1.log_text()
                .contains("revocation claim held; applying it")
                .then_some(())
        });
        let second = chat_env(n2, &laptop, PASSWORD, &["revoke", "tablet"], &[]);
        (first.join().unwrap(), second)
    });
    assert!(first.status.success(), "{}", output_text(&first));
    assert!(
        output_text(&first).contains("revoked device \"tablet\""),
        "{}",
        output_text(&first)
    );
    assert!(!second.status.success(), "{}", output_text(&second));
    assert!(
        output_text(&second).contains("RevocationInProgress"),
        "{}",
        output_text(&second)
    );
    // Once the first is done, the same request is answered for what it is.
    let said = chat_fails(n2, &laptop, &["revoke", "tablet"]);
    assert!(said.contains("AlreadyRevoked"), "{said}");
    let said = chat_fails(n3, &tablet, &["read"]);
    assert!(said.contains("DeviceRevoked"), "{said}");
    let events: Vec<Value> =
        serde_json::from_str(&n2.ok(&["audit", "--since", "1h", "--json"])).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "chat_device_revoke_refused"
                && e["details"]["reason"] == "RevocationInProgress"),
        "{events:?}"
    );

    // §14.2 item 5: bob is in two groups; alice rotated "team" and the phone has not read
    // since, so it cannot make team's next key. Revoking the laptop rotates "ops", reports
    // team as a partial failure, and the revocation stands.
    chat_ok(n2, &alice, &["group", "create", "team", "@bob"]);
    chat_ok(n2, &alice, &["group", "create", "ops", "@bob"]);
    for (node, home) in [(n1, &phone), (n2, &laptop)] {
        let (_, said) = read_json(node, home);
        assert!(said.contains("you are in group ops now"), "{said}");
    }
    chat_ok(n2, &alice, &["group", "rotate", "team"]);
    let out = chat_env(n1, &phone, PASSWORD, &["revoke", "laptop"], &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "a partial success: {said}");
    assert!(said.contains("revoked device \"laptop\""), "{said}");
    assert!(
        said.contains("rotated the key of ops (key epoch 1)"),
        "{said}"
    );
    assert!(
        said.contains("PartialGroupKeyUpdateFailure: the key of group team was not rotated"),
        "{said}"
    );
    assert!(said.contains("behind the group"), "{said}");
    assert!(
        said.contains(
            "PartialGroupKeyUpdateFailure: the device is revoked, but 1 group(s) kept their key"
        ),
        "{said}"
    );
    assert!(!said.contains("group ops was not rotated"), "{said}");
    let said = chat_fails(n2, &laptop, &["read"]);
    assert!(said.contains("DeviceRevoked"), "{said}");
    // As told: read, then rotate team by hand; alice's next message opens on the phone.
    read_json(n1, &phone);
    let out = chat_ok(n1, &phone, &["group", "rotate", "team"]);
    assert!(
        out.contains("rotated the key of team (key epoch 2)"),
        "{out}"
    );
    read_json(n2, &alice);
    chat_ok(
        n2,
        &alice,
        &["group", "send", "team", "after the revocation"],
    );
    let (got, _) = read_until(n1, &phone, 1);
    assert_eq!(texts(&got), vec!["after the revocation"]);
}
