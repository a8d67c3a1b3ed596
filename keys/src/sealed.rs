//! Password-derived keys and sealing of secrets at rest (key store, sessions, group state).
//!
//! `encryption_key = Argon2id(password, salt, m, t, p, 32)`. The seed's "iterations=10000"
//! would take several minutes per unlock with 64 MiB of memory (the number fits PBKDF2, not
//! Argon2), so we use RFC 9106's second recommended setting, t = 3, with the seed's m = 64 MiB
//! and p = 4. From `encryption_key` come the login proof (sent instead of the password) and one
//! fresh AEAD key per sealed blob, so no nonce is ever reused under a key.

use core::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::SealError;
use crate::primitives::{aead_open, aead_seal, hkdf_sha512, hmac_sha256, nfc};
use crate::{PROTOCOL_VERSION, wire};

/// Length of the Argon2id salt.
pub const SALT_LEN: usize = 16;
/// Largest sealed blob accepted by the decoder.
pub const MAX_SEALED_LEN: usize = 16 * 1024 * 1024;

/// Argon2id cost parameters. [`KdfParams::PRODUCTION`] is the seed's setting; tests may use
/// cheaper values, and [`SealedBlob::unlock`] refuses blobs below a caller-chosen minimum so
/// that a substituted blob cannot downgrade the cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl KdfParams {
    /// m = 64 MiB, t = 3, p = 4.
    pub const PRODUCTION: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// Largest memory cost accepted (1 GiB), so a hostile blob cannot exhaust memory.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// Largest time cost accepted, so a hostile blob cannot stall an unlock indefinitely.
    pub const MAX_T: u32 = 64;
    /// Largest parallelism accepted.
    pub const MAX_P: u32 = 16;

    /// Validates and builds parameters: `1 ≤ p ≤ 16`, `8·p ≤ m_kib ≤ 1 GiB`, `1 ≤ t ≤ 64`.
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Self, SealError> {
        if p == 0 || p > Self::MAX_P {
            return Err(SealError::InvalidParams("parallelism must be 1..=16"));
        }
        if m_kib < 8 * p || m_kib > Self::MAX_M_KIB {
            return Err(SealError::InvalidParams(
                "memory must be at least 8 KiB per lane and at most 1 GiB",
            ));
        }
        if t == 0 || t > Self::MAX_T {
            return Err(SealError::InvalidParams("iterations must be 1..=64"));
        }
        Ok(Self { m_kib, t, p })
    }

    /// Memory cost in KiB.
    pub fn m_kib(&self) -> u32 {
        self.m_kib
    }
    /// Time cost (passes).
    pub fn t(&self) -> u32 {
        self.t
    }
    /// Parallelism (lanes).
    pub fn p(&self) -> u32 {
        self.p
    }

    /// True if every cost is at least the corresponding cost in `minimum`.
    pub fn at_least(&self, minimum: &KdfParams) -> bool {
        self.m_kib >= minimum.m_kib && self.t >= minimum.t && self.p >= minimum.p
    }

    fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.m_kib.to_be_bytes());
        out[4..8].copy_from_slice(&self.t.to_be_bytes());
        out[8..].copy_from_slice(&self.p.to_be_bytes());
        out
    }
}

/// `encryption_key` derived from a password, with the salt and parameters that produced it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PasswordKey {
    key: [u8; 32],
    #[zeroize(skip)]
    salt: [u8; SALT_LEN],
    #[zeroize(skip)]
    params: KdfParams,
}

impl fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordKey {
    /// `Argon2id(UTF-8(NFC(password)), salt, m, t, p, 32)`. The password is normalised to
    /// Unicode NFC first, so the same password typed on keyboards or systems that compose
    /// accented letters differently (`"ä"` as one code point or as `a` + U+0308) unlocks the
    /// same keys (RFC 8265's OpaqueString does the same). Nothing else is changed: no case
    /// folding, no trimming, no width mapping.
    pub fn derive(
        password: &str,
        salt: [u8; SALT_LEN],
        params: KdfParams,
    ) -> Result<Self, SealError> {
        Self::derive_normalised(nfc(password).as_bytes(), salt, params)
    }

