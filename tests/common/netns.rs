//! A lab of network namespaces joined by one bridge, for tests that need a network that fails
//! the way a real one does: silently (no FIN, RST or ICMP), partly, or with loss.
//!
//! Layout: namespace `<id>-sw` holds the bridge `br0` (a switch); namespaces `<id>-0`,
//! `<id>-1`, … each have an `eth0` with address `10.99.0.(i+1)/24` whose peer is a port of
//! the bridge. Faults are nftables rules in a `bridge` family table of the switch namespace
//! (forward hook), so a dropped frame simply vanishes. The bridge lives in its own namespace
//! rather than the root one because Docker sets the root namespace's `FORWARD` policy to
//! `DROP` with `br_netfilter` loaded, which would drop every bridged frame; a fresh namespace
//! has empty iptables and touches nothing shared.
//!
//! Names are unique per process and lab (`cf<pid>x<n>`), so tests run in parallel; [`Lab`]'s
//! `Drop` deletes every namespace it made (the bridge, veths and nft table go with them), even
//! when the test panics, and [`Lab::new`] removes namespaces left by test processes that no
//! longer exist.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables): [`Lab::new`] returns `None` with a printed
//! reason otherwise, and panics instead when env `CI` is `true`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::{Duration, Instant};

use super::delay_switch::{DelaySwitch, Impairment};
use super::{Node, keys_by_peer_id, wait_for};

static LABS: AtomicU32 = AtomicU32::new(0);

/// Namespaces on a bridge, with faults made by nft rules on the bridge.
pub struct Lab {
    /// Prefix of every name this lab made.
    pub id: String,
    /// How many node namespaces.
    pub size: usize,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(error) = run(args) {
        panic!("{error}");
    }
}

/// Skips (printing why) or, under `CI=true`, fails.
fn unavailable(reason: &str) -> Option<Lab> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "network-fault tests cannot run in CI: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
    None
}

impl Lab {
    /// Builds `size` namespaces on a bridge, or says why it cannot (see the module docs).
    pub fn new(size: usize) -> Option<Lab> {
        if !super::is_root() {
            return unavailable("network namespaces need root (CI runs as root)");
        }
        for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            if run(&[tool, "-V"]).is_err() {
                return unavailable(&format!("{tool} is missing: apt-get install {package}"));
            }
        }
        remove_stale();
        let id = format!(
            "cf{}x{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab { id, size };
        let sw = lab.switch();
        must(&["ip", "netns", "add", &sw]);
        must(&["ip", "-n", &sw, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..size {
            let ns = lab.ns(i);
            let port = format!("p{i}");
            must(&["ip", "netns", "add", &ns]);
            must(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            let addr = format!("{}/24", lab.ip(i));
            must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"]);
            must(&["ip", "-n", &sw, "link", "set", &port, "up"]);
        }
        // One more namespace on the bridge for services the nodes reach (the fake Telegram
        // Bot API), outside every node's partition set.
        let services = lab.services();
        must(&["ip", "netns", "add", &services]);
        must(&[
            "ip", "-n", &services, "link", "add", "eth0", "type", "veth", "peer", "name", "psvc",
            "netns", &sw,
        ]);
        let addr = format!("{}/24", SERVICES_IP);
        must(&["ip", "-n", &services, "addr", "add", &addr, "dev", "eth0"]);
        must(&["ip", "-n", &services, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &services, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &sw, "link", "set", "psvc", "master", "br0"]);
        must(&["ip", "-n", &sw, "link", "set", "psvc", "up"]);
        lab.nft("add table bridge faults");
        lab.nft(
            "add chain bridge faults drops { type filter hook forward priority 0; policy accept; }",
        );
        Some(lab)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.id)
    }

    /// The namespace of the services the nodes reach, at [`SERVICES_IP`].
    pub fn services(&self) -> String {
        format!("{}-svc", self.id)
    }

    /// Runs `f` on a thread that lives in the services namespace, so that every socket `f`
    /// opens (e.g. the fake Bot API's listener, [`super::fake_telegram::FakeTelegram::url_for_at`]
    /// with [`SERVICES_IP`]) is there; a socket stays in the namespace it was made in.
    pub fn in_services<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.services(), f)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.id)
    }

    /// The address of node `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("10.99.0.{}", i + 1)
    }

    /// Makes `node` live in namespace `i`: its address there, its daemon and `join` run inside
    /// (the CLI reaches the daemon through its control socket from here).
    pub fn attach(&self, node: &mut Node, i: usize) {
        node.host = self.ip(i);
        node.prefix = vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)];
    }

    fn nft(&self, rule: &str) {
        must(&["ip", "netns", "exec", &self.switch(), "nft", rule]);
    }

    /// Node `i` vanishes: every packet from or to it is dropped (a silent host).
    pub fn isolate(&self, i: usize) {
        let ip = self.ip(i);
        self.nft(&format!("add rule bridge faults drops ip saddr {ip} drop"));
        self.nft(&format!("add rule bridge faults drops ip daddr {ip} drop"));
    }

    /// Nothing passes between a node of `a` and a node of `b`, either way.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let set = |s: &[usize]| {
            let ips: Vec<String> = s.iter().map(|&i| self.ip(i)).collect();
            format!("{{ {} }}", ips.join(", "))
        };
        let (a, b) = (set(a), set(b));
        self.nft(&format!(
            "add rule bridge faults drops ip saddr {a} ip daddr {b} drop"
        ));
        self.nft(&format!(
            "add rule bridge faults drops ip saddr {b} ip daddr {a} drop"
        ));
    }

    /// Everything node `i` sends is dropped; what it receives still arrives.
    pub fn drop_egress(&self, i: usize) {
        let ip = self.ip(i);
        self.nft(&format!("add rule bridge faults drops ip saddr {ip} drop"));
    }

    /// Every IPv4 packet on the bridge is dropped with probability `percent` / 100.
    pub fn loss(&self, percent: u32) {
        self.nft(&format!(
            "add rule bridge faults drops ether type ip numgen random mod 100 < {percent} drop"
        ));
    }

    /// Replaces the bridge by a userspace switch that drops `impairment.loss_percent` of the
    /// frames and delays the rest by `delay ± jitter` ([`super::delay_switch`]); the nft faults
    /// above no longer apply. Lasts until the returned switch is dropped (then nothing passes).
    pub fn impair(&self, impairment: Impairment) -> DelaySwitch {
        let sw = self.switch();
        let mut ports: Vec<String> = (0..self.size).map(|i| format!("p{i}")).collect();
        ports.push("psvc".to_owned());
        for port in &ports {
            must(&["ip", "-n", &sw, "link", "set", port, "nomaster"]);
            must(&["ip", "-n", &sw, "link", "set", port, "promisc", "on"]);
        }
        DelaySwitch::start(&sw, &ports, impairment)
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.nft("flush chain bridge faults drops");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.size {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.services()]);
        // The bridge, its ports and the nft table go with the switch namespace.
        let _ = run(&["ip", "netns", "del", &self.switch()]);
    }
}

