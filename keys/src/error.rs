//! One error enum per domain. No variant carries secret bytes: messages name what failed,
//! never the key material involved.

use thiserror::Error;

/// Decoding untrusted wire bytes failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input is larger than any valid message of this type.
    #[error("input too large")]
    TooLarge,
    /// The input is not well-formed CBOR of the expected shape (including wrong field
    /// lengths, missing, duplicate or unknown fields).
    #[error("malformed message")]
    Malformed,
    /// Bytes remain after a complete message.
    #[error("trailing bytes after message")]
    TrailingBytes,
    /// The message carries a protocol version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The CBOR is well formed but outside PQ4's strict subset (non-shortest integer,
    /// indefinite length, tag, …); the payload names what was found.
    #[error("non-canonical encoding: {0}")]
    Noncanonical(&'static str),
    /// A field holds bytes that are not a valid public key or signature encoding, or that
    /// contradict another field.
    #[error("invalid encoding in field `{0}`")]
    InvalidField(&'static str),
    /// A message plaintext names a content type this version does not know (perhaps sent by a
    /// newer client).
    #[error("unknown content type {0}")]
    UnknownContentType(u8),
}

/// A key, signature or Diffie-Hellman result was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    /// A signature did not verify; the payload names what was signed.
    #[error("invalid signature on {0}")]
    BadSignature(&'static str),
    /// A public key encoding is invalid (not on the curve, identity point, wrong length).
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// An X448 exchange produced the all-zero output (low-order peer key).
    #[error("non-contributory Diffie-Hellman result")]
    NonContributory,
    /// Encoding of a value failed (should not happen for well-formed values).
    #[error("encoding failed")]
    Encoding,
}

/// Sealing or unsealing data at rest failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SealError {
    /// The KDF parameters are below the accepted minimums or above the accepted maximums.
    #[error("invalid KDF parameters: {0}")]
    InvalidParams(&'static str),
    /// Argon2id itself refused the input (for example an over-long password).
    #[error("password hashing failed")]
    Kdf,
    /// The password does not match the one the blob was sealed with.
    #[error("wrong password")]
    WrongPassword,
    /// The password matched but the ciphertext failed authentication: the blob was altered.
    #[error("sealed blob was tampered with or corrupted")]
    Tampered,
    /// The blob holds a different kind of object than the caller asked for.
    #[error("sealed blob holds a different kind of object")]
    WrongKind,
    /// The sealed container could not be decoded.
    #[error("sealed blob: {0}")]
    Decode(#[from] DecodeError),
    /// The decrypted contents could not be decoded.
    #[error("sealed contents are malformed")]
    Contents,
    /// Encryption failed (plaintext too long for the AEAD).
    #[error("encryption failed")]
    Encrypt,
}

/// The X3DH handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum X3dhError {
    /// A signature or key in the bundle or initial message was rejected.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The initial message names a signed prekey this store does not hold.
    #[error("unknown signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// The initial message names a KEM prekey this store does not hold.
    #[error("unknown KEM prekey {0}")]
    UnknownKemPreKey(u32),
    /// The one-time prekey was already consumed or never existed; a second use is refused.
    #[error("one-time prekey {0} unknown or already used")]
    OneTimePreKeyUsed(u32),
    /// The initial message is addressed to a different identity.
    #[error("initial message is for another identity")]
    WrongRecipient,
    /// The ML-KEM ciphertext has the wrong length or encoding.
    #[error("invalid ML-KEM ciphertext")]
    InvalidKemCiphertext,
}

/// Sealing or opening a one-shot message ([`crate::oneshot`]) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OneShotError {
    /// The handshake failed (bad bundle, wrong recipient, unknown prekey).
    #[error(transparent)]
    Handshake(#[from] X3dhError),
    /// The message does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The ciphertext does not authenticate (altered, or sealed for another context).
    #[error("sealed message does not authenticate")]
    Tampered,
    /// Encryption failed (should not happen for inputs below the size bound).
    #[error("encryption failed")]
    Encrypt,
}

/// Encrypting or decrypting a Double Ratchet message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RatchetError {
    /// The sender's signature over the message is invalid.
    #[error("invalid message signature")]
    BadSignature,
    /// A peer ratchet key is invalid or produced a non-contributory DH result.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Reaching this message would skip more than `MAX_SKIP` keys in one chain.
    #[error("message skips {requested} keys, more than the limit of {limit}")]
    TooManySkipped {
        /// How many keys the message would skip.
        requested: u64,
        /// The per-chain limit.
        limit: u32,
    },
    /// The message was already decrypted, or its key was evicted: replays are refused.
    #[error("duplicate or expired message")]
    DuplicateOrExpired,
    /// The ciphertext failed authentication.
    #[error("message failed authentication")]
    Decryption,
    /// The sending chain has no key yet (a responder must receive before it sends).
    #[error("session cannot send before receiving the first message")]
    NotReadyToSend,
    /// A message counter would overflow.
    #[error("message counter exhausted")]
    CounterExhausted,
    /// Encryption failed (plaintext too long for the AEAD).
    #[error("encryption failed")]
    Encrypt,
}

