//! A Double Ratchet session.
//!
//! Every message is `ChaCha20-Poly1305(MK, AD, plaintext)` with
//! `AD = version ‖ sender IK ‖ recipient IK ‖ timestamp (u64 BE) ‖ header`, and is signed by
//! the sender's Ed448 identity over `AD ‖ ciphertext`. The signature is checked before the
//! session state is touched, and the state changes only when decryption succeeds, so a forged
//! or corrupted message can neither advance the ratchet nor fill the skipped-key store.

use std::collections::VecDeque;

use ed448_goldilocks_plus::x448;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::chain::ChainKey;
use super::message_key::MessageKey;
use super::root::RootKey;
use crate::error::{DecodeError, KeyError, RatchetError, SealError};
use crate::identity::{
    DH_PUBLIC_LEN, IDENTITY_LEN, IdentityKeyPair, IdentityPublicKey, IdentityWire, SIGNATURE_LEN,
    ctx,
};
use crate::primitives::{x448_dh, x448_public};
use crate::sealed::{BlobKind, PasswordKey, SealedBlob};
use crate::x3dh::{Role, SessionSecret};
use crate::{PROTOCOL_VERSION, wire};

/// Most message keys one chain may skip in a single step.
pub const MAX_SKIP: u32 = 1000;
/// Most skipped message keys kept in total; beyond it the oldest are evicted.
pub const MAX_SKIPPED_TOTAL: usize = 2000;
/// Largest plaintext accepted by [`Session::encrypt`] (1 MiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Largest encoded message accepted by [`RatchetMessage::from_bytes`].
pub const MAX_WIRE_LEN: usize = MAX_MESSAGE_LEN + 1024;
/// Remote ratchet keys remembered after they are replaced, to refuse replays from old chains
/// (also the most a sealed session may list).
pub const PREVIOUS_REMOTE_KEYS: usize = 64;

/// The ratchet header: the sender's current ratchet key, the length of its previous sending
/// chain, and the message's index in the current chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// Sender's ratchet public key.
    pub dh: [u8; DH_PUBLIC_LEN],
    /// Number of messages in the sender's previous sending chain.
    pub pn: u32,
    /// Index of this message in the current sending chain.
    pub n: u32,
}

impl MessageHeader {
    /// `dh (56) ‖ pn (u32 BE) ‖ n (u32 BE)`.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..56].copy_from_slice(&self.dh);
        out[56..60].copy_from_slice(&self.pn.to_be_bytes());
        out[60..].copy_from_slice(&self.n.to_be_bytes());
        out
    }
}

/// A ratchet message on the wire: `version ‖ CBOR{dh, pn, n, ts, ct, sig}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatchetMessage {
    #[serde(with = "wire::fixed")]
    dh: [u8; DH_PUBLIC_LEN],
    pn: u32,
    n: u32,
    ts: u64,
    #[serde(with = "wire::bytes")]
    ct: Vec<u8>,
    #[serde(with = "wire::fixed")]
    sig: [u8; SIGNATURE_LEN],
}

impl RatchetMessage {
    /// The header.
    pub fn header(&self) -> MessageHeader {
        MessageHeader {
            dh: self.dh,
            pn: self.pn,
            n: self.n,
        }
    }
    /// The sender's timestamp (milliseconds since the Unix epoch), authenticated.
    pub fn timestamp(&self) -> u64 {
        self.ts
    }
    /// The ciphertext (with its 16-byte tag).
    pub fn ciphertext(&self) -> &[u8] {
        &self.ct
    }
    /// The sender's Ed448 signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.sig
    }
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, self.ct.len() + 256)
    }
    /// Decodes a message (shape only; [`Session::decrypt`] authenticates it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, MAX_WIRE_LEN)
    }
}

/// `version ‖ sender IK (113) ‖ recipient IK (113) ‖ timestamp (u64 BE) ‖ header (64)`.
fn associated_data(
    sender: &IdentityPublicKey,
    recipient: &IdentityPublicKey,
    timestamp: u64,
    header: &MessageHeader,
) -> [u8; 1 + 2 * IDENTITY_LEN + 8 + 64] {
    let mut ad = [0u8; 1 + 2 * IDENTITY_LEN + 8 + 64];
    ad[0] = PROTOCOL_VERSION;
    ad[1..114].copy_from_slice(&sender.to_bytes());
    ad[114..227].copy_from_slice(&recipient.to_bytes());
    ad[227..235].copy_from_slice(&timestamp.to_be_bytes());
    ad[235..].copy_from_slice(&header.to_bytes());
    ad
}

