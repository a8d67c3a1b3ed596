//! The message envelope and the typed content inside a ratchet message (docs/pq4.md §7).
//!
//! An [`Envelope`] is the unit a client hands the messaging service for one recipient:
//! `version ‖ CBOR{from, init, msg}` — the sender's identity, the [`InitialMessage`] while the
//! sender has not yet heard back (null afterwards), and one [`RatchetMessage`]. The version
//! byte is the envelope's protocol version (seed §21): a decoder refuses any other value with
//! [`DecodeError::UnsupportedVersion`], so a service that serves versions v and v−1 can tell
//! which decoder an envelope needs from its first byte.
//!
//! The plaintext of every ratchet message is a [`Content`]: one content-type byte then the
//! body. The type is inside the encryption, so the serving node cannot tell a chat message
//! from a group key share, and it is authenticated with the message, so a chat text can never
//! be taken for a key share or the other way round.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{DecodeError, EnvelopeError};
use crate::group::GroupKeyShare;
use crate::identity::{IDENTITY_LEN, IdentityKeyPair, IdentityPublicKey};
use crate::key_update::KeyUpdate;
use crate::ratchet::{MAX_MESSAGE_LEN, MAX_WIRE_LEN, RatchetMessage, Session};
use crate::wire;
use crate::x3dh::{InitialMessage, MAX_INITIAL_MESSAGE_LEN};

/// Largest envelope accepted by the decoder, version byte included.
pub const MAX_ENVELOPE_LEN: usize = MAX_WIRE_LEN + MAX_INITIAL_MESSAGE_LEN;
/// Largest ratchet ciphertext inside an envelope: the largest plaintext and the AEAD tag.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_MESSAGE_LEN + 16;

/// One message for one recipient: `version ‖ CBOR{from, init, msg}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(with = "wire::fixed")]
    from: [u8; IDENTITY_LEN],
    #[serde(deserialize_with = "wire::nullable::deserialize")]
    init: Option<InitialMessage>,
    msg: RatchetMessage,
}

impl Envelope {
    /// Wraps an encrypted message. `initial` is the handshake message the sender attaches to
    /// every message until it has decrypted one from the recipient.
    pub fn new(
        sender: &IdentityPublicKey,
        initial: Option<InitialMessage>,
        message: RatchetMessage,
    ) -> Self {
        Self {
            from: sender.to_bytes(),
            init: initial,
            msg: message,
        }
    }

    /// Encrypts `content` in `session` (ours with the recipient) and wraps it.
    pub fn seal(
        session: &mut Session,
        identity: &IdentityKeyPair,
        initial: Option<&InitialMessage>,
        timestamp: u64,
        content: &Content,
    ) -> Result<Self, EnvelopeError> {
        let message = session.encrypt(identity, timestamp, &content.to_bytes())?;
        Ok(Self::new(identity.public(), initial.cloned(), message))
    }

    /// Decrypts the message in `session` — the session with the sender, created from
    /// [`Envelope::initial`] through [`crate::x3dh::respond`] if there was none — and decodes
    /// its content. A content that does not decode is an error after the ratchet has moved
    /// on: the message is consumed either way, as a message that failed to decrypt is not.
    pub fn open(
        &self,
        session: &mut Session,
        rng: &mut impl CryptoRng,
    ) -> Result<Content, EnvelopeError> {
        if session.remote_identity().to_bytes() != self.from {
            return Err(EnvelopeError::WrongSession);
        }
        let plaintext = session.decrypt(&self.msg, rng)?;
        Ok(Content::from_bytes(&plaintext)?)
    }

    /// The sender's identity bytes (`ed448 ‖ x448`, 113 bytes): which session to use.
    pub fn sender(&self) -> &[u8; IDENTITY_LEN] {
        &self.from
    }

    /// The handshake message, while the sender has not heard back from us.
    pub fn initial(&self) -> Option<&InitialMessage> {
        self.init.as_ref()
    }

    /// The ratchet message.
    pub fn message(&self) -> &RatchetMessage {
        &self.msg
    }