    fn derive_normalised(
        password: &[u8],
        salt: [u8; SALT_LEN],
        params: KdfParams,
    ) -> Result<Self, SealError> {
        let argon_params = Params::new(params.m_kib, params.t, params.p, Some(32))
            .map_err(|_| SealError::InvalidParams("rejected by Argon2"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let mut key = [0u8; 32];
        if argon.hash_password_into(password, &salt, &mut key).is_err() {
            key.zeroize();
            return Err(SealError::Kdf);
        }
        Ok(Self { key, salt, params })
    }

    /// Derives a key under a fresh random salt (registration, or re-sealing after a password
    /// change).
    pub fn generate(
        password: &str,
        params: KdfParams,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, SealError> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        Self::derive(password, salt, params)
    }

    #[cfg(test)]
    pub(crate) fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The salt (sent to the server at registration, public).
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// The Argon2id parameters used.
    pub fn params(&self) -> KdfParams {
        self.params
    }

    /// `auth_key = HKDF-SHA512(ikm = encryption_key, salt = salt, info = "Auth")`, 32 bytes.
    pub(crate) fn auth_key(&self) -> Zeroizing<[u8; 32]> {
        hkdf_sha512::<32>(&self.salt, &self.key, &[b"Auth"])
    }

    /// `HMAC-SHA256(auth_key, "Login")`: what a login sends instead of the password.
    pub fn login_proof(&self) -> LoginProof {
        LoginProof(hmac_sha256(&self.auth_key(), b"Login"))
    }

    /// A check value stored in the blob to tell a wrong password from a tampered blob. It uses
    /// its own label so that the stored value is never the login proof itself.
    pub(crate) fn unlock_check(&self) -> [u8; 32] {
        hmac_sha256(&self.auth_key(), b"PQ4 unlock check")
    }

    /// The per-blob AEAD key:
    /// `HKDF-SHA512(ikm = encryption_key, salt = blob_salt, info = "PQ4 seal" ‖ kind)`.
    pub(crate) fn blob_key(&self, blob_salt: &[u8; 32], kind: BlobKind) -> Zeroizing<[u8; 32]> {
        hkdf_sha512::<32>(blob_salt, &self.key, &[b"PQ4 seal", &[kind as u8]])
    }
}

/// The password proof a login sends. It is a credential, so its `Debug` is redacted and
/// comparison is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LoginProof([u8; 32]);

impl fmt::Debug for LoginProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginProof(<redacted>)")
    }
}

impl LoginProof {
    /// Wraps proof bytes received from a client or stored by a server.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The proof bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Constant-time comparison.
    pub fn verify(&self, expected: &LoginProof) -> bool {
        self.0.ct_eq(&expected.0).into()
    }
}

/// What a sealed blob holds; bound into the AEAD key and associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// A [`crate::KeyStore`].
    KeyStore = 1,
    /// A [`crate::Session`].
    Session = 2,
    /// A [`crate::GroupSession`].
    Group = 3,
    /// A device's message history (the chat client's, CBOR it defines).
    History = 4,
}

/// A sealed blob: `version ‖ CBOR{kind, salt, m, t, p, check, bsalt, ct}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBlob {
    kind: u8,
    #[serde(with = "wire::fixed")]
    salt: [u8; SALT_LEN],
    m: u32,
    t: u32,
    p: u32,
    #[serde(with = "wire::fixed")]
    check: [u8; 32],
    #[serde(with = "wire::fixed")]
    bsalt: [u8; 32],
    #[serde(with = "wire::bytes")]
    ct: Vec<u8>,
}

impl SealedBlob {
    /// Seals `plaintext` under `key`.
    pub fn seal(
        key: &PasswordKey,
        kind: BlobKind,
        plaintext: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Self, SealError> {
        let mut bsalt = [0u8; 32];
        rng.fill_bytes(&mut bsalt);
        let mut blob = SealedBlob {
            kind: kind as u8,
            salt: key.salt,
            m: key.params.m_kib,
            t: key.params.t,
            p: key.params.p,
            check: key.unlock_check(),
            bsalt,
            ct: Vec::new(),
        };
        let aead_key = key.blob_key(&bsalt, kind);
        blob.ct = aead_seal(&aead_key, &[0u8; 12], &blob.header(), plaintext)
            .map_err(|_| SealError::Encrypt)?;
        Ok(blob)
    }

    /// Associated data: `version ‖ kind ‖ salt ‖ m ‖ t ‖ p ‖ check ‖ bsalt` (integers u32 BE).
    pub(crate) fn header(&self) -> Vec<u8> {
        let params = KdfParams {
            m_kib: self.m,
            t: self.t,
            p: self.p,
        };
        [
            &[PROTOCOL_VERSION, self.kind][..],
            &self.salt,
            &params.to_bytes(),
            &self.check,
            &self.bsalt,
        ]
        .concat()
    }

    /// The Argon2id salt.
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// The Argon2id parameters, validated.
    pub fn params(&self) -> Result<KdfParams, SealError> {
        KdfParams::new(self.m, self.t, self.p)
    }

    /// Derives the password key for this blob, refusing parameters below `minimum`.
    pub fn unlock(&self, password: &str, minimum: &KdfParams) -> Result<PasswordKey, SealError> {
        let params = self.params()?;
        if !params.at_least(minimum) {
            return Err(SealError::InvalidParams("below the required minimum"));
        }
        PasswordKey::derive(password, self.salt, params)
    }

    /// Opens the blob. A key for another password is [`SealError::WrongPassword`]; an altered
    /// blob is [`SealError::Tampered`].
    pub fn open(&self, key: &PasswordKey, kind: BlobKind) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if self.kind != kind as u8 {
            return Err(SealError::WrongKind);
        }
        let same_salt: bool = self.salt.ct_eq(&key.salt).into();
        let check_ok: bool = self.check.ct_eq(&key.unlock_check()).into();
        if !same_salt || !check_ok {
            return Err(SealError::WrongPassword);
        }
        let aead_key = key.blob_key(&self.bsalt, kind);
        aead_open(&aead_key, &[0u8; 12], &self.header(), &self.ct).map_err(|_| SealError::Tampered)
    }

    /// Encodes the blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, self.ct.len() + 160)
    }

    /// Decodes a blob (without opening it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        Ok(wire::decode(bytes, MAX_SEALED_LEN)?)
    }
}
