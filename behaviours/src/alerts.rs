//! Threshold alerts as network state: the thresholds the owner set and every alert episode,
//! held in the network settings ([`crate::settings::NetworkSettings::alerts`]) so that whichever
//! node leads tells the owner about each episode exactly once, whatever leader changes happen
//! in the middle of it.
//!
//! - Thresholds are last-writer-wins per rule: a setter makes the rule's next version; at
//!   equal versions (two concurrent setters) the larger percentage wins. The monthly traffic
//!   quota ([`Rule::Traffic`], bytes, off by default) is last-writer-wins the same way.
//! - An episode is keyed by (node, rule, opening time) and carries monotone facts only: opened
//!   (it exists), alert sent, recovered (at a time), recovery sent. Merging is a union with
//!   the facts or-ed, so it is a semilattice like the rest of the settings.
//! - Only the node whose figures cross a threshold opens and recovers its own episodes
//!   ([`Evaluator`]); only the leader's bot marks them sent, and it marks them (persisted and
//!   gossiped) before it sends, so a failover between the mark and the send loses at most that
//!   one message and never repeats one.
//! - The set keeps the episodes opened within [`EPISODE_RETENTION_SECS`] of the newest one, at
//!   most [`MAX_EPISODES`] of them, each kept or dropped by its key alone (so the merge stays a
//!   semilattice).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How long an episode is remembered (seconds, before the newest opening in the set).
pub const EPISODE_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// Most episodes kept (the newest by opening time).
pub const MAX_EPISODES: usize = 128;
/// Percentage points below the threshold a figure must fall for its episode to recover: a
/// figure hovering at the threshold makes one episode, not one per sample.
pub const RECOVERY_MARGIN: f64 = 5.0;

/// What an alert watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// CPU use of the whole host, percent.
    Cpu,
    /// RAM used, percent of the total.
    Ram,
    /// The fullest mounted filesystem, percent used.
    Disk,
    /// Bytes received and sent this month (every real interface, since the node's reset
    /// day) over the network's quota ([`AlertState::traffic_quota`]).
    Traffic,
}

impl Rule {
    /// The rules with a percentage threshold ([`Rule::Traffic`] has a quota in bytes).
    pub const ALL: [Rule; 3] = [Rule::Cpu, Rule::Ram, Rule::Disk];

    /// The rule's name in the CLI, the bot and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Cpu => "cpu",
            Rule::Ram => "ram",
            Rule::Disk => "disk",
            Rule::Traffic => "traffic",
        }
    }

    /// The threshold when the owner has set none: 90 % each (issue 15's defaults).
    pub fn default_percent(self) -> u8 {
        match self {
            Rule::Cpu | Rule::Ram | Rule::Disk => 90,
            Rule::Traffic => 0,
        }
    }

    /// How long (seconds) the figure must stay above the threshold before an episode opens:
    /// CPU spikes are normal, full memory or disk is not.
    pub fn default_hold_secs(self) -> u64 {
        match self {
            Rule::Cpu => 300,
            Rule::Ram | Rule::Disk | Rule::Traffic => 0,
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Rule::Cpu),
            "ram" => Ok(Rule::Ram),
            "disk" => Ok(Rule::Disk),
            "traffic" => Ok(Rule::Traffic),
            other => Err(format!(
                "unknown alert rule {other:?}: use cpu, ram, disk or traffic"
            )),
        }
    }
}

/// Parses a threshold as the CLI and the bot take it: `1`..`100` (percent) or `off`.
/// `Ok(0)` means off.
pub fn parse_percent(text: &str) -> Result<u8, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    match text.trim_end_matches('%').parse::<u8>() {
        Ok(n @ 1..=100) => Ok(n),
        _ => Err(format!(
            "invalid threshold {text:?}: use a percentage from 1 to 100, or off"
        )),
    }
}

/// Parses a monthly traffic quota as the CLI and the bot take it: bytes (`1000000`), a size
/// with a decimal (`500GB`, `1.5TB`: powers of 1000) or binary unit (`500GiB`, `1.5TiB`: powers
/// of 1024), or `off`. `Ok(0)` means off.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid traffic quota {text:?}: use a size such as 500GB, 1.5TiB or a number of bytes, or off"
        )
    };
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "pb" | "p" => 1_000_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        _ => return Err(bad()),
    };
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(multiplier).ok_or_else(bad)?
    } else {
        let value: f64 = number.parse().map_err(|_| bad())?;
        #[allow(clippy::cast_precision_loss)] // sizes far below 2^53 bytes per unit
        let bytes = (value * multiplier as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        bytes as u64
    };
    if bytes == 0 {
        return Err(bad());
    }
    Ok(bytes)
}

