//! The protocol core of a node: membership, liveness, leadership, joins, settings and the
//! connection rules, as one state machine with no I/O.
//!
//! [`Node::handle`] takes one [`Input`] (something that happened: gossip received and already
//! authenticated, a connection up or down, a dial that failed, a timer, a command) and the
//! current time, and returns every [`Output`] it causes (publish, dial, disconnect, persist,
//! leadership, notices for the owner, answers). The last output of every call is
//! [`Output::WakeAt`]: the instant at which the caller must call again with [`Input::Timer`]
//! (timers are outputs; the core never sleeps). The daemon's event loop only interprets these;
//! the simulator ([`crate::sim`]) drives thousands of cores on a virtual clock with the same
//! code.
//!
//! Rules, each unit-tested below:
//! - **Heartbeats** every [`Config::heartbeat_interval`] (1 s up to 1,000 members, growing with
//!   the square root of the size beyond, see [`Config::for_size`]); `seq = incarnation << 32 |
//!   counter`. Each goes straight to the members that watch this node ([`Output::Heartbeat`],
//!   the beat protocol of [`crate::beat`]), not through gossipsub; its author is the
//!   connection's peer ([`Input::Heartbeat`]). Heartbeats published on gossipsub (older nodes)
//!   are still taken.
//! - **The ring of observers**: members sorted by id form a ring; each alive member is watched
//!   by its [`Config::observers`] (4) nearest alive successors and heartbeats only to them;
//!   the leader heartbeats to every member and every member watches it. A
//!   network of at most five members is a full mesh: everyone heartbeats to and watches
//!   everyone. Only watched members are doubted and timed out by silence; an observer that
//!   times one out publishes a [`crate::gossip::Silent`] verdict, and the others mark it
//!   offline unless they heard it themselves within [`Config::suspect_after`] or know a newer
//!   incarnation (a verdict naming the node itself is answered with a heartbeat to every
//!   connected member). A member newly watched because the ring moved counts as heard at most
//!   one interval before the bound and is doubted at once, so its observers are asked about
//!   it. A member only assumed alive from the state file is watched, and asked for a heartbeat
//!   when its connection comes up, until heard. **Partition probe**: a node that times out
//!   two or more watched members within one bound may be cut off from much of the network,
//!   whose members have no observer on its side; it asks every member it has not heard
//!   lately for an immediate heartbeat ([`crate::gossip::Heartbeat::probe`]) and marks
//!   offline (with a verdict) those that neither answer nor are vouched for within
//!   [`Config::ask_interval`].
//! - **Liveness**: a member is alive from its first valid heartbeat and offline after
//!   [`Config::offline_after`] of silence (2.5 intervals) on a watch; faster evidence: its last connection
//!   closed and the redial was refused (failed within [`Config::refused_within`]; a redial that
//!   times out marks nothing), or it said goodbye (see [`crate::membership`]). A member silent
//!   while connected has its connection closed ([`Output::Disconnect`]) and is redialled; so is
//!   one whose connection stopped answering pings ([`Input::PingFailed`]). A roster exchange
//!   the member itself sent over a direct connection is proof of life like a heartbeat.
//! - **Indirect probes** (SWIM's ping-req, as in Lifeguard): silence is measured from the
//!   latest evidence, which another member may supply. A member not heard directly for
//!   [`Config::suspect_after`] (1.25 intervals) is *doubted*: at once, and then every
//!   [`Config::ask_interval`] (half an interval) while the doubt lasts, a heartbeat to
//!   [`Config::indirect_checks`] (3) connected members, picked at random among the doubted
//!   members' observers (on a ring only they heard them), carries the doubts
//!   ([`crate::gossip::Heartbeat::doubts`]). Each answers
//!   at once, to the asker alone, with a [`crate::gossip::Vouch`]: the doubted members it heard
//!   itself within the offline bound, and how long ago. The asker counts each as heard at the
//!   moment its ask left minus that age, never later than the voucher really heard it, so a
//!   silent host still goes offline [`Config::offline_after`] after the last anyone heard it.
//!   Only direct evidence is vouched with (vouches never chain), and a vouch keeps a member
//!   alive but never revives one marked offline. A connection its peer stays silent on for
//!   [`Config::stalled_after`] (twice the offline bound) is closed and redialled even while
//!   others vouch. One lossy or stalled TCP connection therefore no longer marks its peer
//!   offline; only silence on every path does.
//! - **Redial**: every wanted member ([`Node::wants`]) we are not connected to is dialled, with
//!   a backoff from [`Config::first_redial`] doubling to [`Config::max_redial`]; a closed
//!   connection to a wanted member is redialled at once (the member is then a *suspect*: a
//!   failed dial marks it offline).
//! - **Partial mesh**: on a ring a node wants connections only to its ring neighbours both
//!   ways, the leader (the leader: to everyone), members not alive here, members before the
//!   ring and those a partition probe asks; a connection to any other member (a first contact,
//!   an RPC) is closed once unwanted for [`Config::mesh_grace`], and its loss suspects nothing.
//!   The partition probe dials the members it is not connected to and gives them the full
//!   offline bound to answer.
//! - **Partitions**: a leader hosts the leader services only while it sees a majority of the
//!   last-known members (alive, or silent however long ago: [`Node::partition`]); the
//!   minority side of a partition names a leader but does not poll the bot, for as long as
//!   the partition lasts.
//! - **Settle**: a node that just started hosts the leader services only once every member
//!   answered or [`Config::settle`] has passed, so a restarted node never polls the bot next to
//!   the real leader.
//! - **Standing down**: on a graceful stop the node says goodbye, stops electing itself and
//!   hands over without announcing it; it exits after [`Config::drain`].
//! - **Eager heartbeats**: a member that subscribes (a restart, a reconnect, a first contact)
//!   gets a heartbeat of its own at once and a roster summary ([`Output::Sync`]), which carries
//!   the settings. Nothing is published for it: every member a newcomer connects to publishing
//!   its settings to the whole network made a join cost O(members²) gossip messages, each
//!   with a signature to check.
//! - **Owner notices** (joined, left, offline, back) are emitted only by the node that led before
//!   or after the change, so exactly one bot tells the owner.
//! - **Roster and settings**: merged by their commutative rules; published on every change and
//!   exchanged pairwise (push-pull) with one random connected member every
//!   [`Config::sync_interval`], with a member that (re)subscribes, and with the sender of a valid
//!   message from a node not yet in our list (a join we missed).
//! - **Strangers**: a connection from a non-member is closed after [`Config::stranger_idle`]
//!   (long enough for a Join), or [`Config::stranger_grace`] after a refused request.
//! - **Joins**: a token is single-use because the core handles one input at a time; an
//!   admission is answered only after it is durably written ([`Output::Persist`] with an
//!   [`Ack`]) and undone if the write fails.
//! - **Join confirmation**: a joiner that says it will confirm ([`Input::JoinRequest`]'s
//!   `confirms`) is answered as above, but its record is held back — never published, synced
//!   or handed to another joiner, no owner notice — until it confirms ([`Input::JoinConfirm`],
//!   sent once its state is written) or a valid gossip message of its own shows it runs. With
//!   neither within [`Config::join_confirm_timeout`] the admission is undone: the record
//!   removed (it was never published, so no tombstone is needed) and the token usable again.
//! - **Leave**: once the departure is durable the tombstone is published and pushed to every
//!   connected member with [`Output::Sync`] (unconnected members are dialled and get it when
//!   they connect); an [`Input::SyncAnswer`] that carries the tombstone back is an
//!   acknowledgement. [`Output::LeaveDone`] answers at the first acknowledgement or after
//!   [`Config::leave_ack_timeout`], saying which ([`LeaveOutcome`]). A member keeps a departed
//!   node's connection for [`Config::stranger_grace`] and answers its push with the tombstone
//!   alone, so the acknowledgement reaches it even when the gossiped tombstone came first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::gossip::{
    Doubt, Goodbye, GossipBody, Heard, Heartbeat, KeyUpdateBytes, MemberRecord, RosterUpdate,
    Rotation, Silent, SilentMember, Vouch,
};
use crate::health::LocalHealth;
use crate::join::JoinRefusal;
use crate::membership::{
    Change, HeartbeatRejection, Membership, OfflineReason, RosterDigest, Status,
};
use crate::network_keys::Pq4Card;
use crate::settings::{NetworkSettings, SettingsUpdate};
use crate::table::PeerTable;

/// Timings and limits of the rules. [`Config::default`] is what a daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often this node publishes a heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a member is offline (three heartbeat intervals).
    pub offline_after: Duration,
    /// How often the roster and settings are exchanged with one random member.
    pub sync_interval: Duration,
    /// First wait before redialling an unreachable member.
    pub first_redial: Duration,
    /// Longest wait between two dials of an unreachable member.
    pub max_redial: Duration,
    /// How long `leave` and a graceful stop keep running so the last message goes out.
    pub drain: Duration,
    /// On a graceful stop, the leader services (the bot) are told to stop this long before the
    /// goodbye goes out, so the bot has dropped its poll before the next leader starts one.
    pub handover_gap: Duration,
    /// How long a connection from a non-member may stay open (long enough for a Join).
    pub stranger_idle: Duration,
    /// How long a refused stranger's connection stays open so the refusal reaches it.
    pub stranger_grace: Duration,
    /// Most strangers waiting to be disconnected; beyond this a new one is cut off at once.
    pub max_strangers: usize,
    /// A started node hosts the leader services after every member answered, or this long.
    pub settle: Duration,
    /// How long an admitted joiner that said it will confirm has to do so before its
    /// admission is undone.
    pub join_confirm_timeout: Duration,
    /// How long `leave` waits for a member to acknowledge the tombstone before it reports
    /// that none did.
    pub leave_ack_timeout: Duration,
    /// Used and expired invites are forgotten after this many seconds.
    pub invite_retention_secs: u64,
    /// Least time between two roster pulls from the same unknown sender.
    pub pull_gap: Duration,
    /// Whether the heartbeat interval and the offline bound follow the network's size as it
    /// changes ([`Config::for_size`]); off for a fixed configuration.
    pub scale_with_size: bool,
    /// How many ring observers watch each member: a member heartbeats to this many nearest
    /// alive successors on the ring of ids and is timed out by them alone;
    /// they publish a [`crate::gossip::Silent`] verdict for the rest. A network of at most
    /// `observers + 1` members is a full mesh (everyone heartbeats to and watches everyone);
    /// 0 keeps the full mesh at any size. See [`Membership::set_observers`].
    pub observers: usize,
    /// How many connected members a node asks about a member it doubts (not heard directly for
    /// [`Config::suspect_after`]): the indirect probe of the failure detector. Lifeguard's
    /// default (memberlist's `IndirectChecks`).
    pub indirect_checks: usize,
    /// The highest local health score ([`crate::health`], Lifeguard's local health
    /// awareness): each point lengthens this node's offline bound by half an interval while
    /// it runs late or its asks go unanswered. 0 turns the awareness off (the plain bound
    /// always, and no excuse for time this node was not running).
    pub max_health: u32,
    /// A redial of a suspect that fails sooner than this was refused by a live host (the
    /// process is gone): the member is offline at once. A slower failure is a timeout, which
    /// says nothing a partition would not also say: the heartbeat silence decides.
    pub refused_within: Duration,
    /// The leader rotates the network secret once the current one is this old (seed 004 §8:
    /// every 7 days), counted from the rotation that made it, or from the leader's start for a
    /// network never rotated.
    pub rotation_interval: Duration,
    /// The leader, learning that a member departed, waits this long before it rotates for it:
    /// a removal's own rotation (made by the remover, published right after the tombstone)
    /// usually arrives meanwhile, and then none is needed.
    pub departure_rotation_grace: Duration,
    /// On a ring, how long a connection to a member this node does not want (see
    /// [`Node::wants`]) stays open before it is closed: long enough for what opened it (a
    /// join's first contact, a partition probe, a tombstone push, an RPC) to finish, and for
    /// both ends' views of the ring to agree again after a change.
    pub mesh_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self::for_size(1)
    }
}

impl Config {
    /// Direct silence after which a member is doubted and [`Config::indirect_checks`] other
    /// members are asked whether they heard it: one and a quarter heartbeat intervals (a
    /// heartbeat late by a quarter interval, or missed).
    pub fn suspect_after(&self) -> Duration {
        self.heartbeat_interval * 5 / 4
    }

    /// While a member is doubted, the helpers are asked again this often: half a heartbeat
    /// interval, so two or three asks are under way before the offline bound and one lost or
    /// late answer is covered by the next.
    pub fn ask_interval(&self) -> Duration {
        self.heartbeat_interval / 2
    }

    /// Direct silence after which a connection is closed and redialled even while other
    /// members vouch for its peer (a connection stalled for good, or one way only): twice
    /// [`Config::offline_after`].
    pub fn stalled_after(&self) -> Duration {
        self.offline_after * 2
    }

    /// A call that comes this long or longer after the instant the core asked for
    /// ([`Output::WakeAt`]) says this node was not running meanwhile ([`crate::health`]): a
    /// quarter interval.
    pub fn late_after(&self) -> Duration {
        self.heartbeat_interval / 4
    }

    /// Silence deadlines (a doubt, an offline bound) are checked on a grid of this step from
    /// the node's start, heartbeats sent on it: an eighth of an interval. A deadline is seen
    /// at most this late (a silent host is offline by 2.625 s instead of 2.5 s), and a node
    /// wakes a few times per interval, not twice per member (at 100 members that was 200
    /// wakes a second, each a scan of the list).
    pub fn wake_grain(&self) -> Duration {
        self.heartbeat_interval / 8
    }

    /// The local health score falls by one after this long without a sign of trouble: two
    /// heartbeat intervals (from the highest score, healthy again after 8 s).
    pub fn health_calm(&self) -> Duration {
        self.heartbeat_interval * 2
    }

    /// Networks up to this size heartbeat every second.
    pub const BASE_SIZE: usize = 1000;

    /// The configuration for a network of `members` nodes. Up to [`Config::BASE_SIZE`] members
    /// the heartbeat interval is 1 s and a member is offline after 2.5 s of silence (a silent
    /// host is offline everywhere 1.5–2.625 s after it vanished, the deadline checked on the
    /// wake grid, plus one gossip hop for the members that learn it from its observers'
    /// verdict). A member heartbeats to [`Config::observers`] ring successors, so what it
    /// sends and receives does not grow with the size; the leader's heartbeat to
    /// every member does, and beyond [`Config::BASE_SIZE`] the interval grows with
    /// `sqrt(members / 1000)` (4,000 members: 2 s) to keep it in bounds. A refused redial or
    /// a goodbye still marks a member offline at once.
    pub fn for_size(members: usize) -> Self {
        let base = Duration::from_secs(1);
        let scale = (members.max(1) as f64 / Self::BASE_SIZE as f64)
            .sqrt()
            .max(1.0);
        let heartbeat_interval = base.mul_f64(scale);
        Self {
            heartbeat_interval,
            offline_after: heartbeat_interval * 5 / 2,
            sync_interval: Duration::from_secs(30),
            first_redial: Duration::from_millis(500),
            max_redial: Duration::from_millis(1500),
            drain: Duration::from_secs(1),
            handover_gap: Duration::from_millis(100),
            stranger_idle: Duration::from_secs(12),
            stranger_grace: Duration::from_millis(500),
            max_strangers: 256,
            settle: Duration::from_secs(4),
            leave_ack_timeout: Duration::from_secs(3),
            join_confirm_timeout: Duration::from_secs(15),
            invite_retention_secs: 7 * 24 * 3600,
            pull_gap: Duration::from_secs(2),
            scale_with_size: true,
            refused_within: Duration::from_secs(1),
            observers: 4,
            indirect_checks: 3,
            max_health: 4,
            rotation_interval: Duration::from_secs(7 * 24 * 3600),
            departure_rotation_grace: Duration::from_secs(2),
            mesh_grace: Duration::from_secs(10),
        }
    }
}

/// A node whose local health score is above 0 redials the members offline in its view on a
/// backoff capped this many times higher than [`Config::max_redial`] (12 s instead of 1.5 s):
/// revived, but without a handshake every second and a half with each of them.
pub const UNHEALTHY_REDIAL_STRETCH: u32 = 8;

/// Most members one heartbeat asks about (a base58 id is about 55 bytes on the wire; a vouch
/// answering them all stays below the beat protocol's 8 KiB frame).
pub const MAX_DOUBTS: usize = 48;

/// This node as the core knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// This node's PeerId.
    pub id: PeerId,
    /// Its server name.
    pub name: String,
    /// Its leader priority.
    pub priority: u32,
    /// Bumped at every start (the high half of heartbeat sequence numbers).
    pub incarnation: u32,
    /// Addresses announced in heartbeats (public address first, then listen addresses).
    pub addrs: Vec<String>,
}

/// An invite this node issued. Only the token's SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Lowercase hex SHA-256 of the token.
    pub token_sha256: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the token is refused from then on.
    pub expires_at: u64,
    /// When it was used, and by which node.
    pub used_at: Option<u64>,
    /// The node it admitted (base58 PeerId).
    pub used_by: Option<String>,
}

/// What a node starts from: the parts of its state file that the core rules on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Every member record, tombstones included (this node's own among them).
    pub records: Vec<MemberRecord>,
    /// Members that were alive when this node last stopped.
    pub alive: Vec<PeerId>,
    /// The network settings.
    pub settings: NetworkSettings,
    /// The invites this node issued.
    pub invites: Vec<Invite>,
}

/// What the core persists: the parts of the state file that its rules change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every record, tombstones included, with the status of each current member.
    pub members: Vec<(MemberRecord, Status)>,
    /// The network settings.
    pub settings: NetworkSettings,
    /// The invites this node issued.
    pub invites: Vec<Invite>,
    /// True once this node has left (the secret must then be deleted).
    pub left: bool,
}

/// Why a write is awaited: the answer that waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ack {
    /// An invite was recorded ([`Input::IssueInvite`] with this request number).
    Invite(u64),
    /// A joiner was admitted: it is answered once this is durable.
    Admission(PeerId),
    /// This node left: the departure is on disk before `leave` reports success.
    Leave,
}

/// What the owner hears about (through the leader's bot).
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
    /// A container exited unexpectedly or restarts in a loop (sent by its node to the leader).
    Container(crate::rpc::ContainerAlert),
}

/// Whether this node should host the leader services (the bot) now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This node leads, has settled, and is not leaving.
    pub is_local: bool,
    /// The leader's server name.
    pub leader_name: String,
    /// This node is stopping or leaving: it hands over without announcing it.
    pub leaving: bool,
}

/// Why a gossip message was refused; counted by reason in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The HMAC under the network secret does not verify.
    BadMac,
    /// The gossipsub signer is not the body's author.
    WrongSigner,
    /// The author is not a current member.
    NonMember,
    /// A heartbeat or goodbye with an old sequence number.
    Replay,
    /// Too large, or not a well-formed envelope or body.
    Malformed,
    /// A protocol version more than one away from ours.
    IncompatibleVersion,
}

/// What the failure detector did (see the module documentation, "Indirect probes").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    /// Heartbeats sent carrying doubts (asks).
    pub asks: u64,
    /// Vouches this node sent in answer to another member's doubts.
    pub vouches_sent: u64,
    /// Vouches that kept a member alive here (newer evidence than this node had).
    pub vouches_counted: u64,
    /// Connections closed because their peer was silent on them past
    /// [`Config::stalled_after`] while others vouched for it.
    pub stalled_closed: u64,
    /// Answers to another member's doubts saying this node heard none of them either (a
    /// "nack": the asker learns its ask arrived).
    #[serde(default)]
    pub nacks_sent: u64,
    /// Asks that no helper answered at all before the next ask (a sign of this node's own
    /// trouble, [`crate::health`]).
    #[serde(default)]
    pub unanswered_asks: u64,
    /// Times this node was called [`Config::late_after`] or more after the instant it asked
    /// for: it was not running (starved, stopped, its loop blocked).
    #[serde(default)]
    pub late_wakes: u64,
    /// The latest of those, in milliseconds.
    #[serde(default)]
    pub longest_late_ms: u64,
    /// The local health score now (0: healthy, the plain offline bound; see [`crate::health`]).
    #[serde(default)]
    pub health: u32,
    /// Partition probes sent: this node lost two or more of the members it watches within
    /// one offline bound and asked every member for a sign of life.
    #[serde(default)]
    pub probes: u64,
    /// Connections closed because this node no longer wanted them (the partial mesh: neither a
    /// ring neighbour nor the leader, for [`Config::mesh_grace`]).
    #[serde(default)]
    pub unwanted_closed: u64,
}

/// Counts of refused gossip messages, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejections {
    /// See [`Refusal::BadMac`].
    pub bad_mac: u64,
    /// See [`Refusal::WrongSigner`].
    pub wrong_signer: u64,
    /// See [`Refusal::NonMember`].
    pub non_member: u64,
    /// See [`Refusal::Replay`].
    pub replay: u64,
    /// See [`Refusal::Malformed`].
    pub malformed: u64,
    /// See [`Refusal::IncompatibleVersion`].
    pub incompatible_version: u64,
}

impl Rejections {
    fn count(&mut self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::BadMac => &mut self.bad_mac,
            Refusal::WrongSigner => &mut self.wrong_signer,
            Refusal::NonMember => &mut self.non_member,
            Refusal::Replay => &mut self.replay,
            Refusal::Malformed => &mut self.malformed,
            Refusal::IncompatibleVersion => &mut self.incompatible_version,
        };
        *counter += 1;
    }
}

/// The roster and settings one node sends another in a pairwise exchange.
///
/// Most exchanges find both lists equal, so an exchange starts with a *summary*: the digest of
/// the records without the records. The answer is a summary too when the digests agree, else
/// the full list with `pull` set, and the asker then sends its own full list, so each side
/// ends with both. Records, settings and rotation merge the same way whichever message
/// carries them; settings and the rotation always travel (they are small, and the bot's
/// update counter in the settings moves often).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMessage {
    /// Every record the sender knows, tombstones included; empty in a summary.
    pub records: Vec<MemberRecord>,
    /// The sender's settings.
    pub settings: NetworkSettings,
    /// The last secret rotation the sender adopted, for a member that missed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// The digest of the sender's full list ([`Membership::records_digest`]). With `records`
    /// empty, the message is a summary. Absent from older nodes, which always send the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<RosterDigest>,
    /// Set on a full answer to a summary whose digest differed: the asker should send its full
    /// list too (the answerer may lack some of its records).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl SyncMessage {
    /// `records` alone: default settings, no rotation, no digest, no pull.
    pub(crate) fn member_list(records: Vec<MemberRecord>) -> Self {
        Self {
            records,
            settings: NetworkSettings::default(),
            rotation: None,
            digest: None,
            pull: false,
        }
    }

    /// Whether the records were left out ([`SyncMessage::digest`]).
    pub fn is_summary(&self) -> bool {
        self.records.is_empty() && self.digest.is_some()
    }
}

/// What the core grants an admitted joiner; the daemon adds the secrets to make the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The joiner's record.
    pub record: MemberRecord,
    /// The member list, the joiner included.
    pub members: Vec<MemberRecord>,
    /// The network settings.
    pub settings: NetworkSettings,
}

