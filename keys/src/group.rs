//! Group keys and group messages (seed §6–10).
//!
//! `group_id` and `group_key` are 32 random bytes. For message number `n` of a sender:
//!
//! ```text
//! message_key = HKDF-SHA512(salt = "", ikm = group_key, info = "MessageKey" ‖ n (u64 BE), 32)
//! key ‖ nonce = HKDF-SHA512(salt = sender IK, ikm = message_key, info = "PQ4 group AEAD", 44)
//! AD          = group_id ‖ sender IK ‖ timestamp (u64 BE)
//! ```
//! The seed numbers messages per group, but every member holds the same key, so two members
//! sending "message 5" at once would reuse a key and nonce. Numbers are therefore per sender
//! and the sender's identity is mixed into the AEAD key. Each sender may send
//! [`MAX_MESSAGES_PER_KEY`] messages under a key, and a key lives at most [`MAX_KEY_AGE_MS`];
//! after that [`GroupSession::encrypt`] refuses until the key is rotated. Removing or adding a
//! member always rotates, and a new key is only ever sent through each remaining member's
//! pairwise [`crate::Session`], so a removed member cannot read anything under it.
//!
//! Two members rotating to the same epoch at once are resolved by the distributors' Ed448
//! keys (the smaller wins), so every member settles on one key; replaced and losing keys are
//! kept for receiving ([`MAX_RETIRED_KEYS`]) so messages in flight under them still open.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::envelope::ContentType;
use crate::error::{DecodeError, GroupError, RatchetError, SealError};
use crate::identity::{
    IdentityKeyPair, IdentityPublicKey, IdentityWire, SIGNATURE_LEN, SIGNING_PUBLIC_LEN, ctx,
};
use crate::primitives::{aead_open, aead_seal, hkdf_sha512};
use crate::ratchet::{RatchetMessage, Session};
use crate::sealed::{BlobKind, PasswordKey, SealedBlob};
use crate::{PROTOCOL_VERSION, wire};

/// Messages one sender may send under one group key.
pub const MAX_MESSAGES_PER_KEY: u32 = 100;
/// Longest life of a group key: 7 days, in milliseconds.
pub const MAX_KEY_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Retired keys kept for receiving (the replaced key of the previous epoch, shares that lost a
/// concurrent rotation); beyond it the oldest is dropped.
pub const MAX_RETIRED_KEYS: usize = 4;
/// Largest group message accepted by the decoder.
pub const MAX_GROUP_MESSAGE_LEN: usize = crate::ratchet::MAX_WIRE_LEN;
/// Largest key share accepted by the decoder (enough for about 200 members).
pub const MAX_SHARE_LEN: usize = 64 * 1024;

/// `HKDF-SHA512(salt = "", ikm = group_key, info = "MessageKey" ‖ n (u64 BE), 32)`.
pub fn message_key(group_key: &[u8; 32], message_number: u64) -> Zeroizing<[u8; 32]> {
    hkdf_sha512::<32>(
        &[],
        group_key,
        &[b"MessageKey", &message_number.to_be_bytes()],
    )
}

pub(crate) fn aead_parts(
    group_key: &[u8; 32],
    n: u32,
    sender: &[u8],
) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let mk = message_key(group_key, u64::from(n));
    let okm = hkdf_sha512::<44>(sender, mk.as_slice(), &[b"PQ4 group AEAD"]);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

/// A group message: `version ‖ CBOR{gid, epoch, from, n, ts, ct, sig}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMessage {
    #[serde(with = "wire::fixed")]
    gid: [u8; 32],
    epoch: u32,
    #[serde(with = "wire::fixed")]
    from: [u8; SIGNING_PUBLIC_LEN],
    n: u32,
    ts: u64,
    #[serde(with = "wire::bytes")]
    ct: Vec<u8>,
    #[serde(with = "wire::fixed")]
    sig: [u8; SIGNATURE_LEN],
}

