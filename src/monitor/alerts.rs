//! This node's side of the threshold alerts: after every round of samples (and whenever the
//! thresholds change) the figures go through the core's [`Evaluator`], and an episode it opens
//! or recovers is merged into the network settings, persisted and gossiped before the next
//! round. The leader's bot tells the owner (src/bot/alerts.rs); the rules and why they are
//! network state are in `constella_behaviours::alerts` and docs/monitoring.md.

use std::time::Duration;

use constella_behaviours::alerts::{AlertState, Evaluator, Figure, Rule};
use constella_behaviours::settings::NetworkSettings;
use tokio::sync::watch;

use super::{Monitor, Snapshot};
use crate::audit::{AuditEvent, AuditKind};
use crate::daemon::{Client, ClientError};

/// Test knob: hold every rule this many seconds instead of its default (CPU: 5 minutes).
const TEST_HOLD_ENV: &str = "CONSTELLA_TEST_ALERT_HOLD_SECS";

/// Sets `rule` to `percent` (0: off) for every node, on top of `current`: merged into the
/// network settings (persisted and published before it returns), for `constella alerts set`,
/// the bot's `/alerts` and the web panel alike. Returns the merged settings and the audit event
/// of the change (`who`, `via`), which the caller records as durably as it needs.
pub async fn set_threshold(
    client: &Client,
    current: &AlertState,
    (rule, percent): (Rule, u8),
    who: String,
    via: &str,
) -> Result<(NetworkSettings, AuditEvent), ClientError> {
    let previous = current.percent(rule);
    let change = NetworkSettings {
        alerts: Box::new(current.with_threshold(rule, percent)),
        ..NetworkSettings::default()
    };
    let merged = client.merge_settings(change).await?;
    tracing::info!(
        rule = rule.as_str(),
        percent,
        previous,
        by = %who,
        "an alert threshold was set"
    );
    let event = AuditEvent::new(AuditKind::AlertThresholdChanged, who, via)
        .detail("rule", rule.as_str())
        .detail("percent", percent)
        .detail("previous", previous);
    Ok((merged, event))
}

/// Sets the monthly traffic quota to `bytes` (0: off) for every node, like [`set_threshold`].
pub async fn set_quota(
    client: &Client,
    current: &AlertState,
    bytes: u64,
    who: String,
    via: &str,
) -> Result<(NetworkSettings, AuditEvent), ClientError> {
    let previous = current.quota_bytes();
    let change = NetworkSettings {
        alerts: Box::new(current.with_quota(bytes)),
        ..NetworkSettings::default()
    };
    let merged = client.merge_settings(change).await?;
    tracing::info!(bytes, previous, by = %who, "the monthly traffic quota was set");
    let event = AuditEvent::new(AuditKind::AlertThresholdChanged, who, via)
        .detail("rule", Rule::Traffic.as_str())
        .detail("bytes", bytes)
        .detail("previous", previous);
    Ok((merged, event))
}

/// The figures the rules watch, from one round of samples: CPU percent, RAM used as a percent
/// of the total, the fullest mount, and the month's traffic (bytes).
pub fn figures(snapshot: &Snapshot) -> Vec<Figure> {
    let values = &snapshot.values;
    let mut figures = Vec::with_capacity(3);
    if let Some(cpu) = values.get("cpu_percent") {
        figures.push(Figure {
            rule: Rule::Cpu,
            value: *cpu,
            detail: String::new(),
        });
    }
    if let (Some(used), Some(total)) = (values.get("ram_used_bytes"), values.get("ram_total_bytes"))
        && *total > 0.0
    {
        figures.push(Figure {
            rule: Rule::Ram,
            value: used * 100.0 / total,
            detail: String::new(),
        });
    }
    let fullest = values
        .iter()
        .filter_map(|(metric, value)| Some((metric.strip_prefix("disk_used_percent:")?, *value)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((mount, value)) = fullest {
        figures.push(Figure {
            rule: Rule::Disk,
            value,
            detail: mount.to_owned(),
        });
    }
    if let Some(bytes) = snapshot.month_traffic_bytes {
        #[allow(clippy::cast_precision_loss)] // exact below 2^53 bytes
        figures.push(Figure {
            rule: Rule::Traffic,
            value: bytes as f64,
            detail: String::new(),
        });
    }
    figures
}

/// Watches this node's figures until the node stops (nothing with sampling off).
pub async fn watch(
    client: Client,
    monitor: Monitor,
    mut settings: watch::Receiver<NetworkSettings>,
    node_id: String,
    node_name: String,
    interval: Duration,
) {
    let mut evaluator = Evaluator::new(&node_id, &node_name);
    if let Some(secs) = std::env::var(TEST_HOLD_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
    {
        evaluator = evaluator.with_hold_secs(secs);
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = settings.changed() => if changed.is_err() { return },
        }
        let Some(snapshot) = monitor.snapshot() else {
            continue;
        };
        let state = settings.borrow_and_update().alerts.clone();
        // The hold counts sample time; a settings change re-reads the same round.
        let now = snapshot.time.max(last_round);
        last_round = now;
        let Some(change) = evaluator.evaluate(now, &figures(&snapshot), &state) else {
            continue;
        };
        for episode in change.episodes.values() {
            match episode.recovered_at {
                None => tracing::warn!(
                    event = "alert_opened",
                    rule = episode.rule.as_str(),
                    value = episode.value,
                    threshold = episode.threshold,
                    detail = %episode.detail,
                    "a figure crossed its alert threshold"
                ),
                Some(_) => tracing::info!(
                    event = "alert_recovered",
                    rule = episode.rule.as_str(),
                    "a figure is back below its alert threshold"
                ),
            }
        }
        let update = NetworkSettings {
            alerts: Box::new(change),
            ..NetworkSettings::default()
        };
        if let Err(error) = client.merge_settings(update).await {
            // The next round evaluates again against the settings as they are.
            tracing::warn!(%error, "cannot record an alert episode in the network settings");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_percent_and_the_fullest_mount() {
        let snapshot = Snapshot {
            time: 5,
            values: [
                ("cpu_percent", 12.0),
                ("ram_used_bytes", 3.0),
                ("ram_total_bytes", 4.0),
                ("disk_used_percent:/", 40.0),
                ("disk_used_percent:/data", 91.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            traffic: Vec::new(),
            month_traffic_bytes: Some(7),
        };
        let figures = figures(&snapshot);
        assert_eq!(figures.len(), 4);
        assert_eq!((figures[3].rule, figures[3].value), (Rule::Traffic, 7.0));
        assert_eq!(figures[1].value, 75.0);
        assert_eq!(
            (figures[2].value, figures[2].detail.as_str()),
            (91.0, "/data")
        );
    }
}
