//! The sampler: a thread of its own that reads this host's figures every interval and records
//! them in the history store. Nothing here runs on the event loop or the async runtime.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sysinfo::{Disks, Networks, ProcessRefreshKind, ProcessesToUpdate, System};

use super::history::HistoryWriter;

/// Most disks and network interfaces with series of their own: the disk a node spends on
/// history stays bounded whatever the host mounts or creates.
pub const MAX_DISKS: usize = 8;
/// See [`MAX_DISKS`].
pub const MAX_INTERFACES: usize = 8;

/// Interfaces that carry no traffic of the host's own (loopback, container plumbing): left out
/// of the totals and of the per-interface series.
const VIRTUAL_PREFIXES: &[&str] = &["lo", "veth", "docker", "br-", "virbr", "cni", "flannel"];

/// One round of figures: unix seconds and `(metric, value)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub time: u64,
    pub values: BTreeMap<String, f64>,
    /// Bytes received and sent per real interface since the round before.
    pub traffic: Vec<(String, u64, u64)>,
    /// Bytes received and sent on every real interface this month (since the reset day),
    /// counted in with this round; `None` before the sampler has counted.
    pub month_traffic_bytes: Option<u64>,
}

/// Test knob: count the loopback interface as a real one (test nodes talk over it only).
const TEST_COUNT_LOOPBACK_ENV: &str = "CONSTELLA_TEST_COUNT_LOOPBACK";

/// The latest snapshot, shared with `/metrics` and the alert rules.
pub type Latest = Arc<RwLock<Option<Snapshot>>>;

fn is_virtual(name: &str) -> bool {
    if name == "lo" && std::env::var_os(TEST_COUNT_LOOPBACK_ENV).is_some() {
        return false;
    }
    VIRTUAL_PREFIXES
        .iter()
        .any(|prefix| name == *prefix || (prefix.len() > 2 && name.starts_with(prefix)))
}

/// The sysinfo handles kept between rounds (CPU use and traffic are deltas since the last).
struct Probe {
    system: System,
    networks: Networks,
    disks: Disks,
    last: Instant,
    pid: Option<sysinfo::Pid>,
}

impl Probe {
    fn new() -> Result<Self, String> {
        let mut system = System::new().map_err(|e| format!("cannot read system figures: {e}"))?;
        system.refresh_cpu_usage();
        Ok(Self {
            system,
            networks: Networks::new_with_refreshed_list()
                .map_err(|e| format!("cannot read network interfaces: {e}"))?,
            disks: Disks::new_with_refreshed_list()
                .map_err(|e| format!("cannot read mounted filesystems: {e}"))?,
            last: Instant::now(),
            pid: sysinfo::get_current_pid().ok(),
        })
    }

    fn sample(&mut self, time: u64) -> Snapshot {
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.networks.refresh(true);
        self.disks.refresh(true);
        let mut values = BTreeMap::new();
        let mut put = |metric: String, value: f64| {
            values.insert(metric, value);
        };
        put(
            "cpu_percent".into(),
            f64::from(self.system.global_cpu_usage().clamp(0.0, 100.0)),
        );
        if let Ok(load) = System::load_average() {
            put("load1".into(), load.one);
            put("load5".into(), load.five);
            put("load15".into(), load.fifteen);
        }
        put("ram_used_bytes".into(), self.system.used_memory() as f64);
        put("ram_total_bytes".into(), self.system.total_memory() as f64);
        put("swap_used_bytes".into(), self.system.used_swap() as f64);
        put("swap_total_bytes".into(), self.system.total_swap() as f64);
        if let Some(pid) = self.pid {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_memory(),
            );
            if let Some(process) = self.system.process(pid) {
                put("daemon_rss_bytes".into(), process.memory() as f64);
            }
        }
        let mut interfaces: Vec<(&OsString, u64, u64)> = self
            .networks
            .iter()
            .filter(|(name, _)| !is_virtual(&name.to_string_lossy()))
            .map(|(name, data)| (name, data.received(), data.transmitted()))
            .collect();
        interfaces.sort();
        let (rx, tx) = interfaces
            .iter()
            .fold((0u64, 0u64), |(r, t), i| (r + i.1, t + i.2));
        put("net_rx_bytes_per_sec".into(), rx as f64 / elapsed);
        put("net_tx_bytes_per_sec".into(), tx as f64 / elapsed);
        let mut traffic = Vec::new();
        for (name, rx, tx) in interfaces.into_iter().take(MAX_INTERFACES) {
            let name = name.to_string_lossy();
            put(format!("net_rx_bytes_per_sec:{name}"), rx as f64 / elapsed);
            put(format!("net_tx_bytes_per_sec:{name}"), tx as f64 / elapsed);
            traffic.push((name.into_owned(), rx, tx));
        }
        for disk in crate::stats::disk_usage(&self.disks)
            .into_iter()
            .take(MAX_DISKS)
        {
            let percent = disk.used_bytes as f64 * 100.0 / disk.total_bytes.max(1) as f64;
            put(format!("disk_used_percent:{}", disk.mount), percent);
            put(
                format!("disk_used_bytes:{}", disk.mount),
                disk.used_bytes as f64,
            );
        }
        Snapshot {
            time,
            values,
            traffic,
            month_traffic_bytes: None,
        }
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Starts the sampler thread: a round every `interval`, aligned to multiples of it on the wall
/// clock so each 10-second slot gets one sample.
pub fn spawn(
    mut writer: HistoryWriter,
    mut traffic: super::traffic::Counter,
    interval: Duration,
    latest: Latest,
) -> Result<(), String> {
    let mut probe = Probe::new()?;
    let interval_ms = interval.as_millis().max(1);
    std::thread::Builder::new()
        .name("constella-sampler".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                let now = unix_now().as_millis();
                let next = (now / interval_ms + 1) * interval_ms;
                std::thread::sleep(Duration::from_millis((next - now) as u64));
                let mut snapshot = probe.sample(unix_now().as_secs());
                let mut result = Ok(());
                for (metric, value) in &snapshot.values {
                    result = result.and(writer.record(metric, snapshot.time, *value));
                }
                result = result.and(
                    traffic
                        .add(snapshot.time, &snapshot.traffic)
                        .map_err(super::history::HistoryError::Traffic),
                );
                snapshot.month_traffic_bytes = Some(traffic.month_bytes());
                // One warning per failing episode (a full disk would otherwise log every 10 s).
                match result {
                    Err(error) if !failing => {
                        tracing::warn!(%error, "cannot record the metric history");
                        failing = true;
                    }
                    Ok(()) if failing => {
                        tracing::info!("the metric history is recorded again");
                        failing = false;
                    }
                    _ => {}
                }
                if let Ok(mut slot) = latest.write() {
                    *slot = Some(snapshot);
                }
            }
        })
        .map_err(|e| format!("cannot start the sampler thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_has_the_main_figures() {
        let mut probe = Probe::new().unwrap();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let snapshot = probe.sample(1);
        for metric in [
            "cpu_percent",
            "ram_used_bytes",
            "net_rx_bytes_per_sec",
            "net_tx_bytes_per_sec",
            "disk_used_percent:/",
        ] {
            assert!(
                snapshot.values.contains_key(metric),
                "{metric}: {snapshot:?}"
            );
        }
        assert!(is_virtual("lo") && is_virtual("veth12") && !is_virtual("eth0"));
        assert!(!is_virtual("lom0"));
    }
}
