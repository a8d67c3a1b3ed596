//! Constella's protocol: the wire formats, the sans-I/O core that holds every rule of a node,
//! its simulator, and [`Behaviour`], the one `NetworkBehaviour` a node's Swarm runs.
//!
//! - [`node`]: the protocol core: `Node::handle(now, Input) -> Outputs`, no I/O.
//! - [`beat`]: heartbeats straight to each member over its open connection.
//! - [`dht`]: Kademlia, quiet while it knows no peer.
//! - [`gossip`]: heartbeats and member lists, authenticated with the network secret.
//! - [`membership`]: who is a member and who is alive, driven by gossip and the clock.
//! - [`sync`]: pairwise member-list exchange.
//! - [`leader`]: the total order that picks the leader ("Хост").
//! - [`join`]: the one-time-token admission protocol.
//! - [`settings`]: the bot state every node holds (owner pin, last Telegram update, language).
//! - [`pq4`]: node cards, fingerprints, the gossip key and secrets sealed node to node.
//! - [`rpc`]: GetPeers, GetStats and Reboot between members.
//! - [`pq4`]: the PQ4 messaging service (accounts, bundles, replicated mailboxes).
//!
//! The node's event loop (in the `constella` binary) owns the Swarm, feeds [`node::Node`] and
//! carries out what it answers; nothing here does I/O of its own beyond what libp2p does.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod alerts;
pub mod beat;
pub mod dht;
pub mod gossip;
pub mod health;
pub mod ids;
pub mod join;
pub mod leader;
pub mod membership;
pub mod nat;
pub mod network_keys;
pub mod node;
pub mod pq4;
pub mod pq4_devices;
pub mod pq4_groups;
pub mod pq4_history;
pub mod rpc;
mod secret;
pub mod settings;
pub mod sim;
pub mod sync;
pub mod table;

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, identity::Keypair,
    ping, relay,
};

pub use secret::{NetworkSecret, SecretError};

/// The agent string every node announces through identify.
pub const AGENT_VERSION: &str = concat!("constella/", env!("CARGO_PKG_VERSION"));

/// How long a node waits for an RPC answer. An offline or unreachable target must fail within
/// 5 s of the operator's command; the rest of the 5 s is left for the CLI and control socket.
pub const RPC_TIMEOUT: Duration = Duration::from_millis(4500);

/// A dial (TCP, noise and yamux) that has not completed by then fails, and so does an
/// incoming connection's handshake (the daemon's transport timeout; the simulator's
/// `NetConfig::dial_timeout` defaults to it). Without a bound a dial into a partition waits on
/// TCP's SYN retransmissions (1, 3, 7, 15 s…), so the first dial after a heal could come tens
/// of seconds late; bounded, the core's short redial backoff reconnects within seconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often each connection is pinged. A connection that stops answering within
/// [`PING_TIMEOUT`] is closed and redialled (`node::Input::PingFailed`): TCP alone would keep
/// a dead connection for many seconds of retransmissions. A failed ping never marks a member
/// offline by itself (heartbeat silence does), so a lossy link costs a reconnect at most.
/// Rare, because a member's heartbeats now come over its connection itself ([`beat`]): a
/// connection that stops carrying them is closed by the silence rule within 2.5 s, so ping
/// only watches connections heartbeats do not use. Every 2 s, it was half the frames an
/// idle connection carried.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// See [`PING_INTERVAL`]: at 20 % loss a ping misses this bound (five segment losses in a row)
/// about once in 3,000.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The network tag cannot be part of a protocol name.
    #[error("network tag {0:?} cannot be used in a protocol name")]
    NetworkId(String),
    /// The gossipsub configuration was refused.
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
}

/// Connections still in the TCP + noise + yamux upgrade that a remote opened. The upgrade of
/// a connection that never completes its handshake takes up to 10 s, so without a bound a
/// stranger opening sockets in a loop holds a descriptor for each; beyond this bound new ones
/// are closed at once.
pub const MAX_PENDING_INCOMING: u32 = 128;
/// Connections this node is dialling at once (one per member it is not connected to).
pub const MAX_PENDING_OUTGOING: u32 = 512;
/// Established connections that remotes opened.
pub const MAX_ESTABLISHED_INCOMING: u32 = 1024;
/// Established connections this node opened.
pub const MAX_ESTABLISHED_OUTGOING: u32 = 1024;
/// Established connections in all: members keep one each (two for a moment when both sides
/// dial at once), joiners and strangers a short-lived one.
pub const MAX_ESTABLISHED_TOTAL: u32 = 1536;
/// Established connections to one peer: one is enough, a simultaneous dial from both sides
/// makes two, and a restart may briefly overlap the old connection.
pub const MAX_ESTABLISHED_PER_PEER: u32 = 4;

/// The connection limits above, as the Swarm enforces them.
pub fn connection_limits() -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING))
        .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
        .with_max_established_outgoing(Some(MAX_ESTABLISHED_OUTGOING))
        .with_max_established(Some(MAX_ESTABLISHED_TOTAL))
        .with_max_established_per_peer(Some(MAX_ESTABLISHED_PER_PEER))
}

