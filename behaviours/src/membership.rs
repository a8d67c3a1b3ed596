//! Who belongs to the network and who is alive.
//!
//! [`Membership`] is a pure state machine driven by the node's event loop: it is fed heartbeats,
//! member lists, connection evidence and the clock, and answers with the [`Change`]s they cause.
//! It does no I/O, so every rule here is tested without a network.
//!
//! Rules:
//! - The member list is a set of versioned [`MemberRecord`]s; on a merge the higher version wins,
//!   and a departed node stays as a tombstone (`left`) so anti-entropy cannot resurrect it.
//! - A member is alive while authenticated heartbeats arrive with increasing sequence numbers,
//!   and offline once none has arrived for `offline_after` (2.5 one-second heartbeat intervals).
//!   A member's own message over a direct connection (a roster exchange) counts as a heartbeat.
//! - Only *watched* members are timed out ([`Membership::watched`]): with a ring of observers
//!   ([`Membership::set_observers`]), a node watches its nearest alive predecessors on the ring
//!   of ids, the leader, and members it only assumed alive until it hears them; the others
//!   stay alive until an observer's verdict ([`Membership::on_silent`]) or direct evidence
//!   says otherwise. Without a ring, or in a network of at most `observers + 1` members,
//!   every member is watched.
//! - Faster evidence (its connection closed and a redial was refused) marks it offline at once. A
//!   heartbeat of that same incarnation relayed late by another node does not revive it; a
//!   direct connection or a restarted incarnation does.
//! - A node restarting from its state file starts with the members it last saw alive assumed
//!   alive ([`Membership::assume_alive`]): it then agrees with the rest of the network on the
//!   leader from its first moment instead of electing itself until the first heartbeats arrive;
//!   silence or a failed dial marks them offline as usual.
//! - A node that is stopping stands down ([`Membership::stand_down`]): it no longer elects
//!   itself, so during its last moments it names the same leader as everyone else.
//! - A goodbye (the member says it is stopping) marks it offline at once. Its sequence number
//!   follows the member's last heartbeat, so nothing of that incarnation can revive it; its next
//!   incarnation's first heartbeat does.

use crate::table::PeerTable;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::gossip::{
    Goodbye, Heartbeat, KeyUpdateBytes, MAX_KEY_UPDATES, MAX_RELAYS, MemberRecord,
};
use crate::network_keys::Pq4Card;

/// The protocol version that brought the ring of observers ([`Membership::set_observers`]).
const RING_VERSION: u32 = 4;

/// Heartbeats are published this often (networks of up to 1,000 members; see `Config::for_size`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A member is offline after this long without a heartbeat (2.5 heartbeat intervals).
pub const OFFLINE_AFTER: Duration = Duration::from_millis(2500);

/// Whether a member is reachable. Serialised lowercase (`"alive"`, `"offline"`), as in
/// `network_state.json`, `peers --json` and RPC answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Heartbeats arrive.
    Alive,
    /// No heartbeat for [`OFFLINE_AFTER`], or direct evidence that it is down.
    Offline,
}

impl Status {
    /// `"alive"` or `"offline"`, as in `network_state.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Offline => "offline",
        }
    }
}

/// Why a member went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// No heartbeat within [`OFFLINE_AFTER`].
    HeartbeatTimeout,
    /// Its connection closed and it could not be dialled again.
    Unreachable,
    /// It said goodbye: it is stopping (SIGTERM, a restart).
    Goodbye,
}

/// Something that changed in the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A node was added to the member list.
    Joined(PeerId),
    /// A node left the network and was removed from the list.
    Left(PeerId),
    /// A member's heartbeats started arriving.
    Alive(PeerId),
    /// A member stopped being reachable.
    Offline(PeerId, OfflineReason),
}

/// Whom a node sees among the members that count for the majority: itself, the members alive
/// in its view, and members gone silent (not refused, not said goodbye), however long ago: a
/// member out of reach for hours is as likely to be on the other side of a partition as one
/// out of reach for seconds, so it never stops counting. Only direct evidence that its process
/// is down (a refused redial, a goodbye) or its removal takes it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// This node and the members alive in its view.
    pub sees: usize,
    /// Every member that counts.
    pub of: usize,
    /// The first of them in the leader order is seen (breaks an exact half).
    pub sees_first: bool,
}

/// What [`Membership::take_heartbeat`] made of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenHeartbeat {
    /// The member came alive.
    pub change: Option<Change>,
    /// It counted as heard directly now (not a late copy, not from an incarnation seen to die).
    pub direct: bool,
}

/// Why a heartbeat or a goodbye was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatRejection {
    /// The sender is not a current member.
    #[error("sender is not a member")]
    NonMember,
    /// The sequence number is not newer than the last one seen from the sender.
    #[error("old sequence number")]
    Replay,
}

/// One member as a node sees it: the one view type shown by `peers --json`, answered by the
/// `GetPeers` RPC and listed by the bot. Its JSON keeps the seed's field names; `status` is
/// `"alive"` or `"offline"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its server name.
    pub name: String,
    /// Its PeerId (base58 text).
    #[serde(with = "crate::ids::base58")]
    pub node_id: PeerId,
    /// Its public address `host:port`.
    pub addr: String,
    /// Alive or offline (the local node is always alive).
    pub status: Status,
    /// True for the current leader. (Absent in answers from nodes of protocol version 2.)
    #[serde(default)]
    pub leader: bool,
    /// Its leader priority.
    #[serde(default)]
    pub priority: u32,
    /// Its daemon's uptime from its last heartbeat, if one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Its 60-digit PQ4 fingerprint (12 groups of 5), if its record carries a valid card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// It is behind NAT and reached through relays (its record carries relayed addresses;
    /// docs/nat.md). False in answers from nodes without NAT support.
    #[serde(default)]
    pub relayed: bool,
    /// How the answering node is connected to it right now: directly (including after a hole
    /// punch) or only through a relay; absent when not connected, for the node itself, and in
    /// answers from other nodes' views. Filled in by the daemon, not the core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Link>,
}

/// How a node is connected to a member ([`MemberView::connection`], docs/nat.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// At least one connection that is not through a relay.
    Direct,
    /// Only connections through a relay (`/p2p-circuit`).
    Relayed,
}

impl MemberView {
    /// Whether it is alive.
    pub fn is_alive(&self) -> bool {
        self.status == Status::Alive
    }
}

/// What a heartbeat reads and writes, kept inline in the member table (see [`Entry`]).
#[derive(Debug, Clone)]
struct Liveness {
    status: Status,
    /// The latest evidence of life: a heartbeat or direct message, or another member's
    /// [`Membership::on_vouch`]. Silence is measured from here.
    last_heard: Option<Instant>,
    /// The latest evidence this node got itself (a heartbeat or direct message over its own
    /// connection): what it vouches with, and what makes it doubt a member.
    last_direct: Option<Instant>,
    last_seq: u64,
    /// Set when marked offline on direct evidence: the incarnation that was seen to go down.
    evidence_incarnation: Option<u32>,
    /// Offline by silence (a timeout), not by a refused redial or a goodbye: it may be out of
    /// reach rather than down, so it still counts in the majority (see [`Quorum`]).
    silent: bool,
    /// Heard over its own connection since this node started (not only assumed alive from the
    /// state file): an assumed member stays watched until then (see [`Membership::watched`]).
    confirmed: bool,
    uptime_secs: Option<u64>,
    addrs: Vec<String>,
}

impl Liveness {
    fn unknown() -> Self {
        Self {
            status: Status::Offline,
            last_heard: None,
            last_direct: None,
            last_seq: 0,
            evidence_incarnation: None,
            silent: false,
            confirmed: false,
            uptime_secs: None,
            addrs: Vec::new(),
        }
    }
}

/// One member. A heartbeat touches only the inline part (its liveness and whether it left);
/// everything read only on merges, elections and views sits behind one pointer ([`Cold`]). At
/// a thousand members the table is far larger than the caches and every heartbeat lands on a
/// cold entry: the smaller the part it reads, the fewer cache lines it waits for.
#[derive(Debug, Clone)]
struct Entry {
    liveness: Liveness,
    /// `cold.record.left`, kept inline for the heartbeat's membership check; changed only
    /// through [`Entry::set_record`] and [`Entry::edit`].
    left: bool,
    /// [`record_digest`] of `cold.record`, kept up to date by the same two: a roster
    /// digest ([`Membership::records_digest`]) reads these in one pass over the table.
    digest: RecordDigest,
    cold: Box<Cold>,
}

/// A record's digest: the first 16 bytes of the SHA-256 of its CBOR encoding.
type RecordDigest = [u8; 16];

/// The digest of a member list as [`Membership::records_digest`] gives it: equal digests mean
/// equal lists, so a roster sync can leave the records out ([`crate::node::SyncMessage`]).
pub type RosterDigest = [u8; 32];

