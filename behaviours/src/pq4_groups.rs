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
/// followed, so a competing version of the same epoch is checked against the same base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldGroup {
    pub current: GroupRecord,
    pub previous: Option<GroupRecord>,
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
        Ok(Self {
            current: record,
            previous: None,
        })
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
