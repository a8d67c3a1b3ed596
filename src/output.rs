//! How `peers`, `status`, `stats` and `docker` print for people.

use std::fmt::Write as _;

use constella_behaviours::membership::{MemberView, Status};

use crate::audit::AuditEvent;
use crate::control::AccessReport;
use crate::daemon::report::StatusReport;
use crate::docker::ContainerInfo;
use crate::stats::NodeStats;

/// The seed's node list: "• delta-01 — Хост", "• fox-03 (offline)", with address and id columns.
/// Also prints another node's view (`peers --from`), as that node sees it.
/// `peers --fingerprints`: each member's name, node id and 60-digit PQ4 fingerprint.
pub fn fingerprints_table(peers: &[MemberView]) -> String {
    let mut out = String::new();
    for p in peers {
        let _ = writeln!(out, "{} ({})", p.name, p.node_id);
        let _ = writeln!(
            out,
            "    {}",
            p.fingerprint
                .as_deref()
                .unwrap_or("no PQ4 card yet (an older constella)")
        );
    }
    out
}

/// `verify NODE`: the fingerprint to compare out of band.
pub fn verify_block(p: &MemberView) -> Option<String> {
    let digits = p.fingerprint.as_deref()?;
    Some(format!(
        "{} ({})\nPQ4 fingerprint: {digits}\nCompare it with `constella status` run on {} itself (or its node card in the bot). If the digits differ, someone swapped its keys: remove it.\n",
        p.name, p.node_id, p.name
    ))
}

pub fn peers_table(peers: &[MemberView]) -> String {
    let labels: Vec<String> = peers
        .iter()
        .map(|p| {
            let mut label = format!("• {}", p.name);
            if p.leader {
                label.push_str(" — Хост");
            }
            if p.status != Status::Alive {
                let _ = write!(label, " (offline)");
            }
            if p.relayed {
                let _ = write!(label, " (relayed)");
            }
            label
        })
        .collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let addr_width = peers.iter().map(|p| p.addr.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, peer) in labels.iter().zip(peers) {
        let pad = label_width - label.chars().count();
        let _ = writeln!(
            out,
            "{label}{:pad$}   {:addr_width$}   {}",
            "", peer.addr, peer.node_id
        );
    }
    out
}

/// How figures are written for people: unit names and the decimal separator.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    /// B, KiB, MiB, … (each after a space).
    bytes: [&'static str; 7],
    /// Day, hour, minute and second suffixes, written straight after the number.
    day: &'static str,
    hour: &'static str,
    minute: &'static str,
    second: &'static str,
    decimal: char,
}

/// "1.5 GiB", "3d 4h".
pub const ENGLISH: Units = Units {
    bytes: ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    day: "d",
    hour: "h",
    minute: "m",
    second: "s",
    decimal: '.',
};

/// "1,5 ГиБ", "3 д 4 ч": Russian unit names and a decimal comma.
pub const RUSSIAN: Units = Units {
    bytes: ["Б", "КиБ", "МиБ", "ГиБ", "ТиБ", "ПиБ", "ЭиБ"],
    day: " д",
    hour: " ч",
    minute: " мин",
    second: " с",
    decimal: ',',
};

impl Units {
    /// `value` with `places` decimals and this language's separator.
    pub fn decimal(&self, value: f64, places: usize) -> String {
        let text = format!("{value:.places$}");
        if self.decimal == '.' {
            text
        } else {
            text.replace('.', &self.decimal.to_string())
        }
    }

    /// Bytes in binary units: "512 B", "1.5 KiB", "3.8 GiB".
    pub fn bytes(&self, bytes: u64) -> String {
        if bytes < 1024 {
            return format!("{bytes} {}", self.bytes[0]);
        }
        #[allow(clippy::cast_precision_loss)] // display only
        let mut value = bytes as f64 / 1024.0;
        let mut unit = 1;
        while value >= 1024.0 && unit + 1 < self.bytes.len() {
            value /= 1024.0;
            unit += 1;
        }
        format!("{} {}", self.decimal(value, 1), self.bytes[unit])
    }

    /// Seconds as "3d 4h", "5h 12m", "7m 3s" or "42s" (the two largest units).
    pub fn duration(&self, secs: u64) -> String {
        let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let Units {
            day,
            hour,
            minute,
            second,
            ..
        } = self;
        match (d, h, m) {
            (0, 0, 0) => format!("{s}{second}"),
            (0, 0, _) => format!("{m}{minute} {s}{second}"),
            (0, _, _) => format!("{h}{hour} {m}{minute}"),
            _ => format!("{d}{day} {h}{hour}"),
        }
    }
}

