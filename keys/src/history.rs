//! Chat history transfer to a new device.
//!
//! `temp_key = HKDF-SHA512(salt = random_salt (32), ikm = master_key, info = "HistoryTransfer")`;
//! the history is sealed with ChaCha20-Poly1305 under `temp_key` (nonce zero: `temp_key` is
//! fresh for every transfer because the salt is), with
//! `AD = version ‖ created_at (u64 BE, ms) ‖ new device id (32)`. A blob opened with another
//! device id, or more than [`TRANSFER_VALIDITY_MS`] away from its creation time (later, or
//! earlier: a sender's clock far ahead must not stretch the window), is refused.
//!
//! The master key is 32 random bytes the old device draws for one transfer
//! ([`HistoryMasterKey::generate`]); it is never derived from the password or the identity,
//! and reaches the new device out of band (a QR code) or inside their pairwise session.

use core::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::HistoryError;
use crate::primitives::{aead_open, aead_seal, hkdf_sha512};
use crate::{PROTOCOL_VERSION, wire};

/// How long a transfer stays valid (one hour, as the seed suggests): it opens while
/// `at − 1 h ≤ now ≤ at + 1 h`.
pub const TRANSFER_VALIDITY_MS: u64 = 60 * 60 * 1000;
/// Length of a device id: 32 random bytes a device draws once, when its data directory is
/// set up, and keeps there.
pub const DEVICE_ID_LEN: usize = 32;
/// Largest sealed history accepted by the decoder (256 MiB).
pub const MAX_HISTORY_LEN: usize = 256 * 1024 * 1024;

/// The transfer master key (shown as a QR code or sent over an end-to-end session).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HistoryMasterKey([u8; 32]);

impl fmt::Debug for HistoryMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HistoryMasterKey(<redacted>)")
    }
}

impl HistoryMasterKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Self(k)
    }
    /// Wraps key bytes received by the new device.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The key bytes, to hand to the new device.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn temp_key(&self, salt: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        hkdf_sha512::<32>(salt, &self.0, &[b"HistoryTransfer"])
    }
}

/// A sealed history: `version ‖ CBOR{salt, at, ct}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedHistory {
    #[serde(with = "wire::fixed")]
    salt: [u8; 32],
    at: u64,
    #[serde(with = "wire::bytes")]
    ct: Vec<u8>,
}

fn associated_data(created_at: u64, device_id: &[u8; DEVICE_ID_LEN]) -> Vec<u8> {
    [
        &[PROTOCOL_VERSION][..],
        &created_at.to_be_bytes(),
        device_id,
    ]
    .concat()
}

impl SealedHistory {
    /// Seals `history` for the device `device_id`, at time `now_ms`.
    pub fn seal(
        master: &HistoryMasterKey,
        device_id: &[u8; DEVICE_ID_LEN],
        history: &[u8],
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, HistoryError> {
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        let key = master.temp_key(&salt);
        let ct = aead_seal(
            &key,
            &[0u8; 12],
            &associated_data(now_ms, device_id),
            history,
        )
        .map_err(|_| HistoryError::Encrypt)?;
        Ok(Self {
            salt,
            at: now_ms,
            ct,
        })
    }

    /// Opens the history on the device `device_id` at time `now_ms`.
    pub fn open(
        &self,
        master: &HistoryMasterKey,
        device_id: &[u8; DEVICE_ID_LEN],
        now_ms: u64,
    ) -> Result<Zeroizing<Vec<u8>>, HistoryError> {
        if now_ms.abs_diff(self.at) > TRANSFER_VALIDITY_MS {
            return Err(HistoryError::Expired);
        }
        let key = master.temp_key(&self.salt);
        aead_open(
            &key,
            &[0u8; 12],
            &associated_data(self.at, device_id),
            &self.ct,
        )
        .map_err(|_| HistoryError::Decryption)
    }

    /// Encodes the blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, self.ct.len() + 128)
    }

    /// Decodes a blob.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HistoryError> {
        Ok(wire::decode(bytes, MAX_HISTORY_LEN)?)
    }
}
