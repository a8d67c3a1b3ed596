//! `constella rolling-restart`: restarts every node of the network one at a time, the leader
//! last, so that the network keeps a leader (and the bot keeps answering) throughout.
//!
//! How a node is restarted and how it is asked for its status are shell command templates, so
//! the same procedure drives a fleet over SSH (`ssh root@{host} systemctl restart constella`)
//! and a test on one machine. For each node in turn it:
//! 1. notes the node's incarnation (bumped at every start of its daemon);
//! 2. runs the restart command. The SIGTERM makes the node say goodbye, so when it leads, the
//!    next node takes over at once instead of after missed heartbeats;
//! 3. waits until the node answers with a new incarnation, every node sees every member alive,
//!    and all of them name the same leader.
//!
//! It stops at the first node that does not come back in time and leaves the rest untouched.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::RollingRestartArgs;
use constella_behaviours::membership::MemberView;

use crate::control::{self, Request, Response};
use crate::daemon::report::StatusReport;
use crate::state::StateDir;
use crate::validate::HostPort;

/// How long one `status` or `peers` query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two checks while waiting for a node.
const POLL: Duration = Duration::from_millis(200);

/// A node to restart, with the values its command templates may use.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    node_id: String,
    addr: HostPort,
    leader: bool,
}

impl Target {
    fn new(peer: &MemberView) -> Result<Self> {
        let addr: HostPort = peer
            .addr
            .parse()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("address of {}", peer.name))?;
        // Names are DNS labels and ids base58; a host is checked here because it goes into a
        // shell command unquoted.
        let safe = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b))
        };
        if !safe(&addr.host) || !safe(&peer.name) || !safe(&peer.node_id.to_base58()) {
            bail!(
                "{} ({}) has characters that are unsafe in a shell command",
                peer.name,
                peer.addr
            );
        }
        Ok(Self {
            name: peer.name.clone(),
            node_id: peer.node_id.to_base58(),
            addr,
            leader: peer.leader,
        })
    }

    /// The template with this node's values in place of the placeholders.
    fn fill(&self, template: &str) -> String {
        template
            .replace("{name}", &self.name)
            .replace("{host}", &self.addr.host)
            .replace("{port}", &self.addr.port.to_string())
            .replace("{addr}", &self.addr.to_string())
            .replace("{node_id}", &self.node_id)
    }
}

/// Runs `command` with `sh -c`, killing it after `timeout`.
async fn sh(command: &str, timeout: Duration) -> Result<Output> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run `{command}`"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.with_context(|| format!("cannot run `{command}`")),
        Err(_) => bail!("`{command}` did not finish within {} s", timeout.as_secs()),
    }
}

/// The last line a failed command printed on stderr, for an error message.
fn last_error_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)")
        .trim()
        .to_owned()
}

/// Talks to nodes through the `--ctl` template.
#[derive(Debug)]
struct Fleet {
    ctl: String,
}