/// SHA-256 over every field of the record, each length-prefixed (so no two records feed the
/// same bytes), truncated to 16 bytes. The fields are taken apart with an exhaustive pattern: a
/// field added to [`MemberRecord`] does not compile until it is hashed here too. (The record's
/// CBOR encoding would cover new fields by itself, but it writes the id in base58, which made
/// hashing a thousand records at a simulated start cost a CPU second and a half.)
fn record_digest(record: &MemberRecord) -> RecordDigest {
    use sha2::{Digest, Sha256};
    let MemberRecord {
        node_id,
        name,
        addr,
        priority,
        version,
        left,
        card,
        admission,
        removed_at,
        key_updates,
        relays,
    } = record;
    let mut hasher = Sha256::new();
    let mut bytes = |field: &[u8]| {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    };
    bytes(&node_id.to_bytes());
    bytes(name.as_bytes());
    bytes(addr.as_bytes());
    bytes(&priority.to_le_bytes());
    bytes(&version.to_le_bytes());
    bytes(&[u8::from(*left)]);
    match card {
        Some(Pq4Card { bundle, sig }) => {
            bytes(&[1]);
            bytes(bundle);
            bytes(sig);
        }
        None => bytes(&[0]),
    }
    bytes(&admission.to_le_bytes());
    match removed_at {
        Some(at) => {
            bytes(&[1]);
            bytes(&at.to_le_bytes());
        }
        None => bytes(&[0]),
    }
    bytes(&(key_updates.len() as u64).to_le_bytes());
    for update in key_updates {
        bytes(&update.0);
    }
    bytes(&(relays.len() as u64).to_le_bytes());
    for relay in relays {
        bytes(relay.as_bytes());
    }
    let full = hasher.finalize();
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

/// The part of a member a heartbeat never reads.
#[derive(Debug, Clone)]
struct Cold {
    record: MemberRecord,
    /// `node_id.to_bytes()`, kept for the leader order (computed once, not at every election).
    key_bytes: Box<[u8]>,
    /// The fingerprint of the record's card, computed when the card arrives (it costs an Ed448
    /// verification, too much for every `peers`).
    fingerprint: Option<String>,
}

impl Entry {
    fn new(record: MemberRecord, liveness: Liveness) -> Self {
        let key_bytes = record.node_id.to_bytes().into_boxed_slice();
        let fingerprint = fingerprint_of(&record);
        Self {
            liveness,
            left: record.left,
            digest: record_digest(&record),
            cold: Box::new(Cold {
                record,
                key_bytes,
                fingerprint,
            }),
        }
    }

    fn record(&self) -> &MemberRecord {
        &self.cold.record
    }

    fn set_record(&mut self, record: MemberRecord) {
        if record.card != self.cold.record.card {
            self.cold.fingerprint = fingerprint_of(&record);
        }
        self.left = record.left;
        self.digest = record_digest(&record);
        self.cold.record = record;
    }

    /// Changes the record in place; `left` and the digest follow (the card stays).
    fn edit(&mut self, change: impl FnOnce(&mut MemberRecord)) {
        change(&mut self.cold.record);
        self.left = self.cold.record.left;
        self.digest = record_digest(&self.cold.record);
    }

    /// The leader order's key: (priority, node id bytes).
    fn leader_key(&self) -> (u32, &[u8]) {
        (self.cold.record.priority, &self.cold.key_bytes)
    }
}

fn fingerprint_of(record: &MemberRecord) -> Option<String> {
    record
        .card
        .as_ref()
        .and_then(|card| card.fingerprint(&record.node_id))
}

/// A record whose card is not signed by the node it describes is forged: refused whole.
fn card_is_valid(record: &MemberRecord) -> bool {
    record
        .card
        .as_ref()
        .is_none_or(|card| card.signed_by(&record.node_id))
}

/// The member list and the liveness of each member, as one node sees them.
#[derive(Debug)]
pub struct Membership {
    local: PeerId,
    entries: PeerTable<Entry>,
    offline_after: Duration,
    /// Set when this node is stopping: it is no longer a leader candidate.
    standing_down: bool,
    /// The leader, derived from the entries by [`Membership::elect`] after every change that
    /// can move it; the only place a node keeps it.
    leader: PeerId,
    /// The leader's server name as of the last election (`None`: it has no record), so the
    /// leadership check after every input does not look it up.
    leader_name: Option<String>,
    /// No alive member can go silent before this instant: [`Membership::tick`] does nothing
    /// earlier (a heartbeat only moves a member's deadline later).
    next_expiry: Option<Instant>,
    /// Records refused because they changed a card's PQ4 identity without a valid chain of
    /// custody (see [`crate::network_keys::custody_holds`]).
    custody_refusals: u64,
    /// [`Membership::quorum`] as of the last change that can move it (`None`: to be counted
    /// again). The leader asks for it after every input, and counting is a scan of the whole
    /// list; only a change of status, silence, departure or leader order changes it, never a
    /// heartbeat of a member already alive. Cleared by [`Membership::elect`] (which every such
    /// change calls) and where a member's silence changes without an election.
    quorum: std::cell::Cell<Option<Quorum>>,
    /// Bumped whenever the leader or its name may have changed (every election that moved
    /// either), so a caller tells "same as last time" by one number instead of comparing
    /// names after every input.
    elections: u64,
    /// `leader == local`, kept with it (asked after every input).
    leader_is_local: bool,
    /// How many ring observers watch each member ([`Membership::set_observers`]; 0: every
    /// member watches every other, as before rings).
    observers: usize,
    /// The members this node times out by silence (see [`Membership::watched`]), ascending.
    watched: Vec<PeerId>,
    /// This node's ring successors: the members it heartbeats to besides the leader.
    successors: Vec<PeerId>,
    /// Whether the network is small enough (or `observers` 0) that everyone watches everyone.
    watches_everyone: bool,
    /// Set by every election (a status, the roster or the leader may have moved): the watch
    /// is derived again by [`Membership::refresh_watch`].
    watch_dirty: bool,
    /// See [`Membership::set_observers`].
    watch_grace: Duration,
    /// Members whose last heartbeat came from a node before the ring (protocol version < 4),
    /// ascending: they time out every member they do not hear, so heartbeats go to them too.
    legacy: Vec<PeerId>,
    /// Bumped whenever the watch, the successors, the leader or the ring's shape moved
    /// ([`Membership::watch_version`]).
    watch_version: u64,
    /// The leader as of the last [`Membership::refresh_watch`].
    watched_leader: Option<PeerId>,
}

impl Membership {
    /// Starts from the records in the state file. `local` must be among them. Remote members
    /// start offline: they are alive once their first heartbeat arrives.
    pub fn new(local: PeerId, records: Vec<MemberRecord>, offline_after: Duration) -> Self {
        let mut membership = Self {
            local,
            entries: PeerTable::new(),
            offline_after,
            standing_down: false,
            leader: local,
            leader_name: None,
            next_expiry: None,
            custody_refusals: 0,
            quorum: std::cell::Cell::new(None),
            elections: 0,
            leader_is_local: true,
            observers: 0,
            watched: Vec::new(),
            successors: Vec::new(),
            watches_everyone: true,
            watch_dirty: true,
            watch_grace: offline_after,
            legacy: Vec::new(),
            watch_version: 0,
            watched_leader: None,
        };
        for record in records {
            let id = record.node_id;
            let mut liveness = Liveness::unknown();
            if id == local {
                liveness.status = Status::Alive;
            }
            membership.entries.insert(id, Entry::new(record, liveness));
        }
        membership.elect();
        membership
    }

    /// Recomputes the leader: the alive member with the smallest [`LeaderKey`]. This node is a
    /// candidate unless it stands down; if it stands down and nobody else is alive, it is still
    /// the answer. Returns whether the leader changed.
    fn elect(&mut self) -> bool {
        self.quorum.set(None);
        self.watch_dirty = true;
        let mut best: Option<(&PeerId, &Entry)> = None;
        for (id, entry) in self.entries.iter() {
            let candidate = if *id == self.local {
                !self.standing_down
            } else {
                entry.liveness.status == Status::Alive
            };
            if entry.left || !candidate {
                continue;
            }
            let better = best.is_none_or(|(_, b)| entry.leader_key() < b.leader_key());
            if better {
                best = Some((id, entry));
            }
        }
        let leader = best.map_or(self.local, |(id, _)| *id);
        let name = match best {
            Some((_, entry)) => Some(&entry.record().name),
            None => self.entries.get(&leader).map(|e| &e.record().name),
        };
        let changed = leader != self.leader;
        if changed || name != self.leader_name.as_ref() {
            self.leader_name = name.cloned();
            self.elections += 1;
        }
        self.leader = leader;
        self.leader_is_local = leader == self.local;
        changed
    }

    /// This node's PeerId.
    pub fn local_id(&self) -> PeerId {
        self.local
    }

    /// Whether `peer` is a current member (not departed).
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.entries.get(peer).is_some_and(|entry| !entry.left)
    }

    /// The current member with this server name, if any.
    pub fn find_by_name(&self, name: &str) -> Option<PeerId> {
        self.entries
            .iter()
            .find(|(_, entry)| !entry.left && entry.record().name == name)
            .map(|(id, _)| *id)
    }

    /// The record of a current member.
    pub fn record(&self, peer: &PeerId) -> Option<&MemberRecord> {
        self.entries
            .get(peer)
            .filter(|entry| !entry.left)
            .map(|entry| entry.record())
    }

    /// Current members other than this node.
    pub fn remote_members(&self) -> impl Iterator<Item = (&PeerId, &MemberRecord)> {
        let local = self.entries.place_of(&self.local);
        self.entries
            .iter()
            .enumerate()
            .filter(move |(place, (_, entry))| Some(*place) != local && !entry.left)
            .map(|(_, (id, entry))| (id, entry.record()))
    }

    /// Addresses a member announced in its last heartbeat.
    pub fn announced_addrs(&self, peer: &PeerId) -> &[String] {
        self.entries
            .get(peer)
            .map(|entry| entry.liveness.addrs.as_slice())
            .unwrap_or(&[])
    }

    /// Status of a member, `None` if it is not one.
    pub fn status(&self, peer: &PeerId) -> Option<Status> {
        self.entries
            .get(peer)
            .filter(|entry| !entry.left)
            .map(|entry| entry.liveness.status)
    }

    /// Every record, tombstones included: what the anti-entropy message and the state file carry.
    /// The digest of the records [`Membership::records`] lists, leaving out those `skip`
    /// names: one pass over the table, reading each entry's stored record digest.
    pub fn records_digest(&self, skip: impl Fn(&PeerId) -> bool) -> RosterDigest {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (id, entry) in self.entries.iter() {
            if !skip(id) {
                hasher.update(entry.digest);
            }
        }
        hasher.finalize().into()
    }

    pub fn records(&self) -> Vec<MemberRecord> {
        self.entries
            .values()
            .map(|entry| entry.record().clone())
            .collect()
    }

    /// Every record, tombstones included, with the status of each (offline for tombstones):
    /// the state file's member list, built in one pass over the table.
    pub fn records_with_status(&self) -> Vec<(MemberRecord, Status)> {
        self.entries
            .values()
            .map(|entry| {
                let status = if entry.left {
                    Status::Offline
                } else {
                    entry.liveness.status
                };
                (entry.record().clone(), status)
            })
            .collect()
    }

    /// The alive member with the smallest [`LeaderKey`](crate::leader::LeaderKey) (see
    /// [`Membership::elect`]).
    pub fn leader(&self) -> PeerId {
        self.leader
    }

    /// The leader's server name (`None` if the leader has no record).
    pub fn leader_name(&self) -> Option<&str> {
        self.leader_name.as_deref()
    }

    /// Where this node sits in its own list (ascending node ids, tombstones included): the
    /// same place as in the list of every member whose roster agrees, so a good hint for
    /// them of where to find this node's entry ([`Membership::take_heartbeat`]).
    pub fn own_place(&self) -> Option<usize> {
        self.entries.place_of(&self.local)
    }

    /// Whether this node is the leader.
    pub fn leader_is_local(&self) -> bool {
        self.leader_is_local
    }

    /// Changes whenever [`Membership::leader`] or [`Membership::leader_name`] may have
    /// changed; equal numbers mean both are as they were.
    pub fn elections(&self) -> u64 {
        self.elections
    }

    /// When [`Membership::tick`] may next find a silent member (`None`: no alive remote member).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// How many current members there are, this node included.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| !e.left).count()
    }

    /// Whether the list has no current member (never true for a node in its own list).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The list shown by `peers`: current members sorted by name.
    pub fn view(&self) -> Vec<MemberView> {
        let leader = self.leader();
        let mut view: Vec<MemberView> = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.left)
            .map(|(id, entry)| MemberView {
                node_id: *id,
                name: entry.record().name.clone(),
                addr: entry.record().addr.clone(),
                priority: entry.record().priority,
                status: entry.liveness.status,
                leader: *id == leader,
                uptime_secs: entry.liveness.uptime_secs,
                fingerprint: entry.cold.fingerprint.clone(),
                relayed: !entry.record().relays.is_empty(),
                connection: None,
            })
            .collect();
        view.sort_by(|a, b| a.name.cmp(&b.name));
        view
    }

    /// The common gate of heartbeats and goodbyes: the sender must be a current member and
    /// `seq` newer than anything it sent before, which is then recorded. `None` for this node's
    /// own messages and for late deliveries (both ignored, neither refused): see
    /// [`is_late_delivery`].
    fn accept_seq(
        &mut self,
        id: PeerId,
        seq: u64,
        place: Option<usize>,
    ) -> Result<Option<(PeerId, &mut Liveness)>, HeartbeatRejection> {
        if id == self.local {
            return Ok(None);
        }
        let entry = self
            .entries
            .get_mut_near(&id, place)
            .filter(|entry| !entry.left)
            .ok_or(HeartbeatRejection::NonMember)?;
        let live = &mut entry.liveness;
        if seq <= live.last_seq {
            if is_late_delivery(seq, live.last_seq) {
                return Ok(None);
            }
            return Err(HeartbeatRejection::Replay);
        }
        live.last_seq = seq;
        Ok(Some((id, live)))
    }

    /// Takes an authenticated heartbeat whose gossipsub signer is `hb.node_id`. `connected`
    /// says whether this node has a direct connection to the sender right now (asked only
    /// when it matters: the sender's incarnation was seen to die).
    pub fn on_heartbeat(
        &mut self,
        hb: &Heartbeat,
        connected: impl FnOnce() -> bool,
        now: Instant,
    ) -> Result<Option<Change>, HeartbeatRejection> {
        self.take_heartbeat(hb, None, connected, now)
            .map(|taken| taken.change)
    }

    /// [`Membership::on_heartbeat`], also telling whether it counted as heard directly now
    /// (what [`Membership::direct_age`] would say), so the caller needs no second lookup of
    /// the sender: this runs for every heartbeat of every member. `place` is a hint of where
    /// the sender sits in the list (see [`Membership::own_place`]).
    pub fn take_heartbeat(
        &mut self,
        hb: &Heartbeat,
        place: Option<usize>,
        connected: impl FnOnce() -> bool,
        now: Instant,
    ) -> Result<TakenHeartbeat, HeartbeatRejection> {
        let ignored = TakenHeartbeat {
            change: None,
            direct: false,
        };
        let Some((id, live)) = self.accept_seq(hb.node_id, hb.seq, place)? else {
            return Ok(ignored);
        };
        live.uptime_secs = Some(hb.uptime_secs);
        if live.addrs != hb.addrs {
            live.addrs.clone_from(&hb.addrs);
        }
        let legacy = hb.protocol_version < RING_VERSION;
        match (self.legacy.binary_search(&id), legacy) {
            (Err(at), true) => self.legacy.insert(at, id),
            (Ok(at), false) => {
                self.legacy.remove(at);
            }
            _ => {}
        }
        let Some(live) = self
            .entries
            .get_mut_near(&id, place)
            .map(|e| &mut e.liveness)
        else {
            return Ok(ignored);
        };
        if live.evidence_incarnation == Some(hb.incarnation()) && !connected() {
            // Relayed late from an incarnation we saw die: not proof of life.
            return Ok(ignored);
        }
        live.evidence_incarnation = None;
        live.last_heard = Some(now);
        live.last_direct = Some(now);
        let newly_confirmed = !std::mem::replace(&mut live.confirmed, true);
        let revived = live.status == Status::Offline;
        live.status = Status::Alive;
        if newly_confirmed {
            self.watch_dirty = true;
        }
        if revived {
            self.note_deadline(now);
            self.elect();
            return Ok(TakenHeartbeat {
                change: Some(Change::Alive(id)),
                direct: true,
            });
        }
        Ok(TakenHeartbeat {
            change: None,
            direct: true,
        })
    }

    /// The ids among `connected` (ascending, as a [`PeerTable`] iterates) that are current
    /// members, in that order. One ordered walk of both lists: a lookup per id would land on a
    /// cold entry each at a thousand members, and this runs for every heartbeat sent.
    pub fn members_among<'a>(
        &'a self,
        connected: impl Iterator<Item = &'a PeerId>,
    ) -> impl Iterator<Item = &'a PeerId> {
        let mut entries = self.entries.iter().peekable();
        connected.filter(move |id| {
            while let Some((entry_id, entry)) = entries.peek() {
                match (*entry_id).cmp(id) {
                    std::cmp::Ordering::Less => {
                        entries.next();
                    }
                    std::cmp::Ordering::Equal => return !entry.left,
                    std::cmp::Ordering::Greater => return false,
                }
            }
            false
        })
    }

    /// A message of `peer` itself arrived over a direct connection (a roster exchange): proof
    /// of life like a heartbeat. A member seen to go down (a refused redial, a goodbye) is not
    /// revived by it: its next heartbeat over the connection does that.
    pub fn on_direct(&mut self, peer: &PeerId, now: Instant) -> Option<Change> {
        if *peer == self.local {
            return None;
        }
        let entry = self.entries.get_mut(peer).filter(|e| !e.left)?;
        let live = &mut entry.liveness;
        if live.evidence_incarnation.is_some() {
            return None;
        }
        live.last_heard = Some(now);
        live.last_direct = Some(now);
        if !live.confirmed {
            live.confirmed = true;
            self.watch_dirty = true;
        }
        let revived = live.status == Status::Offline;
        live.status = Status::Alive;
        self.note_deadline(now);
        if !revived {
            return None;
        }
        self.elect();
        Some(Change::Alive(*peer))
    }

    /// How many of the last-known members this node sees (see [`Quorum`]).
    pub fn quorum(&self) -> Quorum {
        if let Some(quorum) = self.quorum.get() {
            debug_assert_eq!(quorum, self.count_quorum(), "stale quorum cache");
            return quorum;
        }
        let quorum = self.count_quorum();
        self.quorum.set(Some(quorum));
        quorum
    }

    /// [`Membership::quorum`] counted afresh: one scan of the list.
    fn count_quorum(&self) -> Quorum {
        let mut quorum = Quorum {
            sees: 0,
            of: 0,
            sees_first: false,
        };
        let mut first: Option<(&Entry, bool)> = None;
        for (id, entry) in self.entries.iter() {
            let live = &entry.liveness;
            if entry.left {
                continue;
            }
            let seen = *id == self.local || live.status == Status::Alive;
            let counts = seen || live.silent;
            if !counts {
                continue;
            }
            quorum.of += 1;
            quorum.sees += usize::from(seen);
            let earlier = first.is_none_or(|(f, _)| entry.leader_key() < f.leader_key());
            if earlier {
                first = Some((entry, seen));
            }
        }
        quorum.sees_first = first.is_some_and(|(_, seen)| seen);
        quorum
    }

    /// Takes an authenticated goodbye whose gossipsub signer is `goodbye.node_id`: the member is
    /// offline now, until a heartbeat with a higher sequence number (its next incarnation).
    pub fn on_goodbye(&mut self, goodbye: &Goodbye) -> Result<Option<Change>, HeartbeatRejection> {
        let Some((id, live)) = self.accept_seq(goodbye.node_id, goodbye.seq, None)? else {
            return Ok(None);
        };
        live.evidence_incarnation = Some(goodbye.incarnation());
        live.silent = false;
        if live.status == Status::Offline {
            self.quorum.set(None);
            return Ok(None);
        }
        live.status = Status::Offline;
        self.elect();
        Ok(Some(Change::Offline(id, OfflineReason::Goodbye)))
    }

    /// Treats `peer` as alive as of `now` without a heartbeat (it was alive when this node last
    /// stopped). It goes offline after `offline_after` of silence like any member.
    pub fn assume_alive(&mut self, peer: &PeerId, now: Instant) {
        self.assume_all_alive(std::slice::from_ref(peer), now);
    }

    /// [`Membership::assume_alive`] for many members at once, electing once (a node restarting
    /// in a network of a thousand would otherwise elect a thousand times).
    pub fn assume_all_alive(&mut self, peers: &[PeerId], now: Instant) {
        let mut any = false;
        for peer in peers.iter().filter(|peer| **peer != self.local) {
            if let Some(entry) = self.entries.get_mut(peer).filter(|e| !e.left) {
                entry.liveness.status = Status::Alive;
                entry.liveness.last_heard = Some(now);
                entry.liveness.last_direct = Some(now);
                entry.liveness.confirmed = false;
                any = true;
            }
        }
        if any {
            self.note_deadline(now);
            self.elect();
        }
    }

    /// Whether every other current member is alive on evidence that arrived after `at`
    /// ([`Membership::heard_after`] of each, in one walk of the list).
    pub fn all_heard_after(&self, at: Instant) -> bool {
        let local = self.entries.place_of(&self.local);
        self.entries.iter().enumerate().all(|(place, (_, entry))| {
            Some(place) == local
                || entry.left
                || (entry.liveness.status == Status::Alive
                    && entry.liveness.last_heard.is_some_and(|heard| heard > at))
        })
    }

    /// Whether `peer` is alive on evidence that arrived after `at` (a heartbeat or a direct
    /// message), not only assumed alive from the state file at `at`.
    pub fn heard_after(&self, peer: &PeerId, at: Instant) -> bool {
        self.entries.get(peer).is_some_and(|entry| {
            entry.liveness.status == Status::Alive
                && entry.liveness.last_heard.is_some_and(|heard| heard > at)
        })
    }

    /// Another member vouches that `peer` was alive at `heard` (in this node's clock, never
    /// later than the voucher really heard it: see [`crate::gossip::Vouch`]). It counts as
    /// evidence of life only for a member alive here and only if newer than what this node has:
    /// a vouch never revives a member marked offline (that takes its own heartbeat over a
    /// connection), it only keeps one alive whose own connection to this node stalled. Whether
    /// it counted.
    pub fn on_vouch(&mut self, peer: &PeerId, heard: Instant) -> bool {
        if *peer == self.local {
            return false;
        }
        let Some(entry) = self.entries.get_mut(peer).filter(|e| !e.left) else {
            return false;
        };
        let live = &mut entry.liveness;
        if live.status != Status::Alive || live.last_heard.is_some_and(|at| at >= heard) {
            return false;
        }
        // Only later than before: the expiry noted for the old value still comes first.
        live.last_heard = Some(heard);
        true
    }

    /// How long ago this node itself last heard `peer` (a heartbeat or a direct message over
    /// its own connection), if `peer` is alive here and that was less than `within` ago: what
    /// it may vouch for. Evidence it got from others does not count, so vouches never chain.
    pub fn direct_age(&self, peer: &PeerId, now: Instant, within: Duration) -> Option<Duration> {
        let entry = self.entries.get(peer).filter(|e| !e.left)?;
        if *peer == self.local || entry.liveness.status != Status::Alive {
            return None;
        }
        let age = now.saturating_duration_since(entry.liveness.last_direct?);
        (age < within).then_some(age)
    }

    /// The alive watched members ([`Membership::watched`]) this node has not heard directly
    /// for `after` or longer, each with that silence; and the earliest instant at which another
    /// watched member, heard directly since, would join them (`None`: none can).
    pub fn doubted(
        &self,
        now: Instant,
        after: Duration,
    ) -> (Vec<(PeerId, Duration)>, Option<Instant>) {
        let mut doubted = Vec::new();
        let mut next: Option<Instant> = None;
        for id in &self.watched {
            let Some(entry) = self.entries.get(id) else {
                continue;
            };
            let live = &entry.liveness;
            if entry.left || live.status != Status::Alive {
                continue;
            }
            let Some(direct) = live.last_direct else {
                doubted.push((*id, after));
                continue;
            };
            let silence = now.saturating_duration_since(direct);
            if silence >= after {
                doubted.push((*id, silence));
            } else {
                let due = direct + after;
                next = Some(next.map_or(due, |at| at.min(due)));
            }
        }
        (doubted, next)
    }

    /// A member heard at `heard` can go silent at `heard + offline_after`: make sure
    /// [`Membership::tick`] looks by then.
    fn note_deadline(&mut self, heard: Instant) {
        let due = heard + self.offline_after;
        self.next_expiry = Some(self.next_expiry.map_or(due, |at| at.min(due)));
    }

    /// Changes the silence after which a member is offline (the network grew or shrank).
    pub fn set_offline_after(&mut self, offline_after: Duration) {
        self.offline_after = offline_after;
        // Members may now expire sooner than the deadline noted: look at the next tick.
        self.next_expiry = self
            .watched
            .iter()
            .filter_map(|id| self.entries.get(id)?.liveness.last_heard)
            .min()
            .map(|heard| heard + offline_after);
    }

    /// This node was not running for `blind` up to `now` (see [`crate::health`]): the silence
    /// of every alive member is measured without that time, as if this node's clock had
    /// stopped, so nobody is doubted or marked offline for what this node could not hear.
    /// Evidence is never moved past `now`.
    pub fn excuse(&mut self, blind: Duration, now: Instant) {
        let shift = |at: &mut Option<Instant>| {
            if let Some(at) = at.as_mut() {
                *at = (*at + blind).min(now);
            }
        };
        for (id, entry) in self.entries.iter_mut() {
            let live = &mut entry.liveness;
            if *id == self.local || entry.left || live.status != Status::Alive {
                continue;
            }
            shift(&mut live.last_heard);
            shift(&mut live.last_direct);
        }
        self.set_offline_after(self.offline_after);
    }

    // ---- the ring of observers ----

    /// Each member is watched (timed out by silence) by its `observers` nearest alive
    /// successors on the ring of member ids, and heartbeats only to them and the leader; the
    /// leader heartbeats to everyone and everyone watches it. 0, or a network of at most
    /// `observers + 1` members, is the full mesh: everyone watches everyone.
    /// A member newly watched because the ring moved (not because it came alive) has its
    /// silence counted from at most `grace` before the offline bound (see
    /// [`Membership::refresh_watch`]).
    pub fn set_observers(&mut self, observers: usize, grace: Duration) {
        self.observers = observers;
        self.watch_grace = grace;
        self.watch_dirty = true;
    }

    /// Whether everyone watches everyone (the network is small enough, or no ring is set):
    /// heartbeats then go to every member, and no verdict is needed.
    pub fn watches_everyone(&self) -> bool {
        self.watches_everyone
    }

    /// The members this node times out by silence, ascending: its ring predecessors (the
    /// members it observes), the leader, and members only assumed alive from the state file
    /// until it hears them itself. As of the last [`Membership::refresh_watch`].
    pub fn watched(&self) -> &[PeerId] {
        &self.watched
    }

    /// The members whose last heartbeat came from a node before the ring (protocol version
    /// below 4), ascending: they expect a heartbeat from every member.
    pub fn legacy(&self) -> &[PeerId] {
        &self.legacy
    }

    /// This node's ring successors (the members that observe it), nearest first: where its
    /// heartbeats go besides the leader. As of the last [`Membership::refresh_watch`].
    pub fn successors(&self) -> &[PeerId] {
        &self.successors
    }

    /// The observers of `peer` in this node's view: its nearest alive successors on the ring
    /// (this node may be among them). Those heard it directly, so they are the ones to ask
    /// about it.
    pub fn observers_of(&self, peer: &PeerId) -> Vec<PeerId> {
        let Some(place) = self.entries.place_of(peer) else {
            return Vec::new();
        };
        let k = if self.observers == 0 {
            usize::MAX
        } else {
            self.observers
        };
        let local = self.local;
        self.entries
            .iter()
            .skip(place + 1)
            .chain(self.entries.iter().take(place))
            .filter(|(id, entry)| {
                !entry.left && (**id == local || entry.liveness.status == Status::Alive)
            })
            .map(|(id, _)| *id)
            .take(k)
            .collect()
    }

    /// Derives the watch again if a status, the roster or the leader moved since the last
    /// call (one pass over the list then; nothing otherwise; [`Membership::tick`] calls it
    /// too). On a ring, a member newly watched was not sending to this node: its silence
    /// counts from at most the grace ([`Membership::set_observers`]) before the offline bound
    /// from `now`, and it is doubted at once (the caller asks its observers about it), so a
    /// member that died unwatched is still found within the grace while a live one is vouched
    /// for. Whether any member is newly watched.
    pub fn refresh_watch(&mut self, now: Instant) -> bool {
        if !std::mem::take(&mut self.watch_dirty) {
            return false;
        }
        let mut ring = Vec::new();
        let mut unconfirmed = Vec::new();
        let mut me = None;
        for (id, entry) in self.entries.iter() {
            if entry.left {
                continue;
            }
            if *id == self.local {
                me = Some(ring.len());
                ring.push(*id);
            } else if entry.liveness.status == Status::Alive {
                ring.push(*id);
                if !entry.liveness.confirmed {
                    unconfirmed.push(*id);
                }
            }
        }
        let r = ring.len();
        let k = self.observers;
        let successors_before = std::mem::take(&mut self.successors);
        let everyone_before = self.watches_everyone;
        let mut watched: Vec<PeerId>;
        if let (Some(me), false) = (me, k == 0 || r <= k + 1) {
            self.watches_everyone = false;
            self.successors = (1..=k).map(|d| ring[(me + d) % r]).collect();
            watched = (1..=k).map(|d| ring[(me + r - d) % r]).collect();
            if !self.leader_is_local {
                watched.push(self.leader);
            }
            watched.extend(unconfirmed);
        } else {
            // A small network (or no ring, or this node departed): everyone watches everyone.
            self.watches_everyone = true;
            ring.retain(|id| *id != self.local);
            self.successors.clone_from(&ring);
            watched = ring;
        }
        watched.retain(|id| *id != self.local);
        watched.sort_unstable();
        watched.dedup();
        let floor = if self.watches_everyone {
            // Everyone watched: a member enters the watch by coming alive, heard just now.
            None
        } else {
            (now + self.watch_grace).checked_sub(self.offline_after)
        };
        let mut grew = false;
        for id in &watched {
            if self.watched.binary_search(id).is_ok() {
                continue;
            }
            grew = true;
            if let (Some(entry), Some(floor)) = (self.entries.get_mut(id), floor) {
                let heard = &mut entry.liveness.last_heard;
                *heard = Some(heard.map_or(floor, |at| at.max(floor)));
            }
        }
        let leader_moved = self.watched_leader != Some(self.leader);
        if grew
            || leader_moved
            || watched != self.watched
            || successors_before != self.successors
            || everyone_before != self.watches_everyone
        {
            self.watch_version += 1;
        }
        self.watched_leader = Some(self.leader);
        self.watched = watched;
        self.set_offline_after(self.offline_after);
        grew
    }

    /// A number that changes whenever [`Membership::watched`], [`Membership::successors`],
    /// [`Membership::watches_everyone`] or the leader changed in a
    /// [`Membership::refresh_watch`]: the members a node keeps connections to follow these
    /// (see [`crate::node`], the partial mesh).
    pub fn watch_version(&self) -> u64 {
        self.watch_version
    }

    /// Whether `peer` is a member this node has not heard alive since it started: assumed
    /// alive from the state file, or offline, or learned from a member list and never heard. On a ring such a member may never heartbeat to this node,
    /// so a connection to it asks it for one (a probe).
    pub fn is_unheard(&self, peer: &PeerId) -> bool {
        *peer != self.local
            && self.entries.get(peer).is_some_and(|e| {
                !e.left && (e.liveness.status != Status::Alive || !e.liveness.confirmed)
            })
    }

    /// The alive members (this node aside) it has not heard itself within `within`, ascending.
    pub fn not_heard_within(&self, now: Instant, within: Duration) -> Vec<PeerId> {
        self.entries
            .iter()
            .filter(|(id, entry)| {
                **id != self.local
                    && !entry.left
                    && entry.liveness.status == Status::Alive
                    && entry
                        .liveness
                        .last_direct
                        .is_none_or(|at| now.saturating_duration_since(at) >= within)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The last sequence number this node took from `peer` (0: none): what a verdict about
    /// it carries.
    pub fn last_seq(&self, peer: &PeerId) -> u64 {
        self.entries.get(peer).map_or(0, |e| e.liveness.last_seq)
    }

    /// An observer says `peer` went silent after `seq` (a [`crate::gossip::Silent`] verdict).
    /// Taken unless this node heard a newer incarnation of it, or heard it itself within
    /// `fresh_within`: then it keeps what it knows (the observer's link may be the trouble).
    /// A verdict about this node itself is not taken here (the caller answers it).
    pub fn on_silent(
        &mut self,
        peer: &PeerId,
        seq: u64,
        now: Instant,
        fresh_within: Duration,
    ) -> Option<Change> {
        if *peer == self.local {
            return None;
        }
        let entry = self.entries.get_mut(peer).filter(|e| !e.left)?;
        let live = &mut entry.liveness;
        if live.status != Status::Alive
            || (live.last_seq >> 32) > (seq >> 32)
            || live
                .last_direct
                .is_some_and(|at| now.saturating_duration_since(at) < fresh_within)
        {
            return None;
        }
        live.status = Status::Offline;
        live.silent = true;
        self.elect();
        Some(Change::Offline(*peer, OfflineReason::HeartbeatTimeout))
    }

    /// Marks offline, as silent, each of `peers` still alive here and not heard (itself or
    /// through a vouch) since `since`: the members that did not answer a partition probe.
    pub fn mark_unanswered(&mut self, peers: &[PeerId], since: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for peer in peers.iter().filter(|peer| **peer != self.local) {
            let Some(entry) = self.entries.get_mut(peer).filter(|e| !e.left) else {
                continue;
            };
            let live = &mut entry.liveness;
            if live.status != Status::Alive || live.last_heard.is_some_and(|at| at >= since) {
                continue;
            }
            live.status = Status::Offline;
            live.silent = true;
            changes.push(Change::Offline(*peer, OfflineReason::HeartbeatTimeout));
        }
        if !changes.is_empty() {
            self.elect();
        }
        changes
    }

    /// This node is stopping: from now on it does not elect itself.
    pub fn stand_down(&mut self) {
        self.standing_down = true;
        self.elect();
    }

    /// Whether this node is standing down (stopping).
    pub fn is_standing_down(&self) -> bool {
        self.standing_down
    }

    /// A direct connection to `peer` is up: evidence against it no longer holds.
    pub fn on_connected(&mut self, peer: &PeerId) {
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.liveness.evidence_incarnation = None;
        }
    }

    /// `peer`'s connection closed and redialling it failed: mark it offline now.
    pub fn on_unreachable(&mut self, peer: &PeerId) -> Option<Change> {
        let entry = self.entries.get_mut(peer).filter(|entry| !entry.left)?;
        if *peer == self.local {
            return None;
        }
        // Refused: the process is down, not out of reach.
        entry.liveness.silent = false;
        if entry.liveness.status == Status::Offline {
            self.quorum.set(None);
            return None;
        }
        entry.liveness.status = Status::Offline;
        entry.liveness.evidence_incarnation = Some((entry.liveness.last_seq >> 32) as u32);
        self.elect();
        Some(Change::Offline(*peer, OfflineReason::Unreachable))
    }

    /// Marks offline every watched member ([`Membership::watched`]) whose last evidence of life
    /// is older than `offline_after`. Looks only once [`Membership::next_expiry`] has come, so
    /// calling it often costs nothing.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        self.refresh_watch(now);
        if self.next_expiry.is_none_or(|at| now < at) {
            return changes;
        }
        let mut next_expiry: Option<Instant> = None;
        for id in &self.watched {
            let Some(entry) = self.entries.get_mut(id) else {
                continue;
            };
            let live = &mut entry.liveness;
            if entry.left || live.status == Status::Offline {
                continue;
            }
            let silent = live
                .last_heard
                .is_none_or(|heard| now.duration_since(heard) >= self.offline_after);
            if silent {
                live.status = Status::Offline;
                live.silent = true;
                changes.push(Change::Offline(*id, OfflineReason::HeartbeatTimeout));
            } else if let Some(heard) = live.last_heard {
                let due = heard + self.offline_after;
                next_expiry = Some(next_expiry.map_or(due, |at| at.min(due)));
            }
        }
        self.next_expiry = next_expiry;
        if !changes.is_empty() {
            self.elect();
        }
        changes
    }

    /// Merges a member list from another node (or a Join response). Records with an
    /// unparseable PeerId, and any record about this node, are ignored: only this node speaks
    /// for itself.
    pub fn merge(&mut self, records: &[MemberRecord]) -> Vec<Change> {
        let mut changes = Vec::new();
        for incoming in records {
            let id = incoming.node_id;
            if id == self.local || !card_is_valid(incoming) {
                continue;
            }
            if let Some(entry) = self.entries.get(&id)
                && supersedes(incoming, entry.record())
                && !crate::network_keys::custody_holds(entry.record(), incoming)
            {
                // Another PQ4 identity without a chain of custody from one we trusted: a
                // forged or out-of-order key update. Keep the identity we trust.
                self.custody_refusals += 1;
                continue;
            }
            match self.entries.get_mut(&id) {
                None => {
                    if !incoming.left {
                        changes.push(Change::Joined(id));
                    }
                    self.entries
                        .insert(id, Entry::new(incoming.clone(), Liveness::unknown()));
                }
                Some(entry) if supersedes(incoming, entry.record()) => {
                    let was_left = entry.left;
                    entry.set_record(incoming.clone());
                    if incoming.left && !was_left {
                        entry.liveness = Liveness::unknown();
                        changes.push(Change::Left(id));
                    } else if !incoming.left && was_left {
                        changes.push(Change::Joined(id));
                    }
                }
                Some(_) => {}
            }
        }
        if !changes.is_empty() || records.iter().any(|r| r.node_id != self.local) {
            // A record's priority may have changed even without a join or a leave.
            self.elect();
        }
        changes
    }

    /// Adds a node admitted by a Join on this node. Returns its record (to send and gossip).
    pub fn admit(
        &mut self,
        id: PeerId,
        name: String,
        addr: String,
        priority: u32,
        card: Option<Pq4Card>,
    ) -> MemberRecord {
        // Over a tombstone (a node that left or was removed, invited again) this is a new
        // admission: it supersedes the tombstone whatever its version, and the card it brings
        // starts a new chain of custody.
        let (version, admission) = self.entries.get(&id).map_or((1, 0), |entry| {
            (
                entry.cold.record.version + 1,
                entry.cold.record.admission + 1,
            )
        });
        let record = MemberRecord {
            node_id: id,
            name,
            addr,
            priority,
            version,
            left: false,
            card,
            admission,
            removed_at: None,
            key_updates: Vec::new(),
            relays: Vec::new(),
        };
        self.entries
            .insert(id, Entry::new(record.clone(), Liveness::unknown()));
        self.elect();
        record
    }

    /// Removes a record this node added with [`Membership::admit`] whose admission could not be
    /// completed (its state could not be written): puts back the record it replaced, if any.
    pub fn unadmit(&mut self, previous: Option<MemberRecord>, id: &PeerId) {
        match previous {
            Some(record) => {
                self.entries
                    .insert(*id, Entry::new(record, Liveness::unknown()));
            }
            None => {
                self.entries.remove(id);
            }
        }
        self.elect();
    }

    /// How many records were refused for a PQ4 identity change without a chain of custody.
    pub fn custody_refusals(&self) -> u64 {
        self.custody_refusals
    }

    /// The record of `id`, tombstones included.
    pub fn any_record(&self, id: &PeerId) -> Option<&MemberRecord> {
        self.entries.get(id).map(|entry| entry.record())
    }

    /// Undoes [`Membership::leave`] when the departure could not be recorded.
    pub fn unleave(&mut self) {
        if let Some(entry) = self.entries.get_mut(&self.local)
            && entry.left
        {
            entry.edit(|record| {
                record.left = false;
                record.version -= 1;
            });
            entry.liveness.status = Status::Alive;
        }
        self.elect();
    }

    /// Tombstones another member (an operator's `remove`): a new version with `left`, so it
    /// wins every merge and spreads like a leave. Returns the tombstone, or `None` for this node
    /// or a node that is not a current member.
    pub fn remove(&mut self, id: &PeerId, unix_now: u64) -> Option<MemberRecord> {
        if *id == self.local {
            return None;
        }
        let entry = self.entries.get_mut(id)?;
        if entry.left {
            return None;
        }
        entry.edit(|record| {
            record.left = true;
            record.version += 1;
            record.removed_at = Some(unix_now);
        });
        entry.liveness = Liveness::unknown();
        let record = entry.record().clone();
        self.elect();
        Some(record)
    }

    /// Puts `card` in this node's own record, with a new version so that it spreads, unless the
    /// record already carries it (a node that started before PQ4, or after a key change).
    /// Returns the new record.
    /// `key_updates` is the chain of custody from the card this record carried (empty for the
    /// first card); the most recent [`MAX_KEY_UPDATES`] are kept.
    pub fn set_own_card(
        &mut self,
        card: Pq4Card,
        key_updates: &[KeyUpdateBytes],
    ) -> Option<MemberRecord> {
        let entry = self.entries.get_mut(&self.local)?;
        if entry.left || entry.record().card.as_ref() == Some(&card) {
            return None;
        }
        let mut record = entry.record().clone();
        record.card = Some(card);
        record.key_updates =
            key_updates[key_updates.len().saturating_sub(MAX_KEY_UPDATES)..].to_vec();
        record.version += 1;
        entry.set_record(record.clone());
        Some(record)
    }

    /// Puts this node's relayed addresses in its own record (at most [`MAX_RELAYS`], sorted);
    /// returns the new record, or `None` when nothing changed.
    pub fn set_own_relays(&mut self, relays: &[String]) -> Option<MemberRecord> {
        let mut relays: Vec<String> = relays.iter().take(MAX_RELAYS).cloned().collect();
        relays.sort();
        relays.dedup();
        let entry = self.entries.get_mut(&self.local)?;
        if entry.left || entry.record().relays == relays {
            return None;
        }
        let mut record = entry.record().clone();
        record.relays = relays;
        record.version += 1;
        entry.set_record(record.clone());
        Some(record)
    }

    /// Turns this node's own record into a tombstone, for `leave`.
    pub fn leave(&mut self) -> Option<MemberRecord> {
        let entry = self.entries.get_mut(&self.local)?;
        entry.edit(|record| {
            record.left = true;
            record.version += 1;
        });
        let record = entry.record().clone();
        self.elect();
        Some(record)
    }
}

