//! Prekeys: the signed prekey (X448), one-time prekeys (X448) and the ML-KEM-1024 prekey.
//!
//! Both the signed prekey and the KEM prekey are signed by the identity. The seed leaves the
//! KEM key unsigned, which would let whoever relays bundles replace or strip it and so remove
//! the post-quantum half of the handshake without either side noticing.

use core::fmt;

use ed448_goldilocks_plus::x448;
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey1024, EncapsulationKey1024, KeyExport};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::identity::{DH_PUBLIC_LEN, IdentityKeyPair, IdentityPublicKey, SIGNATURE_LEN, ctx};
use crate::primitives::x448_public;

/// Length of an ML-KEM-1024 encapsulation key.
pub const KEM_PUBLIC_LEN: usize = 1568;
/// Length of an ML-KEM-1024 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1568;
/// Length of the ML-KEM seed `d ‖ z` from which the decapsulation key is rebuilt.
pub const KEM_SEED_LEN: usize = 64;

/// A signed X448 prekey with its identity signature.
pub struct SignedPreKey {
    id: u32,
    secret: x448::StaticSecret,
    public: SignedPreKeyPublic,
}

// The secret field zeroizes itself on drop.
impl zeroize::ZeroizeOnDrop for SignedPreKey {}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SignedPreKey {
    /// Generates and signs a new signed prekey.
    pub fn generate(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 56]);
        rng.fill_bytes(bytes.as_mut_slice());
        Self::from_secret(id, &bytes, identity)
    }

    pub(crate) fn from_secret(
        id: u32,
        secret: &[u8; 56],
        identity: &IdentityKeyPair,
    ) -> Result<Self, KeyError> {
        let secret = x448::StaticSecret::from(*secret);
        let key = x448_public(&secret);
        let signature = identity.sign(ctx::SIGNED_PREKEY, &[&id.to_be_bytes(), &key])?;
        Ok(Self {
            id,
            secret,
            public: SignedPreKeyPublic { id, key, signature },
        })
    }

    /// Rebuilds a signed prekey from storage whose signature was made earlier.
    pub(crate) fn from_stored(id: u32, secret: &[u8; 56], signature: [u8; SIGNATURE_LEN]) -> Self {
        let secret = x448::StaticSecret::from(*secret);
        let key = x448_public(&secret);
        Self {
            id,
            secret,
            public: SignedPreKeyPublic { id, key, signature },
        }
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public half with its signature.
    pub fn public(&self) -> &SignedPreKeyPublic {
        &self.public
    }

    pub(crate) fn secret(&self) -> &x448::StaticSecret {
        &self.secret
    }
}

/// The public half of a signed prekey, as carried in bundles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPreKeyPublic {
    /// Prekey id chosen by the owner.
    pub id: u32,
    /// X448 public key.
    #[serde(with = "crate::wire::fixed")]
    pub key: [u8; DH_PUBLIC_LEN],
    /// Ed448 signature by the identity, context `"PQ4 signed prekey"`, over `id (u32 BE) ‖ key`.
    #[serde(rename = "sig", with = "crate::wire::fixed")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedPreKeyPublic {
    /// Verifies the identity's signature.
    pub fn verify(&self, identity: &IdentityPublicKey) -> Result<(), KeyError> {
        identity.verify(
            ctx::SIGNED_PREKEY,
            &[&self.id.to_be_bytes(), &self.key],
            &self.signature,
            "signed prekey",
        )
    }
}

/// A one-time X448 prekey.
pub struct OneTimePreKey {
    id: u32,
    secret: x448::StaticSecret,
    public: OneTimePreKeyPublic,
}

// The secret field zeroizes itself on drop.
impl zeroize::ZeroizeOnDrop for OneTimePreKey {}

impl fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OneTimePreKey {
    /// Generates a one-time prekey.
    pub fn generate(id: u32, rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 56]);
        rng.fill_bytes(bytes.as_mut_slice());
        Self::from_secret(id, &bytes)
    }

    pub(crate) fn from_secret(id: u32, secret: &[u8; 56]) -> Self {
        let secret = x448::StaticSecret::from(*secret);
        let key = x448_public(&secret);
        Self {
            id,
            secret,
            public: OneTimePreKeyPublic { id, key },
        }
    }

    /// Rebuilds a one-time prekey from authenticated storage that also holds its public key.
    pub(crate) fn from_stored(id: u32, secret: &[u8; 56], key: [u8; DH_PUBLIC_LEN]) -> Self {
        Self {
            id,
            secret: x448::StaticSecret::from(*secret),
            public: OneTimePreKeyPublic { id, key },
        }
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public half.
    pub fn public(&self) -> &OneTimePreKeyPublic {
        &self.public
    }

    pub(crate) fn secret(&self) -> &x448::StaticSecret {
        &self.secret
    }
}

