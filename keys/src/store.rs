//! The key store: identity, signed prekey, one-time prekeys and the ML-KEM prekey, with its
//! sealed at-rest form.

use std::collections::BTreeMap;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::bundle::PreKeyBundle;
use crate::error::{KeyError, SealError};
use crate::identity::{IdentityKeyPair, IdentityPublicKey, SIGNATURE_LEN};
use crate::prekeys::{KEM_SEED_LEN, KemPreKey, OneTimePreKey, SignedPreKey};
use crate::sealed::{BlobKind, PasswordKey, SealedBlob};
use crate::wire;

/// Number of one-time prekeys generated with a new store.
pub const ONE_TIME_PREKEY_COUNT: u32 = 100;
/// Most one-time prekeys a store holds (and a sealed store may list).
pub const MAX_ONE_TIME_PREKEYS: usize = 1000;
/// Largest unsealed store accepted ([`KeyStore::from_unsealed_bytes`]).
const MAX_UNSEALED_LEN: usize = 1024 + MAX_ONE_TIME_PREKEYS * 200;

/// All private keys of one user.
#[derive(Debug)]
pub struct KeyStore {
    identity: IdentityKeyPair,
    signed_prekey: SignedPreKey,
    one_time_prekeys: BTreeMap<u32, OneTimePreKey>,
    kem_prekey: KemPreKey,
    next_prekey_id: u32,
}

// Every field holding a secret zeroizes itself on drop.
impl ZeroizeOnDrop for KeyStore {}

impl KeyStore {
    /// Generates a new identity with a signed prekey, 100 one-time prekeys and a KEM prekey.
    pub fn generate(rng: &mut impl CryptoRng) -> Result<Self, KeyError> {
        Self::generate_with_one_time_prekeys(ONE_TIME_PREKEY_COUNT as usize, rng)
    }

    /// As [`KeyStore::generate`] with `count` one-time prekeys instead of 100 (for nodes that
    /// hand out few bundles, and for tests: each prekey costs an X448 base-point multiply).
    pub fn generate_with_one_time_prekeys(
        count: usize,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, KeyError> {
        let identity = IdentityKeyPair::generate(rng)?;
        let signed_prekey = SignedPreKey::generate(1, &identity, rng)?;
        let kem_prekey = KemPreKey::generate(1, &identity, rng)?;
        let mut store = Self {
            identity,
            signed_prekey,
            one_time_prekeys: BTreeMap::new(),
            kem_prekey,
            next_prekey_id: 1,
        };
        store.replenish_one_time_prekeys(count, rng);
        Ok(store)
    }

    /// Adds one-time prekeys until `target` (at most [`MAX_ONE_TIME_PREKEYS`]) are available;
    /// ids are never reused.
    pub fn replenish_one_time_prekeys(&mut self, target: usize, rng: &mut impl CryptoRng) {
        let target = target.min(MAX_ONE_TIME_PREKEYS);
        while self.one_time_prekeys.len() < target && self.next_prekey_id < u32::MAX {
            let id = self.next_prekey_id;
            self.next_prekey_id += 1;
            self.one_time_prekeys
                .insert(id, OneTimePreKey::generate(id, rng));
        }
    }

    /// The identity key pair.
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// The identity public key.
    pub fn identity_public(&self) -> &IdentityPublicKey {
        self.identity.public()
    }

    /// Ids of the one-time prekeys not yet used, in ascending order.
    pub fn one_time_prekey_ids(&self) -> Vec<u32> {
        self.one_time_prekeys.keys().copied().collect()
    }

    /// A bundle offering the one-time prekey `opk_id` (or none). An unknown id gives a bundle
    /// without a one-time prekey.
    pub fn bundle(&self, opk_id: Option<u32>) -> PreKeyBundle {
        PreKeyBundle {
            identity: self.identity.public().to_wire(),
            signed_prekey: self.signed_prekey.public().clone(),
            one_time_prekey: opk_id
                .and_then(|id| self.one_time_prekeys.get(&id))
                .map(|k| k.public().clone()),
            kem_prekey: self.kem_prekey.public().clone(),
        }
    }

    pub(crate) fn signed_prekey(&self) -> &SignedPreKey {
        &self.signed_prekey
    }

    pub(crate) fn kem_prekey(&self) -> &KemPreKey {
        &self.kem_prekey
    }

    pub(crate) fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKey> {
        self.one_time_prekeys.get(&id)
    }

    /// Removes a one-time prekey so that it can never be used again.
    pub(crate) fn consume_one_time_prekey(&mut self, id: u32) -> Option<OneTimePreKey> {
        self.one_time_prekeys.remove(&id)
    }

    /// Seals the store under a password key.
    pub fn seal(
        &self,
        key: &PasswordKey,
        rng: &mut impl CryptoRng,
    ) -> Result<SealedBlob, SealError> {
        let stored = self.to_stored();
        // Sized so the encoder never reallocates (which would leave copies of secrets).
        let capacity = 1024 + stored.opks.len() * 80;
        let bytes = zeroize::Zeroizing::new(wire::encode_with_capacity(&stored, capacity));
        SealedBlob::seal(key, BlobKind::KeyStore, &bytes, rng)
    }

    /// Opens a sealed store.
    pub fn open(blob: &SealedBlob, key: &PasswordKey) -> Result<Self, SealError> {
        let bytes = blob.open(key, BlobKind::KeyStore)?;
        let stored: StoredKeys =
            wire::decode(&bytes, usize::MAX).map_err(|_| SealError::Contents)?;
        Self::from_stored(&stored)
    }

    /// The store in the clear (`version ‖ CBOR` of what a sealed store holds), for a host that
    /// protects its keys with file permissions instead of a password: a server's key file, like
    /// its SSH host key. Keep the bytes in the returned zeroizing buffer.
    pub fn to_unsealed_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let stored = self.to_stored();
        let capacity = 1024 + stored.opks.len() * 80;
        zeroize::Zeroizing::new(wire::encode_with_capacity(&stored, capacity))
    }