impl GroupMessage {
    /// The group id.
    pub fn group_id(&self) -> &[u8; 32] {
        &self.gid
    }
    /// The key epoch the message is under.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    /// The sender's message number under this key.
    pub fn message_number(&self) -> u32 {
        self.n
    }
    /// The ciphertext.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ct
    }
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, self.ct.len() + 320)
    }
    /// Decodes a message (shape only; [`GroupSession::decrypt`] authenticates it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, MAX_GROUP_MESSAGE_LEN)
    }

    /// `version ‖ epoch (u32 BE) ‖ n (u32 BE)`, signed together with the AD and ciphertext.
    fn signed_head(&self) -> [u8; 9] {
        let mut head = [0u8; 9];
        head[0] = PROTOCOL_VERSION;
        head[1..5].copy_from_slice(&self.epoch.to_be_bytes());
        head[5..].copy_from_slice(&self.n.to_be_bytes());
        head
    }
}

fn associated_data(group_id: &[u8; 32], sender: &IdentityPublicKey, ts: u64) -> Vec<u8> {
    [&group_id[..], &sender.to_bytes(), &ts.to_be_bytes()].concat()
}

/// A group key with its group id, epoch and member list, as distributed to members through
/// pairwise sessions: `version ‖ CBOR{gid, epoch, key, at, members}`.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct GroupKeyShare {
    #[serde(with = "wire::fixed")]
    gid: [u8; 32],
    epoch: u32,
    #[serde(with = "wire::fixed")]
    pub(crate) key: [u8; 32],
    at: u64,
    #[zeroize(skip)]
    members: Vec<IdentityWire>,
}

impl core::fmt::Debug for GroupKeyShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupKeyShare")
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl GroupKeyShare {
    /// Encodes the share (secret: send it only inside a pairwise session).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(wire::encode_with_capacity(
            self,
            128 + self.members.len() * 260,
        ))
    }

    /// Decodes a share.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, MAX_SHARE_LEN)
    }

    /// The epoch of the key.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The group the key belongs to (a receiver finds its group session by it).
    pub fn group_id(&self) -> &[u8; 32] {
        &self.gid
    }

    /// Encrypts the share for one member through our pairwise session with them, as content
    /// of type [`ContentType::GroupKeyShare`], so the receiver cannot mistake it for a chat
    /// message (decode the plaintext with [`crate::Content::from_bytes`]).
    pub fn wrap(
        &self,
        session: &mut Session,
        identity: &IdentityKeyPair,
        now_ms: u64,
    ) -> Result<RatchetMessage, RatchetError> {
        let content = crate::envelope::encode(ContentType::GroupKeyShare, &self.to_bytes());
        session.encrypt(identity, now_ms, &content)
    }

    fn verified_members(&self) -> Result<Vec<IdentityPublicKey>, GroupError> {
        let members = self
            .members
            .iter()
            .map(|m| m.verify().map_err(|_| GroupError::Membership))
            .collect::<Result<Vec<_>, _>>()?;
        check_unique_signers(&members)?;
        Ok(members)
    }
}

/// Per sender (Ed448 key), the message numbers received under one key.
type Seen = BTreeMap<[u8; SIGNING_PUBLIC_LEN], BTreeSet<u32>>;

/// A key we no longer send with but still accept messages under: the key an install replaced
/// (messages sent under it may still be in flight) or a share that lost a concurrent rotation
/// to the same epoch (its distributor's messages under it may reach us).
struct RetiredKey {
    epoch: u32,
    key: Zeroizing<[u8; 32]>,
    seen: Seen,
}

/// What [`GroupSession::apply`] did with a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareOutcome {
    /// The share's key is now the current key.
    Installed,
    /// The share is the current key already (delivered twice).
    AlreadyCurrent,
    /// The share lost to the current key (an older epoch, or the same epoch from a member
    /// with a larger Ed448 key); its key is kept to receive messages sent under it.
    KeptForReceiving,
}

/// Our view of one group: the current key, members, counters and replay state, and the
/// retired keys still accepted for receiving.
pub struct GroupSession {
    group_id: [u8; 32],
    epoch: u32,
    key: Zeroizing<[u8; 32]>,
    created_at: u64,
    /// Ed448 key of the member whose share installed the current key (ours after `create` or
    /// `rotate`): the tie-break between two rotations to the same epoch.
    rotated_by: [u8; SIGNING_PUBLIC_LEN],
    own: IdentityPublicKey,
    members: Vec<IdentityPublicKey>,
    sent: u32,
    seen: Seen,
    retired: VecDeque<RetiredKey>,
}

