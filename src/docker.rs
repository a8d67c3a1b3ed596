//! Containers on this node: list them with their figures, start, stop or restart one, and read
//! the tail of its output, through the Docker Engine API on a Unix socket (the `bollard`
//! crate). Never by running the `docker` command: the node needs no Docker client installed,
//! and no shell sees a container name.
//!
//! [`Engine`] talks to the local engine; [`Engine::answer`] is the one entry point, a plain
//! async function that the control socket calls for the local node and that the RPC server
//! side calls for a member's request. [`Containers`] picks the node a request is for: this one,
//! or another member over RPC (`RpcRequest::Docker`, carrying who asked: the member checks the
//! role itself before it acts).
//!
//! [`watch`] follows the engine's events and sends an alert to the leader's bot when a
//! container exits with a non-zero code that nobody asked for, or dies again and again
//! ([`ExitWatch`] decides).
//!
//! Nothing here creates containers, pulls images or runs commands inside containers: access to
//! the Docker socket is root-equivalent, so what the node offers through it is kept to the
//! operations the owner needs to keep services running.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCpuStats, ContainerInspectResponse, ContainerStatsResponse};
use bollard::query_parameters::{
    EventsOptions, ListContainersOptions, LogsOptions, RestartContainerOptions,
    StartContainerOptions, StatsOptions, StopContainerOptions,
};
use futures::{StreamExt, TryStreamExt};

pub use constella_behaviours::rpc::{
    AlertKind, ContainerAction, ContainerAlert, ContainerInfo, DockerAnswer, DockerError,
    DockerRequest, MAX_CONTAINER_NAME_CHARS, MAX_CONTAINERS, MAX_IMAGE_CHARS, MAX_LOG_BYTES,
    MAX_LOG_LINES, Requester,
};

use crate::daemon::Client;

/// Where the Docker engine listens unless [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Environment variable with another socket path, or `off` to disable container management.
pub const SOCKET_ENV: &str = "CONSTELLA_DOCKER_SOCKET";
/// Seconds one Engine API request may take (a stop waits up to [`STOP_TIMEOUT_SECS`]).
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Seconds a container gets between SIGTERM and SIGKILL on stop and restart, as `docker stop`.
const STOP_TIMEOUT_SECS: i32 = 10;
/// Containers read at once while listing (each stats read waits 1-2 s for the engine).
const PARALLEL_READS: usize = 16;
/// Length of the short container id, as `docker ps` prints it.
const SHORT_ID_LEN: usize = 12;

/// The Docker engine of this node.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The engine's Unix socket; `None` when disabled.
    socket: Option<PathBuf>,
    /// This node's name, for error messages.
    node: String,
}

impl Engine {
    /// The engine at `socket` (`None`: container management is off) of node `node`.
    pub fn new(socket: Option<PathBuf>, node: &str) -> Self {
        Self {
            socket,
            node: node.to_owned(),
        }
    }

    /// The engine at [`DEFAULT_SOCKET`], or where [`SOCKET_ENV`] points (`off` disables it).
    pub fn from_env(node: &str) -> Self {
        let socket = match std::env::var_os(SOCKET_ENV) {
            Some(value) if value == "off" => None,
            Some(value) if !value.is_empty() => Some(PathBuf::from(value)),
            _ => Some(PathBuf::from(DEFAULT_SOCKET)),
        };
        Self::new(socket, node)
    }

    fn no_engine(&self, reason: String) -> DockerError {
        DockerError::NoEngine {
            node: self.node.clone(),
            reason,
        }
    }

    /// A client for the engine, with the API version lowered to what the engine speaks.
    async fn connect(&self) -> Result<Docker, DockerError> {
        self.connect_with(REQUEST_TIMEOUT_SECS).await
    }