#[derive(Clone)]
struct SkippedKey {
    dh: [u8; DH_PUBLIC_LEN],
    key: MessageKey,
}

/// A Double Ratchet session with one peer.
pub struct Session {
    local: IdentityPublicKey,
    remote: IdentityPublicKey,
    root: RootKey,
    dh_self: x448::StaticSecret,
    dh_self_pub: [u8; DH_PUBLIC_LEN],
    dh_remote: Option<[u8; DH_PUBLIC_LEN]>,
    send: Option<ChainKey>,
    recv: Option<ChainKey>,
    pn: u32,
    skipped: VecDeque<SkippedKey>,
    previous_remote: VecDeque<[u8; DH_PUBLIC_LEN]>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

// Every secret field zeroizes itself on drop (RootKey, ChainKey, MessageKey, StaticSecret).
impl ZeroizeOnDrop for Session {}

impl Session {
    /// Starts the ratchet from a handshake. The initiator can send at once; the responder
    /// sends after it has received the initiator's first message.
    pub fn new(handshake: SessionSecret, rng: &mut impl CryptoRng) -> Result<Self, RatchetError> {
        let root = RootKey::new(*handshake.secret);
        match handshake.role {
            Role::Initiator => {
                let remote_ratchet = handshake
                    .remote_ratchet
                    .ok_or(KeyError::InvalidPublicKey("missing remote ratchet key"))?;
                let dh_self = random_x448(rng);
                let (root, send) = root.advance(&*x448_dh(&dh_self, &remote_ratchet)?);
                Ok(Self {
                    local: handshake.local.clone(),
                    remote: handshake.remote.clone(),
                    root,
                    dh_self_pub: x448_public(&dh_self),
                    dh_self,
                    dh_remote: Some(remote_ratchet),
                    send: Some(send),
                    recv: None,
                    pn: 0,
                    skipped: VecDeque::new(),
                    previous_remote: VecDeque::new(),
                })
            }
            Role::Responder => {
                let own = handshake
                    .local_ratchet
                    .as_ref()
                    .ok_or(KeyError::InvalidPublicKey("missing local ratchet key"))?;
                let dh_self = own.clone();
                Ok(Self {
                    local: handshake.local.clone(),
                    remote: handshake.remote.clone(),
                    root,
                    dh_self_pub: x448_public(&dh_self),
                    dh_self,
                    dh_remote: None,
                    send: None,
                    recv: None,
                    pn: 0,
                    skipped: VecDeque::new(),
                    previous_remote: VecDeque::new(),
                })
            }
        }
    }

    /// Our identity.
    pub fn local_identity(&self) -> &IdentityPublicKey {
        &self.local
    }

    /// The peer's identity.
    pub fn remote_identity(&self) -> &IdentityPublicKey {
        &self.remote
    }

    /// One side's identity changed through a key update the caller verified
    /// ([`crate::KeyUpdate::verify`]: the new key signed by the old one): the session
    /// continues under the new identities. Both ends must make the same change, since every
    /// message's associated data names both identities; a message sealed under the old pair
    /// no longer opens after it.
    pub fn rebind(
        &mut self,
        local: Option<&IdentityPublicKey>,
        remote: Option<&IdentityPublicKey>,
    ) {
        if let Some(local) = local {
            self.local = local.clone();
        }
        if let Some(remote) = remote {
            self.remote = remote.clone();
        }
    }

    /// Number of skipped message keys held.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Encrypts and signs `plaintext`. `identity` must be the identity this session belongs
    /// to; `timestamp` is milliseconds since the Unix epoch and is authenticated.
    pub fn encrypt(
        &mut self,
        identity: &IdentityKeyPair,
        timestamp: u64,
        plaintext: &[u8],
    ) -> Result<RatchetMessage, RatchetError> {
        if identity.public() != &self.local {
            return Err(KeyError::InvalidPublicKey("identity does not own this session").into());
        }
        if plaintext.len() > MAX_MESSAGE_LEN {
            return Err(RatchetError::Encrypt);
        }
        let chain = self.send.as_ref().ok_or(RatchetError::NotReadyToSend)?;
        let header = MessageHeader {
            dh: self.dh_self_pub,
            pn: self.pn,
            n: chain.index(),
        };
        let mut next = chain.clone();
        let mk = chain.message_key();
        next.advance().ok_or(RatchetError::CounterExhausted)?;
        let ad = associated_data(&self.local, &self.remote, timestamp, &header);
        let ct = mk.seal(&ad, plaintext).map_err(|_| RatchetError::Encrypt)?;
        let sig = identity.sign(ctx::RATCHET_MESSAGE, &[&ad, &ct])?;
        self.send = Some(next);
        Ok(RatchetMessage {
            dh: header.dh,
            pn: header.pn,
            n: header.n,
            ts: timestamp,
            ct,
            sig,
        })
    }