/// Bytes in binary units, in English: "512 B", "1.5 KiB", "3.8 GiB".
pub fn human_bytes(bytes: u64) -> String {
    ENGLISH.bytes(bytes)
}

/// "used / total (p %)", or "none" when the total is 0.
fn usage(used: u64, total: u64) -> String {
    if total == 0 {
        return "none".to_owned();
    }
    #[allow(clippy::cast_precision_loss)] // display only
    let percent = used as f64 * 100.0 / total as f64;
    format!(
        "{} / {} ({percent:.1} %)",
        human_bytes(used),
        human_bytes(total)
    )
}

/// The block `stats` prints.
pub fn stats_block(s: &NodeStats) -> String {
    let [one, five, fifteen] = s.load_average;
    let mut out = String::new();
    let _ = writeln!(out, "node      {} ({})", s.name, s.node_id);
    let _ = writeln!(
        out,
        "cpu       {:.1} %   load {one:.2} {five:.2} {fifteen:.2}",
        s.cpu_percent
    );
    let _ = writeln!(
        out,
        "ram       {}",
        usage(s.ram_used_bytes, s.ram_total_bytes)
    );
    let _ = writeln!(
        out,
        "swap      {}",
        usage(s.swap_used_bytes, s.swap_total_bytes)
    );
    let width = s.disks.iter().map(|d| d.mount.len()).max().unwrap_or(0);
    for disk in &s.disks {
        let _ = writeln!(
            out,
            "disk      {:width$}  {}",
            disk.mount,
            usage(disk.used_bytes, disk.total_bytes)
        );
    }
    let _ = writeln!(
        out,
        "uptime    host {}, daemon {}",
        human_duration(s.host_uptime_secs),
        human_duration(s.daemon_uptime_secs)
    );
    let _ = writeln!(
        out,
        "daemon    {} resident",
        human_bytes(s.daemon_rss_bytes)
    );
    if let Some(traffic) = &s.traffic {
        let since = utc_timestamp(i64::try_from(traffic.since).unwrap_or(0) * 1000);
        for (i, iface) in traffic.interfaces.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:9} {}  in {}  out {}{}",
                if i == 0 { "traffic" } else { "" },
                iface.name,
                human_bytes(iface.rx_bytes),
                human_bytes(iface.tx_bytes),
                if i == 0 {
                    format!("  (since {since}, resets on day {})", traffic.reset_day)
                } else {
                    String::new()
                }
            );
        }
    }
    for (title, list) in [("top cpu", &s.top_cpu), ("top ram", &s.top_memory)] {
        for (i, p) in list.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:9} {:>7} {:<20} {:>6.1} % {:>10}",
                if i == 0 { title } else { "" },
                p.pid,
                p.name,
                p.cpu_percent,
                human_bytes(p.rss_bytes)
            );
        }
    }
    out
}

/// Seconds as "3d 4h", "5h 12m", "7m 3s" or "42s".
pub fn human_duration(secs: u64) -> String {
    ENGLISH.duration(secs)
}

