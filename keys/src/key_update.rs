//! User key update (seed §11): a new identity, signed prekey, one-time prekeys and KEM
//! prekey, all signed by the old identity (chain of custody) and by the new one (proof that
//! whoever announces the new identity holds it).
//!
//! Both signatures cover the same transcript:
//! ```text
//! old IK (113) ‖ new IK (113) ‖ new binding signature (114)
//! ‖ spk id (u32 BE) ‖ spk (56) ‖ spk signature (114)
//! ‖ opk count (u32 BE) ‖ { opk id (u32 BE) ‖ opk (56) }*
//! ‖ kk id (u32 BE) ‖ kk (1568) ‖ kk signature (114)
//! ```
//! One-time prekeys are listed by strictly ascending id (the decoder refuses any other
//! order), so the transcript of a given set of keys is unique.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, KeyError, KeyUpdateError};
use crate::identity::{IdentityKeyPair, IdentityPublicKey, IdentityWire, SIGNATURE_LEN, ctx};
use crate::prekeys::{KemPreKeyPublic, OneTimePreKeyPublic, SignedPreKeyPublic};
use crate::store::{KeyStore, ONE_TIME_PREKEY_COUNT};
use crate::wire;

/// Largest key update accepted by the decoder (100 one-time prekeys fit easily).
pub const MAX_KEY_UPDATE_LEN: usize = 64 * 1024;

/// A key update on the wire: `version ‖ CBOR{old, new, spk, opks, kk, old_sig, new_sig}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    old: IdentityWire,
    new: IdentityWire,
    spk: SignedPreKeyPublic,
    opks: Vec<OneTimePreKeyPublic>,
    kk: KemPreKeyPublic,
    #[serde(with = "wire::fixed")]
    old_sig: [u8; SIGNATURE_LEN],
    #[serde(with = "wire::fixed")]
    new_sig: [u8; SIGNATURE_LEN],
}

impl KeyUpdate {
    fn transcript(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(2400 + self.opks.len() * 60);
        for id in [&self.old, &self.new] {
            t.extend_from_slice(&id.signing);
            t.extend_from_slice(&id.dh);
        }
        t.extend_from_slice(&self.new.binding);
        t.extend_from_slice(&self.spk.id.to_be_bytes());
        t.extend_from_slice(&self.spk.key);
        t.extend_from_slice(&self.spk.signature);
        t.extend_from_slice(&(self.opks.len() as u32).to_be_bytes());
        for o in &self.opks {
            t.extend_from_slice(&o.id.to_be_bytes());
            t.extend_from_slice(&o.key);
        }
        t.extend_from_slice(&self.kk.id.to_be_bytes());
        t.extend_from_slice(&self.kk.key[..]);
        t.extend_from_slice(&self.kk.signature);
        t
    }

    /// Generates a new key store (100 one-time prekeys) and the update announcing it, signed
    /// by `old`.
    pub fn create(
        old: &IdentityKeyPair,
        rng: &mut impl CryptoRng,
    ) -> Result<(KeyStore, KeyUpdate), KeyError> {
        Self::create_with_one_time_prekeys(old, ONE_TIME_PREKEY_COUNT as usize, rng)
    }

    /// As [`KeyUpdate::create`] with `count` one-time prekeys. They are listed by ascending id.
    pub fn create_with_one_time_prekeys(
        old: &IdentityKeyPair,
        count: usize,
        rng: &mut impl CryptoRng,
    ) -> Result<(KeyStore, KeyUpdate), KeyError> {
        let new_store = KeyStore::generate_with_one_time_prekeys(count, rng)?;
        let bundle = new_store.bundle(None);
        let mut update = KeyUpdate {
            old: old.public().to_wire(),
            new: bundle.identity,
            spk: bundle.signed_prekey,
            opks: new_store
                .one_time_prekey_ids()
                .into_iter()
                .filter_map(|id| new_store.one_time_prekey(id).map(|k| k.public().clone()))
                .collect(),
            kk: bundle.kem_prekey,
            old_sig: [0u8; SIGNATURE_LEN],
            new_sig: [0u8; SIGNATURE_LEN],
        };
        let t = update.transcript();
        update.old_sig = old.sign(ctx::KEY_UPDATE_OLD, &[&t])?;
        update.new_sig = new_store.identity().sign(ctx::KEY_UPDATE_NEW, &[&t])?;
        Ok((new_store, update))
    }