    /// Verifies, decrypts and advances the ratchet. `rng` supplies our next ratchet key when
    /// the message starts a new chain.
    pub fn decrypt(
        &mut self,
        message: &RatchetMessage,
        rng: &mut impl CryptoRng,
    ) -> Result<Zeroizing<Vec<u8>>, RatchetError> {
        let header = message.header();
        let ad = associated_data(&self.remote, &self.local, message.ts, &header);
        self.remote
            .verify(
                ctx::RATCHET_MESSAGE,
                &[&ad, &message.ct],
                &message.sig,
                "message",
            )
            .map_err(|_| RatchetError::BadSignature)?;

        if let Some(pos) = self
            .skipped
            .iter()
            .position(|s| s.dh == header.dh && s.key.index() == header.n)
        {
            let plaintext = self.skipped[pos]
                .key
                .open(&ad, &message.ct)
                .map_err(|_| RatchetError::Decryption)?;
            self.skipped.remove(pos);
            return Ok(plaintext);
        }

        let mut new_skipped = Vec::new();
        let mut step = None;
        let mut chain = if Some(header.dh) == self.dh_remote {
            self.recv.clone().ok_or(RatchetError::DuplicateOrExpired)?
        } else if self.previous_remote.contains(&header.dh) {
            return Err(RatchetError::DuplicateOrExpired);
        } else {
            if let (Some(recv), Some(old_dh)) = (&self.recv, self.dh_remote) {
                let mut old = recv.clone();
                skip_until(&mut old, header.pn, old_dh, &mut new_skipped)?;
            }
            let (root, recv) = self.root.advance(&*x448_dh(&self.dh_self, &header.dh)?);
            let dh_self = random_x448(rng);
            let (root, send) = root.advance(&*x448_dh(&dh_self, &header.dh)?);
            step = Some((root, dh_self, send));
            recv
        };
        if header.n < chain.index() {
            return Err(RatchetError::DuplicateOrExpired);
        }
        skip_until(&mut chain, header.n, header.dh, &mut new_skipped)?;
        let mk = chain.message_key();
        chain.advance().ok_or(RatchetError::CounterExhausted)?;
        let plaintext = mk
            .open(&ad, &message.ct)
            .map_err(|_| RatchetError::Decryption)?;

        // Commit.
        if let Some((root, dh_self, send)) = step {
            if let Some(old) = self.dh_remote.replace(header.dh) {
                self.previous_remote.push_back(old);
                if self.previous_remote.len() > PREVIOUS_REMOTE_KEYS {
                    self.previous_remote.pop_front();
                }
            }
            self.pn = self.send.as_ref().map_or(0, ChainKey::index);
            self.root = root;
            self.dh_self_pub = x448_public(&dh_self);
            self.dh_self = dh_self;
            self.send = Some(send);
        }
        self.recv = Some(chain);
        self.skipped.extend(new_skipped);
        while self.skipped.len() > MAX_SKIPPED_TOTAL {
            self.skipped.pop_front();
        }
        Ok(plaintext)
    }

    /// Seals the session for storage.
    pub fn seal(
        &self,
        key: &PasswordKey,
        rng: &mut impl CryptoRng,
    ) -> Result<SealedBlob, SealError> {
        let stored = StoredSession {
            local: self.local.to_wire(),
            remote: self.remote.to_wire(),
            root: *self.root.as_bytes(),
            dh_self: self.dh_self.to_bytes(),
            dh_remote: self.dh_remote,
            send: self.send.as_ref().map(StoredChain::from),
            recv: self.recv.as_ref().map(StoredChain::from),
            pn: self.pn,
            skipped: self
                .skipped
                .iter()
                .map(|s| StoredSkipped {
                    dh: s.dh,
                    n: s.key.index(),
                    key: *s.key.as_bytes(),
                })
                .collect(),
            previous: self
                .previous_remote
                .iter()
                .map(|k| ByteBuf::from(k.to_vec()))
                .collect(),
        };
        let capacity = 2048 + stored.skipped.len() * 110 + stored.previous.len() * 60;
        let bytes = Zeroizing::new(wire::encode_with_capacity(&stored, capacity));
        SealedBlob::seal(key, BlobKind::Session, &bytes, rng)
    }

