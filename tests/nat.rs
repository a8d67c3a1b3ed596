//! Nodes behind NAT (docs/nat.md), in network namespaces with real NAT: two public nodes on
//! the lab's bridge, and two nodes each behind its own router namespace that masquerades
//! (nftables) and lets nothing unsolicited in (dropped silently, as a home router does). The NAT-ed nodes join without
//! `--public-addr`, find themselves private with AutoNAT, reserve a slot on both public
//! members (Circuit Relay v2), and everyone reaches them through the relays. Needs root (see
//! `common::netns`): skipped with a printed reason otherwise, and failing under `CI=true`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_telegram::{BotMessage, FakeTelegram, TgUser};
use common::netns::{Lab, SERVICES_IP, agree};
use common::{BIN, Node, keys_by_peer_id, output_text, wait_for};

const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
const OWNER_ID: u64 = 5001;

/// How the router maps a host's connections (its port choice; filtering is the same: nothing
/// unsolicited comes in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// Linux masquerade: the source port is kept where it is free, so one inside address
    /// keeps one outside address whatever the destination (endpoint-independent mapping).
    Independent,
    /// `masquerade random`: a new outside port per connection (a symmetric NAT).
    Symmetric,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        output_text(&out)
    );
}

/// The lab's namespaces 0 and 1 hold the public nodes; namespaces 2 and 3 are routers, each
/// with a host namespace behind it (`<lab>-h2`, `<lab>-h3`, LANs 192.168.2.0/24 and
/// 192.168.3.0/24). The public namespaces have no route to either LAN.
struct NatBed {
    lab: Lab,
    hosts: Vec<String>,
}

impl NatBed {
    fn new(mapping: Mapping) -> Option<NatBed> {
        let lab = Lab::new(4)?;
        let mut bed = NatBed {
            hosts: Vec::new(),
            lab,
        };
        for router in [2, 3] {
            bed.add_nat(router, mapping);
        }
        Some(bed)
    }

    fn add_nat(&mut self, router: usize, mapping: Mapping) {
        let (r, h) = (self.lab.ns(router), format!("{}-h{router}", self.lab.id));
        run(&["ip", "netns", "add", &h]);
        self.hosts.push(h.clone());
        run(&[
            "ip", "-n", &r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns",
            &h,
        ]);
        let (gw, ip) = (format!("192.168.{router}.1"), Self::host_ip(router));
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            &format!("{gw}/24"),
            "dev",
            "lan0",
        ]);
        run(&["ip", "-n", &r, "link", "set", "lan0", "up"]);
        run(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &h, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &h, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &h, "route", "add", "default", "via", &gw]);
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let nft = |rule: &str| run(&["ip", "netns", "exec", &r, "nft", rule]);
        nft("add table ip nat");
        nft("add chain ip nat post { type nat hook postrouting priority 100; }");
        nft(match mapping {
            Mapping::Independent => "add rule ip nat post oifname \"eth0\" masquerade",
            Mapping::Symmetric => "add rule ip nat post oifname \"eth0\" masquerade random",
        });
        nft("add table ip fw");
        nft("add chain ip fw lanfwd { type filter hook forward priority 0; policy drop; }");
        nft("add rule ip fw lanfwd ct state established,related accept");
        nft("add rule ip fw lanfwd iifname \"lan0\" accept");
        // Like a home router: an unsolicited connection to the outside address is dropped
        // silently, not refused.
        nft("add chain ip fw wanin { type filter hook input priority 0; policy accept; }");
        nft("add rule ip fw wanin iifname \"eth0\" ct state new drop");
    }

    fn host_ip(router: usize) -> String {
        format!("192.168.{router}.2")
    }

    /// Puts `node` in the host namespace behind `router`.
    fn attach_behind(&self, node: &mut Node, router: usize) {
        node.host = Self::host_ip(router);
        node.prefix = vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            format!("{}-h{router}", self.lab.id),
        ];
    }
}

impl Drop for NatBed {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
    }
}

