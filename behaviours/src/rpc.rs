//! The node RPC protocol: a member asks another member for its view of the network
//! (`GetPeers`), its resource usage (`GetStats`), to reboot its host (`Reboot`), for its
//! containers (`Docker`), or (the leader) to tell the owner about a container (`ContainerAlert`).
//!
//! One request-response exchange per call on `/constella/rpc/1.0.0`, CBOR-encoded, with
//! bounded frames: a frame larger than the bound, or one that does not decode, fails that one
//! stream (the codec returns an error) and leaves the connection and its other streams alone.
//! The answering node checks that the caller is a member before doing anything; a request made on
//! behalf of someone ([`Requester`]: a Telegram account through the leader's bot, or the CLI on
//! the calling member) is checked again against the answering node's own copy of the roles.

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::{Deserialize, Serialize};

/// The RPC protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/constella/rpc/1.0.0");

/// Largest request accepted: the biggest one is `Reboot` with a short `requested_by`.
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024;
/// Largest response accepted: a member list of a few hundred nodes, or stats with many disks.
pub const MAX_RESPONSE_BYTES: u64 = 256 * 1024;
/// Longest `requested_by` a node accepts in a `Reboot`.
pub const MAX_REQUESTED_BY_CHARS: usize = 200;
/// Most parallel RPC streams on one connection.
pub const MAX_CONCURRENT_STREAMS: usize = 32;

/// What a caller asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcRequest {
    /// The member list as the answering node sees it.
    GetPeers,
    /// The answering node's CPU, memory, disk and uptime figures.
    GetStats,
    /// Reboot the answering node's host.
    Reboot {
        /// Who asked, for the target's log (e.g. "@owner via telegram", "cli on delta-01").
        requested_by: String,
        /// Who asked, for the target's own check of the role; absent from older nodes
        /// (treated as the calling member's CLI).
        #[serde(default)]
        by: Option<Requester>,
        /// The bot's confirmation id (its MAC), claimed in the network settings; the target
        /// refuses one claimed by another node and acts on each at most once.
        #[serde(default)]
        confirmation: Option<String>,
    },
    /// A container request, answered by the target's own Docker engine.
    Docker {
        request: DockerRequest,
        /// Who asked: the target checks the role itself.
        by: Requester,
    },
    /// A container on the calling member exited unexpectedly or restarts in a loop: the
    /// leader's bot tells the owner.
    ContainerAlert(ContainerAlert),
    /// The answering node's bot token: a member whose token does not match the network
    /// settings' stamp fetches the new one (members only; sealed to the asker's PQ4 card, inside the Noise-encrypted
    /// connection; the answer's `Debug` is redacted).
    GetBotToken,
    /// The answering node's sampled history of `metrics` (empty: all its series, at most
    /// [`MAX_HISTORY_METRICS`]) over the last `range_secs` (at most [`MAX_HISTORY_RANGE_SECS`]).
    GetHistory {
        metrics: Vec<String>,
        range_secs: u64,
    },
    /// The answering node's watched systemd units: status, add, remove, restart.
    Services {
        request: ServicesRequest,
        /// Who asked: the target checks the role itself.
        by: Requester,
    },
}

/// A bot token sealed to one member's PQ4 card (X448 + ML-KEM-1024,
/// [`crate::network_keys::seal_to`] with [`crate::network_keys::Purpose::BotToken`]): someone who
/// recorded the Noise transport and later breaks X25519 still cannot read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedToken(#[serde(with = "crate::ids::bytes")] pub Vec<u8>);

impl std::fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedToken({} bytes)", self.0.len())
    }
}

/// A bot token as this node holds it: wiped on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(zeroize::Zeroizing<String>);

impl SecretToken {
    pub fn new(token: String) -> Self {
        Self(zeroize::Zeroizing::new(token))
    }

    /// The token itself, for the one place that stores or uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// Longest Telegram username a [`Requester`] carries (Telegram's own limit is 32).
pub const MAX_USERNAME_CHARS: usize = 64;

/// Who an action is for, carried to the node that performs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    /// A user of the calling member's control socket (root on a server of the network may do
    /// everything there); `user` is for the log.
    Cli { user: String },
    /// A Telegram account, as the leader's bot saw it.
    Telegram {
        user_id: u64,
        username: Option<String>,
    },
}

