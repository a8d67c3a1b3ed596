//! Group chats of the PQ4 messaging service (seed 004 §6–10, §13; docs/messaging.md "Groups"):
//! the group record the network keeps, the rules every holder *and every member's client*
//! apply to a new version of it, and the frames group traffic travels in through mailboxes.
//!
//! A group is known to the network only as a [`GroupRecord`]: its id, name, members, admins
//! and key epoch, signed by the member who made that version. The group key itself never
//! touches a node: it travels to each member inside the pairwise PQ4 session
//! (`GroupKeyShare`, `constella_keys::group`).
//!
//! The rules ([`HeldGroup::offer`]):
//! - a new version has a higher epoch and is signed by a member of the version it follows;
//! - a version that changes the members, the admins or the name must be signed by an admin of
//!   the version it follows (so a forged removal by a non-admin is refused by whoever checks);
//! - two versions of one epoch (two members rotating at once, §13) are ordered by the
//!   author's Ed448 key, smaller first — the same tie-break `GroupSession::apply` uses for two
//!   key shares of one epoch — so every holder and every member ends on the same version,
//!   whatever order they saw them in, and the loser learns it lost.
//!
//! Acknowledgements (§8.1 step 6, §8.2): a member whose client installed a key says so with a
//! signed [`GroupAck`]; the holders keep, per member, the highest key epoch acknowledged. A
//! member that has not acknowledged the current key when its record is older than the bound
//! is marked inactive ([`HeldGroup::mark_inactive`]) and the admins are told
//! ([`GroupFrame::Inactive`]); a later acknowledgement makes it active again.

use std::collections::BTreeMap;

use constella_keys::IdentityPublicKey;
use serde::{Deserialize, Serialize};

use crate::pq4::Bytes;

/// Most members of one group (a key share for 100 identities is ~23 KiB, under the keys
/// crate's 64 KiB share bound).
pub const MAX_GROUP_MEMBERS: usize = 100;
/// Longest group name.
pub const MAX_GROUP_NAME: usize = 64;
/// Length of a group id.
pub const GROUP_ID_LEN: usize = 32;
/// Length of an Ed448 public key (the author key of a record).
const SIGNING_KEY_LEN: usize = 57;
/// Length of an Ed448 signature.
const SIGNATURE_LEN: usize = 114;
/// What starts a mailbox entry that carries group traffic instead of a pairwise envelope (an
/// envelope starts with its version byte, never with `P`).
pub const GROUP_FRAME_MAGIC: &[u8; 4] = b"PQ4G";

/// One version of a group's metadata, as the holders keep it and members check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// 32 random bytes chosen by the creator.
    pub gid: Bytes,
    pub name: String,
    /// The key epoch this version goes with (0 at creation).
    pub epoch: u32,
    /// Usernames, creator first.
    pub members: Vec<String>,
    pub admins: Vec<String>,
    /// Who made this version.
    pub by: String,
    /// `by`'s Ed448 identity key (57 bytes): the concurrent-update tie-break.
    pub by_key: Bytes,
    pub at_ms: u64,
    /// `by`'s signature ([`IdentityPublicKey::verify_group_control`]) over
    /// [`GroupRecord::signed_bytes`].
    pub sig: Bytes,
}

/// Why a group record or request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupRuleError {
    #[error("malformed group record: {0}")]
    Shape(&'static str),
    #[error("the record belongs to another group")]
    WrongGroup,
    #[error("the record is older than the one held (epoch {held})")]
    Stale { held: u32 },
    #[error("@{0} is not an admin of the group: only admins change members")]
    NotAnAdmin(String),
    #[error("@{0} is not a member of the group")]
    NotAMember(String),
    #[error("the signature is not @{0}'s")]
    BadSignature(String),
}

/// The signed part of a record, domain-separated from a leave request.
#[derive(Serialize)]
struct SignedRecord<'a> {
    domain: &'static str,
    gid: &'a Bytes,
    name: &'a str,
    epoch: u32,
    members: &'a [String],
    admins: &'a [String],
    by: &'a str,
    by_key: &'a Bytes,
    at_ms: u64,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR of plain structs into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// The record key of a group.
