//! GetPeers, GetStats and Reboot between real nodes on 127.0.0.1, and what a stranger or a
//! broken frame gets. No test here can reboot the machine: every reboot either goes to a
//! `--reboot-command` marker or to a daemon whose CAP_SYS_BOOT was dropped (checked first).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{Cluster, Node, agreed_leader, agreed_leader_without, wait_for};
use constella_behaviours::join::{JoinRequest, JoinResponse};
use constella_behaviours::rpc::{self, RpcAnswer, RpcRefusal, RpcRequest, RpcResponse};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identity};

const AGREE: Duration = Duration::from_secs(15);

/// The file a node's reboot command appends to.
fn marker(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}.rebooted"))
}

fn marker_lines(root: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(marker(root, name))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A network like [`Cluster::start`], every node's reboot replaced by a marker command.
fn cluster_with_markers(names: &[&str]) -> Cluster {
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = names.iter().map(|n| Node::new(root.path(), n)).collect();
    let start = |node: &mut Node| {
        let command = format!(
            "echo \"$CONSTELLA_REBOOT_REQUESTED_BY\" >> '{}'",
            marker(root.path(), &node.name).display()
        );
        node.start_with(&[], &[("CONSTELLA_REBOOT_COMMAND", &command)]);
    };
    nodes[0].init(100);
    start(&mut nodes[0]);
    for i in 1..nodes.len() {
        let link = nodes[0].invite("5m");
        nodes[i].join(&link, 100);
        start(&mut nodes[i]);
    }
    Cluster { root, nodes }
}

fn stderr_of(node: &Node, args: &[&str]) -> (bool, String) {
    let out = node.cli(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// MemTotal of /proc/meminfo, in bytes.
fn mem_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Size of the filesystem of `/` as statvfs reports it: f_blocks × f_frsize.
fn root_fs_total_bytes() -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %S", "/"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    fields.next().unwrap() * fields.next().unwrap()
}

#[test]
fn stats_peers_and_reboot_reach_the_named_node() {
    let mut cluster = cluster_with_markers(&["alpha", "bravo", "charlie"]);
    let all = ["alpha", "bravo", "charlie"];
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &all, AGREE);
    let root = cluster.root.path().to_owned();
    let alpha = cluster.node("alpha");

    // GetStats of a remote node, by name and by node id.
    let stats: serde_json::Value = serde_json::from_str(&alpha.ok(&["stats", "bravo", "--json"]))
        .expect("stats --json is JSON");
    assert_eq!(stats["name"], "bravo");
    assert_eq!(stats["node_id"], cluster.node("bravo").node_id());
    let cpu = stats["cpu_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "cpu {cpu}");
    assert_eq!(
        stats["ram_total_bytes"].as_u64().unwrap(),
        mem_total_bytes()
    );
    assert!(stats["ram_used_bytes"].as_u64().unwrap() <= mem_total_bytes());
    let disks = stats["disks"].as_array().unwrap();
    let slash = disks.iter().find(|d| d["mount"] == "/").expect("/ listed");
    assert_eq!(
        slash["total_bytes"].as_u64().unwrap(),
        root_fs_total_bytes()
    );
    assert!(slash["used_bytes"].as_u64().unwrap() <= slash["total_bytes"].as_u64().unwrap());
    assert_eq!(stats["load_average"].as_array().unwrap().len(), 3);
    assert!(
        stats["host_uptime_secs"].as_u64().unwrap()
            >= stats["daemon_uptime_secs"].as_u64().unwrap()
    );
    assert!(stats["daemon_rss_bytes"].as_u64().unwrap() > 1024 * 1024);
    let by_id = alpha.ok(&["stats", &cluster.node("charlie").node_id()]);
    assert!(by_id.starts_with("node      charlie ("), "{by_id}");
    for line in ["cpu ", "ram ", "disk ", "uptime ", " %"] {
        assert!(by_id.contains(line), "{line:?} missing in:\n{by_id}");
    }
    // The local node answers for itself.
    let own: serde_json::Value =
        serde_json::from_str(&alpha.ok(&["stats", "alpha", "--json"])).unwrap();
    assert_eq!(own["name"], "alpha");

    // GetPeers as bravo sees the network.
    let seen: Vec<serde_json::Value> =
        serde_json::from_str(&alpha.ok(&["peers", "--from", "bravo", "--json"])).unwrap();
    let names: Vec<&str> = seen.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, all);
    assert!(seen.iter().all(|p| p["status"] == "alive"), "{seen:?}");

    // Unknown target: refused at once, by name.
    let started = Instant::now();
    let (ok, err) = stderr_of(alpha, &["stats", "nobody"]);
    assert!(!ok);
    assert_eq!(err, "error: no node named nobody");
    assert!(started.elapsed() < Duration::from_secs(2));
    let (ok, err) = stderr_of(alpha, &["reboot", "nobody", "--yes"]);
    assert!(!ok);
    assert_eq!(err, "error: no node named nobody");

    // Reboot without --yes and without a terminal: refused before anything is sent.
    let (ok, err) = stderr_of(alpha, &["reboot", "bravo"]);
    assert!(!ok && err.contains("pass --yes"), "{err}");

    // Reboot bravo: accepted, its command runs once, on bravo only.
    let answer = alpha.ok(&["reboot", "bravo", "--yes"]);
    assert!(
        answer.starts_with("Node bravo accepted the reboot"),
        "{answer}"
    );
    let bravo = cluster.node("bravo");
    wait_for(Duration::from_secs(10), "bravo's reboot command", || {
        bravo
            .log_text()
            .contains("reboot command finished")
            .then_some(())
    });
    let lines = marker_lines(&root, "bravo");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("constella reboot (user "), "{lines:?}");
    assert!(marker_lines(&root, "alpha").is_empty());
    assert!(marker_lines(&root, "charlie").is_empty());
    let log = bravo.log_text();
    assert!(
        log.contains("reboot requested") && log.contains("via=\"node alpha ("),
        "bravo's log names who asked:\n{log}"
    );

    // The local node reboots itself through its own control socket.
    let alpha = cluster.node("alpha");
    let answer = alpha.ok(&["reboot", "alpha", "--yes"]);
    assert!(
        answer.starts_with("Node alpha accepted the reboot"),
        "{answer}"
    );
    wait_for(Duration::from_secs(10), "alpha's reboot command", || {
        (marker_lines(&root, "alpha").len() == 1).then_some(())
    });
    assert_eq!(marker_lines(&root, "bravo").len(), 1);
    assert!(marker_lines(&root, "charlie").is_empty());

    // A node that is believed alive but does not answer (stopped): unreachable within 5 s.
    let charlie_pid = cluster.node("charlie").pid().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &charlie_pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let started = Instant::now();
    let (ok, err) = stderr_of(cluster.node("alpha"), &["stats", "charlie"]);
    let took = started.elapsed();
    signal("-CONT");
    assert!(!ok);
    assert_eq!(err, "error: node charlie is unreachable");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    wait_for(Duration::from_secs(15), "charlie to answer again", || {
        cluster
            .node("alpha")
            .cli(&["stats", "charlie"])
            .status
            .success()
            .then_some(())
    });

    // An offline node: both calls fail within 5 s, naming it offline.
    cluster.node_mut("charlie").kill();
    let nodes: Vec<&Node> = cluster.nodes[..2].iter().collect();
    agreed_leader_without(&nodes, &["alpha", "bravo"], &["charlie"], AGREE);
    let alpha = cluster.node("alpha");
    for args in [
        &["stats", "charlie"][..],
        &["reboot", "charlie", "--yes"][..],
    ] {
        let started = Instant::now();
        let (ok, err) = stderr_of(alpha, args);
        assert!(!ok, "{args:?}");
        assert_eq!(err, "error: node charlie is offline", "{args:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    assert!(marker_lines(&root, "charlie").is_empty());
    // The rest of the network is untouched.
    assert!(alpha.ok(&["stats", "bravo"]).contains("node      bravo"));
}

#[test]
fn reboot_without_the_capability_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut alpha = Node::new(root.path(), "alpha");
    let mut bravo = Node::new(root.path(), "bravo");
    alpha.init(100);
    alpha.start();
    bravo.join(&alpha.invite("5m"), 100);
    // No reboot command: bravo would really reboot, so it runs without CAP_SYS_BOOT.
    bravo.start_with(
        &[
            "setpriv",
            "--bounding-set",
            "-sys_boot",
            "--inh-caps",
            "-all",
        ],
        &[],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", bravo.pid())).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        cap_eff & (1 << 22),
        0,
        "bravo still holds CAP_SYS_BOOT; not asking it to reboot"
    );
    agreed_leader(&[&alpha, &bravo], &["alpha", "bravo"], AGREE);

    for (caller, label) in [(&alpha, "over the network"), (&bravo, "locally")] {
        let (ok, err) = stderr_of(caller, &["reboot", "bravo", "--yes"]);
        assert!(!ok, "{label}");
        assert_eq!(
            err, "error: node bravo: reboot needs root or CAP_SYS_BOOT",
            "{label}"
        );
    }
    assert!(bravo.is_running());
    assert!(bravo.log_text().contains("reboot refused"));
    assert!(alpha.ok(&["stats", "bravo"]).contains("node      bravo"));
}

// ---- a hand-made libp2p client ----

/// Sends raw bytes on the RPC protocol and reads whatever comes back.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io.take(1 << 20).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io.take(1 << 20).read_to_end(&mut bytes).await?;
        if bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "no answer",
            ));
        }
        Ok(bytes)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&response).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Probe {
    rpc: rpc::Behaviour,
    raw: request_response::Behaviour<RawCodec>,
    join: constella_behaviours::join::Behaviour,
}

