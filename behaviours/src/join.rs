//! The Join protocol: a node holding a one-time invite token asks a member to be admitted.
//!
//! One request-response exchange on `/constella/join/1.0.0`, CBOR-encoded. The joiner dials the
//! seed with the seed's PeerId pinned (from the join link), so the noise handshake proves it
//! reached the node that issued the link before the token leaves the joiner.
//!
//! The joiner sends its PQ4 card ([`crate::network_keys::Pq4Card`]); the seed answers the network's
//! secrets ([`JoinSecrets`]) sealed to that card with the hybrid handshake (X448 +
//! ML-KEM-1024, [`crate::network_keys::seal_to`]), in [`JoinAccepted::sealed`]. The plaintext fields
//! for the secrets stay empty, so a recording of the noise (X25519) transport, decrypted
//! later, does not yield them. A seed refuses a request without a card.

use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::gossip::MemberRecord;
use crate::settings::NetworkSettings;

/// The Join protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/constella/join/1.0.0");

/// Largest Join request accepted: a token, a name, an address, a priority and a PQ4 card
/// (about 2.2 KiB, most of it the ML-KEM-1024 key) fit in far less.
pub const MAX_REQUEST_BYTES: u64 = 8 * 1024;
/// Largest Join response accepted (a member list of a few hundred nodes fits).
pub const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// The lowercase hex SHA-256 under which an invite token is kept (the token itself never is).
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// What a joiner sends. `Debug` leaves the token out: a logged request must not hand a
/// reader the invite.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The network id from the join link.
    pub network_id: String,
    /// The one-time token from the join link.
    pub token: String,
    /// The server name the joiner wants.
    pub name: String,
    /// The joiner's public address `host:port`, if it gave one. Otherwise the seed uses the IP
    /// the connection came from and `listen_port`.
    pub addr: Option<String>,
    /// The port the joiner will listen on.
    pub listen_port: u16,
    /// The joiner's leader priority.
    pub priority: u32,
    /// Which step of the join this is. Absent (an older joiner): [`JoinStep::Ask`].
    #[serde(default)]
    pub step: JoinStep,
    /// The joiner's PQ4 card, signed by its node key. Required by seeds that speak PQ4.
    #[serde(default)]
    pub card: Option<crate::network_keys::Pq4Card>,
}

/// The steps of a join. A joiner asks with [`JoinStep::AskThenConfirm`], writes its state when
/// admitted, and sends the same request again with [`JoinStep::Confirm`]; the seed holds the new
/// record back until then and undoes the admission if the confirmation never comes. Older
/// joiners send no step ([`JoinStep::Ask`]) and are admitted for good at once; older seeds
/// ignore the field, and answer a confirmation with [`JoinRefusal::TokenUsed`] (they admitted
/// the joiner already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStep {
    /// Ask, and never confirm (joiners before confirmations existed).
    #[default]
    Ask,
    /// Ask; a confirmation follows once the state is written.
    AskThenConfirm,
    /// The state is written: the admission may stand.
    Confirm,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("network_id", &self.network_id)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("listen_port", &self.listen_port)
            .field("priority", &self.priority)
            .field("step", &self.step)
            .field("card", &self.card)
            .finish()
    }
}

/// What an admitted joiner receives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAccepted {
    /// The network id.
    pub network_id: String,
    /// Empty: the secret travels in [`JoinAccepted::sealed`]. (Older seeds put it here.)
    pub network_secret: String,
    /// Empty: the owner travels in [`JoinAccepted::sealed`].
    pub owner_username: String,
    /// The joiner's own record, as the network now knows it.
    pub record: MemberRecord,
    /// The member list, the joiner included.
    pub members: Vec<MemberRecord>,
    /// The Telegram bot token, if the network has one: every node must be able to host the bot.
    #[serde(default)]
    pub bot_token: Option<String>,
    /// Default: the settings travel in [`JoinAccepted::sealed`].
    #[serde(default)]
    pub settings: NetworkSettings,
    /// [`JoinSecrets`] sealed to the joiner's PQ4 card (CBOR inside a PQ4 one-shot message,
    /// purpose [`crate::network_keys::Purpose::JoinSecrets`]).
    #[serde(default, with = "crate::ids::bytes")]
    pub sealed: Vec<u8>,
}

/// The secrets a seed hands an admitted joiner, sealed to its PQ4 card. `Debug` shows none
/// of them; the secret texts are wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSecrets {
    /// The network secret, lowercase hex.
    pub network_secret: String,
    /// The epoch of that secret (0 until the first rotation).
    pub secret_epoch: u64,
    /// The network tag that names the gossip topic and the DHT ([`crate::network_keys::network_tag`]).
    pub network_tag: String,
    /// The owner's Telegram username, with the leading `@`.
    pub owner_username: String,
    /// The Telegram bot token, if the network has one.
    pub bot_token: Option<String>,
    /// The network settings (owner pin, last Telegram update).
    pub settings: NetworkSettings,
}

impl Drop for JoinSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.network_secret.zeroize();
        if let Some(token) = self.bot_token.as_mut() {
            token.zeroize();
        }
    }
}

impl std::fmt::Debug for JoinSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinSecrets")
            .field("secret_epoch", &self.secret_epoch)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for JoinAccepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinAccepted")
            .field("network_id", &self.network_id)
            .field("network_secret", &"<redacted>")
            .field("owner_username", &self.owner_username)
            .field("members", &self.members.len())
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<redacted>"))
            .field("settings", &self.settings)
            .finish()
    }
}

/// Why a seed refused a join. Each is shown to the joiner's operator as one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    /// No invite with this token was issued by this node.
    #[error("the invite token is not known to this node")]
    UnknownToken,
    /// The invite's TTL has passed.
    #[error("the invite token has expired")]
    ExpiredToken,
    /// Somebody already joined with this token.
    #[error("the invite token was already used")]
    TokenUsed,
    /// The link's network id is not the seed's network.
    #[error("wrong network id: the seed belongs to network {actual}")]
    WrongNetwork {
        /// The seed's network id.
        actual: String,
    },
    /// Another current member has this name.
    #[error("the name {0:?} is already taken by another node")]
    NameTaken(String),
    /// The request itself is unusable (bad name or address).
    #[error("the join request is invalid: {0}")]
    Invalid(String),
    /// The seed could not record the admission (its state file could not be written).
    #[error("the seed could not record the join: {0}")]
    SeedFailure(String),
    /// A confirmation came after the seed had undone the admission (or for a node it never
    /// admitted). Only joiners that confirm ever get this.
    #[error(
        "the seed undid the admission because it was not confirmed in time; join again with the same link"
    )]
    AdmissionUndone,
}

/// The seed's answer.
pub type JoinResponse = Result<JoinAccepted, JoinRefusal>;

/// The request-response behaviour for Join.
pub type Behaviour = request_response::cbor::Behaviour<JoinRequest, JoinResponse>;

/// A Join behaviour with bounded frames and the given timeout.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::bounded_cbor(
        PROTOCOL,
        MAX_REQUEST_BYTES,
        MAX_RESPONSE_BYTES,
        request_response::Config::default().with_request_timeout(timeout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let request = JoinRequest {
            network_id: "abcd".into(),
            token: "0123456789abcdef0123456789abcdef".into(),
            name: "echo-02".into(),
            addr: None,
            listen_port: 4747,
            priority: 100,
            step: JoinStep::AskThenConfirm,
            card: None,
        };
        let text = format!("{request:?}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(
            text.contains("echo-02") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