/// Something that happened, for [`Node::handle`].
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A deadline given by [`Output::WakeAt`] has come (calling early is harmless).
    Timer,
    /// A connection to `peer` was established (the first, or another one).
    Connected(PeerId),
    /// The last connection to `peer` closed.
    Disconnected(PeerId),
    /// A dial of `peer` failed (not one skipped because a connection exists).
    DialFailed(PeerId),
    /// A connection to `peer` stopped answering pings: it is closed and redialled.
    PingFailed(PeerId),
    /// `peer` subscribed to the gossip topic.
    Subscribed(PeerId),
    /// A gossip message whose network MAC verified, with the author gossipsub verified.
    Gossip {
        /// The author whose signature gossipsub checked (`None`: unsigned).
        signer: Option<PeerId>,
        /// The decoded body.
        body: &'a GossipBody,
    },
    /// A gossip message refused before its body could be read (MAC, size, version).
    GossipRefused(Refusal),
    /// A heartbeat that arrived over the beat protocol ([`crate::beat`]) on a connection to
    /// `from`, its AEAD envelope already opened. `from` is the connection's remote (noise
    /// authenticated it), so it takes the place of gossipsub's signature: a heartbeat whose
    /// `node_id` is not `from` is refused. The answer is [`Output::GossipVerdict`] like gossip.
    Heartbeat {
        /// The connection's remote.
        from: PeerId,
        /// The heartbeat.
        heartbeat: &'a Heartbeat,
        /// Where the sender probably sits in this node's member table, if the caller knows:
        /// the sender's [`Node::own_place`], the same in every node whose roster agrees. Only
        /// a hint, checked (a wrong one costs the ordinary lookup); the daemon passes `None`.
        /// The simulator passes it: at a thousand members it saves a cache miss on every
        /// heartbeat.
        place: Option<usize>,
    },
    /// A member sent its roster and settings directly; the answer is [`Output::SyncReply`].
    SyncRequest {
        /// The sender.
        from: PeerId,
        /// What it sent.
        message: &'a SyncMessage,
    },
    /// The answer to an [`Output::Sync`] this node sent.
    SyncAnswer {
        /// The member that answered.
        from: PeerId,
        /// What it answered.
        message: &'a SyncMessage,
    },
    /// A Join request arrived, its network id, name and address already checked by the
    /// daemon (malformed requests are refused there).
    JoinRequest {
        /// The joiner (authenticated by noise).
        peer: PeerId,
        /// The one-time token it presented.
        token: &'a str,
        /// The server name it asks for (valid).
        name: &'a str,
        /// Its public address `host:port` (given, or observed from its connection).
        addr: &'a str,
        /// Its leader priority.
        priority: u32,
        /// Unix seconds now (token expiry).
        unix_now: u64,
        /// The joiner will confirm once its state is written ([`Input::JoinConfirm`]); older
        /// joiners do not, and are admitted for good at once.
        confirms: bool,
        /// The joiner's PQ4 card; it goes into its record. A card not signed by `peer` is
        /// refused ([`JoinRefusal::Invalid`]).
        card: Option<&'a Pq4Card>,
    },
    /// An admitted joiner wrote its state: its admission stands. Answered with
    /// [`Output::JoinAnswer`] (the admission again, or [`JoinRefusal::AdmissionUndone`]).
    JoinConfirm(PeerId),
    /// Record an invite with this token hash; answered by [`Output::InviteRecorded`].
    IssueInvite {
        /// Matches the answer to the request.
        request: u64,
        /// Lowercase hex SHA-256 of the token.
        token_sha256: &'a str,
        /// Unix seconds now.
        unix_now: u64,
        /// Validity in seconds.
        ttl_secs: u64,
    },
    /// A write asked for with an [`Ack`] is durable.
    Persisted(Ack),
    /// A write asked for with an [`Ack`] failed; `error` is one line for a person.
    PersistFailed(Ack, &'a str),
    /// Leave the network: tombstone, secret deleted, exit after the drain.
    Leave,
    /// Stop gracefully (SIGTERM): goodbye, stand down, exit after the drain.
    Stop,
    /// Merge settings from the local bot or CLI; published at once.
    MergeSettings(&'a NetworkSettings),
    /// A request from this non-member was refused: close its connection soon.
    StrangerRefused(PeerId),
    /// The addresses to announce changed (a new listen address).
    Addresses(&'a [String]),
    /// This node's relayed addresses changed (behind NAT: a relay reservation was accepted or
    /// lost; empty when reachable directly): put in its own record with a new version if they
    /// differ, then published and persisted, so every member can dial it through a relay.
    Relays(&'a [String]),
    /// This node's PQ4 card (at start, and after `rotate-keys`): put in its own record with a
    /// new version if the record does not carry it yet, then published and persisted.
    OwnCard {
        /// The card.
        card: &'a Pq4Card,
        /// The chain of custody from the card the record carried (seed 004 §11): key updates,
        /// each signed by the identity before it. Empty for a node's first card.
        key_updates: &'a [KeyUpdateBytes],
    },
    /// The operator removes a member: it is tombstoned as removed (published, persisted) and
    /// the network secret rotated ([`Output::Rotate`]). Not this node (that is
    /// [`Input::Leave`]).
    Remove {
        /// The member.
        peer: PeerId,
        /// Unix seconds now: only invites issued later may admit it again.
        unix_now: u64,
    },
    /// The daemon adopted this rotation (made here, or opened from the network): kept for sync
    /// answers, and published if `publish` (this node made it).
    Rotated {
        /// The rotation.
        rotation: &'a Rotation,
        /// This node made it: publish it.
        publish: bool,
        /// Unix seconds now (the age of the secret, for the periodic rotation).
        unix_now: u64,
        /// A rotation this node made for the same epoch lost the tiebreak to this one: this
        /// node rotates again if the winner still reaches a node that is no longer a member.
        replaced_ours: bool,
    },
    /// A member's gossip is sealed under a newer epoch than ours: we missed a rotation. Its
    /// roster and last rotation are pulled at once instead of at the next random exchange.
    NewerEpoch(PeerId),
}

/// What the core asks the daemon to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Publish on the gossip topic (the daemon seals it with the network MAC). The large
    /// variants are boxed: every input returns at least one output, and the simulator moves a
    /// hundred million of them a run, so the enum stays small.
    Publish(Box<GossipBody>),
    /// Send this heartbeat straight to each of `to` (connected members) over the beat protocol
    /// ([`crate::beat`]), sealed once under the gossip key. Heartbeats no longer ride gossipsub.
    Heartbeat {
        /// The connected members to send it to.
        to: Vec<PeerId>,
        /// The heartbeat.
        heartbeat: Box<Heartbeat>,
    },
    /// Send our roster and settings to `to` directly and feed its answer back as
    /// [`Input::SyncAnswer`].
    Sync {
        /// The member to exchange with.
        to: PeerId,
        /// What to send.
        message: Box<SyncMessage>,
    },
    /// The answer to an [`Input::SyncRequest`].
    SyncReply {
        /// The member that asked.
        to: PeerId,
        /// What to answer.
        message: Box<SyncMessage>,
    },
    /// Dial `peer` at these addresses (`host:port` or multiaddr text), unless connected.
    Dial {
        /// The member to dial.
        peer: PeerId,
        /// Where it may be reached.
        addrs: Vec<String>,
    },
    /// Close every connection to this peer.
    Disconnect(PeerId),
    /// Write this to the state file. With an ack, feed [`Input::Persisted`] or
    /// [`Input::PersistFailed`] back once the write is durable or failed; without, the write
    /// may be coalesced with later ones.
    Persist(Box<Snapshot>, Option<Ack>),
    /// The verdict on the [`Input::Gossip`] just handled (always the first output of that
    /// input): forward it or not.
    GossipVerdict(Result<(), Refusal>),
    /// The leader changed (logged by the daemon).
    LeaderChanged {
        /// The previous leader.
        previous: PeerId,
        /// The new leader.
        leader: PeerId,
    },
    /// A member's liveness or membership changed (logged by the daemon).
    Membership(Change),
    /// Whether to host the leader services changed.
    Leadership(Leadership),
    /// Tell the owner (only the node whose bot speaks gets these).
    Notice(NetworkEvent),
    /// The network settings changed.
    Settings(Box<NetworkSettings>),
    /// The answer to a Join request.
    JoinAnswer {
        /// The joiner.
        peer: PeerId,
        /// Admitted, or why not.
        answer: Result<Box<Admission>, JoinRefusal>,
    },
    /// An admission was undone: the joiner never confirmed (logged by the daemon).
    AdmissionUndone {
        /// The joiner.
        peer: PeerId,
        /// The name it had asked for.
        name: String,
    },
    /// The answer to [`Input::IssueInvite`].
    InviteRecorded {
        /// The request it answers.
        request: u64,
        /// Recorded durably, or why not.
        result: Result<(), String>,
    },
    /// The answer to [`Input::Leave`]: recorded (and how it was heard), or why not.
    LeaveDone(Result<LeaveOutcome, String>),
    /// Make a new network secret, seal it to every remaining member and adopt it: a member was
    /// removed here; or this node leads and the secret in use reaches a node that left or was
    /// removed, or is older than [`Config::rotation_interval`]; or a rotation this node made
    /// lost the tiebreak to one that still reaches a departed node. The daemon answers with
    /// [`Input::Rotated`].
    Rotate,
    /// A rotation arrived (gossip or sync) from a member: the daemon opens the copy sealed to
    /// this node, if any, and adopts it if it wins ([`Rotation::wins_over`]).
    RotationReceived(Rotation),
    /// This node was called `late` after the instant it asked for: it was not running
    /// meanwhile (logged by the daemon). Its silence bound now excuses that time and stretches
    /// with `health` ([`crate::health`]).
    RanLate {
        /// How late.
        late: Duration,
        /// The local health score after it.
        health: u32,
    },
    /// The drain after a leave or stop is over: stop the node.
    Exit,
    /// Call [`Node::handle`] with [`Input::Timer`] at this instant (always the last output).
    WakeAt(Instant),
}

/// A heartbeat of ours that carried doubts.
#[derive(Debug, Clone, Copy)]
struct Ask {
    seq: u64,
    sent: Instant,
    /// Some helper answered it (a vouch or a nack).
    answered: bool,
}

/// A partition probe under way ([`Node::probe_everyone`]).
#[derive(Debug, Clone)]
struct Probe {
    sent: Instant,
    /// Members asked over an open connection: answered within [`Config::ask_interval`].
    asked: Vec<PeerId>,
    /// Members not connected when the probe left (a partial mesh): dialled, asked once
    /// connected, and given [`Config::offline_after`] for the dial and the answer.
    dialled: Vec<PeerId>,
}

/// When to dial a disconnected member next.
#[derive(Debug, Clone, Copy)]
struct Redial {
    at: Instant,
    backoff: Duration,
}

/// A joiner admitted but not yet answered: its write is in flight.
#[derive(Debug, Clone)]
struct PendingAdmission {
    previous_record: Option<MemberRecord>,
    invites_before: Vec<Invite>,
    admission: Admission,
    /// It will confirm: hold its record back until it does.
    confirms: bool,
    /// The hash of the token it used, to make it usable again if the admission is undone.
    token_sha256: String,
}

/// A joiner answered and admitted, whose confirmation is awaited.
#[derive(Debug, Clone)]
struct Unconfirmed {
    deadline: Instant,
    previous_record: Option<MemberRecord>,
    token_sha256: String,
    admission: Admission,
}

/// How a recorded leave was heard by the rest of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveOutcome {
    /// This member (its name) acknowledged the tombstone; it spreads it to the others.
    Confirmed(String),
    /// No member acknowledged within [`Config::leave_ack_timeout`]: the others list this node
    /// as offline until one of them removes it.
    Unconfirmed,
    /// This node had no other member: nobody to tell.
    Alone,
}

/// Why the node is draining before it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Leave,
    Stop,
}

/// The protocol state of one node. See the module documentation for its rules.
#[derive(Debug)]
pub struct Node {
    config: Config,
    local: LocalNode,
    membership: Membership,
    settings: NetworkSettings,
    invites: Vec<Invite>,
    left: bool,
    started: Instant,
    heartbeat_counter: u32,
    next_heartbeat: Instant,
    next_sync: Instant,
    connected: PeerTable<()>,
    /// Members whose connection closed, with when their redial began.
    suspects: BTreeMap<PeerId, Instant>,
    /// Members whose connection this node is closing itself (stalled, or a ping failed) while
    /// they are alive: the close says nothing about their process, so the redial that follows
    /// is not a suspect's (a fast failure then is no refusal of a dead process).
    closing: BTreeSet<PeerId>,
    /// This node cannot see a majority of the members heard recently: `(sees, of)`.
    partitioned: Option<(usize, usize)>,
    /// Alive members not heard directly for [`Config::suspect_after`]: asked about.
    doubted: BTreeSet<PeerId>,
    /// When this node's own timeouts of watched members happened, within the last offline
    /// bound: two or more start a partition probe ([`Node::probe_everyone`]).
    lost_watched: std::collections::VecDeque<Instant>,
    /// The partition probe under way: when it went out and to whom.
    probe: Option<Probe>,
    /// When the last partition probe went out (one per offline bound at most).
    last_probe: Option<Instant>,
    /// When the next alive member could become doubted (a scan of the members is due).
    next_doubt: Option<Instant>,
    /// While some member is doubted: when the helpers are asked again.
    next_ask: Option<Instant>,
    /// Heartbeats of ours that carried doubts, newest last, kept for
    /// [`Config::stalled_after`] to date the vouches that answer them.
    asks: std::collections::VecDeque<Ask>,
    /// Local health awareness ([`crate::health`]).
    health: LocalHealth,
    /// Failure-detector counters, for status and the tests.
    detector: DetectorStats,
    redials: BTreeMap<PeerId, Redial>,
    /// The same redials ordered by due time, so the next one is found without a scan of the
    /// member list (which cost O(members) per input at a thousand nodes).
    redial_queue: BTreeSet<(Instant, PeerId)>,
    /// Some member may be neither connected nor waiting for a redial (start, a closed
    /// connection, a roster change): the next timer looks at every member. Otherwise it only
    /// looks at the redials that are due.
    sweep: bool,
    /// [`Membership::watch_version`] when the wanted connections were last derived: a
    /// different one sweeps (dials the members newly wanted).
    mesh_version: u64,
    /// Connected members this node does not want, and since when (closed after
    /// [`Config::mesh_grace`]).
    unwanted: BTreeMap<PeerId, Instant>,
    /// Members wanted for a while besides the ring (those a partition probe asks), and until
    /// when.
    on_demand: BTreeMap<PeerId, Instant>,
    strangers: BTreeMap<PeerId, Instant>,
    /// Unknown senders we pulled the roster from, and when.
    pulls: BTreeMap<PeerId, Instant>,
    pending_admissions: BTreeMap<PeerId, PendingAdmission>,
    /// Joiners answered but not yet confirmed: their records are held back.
    unconfirmed: BTreeMap<PeerId, Unconfirmed>,
    /// Invites being written, by request: removed again if the write fails.
    pending_invites: BTreeMap<u64, String>,
    /// Members this node saw go offline: only their return is news for the owner.
    reported_offline: BTreeSet<PeerId>,
    settled: bool,
    /// A durable leave waits for an acknowledgement of its tombstone until this instant.
    leave_ack_deadline: Option<Instant>,
    exit: Option<(Exit, Option<Instant>)>,
    /// A graceful stop sends its goodbye at this instant (after the handover gap).
    goodbye_at: Option<Instant>,
    leadership: Leadership,
    /// [`Membership::elections`] when `leadership.leader_name` was last compared.
    leadership_elections: u64,
    /// The leader last reported with [`Output::LeaderChanged`]; kept only to tell a change,
    /// the leader itself is [`Membership::leader`].
    reported_leader: PeerId,
    leader_changes: u64,
    rejections: Rejections,
    /// The last secret rotation adopted (public: sealed copies), for sync answers.
    last_rotation: Option<Rotation>,
    /// When the secret in use was made, for the periodic rotation (the start of this node
    /// until a rotation tells).
    secret_since: Instant,
    /// A member departed while this node leads: at this instant, rotate if the secret in use
    /// still reaches a departed node.
    departure_check_at: Option<Instant>,
    rng: StdRng,
    out: Vec<Output>,
}

impl Node {
    /// A node starting at `now` from what its state file holds. Members recorded alive there
    /// are assumed alive until silence or a refused dial proves otherwise, so a restarted node
    /// names the network's leader at once. `seed` feeds the random choice of sync partners (the
    /// daemon passes a random one, the simulator its own).
    pub fn new(
        config: Config,
        local: LocalNode,
        restored: Restored,
        now: Instant,
        seed: u64,
    ) -> Self {
        let Restored {
            records,
            alive,
            settings,
            invites,
        } = restored;
        let local_id = local.id;
        let mut config = config;
        if config.scale_with_size {
            let sized = Config::for_size(records.iter().filter(|r| !r.left).count());
            config.heartbeat_interval = sized.heartbeat_interval;
            config.offline_after = sized.offline_after;
        }
        let mut membership = Membership::new(local.id, records, config.offline_after);
        membership.set_observers(config.observers, config.heartbeat_interval);
        let assumed: Vec<PeerId> = alive
            .iter()
            .filter(|id| **id != local.id && membership.is_member(id))
            .copied()
            .collect();
        membership.assume_all_alive(&assumed, now);
        let suspects: BTreeMap<PeerId, Instant> = assumed.into_iter().map(|p| (p, now)).collect();
        let config_suspect_after = config.suspect_after();
        let config_max_health = config.max_health;
        let leadership = Leadership {
            is_local: false,
            leader_name: String::new(),
            leaving: false,
        };
        let mut node = Self {
            next_heartbeat: now,
            next_sync: now + config.sync_interval,
            config,
            local,
            membership,
            settings,
            invites,
            left: false,
            started: now,
            heartbeat_counter: 0,
            connected: PeerTable::new(),
            suspects,
            closing: BTreeSet::new(),
            partitioned: None,
            doubted: BTreeSet::new(),
            lost_watched: std::collections::VecDeque::new(),
            probe: None,
            last_probe: None,
            next_doubt: Some(now + config_suspect_after),
            next_ask: None,
            asks: std::collections::VecDeque::new(),
            health: LocalHealth::new(config_max_health, now),
            detector: DetectorStats::default(),
            redials: BTreeMap::new(),
            redial_queue: BTreeSet::new(),
            sweep: true,
            mesh_version: u64::MAX,
            unwanted: BTreeMap::new(),
            on_demand: BTreeMap::new(),
            strangers: BTreeMap::new(),
            pulls: BTreeMap::new(),
            pending_admissions: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            pending_invites: BTreeMap::new(),
            reported_offline: BTreeSet::new(),
            settled: false,
            leave_ack_deadline: None,
            exit: None,
            goodbye_at: None,
            leadership,
            leadership_elections: u64::MAX,
            reported_leader: local_id,
            leader_changes: 0,
            rejections: Rejections::default(),
            last_rotation: None,
            secret_since: now,
            departure_check_at: None,
            rng: StdRng::seed_from_u64(seed),
            out: Vec::new(),
        };
        // The first call comes as soon as the daemon runs; any within an interval is on time.
        node.health
            .expect_call_by(now + node.config.heartbeat_interval);
        node.leadership.leader_name = node.name_of(&node.membership.leader());
        node.reported_leader = node.membership.leader();
        node
    }

    // ---- read-only views for status, peers, RPC and the simulator ----

    /// This node.
    pub fn local(&self) -> &LocalNode {
        &self.local
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The member table.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The list shown by `peers`, the bot and the `GetPeers` RPC: the member table without the
    /// joiners whose admission is not yet confirmed (held back, see the module documentation).
    pub fn view(&self) -> Vec<crate::membership::MemberView> {
        let mut view = self.membership.view();
        if !self.unconfirmed.is_empty() {
            view.retain(|m| {
                !self
                    .unconfirmed
                    .values()
                    .any(|u| u.admission.record.node_id == m.node_id)
            });
        }
        view
    }

    /// Where this node sits in its own member table: a hint for the members whose roster
    /// agrees of where its entry is (see [`Input::Heartbeat`]).
    pub fn own_place(&self) -> Option<usize> {
        self.membership.own_place()
    }

    /// The leader, as this node sees it (derived from the member table).
    pub fn leader(&self) -> PeerId {
        self.membership.leader()
    }

    /// How many times the leader changed since this node started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes
    }

    /// What the failure detector did: asks, vouches, stalled connections closed.
    pub fn detector(&self) -> &DetectorStats {
        &self.detector
    }

    /// Refused gossip, by reason.
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// The network settings.
    pub fn settings(&self) -> &NetworkSettings {
        &self.settings
    }

    /// The invites this node issued.
    pub fn invites(&self) -> &[Invite] {
        &self.invites
    }

    /// The last leadership told to the daemon.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// How many peers (members or not) this node is connected to.
    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    /// The name of a node, tombstones included; its id if it has no record.
    pub fn name_of(&self, id: &PeerId) -> String {
        self.membership
            .any_record(id)
            .map_or_else(|| id.to_base58(), |r| r.name.clone())
    }

    /// The node named by `target` (a server name or a node id) among current members.
    pub fn resolve(&self, target: &str) -> Option<PeerId> {
        self.membership.find_by_name(target).or_else(|| {
            target
                .parse::<PeerId>()
                .ok()
                .filter(|id| self.membership.is_member(id))
        })
    }