/// The monthly traffic quota as last set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quota {
    /// One more at every change.
    pub version: u64,
    /// Bytes (received and sent) a node may use in a month; 0: off.
    pub bytes: u64,
}

/// One rule's threshold as last set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Threshold {
    /// One more at every change of this rule.
    pub version: u64,
    /// Percent; 0: the rule is off.
    pub percent: u8,
}

/// One alert episode: a node's figure above a threshold, until it falls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// The node (PeerId, base58).
    pub node: String,
    /// Its name, as the owner knows it.
    pub node_name: String,
    pub rule: Rule,
    /// Unix seconds when the node opened it.
    pub opened_at: u64,
    /// The figure then, percent (rounded).
    pub value: u8,
    /// What the figure is about (the mount of a disk), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The threshold it crossed (100 for [`Rule::Traffic`]: its `value` is the percentage of
    /// the quota used).
    pub threshold: u8,
    /// [`Rule::Traffic`]: the month's bytes then.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub used_bytes: u64,
    /// [`Rule::Traffic`]: the quota it crossed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quota_bytes: u64,
    /// A leader's bot marked the alert sent (before sending it).
    #[serde(default)]
    pub alert_sent: bool,
    /// Unix seconds when the figure fell back below the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<u64>,
    /// A leader's bot marked the recovery sent (before sending it).
    #[serde(default)]
    pub recovery_sent: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Episode {
    /// The episode's key in [`AlertState::episodes`]: sorts by opening time first.
    pub fn key(&self) -> String {
        format!(
            "{:020}/{}/{}",
            self.opened_at,
            self.node,
            self.rule.as_str()
        )
    }

    /// Still open (not recovered).
    pub fn is_open(&self) -> bool {
        self.recovered_at.is_none()
    }

    /// The alert or the recovery still has to be sent.
    pub fn is_pending(&self) -> bool {
        !self.alert_sent || (self.recovered_at.is_some() && !self.recovery_sent)
    }

    fn merge(&mut self, other: &Episode) {
        // Written by one node only, so the descriptive fields agree; the max keeps the merge
        // deterministic if they ever did not.
        if (
            other.value,
            &other.detail,
            &other.node_name,
            other.threshold,
            other.used_bytes,
            other.quota_bytes,
        ) > (
            self.value,
            &self.detail,
            &self.node_name,
            self.threshold,
            self.used_bytes,
            self.quota_bytes,
        ) {
            self.value = other.value;
            self.detail.clone_from(&other.detail);
            self.node_name.clone_from(&other.node_name);
            self.threshold = other.threshold;
            self.used_bytes = other.used_bytes;
            self.quota_bytes = other.quota_bytes;
        }
        self.alert_sent |= other.alert_sent;
        self.recovered_at = match (self.recovered_at, other.recovered_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.recovery_sent |= other.recovery_sent;
    }
}

/// The alert part of the network settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// Thresholds set by the owner, by rule name; a rule not here uses its default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<Rule, Threshold>,
    /// The monthly traffic quota set by the owner; none: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_quota: Option<Quota>,
    /// Episodes by [`Episode::key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub episodes: BTreeMap<String, Episode>,
}

impl AlertState {
    /// Merges `other` into `self`.
    pub fn merge(&mut self, other: &AlertState) {
        for (rule, theirs) in &other.thresholds {
            let ours = self.thresholds.entry(*rule).or_insert(*theirs);
            if theirs > ours {
                *ours = *theirs;
            }
        }
        self.traffic_quota = self.traffic_quota.max(other.traffic_quota);
        for (key, theirs) in &other.episodes {
            match self.episodes.get_mut(key) {
                Some(ours) => ours.merge(theirs),
                None => {
                    self.episodes.insert(key.clone(), theirs.clone());
                }
            }
        }
        self.trim();
    }

    /// Keeps the episodes within [`EPISODE_RETENTION_SECS`] of the newest, at most
    /// [`MAX_EPISODES`] (the newest by key).
    fn trim(&mut self) {
        let Some(newest) = self.episodes.values().map(|e| e.opened_at).max() else {
            return;
        };
        let oldest_kept = newest.saturating_sub(EPISODE_RETENTION_SECS);
        self.episodes.retain(|_, e| e.opened_at >= oldest_kept);
        while self.episodes.len() > MAX_EPISODES {
            self.episodes.pop_first();
        }
    }