impl Requester {
    /// How the requester appears in logs and the audit log.
    pub fn describe(&self) -> String {
        match self {
            Requester::Cli { user } => format!("cli:{user}"),
            Requester::Telegram {
                user_id,
                username: Some(name),
            } => format!("telegram:{user_id} (@{name})"),
            Requester::Telegram { user_id, .. } => format!("telegram:{user_id}"),
        }
    }

    /// Whether the fields are within bounds and printable.
    pub fn is_valid(&self) -> bool {
        let printable = |text: &str, max: usize| {
            text.chars().count() <= max && !text.chars().any(char::is_control)
        };
        match self {
            Requester::Cli { user } => printable(user, MAX_REQUESTED_BY_CHARS),
            Requester::Telegram { username, .. } => username
                .as_deref()
                .is_none_or(|name| printable(name, MAX_USERNAME_CHARS)),
        }
    }
}

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// It stopped with a non-zero exit code although nobody stopped it.
    Exited { exit_code: i64 },
    /// It died `restarts` times within `window_secs` without anybody stopping it.
    RestartLoop { restarts: u32, window_secs: u32 },
}

/// A container alert, from the node whose engine runs the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerAlert {
    /// Server name of the node.
    pub node: String,
    /// The container's name.
    pub container: String,
    /// What happened.
    pub kind: AlertKind,
}

impl ContainerAlert {
    /// Whether the names are within bounds and printable.
    pub fn is_valid(&self) -> bool {
        let printable = |text: &str, max: usize| {
            !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
        };
        printable(&self.node, MAX_REQUESTED_BY_CHARS)
            && printable(&self.container, MAX_CONTAINER_NAME_CHARS)
    }
}

/// Most series one `GetHistory` returns.
pub const MAX_HISTORY_METRICS: usize = 16;
/// Most points per series one `GetHistory` returns (longer ranges are averaged into buckets),
/// so that [`MAX_HISTORY_METRICS`] series fit a response frame.
pub const MAX_HISTORY_POINTS: usize = 720;
/// Longest range a node keeps: 30 days at 1-minute resolution.
pub const MAX_HISTORY_RANGE_SECS: u64 = 30 * 24 * 3600;
/// Longest metric name a node accepts.
pub const MAX_METRIC_CHARS: usize = 128;

/// One sampled series: `(unix seconds, value)` oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// e.g. `cpu_percent`, `net_rx_bytes_per_sec`, `disk_used_percent:/`.
    pub metric: String,
    pub points: Vec<(u64, f64)>,
}

/// A node's answer to `GetHistory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Server name of the node measured.
    pub name: String,
    /// Seconds between two points as stored (10 or 60); a bucketed answer has wider gaps.
    pub step_secs: u32,
    pub series: Vec<Series>,
}

/// Space on one mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Mount point, e.g. `/`.
    pub mount: String,
    /// Bytes in use (total minus available to unprivileged users).
    pub used_bytes: u64,
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
}

/// A node's resource usage, sampled when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Server name of the node measured.
    pub name: String,
    /// PeerId of the node measured, base58.
    pub node_id: String,
    /// CPU use of the whole host, 0–100, averaged over a short window (about 200 ms).
    pub cpu_percent: f32,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// RAM in use, bytes.
    pub ram_used_bytes: u64,
    /// RAM installed, bytes (MemTotal).
    pub ram_total_bytes: u64,
    /// Swap in use, bytes.
    pub swap_used_bytes: u64,
    /// Swap configured, bytes.
    pub swap_total_bytes: u64,
    /// `/` and every other real mounted filesystem.
    pub disks: Vec<DiskUsage>,
    /// Seconds since the host booted.
    pub host_uptime_secs: u64,
    /// Seconds since the daemon started.
    pub daemon_uptime_secs: u64,
    /// Resident memory of the daemon process, bytes.
    pub daemon_rss_bytes: u64,
    /// The processes using the most CPU over the measuring window, most first (at most
    /// [`TOP_PROCESSES`]; empty from a node that predates the field).
    #[serde(default)]
    pub top_cpu: Vec<ProcessUsage>,
    /// The processes with the most resident memory, most first (at most [`TOP_PROCESSES`]).
    #[serde(default)]
    pub top_memory: Vec<ProcessUsage>,
    /// Traffic per interface since this month's reset day (absent with sampling off, or from a
    /// node that predates the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<MonthlyTraffic>,
}