    /// Like [`Engine::connect`], with requests that may take up to `timeout_secs`.
    async fn connect_with(&self, timeout_secs: u64) -> Result<Docker, DockerError> {
        let Some(socket) = &self.socket else {
            return Err(self.no_engine(format!("disabled with {SOCKET_ENV}=off")));
        };
        if !Path::new(socket).exists() {
            return Err(self.no_engine(format!("no socket at {}", socket.display())));
        }
        let path = socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&path, timeout_secs, bollard::API_DEFAULT_VERSION)
            .map_err(|error| self.no_engine(format!("{}: {error}", socket.display())))?;
        docker
            .negotiate_version()
            .await
            .map_err(|error| self.no_engine(format!("{}: {error}", socket.display())))
    }

    /// Answers one container request against the local engine. A malformed request is
    /// refused before the engine is asked anything.
    pub async fn answer(&self, request: DockerRequest) -> Result<DockerAnswer, DockerError> {
        match request {
            DockerRequest::Probe => {
                let docker = self.connect().await?;
                let version = docker
                    .version()
                    .await
                    .map_err(|e| self.engine_error(e, ""))?;
                Ok(DockerAnswer::Engine {
                    version: version.version.unwrap_or_default(),
                })
            }
            DockerRequest::List => {
                let docker = self.connect().await?;
                self.list(&docker).await.map(DockerAnswer::Containers)
            }
            DockerRequest::Inspect { name } => {
                let name = checked_name(&name)?;
                let docker = self.connect().await?;
                self.describe(&docker, name)
                    .await
                    .map(DockerAnswer::Container)
            }
            DockerRequest::Act { name, action } => {
                let name = checked_name(&name)?;
                let docker = self.connect().await?;
                self.act(&docker, name, action).await?;
                let container = self.describe(&docker, name).await?;
                Ok(DockerAnswer::Done { action, container })
            }
            DockerRequest::Logs { name, tail } => {
                let name = checked_name(&name)?;
                if tail == 0 || tail > MAX_LOG_LINES {
                    return Err(DockerError::Invalid(format!(
                        "the tail must be 1 to {MAX_LOG_LINES} lines (got {tail})"
                    )));
                }
                let docker = self.connect().await?;
                let (lines, truncated) = self.logs(&docker, name, tail).await?;
                Ok(DockerAnswer::Logs {
                    name: name.to_owned(),
                    lines,
                    truncated,
                })
            }
        }
    }

    /// A one-line error for a failed Engine API call about container `name`.
    fn engine_error(&self, error: BollardError, name: &str) -> DockerError {
        match error {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } if !name.is_empty() => DockerError::NoSuchContainer {
                node: self.node.clone(),
                name: name.to_owned(),
            },
            BollardError::DockerResponseServerError { message, .. } => DockerError::Engine {
                node: self.node.clone(),
                message: message.trim().to_owned(),
            },
            other => DockerError::Engine {
                node: self.node.clone(),
                message: other.to_string(),
            },
        }
    }

    /// Every container with its figures, sorted by name.
    async fn list(&self, docker: &Docker) -> Result<Vec<ContainerInfo>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let summaries = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine_error(e, ""))?;
        let ids: Vec<String> = summaries
            .into_iter()
            .filter_map(|s| s.id)
            .take(MAX_CONTAINERS)
            .collect();
        let mut containers: Vec<ContainerInfo> = futures::stream::iter(ids)
            .map(|id| async move { self.describe(docker, &id).await })
            .buffer_unordered(PARALLEL_READS)
            .filter_map(|result| async move {
                match result {
                    Ok(info) => Some(Ok(info)),
                    // Removed between the list and the read: it is simply gone.
                    Err(DockerError::NoSuchContainer { .. }) => None,
                    Err(error) => Some(Err(error)),
                }
            })
            .try_collect()
            .await?;
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// One container, by name or id: its state and, if it runs, uptime, CPU and memory.
    async fn describe(&self, docker: &Docker, name: &str) -> Result<ContainerInfo, DockerError> {
        let inspect = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| self.engine_error(e, name))?;
        let mut info = info_from_inspect(&inspect, crate::state::unix_now());
        if info.state == "running" {
            // stream=false: the engine answers with two samples of its collector, one cycle
            // (1 s) apart, so the CPU figure is over that second. The engine's collector sets
            // the pace: even a one-shot read waits for its next cycle once it runs.
            let options = StatsOptions {
                stream: false,
                one_shot: false,
            };
            let stats = docker
                .stats(name, Some(options))
                .next()
                .await
                .transpose()
                .map_err(|e| self.engine_error(e, name))?;
            if let Some(stats) = stats {
                if let (Some(now), Some(before)) = (&stats.cpu_stats, &stats.precpu_stats) {
                    info.cpu_percent = cpu_percent(now, before);
                }
                info.mem_bytes = mem_bytes(&stats);
            }
        }
        Ok(info)
    }

    async fn act(
        &self,
        docker: &Docker,
        name: &str,
        action: ContainerAction,
    ) -> Result<(), DockerError> {
        let result = match action {
            ContainerAction::Start => {
                docker
                    .start_container(name, None::<StartContainerOptions>)
                    .await
            }
            ContainerAction::Stop => {
                let options = StopContainerOptions {
                    t: Some(STOP_TIMEOUT_SECS),
                    signal: None,
                };
                docker.stop_container(name, Some(options)).await
            }
            ContainerAction::Restart => {
                let options = RestartContainerOptions {
                    t: Some(STOP_TIMEOUT_SECS),
                    signal: None,
                };
                docker.restart_container(name, Some(options)).await
            }
        };
        result.map_err(|e| self.engine_error(e, name))?;
        tracing::info!(
            container = name,
            action = action.as_str(),
            "container action done"
        );
        Ok(())
    }

    /// The last `tail` lines of stdout and stderr, within [`MAX_LOG_BYTES`].
    async fn logs(
        &self,
        docker: &Docker,
        name: &str,
        tail: u32,
    ) -> Result<(Vec<String>, bool), DockerError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let chunks: Vec<_> = docker
            .logs(name, Some(options))
            .try_collect()
            .await
            .map_err(|e| self.engine_error(e, name))?;
        let mut text = Vec::new();
        for chunk in &chunks {
            text.extend_from_slice(chunk.as_ref());
        }
        Ok(last_lines(&String::from_utf8_lossy(&text), MAX_LOG_BYTES))
    }
}