pub fn group_key(gid: &[u8]) -> String {
    format!("group/{}", hex::encode(gid))
}

/// A group name: 1..=64 of letters, digits, `-`, `_`, `.` (no spaces: it is typed on a
/// command line).
pub fn valid_group_name(name: &str) -> bool {
    (1..=MAX_GROUP_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl GroupRecord {
    /// The bytes the author signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        cbor(&SignedRecord {
            domain: "PQ4 group record",
            gid: &self.gid,
            name: &self.name,
            epoch: self.epoch,
            members: &self.members,
            admins: &self.admins,
            by: &self.by,
            by_key: &self.by_key,
            at_ms: self.at_ms,
        })
    }

    /// The record key.
    pub fn key(&self) -> String {
        group_key(&self.gid.0)
    }

    /// Whether `name` is a member.
    pub fn is_member(&self, name: &str) -> bool {
        self.members.iter().any(|m| m == name)
    }

    /// Whether `name` is an admin.
    pub fn is_admin(&self, name: &str) -> bool {
        self.admins.iter().any(|m| m == name)
    }

    /// Bounds and internal consistency: sizes, names, admins among the members, the author a
    /// member, no duplicates.
    pub fn check_shape(&self) -> Result<(), GroupRuleError> {
        let shape = GroupRuleError::Shape;
        if self.gid.0.len() != GROUP_ID_LEN {
            return Err(shape("group id length"));
        }
        if !valid_group_name(&self.name) {
            return Err(shape("group name"));
        }
        if self.members.is_empty() || self.members.len() > MAX_GROUP_MEMBERS {
            return Err(shape("number of members"));
        }
        if self.by_key.0.len() != SIGNING_KEY_LEN || self.sig.0.len() != SIGNATURE_LEN {
            return Err(shape("author key or signature length"));
        }
        let mut names = self.members.clone();
        names.sort();
        names.dedup();
        if names.len() != self.members.len()
            || !self.members.iter().all(|m| crate::pq4::valid_username(m))
        {
            return Err(shape("member names"));
        }
        if self.admins.is_empty() || !self.admins.iter().all(|a| self.is_member(a)) {
            return Err(shape("admins must be members"));
        }
        if !self.is_member(&self.by) {
            return Err(GroupRuleError::NotAMember(self.by.clone()));
        }
        Ok(())
    }

    /// Checks the signature against the author's identity (pinned by a client, the
    /// registered account's on a node).
    pub fn verify(&self, author: &IdentityPublicKey) -> Result<(), GroupRuleError> {
        let bad = || GroupRuleError::BadSignature(self.by.clone());
        if author.signing_key_bytes().as_slice() != self.by_key.0.as_slice() {
            return Err(bad());
        }
        let sig: [u8; SIGNATURE_LEN] = self.sig.0.as_slice().try_into().map_err(|_| bad())?;
        author
            .verify_group_control(&self.signed_bytes(), &sig)
            .map_err(|_| bad())
    }

    /// Whether the members, the admins or the name differ from `other`'s.
    pub fn membership_differs(&self, other: &GroupRecord) -> bool {
        self.members != other.members || self.admins != other.admins || self.name != other.name
    }

    /// Whether this version may follow `prev`: same group, a later epoch, signed by a member
    /// of `prev`, and by an admin of `prev` if it changes members, admins or name.
    pub fn may_follow(&self, prev: &GroupRecord) -> Result<(), GroupRuleError> {
        self.check_shape()?;
        if self.gid != prev.gid {
            return Err(GroupRuleError::WrongGroup);
        }
        if self.epoch <= prev.epoch {
            return Err(GroupRuleError::Stale { held: prev.epoch });
        }
        if !prev.is_member(&self.by) {
            return Err(GroupRuleError::NotAMember(self.by.clone()));
        }
        if self.membership_differs(prev) && !prev.is_admin(&self.by) {
            return Err(GroupRuleError::NotAnAdmin(self.by.clone()));
        }
        Ok(())
    }

    /// The concurrent-update order: a higher epoch wins; at one epoch the smaller author key
    /// (then the smaller signature, so two versions by one author are ordered too).
    pub fn beats(&self, other: &GroupRecord) -> bool {
        if self.epoch != other.epoch {
            return self.epoch > other.epoch;
        }
        (&self.by_key, &self.sig) < (&other.by_key, &other.sig)
    }

    /// A first version: epoch 0, made by an admin.
    pub fn check_creation(&self) -> Result<(), GroupRuleError> {
        self.check_shape()?;
        if self.epoch != 0 {
            return Err(GroupRuleError::Shape("a new group starts at epoch 0"));
        }
        if !self.is_admin(&self.by) {
            return Err(GroupRuleError::NotAnAdmin(self.by.clone()));
        }
        Ok(())
    }
}