impl Fleet {
    async fn query<T: serde::de::DeserializeOwned>(&self, node: &Target, what: &str) -> Result<T> {
        let command = format!("{} {what} --json", node.fill(&self.ctl));
        let output = sh(&command, QUERY_TIMEOUT).await?;
        if !output.status.success() {
            bail!(
                "{}: `{what}` failed: {}",
                node.name,
                last_error_line(&output)
            );
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{}: `{command}` did not print {what} JSON", node.name))
    }

    async fn status(&self, node: &Target) -> Result<StatusReport> {
        self.query(node, "status").await
    }

    async fn peers(&self, node: &Target) -> Result<Vec<MemberView>> {
        self.query(node, "peers").await
    }

    /// Ok(leader name) once `node` runs a new process, every node sees every member alive, and
    /// all name the same leader; otherwise what is still missing.
    async fn settled(&self, node: &Target, before: &Restarted, all: &[Target]) -> Result<String> {
        let status = self.status(node).await?;
        if !before.is_new(&status) {
            bail!("{} still runs its old process", node.name);
        }
        let mut agreed: Option<String> = None;
        for observer in all {
            let peers = self.peers(observer).await?;
            for member in all {
                let alive = peers
                    .iter()
                    .any(|p| p.node_id.to_base58() == member.node_id && p.is_alive());
                if !alive {
                    bail!("{} does not see {} alive yet", observer.name, member.name);
                }
            }
            let leaders: Vec<&MemberView> = peers.iter().filter(|p| p.leader).collect();
            let [leader] = leaders.as_slice() else {
                bail!("{} names {} leaders", observer.name, leaders.len());
            };
            match &agreed {
                None => agreed = Some(leader.name.clone()),
                Some(name) if *name != leader.name => {
                    bail!(
                        "{} names {} the leader, another node names {name}",
                        observer.name,
                        leader.name
                    )
                }
                Some(_) => {}
            }
        }
        agreed.context("no nodes")
    }
}

/// What is known of a node just before its restart.
#[derive(Debug)]
struct Restarted {
    incarnation: u32,
    at: Instant,
}

impl Restarted {
    /// Whether `status` comes from a process started after the restart command. A daemon too
    /// old to report its incarnation (0) is judged by its uptime instead.
    fn is_new(&self, status: &StatusReport) -> bool {
        if self.incarnation > 0 && status.incarnation > 0 {
            status.incarnation != self.incarnation
        } else {
            status.uptime_secs <= self.at.elapsed().as_secs()
        }
    }
}

/// Runs the rolling restart of the network that the node of `state_dir` belongs to.
pub async fn run(state_dir: &StateDir, args: RollingRestartArgs) -> Result<()> {
    let peers = match control::call(&state_dir.socket_path(), &Request::Peers).await? {
        Response::Peers(peers) => peers,
        Response::Error(message) => bail!("{message}"),
        other => bail!("the daemon gave an unexpected answer: {other:?}"),
    };
    let offline: Vec<&str> = peers
        .iter()
        .filter(|p| !p.is_alive())
        .map(|p| p.name.as_str())
        .collect();
    if !offline.is_empty() {
        bail!(
            "{} offline: a rolling restart needs every node alive first (see `constella peers`); nothing was restarted",
            offline.join(", ")
        );
    }
    let mut targets = peers.iter().map(Target::new).collect::<Result<Vec<_>>>()?;
    // Followers first, by name; the leader last, so it hands over only once.
    targets.sort_by(|a, b| (a.leader, &a.name).cmp(&(b.leader, &b.name)));
    let timeout = Duration::from_secs(args.timeout.max(1));
    println!(
        "Rolling restart of {} nodes, the leader last:",
        targets.len()
    );
    for (i, target) in targets.iter().enumerate() {
        let role = if target.leader { " (leader)" } else { "" };
        println!(
            "  {}. {}{role}: {}",
            i + 1,
            target.name,
            target.fill(&args.restart_cmd)
        );
    }
    if args.dry_run {
        println!("Dry run: nothing was restarted.");
        return Ok(());
    }

    let fleet = Fleet { ctl: args.ctl };
    let started = Instant::now();
    let count = targets.len();
    for (i, target) in targets.iter().enumerate() {
        let step = format!("[{}/{count}]", i + 1);
        let before = fleet
            .status(target)
            .await
            .with_context(|| format!("{} does not answer before its restart", target.name))?;
        if target.leader {
            println!(
                "{step} {} leads: on SIGTERM it says goodbye and the others elect the next leader at once",
                target.name
            );
        }
        println!("{step} restarting {}", target.name);
        let before = Restarted {
            incarnation: before.incarnation,
            at: Instant::now(),
        };
        let output = sh(&target.fill(&args.restart_cmd), timeout).await?;
        if !output.status.success() {
            bail!(
                "restarting {} failed ({}): {}; the remaining nodes were not restarted",
                target.name,
                output.status,
                last_error_line(&output)
            );
        }
        let deadline = before.at + timeout;
        let leader = loop {
            let problem = match fleet.settled(target, &before, &targets).await {
                Ok(leader) => break leader,
                Err(problem) => problem,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} is not back on every node after {} s ({problem:#}); the remaining nodes were not restarted",
                    target.name,
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        println!(
            "{step} {} is back and alive on every node after {:.1} s; leader: {leader}",
            target.name,
            before.at.elapsed().as_secs_f64()
        );
    }
    println!(
        "Rolling restart done: {count} nodes in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
