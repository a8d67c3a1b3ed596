//! The control socket: how `constella status`, `peers`, `invite`, `leave`, `stats`, `reboot`,
//! `owner set`, `access`, `alerts`, `services` and `docker` talk to the running daemon. A Unix socket (`control.sock`, 0600) in
//! the state directory; one JSON request line, one JSON response line.
//!
//! Node requests ([`Request`]) go to the event loop through the [`Client`]; network
//! administration ([`AdminRequest`]: the owner and the roles, which live in the network
//! settings) is done here on top of [`Client::merge_settings`]. Who asked is taken from the
//! socket's peer credentials (the uid) and recorded in the audit log with reboots, invites and
//! every change of the owner or the roles.
//!
//! Container requests are answered by the [`Containers`] handle in the [`Control`] context, off
//! the event loop: a container list takes the engine about a second, and nothing in it
//! concerns the network.

use std::collections::BTreeMap;
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
use crate::docker::{Containers, DockerAnswer, DockerRequest, Requester};
use crate::stats::{NodeStats, RebootAccepted};
use crate::validate::Ttl;
use std::sync::Arc;

use tokio::sync::watch;

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::daemon::ClientError;
use crate::state::{StateDir, StoredSecret};
use crate::validate::BotToken;
use constella_behaviours::alerts::{AlertState, Episode, Rule as AlertRule};
use constella_behaviours::settings::{
    BotTokenStamp, NetworkSettings, Role, token_digest, username_key,
};

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
    /// Remove a member (name or node id) and rotate the network secret.
    Remove {
        target: String,
    },
    /// Replace this node's PQ4 identity with a new one signed by the old (seed 004 §11).
    RotateKeys,
    /// The member list as another node sees it, by name or node id.
    PeersOf {
        target: String,
    },
    /// Resource figures of a node, by name or node id.
    Stats {
        target: String,
    },
    /// Sampled history of a node, by name or node id (`metrics` empty: all).
    History {
        target: String,
        #[serde(default)]
        metrics: Vec<String>,
        range_secs: u64,
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
    /// A one-time login link for this node's web panel.
    WebLogin {
        requested_by: String,
    },
    /// This node's web panel sessions.
    WebSessions,
    /// End a web panel session.
    WebRevoke {
        id: String,
        requested_by: String,
    },
    /// A request about a node's watched systemd units, by name or node id.
    Services {
        target: String,
        request: constella_behaviours::rpc::ServicesRequest,
    },
}

/// A request that administers the network (the owner and the roles in the network settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Make `username` (with `@`) the owner.
    OwnerSet {
        username: String,
        requested_by: String,
    },
    /// Give `username` a role.
    AccessGrant {
        username: String,
        role: Role,
        requested_by: String,
    },
    /// Take `username`'s role away.
    AccessRevoke {
        username: String,
        requested_by: String,
    },
    /// Who may use the bot, and how.
    AccessList,
    /// The alert thresholds and the recent episodes.
    AlertsList,
    /// Set an alert rule's threshold for the whole network (`percent` 0: off).
    AlertsSet {
        rule: AlertRule,
        percent: u8,
        requested_by: String,
    },
    /// Set the monthly traffic quota (bytes; 0: off) for every node.
    AlertsQuotaSet { bytes: u64, requested_by: String },
    /// Replace this node's bot token (validated, stored 0600; the bot restarts with it).
    BotTokenSet {
        /// The token; `Debug` shows `<redacted>`.
        token: StoredSecret,
        requested_by: String,
    },
}

/// `constella access --json`: the owner and every account with a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReport {
    /// The owner's username, with `@`.
    pub owner: String,
    /// The owner's Telegram id is pinned (they wrote `/start`).
    pub owner_pinned: bool,
    /// Accounts with a role, by username.
    pub users: Vec<AccessEntry>,
}

/// One account with a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// The username, with `@`.
    pub username: String,
    pub role: Role,
    /// Its Telegram id is pinned (it wrote to the bot since the grant).
    pub pinned: bool,
}