/// A container name or id as Docker accepts it: letters, digits, `_`, `.` and `-`, starting
/// with a letter or digit (Docker's leading `/` is allowed). Anything else is refused before it
/// can reach a URL path.
fn checked_name(name: &str) -> Result<&str, DockerError> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_CONTAINER_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(DockerError::Invalid(format!(
            "{name:?} is not a container name: use letters, digits, '_', '.' or '-' (at most {MAX_CONTAINER_NAME_CHARS})"
        )))
    }
}

/// Name, image, state and uptime of an inspected container (CPU and memory are filled in from
/// a stats read).
fn info_from_inspect(inspect: &ContainerInspectResponse, now: u64) -> ContainerInfo {
    let state = inspect
        .state
        .as_ref()
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let uptime_secs = match (&inspect.state, state.as_str()) {
        (Some(s), "running") => s
            .started_at
            .as_deref()
            .and_then(unix_seconds)
            .map_or(0, |started| now.saturating_sub(started)),
        _ => 0,
    };
    let id = inspect.id.clone().unwrap_or_default();
    ContainerInfo {
        name: inspect
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        image: inspect
            .config
            .as_ref()
            .and_then(|c| c.image.as_deref())
            .or(inspect.image.as_deref())
            .unwrap_or_default()
            .chars()
            .take(MAX_IMAGE_CHARS)
            .collect(),
        state,
        uptime_secs,
        cpu_percent: 0.0,
        mem_bytes: 0,
        id: id.chars().take(SHORT_ID_LEN).collect(),
    }
}

/// CPU use in percent of one core between two samples, the way `docker stats` computes it:
/// the container's CPU time over the host's, times the number of CPUs.
fn cpu_percent(now: &ContainerCpuStats, before: &ContainerCpuStats) -> f64 {
    let total = |s: &ContainerCpuStats| s.cpu_usage.as_ref().and_then(|u| u.total_usage);
    let (Some(used_now), Some(used_before)) = (total(now), total(before)) else {
        return 0.0;
    };
    let (Some(system_now), Some(system_before)) = (now.system_cpu_usage, before.system_cpu_usage)
    else {
        return 0.0;
    };
    let cpus = now.online_cpus.filter(|n| *n > 0).map_or_else(
        || {
            now.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map_or(1, Vec::len)
        },
        |n| n as usize,
    );
    let used = used_now.saturating_sub(used_before);
    let system = system_now.saturating_sub(system_before);
    if used == 0 || system == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // a percentage for display
    let percent = used as f64 / system as f64 * cpus as f64 * 100.0;
    (percent * 10.0).round() / 10.0
}