/// What a holder (or a member's client) keeps of a group: the current version and the one it
/// followed, so a competing version of the same epoch is checked against the same base; on a
/// holder also the members' acknowledgements of the key (§8.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldGroup {
    pub current: GroupRecord,
    pub previous: Option<GroupRecord>,
    /// Member → the highest key epoch it acknowledged.
    #[serde(default)]
    pub acks: BTreeMap<String, u32>,
    /// Member → the key epoch it did not acknowledge within the bound (inactive until it
    /// acknowledges that epoch or a later one).
    #[serde(default)]
    pub inactive: BTreeMap<String, u32>,
    /// The last key epoch whose acknowledgements were checked against the bound.
    #[serde(default)]
    pub checked: Option<u32>,
    /// The first key epoch whose acknowledgements are collected (`None`: a group held from
    /// before acknowledgements existed, tracked from its next version, so its members are not
    /// all marked inactive at once).
    #[serde(default)]
    pub tracked_from: Option<u32>,
}

/// The acknowledgement state of a group's current key, as the holders answer it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The current key epoch.
    pub epoch: u32,
    /// Members that hold the current key (the record's author and those that acknowledged it).
    pub acknowledged: Vec<String>,
    /// Members marked inactive (§8.2): they did not acknowledge a key within the bound and
    /// have not since.
    pub inactive: Vec<String>,
}

impl GroupStatus {
    /// The union of several holders' answers: the highest epoch's acknowledgements; a member
    /// acknowledged on any holder is not inactive.
    pub fn merge(answers: impl IntoIterator<Item = GroupStatus>) -> Option<GroupStatus> {
        let mut answers: Vec<GroupStatus> = answers.into_iter().collect();
        let epoch = answers.iter().map(|a| a.epoch).max()?;
        answers.retain(|a| a.epoch == epoch);
        let mut acknowledged: Vec<String> = answers
            .iter()
            .flat_map(|a| a.acknowledged.iter().cloned())
            .collect();
        acknowledged.sort();
        acknowledged.dedup();
        let mut inactive: Vec<String> = answers
            .iter()
            .flat_map(|a| a.inactive.iter().cloned())
            .filter(|m| !acknowledged.contains(m))
            .collect();
        inactive.sort();
        inactive.dedup();
        Some(GroupStatus {
            epoch,
            acknowledged,
            inactive,
        })
    }
}

/// A member's acknowledgement that its client installed the key of `epoch` (§8.1 step 6),
/// signed with its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAck {
    pub gid: Bytes,
    pub epoch: u32,
    pub by: String,
    pub at_ms: u64,
    pub sig: Bytes,
}

#[derive(Serialize)]
struct SignedAck<'a> {
    domain: &'static str,
    gid: &'a Bytes,
    epoch: u32,
    by: &'a str,
    at_ms: u64,
}

impl GroupAck {
    /// The bytes the member signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        cbor(&SignedAck {
            domain: "PQ4 group ack",
            gid: &self.gid,
            epoch: self.epoch,
            by: &self.by,
            at_ms: self.at_ms,
        })
    }

    /// The record key of the group acknowledged.
    pub fn key(&self) -> String {
        group_key(&self.gid.0)
    }

    /// Checks the signature against the member's identity.
    pub fn verify(&self, member: &IdentityPublicKey) -> Result<(), GroupRuleError> {
        let bad = || GroupRuleError::BadSignature(self.by.clone());
        if self.gid.0.len() != GROUP_ID_LEN || !crate::pq4::valid_username(&self.by) {
            return Err(GroupRuleError::Shape("group acknowledgement"));
        }
        let sig: [u8; SIGNATURE_LEN] = self.sig.0.as_slice().try_into().map_err(|_| bad())?;
        member
            .verify_group_control(&self.signed_bytes(), &sig)
            .map_err(|_| bad())
    }
}

