//! The Double Ratchet (Perrin & Marlinspike, 2016) on X448, HKDF-SHA512 and HMAC-SHA512, with
//! ChaCha20-Poly1305 messages signed by the sender's Ed448 identity as the seed asks.
//!
//! * [`root`]: the root chain, `KDF_RK`;
//! * [`chain`]: sending and receiving chains, `KDF_CK`;
//! * [`message_key`]: one message key and its AEAD;
//! * [`session`]: the session state, skipped keys, replay refusal, storage.

pub mod chain;
pub mod message_key;
pub mod root;
pub mod session;

pub use session::{
    MAX_MESSAGE_LEN, MAX_SKIP, MAX_SKIPPED_TOTAL, MAX_WIRE_LEN, MessageHeader,
    PREVIOUS_REMOTE_KEYS, RatchetMessage, Session,
};