    /// Addresses to dial `peer` at: its recorded public address, then those it announced,
    /// then its relayed addresses if it is behind NAT (except through this node itself).
    pub fn addresses_of(&self, peer: &PeerId) -> Vec<String> {
        let record = self.membership.record(peer);
        let mut addrs: Vec<String> = record.map(|r| r.addr.clone()).into_iter().collect();
        let own_relay = format!("/p2p/{}/p2p-circuit", self.local.id);
        let relays = record.into_iter().flat_map(|r| r.relays.iter());
        for addr in self.membership.announced_addrs(peer).iter().chain(relays) {
            if !addr.contains(&own_relay) && !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        addrs
    }

    /// What the state file should hold now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            members: self.membership.records_with_status(),
            settings: self.settings.clone(),
            invites: self.invites.clone(),
            left: self.left,
        }
    }

    // ---- the one entry point ----

    /// Handles one input at `now` and returns what it causes; the last output is always
    /// [`Output::WakeAt`].
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> std::vec::Drain<'_, Output> {
        self.run(now, input);
        self.out.drain(..)
    }

    /// [`Node::handle`], with the outputs put into `out` (cleared first) instead of the node's
    /// own buffer. A caller that drives many nodes (the simulator) lends each the same buffer:
    /// it stays in the cache, where a thousand separate ones are each cold when written.
    pub fn handle_into(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        std::mem::swap(&mut self.out, out);
        self.run(now, input);
        std::mem::swap(&mut self.out, out);
    }

    /// The body of [`Node::handle`]: leaves the outputs in `self.out`.
    fn run(&mut self, now: Instant, input: Input<'_>) {
        self.out.clear();
        self.check_lateness(now);
        match input {
            Input::Timer => self.on_timer(now),
            Input::Connected(peer) => self.on_connected(peer, now),
            Input::Disconnected(peer) => self.on_disconnected(peer, now),
            Input::DialFailed(peer) => self.on_dial_failed(peer, now),
            Input::PingFailed(peer) => {
                if self.connected.contains_key(&peer) && self.membership.is_member(&peer) {
                    self.closing.insert(peer);
                    self.out.push(Output::Disconnect(peer));
                }
            }
            Input::Subscribed(peer) => self.on_subscribed(peer, now),
            Input::Gossip { signer, body } => {
                let verdict = self.on_gossip(signer, body, now);
                if let Err(refusal) = verdict {
                    self.rejections.count(refusal);
                }
                self.out.insert(0, Output::GossipVerdict(verdict));
            }
            Input::GossipRefused(refusal) => self.rejections.count(refusal),
            Input::Heartbeat {
                from,
                heartbeat,
                place,
            } => {
                let verdict = self.on_heartbeat(from, heartbeat, place, now);
                if let Err(refusal) = verdict {
                    self.rejections.count(refusal);
                }
                self.out.insert(0, Output::GossipVerdict(verdict));
            }
            Input::SyncRequest { from, message } => {
                self.heard_directly(from, now);
                if self.answer_departed(from) {
                    // Acknowledged with its tombstone alone (see `answer_departed`).
                } else if self.membership.is_member(&from) {
                    self.merge_sync(message, now);
                    // A leaver's push carries its tombstone: once merged, the tombstone alone
                    // answers (its acknowledgement), as when the tombstone came first. The
                    // lists now agree, so the reply would otherwise be a bare summary.
                    if !self.answer_departed(from) {
                        let reply = self.sync_reply(message);
                        self.out.push(Output::SyncReply {
                            to: from,
                            message: reply,
                        });
                    }
                }
            }
            Input::SyncAnswer { from, message } => {
                self.heard_directly(from, now);
                self.note_leave_acknowledgement(from, message, now);
                if self.membership.is_member(&from) {
                    self.merge_sync(message, now);
                    // It lacks some of our records: our full list, once (a full request is
                    // never answered with `pull`, so this ends).
                    if message.pull {
                        let own = self.roster_digest();
                        if message.digest != Some(own) {
                            let message = self.sync_message_with(own, true);
                            self.out.push(Output::Sync { to: from, message });
                        }
                    }
                }
            }
            Input::JoinRequest {
                peer,
                token,
                name,
                addr,
                priority,
                unix_now,
                confirms,
                card,
            } => {
                let request = JoinAsk {
                    token,
                    name,
                    addr,
                    priority,
                    confirms,
                    card,
                };
                self.on_join_request(peer, &request, unix_now)
            }
            Input::JoinConfirm(peer) => self.on_join_confirm(peer, now),
            Input::IssueInvite {
                request,
                token_sha256,
                unix_now,
                ttl_secs,
            } => self.issue_invite(request, token_sha256, unix_now, ttl_secs),
            Input::Persisted(ack) => self.on_persisted(ack, now),
            Input::PersistFailed(ack, error) => self.on_persist_failed(ack, error),
            Input::Leave => self.leave(),
            Input::Stop => self.stop(now),
            Input::MergeSettings(settings) => self.merge_settings(settings, true),
            Input::StrangerRefused(peer) => {
                self.expire_stranger(peer, now + self.config.stranger_grace)
            }
            Input::Addresses(addrs) => self.local.addrs = addrs.to_vec(),
            Input::Relays(relays) => {
                if self.membership.set_own_relays(relays).is_some() {
                    self.publish_roster();
                    self.persist(None);
                }
            }
            Input::Remove { peer, unix_now } => self.remove(peer, unix_now, now),
            Input::Rotated {
                rotation,
                publish,
                unix_now,
                replaced_ours,
            } => self.on_rotated(rotation, publish, unix_now, replaced_ours, now),
            Input::NewerEpoch(peer) => {
                if self.membership.is_member(&peer) {
                    self.pull_roster(peer, now);
                }
            }
            Input::OwnCard { card, key_updates } => {
                if self
                    .membership
                    .set_own_card(card.clone(), key_updates)
                    .is_some()
                {
                    self.publish_roster();
                    self.persist(None);
                }
            }
        }
        self.update_leadership(now);
        // A rotation comes after every publish this input caused (the tombstone above all), so
        // those go out under the key every member still holds.
        if let Some(index) = self.out.iter().position(|o| *o == Output::Rotate) {
            let rotate = self.out.remove(index);
            self.out.push(rotate);
        }
        let wake = self.next_wake(now);
        self.health.expect_call_by(wake);
        self.out.push(Output::WakeAt(wake));
    }

    // ---- timers ----

    fn on_timer(&mut self, now: Instant) {
        if let Some((_, Some(at))) = self.exit
            && now >= at
        {
            self.exit = Some((self.exit_kind(), None));
            self.out.push(Output::Exit);
            return;
        }
        if self.health.decay(now, self.config.health_calm()) {
            self.apply_health();
            if self.health.score() == 0 {
                // Healthy again: the members offline here are wanted (redialled) again.
                self.sweep = true;
            }
        }
        if self.membership.refresh_watch(now) {
            // Newly watched members are doubted at once: their observers are asked about them.
            self.next_doubt = Some(now);
        }
        let changes = self.membership.tick(now);
        self.after_own_timeouts(&changes, now);
        self.apply_changes(changes, now);
        self.end_probe(now);
        if self.partitioned.is_some() {
            self.update_leadership(now);
        }
        self.drop_strangers(now);
        self.rotate_if_due(now);
        self.end_unacknowledged_leave(now);
        self.undo_unconfirmed(now);
        if self.goodbye_at.is_some_and(|at| now >= at) {
            self.goodbye_at = None;
            self.heartbeat_counter = self.heartbeat_counter.wrapping_add(1);
            let goodbye = Goodbye {
                node_id: self.local.id,
                seq: self.seq(),
            };
            self.out
                .push(Output::Publish(Box::new(GossipBody::Goodbye(goodbye))));
        }
        if self.exit.is_some() {
            return;
        }
        let heartbeat_due = now >= self.next_heartbeat;
        let reask_due = !self.doubted.is_empty() && self.next_ask.is_none_or(|at| now >= at);
        if heartbeat_due || reask_due {
            // Look again at every ask while some member is doubted: who still is, and whose
            // connection has stalled for good.
            self.next_doubt = Some(now);
        }
        let fresh = self.check_doubts(now);
        if (fresh || reask_due) && !heartbeat_due {
            // A member newly doubted, or the next ask about it, between two heartbeats of our
            // own: ask now (a heartbeat that is due asks itself).
            let helpers = self.helpers();
            self.ask(helpers, now);
        }
        if heartbeat_due {
            self.trim_mesh(now);
            self.publish_heartbeat(now);
            // On the wake grid (see `on_grid`): one interval after this one was due. Never let a
            // slow caller make heartbeats bunch up: one sent more than half an interval late
            // is followed a full interval later.
            let interval = self.config.heartbeat_interval;
            let next = self.on_grid(self.next_heartbeat + interval);
            self.next_heartbeat = if next >= now + interval / 2 {
                next
            } else {
                self.on_grid(now + interval)
            };
        }
        if now >= self.next_sync {
            self.next_sync = now + self.config.sync_interval;
            self.sync_with_random_member();
        }
        self.dial_members(now);
    }

    /// `at`, rounded up to the wake grid: every [`Config::wake_grain`] from this node's start.
    /// Deadlines that fall between are checked at the next grid point, so a node wakes at
    /// most once per grain for them, however many members it has.
    fn on_grid(&self, at: Instant) -> Instant {
        let grain = self.config.wake_grain().as_nanos().max(1);
        let since = at.saturating_duration_since(self.started).as_nanos();
        let ticks = since.div_ceil(grain);
        let offset = u64::try_from(ticks * grain).unwrap_or(u64::MAX);
        self.started + Duration::from_nanos(offset)
    }

    fn exit_kind(&self) -> Exit {
        self.exit.map_or(Exit::Stop, |(kind, _)| kind)
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.next_heartbeat.min(self.next_sync);
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                wake = wake.min(at);
            }
        };
        // Silence deadlines fall wherever members' heartbeats fell, one per member per
        // interval: checked on the grid, a few wakes per interval instead of two per member.
        consider(self.membership.next_expiry().map(|at| self.on_grid(at)));
        consider(self.next_doubt.map(|at| self.on_grid(at)));
        if !self.doubted.is_empty() {
            consider(self.next_ask);
        }
        consider(self.strangers.values().min().copied());
        consider(self.exit.and_then(|(_, at)| at));
        consider(self.goodbye_at);
        consider(self.leave_ack_deadline);
        consider(self.unconfirmed.values().map(|u| u.deadline).min());
        let next_redial = self
            .redial_queue
            .iter()
            .find(|(_, id)| {
                self.membership.is_member(id) && !self.connected.contains_key(id) && self.wants(id)
            })
            .map(|(at, _)| *at);
        consider(next_redial);
        if !self.settled {
            consider(Some(self.started + self.config.settle));
        }
        if self.membership.leader_is_local() {
            consider(self.secret_since.checked_add(self.config.rotation_interval));
        }
        consider(self.departure_check_at);
        consider(self.probe.as_ref().map(|probe| self.probe_deadline(probe)));
        consider(self.on_demand.values().min().copied());
        if self.partitioned.is_some() {
            consider(Some(now + Duration::from_secs(1)));
        }
        wake.max(now)
    }

    // ---- connections ----

    fn on_connected(&mut self, peer: PeerId, now: Instant) {
        self.connected.insert(peer, ());
        self.suspects.remove(&peer);
        self.closing.remove(&peer);
        self.clear_redial(&peer);
        self.membership.on_connected(&peer);
        let probed = self
            .probe
            .as_ref()
            .is_some_and(|probe| probe.dialled.binary_search(&peer).is_ok());
        if (probed || self.membership.is_unheard(&peer)) && self.exit.is_none() {
            // Alive only as the state file said, or not heard alive at all: ask it for a
            // heartbeat at once. On a ring it may never heartbeat to this node (an assumed
            // one is watched, and doubted, until heard).
            self.send_beat_probing(vec![peer], Vec::new(), None, true, now);
        }
        self.push_tombstone(peer);
        if !self.membership.is_member(&peer) {
            // A joiner needs the connection for its Join; any other stranger gets nothing.
            self.expire_stranger(peer, now + self.config.stranger_idle);
        }
    }

    fn on_disconnected(&mut self, peer: PeerId, now: Instant) {
        self.connected.remove(&peer);
        // A stranger that hung up no longer takes a place.
        self.strangers.remove(&peer);
        self.sweep = true;
        let closed_here = self.closing.remove(&peer);
        self.unwanted.remove(&peer);
        if self.membership.is_member(&peer) && self.exit.is_none() && self.wants(&peer) {
            // Its process may have died: a redial tells at once (refused) or in time. Not when
            // this node closed the connection itself: the redial is only a redial then.
            if !closed_here {
                self.suspects.insert(peer, now);
            }
            let addrs = self.addresses_of(&peer);
            self.out.push(Output::Dial { peer, addrs });
        }
    }

    fn on_dial_failed(&mut self, peer: PeerId, now: Instant) {
        if self.connected.contains_key(&peer) {
            return;
        }
        let Some(since) = self.suspects.remove(&peer) else {
            return;
        };
        if now.saturating_duration_since(since) < self.config.refused_within {
            // Its observers tell the others (as for a timeout); every node connected to it
            // doing so would be one signed message per connection (99 for a leader of 100).
            let observer = self.membership.observers_of(&peer).contains(&self.local.id);
            let changes: Vec<Change> = self.membership.on_unreachable(&peer).into_iter().collect();
            self.publish_silent(&changes, observer);
            self.apply_changes(changes, now);
        }
    }

    fn on_subscribed(&mut self, peer: PeerId, now: Instant) {
        if !self.membership.is_member(&peer) || self.exit.is_some() {
            return;
        }
        // A (re)started member: tell it at once that we are alive (one heartbeat to it
        // alone), and what we know (the summary carries the settings).
        self.send_heartbeat(vec![peer], now);
        let message = self.summary_message();
        self.out.push(Output::Sync { to: peer, message });
    }

    /// Dials every wanted member ([`Node::wants`]) we are not connected to whose redial time
    /// has come.
    fn dial_members(&mut self, now: Instant) {
        if self.membership.watch_version() != self.mesh_version {
            // The ring, the leader or the watch moved: other members may be wanted now.
            self.mesh_version = self.membership.watch_version();
            self.sweep = true;
        }
        let due: Vec<PeerId> = if std::mem::take(&mut self.sweep) {
            self.membership
                .remote_members()
                .map(|(id, _)| *id)
                .filter(|id| !self.connected.contains_key(id))
                .filter(|id| self.redials.get(id).is_none_or(|r| r.at <= now))
                .filter(|id| self.wants(id))
                .collect()
        } else {
            // Without a sweep, every wanted member that is not connected has a redial entry:
            // only the due ones need a dial.
            let due: Vec<PeerId> = self
                .redial_queue
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| *id)
                .collect();
            let (due, unwanted): (Vec<PeerId>, Vec<PeerId>) = due
                .into_iter()
                .filter(|id| self.membership.is_member(id) && !self.connected.contains_key(id))
                .partition(|id| self.wants(id));
            for id in &unwanted {
                self.clear_redial(id);
            }
            due
        };
        for peer in due {
            // A node that is not healthy redials members offline in its view on a longer
            // backoff (see `wants`).
            let cap = if self.health.score() > 0
                && self.membership.status(&peer) != Some(Status::Alive)
            {
                self.config.max_redial * UNHEALTHY_REDIAL_STRETCH
            } else {
                self.config.max_redial
            };
            let backoff = self
                .redials
                .get(&peer)
                .map_or(self.config.first_redial, |r| (r.backoff * 2).min(cap));
            self.set_redial(
                peer,
                Redial {
                    at: now + backoff,
                    backoff,
                },
            );
            let addrs = self.addresses_of(&peer);
            self.out.push(Output::Dial { peer, addrs });
        }
    }

    fn set_redial(&mut self, peer: PeerId, redial: Redial) {
        if let Some(old) = self.redials.insert(peer, redial) {
            self.redial_queue.remove(&(old.at, peer));
        }
        self.redial_queue.insert((redial.at, peer));
    }

    fn clear_redial(&mut self, peer: &PeerId) {
        if let Some(old) = self.redials.remove(peer) {
            self.redial_queue.remove(&(old.at, *peer));
        }
    }

    /// Whether this node keeps a connection to the member `peer` open, and redials it: the
    /// partial mesh. In a network small enough for everyone to watch everyone, every member.
    /// On a ring: its successors and the members it watches (its predecessors, the leader,
    /// members not heard since it started); every member if it leads (the leader heartbeats
    /// to everyone); a member not alive here (redialled until it is back, so a healed
    /// partition is seen at once; a node that runs late or whose asks go unanswered,
    /// [`crate::health`], redials those on a backoff [`UNHEALTHY_REDIAL_STRETCH`] times
    /// longer, since its own lateness is the likelier cause of the marks and every dial adds
    /// load: 100 nodes on 2 cores fed a storm of false offline marks and redials this way); a
    /// member before the ring (it expects heartbeats from everyone); and one a partition probe
    /// is asking. Any other connection (a joiner's first
    /// contact, an RPC, a Kademlia query) is closed after [`Config::mesh_grace`], so a
    /// node's connections do not grow with the network's size.
    pub fn wants(&self, peer: &PeerId) -> bool {
        let m = &self.membership;
        m.watches_everyone()
            || m.leader_is_local()
            || *peer == m.leader()
            || m.status(peer) != Some(Status::Alive)
            || m.successors().contains(peer)
            || m.watched().binary_search(peer).is_ok()
            || m.legacy().binary_search(peer).is_ok()
            || self.on_demand.contains_key(peer)
    }

    /// Closes connections to members this node has not wanted for [`Config::mesh_grace`]
    /// ([`Node::wants`]), and forgets on-demand wants whose time is up. Once per heartbeat
    /// interval: a look at each connection.
    fn trim_mesh(&mut self, now: Instant) {
        if !self.on_demand.is_empty() {
            self.on_demand.retain(|_, until| *until > now);
        }
        if self.membership.watches_everyone() || self.exit.is_some() {
            self.unwanted.clear();
            return;
        }
        let grace = self.config.mesh_grace;
        let connected: Vec<PeerId> = self
            .membership
            .members_among(self.connected.keys())
            .copied()
            .collect();
        let mut unwanted = BTreeMap::new();
        for peer in connected {
            if self.wants(&peer) {
                continue;
            }
            let since = self.unwanted.get(&peer).copied().unwrap_or(now);
            if now.saturating_duration_since(since) >= grace {
                if self.closing.insert(peer) {
                    self.detector.unwanted_closed += 1;
                    self.out.push(Output::Disconnect(peer));
                }
            } else {
                unwanted.insert(peer, since);
            }
        }
        self.unwanted = unwanted;
    }

    fn expire_stranger(&mut self, peer: PeerId, at: Instant) {
        if self.membership.is_member(&peer) {
            return;
        }
        if let Some(current) = self.strangers.get_mut(&peer) {
            *current = (*current).min(at);
            return;
        }
        if self.strangers.len() >= self.config.max_strangers {
            // Full: the stranger closest to its deadline (the oldest, or one already refused)
            // makes room, so a flood of idle connections cannot keep a joiner out.
            let oldest = self
                .strangers
                .iter()
                .filter(|(p, _)| !self.pending_admissions.contains_key(*p))
                .min_by_key(|(_, at)| **at)
                .map(|(p, _)| *p);
            match oldest {
                Some(oldest) => {
                    self.strangers.remove(&oldest);
                    self.out.push(Output::Disconnect(oldest));
                }
                None => {
                    self.out.push(Output::Disconnect(peer));
                    return;
                }
            }
        }
        self.strangers.insert(peer, at);
    }

    fn drop_strangers(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .strangers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.strangers.remove(&peer);
            if !self.membership.is_member(&peer) && self.connected.contains_key(&peer) {
                self.out.push(Output::Disconnect(peer));
            }
        }
    }

    // ---- gossip ----

    fn on_gossip(
        &mut self,
        signer: Option<PeerId>,
        body: &GossipBody,
        now: Instant,
    ) -> Result<(), Refusal> {
        let author = body.author();
        if signer != Some(author) {
            return Err(Refusal::WrongSigner);
        }
        if let GossipBody::Heartbeat(heartbeat) = body
            && author != self.local.id
        {
            // From a member that still publishes heartbeats on gossipsub (an older constella).
            return self.on_heartbeat(author, heartbeat, None, now);
        }
        self.confirm_by_evidence(author, now);
        if !self.membership.is_member(&author) {
            // It holds the network secret (the MAC verified) but is not in our list: most
            // likely a join we missed. Ask it for its roster.
            self.pull_roster(author, now);
            return Err(Refusal::NonMember);
        }
        match body {
            GossipBody::Heartbeat(heartbeat) => {
                let connected = &self.connected;
                let change = self
                    .membership
                    .on_heartbeat(heartbeat, || connected.contains_key(&author), now)
                    .map_err(refusal_of)?;
                self.apply_changes(change.into_iter().collect(), now);
            }
            GossipBody::Roster(roster) => {
                let changes = self.membership.merge(&roster.records);
                self.apply_changes(changes, now);
            }
            GossipBody::Settings(update) => self.merge_settings(&update.settings, false),
            GossipBody::Goodbye(goodbye) => {
                let change = self.membership.on_goodbye(goodbye).map_err(refusal_of)?;
                self.apply_changes(change.into_iter().collect(), now);
            }
            GossipBody::Rotation(rotation) => {
                self.out.push(Output::RotationReceived(rotation.clone()));
            }
            GossipBody::Silent(silent) => self.take_silent(silent, now),
        }
        Ok(())
    }

    /// A heartbeat authored by `author` (the connection's remote for the beat protocol, the
    /// signer for gossip). The most frequent message: the member check is the heartbeat's own
    /// gate (one lookup instead of two).
    fn on_heartbeat(
        &mut self,
        author: PeerId,
        heartbeat: &Heartbeat,
        place: Option<usize>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if heartbeat.node_id != author {
            return Err(Refusal::WrongSigner);
        }
        if author == self.local.id {
            return Ok(());
        }
        self.confirm_by_evidence(author, now);
        let connected = &self.connected;
        let connected = || connected.contains_key(&author);
        match self
            .membership
            .take_heartbeat(heartbeat, place, connected, now)
        {
            Ok(taken) => {
                if let Some(change) = taken.change {
                    self.apply_changes(vec![change], now);
                }
                if taken.direct {
                    self.heard_itself_now(author, now);
                }
                if let Some(vouch) = &heartbeat.vouch {
                    self.take_vouch(vouch);
                }
                if !heartbeat.doubts.is_empty() {
                    self.answer_doubts(author, heartbeat, now);
                }
                if heartbeat.probe && self.exit.is_none() {
                    self.send_heartbeat(vec![author], now);
                }
                Ok(())
            }
            Err(HeartbeatRejection::NonMember) => {
                self.pull_roster(author, now);
                Err(Refusal::NonMember)
            }
            Err(rejection) => Err(refusal_of(rejection)),
        }
    }

    /// A member's own message arrived over a direct connection: its process runs and the
    /// path works, as good as a heartbeat (it revives a member silent through a partition
    /// the moment the reconnect's roster exchange arrives, instead of at its next heartbeat).
    fn heard_directly(&mut self, from: PeerId, now: Instant) {
        if !self.connected.contains_key(&from) {
            return;
        }
        let change = self.membership.on_direct(&from, now);
        self.apply_changes(change.into_iter().collect(), now);
        self.heard_itself(from, now);
    }

    // ---- local health awareness (crate::health) ----

    /// A call that comes [`Config::late_after`] or more after the instant this node asked
    /// for: it was not running meanwhile (starved, stopped, its loop blocked), and what
    /// members sent in that time may still wait unread. Their silence in that stretch is not
    /// theirs: it is measured without it (as if this node's clock had stopped), before the
    /// timer can judge anyone. The local health score rises (one point, and one more per
    /// whole interval late), which stretches the offline bound until it decays, and a
    /// heartbeat goes out at once, so members that began to doubt this node hear it runs.
    fn check_lateness(&mut self, now: Instant) {
        let Some(late) = self.health.lateness(now, self.config.late_after()) else {
            return;
        };
        self.detector.late_wakes += 1;
        let late_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX);
        self.detector.longest_late_ms = self.detector.longest_late_ms.max(late_ms);
        self.membership.excuse(late, now);
        // Every doubt is looked at again with the excused silences.
        self.next_doubt = Some(now);
        let whole = late.as_nanos() / self.config.heartbeat_interval.as_nanos().max(1);
        let points = 1 + u32::try_from(whole).unwrap_or(u32::MAX);
        self.health.raise(points, now);
        self.apply_health();
        if self.exit.is_none() {
            self.next_heartbeat = now;
        }
        self.out.push(Output::RanLate {
            late,
            health: self.health.score(),
        });
    }

    /// The offline bound in force: the configured one, stretched by the local health score.
    fn apply_health(&mut self) {
        self.detector.health = self.health.score();
        let stretch = self.health.stretch(self.config.heartbeat_interval);
        self.membership
            .set_offline_after(self.config.offline_after + stretch);
    }

    // ---- the failure detector's indirect probes ----

    /// `peer` may just have been heard over this node's own connection: if the membership
    /// took it as such (not a late copy), it is no longer doubted, and it can be doubted again
    /// only [`Config::suspect_after`] from now.
    fn heard_itself(&mut self, peer: PeerId, now: Instant) {
        let just_now = Duration::from_nanos(1);
        if self.membership.direct_age(&peer, now, just_now).is_none() {
            return;
        }
        self.heard_itself_now(peer, now);
    }

    /// [`Node::heard_itself`] once the membership took `peer`'s message as heard directly now.
    fn heard_itself_now(&mut self, peer: PeerId, now: Instant) {
        self.doubted.remove(&peer);
        let due = now + self.config.suspect_after();
        self.next_doubt = Some(self.next_doubt.map_or(due, |at| at.min(due)));
    }

    /// Once a scan is due: the alive members not heard directly for
    /// [`Config::suspect_after`] are doubted; whether one is newly doubted (to be asked about
    /// at once, [`Node::ask`]). A member silent on a connection for [`Config::stalled_after`]
    /// has the connection closed and redialled, even while others vouch for it.
    fn check_doubts(&mut self, now: Instant) -> bool {
        if self.next_doubt.is_none_or(|at| now < at) {
            return false;
        }
        let (doubted, next) = self.membership.doubted(now, self.config.suspect_after());
        self.next_doubt = next;
        let stalled_after = self.config.stalled_after();
        let mut fresh = false;
        let mut current = BTreeSet::new();
        for (id, silence) in doubted {
            if silence >= stalled_after
                && self.connected.contains_key(&id)
                && self.closing.insert(id)
            {
                self.detector.stalled_closed += 1;
                self.out.push(Output::Disconnect(id));
            }
            fresh |= !self.doubted.contains(&id);
            current.insert(id);
        }
        self.doubted = current;
        fresh
    }

    /// Up to [`Config::indirect_checks`] connected members, none of them doubted, picked at
    /// random (each ask may go to others, so one stalled helper does not silence them all).
    fn helpers(&mut self) -> Vec<PeerId> {
        // Alive ones only: a member marked offline whose connection is still closing would
        // never answer, and an unanswered ask counts against this node's health.
        let usable = |id: &PeerId| {
            *id != self.local.id
                && self.connected.contains_key(id)
                && !self.doubted.contains(id)
                && self.membership.status(id) == Some(Status::Alive)
        };
        let mut candidates: Vec<PeerId> = Vec::new();
        if !self.membership.watches_everyone() {
            // On a ring only a doubted member's observers heard it directly: ask them.
            for doubted in self.doubted.iter().take(MAX_DOUBTS) {
                for observer in self.membership.observers_of(doubted) {
                    if usable(&observer) && !candidates.contains(&observer) {
                        candidates.push(observer);
                    }
                }
            }
        }
        if candidates.is_empty() {
            candidates = self
                .connected
                .keys()
                .filter(|id| usable(id))
                .copied()
                .collect();
        }
        let k = self.config.indirect_checks;
        if candidates.len() > k {
            for i in 0..k {
                let j = self.rng.random_range(i..candidates.len());
                candidates.swap(i, j);
            }
            candidates.truncate(k);
        }
        candidates
    }

    /// A heartbeat to `helpers` carrying every doubted member: each answers at once with a
    /// vouch for those it heard directly within [`Config::offline_after`].
    fn ask(&mut self, helpers: Vec<PeerId>, now: Instant) {
        if helpers.is_empty() || self.doubted.is_empty() {
            return;
        }
        // At most MAX_DOUBTS per ask (a frame stays far below the beat protocol's 8 KiB),
        // from a random place in the list, so every doubted member is asked about in turn.
        let skip = if self.doubted.len() > MAX_DOUBTS {
            self.rng.random_range(0..self.doubted.len())
        } else {
            0
        };
        let doubts = self
            .doubted
            .iter()
            .cycle()
            .skip(skip)
            .take(self.doubted.len().min(MAX_DOUBTS))
            .map(|id| Doubt(*id))
            .collect();
        self.send_beat(helpers, doubts, None, now);
        let seq = self.seq();
        let keep = self.config.stalled_after();
        while self
            .asks
            .front()
            .is_some_and(|ask| now.saturating_duration_since(ask.sent) > keep)
        {
            self.asks.pop_front();
        }
        // The previous ask, if it had the time an answer takes (asks are half an interval
        // apart; one made just before a heartbeat's is not judged), got no answer from any
        // helper, not even a nack: the trouble is likelier this node's own.
        if let Some(previous) = self.asks.back()
            && !previous.answered
            && now.saturating_duration_since(previous.sent) >= self.config.ask_interval()
        {
            self.detector.unanswered_asks += 1;
            self.health.raise(1, now);
            self.apply_health();
        }
        self.asks.push_back(Ask {
            seq,
            sent: now,
            answered: false,
        });
        self.next_ask = Some(now + self.config.ask_interval());
        self.detector.asks += 1;
    }

    /// `asker` doubts some members: vouch at once, to it alone, for those this node heard
    /// itself (not through others, so vouches never chain) within [`Config::offline_after`].
    /// Having heard none of them, it still answers, with an empty vouch (a nack): the asker
    /// learns its ask arrived, so its own links are not the trouble ([`crate::health`]).
    fn answer_doubts(&mut self, asker: PeerId, heartbeat: &Heartbeat, now: Instant) {
        let within = self.config.offline_after;
        let heard: Vec<Heard> = heartbeat
            .doubts
            .iter()
            .take(MAX_DOUBTS)
            .filter(|Doubt(id)| *id != asker)
            .filter_map(|Doubt(id)| {
                let age = self.membership.direct_age(id, now, within)?;
                Some(Heard {
                    node_id: *id,
                    age_ms: u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
                })
            })
            .collect();
        if self.exit.is_some() {
            return;
        }
        if heard.is_empty() {
            self.detector.nacks_sent += 1;
        } else {
            self.detector.vouches_sent += 1;
        }
        let vouch = Vouch {
            asked: heartbeat.seq,
            heard,
        };
        self.send_beat(vec![asker], Vec::new(), Some(vouch), now);
    }

    /// A vouch answering one of our asks: each member it names counts as heard at the moment
    /// we sent the ask minus its age, which is never later than the voucher really heard it
    /// (the voucher answered after our ask left). An answer to an ask we no longer know is
    /// ignored.
    fn take_vouch(&mut self, vouch: &Vouch) {
        let Some(ask) = self
            .asks
            .iter_mut()
            .rev()
            .find(|ask| ask.seq == vouch.asked)
        else {
            return;
        };
        ask.answered = true;
        let asked_at = ask.sent;
        for heard in &vouch.heard {
            let age = Duration::from_millis(u64::from(heard.age_ms));
            let Some(at) = asked_at.checked_sub(age) else {
                continue;
            };
            if self.membership.on_vouch(&heard.node_id, at) {
                self.detector.vouches_counted += 1;
            }
        }
    }

    // ---- the ring: verdicts and the partition probe ----

    /// Members this node itself just timed out. On a ring, the members that do not watch them
    /// learn it only from this node: it publishes a [`Silent`] verdict. Two or more of its
    /// watched members lost within one offline bound look like this node being cut off from
    /// much of the network, where most members have no observer on its side: it probes them
    /// all ([`Node::probe_everyone`]).
    fn after_own_timeouts(&mut self, changes: &[Change], now: Instant) {
        let lost = self.publish_silent(changes, false);
        if lost == 0 {
            return;
        }
        let bound = self.config.offline_after;
        self.lost_watched.extend((0..lost).map(|_| now));
        while self
            .lost_watched
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > bound)
        {
            self.lost_watched.pop_front();
        }
        let probed_lately = self
            .last_probe
            .is_some_and(|at| now.saturating_duration_since(at) < bound);
        if self.lost_watched.len() >= 2 && self.probe.is_none() && !probed_lately {
            self.probe_everyone(now);
        }
    }

    /// On a ring, a [`Silent`] verdict for the members this node itself found silent (in
    /// `changes`), so that those that do not watch them learn it; how many there were. With
    /// `refused` (this node observes them), also those whose redial was refused: in a partial
    /// mesh most members are not connected to a crashed one and hear no refusal of their own. (They mark it offline as
    /// silent, which counts it among the last-known members for the partition rule: the
    /// cautious side.)
    fn publish_silent(&mut self, changes: &[Change], refused: bool) -> usize {
        if self.membership.watches_everyone() || self.exit.is_some() {
            return 0;
        }
        let members: Vec<SilentMember> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Offline(id, OfflineReason::HeartbeatTimeout) => Some(SilentMember {
                    node_id: *id,
                    seq: self.membership.last_seq(id),
                }),
                Change::Offline(id, OfflineReason::Unreachable) if refused => Some(SilentMember {
                    node_id: *id,
                    seq: self.membership.last_seq(id),
                }),
                _ => None,
            })
            .collect();
        for chunk in members.chunks(MAX_DOUBTS) {
            let verdict = Silent {
                from: self.local.id,
                members: chunk.to_vec(),
            };
            self.out
                .push(Output::Publish(Box::new(GossipBody::Silent(verdict))));
        }
        members.len()
    }

    /// The partition probe: every alive member this node has not heard itself within
    /// [`Config::suspect_after`] gets a heartbeat asking for an answer at once; those that
    /// neither answer nor are vouched for within [`Config::ask_interval`] are offline
    /// ([`Node::end_probe`]). A cut-off node so learns in one step which members it can no
    /// longer reach, instead of one ring of observers at a time.
    ///
    /// In a partial mesh most of those members are not connected: they are dialled (wanted
    /// until the probe ends), asked when the connection comes up ([`Node::on_connected`]), and
    /// given [`Config::offline_after`] instead, a dial being a round trip or more.
    fn probe_everyone(&mut self, now: Instant) {
        let members = self
            .membership
            .not_heard_within(now, self.config.suspect_after());
        let (asked, dialled): (Vec<PeerId>, Vec<PeerId>) = members
            .into_iter()
            .partition(|id| self.connected.contains_key(id));
        self.detector.probes += 1;
        self.last_probe = Some(now);
        self.send_beat_probing(asked.clone(), Vec::new(), None, true, now);
        let until = now + self.config.offline_after;
        for peer in &dialled {
            self.on_demand.insert(*peer, until);
            self.clear_redial(peer);
        }
        if !dialled.is_empty() {
            self.sweep = true;
        }
        self.probe = Some(Probe {
            sent: now,
            asked,
            dialled,
        });
    }

    /// When the probe's next group of answers had its time: the asked members after
    /// [`Config::ask_interval`], then the dialled ones after [`Config::offline_after`].
    fn probe_deadline(&self, probe: &Probe) -> Instant {
        if probe.asked.is_empty() {
            probe.sent + self.config.offline_after
        } else {
            probe.sent + self.config.ask_interval()
        }
    }

    /// Once a group of the probe's answers had its time: the members of it that gave no sign
    /// are offline.
    fn end_probe(&mut self, now: Instant) {
        let Some(probe) = self.probe.as_mut() else {
            return;
        };
        let sent = probe.sent;
        let members = if !probe.asked.is_empty() {
            if now < sent + self.config.ask_interval() {
                return;
            }
            std::mem::take(&mut probe.asked)
        } else {
            if now < sent + self.config.offline_after {
                return;
            }
            std::mem::take(&mut probe.dialled)
        };
        if probe.asked.is_empty() && probe.dialled.is_empty() {
            self.probe = None;
        }
        let changes = self.membership.mark_unanswered(&members, sent);
        self.publish_silent(&changes, false);
        self.apply_changes(changes, now);
    }

    /// A [`Silent`] verdict from an observer: each member it names is offline here unless this
    /// node has fresher news of it ([`Membership::on_silent`]). A verdict naming this node is
    /// answered with a heartbeat to every connected member: they hear it is alive.
    fn take_silent(&mut self, silent: &Silent, now: Instant) {
        let fresh = self.config.suspect_after();
        let mut changes = Vec::new();
        let mut refute = false;
        for member in silent.members.iter().take(MAX_DOUBTS) {
            if member.node_id == self.local.id {
                refute = true;
                continue;
            }
            changes.extend(
                self.membership
                    .on_silent(&member.node_id, member.seq, now, fresh),
            );
        }
        self.apply_changes(changes, now);
        if refute && self.exit.is_none() {
            let to: Vec<PeerId> = self
                .membership
                .members_among(self.connected.keys())
                .copied()
                .collect();
            self.send_heartbeat(to, now);
        }
    }

    /// The partition rule as last derived (after the latest input): what the node acts on.
    /// [`Node::partition`] asks it afresh.
    pub fn partitioned(&self) -> Option<(usize, usize)> {
        self.partitioned
    }

    /// `Some((sees, of))` when this node cannot see a majority of the last-known members:
    /// `sees` counts this node and the members alive in its view, `of` also counts members
    /// gone silent, however long ago (a timeout, not a refused redial or a goodbye, which say
    /// the process is down rather than out of reach). With exactly half, the half holding the
    /// first of them in the leader order counts as the majority. A partitioned node does not
    /// host the leader services, so only one side of a partition polls the bot, for as long
    /// as the partition lasts. The price: when a majority of the members vanish silently for
    /// good, the rest never host until the operator removes the dead ones
    /// (`constella remove`) or they return.
    pub fn partition(&self, _now: Instant) -> Option<(usize, usize)> {
        let quorum = self.membership.quorum();
        let partitioned =
            quorum.sees * 2 < quorum.of || (quorum.sees * 2 == quorum.of && !quorum.sees_first);
        partitioned.then_some((quorum.sees, quorum.of))
    }

    fn pull_roster(&mut self, from: PeerId, now: Instant) {
        if from == self.local.id || self.exit.is_some() {
            return;
        }
        if self
            .pulls
            .get(&from)
            .is_some_and(|at| now < *at + self.config.pull_gap)
        {
            return;
        }
        if self.pulls.len() > 1024 {
            self.pulls.clear();
        }
        self.pulls.insert(from, now);
        let message = self.summary_message();
        self.out.push(Output::Sync { to: from, message });
    }

    /// The next heartbeat, straight to the members that watch this node over their open
    /// connections: its ring successors ([`Membership::successors`]); from the
    /// leader, and in a network small enough for the full mesh, to every connected member
    /// (the core keeps a connection to every member it can reach). While some member is
    /// doubted, the copies to [`Config::indirect_checks`] helpers carry the doubts (the ask is
    /// repeated every interval until the doubt ends one way or the other).
    fn publish_heartbeat(&mut self, now: Instant) {
        let helpers = if self.doubted.is_empty() {
            Vec::new()
        } else {
            self.helpers()
        };
        let to: Vec<PeerId> =
            if self.membership.watches_everyone() || self.membership.leader_is_local() {
                self.membership
                    .members_among(self.connected.keys())
                    .filter(|id| !helpers.contains(id))
                    .copied()
                    .collect()
            } else {
                // Not to the leader (unless it is a successor): it times out only its own
                // predecessors, so the copy would be read and dropped, and the leader would
                // read one from every member every interval.
                let mut to: Vec<PeerId> = self.membership.successors().to_vec();
                // Members before the ring time out everyone they do not hear.
                for id in self.membership.legacy() {
                    if !to.contains(id) {
                        to.push(*id);
                    }
                }
                to.retain(|id| self.connected.contains_key(id) && !helpers.contains(id));
                to
            };
        self.send_heartbeat(to, now);
        self.ask(helpers, now);
    }

    fn send_heartbeat(&mut self, to: Vec<PeerId>, now: Instant) {
        self.send_beat(to, Vec::new(), None, now);
    }

    fn send_beat(
        &mut self,
        to: Vec<PeerId>,
        doubts: Vec<Doubt>,
        vouch: Option<Vouch>,
        now: Instant,
    ) {
        self.send_beat_probing(to, doubts, vouch, false, now);
    }

    fn send_beat_probing(
        &mut self,
        to: Vec<PeerId>,
        doubts: Vec<Doubt>,
        vouch: Option<Vouch>,
        probe: bool,
        now: Instant,
    ) {
        self.heartbeat_counter = self.heartbeat_counter.wrapping_add(1);
        if to.is_empty() {
            return;
        }
        let heartbeat = Heartbeat {
            node_id: self.local.id,
            name: self.local.name.clone(),
            priority: self.local.priority,
            addrs: self.local.addrs.clone(),
            seq: self.seq(),
            protocol_version: crate::gossip::PROTOCOL_VERSION,
            uptime_secs: now.duration_since(self.started).as_secs(),
            doubts,
            vouch,
            probe,
        };
        self.out.push(Output::Heartbeat {
            to,
            heartbeat: Box::new(heartbeat),
        });
    }

    fn seq(&self) -> u64 {
        (u64::from(self.local.incarnation) << 32) | u64::from(self.heartbeat_counter)
    }

    /// The settings for peers that just subscribed (published, so spaced out: many restarts
    /// at once are not answered by a storm; one asked for too soon is sent when the gap ends).
    fn publish_settings(&mut self) {
        self.out.push(Output::Publish(Box::new(GossipBody::Settings(
            SettingsUpdate {
                from: self.local.id,
                settings: self.settings.clone(),
            },
        ))));
    }

    fn publish_roster(&mut self) {
        self.out.push(Output::Publish(Box::new(GossipBody::Roster(
            RosterUpdate {
                from: self.local.id,
                records: self.published_records(),
            },
        ))));
    }

    /// The full list, with its digest.
    fn sync_message(&self) -> Box<SyncMessage> {
        self.sync_message_with(self.roster_digest(), true)
    }

    /// The digest of the list alone (see [`SyncMessage`]): what starts an exchange.
    fn summary_message(&self) -> Box<SyncMessage> {
        self.sync_message_with(self.roster_digest(), false)
    }

    /// A sync message whose list has `digest`: with the records when `full`.
    fn sync_message_with(&self, digest: RosterDigest, full: bool) -> Box<SyncMessage> {
        Box::new(SyncMessage {
            records: if full {
                self.published_records()
            } else {
                Vec::new()
            },
            settings: self.settings.clone(),
            rotation: self.last_rotation.clone(),
            digest: Some(digest),
            pull: false,
        })
    }

    /// The digest of [`Node::published_records`], without building the list.
    fn roster_digest(&self) -> RosterDigest {
        self.membership
            .records_digest(|id| self.unconfirmed.contains_key(id))
    }

    /// The answer to `request` once merged: a summary when both lists are now the same, else
    /// the full list, asking for the asker's full list in turn when it sent only a summary.
    fn sync_reply(&self, request: &SyncMessage) -> Box<SyncMessage> {
        let own = self.roster_digest();
        let same = request.digest == Some(own);
        let mut reply = self.sync_message_with(own, !same);
        reply.pull = !same && request.is_summary();
        reply
    }

    fn sync_with_random_member(&mut self) {
        let candidates: Vec<PeerId> = self
            .membership
            .remote_members()
            .map(|(id, _)| *id)
            .filter(|id| self.connected.contains_key(id))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let to = candidates[self.rng.random_range(0..candidates.len())];
        let message = self.summary_message();
        self.out.push(Output::Sync { to, message });
    }

    fn merge_sync(&mut self, message: &SyncMessage, now: Instant) {
        let changes = self.membership.merge(&message.records);
        self.apply_changes(changes, now);
        self.merge_settings(&message.settings, false);
        if let Some(rotation) = &message.rotation
            && self.last_rotation.as_ref() != Some(rotation)
        {
            self.out.push(Output::RotationReceived(rotation.clone()));
        }
    }

    /// An operator's removal: tombstone, spread like a leave, and rotate the secret.
    fn remove(&mut self, peer: PeerId, unix_now: u64, now: Instant) {
        if self.membership.remove(&peer, unix_now).is_none() {
            return;
        }
        self.apply_changes(vec![Change::Left(peer)], now);
        self.publish_roster();
        self.out.push(Output::Disconnect(peer));
        self.want_rotation();
    }

    /// A rotation was adopted (made here, or opened from the network).
    fn on_rotated(
        &mut self,
        rotation: &Rotation,
        publish: bool,
        unix_now: u64,
        replaced_ours: bool,
        now: Instant,
    ) {
        self.last_rotation = Some(rotation.clone());
        let age = Duration::from_secs(unix_now.saturating_sub(rotation.made_at));
        self.secret_since = now.checked_sub(age).unwrap_or(now).min(now);
        if publish {
            self.out.push(Output::Publish(Box::new(GossipBody::Rotation(
                rotation.clone(),
            ))));
            return;
        }
        // The maker of a lost rotation (the winner may not know of the removal that made ours)
        // and the leader (it may have learnt of a departure the winner had not) rotate again
        // while the secret in use still reaches a node that is no longer a member.
        let leads = self.membership.leader() == self.local.id;
        if (replaced_ours || leads)
            && self.exit.is_none()
            && !self.left
            && self.secret_reaches_a_departed_node()
        {
            self.want_rotation();
        }
    }

    /// Whether a node that left or was removed holds the secret in use: one the last rotation
    /// was sealed to, or (never rotated) any departed node.
    pub fn secret_reaches_a_departed_node(&self) -> bool {
        let departed = |id: &PeerId| {
            *id != self.local.id
                && self
                    .membership
                    .any_record(id)
                    .is_none_or(|record| record.left)
        };
        match &self.last_rotation {
            Some(rotation) => {
                departed(&rotation.from) || rotation.sealed.iter().any(|copy| departed(&copy.to))
            }
            None => self
                .membership
                .records()
                .iter()
                .any(|record| record.left && record.node_id != self.local.id),
        }
    }

    /// Whether `id` (departed) was given the secret in use: always without a rotation yet.
    fn departed_holds_secret(&self, id: &PeerId) -> bool {
        self.last_rotation
            .as_ref()
            .is_none_or(|r| r.from == *id || r.sealed.iter().any(|copy| copy.to == *id))
    }

    /// The periodic rotation (seed 004 §8), and the one for a departure, by the leader.
    fn rotate_if_due(&mut self, now: Instant) {
        if self.departure_check_at.is_some_and(|at| now >= at) {
            self.departure_check_at = None;
            if self.membership.leader() == self.local.id
                && self.exit.is_none()
                && !self.left
                && self.secret_reaches_a_departed_node()
            {
                self.want_rotation();
                return;
            }
        }
        if now >= self.secret_since + self.config.rotation_interval
            && self.membership.leader() == self.local.id
            && self.settled
            && self.exit.is_none()
            && !self.left
            && self.membership.len() > 1
        {
            // Counted again from now: the answer (`Input::Rotated`) sets it exactly.
            self.secret_since = now;
            self.want_rotation();
        }
    }

    fn want_rotation(&mut self) {
        if !self.out.contains(&Output::Rotate) {
            self.out.push(Output::Rotate);
        }
    }

    // ---- settings ----

    /// Merges settings from the bot (`publish`) or the network; on a change, persists them and
    /// tells the daemon. The bot's own changes are published at once, so the next leader has
    /// them.
    fn merge_settings(&mut self, incoming: &NetworkSettings, publish: bool) {
        if !self.settings.merge(incoming) {
            return;
        }
        self.out
            .push(Output::Settings(Box::new(self.settings.clone())));
        self.persist(None);
        if publish {
            self.publish_settings();
        }
    }

    fn persist(&mut self, ack: Option<Ack>) {
        self.out
            .push(Output::Persist(Box::new(self.snapshot()), ack));
    }

    // ---- membership changes ----

    /// Reports changes, keeps connections in step, queues owner notices and persists.
    fn apply_changes(&mut self, changes: Vec<Change>, now: Instant) {
        if changes.is_empty() {
            return;
        }
        let mut roster_changed = false;
        let mut events = Vec::new();
        for change in changes {
            match &change {
                Change::Joined(id) => {
                    roster_changed = true;
                    self.sweep = true;
                    self.clear_redial(id);
                    events.push(NetworkEvent::Joined(self.name_of(id)));
                    if self.connected.contains_key(id) && self.exit.is_none() {
                        // Connected before this node knew it as a member (its first heartbeat
                        // was refused as a stranger's): on a ring it may never send another
                        // here, so ask for one.
                        self.send_beat_probing(vec![*id], Vec::new(), None, true, now);
                    }
                }
                Change::Left(id) => {
                    roster_changed = true;
                    self.doubted.remove(id);
                    self.suspects.remove(id);
                    self.clear_redial(id);
                    self.reported_offline.remove(id);
                    // Not at once: a departed node may still be waiting for the answer to the
                    // push of its tombstone (see `answer_departed`).
                    self.expire_stranger(*id, now + self.config.stranger_grace);
                    events.push(NetworkEvent::Left(self.name_of(id)));
                    // A departed member keeps the secret: the leader rotates it (a leave as
                    // well as a removal; concurrent rotations resolve by `Rotation::wins_over`).
                    if *id != self.local.id
                        && self.exit.is_none()
                        && !self.left
                        && self.membership.leader() == self.local.id
                        && self.departed_holds_secret(id)
                    {
                        self.departure_check_at
                            .get_or_insert(now + self.config.departure_rotation_grace);
                    }
                }
                Change::Alive(id) => {
                    if self.reported_offline.remove(id) {
                        events.push(NetworkEvent::Back(self.name_of(id)));
                    }
                }
                Change::Offline(id, reason) => {
                    self.doubted.remove(id);
                    // Wanted now (redialled until it is back), though perhaps not connected.
                    self.sweep = true;
                    if *reason == OfflineReason::HeartbeatTimeout && self.connected.contains_key(id)
                    {
                        // Silent while connected: the connection is dead (a partition, a
                        // vanished host) or stalled. Close it and redial on the short backoff
                        // rather than wait for TCP's retransmissions, so a heal is seen at once.
                        self.out.push(Output::Disconnect(*id));
                    }
                    self.reported_offline.insert(*id);
                    events.push(NetworkEvent::Offline(self.name_of(id)));
                }
            }
            self.out.push(Output::Membership(change));
        }
        if roster_changed {
            self.resize();
            if self.exit.is_none() {
                self.dial_members(now);
            }
        }
        let was_leading = self.leadership.is_local;
        self.update_leadership(now);
        if was_leading || self.leadership.is_local {
            for event in events {
                self.out.push(Output::Notice(event));
            }
        }
        self.persist(None);
    }

    /// Follows the network's size: the heartbeat interval and the offline bound of
    /// [`Config::for_size`] for the current member count.
    fn resize(&mut self) {
        if !self.config.scale_with_size {
            return;
        }
        let sized = Config::for_size(self.membership.len());
        if sized.heartbeat_interval != self.config.heartbeat_interval {
            self.config.heartbeat_interval = sized.heartbeat_interval;
            self.config.offline_after = sized.offline_after;
            self.apply_health();
        }
    }

    /// Re-derives whether this node hosts the leader services, and tells on a change.
    fn update_leadership(&mut self, now: Instant) {
        // Answered means heard since the start: members the state file says were alive are
        // only assumed so, and a restart inside a partition's minority must not host on that.
        self.settled = self.settled
            || now >= self.started + self.config.settle
            || self.membership.all_heard_after(self.started);
        // This runs after every input: the leader and its name are compared only after an
        // election may have moved them, and a name is built only on a change.
        let elections = self.membership.elections();
        let elected = elections != self.leadership_elections;
        self.leadership_elections = elections;
        let leading = self.membership.leader_is_local();
        // Only a node that would lead needs to know whether it sees a majority.
        self.partitioned = if leading { self.partition(now) } else { None };
        let is_local = leading && self.settled && self.exit.is_none() && self.partitioned.is_none();
        let leaving = self.exit.is_some() || self.membership.is_standing_down();
        let same_name = !elected
            || match self.membership.leader_name() {
                Some(name) => name == self.leadership.leader_name,
                None => self.membership.leader().to_base58() == self.leadership.leader_name,
            };
        if !same_name || is_local != self.leadership.is_local || leaving != self.leadership.leaving
        {
            let next = Leadership {
                is_local,
                leader_name: self.name_of(&self.membership.leader()),
                leaving,
            };
            self.leadership = next.clone();
            self.out.push(Output::Leadership(next));
        }
        if elected && self.membership.leader() != self.reported_leader {
            let leader = self.membership.leader();
            let previous = std::mem::replace(&mut self.reported_leader, leader);
            self.leader_changes += 1;
            self.out.push(Output::LeaderChanged { previous, leader });
        }
    }

    // ---- joins (seed side) and invites ----

    fn on_join_request(&mut self, peer: PeerId, request: &JoinAsk<'_>, unix_now: u64) {
        // An unconfirmed joiner asking again lost what it was sent: start over.
        if self.undo_admission(peer) {
            self.persist(None);
        }
        match self.admit(peer, request, unix_now) {
            Ok(()) => self.persist(Some(Ack::Admission(peer))),
            Err(refusal) => self.out.push(Output::JoinAnswer {
                peer,
                answer: Err(refusal),
            }),
        }
    }

    /// Checks a join and, if it is good, records it in memory; it is answered once the write
    /// is durable. Every refusal leaves everything as it was.
    fn admit(
        &mut self,
        peer: PeerId,
        request: &JoinAsk<'_>,
        unix_now: u64,
    ) -> Result<(), JoinRefusal> {
        if self.exit.is_some() || self.left {
            return Err(JoinRefusal::SeedFailure(
                "this node is stopping; ask another member for a link".to_owned(),
            ));
        }
        if self.pending_admissions.contains_key(&peer) {
            return Err(JoinRefusal::Invalid(
                "a join of this node is already in progress".to_owned(),
            ));
        }
        let name = request.name;
        let hash = crate::join::token_hash(request.token);
        let Some(index) = self.invites.iter().position(|i| i.token_sha256 == hash) else {
            return Err(JoinRefusal::UnknownToken);
        };
        let invite = &self.invites[index];
        if invite.used_at.is_some() {
            return Err(JoinRefusal::TokenUsed);
        }
        if unix_now >= invite.expires_at {
            return Err(JoinRefusal::ExpiredToken);
        }
        // A removed node comes back only through an invite issued after its removal: no link
        // it may have held (or made) while it was a member readmits it.
        if let Some(removed_at) = self
            .membership
            .any_record(&peer)
            .filter(|record| record.left)
            .and_then(|record| record.removed_at)
            && invite.created_at <= removed_at
        {
            return Err(JoinRefusal::Invalid(
                "this node was removed from the network; it needs an invite issued after its removal"
                    .to_owned(),
            ));
        }
        if self
            .membership
            .find_by_name(name)
            .is_some_and(|owner| owner != peer)
            || self
                .pending_admissions
                .values()
                .any(|p| p.admission.record.name == name)
        {
            return Err(JoinRefusal::NameTaken(name.to_owned()));
        }
        if self.membership.is_member(&peer) {
            return Err(JoinRefusal::Invalid(
                "this node is already a member".to_owned(),
            ));
        }
        if request.card.is_some_and(|card| !card.signed_by(&peer)) {
            return Err(JoinRefusal::Invalid(
                "the PQ4 card is not signed by the joining node".to_owned(),
            ));
        }
        let invites_before = self.invites.clone();
        self.invites[index].used_at = Some(unix_now);
        self.invites[index].used_by = Some(peer.to_base58());
        let previous_record = self.membership.any_record(&peer).cloned();
        let record = self.membership.admit(
            peer,
            name.to_owned(),
            request.addr.to_owned(),
            request.priority,
            request.card.cloned(),
        );
        let admission = Admission {
            record,
            members: self.published_records(),
            settings: self.settings.clone(),
        };
        self.pending_admissions.insert(
            peer,
            PendingAdmission {
                previous_record,
                invites_before,
                admission,
                confirms: request.confirms,
                token_sha256: hash,
            },
        );
        Ok(())
    }

    fn issue_invite(&mut self, request: u64, token_sha256: &str, unix_now: u64, ttl_secs: u64) {
        self.pending_invites
            .insert(request, token_sha256.to_owned());
        let retention = self.config.invite_retention_secs;
        self.invites
            .retain(|i| i.expires_at.max(i.used_at.unwrap_or(0)) + retention > unix_now);
        self.invites.push(Invite {
            token_sha256: token_sha256.to_owned(),
            created_at: unix_now,
            expires_at: unix_now.saturating_add(ttl_secs),
            used_at: None,
            used_by: None,
        });
        self.persist(Some(Ack::Invite(request)));
    }

    fn on_persisted(&mut self, ack: Ack, now: Instant) {
        match ack {
            Ack::Invite(request) => {
                self.pending_invites.remove(&request);
                self.out.push(Output::InviteRecorded {
                    request,
                    result: Ok(()),
                });
            }
            Ack::Admission(peer) => {
                let Some(pending) = self.pending_admissions.remove(&peer) else {
                    return;
                };
                self.out.push(Output::JoinAnswer {
                    peer,
                    answer: Ok(Box::new(pending.admission.clone())),
                });
                if pending.confirms {
                    self.await_confirmation(peer, pending, now);
                } else {
                    self.apply_changes(vec![Change::Joined(peer)], now);
                    self.publish_roster();
                }
            }
            Ack::Leave => self.spread_tombstone(now),
        }
    }

    fn on_persist_failed(&mut self, ack: Ack, error: &str) {
        match ack {
            Ack::Invite(request) => {
                // The invite leaves the list: a link that was never handed out.
                if let Some(hash) = self.pending_invites.remove(&request) {
                    self.invites.retain(|i| i.token_sha256 != hash);
                }
                self.out.push(Output::InviteRecorded {
                    request,
                    result: Err(format!("cannot record the invite: {error}")),
                });
            }
            Ack::Admission(peer) => {
                let Some(pending) = self.pending_admissions.remove(&peer) else {
                    return;
                };
                self.invites = pending.invites_before;
                self.membership.unadmit(pending.previous_record, &peer);
                self.sweep = true;
                self.out.push(Output::JoinAnswer {
                    peer,
                    answer: Err(JoinRefusal::SeedFailure(error.to_owned())),
                });
            }
            Ack::Leave => {
                self.left = false;
                self.membership.unleave();
                self.out.push(Output::LeaveDone(Err(format!(
                    "cannot record the departure: {error}"
                ))));
            }
        }
    }

    // ---- join confirmation (seed side) ----

    /// Every record that may leave this node: all but those of joiners not yet confirmed.
    fn published_records(&self) -> Vec<MemberRecord> {
        let mut records = self.membership.records();
        if !self.unconfirmed.is_empty() {
            records.retain(|r| !self.unconfirmed.contains_key(&r.node_id));
        }
        records
    }

    fn await_confirmation(&mut self, peer: PeerId, pending: PendingAdmission, now: Instant) {
        self.unconfirmed.insert(
            peer,
            Unconfirmed {
                deadline: now + self.config.join_confirm_timeout,
                previous_record: pending.previous_record,
                token_sha256: pending.token_sha256,
                admission: pending.admission,
            },
        );
    }

    /// The admission stands: the member is announced as any join is.
    fn confirm(&mut self, peer: PeerId, now: Instant) -> Option<Admission> {
        let unconfirmed = self.unconfirmed.remove(&peer)?;
        self.apply_changes(vec![Change::Joined(peer)], now);
        self.publish_roster();
        Some(unconfirmed.admission)
    }

    fn on_join_confirm(&mut self, peer: PeerId, now: Instant) {
        let answer = match self.confirm(peer, now) {
            Some(admission) => Ok(Box::new(admission)),
            // Confirmed already (a repeated confirmation, or its gossip came first).
            None if self.membership.is_member(&peer) => {
                match self.membership.record(&peer).cloned() {
                    Some(record) => Ok(Box::new(Admission {
                        record,
                        members: self.published_records(),
                        settings: self.settings.clone(),
                    })),
                    None => Err(JoinRefusal::AdmissionUndone),
                }
            }
            None => Err(JoinRefusal::AdmissionUndone),
        };
        self.out.push(Output::JoinAnswer { peer, answer });
    }

    /// A valid gossip message from an unconfirmed joiner: it wrote its state and runs (a joiner
    /// that died before it could confirm, restarted in time).
    fn confirm_by_evidence(&mut self, author: PeerId, now: Instant) {
        if self.unconfirmed.contains_key(&author) {
            self.confirm(author, now);
        }
    }

    /// Undoes the admissions whose confirmation did not come in time: the record goes (it was
    /// never published), the token can be used again, and the joiner is a stranger again.
    fn undo_unconfirmed(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .unconfirmed
            .iter()
            .filter(|(_, u)| u.deadline <= now)
            .map(|(peer, _)| *peer)
            .collect();
        if due.is_empty() {
            return;
        }
        for peer in due {
            self.undo_admission(peer);
            if self.connected.contains_key(&peer) {
                self.expire_stranger(peer, now + self.config.stranger_grace);
            }
        }
        self.persist(None);
    }

    /// Removes an unconfirmed joiner's record and makes its token usable again. Returns
    /// whether there was one.
    fn undo_admission(&mut self, peer: PeerId) -> bool {
        let Some(undone) = self.unconfirmed.remove(&peer) else {
            return false;
        };
        {
            self.membership.unadmit(undone.previous_record, &peer);
            if let Some(invite) = self
                .invites
                .iter_mut()
                .find(|i| i.token_sha256 == undone.token_sha256)
            {
                invite.used_at = None;
                invite.used_by = None;
            }
            self.redials.remove(&peer);
            self.suspects.remove(&peer);
            self.out.push(Output::AdmissionUndone {
                peer,
                name: undone.admission.record.name,
            });
        }
        self.resize();
        true
    }

    // ---- leave and stop ----

    fn leave(&mut self) {
        if self.exit.is_some() {
            self.out.push(Output::LeaveDone(Err(
                "this node is already stopping".to_owned()
            )));
            return;
        }
        if self.membership.leave().is_none() {
            self.out.push(Output::LeaveDone(Err(
                "this node is not in its own member list".to_owned(),
            )));
            return;
        }
        self.left = true;
        self.invites.clear();
        // The tombstone goes out once the departure is on disk (see `on_persisted`).
        self.persist(Some(Ack::Leave));
    }

    /// The departure is durable: publish the tombstone, push it to every connected member and
    /// dial the others, and wait for an acknowledgement (or none, alone).
    fn spread_tombstone(&mut self, now: Instant) {
        let tombstone = self.membership.any_record(&self.local.id).cloned();
        self.out.push(Output::Publish(Box::new(GossipBody::Roster(
            RosterUpdate {
                from: self.local.id,
                records: tombstone.into_iter().collect(),
            },
        ))));
        let members: Vec<PeerId> = self
            .membership
            .remote_members()
            .map(|(id, _)| *id)
            .collect();
        if members.is_empty() {
            self.finish_leave(LeaveOutcome::Alone, now);
            return;
        }
        // No heartbeats, dials or syncs of the ordinary rules from here on.
        self.exit = Some((Exit::Leave, None));
        self.leave_ack_deadline = Some(now + self.config.leave_ack_timeout);
        for peer in members {
            if self.connected.contains_key(&peer) {
                self.push_tombstone(peer);
            } else {
                let addrs = self.addresses_of(&peer);
                self.out.push(Output::Dial { peer, addrs });
            }
        }
    }

    /// While a leave waits for its acknowledgement: send a member our list, our tombstone in
    /// it.
    fn push_tombstone(&mut self, peer: PeerId) {
        if self.leave_ack_deadline.is_none() || !self.membership.is_member(&peer) {
            return;
        }
        let message = self.sync_message();
        self.out.push(Output::Sync { to: peer, message });
    }

    /// An answer that carries our tombstone back acknowledges the leave.
    fn note_leave_acknowledgement(&mut self, from: PeerId, message: &SyncMessage, now: Instant) {
        if self.leave_ack_deadline.is_none() {
            return;
        }
        let acknowledged = message
            .records
            .iter()
            .any(|r| r.node_id == self.local.id && r.left);
        if acknowledged && self.membership.is_member(&from) {
            self.finish_leave(LeaveOutcome::Confirmed(self.name_of(&from)), now);
        }
    }

    fn end_unacknowledged_leave(&mut self, now: Instant) {
        if self.leave_ack_deadline.is_some_and(|at| now >= at) {
            self.finish_leave(LeaveOutcome::Unconfirmed, now);
        }
    }

    /// Answers the leave and exits after the drain, so the last messages go out.
    fn finish_leave(&mut self, outcome: LeaveOutcome, now: Instant) {
        self.leave_ack_deadline = None;
        self.out.push(Output::LeaveDone(Ok(outcome)));
        self.exit = Some((Exit::Leave, Some(now + self.config.drain)));
    }

    /// A node whose tombstone we hold pushed its list: answer with that tombstone alone, which
    /// is its acknowledgement (it learns nothing else). Returns whether `from` had left.
    fn answer_departed(&mut self, from: PeerId) -> bool {
        let Some(tombstone) = self
            .membership
            .any_record(&from)
            .filter(|r| r.left)
            .cloned()
        else {
            return false;
        };
        self.out.push(Output::SyncReply {
            to: from,
            message: Box::new(SyncMessage::member_list(vec![tombstone])),
        });
        true
    }

    /// Stands down at once (the bot stops, without announcing a handover: the next leader
    /// does), says goodbye after the handover gap so the peers re-elect, and exits after the
    /// drain. Alone, it exits at once: nothing to wait for.
    fn stop(&mut self, now: Instant) {
        if self.exit.is_some() {
            return;
        }
        self.membership.stand_down();
        if self.connected.is_empty() {
            self.exit = Some((Exit::Stop, None));
            self.out.push(Output::Exit);
            return;
        }
        let goodbye_at = now + self.config.handover_gap;
        self.goodbye_at = Some(goodbye_at);
        self.exit = Some((Exit::Stop, Some(goodbye_at + self.config.drain)));
    }
}

