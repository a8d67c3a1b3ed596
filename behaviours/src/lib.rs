//! The libp2p side of Constella: the wire formats and state machines of membership, leader
//! election and join, and [`Behaviour`], the one `NetworkBehaviour` a node's Swarm runs.
//!
//! - [`gossip`]: heartbeats and member lists, authenticated with the network secret.
//! - [`membership`]: who is a member and who is alive, driven by gossip and the clock.
//! - [`leader`]: the total order that picks the leader ("Хост").
//! - [`join`]: the one-time-token admission protocol.
//! - [`settings`]: the bot state every node holds (owner pin, last Telegram update, language).
//! - [`rpc`]: GetPeers, GetStats and Reboot between members.
//!
//! The node's event loop (in the `constella` binary) owns the Swarm and feeds these machines;
//! nothing here does I/O of its own beyond what libp2p does.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod gossip;
pub mod ids;
pub mod join;
pub mod leader;
pub mod membership;
pub mod node;
pub mod rpc;
mod secret;
pub mod settings;
pub mod sim;

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, gossipsub, identify, identity::Keypair, kad, ping};

pub use secret::{NetworkSecret, SecretError};

/// The agent string every node announces through identify.
pub const AGENT_VERSION: &str = concat!("constella/", env!("CARGO_PKG_VERSION"));

/// How long a node waits for an RPC answer. An offline or unreachable target must fail within
/// 5 s of the operator's command; the rest of the 5 s is left for the CLI and control socket.
pub const RPC_TIMEOUT: Duration = Duration::from_millis(4500);

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The network id cannot be part of a protocol name.
    #[error("network id {0:?} cannot be used in a protocol name")]
    NetworkId(String),
    /// The gossipsub configuration was refused.
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
}

/// Everything a Constella node speaks, composed into one `NetworkBehaviour`.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Exchanges agent, protocol version and listen addresses on every connection.
    pub identify: identify::Behaviour,
    /// Measures round trips and notices dead connections.
    pub ping: ping::Behaviour,
    /// Carries heartbeats and member lists.
    pub gossipsub: gossipsub::Behaviour,
    /// Finds members whose addresses changed.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Admits new nodes with one-time tokens.
    pub join: join::Behaviour,
    /// Answers and sends GetPeers, GetStats and Reboot.
    pub rpc: rpc::Behaviour,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// The gossip topic of a network.
pub fn gossip_topic(network_id: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("constella/{network_id}/membership/1"))
}

/// The Kademlia protocol name of a network: nodes of different networks never share a DHT.
pub fn kad_protocol(network_id: &str) -> Result<StreamProtocol, BuildError> {
    StreamProtocol::try_from_owned(format!("/constella/{network_id}/kad/1.0.0"))
        .map_err(|_| BuildError::NetworkId(network_id.to_owned()))
}

/// Gossipsub tuned for networks of 2 to 100 nodes. The mesh bounds are low enough that a 2-node
/// network is a healthy mesh rather than a warning. Publishes go to the mesh, not flooded to every
/// peer: with flooding, every node also received each heartbeat again from each of its mesh peers,
/// and idle CPU per node at 50 nodes was 2.0 % instead of 1.5 % (`benches/scale.rs`). Failure
/// detection does not depend on gossip latency (a closed connection is direct evidence).
fn gossipsub_config() -> Result<gossipsub::Config, BuildError> {
    gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_secs(1))
        .mesh_n(4)
        .mesh_n_low(1)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .gossip_lazy(3)
        .flood_publish(false)
        .max_transmit_size(gossip::MAX_GOSSIP_BYTES)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .build()
        .map_err(|error| BuildError::Gossipsub(error.to_string()))
}

impl Behaviour {
    /// Builds the behaviour of a member of `network_id` (or of a joiner, which passes the id
    /// from its link: it only speaks Join before it is admitted).
    /// `request_timeout` bounds Join exchanges; RPC exchanges are bounded by [`RPC_TIMEOUT`].
    pub fn new(
        key: &Keypair,
        network_id: &str,
        request_timeout: Duration,
    ) -> Result<Self, BuildError> {
        let local = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(
                format!("/constella/{}", gossip::PROTOCOL_VERSION),
                key.public(),
            )
            .with_agent_version(AGENT_VERSION.to_owned()),
        );
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub_config()?,
        )
        .map_err(|error| BuildError::Gossipsub(error.to_owned()))?;
        let mut kad = kad::Behaviour::with_config(
            local,
            kad::store::MemoryStore::new(local),
            kad::Config::new(kad_protocol(network_id)?),
        );
        // A VPS has a public address: serve the DHT from the start instead of waiting for an
        // external address to be confirmed (which kept 3-node networks a star).
        kad.set_mode(Some(kad::Mode::Server));
        Ok(Self {
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            gossipsub,
            kad,
            join: join::behaviour(request_timeout),
            rpc: rpc::behaviour(RPC_TIMEOUT),
        })
    }
}