/// Memory in use without the page cache, as `docker stats` shows it: cgroup v1 subtracts
/// `total_inactive_file`, v2 `inactive_file`.
fn mem_bytes(stats: &ContainerStatsResponse) -> u64 {
    let Some(memory) = &stats.memory_stats else {
        return 0;
    };
    let usage = memory.usage.unwrap_or(0);
    let empty = HashMap::new();
    let detail = memory.stats.as_ref().unwrap_or(&empty);
    let cache = detail
        .get("total_inactive_file")
        .or_else(|| detail.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    if cache < usage { usage - cache } else { usage }
}

/// The lines of `text`, oldest first, keeping the newest within `max_bytes`; true if older ones
/// were dropped.
fn last_lines(text: &str, max_bytes: usize) -> (Vec<String>, bool) {
    let mut kept = Vec::new();
    let mut bytes = 0;
    let mut truncated = false;
    for line in text.lines().rev() {
        let line = line.trim_end_matches('\r');
        if bytes + line.len() + 1 > max_bytes {
            truncated = true;
            break;
        }
        bytes += line.len() + 1;
        kept.push(line.to_owned());
    }
    kept.reverse();
    (kept, truncated)
}

/// Unix seconds of an RFC 3339 UTC time as Docker writes it (`2026-11-29T19:38:28.436895961Z`).
/// Docker's "never started" is `0001-01-01T00:00:00Z`, before the epoch: `None`.
fn unix_seconds(text: &str) -> Option<u64> {
    let (date, time) = text.split_once('T')?;
    let time = time.strip_suffix('Z')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let time = time.split('.').next()?;
    let mut time_parts = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..=60).contains(&second);
    if !valid {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// Routes a container request to the node it names: this node's [`Engine`], or another member
/// over RPC, which checks the requester's role with its own copy of the roles before it acts.
#[derive(Debug, Clone)]
pub struct Containers {
    engine: Engine,
    client: Client,
    local_name: String,
    local_id: String,
}

impl Containers {
    pub fn new(engine: Engine, client: Client, local_name: &str, local_id: &str) -> Self {
        Self {
            engine,
            client,
            local_name: local_name.to_owned(),
            local_id: local_id.to_owned(),
        }
    }

    /// Answers `request` for `target`, a server name or node id, made for `by` (whose role the
    /// caller checked here; another member checks it again).
    pub async fn call(
        &self,
        target: &str,
        request: DockerRequest,
        by: Requester,
    ) -> Result<DockerAnswer, DockerError> {
        if target == self.local_name || target == self.local_id {
            return self.engine.answer(request).await;
        }
        self.client.docker(target, request, by).await
    }
}

/// Time within which dies of one container count towards a restart loop.
pub const LOOP_WINDOW: Duration = Duration::from_secs(120);
/// Unasked-for dies within [`LOOP_WINDOW`] that make a restart loop.
pub const LOOP_DIES: usize = 3;
/// After a restart-loop alert, the container's further dies are not told for this long.
pub const LOOP_QUIET: Duration = Duration::from_secs(30 * 60);
/// A die this soon after a kill of the same container was asked for (`docker stop`, restart,
/// `rm -f`, constella's own stop/restart): not an alert.
const KILL_EXPLAINS: Duration = Duration::from_secs(60);
/// Containers whose recent events are remembered; beyond this the oldest are forgotten.
const MAX_WATCHED: usize = 1024;

/// Decides from a container's events which deserve an alert: a die with a non-zero exit code
/// that no kill (a stop, restart or removal somebody asked for) explains is "exited
/// unexpectedly"; [`LOOP_DIES`] unexplained dies (any exit code) within [`LOOP_WINDOW`] are one
/// "restart loop" alert, after which that container is quiet for [`LOOP_QUIET`].
#[derive(Debug, Default)]
pub struct ExitWatch {
    killed: HashMap<String, Instant>,
    dies: HashMap<String, VecDeque<Instant>>,
    looping: HashMap<String, Instant>,
}

impl ExitWatch {
    /// Somebody stopped, restarted or removed container `id` (Docker's `kill` event).
    pub fn on_kill(&mut self, id: &str, now: Instant) {
        self.forget_old(now);
        self.killed.insert(id.to_owned(), now);
    }

    /// Container `id` (named `name`) stopped with `exit_code`; the alert to send, if any.
    pub fn on_die(
        &mut self,
        id: &str,
        name: &str,
        exit_code: i64,
        now: Instant,
    ) -> Option<AlertKind> {
        self.forget_old(now);
        if let Some(at) = self.killed.remove(id)
            && now.duration_since(at) <= KILL_EXPLAINS
        {
            return None;
        }
        let dies = self.dies.entry(id.to_owned()).or_default();
        dies.push_back(now);
        while dies
            .front()
            .is_some_and(|t| now.duration_since(*t) > LOOP_WINDOW)
        {
            dies.pop_front();
        }
        let recent = dies.len();
        if let Some(at) = self.looping.get(id)
            && now.duration_since(*at) <= LOOP_QUIET
        {
            tracing::debug!(container = name, "restart loop already told");
            return None;
        }
        if recent >= LOOP_DIES {
            self.looping.insert(id.to_owned(), now);
            return Some(AlertKind::RestartLoop {
                restarts: u32::try_from(recent).unwrap_or(u32::MAX),
                window_secs: u32::try_from(LOOP_WINDOW.as_secs()).unwrap_or(u32::MAX),
            });
        }
        (exit_code != 0).then_some(AlertKind::Exited { exit_code })
    }

    /// Drops what no longer matters, and everything if too many containers are remembered.
    fn forget_old(&mut self, now: Instant) {
        self.killed
            .retain(|_, at| now.duration_since(*at) <= KILL_EXPLAINS);
        self.dies.retain(|_, dies| {
            dies.back()
                .is_some_and(|t| now.duration_since(*t) <= LOOP_WINDOW)
        });
        self.looping
            .retain(|_, at| now.duration_since(*at) <= LOOP_QUIET);
        if self.killed.len() + self.dies.len() + self.looping.len() > MAX_WATCHED {
            *self = ExitWatch::default();
        }
    }
}

/// Longest pause between attempts to follow the engine's events.
const EVENTS_RETRY_MAX: Duration = Duration::from_secs(60);
/// An events request may stay open this long before it is made again.
const EVENTS_REQUEST_SECS: u64 = 24 * 3600;

/// Follows the engine's container events until the node stops and hands alerts to the leader's
/// bot through `client`. Without an engine it looks again every minute, quietly.
pub async fn watch(engine: Engine, client: Client) {
    if engine.socket.is_none() {
        return;
    }
    let mut exits = ExitWatch::default();
    let mut pause = Duration::from_secs(1);
    let mut told_missing = false;
    loop {
        match engine.connect_with(EVENTS_REQUEST_SECS).await {
            Err(error) => {
                if !told_missing {
                    tracing::debug!(%error, "no Docker engine to watch for container exits");
                    told_missing = true;
                }
            }
            Ok(docker) => {
                told_missing = false;
                tracing::debug!("watching Docker events for container exits");
                let filters = HashMap::from([
                    ("type".to_owned(), vec!["container".to_owned()]),
                    (
                        "event".to_owned(),
                        vec!["kill".to_owned(), "die".to_owned()],
                    ),
                ]);
                let options = EventsOptions {
                    filters: Some(filters),
                    ..Default::default()
                };
                let mut events = docker.events(Some(options));
                let started = Instant::now();
                while let Some(event) = events.next().await {
                    let event = match event {
                        Ok(event) => event,
                        Err(error) => {
                            tracing::debug!(%error, "the Docker event stream failed");
                            break;
                        }
                    };
                    if let Some(alert) = engine.alert_for(&mut exits, &event, Instant::now()) {
                        tracing::warn!(container = %alert.container, kind = ?alert.kind, "container alert");
                        if client.container_alert(alert).await.is_err() {
                            return;
                        }
                    }
                }
                if started.elapsed() > EVENTS_RETRY_MAX {
                    pause = Duration::from_secs(1);
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(EVENTS_RETRY_MAX);
    }
}

impl Engine {
    /// The alert an engine event calls for, if any.
    fn alert_for(
        &self,
        exits: &mut ExitWatch,
        event: &bollard::models::EventMessage,
        now: Instant,
    ) -> Option<ContainerAlert> {
        let actor = event.actor.as_ref()?;
        let id = actor.id.as_deref()?;
        let attributes = actor.attributes.as_ref();
        let attribute = |key: &str| attributes.and_then(|a| a.get(key)).map(String::as_str);
        match event.action.as_deref()? {
            "kill" => {
                exits.on_kill(id, now);
                None
            }
            "die" => {
                let name = attribute("name").unwrap_or(id);
                let exit_code = attribute("exitCode")
                    .and_then(|code| code.parse::<i64>().ok())
                    .unwrap_or(0);
                let kind = exits.on_die(id, name, exit_code, now)?;
                Some(ContainerAlert {
                    node: self.node.clone(),
                    container: name.chars().take(MAX_CONTAINER_NAME_CHARS).collect(),
                    kind,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unasked_exits_and_restart_loops_alert_once() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut watch = ExitWatch::default();
        // A stop somebody asked for: kill, then die with 143.
        watch.on_kill("a", at(0));
        assert_eq!(watch.on_die("a", "web", 143, at(1)), None);
        // A clean exit of its own: nothing.
        assert_eq!(watch.on_die("b", "job", 0, at(2)), None);
        // A crash.
        assert_eq!(
            watch.on_die("c", "app", 3, at(3)),
            Some(AlertKind::Exited { exit_code: 3 })
        );
        // Dies again and again (Docker's restart policy): the third is a loop, told once.
        assert_eq!(
            watch.on_die("c", "app", 3, at(4)),
            Some(AlertKind::Exited { exit_code: 3 })
        );
        assert_eq!(
            watch.on_die("c", "app", 3, at(5)),
            Some(AlertKind::RestartLoop {
                restarts: 3,
                window_secs: 120
            })
        );
        assert_eq!(watch.on_die("c", "app", 3, at(6)), None);
        assert_eq!(watch.on_die("c", "app", 0, at(600)), None);
        // Quiet long enough: told again.
        let later = 7 + LOOP_QUIET.as_secs();
        assert_eq!(
            watch.on_die("c", "app", 1, at(later)),
            Some(AlertKind::Exited { exit_code: 1 })
        );
    }

    #[test]
    fn names_that_could_leave_the_url_path_are_refused() {
        for good in ["web", "/web", "my_app.1-2", "0123456789ab"] {
            assert!(checked_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "../containers",
            "a/b",
            "a b",
            "-rm",
            ".hidden",
            "a?b",
            "a%2e",
            "é",
            &"a".repeat(MAX_CONTAINER_NAME_CHARS + 1),
        ] {
            assert!(checked_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_times_parse() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-11-29T19:38:28.436895961Z"),
            Some(1_795_981_108)
        );
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(unix_seconds("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-11-29T19:38:28+01:00",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_newest_lines_are_kept_within_the_bound() {
        let (lines, truncated) = last_lines("one\r\ntwo\nthree\n", 100);
        assert_eq!(lines, ["one", "two", "three"]);
        assert!(!truncated);
        let (lines, truncated) = last_lines("one\ntwo\nthree\n", 12);
        assert_eq!(lines, ["two", "three"]);
        assert!(truncated);
        assert_eq!(last_lines("", 10), (Vec::new(), false));
    }

    #[test]
    fn cpu_and_memory_as_docker_stats_shows_them() {
        let sample = |used: u64, system: u64| -> ContainerCpuStats {
            serde_json::from_value(serde_json::json!({
                "cpu_usage": {"total_usage": used}, "system_cpu_usage": system, "online_cpus": 2
            }))
            .unwrap()
        };
        // 1 s of CPU out of 10 s of host time on 2 CPUs: 20 % of one core.
        let now = sample(3_000_000_000, 20_000_000_000);
        let before = sample(2_000_000_000, 10_000_000_000);
        assert_eq!(cpu_percent(&now, &before), 20.0);
        assert_eq!(cpu_percent(&now, &now), 0.0);
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "memory_stats": {"usage": 10_000, "stats": {"total_inactive_file": 4_000}}
        }))
        .unwrap();
        assert_eq!(mem_bytes(&stats), 6_000);
        let v2: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "memory_stats": {"usage": 10_000, "stats": {"inactive_file": 20_000}}
        }))
        .unwrap();
        assert_eq!(mem_bytes(&v2), 10_000);
    }

    #[tokio::test]
    async fn a_missing_socket_or_off_says_there_is_no_engine() {
        let engine = Engine::new(Some("/nonexistent/docker.sock".into()), "delta-01");
        let error = engine.answer(DockerRequest::List).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "delta-01 has no Docker engine (no socket at /nonexistent/docker.sock)"
        );
        // A bad request is refused before the engine is looked for.
        let bad = DockerRequest::Logs {
            name: "web".into(),
            tail: MAX_LOG_LINES + 1,
        };
        assert!(matches!(
            engine.answer(bad).await,
            Err(DockerError::Invalid(_))
        ));
        let off = Engine::new(None, "delta-01");
        assert!(matches!(
            off.answer(DockerRequest::Probe).await,
            Err(DockerError::NoEngine { .. })
        ));
    }
}
