//! Monthly traffic totals per interface: what a VPS provider bills. The sampler adds each
//! round's bytes to `STATE_DIR/history/traffic.json` (written atomically at most once a minute,
//! so a crash loses at most a minute of counting), and the totals start again at 00:00 UTC on
//! the reset day of each month (`run --traffic-reset-day N`, day 1 by default; in a shorter
//! month, its last day). `GetStats` reads the file, so `constella stats` and the bot's usage
//! screen show the totals of any node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use constella_behaviours::rpc::{InterfaceTraffic, MonthlyTraffic};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// The file in the history directory.
pub const TRAFFIC_FILE: &str = "traffic.json";
/// Most interfaces counted (the same bound as the history's).
const MAX_INTERFACES: usize = super::sample::MAX_INTERFACES;
/// Seconds between two writes of the file.
const SAVE_EVERY_SECS: u64 = 60;

/// Parses `--traffic-reset-day`: 1 to 31.
pub fn parse_reset_day(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(day @ 1..=31) => Ok(day),
        _ => Err(format!(
            "invalid reset day {text:?}: a day of the month from 1 to 31 (in shorter months the last day)"
        )),
    }
}

/// 00:00 UTC of the last reset day at or before `now` (unix seconds).
pub fn period_start(now: u64, reset_day: u8) -> u64 {
    let Ok(now_ts) = jiff::Timestamp::from_second(i64::try_from(now).unwrap_or(i64::MAX)) else {
        return 0;
    };
    let today = now_ts.to_zoned(jiff::tz::TimeZone::UTC).date();
    let reset_in = |month_first: Date| -> Date {
        let day = i8::try_from(reset_day)
            .unwrap_or(1)
            .clamp(1, month_first.days_in_month());
        month_first.with().day(day).build().unwrap_or(month_first)
    };
    let this_month = today.first_of_month();
    let mut start = reset_in(this_month);
    if start > today {
        let previous = this_month
            .yesterday()
            .map_or(this_month, |d| d.first_of_month());
        start = reset_in(previous);
    }
    start
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| u64::try_from(z.timestamp().as_second()).unwrap_or(0))
        .unwrap_or(0)
}

/// The totals as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub reset_day: u8,
    /// Unix seconds when the current period started.
    pub since: u64,
    /// Bytes received and sent since then, by interface.
    pub interfaces: BTreeMap<String, (u64, u64)>,
}

impl Totals {
    /// Adds one round's bytes at `now`, starting a new period first if one began.
    pub fn add(&mut self, now: u64, reset_day: u8, bytes: &[(String, u64, u64)]) {
        let start = period_start(now, reset_day);
        if start != self.since || reset_day != self.reset_day {
            self.since = start;
            self.reset_day = reset_day;
            self.interfaces.clear();
        }
        for (name, rx, tx) in bytes {
            if !self.interfaces.contains_key(name) && self.interfaces.len() >= MAX_INTERFACES {
                continue;
            }
            let total = self.interfaces.entry(name.clone()).or_default();
            total.0 = total.0.saturating_add(*rx);
            total.1 = total.1.saturating_add(*tx);
        }
    }

    /// As `GetStats` carries them.
    pub fn report(&self) -> MonthlyTraffic {
        MonthlyTraffic {
            since: self.since,
            reset_day: self.reset_day,
            interfaces: self
                .interfaces
                .iter()
                .map(|(name, (rx, tx))| InterfaceTraffic {
                    name: name.clone(),
                    rx_bytes: *rx,
                    tx_bytes: *tx,
                })
                .collect(),
        }
    }
}

/// The sampler's side: the totals in memory and when they were last written.
#[derive(Debug)]
pub struct Counter {
    file: PathBuf,
    reset_day: u8,
    totals: Totals,
    saved_at: u64,
}

