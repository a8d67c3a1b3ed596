//! PQ4: the cryptographic core of Constella.
//!
//! This crate implements the PQ4 protocol as specified in `docs/pq4.md`:
//!
//! * [`store`]: the long-term key store (identity, signed prekey, one-time prekeys, ML-KEM
//!   prekey) and its password-sealed form ([`sealed`]);
//! * [`bundle`]: the signed public prekey bundle another node fetches to start a session;
//! * [`x3dh`]: the hybrid (X448 + ML-KEM-1024) X3DH handshake, separate from the ratchet;
//! * [`ratchet`]: the Double Ratchet that carries signed, encrypted messages;
//! * [`envelope`]: the versioned envelope a client sends (initial message + ratchet message)
//!   and the typed content inside every ratchet message;
//! * [`group`]: group keys, group messages and key rotation;
//! * [`key_update`]: rotation of a user's keys with a chain of custody;
//! * [`oneshot`]: one message sealed to a bundle (hybrid handshake + AEAD, no ratchet);
//! * [`fingerprint`]: human-comparable identity fingerprints;
//! * [`history`]: sealing a chat history for transfer to a new device.
//!
//! The crate performs no I/O. Every function that needs randomness takes
//! `&mut impl CryptoRng` so that tests can inject a seeded generator; production callers pass
//! `&mut rand::rng()`.
//!
//! ```
//! use constella_keys::{Content, Envelope, KeyStore, Session, x3dh};
//!
//! let mut rng = rand::rng();
//! let alice = KeyStore::generate(&mut rng)?;
//! let mut bob = KeyStore::generate(&mut rng)?;
//! // Bob publishes a bundle; Alice verifies every signature in it before using any key.
//! let bundle = bob.bundle(bob.one_time_prekey_ids().first().copied()).verify()?;
//! let (initial, secret) = x3dh::initiate(alice.identity(), &bundle, &mut rng)?;
//! let mut a = Session::new(secret, &mut rng)?;
//! // Until Bob answers, every envelope Alice sends carries the handshake.
//! let hello = Content::chat("hello");
//! let sent = Envelope::seal(&mut a, alice.identity(), Some(&initial), 1_700_000_000_000, &hello)?;
//! // Bob receives `sent.to_bytes()`.
//! let got = Envelope::from_bytes(&sent.to_bytes())?;
//! let handshake = got.initial().expect("first envelope");
//! let mut b = Session::new(x3dh::respond(&mut bob, handshake)?, &mut rng)?;
//! match got.open(&mut b, &mut rng)? {
//!     Content::Chat(text) => assert_eq!(text.as_str(), "hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

pub mod bundle;
pub mod envelope;
pub mod error;
pub mod fingerprint;
pub mod group;
pub mod history;
pub mod identity;
#[cfg(test)]
mod kat;
pub mod key_update;
pub mod oneshot;
pub mod prekeys;
mod primitives;
pub mod ratchet;
pub mod sealed;
pub mod store;
mod wire;
pub mod x3dh;

pub use bundle::{PreKeyBundle, VerifiedBundle};
pub use envelope::{Content, ContentType, Envelope};
pub use error::{
    DecodeError, EnvelopeError, GroupError, HistoryError, KeyError, KeyUpdateError, OneShotError,
    RatchetError, SealError, X3dhError,
};
pub use fingerprint::Fingerprint;
pub use group::{GroupKeyShare, GroupMessage, GroupSession, ShareOutcome};
pub use history::{HistoryMasterKey, SealedHistory};
pub use identity::{IdentityKeyPair, IdentityPublicKey};
pub use key_update::{KeyUpdate, VerifiedKeyUpdate};
pub use ratchet::{RatchetMessage, Session};
pub use sealed::{KdfParams, LoginProof, PasswordKey, SealedBlob};
pub use store::KeyStore;
pub use x3dh::{InitialMessage, SessionSecret};

/// The protocol version carried in every wire message and sealed blob.
pub const PROTOCOL_VERSION: u8 = 1;

#[cfg(test)]
mod secret_hygiene {
    use zeroize::ZeroizeOnDrop;

    fn zeroized_on_drop<T: ZeroizeOnDrop + core::fmt::Debug>() {}

    /// Every type holding secret material is `ZeroizeOnDrop` and has a `Debug` impl (which
    /// the types' own definitions redact; see `redacted_debug`).
    #[test]
    fn secret_types_zeroize_on_drop() {
        zeroized_on_drop::<crate::IdentityKeyPair>();
        zeroized_on_drop::<crate::prekeys::SignedPreKey>();
        zeroized_on_drop::<crate::prekeys::OneTimePreKey>();
        zeroized_on_drop::<crate::prekeys::KemPreKey>();
        zeroized_on_drop::<crate::KeyStore>();
        zeroized_on_drop::<crate::PasswordKey>();
        zeroized_on_drop::<crate::LoginProof>();
        zeroized_on_drop::<crate::SessionSecret>();
        zeroized_on_drop::<crate::Session>();
        zeroized_on_drop::<crate::ratchet::root::RootKey>();
        zeroized_on_drop::<crate::ratchet::chain::ChainKey>();
        zeroized_on_drop::<crate::ratchet::message_key::MessageKey>();
        zeroized_on_drop::<crate::GroupSession>();
        zeroized_on_drop::<crate::GroupKeyShare>();
        zeroized_on_drop::<crate::HistoryMasterKey>();
    }

    #[test]
    fn redacted_debug() {
        let chain = crate::ratchet::chain::ChainKey::new([0xAB; 32], 3);
        let root = crate::ratchet::root::RootKey::new([0xAB; 32]);
        let mk = chain.message_key();
        let history = crate::HistoryMasterKey::from_bytes([0xAB; 32]);
        for text in [
            format!("{chain:?}"),
            format!("{root:?}"),
            format!("{mk:?}"),
            format!("{history:?}"),
        ] {
            assert!(
                !text.contains("ab, ") && !text.contains("171") && !text.contains("abab"),
                "{text}"
            );
        }
    }
}