    /// The threshold of `rule` now (percent; 0: off).
    pub fn percent(&self, rule: Rule) -> u8 {
        self.thresholds
            .get(&rule)
            .map_or(rule.default_percent(), |t| t.percent)
    }

    /// A change that sets `rule` to `percent` (0: off) as the rule's next version.
    pub fn with_threshold(&self, rule: Rule, percent: u8) -> AlertState {
        let version = self.thresholds.get(&rule).map_or(0, |t| t.version) + 1;
        AlertState {
            thresholds: BTreeMap::from([(rule, Threshold { version, percent })]),
            ..AlertState::default()
        }
    }

    /// The monthly traffic quota now (bytes; 0: off, the default).
    pub fn quota_bytes(&self) -> u64 {
        self.traffic_quota.map_or(0, |q| q.bytes)
    }

    /// A change that sets the monthly traffic quota to `bytes` (0: off) as its next version.
    pub fn with_quota(&self, bytes: u64) -> AlertState {
        let version = self.traffic_quota.map_or(0, |q| q.version) + 1;
        AlertState {
            traffic_quota: Some(Quota { version, bytes }),
            ..AlertState::default()
        }
    }

    /// The open episode of `node` for `rule`, if any.
    pub fn open_episode(&self, node: &str, rule: Rule) -> Option<&Episode> {
        self.episodes
            .values()
            .rev()
            .find(|e| e.node == node && e.rule == rule && e.is_open())
    }

    /// Episodes whose alert or recovery the leader still has to send, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Episode> {
        self.episodes.values().filter(|e| e.is_pending())
    }

    /// A change that marks `episodes` sent as they are now: the alert, and the recovery of
    /// those recovered.
    pub fn marked_sent<'a>(episodes: impl IntoIterator<Item = &'a Episode>) -> AlertState {
        AlertState {
            thresholds: BTreeMap::new(),
            traffic_quota: None,
            episodes: episodes
                .into_iter()
                .map(|e| {
                    let mut sent = e.clone();
                    sent.alert_sent = true;
                    sent.recovery_sent = e.recovered_at.is_some();
                    (sent.key(), sent)
                })
                .collect(),
        }
    }
}

/// One figure a rule watches, as sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub rule: Rule,
    /// Percent; for [`Rule::Traffic`], the month's bytes.
    pub value: f64,
    /// What it is about (a disk's mount), or empty.
    pub detail: String,
}

/// A node's side of the alert rules: opens its own episodes when a figure has stayed above
/// its threshold for the rule's hold time, and recovers them when it falls
/// [`RECOVERY_MARGIN`] below. The traffic rule opens as soon as the month's bytes exceed the
/// quota and recovers when they no longer do: at the month's reset (the total starts again
/// from zero), or when the quota is raised or turned off. Holds only when each figure first went above (a restart starts
/// the hold again; an open episode is in the settings and survives it).
#[derive(Debug, Clone)]
pub struct Evaluator {
    node: String,
    node_name: String,
    /// Hold time per rule (seconds).
    hold_secs: BTreeMap<Rule, u64>,
    above_since: BTreeMap<Rule, u64>,
}

impl Evaluator {
    pub fn new(node: &str, node_name: &str) -> Self {
        Self {
            node: node.to_owned(),
            node_name: node_name.to_owned(),
            hold_secs: Rule::ALL
                .iter()
                .map(|r| (*r, r.default_hold_secs()))
                .collect(),
            above_since: BTreeMap::new(),
        }
    }

    /// This evaluator with every rule's hold time set to `secs` (a test knob).
    #[must_use]
    pub fn with_hold_secs(mut self, secs: u64) -> Self {
        for hold in self.hold_secs.values_mut() {
            *hold = secs;
        }
        self
    }