/// How many heartbeats behind the newest one a message from the same run of its author may
/// arrive and still be a late delivery rather than a replay.
///
/// Gossipsub's lazy gossip (IHAVE/IWANT) offers a peer the messages of the last three gossip
/// heartbeats (3 s) that it has not seen. A node that has just started, or just joined the
/// mesh, therefore receives heartbeats published shortly *before* it arrived *after* the newer
/// ones that members send it at once when it subscribes: authentic, never seen before (gossipsub
/// drops a message it has seen in the last 60 s by its id), and harmless. Counting them as
/// replays made every healthy node report a few. A replay proper repeats a message this node
/// has seen (the same `seq`), or one from an earlier run of its author, or one older than
/// gossipsub's caches could still hold (8 heartbeats is 16 s at the fastest interval, well past
/// the 3 s gossip window and short of the 60 s duplicate cache).
pub const LATE_DELIVERY_WINDOW: u64 = 8;

/// Whether `seq`, not newer than the author's `newest`, is a late delivery of a message from
/// the same run (see [`LATE_DELIVERY_WINDOW`]).
fn is_late_delivery(seq: u64, newest: u64) -> bool {
    let same_run = seq >> 32 == newest >> 32;
    same_run && seq < newest && newest - seq <= LATE_DELIVERY_WINDOW
}

