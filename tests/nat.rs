//! Nodes behind NAT (docs/nat.md), in network namespaces with real NAT
//! (`common::nat_bed`): two public nodes on the lab's bridge, and nodes each behind its own
//! router namespace that masquerades (nftables) and lets nothing unsolicited in. The NAT-ed
//! nodes join without `--public-addr`, find themselves private with AutoNAT, reserve a slot on
//! both public members (Circuit Relay v2), everyone reaches them through the relays, and two
//! NAT-ed nodes behind endpoint-independent NATs punch a hole (DCUtR) and go direct. Needs root
//! (see `common::netns`): skipped with a printed reason otherwise, and failing under `CI=true`.

mod common;

use std::time::{Duration, Instant};

use common::chat::{chat_ok, read_until, register};
use common::fake_telegram::{BotMessage, TgUser};
use common::nat_bed::{
    ALPHA, BRAVO, CHARLIE, DELTA, Mapping, NAMES, NatBed, NatNet, link, relays_of, stats_of,
    status_when,
};
use common::netns::{agree, in_netns};
use common::{Node, wait_for};

const OWNER_ID: u64 = 5001;
const FOUR: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// How many times `node` marked a member other than charlie offline.
fn offline_marks(node: &Node) -> usize {
    node.log_text()
        .lines()
        .filter(|l| l.contains("member offline") && !l.contains("member=charlie"))
        .count()
}

fn is_list(m: &BotMessage) -> bool {
    m.text.starts_with("Узлы сети")
}

/// The loopback port of the web panels in the test.
const PANEL_PORT: u16 = 4780;

/// A logged-in session on the web panel of a node, spoken to over plain HTTP/1.1 from a
/// thread in that node's network namespace (the panel listens on its loopback).
struct Panel {
    namespace: String,
    cookie: String,
}

impl Panel {
    /// Redeems a `web-login` link of `node` (the owner's).
    fn login(node: &Node) -> Panel {
        let link = node.ok(&["web-login"]);
        let token = link
            .lines()
            .next()
            .and_then(|l| l.split("t=").nth(1))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|| panic!("a login link: {link}"));
        let namespace = NatNet::namespace(node).to_owned();
        let (code, head, _) = http(
            &namespace,
            "POST",
            "/login",
            None,
            Some(&format!("t={token}")),
        );
        assert!(code == 303 || code == 302, "login: {code} {head}");
        let cookie = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("set-cookie")
                    .then(|| value.trim().split(';').next().unwrap_or("").to_owned())
            })
            .unwrap_or_else(|| panic!("a session cookie: {head}"));
        Panel { namespace, cookie }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (code, _, body) = http(&self.namespace, "GET", path, Some(&self.cookie), None);
        (code, body)
    }

    fn post(&self, path: &str, form: &str) -> (u16, String) {
        let (code, _, body) = http(
            &self.namespace,
            "POST",
            path,
            Some(&self.cookie),
            Some(form),
        );
        (code, body)
    }
}

/// One HTTP/1.1 exchange with `127.0.0.1:PANEL_PORT` in `namespace`: (status, head, body).
fn http(
    namespace: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    in_netns(namespace, || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", PANEL_PORT))
            .unwrap_or_else(|e| panic!("the panel in {namespace}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{PANEL_PORT}\r\nConnection: close\r\n"
        );
        if let Some(cookie) = cookie {
            request.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        let body = form.unwrap_or("");
        if form.is_some() {
            request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, head.to_owned(), body.to_owned())
    })
}

/// `text` percent-encoded for a form body.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the hidden form field `name` in `page`.
fn hidden_field(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\""))?;
    let rest = &page[at..];
    let value = rest.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_owned())
}