    /// The change to the alert state that this round of `figures` at `now` (unix seconds)
    /// calls for, or `None`.
    pub fn evaluate(
        &mut self,
        now: u64,
        figures: &[Figure],
        state: &AlertState,
    ) -> Option<AlertState> {
        let mut change = AlertState::default();
        for figure in figures {
            if figure.rule == Rule::Traffic {
                self.traffic(now, figure, state, &mut change);
                continue;
            }
            let threshold = state.percent(figure.rule);
            let open = state.open_episode(&self.node, figure.rule);
            let above = threshold > 0 && figure.value > f64::from(threshold);
            if above {
                let since = *self.above_since.entry(figure.rule).or_insert(now);
                let held = now.saturating_sub(since) >= self.hold_secs[&figure.rule];
                if open.is_none() && held {
                    let episode = Episode {
                        node: self.node.clone(),
                        node_name: self.node_name.clone(),
                        rule: figure.rule,
                        opened_at: now,
                        value: figure.value.round().clamp(0.0, 100.0) as u8,
                        detail: figure.detail.clone(),
                        threshold,
                        used_bytes: 0,
                        quota_bytes: 0,
                        alert_sent: false,
                        recovered_at: None,
                        recovery_sent: false,
                    };
                    change.episodes.insert(episode.key(), episode);
                }
                continue;
            }
            self.above_since.remove(&figure.rule);
            let recovered = threshold == 0
                || figure.value < f64::from(threshold) - RECOVERY_MARGIN
                || threshold as f64 <= RECOVERY_MARGIN;
            if let (Some(episode), true) = (open, recovered) {
                let mut done = episode.clone();
                done.recovered_at = Some(now);
                change.episodes.insert(done.key(), done);
            }
        }
        (!change.episodes.is_empty()).then_some(change)
    }

