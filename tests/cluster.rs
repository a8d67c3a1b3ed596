//! Membership and leader election across real nodes on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{Cluster, Node, agreed_leader, agreed_leader_without, keys_by_peer_id, wait_for};

const AGREE: Duration = Duration::from_secs(15);

#[test]
fn three_nodes_agree_fail_over_and_recover() {
    // Equal priorities: the smallest PeerId leads. Give it to "alpha" so the test knows.
    let mut cluster = Cluster::start(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
    );
    let all = ["alpha", "bravo", "charlie"];
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &all, AGREE),
        "alpha",
        "{}",
        cluster.dump_logs()
    );
    for node in &cluster.nodes {
        let peers = node.peers().unwrap();
        assert_eq!(peers.len(), 3);
        assert!(peers.iter().all(|p| p.status == "alive"), "{peers:?}");
        let status = node.status().unwrap();
        assert_eq!(status["leader"]["name"], "alpha");
        assert_eq!(status["alive"], 3);
    }

    // Crash the leader: the two survivors agree on the next one, bravo.
    cluster.node_mut("alpha").kill();
    let survivors: Vec<&Node> = cluster.nodes[1..].iter().collect();
    let next = agreed_leader_without(
        &survivors,
        &["bravo", "charlie"],
        &["alpha"],
        Duration::from_secs(10),
    );
    assert_eq!(next, "bravo", "{}", cluster.dump_logs());

    // Restart it from its state file: alive everywhere again, and leading again.
    cluster.node_mut("alpha").start();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &all, AGREE),
        "alpha",
        "{}",
        cluster.dump_logs()
    );
    let status = cluster.node("alpha").status().unwrap();
    assert_eq!(status["is_leader"], true);
}

#[test]
fn a_lower_priority_number_wins_over_a_smaller_peer_id() {
    // alpha has the smaller PeerId but bravo the lower priority number: bravo leads.
    let cluster = Cluster::start(&["alpha", "bravo"], &[100, 5], Some(keys_by_peer_id(2)));
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &["alpha", "bravo"], AGREE),
        "bravo",
        "{}",
        cluster.dump_logs()
    );
}

#[test]
fn a_restarted_member_rejoins_from_its_state_file() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[1, 100, 100], None);
    let all = ["alpha", "bravo", "charlie"];
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &all, AGREE);

    cluster.node_mut("charlie").kill();
    let others: Vec<&Node> = cluster.nodes[..2].iter().collect();
    agreed_leader_without(
        &others,
        &["alpha", "bravo"],
        &["charlie"],
        Duration::from_secs(10),
    );
    // Its state file records the network; no new join is needed.
    let state = cluster.node("charlie").state_json().unwrap();
    assert_eq!(state["peers"].as_array().unwrap().len(), 3);

    cluster.node_mut("charlie").start();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &all, AGREE),
        "alpha",
        "{}",
        cluster.dump_logs()
    );
}