/// Everything a Constella node speaks, composed into one `NetworkBehaviour`.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Bounds pending and established connections (see [`connection_limits`]), so a flood of
    /// connections cannot exhaust the node's file descriptors.
    pub limits: connection_limits::Behaviour,
    /// Exchanges agent, protocol version and listen addresses on every connection.
    pub identify: identify::Behaviour,
    /// Measures round trips and notices dead connections.
    pub ping: ping::Behaviour,
    /// Carries heartbeats straight to each connected member.
    pub beat: beat::Behaviour,
    /// Carries member lists, settings, goodbyes and rotations.
    pub gossipsub: gossipsub::Behaviour,
    /// Finds members whose addresses changed (Kademlia; derefs to `kad::Behaviour`).
    pub kad: dht::Dht,
    /// Admits new nodes with one-time tokens.
    pub join: join::Behaviour,
    /// Answers and sends GetPeers, GetStats and Reboot.
    pub rpc: rpc::Behaviour,
    /// Exchanges member lists and settings between two members.
    pub sync: sync::Behaviour,
    /// The PQ4 messaging service (accounts, bundles, mailboxes; docs/messaging.md).
    pub pq4: pq4::Behaviour,
    /// Am I reachable? Members dial each other back, for members only ([`nat`], docs/nat.md).
    pub autonat: nat::MembersOnly<autonat::Behaviour>,
    /// A public member relays for members behind NAT (members only, within limits).
    pub relay: relay::Behaviour,
    /// Behind NAT: reserve a slot on a relay and accept circuits through it; dial relayed
    /// addresses.
    pub relay_client: relay::client::Behaviour,
    /// Upgrades a relayed connection to a direct one by hole punching.
    pub dcutr: dcutr::Behaviour,
    /// Hands DCUtR this node's outside address as a hole-punch candidate ([`nat::Candidates`]).
    pub candidates: nat::Candidates,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// The gossip topic of a network, named by its tag ([`network_keys::network_tag`], a hash keyed by the
/// network secret): a peer that connects sees the topic in subscriptions but cannot tell the
/// network id from it, and only members know which topic to ask for.
pub fn gossip_topic(tag: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("constella/{tag}/membership/3"))
}

/// The Kademlia protocol name of a network, named by its tag like the topic: nodes of
/// different networks never share a DHT, identify does not reveal the network id, and a peer
/// that does not hold the secret cannot even open a Kademlia stream.
pub fn kad_protocol(tag: &str) -> Result<StreamProtocol, BuildError> {
    StreamProtocol::try_from_owned(format!("/constella/{tag}/kad/1.0.0"))
        .map_err(|_| BuildError::NetworkId(tag.to_owned()))
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
        // Twice our own bound: a larger message must reach `gossip::open` to be refused and
        // counted as malformed, instead of vanishing in gossipsub uncounted.
        .max_transmit_size(2 * gossip::MAX_GOSSIP_BYTES)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .build()
        .map_err(|error| BuildError::Gossipsub(error.to_string()))
}

impl Behaviour {
    /// Builds the behaviour of a member of the network whose tag is `tag`
    /// ([`network_keys::network_tag`]).
    /// `request_timeout` bounds Join exchanges; RPC exchanges are bounded by [`RPC_TIMEOUT`].
    /// `relay_client` is the half of the relay client the transport does not hold (see
    /// `relay::client::new`); the relay serves `relay_members` only.
    pub fn new(
        key: &Keypair,
        tag: &str,
        request_timeout: Duration,
        relay_client: relay::client::Behaviour,
        relay_members: &nat::RelayMembers,
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
        let kad = dht::Dht::new(local, kad_protocol(tag)?);
        // Not a relay until AutoNAT has found this node reachable (the daemon enables it then).
        let mut relay = relay::Behaviour::new(local, nat::relay_config(relay_members));
        relay.set_status(Some(relay::Status::Disable));
        Ok(Self {
            limits: connection_limits::Behaviour::new(connection_limits()),
            identify,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            beat: beat::Behaviour::new(),
            gossipsub,
            kad,
            join: join::behaviour(request_timeout),
            rpc: rpc::behaviour(RPC_TIMEOUT),
            sync: sync::behaviour(RPC_TIMEOUT),
            pq4: pq4::behaviour(RPC_TIMEOUT),
            autonat: nat::MembersOnly::new(
                autonat::Behaviour::new(local, nat::autonat_config()),
                relay_members,
            ),
            relay,
            relay_client,
            dcutr: dcutr::Behaviour::new(local),
            candidates: nat::Candidates::default(),
        })
    }
}

/// A CBOR request-response behaviour of ours for `protocol`, with its frames bounded both ways
/// (so no peer makes a node buffer more than the protocol allows) and `config`'s timeout and
/// stream limits. Join, sync, RPC and the PQ4 service are all built this way.
pub(crate) fn bounded_cbor<Req, Resp>(
    protocol: StreamProtocol,
    max_request_bytes: u64,
    max_response_bytes: u64,
    config: libp2p::request_response::Config,
) -> libp2p::request_response::cbor::Behaviour<Req, Resp>
where
    Req: Send + serde::Serialize + serde::de::DeserializeOwned + 'static,
    Resp: Send + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let codec = libp2p::request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(max_request_bytes)
        .set_response_size_maximum(max_response_bytes);
    libp2p::request_response::Behaviour::with_codec(
        codec,
        [(protocol, libp2p::request_response::ProtocolSupport::Full)],
        config,
    )
}
