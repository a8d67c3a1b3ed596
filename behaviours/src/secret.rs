//! The network secret: 32 random bytes that every member holds and that authenticates gossip.
//!
//! Noise already authenticates *who* sent a frame; the network secret proves the sender was
//! admitted to *this network* (it arrives only inside an accepted Join response).

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the network secret in bytes.
pub const NETWORK_SECRET_LEN: usize = 32;

/// Length of an HMAC-SHA256 tag in bytes.
pub const MAC_LEN: usize = 32;

/// The secret shared by all members of one network.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct NetworkSecret([u8; NETWORK_SECRET_LEN]);

/// Why a network secret could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The text is not 64 hexadecimal digits.
    #[error("network secret must be {} hexadecimal digits", NETWORK_SECRET_LEN * 2)]
    Malformed,
}

impl NetworkSecret {
    /// A fresh secret from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; NETWORK_SECRET_LEN];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    /// Wraps raw bytes (used by tests and by decoding).
    pub fn from_bytes(bytes: [u8; NETWORK_SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Decodes the lowercase hex form stored in `network_state.json`.
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let mut bytes = [0u8; NETWORK_SECRET_LEN];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| SecretError::Malformed)?;
        Ok(Self(bytes))
    }

    /// The lowercase hex form, in a buffer that is wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// HMAC-SHA256 over `domain ‖ body`. The domain separates the kinds of message that share
    /// the key, so a tag made for one kind can never be replayed as another.
    pub fn mac(&self, domain: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.hmac();
        mac.update(domain);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Checks a tag made by [`NetworkSecret::mac`] in constant time.
    pub fn verify(&self, domain: &[u8], body: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.hmac();
        mac.update(domain);
        mac.update(body);
        mac.verify_slice(tag).is_ok()
    }

    /// A 32-byte key for one purpose: `HKDF-SHA256(salt = "constella", ikm = secret,
    /// info = parts concatenated)`.
    pub fn derive_key(&self, info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"constella"), &self.0);
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8,160-byte limit: expansion cannot fail.
        if hkdf.expand_multi_info(info, out.as_mut_slice()).is_err() {
            unreachable!("HKDF output of 32 bytes");
        }
        out
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_redacted_debug() {
        let secret = NetworkSecret::generate();
        let again = NetworkSecret::from_hex(&secret.to_hex()).unwrap();
        assert!(secret == again);
        let shown = format!("{secret:?}");
        assert_eq!(shown, "NetworkSecret(<redacted>)");
        assert!(!shown.contains(&secret.to_hex()[..8]));
    }

    #[test]
    fn malformed_hex_is_refused() {
        assert_eq!(NetworkSecret::from_hex("zz"), Err(SecretError::Malformed));
        assert_eq!(
            NetworkSecret::from_hex(&"ab".repeat(31)),
            Err(SecretError::Malformed)
        );
    }

    #[test]
    fn tags_depend_on_key_domain_and_body() {
        let a = NetworkSecret::from_bytes([1; 32]);
        let b = NetworkSecret::from_bytes([2; 32]);
        let tag = a.mac(b"d1", b"body");
        assert!(a.verify(b"d1", b"body", &tag));
        assert!(!b.verify(b"d1", b"body", &tag));
        assert!(!a.verify(b"d2", b"body", &tag));
        assert!(!a.verify(b"d1", b"bodY", &tag));
        assert!(!a.verify(b"d1", b"body", &tag[..31]));
    }
}
