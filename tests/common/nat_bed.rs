//! A test bed with real NAT (docs/nat.md): two public nodes on a [`Lab`]'s bridge and nodes
//! each behind its own router namespace that masquerades (nftables) and lets nothing
//! unsolicited in (dropped silently, as a home router does). Used by `tests/nat.rs` and
//! `benches/nat.rs`; needs root like every [`Lab`].
//!
//! Layout: the lab's namespaces 0 and 1 hold the public nodes charlie and delta; namespaces 2,
//! 3, … are routers, each with a host namespace behind it (`<lab>-h2`, …, LAN
//! 192.168.R.0/24, the host at 192.168.R.2). The public namespaces have no route to any LAN.
//! Names follow the key order: alpha and bravo (the smallest keys: alpha leads) and echo are
//! behind NAT, charlie and delta public.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::fake_telegram::FakeTelegram;
use super::netns::{Lab, SERVICES_IP};
use super::{Node, keys_by_peer_id, output_text, wait_for};

pub const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";

/// How a router maps a host's connections (its port choice; filtering is the same: nothing
/// unsolicited comes in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Linux masquerade: the source port is kept where it is free, so one inside address
    /// keeps one outside address whatever the destination (endpoint-independent mapping, a
    /// "cone" NAT): a hole punch works.
    Independent,
    /// `masquerade random`: a new outside port per connection (a symmetric NAT): a hole punch
    /// cannot work.
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

/// The public namespaces 0 and 1, and one router namespace per NAT-ed node from 2 on.
pub struct NatBed {
    pub lab: Lab,
    hosts: Vec<String>,
}

impl NatBed {
    /// A bed with one router per entry of `mappings` (namespaces 2, 3, …), or `None` (with a
    /// printed reason) where a [`Lab`] cannot be built.
    pub fn new(mappings: &[Mapping]) -> Option<NatBed> {
        let lab = Lab::new(2 + mappings.len())?;
        let mut bed = NatBed {
            hosts: Vec::new(),
            lab,
        };
        for (i, mapping) in mappings.iter().enumerate() {
            bed.add_nat(2 + i, *mapping);
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
    pub fn attach_behind(&self, node: &mut Node, router: usize) {
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
pub fn join_behind_nat(node: &Node, link: &str) {
    let args: Vec<String> = [
        "join",
        "--server-name",
        &node.name,
        "--join",
        link,
        "--listen",
        &node.addr(),
        "--priority",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    node.join_with(&args);
}

/// Node names in key order; index 2 and 3 (charlie, delta) are the public ones.
pub const NAMES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
pub const ALPHA: usize = 0;
pub const BRAVO: usize = 1;
pub const CHARLIE: usize = 2;
pub const DELTA: usize = 3;
pub const ECHO: usize = 4;

/// The nodes of a [`NatBed`]: charlie and delta public, the others behind the routers in
/// order (alpha behind router 2, bravo behind 3, echo behind 4), every one with the fake Bot
/// API and a reboot command that writes a marker file.
pub struct NatNet {
    _root: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub fake: FakeTelegram,
}

impl NatNet {
    /// Starts charlie, then delta, then the NAT-ed nodes (one per router of `bed`).
    pub fn start(bed: &NatBed) -> NatNet {
        Self::start_with(bed, |_| {})
    }

    /// Like [`NatNet::start`], with `configure` applied to every node before it is set up.
    pub fn start_with(bed: &NatBed, configure: impl Fn(&mut Node)) -> NatNet {
        let n = bed.lab.size;
        let root = tempfile::tempdir().unwrap();
        let fake = FakeTelegram::start(TOKEN);
        let mut nodes: Vec<Node> = NAMES[..n]
            .iter()
            .map(|name| Node::new(root.path(), name))
            .collect();
        for (i, (node, key)) in nodes.iter_mut().zip(keys_by_peer_id(n)).enumerate() {
            match i {
                ALPHA => bed.attach_behind(node, 2),
                BRAVO => bed.attach_behind(node, 3),
                CHARLIE | DELTA => bed.lab.attach(node, i - CHARLIE),
                _ => bed.attach_behind(node, i),
            }
            node.port = 7000;
            node.install_key(&key);
            let url = bed
                .lab
                .in_services(|| fake.url_for_at(&node.name, SERVICES_IP));
            node.use_fake_bot_and_reboot_marker(TOKEN, url);
            configure(node);
        }
        nodes[CHARLIE].init(100);
        nodes[CHARLIE].start();
        let link = nodes[CHARLIE].invite("5m");
        nodes[DELTA].join(&link, 100);
        nodes[DELTA].start();
        for i in (0..n).filter(|i| ![CHARLIE, DELTA].contains(i)) {
            let link = nodes[CHARLIE].invite("5m");
            join_behind_nat(&nodes[i], &link);
            nodes[i].start();
        }
        NatNet {
            _root: root,
            nodes,
            fake,
        }
    }

    pub fn all(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }

    /// The network namespace `node` runs in.
    pub fn namespace(node: &Node) -> &str {
        &node.prefix[3]
    }

    pub fn names(&self) -> Vec<&'static str> {
        NAMES[..self.nodes.len()].to_vec()
    }

    /// Runs `f`, printing every log if it panics.
    pub fn or_logs<T>(&self, f: impl FnOnce() -> T) -> T {
        super::or_logs(&self.nodes, f)
    }
}

/// `status --json` of `node` once `check` holds for it.
pub fn status_when(
    node: &Node,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(Duration::from_secs(30), what, || {
        node.status().filter(|status| check(status))
    })
}

/// The relay names in a `status --json`.
pub fn relays_of(status: &serde_json::Value) -> Vec<String> {
    status["relays"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `stats TARGET --json` asked of `from`, if it answered.
pub fn stats_of(from: &Node, target: &str) -> Option<serde_json::Value> {
    let out = from.cli(&["stats", target, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// How `node` is connected to `member` right now (`peers --json` `connection`: `"direct"`,
/// `"relayed"`, or `None` when not connected).
pub fn link(node: &Node, member: &str) -> Option<String> {
    let out = node.cli(&["peers", "--json"]);
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    peers
        .as_array()?
        .iter()
        .find(|p| p["name"] == member)?
        .get("connection")?
        .as_str()
        .map(str::to_owned)
}