impl Counter {
    /// Resumes the totals in `history_dir` (a missing or unreadable file starts from zero,
    /// with a warning for the unreadable one).
    pub fn open(history_dir: &Path, reset_day: u8) -> Self {
        let file = history_dir.join(TRAFFIC_FILE);
        let totals = match load(&file) {
            Ok(totals) => totals.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, "the traffic totals start again from zero");
                Totals::default()
            }
        };
        Self {
            file,
            reset_day,
            totals,
            saved_at: 0,
        }
    }

    /// Bytes received and sent on every interface this period.
    pub fn month_bytes(&self) -> u64 {
        self.totals.interfaces.values().fold(0u64, |sum, (rx, tx)| {
            sum.saturating_add(*rx).saturating_add(*tx)
        })
    }

    /// Counts one round; writes the file at most once a minute. The error is for the log.
    pub fn add(&mut self, now: u64, bytes: &[(String, u64, u64)]) -> Result<(), String> {
        let before = self.totals.since;
        self.totals.add(now, self.reset_day, bytes);
        if now.saturating_sub(self.saved_at) < SAVE_EVERY_SECS && before == self.totals.since {
            return Ok(());
        }
        self.saved_at = now;
        let bytes = serde_json::to_vec(&self.totals).map_err(|e| e.to_string())?;
        crate::state::write_atomic(&self.file, &bytes).map_err(|e| format!("{e:#}"))
    }
}

fn load(file: &Path) -> Result<Option<Totals>, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is malformed: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// The totals of the node whose history is in `history_dir`, for `GetStats` (`None`: not
/// counted, e.g. sampling is off).
pub fn read(history_dir: &Path) -> Option<MonthlyTraffic> {
    load(&history_dir.join(TRAFFIC_FILE))
        .ok()
        .flatten()
        .map(|t| t.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> u64 {
        let ts: jiff::Timestamp = date.parse().unwrap();
        ts.as_second() as u64
    }

    #[test]
    fn the_period_starts_on_the_reset_day_or_the_months_last() {
        assert_eq!(
            period_start(at("2026-11-30T01:00:00Z"), 1),
            at("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            period_start(at("2026-11-30T01:00:00Z"), 30),
            at("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            period_start(at("2026-11-29T23:59:59Z"), 30),
            at("2026-10-30T00:00:00Z")
        );
        // Day 31 in a 30-day month is its last day; in February, the 28th.
        assert_eq!(
            period_start(at("2026-11-30T00:00:00Z"), 31),
            at("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            period_start(at("2026-03-01T12:00:00Z"), 31),
            at("2026-02-28T00:00:00Z")
        );
        // January with a reset later in the month: December of the year before.
        assert_eq!(
            period_start(at("2026-01-05T00:00:00Z"), 15),
            at("2025-12-15T00:00:00Z")
        );
        assert!(parse_reset_day("0").is_err() && parse_reset_day("32").is_err());
        assert_eq!(parse_reset_day("15"), Ok(15));
    }

    #[test]
    fn totals_add_up_and_start_again_each_period_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut counter = Counter::open(dir.path(), 1);
        let round = vec![("eth0".to_owned(), 100, 10)];
        counter.add(at("2026-11-29T00:00:00Z"), &round).unwrap();
        counter.add(at("2026-11-29T00:00:10Z"), &round).unwrap();
        counter.add(at("2026-11-29T00:01:10Z"), &round).unwrap();
        assert_eq!(counter.month_bytes(), 330);
        let report = read(dir.path()).unwrap();
        assert_eq!(report.since, at("2026-11-01T00:00:00Z"));
        assert_eq!(
            (report.interfaces[0].rx_bytes, report.interfaces[0].tx_bytes),
            (300, 30)
        );
        let mut again = Counter::open(dir.path(), 1);
        again.add(at("2026-12-01T00:00:05Z"), &round).unwrap();
        let report = read(dir.path()).unwrap();
        assert_eq!(report.since, at("2026-12-01T00:00:00Z"));
        assert_eq!(
            report.interfaces[0].rx_bytes, 100,
            "a new month starts from zero"
        );
    }
}
