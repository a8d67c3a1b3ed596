//! Thin wrappers over the primitive crates, so every construction in the protocol goes
//! through one audited call site with fixed key and output sizes.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use ed448_goldilocks_plus::x448;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// HKDF-SHA512 with `info` given as a list of concatenated parts.
pub(crate) fn hkdf_sha512<const N: usize>(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
) -> Zeroizing<[u8; N]> {
    const { assert!(N <= 255 * 64) };
    let mut out = Zeroizing::new([0u8; N]);
    let hk = Hkdf::<Sha512>::new(Some(salt), ikm);
    // Cannot fail: HKDF-SHA512 only rejects outputs longer than 255*64 bytes, excluded above.
    let _ = hk.expand_multi_info(info, out.as_mut_slice());
    out
}

/// HMAC-SHA512 keyed with a 32-byte key.
pub(crate) fn hmac_sha512(key: &[u8; 32], data: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    // RFC 2104 pads keys shorter than the block size with zeros; doing it here lets us use the
    // infallible fixed-size constructor.
    let mut padded = Zeroizing::new(hmac::digest::Key::<Hmac<Sha512>>::default());
    padded[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha512> as KeyInit>::new(&padded);
    for part in data {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// HMAC-SHA256 keyed with a 32-byte key.
pub(crate) fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut padded = Zeroizing::new(hmac::digest::Key::<Hmac<Sha256>>::default());
    padded[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&padded);
    mac.update(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// SHA-256 over concatenated parts.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

/// Error from the AEAD: either the input was too long (seal) or authentication failed (open).
#[derive(Debug)]
pub(crate) struct AeadFailure;

/// ChaCha20-Poly1305 seal; the output is ciphertext followed by the 16-byte tag.
pub(crate) fn aead_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, AeadFailure> {
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    cipher
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| AeadFailure)
}

/// ChaCha20-Poly1305 open; the plaintext is returned in a zeroizing buffer.
pub(crate) fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AeadFailure> {
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(
            &(*nonce).into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| AeadFailure)
}

/// Unicode Normalization Form C of `text` (ICU4X), in a buffer that is zeroized on drop and
/// reserved up front so that normalising a password does not leave reallocated copies. NFC
/// can expand a string at most threefold (UAX #15), so the buffer never grows.
pub(crate) fn nfc(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(3 * text.len()));
    // Writing into a String cannot fail.
    let _ = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize_to(text, &mut *out);
    out
}

/// X448 with the low-order check: an all-zero result means the peer's key had low order and
/// would let it force a known shared secret, so it is refused.
pub(crate) fn x448_dh(
    secret: &x448::StaticSecret,
    their_public: &[u8; 56],
) -> Result<Zeroizing<[u8; 56]>, KeyError> {
    let shared = secret.diffie_hellman(&x448::PublicKey::from(*their_public));
    if !shared.was_contributory() {
        return Err(KeyError::NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// An X448 public key from a secret.
pub(crate) fn x448_public(secret: &x448::StaticSecret) -> [u8; 56] {
    x448::PublicKey::from(secret).to_bytes()
}