/// The parts of a Join request the core rules on.
#[derive(Debug)]
struct JoinAsk<'a> {
    token: &'a str,
    name: &'a str,
    addr: &'a str,
    priority: u32,
    confirms: bool,
    card: Option<&'a Pq4Card>,
}

fn refusal_of(rejection: HeartbeatRejection) -> Refusal {
    match rejection {
        HeartbeatRejection::NonMember => Refusal::NonMember,
        HeartbeatRejection::Replay => Refusal::Replay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::PROTOCOL_VERSION;

    const SECOND: Duration = Duration::from_secs(1);

    fn record(id: PeerId, name: &str, priority: u32) -> MemberRecord {
        MemberRecord {
            node_id: id,
            name: name.into(),
            addr: format!("127.0.0.1:47{}", name.len()),
            priority,
            version: 1,
            left: false,
            card: None,
            admission: 0,
            removed_at: None,
            key_updates: Vec::new(),
            relays: Vec::new(),
        }
    }

    /// A cluster seen from node `a`, with members `b` and `c`; priorities make `a` < `b` < `c`.
    struct Fixture {
        node: Node,
        a: PeerId,
        b: PeerId,
        c: PeerId,
        t0: Instant,
        counters: BTreeMap<PeerId, u32>,
    }

    impl Fixture {
        /// `a_priority` decides whether `a` (10 = leads) or `b` (priority 20) leads. These
        /// tests call the core at whatever instants their rule needs, not at the wakes it
        /// asks for, so local health awareness (which reads a late call as a starved node) is
        /// off; [`Fixture::aware`] has it on, for tests that call at every wake.
        fn new(a_priority: u32, alive: &[usize]) -> Self {
            Self::with_config(
                a_priority,
                alive,
                Config {
                    max_health: 0,
                    ..Config::default()
                },
            )
        }

        /// `a` leads, b and c are not yet heard, local health awareness is on.
        fn aware() -> Self {
            Self::with_config(10, &[], Config::default())
        }

        fn with_config(a_priority: u32, alive: &[usize], config: Config) -> Self {
            let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
            let t0 = Instant::now();
            let ids = [a, b, c];
            let node = Node::new(
                config,
                LocalNode {
                    id: a,
                    name: "a".into(),
                    priority: a_priority,
                    incarnation: 1,
                    addrs: vec!["/ip4/127.0.0.1/tcp/4747".into()],
                },
                Restored {
                    records: vec![
                        record(a, "a", a_priority),
                        record(b, "b", 20),
                        record(c, "c", 30),
                    ],
                    alive: alive.iter().map(|i| ids[*i]).collect(),
                    settings: NetworkSettings::default(),
                    invites: vec![],
                },
                t0,
                7,
            );
            Self {
                node,
                a,
                b,
                c,
                t0,
                counters: BTreeMap::new(),
            }
        }

        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }

        fn handle(&mut self, secs: f64, input: Input<'_>) -> Vec<Output> {
            let now = self.at(secs);
            self.node.handle(now, input).collect()
        }

        fn heartbeat_from(&mut self, secs: f64, from: PeerId) -> Vec<Output> {
            self.beat_from(secs, from, Vec::new(), None)
        }

        /// A heartbeat from `from` carrying doubts or a vouch.
        fn beat_from(
            &mut self,
            secs: f64,
            from: PeerId,
            doubts: Vec<Doubt>,
            vouch: Option<Vouch>,
        ) -> Vec<Output> {
            let counter = self.counters.entry(from).or_default();
            *counter += 1;
            let heartbeat = Heartbeat {
                node_id: from,
                name: "x".into(),
                priority: 0,
                addrs: vec![],
                seq: (1 << 32) | u64::from(*counter),
                protocol_version: PROTOCOL_VERSION,
                uptime_secs: 1,
                doubts,
                vouch,
                probe: false,
            };
            self.handle(
                secs,
                Input::Heartbeat {
                    from,
                    heartbeat: &heartbeat,
                    place: None,
                },
            )
        }

        /// Hands `message` to the node as a sync request from `from`; its reply, if any.
        fn sync_reply(
            &mut self,
            secs: f64,
            from: PeerId,
            message: &SyncMessage,
        ) -> Option<SyncMessage> {
            let out = self.handle(secs, Input::SyncRequest { from, message });
            out.iter().find_map(|o| match o {
                Output::SyncReply { to, message } if *to == from => Some((**message).clone()),
                _ => None,
            })
        }

        fn join_b_and_c(&mut self, secs: f64) {
            let (b, c) = (self.b, self.c);
            self.handle(secs, Input::Connected(b));
            self.handle(secs, Input::Connected(c));
            self.heartbeat_from(secs, b);
            self.heartbeat_from(secs, c);
        }
    }

    fn publishes(outputs: &[Output]) -> Vec<&GossipBody> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Publish(body) => Some(&**body),
                _ => None,
            })
            .collect()
    }

    /// The heartbeats sent straight to members, with their recipients.
    fn beats(outputs: &[Output]) -> Vec<(&[PeerId], &Heartbeat)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Heartbeat { to, heartbeat } => Some((to.as_slice(), &**heartbeat)),
                _ => None,
            })
            .collect()
    }

    fn notices(outputs: &[Output]) -> Vec<NetworkEvent> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Notice(event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn wake(outputs: &[Output]) -> Instant {
        match outputs.last() {
            Some(Output::WakeAt(at)) => *at,
            other => panic!("the last output is not WakeAt: {other:?}"),
        }
    }

    fn dials(outputs: &[Output]) -> Vec<PeerId> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Dial { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn heartbeats_go_out_every_interval_and_the_wake_says_when() {
        let mut f = Fixture::new(10, &[]);
        let (b, c) = (f.b, f.c);
        f.handle(0.0, Input::Connected(b));
        let stranger = PeerId::random();
        f.handle(0.0, Input::Connected(stranger));
        let out = f.handle(0.0, Input::Timer);
        assert!(
            publishes(&out).is_empty(),
            "heartbeats do not ride gossipsub"
        );
        let [(to, _)] = beats(&out)[..] else {
            panic!("no heartbeat at 0 s: {out:?}");
        };
        assert_eq!(
            to,
            [b],
            "straight to the connected members, not to strangers"
        );
        assert!(wake(&out) <= f.at(1.0), "wakes for the next heartbeat");
        let out = f.handle(0.5, Input::Timer);
        assert!(beats(&out).is_empty(), "not before the interval");
        f.handle(0.6, Input::Connected(c));
        let out = f.handle(1.0, Input::Timer);
        let [(to, hb)] = beats(&out)[..] else {
            panic!("no heartbeat at 1 s: {out:?}");
        };
        let mut to = to.to_vec();
        to.sort();
        let mut both = vec![b, c];
        both.sort();
        assert_eq!(to, both);
        // The counter also moved for the probes that asked b and c (not yet heard) for a
        // heartbeat when they connected.
        assert_eq!(hb.seq >> 32, 1, "incarnation in the high half");
        assert!(hb.seq & 0xffff_ffff >= 2, "{}", hb.seq);
    }

    #[test]
    fn a_direct_heartbeat_counts_only_for_the_connections_own_peer() {
        let mut f = Fixture::new(10, &[]);
        let (b, c) = (f.b, f.c);
        f.handle(0.0, Input::Connected(b));
        let heartbeat = Heartbeat {
            node_id: c,
            name: "c".into(),
            priority: 30,
            addrs: vec![],
            seq: (1 << 32) | 1,
            protocol_version: PROTOCOL_VERSION,
            uptime_secs: 1,
            doubts: Vec::new(),
            vouch: None,
            probe: false,
        };
        // b relays (or forges) c's heartbeat over b's own connection: refused, c stays silent.
        let out = f.handle(
            0.1,
            Input::Heartbeat {
                from: b,
                heartbeat: &heartbeat,
                place: None,
            },
        );
        assert_eq!(
            out.first(),
            Some(&Output::GossipVerdict(Err(Refusal::WrongSigner)))
        );
        assert!(!f.node.view().iter().any(|p| p.node_id == c && p.is_alive()));
        // From c's own connection it counts.
        f.handle(0.2, Input::Connected(c));
        let out = f.handle(
            0.2,
            Input::Heartbeat {
                from: c,
                heartbeat: &heartbeat,
                place: None,
            },
        );
        assert_eq!(out.first(), Some(&Output::GossipVerdict(Ok(()))));
        assert!(f.node.view().iter().any(|p| p.node_id == c && p.is_alive()));
    }

    #[test]
    fn silence_marks_offline_and_moves_the_leader() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        assert_eq!(f.node.leader(), f.b);
        // c keeps talking, b goes silent.
        for t in [0.5, 1.0, 1.5, 2.0, 2.4] {
            f.heartbeat_from(t, f.c);
            f.handle(t, Input::Timer);
        }
        assert_eq!(f.node.leader(), f.b, "2.4 s of silence is not yet offline");
        let out = f.handle(2.6, Input::Timer);
        assert!(out.contains(&Output::Membership(Change::Offline(
            f.b,
            crate::membership::OfflineReason::HeartbeatTimeout
        ))));
        assert!(out.contains(&Output::LeaderChanged {
            previous: f.b,
            leader: f.c
        }));
        assert_eq!(
            f.node.leader_changes(),
            2,
            "a → b at the first heartbeat, then b → c"
        );
    }

    /// The asks (heartbeats carrying doubts) among `outputs`: `(to, seq, doubted)`.
    fn asks(outputs: &[Output]) -> Vec<(Vec<PeerId>, u64, Vec<PeerId>)> {
        beats(outputs)
            .into_iter()
            .filter(|(_, hb)| !hb.doubts.is_empty())
            .map(|(to, hb)| (to.to_vec(), hb.seq, hb.doubts.iter().map(|d| d.0).collect()))
            .collect()
    }

    /// A vouch answering the ask `asked`: `who` heard `age_ms` ago.
    fn vouch_for(asked: u64, who: PeerId, age_ms: u32) -> Vouch {
        Vouch {
            asked,
            heard: vec![Heard {
                node_id: who,
                age_ms,
            }],
        }
    }

    fn offline(out: &[Output], who: PeerId) -> bool {
        out.iter()
            .any(|o| matches!(o, Output::Membership(Change::Offline(id, _)) if *id == who))
    }

    /// A node of a 12-member network, `ids[6]`, on a ring of 4 observers; the members sorted
    /// by id, equal priorities (`ids[0]` leads), all connected and heard at 0 s.
    struct Ring {
        f: Fixture,
        ids: Vec<PeerId>,
    }

    impl Ring {
        fn new() -> Self {
            Self::with(Config {
                max_health: 0,
                ..Config::default()
            })
        }

        fn with(config: Config) -> Self {
            let mut ids: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
            ids.sort();
            let t0 = Instant::now();
            let node = Node::new(
                config,
                LocalNode {
                    id: ids[6],
                    name: "n6".into(),
                    priority: 100,
                    incarnation: 1,
                    addrs: vec![],
                },
                Restored {
                    records: ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| record(*id, &format!("n{i}"), 100))
                        .collect(),
                    alive: vec![],
                    settings: NetworkSettings::default(),
                    invites: vec![],
                },
                t0,
                7,
            );
            let mut f = Fixture {
                node,
                a: ids[6],
                b: ids[7],
                c: ids[8],
                t0,
                counters: BTreeMap::new(),
            };
            for (i, id) in ids.iter().enumerate() {
                if i != 6 {
                    f.handle(0.0, Input::Connected(*id));
                    f.heartbeat_from(0.0, *id);
                }
            }
            Self { f, ids }
        }

        /// A heartbeat from `ids[from]` at `secs` with the given protocol version and probe
        /// flag (sequence numbers from 100 up, past those of `run`); the outputs.
        fn beat(&mut self, secs: f64, from: usize, version: u32, probe: bool) -> Vec<Output> {
            let counter = self.f.counters.entry(self.ids[from]).or_default();
            *counter += 1;
            let heartbeat = Heartbeat {
                node_id: self.ids[from],
                name: format!("n{from}"),
                priority: 100,
                addrs: vec![],
                seq: (1 << 32) | (100 + u64::from(*counter)),
                protocol_version: version,
                uptime_secs: 1,
                doubts: Vec::new(),
                vouch: None,
                probe,
            };
            self.f.handle(
                secs,
                Input::Heartbeat {
                    from: self.ids[from],
                    heartbeat: &heartbeat,
                    place: None,
                },
            )
        }

        /// A [`Silent`] verdict from `ids[from]` naming `ids[about]`, received at `secs`.
        fn verdict(&mut self, secs: f64, from: usize, about: usize) -> Vec<Output> {
            let body = GossipBody::Silent(Silent {
                from: self.ids[from],
                members: vec![SilentMember {
                    node_id: self.ids[about],
                    seq: (1 << 32) | 1,
                }],
            });
            self.f.handle(
                secs,
                Input::Gossip {
                    signer: Some(self.ids[from]),
                    body: &body,
                },
            )
        }

        /// Heartbeats at `secs` from the members that send to this node (its predecessors 2 to
        /// 5 and the leader, 0), but `silent`.
        fn all_but(&mut self, secs: f64, silent: &[usize]) {
            for i in [0, 2, 3, 4, 5].into_iter().filter(|i| !silent.contains(i)) {
                self.f.heartbeat_from(secs, self.ids[i]);
            }
        }

        /// Timers every 125 ms (the wake grid) from `from` to `to` seconds, the members that
        /// send to this node but `silent` heartbeating each second; every output.
        fn run(&mut self, from: f64, to: f64, silent: &[usize]) -> Vec<Output> {
            let mut out = Vec::new();
            let mut t = from;
            while t <= to + 1e-9 {
                if (t.fract()).abs() < 1e-9 {
                    self.all_but(t, silent);
                }
                out.extend(self.f.handle(t, Input::Timer));
                t += 0.125;
            }
            out
        }
    }

    fn verdicts(outputs: &[Output]) -> Vec<PeerId> {
        publishes(outputs)
            .into_iter()
            .filter_map(|body| match body {
                GossipBody::Silent(silent) => Some(silent.members.iter().map(|m| m.node_id)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn on_a_ring_heartbeats_go_to_the_four_successors_only() {
        let mut r = Ring::new();
        let out = r.f.handle(1.0, Input::Timer);
        let sent = beats(&out);
        assert_eq!(sent.len(), 1);
        let mut to = sent[0].0.to_vec();
        to.sort();
        let ids = &r.ids;
        let mut expected = vec![ids[7], ids[8], ids[9], ids[10]];
        expected.sort();
        assert_eq!(to, expected, "four successors, not the leader");
        // A member that is not watched here stays alive through any silence.
        let out = r.run(1.0, 6.0, &[11, 1]);
        assert!(!offline(&out, r.ids[11]) && !offline(&out, r.ids[1]));
    }

    #[test]
    fn a_member_before_the_ring_still_gets_every_heartbeat() {
        let mut r = Ring::new();
        r.beat(0.5, 11, 3, false);
        let out = r.f.handle(1.0, Input::Timer);
        let sent = beats(&out);
        assert!(
            sent[0].0.contains(&r.ids[11]),
            "version 3 times out the unheard"
        );
        assert!(!sent[0].0.contains(&r.ids[1]), "version 4 watches its ring");
    }

    #[test]
    fn an_observer_that_times_out_a_predecessor_publishes_a_verdict_after_asking_its_observers() {
        let mut r = Ring::new();
        let out = r.run(1.0, 1.5, &[5]);
        let ask = asks(&out);
        assert!(!ask.is_empty(), "doubted after 1.25 s: asked about");
        let (helpers, _, doubted) = &ask[0];
        assert_eq!(doubted, &vec![r.ids[5]]);
        for helper in helpers {
            assert!(
                [r.ids[7], r.ids[8], r.ids[9]].contains(helper),
                "only 5's other observers heard it"
            );
        }
        let out = r.run(1.625, 3.0, &[5]);
        assert!(offline(&out, r.ids[5]));
        assert_eq!(verdicts(&out), vec![r.ids[5]]);
        assert!(
            !beats(&out).iter().any(|(_, hb)| hb.probe),
            "one lost member is no partition"
        );
    }

    #[test]
    fn a_verdict_marks_offline_a_member_this_node_did_not_hear_lately_and_one_about_itself_is_refuted()
     {
        let mut r = Ring::new();
        let verdict = |about: PeerId| {
            GossipBody::Silent(Silent {
                from: r.ids[7],
                members: vec![SilentMember {
                    node_id: about,
                    seq: (1 << 32) | 1,
                }],
            })
        };
        let about_11 = verdict(r.ids[11]);
        let out = r.f.handle(
            2.0,
            Input::Gossip {
                signer: Some(r.ids[7]),
                body: &about_11,
            },
        );
        assert!(offline(&out, r.ids[11]));
        assert!(
            out.contains(&Output::Disconnect(r.ids[11])),
            "silent while connected: closed and redialled, as after a timeout"
        );
        let about_me = verdict(r.ids[6]);
        let out = r.f.handle(
            2.1,
            Input::Gossip {
                signer: Some(r.ids[7]),
                body: &about_me,
            },
        );
        let sent = beats(&out);
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].0.len() >= 10,
            "a heartbeat to every connected member"
        );
    }

    #[test]
    fn losing_two_watched_members_probes_everyone_and_the_silent_ones_go_offline() {
        let mut r = Ring::new();
        // 4 and 5 (watched) and 10 (not watched) go silent together.
        let out = r.run(1.0, 2.5, &[4, 5, 10]);
        let probe = beats(&out)
            .into_iter()
            .find(|(_, hb)| hb.probe)
            .map(|(to, _)| to.to_vec())
            .expect("a probe");
        assert!(probe.contains(&r.ids[10]) && probe.contains(&r.ids[11]));
        assert!(!probe.contains(&r.ids[4]), "already offline");
        assert!(!probe.contains(&r.ids[2]), "heard lately");
        // Everyone else answers the probe at once.
        let at = 2.625;
        for i in [0, 1, 2, 3, 7, 8, 9, 11] {
            r.f.heartbeat_from(at, r.ids[i]);
        }
        let out = r.run(2.75, 3.25, &[4, 5, 10]);
        assert!(offline(&out, r.ids[10]), "no answer: offline");
        assert!(verdicts(&out).contains(&r.ids[10]));
        for i in [0, 1, 2, 3, 7, 8, 9, 11] {
            assert_eq!(r.f.node.membership().status(&r.ids[i]), Some(Status::Alive));
        }
        assert_eq!(r.f.node.detector().probes, 1);
    }

    fn disconnects(outputs: &[Output]) -> Vec<PeerId> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Disconnect(peer) => Some(*peer),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn on_a_ring_a_node_keeps_connections_to_its_neighbours_and_the_leader_only() {
        let mut r = Ring::new();
        // ids[6] watches 2..=5 and the leader 0, and heartbeats to 7..=10: 1 and 11 are
        // neither, and their connections (open since the start) close after the grace.
        let out = r.run(1.0, 9.875, &[]);
        assert!(
            disconnects(&out).is_empty(),
            "not within the grace: {out:?}"
        );
        let out = r.run(10.0, 11.0, &[]);
        let mut closed = disconnects(&out);
        closed.sort();
        assert_eq!(closed, vec![r.ids[1], r.ids[11]]);
        assert_eq!(r.f.node.detector().unwanted_closed, 2);
        for i in [0, 2, 5, 7, 10] {
            assert!(r.f.node.wants(&r.ids[i]), "n{i}");
        }
        // Closed here and unwanted: no redial, and the member stays alive.
        let out = r.f.handle(11.1, Input::Disconnected(r.ids[1]));
        assert!(dials(&out).is_empty(), "{out:?}");
        let out = r.run(11.125, 14.0, &[]);
        assert!(!dials(&out).contains(&r.ids[1]), "{out:?}");
        assert!(!offline(&out, r.ids[1]));
        // An unwanted member that hangs up on its own is not suspected or redialled either.
        let out = r.f.handle(14.1, Input::Disconnected(r.ids[11]));
        assert!(dials(&out).is_empty(), "{out:?}");
        r.f.handle(14.2, Input::DialFailed(r.ids[11]));
        assert_eq!(
            r.f.node.membership().status(&r.ids[11]),
            Some(Status::Alive)
        );
        // A wanted one (a successor) is redialled at once.
        let out = r.f.handle(14.3, Input::Disconnected(r.ids[7]));
        assert_eq!(dials(&out), vec![r.ids[7]]);
        // The ring moves: 10 goes offline (a verdict from its observers), so 11 becomes a
        // successor, wanted and dialled; 10, offline, is wanted too (redialled until back).
        let out = r.verdict(14.4, 11, 10);
        assert!(offline(&out, r.ids[10]), "{out:?}");
        let out = r.run(14.5, 15.0, &[]);
        assert!(dials(&out).contains(&r.ids[11]), "{out:?}");
        assert!(r.f.node.wants(&r.ids[10]));
        assert!(!r.f.node.wants(&r.ids[1]));
    }

    #[test]
    fn a_node_that_runs_late_redials_members_offline_here_on_a_longer_backoff() {
        let mut r = Ring::with(Config::default());
        // The fixture's first timer comes late; calm again (health 0) by 5 s.
        r.run(1.0, 5.0, &[]);
        assert_eq!(r.f.node.detector().health, 0);
        // 1 (not a neighbour) goes offline on its observers' verdict: wanted, redialled.
        let out = r.verdict(5.05, 2, 1);
        assert!(offline(&out, r.ids[1]), "{out:?}");
        assert!(r.f.node.wants(&r.ids[1]));
        let out = r.f.handle(5.1, Input::Disconnected(r.ids[1]));
        assert_eq!(dials(&out), vec![r.ids[1]]);
        // Each redial fails: healthy, they come at most 1.5 s apart.
        let mut dialled_at = Vec::new();
        let mut t: f64 = 5.125;
        while t <= 12.0 {
            if t.fract().abs() < 1e-9 {
                r.all_but(t, &[]);
            }
            let out = r.f.handle(t, Input::Timer);
            if dials(&out).contains(&r.ids[1]) {
                dialled_at.push(t);
                r.f.handle(t + 0.01, Input::DialFailed(r.ids[1]));
            }
            t += 0.125;
        }
        let gaps: Vec<f64> = dialled_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 1.5 + 1e-9), "{gaps:?}");
        // Unhealthy (its timers run 2 s apart, each late): the gaps grow past 1.5 s.
        let mut dialled_at = Vec::new();
        let mut t = 14.0;
        while t <= 60.0 {
            r.all_but(t, &[]);
            let out = r.f.handle(t, Input::Timer);
            assert!(r.f.node.detector().health > 0);
            if dials(&out).contains(&r.ids[1]) {
                dialled_at.push(t);
                r.f.handle(t + 0.01, Input::DialFailed(r.ids[1]));
            }
            t += 2.0;
        }
        let gaps: Vec<f64> = dialled_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().rev().take(2).all(|g| *g >= 8.0),
            "the backoff grows to 12 s: {gaps:?}"
        );
        assert!(r.f.node.wants(&r.ids[7]), "neighbours stay wanted");
    }

    #[test]
    fn a_refused_redial_is_told_to_the_others_by_the_observers_alone() {
        let mut r = Ring::new();
        r.run(1.0, 2.0, &[]);
        // 5 (watched here: this node is one of its observers) and 9 (a successor: it watches
        // this node, not the other way round) are killed: their connections close and the
        // redials are refused at once.
        for (i, told) in [(5, true), (9, false)] {
            let out = r.f.handle(2.1, Input::Disconnected(r.ids[i]));
            assert_eq!(dials(&out), vec![r.ids[i]]);
            let out = r.f.handle(2.15, Input::DialFailed(r.ids[i]));
            assert!(offline(&out, r.ids[i]), "{out:?}");
            assert_eq!(verdicts(&out).contains(&r.ids[i]), told, "n{i}: {out:?}");
        }
    }

    #[test]
    fn a_partition_probe_dials_the_members_it_is_not_connected_to_and_gives_them_longer() {
        let mut r = Ring::new();
        r.run(1.0, 11.0, &[]);
        for i in [1, 11] {
            r.f.handle(11.05, Input::Disconnected(r.ids[i]));
        }
        // 4 and 5 (watched) go silent: the probe asks 7..=10 over their connections and dials
        // 1 and 11.
        let out = r.run(11.125, 13.5, &[4, 5]);
        let probe = beats(&out)
            .into_iter()
            .find(|(_, hb)| hb.probe)
            .map(|(to, _)| to.to_vec())
            .expect("a probe");
        assert!(
            probe.contains(&r.ids[7]) && !probe.contains(&r.ids[1]),
            "{probe:?}"
        );
        let dialled = dials(&out);
        assert!(
            dialled.contains(&r.ids[1]) && dialled.contains(&r.ids[11]),
            "{out:?}"
        );
        let t = 13.5;
        for i in [0, 2, 3, 7, 8, 9, 10] {
            r.f.heartbeat_from(t, r.ids[i]);
        }
        // 1 connects and is asked at once; it answers. 11 never connects.
        let out = r.f.handle(t, Input::Connected(r.ids[1]));
        assert!(probed(&out, r.ids[1]), "{out:?}");
        r.f.heartbeat_from(t + 0.05, r.ids[1]);
        let out = r.run(13.625, 16.0, &[4, 5]);
        assert!(
            offline(&out, r.ids[11]),
            "no answer within the bound: offline"
        );
        assert!(verdicts(&out).contains(&r.ids[11]));
        assert_eq!(r.f.node.membership().status(&r.ids[1]), Some(Status::Alive));
        assert_eq!(r.f.node.detector().probes, 1);
    }

    /// A probe heartbeat to `peer` alone among `outputs`.
    fn probed(outputs: &[Output], peer: PeerId) -> bool {
        beats(outputs)
            .iter()
            .any(|(to, heartbeat)| *to == [peer] && heartbeat.probe)
    }

    #[test]
    fn a_member_learned_while_connected_or_connected_unheard_is_asked_for_a_heartbeat() {
        let mut r = Ring::new();
        // Member ids[0] hands over a member list that names `id`.
        let learn = |r: &mut Ring, secs: f64, id: PeerId| {
            let message = SyncMessage::member_list(vec![record(id, "newcomer", 100)]);
            let from = r.ids[0];
            r.f.handle(
                secs,
                Input::SyncAnswer {
                    from,
                    message: &message,
                },
            )
        };
        // A newcomer connects before this node knows it: its heartbeat is a stranger's.
        let early = PeerId::random();
        r.f.handle(1.0, Input::Connected(early));
        r.f.heartbeat_from(1.0, early);
        assert!(!r.f.node.membership.is_member(&early));
        // The member list that names it arrives: it is asked for a heartbeat, since on a ring
        // it may never send another one here.
        let out = learn(&mut r, 1.5, early);
        assert!(probed(&out, early), "{out:?}");
        // Its answer brings it alive.
        let out = r.f.heartbeat_from(1.6, early);
        assert!(
            out.contains(&Output::Membership(Change::Alive(early))),
            "{out:?}"
        );
        // A member learned first and connected later is asked when the connection comes up.
        let late = PeerId::random();
        let out = learn(&mut r, 2.0, late);
        assert!(!probed(&out, late), "not connected yet: {out:?}");
        let out = r.f.handle(2.1, Input::Connected(late));
        assert!(probed(&out, late), "{out:?}");
        // A member heard alive is not asked again when it reconnects.
        r.f.handle(2.5, Input::Disconnected(r.ids[7]));
        let out = r.f.handle(2.6, Input::Connected(r.ids[7]));
        assert!(!probed(&out, r.ids[7]), "{out:?}");
    }

    #[test]
    fn a_probe_is_answered_at_once_with_a_heartbeat_to_the_prober_alone() {
        let mut r = Ring::new();
        let out = r.beat(0.5, 2, PROTOCOL_VERSION, true);
        let sent = beats(&out);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, &[r.ids[2]]);
        assert!(!sent[0].1.probe);
    }

    #[test]
    fn a_member_silent_on_its_own_connection_is_asked_about_and_a_vouch_keeps_it_alive() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        let (b, c) = (f.b, f.c);
        // c keeps talking; b's connection to a stalls. 1.25 s after b's last heartbeat a asks
        // c about b at once (between two heartbeats of its own).
        f.heartbeat_from(1.0, c);
        let out = f.handle(1.2, Input::Timer);
        assert!(asks(&out).is_empty(), "not doubted yet: {out:?}");
        let out = f.handle(1.25, Input::Timer);
        let asked = asks(&out);
        assert_eq!(asked.len(), 1, "{out:?}");
        let (to, seq, doubted) = asked[0].clone();
        assert_eq!((to, doubted), (vec![c], vec![b]));
        // c heard b 300 ms before it answered: b counts as heard at 0.95 here.
        let vouch = vouch_for(seq, b, 300);
        f.beat_from(1.3, c, Vec::new(), Some(vouch));
        assert_eq!(f.node.detector().vouches_counted, 1);
        // Asked again half an interval later, while the doubt lasts.
        let out = f.handle(1.75, Input::Timer);
        assert_eq!(asks(&out).len(), 1, "{out:?}");
        // 2.5 s after b's last direct heartbeat: still alive, on c's word.
        f.heartbeat_from(2.0, c);
        let out = f.handle(2.6, Input::Timer);
        assert!(!offline(&out, b), "{out:?}");
        assert_eq!(f.node.leader(), b);
        // With no newer vouch it goes offline 2.5 s after the vouched moment.
        f.heartbeat_from(3.0, c);
        let out = f.handle(3.44, Input::Timer);
        assert!(!offline(&out, b), "{out:?}");
        let out = f.handle(3.46, Input::Timer);
        assert!(offline(&out, b), "{out:?}");
        assert_eq!(f.node.leader(), c);
    }

    #[test]
    fn asks_repeat_with_every_heartbeat_and_a_stalled_connection_is_closed_while_vouched() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        let (b, c) = (f.b, f.c);
        let mut asked = 0;
        let mut closed_at = None;
        for step in 1..=70 {
            let t = f64::from(step) * 0.1;
            if step % 10 == 0 {
                f.heartbeat_from(t, c);
            }
            let out = f.handle(t, Input::Timer);
            for (to, seq, doubted) in asks(&out) {
                assert_eq!((to, doubted), (vec![c], vec![b]));
                asked += 1;
                // c answers every ask: it heard b 100 ms ago.
                let vouch = vouch_for(seq, b, 100);
                f.beat_from(t + 0.05, c, Vec::new(), Some(vouch));
            }
            assert!(!offline(&out, b), "at {t}: {out:?}");
            if out.contains(&Output::Disconnect(b)) && closed_at.is_none() {
                closed_at = Some(t);
            }
        }
        assert!(
            asked >= 9,
            "one ask at the doubt, then two per interval: {asked}"
        );
        // Silent on its own connection for twice the offline bound: closed and redialled,
        // though c vouches for it all along.
        let closed_at = closed_at.expect("the stalled connection closed");
        assert!((5.0..5.15).contains(&closed_at), "closed at {closed_at}");
        assert_eq!(f.node.detector().stalled_closed, 1, "closed once");
        assert_eq!(f.node.leader(), b);
        // This node closed it: the redial is no suspect's, and a fast failure (the other side
        // still holds the stalled connection, say) is no sign of a dead process.
        let out = f.handle(7.1, Input::Disconnected(b));
        assert_eq!(dials(&out), vec![b]);
        let out = f.handle(7.15, Input::DialFailed(b));
        assert!(!offline(&out, b), "{out:?}");
    }

    #[test]
    fn a_vouch_counts_only_as_of_our_ask_and_never_revives() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        let (b, c) = (f.b, f.c);
        f.heartbeat_from(1.0, c);
        let out = f.handle(1.5, Input::Timer);
        let (_, seq, _) = asks(&out)[0].clone();
        // An answer to an ask we never made is ignored; so is a vouch older than what we have.
        let stray = vouch_for(seq + 1000, b, 0);
        f.beat_from(1.6, c, Vec::new(), Some(stray));
        let stale = vouch_for(seq, b, 1600);
        f.beat_from(1.7, c, Vec::new(), Some(stale));
        assert_eq!(f.node.detector().vouches_counted, 0);
        f.heartbeat_from(2.0, c);
        let out = f.handle(2.5, Input::Timer);
        assert!(offline(&out, b), "{out:?}");
        // Once offline, only b itself revives b: a vouch does not.
        let later = vouch_for(seq, b, 0);
        let out = f.beat_from(2.6, c, Vec::new(), Some(later));
        assert!(!out.contains(&Output::Membership(Change::Alive(b))));
        assert_eq!(f.node.membership().status(&b), Some(Status::Offline));
    }

    #[test]
    fn doubts_are_answered_at_once_for_members_heard_directly_and_only_those() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        let (a, b, c) = (f.a, f.b, f.c);
        f.heartbeat_from(1.0, c);
        // b doubts c (heard here 0.5 s ago), a (itself), and b (the asker): only c is vouched
        // for, to b alone, answering b's heartbeat by its sequence number.
        let out = f.beat_from(1.5, b, vec![Doubt(c), Doubt(a), Doubt(b)], None);
        let sent = beats(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        let (to, hb) = sent[0];
        assert_eq!(to, &[b][..]);
        let vouch = hb.vouch.clone().expect("a vouch");
        assert_eq!(vouch.asked, (1 << 32) | 2);
        assert_eq!(
            vouch.heard,
            vec![Heard {
                node_id: c,
                age_ms: 500
            }]
        );
        assert_eq!(f.node.detector().vouches_sent, 1);
        // c heard here only through a vouch (its own connection silent for 2 s): not vouched
        // for, so vouches never chain.
        let out = f.handle(2.5, Input::Timer);
        let (_, seq, _) = asks(&out)
            .into_iter()
            .find(|(_, _, d)| d.contains(&c))
            .expect("c doubted");
        let vouch = vouch_for(seq, c, 0);
        f.beat_from(2.55, b, Vec::new(), Some(vouch));
        // Asked again, it answers with an empty vouch (a nack): b learns its ask arrived.
        let out = f.beat_from(3.6, b, vec![Doubt(c)], None);
        let sent = beats(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        assert_eq!(sent[0].0, &[b][..]);
        let nack = sent[0].1.vouch.clone().expect("a nack");
        assert!(nack.heard.is_empty(), "{nack:?}");
        assert_eq!(f.node.detector().nacks_sent, 1);
    }

    #[test]
    fn a_closed_connection_is_redialled_and_a_failed_redial_is_offline_at_once() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        let out = f.handle(1.0, Input::Disconnected(f.b));
        assert_eq!(dials(&out), vec![f.b], "redialled at once");
        let out = f.handle(1.01, Input::DialFailed(f.b));
        assert!(out.contains(&Output::Membership(Change::Offline(
            f.b,
            crate::membership::OfflineReason::Unreachable
        ))));
        assert_eq!(f.node.leader(), f.c);
        // A second failure is not news; a failure of a non-suspect is only a failed dial.
        let out = f.handle(1.02, Input::DialFailed(f.c));
        assert!(!out.iter().any(|o| matches!(o, Output::Membership(_))));
        // A redial that times out (a partition, a vanished host) says nothing more than the
        // silence will: c stays alive until its heartbeats stop.
        f.handle(1.1, Input::Disconnected(f.c));
        let out = f.handle(4.2, Input::DialFailed(f.c));
        assert!(
            !out.iter().any(|o| matches!(o, Output::Membership(_))),
            "{out:?}"
        );
    }

    #[test]
    fn silence_while_connected_closes_the_connection_and_a_direct_exchange_revives() {
        let mut f = Fixture::new(40, &[]);
        f.join_b_and_c(0.0);
        f.heartbeat_from(2.0, f.c);
        let out = f.handle(2.6, Input::Timer);
        assert!(out.contains(&Output::Disconnect(f.b)), "{out:?}");
        assert!(!out.contains(&Output::Disconnect(f.c)), "{out:?}");
        // The reconnect's roster exchange is proof of life at once.
        f.handle(3.0, Input::Disconnected(f.b));
        f.handle(4.0, Input::Connected(f.b));
        let message = SyncMessage::member_list(vec![]);
        let out = f.handle(
            4.0,
            Input::SyncAnswer {
                from: f.b,
                message: &message,
            },
        );
        assert!(
            out.contains(&Output::Membership(Change::Alive(f.b))),
            "{out:?}"
        );
        assert_eq!(f.node.leader(), f.b);
    }

    #[test]
    fn a_leader_that_sees_no_majority_does_not_host() {
        // a leads (priority 10) with b and c alive until 4 s.
        fn alive_until_4() -> Fixture {
            let mut f = Fixture::new(10, &[]);
            f.join_b_and_c(0.0);
            for t in [2.0, 4.0] {
                f.heartbeat_from(t, f.b);
                f.heartbeat_from(t, f.c);
            }
            f.handle(4.1, Input::Timer);
            assert!(f.node.leadership().is_local);
            assert_eq!(f.node.partition(f.at(4.1)), None);
            f
        }
        // Both go silent: a sees 1 of 3 and stands down, still naming itself.
        let mut f = alive_until_4();
        let out = f.handle(7.0, Input::Timer);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Leadership(l) if !l.is_local)),
            "{out:?}"
        );
        assert_eq!(f.node.partition(f.at(7.0)), Some((1, 3)));
        assert_eq!(f.node.leader(), f.a, "it still names itself");
        // One comes back: 2 of 3 is a majority.
        f.heartbeat_from(7.5, f.b);
        assert!(f.node.leadership().is_local);
        // However long they stay silent, they count: the minority never hosts (an hour, and
        // the 2 min after which an earlier rule forgot them).
        let mut f = alive_until_4();
        f.handle(7.0, Input::Timer);
        assert!(!f.node.leadership().is_local);
        for t in [124.1, 3600.0] {
            let out = f.handle(t, Input::Timer);
            assert!(
                !out.iter()
                    .any(|o| matches!(o, Output::Leadership(l) if l.is_local)),
                "{out:?}"
            );
            assert!(!f.node.leadership().is_local, "hosting after {t} s");
            assert_eq!(f.node.partition(f.at(t)), Some((1, 3)));
        }
        // A restart inside the minority does not forget them either: the members it recorded
        // alive count from the state file on, and go silent rather than vanish.
        let mut restarted = Fixture::new(10, &[1, 2]);
        restarted.handle(0.0, Input::Timer);
        for t in [2.0, 5.0, 60.0, 600.0] {
            restarted.handle(t, Input::Timer);
            assert!(
                !restarted.node.leadership().is_local,
                "hosting {t} s after the restart"
            );
        }
        assert_eq!(restarted.node.partition(restarted.at(600.0)), Some((1, 3)));
        // A refused redial says the process is down: it does not count.
        let mut f = alive_until_4();
        for peer in [f.b, f.c] {
            f.handle(4.2, Input::Disconnected(peer));
            f.handle(4.25, Input::DialFailed(peer));
        }
        assert!(f.node.leadership().is_local);
        assert_eq!(f.node.partition(f.at(4.3)), None);
    }

    /// Calls the timer every 50 ms from `from` to `to` seconds (so never late), giving
    /// `each` the instant and what the call put out; `b` and `c` heartbeat every whole second
    /// while `beating` says so.
    fn steady(
        f: &mut Fixture,
        (from, to): (f64, f64),
        beating: impl Fn(PeerId, f64) -> bool,
        mut each: impl FnMut(&mut Fixture, f64, &[Output]),
    ) {
        let (b, c) = (f.b, f.c);
        let (first, last) = ((from * 20.0).round() as u64, (to * 20.0).round() as u64);
        for step in first..=last {
            let t = step as f64 / 20.0;
            if step % 20 == 0 {
                for member in [b, c] {
                    if beating(member, t) {
                        f.heartbeat_from(t, member);
                    }
                }
            }
            let out = f.handle(t, Input::Timer);
            each(f, t, &out);
        }
    }

    /// Answers every ask among `out` from `helper` at `t` with a nack (it heard none).
    fn nack_asks(f: &mut Fixture, t: f64, helper: PeerId, out: &[Output]) {
        for (to, seq, _) in asks(out) {
            if to.contains(&helper) {
                let nack = Vouch {
                    asked: seq,
                    heard: Vec::new(),
                };
                f.beat_from(t + 0.01, helper, Vec::new(), Some(nack));
            }
        }
    }

    fn ran_late(out: &[Output]) -> Option<(Duration, u32)> {
        out.iter().find_map(|o| match o {
            Output::RanLate { late, health } => Some((*late, *health)),
            _ => None,
        })
    }

    #[test]
    fn a_node_that_ran_late_excuses_the_time_it_was_not_running_and_heartbeats_at_once() {
        // The same 2.7 s stall of this node's process, with and without the awareness: its
        // first call afterwards is the timer, before the heartbeats that waited meanwhile.
        for aware in [true, false] {
            let mut f = Fixture::aware();
            if !aware {
                f = Fixture::with_config(
                    10,
                    &[],
                    Config {
                        max_health: 0,
                        ..Config::default()
                    },
                );
            }
            f.join_b_and_c(0.0);
            let (b, c) = (f.b, f.c);
            steady(
                &mut f,
                (0.05, 1.0),
                |_, _| true,
                |_, _, out| {
                    assert!(ran_late(out).is_none(), "called every 50 ms: {out:?}");
                },
            );
            let out = f.handle(3.7, Input::Timer);
            if !aware {
                assert!(offline(&out, b) && offline(&out, c), "{out:?}");
                continue;
            }
            assert!(!offline(&out, b) && !offline(&out, c), "{out:?}");
            // Late from the wake it asked for (its heartbeat at 2 s), not from its last call.
            let (late, health) = ran_late(&out).expect("a late call is told");
            assert_eq!(late, Duration::from_millis(1700));
            assert_eq!(health, 2, "one point, and one per whole interval late");
            // The refutation: a heartbeat to every member at once.
            let sent: Vec<PeerId> = beats(&out)
                .iter()
                .flat_map(|(to, _)| to.iter().copied())
                .collect();
            assert!(sent.contains(&b) && sent.contains(&c), "{out:?}");
            // The backlog is read: both alive, nobody was ever marked.
            f.heartbeat_from(3.71, b);
            f.heartbeat_from(3.71, c);
            steady(
                &mut f,
                (3.75, 8.0),
                |_, _| true,
                |_, _, out| {
                    assert!(!offline(out, b) && !offline(out, c), "{out:?}");
                },
            );
            let detector = f.node.detector();
            assert_eq!(detector.late_wakes, 1);
            assert_eq!(detector.longest_late_ms, 1700, "{detector:?}");
        }
    }

    #[test]
    fn a_struggling_node_waits_longer_and_a_healthy_one_keeps_the_plain_bound() {
        let mut f = Fixture::aware();
        f.join_b_and_c(0.0);
        let (b, c) = (f.b, f.c);
        steady(&mut f, (0.05, 1.0), |_, _| true, |_, _, _| {});
        let out = f.handle(3.2, Input::Timer);
        assert_eq!(ran_late(&out).map(|(_, h)| h), Some(2));
        f.heartbeat_from(3.21, b);
        f.heartbeat_from(3.21, c);
        // b goes silent for good (its last heartbeat read at 3.21); c answers every ask about
        // it with a nack. With score 2 the bound is 3.5 s and shrinks by half a second every
        // 2 s: b is offline after 3 s of silence.
        let mut b_offline = None;
        steady(
            &mut f,
            (3.25, 12.0),
            |m, _| m == c,
            |f, t, out| {
                nack_asks(f, t, c, out);
                if offline(out, b) && b_offline.is_none() {
                    b_offline = Some(t);
                }
            },
        );
        let marked = b_offline.expect("b offline in the end");
        let silence = marked - 3.21;
        assert!(
            (3.0..=3.05).contains(&silence),
            "offline after {silence:.2} s of silence, not the plain 2.5 s"
        );
        assert_eq!(f.node.detector().unanswered_asks, 0, "every ask was nacked");
        // Calm again (score 0 after 8 s without a sign): the plain bound, 2.5 s.
        assert_eq!(f.node.detector().health, 0);
        let mut c_offline = None;
        steady(
            &mut f,
            (12.05, 20.0),
            |m, t| m == c && t <= 14.0,
            |_, t, out| {
                if offline(out, c) && c_offline.is_none() {
                    c_offline = Some(t);
                }
            },
        );
        let silence = c_offline.expect("c offline") - 14.0;
        assert!(
            (2.5..=2.55).contains(&silence),
            "a healthy node marks a silent member after {silence:.2} s"
        );
    }

    #[test]
    fn asks_nobody_answers_raise_the_score_and_a_nack_is_an_answer() {
        let mut f = Fixture::aware();
        f.join_b_and_c(0.0);
        let c = f.c;
        // b is silent here (c is not): a asks c about b at 1.25 s and again at 1.75 s. c
        // answers neither, so the second ask finds the first unanswered.
        steady(&mut f, (0.05, 1.95), |m, _| m == c, |_, _, _| {});
        let detector = f.node.detector().clone();
        assert_eq!(detector.asks, 2, "{detector:?}");
        assert_eq!(detector.unanswered_asks, 1, "{detector:?}");
        assert_eq!(detector.health, 1, "{detector:?}");
        // From now on c nacks every ask (it did not hear b either): no more are unanswered.
        steady(
            &mut f,
            (2.0, 6.0),
            |m, _| m == c,
            |f, t, out| nack_asks(f, t, c, out),
        );
        let detector = f.node.detector().clone();
        assert!(detector.asks >= 4, "{detector:?}");
        assert_eq!(
            detector.unanswered_asks, 1,
            "nacked asks are answered: {detector:?}"
        );
    }

    #[test]
    fn redial_backoff_doubles_to_the_cap() {
        let mut f = Fixture::new(10, &[]);
        f.handle(0.0, Input::Connected(f.c));
        let mut times = Vec::new();
        let mut t = 0.0;
        while t < 120.0 {
            let out = f.handle(t, Input::Timer);
            if dials(&out).contains(&f.b) {
                times.push(t);
            }
            t += 0.25;
        }
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..2], &[0.5, 1.0], "{times:?}");
        assert!(gaps[2..].iter().all(|g| (*g - 1.5).abs() < 0.3), "{gaps:?}");
        // Connected: no more dials.
        f.handle(t, Input::Connected(f.b));
        let out = f.handle(t + 60.0, Input::Timer);
        assert!(!dials(&out).contains(&f.b));
    }

    #[test]
    fn a_started_leader_waits_to_settle_unless_everyone_answered() {
        let mut f = Fixture::new(10, &[]);
        let out = f.handle(0.0, Input::Timer);
        assert!(!f.node.leadership().is_local, "not before settling");
        assert!(wake(&out) <= f.at(2.0));
        let out = f.handle(4.0, Input::Timer);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Leadership(l) if l.is_local))
        );

        let mut f = Fixture::new(10, &[]);
        f.handle(0.0, Input::Timer);
        f.join_b_and_c(0.5);
        assert!(
            f.node.leadership().is_local,
            "everyone answered: settled at once"
        );
    }

    #[test]
    fn a_restarted_node_names_the_recorded_leader_at_once() {
        let f = Fixture::new(30, &[1, 2]);
        assert_eq!(f.node.leader(), f.b, "b was alive when we stopped");
        assert_eq!(f.node.leadership().leader_name, "b");
    }

    #[test]
    fn stopping_says_goodbye_stands_down_and_exits_after_the_drain() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        assert_eq!(f.node.leader(), f.a);
        let out = f.handle(1.0, Input::Stop);
        assert!(publishes(&out).is_empty(), "the bot is told first");
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Leadership(l) if !l.is_local && l.leaving))
        );
        assert_eq!(f.node.leader(), f.b, "stands down: names the next leader");
        assert!(wake(&out) <= f.at(1.1));
        let out = f.handle(1.05, Input::Timer);
        assert!(
            publishes(&out).is_empty(),
            "no heartbeat while stopping, no goodbye yet"
        );
        let out = f.handle(1.1, Input::Timer);
        assert!(matches!(publishes(&out)[..], [GossipBody::Goodbye(_)]));
        assert!(!out.contains(&Output::Exit));
        assert!(wake(&out) <= f.at(2.1));
        let out = f.handle(2.1, Input::Timer);
        assert!(out.contains(&Output::Exit));
        // Alone: exits at once.
        let mut f = Fixture::new(10, &[]);
        let out = f.handle(0.0, Input::Stop);
        assert!(out.contains(&Output::Exit));
    }

    #[test]
    fn subscribers_get_a_heartbeat_and_a_summary_with_the_settings_and_nothing_is_published() {
        let mut f = Fixture::new(10, &[]);
        f.handle(0.0, Input::Timer);
        let pinned = NetworkSettings {
            owner_user_id: Some(42),
            ..NetworkSettings::default()
        };
        f.handle(0.1, Input::MergeSettings(&pinned));
        for (t, peer) in [(0.2, f.b), (0.25, f.c)] {
            let out = f.handle(t, Input::Subscribed(peer));
            assert!(publishes(&out).is_empty(), "{out:?}");
            assert!(
                matches!(beats(&out)[..], [(to, _)] if to == [peer]),
                "a heartbeat to the subscriber alone"
            );
            let summary = out.iter().find_map(|o| match o {
                Output::Sync { to, message } if *to == peer => Some(message),
                _ => None,
            });
            let summary = summary.expect("a summary to the subscriber");
            assert!(summary.is_summary());
            assert_eq!(
                summary.settings.owner_user_id,
                Some(42),
                "the settings travel in it"
            );
        }
        // A stranger subscribing gets nothing.
        let out = f.handle(1.0, Input::Subscribed(PeerId::random()));
        assert!(publishes(&out).is_empty() && beats(&out).is_empty());
    }

    #[test]
    fn only_the_leader_before_or_after_tells_the_owner() {
        // a follows b: b going offline is told by a only because a leads afterwards.
        let mut f = Fixture::new(25, &[]);
        f.handle(0.0, Input::Timer);
        f.join_b_and_c(0.0);
        for t in [2.0, 4.0] {
            f.heartbeat_from(t, f.b);
            f.heartbeat_from(t, f.c);
        }
        f.handle(5.0, Input::Timer);
        let out = f.handle(5.0, Input::Disconnected(f.c));
        let out2 = f.handle(5.0, Input::DialFailed(f.c));
        assert!(
            notices(&out).is_empty() && notices(&out2).is_empty(),
            "follower: silent"
        );
        f.handle(5.1, Input::Disconnected(f.b));
        let out = f.handle(5.1, Input::DialFailed(f.b));
        assert_eq!(notices(&out), vec![NetworkEvent::Offline("b".into())]);
        // The leader tells of c coming back (reconnected: a relayed heartbeat of the
        // incarnation seen to fail would not count).
        f.handle(6.0, Input::Connected(f.c));
        let out = f.heartbeat_from(6.0, f.c);
        assert_eq!(notices(&out), vec![NetworkEvent::Back("c".into())]);
    }

    #[test]
    fn settings_from_the_bot_are_published_and_from_gossip_only_kept() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        let pinned = NetworkSettings {
            owner_user_id: Some(42),
            ..NetworkSettings::default()
        };
        let out = f.handle(1.0, Input::MergeSettings(&pinned));
        assert!(matches!(publishes(&out)[..], [GossipBody::Settings(_)]));
        assert!(out.iter().any(
            |o| matches!(o, Output::Persist(s, None) if s.settings.owner_user_id == Some(42))
        ));
        let newer = NetworkSettings {
            last_update_id: 9,
            ..pinned.clone()
        };
        let body = GossipBody::Settings(SettingsUpdate {
            from: f.b,
            settings: newer,
        });
        let out = f.handle(
            2.0,
            Input::Gossip {
                signer: Some(f.b),
                body: &body,
            },
        );
        assert!(publishes(&out).is_empty());
        assert_eq!(f.node.settings().last_update_id, 9);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Settings(s) if s.last_update_id == 9))
        );
    }

    #[test]
    fn gossip_from_a_wrong_signer_or_a_stranger_is_refused_and_counted() {
        let mut f = Fixture::new(10, &[]);
        let body = GossipBody::Goodbye(Goodbye {
            node_id: f.b,
            seq: 5,
        });
        let out = f.handle(
            0.0,
            Input::Gossip {
                signer: Some(f.c),
                body: &body,
            },
        );
        assert_eq!(out[0], Output::GossipVerdict(Err(Refusal::WrongSigner)));
        let stranger = PeerId::random();
        let out = f.heartbeat_from(0.1, stranger);
        assert_eq!(out[0], Output::GossipVerdict(Err(Refusal::NonMember)));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Sync { to, .. } if *to == stranger)),
            "a sender holding the secret but unknown here: pull its roster (a missed join)"
        );
        let out = f.heartbeat_from(0.2, stranger);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Sync { .. })),
            "pulls are spaced"
        );
        f.handle(0.3, Input::GossipRefused(Refusal::BadMac));
        let r = f.node.rejections();
        assert_eq!((r.wrong_signer, r.non_member, r.bad_mac), (1, 2, 1));
    }

    #[test]
    fn strangers_are_disconnected_after_the_join_window_or_soon_after_a_refusal() {
        let mut f = Fixture::new(10, &[]);
        let (s1, s2) = (PeerId::random(), PeerId::random());
        f.handle(0.0, Input::Connected(s1));
        f.handle(0.0, Input::Connected(s2));
        f.handle(1.0, Input::StrangerRefused(s2));
        let out = f.handle(1.5, Input::Timer);
        assert!(out.contains(&Output::Disconnect(s2)));
        assert!(!out.contains(&Output::Disconnect(s1)));
        let out = f.handle(11.9, Input::Timer);
        assert!(!out.contains(&Output::Disconnect(s1)), "not before 12 s");
        let out = f.handle(12.0, Input::Timer);
        assert!(out.contains(&Output::Disconnect(s1)));
        // Members are never strangers.
        f.handle(13.0, Input::Connected(f.b));
        let out = f.handle(30.0, Input::Timer);
        assert!(!out.contains(&Output::Disconnect(f.b)));
    }

    /// Records an invite for `token` (request number `request`) at `unix_now`, valid `ttl_secs`.
    fn issue(
        f: &mut Fixture,
        secs: f64,
        request: u64,
        token: &str,
        unix_now: u64,
        ttl_secs: u64,
    ) -> Vec<Output> {
        let hash = crate::join::token_hash(token);
        f.handle(
            secs,
            Input::IssueInvite {
                request,
                token_sha256: &hash,
                unix_now,
                ttl_secs,
            },
        )
    }

    fn join(f: &mut Fixture, secs: f64, peer: PeerId, token: &str, name: &str) -> Vec<Output> {
        join_as(f, secs, peer, token, name, false)
    }

    fn join_as(
        f: &mut Fixture,
        secs: f64,
        peer: PeerId,
        token: &str,
        name: &str,
        confirms: bool,
    ) -> Vec<Output> {
        f.handle(
            secs,
            Input::JoinRequest {
                peer,
                token,
                name,
                addr: "127.0.0.1:4800",
                priority: 100,
                unix_now: 1_000,
                confirms,
                card: None,
            },
        )
    }

    /// A fixture with `b` and `c` alive and an invite for `token` recorded.
    fn with_invite(token: &str) -> Fixture {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        record_invite(&mut f, 1, token);
        f
    }

    /// Issues an invite for `token` (valid from 900 to 1500 unix seconds) and makes it durable.
    fn record_invite(f: &mut Fixture, request: u64, token: &str) {
        let hash = crate::join::token_hash(token);
        f.handle(
            0.0,
            Input::IssueInvite {
                request,
                token_sha256: &hash,
                unix_now: 900,
                ttl_secs: 600,
            },
        );
        f.handle(0.0, Input::Persisted(Ack::Invite(request)));
    }

    /// Whether any output would tell another node about `peer`.
    fn reveals(outputs: &[Output], peer: PeerId) -> bool {
        outputs.iter().any(|o| match o {
            Output::Publish(body) => match &**body {
                GossipBody::Roster(roster) => roster.records.iter().any(|r| r.node_id == peer),
                _ => false,
            },
            Output::Sync { message, .. } | Output::SyncReply { message, .. } => {
                message.records.iter().any(|r| r.node_id == peer)
            }
            Output::Notice(NetworkEvent::Joined(_)) => true,
            Output::Membership(Change::Joined(id)) => *id == peer,
            _ => false,
        })
    }

    #[test]
    fn an_unconfirmed_admission_is_held_back_and_undone_after_the_bound() {
        let mut f = with_invite("tok");
        let d = PeerId::random();
        join_as(&mut f, 1.0, d, "tok", "d", true);
        let out = f.handle(1.1, Input::Persisted(Ack::Admission(d)));
        assert!(matches!(answer(&out), Some(Ok(_))), "answered: {out:?}");
        assert!(!reveals(&out, d), "held back: {out:?}");
        // Nothing tells anyone about d while it is unconfirmed: a subscriber's sync, the
        // periodic one, another joiner's member list.
        let mut outputs = f.handle(2.0, Input::Subscribed(f.b));
        outputs.extend(f.handle(31.0 - 15.0, Input::Timer));
        assert!(!reveals(&outputs, d), "{outputs:?}");
        record_invite(&mut f, 2, "tok2");
        let e = PeerId::random();
        // Its name is taken meanwhile.
        let out = join_as(&mut f, 3.0, e, "tok2", "d", true);
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::NameTaken("d".into()))));
        join_as(&mut f, 3.0, e, "tok2", "e", true);
        let out = f.handle(3.1, Input::Persisted(Ack::Admission(e)));
        let Some(Ok(admission)) = answer(&out) else {
            panic!("e not admitted: {out:?}");
        };
        assert!(admission.members.iter().all(|r| r.node_id != d));
        assert!(
            f.node.view().iter().all(|m| m.name != "d"),
            "not listed while unconfirmed"
        );
        // No confirmation within 15 s: undone, the token usable again.
        let out = f.handle(16.2, Input::Timer);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::AdmissionUndone { peer, .. } if *peer == d)),
            "{out:?}"
        );
        assert!(out.iter().any(|o| matches!(o, Output::Persist(s, None)
            if s.members.iter().all(|(r, _)| r.node_id != d))));
        assert!(!f.node.membership().is_member(&d));
        assert!(f.node.membership().find_by_name("d").is_none());
        let invite = f
            .node
            .invites()
            .iter()
            .find(|i| i.token_sha256 == crate::join::token_hash("tok"))
            .expect("the invite is kept");
        assert_eq!((invite.used_at, &invite.used_by), (None, &None));
        // A late confirmation is refused plainly.
        let out = f.handle(16.3, Input::JoinConfirm(d));
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::AdmissionUndone)));
        // The token works again, for the same name.
        let g = PeerId::random();
        join_as(&mut f, 17.0, g, "tok", "d", true);
        let out = f.handle(17.1, Input::Persisted(Ack::Admission(g)));
        assert!(matches!(answer(&out), Some(Ok(_))), "{out:?}");
    }

    #[test]
    fn a_confirmed_admission_stands_and_is_announced() {
        let mut f = with_invite("tok");
        let d = PeerId::random();
        join_as(&mut f, 1.0, d, "tok", "d", true);
        f.handle(1.1, Input::Persisted(Ack::Admission(d)));
        let out = f.handle(2.0, Input::JoinConfirm(d));
        assert!(matches!(answer(&out), Some(Ok(a)) if a.record.node_id == d));
        assert!(out.contains(&Output::Membership(Change::Joined(d))));
        assert!(reveals(&out, d), "announced: {out:?}");
        // A repeated confirmation is answered the same; the bound no longer applies.
        let out = f.handle(3.0, Input::JoinConfirm(d));
        assert!(matches!(answer(&out), Some(Ok(_))));
        let out = f.handle(30.0, Input::Timer);
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::AdmissionUndone { .. }))
        );
        assert!(f.node.membership().is_member(&d));
        // A confirmation for a node never admitted is refused.
        let out = f.handle(30.0, Input::JoinConfirm(PeerId::random()));
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::AdmissionUndone)));
    }

    #[test]
    fn gossip_from_an_unconfirmed_joiner_confirms_it() {
        let mut f = with_invite("tok");
        let d = PeerId::random();
        join_as(&mut f, 1.0, d, "tok", "d", true);
        f.handle(1.1, Input::Persisted(Ack::Admission(d)));
        f.handle(5.0, Input::Connected(d));
        let out = f.heartbeat_from(5.0, d);
        assert!(out.contains(&Output::GossipVerdict(Ok(()))), "{out:?}");
        assert!(out.contains(&Output::Membership(Change::Joined(d))));
        let out = f.handle(20.0, Input::Timer);
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::AdmissionUndone { .. }))
        );
        assert!(f.node.membership().is_member(&d));
    }

    #[test]
    fn an_older_joiner_is_admitted_at_once() {
        let mut f = with_invite("tok");
        let d = PeerId::random();
        join(&mut f, 1.0, d, "tok", "d");
        let out = f.handle(1.1, Input::Persisted(Ack::Admission(d)));
        assert!(out.contains(&Output::Membership(Change::Joined(d))));
        let out = f.handle(30.0, Input::Timer);
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::AdmissionUndone { .. }))
        );
    }

    fn answer(outputs: &[Output]) -> Option<&Result<Box<Admission>, JoinRefusal>> {
        outputs.iter().find_map(|o| match o {
            Output::JoinAnswer { answer, .. } => Some(answer),
            _ => None,
        })
    }

    #[test]
    fn a_join_is_answered_only_once_durable_and_a_token_is_single_use() {
        let mut f = Fixture::new(10, &[]);
        let out = issue(&mut f, 0.0, 1, "tok", 900, 600);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Persist(_, Some(Ack::Invite(1)))))
        );
        let out = f.handle(0.0, Input::Persisted(Ack::Invite(1)));
        assert!(out.contains(&Output::InviteRecorded {
            request: 1,
            result: Ok(())
        }));
        let d = PeerId::random();
        let out = join(&mut f, 1.0, d, "tok", "d");
        assert!(answer(&out).is_none(), "not answered before the write");
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Persist(_, Some(Ack::Admission(p))) if *p == d))
        );
        // A racing joiner with the same token is refused at once.
        let e = PeerId::random();
        let out = join(&mut f, 1.0, e, "tok", "e");
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::TokenUsed)));
        let out = f.handle(1.1, Input::Persisted(Ack::Admission(d)));
        let Some(Ok(admission)) = answer(&out) else {
            panic!("no admission: {out:?}");
        };
        assert_eq!(admission.record.name, "d");
        assert!(matches!(publishes(&out)[..], [GossipBody::Roster(_)]));
        assert!(f.node.membership().is_member(&d));
    }

    #[test]
    fn a_join_whose_write_fails_changes_nothing() {
        let mut f = Fixture::new(10, &[]);
        issue(&mut f, 0.0, 1, "tok", 900, 600);
        f.handle(0.0, Input::Persisted(Ack::Invite(1)));
        let before = f.node.snapshot();
        let d = PeerId::random();
        join(&mut f, 1.0, d, "tok", "d");
        let out = f.handle(1.1, Input::PersistFailed(Ack::Admission(d), "disk full"));
        assert_eq!(
            answer(&out),
            Some(&Err(JoinRefusal::SeedFailure("disk full".into())))
        );
        assert_eq!(
            f.node.snapshot(),
            before,
            "the token and the roster are as before"
        );
        assert!(!f.node.membership().is_member(&d));
        // The same token still works.
        let out = join(&mut f, 2.0, d, "tok", "d");
        assert!(answer(&out).is_none());
    }

    #[test]
    fn join_refusals() {
        let mut f = Fixture::new(10, &[]);
        let d = PeerId::random();
        let out = join(&mut f, 0.0, d, "nope", "d");
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::UnknownToken)));
        issue(&mut f, 0.0, 1, "old", 100, 10);
        let out = join(&mut f, 0.0, d, "old", "d");
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::ExpiredToken)));
        issue(&mut f, 0.0, 2, "new", 900, 600);
        let out = join(&mut f, 0.0, d, "new", "b");
        assert_eq!(answer(&out), Some(&Err(JoinRefusal::NameTaken("b".into()))));
        let b = f.b;
        let out = join(&mut f, 0.0, b, "new", "bee");
        assert!(matches!(answer(&out), Some(Err(JoinRefusal::Invalid(_)))));
    }

    #[test]
    fn leave_is_written_before_the_tombstone_goes_out() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        let out = f.handle(1.0, Input::Leave);
        assert!(
            publishes(&out).is_empty(),
            "nothing goes out before the write"
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Persist(s, Some(Ack::Leave)) if s.left))
        );
        let out = f.handle(1.1, Input::Persisted(Ack::Leave));
        let [GossipBody::Roster(roster)] = publishes(&out)[..] else {
            panic!("no tombstone: {out:?}");
        };
        assert!(roster.records[0].left && roster.records[0].node_id == f.a);
        let out = f.handle(4.1, Input::Timer);
        assert!(out.contains(&Output::LeaveDone(Ok(LeaveOutcome::Unconfirmed))));
        let out = f.handle(5.1, Input::Timer);
        assert!(out.contains(&Output::Exit));
    }

    /// The members a leaving node pushes its list to, and the list it pushes.
    fn pushes(outputs: &[Output]) -> Vec<(PeerId, SyncMessage)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Sync { to, message } => Some((*to, (**message).clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn leave_waits_for_a_member_to_acknowledge_the_tombstone() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        f.handle(0.5, Input::Disconnected(f.c));
        f.handle(1.0, Input::Leave);
        let out = f.handle(1.1, Input::Persisted(Ack::Leave));
        assert!(
            !out.iter().any(|o| matches!(o, Output::LeaveDone(_))),
            "not answered before an acknowledgement or the bound: {out:?}"
        );
        // Pushed to the connected member, tombstone included; the other one is dialled.
        let pushed = pushes(&out);
        assert_eq!(pushed.len(), 1, "{out:?}");
        assert_eq!(pushed[0].0, f.b);
        assert!(
            pushed[0]
                .1
                .records
                .iter()
                .any(|r| r.node_id == f.a && r.left)
        );
        assert_eq!(dials(&out), vec![f.c]);
        // c connects while the leave waits: it gets the push too.
        let out = f.handle(1.2, Input::Connected(f.c));
        assert_eq!(pushes(&out).len(), 1);
        // No heartbeats while waiting.
        let out = f.handle(3.0, Input::Timer);
        assert!(publishes(&out).is_empty(), "{out:?}");
        // An answer without our tombstone (an older exchange) acknowledges nothing.
        let stale = SyncMessage::member_list(vec![record(f.a, "a", 10)]);
        let out = f.handle(
            3.1,
            Input::SyncAnswer {
                from: f.b,
                message: &stale,
            },
        );
        assert!(!out.iter().any(|o| matches!(o, Output::LeaveDone(_))));
        let acknowledged = pushed[0].1.clone();
        let out = f.handle(
            3.2,
            Input::SyncAnswer {
                from: f.b,
                message: &acknowledged,
            },
        );
        assert!(out.contains(&Output::LeaveDone(Ok(LeaveOutcome::Confirmed("b".into())))));
        // Answered once, and the bound no longer matters; exit after the drain.
        let out = f.handle(4.1, Input::Timer);
        assert!(!out.iter().any(|o| matches!(o, Output::LeaveDone(_))));
        let out = f.handle(4.3, Input::Timer);
        assert!(out.contains(&Output::Exit));
    }

    #[test]
    fn a_node_alone_leaves_at_once() {
        let t0 = Instant::now();
        let a = PeerId::random();
        let mut node = Node::new(
            Config::default(),
            LocalNode {
                id: a,
                name: "a".into(),
                priority: 10,
                incarnation: 1,
                addrs: vec![],
            },
            Restored {
                records: vec![record(a, "a", 10)],
                ..Restored::default()
            },
            t0,
            1,
        );
        let _ = node.handle(t0, Input::Leave).count();
        let out: Vec<Output> = node.handle(t0, Input::Persisted(Ack::Leave)).collect();
        assert!(out.contains(&Output::LeaveDone(Ok(LeaveOutcome::Alone))));
    }

    #[test]
    fn a_member_acknowledges_a_departed_nodes_push_before_closing_its_connection() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        let mut tombstone = record(f.b, "b", 20);
        tombstone.version = 2;
        tombstone.left = true;
        // The gossiped tombstone comes first: the connection is not closed at once.
        let roster = GossipBody::Roster(RosterUpdate {
            from: f.b,
            records: vec![tombstone.clone()],
        });
        let out = f.handle(
            1.0,
            Input::Gossip {
                signer: Some(f.b),
                body: &roster,
            },
        );
        assert!(!f.node.membership().is_member(&f.b));
        assert!(!out.contains(&Output::Disconnect(f.b)), "{out:?}");
        // Its push is answered with its tombstone alone: the acknowledgement.
        let push = SyncMessage::member_list(vec![tombstone.clone(), record(f.a, "a", 10)]);
        let reply = f.sync_reply(1.1, f.b, &push);
        assert_eq!(reply.map(|m| m.records), Some(vec![tombstone]));
        // Then closed after the grace.
        let out = f.handle(1.6, Input::Timer);
        assert!(out.contains(&Output::Disconnect(f.b)), "{out:?}");
    }

    #[test]
    fn a_leave_that_cannot_be_written_is_undone() {
        let mut f = Fixture::new(10, &[]);
        f.handle(1.0, Input::Leave);
        let out = f.handle(1.1, Input::PersistFailed(Ack::Leave, "read-only"));
        assert!(matches!(&out[..], [Output::LeaveDone(Err(_)), ..]));
        assert!(f.node.membership().is_member(&f.a));
        assert!(!f.node.snapshot().left);
    }

    #[test]
    fn sync_merges_both_ways_and_answers_members_only() {
        let mut f = Fixture::new(10, &[]);
        let d = PeerId::random();
        let message = SyncMessage::member_list(vec![record(d, "d", 50)]);
        let out = f.handle(
            0.0,
            Input::SyncRequest {
                from: f.b,
                message: &message,
            },
        );
        assert!(f.node.membership().is_member(&d));
        assert!(out.iter().any(|o| matches!(o, Output::SyncReply { to, message } if *to == f.b && message.records.len() == 4)));
        let out = f.handle(
            0.0,
            Input::SyncRequest {
                from: PeerId::random(),
                message: &message,
            },
        );
        assert!(!out.iter().any(|o| matches!(o, Output::SyncReply { .. })));
    }

    /// The summary exchange ([`SyncMessage`]): equal lists travel as two digests; a differing
    /// one gets the full list with `pull`, and the asker then sends its own once.
    #[test]
    fn a_sync_sends_the_records_only_when_the_lists_differ() {
        let mut f = Fixture::new(10, &[]);
        let out = f.handle(0.0, Input::Subscribed(f.b));
        let summary = out
            .iter()
            .find_map(|o| match o {
                Output::Sync { to, message } if *to == f.b => Some((**message).clone()),
                _ => None,
            })
            .expect("a sync on subscription");
        assert!(summary.is_summary(), "{summary:?}");
        // The same list on the other side: a summary answers, nothing else follows.
        let reply_to = |f: &mut Fixture, message: &SyncMessage| {
            let from = f.b;
            f.sync_reply(0.1, from, message)
                .expect("members are answered")
        };
        let same = reply_to(&mut f, &summary);
        assert!(same.is_summary() && !same.pull, "{same:?}");
        assert_eq!(same.digest, summary.digest);
        // Another list: the full one (a, b, c), asking for the asker's.
        let other = SyncMessage {
            digest: Some([7; 32]),
            ..summary.clone()
        };
        let full = reply_to(&mut f, &other);
        assert_eq!(full.records.len(), 3);
        assert!(full.pull);
        assert_eq!(full.digest, summary.digest, "the digest of the list sent");
        // A full request is never answered with `pull`.
        let pushed = SyncMessage {
            records: full.records.clone(),
            digest: Some([7; 32]),
            ..summary.clone()
        };
        assert!(!reply_to(&mut f, &pushed).pull);
        // The asker's side: a full answer with `pull` and a list it lacks a record of (d)
        // makes it send its own full list once; without `pull`, nothing.
        let d = PeerId::random();
        let answer = SyncMessage {
            records: vec![record(d, "d", 50)],
            digest: Some([9; 32]),
            pull: true,
            ..summary.clone()
        };
        let out = f.handle(
            0.2,
            Input::SyncAnswer {
                from: f.b,
                message: &answer,
            },
        );
        assert!(f.node.membership().is_member(&d));
        let push = out.iter().find_map(|o| match o {
            Output::Sync { to, message } if *to == f.b => Some(message),
            _ => None,
        });
        assert_eq!(push.map(|m| m.records.len()), Some(4), "{out:?}");
        let out = f.handle(
            0.3,
            Input::SyncAnswer {
                from: f.b,
                message: &SyncMessage {
                    pull: false,
                    ..answer
                },
            },
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Sync { .. })));
    }

    #[test]
    fn a_leavers_push_is_acknowledged_with_its_tombstone_even_when_the_lists_then_agree() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        let mut tombstone = record(f.b, "b", 20);
        tombstone.version = 2;
        tombstone.left = true;
        let mut records = f.node.membership().records();
        records.retain(|r| r.node_id != f.b);
        records.push(tombstone.clone());
        let push = SyncMessage {
            records,
            settings: NetworkSettings::default(),
            rotation: None,
            digest: Some([3; 32]),
            pull: false,
        };
        let reply = f.sync_reply(1.0, f.b, &push);
        assert_eq!(reply.map(|m| m.records), Some(vec![tombstone]));
    }

    #[test]
    fn the_roster_digest_follows_every_change_of_a_record() {
        let mut f = Fixture::new(10, &[]);
        let before = f.node.roster_digest();
        let d = PeerId::random();
        f.node.membership.merge(&[record(d, "d", 50)]);
        let joined = f.node.roster_digest();
        assert_ne!(before, joined);
        f.node.membership.remove(&d, 1);
        let removed = f.node.roster_digest();
        assert_ne!(joined, removed);
        let left = f.node.membership.leave().expect("own record");
        assert_ne!(removed, f.node.roster_digest());
        f.node.membership.unleave();
        assert_eq!(
            removed,
            f.node.roster_digest(),
            "undone: the same list again"
        );
        assert!(left.left);
    }

    #[test]
    fn periodic_sync_picks_a_connected_member() {
        let mut f = Fixture::new(10, &[]);
        f.handle(0.0, Input::Connected(f.c));
        let out = f.handle(30.0, Input::Timer);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Sync { to, .. } if *to == f.c))
        );
        let out = f.handle(31.0, Input::Timer);
        assert!(!out.iter().any(|o| matches!(o, Output::Sync { .. })));
    }

    #[test]
    fn the_interval_grows_with_the_square_root_past_a_thousand_members() {
        assert_eq!(
            Config::for_size(3).heartbeat_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            Config::for_size(1000).offline_after,
            Duration::from_millis(2500)
        );
        let big = Config::for_size(10_000);
        assert!((big.heartbeat_interval.as_secs_f64() - 3.16).abs() < 0.01);
        assert_eq!(big.offline_after, big.heartbeat_interval * 5 / 2);
        assert!(SECOND < big.heartbeat_interval);
    }

    #[test]
    fn the_interval_follows_the_size_as_members_join() {
        let mut f = Fixture::new(10, &[]);
        assert_eq!(f.node.config().heartbeat_interval, Duration::from_secs(1));
        let records: Vec<MemberRecord> = (0..3997)
            .map(|i| record(PeerId::random(), &format!("n{i}"), 100))
            .collect();
        let message = SyncMessage {
            records,
            settings: NetworkSettings::default(),
            rotation: None,
            digest: None,
            pull: false,
        };
        f.handle(
            0.0,
            Input::SyncRequest {
                from: f.b,
                message: &message,
            },
        );
        // 4,000 members: 1 s × √4.
        assert_eq!(f.node.config().heartbeat_interval, Duration::from_secs(2));
        assert_eq!(f.node.config().offline_after, Duration::from_secs(5));
    }

    #[test]
    fn a_flood_of_strangers_cannot_keep_a_joiner_out() {
        let mut f = Fixture::new(10, &[]);
        let flood: Vec<PeerId> = (0..256).map(|_| PeerId::random()).collect();
        for (i, peer) in flood.iter().enumerate() {
            f.handle(i as f64 * 0.001, Input::Connected(*peer));
        }
        let joiner = PeerId::random();
        let out = f.handle(1.0, Input::Connected(joiner));
        assert!(
            out.contains(&Output::Disconnect(flood[0])),
            "the oldest makes room"
        );
        assert!(!out.contains(&Output::Disconnect(joiner)));
        // Strangers that hang up free their place at once.
        for peer in &flood[1..] {
            f.handle(1.1, Input::Disconnected(*peer));
        }
        let late = PeerId::random();
        let out = f.handle(1.2, Input::Connected(late));
        assert!(!out.iter().any(|o| matches!(o, Output::Disconnect(_))));
    }

    #[test]
    fn a_removal_tombstones_publishes_and_rotates_and_a_leader_rotates_when_a_member_leaves() {
        // `a` leads (priority 10); it removes `c`.
        let mut f = Fixture::new(10, &[1, 2]);
        let c = f.c;
        let out = f.handle(
            1.0,
            Input::Remove {
                peer: c,
                unix_now: 950,
            },
        );
        assert!(!f.node.membership().is_member(&c));
        assert!(out.contains(&Output::Rotate), "{out:?}");
        assert!(out.contains(&Output::Disconnect(c)));
        assert_eq!(out.iter().filter(|o| **o == Output::Rotate).count(), 1);
        // After the tombstone's publish, right before the wake.
        assert_eq!(out[out.len() - 2], Output::Rotate);
        assert!(
            publishes(&out)
                .iter()
                .any(|b| matches!(b, GossipBody::Roster(r)
            if r.records.iter().any(|rec| rec.node_id == c && rec.left)))
        );
        // Removing it again, or this node, does nothing.
        let again = f.handle(
            1.5,
            Input::Remove {
                peer: c,
                unix_now: 951,
            },
        );
        assert!(!again.contains(&Output::Rotate));
        let local = f.a;
        assert!(
            !f.handle(
                1.6,
                Input::Remove {
                    peer: local,
                    unix_now: 952
                }
            )
            .contains(&Output::Rotate)
        );
        // `b` leaves (its tombstone arrives by gossip): the leader rotates.
        let b = f.b;
        let mut gone = f.node.membership().record(&b).unwrap().clone();
        gone.left = true;
        gone.version += 1;
        let body = GossipBody::Roster(RosterUpdate {
            from: b,
            records: vec![gone],
        });
        let out = f.handle(
            2.0,
            Input::Gossip {
                signer: Some(b),
                body: &body,
            },
        );
        assert!(!out.contains(&Output::Rotate), "{out:?}");
        // Not at once: the remover's own rotation may come meanwhile. None came: it rotates.
        let out = f.handle(2.5, Input::Timer);
        assert!(!out.contains(&Output::Rotate), "{out:?}");
        let out = f.handle(4.01, Input::Timer);
        assert!(out.contains(&Output::Rotate), "{out:?}");
        // A departure after which the remover's rotation (leaving the node out) arrives needs
        // no rotation of the leader's.
        let mut g = Fixture::new(10, &[1, 2]);
        g.join_b_and_c(0.0);
        let (ga, gb, gc) = (g.a, g.b, g.c);
        let mut gone = g.node.membership().record(&gc).unwrap().clone();
        gone.left = true;
        gone.version += 1;
        gone.removed_at = Some(950);
        let body = GossipBody::Roster(RosterUpdate {
            from: gb,
            records: vec![gone],
        });
        g.handle(
            1.0,
            Input::Gossip {
                signer: Some(gb),
                body: &body,
            },
        );
        g.handle(
            1.2,
            Input::Rotated {
                rotation: &rotation_sealed_to(gb, 1, &[ga], 950),
                publish: false,
                unix_now: 950,
                replaced_ours: false,
            },
        );
        assert!(!g.handle(3.5, Input::Timer).contains(&Output::Rotate));
    }

    #[test]
    fn concurrent_rotations_resolve_to_the_smaller_node_id() {
        let (x, y) = (PeerId::random(), PeerId::random());
        let (small, large) = if x.to_bytes() < y.to_bytes() {
            (x, y)
        } else {
            (y, x)
        };
        let rotation = |from: PeerId, epoch| Rotation {
            from,
            epoch,
            sealed: vec![],
            made_at: 0,
        };
        assert!(rotation(large, 2).wins_over(1, Some(&small)));
        assert!(rotation(small, 2).wins_over(2, Some(&large)));
        assert!(!rotation(large, 2).wins_over(2, Some(&small)));
        assert!(!rotation(small, 1).wins_over(2, Some(&large)));
        // After a restart nothing is known of the current epoch's maker: it stays.
        assert!(!rotation(small, 2).wins_over(2, None));
    }

    fn rotation_sealed_to(from: PeerId, epoch: u64, to: &[PeerId], made_at: u64) -> Rotation {
        Rotation {
            from,
            epoch,
            sealed: to
                .iter()
                .map(|id| crate::gossip::SealedFor {
                    to: *id,
                    blob: vec![1],
                })
                .collect(),
            made_at,
        }
    }

    #[test]
    fn a_removed_node_comes_back_only_through_an_invite_issued_after_its_removal() {
        // Invite "old" was issued at 900; `c` is removed at 950.
        let mut f = with_invite("old");
        let c = f.c;
        f.handle(
            1.0,
            Input::Remove {
                peer: c,
                unix_now: 950,
            },
        );
        let tombstone = f.node.membership().any_record(&c).unwrap().clone();
        assert!(tombstone.left && tombstone.removed_at == Some(950));
        // The old link, valid and unused, does not readmit it.
        let out = join(&mut f, 2.0, c, "old", "c");
        assert!(
            matches!(answer(&out), Some(Err(JoinRefusal::Invalid(why))) if why.contains("removed")),
            "{out:?}"
        );
        // A node that merely left is welcome back with that same old link (a leave is not a
        // removal).
        let mut g = with_invite("old");
        let b = g.b;
        let mut left = g.node.membership().record(&b).unwrap().clone();
        left.left = true;
        left.version += 1;
        g.handle(
            1.0,
            Input::SyncAnswer {
                from: g.c,
                message: &SyncMessage::member_list(vec![left]),
            },
        );
        assert!(!g.node.membership().is_member(&b));
        join(&mut g, 2.0, b, "old", "b");
        let out = g.handle(2.1, Input::Persisted(Ack::Admission(b)));
        assert!(matches!(answer(&out), Some(Ok(_))), "{out:?}");
        // A new invite, issued after the removal, admits `c` as a new admission.
        issue(&mut f, 3.0, 2, "new", 960, 600);
        f.handle(3.0, Input::Persisted(Ack::Invite(2)));
        join(&mut f, 3.1, c, "new", "c");
        let out = f.handle(3.2, Input::Persisted(Ack::Admission(c)));
        let Some(Ok(admission)) = answer(&out) else {
            panic!("not admitted: {out:?}");
        };
        assert_eq!(admission.record.admission, tombstone.admission + 1);
        assert!(f.node.membership().is_member(&c));
        // Elsewhere, the fresh admission supersedes the tombstone whatever its version, while
        // the removed node's own bumped record of the old admission never does.
        let mut other = Membership::new(f.b, vec![record(f.b, "b", 20)], SECOND);
        other.merge(std::slice::from_ref(&tombstone));
        let mut stale = tombstone.clone();
        stale.left = false;
        stale.removed_at = None;
        stale.version += 10;
        other.merge(&[stale]);
        assert!(
            !other.is_member(&c),
            "a bumped record of the removed admission came back"
        );
        other.merge(std::slice::from_ref(&admission.record));
        assert!(other.is_member(&c));
        other.merge(&[tombstone]);
        assert!(
            other.is_member(&c),
            "the old tombstone beat the new admission"
        );
    }

    #[test]
    fn the_maker_of_a_lost_rotation_retries_while_the_winner_reaches_a_removed_node() {
        // `b` leads; `a` removed `c` and made a rotation that lost to one that `b` made before
        // it heard of the removal (sealed to `c` too).
        let mut f = Fixture::new(30, &[1, 2]);
        let (a, b, c) = (f.a, f.b, f.c);
        f.join_b_and_c(0.0);
        f.handle(
            1.0,
            Input::Remove {
                peer: c,
                unix_now: 950,
            },
        );
        let winner = rotation_sealed_to(b, 1, &[a, c], 950);
        let out = f.handle(
            1.1,
            Input::Rotated {
                rotation: &winner,
                publish: false,
                unix_now: 950,
                replaced_ours: true,
            },
        );
        assert!(out.contains(&Output::Rotate), "{out:?}");
        // A winner that leaves `c` out needs nothing more.
        let clean = rotation_sealed_to(b, 1, &[a], 950);
        let out = f.handle(
            1.2,
            Input::Rotated {
                rotation: &clean,
                publish: false,
                unix_now: 950,
                replaced_ours: true,
            },
        );
        assert!(!out.contains(&Output::Rotate), "{out:?}");
        // A member that did not rotate itself and does not lead leaves it to the others.
        let mut g = Fixture::new(30, &[1, 2]);
        g.join_b_and_c(0.0);
        let (gb, gc) = (g.b, g.c);
        g.handle(
            1.0,
            Input::Remove {
                peer: gc,
                unix_now: 950,
            },
        );
        let out = g.handle(
            1.1,
            Input::Rotated {
                rotation: &rotation_sealed_to(gb, 1, &[g.a, gc], 950),
                publish: false,
                unix_now: 950,
                replaced_ours: false,
            },
        );
        assert!(!out.contains(&Output::Rotate), "{out:?}");
    }

    #[test]
    fn the_leader_rotates_when_the_secret_is_older_than_the_interval() {
        let config = Config {
            rotation_interval: Duration::from_secs(60),
            ..Config::default()
        };
        let mut f = Fixture::new(10, &[1, 2]);
        f.node.config.rotation_interval = config.rotation_interval;
        f.join_b_and_c(0.0);
        // The last rotation was made 30 s ago (unix 1000 vs 970).
        let (a, b, c) = (f.a, f.b, f.c);
        f.handle(
            5.0,
            Input::Rotated {
                rotation: &rotation_sealed_to(a, 1, &[b, c], 970),
                publish: false,
                unix_now: 1000,
                replaced_ours: false,
            },
        );
        let out = f.handle(30.0, Input::Timer);
        assert!(!out.contains(&Output::Rotate), "{out:?}");
        // Due 60 s after it was made: at 35 s on this clock. The wake asks for it.
        let out = f.handle(34.0, Input::Timer);
        assert!(!out.contains(&Output::Rotate));
        assert!(
            matches!(out.last(), Some(Output::WakeAt(at)) if *at <= f.at(35.01)),
            "{out:?}"
        );
        let out = f.handle(35.01, Input::Timer);
        assert_eq!(
            out.iter().filter(|o| **o == Output::Rotate).count(),
            1,
            "{out:?}"
        );
        // Not again before the answer (nor while waiting for it).
        assert!(!f.handle(36.0, Input::Timer).contains(&Output::Rotate));
        // A member that does not lead never rotates on time.
        let mut g = Fixture::new(30, &[1, 2]);
        g.node.config.rotation_interval = config.rotation_interval;
        g.join_b_and_c(0.0);
        let gb = g.b;
        for t in 1..=100 {
            let mut out = g.heartbeat_from(f64::from(t), gb);
            out.extend(g.handle(f64::from(t) + 0.5, Input::Timer));
            assert!(!out.contains(&Output::Rotate), "{out:?}");
        }
    }

    #[test]
    fn gossip_under_a_newer_epoch_pulls_the_senders_roster_and_rotation() {
        let mut f = Fixture::new(10, &[1, 2]);
        f.join_b_and_c(0.0);
        let b = f.b;
        let out = f.handle(1.0, Input::NewerEpoch(b));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Sync { to, .. } if *to == b)),
            "{out:?}"
        );
        // A stranger's gossip pulls nothing.
        let out = f.handle(1.0, Input::NewerEpoch(PeerId::random()));
        assert!(!out.iter().any(|o| matches!(o, Output::Sync { .. })));
    }

    #[test]
    fn relayed_addresses_travel_in_the_record_and_are_dialled() {
        let mut f = Fixture::new(10, &[]);
        f.join_b_and_c(0.0);
        let via = |relay: PeerId, node: PeerId| {
            format!("/ip4/10.0.0.9/tcp/4747/p2p/{relay}/p2p-circuit/p2p/{node}")
        };
        // This node is behind NAT: its relayed addresses go in its record, with a new version,
        // published and persisted.
        let relays = vec![via(f.b, f.a)];
        let out = f.handle(1.0, Input::Relays(&relays));
        let own = f.node.membership().record(&f.a).cloned().unwrap();
        assert_eq!((own.relays.clone(), own.version), (relays.clone(), 2));
        let published = publishes(&out)
            .iter()
            .any(|body| matches!(body, GossipBody::Roster(r) if r.records.contains(&own)));
        assert!(published, "{out:?}");
        assert!(
            out.iter().any(|o| matches!(o, Output::Persist(..))),
            "{out:?}"
        );
        assert!(f.node.view().iter().any(|m| m.node_id == f.a && m.relayed));
        // The same addresses again change nothing.
        let out = f.handle(1.5, Input::Relays(&relays));
        assert!(publishes(&out).is_empty(), "{out:?}");

        // A member's relayed addresses are dialled, except those through this node.
        let mut c = record(f.c, "c", 30);
        c.version = 2;
        c.relays = vec![via(f.b, f.c), via(f.a, f.c)];
        let roster = GossipBody::Roster(RosterUpdate {
            from: f.c,
            records: vec![c],
        });
        f.handle(
            2.0,
            Input::Gossip {
                signer: Some(f.c),
                body: &roster,
            },
        );
        let addrs = f.node.addresses_of(&f.c);
        assert!(addrs.contains(&via(f.b, f.c)), "{addrs:?}");
        assert!(!addrs.contains(&via(f.a, f.c)), "{addrs:?}");
        assert!(f.node.view().iter().any(|m| m.node_id == f.c && m.relayed));

        // Reachable again: the record drops them.
        f.handle(3.0, Input::Relays(&[]));
        let own = f.node.membership().record(&f.a).cloned().unwrap();
        assert!(own.relays.is_empty() && own.version == 3, "{own:?}");
    }
}