/// `word` with its first letter in upper case: "restart" → "Restart".
pub fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The table `docker NODE` prints: one container a line, aligned, with a header.
pub fn containers_table(containers: &[ContainerInfo]) -> String {
    if containers.is_empty() {
        return "No containers.\n".to_owned();
    }
    let rows: Vec<[String; 6]> = containers
        .iter()
        .map(|c| {
            let running = c.state == "running";
            [
                c.name.clone(),
                c.image.clone(),
                c.state.clone(),
                if running {
                    human_duration(c.uptime_secs)
                } else {
                    "—".to_owned()
                },
                if running {
                    format!("{:.1} %", c.cpu_percent)
                } else {
                    "—".to_owned()
                },
                if running {
                    human_bytes(c.mem_bytes)
                } else {
                    "—".to_owned()
                },
            ]
        })
        .collect();
    let header = ["NAME", "IMAGE", "STATE", "UPTIME", "CPU", "MEMORY"].map(str::to_owned);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// `constella access`: the owner, then every account with a role.
pub fn access_table(report: &AccessReport) -> String {
    let pinned = |yes: bool| {
        if yes {
            "pinned"
        } else {
            "not yet seen by the bot"
        }
    };
    let width = report
        .users
        .iter()
        .map(|u| u.username.len())
        .chain([report.owner.len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  owner     {}",
        report.owner,
        pinned(report.owner_pinned)
    );
    for user in &report.users {
        let _ = writeln!(
            out,
            "{:width$}  {:8}  {}",
            user.username,
            user.role.as_str(),
            pinned(user.pinned)
        );
    }
    out
}

/// `constella services NODE`: each watched unit's state.
pub fn services_table(answer: &constella_behaviours::rpc::ServicesAnswer) -> String {
    let mut out = String::new();
    if !answer.systemd {
        let _ = writeln!(
            out,
            "{} has no reachable systemd (systemctl failed): statuses are unknown.",
            answer.node
        );
    }
    if answer.units.is_empty() {
        let _ = writeln!(
            out,
            "{} watches no units (constella services add {} UNIT).",
            answer.node, answer.node
        );
        return out;
    }
    let width = answer
        .units
        .iter()
        .map(|u| u.unit.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:width$}  ACTIVE      SUB         LOAD       DESCRIPTION",
        "UNIT"
    );
    for unit in &answer.units {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        let _ = writeln!(
            out,
            "{:width$}  {:10}  {:10}  {:9}  {}",
            unit.unit,
            dash(&unit.active_state),
            dash(&unit.sub_state),
            dash(&unit.load_state),
            unit.description
        );
    }
    out
}

/// `constella alerts`: each rule's threshold, then the episodes the network remembers.
pub fn alerts_table(report: &crate::control::AlertReport) -> String {
    let mut out = String::from("RULE  THRESHOLD  HOLD   SET BY\n");
    for (rule, view) in &report.thresholds {
        let threshold = if view.enabled {
            format!("{} %", view.percent)
        } else {
            "off".to_owned()
        };
        let _ = writeln!(
            out,
            "{:4}  {:9}  {:5}  {}",
            rule.as_str(),
            threshold,
            format!("{} s", view.hold_secs),
            if view.default { "default" } else { "owner" }
        );
    }
    let quota = if report.traffic.enabled {
        format!("{}/month", human_bytes(report.traffic.quota_bytes))
    } else {
        "off".to_owned()
    };
    let _ = writeln!(
        out,
        "traffic  {quota}  {}",
        if report.traffic.default {
            "default"
        } else {
            "owner"
        }
    );
    if report.episodes.is_empty() {
        out.push_str("\nNo alert episodes.\n");
        return out;
    }
    out.push_str("\nEPISODES (oldest first)\n");
    for e in &report.episodes {
        let state = match e.recovered_at {
            None => "open".to_owned(),
            Some(at) => format!("recovered {}", utc_timestamp(at as i64 * 1000)),
        };
        let told = match (e.alert_sent, e.recovered_at.is_some(), e.recovery_sent) {
            (false, _, _) => "not told yet",
            (true, true, false) => "recovery not told yet",
            _ => "told",
        };
        let figure = if e.rule == constella_behaviours::alerts::Rule::Traffic {
            format!(
                "{} > {}",
                human_bytes(e.used_bytes),
                human_bytes(e.quota_bytes)
            )
        } else {
            format!("{}% > {}%", e.value, e.threshold)
        };
        let _ = writeln!(
            out,
            "{}  {}  {} {}{}  {}  {}",
            utc_timestamp(e.opened_at as i64 * 1000),
            e.node_name,
            e.rule.as_str(),
            figure,
            if e.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.detail)
            },
            state,
            told
        );
    }
    out
}