/// Bytes per interface since the last reset day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyTraffic {
    /// Unix seconds: 00:00 UTC of the last reset day.
    pub since: u64,
    /// The day of the month the totals start again (1–31; a shorter month's last day).
    pub reset_day: u8,
    pub interfaces: Vec<InterfaceTraffic>,
}

/// One interface's monthly totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceTraffic {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// How many processes each top list of [`NodeStats`] holds.
pub const TOP_PROCESSES: usize = 5;

/// One process in a top list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub pid: u32,
    /// Its name (at most 64 characters).
    pub name: String,
    /// CPU use over the measuring window, percent of one core (may exceed 100).
    pub cpu_percent: f32,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// The target's promise to reboot, sent before it acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootAccepted {
    /// Server name of the node that will reboot.
    pub name: String,
    /// Its PeerId, base58.
    pub node_id: String,
    /// Who asked, as the target logged it.
    pub requested_by: String,
    /// What the target will run: `"reboot(2)"`, `"systemctl reboot"` or the operator's command.
    pub action: String,
}

/// A successful answer; its variant matches the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcAnswer {
    /// Answer to [`RpcRequest::GetPeers`].
    Peers(Vec<crate::membership::MemberView>),
    /// Answer to [`RpcRequest::GetStats`].
    Stats(Box<NodeStats>),
    /// Answer to [`RpcRequest::Reboot`].
    Reboot(RebootAccepted),
    /// Answer to [`RpcRequest::Docker`]: the engine's answer or why it failed.
    Docker(Result<DockerAnswer, DockerError>),
    /// Answer to [`RpcRequest::ContainerAlert`]: the alert was handed to the bot.
    Noted,
    /// Answer to [`RpcRequest::GetBotToken`]: the token sealed to the asking member's PQ4 card;
    /// `None` when the node has no token.
    BotToken(Option<SealedToken>),
    /// Answer to [`RpcRequest::GetHistory`].
    History(History),
    /// Answer to [`RpcRequest::Services`]: the units after the request, or why it failed.
    Services(Result<ServicesAnswer, String>),
}

/// Why the answering node did not do what was asked. Each is one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RpcRefusal {
    /// The caller is not a member of the answering node's network.
    #[error("the caller is not a member of this network")]
    NotMember,
    /// The daemon lacks the privilege to reboot its host.
    #[error("reboot needs root or CAP_SYS_BOOT")]
    RebootNotPermitted,
    /// The request is unusable (e.g. an over-long `requested_by`).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node tried and failed (e.g. it could not read its figures).
    #[error("{0}")]
    Failed(String),
    /// The person the request was made for may not do this (checked on the answering node).
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

// ---- containers ---------------------------------------------------------------------------
//
// The Docker requests of `constella docker` and the bot: answered for the local node through
// the control socket, and for another member as `RpcRequest::Docker`, whose answering side
// calls the binary's `docker::Engine::answer` off its event loop.

/// Longest container name or id a node accepts (Docker's own names are far shorter).
pub const MAX_CONTAINER_NAME_CHARS: usize = 128;
/// Longest image reference an answer carries (Docker's own limit is 255 for the name part).
pub const MAX_IMAGE_CHARS: usize = 256;
/// Most log lines one `Logs` request returns.
pub const MAX_LOG_LINES: u32 = 1000;
/// Most bytes of log text one answer carries (the newest lines are kept): with the member
/// list of `MAX_RESPONSE_BYTES`, the frame bound holds.
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// Most containers one `List` answer carries.
pub const MAX_CONTAINERS: usize = 500;

/// What to do with one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAction {
    Start,
    Stop,
    Restart,
}

impl ContainerAction {
    /// The command-line word: `start`, `stop`, `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerAction::Start => "start",
            ContainerAction::Stop => "stop",
            ContainerAction::Restart => "restart",
        }
    }
}

/// A container request for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DockerRequest {
    /// Whether the node has a Docker engine, and its version (cheap: no container is read).
    Probe,
    /// Every container, running or not, with its figures.
    List,
    /// One container, by name or id, with its figures.
    Inspect { name: String },
    /// Start, stop or restart a container, by name or id.
    Act {
        name: String,
        action: ContainerAction,
    },
    /// The last `tail` lines of a container's output (stdout and stderr).
    Logs { name: String, tail: u32 },
}

