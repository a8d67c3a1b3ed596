//! What the event loop tells the leader services (the Telegram bot): who leads, the network
//! settings, and membership events worth telling the owner. Watches carry the latest value;
//! notices go through a bounded broadcast (a slow reader loses the oldest, never blocks the loop).

use std::sync::Arc;

use constella_behaviours::membership::MemberView;
use constella_behaviours::settings::NetworkSettings;
use tokio::sync::{broadcast, watch};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::audit::AuditLog;
use crate::state::StoredSecret;

/// How many notices may wait for the bot.
pub const NOTICE_QUEUE: usize = 64;

pub use constella_behaviours::node::{Leadership, NetworkEvent};

/// The bot's counters, shown by `status`: written by the bot, read by the event loop.
#[derive(Debug, Default)]
pub struct BotMetrics {
    polling: AtomicBool,
    handled: AtomicU64,
    refused: AtomicU64,
    conflicts: AtomicU64,
}

/// A copy of [`BotMetrics`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub polling: bool,
    pub handled: u64,
    pub refused: u64,
    pub conflicts: u64,
}

impl BotMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            polling: self.polling.load(Ordering::Relaxed),
            handled: self.handled.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
        }
    }
    pub fn set_polling(&self, polling: bool) {
        self.polling.store(polling, Ordering::Relaxed);
    }
    pub fn count_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The senders the event loop keeps; the receivers go to the bot.
#[derive(Debug)]
pub struct Signals {
    /// Current leadership (sent on every change).
    pub leadership: watch::Sender<Leadership>,
    /// Current network settings (sent on every change).
    pub settings: watch::Sender<NetworkSettings>,
    /// The member list as this node sees it, sent when a member joins, leaves, goes offline or
    /// comes back, or the leader changes (the web panel's live list).
    pub members: watch::Sender<Vec<MemberView>>,
    /// Membership events, emitted only while this node leads, so the owner hears each once.
    pub notices: broadcast::Sender<NetworkEvent>,
    /// The bot's counters, shown by `status`.
    pub bot: Arc<BotMetrics>,
    /// This node's bot token, for members that fetch it (see [`Signals::with_bot_token`]).
    pub bot_token: watch::Receiver<Option<StoredSecret>>,
    /// The audit log, for what the node does for other members (see [`Signals::with_audit`]).
    pub audit: Option<AuditLog>,
    /// libp2p's own metrics (connections, gossipsub, identify, kad, ping), for `/metrics`.
    pub libp2p_metrics: Option<Libp2pMetrics>,
}

/// The recorder of libp2p's metrics (shared with `/metrics` through its registry).
#[derive(Clone)]
pub struct Libp2pMetrics(pub Arc<libp2p::metrics::Metrics>);

impl std::fmt::Debug for Libp2pMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Libp2pMetrics")
    }
}

impl Signals {
    /// Records a swarm event, and the behaviour events libp2p has metrics for, in libp2p's
    /// metrics (when `/metrics` is on).
    pub fn record_libp2p(
        &self,
        event: &libp2p::swarm::SwarmEvent<constella_behaviours::BehaviourEvent>,
    ) {
        if let Some(metrics) = &self.libp2p_metrics {
            record_libp2p(&metrics.0, event);
        }
    }
}

/// Records a swarm event, and the behaviour events libp2p has metrics for, in `metrics`.
fn record_libp2p(
    metrics: &libp2p::metrics::Metrics,
    event: &libp2p::swarm::SwarmEvent<constella_behaviours::BehaviourEvent>,
) {
    use constella_behaviours::BehaviourEvent;
    use libp2p::metrics::Recorder;
    metrics.record(event);
    if let libp2p::swarm::SwarmEvent::Behaviour(behaviour) = event {
        match behaviour {
            BehaviourEvent::Gossipsub(e) => metrics.record(e),
            BehaviourEvent::Identify(e) => metrics.record(e),
            BehaviourEvent::Kad(e) => metrics.record(e),
            BehaviourEvent::Ping(e) => metrics.record(e),
            _ => {}
        }
    }
}

/// The receiving ends, for the bot.
#[derive(Debug)]
pub struct Watchers {
    pub leadership: watch::Receiver<Leadership>,
    pub settings: watch::Receiver<NetworkSettings>,
    pub members: watch::Receiver<Vec<MemberView>>,
    pub notices: broadcast::Receiver<NetworkEvent>,
    /// For the bot's own notices (a takeover is announced by the new leader's bot).
    pub notices_tx: broadcast::Sender<NetworkEvent>,
}

impl Watchers {
    /// Receivers of the same channels for another bot (after a token change): the latest
    /// leadership and settings, and notices from now on.
    pub fn resubscribe(&self) -> Self {
        Self {
            leadership: self.leadership.clone(),
            settings: self.settings.clone(),
            members: self.members.clone(),
            notices: self.notices_tx.subscribe(),
            notices_tx: self.notices_tx.clone(),
        }
    }
}

impl Signals {
    /// These signals with the node's bot token (a new value whenever it changes), which the
    /// node hands to members that ask for it (`RpcRequest::GetBotToken`).
    #[must_use]
    pub fn with_bot_token(mut self, token: watch::Receiver<Option<StoredSecret>>) -> Self {
        self.bot_token = token;
        self
    }

    /// These signals with the node's audit log: refusals by role and reboots that other
    /// members asked for are recorded in it.
    #[must_use]
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// These signals with libp2p's metrics recorded into `metrics` (`run --metrics-addr`).
    #[must_use]
    pub fn with_libp2p_metrics(mut self, metrics: Arc<libp2p::metrics::Metrics>) -> Self {
        self.libp2p_metrics = Some(Libp2pMetrics(metrics));
        self
    }

    /// New channels: the event loop's senders and the bot's receivers.
    pub fn new(settings: NetworkSettings, bot: Arc<BotMetrics>) -> (Self, Watchers) {
        let (leadership_tx, leadership_rx) = watch::channel(Leadership::default());
        let (settings_tx, settings_rx) = watch::channel(settings);
        let (members_tx, members_rx) = watch::channel(Vec::new());
        let (notices_tx, notices_rx) = broadcast::channel(NOTICE_QUEUE);
        (
            Self {
                leadership: leadership_tx,
                settings: settings_tx,
                members: members_tx,
                notices: notices_tx.clone(),
                bot,
                bot_token: watch::channel(None).1,
                audit: None,
                libp2p_metrics: None,
            },
            Watchers {
                leadership: leadership_rx,
                settings: settings_rx,
                members: members_rx,
                notices: notices_rx,
                notices_tx,
            },
        )
    }
}

impl super::event_loop::EventLoop {
    /// Puts the member list in its watch (the web panel's live list) when what a list shows
    /// changed: a name, a status or the leader. Called on the outputs that can change it, not
    /// per heartbeat; several in one batch cost one comparison each.
    pub(super) fn publish_members(&mut self) {
        let view = self.core.view();
        self.signals.members.send_if_modified(|shown| {
            let same = shown.len() == view.len()
                && shown
                    .iter()
                    .zip(&view)
                    .all(|(a, b)| a.name == b.name && a.status == b.status && a.leader == b.leader);
            if !same {
                *shown = view;
            }
            !same
        });
    }
}