impl core::fmt::Debug for GroupSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupSession")
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}

// The secret fields, `key` and the retired keys, are `Zeroizing`.
impl ZeroizeOnDrop for GroupSession {}

/// Refuses a member list in which two identities share an Ed448 key: messages name their
/// sender by Ed448 key alone (`from`), which must find exactly one member.
fn check_unique_signers(members: &[IdentityPublicKey]) -> Result<(), GroupError> {
    let signers: BTreeSet<_> = members
        .iter()
        .map(IdentityPublicKey::signing_key_bytes)
        .collect();
    if signers.len() != members.len() {
        return Err(GroupError::Membership);
    }
    Ok(())
}

impl GroupSession {
    /// Creates a group with us and `others` as members.
    pub fn create(
        own: &IdentityPublicKey,
        others: &[IdentityPublicKey],
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, GroupError> {
        let mut group_id = [0u8; 32];
        rng.fill_bytes(&mut group_id);
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut_slice());
        let members: Vec<_> = core::iter::once(own).chain(others).cloned().collect();
        check_unique_signers(&members)?;
        Ok(Self {
            group_id,
            epoch: 0,
            key,
            created_at: now_ms,
            rotated_by: own.signing_key_bytes(),
            own: own.clone(),
            members,
            sent: 0,
            seen: BTreeMap::new(),
            retired: VecDeque::new(),
        })
    }

    /// Joins a group from a share received through the pairwise session with `from`.
    pub fn join(
        share: &GroupKeyShare,
        own: &IdentityPublicKey,
        from: &IdentityPublicKey,
    ) -> Result<Self, GroupError> {
        let members = share.verified_members()?;
        if !members.contains(own) || !members.contains(from) {
            return Err(GroupError::Membership);
        }
        Ok(Self {
            group_id: share.gid,
            epoch: share.epoch,
            key: Zeroizing::new(share.key),
            created_at: share.at,
            rotated_by: from.signing_key_bytes(),
            own: own.clone(),
            members,
            sent: 0,
            seen: BTreeMap::new(),
            retired: VecDeque::new(),
        })
    }

    /// Applies a share received from the member `from` through our pairwise session.
    ///
    /// Refused, with nothing changed: another group's share (`WrongGroup`), a sender that is
    /// not a current member (`NotAMember`), a member list without us or with two identities
    /// sharing an Ed448 key (`Membership`), a share older than the previous epoch
    /// (`StaleShare`). Otherwise the share becomes the current key if its epoch is higher, or
    /// equal with a distributor whose Ed448 key is smaller than the current one's (so members
    /// that see two rotations to one epoch in any order agree on the same key); the key it
    /// replaces, or a share that loses, is kept for receiving only.
    pub fn apply(
        &mut self,
        share: &GroupKeyShare,
        from: &IdentityPublicKey,
    ) -> Result<ShareOutcome, GroupError> {
        if share.gid != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if !self.members.contains(from) {
            return Err(GroupError::NotAMember);
        }
        if share.epoch.saturating_add(1) < self.epoch {
            return Err(GroupError::StaleShare(share.epoch));
        }
        let members = share.verified_members()?;
        if !members.contains(&self.own) {
            return Err(GroupError::Membership);
        }
        let same_key: bool = share.key.ct_eq(&*self.key).into();
        if share.epoch == self.epoch && same_key {
            return Ok(ShareOutcome::AlreadyCurrent);
        }
        let by = from.signing_key_bytes();
        let wins = share.epoch > self.epoch || (share.epoch == self.epoch && by < self.rotated_by);
        if wins {
            self.install(
                share.epoch,
                Zeroizing::new(share.key),
                share.at,
                members,
                by,
            );
            return Ok(ShareOutcome::Installed);
        }
        self.retire(share.epoch, Zeroizing::new(share.key), BTreeMap::new());
        Ok(ShareOutcome::KeptForReceiving)
    }

