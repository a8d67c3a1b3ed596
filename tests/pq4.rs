//! PQ4 protects the network, tried with real processes: every node has a PQ4 identity whose
//! fingerprint every member shows alike, a node from before PQ4 gets one when it starts, and an
//! outsider with its own libp2p stack (identify, gossipsub, Kademlia: not ours) learns nothing
//! but that a libp2p node is there. That the Join answer carries no secret in the clear is
//! checked on the exact bytes in `src/daemon/admission.rs`; real joins run in every test here.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Cluster, Node, wait_for};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, gossipsub, identify, identity};

const AGREE: Duration = Duration::from_secs(20);

/// Each node's fingerprint as `peers --json` on `node` shows it, once every node has one.
fn fingerprints(node: &Node, count: usize) -> Option<Vec<(String, String)>> {
    let peers = node.peers()?;
    let prints: Vec<(String, String)> = peers
        .into_iter()
        .filter_map(|p| p.fingerprint.map(|f| (p.name, f)))
        .collect();
    (prints.len() == count).then_some(prints)
}

fn own_fingerprint(node: &Node) -> Option<String> {
    node.status()?["fingerprint"].as_str().map(str::to_owned)
}

#[test]
fn every_member_shows_the_same_fingerprints_and_a_node_without_pq4_keys_gets_them() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[10, 20, 30], None);
    cluster.or_logs(|| {
        let alpha = cluster.node("alpha");
        let seen = wait_for(AGREE, "three fingerprints on alpha", || {
            fingerprints(alpha, 3)
        });
        for (name, print) in &seen {
            let node = cluster.node(name);
            assert_eq!(
                own_fingerprint(node).as_deref(),
                Some(print.as_str()),
                "{name}"
            );
            let groups: Vec<&str> = print.split(' ').collect();
            assert_eq!(groups.len(), 12, "{print}");
            assert!(
                groups
                    .iter()
                    .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
            );
            let status = node.status().unwrap();
            assert_eq!(status["secret_epoch"], 0, "{status}");
            let mode = std::fs::metadata(node.dir.join("pq4.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let bravo_print = &seen.iter().find(|(n, _)| n == "bravo").unwrap().1;
        assert!(
            alpha
                .ok(&["verify", "bravo"])
                .contains(bravo_print.as_str())
        );
        let table = alpha.ok(&["peers", "--fingerprints"]);
        assert!(
            seen.iter().all(|(_, p)| table.contains(p.as_str())),
            "{table}"
        );
        let unknown = alpha.cli(&["verify", "nobody"]);
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no member named"));
        // The other members agree with alpha.
        for name in ["bravo", "charlie"] {
            let other = wait_for(AGREE, &format!("fingerprints on {name}"), || {
                fingerprints(cluster.node(name), 3)
            });
            assert_eq!(
                other.iter().collect::<BTreeSet<_>>(),
                seen.iter().collect::<BTreeSet<_>>()
            );
        }
    });

    // A node from before PQ4 (no pq4.key, no card in anyone's list) gets keys when it starts,
    // and its first card spreads. (A node that merely lost its PQ4 keys while the network knows
    // its card cannot swap in new ones: that needs a chain of custody or a new invite.)
    let old = own_fingerprint(cluster.node("charlie")).unwrap();
    let charlie_id = cluster.node("charlie").node_id();
    for name in ["alpha", "bravo", "charlie"] {
        cluster.node_mut(name).stop();
    }
    std::fs::remove_file(cluster.node("charlie").dir.join("pq4.key")).unwrap();
    for name in ["alpha", "bravo", "charlie"] {
        let path = cluster.node(name).dir.join("network_state.json");
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for peer in state["peers"].as_array_mut().unwrap() {
            if peer["node_id"] == charlie_id.as_str() {
                peer.as_object_mut().unwrap().remove("card");
            }
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    }
    for name in ["alpha", "bravo", "charlie"] {
        cluster.node_mut(name).start();
    }
    cluster.or_logs(|| {
        let charlie = cluster.node("charlie");
        let new = wait_for(AGREE, "charlie's new fingerprint", || {
            own_fingerprint(charlie).filter(|p| *p != old)
        });
        assert!(charlie.dir.join("pq4.key").exists());
        wait_for(AGREE, "alpha learning charlie's new card", || {
            fingerprints(cluster.node("alpha"), 3)?
                .into_iter()
                .any(|(n, p)| n == "charlie" && p == new)
                .then_some(())
        });
    });
}

#[derive(NetworkBehaviour)]
struct Outsider {
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

fn node_multiaddr(node: &Node) -> (PeerId, Multiaddr) {
    let id: PeerId = node.node_id().parse().unwrap();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", node.port).parse().unwrap();
    (id, addr)
}

/// An outsider (its own libp2p swarm, not a member) connects, reads identify, subscribes to
/// every topic the node announces and to the old id-named topic, and listens through several
/// heartbeats: it gets no plaintext (no name, no address, no network id), and identify does not
/// show the network id. Then it speaks the Kademlia protocol it saw in identify and stores a
/// record: a fresh outsider asking for it finds nothing.
#[test]
fn an_outsider_reads_nothing_and_cannot_store_a_dht_record() {
    let cluster = Cluster::start(&["alpha", "bravo"], &[10, 20], None);
    let alpha = cluster.node("alpha");
    let network_id = alpha.state_json().unwrap()["network_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cluster.or_logs(|| {
        wait_for(AGREE, "two alive members", || {
            (alpha.leader_and_alive()?.1 == 2).then_some(())
        })
    });
    let (alpha_id, alpha_addr) = node_multiaddr(alpha);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (protocols, topics, messages) = runtime.block_on(async {
        let mut swarm = common::test_swarm(identity::Keypair::generate_ed25519(), |key| Outsider {
            identify: identify::Behaviour::new(identify::Config::new(
                "/outsider/1".into(),
                key.public(),
            )),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )
            .unwrap(),
        });
        for old in [
            format!("constella/{network_id}/membership/1"),
            format!("constella/{network_id}/membership/3"),
        ] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&gossipsub::IdentTopic::new(old))
                .unwrap();
        }
        swarm
            .dial(
                alpha_addr
                    .clone()
                    .with(libp2p::multiaddr::Protocol::P2p(alpha_id)),
            )
            .unwrap();
        let mut protocols = Vec::new();
        let mut topics = BTreeSet::new();
        let mut messages: Vec<Vec<u8>> = Vec::new();
        // Four heartbeat intervals after identify: long enough to be grafted and hear several.
        let mut until: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) || now >= deadline {
                break;
            }
            let wait = until.unwrap_or(deadline) - now;
            let Ok(event) = tokio::time::timeout(wait, swarm.select_next_some()).await else {
                break;
            };
            match event {
                SwarmEvent::Behaviour(OutsiderEvent::Identify(identify::Event::Received {
                    info,
                    ..
                })) => {
                    protocols = info.protocols.iter().map(ToString::to_string).collect();
                    protocols.push(info.protocol_version.clone());
                    protocols.push(info.agent_version.clone());
                    until.get_or_insert(Instant::now() + Duration::from_secs(8));
                }
                SwarmEvent::Behaviour(OutsiderEvent::Gossipsub(gossipsub::Event::Subscribed {
                    topic,
                    ..
                })) if topics.insert(topic.to_string()) => {
                    // The node's own topic: subscribe to it too (the worst case).
                    let _ = swarm
                        .behaviour_mut()
                        .gossipsub
                        .subscribe(&gossipsub::IdentTopic::new(topic.to_string()));
                }
                SwarmEvent::Behaviour(OutsiderEvent::Gossipsub(gossipsub::Event::Message {
                    message,
                    ..
                })) => messages.push(message.data),
                _ => {}
            }
        }
        (protocols, topics, messages)
    });
    assert!(!protocols.is_empty(), "identify never answered");
    for text in protocols.iter().chain(&topics) {
        assert!(!text.contains(&network_id), "{text} shows the network id");
    }
    let secrets: Vec<Vec<u8>> = vec![
        b"alpha".to_vec(),
        b"bravo".to_vec(),
        network_id.as_bytes().to_vec(),
        b"127.0.0.1".to_vec(),
        alpha.node_id().as_bytes().to_vec(),
    ];
    for data in &messages {
        for needle in &secrets {
            assert!(
                !data.windows(needle.len()).any(|w| w == needle.as_slice()),
                "an outsider read {:?} in a gossip message",
                String::from_utf8_lossy(needle)
            );
        }
    }
    println!(
        "outsider: {} protocols seen, {} topics, {} gossip messages received (all ciphertext)",
        protocols.len(),
        topics.len(),
        messages.len()
    );

    // Kademlia, on the protocol name identify showed.
    let kad_name = protocols
        .iter()
        .find(|p| p.contains("/kad/"))
        .expect("the node speaks Kademlia")
        .clone();
    let key = kad::RecordKey::new(&b"outsider-record".to_vec());
    let kad_swarm = |runtime: &tokio::runtime::Runtime| {
        let _guard = runtime.enter();
        let mut swarm = common::test_swarm(identity::Keypair::generate_ed25519(), |key| {
            let id = key.public().to_peer_id();
            kad::Behaviour::with_config(
                id,
                MemoryStore::new(id),
                kad::Config::new(StreamProtocol::try_from_owned(kad_name.clone()).unwrap()),
            )
        });
        swarm
            .behaviour_mut()
            .add_address(&alpha_id, alpha_addr.clone());
        swarm
    };
    let mut writer = kad_swarm(&runtime);
    let put = runtime.block_on(async {
        writer
            .behaviour_mut()
            .put_record(
                kad::Record::new(key.clone(), vec![7u8; 1024]),
                kad::Quorum::One,
            )
            .unwrap();
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::PutRecord(result),
                    ..
                }) = writer.select_next_some().await
                {
                    return format!("{result:?}");
                }
            }
        })
        .await
        .unwrap_or_else(|_| "no answer".to_owned())
    });
    let mut reader = kad_swarm(&runtime);
    let found = runtime.block_on(async {
        reader.behaviour_mut().get_record(key.clone());
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::GetRecord(result),
                    ..
                }) = reader.select_next_some().await
                {
                    return matches!(result, Ok(kad::GetRecordOk::FoundRecord(_)));
                }
            }
        })
        .await
        .unwrap_or(false)
    });
    println!("outsider's put: {put}");
    assert!(!found, "the member stored an outsider's DHT record");
}