/// A container as `constella docker NODE --json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Name without Docker's leading `/`.
    pub name: String,
    /// Image as the container was created from it (tag or id).
    pub image: String,
    /// Docker's state: `running`, `exited`, `created`, `paused`, `restarting`, `dead`, …
    pub state: String,
    /// Seconds since it started, 0 unless running.
    pub uptime_secs: u64,
    /// CPU use over about a second, in percent of one core (a container using two cores
    /// fully shows 200), as `docker stats` shows it; 0 unless running.
    pub cpu_percent: f64,
    /// Memory in use without the page cache, bytes, as `docker stats` shows it; 0 unless
    /// running.
    pub mem_bytes: u64,
    /// The short (12-hex) id: the bot's buttons name containers by it.
    pub id: String,
}

/// The answer to a [`DockerRequest`]; its variant matches the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerAnswer {
    /// Answer to `Probe`: the engine's version.
    Engine { version: String },
    /// Answer to `List`, sorted by name.
    Containers(Vec<ContainerInfo>),
    /// Answer to `Inspect`.
    Container(ContainerInfo),
    /// Answer to `Act`: the container after the action.
    Done {
        action: ContainerAction,
        container: ContainerInfo,
    },
    /// Answer to `Logs`: the lines, oldest first; `truncated` when older lines were dropped
    /// to stay within [`MAX_LOG_BYTES`].
    Logs {
        name: String,
        lines: Vec<String>,
        truncated: bool,
    },
}

/// Why a container request failed. Each is one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DockerError {
    /// No Docker engine answers on the node (socket absent or refusing).
    #[error("{node} has no Docker engine ({reason})")]
    NoEngine { node: String, reason: String },
    /// No container of that name or id on the node.
    #[error("no container named {name} on {node}")]
    NoSuchContainer { node: String, name: String },
    /// The request is unusable (a bad name, a tail out of range).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine refused or failed (its message).
    #[error("Docker on {node}: {message}")]
    Engine { node: String, message: String },
    /// No member of that name or id.
    #[error("no node named {0}")]
    NoSuchNode(String),
    /// The node could not be asked (offline, unreachable, refused the call).
    #[error("{0}")]
    Unreachable(String),
}

/// The answering node's reply.
pub type RpcResponse = Result<RpcAnswer, RpcRefusal>;

/// The request-response behaviour for RPC.
pub type Behaviour = request_response::cbor::Behaviour<RpcRequest, RpcResponse>;

/// An RPC behaviour with bounded frames, bounded parallel streams and the given timeout.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::bounded_cbor(
        PROTOCOL,
        MAX_REQUEST_BYTES,
        MAX_RESPONSE_BYTES,
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}

// ---- systemd units ------------------------------------------------------------------------
//
// `constella services` and the bot: a node keeps its own list of watched units (a file in its
// state directory) and answers for them with its own systemctl.

/// Longest unit name a node accepts (systemd's own limit is 256).
pub const MAX_UNIT_CHARS: usize = 256;
/// Most units one node watches.
pub const MAX_WATCHED_UNITS: usize = 32;

/// A request about a node's watched systemd units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ServicesRequest {
    /// The status of every watched unit.
    List,
    /// Watch a unit (it need not exist yet).
    Add { unit: String },
    /// Stop watching a unit.
    Remove { unit: String },
    /// `systemctl restart` a watched unit.
    Restart { unit: String },
}

impl ServicesRequest {
    /// The unit the request names, if any.
    pub fn unit(&self) -> Option<&str> {
        match self {
            ServicesRequest::List => None,
            ServicesRequest::Add { unit }
            | ServicesRequest::Remove { unit }
            | ServicesRequest::Restart { unit } => Some(unit),
        }
    }
}

/// A unit name as systemd takes it: `name.service` (`.service` is added when no type is
/// given), letters, digits and `:_.@-\\`, not starting with `-`. The error is one line.
pub fn unit_name(text: &str) -> Result<String, String> {
    const TYPES: &[&str] = &[
        ".service", ".socket", ".timer", ".mount", ".path", ".target", ".scope", ".slice",
    ];
    let valid = !text.is_empty()
        && text.chars().count() <= MAX_UNIT_CHARS
        && !text.starts_with('-')
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c));
    if !valid {
        return Err(format!(
            "invalid unit name {text:?}: letters, digits and :_.@- only, e.g. nginx or nginx.service"
        ));
    }
    if TYPES.iter().any(|t| text.ends_with(t)) {
        Ok(text.to_owned())
    } else {
        Ok(format!("{text}.service"))
    }
}

