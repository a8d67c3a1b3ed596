//! One-shot messages sealed to a prekey bundle: the hybrid X3DH handshake (X448 +
//! ML-KEM-1024) keys one ChaCha20-Poly1305 message, with no ratchet and no reply.
//!
//! This is what a node needs to hand another node a secret it must keep even from someone who
//! recorded the transport and later breaks X25519 (or every elliptic curve): the AEAD key comes
//! from the handshake secret, which depends on the ML-KEM shared secret as well as on four X448
//! exchanges. The recipient learns the sender's identity from the handshake (DH1 uses the
//! sender's identity key), so a sealed message is authenticated as well as confidential.
//!
//! ```text
//! (initial, SK) = x3dh::initiate(sender, bundle)
//! key = HKDF-SHA512(salt = "PQ4 one-shot", ikm = SK, info = context, L = 32)
//! ct  = ChaCha20-Poly1305(key, nonce = 0, aad = context ‖ initial, plaintext)
//! ```
//! The nonce can be fixed because every message has its own key (a fresh ephemeral X448 key
//! and a fresh KEM encapsulation). `context` binds the message to its purpose, so a message
//! sealed for one use cannot be replayed as another.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bundle::VerifiedBundle;
use crate::error::OneShotError;
use crate::identity::{IdentityKeyPair, IdentityPublicKey};
use crate::primitives::{aead_open, aead_seal, hkdf_sha512};
use crate::store::KeyStore;
use crate::wire;
use crate::x3dh::{self, InitialMessage};

/// Largest sealed message accepted by the decoder.
pub const MAX_SEALED_MESSAGE_LEN: usize = 1024 * 1024;

const SALT: &[u8] = b"PQ4 one-shot";

/// A message sealed to one recipient: `version ‖ CBOR{i, ct}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedMessage {
    /// The handshake that keys the message.
    #[serde(rename = "i")]
    initial: InitialMessage,
    /// The ciphertext and its tag.
    #[serde(rename = "ct", with = "wire::bytes")]
    ciphertext: Vec<u8>,
}

impl SealedMessage {
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, 2048 + self.ciphertext.len())
    }

    /// Decodes a message (shape only; [`open`] checks everything else).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OneShotError> {
        Ok(wire::decode(bytes, MAX_SEALED_MESSAGE_LEN)?)
    }

    /// The identity bytes (`ed448 ‖ x448`) of the recipient it is addressed to.
    pub fn recipient(&self) -> &[u8; 113] {
        &self.initial.recipient
    }
}

fn aad(context: &[u8], initial: &InitialMessage) -> Vec<u8> {
    [context, &initial.to_bytes()].concat()
}

/// Seals `plaintext` from `sender` to the owner of `to` for the purpose `context`.
pub fn seal(
    sender: &IdentityKeyPair,
    to: &VerifiedBundle,
    context: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<SealedMessage, OneShotError> {
    let (initial, secret) = x3dh::initiate(sender, to, rng)?;
    let key = hkdf_sha512::<32>(SALT, &secret.secret[..], &[context]);
    let ciphertext = aead_seal(&key, &[0u8; 12], &aad(context, &initial), plaintext)
        .map_err(|_| OneShotError::Encrypt)?;
    Ok(SealedMessage {
        initial,
        ciphertext,
    })
}

/// Opens a message sealed to `store`'s identity for `context`. Returns the sender's verified
/// identity with the plaintext. A message for another identity, for another context, or altered
/// in any byte is refused.
pub fn open(
    store: &mut KeyStore,
    message: &SealedMessage,
    context: &[u8],
) -> Result<(IdentityPublicKey, Zeroizing<Vec<u8>>), OneShotError> {
    let secret = x3dh::respond(store, &message.initial)?;
    let key = hkdf_sha512::<32>(SALT, &secret.secret[..], &[context]);
    let plaintext = aead_open(
        &key,
        &[0u8; 12],
        &aad(context, &message.initial),
        &message.ciphertext,
    )
    .map_err(|_| OneShotError::Tampered)?;
    Ok((secret.remote.clone(), plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn stores() -> (KeyStore, KeyStore, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let a = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        let b = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        (a, b, rng)
    }

    #[test]
    fn round_trip_names_the_sender() {
        let (a, mut b, mut rng) = stores();
        let bundle = b.bundle(None).verify().unwrap();
        let sealed = seal(a.identity(), &bundle, b"ctx", b"the secret", &mut rng).unwrap();
        let again = SealedMessage::from_bytes(&sealed.to_bytes()).unwrap();
        let (sender, plain) = open(&mut b, &again, b"ctx").unwrap();
        assert_eq!(&plain[..], b"the secret");
        assert_eq!(&sender, a.identity_public());
        assert!(!sealed.to_bytes().windows(10).any(|w| w == b"the secret"));
    }

    #[test]
    fn an_unsealed_store_reads_back_and_still_opens() {
        let (a, b, mut rng) = stores();
        let bundle = b.bundle(None).verify().unwrap();
        let sealed = seal(a.identity(), &bundle, b"ctx", b"x", &mut rng).unwrap();
        let mut back = KeyStore::from_unsealed_bytes(&b.to_unsealed_bytes()).unwrap();
        assert_eq!(back.identity_public(), b.identity_public());
        assert_eq!(&open(&mut back, &sealed, b"ctx").unwrap().1[..], b"x");
        assert!(KeyStore::from_unsealed_bytes(b"garbage").is_err());
    }

    #[test]
    fn wrong_context_recipient_or_any_flipped_byte_is_refused() {
        let (a, mut b, mut rng) = stores();
        let bundle = b.bundle(None).verify().unwrap();
        let sealed = seal(a.identity(), &bundle, b"ctx", b"the secret", &mut rng).unwrap();
        assert!(open(&mut b, &sealed, b"other").is_err());
        let mut c = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        assert!(open(&mut c, &sealed, b"ctx").is_err());
        let bytes = sealed.to_bytes();
        for i in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            if let Ok(message) = SealedMessage::from_bytes(&bad) {
                assert!(open(&mut b, &message, b"ctx").is_err(), "byte {i}");
            }
        }
    }
}
