//! Symmetric chains: `MK = HMAC-SHA512(CK, 0x01)[0..32]`, `CK' = HMAC-SHA512(CK, 0x02)[0..32]`,
//! the constants recommended by the Double Ratchet specification.

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::message_key::MessageKey;
use crate::primitives::hmac_sha512;

/// A chain key and the index of the next message key it yields.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChainKey {
    key: [u8; 32],
    #[zeroize(skip)]
    index: u32,
}

impl core::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChainKey")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self { key, index }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Index of the next message key.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The message key at the current index.
    pub(crate) fn message_key(&self) -> MessageKey {
        let out = hmac_sha512(&self.key, &[&[0x01]]);
        let mut mk = [0u8; 32];
        mk.copy_from_slice(&out[..32]);
        MessageKey::new(mk, self.index)
    }

    /// Steps the chain forward. `None` when the index space is exhausted.
    pub(crate) fn advance(&mut self) -> Option<()> {
        let next = self.index.checked_add(1)?;
        let out = hmac_sha512(&self.key, &[&[0x02]]);
        self.key.copy_from_slice(&out[..32]);
        self.index = next;
        Some(())
    }
}