    /// Opens a sealed session.
    pub fn open(blob: &SealedBlob, key: &PasswordKey) -> Result<Self, SealError> {
        let bytes = blob.open(key, BlobKind::Session)?;
        let s: StoredSession = wire::decode(&bytes, usize::MAX).map_err(|_| SealError::Contents)?;
        // Only we write sealed sessions, but a state no session can reach is still refused
        // rather than half-trusted: bounded lists, and no receiving chain without its key.
        if s.skipped.len() > MAX_SKIPPED_TOTAL
            || s.previous.len() > PREVIOUS_REMOTE_KEYS
            || (s.recv.is_some() && s.dh_remote.is_none())
        {
            return Err(SealError::Contents);
        }
        let fixed = |v: &[u8]| -> Result<[u8; 56], SealError> {
            v.try_into().map_err(|_| SealError::Contents)
        };
        let dh_remote = s.dh_remote;
        let dh_self = x448::StaticSecret::from(s.dh_self);
        Ok(Self {
            local: s.local.trusted().map_err(|_| SealError::Contents)?,
            remote: s.remote.trusted().map_err(|_| SealError::Contents)?,
            root: RootKey::new(s.root),
            dh_self_pub: x448_public(&dh_self),
            dh_self,
            dh_remote,
            send: s.send.as_ref().map(|c| ChainKey::new(c.key, c.index)),
            recv: s.recv.as_ref().map(|c| ChainKey::new(c.key, c.index)),
            pn: s.pn,
            skipped: s
                .skipped
                .iter()
                .map(|k| SkippedKey {
                    dh: k.dh,
                    key: MessageKey::new(k.key, k.n),
                })
                .collect(),
            previous_remote: s
                .previous
                .iter()
                .map(|k| fixed(k))
                .collect::<Result<_, _>>()?,
        })
    }

    #[cfg(test)]
    #[allow(dead_code)] // used by the known-answer tests
    pub(crate) fn sending_message_key(&self) -> Option<MessageKey> {
        self.send.as_ref().map(ChainKey::message_key)
    }

    #[cfg(test)]
    #[allow(dead_code)] // used by the known-answer tests
    pub(crate) fn root_key(&self) -> [u8; 32] {
        *self.root.as_bytes()
    }
}

/// Stores the keys from `chain`'s index up to (excluding) `until`, refusing more than
/// `MAX_SKIP` in one step.
fn skip_until(
    chain: &mut ChainKey,
    until: u32,
    dh: [u8; DH_PUBLIC_LEN],
    out: &mut Vec<SkippedKey>,
) -> Result<(), RatchetError> {
    let have = chain.index();
    if until <= have {
        return Ok(());
    }
    let requested = u64::from(until - have);
    if requested > u64::from(MAX_SKIP) {
        return Err(RatchetError::TooManySkipped {
            requested,
            limit: MAX_SKIP,
        });
    }
    while chain.index() < until {
        out.push(SkippedKey {
            dh,
            key: chain.message_key(),
        });
        chain.advance().ok_or(RatchetError::CounterExhausted)?;
    }
    Ok(())
}

fn random_x448(rng: &mut impl CryptoRng) -> x448::StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 56]);
    rng.fill_bytes(bytes.as_mut_slice());
    x448::StaticSecret::from(*bytes)
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct StoredSession {
    #[zeroize(skip)]
    local: IdentityWire,
    #[zeroize(skip)]
    remote: IdentityWire,
    #[serde(with = "wire::fixed")]
    root: [u8; 32],
    #[serde(with = "wire::fixed")]
    dh_self: [u8; 56],
    #[serde(with = "wire::nullable_fixed")]
    dh_remote: Option<[u8; 56]>,
    #[serde(deserialize_with = "wire::nullable::deserialize")]
    send: Option<StoredChain>,
    #[serde(deserialize_with = "wire::nullable::deserialize")]
    recv: Option<StoredChain>,
    pn: u32,
    skipped: Vec<StoredSkipped>,
    previous: Vec<ByteBuf>,
}

