//! Kademlia as a node uses it: [`Dht`] is `kad::Behaviour` (it derefs to it) that does not try
//! to bootstrap while it knows no peer.
//!
//! libp2p-kad starts a bootstrap 500 ms after the first listen address whenever no peer is
//! connected, and periodically every 5 minutes. On the first node of a network, which knows
//! nobody yet, both fail and log `WARN Failed to trigger bootstrap: No known peers` on every
//! normal start. Here the periodic bootstrap is off and the listen-address trigger is withheld
//! while the routing table is empty; the automatic bootstrap that follows each new peer in the
//! routing table is kept, so the table is refreshed as members arrive.

use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};

/// Kademlia that stays quiet while it knows no peer (see the module documentation).
pub struct Dht {
    inner: kad::Behaviour<MemoryStore>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dht").finish_non_exhaustive()
    }
}

impl Dht {
    /// A server-mode DHT on `protocol` for the node `local`.
    pub fn new(local: PeerId, protocol: StreamProtocol) -> Self {
        let mut config = kad::Config::new(protocol);
        config.set_periodic_bootstrap_interval(None);
        // Records are stored only once the daemon has checked that the sender is a member
        // (`kad::Event::InboundRequest` with `PutRecord`): an outsider cannot fill our memory.
        config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut inner = kad::Behaviour::with_config(local, MemoryStore::new(local), config);
        // A VPS has a public address: serve the DHT from the start instead of waiting for an
        // external address to be confirmed (which kept 3-node networks a star).
        inner.set_mode(Some(kad::Mode::Server));
        Self { inner }
    }

    /// Whether the routing table holds no peer.
    pub fn knows_no_peer(&mut self) -> bool {
        self.inner
            .kbuckets()
            .all(|bucket| bucket.num_entries() == 0)
    }
}

impl Deref for Dht {
    type Target = kad::Behaviour<MemoryStore>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Dht {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for Dht {
    type ConnectionHandler = <kad::Behaviour<MemoryStore> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = kad::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        // kad bootstraps on a new listen address when no peer is connected: with an empty
        // routing table that can only fail. Peers added later trigger their own bootstrap.
        if matches!(event, FromSwarm::NewListenAddr(_)) && self.knows_no_peer() {
            return;
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}