/// What [`HeldGroup::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The offered version is now current.
    Installed,
    /// It is the current version already.
    AlreadyCurrent,
    /// It lost to the current version of the same epoch (§13): the author is told.
    Lost,
}

impl HeldGroup {
    /// A group from its first version.
    pub fn create(record: GroupRecord) -> Result<Self, GroupRuleError> {
        record.check_creation()?;
        Ok(Self::starting_at(record))
    }

    /// What a newcomer keeps of a group it joins at `record` (no earlier version known).
    pub fn starting_at(record: GroupRecord) -> Self {
        Self {
            tracked_from: Some(record.epoch),
            current: record,
            previous: None,
            acks: BTreeMap::new(),
            inactive: BTreeMap::new(),
            checked: None,
        }
    }

    /// Whether `member` holds the current key: it made this version or acknowledged its key.
    pub fn acknowledged(&self, member: &str) -> bool {
        member == self.current.by
            || self
                .acks
                .get(member)
                .is_some_and(|e| *e >= self.current.epoch)
    }

    /// Whether `member` is marked inactive: a member that did not acknowledge a key within
    /// the bound and has not acknowledged that key or a later one since.
    pub fn is_inactive(&self, member: &str) -> bool {
        self.current.is_member(member)
            && self.inactive.get(member).is_some_and(|missed| {
                !self.acknowledged(member) && self.acks.get(member).is_none_or(|a| a < missed)
            })
    }

    /// Records `ack` (its signature checked by the caller): the member must be in the current
    /// version, and the epoch not beyond it.
    pub fn record_ack(&mut self, ack: &GroupAck) -> Result<(), GroupRuleError> {
        if ack.gid != self.current.gid {
            return Err(GroupRuleError::WrongGroup);
        }
        if !self.current.is_member(&ack.by) {
            return Err(GroupRuleError::NotAMember(ack.by.clone()));
        }
        if ack.epoch > self.current.epoch {
            return Err(GroupRuleError::Shape(
                "an acknowledgement of a key epoch this holder does not have yet",
            ));
        }
        let entry = self.acks.entry(ack.by.clone()).or_insert(ack.epoch);
        *entry = (*entry).max(ack.epoch);
        Ok(())
    }

    /// The acknowledgement state of the current key.
    pub fn status(&self) -> GroupStatus {
        GroupStatus {
            epoch: self.current.epoch,
            acknowledged: self
                .current
                .members
                .iter()
                .filter(|m| self.acknowledged(m))
                .cloned()
                .collect(),
            inactive: self
                .current
                .members
                .iter()
                .filter(|m| self.is_inactive(m))
                .cloned()
                .collect(),
        }
    }

    /// §8.2: once the current version is `bound_ms` old (by its author's clock) and was not
    /// checked yet, every member that has not acknowledged its key is marked inactive.
    /// Returns those members (empty when nothing is due or everyone acknowledged).
    pub fn mark_inactive(&mut self, now_ms: u64, bound_ms: u64) -> Vec<String> {
        let epoch = self.current.epoch;
        if self.tracked_from.is_none_or(|t| t > epoch)
            || self.checked.is_some_and(|c| c >= epoch)
            || now_ms < self.current.at_ms.saturating_add(bound_ms)
        {
            return Vec::new();
        }
        self.checked = Some(epoch);
        let missing: Vec<String> = self
            .current
            .members
            .iter()
            .filter(|m| !self.acknowledged(m))
            .cloned()
            .collect();
        for m in &missing {
            let entry = self.inactive.entry(m.clone()).or_insert(epoch);
            *entry = (*entry).max(epoch);
        }
        missing
    }