/// `constella alerts --json`: every rule's threshold and the episodes the network remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertReport {
    /// By rule name (`cpu`, `ram`, `disk`).
    pub thresholds: BTreeMap<AlertRule, ThresholdView>,
    /// Oldest first; `recovered_at` absent while open.
    pub episodes: Vec<Episode>,
    /// The monthly traffic quota.
    #[serde(default)]
    pub traffic: QuotaView,
}

/// The monthly traffic quota as `alerts --json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaView {
    /// Bytes received and sent per node and month; 0 when off.
    pub quota_bytes: u64,
    pub enabled: bool,
    /// Nobody set it: off by default.
    pub default: bool,
}

/// One rule as `alerts --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdView {
    /// Percent; 0 when off.
    pub percent: u8,
    pub enabled: bool,
    /// Nobody set it: the default applies.
    pub default: bool,
    /// How long the figure must stay above before an episode opens.
    pub hold_secs: u64,
}

impl AlertReport {
    pub fn new(alerts: &AlertState) -> Self {
        Self {
            thresholds: AlertRule::ALL
                .iter()
                .map(|rule| {
                    let percent = alerts.percent(*rule);
                    let view = ThresholdView {
                        percent,
                        enabled: percent > 0,
                        default: !alerts.thresholds.contains_key(rule),
                        hold_secs: rule.default_hold_secs(),
                    };
                    (*rule, view)
                })
                .collect(),
            episodes: alerts.episodes.values().cloned().collect(),
            traffic: QuotaView {
                quota_bytes: alerts.quota_bytes(),
                enabled: alerts.quota_bytes() > 0,
                default: alerts.traffic_quota.is_none(),
            },
        }
    }
}

/// The answer to `owner set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChange {
    pub previous: String,
    pub owner: String,
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
    /// The member (its name) is removed; the secret is being rotated.
    Removed(String),
    /// This node's PQ4 identity was replaced.
    KeysRotated(crate::daemon::node_keys::KeysRotated),
    PeersOf(Vec<MemberView>),
    Stats(Box<NodeStats>),
    History(constella_behaviours::rpc::History),
    RebootAccepted(RebootAccepted),
    Docker(DockerAnswer),
    Services(constella_behaviours::rpc::ServicesAnswer),
    Access(AccessReport),
    Alerts(AlertReport),
    OwnerChanged(OwnerChange),
    WebLogin(crate::web::WebLogin),
    WebSessions(Vec<crate::web::SessionInfo>),
    WebRevoked(crate::web::SessionInfo),
    /// The token was stored and the bot restarted; the bot's numeric id (not a secret).
    BotTokenSet {
        bot_id: String,
    },
    Error(String),
}

