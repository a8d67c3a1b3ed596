//! Tells the owner about threshold alerts: the leader's bot watches the alert episodes in the
//! network settings and, for every episode whose alert or recovery is still unsent, first marks
//! it sent in the network settings, waits until that mark is durably written to its own state
//! file (temp file, fsync, rename, fsync of the directory: `merge_settings_durably`) and
//! gossiped, then sends one message for the batch. A leader that dies after the mark and before
//! the send loses that one message; no leader ever sends one twice, because the next leader
//! (this node after a restart included) sees the mark. Batched and rate-limited like the
//! membership notices (src/bot/notify.rs).

use std::time::Duration;

use constella_behaviours::alerts::{AlertState, Episode};
use constella_behaviours::settings::NetworkSettings;
use teloxide::prelude::*;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::ui::Lang;
use crate::daemon::Client;
use crate::daemon::signals::Leadership;

/// How long after the first pending episode more are collected into the same message.
const BATCH_WINDOW: Duration = Duration::from_secs(2);
/// Least time between two alert messages.
const MIN_GAP: Duration = Duration::from_secs(10);
/// Episodes listed in one message; the rest wait for the next one.
const MAX_LINES: usize = 20;

/// Sends the alerts of the network while this node leads, until the node stops.
pub(super) async fn run(
    bot: Bot,
    client: Client,
    mut leadership: watch::Receiver<Leadership>,
    mut settings: watch::Receiver<NetworkSettings>,
) {
    let min_gap = std::env::var("CONSTELLA_TEST_ALERT_GAP_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(MIN_GAP, Duration::from_millis);
    let mut last_sent: Option<Instant> = None;
    // What this task marked already (key, recovery too), in case the settings it sees lag
    // behind its own mark: never sent twice by this node either.
    let mut marked: std::collections::BTreeSet<(String, bool)> = Default::default();
    let unmarked = |e: &Episode, marked: &std::collections::BTreeSet<(String, bool)>| {
        !marked.contains(&(e.key(), e.recovered_at.is_some()))
    };
    loop {
        let ready = {
            let leading = leadership.borrow_and_update().is_local;
            let current = settings.borrow_and_update();
            leading
                && current.owner_user_id.is_some()
                && current.alerts.pending().any(|e| unmarked(e, &marked))
        };
        if !ready {
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                changed = settings.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let window_end = Instant::now() + BATCH_WINDOW;
        tokio::time::sleep_until(last_sent.map_or(window_end, |at| window_end.max(at + min_gap)))
            .await;
        if !leadership.borrow().is_local {
            continue;
        }
        let (owner, lang, batch) = {
            let current = settings.borrow();
            let batch: Vec<Episode> = current
                .alerts
                .pending()
                .filter(|e| unmarked(e, &marked))
                .take(MAX_LINES)
                .cloned()
                .collect();
            marked.retain(|(key, _)| current.alerts.episodes.contains_key(key));
            (
                current.owner_user_id,
                Lang::from_code(&current.language),
                batch,
            )
        };
        let Some(owner) = owner.and_then(|id| i64::try_from(id).ok()) else {
            continue;
        };
        if batch.is_empty() {
            continue;
        }
        // Marked, and the mark on disk, before sent: the next leader (or this node after a
        // crash and restart) must not send these again.
        let mark = NetworkSettings {
            alerts: Box::new(AlertState::marked_sent(&batch)),
            ..NetworkSettings::default()
        };
        if let Err(error) = client.merge_settings_durably(mark).await {
            warn!(%error, "cannot mark alerts as sent; they stay pending");
            last_sent = Some(Instant::now());
            continue;
        }
        marked.extend(batch.iter().map(|e| (e.key(), e.recovered_at.is_some())));
        last_sent = Some(Instant::now());
        let text = message(lang, &batch);
        info!(episodes = batch.len(), "sending alerts to the owner");
        if let Err(error) = bot.send_message(ChatId(owner), text).await {
            warn!(%error, "cannot send alerts to the owner (they are marked sent: not repeated)");
        } else {
            debug!("alerts sent");
        }
    }
}

/// One line per episode: its alert if unsent, its recovery if recovered and unsent.
pub fn message(lang: Lang, episodes: &[Episode]) -> String {
    let mut lines = Vec::new();
    for e in episodes {
        let what = rule_name(lang, e);
        if !e.alert_sent && e.rule == constella_behaviours::alerts::Rule::Traffic {
            let units = lang.units();
            let (used, quota) = (units.bytes(e.used_bytes), units.bytes(e.quota_bytes));
            lines.push(match lang {
                Lang::Ru => format!("🔴 {}: {what} {used} (квота {quota})", e.node_name),
                Lang::En => format!("🔴 {}: {what} {used} (quota {quota})", e.node_name),
            });
        } else if !e.alert_sent {
            lines.push(match lang {
                Lang::Ru => format!(
                    "🔴 {}: {what} {} % (порог {} %)",
                    e.node_name, e.value, e.threshold
                ),
                Lang::En => format!(
                    "🔴 {}: {what} {} % (threshold {} %)",
                    e.node_name, e.value, e.threshold
                ),
            });
        }
        if e.recovered_at.is_some() && !e.recovery_sent {
            lines.push(match lang {
                Lang::Ru => format!("🟢 {}: {what} снова в норме", e.node_name),
                Lang::En => format!("🟢 {}: {what} is back to normal", e.node_name),
            });
        }
    }
    lines.join("\n")
}

fn rule_name(lang: Lang, episode: &Episode) -> String {
    use constella_behaviours::alerts::Rule;
    let name = match (lang, episode.rule) {
        (Lang::Ru, Rule::Cpu) => "CPU",
        (Lang::Ru, Rule::Ram) => "ОЗУ",
        (Lang::Ru, Rule::Disk) => "диск",
        (Lang::En, Rule::Cpu) => "CPU",
        (Lang::En, Rule::Ram) => "RAM",
        (Lang::En, Rule::Disk) => "disk",
        (Lang::Ru, Rule::Traffic) => "трафик за месяц",
        (Lang::En, Rule::Traffic) => "traffic this month",
    };
    if episode.detail.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", episode.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::alerts::{AlertState, Evaluator, Figure, Rule};

    #[test]
    fn a_traffic_alert_names_the_bytes_and_the_quota() {
        let mut state = AlertState::default();
        state.merge(&state.with_quota(500 << 30));
        let figure = Figure {
            rule: Rule::Traffic,
            value: (600u64 << 30) as f64,
            detail: String::new(),
        };
        let change = Evaluator::new("n1", "delta-01")
            .evaluate(5, &[figure], &state)
            .unwrap();
        let episodes: Vec<Episode> = change.episodes.into_values().collect();
        assert_eq!(
            message(Lang::En, &episodes),
            "🔴 delta-01: traffic this month 600.0 GiB (quota 500.0 GiB)"
        );
        assert_eq!(
            message(Lang::Ru, &episodes),
            "🔴 delta-01: трафик за месяц 600,0 ГиБ (квота 500,0 ГиБ)"
        );
        let report = crate::control::AlertReport::new(&state);
        let table = crate::output::alerts_table(&report);
        assert!(table.contains("traffic  500.0 GiB/month  owner"), "{table}");
    }
}