#[test]
fn a_node_that_leaves_is_removed_everywhere_and_forgets_the_secret() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[1, 100, 100], None);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE);

    let out = cluster.node("charlie").ok(&["leave", "--yes"]);
    assert!(out.contains("Left network"), "{out}");
    assert!(cluster.node_mut("charlie").wait_exit().success());
    for node in &cluster.nodes[..2] {
        wait_for(
            Duration::from_secs(10),
            "charlie removed from the list",
            || {
                node.peers()
                    .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p.name != "charlie"))
                    .then_some(())
            },
        );
    }
    let state = cluster.node("charlie").state_json().unwrap();
    assert!(
        state.get("network_secret").is_none(),
        "the secret must be gone: {state}"
    );
    assert_eq!(state["left"], true);
    // It will not start again on that state.
    let out = cluster.node("charlie").cli(&["run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("left network"));
    // And the survivors' state files no longer list it as a peer.
    let alpha = cluster.node("alpha").state_json().unwrap();
    assert!(
        alpha["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "charlie")
    );
}

#[test]
fn sigterm_stops_cleanly_and_peers_see_it_offline() {
    let mut cluster = Cluster::start(&["alpha", "bravo"], &[1, 100], None);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo"], AGREE);
    assert!(cluster.node_mut("bravo").stop().success());
    assert!(
        !cluster.node("bravo").dir.join("control.sock").exists(),
        "the socket is removed on exit"
    );
    wait_for(Duration::from_secs(10), "bravo offline on alpha", || {
        cluster
            .node("alpha")
            .peers()
            .unwrap()
            .iter()
            .any(|p| p.name == "bravo" && p.status == "offline")
            .then_some(())
    });
}

#[test]
fn sigterm_on_the_leader_says_goodbye_and_the_others_re_elect_at_once() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[1, 2, 3], None);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE),
        "alpha"
    );
    // SIGTERM, then ask alpha for its leader until it is gone: during its last second it has
    // stood down and names the next leader, like its peers.
    let pid = cluster.node("alpha").pid();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut last_answer = None;
    while let Some(status) = cluster.node("alpha").status() {
        last_answer = Some(status);
    }
    let last_answer = last_answer.expect("alpha answered during its stop");
    assert_eq!(last_answer["leader"]["name"], "bravo", "{last_answer}");
    assert_eq!(last_answer["is_leader"], false);
    assert!(cluster.node_mut("alpha").wait_exit().success());
    let survivors: Vec<&Node> = cluster.nodes[1..].iter().collect();
    let next = agreed_leader_without(
        &survivors,
        &["bravo", "charlie"],
        &["alpha"],
        Duration::from_secs(10),
    );
    assert_eq!(next, "bravo", "{}", cluster.dump_logs());
    // Marked offline because of the goodbye, not because the connection closed or heartbeats
    // stopped (those give reason=Unreachable or HeartbeatTimeout).
    assert!(
        cluster.node("alpha").log_text().contains("said goodbye"),
        "{}",
        cluster.dump_logs()
    );
    for node in &cluster.nodes[1..] {
        let log = node.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("member offline member=alpha") && l.contains("reason=Goodbye")),
            "{} did not take alpha's goodbye:\n{}",
            node.name,
            cluster.dump_logs()
        );
    }
    // The goodbye was authenticated and accepted, not refused.
    let status = cluster.node("bravo").status().unwrap();
    assert_eq!(status["rejected_gossip"]["malformed"], 0);
}

#[test]
fn a_restarted_follower_names_the_networks_leader_from_its_first_answer() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[1, 100, 100], None);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE),
        "alpha"
    );
    assert!(cluster.node_mut("charlie").stop().success());
    // Ask charlie for its leader as fast as possible from before it starts until it settles.
    let dir = cluster.node("charlie").dir.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let out = std::process::Command::new(common::BIN)
                    .arg("--state-dir")
                    .arg(&dir)
                    .args(["status", "--json"])
                    .env("RUST_LOG", "off")
                    .output()
                    .unwrap();
                if out.status.success() {
                    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    answers.push(status["leader"]["name"].as_str().unwrap().to_owned());
                }
            }
            answers
        })
    };
    cluster.node_mut("charlie").start();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE),
        "alpha"
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = asker.join().unwrap();
    assert!(!answers.is_empty());
    // It took the members it last saw alive for alive instead of electing itself until it
    // heard them: no answer ever named charlie.
    assert!(
        answers.iter().all(|leader| leader == "alpha"),
        "charlie's answers after its restart: {answers:?}"
    );
}

/// Small networks are where gossipsub's default mesh sizes complain; ours are tuned so that
/// 2- and 3-node networks run without a warning.
#[test]
fn two_and_three_node_networks_log_no_warnings() {
    for names in [&["alpha", "bravo"][..], &["alpha", "bravo", "charlie"][..]] {
        let priorities = vec![100; names.len()];
        let cluster = Cluster::start(names, &priorities, None);
        let nodes: Vec<&Node> = cluster.nodes.iter().collect();
        agreed_leader(&nodes, names, AGREE);
        // Several heartbeats and gossipsub mesh maintenance rounds (1 s each) must pass.
        wait_for(Duration::from_secs(20), "every node up for 7 s", || {
            nodes
                .iter()
                .all(|n| {
                    n.status()
                        .is_some_and(|s| s["uptime_secs"].as_u64() >= Some(7))
                })
                .then_some(())
        });
        for node in &cluster.nodes {
            let log = node.log_text();
            let noisy: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                // These networks have no bot token: issue 5 asks for exactly this one warning
                // (tests/bot.rs checks that it is logged once).
                .filter(|l| !l.contains("the bot is off"))
                .collect();
            assert!(
                noisy.is_empty(),
                "{} nodes, {}:\n{}",
                names.len(),
                node.name,
                noisy.join("\n")
            );
        }
    }
}