/// Unix milliseconds as "2026-11-29 20:07:09Z".
pub fn utc_timestamp(millis: i64) -> String {
    let secs = u64::try_from(millis / 1000).unwrap_or(0);
    format!(
        "{} {:02}:{:02}:{:02}Z",
        crate::logging::utc_day(secs),
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// `constella web-sessions`: one line per live session, oldest first.
pub fn web_sessions_table(sessions: &[crate::web::SessionInfo]) -> String {
    if sessions.is_empty() {
        return "No web panel sessions.\n".to_owned();
    }
    let mut out = format!(
        "{:<8}  {:<21}  {:<21}  {:<15}  {}\n",
        "ID", "SINCE", "LAST REQUEST", "ADDRESS", "WHO"
    );
    for s in sessions {
        let _ = writeln!(
            out,
            "{:<8}  {:<21}  {:<21}  {:<15}  {} (ends after {} idle)",
            s.id,
            utc_timestamp(i64::try_from(s.created_at).unwrap_or(0) * 1000),
            utc_timestamp(i64::try_from(s.last_seen_at).unwrap_or(0) * 1000),
            s.addr,
            s.who,
            human_duration(s.idle_expires_in_secs)
        );
    }
    out
}

/// `constella audit`: one line per entry, oldest first.
pub fn audit_lines(events: &[AuditEvent]) -> String {
    let mut out = String::new();
    for event in events {
        let details: Vec<String> = event
            .details
            .iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => format!("{key}={text}"),
                other => format!("{key}={other}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "{}  {:<18} {}  via {} on {}  {}",
            utc_timestamp(event.timestamp),
            event.event_type,
            event.who,
            event.from,
            event.node,
            details.join(" ")
        );
    }
    out
}

/// The block `status` prints.
pub fn status_block(s: &StatusReport) -> String {
    // "echo-02, leader — Хост": one parenthesis level, the seed's word for the leader.
    let role = if s.is_leader {
        "leader — Хост"
    } else {
        "member"
    };
    let rejected = &s.rejected_gossip;
    let rejected_total = rejected.bad_mac
        + rejected.wrong_signer
        + rejected.non_member
        + rejected.replay
        + rejected.malformed
        + rejected.incompatible_version;
    let mut out = String::new();
    let _ = writeln!(out, "node      {}, {role}", s.name);
    let _ = writeln!(out, "node id   {}", s.node_id);
    let _ = writeln!(
        out,
        "network   {} (owner {})",
        s.network_id, s.owner_username
    );
    let _ = writeln!(out, "leader    {} ({})", s.leader.name, s.leader.node_id);
    let _ = writeln!(out, "peers     {} alive, {} offline", s.alive, s.offline);
    if let Some(p) = &s.partitioned {
        // The minority side of a partition does not host the bot (docs/design.md).
        let _ = writeln!(
            out,
            "network   partitioned: sees {} of {} (not hosting the bot)",
            p.sees, p.of
        );
    }
    let reach = match (s.reachability.as_str(), s.relays.is_empty()) {
        ("private", true) => "behind NAT, no relay yet".to_owned(),
        ("private", false) => format!("behind NAT, relayed via {}", s.relays.join(", ")),
        (other, _) => other.to_owned(),
    };
    let _ = writeln!(out, "reach     {reach}");
    let _ = writeln!(out, "uptime    {}", human_duration(s.uptime_secs));
    let _ = writeln!(out, "listening {}", s.listen_addrs.join(", "));
    let _ = writeln!(
        out,
        "version   {} (protocol {})",
        s.version, s.protocol_version
    );
    let _ = writeln!(
        out,
        "pq4       {} (secret epoch {})",
        s.fingerprint.as_deref().unwrap_or("no fingerprint yet"),
        s.secret_epoch
    );
    let bot = &s.bot;
    let bot_line = if !bot.enabled {
        "off (no token)".to_owned()
    } else {
        let role = if bot.polling { "polling" } else { "standby" };
        let owner = if bot.owner_pinned {
            "owner pinned"
        } else {
            "owner not yet seen"
        };
        format!(
            "{role}, {owner}, {} handled, {} refused, {} conflicts",
            bot.handled_updates, bot.refused_updates, bot.conflicts
        )
    };
    let _ = writeln!(out, "bot       {bot_line}");
    if rejected_total > 0 {
        let _ = writeln!(
            out,
            "rejected  {rejected_total} gossip messages (bad mac {}, wrong signer {}, non-member {}, replay {}, malformed {}, version {})",
            rejected.bad_mac,
            rejected.wrong_signer,
            rejected.non_member,
            rejected.replay,
            rejected.malformed,
            rejected.incompatible_version
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_leader_and_offline() {
        let peer = |name: &str, status: &str, leader| MemberView {
            name: name.into(),
            node_id: libp2p::PeerId::random(),
            addr: "203.0.113.10:4747".into(),
            status: if status == "alive" {
                Status::Alive
            } else {
                Status::Offline
            },
            leader,
            priority: 100,
            uptime_secs: None,
            fingerprint: None,
            relayed: false,
            connection: None,
        };
        let table = peers_table(&[
            peer("delta-01", "alive", true),
            peer("echo-02", "alive", false),
            peer("fox-03", "offline", false),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("• delta-01 — Хост "), "{table}");
        assert!(lines[1].starts_with("• echo-02 "), "{table}");
        assert!(lines[2].starts_with("• fox-03 (offline) "), "{table}");
        // Columns line up.
        let col = |l: &str| l.chars().position(|c| c == '2').unwrap();
        assert_eq!(col(lines[0]), col(lines[2]));
    }

    #[test]
    fn stats_are_readable() {
        let stats = NodeStats {
            name: "echo-02".into(),
            node_id: "id".into(),
            cpu_percent: 12.345,
            load_average: [0.5, 0.25, 0.125],
            ram_used_bytes: 1024 * 1024 * 1024,
            ram_total_bytes: 4 * 1024 * 1024 * 1024,
            swap_used_bytes: 0,
            swap_total_bytes: 0,
            disks: vec![crate::stats::DiskUsage {
                mount: "/".into(),
                used_bytes: 10 * 1024 * 1024 * 1024,
                total_bytes: 40 * 1024 * 1024 * 1024,
            }],
            host_uptime_secs: 3 * 86400 + 4 * 3600,
            daemon_uptime_secs: 42,
            daemon_rss_bytes: 15 * 1024 * 1024 + 512 * 1024,
            top_cpu: vec![crate::stats::ProcessUsage {
                pid: 42,
                name: "nginx".into(),
                cpu_percent: 150.0,
                rss_bytes: 3 << 20,
            }],
            top_memory: vec![],
            traffic: None,
        };
        let block = stats_block(&stats);
        assert!(block.contains("top cpu        42 nginx"), "{block}");
        assert!(
            block.contains("cpu       12.3 %   load 0.50 0.25 0.12"),
            "{block}"
        );
        assert!(
            block.contains("ram       1.0 GiB / 4.0 GiB (25.0 %)"),
            "{block}"
        );
        assert!(block.contains("swap      none"), "{block}");
        assert!(
            block.contains("disk      /  10.0 GiB / 40.0 GiB (25.0 %)"),
            "{block}"
        );
        assert!(
            block.contains("uptime    host 3d 4h, daemon 42s"),
            "{block}"
        );
        assert!(block.contains("daemon    15.5 MiB resident"), "{block}");
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn containers_line_up_and_stopped_ones_have_no_figures() {
        let container = |name: &str, state: &str| ContainerInfo {
            name: name.into(),
            image: "nginx:1.27".into(),
            state: state.into(),
            uptime_secs: 423,
            cpu_percent: 1.25,
            mem_bytes: 3 * 1024 * 1024,
            id: "0123456789ab".into(),
        };
        let table = containers_table(&[
            container("web", "running"),
            container("old-worker", "exited"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME        IMAGE       STATE    UPTIME  CPU    MEMORY",
                "web         nginx:1.27  running  7m 3s   1.2 %  3.0 MiB",
                "old-worker  nginx:1.27  exited   —       —      —",
            ],
            "{table}"
        );
        assert_eq!(containers_table(&[]), "No containers.\n");
        assert_eq!(capitalised("restart"), "Restart");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(423), "7m 3s");
        assert_eq!(human_duration(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d 4h");
        assert_eq!(RUSSIAN.duration(42), "42 с");
        assert_eq!(RUSSIAN.duration(40 * 60 + 24), "40 мин 24 с");
        assert_eq!(RUSSIAN.duration(5 * 3600 + 12 * 60), "5 ч 12 мин");
        assert_eq!(RUSSIAN.duration(3 * 86400 + 4 * 3600), "3 д 4 ч");
        assert_eq!(RUSSIAN.bytes(512), "512 Б");
        assert_eq!(RUSSIAN.bytes(1536 << 20), "1,5 ГиБ");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn status_names_the_role_without_nested_parentheses() {
        let report = |is_leader| StatusReport {
            name: "echo-02".into(),
            node_id: "id".into(),
            network_id: "abcd".into(),
            owner_username: "@owner".into(),
            version: "0.1.0".into(),
            protocol_version: 1,
            leader: crate::daemon::report::NodeRef {
                name: "echo-02".into(),
                node_id: "id".into(),
            },
            is_leader,
            hosting: is_leader,
            partitioned: None,
            leader_changes: 0,
            alive: 1,
            offline: 0,
            uptime_secs: 5,
            incarnation: 1,
            listen_addrs: vec![],
            connected_peers: 0,
            rejected_gossip: Default::default(),
            failure_detector: Default::default(),
            bot: Default::default(),
            secret_epoch: 0,
            fingerprint: None,
            reachability: "public".into(),
            relays: vec![],
            nat: Default::default(),
        };
        let leader = status_block(&report(true));
        assert!(
            leader.starts_with("node      echo-02, leader — Хост\n"),
            "{leader}"
        );
        assert!(!leader.contains("(leader ("), "{leader}");
        assert!(status_block(&report(false)).starts_with("node      echo-02, member\n"));
    }
}
