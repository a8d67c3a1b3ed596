//! How `peers` and `status` print for people.

use std::fmt::Write as _;

use crate::control::{PeerReport, StatusReport};

/// The seed's node list: "• delta-01 — Хост", "• fox-03 (offline)", with address and id columns.
pub fn peers_table(peers: &[PeerReport]) -> String {
    let labels: Vec<String> = peers
        .iter()
        .map(|p| {
            let mut label = format!("• {}", p.name);
            if p.leader {
                label.push_str(" — Хост");
            }
            if p.status != "alive" {
                let _ = write!(label, " ({})", p.status);
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

/// Seconds as "3d 4h", "5h 12m", "7m 3s" or "42s".
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The block `status` prints.
pub fn status_block(s: &StatusReport) -> String {
    let role = if s.is_leader {
        "leader (Хост)"
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
    let _ = writeln!(out, "node      {} ({role})", s.name);
    let _ = writeln!(out, "node id   {}", s.node_id);
    let _ = writeln!(
        out,
        "network   {} (owner {})",
        s.network_id, s.owner_username
    );
    let _ = writeln!(out, "leader    {} ({})", s.leader.name, s.leader.node_id);
    let _ = writeln!(out, "peers     {} alive, {} offline", s.alive, s.offline);
    let _ = writeln!(out, "uptime    {}", human_duration(s.uptime_secs));
    let _ = writeln!(out, "listening {}", s.listen_addrs.join(", "));
    let _ = writeln!(
        out,
        "version   {} (protocol {})",
        s.version, s.protocol_version
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
        let peer = |name: &str, status: &str, leader| PeerReport {
            name: name.into(),
            node_id: format!("id-{name}"),
            addr: "203.0.113.10:4747".into(),
            status: status.into(),
            leader,
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
    fn durations() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(423), "7m 3s");
        assert_eq!(human_duration(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d 4h");
    }
}