/// Sealing or opening an envelope failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// The ratchet refused the message (signature, replay, authentication, …).
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
    /// The message decrypted but its content does not decode; the message is consumed.
    #[error("message content: {0}")]
    Content(#[from] DecodeError),
    /// The session passed is not the one with the envelope's sender.
    #[error("envelope is from another identity than the session's peer")]
    WrongSession,
}

/// A group operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GroupError {
    /// The message is for a different group.
    #[error("message is for another group")]
    WrongGroup,
    /// The message is under a key epoch this member does not hold (for example after removal).
    #[error("unknown group key epoch {0}")]
    UnknownEpoch(u32),
    /// The sender is not a member of the group.
    #[error("sender is not a group member")]
    NotAMember,
    /// The sender's signature is invalid.
    #[error("invalid group message signature")]
    BadSignature,
    /// The ciphertext failed authentication.
    #[error("group message failed authentication")]
    Decryption,
    /// The message number was already seen under this key: replays are refused.
    #[error("duplicate group message")]
    Duplicate,
    /// The current key is due for rotation (message or age limit); rotate before sending.
    #[error("group key must be rotated before sending")]
    RotationRequired,
    /// The key share is older than the previous epoch: it can neither become the current key
    /// nor be needed to read messages still in flight.
    #[error("group key share for epoch {0} is stale")]
    StaleShare(u32),
    /// The message number is beyond the per-key limit.
    #[error("message number beyond the per-key limit")]
    MessageNumberOutOfRange,
    /// A member to remove or add is unknown or already present.
    #[error("membership change refers to an unknown or duplicate member")]
    Membership,
    /// A key share could not be decoded.
    #[error("group key share: {0}")]
    Decode(#[from] DecodeError),
    /// Encryption failed (plaintext too long for the AEAD).
    #[error("encryption failed")]
    Encrypt,
}

/// A user key update failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyUpdateError {
    /// The update is not signed by the identity key it claims to replace.
    #[error("update is not signed by the previous identity key")]
    BadOldSignature,
    /// The update replaces a different identity than the one trusted.
    #[error("update does not follow from the trusted identity")]
    BrokenChain,
    /// A key inside the new bundle was rejected.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Sealing or opening a history transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HistoryError {
    /// Authentication failed: wrong transfer key, wrong device id, or a tampered blob.
    #[error("history blob failed authentication (wrong key, device or tampered)")]
    Decryption,
    /// The transfer is more than its validity period away from now (expired, or dated ahead
    /// by a clock that is wrong).
    #[error("history transfer expired")]
    Expired,
    /// The blob could not be decoded.
    #[error("history blob: {0}")]
    Decode(#[from] DecodeError),
    /// Encryption failed (plaintext too long for the AEAD).
    #[error("encryption failed")]
    Encrypt,
}