/// Sends one request (a [`Request`] or an [`AdminRequest`]) to the daemon of `socket` and
/// waits for its answer.
pub async fn call(socket: &Path, request: &impl Serialize) -> Result<Response> {
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

/// What the control socket's handlers share.
#[derive(Debug, Clone)]
pub struct Control {
    client: Client,
    audit: AuditLog,
    /// The bot's token: a new value restarts the bot with it.
    bot_tokens: Arc<watch::Sender<Option<StoredSecret>>>,
    state_dir: StateDir,
    /// The node's Docker containers.
    containers: Containers,
    /// The web panel, when `run --web-addr` started one.
    web: Option<crate::web::Panel>,
}

impl Control {
    pub fn new(
        client: Client,
        audit: AuditLog,
        bot_tokens: watch::Sender<Option<StoredSecret>>,
        state_dir: StateDir,
        containers: Containers,
    ) -> Self {
        Self {
            client,
            audit,
            bot_tokens: Arc::new(bot_tokens),
            state_dir,
            containers,
            web: None,
        }
    }

    /// With the node's web panel: `web-login` and `web-sessions` are answered by it.
    #[must_use]
    pub fn with_web(mut self, web: Option<crate::web::Panel>) -> Self {
        self.web = web;
        self
    }
}

/// First pause after a failed accept.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept retries: a freed descriptor is noticed within this.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// An episode of failed accepts ends only after this long without a failure: descriptors come
/// back one by one, and a recovery that flaps is still one episode (two log lines, not two per
/// flap).
const ACCEPT_EPISODE_QUIET: Duration = Duration::from_secs(2);
/// How long a client may take to send its request line before the connection is dropped, so
/// a client that connects and says nothing cannot hold a descriptor for ever.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A run of failed accepts (typically EMFILE: the process is out of file descriptors).
/// A failed accept leaves the connection in the backlog, so retrying at once fails again at
/// once: without a pause the loop pins a core and floods the log. Each episode is logged once
/// when it starts and once, with a summary, when accepts have worked for
/// [`ACCEPT_EPISODE_QUIET`].
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

    /// An accept worked: the next failure pauses briefly again.
    pub fn on_success(&mut self) {
        self.next_pause = ACCEPT_PAUSE_MIN;
    }

    /// Failed accepts in this episode.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// Answers control requests until the daemon stops.
pub async fn serve(listener: UnixListener, control: Control) {
    let mut episode: Option<AcceptEpisode> = None;
    // When the current episode ends, if accepts keep working until then.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async {
                match quiet_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                quiet_until = None;
                if let Some(done) = episode.take() {
                    tracing::info!(
                        failures = done.failures(),
                        seconds = format!("{:.1}", done.started.elapsed().as_secs_f64()),
                        "control socket accepts connections again"
                    );
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if let Some(current) = episode.as_mut() {
                    current.on_success();
                    quiet_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + ACCEPT_EPISODE_QUIET);
                }
                stream
            }
            Err(error) => {
                quiet_until = None;
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
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, control).await {
                tracing::debug!(error = format!("{error:#}"), "control connection failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, control: Control) -> Result<()> {
    // The kernel's word for who is on the other end (the socket is 0600, so root or the owner).
    let uid = stream.peer_cred().map(|cred| cred.uid()).ok();
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        BufReader::new(read.take(MAX_REQUEST_BYTES)).read_line(&mut line),
    )
    .await
    .context("no request line in time")??;
    let response = if let Ok(admin) = serde_json::from_str::<AdminRequest>(&line) {
        administer(admin, &control, uid)
            .await
            .unwrap_or_else(Response::Error)
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(Request::Docker { target, request }) => control
                .containers
                .call(
                    &target,
                    request,
                    Requester::Cli {
                        user: caller(None, uid),
                    },
                )
                .await
                .map_or_else(|error| Response::Error(error.to_string()), Response::Docker),
            Ok(
                request @ (Request::WebLogin { .. }
                | Request::WebSessions
                | Request::WebRevoke { .. }),
            ) => web_request(request, &control, uid),
            Ok(Request::Services { target, request }) => {
                let by = Requester::Cli {
                    user: caller(None, uid),
                };
                control
                    .client
                    .services(&target, request, by)
                    .await
                    .map_or_else(Response::Error, Response::Services)
            }
            Ok(request) => node_request(request, &control, uid).await,
            Err(error) => Response::Error(format!("malformed control request: {error}")),
        }
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
        Request::Remove { target } => client.remove(&target).await.map(Response::Removed),
        Request::RotateKeys => client.rotate_keys().await.map(Response::KeysRotated),
        Request::PeersOf { target } => client.peers_of(&target).await.map(Response::PeersOf),
        Request::Stats { target } => client
            .stats(&target)
            .await
            .map(|s| Response::Stats(Box::new(s))),
        Request::History {
            target,
            metrics,
            range_secs,
        } => client
            .history(&target, metrics, range_secs)
            .await
            .map(Response::History),
        Request::Reboot {
            target,
            requested_by,
        } => client
            .reboot(&target, &requested_by)
            .await
            .map(Response::RebootAccepted),
        Request::Services { target, request } => {
            let by = Requester::Cli {
                user: "control socket".to_owned(),
            };
            return client
                .services(&target, request, by)
                .await
                .map_or_else(Response::Error, Response::Services);
        }
        // Answered by the control socket's `Containers` handle before this, never by the node.
        Request::Docker { .. } => {
            return Response::Error("container requests go to the Docker handle".to_owned());
        }
        // Answered by the web panel's handle (`web_request`).
        Request::WebLogin { .. } | Request::WebSessions | Request::WebRevoke { .. } => {
            return Response::Error("web panel requests go to the panel".to_owned());
        }
    };
    result.unwrap_or_else(|error| Response::Error(error.to_string()))
}

