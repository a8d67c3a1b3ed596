//! Local health awareness: how much a node trusts its own view of silence (Lifeguard's
//! "local health aware probe", HashiCorp memberlist's `awareness.go`).
//!
//! A node judges a member offline by the silence it measured. That silence is only the
//! member's fault if this node was listening the whole time. Two signs say it was not:
//! - **it ran late**: the core asks to be called at an instant ([`crate::node::Output::WakeAt`])
//!   and the next call came well after it. The process was starved, stopped or its event loop
//!   blocked; whatever members sent meanwhile waits unread in its sockets, and the first thing
//!   it handles may well be the timer, before that backlog;
//! - **its asks go unanswered**: none of the members it asked about a doubted member answered
//!   at all (not even "I did not hear it either"), so its own links or process are the likelier
//!   culprit.
//!
//! Each sign raises a score (memberlist's "health multiplier"), up to [`Config::max_health`]
//! (see [`crate::node::Config`]); every two heartbeat intervals without a sign lower it by one.
//! The node's offline bound grows by half an interval per point (memberlist multiplies its
//! probe timeout by score + 1). A healthy node has score 0 and keeps the plain bound, so a
//! silent host is still offline within 3 s; a struggling node is slower to blame others.
//!
//! This module keeps the score and tells lateness; [`crate::node::Node`] applies it: a late
//! call excuses the time it was blind (every member's silence is measured without it, as if
//! this node's clock had stopped) and sends a heartbeat at once, so members that started to
//! doubt this node hear from it as soon as it runs again (its "refutation").
//!
//! [`Config::max_health`]: crate::node::Config::max_health

use std::time::{Duration, Instant};

/// The local health score and the bookkeeping to tell lateness.
#[derive(Debug, Clone)]
pub struct LocalHealth {
    score: u32,
    max: u32,
    /// When the score last changed (rose, or decayed by a step).
    changed: Instant,
    /// The instant the core last asked to be called at.
    wake_at: Instant,
}

impl LocalHealth {
    /// Healthy (score 0) at `now`, the score never above `max` (0: awareness off).
    pub fn new(max: u32, now: Instant) -> Self {
        Self {
            score: 0,
            max,
            changed: now,
            wake_at: now,
        }
    }

    /// Whether the awareness is on ([`crate::node::Config::max_health`] above 0).
    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    /// The core asked to be called at `at` (its last [`crate::node::Output::WakeAt`]).
    pub fn expect_call_by(&mut self, at: Instant) {
        self.wake_at = at;
    }

    /// How long this call at `now` came after the instant asked for, if at least `late_after`
    /// (an earlier call, or a little later, is on time). `None` when the awareness is off.
    pub fn lateness(&self, now: Instant, late_after: Duration) -> Option<Duration> {
        let late = now.saturating_duration_since(self.wake_at);
        (self.enabled() && late >= late_after).then_some(late)
    }

    /// Raises the score by `by` (capped); whether it changed.
    pub fn raise(&mut self, by: u32, now: Instant) -> bool {
        let next = self.score.saturating_add(by).min(self.max);
        self.changed = now;
        let changed = next != self.score;
        self.score = next;
        changed
    }

    /// Lowers the score by one if it has not changed for `every`; whether it did.
    pub fn decay(&mut self, now: Instant, every: Duration) -> bool {
        if self.score == 0 || now < self.changed + every {
            return false;
        }
        self.score -= 1;
        self.changed = now;
        true
    }

    /// The score: 0 is healthy.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// How much longer than the plain bound this node waits before it marks a member offline
    /// by silence: half a heartbeat `interval` per point.
    pub fn stretch(&self, interval: Duration) -> Duration {
        interval / 2 * self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn lateness_counts_only_well_past_the_wake_asked_for() {
        let t0 = Instant::now();
        let mut health = LocalHealth::new(4, t0);
        health.expect_call_by(t0 + SECOND);
        let quarter = SECOND / 4;
        assert_eq!(health.lateness(t0 + SECOND / 2, quarter), None, "early");
        assert_eq!(
            health.lateness(t0 + SECOND * 6 / 5, quarter),
            None,
            "200 ms"
        );
        assert_eq!(
            health.lateness(t0 + SECOND * 3, quarter),
            Some(SECOND * 2),
            "two seconds late"
        );
        let off = LocalHealth::new(0, t0);
        assert_eq!(
            off.lateness(t0 + SECOND * 9, quarter),
            None,
            "awareness off"
        );
    }

    #[test]
    fn the_score_rises_to_its_cap_and_decays_one_step_per_calm_period() {
        let t0 = Instant::now();
        let mut health = LocalHealth::new(4, t0);
        assert_eq!(
            health.stretch(SECOND),
            Duration::ZERO,
            "healthy: plain bound"
        );
        assert!(health.raise(3, t0));
        assert!(health.raise(3, t0), "3 → 4");
        assert!(!health.raise(1, t0), "capped at 4");
        assert_eq!(health.stretch(SECOND), SECOND * 2);
        let calm = SECOND * 2;
        assert!(!health.decay(t0 + SECOND, calm), "not calm for long enough");
        assert!(health.decay(t0 + calm, calm));
        assert!(
            !health.decay(t0 + calm + SECOND, calm),
            "one step per period"
        );
        assert!(health.decay(t0 + calm * 2, calm));
        assert_eq!(health.score(), 2);
        // A new sign restarts the calm period.
        health.raise(1, t0 + calm * 2 + SECOND);
        assert!(!health.decay(t0 + calm * 3, calm));
        for step in 4..=6 {
            health.decay(t0 + calm * step, calm);
        }
        assert_eq!(health.score(), 0);
        assert!(!health.decay(t0 + calm * 9, calm), "healthy stays healthy");
    }
}