    /// Keeps a key for receiving, newest last, unless it is already known; at most
    /// [`MAX_RETIRED_KEYS`], the oldest evicted.
    fn retire(&mut self, epoch: u32, key: Zeroizing<[u8; 32]>, seen: Seen) {
        let known = self
            .retired
            .iter()
            .any(|k| k.epoch == epoch && bool::from(k.key.ct_eq(&*key)));
        if known {
            return;
        }
        self.retired.push_back(RetiredKey { epoch, key, seen });
        while self.retired.len() > MAX_RETIRED_KEYS {
            self.retired.pop_front();
        }
    }

    fn install(
        &mut self,
        epoch: u32,
        key: Zeroizing<[u8; 32]>,
        at: u64,
        members: Vec<IdentityPublicKey>,
        rotated_by: [u8; SIGNING_PUBLIC_LEN],
    ) {
        let old_key = core::mem::replace(&mut self.key, key);
        let old_seen = core::mem::take(&mut self.seen);
        self.retire(self.epoch, old_key, old_seen);
        self.epoch = epoch;
        self.created_at = at;
        self.members = members;
        self.rotated_by = rotated_by;
        self.sent = 0;
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8; 32] {
        &self.group_id
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The current members, us included.
    pub fn members(&self) -> &[IdentityPublicKey] {
        &self.members
    }

    /// The current key and membership, to send to members.
    pub fn share(&self) -> GroupKeyShare {
        GroupKeyShare {
            gid: self.group_id,
            epoch: self.epoch,
            key: *self.key,
            at: self.created_at,
            members: self
                .members
                .iter()
                .map(IdentityPublicKey::to_wire)
                .collect(),
        }
    }

    /// True when we have sent [`MAX_MESSAGES_PER_KEY`] messages under the current key or
    /// `now_ms ≥ at + MAX_KEY_AGE_MS` (a clock behind `at` counts as age 0).
    pub fn needs_rotation(&self, now_ms: u64) -> bool {
        self.sent >= MAX_MESSAGES_PER_KEY
            || now_ms.saturating_sub(self.created_at) >= MAX_KEY_AGE_MS
    }

    /// Replaces the key with a fresh one (next epoch) and returns the share to distribute.
    pub fn rotate(
        &mut self,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<GroupKeyShare, GroupError> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(GroupError::RotationRequired)?;
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut_slice());
        let members = self.members.clone();
        let own = self.own.signing_key_bytes();
        self.install(epoch, key, now_ms, members, own);
        Ok(self.share())
    }