/// A public byte string inside stored state.
#[derive(Serialize, Deserialize, Zeroize)]
#[serde(transparent)]
struct ByteBuf(#[serde(with = "wire::bytes")] Vec<u8>);

impl core::ops::Deref for ByteBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for ByteBuf {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct StoredChain {
    #[serde(with = "wire::fixed")]
    key: [u8; 32],
    index: u32,
}

impl From<&ChainKey> for StoredChain {
    fn from(c: &ChainKey) -> Self {
        Self {
            key: *c.as_bytes(),
            index: c.index(),
        }
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct StoredSkipped {
    #[serde(with = "wire::fixed")]
    dh: [u8; 56],
    n: u32,
    #[serde(with = "wire::fixed")]
    key: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KeyError;
    use crate::{KeyStore, x3dh};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Re-signs `message` as `identity` with the header's ratchet key replaced by `dh`.
    fn with_ratchet_key(
        message: &RatchetMessage,
        dh: [u8; 56],
        identity: &IdentityKeyPair,
        recipient: &IdentityPublicKey,
    ) -> RatchetMessage {
        let mut forged = message.clone();
        forged.dh = dh;
        let ad = associated_data(identity.public(), recipient, forged.ts, &forged.header());
        forged.sig = identity
            .sign(ctx::RATCHET_MESSAGE, &[&ad, &forged.ct])
            .unwrap();
        forged
    }

    /// A validly signed message whose ratchet key is a low-order point (u = 0, 1, p − 1, and p,
    /// a non-canonical 0) makes X448 output all zeros: refused as `NonContributory`, on the
    /// first DH step and on a later one, and the session is left as it was.
    #[test]
    fn low_order_ratchet_keys_are_refused() {
        let mut r = ChaCha20Rng::seed_from_u64(70);
        let alice = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
        let mut bob = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
        let bundle = bob.bundle(None).verify().unwrap();
        let (initial, sa) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
        let sb = x3dh::respond(&mut bob, &initial).unwrap();
        let mut a = Session::new(sa, &mut r).unwrap();
        let mut b = Session::new(sb, &mut r).unwrap();
        let mut p = [0xffu8; 56];
        p[28] = 0xfe; // p = 2^448 − 2^224 − 1, little-endian
        let mut one = [0u8; 56];
        one[0] = 1;
        let mut p_minus_one = p;
        p_minus_one[0] = 0xfe;
        let low_order = [[0u8; 56], one, p_minus_one, p];

        // Round 0 is Bob's first DH step, round 1 (Alice's chain after his reply) his second.
        for round in 0..2 {
            let genuine = a.encrypt(alice.identity(), round, b"genuine").unwrap();
            for dh in low_order {
                let forged =
                    with_ratchet_key(&genuine, dh, alice.identity(), bob.identity_public());
                assert_eq!(
                    b.decrypt(&forged, &mut r).unwrap_err(),
                    RatchetError::Key(KeyError::NonContributory)
                );
            }
            assert_eq!(&b.decrypt(&genuine, &mut r).unwrap()[..], b"genuine");
            let reply = b.encrypt(bob.identity(), round, b"reply").unwrap();
            a.decrypt(&reply, &mut r).unwrap();
        }
    }

    /// After a key update both ends rebind the session to the new identity and it carries
    /// on both ways; a message signed with the old identity no longer opens.
    #[test]
    fn a_session_continues_after_both_ends_rebind_to_an_updated_identity() {
        let mut r = ChaCha20Rng::seed_from_u64(71);
        let alice = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
        let mut bob = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
        let bob2 = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
        let bundle = bob.bundle(None).verify().unwrap();
        let (initial, sa) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
        let sb = x3dh::respond(&mut bob, &initial).unwrap();
        let mut a = Session::new(sa, &mut r).unwrap();
        let mut b = Session::new(sb, &mut r).unwrap();
        let m = a.encrypt(alice.identity(), 1, b"before").unwrap();
        b.decrypt(&m, &mut r).unwrap();
        b.rebind(Some(bob2.identity_public()), None);
        assert!(b.encrypt(bob.identity(), 2, b"old key").is_err());
        let reply = b.encrypt(bob2.identity(), 2, b"new key").unwrap();
        assert_eq!(
            a.decrypt(&reply, &mut r).unwrap_err(),
            RatchetError::BadSignature
        );
        a.rebind(None, Some(bob2.identity_public()));
        assert_eq!(&a.decrypt(&reply, &mut r).unwrap()[..], b"new key");
        let m = a.encrypt(alice.identity(), 3, b"after").unwrap();
        assert_eq!(&b.decrypt(&m, &mut r).unwrap()[..], b"after");
    }
}
