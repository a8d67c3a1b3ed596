//! Monitoring: every node samples its host every 10 s on a thread of its own ([`sample`]) into
//! fixed-size ring files under `STATE_DIR/history` ([`history`]), answers `GetHistory` from
//! them ([`answer_history`]), and may serve its figures to Prometheus ([`metrics`]).
//! docs/monitoring.md describes what is kept and for how long.

pub mod alerts;
pub mod chart;
pub mod history;
pub mod metrics;
pub mod sample;
pub mod text;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use constella_behaviours::rpc::{
    History, MAX_HISTORY_METRICS, MAX_HISTORY_POINTS, MAX_HISTORY_RANGE_SECS, MAX_METRIC_CHARS,
    Series,
};

pub use history::HistoryReader;
pub use sample::{Latest, Snapshot};

/// Seconds between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// Test knob: sample this often (milliseconds) instead of every 10 s. Samples still land in
/// 10-second slots, so faster samples overwrite each other within a slot.
const TEST_INTERVAL_ENV: &str = "CONSTELLA_TEST_SAMPLE_INTERVAL_MS";

/// The series listed first when a caller asks for "all": the ones the CLI and charts show.
pub const MAIN_METRICS: &[&str] = &[
    "cpu_percent",
    "ram_used_bytes",
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
    "disk_used_percent:/",
    "load1",
    "swap_used_bytes",
    "ram_total_bytes",
];

/// The directory of a node's history.
pub fn history_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("history")
}

/// The running sampler's shared state.
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    /// The latest round of figures; `None` until the first round, or with sampling off.
    pub latest: Latest,
    /// libp2p's own metrics, recorded by the event loop (only with `--metrics-addr`).
    pub libp2p: Option<Arc<std::sync::Mutex<prometheus_client::registry::Registry>>>,
}

impl Monitor {
    /// Starts sampling into `STATE_DIR/history`, or nothing if `enabled` is false.
    /// Traffic totals start again on `traffic_reset_day` of each month.
    pub fn start(state_dir: &Path, enabled: bool, traffic_reset_day: u8) -> anyhow::Result<Self> {
        let monitor = Self::default();
        if !enabled {
            tracing::info!("metric sampling is off (--no-sampling)");
            return Ok(monitor);
        }
        let interval = sample_interval();
        let writer = history::HistoryWriter::open(history_dir(state_dir))?;
        let traffic = traffic::Counter::open(&history_dir(state_dir), traffic_reset_day);
        sample::spawn(writer, traffic, interval, Arc::clone(&monitor.latest))
            .map_err(anyhow::Error::msg)?;
        Ok(monitor)
    }

    /// Registers libp2p's own metrics for `/metrics`; the returned recorder goes to the event
    /// loop, which records every swarm event (and the gossipsub, identify, kad and ping ones).
    pub fn with_libp2p_metrics(&mut self) -> Arc<libp2p::metrics::Metrics> {
        let mut registry = prometheus_client::registry::Registry::default();
        let recorder = Arc::new(libp2p::metrics::Metrics::new(&mut registry));
        self.libp2p = Some(Arc::new(std::sync::Mutex::new(registry)));
        recorder
    }

    /// A copy of the latest round.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.latest.read().ok().and_then(|s| s.clone())
    }
}

/// How often the sampler runs: [`SAMPLE_INTERVAL`], or the test knob's interval.
pub fn sample_interval() -> Duration {
    std::env::var(TEST_INTERVAL_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(SAMPLE_INTERVAL, Duration::from_millis)
}

/// A `--history` range such as `1h`, `24h`, `7d` (at most 30 days), in seconds.
pub fn parse_range(text: &str) -> Result<u64, String> {
    let secs = text
        .parse::<crate::validate::Age>()
        .map_err(|_| {
            format!(
                "invalid range {text:?}: use a number and a unit, e.g. 1h, 24h, 7d (at most 30d)"
            )
        })?
        .duration()
        .as_secs();
    if secs > MAX_HISTORY_RANGE_SECS {
        return Err(format!(
            "invalid range {text:?}: history is kept for 30 days at most"
        ));
    }
    Ok(secs)
}

/// Checks a `GetHistory` request; the refusal is one line for the operator.
pub fn check_request(metrics: &[String], range_secs: u64) -> Result<(), String> {
    if range_secs == 0 || range_secs > MAX_HISTORY_RANGE_SECS {
        return Err(format!(
            "the range must be between 1 s and 30 days, not {range_secs} s"
        ));
    }
    if metrics.len() > MAX_HISTORY_METRICS {
        return Err(format!(
            "at most {MAX_HISTORY_METRICS} metrics per request, not {}",
            metrics.len()
        ));
    }
    if let Some(bad) = metrics.iter().find(|m| {
        m.is_empty() || m.chars().count() > MAX_METRIC_CHARS || m.chars().any(char::is_control)
    }) {
        return Err(format!(
            "metric names are 1 to {MAX_METRIC_CHARS} printable characters: {bad:?}"
        ));
    }
    Ok(())
}

/// The answer to `GetHistory` from this node's store (blocking file reads: call it off the
/// event loop). `metrics` empty: every series the node keeps, the main ones first.
pub fn answer_history(
    reader: &HistoryReader,
    name: &str,
    metrics: &[String],
    range_secs: u64,
    now: u64,
) -> Result<History, String> {
    check_request(metrics, range_secs)?;
    let tier = HistoryReader::tier_for(range_secs);
    let wanted: Vec<String> = if metrics.is_empty() {
        let mut all = reader.metrics(tier);
        all.sort_by_key(|m| {
            (
                MAIN_METRICS
                    .iter()
                    .position(|main| main == m)
                    .unwrap_or(MAIN_METRICS.len()),
                m.clone(),
            )
        });
        all.truncate(MAX_HISTORY_METRICS);
        all
    } else {
        metrics.to_vec()
    };
    let from = now.saturating_sub(range_secs);
    let series = wanted
        .into_iter()
        .map(|metric| {
            let points = reader
                .read(&metric, from, now, MAX_HISTORY_POINTS)
                .map_err(|e| e.to_string())?;
            Ok(Series { metric, points })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(History {
        name: name.to_owned(),
        step_secs: tier.step as u32,
        series,
    })
}
