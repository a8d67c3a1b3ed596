//! The control socket: how `constella status`, `peers`, `invite`, `leave`, `stats`, `reboot`
//! and `docker` talk to the running daemon. A Unix socket (`control.sock`, 0600) in the state
//! directory; one JSON request line, one JSON response line.
//!
//! Container requests are answered by the [`Containers`] handle given to [`serve`], off the
//! event loop: a container list takes the engine about a second, and nothing in it concerns
//! the network.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::daemon::Client;
use crate::docker::{Containers, DockerAnswer, DockerRequest};
use crate::stats::{NodeStats, RebootAccepted};
use constella_behaviours::rpc::PeerInfo;

/// Longest request line the daemon reads.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Peers,
    Invite {
        ttl_secs: u64,
    },
    Leave,
    /// The member list as another node sees it, by name or node id.
    PeersOf {
        target: String,
    },
    /// Resource figures of a node, by name or node id.
    Stats {
        target: String,
    },
    /// Reboot a node, by name or node id; `requested_by` goes to the target's log.
    Reboot {
        target: String,
        requested_by: String,
    },
    /// A container request for a node, by name or node id.
    Docker {
        target: String,
        request: DockerRequest,
    },
}

/// A node as shown by `peers --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub name: String,
    pub node_id: String,
    pub addr: String,
    pub status: String,
    pub leader: bool,
}

/// A reference to a node by name and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub name: String,
    pub node_id: String,
}

/// Counts of gossip messages refused, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejections {
    pub bad_mac: u64,
    pub wrong_signer: u64,
    pub non_member: u64,
    pub replay: u64,
    pub malformed: u64,
    pub incompatible_version: u64,
}

/// What `status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub name: String,
    pub node_id: String,
    pub network_id: String,
    pub owner_username: String,
    pub version: String,
    pub protocol_version: u32,
    pub leader: NodeRef,
    pub is_leader: bool,
    pub leader_changes: u64,
    pub alive: usize,
    pub offline: usize,
    pub uptime_secs: u64,
    /// Bumped at every start of the daemon: tells a restarted process from the old one.
    #[serde(default)]
    pub incarnation: u32,
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    pub rejected_gossip: Rejections,
    /// The Telegram bot on this node.
    #[serde(default)]
    pub bot: BotReport,
}

/// The Telegram bot as `status --json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotReport {
    /// The network has a bot token.
    pub enabled: bool,
    /// This node is polling the Bot API now (it leads).
    pub polling: bool,
    /// The owner's Telegram id is pinned.
    pub owner_pinned: bool,
    /// The highest update id handled in the network.
    pub last_update_id: u32,
    /// The interface language ("" is the default, Russian).
    pub language: String,
    /// Updates this node handled for the owner.
    pub handled_updates: u64,
    /// Updates from anyone else that this node refused (without a reply).
    pub refused_updates: u64,
    /// 409 Conflict answers: another process polled the same token.
    pub conflicts: u64,
}

/// A new invite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteReport {
    pub link: String,
    pub expires_at: u64,
    pub ttl: String,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReport>),
    Peers(Vec<PeerReport>),
    Invite(InviteReport),
    Left,
    PeersOf(Vec<PeerInfo>),
    Stats(Box<NodeStats>),
    RebootAccepted(RebootAccepted),
    Docker(DockerAnswer),
    Error(String),
}

/// Sends one request to the daemon of `socket` and waits for its answer.
pub async fn call(socket: &Path, request: &Request) -> Result<Response> {
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            bail!(
                "the constella daemon is not running (no answer on {})",
                socket.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", socket.display())),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).context("cannot encode the request")?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .context("cannot send the request to the daemon")?;
    let mut answer = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(read).read_line(&mut answer),
    )
    .await
    .context("the daemon did not answer within 30 s")?;
    read.context("cannot read the daemon's answer")?;
    if answer.is_empty() {
        bail!("the daemon closed the connection without answering");
    }
    serde_json::from_str(&answer).context("the daemon's answer is malformed")
}

/// Binds the control socket, refusing if another daemon already answers on it.
pub async fn bind(socket: &Path) -> Result<UnixListener> {
    if UnixStream::connect(socket).await.is_ok() {
        bail!(
            "another constella daemon is already running on {}",
            socket.display()
        );
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove stale {}", socket.display()));
        }
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", socket.display()))?;
    Ok(listener)
}

/// Answers control requests until the listener fails or the daemon stops.
pub async fn serve(listener: UnixListener, client: Client, containers: Containers) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                continue;
            }
        };
        let (client, containers) = (client.clone(), containers.clone());
        tokio::spawn(async move {
            if let Err(error) = answer(stream, client, containers).await {
                tracing::debug!(error = format!("{error:#}"), "control connection failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, client: Client, containers: Containers) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Docker { target, request }) => containers
            .call(&target, request)
            .await
            .map_or_else(|error| Response::Error(error.to_string()), Response::Docker),
        Ok(request) => client.handle(request).await,
        Err(error) => Response::Error(format!("malformed control request: {error}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}