/// The merge order, so every node converges on the same record whatever the order in which
/// updates arrive:
/// 1. the later admission wins (a node invited again after it left or was removed);
/// 2. within one admission a tombstone wins whatever the versions: a departure is final, so a
///    removed node that goes on bumping its own record (a restart, a key update) never comes
///    back through a member that had not heard of the removal yet;
/// 3. then the higher version, then the larger (name, addr, priority), then the larger card
///    (two key updates of one version, made by two holders of the node's key: one wins
///    everywhere, seed 004 §13.2).
pub(crate) fn supersedes(incoming: &MemberRecord, current: &MemberRecord) -> bool {
    if incoming.admission != current.admission {
        return incoming.admission > current.admission;
    }
    if incoming.left != current.left {
        return incoming.left;
    }
    fn rank(r: &MemberRecord) -> (u64, bool, &str, &str, u32, &[u8]) {
        let card = r.card.as_ref().map_or(&[][..], |c| &c.bundle[..]);
        (r.version, r.left, &r.name, &r.addr, r.priority, card)
    }
    rank(incoming) > rank(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_a_record_moves_its_digest() {
        let base = MemberRecord {
            addr: "10.0.0.1:4001".into(),
            ..record(PeerId::random(), "a", 10)
        };
        let changes: Vec<fn(&mut MemberRecord)> = vec![
            |r| r.node_id = PeerId::random(),
            |r| r.name = "b".into(),
            |r| r.addr = "10.0.0.2:4001".into(),
            |r| r.priority = 11,
            |r| r.version = 2,
            |r| r.left = true,
            |r| {
                r.card = Some(Pq4Card {
                    bundle: vec![1],
                    sig: vec![2],
                })
            },
            |r| r.admission = 1,
            |r| r.removed_at = Some(5),
            |r| r.key_updates = vec![KeyUpdateBytes(vec![3])],
            |r| r.relays = vec!["/p2p/x".into()],
            // The same bytes split differently between two fields.
            |r| {
                r.name = "a1".into();
                r.addr = "0.0.0.1:4001".into();
            },
        ];
        let digest = record_digest(&base);
        assert_eq!(digest, record_digest(&base.clone()));
        for (i, change) in changes.iter().enumerate() {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(record_digest(&changed), digest, "change {i}");
        }
    }
    use crate::gossip::PROTOCOL_VERSION;

    fn record(id: PeerId, name: &str, priority: u32) -> MemberRecord {
        MemberRecord {
            node_id: id,
            name: name.into(),
            addr: "127.0.0.1:4747".into(),
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

    fn heartbeat(id: PeerId, incarnation: u32, counter: u32) -> Heartbeat {
        Heartbeat {
            node_id: id,
            name: "x".into(),
            priority: 0,
            addrs: vec![],
            seq: (u64::from(incarnation) << 32) | u64::from(counter),
            protocol_version: PROTOCOL_VERSION,
            uptime_secs: 1,
            doubts: Vec::new(),
            vouch: None,
            probe: false,
        }
    }

    fn three() -> (Membership, PeerId, PeerId, PeerId) {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let m = Membership::new(
            a,
            vec![record(a, "a", 10), record(b, "b", 10), record(c, "c", 10)],
            OFFLINE_AFTER,
        );
        (m, a, b, c)
    }

    #[test]
    fn members_among_connected_peers_are_found_by_one_ordered_walk() {
        let (mut m, a, b, c) = three();
        let stranger = PeerId::random();
        let mut connected = PeerTable::new();
        for id in [a, b, c, stranger] {
            connected.insert(id, ());
        }
        let expected: Vec<PeerId> = connected
            .keys()
            .filter(|id| m.is_member(id))
            .copied()
            .collect();
        let walked: Vec<PeerId> = m.members_among(connected.keys()).copied().collect();
        assert_eq!(walked, expected);
        assert_eq!(walked.len(), 3);
        // A member that left is no longer listed.
        m.remove(&c, 0);
        let walked: Vec<PeerId> = m.members_among(connected.keys()).copied().collect();
        assert!(!walked.contains(&c) && walked.contains(&b), "{walked:?}");
    }

    #[test]
    fn heartbeats_make_alive_and_silence_makes_offline() {
        let (mut m, a, b, _) = three();
        let t0 = Instant::now();
        assert_eq!(m.status(&b), Some(Status::Offline));
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 1, 1), || true, t0),
            Ok(Some(Change::Alive(b)))
        );
        assert_eq!(m.on_heartbeat(&heartbeat(b, 1, 2), || true, t0), Ok(None));
        assert!(m.tick(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(
            m.tick(t0 + OFFLINE_AFTER),
            vec![Change::Offline(b, OfflineReason::HeartbeatTimeout)]
        );
        assert_eq!(
            m.status(&a),
            Some(Status::Alive),
            "the local node is always alive"
        );
    }

    /// `n` members with ids in ring order (ascending), all alive as of `t0`, watched by 4
    /// observers each; this node is the one at `local`.
    fn ring(n: usize, local: usize, t0: Instant) -> (Membership, Vec<PeerId>) {
        let mut ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        ids.sort();
        let records = ids
            .iter()
            .enumerate()
            .map(|(i, id)| record(*id, &format!("n{i}"), 10))
            .collect();
        let mut m = Membership::new(ids[local], records, OFFLINE_AFTER);
        m.set_observers(4, Duration::from_secs(1));
        for (i, id) in ids.iter().enumerate() {
            if i != local {
                m.on_heartbeat(&heartbeat(*id, 1, 1), || true, t0).unwrap();
            }
        }
        m.refresh_watch(t0);
        (m, ids)
    }

    #[test]
    fn a_ring_node_watches_its_predecessors_and_the_leader_and_heartbeats_to_its_successors() {
        let t0 = Instant::now();
        let (m, ids) = ring(10, 6, t0);
        assert!(!m.watches_everyone());
        assert_eq!(
            m.leader(),
            ids[0],
            "the smallest id leads (equal priorities)"
        );
        let mut watched = vec![ids[0], ids[2], ids[3], ids[4], ids[5]];
        watched.sort();
        assert_eq!(m.watched(), watched.as_slice());
        assert_eq!(m.successors(), &[ids[7], ids[8], ids[9], ids[0]]);
        assert_eq!(
            m.observers_of(&ids[8]),
            vec![ids[9], ids[0], ids[1], ids[2]]
        );
        // Wrapping around the ring.
        let (m, ids) = ring(10, 1, t0);
        let mut watched = vec![ids[0], ids[9], ids[8], ids[7]];
        watched.sort();
        assert_eq!(m.watched(), watched.as_slice());
        // Five members: everyone watches everyone, and heartbeats to everyone.
        let (m, ids) = ring(5, 2, t0);
        assert!(m.watches_everyone());
        assert_eq!(m.watched().len(), 4);
        assert_eq!(m.successors().len(), 4);
        assert!(!m.watched().contains(&ids[2]));
    }

    #[test]
    fn only_watched_members_time_out_and_the_ring_closes_over_a_lost_one() {
        let t0 = Instant::now();
        let (mut m, ids) = ring(20, 10, t0);
        // Everyone falls silent: only the watched ones are timed out (6 to 9, and 0, the leader).
        let changes = m.tick(t0 + OFFLINE_AFTER);
        assert_eq!(changes.len(), 5);
        assert_eq!(m.status(&ids[12]), Some(Status::Alive), "not watched here");
        assert_eq!(m.status(&ids[5]), Some(Status::Alive), "not watched here");
        // The ring moved: the next alive predecessors (2 to 5) and the new leader (1) are
        // watched now, each with one interval of grace from now (not the long silence it
        // really had here), and doubted at once so that their observers are asked.
        let t1 = t0 + OFFLINE_AFTER;
        assert!(m.refresh_watch(t1));
        assert_eq!(m.leader(), ids[1]);
        let mut watched = vec![ids[1], ids[2], ids[3], ids[4], ids[5]];
        watched.sort();
        assert_eq!(m.watched(), watched.as_slice());
        let (doubted, _) = m.doubted(t1, Duration::from_millis(1250));
        assert_eq!(doubted.len(), 5);
        assert!(m.tick(t1 + Duration::from_millis(900)).is_empty());
        assert_eq!(m.tick(t1 + Duration::from_secs(1)).len(), 5);
        assert_eq!(m.status(&ids[12]), Some(Status::Alive));
    }

    #[test]
    fn a_verdict_marks_offline_unless_this_node_heard_the_member_lately_or_a_newer_incarnation() {
        let t0 = Instant::now();
        let (mut m, ids) = ring(10, 6, t0);
        let seq = |inc: u64, n: u64| (inc << 32) | n;
        let t1 = t0 + Duration::from_secs(1);
        // Heard 1 s ago: fresher than the verdict, kept.
        assert_eq!(
            m.on_silent(&ids[8], seq(1, 1), t1, Duration::from_millis(1250)),
            None
        );
        let t2 = t0 + Duration::from_secs(2);
        // Heard incarnation 2 of it: the verdict is about an older one.
        m.on_heartbeat(&heartbeat(ids[9], 2, 1), || true, t0)
            .unwrap();
        assert_eq!(
            m.on_silent(&ids[9], seq(1, 9), t2, Duration::from_millis(1250)),
            None
        );
        // Not heard for 2 s: taken, as silence (it still counts in the majority).
        assert_eq!(
            m.on_silent(&ids[8], seq(1, 1), t2, Duration::from_millis(1250)),
            Some(Change::Offline(ids[8], OfflineReason::HeartbeatTimeout))
        );
        assert_eq!(m.status(&ids[8]), Some(Status::Offline));
        assert_eq!(m.quorum().of, 10, "silent members still count");
        // About this node itself, or a member already offline: nothing.
        assert_eq!(m.on_silent(&ids[6], 0, t2, Duration::ZERO), None);
        assert_eq!(m.on_silent(&ids[8], seq(1, 1), t2, Duration::ZERO), None);
        // Its next heartbeat revives it.
        assert_eq!(
            m.on_heartbeat(&heartbeat(ids[8], 1, 5), || true, t2),
            Ok(Some(Change::Alive(ids[8])))
        );
    }

    #[test]
    fn probed_members_that_gave_no_sign_since_the_probe_go_offline() {
        let t0 = Instant::now();
        let (mut m, ids) = ring(10, 6, t0);
        let t1 = t0 + Duration::from_secs(2);
        let unheard = m.not_heard_within(t1, Duration::from_millis(1250));
        assert_eq!(unheard.len(), 9);
        m.on_heartbeat(
            &heartbeat(ids[8], 1, 2),
            || true,
            t1 + Duration::from_millis(100),
        )
        .unwrap();
        assert!(m.on_vouch(&ids[9], t1 + Duration::from_millis(50)));
        let changes = m.mark_unanswered(&unheard, t1);
        assert_eq!(changes.len(), 7);
        assert_eq!(m.status(&ids[8]), Some(Status::Alive), "it answered");
        assert_eq!(m.status(&ids[9]), Some(Status::Alive), "vouched for");
        assert_eq!(m.status(&ids[0]), Some(Status::Offline));
    }

    #[test]
    fn a_member_assumed_alive_is_watched_until_heard() {
        let t0 = Instant::now();
        let mut ids: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        ids.sort();
        let records = ids.iter().map(|id| record(*id, "x", 10)).collect();
        let mut m = Membership::new(ids[6], records, OFFLINE_AFTER);
        m.set_observers(4, Duration::from_secs(1));
        let others: Vec<PeerId> = ids.iter().copied().filter(|id| *id != ids[6]).collect();
        m.assume_all_alive(&others, t0);
        m.refresh_watch(t0);
        assert_eq!(m.watched().len(), 9, "all assumed, all watched");
        assert!(m.is_unheard(&ids[8]));
        m.on_heartbeat(&heartbeat(ids[8], 1, 1), || true, t0)
            .unwrap();
        assert!(!m.is_unheard(&ids[8]));
        m.refresh_watch(t0);
        assert!(
            !m.watched().contains(&ids[8]),
            "heard: a successor, not watched"
        );
        assert_eq!(
            m.tick(t0 + OFFLINE_AFTER).len(),
            8,
            "the unheard go offline"
        );
        assert_eq!(m.status(&ids[8]), Some(Status::Alive));
    }

    #[test]
    fn replays_and_strangers_are_refused() {
        let (mut m, _, b, _) = three();
        let now = Instant::now();
        m.on_heartbeat(&heartbeat(b, 1, 5), || true, now).unwrap();
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 1, 5), || true, now),
            Err(HeartbeatRejection::Replay)
        );
        // One from the same run, a little older: a late delivery of gossip, ignored.
        m.on_heartbeat(&heartbeat(b, 1, 20), || true, now).unwrap();
        assert_eq!(m.on_heartbeat(&heartbeat(b, 1, 19), || true, now), Ok(None));
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 1, 12), || true, now),
            Ok(None),
            "8 behind is still late"
        );
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 1, 11), || true, now),
            Err(HeartbeatRejection::Replay),
            "older than gossip could still deliver"
        );
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 1, 20), || true, now),
            Err(HeartbeatRejection::Replay),
            "the same sequence number twice"
        );
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 2, 0), || true, now),
            Ok(None),
            "a restart counts up"
        );
        let stranger = PeerId::random();
        assert_eq!(
            m.on_heartbeat(&heartbeat(stranger, 1, 1), || true, now),
            Err(HeartbeatRejection::NonMember)
        );
    }

    #[test]
    fn unreachable_is_offline_until_a_direct_connection_or_a_restart() {
        let (mut m, _, b, _) = three();
        let now = Instant::now();
        m.on_heartbeat(&heartbeat(b, 3, 1), || true, now).unwrap();
        assert_eq!(
            m.on_unreachable(&b),
            Some(Change::Offline(b, OfflineReason::Unreachable))
        );
        assert_eq!(m.on_unreachable(&b), None);
        // A late copy of the dead incarnation's heartbeat, relayed by someone else.
        assert_eq!(m.on_heartbeat(&heartbeat(b, 3, 2), || false, now), Ok(None));
        assert_eq!(m.status(&b), Some(Status::Offline));
        // The restarted process has a new incarnation.
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 4, 0), || false, now),
            Ok(Some(Change::Alive(b)))
        );
        // Or: the same incarnation, reached directly again (a network blip, not a crash).
        m.on_unreachable(&b);
        m.on_connected(&b);
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 4, 1), || false, now),
            Ok(Some(Change::Alive(b)))
        );
    }

    #[test]
    fn goodbye_is_offline_at_once_until_the_next_incarnation() {
        let (mut m, _, b, _) = three();
        let now = Instant::now();
        m.on_heartbeat(&heartbeat(b, 3, 7), || true, now).unwrap();
        let goodbye = Goodbye {
            node_id: b,
            seq: (3 << 32) | 8,
        };
        assert_eq!(
            m.on_goodbye(&goodbye),
            Ok(Some(Change::Offline(b, OfflineReason::Goodbye)))
        );
        assert_eq!(m.status(&b), Some(Status::Offline));
        // Replayed: refused, and no change.
        assert_eq!(m.on_goodbye(&goodbye), Err(HeartbeatRejection::Replay));
        // A heartbeat of the stopping incarnation (sent before the goodbye, relayed late) is
        // a late delivery: ignored, it does not bring the member back.
        assert_eq!(m.on_heartbeat(&heartbeat(b, 3, 7), || true, now), Ok(None));
        assert_eq!(m.status(&b), Some(Status::Offline));
        // An old goodbye cannot take down the restarted node.
        assert_eq!(
            m.on_heartbeat(&heartbeat(b, 4, 1), || true, now),
            Ok(Some(Change::Alive(b)))
        );
        assert_eq!(m.on_goodbye(&goodbye), Err(HeartbeatRejection::Replay));
        assert_eq!(m.status(&b), Some(Status::Alive));
        // Strangers cannot say goodbye for anyone.
        let stranger = PeerId::random();
        assert_eq!(
            m.on_goodbye(&Goodbye {
                node_id: stranger,
                seq: u64::MAX
            }),
            Err(HeartbeatRejection::NonMember)
        );
    }

    #[test]
    fn the_leader_saying_goodbye_hands_over_at_once() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut m = Membership::new(
            a,
            vec![record(a, "a", 50), record(b, "b", 10), record(c, "c", 20)],
            OFFLINE_AFTER,
        );
        let now = Instant::now();
        m.on_heartbeat(&heartbeat(b, 1, 1), || true, now).unwrap();
        m.on_heartbeat(&heartbeat(c, 1, 1), || true, now).unwrap();
        assert_eq!(m.leader(), b);
        m.on_goodbye(&Goodbye {
            node_id: b,
            seq: (1 << 32) | 2,
        })
        .unwrap();
        assert_eq!(m.leader(), c, "no waiting for missed heartbeats");
    }

    #[test]
    fn assumed_alive_members_lead_until_silence_and_a_stopping_node_stands_down() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut m = Membership::new(
            a,
            vec![record(a, "a", 50), record(b, "b", 10), record(c, "c", 20)],
            OFFLINE_AFTER,
        );
        let t0 = Instant::now();
        assert_eq!(m.leader(), a, "nobody else is known alive yet");
        m.assume_alive(&b, t0);
        m.assume_alive(&c, t0);
        assert_eq!(m.leader(), b, "restarted: agrees with the network at once");
        // b's restarted incarnation is heard; c stays silent and goes offline in time.
        m.on_heartbeat(&heartbeat(b, 2, 1), || true, t0 + Duration::from_secs(3))
            .unwrap();
        assert_eq!(
            m.tick(t0 + OFFLINE_AFTER),
            vec![Change::Offline(c, OfflineReason::HeartbeatTimeout)]
        );
        assert_eq!(m.leader(), b);
        // Stopping: a names b even though a would beat the now-offline c.
        m.on_goodbye(&Goodbye {
            node_id: b,
            seq: (2 << 32) | 2,
        })
        .unwrap();
        assert_eq!(m.leader(), a);
        m.assume_alive(&c, t0 + OFFLINE_AFTER);
        m.stand_down();
        assert_eq!(m.leader(), c);
        // Standing down with nobody else alive: still a itself (there is no one else to name).
        m.tick(t0 + OFFLINE_AFTER * 3);
        assert_eq!(m.leader(), a);
    }

    #[test]
    fn leader_is_minimum_alive_key() {
        let (mut m, a, b, c) = three();
        let now = Instant::now();
        let mut by_bytes = [a, b, c];
        by_bytes.sort_by_key(|id| id.to_bytes());
        m.on_heartbeat(&heartbeat(b, 1, 1), || true, now).unwrap();
        m.on_heartbeat(&heartbeat(c, 1, 1), || true, now).unwrap();
        assert_eq!(m.leader(), by_bytes[0]);
        // Kill the leader (if it is not us): the next one takes over.
        if by_bytes[0] != a {
            m.on_unreachable(&by_bytes[0]);
            assert_eq!(m.leader(), by_bytes[1]);
        }
        let view = m.view();
        assert_eq!(view.iter().filter(|p| p.leader).count(), 1);
    }

    #[test]
    fn merge_adds_removes_and_converges() {
        let (mut m, a, b, _) = three();
        let d = PeerId::random();
        assert_eq!(m.merge(&[record(d, "d", 1)]), vec![Change::Joined(d)]);
        assert!(m.is_member(&d));
        let mut gone = record(d, "d", 1);
        gone.version = 2;
        gone.left = true;
        assert_eq!(m.merge(&[gone.clone()]), vec![Change::Left(d)]);
        assert!(!m.is_member(&d));
        // An older copy of the record cannot resurrect it.
        assert!(m.merge(&[record(d, "d", 1)]).is_empty());
        assert!(!m.is_member(&d));
        // Nobody else speaks for the local node.
        let mut fake_self = record(a, "a", 0);
        fake_self.version = 99;
        fake_self.left = true;
        assert!(m.merge(&[fake_self]).is_empty());
        assert!(m.is_member(&a));
        // Order does not matter for equal versions.
        let mut x = record(b, "b", 10);
        x.addr = "10.0.0.1:1".into();
        let mut y = record(b, "b", 10);
        y.addr = "10.0.0.2:1".into();
        // Two nodes that both know a, b and c (the same existing members, not fresh ones).
        let records = m.records();
        let (mut m1, mut m2) = (
            Membership::new(a, records.clone(), OFFLINE_AFTER),
            Membership::new(a, records, OFFLINE_AFTER),
        );
        assert!(m1.is_member(&b) && m2.is_member(&b));
        m1.merge(&[x.clone(), y.clone()]);
        m2.merge(&[y, x]);
        let pick = |m: &Membership| m.records().into_iter().find(|r| r.node_id == b);
        assert_eq!(pick(&m1).map(|r| r.addr), pick(&m2).map(|r| r.addr));
    }

    #[test]
    fn admit_after_leave_bumps_the_version() {
        let (mut m, _, _, _) = three();
        let d = PeerId::random();
        let mut gone = record(d, "d", 1);
        gone.version = 7;
        gone.left = true;
        m.merge(&[gone]);
        let again = m.admit(d, "d".into(), "127.0.0.1:1".into(), 1, None);
        assert_eq!(again.version, 8);
        assert!(m.is_member(&d));
        assert_eq!(m.find_by_name("d"), Some(d));
    }

    #[test]
    fn the_derived_leader_follows_the_documented_order() {
        use crate::leader::{LeaderKey, elect};
        let now = Instant::now();
        for round in 0..50u32 {
            let ids: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
            let records: Vec<MemberRecord> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| record(*id, &format!("n{i}"), (round + i as u32) % 3))
                .collect();
            let mut m = Membership::new(ids[0], records.clone(), OFFLINE_AFTER);
            // Every other remote member alive.
            for id in ids.iter().skip(2).step_by(2) {
                m.assume_alive(id, now);
            }
            let expected = elect(records.iter().filter_map(|r| {
                let alive = r.node_id == ids[0] || m.status(&r.node_id) == Some(Status::Alive);
                alive.then_some(LeaderKey {
                    priority: r.priority,
                    node_id: r.node_id,
                })
            }));
            assert_eq!(Some(m.leader()), expected, "round {round}");
        }
    }
}