    /// Takes in another holder's acknowledgements and marks (hand-off): the higher epoch of
    /// each wins, so merging is order-independent.
    pub fn merge_acks(&mut self, other: &HeldGroup) {
        for (m, e) in &other.acks {
            let entry = self.acks.entry(m.clone()).or_insert(*e);
            *entry = (*entry).max(*e);
        }
        for (m, e) in &other.inactive {
            let entry = self.inactive.entry(m.clone()).or_insert(*e);
            *entry = (*entry).max(*e);
        }
        self.checked = self.checked.max(other.checked);
        self.tracked_from = match (self.tracked_from, other.tracked_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Offers a new version (its signature already checked by the caller). Refused versions
    /// change nothing.
    pub fn offer(&mut self, record: GroupRecord) -> Result<Offer, GroupRuleError> {
        if record.gid != self.current.gid {
            return Err(GroupRuleError::WrongGroup);
        }
        if record == self.current {
            return Ok(Offer::AlreadyCurrent);
        }
        if record.epoch > self.current.epoch {
            record.may_follow(&self.current)?;
            self.tracked_from.get_or_insert(record.epoch);
            self.previous = Some(std::mem::replace(&mut self.current, record));
            return Ok(Offer::Installed);
        }
        if record.epoch < self.current.epoch {
            return Err(GroupRuleError::Stale {
                held: self.current.epoch,
            });
        }
        // The same epoch: a concurrent version, checked against the common base.
        match &self.previous {
            Some(base) => record.may_follow(base)?,
            None => record.check_creation()?,
        }
        if record.beats(&self.current) {
            self.tracked_from.get_or_insert(record.epoch);
            self.current = record;
            Ok(Offer::Installed)
        } else {
            Ok(Offer::Lost)
        }
    }
}

/// A member's request to leave, sent to the admins (an admin's client carries out the
/// removal and the rotation, so the leaver never learns the next key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {
    pub gid: Bytes,
    pub by: String,
    pub at_ms: u64,
    pub sig: Bytes,
}

#[derive(Serialize)]
struct SignedLeave<'a> {
    domain: &'static str,
    gid: &'a Bytes,
    by: &'a str,
    at_ms: u64,
}

impl LeaveRequest {
    /// The bytes the leaver signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        cbor(&SignedLeave {
            domain: "PQ4 group leave",
            gid: &self.gid,
            by: &self.by,
            at_ms: self.at_ms,
        })
    }

    /// Checks the signature against the leaver's identity.
    pub fn verify(&self, leaver: &IdentityPublicKey) -> Result<(), GroupRuleError> {
        let bad = || GroupRuleError::BadSignature(self.by.clone());
        let sig: [u8; SIGNATURE_LEN] = self.sig.0.as_slice().try_into().map_err(|_| bad())?;
        leaver
            .verify_group_control(&self.signed_bytes(), &sig)
            .map_err(|_| bad())
    }
}

/// Group traffic in a mailbox entry (after [`GROUP_FRAME_MAGIC`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GroupFrame {
    /// A `GroupMessage` (`constella_keys::GroupMessage::to_bytes`).
    Message(Bytes),
    /// A new version of the group record, so members (and a removed member) learn of it.
    Record(GroupRecord),
    Leave(LeaveRequest),
    /// From the group's holders to each admin (§8.2): these members did not acknowledge the
    /// key of `epoch` within the bound and are marked inactive. Deterministic bytes, so the
    /// same notice from several holders is one mailbox entry. An admin's client checks it
    /// against the holders' [`GroupStatus`] before telling the user.
    Inactive {
        gid: Bytes,
        epoch: u32,
        members: Vec<String>,
    },
}