fn probe_swarm(key: identity::Keypair) -> Swarm<Probe> {
    common::test_swarm(key, |_| Probe {
        rpc: rpc::behaviour(Duration::from_secs(5)),
        raw: request_response::Behaviour::new(
            [(rpc::PROTOCOL, ProtocolSupport::Outbound)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
        ),
        join: constella_behaviours::join::behaviour(Duration::from_secs(5)),
    })
}

/// Which of the probe's behaviours sent a request (each numbers its requests from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Via {
    Rpc,
    Raw,
    Join,
}

type Key = (Via, OutboundRequestId);

/// What the probe saw happen to one request.
#[derive(Debug)]
enum Outcome {
    Rpc(RpcResponse),
    Raw(Vec<u8>),
    Join(Box<JoinResponse>),
    Failed(String),
}

/// Drives the swarm until every request in `wanted` has an outcome; also reports whether a
/// connection to `peer` closed meanwhile.
async fn outcomes(
    swarm: &mut Swarm<Probe>,
    mut wanted: Vec<Key>,
    peer: PeerId,
) -> (HashMap<Key, Outcome>, bool) {
    let mut seen = HashMap::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !wanted.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .unwrap_or_else(|_| panic!("no outcome for {wanted:?}"));
        let (id, outcome) = match event {
            SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == peer => {
                closed = true;
                continue;
            }
            SwarmEvent::Behaviour(ProbeEvent::Rpc(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => ((Via::Rpc, request_id), Outcome::Rpc(response)),
            SwarmEvent::Behaviour(ProbeEvent::Raw(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => ((Via::Raw, request_id), Outcome::Raw(response)),
            SwarmEvent::Behaviour(ProbeEvent::Join(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => ((Via::Join, request_id), Outcome::Join(Box::new(response))),
            SwarmEvent::Behaviour(ProbeEvent::Rpc(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            })) => ((Via::Rpc, request_id), Outcome::Failed(error.to_string())),
            SwarmEvent::Behaviour(ProbeEvent::Join(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            })) => ((Via::Join, request_id), Outcome::Failed(error.to_string())),
            SwarmEvent::Behaviour(ProbeEvent::Raw(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            })) => ((Via::Raw, request_id), Outcome::Failed(error.to_string())),
            _ => continue,
        };
        if let Some(i) = wanted.iter().position(|w| *w == id) {
            wanted.swap_remove(i);
            seen.insert(id, outcome);
        }
    }
    (seen, closed)
}

fn cbor(request: &RpcRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(request, &mut bytes).unwrap();
    bytes
}

#[test]
fn strangers_are_refused_and_bad_frames_fail_alone() {
    let root = tempfile::tempdir().unwrap();
    let mut alpha = Node::new(root.path(), "alpha");
    alpha.init(100);
    let command = format!("echo x >> '{}'", marker(root.path(), "alpha").display());
    alpha.start_with(&[], &[("CONSTELLA_REBOOT_COMMAND", &command)]);
    let alpha_id = PeerId::from_str(&alpha.node_id()).unwrap();
    let alpha_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", alpha.port)
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // A stranger: every call is refused, and alpha hangs up on it.
    let stranger = identity::Keypair::generate_ed25519();
    let stranger_id = stranger.public().to_peer_id();
    let mut swarm = runtime.block_on(async { probe_swarm(stranger) });
    let addrs = vec![alpha_addr.clone()];
    for request in [
        RpcRequest::GetStats,
        RpcRequest::Reboot {
            requested_by: "a stranger".into(),
            by: None,
            confirmation: None,
        },
    ] {
        let id = (
            Via::Rpc,
            swarm.behaviour_mut().rpc.send_request_with_addresses(
                &alpha_id,
                request.clone(),
                addrs.clone(),
            ),
        );
        let (mut seen, _) = runtime.block_on(outcomes(&mut swarm, vec![id], alpha_id));
        match seen.remove(&id) {
            Some(Outcome::Rpc(Err(RpcRefusal::NotMember))) => {}
            other => panic!("{request:?} from a stranger got {other:?}"),
        }
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                while swarm.is_connected(&alpha_id) {
                    swarm.select_next_some().await;
                }
            })
            .await
            .expect("alpha keeps the stranger's connection open")
        });
    }
    let log = alpha.log_text();
    assert!(
        log.contains("RPC refused") && log.contains(&stranger_id.to_base58()),
        "alpha logs the refusal with the stranger's PeerId:\n{log}"
    );
    assert_eq!(alpha.peers().unwrap().len(), 1);
    drop(swarm);

    // A member (admitted with an invite) whose bad frames fail alone: a garbage frame and an
    // oversized one sent next to a valid call on the same connection.
    let link = alpha.invite("5m");
    let query = link.split_once('?').unwrap().1;
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_owned()
    };
    let member = identity::Keypair::generate_ed25519();
    let pq4 =
        constella_keys::KeyStore::generate_with_one_time_prekeys(0, &mut rand::rng()).unwrap();
    let card = constella_behaviours::network_keys::Pq4Card::new(&member, &pq4).unwrap();
    let mut swarm = runtime.block_on(async { probe_swarm(member) });
    let join = (
        Via::Join,
        swarm.behaviour_mut().join.send_request_with_addresses(
            &alpha_id,
            JoinRequest {
                network_id: param("net"),
                token: param("token"),
                name: "probe".into(),
                addr: Some(format!("127.0.0.1:{}", common::free_port())),
                listen_port: 1,
                priority: 1000,
                // As an older joiner: admitted at once, no confirmation.
                step: Default::default(),
                card: Some(card),
            },
            addrs.clone(),
        ),
    );
    let (mut seen, _) = runtime.block_on(outcomes(&mut swarm, vec![join], alpha_id));
    assert!(matches!(seen.remove(&join), Some(Outcome::Join(ref r)) if r.is_ok()));

    let oversized = cbor(&RpcRequest::Reboot {
        requested_by: "x".repeat(64 * 1024),
        by: None,
        confirmation: None,
    });
    assert!(oversized.len() as u64 > rpc::MAX_REQUEST_BYTES);
    let garbage = vec![0xff_u8; 100];
    let probe = swarm.behaviour_mut();
    let good = (
        Via::Rpc,
        probe.rpc.send_request(&alpha_id, RpcRequest::GetStats),
    );
    let bad = (Via::Raw, probe.raw.send_request(&alpha_id, garbage));
    let big = (Via::Raw, probe.raw.send_request(&alpha_id, oversized));
    let peers = (
        Via::Rpc,
        probe.rpc.send_request(&alpha_id, RpcRequest::GetPeers),
    );
    let (mut seen, closed) =
        runtime.block_on(outcomes(&mut swarm, vec![good, bad, big, peers], alpha_id));
    assert!(!closed, "a bad frame closed the connection");
    for id in [bad, big] {
        match seen.get(&id) {
            Some(Outcome::Failed(reason)) => eprintln!("a bad frame failed as it should: {reason}"),
            other => panic!("a bad frame got {other:?}"),
        }
    }
    match seen.remove(&good) {
        Some(Outcome::Rpc(Ok(RpcAnswer::Stats(stats)))) => assert_eq!(stats.name, "alpha"),
        other => panic!("GetStats next to bad frames got {other:?}"),
    }
    match seen.remove(&peers) {
        Some(Outcome::Rpc(Ok(RpcAnswer::Peers(list)))) => {
            let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["alpha", "probe"]);
        }
        other => panic!("GetPeers got {other:?}"),
    }
    // The same connection still serves a valid raw CBOR frame.
    let again = (
        Via::Raw,
        swarm
            .behaviour_mut()
            .raw
            .send_request(&alpha_id, cbor(&RpcRequest::GetPeers)),
    );
    let (mut seen, closed) = runtime.block_on(outcomes(&mut swarm, vec![again], alpha_id));
    assert!(!closed);
    match seen.remove(&again) {
        Some(Outcome::Raw(bytes)) => {
            let answer: RpcResponse = ciborium::from_reader(bytes.as_slice()).unwrap();
            assert!(matches!(answer, Ok(RpcAnswer::Peers(_))), "{answer:?}");
        }
        other => panic!("a valid frame after bad ones got {other:?}"),
    }
    // Nothing was rebooted, and alpha still answers.
    assert!(marker_lines(root.path(), "alpha").is_empty());
    assert!(alpha.is_running());
    assert!(alpha.ok(&["stats", "alpha"]).contains("node      alpha"));
}

#[test]
fn an_idle_stranger_is_disconnected_after_the_join_window() {
    let root = tempfile::tempdir().unwrap();
    let mut alpha = Node::new(root.path(), "alpha");
    alpha.init(100);
    alpha.start();
    let alpha_id = PeerId::from_str(&alpha.node_id()).unwrap();
    let alpha_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/p2p/{alpha_id}", alpha.port)
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut swarm = runtime.block_on(async { probe_swarm(identity::Keypair::generate_ed25519()) });
    runtime.block_on(async { swarm.dial(alpha_addr).unwrap() });
    // Connect, say nothing, and see how long alpha keeps the connection.
    let held = runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut connected_at = None;
        loop {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .expect("alpha kept an idle stranger's connection for 30 s");
            match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == alpha_id => {
                    connected_at = Some(std::time::Instant::now());
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == alpha_id => {
                    break connected_at
                        .expect("closed before it was established")
                        .elapsed();
                }
                _ => {}
            }
        }
    });
    // Long enough for a Join to finish (the joiner's deadline is 10 s), and no longer.
    assert!(
        held >= Duration::from_secs(10),
        "closed after {held:?}: a joiner needs 10 s"
    );
    assert!(alpha.is_running());
}