/// How the caller appears in the audit log: what the CLI says it is, and the uid the kernel
/// vouches for.
fn caller(requested_by: Option<&str>, uid: Option<u32>) -> String {
    let uid = uid.map_or_else(|| "uid unknown".to_owned(), |uid| format!("uid {uid}"));
    match requested_by {
        Some(text) => format!("cli:{text} ({uid})"),
        None => format!("cli ({uid})"),
    }
}

const VIA_SOCKET: &str = "control socket";

/// `web-login`, `web-sessions`: answered by this node's web panel, if it runs one.
fn web_request(request: Request, control: &Control, uid: Option<u32>) -> Response {
    let Some(panel) = &control.web else {
        return Response::Error(
            "the web panel is off on this node: start it with `constella run --web-addr 127.0.0.1:4780` (or CONSTELLA_WEB_ADDR)".to_owned(),
        );
    };
    match request {
        Request::WebLogin { requested_by } => Response::WebLogin(panel.login_link(
            crate::web::Principal::Cli {
                who: caller(Some(&requested_by), uid),
            },
            VIA_SOCKET,
        )),
        Request::WebSessions => Response::WebSessions(panel.sessions()),
        Request::WebRevoke { id, requested_by } => panel
            .revoke(&id, &caller(Some(&requested_by), uid), VIA_SOCKET)
            .map_or_else(Response::Error, Response::WebRevoked),
        _ => Response::Error("not a web panel request".to_owned()),
    }
}

/// A node request, answered by the event loop; reboots and invites are audited, and `status`
/// names the owner as the network settings do now.
async fn node_request(request: Request, control: &Control, uid: Option<u32>) -> Response {
    let Control { client, audit, .. } = control;
    match request {
        Request::Reboot {
            target,
            requested_by,
        } => {
            let asked = AuditEvent::new(
                AuditKind::RebootRequested,
                caller(Some(&requested_by), uid),
                VIA_SOCKET,
            )
            .detail("target", target.clone());
            // On disk before the request leaves: the machine that reboots may be this one.
            if let Err(error) = audit.append(asked.clone()).await {
                return Response::Error(format!(
                    "the reboot was not requested: the audit log cannot be written ({error})"
                ));
            }
            let request = Request::Reboot {
                target,
                requested_by,
            };
            let response = handle(client, request).await;
            let outcome = match &response {
                Response::Error(error) => format!("failed: {error}"),
                _ => "accepted".to_owned(),
            };
            audit.record(asked.detail("outcome", outcome));
            response
        }
        Request::Remove { target } => {
            let response = handle(client, Request::Remove { target }).await;
            if let Response::Removed(name) = &response {
                audit.record(
                    AuditEvent::new(AuditKind::NodeRemoved, caller(None, uid), VIA_SOCKET)
                        .detail("node", name.clone()),
                );
            }
            response
        }
        Request::RotateKeys => {
            let response = handle(client, Request::RotateKeys).await;
            if let Response::KeysRotated(rotated) = &response {
                audit.record(
                    AuditEvent::new(AuditKind::KeyRotated, caller(None, uid), VIA_SOCKET)
                        .detail("fingerprint", rotated.fingerprint.clone())
                        .detail("previous_fingerprint", rotated.previous_fingerprint.clone()),
                );
            }
            response
        }
        Request::Invite { ttl_secs } => {
            let response = handle(client, Request::Invite { ttl_secs }).await;
            if let Response::Invite(invite) = &response {
                audit.record(
                    AuditEvent::new(AuditKind::InviteIssued, caller(None, uid), VIA_SOCKET)
                        .detail("ttl", invite.ttl.clone())
                        .detail("expires_at", invite.expires_at),
                );
            }
            response
        }
        Request::Status => match handle(client, Request::Status).await {
            Response::Status(mut report) => {
                if let Ok(settings) = current_settings(client).await {
                    report.owner_username = settings.owner(&report.owner_username).to_owned();
                }
                // A token set while the node runs (`bot-token set`) is the bot's, not the
                // state file's.
                report.bot.enabled |= control.bot_tokens.borrow().is_some();
                Response::Status(report)
            }
            other => other,
        },
        Request::Leave => {
            let response = handle(client, Request::Leave).await;
            if matches!(response, Response::Left(_)) {
                // The node forgets the network's secrets: the token file too.
                control.state_dir.remove_bot_token();
            }
            response
        }
        other => handle(client, other).await,
    }
}

