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
use constella_behaviours::node::LeaveOutcome;

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
    /// The leave is recorded; how the network heard it.
    Left(LeaveOutcome),
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

/// First pause after a failed accept.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept retries: a freed descriptor is noticed within this.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How long a client may take to send its request line before the connection is dropped, so
/// a client that connects and says nothing cannot hold a descriptor for ever.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A run of failed accepts (typically EMFILE: the process is out of file descriptors).
/// A failed accept leaves the connection in the backlog, so retrying at once fails again at
/// once: without a pause the loop pins a core and floods the log. Each episode is logged once
/// when it starts and once, with a summary, when an accept succeeds again.
#[derive(Debug)]
pub struct AcceptEpisode {
    started: std::time::Instant,
    failures: u64,
    next_pause: Duration,
}

impl AcceptEpisode {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            failures: 0,
            next_pause: ACCEPT_PAUSE_MIN,
        }
    }

    /// Counts one failure; returns how long to pause before the next accept (doubling from
    /// [`ACCEPT_PAUSE_MIN`] to [`ACCEPT_PAUSE_MAX`]).
    pub fn on_failure(&mut self) -> Duration {
        self.failures += 1;
        let pause = self.next_pause;
        self.next_pause = (self.next_pause * 2).min(ACCEPT_PAUSE_MAX);
        pause
    }

    /// Failed accepts in this episode.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// Answers control requests until the daemon stops.
pub async fn serve(listener: UnixListener, client: Client) {
    let mut episode: Option<AcceptEpisode> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if let Some(done) = episode.take() {
                    tracing::info!(
                        failures = done.failures(),
                        seconds = format!("{:.1}", done.started.elapsed().as_secs_f64()),
                        "control socket accepts connections again"
                    );
                }
                stream
            }
            Err(error) => {
                let current = episode.get_or_insert_with(|| {
                    tracing::warn!(
                        %error,
                        "control socket accept failed; retrying with pauses of up to {} s (one summary line when it recovers)",
                        ACCEPT_PAUSE_MAX.as_secs()
                    );
                    AcceptEpisode::new()
                });
                tokio::time::sleep(current.on_failure()).await;
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
    tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        BufReader::new(read.take(MAX_REQUEST_BYTES)).read_line(&mut line),
    )
    .await
    .context("no request line in time")??;
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
        Request::Leave => client.leave().await.map(Response::Left),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pauses_double_up_to_a_second() {
        let mut episode = AcceptEpisode::new();
        let pauses: Vec<Duration> = (0..12).map(|_| episode.on_failure()).collect();
        assert_eq!(pauses[0], ACCEPT_PAUSE_MIN);
        assert_eq!(pauses[1], ACCEPT_PAUSE_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), ACCEPT_PAUSE_MAX);
        assert_eq!(episode.failures(), 12);
    }
}
