//! The prekey bundle a node publishes so that others can start a session with it.
//!
//! A [`PreKeyBundle`] is untrusted wire data. [`PreKeyBundle::verify`] checks every signature
//! (identity binding, signed prekey, KEM prekey) and parses every key, and only the resulting
//! [`VerifiedBundle`] can be used by [`crate::x3dh::initiate`]: no key is used unverified.

use ml_kem::EncapsulationKey1024;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, KeyError};
use crate::identity::{IdentityPublicKey, IdentityWire};
use crate::prekeys::{KemPreKeyPublic, OneTimePreKeyPublic, SignedPreKeyPublic};
use crate::wire;

/// Largest bundle accepted by the decoder.
pub const MAX_BUNDLE_LEN: usize = 4096;

/// A prekey bundle as carried on the wire: `version ‖ CBOR{ik, spk, opk, kk}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreKeyBundle {
    /// The owner's identity.
    #[serde(rename = "ik")]
    pub identity: IdentityWire,
    /// The signed prekey.
    #[serde(rename = "spk")]
    pub signed_prekey: SignedPreKeyPublic,
    /// An optional one-time prekey.
    #[serde(rename = "opk", deserialize_with = "wire::nullable::deserialize")]
    pub one_time_prekey: Option<OneTimePreKeyPublic>,
    /// The signed ML-KEM-1024 prekey. Not optional: a bundle without it is malformed.
    #[serde(rename = "kk")]
    pub kem_prekey: KemPreKeyPublic,
}

impl PreKeyBundle {
    /// Encodes the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, 2048)
    }

    /// Decodes a bundle. This checks the shape only; call [`PreKeyBundle::verify`] next.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, MAX_BUNDLE_LEN)
    }

    /// Verifies the identity binding, the signed-prekey signature and the KEM-prekey signature,
    /// and parses the ML-KEM key.
    pub fn verify(&self) -> Result<VerifiedBundle, KeyError> {
        let identity = self.identity.verify()?;
        self.signed_prekey.verify(&identity)?;
        let kem_key = self.kem_prekey.verify(&identity)?;
        Ok(VerifiedBundle {
            identity,
            signed_prekey: self.signed_prekey.clone(),
            one_time_prekey: self.one_time_prekey.clone(),
            kem_prekey: self.kem_prekey.clone(),
            kem_key,
        })
    }
}

/// A bundle whose signatures have all been checked.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    pub(crate) identity: IdentityPublicKey,
    pub(crate) signed_prekey: SignedPreKeyPublic,
    pub(crate) one_time_prekey: Option<OneTimePreKeyPublic>,
    pub(crate) kem_prekey: KemPreKeyPublic,
    pub(crate) kem_key: EncapsulationKey1024,
}

impl VerifiedBundle {
    /// The bundle owner's identity.
    pub fn identity(&self) -> &IdentityPublicKey {
        &self.identity
    }

    /// The id of the one-time prekey offered, if any.
    pub fn one_time_prekey_id(&self) -> Option<u32> {
        self.one_time_prekey.as_ref().map(|k| k.id)
    }
}