/// The network settings as this node holds them (merging nothing changes nothing).
async fn current_settings(client: &Client) -> Result<NetworkSettings, String> {
    client
        .merge_settings(NetworkSettings::default())
        .await
        .map_err(|error| error.to_string())
}

/// The owner named at `init` (the state file's `owner_username`, as `status` reports it).
async fn initial_owner(client: &Client) -> Result<String, String> {
    client
        .status()
        .await
        .map(|status| status.owner_username)
        .map_err(|error| error.to_string())
}

/// Changes the owner or the roles: merged into the network settings (persisted and gossiped
/// to every node before the answer) and audited (on disk before the answer).
async fn administer(
    request: AdminRequest,
    control: &Control,
    uid: Option<u32>,
) -> Result<Response, String> {
    let Control { client, audit, .. } = control;
    let settings = current_settings(client).await?;
    let initial = initial_owner(client).await?;
    let owner = settings.owner(&initial).to_owned();
    let is_owner = |name: &str| username_key(name) == username_key(&owner);
    let (next, event) = match request {
        AdminRequest::AccessList => return Ok(Response::Access(access_report(&settings, &owner))),
        AdminRequest::AlertsList => {
            return Ok(Response::Alerts(AlertReport::new(&settings.alerts)));
        }
        AdminRequest::AlertsSet {
            rule,
            percent,
            requested_by,
        } => {
            let (merged, event) = crate::monitor::alerts::set_threshold(
                client,
                &settings.alerts,
                (rule, percent),
                caller(Some(&requested_by), uid),
                VIA_SOCKET,
            )
            .await
            .map_err(|error| error.to_string())?;
            audit.append(event).await.map_err(|error| {
                format!("the threshold was set but could not be audited: {error}")
            })?;
            return Ok(Response::Alerts(AlertReport::new(&merged.alerts)));
        }
        AdminRequest::AlertsQuotaSet {
            bytes,
            requested_by,
        } => {
            let (merged, event) = crate::monitor::alerts::set_quota(
                client,
                &settings.alerts,
                bytes,
                caller(Some(&requested_by), uid),
                VIA_SOCKET,
            )
            .await
            .map_err(|error| error.to_string())?;
            audit
                .append(event)
                .await
                .map_err(|error| format!("the quota was set but could not be audited: {error}"))?;
            return Ok(Response::Alerts(AlertReport::new(&merged.alerts)));
        }
        AdminRequest::BotTokenSet {
            token,
            requested_by,
        } => return set_bot_token(control, &token, &requested_by, uid).await,
        AdminRequest::OwnerSet {
            username,
            requested_by,
        } => {
            if is_owner(&username) {
                return Err(format!("{username} is already the owner; nothing changed"));
            }
            let next = settings.with_owner(&username);
            let event = AuditEvent::new(
                AuditKind::OwnerChanged,
                caller(Some(&requested_by), uid),
                VIA_SOCKET,
            )
            .detail("previous", owner.clone())
            .detail("owner", username.clone())
            .detail("previous_id_unpinned", settings.owner_user_id.is_some());
            (next, event)
        }
        AdminRequest::AccessGrant {
            username,
            role,
            requested_by,
        } => {
            if is_owner(&username) {
                return Err(format!(
                    "{username} is the owner and has every right already; nothing changed"
                ));
            }
            let key = username_key(&username);
            if settings.roles.get(&key).and_then(|g| g.role) == Some(role) {
                return Err(format!(
                    "{username} is already {}; nothing changed",
                    role.as_str()
                ));
            }
            let event = AuditEvent::new(
                AuditKind::RoleGranted,
                caller(Some(&requested_by), uid),
                VIA_SOCKET,
            )
            .detail("username", username.clone())
            .detail("role", role.as_str());
            (settings.with_role(&username, Some(role)), event)
        }
        AdminRequest::AccessRevoke {
            username,
            requested_by,
        } => {
            let key = username_key(&username);
            let Some(role) = settings.roles.get(&key).and_then(|g| g.role) else {
                return Err(format!("{username} has no role; nothing changed"));
            };
            let event = AuditEvent::new(
                AuditKind::RoleRevoked,
                caller(Some(&requested_by), uid),
                VIA_SOCKET,
            )
            .detail("username", username.clone())
            .detail("role", role.as_str());
            (settings.with_role(&username, None), event)
        }
    };
    let previous = owner;
    let merged = client
        .merge_settings(next)
        .await
        .map_err(|error| error.to_string())?;
    audit
        .append(event)
        .await
        .map_err(|error| format!("the change was made but could not be audited: {error}"))?;
    let owner = merged.owner(&initial).to_owned();
    if merged.owner_version != settings.owner_version {
        tracing::info!(%previous, %owner, "the owner was changed");
        return Ok(Response::OwnerChanged(OwnerChange { previous, owner }));
    }
    tracing::info!("the roles were changed");
    Ok(Response::Access(access_report(&merged, &owner)))
}