fn epoch(node: &Node) -> Option<u64> {
    node.status()?["secret_epoch"].as_u64()
}

fn names(node: &Node) -> Option<Vec<String>> {
    Some(node.peers()?.into_iter().map(|p| p.name).collect())
}

fn stored_secret(node: &Node) -> String {
    node.state_json().unwrap()["network_secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `remove` on a 4-node network with one member offline: the removed node is dropped
/// everywhere and the secret rotates to epoch 1 on every remaining member, the removed node
/// never gets it (and its heartbeats are refused when it comes back), and the member that was
/// offline catches up when it returns, by its PQ4 identity, without a new invite.
#[test]
fn remove_rotates_the_secret_and_an_offline_member_catches_up() {
    let mut cluster = Cluster::start(
        &["alpha", "bravo", "charlie", "delta"],
        &[10, 20, 30, 40],
        None,
    );
    cluster.or_logs(|| {
        wait_for(AGREE, "four alive members", || {
            (cluster.node("alpha").leader_and_alive()?.1 == 4).then_some(())
        })
    });
    cluster.node_mut("delta").stop();
    let removed_at = Instant::now();
    let said = cluster.node("alpha").ok(&["remove", "charlie", "--yes"]);
    assert!(said.contains("Removed charlie"), "{said}");
    cluster.or_logs(|| {
        for name in ["alpha", "bravo"] {
            wait_for(AGREE, &format!("{name} on epoch 1 without charlie"), || {
                let node = cluster.node(name);
                (epoch(node)? == 1 && names(node)? == ["alpha", "bravo", "delta"]).then_some(())
            });
        }
    });
    println!(
        "rotation: remove to epoch 1 on both online members in {} ms",
        removed_at.elapsed().as_millis()
    );
    let written = |name: &str| cluster.node(name).state_json()?["secret_epoch"].as_u64();
    let secret = wait_for(AGREE, "the new secret written on alpha and bravo", || {
        let secret = stored_secret(cluster.node("alpha"));
        (written("alpha")? == 1 && written("bravo")? == 1)
            .then_some(())
            .filter(|()| stored_secret(cluster.node("bravo")) == secret)
            .map(|()| secret)
    });
    let charlie = cluster.node("charlie");
    assert_eq!(epoch(charlie), Some(0));
    assert_ne!(
        stored_secret(charlie),
        secret,
        "the removed node got the new secret"
    );
    let again = cluster.node("alpha").cli(&["remove", "charlie", "--yes"]);
    assert!(!again.status.success(), "charlie removed twice");

    // The offline member returns and catches up.
    cluster.node_mut("delta").start();
    cluster.or_logs(|| {
        // The status is in memory; the state file follows through the store thread.
        wait_for(
            AGREE,
            "delta on epoch 1 with the new secret written",
            || {
                let delta = cluster.node("delta");
                (epoch(delta)? == 1 && stored_secret(delta) == secret).then_some(())
            },
        );
        wait_for(
            AGREE,
            "delta alive on alpha and charlie gone on delta",
            || {
                let alive = cluster
                    .node("alpha")
                    .peers()?
                    .into_iter()
                    .any(|p| p.name == "delta" && p.status == "alive");
                (alive && names(cluster.node("delta"))? == ["alpha", "bravo", "delta"])
                    .then_some(())
            },
        );
    });

    // The removed node restarts with its old secret: refused, never listed again.
    let before = cluster.node("alpha").status().unwrap()["rejected_gossip"]["non_member"]
        .as_u64()
        .unwrap();
    let charlie = cluster.node_mut("charlie");
    charlie.stop();
    charlie.start();
    cluster.or_logs(|| {
        wait_for(AGREE, "alpha refusing charlie's heartbeats", || {
            let now = cluster.node("alpha").status()?["rejected_gossip"]["non_member"].as_u64()?;
            (now > before).then_some(())
        });
        assert_eq!(
            names(cluster.node("alpha")).unwrap(),
            ["alpha", "bravo", "delta"]
        );
    });
}

/// Two operators remove two members at once, on two different nodes: both rotations race, and
/// every remaining member ends on one secret that neither removed node holds.
#[test]
fn two_concurrent_removals_end_on_one_secret_neither_removed_node_has() {
    let cluster = Cluster::start(
        &["alpha", "bravo", "charlie", "delta"],
        &[10, 20, 30, 40],
        None,
    );
    cluster.or_logs(|| {
        wait_for(AGREE, "four alive members", || {
            (cluster.node("alpha").leader_and_alive()?.1 == 4).then_some(())
        })
    });
    std::thread::scope(|scope| {
        let a = scope.spawn(|| cluster.node("alpha").ok(&["remove", "charlie", "--yes"]));
        let b = scope.spawn(|| cluster.node("bravo").ok(&["remove", "delta", "--yes"]));
        assert!(a.join().unwrap().contains("Removed charlie"));
        assert!(b.join().unwrap().contains("Removed delta"));
    });
    cluster.or_logs(|| {
        let secret = wait_for(AGREE, "alpha and bravo on one secret, alone", || {
            let (alpha, bravo) = (cluster.node("alpha"), cluster.node("bravo"));
            let seen = (
                epoch(alpha)?,
                epoch(bravo)?,
                names(alpha)?,
                names(bravo)?,
                stored_secret(alpha) == stored_secret(bravo),
            );
            let same = seen.4
                && seen.0 >= 1
                && seen.0 == seen.1
                && seen.2 == ["alpha", "bravo"]
                && seen.3 == ["alpha", "bravo"];
            if !same {
                eprintln!("not yet: {seen:?}");
            }
            same.then(|| stored_secret(alpha))
        });
        assert_ne!(stored_secret(cluster.node("charlie")), secret);
        assert_ne!(stored_secret(cluster.node("delta")), secret);
        println!(
            "concurrent removals: both members on epoch {}",
            epoch(cluster.node("alpha")).unwrap()
        );
    });
}

fn fingerprint_of(node: &Node, name: &str) -> Option<String> {
    node.peers()?
        .into_iter()
        .find(|p| p.name == name)?
        .fingerprint
}

/// `rotate-keys` on bravo (seed 004 §11): a new PQ4 identity whose key update is signed by the
/// old one. Every member accepts it through that chain (the fingerprint changes everywhere, and
/// `verify bravo` shows the new one), it survives a restart, and it is the card the next
/// rotation of the network secret is sealed to.
#[test]
fn a_key_update_is_seen_by_every_member() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[10, 20, 30], None);
    let names = ["alpha", "bravo", "charlie"];
    let old = cluster.or_logs(|| {
        wait_for(AGREE, "bravo's fingerprint on every member", || {
            let prints: Vec<String> = names
                .iter()
                .map(|n| fingerprint_of(cluster.node(n), "bravo"))
                .collect::<Option<_>>()?;
            prints
                .windows(2)
                .all(|w| w[0] == w[1])
                .then(|| prints[0].clone())
        })
    });
    let started = Instant::now();
    let said = cluster.node("bravo").ok(&["rotate-keys", "--json"]);
    let rotated: serde_json::Value = serde_json::from_str(&said).unwrap();
    let new = rotated["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous_fingerprint"].as_str(), Some(old.as_str()));
    assert_ne!(new, old);
    assert_eq!(rotated["chain"], 1);
    cluster.or_logs(|| {
        wait_for(AGREE, "bravo's new fingerprint on every member", || {
            names
                .iter()
                .all(|n| fingerprint_of(cluster.node(n), "bravo").as_deref() == Some(&new))
                .then_some(())
        });
    });
    println!(
        "key update: rotate-keys to the new fingerprint on every member in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(
        own_fingerprint(cluster.node("bravo")).as_deref(),
        Some(new.as_str())
    );
    assert!(
        cluster
            .node("alpha")
            .ok(&["verify", "bravo"])
            .contains(&new)
    );
    assert!(
        !cluster
            .node("charlie")
            .ok(&["verify", "bravo"])
            .contains(&old)
    );
    let custody = std::fs::metadata(cluster.node("bravo").dir.join("pq4-custody.cbor")).unwrap();
    assert_eq!(custody.permissions().mode() & 0o777, 0o600);
    // After a restart bravo keeps the new identity and the members keep accepting it.
    let bravo = cluster.node_mut("bravo");
    bravo.stop();
    bravo.start();
    cluster.or_logs(|| {
        wait_for(AGREE, "bravo back with the new fingerprint", || {
            (own_fingerprint(cluster.node("bravo"))? == new
                && cluster.node("alpha").leader_and_alive()?.1 == 3)
                .then_some(())
        });
        assert_eq!(
            fingerprint_of(cluster.node("charlie"), "bravo"),
            Some(new.clone())
        );
    });
    // The next rotation is sealed to the new card: bravo opens it.
    cluster.node("alpha").ok(&["remove", "charlie", "--yes"]);
    cluster.or_logs(|| {
        wait_for(AGREE, "bravo on epoch 1 after its key update", || {
            (epoch(cluster.node("bravo"))? == 1 && epoch(cluster.node("alpha"))? == 1).then_some(())
        });
        assert_eq!(
            stored_secret(cluster.node("alpha")),
            stored_secret(cluster.node("bravo"))
        );
    });
}