/// `join` from behind NAT: no `--public-addr` (the seed records what it observes).
fn join_behind_nat(node: &Node, link: &str) {
    let out = Command::new(&node.prefix[0])
        .args(&node.prefix[1..])
        .arg(BIN)
        .arg("--state-dir")
        .arg(&node.dir)
        .args(["join", "--server-name", &node.name, "--join", link])
        .args(["--listen", &node.addr(), "--priority", "100"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run constella join");
    assert!(
        out.status.success(),
        "{} join: {}",
        node.name,
        output_text(&out)
    );
}

/// alpha and bravo (the smallest keys: alpha leads) behind NAT, charlie and delta public.
struct Net {
    _root: tempfile::TempDir,
    nodes: Vec<Node>,
    fake: FakeTelegram,
}

const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];
const ALPHA: usize = 0;
const BRAVO: usize = 1;
const CHARLIE: usize = 2;
const DELTA: usize = 3;

impl Net {
    fn start(bed: &NatBed) -> Net {
        let root = tempfile::tempdir().unwrap();
        let fake = FakeTelegram::start(TOKEN);
        let mut nodes: Vec<Node> = NAMES.iter().map(|n| Node::new(root.path(), n)).collect();
        for (i, (node, key)) in nodes.iter_mut().zip(keys_by_peer_id(4)).enumerate() {
            match i {
                ALPHA => bed.attach_behind(node, 2),
                BRAVO => bed.attach_behind(node, 3),
                _ => bed.lab.attach(node, i - CHARLIE),
            }
            node.port = 7000;
            node.install_key(&key);
            node.init_args = vec!["--bot-token".into(), TOKEN.into()];
            let url = bed
                .lab
                .in_services(|| fake.url_for_at(&node.name, SERVICES_IP));
            node.run_args = vec!["--telegram-api-url".into(), url];
            let marker = node.dir.with_extension("rebooted");
            let command = format!(
                "echo \"$CONSTELLA_REBOOT_REQUESTED_BY\" >> '{}'",
                marker.display()
            );
            node.env = vec![("CONSTELLA_REBOOT_COMMAND".into(), command)];
        }
        nodes[CHARLIE].init(100);
        nodes[CHARLIE].start();
        let link = nodes[CHARLIE].invite("5m");
        nodes[DELTA].join(&link, 100);
        nodes[DELTA].start();
        for i in [ALPHA, BRAVO] {
            let link = nodes[CHARLIE].invite("5m");
            join_behind_nat(&nodes[i], &link);
            nodes[i].start();
        }
        Net {
            _root: root,
            nodes,
            fake,
        }
    }

    fn all(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }

    /// Runs `f`, printing every log if it panics.
    fn or_logs<T>(&self, f: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(value) => value,
            Err(panic) => {
                for node in &self.nodes {
                    eprintln!("==== {}\n{}", node.name, node.log_text());
                }
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// `status --json` of `node` once `check` holds for it.
fn status_when(
    node: &Node,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(Duration::from_secs(30), what, || {
        node.status().filter(|status| check(status))
    })
}

fn relays_of(status: &serde_json::Value) -> Vec<String> {
    status["relays"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn stats_of(from: &Node, target: &str) -> Option<serde_json::Value> {
    let out = from.cli(&["stats", target, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

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

/// Issue 18: both NAT-ed nodes join without `--public-addr`, everyone sees everyone alive
/// through the relays, stats and reboot reach the NAT-ed nodes (from a public node and from
/// the other NAT-ed node), the NAT-ed alpha leads and its bot polls; then one relay is killed
/// and the NAT-ed nodes stay reachable through the other.
#[test]
fn nodes_behind_nat_are_reached_through_relays_and_survive_losing_one() {
    let Some(bed) = NatBed::new(Mapping::Independent) else {
        return;
    };
    let started = Instant::now();
    let mut net = Net::start(&bed);
    let n = &net;
    n.or_logs(|| {
        let (leader, _) = agree(&n.all(), &NAMES, &[], Duration::from_secs(60));
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
/// themselves private, reserve relays, and everything reaches them through the relays.
#[test]
fn behind_symmetric_nats_nodes_are_reached_through_relays() {
    let Some(bed) = NatBed::new(Mapping::Symmetric) else {
        return;
    };
    let net = Net::start(&bed);
    let n = &net;
    n.or_logs(|| {
        let (leader, _) = agree(&n.all(), &NAMES, &[], Duration::from_secs(60));
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
    });
}