/// One watched unit as `systemctl show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub unit: String,
    /// `loaded`, `not-found`, …; empty when systemd could not be asked.
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, …
    pub active_state: String,
    /// `running`, `exited`, `dead`, …
    pub sub_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A node's answer about its units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesAnswer {
    /// The answering node's name.
    pub node: String,
    /// Whether the node runs under systemd (has a reachable systemctl); without it every
    /// status is empty and a restart fails.
    pub systemd: bool,
    /// Every watched unit after the request, by name.
    pub units: Vec<UnitStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_stay_small() {
        let request = RpcRequest::Reboot {
            requested_by: "x".repeat(MAX_REQUESTED_BY_CHARS),
            by: Some(Requester::Telegram {
                user_id: u64::MAX,
                username: Some("u".repeat(MAX_USERNAME_CHARS)),
            }),
            confirmation: Some("0123456789abcdef".into()),
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&request, &mut bytes).unwrap();
        assert!((bytes.len() as u64) < MAX_REQUEST_BYTES);
        let back: RpcRequest = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, request);

        let refusal: RpcResponse = Err(RpcRefusal::RebootNotPermitted);
        let mut bytes = Vec::new();
        ciborium::into_writer(&refusal, &mut bytes).unwrap();
        let back: RpcResponse = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, refusal);
    }

    #[test]
    fn the_largest_container_answers_fit_a_response_frame() {
        let size = |answer: &Result<DockerAnswer, DockerError>| {
            let mut bytes = Vec::new();
            ciborium::into_writer(answer, &mut bytes).unwrap();
            bytes.len() as u64
        };
        // MAX_LOG_BYTES of text in the most lines.
        let per_line = MAX_LOG_BYTES / MAX_LOG_LINES as usize - 1;
        let logs = Ok(DockerAnswer::Logs {
            name: "n".repeat(MAX_CONTAINER_NAME_CHARS),
            lines: vec!["x".repeat(per_line); MAX_LOG_LINES as usize],
            truncated: true,
        });
        assert!(size(&logs) < MAX_RESPONSE_BYTES, "{}", size(&logs));
        // The most containers, with the longest names and long image references.
        let container = ContainerInfo {
            name: "n".repeat(MAX_CONTAINER_NAME_CHARS),
            image: "i".repeat(MAX_IMAGE_CHARS),
            state: "restarting".into(),
            uptime_secs: u64::MAX,
            cpu_percent: 1234.5,
            mem_bytes: u64::MAX,
            id: "0123456789ab".into(),
        };
        let list = Ok(DockerAnswer::Containers(vec![container; MAX_CONTAINERS]));
        assert!(size(&list) < MAX_RESPONSE_BYTES, "{}", size(&list));
        let back: Result<DockerAnswer, DockerError> = ciborium::from_reader(&*{
            let mut bytes = Vec::new();
            ciborium::into_writer(&list, &mut bytes).unwrap();
            bytes
        })
        .unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn the_largest_history_fits_a_response_frame() {
        let series = Series {
            metric: "m".repeat(MAX_METRIC_CHARS),
            points: vec![(u64::from(u32::MAX), f64::MAX); MAX_HISTORY_POINTS],
        };
        let answer: RpcResponse = Ok(RpcAnswer::History(History {
            name: "n".repeat(63),
            step_secs: 60,
            series: vec![series; MAX_HISTORY_METRICS],
        }));
        let mut bytes = Vec::new();
        ciborium::into_writer(&answer, &mut bytes).unwrap();
        assert!((bytes.len() as u64) < MAX_RESPONSE_BYTES, "{}", bytes.len());
    }

    #[test]
    fn unit_names_are_checked_and_typed() {
        assert_eq!(unit_name("nginx").unwrap(), "nginx.service");
        assert_eq!(
            unit_name("getty@tty1.service").unwrap(),
            "getty@tty1.service"
        );
        assert_eq!(unit_name("backup.timer").unwrap(), "backup.timer");
        for bad in ["", "-x", "a b", "x;reboot", "../etc", &"a".repeat(300)] {
            assert!(unit_name(bad).is_err(), "{bad:?}");
        }
    }
}