/// Issue 18: both NAT-ed nodes join without `--public-addr`, everyone sees everyone alive
/// through the relays, the two NAT-ed nodes (endpoint-independent NATs) punch a hole and end
/// on a direct connection, stats and reboot reach the NAT-ed nodes (from a public node and
/// from the other NAT-ed node), the NAT-ed alpha leads and its bot polls; then one relay is
/// killed and the NAT-ed nodes stay reachable through the other.
#[test]
fn nodes_behind_nat_are_reached_through_relays_and_survive_losing_one() {
    let Some(bed) = NatBed::new(&[Mapping::Independent; 2]) else {
        return;
    };
    let started = Instant::now();
    // alpha (behind NAT) and charlie (public) serve the web panel on loopback.
    let mut net = NatNet::start_with(&bed, |node| {
        if node.name == "alpha" || node.name == "charlie" {
            node.run_args
                .extend(["--web-addr".into(), format!("127.0.0.1:{PANEL_PORT}")]);
        }
    });
    let n = &net;
    n.or_logs(|| {
        let (leader, _) = agree(&n.all(), &FOUR, &[], Duration::from_secs(60));
        eprintln!(
            "figure: 2 public + 2 NAT-ed nodes all alive everywhere {:?} after the first start",
            started.elapsed()
        );
        assert_eq!(
            leader, "alpha",
            "the NAT-ed node with the smallest key leads"
        );

        for i in [ALPHA, BRAVO] {
            let status = status_when(&n.nodes[i], "two relays", |s| relays_of(s).len() == 2);
            assert_eq!(status["reachability"], "private", "{status}");
            assert_eq!(relays_of(&status), ["charlie", "delta"], "{status}");
            let text = n.nodes[i].ok(&["status"]);
            assert!(
                text.contains("behind NAT, relayed via charlie, delta"),
                "{text}"
            );
        }
        for i in [CHARLIE, DELTA] {
            let status = status_when(&n.nodes[i], "public", |s| s["reachability"] == "public");
            assert!(status.get("relays").is_none(), "{status}");
        }
        let peers: serde_json::Value =
            serde_json::from_str(&n.nodes[CHARLIE].ok(&["peers", "--json"])).unwrap();
        for peer in peers.as_array().unwrap() {
            let natted = peer["name"] == "alpha" || peer["name"] == "bravo";
            assert_eq!(peer["relayed"], natted, "{peer}");
        }
        let table = n.nodes[DELTA].ok(&["peers"]);
        assert!(table.contains("alpha — Хост (relayed)"), "{table}");
        assert!(table.contains("bravo (relayed)"), "{table}");

        // The two NAT-ed nodes met through a relay; DCUtR punches a hole and they end on a
        // direct connection (the relayed one is closed), both ways.
        let direct = wait_for(Duration::from_secs(60), "alpha and bravo direct", || {
            (link(&n.nodes[ALPHA], "bravo").as_deref() == Some("direct")
                && link(&n.nodes[BRAVO], "alpha").as_deref() == Some("direct"))
            .then(|| started.elapsed())
        });
        eprintln!("figure: alpha and bravo connected directly {direct:?} after the first start");
        let punched = |i: usize| {
            n.nodes[i]
                .log_text()
                .contains("hole punched: direct connection")
        };
        assert!(
            punched(ALPHA) || punched(BRAVO),
            "the direct connection came from a hole punch"
        );
        // Nothing of theirs goes through a relay any more: the relayed connections close.
        for i in [ALPHA, BRAVO] {
            status_when(&n.nodes[i], "no relayed connection left", |s| {
                s["nat"]["relayed_connections"] == 0
            });
        }

        // Stats and reboot reach the NAT-ed nodes, from a public node and from behind NAT.
        for (from, target) in [(CHARLIE, "alpha"), (ALPHA, "bravo"), (BRAVO, "alpha")] {
            let rpc = Instant::now();
            let stats = stats_of(&n.nodes[from], target)
                .unwrap_or_else(|| panic!("stats {target} from {}", NAMES[from]));
            assert_eq!(stats["name"], target);
            eprintln!(
                "figure: stats {target} from {} answered in {:?} (CLI included)",
                NAMES[from],
                rpc.elapsed()
            );
        }
        let answer = n.nodes[DELTA].ok(&["reboot", "bravo", "--yes"]);
        assert!(
            answer.starts_with("Node bravo accepted the reboot"),
            "{answer}"
        );
        wait_for(Duration::from_secs(10), "bravo's reboot command", || {
            let marker = n.nodes[BRAVO].dir.with_extension("rebooted");
            std::fs::read_to_string(marker)
                .ok()
                .filter(|t| t.contains("constella reboot"))
        });

        // The web panel works for NAT-ed nodes: alpha's own panel (behind NAT) shows bravo's
        // usage (fetched through the NAT) and charlie's; charlie's panel reboots alpha.
        let alpha = Panel::login(&n.nodes[ALPHA]);
        for member in ["bravo", "charlie"] {
            let (code, page) = alpha.get(&format!("/node/{member}"));
            assert_eq!(code, 200, "{page}");
            assert!(page.contains(&format!("{member} — потребление")), "{page}");
        }
        let charlie = Panel::login(&n.nodes[CHARLIE]);
        let (code, page) = charlie.get("/node/alpha");
        assert_eq!(code, 200, "{page}");
        assert!(page.contains("alpha — потребление"), "{page}");
        let (code, page) = charlie.get("/node/alpha/reboot");
        assert_eq!(code, 200, "{page}");
        let csrf = hidden_field(&page, "csrf").expect("a CSRF field");
        let (code, page) = charlie.post(
            "/node/alpha/reboot",
            &format!("csrf={}", form_encode(&csrf)),
        );
        assert!(code < 400, "{code} {page}");
        wait_for(Duration::from_secs(10), "alpha's reboot command", || {
            let marker = n.nodes[ALPHA].dir.with_extension("rebooted");
            std::fs::read_to_string(marker)
                .ok()
                .filter(|t| t.contains("web"))
        });

        // The NAT-ed leader hosts the bot: it polls Telegram outbound and answers the owner.
        wait_for(Duration::from_secs(20), "alpha to poll", || {
            n.fake
                .polls()
                .iter()
                .any(|p| p.node == "alpha")
                .then_some(())
        });
        n.fake
            .send_text(&TgUser::new(OWNER_ID, "Owner_Test"), "/start");
        n.fake.wait_message(
            Duration::from_secs(15),
            "the node list from alpha",
            OWNER_ID,
            |m| is_list(m) && m.sent_by == "alpha",
        );
    });

    // Kill one relay: the NAT-ed nodes stay reachable through the other.
    let marks_before: Vec<usize> = net.nodes.iter().map(offline_marks).collect();
    net.nodes[CHARLIE].kill();
    let killed = Instant::now();
    let n = &net;
    n.or_logs(|| {
        let rest = [&n.nodes[ALPHA], &n.nodes[BRAVO], &n.nodes[DELTA]];
        let (leader, took) = agree(
            &rest,
            &["alpha", "bravo", "delta"],
            &["charlie"],
            Duration::from_secs(30),
        );
        assert_eq!(leader, "alpha");
        eprintln!("figure: relay charlie killed -> the rest agree in {took:?}");
        for i in [ALPHA, BRAVO] {
            let status = status_when(&n.nodes[i], "only delta relaying", |s| {
                relays_of(s) == ["delta"]
            });
            assert_eq!(status["reachability"], "private", "{status}");
        }
        eprintln!(
            "figure: relay charlie killed -> NAT-ed nodes relayed by delta alone after {:?}",
            killed.elapsed()
        );
        for (from, target) in [(DELTA, "alpha"), (ALPHA, "bravo"), (BRAVO, "alpha")] {
            wait_for(
                Duration::from_secs(15),
                "stats after the relay loss",
                || stats_of(&n.nodes[from], target),
            );
        }
        // Nobody but charlie was marked offline on the way.
        for i in [ALPHA, BRAVO, DELTA] {
            assert_eq!(
                offline_marks(&n.nodes[i]),
                marks_before[i],
                "{} marked a live node offline after the relay died",
                NAMES[i]
            );
        }
    });
}