/// Deletes namespaces of labs whose test process is gone (killed before its `Drop` ran).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("cf")
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// The address of the services namespace ([`Lab::services`]).
pub const SERVICES_IP: &str = "10.99.0.254";

/// Names in leader order (their keys are sorted by PeerId, priorities equal).
pub const NAMES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

/// A network of `n` nodes, node `i` in namespace `i` of `lab`.
pub struct Net {
    _root: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl Net {
    pub fn start(lab: &Lab, n: usize) -> Net {
        Self::start_with(lab, n, |_| {})
    }

    /// Like [`Net::start`], with `configure` applied to every node before it is set up.
    pub fn start_with(lab: &Lab, n: usize, configure: impl Fn(&mut Node)) -> Net {
        let root = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = NAMES[..n]
            .iter()
            .map(|name| Node::new(root.path(), name))
            .collect();
        for (i, (node, key)) in nodes.iter_mut().zip(keys_by_peer_id(n)).enumerate() {
            lab.attach(node, i);
            node.port = 7000;
            configure(node);
            node.install_key(&key);
        }
        nodes[0].init(100);
        nodes[0].start();
        for i in 1..n {
            let link = nodes[0].invite("5m");
            nodes[i].join(&link, 100);
            nodes[i].start();
        }
        Net { _root: root, nodes }
    }

    pub fn names(&self, which: &[usize]) -> Vec<&'static str> {
        which.iter().map(|&i| NAMES[i]).collect()
    }

    /// Runs `f`, printing every log if it panics.
    pub fn or_logs<T>(&self, f: impl FnOnce() -> T) -> T {
        super::or_logs(&self.nodes, f)
    }
}

/// The leader `node` names if exactly `alive` are alive in its view and `offline` offline
/// (straight from the control socket, for a fine time resolution).
pub fn sees(node: &Node, alive: &[&str], offline: &[&str]) -> Option<String> {
    let answer = node.ask_socket(r#"{"command":"peers"}"#)?;
    let peers = answer.get("peers")?.as_array()?;
    let has = |name: &str, status: &str| {
        peers
            .iter()
            .any(|p| p["name"] == name && p["status"] == status)
    };
    if !alive.iter().all(|n| has(n, "alive")) || !offline.iter().all(|n| has(n, "offline")) {
        return None;
    }
    let leaders: Vec<&serde_json::Value> = peers.iter().filter(|p| p["leader"] == true).collect();
    (leaders.len() == 1).then(|| leaders[0]["name"].as_str().unwrap_or("").to_owned())
}

/// Waits until every node of `nodes` sees `alive` alive, `offline` offline and names one
/// common leader; returns it and how long that took.
pub fn agree(
    nodes: &[&Node],
    alive: &[&str],
    offline: &[&str],
    deadline: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    let leader = wait_for(
        deadline,
        &format!("{alive:?} alive, {offline:?} offline, one leader"),
        || {
            let seen: Vec<Option<String>> = nodes.iter().map(|n| sees(n, alive, offline)).collect();
            let first = seen.first()?.clone()?;
            seen.iter()
                .all(|s| s.as_deref() == Some(&first))
                .then_some(first)
        },
    );
    (leader, start.elapsed())
}

/// Runs `f` on a thread that lives in network namespace `ns` (named by `ip netns`), so every
/// socket `f` opens is there (e.g. a client of a daemon's loopback-only web panel).
#[allow(unsafe_code)]
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: setns on a valid namespace fd changes only this thread's
                // network namespace.
                let done = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(done, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("the thread in the namespace")
    })
}
