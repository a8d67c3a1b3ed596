//! The root chain: `(RK', CK) = HKDF-SHA512(salt = RK, ikm = DH_out, info = "PQ4 root", 64)`.

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::chain::ChainKey;
use crate::primitives::hkdf_sha512;

const INFO: &[u8] = b"PQ4 root";

/// A 32-byte root key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RootKey([u8; 32]);

impl core::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `KDF_RK`: the first 32 output bytes are the new root key, the last 32 the chain key.
    pub(crate) fn advance(&self, dh_out: &[u8; 56]) -> (RootKey, ChainKey) {
        let out = hkdf_sha512::<64>(&self.0, dh_out, &[INFO]);
        let mut rk = [0u8; 32];
        rk.copy_from_slice(&out[..32]);
        let mut ck = [0u8; 32];
        ck.copy_from_slice(&out[32..]);
        (RootKey(rk), ChainKey::new(ck, 0))
    }
}
