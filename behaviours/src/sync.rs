//! The roster sync protocol: two members exchange their member lists and settings directly
//! (push-pull), instead of every node broadcasting its whole list every 30 s.
//!
//! One request-response exchange on `/constella/sync/1.0.0`, CBOR-encoded: the request and the
//! answer are each a [`SyncMessage`]. Only members are answered: the answering node checks the
//! caller's PeerId (proved by noise) against its member list, so the exchange needs no MAC.
//! The core ([`crate::node`]) decides when to sync: every [`Config::sync_interval`] with one
//! random connected member, with a member that (re)subscribes, and with the sender of a valid
//! message from a node it does not know yet.
//!
//! [`Config::sync_interval`]: crate::node::Config::sync_interval

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::request_response;

pub use crate::node::SyncMessage;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/constella/sync/1.0.0");

/// Largest message accepted either way (a member list of a few thousand nodes fits).
pub const MAX_MESSAGE_BYTES: u64 = 1024 * 1024;

/// The answer: our list, or `None` when the caller is not a member.
pub type SyncResponse = Option<SyncMessage>;

/// The request-response behaviour for roster sync.
pub type Behaviour = request_response::cbor::Behaviour<SyncMessage, SyncResponse>;

/// A behaviour that both asks and answers, with bounded frames and `timeout` per exchange.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::bounded_cbor(
        PROTOCOL,
        MAX_MESSAGE_BYTES,
        MAX_MESSAGE_BYTES,
        request_response::Config::default().with_request_timeout(timeout),
    )
}
