//! What the running node reports about itself: the answers of `status`, `invite` and the bot's
//! counters. The control socket and the bot use these types; the daemon never uses theirs.

use std::time::Instant;

use constella_behaviours::gossip;
use constella_behaviours::node::Node;
use serde::{Deserialize, Serialize};

pub use constella_behaviours::node::{DetectorStats, Rejections};

use super::signals::MetricsSnapshot;
use crate::state::NetworkState;

/// A reference to a node by name and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub name: String,
    pub node_id: String,
}

/// What `status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub name: String,
    pub node_id: String,
    pub network_id: String,
    pub owner_username: String,
    pub version: String,
    pub protocol_version: u32,
    pub leader: NodeRef,
    pub is_leader: bool,
    /// This node hosts the leader services (the bot) now: it leads, has settled, and sees a
    /// majority.
    #[serde(default)]
    pub hosting: bool,
    /// Set when this node cannot see a majority of the members heard recently: it then does
    /// not host the bot (`status` prints "partitioned: sees 2 of 5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<Partitioned>,
    pub leader_changes: u64,
    pub alive: usize,
    pub offline: usize,
    pub uptime_secs: u64,
    /// Bumped at every start of the daemon: tells a restarted process from the old one.
    #[serde(default)]
    pub incarnation: u32,
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    pub rejected_gossip: Rejections,
    /// What the failure detector did since the start: asks about doubted members, vouches
    /// sent and counted, stalled connections closed (docs/design.md, Failure detector).
    #[serde(default)]
    pub failure_detector: DetectorStats,
    /// The Telegram bot on this node.
    #[serde(default)]
    pub bot: BotReport,
    /// The epoch of the network secret this node uses (0 until the first rotation).
    #[serde(default)]
    pub secret_epoch: u64,
    /// This node's 60-digit PQ4 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `"public"` (reached at its address; also before AutoNAT has answered) or `"private"`
    /// (behind NAT: reached through relays; docs/nat.md).
    #[serde(default = "public")]
    pub reachability: String,
    /// Behind NAT: the names of the members relaying for it (accepted reservations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// Connections through relays and hole punches since the start (docs/nat.md).
    #[serde(default)]
    pub nat: NatCounters,
}

/// `status --json` `nat`: what goes through relays, and how hole punching went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatCounters {
    /// Open connections to members through a relay (`/p2p-circuit`), either way.
    pub relayed_connections: usize,
    /// Bytes this node sent through relays since the start (below noise: what relays forward).
    pub relayed_bytes_sent: u64,
    /// Bytes this node received through relays since the start.
    pub relayed_bytes_received: u64,
    /// Hole punches (DCUtR) that ended on a direct connection.
    pub hole_punches: u64,
    /// Hole punches that failed (the connection stayed relayed).
    pub hole_punch_failures: u64,
}

fn public() -> String {
    "public".to_owned()
}

/// How much of the network a partitioned node sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitioned {
    /// This node and the members alive in its view.
    pub sees: usize,
    /// The members that count: those alive, and those gone silent within the last two minutes.
    pub of: usize,
}

/// The Telegram bot as `status --json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotReport {
    /// The network has a bot token.
    pub enabled: bool,
    /// This node is polling the Bot API now (it leads).
    pub polling: bool,
    /// The owner's Telegram id is pinned.
    pub owner_pinned: bool,
    /// The highest update id handled in the network.
    pub last_update_id: u32,
    /// The interface language ("" is the default, Russian).
    pub language: String,
    /// Updates this node handled for the owner.
    pub handled_updates: u64,
    /// Updates from anyone else that this node refused (without a reply).
    pub refused_updates: u64,
    /// 409 Conflict answers: another process polled the same token.
    pub conflicts: u64,
}

/// A new invite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteReport {
    pub link: String,
    pub expires_at: u64,
    pub ttl: String,
}

/// The answer to `status`, from the core, the rest of the state, and what the Swarm and the
/// bot say (`swarm`: listen addresses and the number of connected peers).
pub(super) fn status(
    core: &Node,
    state: &NetworkState,
    started: Instant,
    swarm: (Vec<String>, usize),
    bot: &MetricsSnapshot,
) -> StatusReport {
    let view = core.view();
    let alive = view.iter().filter(|p| p.is_alive()).count();
    let leader = core.leader();
    let settings = core.settings();
    StatusReport {
        name: state.node.name.clone(),
        node_id: core.local().id.to_base58(),
        network_id: state.network_id.clone(),
        owner_username: state.owner_username.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: gossip::PROTOCOL_VERSION,
        leader: NodeRef {
            name: core.name_of(&leader),
            node_id: leader.to_base58(),
        },
        is_leader: leader == core.local().id,
        hosting: core.leadership().is_local,
        partitioned: core
            .partition(Instant::now())
            .map(|(sees, of)| Partitioned { sees, of }),
        leader_changes: core.leader_changes(),
        alive,
        offline: view.len() - alive,
        uptime_secs: started.elapsed().as_secs(),
        incarnation: state.node.incarnation,
        listen_addrs: swarm.0,
        connected_peers: swarm.1,
        rejected_gossip: core.rejections().clone(),
        failure_detector: core.detector().clone(),
        bot: BotReport {
            enabled: state.bot_token.is_some(),
            polling: bot.polling,
            owner_pinned: settings.owner_user_id.is_some(),
            last_update_id: settings.last_update_id,
            language: settings.language.clone(),
            handled_updates: bot.handled,
            refused_updates: bot.refused,
            conflicts: bot.conflicts,
        },
        secret_epoch: state.secret_epoch,
        fingerprint: view
            .iter()
            .find(|m| m.node_id == core.local().id)
            .and_then(|m| m.fingerprint.clone()),
        reachability: public(),
        relays: Vec::new(),
        nat: NatCounters::default(),
    }
}
