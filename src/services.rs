//! Watched systemd units: each node keeps its own list (`STATE_DIR/services.json`, written
//! atomically) and answers `constella services` and the bot for it with its own `systemctl`,
//! whether asked through its control socket or by another member over RPC
//! (`RpcRequest::Services`). Nothing here runs on the event loop: `systemctl` is a child
//! process awaited on the runtime, and the list is read and written under one lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use constella_behaviours::rpc::{
    MAX_WATCHED_UNITS, ServicesAnswer, ServicesRequest, UnitStatus, unit_name,
};
use tokio::process::Command;
use tokio::sync::Mutex;

/// The list's file in the state directory.
pub const SERVICES_FILE: &str = "services.json";
/// Test knob and escape hatch: the `systemctl` to run (a path), instead of the one on PATH.
const SYSTEMCTL_ENV: &str = "CONSTELLA_SYSTEMCTL";
/// Longest a `systemctl` call may take (a restart waits for the unit to start).
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// This node's watched units.
#[derive(Debug, Clone)]
pub struct Services {
    file: PathBuf,
    node: String,
    /// Serialises changes of the list (two `add`s at once must not lose one).
    lock: Arc<Mutex<()>>,
}

impl Services {
    pub fn new(state_dir: &Path, node: &str) -> Self {
        Self {
            file: state_dir.join(SERVICES_FILE),
            node: node.to_owned(),
            lock: Arc::new(Mutex::new(())),
        }
    }

    fn systemctl() -> String {
        std::env::var(SYSTEMCTL_ENV).unwrap_or_else(|_| "systemctl".to_owned())
    }

    fn load(&self) -> Result<Vec<String>, String> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is malformed: {e}", self.file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.file.display())),
        }
    }

    fn save(&self, units: &[String]) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(units).map_err(|e| e.to_string())?;
        crate::state::write_atomic(&self.file, &bytes).map_err(|e| format!("{e:#}"))
    }

    /// Answers one request: the units after it, with their status.
    pub async fn answer(&self, request: ServicesRequest) -> Result<ServicesAnswer, String> {
        let guard = self.lock.lock().await;
        let mut units = self.load()?;
        let unit = request.unit().map(unit_name).transpose()?;
        match (&request, unit) {
            (ServicesRequest::List, _) => {}
            (ServicesRequest::Add { .. }, Some(unit)) => {
                if units.contains(&unit) {
                    return Err(format!("{unit} is watched already; nothing changed"));
                }
                if units.len() >= MAX_WATCHED_UNITS {
                    return Err(format!(
                        "{} watches {MAX_WATCHED_UNITS} units already (the most); nothing changed",
                        self.node
                    ));
                }
                units.push(unit);
                units.sort();
                self.save(&units)?;
                tracing::info!(units = units.len(), "a systemd unit is watched");
            }
            (ServicesRequest::Remove { .. }, Some(unit)) => {
                let before = units.len();
                units.retain(|u| *u != unit);
                if units.len() == before {
                    return Err(format!(
                        "{unit} is not watched on {}; nothing changed",
                        self.node
                    ));
                }
                self.save(&units)?;
            }
            (ServicesRequest::Restart { .. }, Some(unit)) => {
                if !units.contains(&unit) {
                    return Err(format!(
                        "{unit} is not watched on {} (constella services add {} {unit} first)",
                        self.node, self.node
                    ));
                }
                tracing::warn!(event = "service_restart", %unit, "restarting a systemd unit");
                run(&["restart", &unit]).await.map_err(|e| {
                    format!("systemctl restart {unit} failed on {}: {e}", self.node)
                })?;
            }
            (_, None) => return Err("a unit name is needed".to_owned()),
        }
        drop(guard);
        let (systemd, units) = statuses(&units).await;
        Ok(ServicesAnswer {
            node: self.node.clone(),
            systemd,
            units,
        })
    }
}

/// Runs `systemctl ARGS`; its stdout, or its stderr's first line as the error.
async fn run(args: &[&str]) -> Result<String, String> {
    let program = Services::systemctl();
    let output = tokio::time::timeout(
        SYSTEMCTL_TIMEOUT,
        Command::new(&program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{program} took more than {} s", SYSTEMCTL_TIMEOUT.as_secs()))?
    .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_owned())
}

/// The status of each unit with one `systemctl show`; `false` when systemctl cannot be asked
/// (no systemd here), every status then empty.
async fn statuses(units: &[String]) -> (bool, Vec<UnitStatus>) {
    let empty = |unit: &String| UnitStatus {
        unit: unit.clone(),
        load_state: String::new(),
        active_state: String::new(),
        sub_state: String::new(),
        description: String::new(),
    };
    if units.is_empty() {
        let systemd = run(&["--version"]).await.is_ok();
        return (systemd, Vec::new());
    }
    let mut args = vec![
        "show",
        "--property=Id,LoadState,ActiveState,SubState,Description",
    ];
    args.extend(units.iter().map(String::as_str));
    let Ok(text) = run(&args).await else {
        return (false, units.iter().map(empty).collect());
    };
    // One block per unit, in the order asked, separated by an empty line.
    let mut blocks = text.split("\n\n");
    let statuses = units
        .iter()
        .map(|unit| {
            let mut status = empty(unit);
            for line in blocks.next().unwrap_or("").lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let value = value.to_owned();
                match key {
                    "LoadState" => status.load_state = value,
                    "ActiveState" => status.active_state = value,
                    "SubState" => status.sub_state = value,
                    "Description" => status.description = value,
                    _ => {}
                }
            }
            status
        })
        .collect();
    (true, statuses)
}