    /// Encodes the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, self.msg.ciphertext().len() + 2560)
    }

    /// Decodes an envelope: shape, and that `from` is the initial message's initiator and the
    /// ciphertext fits the plaintext limit. Signatures are checked by [`Envelope::open`] and
    /// [`crate::x3dh::respond`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Self = wire::decode(bytes, MAX_ENVELOPE_LEN)?;
        if let Some(init) = &envelope.init {
            let initiator = [&init.initiator.signing[..], &init.initiator.dh[..]].concat();
            if initiator != envelope.from {
                return Err(DecodeError::InvalidField("from"));
            }
        }
        if envelope.msg.ciphertext().len() > MAX_CIPHERTEXT_LEN {
            return Err(DecodeError::InvalidField("msg"));
        }
        Ok(envelope)
    }
}

/// The content types (the first plaintext byte of every ratchet message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ContentType {
    /// A chat message: UTF-8 text.
    Chat = 1,
    /// A group key share ([`GroupKeyShare`] wire bytes).
    GroupKeyShare = 2,
    /// A key-update notice ([`KeyUpdate`] wire bytes).
    KeyUpdate = 3,
}

/// Content-type numbers reserved for the messaging service (receipts and acknowledgements,
/// device revocation notices); this version refuses them as unknown until their bodies are
/// specified.
pub const RESERVED_CONTENT_TYPES: [u8; 2] = [4, 5];

/// The decoded plaintext of a ratchet message. `Debug` shows the type and size, never text.
pub enum Content {
    /// A chat message.
    Chat(Zeroizing<String>),
    /// A new group key and member list.
    GroupKeyShare(GroupKeyShare),
    /// The sender's keys changed (verify it against the identity you trust).
    KeyUpdate(Box<KeyUpdate>),
}

impl core::fmt::Debug for Content {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Content::Chat(text) => write!(f, "Chat(<{} bytes>)", text.len()),
            Content::GroupKeyShare(share) => write!(f, "GroupKeyShare({share:?})"),
            Content::KeyUpdate(_) => f.write_str("KeyUpdate(..)"),
        }
    }
}

impl Content {
    /// A chat message.
    pub fn chat(text: &str) -> Self {
        Content::Chat(Zeroizing::new(text.to_owned()))
    }

    /// The content type.
    pub fn content_type(&self) -> ContentType {
        match self {
            Content::Chat(_) => ContentType::Chat,
            Content::GroupKeyShare(_) => ContentType::GroupKeyShare,
            Content::KeyUpdate(_) => ContentType::KeyUpdate,
        }
    }

    /// `content type (1 byte) ‖ body`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Content::Chat(text) => encode(ContentType::Chat, text.as_bytes()),
            Content::GroupKeyShare(share) => encode(ContentType::GroupKeyShare, &share.to_bytes()),
            Content::KeyUpdate(update) => encode(ContentType::KeyUpdate, &update.to_bytes()),
        }
    }

    /// Decodes a plaintext strictly: a known type, and a body that decodes as that type
    /// (chat text must be UTF-8).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&kind, body) = bytes.split_first().ok_or(DecodeError::Malformed)?;
        match kind {
            k if k == ContentType::Chat as u8 => core::str::from_utf8(body)
                .map(|text| Content::Chat(Zeroizing::new(text.to_owned())))
                .map_err(|_| DecodeError::InvalidField("chat text")),
            k if k == ContentType::GroupKeyShare as u8 => {
                GroupKeyShare::from_bytes(body).map(Content::GroupKeyShare)
            }
            k if k == ContentType::KeyUpdate as u8 => {
                KeyUpdate::from_bytes(body).map(|u| Content::KeyUpdate(Box::new(u)))
            }
            other => Err(DecodeError::UnknownContentType(other)),
        }
    }
}

/// `kind ‖ body` in a buffer sized up front (no reallocation leaves a copy of the body).
pub(crate) fn encode(kind: ContentType, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(1 + body.len()));
    out.push(kind as u8);
    out.extend_from_slice(body);
    out
}