/// More than five members: the ring of observers and the partial mesh on real processes
/// (docs/design.md, Partial mesh). Every node sees all twelve alive; the joins' first contacts
/// are closed after the mesh grace, so a member that does not lead keeps its ring neighbours
/// and the leader (at most 9 members) while the leader keeps everyone; a killed member, and then
/// the killed leader, are offline everywhere and the rest agree on the next leader.
#[test]
fn a_twelve_node_ring_keeps_a_partial_mesh_and_finds_killed_members() {
    let names: Vec<String> = (0..12).map(|i| format!("ring-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(&refs, &[100; 12], Some(keys_by_peer_id(12)));
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let leader = cluster.or_logs(|| agreed_leader(&nodes, &refs, Duration::from_secs(60)));
    assert_eq!(leader, "ring-00", "the smallest PeerId leads");

    // The mesh grace is 10 s, checked once a second.
    let connections = |node: &Node| {
        let status = node.status()?;
        Some((
            status["connected_peers"].as_u64()?,
            status["failure_detector"]["unwanted_closed"].as_u64()?,
        ))
    };
    let trimmed = cluster.or_logs(|| {
        wait_for(
            Duration::from_secs(40),
            "members other than the leader down to their ring neighbours and the leader",
            || {
                let seen: Vec<(u64, u64)> = nodes
                    .iter()
                    .map(|n| connections(n))
                    .collect::<Option<_>>()?;
                let members_ok = seen[1..].iter().all(|(connected, _)| *connected <= 9);
                let closed: u64 = seen.iter().map(|(_, closed)| closed).sum();
                (members_ok && closed > 0).then_some(seen)
            },
        )
    });
    assert_eq!(trimmed[0].0, 11, "the leader keeps everyone: {trimmed:?}");
    // Then steady: the last first contacts close, and nothing is redialled and closed again
    // (no flapping between the two ends' views of the ring): the counts stop moving.
    let mut last: Option<(std::time::Instant, Vec<(u64, u64)>)> = None;
    let steady = cluster.or_logs(|| {
        wait_for(
            Duration::from_secs(30),
            "connections steady for 3 s",
            || {
                let seen: Vec<(u64, u64)> = nodes
                    .iter()
                    .map(|n| connections(n))
                    .collect::<Option<_>>()?;
                match &last {
                    Some((since, before)) if *before == seen => {
                        (since.elapsed() >= Duration::from_secs(3)).then_some(seen)
                    }
                    _ => {
                        last = Some((std::time::Instant::now(), seen));
                        None
                    }
                }
            },
        )
    });
    assert_eq!(steady[0].0, 11, "{steady:?}");
    assert!(steady[1..].iter().all(|(c, _)| *c <= 9), "{steady:?}");
    drop(nodes);

    // A member dies: found by its observers, told to the rest by their verdict.
    cluster.node_mut("ring-05").kill();
    let rest: Vec<&str> = refs.iter().copied().filter(|n| *n != "ring-05").collect();
    let survivors: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|n| n.name != "ring-05")
        .collect();
    let leader = cluster.or_logs(|| {
        agreed_leader_without(&survivors, &rest, &["ring-05"], Duration::from_secs(10))
    });
    assert_eq!(leader, "ring-00");
    drop(survivors);

    // The leader dies: the next one takes over and keeps everyone.
    cluster.node_mut("ring-00").kill();
    let rest: Vec<&str> = rest.into_iter().filter(|n| *n != "ring-00").collect();
    let survivors: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|n| n.name != "ring-05" && n.name != "ring-00")
        .collect();
    let leader = cluster.or_logs(|| {
        agreed_leader_without(
            &survivors,
            &rest,
            &["ring-00", "ring-05"],
            Duration::from_secs(10),
        )
    });
    assert_eq!(leader, "ring-01");
    let next = survivors[0];
    cluster.or_logs(|| {
        wait_for(
            Duration::from_secs(10),
            "the new leader connected to all 9 others",
            || (connections(next)?.0 == 9).then_some(()),
        )
    });
}