    /// Verifies the update against the identity we trust for this user.
    pub fn verify(&self, trusted: &IdentityPublicKey) -> Result<VerifiedKeyUpdate, KeyUpdateError> {
        if self.old.signing != trusted.signing_key_bytes() || &self.old.dh != trusted.dh_key_bytes()
        {
            return Err(KeyUpdateError::BrokenChain);
        }
        let t = self.transcript();
        trusted
            .verify(ctx::KEY_UPDATE_OLD, &[&t], &self.old_sig, "key update")
            .map_err(|_| KeyUpdateError::BadOldSignature)?;
        let new = self.new.verify()?;
        new.verify(
            ctx::KEY_UPDATE_NEW,
            &[&t],
            &self.new_sig,
            "key update (new identity)",
        )?;
        self.spk.verify(&new)?;
        self.kk.verify(&new)?;
        Ok(VerifiedKeyUpdate {
            identity: new,
            signed_prekey: self.spk.clone(),
            one_time_prekeys: self.opks.clone(),
            kem_prekey: self.kk.clone(),
        })
    }

    /// The identity this update replaces (as announced; [`KeyUpdate::verify`] checks it).
    pub fn old_identity(&self) -> &IdentityWire {
        &self.old
    }

    /// The identity this update introduces (as announced; [`KeyUpdate::verify`] checks it).
    pub fn new_identity(&self) -> &IdentityWire {
        &self.new
    }

    /// Encodes the update.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, 4096 + self.opks.len() * 70)
    }

    /// Decodes an update (shape, and one-time prekeys by strictly ascending id; call
    /// [`KeyUpdate::verify`] for the signatures).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let update: Self = wire::decode(bytes, MAX_KEY_UPDATE_LEN)?;
        if !update.opks.windows(2).all(|w| w[0].id < w[1].id) {
            return Err(DecodeError::InvalidField("opks"));
        }
        Ok(update)
    }

    #[cfg(test)]
    pub(crate) fn transcript_bytes(&self) -> Vec<u8> {
        self.transcript()
    }
}

/// Follows a chain of updates from a trusted identity; returns the last identity.
pub fn verify_chain(
    trusted: &IdentityPublicKey,
    updates: &[KeyUpdate],
) -> Result<IdentityPublicKey, KeyUpdateError> {
    let mut current = trusted.clone();
    for u in updates {
        current = u.verify(&current)?.identity;
    }
    Ok(current)
}

/// A key update whose signatures all verified.
#[derive(Clone, Debug)]
pub struct VerifiedKeyUpdate {
    identity: IdentityPublicKey,
    signed_prekey: SignedPreKeyPublic,
    one_time_prekeys: Vec<OneTimePreKeyPublic>,
    kem_prekey: KemPreKeyPublic,
}

impl VerifiedKeyUpdate {
    /// The new identity.
    pub fn identity(&self) -> &IdentityPublicKey {
        &self.identity
    }
    /// The new signed prekey.
    pub fn signed_prekey(&self) -> &SignedPreKeyPublic {
        &self.signed_prekey
    }
    /// The new one-time prekeys.
    pub fn one_time_prekeys(&self) -> &[OneTimePreKeyPublic] {
        &self.one_time_prekeys
    }
    /// The new KEM prekey.
    pub fn kem_prekey(&self) -> &KemPreKeyPublic {
        &self.kem_prekey
    }
}