/// Behind symmetric NATs (a new outside port per connection) the NAT-ed nodes still find
/// themselves private, reserve relays, and everything reaches them through the relays; the
/// hole punch between them fails and they stay relayed. Then the NAT-ed leader dies: the
/// other NAT-ed node (reached only through relays) takes over and its bot answers the owner.
/// Before that, two accounts on the two NAT-ed nodes chat through the relays.
#[test]
fn behind_symmetric_nats_nodes_stay_relayed_and_a_nated_node_takes_over_from_a_dead_leader() {
    let Some(bed) = NatBed::new(&[Mapping::Symmetric; 2]) else {
        return;
    };
    let mut net = NatNet::start(&bed);
    let n = &net;
    n.or_logs(|| {
        let (leader, _) = agree(&n.all(), &FOUR, &[], Duration::from_secs(60));
        assert_eq!(leader, "alpha");
        for i in [ALPHA, BRAVO] {
            let status = status_when(&n.nodes[i], "two relays", |s| relays_of(s).len() == 2);
            assert_eq!(status["reachability"], "private", "{status}");
        }
        for (from, target) in [(DELTA, "bravo"), (ALPHA, "bravo"), (BRAVO, "alpha")] {
            let stats = stats_of(&n.nodes[from], target)
                .unwrap_or_else(|| panic!("stats {target} from {}", NAMES[from]));
            assert_eq!(stats["name"], target);
        }
        // DCUtR tries and fails (each side's dial leaves from a port the other NAT never
        // saw): the pair stays relayed, and still works.
        let failures = |i: usize| {
            n.nodes[i]
                .status()
                .and_then(|s| s["nat"]["hole_punch_failures"].as_u64())
                .unwrap_or(0)
        };
        wait_for(Duration::from_secs(90), "a failed hole punch", || {
            (failures(ALPHA) + failures(BRAVO) > 0).then_some(())
        });
        for (i, other) in [(ALPHA, "bravo"), (BRAVO, "alpha")] {
            let status = n.nodes[i].status().expect("status");
            assert_eq!(status["nat"]["hole_punches"], 0, "{status}");
            assert_eq!(link(&n.nodes[i], other).as_deref(), Some("relayed"));
        }
        let stats = stats_of(&n.nodes[ALPHA], "bravo").expect("stats bravo from alpha");
        assert_eq!(stats["name"], "bravo");

        // PQ4 messaging between two nodes that reach each other only through relays: alice
        // through alpha, bob through bravo, a message each way (the account and mailbox
        // records live on holders across both NATs and the public nodes).
        let alice = n.nodes[ALPHA].dir.with_extension("alice-device");
        let bob = n.nodes[BRAVO].dir.with_extension("bob-device");
        register(&n.nodes[ALPHA], &alice, "alice");
        register(&n.nodes[BRAVO], &bob, "bob");
        chat_ok(
            &n.nodes[ALPHA],
            &alice,
            &["send", "@bob", "through two NATs"],
        );
        let (items, _) = read_until(&n.nodes[BRAVO], &bob, 1);
        assert_eq!(items[0]["from"], "alice", "{items:?}");
        assert_eq!(items[0]["text"], "through two NATs", "{items:?}");
        assert_eq!(items[0]["flagged"], false, "{items:?}");
        chat_ok(&n.nodes[BRAVO], &bob, &["send", "@alice", "and back"]);
        let (items, _) = read_until(&n.nodes[ALPHA], &alice, 1);
        assert_eq!(items[0]["text"], "and back", "{items:?}");
        assert_eq!(link(&n.nodes[ALPHA], "bravo").as_deref(), Some("relayed"));
    });

    // The NAT-ed leader dies: bravo, behind the other NAT, leads and its bot answers.
    net.nodes[ALPHA].kill();
    let killed = Instant::now();
    let n = &net;
    n.or_logs(|| {
        let rest = [&n.nodes[BRAVO], &n.nodes[CHARLIE], &n.nodes[DELTA]];
        let (leader, took) = agree(
            &rest,
            &["bravo", "charlie", "delta"],
            &["alpha"],
            Duration::from_secs(30),
        );
        assert_eq!(leader, "bravo", "the NAT-ed node with the next key leads");
        eprintln!("figure: NAT-ed leader alpha killed -> all agree on NAT-ed bravo in {took:?}");
        wait_for(Duration::from_secs(30), "bravo to poll", || {
            n.fake
                .polls()
                .iter()
                .any(|p| p.node == "bravo")
                .then_some(())
        });
        let asked = Instant::now();
        n.fake
            .send_text(&TgUser::new(OWNER_ID, "Owner_Test"), "/start");
        n.fake.wait_message(
            Duration::from_secs(20),
            "the node list from bravo",
            OWNER_ID,
            |m| is_list(m) && m.sent_by == "bravo",
        );
        eprintln!(
            "figure: bravo's bot answered {:?} after /start, {:?} after alpha was killed",
            asked.elapsed(),
            killed.elapsed()
        );
    });
}

