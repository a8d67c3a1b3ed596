//! This host's resource figures for `GetStats`, read with `sysinfo` when asked and never in the
//! background: a node nobody asks spends nothing on them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

pub use constella_behaviours::rpc::{
    DiskUsage, NodeStats, ProcessUsage, RebootAccepted, TOP_PROCESSES,
};
use sysinfo::{Disks, MINIMUM_CPU_UPDATE_INTERVAL, ProcessRefreshKind, ProcessesToUpdate, System};

/// Window over which CPU use is averaged: sysinfo's minimum, so one answer costs ~200 ms.
pub const CPU_WINDOW: Duration = MINIMUM_CPU_UPDATE_INTERVAL;

/// Measures this host and daemon. Blocks for [`CPU_WINDOW`]; call it off the event loop.
pub fn collect(
    name: &str,
    node_id: &str,
    daemon_started: Instant,
    history_dir: Option<&std::path::Path>,
) -> Result<NodeStats, String> {
    let fail = |what: &str, error: sysinfo::Error| format!("cannot read {what}: {error}");
    let mut sys = System::new().map_err(|e| fail("system figures", e))?;
    // Every process's CPU time before and after the window gives the top lists.
    let processes = ProcessRefreshKind::nothing().with_cpu().with_memory();
    sys.refresh_cpu_usage();
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, processes);
    std::thread::sleep(CPU_WINDOW);
    sys.refresh_cpu_usage();
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, processes);
    sys.refresh_memory();
    let pid = sysinfo::get_current_pid().map_err(|e| fail("the daemon's pid", e))?;
    let (top_cpu, top_memory) = top_processes(&sys);
    let daemon_rss_bytes = sys.process(pid).map_or(0, sysinfo::Process::memory);
    let load = System::load_average().map_err(|e| fail("the load average", e))?;
    let disks = Disks::new_with_refreshed_list().map_err(|e| fail("mounted filesystems", e))?;
    Ok(NodeStats {
        name: name.to_owned(),
        node_id: node_id.to_owned(),
        cpu_percent: sys.global_cpu_usage().clamp(0.0, 100.0),
        load_average: [load.one, load.five, load.fifteen],
        ram_used_bytes: sys.used_memory(),
        ram_total_bytes: sys.total_memory(),
        swap_used_bytes: sys.used_swap(),
        swap_total_bytes: sys.total_swap(),
        disks: disk_usage(&disks),
        host_uptime_secs: System::uptime().map_err(|e| fail("the host uptime", e))?,
        daemon_uptime_secs: daemon_started.elapsed().as_secs(),
        daemon_rss_bytes,
        top_cpu,
        top_memory,
        traffic: history_dir.and_then(crate::monitor::traffic::read),
    })
}

/// The [`TOP_PROCESSES`] processes by CPU and by resident memory (threads left out: sysinfo
/// lists Linux tasks too).
fn top_processes(sys: &System) -> (Vec<ProcessUsage>, Vec<ProcessUsage>) {
    let mut all: Vec<ProcessUsage> = sys
        .processes()
        .values()
        .filter(|p| p.thread_kind().is_none())
        .map(|p| ProcessUsage {
            pid: p.pid().as_u32(),
            name: p.name().to_string_lossy().chars().take(64).collect(),
            cpu_percent: p.cpu_usage(),
            rss_bytes: p.memory(),
        })
        .collect();
    all.sort_by(|a, b| {
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(a.pid.cmp(&b.pid))
    });
    let top_cpu = all.iter().take(TOP_PROCESSES).cloned().collect();
    all.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    all.truncate(TOP_PROCESSES);
    (top_cpu, all)
}

/// One row per mount point (a filesystem mounted twice, or bind mounts, are listed once each
/// place they are mounted, but a mount point listed twice is reported once), `/` first.
pub(crate) fn disk_usage(disks: &Disks) -> Vec<DiskUsage> {
    let mut seen = HashSet::new();
    let mut rows: Vec<DiskUsage> = disks
        .iter()
        .filter(|d| d.total_space() > 0)
        .filter_map(|d| {
            let mount = d.mount_point().to_string_lossy().into_owned();
            seen.insert(mount.clone()).then(|| DiskUsage {
                mount,
                used_bytes: d.total_space().saturating_sub(d.available_space()),
                total_bytes: d.total_space(),
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.mount != "/", &a.mount).cmp(&(b.mount != "/", &b.mount)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_plausible() {
        let stats = collect("n", "id", Instant::now(), None).unwrap();
        assert!((0.0..=100.0).contains(&stats.cpu_percent));
        assert!(stats.ram_total_bytes > 0 && stats.ram_used_bytes <= stats.ram_total_bytes);
        assert!(stats.daemon_rss_bytes > 0);
        assert!(stats.host_uptime_secs > 0);
        assert!(!stats.top_memory.is_empty() && stats.top_memory.len() <= TOP_PROCESSES);
        assert!(stats.top_memory[0].rss_bytes >= stats.top_memory.last().unwrap().rss_bytes);
        assert_eq!(stats.top_cpu.len(), stats.top_memory.len());
        let root = stats.disks.first().expect("a filesystem");
        assert_eq!(root.mount, "/");
        assert!(root.used_bytes <= root.total_bytes);
    }
}
