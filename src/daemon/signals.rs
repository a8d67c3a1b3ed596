//! What the event loop tells the leader services (the Telegram bot): who leads, the network
//! settings, and membership events worth telling the owner. Watches carry the latest value;
//! notices go through a bounded broadcast (a slow reader loses the oldest, never blocks the loop).

use std::sync::Arc;

use constella_behaviours::settings::NetworkSettings;
use tokio::sync::{broadcast, watch};

use crate::bot::BotMetrics;

/// How many notices may wait for the bot.
pub const NOTICE_QUEUE: usize = 64;

/// Whether this node should host the leader services now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This node leads, and has been up long enough to know it (see `LEADERSHIP_SETTLE`).
    pub is_local: bool,
    /// The leader's server name.
    pub leader_name: String,
    /// This node is leaving the network: it hands over without announcing it (the next
    /// leader does).
    pub leaving: bool,
}

/// A membership event for the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEvent {
    /// The leader ("Хост") changed.
    LeaderChanged {
        /// The previous leader's name.
        from: String,
        /// The new leader's name.
        to: String,
    },
    /// A node was admitted to the network.
    Joined(String),
    /// A node left the network.
    Left(String),
    /// A member stopped answering.
    Offline(String),
    /// A member that was offline answers again.
    Back(String),
}

/// The senders the event loop keeps; the receivers go to the bot.
#[derive(Debug)]
pub struct Signals {
    /// Current leadership (sent on every change).
    pub leadership: watch::Sender<Leadership>,
    /// Current network settings (sent on every change).
    pub settings: watch::Sender<NetworkSettings>,
    /// Membership events, emitted only while this node leads, so the owner hears each once.
    pub notices: broadcast::Sender<NetworkEvent>,
    /// The bot's counters, shown by `status`.
    pub bot: Arc<BotMetrics>,
}

/// The receiving ends, for the bot.
#[derive(Debug)]
pub struct Watchers {
    pub leadership: watch::Receiver<Leadership>,
    pub settings: watch::Receiver<NetworkSettings>,
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
            notices: self.notices_tx.subscribe(),
            notices_tx: self.notices_tx.clone(),
        }
    }
}

impl Signals {
    /// New channels: the event loop's senders and the bot's receivers.
    pub fn new(settings: NetworkSettings, bot: Arc<BotMetrics>) -> (Self, Watchers) {
        let (leadership_tx, leadership_rx) = watch::channel(Leadership::default());
        let (settings_tx, settings_rx) = watch::channel(settings);
        let (notices_tx, notices_rx) = broadcast::channel(NOTICE_QUEUE);
        (
            Self {
                leadership: leadership_tx,
                settings: settings_tx,
                notices: notices_tx.clone(),
                bot,
            },
            Watchers {
                leadership: leadership_rx,
                settings: settings_rx,
                notices: notices_rx,
                notices_tx,
            },
        )
    }
}