/// AutoNAT answers members only: a stranger that connects to a member and asks to be dialled
/// back finds the protocol not even offered (before, the member dialled it back and answered
/// "public"). Needs no root: one node on loopback.
#[test]
fn a_stranger_gets_no_autonat_dial_back_from_a_member() {
    use futures::StreamExt;
    use libp2p::autonat;
    use libp2p::swarm::SwarmEvent;

    let cluster = common::Cluster::start(&["alpha"], &[10], None);
    let alpha = &cluster.nodes[0];
    let target: libp2p::Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", alpha.port, alpha.node_id())
            .parse()
            .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome = runtime.block_on(async {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let local = key.public().to_peer_id();
        let mut swarm = common::test_swarm(key, |_| {
            autonat::Behaviour::new(
                local,
                autonat::Config {
                    boot_delay: Duration::from_millis(500),
                    retry_interval: Duration::from_secs(1),
                    use_connected: true,
                    only_global_ips: false,
                    ..Default::default()
                },
            )
        });
        // Something to be dialled back at (a probe needs an address to ask about).
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        swarm.dial(target).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .expect("an AutoNAT outcome within 20 s");
            match event {
                SwarmEvent::Behaviour(autonat::Event::OutboundProbe(
                    autonat::OutboundProbeEvent::Error {
                        peer: Some(_),
                        error,
                        ..
                    },
                )) => break format!("{error:?}"),
                SwarmEvent::Behaviour(autonat::Event::OutboundProbe(
                    autonat::OutboundProbeEvent::Response { address, .. },
                )) => break format!("dialled back at {address}"),
                _ => {}
            }
        }
    });
    assert!(
        outcome.contains("UnsupportedProtocols"),
        "the stranger got: {outcome}"
    );
}