/// Validates a new bot token, stores it (0600, `bot.token`), restarts this node's bot with it,
/// and stamps the network settings with its version and digest (never the token): every other
/// member fetches it from this one over the members-only RPC (src/bot_token.rs).
async fn set_bot_token(
    control: &Control,
    token: &StoredSecret,
    requested_by: &str,
    uid: Option<u32>,
) -> Result<Response, String> {
    let token: BotToken = token.expose().parse()?;
    let bot_id = token
        .expose()
        .split_once(':')
        .map_or_else(String::new, |(id, _)| id.to_owned());
    control
        .state_dir
        .save_bot_token(token.expose())
        .map_err(|error| format!("the token was not stored: {error:#}"))?;
    let event = AuditEvent::new(
        AuditKind::BotTokenChanged,
        caller(Some(requested_by), uid),
        VIA_SOCKET,
    )
    .detail("bot_id", bot_id.clone());
    control
        .audit
        .append(event)
        .await
        .map_err(|error| format!("the token was stored but could not be audited: {error}"))?;
    control
        .bot_tokens
        .send_replace(Some(StoredSecret::new(token.expose().to_owned())));
    tracing::info!(%bot_id, "the bot token was replaced; the bot starts again with it");
    let stamp = async {
        let local = control.client.status().await?.node_id;
        let current = current_settings(&control.client)
            .await
            .map_err(ClientError::Storage)?;
        let version = current.bot_token.as_ref().map_or(0, |s| s.version) + 1;
        let next = NetworkSettings {
            bot_token: Some(BotTokenStamp {
                version,
                digest: token_digest(token.expose()),
                from: local,
                bot_id: bot_id.clone(),
            }),
            ..current
        };
        control.client.merge_settings(next).await
    };
    if let Err(error) = stamp.await {
        return Err(format!(
            "the token was stored and this node's bot uses it, but the other members were not told: {error}"
        ));
    }
    Ok(Response::BotTokenSet { bot_id })
}

fn access_report(settings: &NetworkSettings, owner: &str) -> AccessReport {
    AccessReport {
        owner: owner.to_owned(),
        owner_pinned: settings.owner_user_id.is_some(),
        users: settings
            .granted()
            .filter_map(|(name, grant)| {
                Some(AccessEntry {
                    username: format!("@{name}"),
                    role: grant.role?,
                    pinned: grant.user_id.is_some(),
                })
            })
            .collect(),
    }
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
        episode.on_success();
        assert_eq!(episode.on_failure(), ACCEPT_PAUSE_MIN);
        assert_eq!(episode.failures(), 13);
    }
}