/// A removed node cannot come back with an invite issued before its removal (even one never
/// used; the link it joined with is used up anyway); an invite issued after the removal admits it again
/// — the same node id, as a new admission that supersedes its tombstone on every member.
#[test]
fn a_removed_node_comes_back_only_with_a_new_invite() {
    let mut cluster = Cluster::start(&["alpha", "bravo", "charlie"], &[10, 20, 30], None);
    cluster.or_logs(|| {
        wait_for(AGREE, "three alive members", || {
            (cluster.node("alpha").leader_and_alive()?.1 == 3).then_some(())
        })
    });
    let old_link = cluster.node("alpha").invite("10m");
    // Invite times are whole seconds: the removal comes a second later than the old invite.
    std::thread::sleep(Duration::from_millis(1100));
    let charlie_id = cluster.node("charlie").node_id();
    cluster.node_mut("charlie").stop();
    cluster.node("alpha").ok(&["remove", "charlie", "--yes"]);
    cluster.or_logs(|| {
        wait_for(AGREE, "alpha and bravo on epoch 1 without charlie", || {
            let ok = ["alpha", "bravo"].iter().all(|n| {
                let node = cluster.node(n);
                epoch(node) == Some(1) && names(node).is_some_and(|n| n == ["alpha", "bravo"])
            });
            ok.then_some(())
        })
    });
    // Charlie's server, same node key, fresh state (its old state holds a secret now dead).
    let charlie = cluster.node("charlie");
    let old_dir = charlie.dir.with_extension("removed");
    std::fs::rename(&charlie.dir, &old_dir).unwrap();
    std::fs::create_dir_all(&charlie.dir).unwrap();
    std::fs::copy(old_dir.join("node.key"), charlie.dir.join("node.key")).unwrap();
    std::fs::set_permissions(
        charlie.dir.join("node.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let refused = charlie.cli_owned(&charlie.join_args(&old_link, 30));
    let said = common::output_text(&refused);
    assert!(
        !refused.status.success(),
        "readmitted by an old link: {said}"
    );
    assert!(said.contains("removed"), "{said}");
    assert!(
        !charlie.dir.join("network_state.json").exists(),
        "a refused join wrote a state file"
    );
    // A new invite admits it, with the same node id, on the current epoch. (Invite and
    // removal times are whole seconds, and an invite of the removal's second counts as before
    // it: the safe side.)
    std::thread::sleep(Duration::from_millis(1100));
    let new_link = cluster.node("alpha").invite("10m");
    charlie.ok_owned(&charlie.join_args(&new_link, 30));
    assert_eq!(charlie.node_id(), charlie_id);
    cluster.node_mut("charlie").start();
    cluster.or_logs(|| {
        wait_for(
            AGREE,
            "charlie back and alive everywhere, on epoch 1",
            || {
                let back = ["alpha", "bravo", "charlie"]
                    .iter()
                    .all(|n| cluster.node(n).leader_and_alive().map(|(_, alive)| alive) == Some(3));
                (back && epoch(cluster.node("charlie"))? == 1).then_some(())
            },
        );
        assert_eq!(
            stored_secret(cluster.node("charlie")),
            stored_secret(cluster.node("alpha"))
        );
    });
}

/// The periodic rotation (seed 004 §8), with the interval shortened to 3 s: the leader rotates
/// on its own, again and again, and every member follows onto the same secret.
#[test]
fn the_leader_rotates_the_secret_periodically_and_every_member_follows() {
    let cluster = Cluster::start_with(
        &["alpha", "bravo", "charlie"],
        &[10, 20, 30],
        None,
        |node| node.env = vec![("CONSTELLA_ROTATION_SECS".into(), "3".into())],
    );
    cluster.or_logs(|| {
        wait_for(
            Duration::from_secs(30),
            "every member on epoch 2 or later, alike",
            || {
                let epochs: Vec<u64> = ["alpha", "bravo", "charlie"]
                    .iter()
                    .map(|n| epoch(cluster.node(n)))
                    .collect::<Option<_>>()?;
                let secrets: BTreeSet<String> = ["alpha", "bravo", "charlie"]
                    .iter()
                    .map(|n| stored_secret(cluster.node(n)))
                    .collect();
                (epochs[0] >= 2 && epochs.iter().all(|e| *e == epochs[0]) && secrets.len() == 1)
                    .then_some(())
            },
        );
        // Made by the leader alone.
        let last = cluster.node("charlie").state_json().unwrap()["last_rotation"]["from"].clone();
        assert_eq!(
            last.as_str(),
            Some(cluster.node("alpha").node_id().as_str())
        );
    });
    // A bad interval is refused at start with one clear line.
    let spare = Node::new(cluster.root.path(), "delta");
    spare.init(10);
    let out = spare.cli_with(&["run"], &[("CONSTELLA_ROTATION_SECS", "soon")], None);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("CONSTELLA_ROTATION_SECS must be"), "{said}");
}

/// Removals on both sides of a partition (real processes in network namespaces, the partition
/// made by dropping packets on the bridge): alpha, on the 2-node side, removes echo; charlie, on
/// the 3-node side, removes delta. Each side rotates to its own epoch 1 — alpha's still sealed to
/// delta, charlie's to echo. After the heal alpha's wins the tiebreak (the smaller node id), its
/// maker learns of delta's removal and charlie learns it lost: whoever holds a secret that still
/// reaches a removed node rotates again, and the three remaining members end on one secret that
/// neither removed node has. Needs root (skipped with a reason otherwise; fails under CI=true).
#[test]
fn removals_during_a_partition_heal_to_one_secret_without_the_removed_nodes() {
    use common::netns::{Lab, Net, agree};
    let Some(lab) = Lab::new(5) else { return };
    let net = Net::start(&lab, 5);
    let node = |name: &str| net.nodes.iter().find(|n| n.name == name).unwrap();
    let all: Vec<&Node> = net.nodes.iter().collect();
    net.or_logs(|| {
        let everyone = net.names(&[0, 1, 2, 3, 4]);
        agree(&all, &everyone, &[], Duration::from_secs(30));
        lab.partition(&[0, 1], &[2, 3, 4]);
        wait_for(
            Duration::from_secs(20),
            "alpha and charlie see the partition",
            || {
                let alpha = node("alpha").status()?;
                let charlie = node("charlie").status()?;
                (alpha["partitioned"]["sees"] == 2 && charlie["alive"].as_u64()? == 3).then_some(())
            },
        );
        node("alpha").ok(&["remove", "echo", "--yes"]);
        node("charlie").ok(&["remove", "delta", "--yes"]);
        wait_for(
            Duration::from_secs(20),
            "both sides on their own epoch 1",
            || {
                let epochs: Vec<u64> = ["alpha", "bravo", "charlie"]
                    .iter()
                    .map(|n| epoch(node(n)))
                    .collect::<Option<_>>()?;
                (epochs == [1, 1, 1]
                    && stored_secret(node("alpha")) == stored_secret(node("bravo"))
                    && stored_secret(node("alpha")) != stored_secret(node("charlie")))
                .then_some(())
            },
        );
        let healed = Instant::now();
        lab.heal();
        // The three may agree for a moment on a secret still sealed to a removed node (the
        // leader adopted a rotation, or made one, before it learnt of the other side's
        // removal; the removed node may not have opened its copy yet); the leader then rotates
        // again once the departure grace (2 s) has passed. So the end state must hold for 4 s:
        // one secret on the three, that neither removed node holds.
        let steady: std::cell::Cell<Option<(String, Instant)>> = std::cell::Cell::new(None);
        let (secret, agreed_at) = wait_for(
            Duration::from_secs(60),
            "alpha, bravo and charlie on one secret, without delta and echo, for 4 s",
            || {
                let members = ["alpha", "bravo", "charlie"];
                let epochs: BTreeSet<u64> = members
                    .iter()
                    .map(|n| epoch(node(n)))
                    .collect::<Option<_>>()?;
                let secrets: BTreeSet<String> =
                    members.iter().map(|n| stored_secret(node(n))).collect();
                let listed = members
                    .iter()
                    .all(|n| names(node(n)).is_some_and(|l| l == ["alpha", "bravo", "charlie"]));
                let removed = [stored_secret(node("delta")), stored_secret(node("echo"))];
                let agreed = secrets
                    .first()
                    .filter(|s| {
                        epochs.len() == 1 && secrets.len() == 1 && listed && !removed.contains(s)
                    })
                    .cloned();
                let Some(agreed) = agreed else {
                    steady.set(None);
                    return None;
                };
                let since = match steady.take() {
                    Some((held, since)) if held == agreed => since,
                    _ => Instant::now(),
                };
                steady.set(Some((agreed.clone(), since)));
                (since.elapsed() >= Duration::from_secs(4)).then_some((agreed, since))
            },
        );
        println!(
            "partition: heal -> one secret (epoch {}) on the three members in {} ms",
            epoch(node("alpha")).unwrap(),
            agreed_at.duration_since(healed).as_millis()
        );
        assert!(
            epoch(node("alpha")).unwrap() >= 2,
            "no rotation after the heal"
        );
        assert_ne!(stored_secret(node("delta")), secret);
        assert_ne!(stored_secret(node("echo")), secret);
        let told = node("charlie").log_text();
        assert!(
            told.contains("lost the tiebreak"),
            "charlie was not told its rotation lost"
        );
    });
}