    /// The traffic rule for this round's month total `figure`, into `change`.
    fn traffic(&self, now: u64, figure: &Figure, state: &AlertState, change: &mut AlertState) {
        let quota = state.quota_bytes();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a byte count
        let used = figure.value.max(0.0) as u64;
        let open = state.open_episode(&self.node, Rule::Traffic);
        let above = quota > 0 && used > quota;
        match (open, above) {
            (None, true) => {
                #[allow(clippy::cast_precision_loss)] // display only
                let percent = used as f64 * 100.0 / quota as f64;
                let episode = Episode {
                    node: self.node.clone(),
                    node_name: self.node_name.clone(),
                    rule: Rule::Traffic,
                    opened_at: now,
                    value: percent.round().clamp(0.0, 255.0) as u8,
                    detail: figure.detail.clone(),
                    threshold: 100,
                    used_bytes: used,
                    quota_bytes: quota,
                    alert_sent: false,
                    recovered_at: None,
                    recovery_sent: false,
                };
                change.episodes.insert(episode.key(), episode);
            }
            (Some(episode), false) => {
                let mut done = episode.clone();
                done.recovered_at = Some(now);
                change.episodes.insert(done.key(), done);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn figure(rule: Rule, value: f64) -> Figure {
        Figure {
            rule,
            value,
            detail: String::new(),
        }
    }

    fn apply(state: &mut AlertState, change: Option<AlertState>) {
        if let Some(change) = change {
            state.merge(&change);
        }
    }

    #[test]
    fn an_episode_opens_once_and_recovers_below_the_margin() {
        let mut state = AlertState::default();
        let mut node = Evaluator::new("n1", "alpha");
        // RAM 95 % over the default 90: opens at once.
        let change = node.evaluate(10, &[figure(Rule::Ram, 95.0)], &state);
        apply(&mut state, change);
        assert_eq!(state.episodes.len(), 1);
        let episode = state.open_episode("n1", Rule::Ram).unwrap().clone();
        assert_eq!((episode.value, episode.threshold), (95, 90));
        assert!(episode.is_pending());
        // Still above: nothing new. Just under the threshold but within the margin: still open.
        assert!(
            node.evaluate(20, &[figure(Rule::Ram, 97.0)], &state)
                .is_none()
        );
        assert!(
            node.evaluate(30, &[figure(Rule::Ram, 88.0)], &state)
                .is_none()
        );
        // Marked sent by a leader: nothing pending.
        state.merge(&AlertState::marked_sent(
            state.pending().cloned().collect::<Vec<_>>().iter(),
        ));
        assert_eq!(state.pending().count(), 0);
        let change = node.evaluate(40, &[figure(Rule::Ram, 50.0)], &state);
        apply(&mut state, change);
        let done = &state.episodes[&episode.key()];
        assert_eq!(done.recovered_at, Some(40));
        assert!(done.alert_sent && !done.recovery_sent && done.is_pending());
        state.merge(&AlertState::marked_sent(
            state.pending().cloned().collect::<Vec<_>>().iter(),
        ));
        assert_eq!(state.pending().count(), 0);
        // A new crossing is a new episode.
        let change = node.evaluate(50, &[figure(Rule::Ram, 99.0)], &state);
        apply(&mut state, change);
        assert_eq!(state.episodes.len(), 2);
    }

    #[test]
    fn cpu_must_hold_and_off_recovers() {
        let mut state = AlertState::default();
        let mut node = Evaluator::new("n1", "alpha");
        assert!(
            node.evaluate(0, &[figure(Rule::Cpu, 99.0)], &state)
                .is_none()
        );
        assert!(
            node.evaluate(299, &[figure(Rule::Cpu, 99.0)], &state)
                .is_none()
        );
        // A dip resets the hold.
        assert!(
            node.evaluate(300, &[figure(Rule::Cpu, 10.0)], &state)
                .is_none()
        );
        assert!(
            node.evaluate(310, &[figure(Rule::Cpu, 99.0)], &state)
                .is_none()
        );
        let change = node.evaluate(610, &[figure(Rule::Cpu, 99.0)], &state);
        apply(&mut state, change);
        assert!(state.open_episode("n1", Rule::Cpu).is_some());
        // Turning the rule off recovers the open episode.
        state.merge(&state.with_threshold(Rule::Cpu, 0));
        let change = node.evaluate(620, &[figure(Rule::Cpu, 99.0)], &state);
        apply(&mut state, change);
        assert!(state.open_episode("n1", Rule::Cpu).is_none());
        let mut quick = Evaluator::new("n2", "beta").with_hold_secs(0);
        assert!(
            quick
                .evaluate(
                    0,
                    &[figure(Rule::Ram, 1.0)],
                    &state.with_threshold(Rule::Ram, 0)
                )
                .is_none()
        );
    }

    #[test]
    fn thresholds_are_last_writer_wins() {
        let base = AlertState::default();
        assert_eq!(base.percent(Rule::Cpu), 90);
        assert_eq!(base.percent(Rule::Ram), 90);
        assert_eq!(base.percent(Rule::Disk), 90);
        let mut a = base.clone();
        a.merge(&base.with_threshold(Rule::Cpu, 95));
        let mut newer = a.clone();
        newer.merge(&a.with_threshold(Rule::Cpu, 70));
        let mut merged = newer.clone();
        merged.merge(&a);
        assert_eq!(
            merged.percent(Rule::Cpu),
            70,
            "an older version does not come back"
        );
        // Concurrent setters at one version: the larger percentage.
        let mut x = a.clone();
        x.merge(&a.with_threshold(Rule::Cpu, 60));
        x.merge(&a.with_threshold(Rule::Cpu, 75));
        assert_eq!(x.percent(Rule::Cpu), 75);
        assert_eq!(parse_percent("off"), Ok(0));
        assert_eq!(parse_percent("90"), Ok(90));
        assert_eq!(parse_percent("90%"), Ok(90));
        assert!(parse_percent("0").is_err() && parse_percent("101").is_err());
        assert!("gpu".parse::<Rule>().is_err());
    }

    fn episode() -> impl Strategy<Value = Episode> {
        (
            prop_oneof![Just("a"), Just("b")],
            prop_oneof![Just(Rule::Cpu), Just(Rule::Disk), Just(Rule::Traffic)],
            prop_oneof![Just(0u64), Just(5), Just(EPISODE_RETENTION_SECS + 10)],
            any::<bool>(),
            proptest::option::of(1u64..3),
            any::<bool>(),
        )
            .prop_map(
                |(node, rule, opened_at, alert_sent, recovered_at, recovery_sent)| Episode {
                    node: node.into(),
                    node_name: node.into(),
                    rule,
                    opened_at,
                    value: 90,
                    detail: String::new(),
                    threshold: 80,
                    used_bytes: 0,
                    quota_bytes: 0,
                    alert_sent,
                    recovered_at,
                    recovery_sent,
                },
            )
    }

    fn state() -> impl Strategy<Value = AlertState> {
        (
            proptest::collection::btree_map(
                prop_oneof![Just(Rule::Cpu), Just(Rule::Ram)],
                (0u64..3, 0u8..3).prop_map(|(version, percent)| Threshold { version, percent }),
                0..2,
            ),
            proptest::collection::vec(episode(), 0..6),
            proptest::option::of(
                (0u64..3, 0u64..3).prop_map(|(version, bytes)| Quota { version, bytes }),
            ),
        )
            .prop_map(|(thresholds, episodes, traffic_quota)| {
                let mut state = AlertState {
                    thresholds,
                    traffic_quota,
                    episodes: BTreeMap::new(),
                };
                for e in episodes {
                    let mut one = AlertState::default();
                    one.episodes.insert(e.key(), e);
                    state.merge(&one);
                }
                state
            })
    }

    proptest! {
        #[test]
        fn merge_is_a_semilattice(a in state(), b in state(), c in state()) {
            let merged = |x: &AlertState, y: &AlertState| {
                let mut m = x.clone();
                m.merge(y);
                m
            };
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
        }
    }

    #[test]
    fn the_traffic_quota_opens_once_and_recovers_at_the_reset_or_when_raised() {
        const GIB: u64 = 1 << 30;
        let mut state = AlertState::default();
        let mut node = Evaluator::new("n1", "alpha");
        let month = |bytes: u64| [figure(Rule::Traffic, bytes as f64)];
        // Off by default: any total is fine.
        assert_eq!(state.quota_bytes(), 0);
        assert!(node.evaluate(0, &month(u64::MAX / 2), &state).is_none());
        state.merge(&state.with_quota(500 * GIB));
        assert!(node.evaluate(10, &month(500 * GIB), &state).is_none());
        // Crossed: opens at once, with the bytes and the share of the quota.
        let change = node.evaluate(20, &month(600 * GIB), &state);
        apply(&mut state, change);
        let episode = state.open_episode("n1", Rule::Traffic).unwrap().clone();
        assert_eq!(
            (
                episode.value,
                episode.threshold,
                episode.used_bytes,
                episode.quota_bytes
            ),
            (120, 100, 600 * GIB, 500 * GIB)
        );
        // Still over as the month goes on: nothing new.
        assert!(node.evaluate(30, &month(700 * GIB), &state).is_none());
        // The month's reset: the total starts again and the episode recovers.
        let change = node.evaluate(40, &month(1), &state);
        apply(&mut state, change);
        assert_eq!(state.episodes[&episode.key()].recovered_at, Some(40));
        // Over again, then the quota raised above the total: recovered.
        let change = node.evaluate(50, &month(501 * GIB), &state);
        apply(&mut state, change);
        assert!(state.open_episode("n1", Rule::Traffic).is_some());
        state.merge(&state.with_quota(1024 * GIB));
        let change = node.evaluate(60, &month(502 * GIB), &state);
        apply(&mut state, change);
        assert!(state.open_episode("n1", Rule::Traffic).is_none());
        // Turned off: no episode however much.
        state.merge(&state.with_quota(0));
        assert!(node.evaluate(70, &month(5000 * GIB), &state).is_none());
        assert_eq!(state.episodes.len(), 2);
        // Last writer wins; at one version the larger quota.
        let mut x = state.clone();
        x.merge(&state.with_quota(10));
        x.merge(&state.with_quota(20));
        assert_eq!(x.quota_bytes(), 20);
        let mut newer = x.clone();
        newer.merge(&x.with_quota(5));
        newer.merge(&x);
        assert_eq!(
            newer.quota_bytes(),
            5,
            "an older version does not come back"
        );
    }

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("off"), Ok(0));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("500GB"), Ok(500_000_000_000));
        assert_eq!(parse_size("500GiB"), Ok(500 << 30));
        assert_eq!(parse_size("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_size("1.5 tb"), Ok(1_500_000_000_000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        for bad in [
            "",
            "0",
            "0GB",
            "GB",
            "5 XB",
            "-1",
            "1.2.3GB",
            "99999999999TB",
            "abc",
        ] {
            let error = parse_size(bad).unwrap_err();
            assert!(error.starts_with("invalid traffic quota"), "{error}");
        }
    }

    #[test]
    fn old_episodes_are_forgotten() {
        let mut state = AlertState::default();
        let mut node = Evaluator::new("n1", "alpha").with_hold_secs(0);
        for round in 0..(MAX_EPISODES as u64 + 10) {
            let t = round * 10;
            let change = node.evaluate(t, &[figure(Rule::Ram, 99.0)], &state);
            apply(&mut state, change);
            let change = node.evaluate(t + 5, &[figure(Rule::Ram, 1.0)], &state);
            apply(&mut state, change);
        }
        assert_eq!(state.episodes.len(), MAX_EPISODES);
        let change = node.evaluate(
            EPISODE_RETENTION_SECS * 3,
            &[figure(Rule::Ram, 99.0)],
            &state,
        );
        apply(&mut state, change);
        assert_eq!(state.episodes.len(), 1);
    }
}