/// The public half of a one-time prekey. One-time prekeys are not signed (as in X3DH): a
/// forged one only removes the forward-secrecy bonus of DH4, and the KEM and signed prekey
/// still protect the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneTimePreKeyPublic {
    /// Prekey id chosen by the owner.
    pub id: u32,
    /// X448 public key.
    #[serde(with = "crate::wire::fixed")]
    pub key: [u8; DH_PUBLIC_LEN],
}

/// The ML-KEM-1024 prekey.
pub struct KemPreKey {
    id: u32,
    seed: Zeroizing<[u8; KEM_SEED_LEN]>,
    dk: DecapsulationKey1024,
    public: KemPreKeyPublic,
}

// The seed is `Zeroizing`; ml-kem's `DecapsulationKey` is `ZeroizeOnDrop` (feature `zeroize`).
impl zeroize::ZeroizeOnDrop for KemPreKey {}

impl fmt::Debug for KemPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemPreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KemPreKey {
    /// Generates and signs a KEM prekey.
    pub fn generate(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        rng.fill_bytes(seed.as_mut_slice());
        let (dk, key) = Self::expand(&seed);
        let signature = identity.sign(ctx::KEM_PREKEY, &[&id.to_be_bytes(), &key[..]])?;
        Ok(Self {
            id,
            seed,
            dk,
            public: KemPreKeyPublic { id, key, signature },
        })
    }

    pub(crate) fn from_stored(
        id: u32,
        seed: &[u8; KEM_SEED_LEN],
        signature: [u8; SIGNATURE_LEN],
    ) -> Self {
        let seed = Zeroizing::new(*seed);
        let (dk, key) = Self::expand(&seed);
        Self {
            id,
            seed,
            dk,
            public: KemPreKeyPublic { id, key, signature },
        }
    }

    fn expand(seed: &[u8; KEM_SEED_LEN]) -> (DecapsulationKey1024, Box<[u8; KEM_PUBLIC_LEN]>) {
        let dk = DecapsulationKey1024::from_seed(Array::from(*seed));
        let mut key = Box::new([0u8; KEM_PUBLIC_LEN]);
        key.copy_from_slice(&dk.encapsulation_key().to_bytes());
        (dk, key)
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public half with its signature.
    pub fn public(&self) -> &KemPreKeyPublic {
        &self.public
    }

    pub(crate) fn seed(&self) -> &[u8; KEM_SEED_LEN] {
        &self.seed
    }

    /// Decapsulates; ML-KEM uses implicit rejection, so a wrong ciphertext yields an unrelated
    /// secret (and the handshake then fails at the first message), never an error here.
    pub(crate) fn decapsulate(&self, ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> Zeroizing<[u8; 32]> {
        let ct = Array::from(*ciphertext);
        let ss = self.dk.decapsulate(&ct);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&ss);
        out
    }
}

/// The public half of the KEM prekey, as carried in bundles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KemPreKeyPublic {
    /// Prekey id chosen by the owner.
    pub id: u32,
    /// ML-KEM-1024 encapsulation key.
    #[serde(with = "crate::wire::fixed_box")]
    pub key: Box<[u8; KEM_PUBLIC_LEN]>,
    /// Ed448 signature by the identity, context `"PQ4 KEM prekey"`, over `id (u32 BE) ‖ key`.
    #[serde(rename = "sig", with = "crate::wire::fixed")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl KemPreKeyPublic {
    /// Verifies the identity's signature and parses the key (FIPS 203 input checks).
    pub fn verify(&self, identity: &IdentityPublicKey) -> Result<EncapsulationKey1024, KeyError> {
        identity.verify(
            ctx::KEM_PREKEY,
            &[&self.id.to_be_bytes(), &self.key[..]],
            &self.signature,
            "KEM prekey",
        )?;
        EncapsulationKey1024::new(&Array::from(*self.key))
            .map_err(|_| KeyError::InvalidPublicKey("ML-KEM encapsulation key"))
    }
}
