//! Nodes that are not members cannot take part: their heartbeats are refused, counted, and never
//! make them alive or leader.

mod common;

use std::fs;
use std::time::Duration;

use common::{Cluster, Node, agreed_leader, wait_for};

/// A node built from a member's state file but with its own identity: it knows the network id,
/// the topic and the members' addresses; `secret` decides whether it also holds the secret.
fn impostor(cluster: &Cluster, name: &str, secret: Option<&str>) -> Node {
    let node = Node::new(cluster.root.path(), name);
    let key = libp2p::identity::Keypair::generate_ed25519();
    node.install_key(&key);
    let mut state = cluster.node("bravo").state_json().unwrap();
    let node_id = key.public().to_peer_id().to_base58();
    state["node"]["name"] = name.into();
    state["node"]["node_id"] = node_id.clone().into();
    state["node"]["public_addr"] = node.addr().into();
    state["node"]["listen"] = node.addr().into();
    // Priority 0 and listed as a member in its own file: it would lead if anyone believed it.
    state["node"]["priority"] = 0.into();
    state["peers"].as_array_mut().unwrap().push(serde_json::json!({
        "name": name, "addr": node.addr(), "node_id": node_id, "status": "alive", "priority": 0, "version": 1
    }));
    state["network_secret"] = secret.map_or_else(|| "ab".repeat(32), str::to_owned).into();
    fs::write(
        node.dir.join("network_state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    node
}

#[test]
fn impostors_are_refused_counted_and_never_lead() {
    let cluster = Cluster::start(&["alpha", "bravo"], &[10, 10], None);
    let members: Vec<&Node> = cluster.nodes.iter().collect();
    let leader = agreed_leader(&members, &["alpha", "bravo"], Duration::from_secs(15));
    let real_secret = cluster.node("bravo").state_json().unwrap()["network_secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut forger = impostor(&cluster, "mallory", None);
    let mut thief = impostor(&cluster, "trudy", Some(&real_secret));
    forger.start();
    thief.start();

    wait_for(
        Duration::from_secs(15),
        "both kinds of impostor gossip counted on alpha",
        || {
            let rejected = cluster.node("alpha").status()?["rejected_gossip"].clone();
            (rejected["bad_mac"].as_u64()? > 0 && rejected["non_member"].as_u64()? > 0)
                .then_some(())
        },
    );
    for member in &members {
        let peers = member.peers().unwrap();
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert!(
            peers
                .iter()
                .all(|p| p.name != "mallory" && p.name != "trudy")
        );
        assert_eq!(member.status().unwrap()["leader"]["name"], leader.as_str());
    }
    let text = String::from_utf8(cluster.node("alpha").cli(&["status"]).stdout).unwrap();
    assert!(
        text.contains("rejected"),
        "status should show refused gossip:\n{text}"
    );
}