    /// Reads a store written by [`KeyStore::to_unsealed_bytes`].
    pub fn from_unsealed_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let stored: StoredKeys =
            wire::decode(bytes, MAX_UNSEALED_LEN).map_err(|_| SealError::Contents)?;
        Self::from_stored(&stored)
    }

    fn to_stored(&self) -> StoredKeys {
        let id_secret = self.identity.secret_bytes();
        let mut sign = [0u8; 57];
        sign.copy_from_slice(&id_secret[..57]);
        let mut dh = [0u8; 56];
        dh.copy_from_slice(&id_secret[57..]);
        StoredKeys {
            sign,
            dh,
            spk_id: self.signed_prekey.id(),
            spk: self.signed_prekey.secret().to_bytes(),
            spk_sig: self.signed_prekey.public().signature,
            opks: self
                .one_time_prekeys
                .values()
                .map(|k| StoredOpk {
                    id: k.id(),
                    key: k.secret().to_bytes(),
                    public: k.public().key,
                })
                .collect(),
            kk_id: self.kem_prekey.id(),
            kk: *self.kem_prekey.seed(),
            kk_sig: self.kem_prekey.public().signature,
            next_id: self.next_prekey_id,
        }
    }

    fn from_stored(s: &StoredKeys) -> Result<Self, SealError> {
        // One-time prekeys are listed by ascending id, each id below `next_id`, and no more
        // than a store holds; anything else is not a state this code writes.
        let ascending = s.opks.windows(2).all(|w| w[0].id < w[1].id);
        let below_next = s.opks.iter().all(|o| o.id < s.next_id);
        if !ascending || !below_next || s.opks.len() > MAX_ONE_TIME_PREKEYS {
            return Err(SealError::Contents);
        }
        let identity =
            IdentityKeyPair::from_secret_parts(&s.sign, &s.dh).map_err(|_| SealError::Contents)?;
        let signed_prekey = SignedPreKey::from_stored(s.spk_id, &s.spk, s.spk_sig);
        let kem_prekey = KemPreKey::from_stored(s.kk_id, &s.kk, s.kk_sig);
        let one_time_prekeys = s
            .opks
            .iter()
            .map(|o| (o.id, OneTimePreKey::from_stored(o.id, &o.key, o.public)))
            .collect();
        Ok(Self {
            identity,
            signed_prekey,
            one_time_prekeys,
            kem_prekey,
            next_prekey_id: s.next_id,
        })
    }
}

/// The plaintext inside a sealed key store.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct StoredKeys {
    #[serde(with = "wire::fixed")]
    sign: [u8; 57],
    #[serde(with = "wire::fixed")]
    dh: [u8; 56],
    spk_id: u32,
    #[serde(with = "wire::fixed")]
    spk: [u8; 56],
    #[serde(with = "wire::fixed")]
    spk_sig: [u8; SIGNATURE_LEN],
    opks: Vec<StoredOpk>,
    kk_id: u32,
    #[serde(with = "wire::fixed")]
    kk: [u8; KEM_SEED_LEN],
    #[serde(with = "wire::fixed")]
    kk_sig: [u8; SIGNATURE_LEN],
    next_id: u32,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct StoredOpk {
    id: u32,
    #[serde(with = "wire::fixed")]
    key: [u8; 56],
    /// Stored so that unlocking does not redo 100 X448 base-point multiplications (≈60 ms);
    /// the blob is authenticated, so the stored value is trusted like the secret.
    #[zeroize(skip)]
    #[serde(with = "wire::fixed")]
    public: [u8; 56],
}
