//! A single message key. The AEAD key and nonce come from it through HKDF, as the Double
//! Ratchet specification recommends, so the nonce is never a counter that could repeat:
//! `key ‖ nonce = HKDF-SHA512(salt = "", ikm = MK, info = "PQ4 message keys", 44)`.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::primitives::{AeadFailure, aead_open, aead_seal, hkdf_sha512};

const INFO: &[u8] = b"PQ4 message keys";

/// A 32-byte message key and its index in its chain.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MessageKey {
    key: [u8; 32],
    #[zeroize(skip)]
    index: u32,
}

impl core::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MessageKey")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl MessageKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self { key, index }
    }

    /// The raw key, for known-answer tests.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Index of this key in its chain.
    pub fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn aead_parts(&self) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
        let okm = hkdf_sha512::<44>(&[], &self.key, &[INFO]);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&okm[..32]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&okm[32..]);
        (key, nonce)
    }

    pub(crate) fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadFailure> {
        let (key, nonce) = self.aead_parts();
        aead_seal(&key, &nonce, ad, plaintext)
    }

    pub(crate) fn open(
        &self,
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AeadFailure> {
        let (key, nonce) = self.aead_parts();
        aead_open(&key, &nonce, ad, ciphertext)
    }
}