    /// Removes a member and rotates. Send the returned share to every remaining member.
    pub fn remove_member(
        &mut self,
        member: &IdentityPublicKey,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<GroupKeyShare, GroupError> {
        if member == &self.own || !self.members.contains(member) {
            return Err(GroupError::Membership);
        }
        self.members.retain(|m| m != member);
        self.rotate(now_ms, rng)
    }

    /// Adds a member and rotates, so the newcomer cannot read earlier messages. Send the
    /// returned share to every member, the newcomer included.
    pub fn add_member(
        &mut self,
        member: &IdentityPublicKey,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<GroupKeyShare, GroupError> {
        let mut members = self.members.clone();
        members.push(member.clone());
        check_unique_signers(&members)?;
        self.members = members;
        self.rotate(now_ms, rng)
    }

    /// A member's identity changed through a key update the caller verified (the new key
    /// signed by the old one): the member list names `new` instead of `old` from now on (our
    /// own entry too, when `old` is ours), so shares and messages from `new` are accepted.
    /// The key is unchanged; whoever changed rotates it ([`GroupSession::replace_own`]).
    pub fn replace_member(
        &mut self,
        old: &IdentityPublicKey,
        new: &IdentityPublicKey,
    ) -> Result<(), GroupError> {
        if !self.members.contains(old) {
            return Err(GroupError::Membership);
        }
        let members: Vec<IdentityPublicKey> = self
            .members
            .iter()
            .map(|m| if m == old { new.clone() } else { m.clone() })
            .collect();
        check_unique_signers(&members)?;
        self.members = members;
        if &self.own == old {
            self.own = new.clone();
        }
        Ok(())
    }

    /// Our identity changed (a key update): our entry becomes `new` and the key rotates.
    /// Send the returned share to every other member.
    pub fn replace_own(
        &mut self,
        new: &IdentityPublicKey,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<GroupKeyShare, GroupError> {
        let old = self.own.clone();
        self.replace_member(&old, new)?;
        self.rotate(now_ms, rng)
    }

    /// Encrypts and signs a group message.
    pub fn encrypt(
        &mut self,
        identity: &IdentityKeyPair,
        now_ms: u64,
        plaintext: &[u8],
    ) -> Result<GroupMessage, GroupError> {
        if identity.public() != &self.own {
            return Err(GroupError::NotAMember);
        }
        if self.needs_rotation(now_ms) {
            return Err(GroupError::RotationRequired);
        }
        if plaintext.len() > crate::ratchet::MAX_MESSAGE_LEN {
            return Err(GroupError::Encrypt);
        }
        let n = self.sent;
        let ad = associated_data(&self.group_id, &self.own, now_ms);
        let (key, nonce) = aead_parts(&self.key, n, &self.own.to_bytes());
        let ct = aead_seal(&key, &nonce, &ad, plaintext).map_err(|_| GroupError::Encrypt)?;
        let mut msg = GroupMessage {
            gid: self.group_id,
            epoch: self.epoch,
            from: self.own.signing_key_bytes(),
            n,
            ts: now_ms,
            ct,
            sig: [0u8; SIGNATURE_LEN],
        };
        let head = msg.signed_head();
        msg.sig = identity
            .sign(ctx::GROUP_MESSAGE, &[&head, &ad, &msg.ct])
            .map_err(|_| GroupError::Encrypt)?;
        self.sent += 1;
        Ok(msg)
    }

    /// Verifies and decrypts a group message; returns the sender and the plaintext.
    ///
    /// The sender must be a current member (a removed member is refused at once, under any
    /// key); the message may be under the current key or a retired one of its epoch. The key
    /// age is not checked here: timestamps are the sender's, and a message queued for days
    /// must still open.
    pub fn decrypt(
        &mut self,
        msg: &GroupMessage,
    ) -> Result<(IdentityPublicKey, Zeroizing<Vec<u8>>), GroupError> {
        if msg.gid != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        let sender = self
            .members
            .iter()
            .find(|m| m.signing_key_bytes() == msg.from)
            .ok_or(GroupError::NotAMember)?
            .clone();
        if msg.n >= MAX_MESSAGES_PER_KEY {
            return Err(GroupError::MessageNumberOutOfRange);
        }
        let current = (msg.epoch == self.epoch).then_some((&self.key, &mut self.seen));
        let retired = self
            .retired
            .iter_mut()
            .rev()
            .filter(|k| k.epoch == msg.epoch)
            .map(|k| (&k.key, &mut k.seen));
        let mut candidates = current.into_iter().chain(retired).peekable();
        if candidates.peek().is_none() {
            return Err(GroupError::UnknownEpoch(msg.epoch));
        }
        let ad = associated_data(&self.group_id, &sender, msg.ts);
        let head = msg.signed_head();
        sender
            .verify(
                ctx::GROUP_MESSAGE,
                &[&head, &ad, &msg.ct],
                &msg.sig,
                "group message",
            )
            .map_err(|_| GroupError::BadSignature)?;
        let sender_ik = sender.to_bytes();
        for (key, seen) in candidates {
            let (aead_key, nonce) = aead_parts(key, msg.n, &sender_ik);
            if let Ok(plaintext) = aead_open(&aead_key, &nonce, &ad, &msg.ct) {
                if !seen.entry(msg.from).or_default().insert(msg.n) {
                    return Err(GroupError::Duplicate);
                }
                return Ok((sender, plaintext));
            }
        }
        Err(GroupError::Decryption)
    }

    /// Seals the group state for storage.
    pub fn seal(
        &self,
        key: &PasswordKey,
        rng: &mut impl CryptoRng,
    ) -> Result<SealedBlob, SealError> {
        let stored = StoredGroup {
            share: self.share(),
            own: self.own.to_wire(),
            by: self.rotated_by,
            sent: self.sent,
            seen: stored_seen(&self.seen),
            retired: self
                .retired
                .iter()
                .map(|k| StoredRetired {
                    epoch: k.epoch,
                    key: *k.key,
                    seen: stored_seen(&k.seen),
                })
                .collect(),
        };
        let bytes = Zeroizing::new(wire::encode_with_capacity(
            &stored,
            1024 + self.members.len() * 900 + (self.retired.len() + 1) * 8192,
        ));
        SealedBlob::seal(key, BlobKind::Group, &bytes, rng)
    }

    /// Opens a sealed group state.
    pub fn open(blob: &SealedBlob, key: &PasswordKey) -> Result<Self, SealError> {
        let bytes = blob.open(key, BlobKind::Group)?;
        let s: StoredGroup = wire::decode(&bytes, usize::MAX).map_err(|_| SealError::Contents)?;
        let members = s
            .share
            .members
            .iter()
            .map(IdentityWire::trusted)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SealError::Contents)?;
        let own = s.own.trusted().map_err(|_| SealError::Contents)?;
        let retired = s
            .retired
            .iter()
            .map(|k| {
                Ok(RetiredKey {
                    epoch: k.epoch,
                    key: Zeroizing::new(k.key),
                    seen: seen_from_stored(&k.seen)?,
                })
            })
            .collect::<Result<VecDeque<_>, SealError>>()?;
        if s.sent > MAX_MESSAGES_PER_KEY
            || retired.len() > MAX_RETIRED_KEYS
            || !members.contains(&own)
            || check_unique_signers(&members).is_err()
        {
            return Err(SealError::Contents);
        }
        Ok(Self {
            group_id: s.share.gid,
            epoch: s.share.epoch,
            key: Zeroizing::new(s.share.key),
            created_at: s.share.at,
            rotated_by: s.by,
            own,
            members,
            sent: s.sent,
            seen: seen_from_stored(&s.seen)?,
            retired,
        })
    }

    #[cfg(test)]
    pub(crate) fn force_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
    }
}

fn stored_seen(seen: &Seen) -> Vec<StoredSeen> {
    seen.iter()
        .map(|(from, ns)| StoredSeen {
            from: *from,
            n: ns.iter().copied().collect(),
        })
        .collect()
}

/// `seen` lists senders by ascending Ed448 key and, for each, ascending numbers below the
/// per-key limit; anything else is not a state this code writes.
fn seen_from_stored(stored: &[StoredSeen]) -> Result<Seen, SealError> {
    let senders_ascending = stored.windows(2).all(|w| w[0].from < w[1].from);
    let numbers_ascending = stored.iter().all(|e| {
        e.n.windows(2).all(|w| w[0] < w[1]) && e.n.last().is_none_or(|n| *n < MAX_MESSAGES_PER_KEY)
    });
    if !senders_ascending || !numbers_ascending {
        return Err(SealError::Contents);
    }
    Ok(stored
        .iter()
        .map(|e| (e.from, e.n.iter().copied().collect()))
        .collect())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGroup {
    share: GroupKeyShare,
    own: IdentityWire,
    #[serde(with = "wire::fixed")]
    by: [u8; SIGNING_PUBLIC_LEN],
    sent: u32,
    seen: Vec<StoredSeen>,
    retired: Vec<StoredRetired>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct StoredRetired {
    epoch: u32,
    #[serde(with = "wire::fixed")]
    key: [u8; 32],
    #[zeroize(skip)]
    seen: Vec<StoredSeen>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSeen {
    #[serde(with = "wire::fixed")]
    from: [u8; SIGNING_PUBLIC_LEN],
    n: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyStore;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// `from` names a member by Ed448 key alone, so a member list in which two identities
    /// share one (the same signing key bound to two X448 keys) is refused everywhere.
    #[test]
    fn two_identities_with_one_signing_key_are_refused() {
        let mut r = ChaCha20Rng::seed_from_u64(41);
        let a = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
        let seed = [3u8; 57];
        let twin1 = IdentityKeyPair::from_secret_parts(&seed, &[4u8; 56]).unwrap();
        let twin2 = IdentityKeyPair::from_secret_parts(&seed, &[5u8; 56]).unwrap();
        assert_ne!(twin1.public(), twin2.public());
        let (t1, t2) = (twin1.public().clone(), twin2.public().clone());
        assert_eq!(
            GroupSession::create(a.identity_public(), &[t1.clone(), t2.clone()], 0, &mut r)
                .unwrap_err(),
            GroupError::Membership
        );
        let mut g =
            GroupSession::create(a.identity_public(), core::slice::from_ref(&t1), 0, &mut r)
                .unwrap();
        assert_eq!(
            g.add_member(&t2, 1, &mut r).unwrap_err(),
            GroupError::Membership
        );
        assert_eq!(g.epoch(), 0, "a refused add changes nothing");
        let mut share = g.share();
        share.members.push(t2.to_wire());
        assert_eq!(
            GroupSession::join(&share, &t1, a.identity_public()).unwrap_err(),
            GroupError::Membership
        );
    }

    /// Even told the new epoch number, a removed member's old key cannot open new messages.
    #[test]
    fn removed_member_cannot_decrypt_even_with_forged_epoch() {
        let mut r = ChaCha20Rng::seed_from_u64(40);
        let a = KeyStore::generate(&mut r).unwrap();
        let b = KeyStore::generate(&mut r).unwrap();
        let c = KeyStore::generate(&mut r).unwrap();
        let mut ga = GroupSession::create(
            a.identity_public(),
            &[b.identity_public().clone(), c.identity_public().clone()],
            0,
            &mut r,
        )
        .unwrap();
        let share = ga.share();
        let mut gc = GroupSession::join(&share, c.identity_public(), a.identity_public()).unwrap();
        ga.remove_member(c.identity_public(), 1, &mut r).unwrap();
        let msg = ga.encrypt(a.identity(), 2, b"after removal").unwrap();
        assert_eq!(gc.decrypt(&msg).unwrap_err(), GroupError::UnknownEpoch(1));
        gc.force_epoch(1);
        assert_eq!(gc.decrypt(&msg).unwrap_err(), GroupError::Decryption);
    }

    /// A member whose keys changed (a key update) rotates with its new identity; the others,
    /// once they replaced its identity, accept the share and its messages, and refuse
    /// messages signed with the old identity.
    #[test]
    fn a_member_with_updated_keys_rotates_and_the_others_follow() {
        let mut r = ChaCha20Rng::seed_from_u64(42);
        let a = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
        let b = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
        let b2 = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
        let mut ga = GroupSession::create(
            a.identity_public(),
            &[b.identity_public().clone()],
            0,
            &mut r,
        )
        .unwrap();
        let mut gb =
            GroupSession::join(&ga.share(), b.identity_public(), a.identity_public()).unwrap();
        let share = gb.replace_own(b2.identity_public(), 1, &mut r).unwrap();
        assert_eq!(gb.epoch(), 1);
        // Before a learns of the new identity, the share is not from a member.
        assert_eq!(
            ga.apply(&share, b2.identity_public()).unwrap_err(),
            GroupError::NotAMember
        );
        ga.replace_member(b.identity_public(), b2.identity_public())
            .unwrap();
        assert_eq!(
            ga.apply(&share, b2.identity_public()).unwrap(),
            ShareOutcome::Installed
        );
        let msg = gb.encrypt(b2.identity(), 2, b"new keys").unwrap();
        assert_eq!(&ga.decrypt(&msg).unwrap().1[..], b"new keys");
        assert_eq!(
            gb.encrypt(b.identity(), 3, b"old keys").unwrap_err(),
            GroupError::NotAMember
        );
        assert_eq!(
            ga.replace_member(b.identity_public(), b2.identity_public())
                .unwrap_err(),
            GroupError::Membership
        );
    }
}
