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

use std::collections::{BTreeMap, BTreeSet};

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
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

fn aead_parts(group_key: &[u8; 32], n: u32, sender: &[u8]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
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
        self.members
            .iter()
            .map(|m| m.verify().map_err(|_| GroupError::Membership))
            .collect()
    }
}

/// Our view of one group: the current key, members, counters and replay state.
pub struct GroupSession {
    group_id: [u8; 32],
    epoch: u32,
    key: Zeroizing<[u8; 32]>,
    created_at: u64,
    own: IdentityPublicKey,
    members: Vec<IdentityPublicKey>,
    sent: u32,
    seen: BTreeMap<[u8; SIGNING_PUBLIC_LEN], BTreeSet<u32>>,
}

impl core::fmt::Debug for GroupSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupSession")
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

// The only secret field, `key`, is `Zeroizing`.
impl ZeroizeOnDrop for GroupSession {}

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
        let mut members = vec![own.clone()];
        for m in others {
            if members.contains(m) {
                return Err(GroupError::Membership);
            }
            members.push(m.clone());
        }
        Ok(Self {
            group_id,
            epoch: 0,
            key,
            created_at: now_ms,
            own: own.clone(),
            members,
            sent: 0,
            seen: BTreeMap::new(),
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
            own: own.clone(),
            members,
            sent: 0,
            seen: BTreeMap::new(),
        })
    }

    /// Applies a rotated key received from the member `from`. Refused if `from` is not a
    /// current member, the epoch does not move forward, or we are no longer a member.
    pub fn apply(
        &mut self,
        share: &GroupKeyShare,
        from: &IdentityPublicKey,
    ) -> Result<(), GroupError> {
        if share.gid != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if !self.members.contains(from) {
            return Err(GroupError::NotAMember);
        }
        if share.epoch <= self.epoch {
            return Err(GroupError::UnknownEpoch(share.epoch));
        }
        let members = share.verified_members()?;
        if !members.contains(&self.own) {
            return Err(GroupError::Membership);
        }
        self.install(share.epoch, Zeroizing::new(share.key), share.at, members);
        Ok(())
    }

    fn install(
        &mut self,
        epoch: u32,
        key: Zeroizing<[u8; 32]>,
        at: u64,
        members: Vec<IdentityPublicKey>,
    ) {
        self.epoch = epoch;
        self.key = key;
        self.created_at = at;
        self.members = members;
        self.sent = 0;
        self.seen.clear();
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

    /// True when we have sent [`MAX_MESSAGES_PER_KEY`] messages under the current key or it is
    /// [`MAX_KEY_AGE_MS`] old.
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
        self.install(epoch, key, now_ms, members);
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
        if self.members.contains(member) {
            return Err(GroupError::Membership);
        }
        self.members.push(member.clone());
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
    pub fn decrypt(
        &mut self,
        msg: &GroupMessage,
    ) -> Result<(IdentityPublicKey, Zeroizing<Vec<u8>>), GroupError> {
        if msg.gid != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if msg.epoch != self.epoch {
            return Err(GroupError::UnknownEpoch(msg.epoch));
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
        if self.seen.get(&msg.from).is_some_and(|s| s.contains(&msg.n)) {
            return Err(GroupError::Duplicate);
        }
        let (key, nonce) = aead_parts(&self.key, msg.n, &sender.to_bytes());
        let plaintext =
            aead_open(&key, &nonce, &ad, &msg.ct).map_err(|_| GroupError::Decryption)?;
        self.seen.entry(msg.from).or_default().insert(msg.n);
        Ok((sender, plaintext))
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
            sent: self.sent,
            seen: self
                .seen
                .iter()
                .map(|(from, ns)| StoredSeen {
                    from: *from,
                    n: ns.iter().copied().collect(),
                })
                .collect(),
        };
        let bytes = Zeroizing::new(wire::encode_with_capacity(
            &stored,
            1024 + self.members.len() * 900,
        ));
        SealedBlob::seal(key, BlobKind::Group, &bytes, rng)
    }

    /// Opens a sealed group state.
    pub fn open(blob: &SealedBlob, key: &PasswordKey) -> Result<Self, SealError> {
        let bytes = blob.open(key, BlobKind::Group)?;
        let s: StoredGroup = wire::decode(&bytes, usize::MAX).map_err(|_| SealError::Contents)?;
        // `seen` lists senders by ascending Ed448 key and, for each, ascending numbers below
        // the per-key limit; `sent` never exceeds that limit.
        let senders_ascending = s.seen.windows(2).all(|w| w[0].from < w[1].from);
        let numbers_ascending = s.seen.iter().all(|e| {
            e.n.windows(2).all(|w| w[0] < w[1])
                && e.n.last().is_none_or(|n| *n < MAX_MESSAGES_PER_KEY)
        });
        if !senders_ascending || !numbers_ascending || s.sent > MAX_MESSAGES_PER_KEY {
            return Err(SealError::Contents);
        }
        let members = s
            .share
            .members
            .iter()
            .map(IdentityWire::trusted)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SealError::Contents)?;
        Ok(Self {
            group_id: s.share.gid,
            epoch: s.share.epoch,
            key: Zeroizing::new(s.share.key),
            created_at: s.share.at,
            own: s.own.trusted().map_err(|_| SealError::Contents)?,
            members,
            sent: s.sent,
            seen: s
                .seen
                .iter()
                .map(|e| (e.from, e.n.iter().copied().collect()))
                .collect(),
        })
    }

    #[cfg(test)]
    pub(crate) fn force_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGroup {
    share: GroupKeyShare,
    own: IdentityWire,
    sent: u32,
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
}