impl GroupFrame {
    /// `GROUP_FRAME_MAGIC ‖ CBOR(frame)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = GROUP_FRAME_MAGIC.to_vec();
        out.extend(cbor(self));
        out
    }

    /// `None` if `bytes` is not group traffic; `Some(Err)` if it claims to be but does not
    /// decode.
    pub fn from_bytes(bytes: &[u8]) -> Option<Result<Self, String>> {
        let body = bytes.strip_prefix(GROUP_FRAME_MAGIC.as_slice())?;
        Some(ciborium::from_reader(body).map_err(|e| e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_keys::IdentityKeyPair;

    fn person() -> IdentityKeyPair {
        IdentityKeyPair::generate(&mut rand::rng()).unwrap()
    }

    fn record(
        by: (&str, &IdentityKeyPair),
        epoch: u32,
        members: &[&str],
        admins: &[&str],
    ) -> GroupRecord {
        let mut r = GroupRecord {
            gid: Bytes(vec![7; 32]),
            name: "team".into(),
            epoch,
            members: members.iter().map(|s| s.to_string()).collect(),
            admins: admins.iter().map(|s| s.to_string()).collect(),
            by: by.0.into(),
            by_key: Bytes(by.1.public().signing_key_bytes().to_vec()),
            at_ms: 1,
            sig: Bytes(vec![0; 114]),
        };
        r.sig = Bytes(by.1.sign_group_control(&r.signed_bytes()).unwrap().to_vec());
        r
    }

    #[test]
    fn signatures_bind_the_author_and_every_field() {
        let alice = person();
        let mallory = person();
        let r = record(("alice", &alice), 0, &["alice", "bob"], &["alice"]);
        assert!(r.verify(alice.public()).is_ok());
        assert!(r.verify(mallory.public()).is_err());
        let mut changed = r.clone();
        changed.members.push("carol".into());
        assert!(changed.verify(alice.public()).is_err());
    }

    #[test]
    fn only_admins_change_members_and_members_rotate() {
        let alice = person();
        let bob = person();
        let base = record(("alice", &alice), 0, &["alice", "bob", "dave"], &["alice"]);
        let mut held = HeldGroup::create(base).unwrap();
        // bob (not an admin) removes dave: refused, nothing changes.
        let forged = record(("bob", &bob), 1, &["alice", "bob"], &["alice"]);
        assert_eq!(
            held.offer(forged),
            Err(GroupRuleError::NotAnAdmin("bob".into()))
        );
        assert_eq!(held.current.epoch, 0);
        // bob rotates without changing members: allowed.
        let rotation = record(("bob", &bob), 1, &["alice", "bob", "dave"], &["alice"]);
        assert_eq!(held.offer(rotation.clone()), Ok(Offer::Installed));
        assert_eq!(held.offer(rotation), Ok(Offer::AlreadyCurrent));
        // alice removes dave: allowed.
        let removal = record(("alice", &alice), 2, &["alice", "bob"], &["alice"]);
        assert_eq!(held.offer(removal), Ok(Offer::Installed));
        // A removed member can do nothing more.
        let dave = person();
        let back = record(("dave", &dave), 3, &["alice", "bob", "dave"], &["alice"]);
        assert!(held.offer(back).is_err());
        // An old version is stale.
        let old = record(("alice", &alice), 1, &["alice", "bob"], &["alice"]);
        assert!(matches!(held.offer(old), Err(GroupRuleError::Stale { .. })));
    }

    #[test]
    fn two_rotations_of_one_epoch_end_on_the_same_winner_in_any_order() {
        let a = person();
        let b = person();
        let base = record(("a", &a), 0, &["a", "b", "c"], &["a", "b"]);
        let from_a = record(("a", &a), 1, &["a", "b"], &["a", "b"]);
        let from_b = record(("b", &b), 1, &["a", "b", "c"], &["a", "b"]);
        let mut one = HeldGroup::create(base.clone()).unwrap();
        let mut two = HeldGroup::create(base).unwrap();
        let first = one.offer(from_a.clone()).unwrap();
        let second = one.offer(from_b.clone()).unwrap();
        two.offer(from_b.clone()).unwrap();
        two.offer(from_a.clone()).unwrap();
        assert_eq!(one.current, two.current);
        let winner_is_a = a.public().signing_key_bytes() < b.public().signing_key_bytes();
        assert_eq!(one.current == from_a, winner_is_a);
        assert_eq!(first, Offer::Installed);
        assert_eq!(second == Offer::Installed, !winner_is_a);
        // The loser, offered again, is told it lost.
        let loser = if winner_is_a { from_b } else { from_a };
        assert_eq!(one.offer(loser), Ok(Offer::Lost));
    }

    fn ack(by: (&str, &IdentityKeyPair), epoch: u32) -> GroupAck {
        let mut a = GroupAck {
            gid: Bytes(vec![7; 32]),
            epoch,
            by: by.0.into(),
            at_ms: 5,
            sig: Bytes::default(),
        };
        a.sig = Bytes(by.1.sign_group_control(&a.signed_bytes()).unwrap().to_vec());
        a
    }

    #[test]
    fn members_that_do_not_acknowledge_within_the_bound_are_inactive_until_they_do() {
        let alice = person();
        let bob = person();
        let carol = person();
        let base = record(("alice", &alice), 0, &["alice", "bob", "carol"], &["alice"]);
        let mut held = HeldGroup::create(base).unwrap();
        let from_bob = ack(("bob", &bob), 0);
        assert!(from_bob.verify(bob.public()).is_ok());
        assert!(from_bob.verify(carol.public()).is_err());
        held.record_ack(&from_bob).unwrap();
        // The author holds the key; bob acknowledged; carol did not.
        assert_eq!(held.status().acknowledged, vec!["alice", "bob"]);
        // Not due before the bound (the record is at 1 ms).
        assert!(held.mark_inactive(500, 1_000).is_empty());
        assert!(held.status().inactive.is_empty());
        assert_eq!(held.mark_inactive(1_001, 1_000), vec!["carol"]);
        assert_eq!(held.status().inactive, vec!["carol"]);
        // Checked once per epoch.
        assert!(held.mark_inactive(5_000, 1_000).is_empty());
        // A non-member's or a future epoch's acknowledgement is refused.
        assert!(held.record_ack(&ack(("dave", &person()), 0)).is_err());
        assert!(held.record_ack(&ack(("carol", &carol), 1)).is_err());
        // Another holder's view merges in any order; carol acknowledging makes her active.
        let mut other = held.clone();
        other.record_ack(&ack(("carol", &carol), 0)).unwrap();
        let mut merged = held.clone();
        merged.merge_acks(&other);
        other.merge_acks(&held);
        assert_eq!(merged, other);
        assert!(merged.status().inactive.is_empty());
        assert_eq!(merged.status().acknowledged.len(), 3);
        // Holders' answers merge the same way.
        let status = GroupStatus::merge([held.status(), merged.status()]).unwrap();
        assert!(status.inactive.is_empty(), "{status:?}");
        // A new key: nobody but its author holds it until they acknowledge.
        let rotation = record(("bob", &bob), 1, &["alice", "bob", "carol"], &["alice"]);
        merged.offer(rotation).unwrap();
        assert_eq!(merged.status().acknowledged, vec!["bob"]);
        assert!(merged.status().inactive.is_empty());
        // A group held from before acknowledgements existed is not checked until its next
        // version.
        let mut legacy = HeldGroup::starting_at(merged.current.clone());
        legacy.tracked_from = None;
        assert!(legacy.mark_inactive(u64::MAX, 1).is_empty());
        let next = record(("alice", &alice), 2, &["alice", "bob", "carol"], &["alice"]);
        legacy.offer(next).unwrap();
        assert_eq!(legacy.mark_inactive(u64::MAX, 1), vec!["bob", "carol"]);
    }

    #[test]
    fn shapes_and_frames() {
        let a = person();
        let mut bad = record(("a", &a), 0, &["a"], &["zed"]);
        assert!(bad.check_creation().is_err());
        bad = record(("a", &a), 1, &["a"], &["a"]);
        assert!(bad.check_creation().is_err());
        assert!(!valid_group_name("two words") && valid_group_name("ops-team"));
        let frame = GroupFrame::Record(record(("a", &a), 0, &["a"], &["a"]));
        let bytes = frame.to_bytes();
        assert!(matches!(
            GroupFrame::from_bytes(&bytes),
            Some(Ok(GroupFrame::Record(_)))
        ));
        assert!(GroupFrame::from_bytes(&[1, 2, 3]).is_none());
        assert!(matches!(GroupFrame::from_bytes(b"PQ4Gxx"), Some(Err(_))));
    }
}
