//! Constella next to HashiCorp Serf (SWIM + Lifeguard), the anchor of issue 11, in one run on
//! loopback (prints figures; asserts nothing about time).
//!
//! Starts `SIDE_NODES` (30) Serf agents, each joining the first, and as many Constella nodes
//! (one `init`, the rest `join` through invites). Figures, for both:
//! - convergence: from the last process start until every one sees all N alive (and, for
//!   Constella, names one leader);
//! - idle CPU and RSS per process over `IDLE_SECS` (20), both networks running at once, after `SETTLE_SECS` (12);
//! - a silent member: one non-leader process is SIGSTOPped; the time until every other one
//!   marks it failed (Serf) or offline (Constella). Then it is SIGCONTed.
//!
//! Needs `serf` (Debian package `serf`; the bench skips with a printed reason without it, and
//! fails under `CI=true`). Run: `cargo bench --bench side_by_side` (release binaries: the
//! figures are of an optimised daemon, as on a server).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, Node, free_port, require_tool, wait_for};
use support::{cpu_ticks, env_or, rss_kib};

/// One `serf agent` process.
struct Agent {
    name: String,
    rpc: String,
    child: Child,
}

impl Agent {
    fn start(name: &str, join: Option<&str>) -> (Self, String) {
        let bind = format!("127.0.0.1:{}", free_port());
        let rpc = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new("serf");
        command
            .arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr={rpc}"))
            .arg("-log-level=err");
        if let Some(join) = join {
            command.arg(format!("-join={join}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serf agent");
        let agent = Self {
            name: name.to_owned(),
            rpc,
            child,
        };
        (agent, bind)
    }

    /// (name, status) of every member this agent knows, or `None` while its RPC is not up.
    fn members(&self) -> Option<Vec<(String, String)>> {
        let out = Command::new("serf")
            .args(["members", "-format=json"])
            .arg(format!("-rpc-addr={}", self.rpc))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let members = json["members"].as_array()?;
        Some(
            members
                .iter()
                .map(|m| {
                    let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                    (text("name"), text("status"))
                })
                .collect(),
        )
    }

    fn alive(&self) -> Option<usize> {
        let members = self.members()?;
        Some(members.iter().filter(|(_, s)| s == "alive").count())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Polls `check` on every index until all have said yes (each is asked again only until it
/// first does); the time from `from` until the last one did.
fn all_until(
    n: usize,
    from: Instant,
    deadline: Duration,
    what: &str,
    check: impl Fn(usize) -> bool,
) -> Duration {
    let mut pending: Vec<usize> = (0..n).collect();
    let mut last = Duration::ZERO;
    while !pending.is_empty() {
        assert!(
            from.elapsed() < deadline,
            "{what}: {} still pending after {deadline:?}",
            pending.len()
        );
        pending.retain(|&i| {
            if check(i) {
                last = from.elapsed();
                false
            } else {
                true
            }
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    last
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !require_tool("serf", "apt-get install -y serf") {
        return;
    }
    let n = env_or("SIDE_NODES", 30) as usize;
    let idle_secs = env_or("IDLE_SECS", 20);

    // ---- Serf ----
    let mut agents: Vec<Agent> = Vec::with_capacity(n);
    let mut first_bind = None;
    for i in 0..n {
        let (agent, bind) = Agent::start(&format!("serf-{i:03}"), first_bind.as_deref());
        if i == 0 {
            first_bind = Some(bind);
            wait_for(Duration::from_secs(10), "the first serf agent", || {
                agents_ready(&agent)
            });
        }
        agents.push(agent);
    }
    let serf_last_start = Instant::now();
    let serf_converged = all_until(
        n,
        serf_last_start,
        Duration::from_secs(120),
        "serf convergence",
        |i| agents[i].alive() == Some(n),
    );
    println!(
        "serf: {n} agents; all see {n} alive {:.2} s after the last start",
        serf_converged.as_secs_f64()
    );

    // ---- Constella ----
    let names: Vec<String> = (0..n).map(|i| format!("node-{i:03}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(&name_refs, &vec![100; n], None);
    let constella_last_start = Instant::now();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let constella_converged = all_until(
        n,
        constella_last_start,
        Duration::from_secs(120),
        "constella convergence",
        |i| {
            nodes[i]
                .leader_and_alive()
                .is_some_and(|(_, alive)| alive == n)
        },
    );
    let leader = wait_for(Duration::from_secs(30), "one leader", || {
        let views: Vec<Option<(String, usize)>> =
            nodes.iter().map(|n| n.leader_and_alive()).collect();
        let first = views[0].clone()?;
        views
            .iter()
            .all(|v| v.as_ref() == Some(&first))
            .then_some(first.0)
    });
    println!(
        "constella: {n} nodes; all see {n} alive {:.2} s after the last start (one leader, {leader})",
        constella_converged.as_secs_f64()
    );

    // Steady state first: on a ring each node closes the connections it no longer wants (the
    // joins' first contacts) after the mesh grace, 10 s (docs/design.md, Partial mesh).
    let settle_secs = env_or("SETTLE_SECS", 12);
    println!("settling {settle_secs} s (SETTLE_SECS) before the idle measurement");
    std::thread::sleep(Duration::from_secs(settle_secs));
    // ---- idle, both at once ----
    let serf_pids: Vec<u32> = agents.iter().map(|a| a.child.id()).collect();
    let constella_pids: Vec<u32> = cluster.nodes.iter().map(Node::pid).collect();
    let all: Vec<u32> = serf_pids.iter().chain(&constella_pids).copied().collect();
    let before: Vec<u64> = all.iter().map(|p| cpu_ticks(*p)).collect();
    let idle_started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = idle_started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = all
        .iter()
        .zip(&before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / 100.0 / wall * 100.0)
        .collect();
    let rss: Vec<f64> = all.iter().map(|p| rss_kib(*p) as f64 / 1024.0).collect();
    let (serf_cpu, constella_cpu) = cpu.split_at(n);
    let (serf_rss, constella_rss) = rss.split_at(n);
    for (who, cpu, rss) in [
        ("serf", serf_cpu, serf_rss),
        ("constella", constella_cpu, constella_rss),
    ] {
        println!(
            "{who}: idle over {wall:.0} s: CPU per process mean {:.2} %, max {:.2} %; RSS mean {:.1} MiB, max {:.1} MiB",
            mean(cpu),
            max(cpu),
            mean(rss),
            max(rss)
        );
    }
    println!(
        "constella / serf: CPU {:.2}x, RSS {:.2}x",
        mean(constella_cpu) / mean(serf_cpu),
        mean(constella_rss) / mean(serf_rss)
    );

    // ---- a silent member ----
    let victim = n / 2;
    let victim_name = agents[victim].name.clone();
    let stopped_at = Instant::now();
    signal(serf_pids[victim], "STOP");
    let others: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    let serf_detect = all_until(
        others.len(),
        stopped_at,
        Duration::from_secs(120),
        "serf failure detection",
        |k| {
            agents[others[k]].members().is_some_and(|m| {
                m.iter()
                    .any(|(name, s)| *name == victim_name && s == "failed")
            })
        },
    );
    signal(serf_pids[victim], "CONT");
    println!(
        "serf: SIGSTOPped {victim_name}; all {} others mark it failed after {:.2} s",
        n - 1,
        serf_detect.as_secs_f64()
    );

    let victim = cluster
        .nodes
        .iter()
        .position(|node| node.name != leader && node.name != cluster.nodes[0].name)
        .expect("a non-leader node");
    let victim_name = cluster.nodes[victim].name.clone();
    let stopped_at = Instant::now();
    signal(constella_pids[victim], "STOP");
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let others: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    let constella_detect = all_until(
        others.len(),
        stopped_at,
        Duration::from_secs(120),
        "constella failure detection",
        |k| {
            nodes[others[k]]
                .ask_socket(r#"{"command":"peers"}"#)
                .is_some_and(|answer| {
                    answer["peers"].as_array().is_some_and(|peers| {
                        peers
                            .iter()
                            .any(|p| p["name"] == victim_name.as_str() && p["status"] == "offline")
                    })
                })
        },
    );
    signal(constella_pids[victim], "CONT");
    println!(
        "constella: SIGSTOPped {victim_name}; all {} others mark it offline after {:.2} s",
        n - 1,
        constella_detect.as_secs_f64()
    );
    println!(
        "failure detection: constella {:.1}x faster than serf",
        serf_detect.as_secs_f64() / constella_detect.as_secs_f64()
    );
    cluster.nodes.iter_mut().for_each(Node::kill);
}

fn agents_ready(agent: &Agent) -> Option<()> {
    agent.members().map(|_| ())
}
