//! The control socket: how `constella status`, `peers`, `invite`, `leave`, `stats` and `reboot` talk to the running
//! daemon. A Unix socket (`control.sock`, 0600) in the state directory; one JSON request line,
//! one JSON response line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use constella_behaviours::membership::MemberView;

use crate::daemon::Client;
use crate::daemon::report::{InviteReport, StatusReport};
use crate::stats::{NodeStats, RebootAccepted};
use crate::validate::Ttl;

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
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReport>),
    Peers(Vec<MemberView>),
    Invite(InviteReport),
    Left,
    PeersOf(Vec<MemberView>),
    Stats(Box<NodeStats>),
    RebootAccepted(RebootAccepted),
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
pub async fn serve(listener: UnixListener, client: Client) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                continue;
            }
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, client).await {
                tracing::debug!(error = format!("{error:#}"), "control connection failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, client: Client) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(&client, request).await,
        Err(error) => Response::Error(format!("malformed control request: {error}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Answers one control request through the node's [`Client`].
async fn handle(client: &Client, request: Request) -> Response {
    let result = match request {
        Request::Status => client.status().await.map(|s| Response::Status(Box::new(s))),
        Request::Peers => client.peers().await.map(Response::Peers),
        Request::Invite { ttl_secs } => match format!("{ttl_secs}s").parse::<Ttl>() {
            Ok(ttl) => client.invite(ttl).await.map(Response::Invite),
            Err(error) => return Response::Error(error),
        },
        Request::Leave => client.leave().await.map(|()| Response::Left),
        Request::PeersOf { target } => client.peers_of(&target).await.map(Response::PeersOf),
        Request::Stats { target } => client
            .stats(&target)
            .await
            .map(|s| Response::Stats(Box::new(s))),
        Request::Reboot {
            target,
            requested_by,
        } => client
            .reboot(&target, &requested_by)
            .await
            .map(Response::RebootAccepted),
    };
    result.unwrap_or_else(|error| Response::Error(error.to_string()))
}
