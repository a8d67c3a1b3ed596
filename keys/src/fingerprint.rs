//! Identity fingerprints people compare aloud: `SHA-256(user_id ‖ identity_public_key)`,
//! shown as 12 groups of 5 digits.
//!
//! The identity key is fixed-length (113 bytes) and comes last, so the concatenation with a
//! variable-length user id is unambiguous.

use core::fmt;

use subtle::ConstantTimeEq;

use crate::identity::IdentityPublicKey;
use crate::primitives::{nfc, sha256};

/// A 32-byte identity fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// `SHA-256(UTF-8(NFC(user_id)) ‖ ed448 public ‖ x448 public)`. `user_id` is the
    /// account's username as the messaging service registered it (the `name` in `@name`);
    /// it is normalised to NFC like a password, so both sides compute the same digits however
    /// their systems compose the name.
    pub fn new(user_id: &str, identity: &IdentityPublicKey) -> Self {
        Self(sha256(&[nfc(user_id).as_bytes(), &identity.to_bytes()]))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 60 digits in 12 groups of 5: for i = 0, 1, …, 5 (six chunks; bytes 30 and 31 are not
    /// shown), bytes `5i..5i+5` as a big-endian 40-bit integer, reduced mod 10^10 and written
    /// as 10 zero-padded digits (two groups).
    pub fn digits(&self) -> String {
        let mut groups = Vec::with_capacity(12);
        for chunk in self.0[..30].chunks_exact(5) {
            let mut v: u64 = 0;
            for &b in chunk {
                v = (v << 8) | u64::from(b);
            }
            let v = v % 10_000_000_000;
            groups.push(format!("{:05}", v / 100_000));
            groups.push(format!("{:05}", v % 100_000));
        }
        groups.join(" ")
    }

    /// Constant-time comparison with a fingerprint received out of band.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.digits())
    }
}
