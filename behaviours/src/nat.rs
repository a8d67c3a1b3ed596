//! Nodes behind NAT, with libp2p's own protocols (docs/nat.md):
//!
//! - AutoNAT (v1) on every node: members dial each other back to tell whether a node is
//!   reachable at the addresses it listens on ([`autonat_config`]).
//! - Circuit Relay v2: a public member serves as a relay for members only, with limits on
//!   reservations, circuits and bytes ([`relay_config`], gated by [`RelayMembers`]); a node
//!   behind NAT reserves a slot on up to [`crate::gossip::MAX_RELAYS`] of them and puts the
//!   relayed addresses in its member record.
//! - DCUtR: a relayed connection is upgraded to a direct one by hole punching when both NATs
//!   allow it. DCUtR sends the other end the addresses the swarm reported as external address
//!   *candidates*; [`Candidates`] lets the daemon report the node's outside address as one (the
//!   swarm drops a candidate equal to a confirmed external address, which a NAT-ed node's
//!   recorded address was, so without it DCUtR had nothing to send).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use either::Either;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, autonat, relay};

/// Reservations one relay holds in all (one per member behind NAT).
pub const MAX_RESERVATIONS: usize = 128;
/// Circuits one relay carries at once: each pair of members that reach each other through it
/// holds one or two (one per direction that dialled).
pub const MAX_CIRCUITS: usize = 256;
/// Circuits one source member opens through one relay at once.
pub const MAX_CIRCUITS_PER_PEER: usize = 32;
/// A circuit is closed after this long; the members redial at once (through the relay again,
/// or directly after a hole punch). Members' connections are long-lived, unlike libp2p's
/// default of 2 minutes for strangers.
pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(60 * 60);
/// Bytes one circuit may carry (both ways together) before the relay closes it. An idle
/// member's heartbeats, pings and roster exchanges are well under 1 MiB an hour.
pub const MAX_CIRCUIT_BYTES: u64 = 64 << 20;
/// How long a reservation lasts before the client renews it.
pub const RESERVATION_DURATION: Duration = Duration::from_secs(60 * 60);

/// The members a relay serves: reservations and circuits from anyone else are refused. Shared
/// between the relay (which reads it on every request) and the daemon (which writes it when
/// the member list changes).
#[derive(Debug, Clone, Default)]
pub struct RelayMembers(Arc<RwLock<HashSet<PeerId>>>);

impl RelayMembers {
    /// Replaces the members served.
    pub fn set(&self, members: impl IntoIterator<Item = PeerId>) {
        let members: HashSet<PeerId> = members.into_iter().collect();
        match self.0.write() {
            Ok(mut guard) => *guard = members,
            Err(poisoned) => *poisoned.into_inner() = members,
        }
    }

    /// Whether `peer` is a member (and so may use this relay).
    pub fn allows(&self, peer: &PeerId) -> bool {
        match self.0.read() {
            Ok(guard) => guard.contains(peer),
            Err(poisoned) => poisoned.into_inner().contains(peer),
        }
    }
}

/// The relay server's limits ([`MAX_RESERVATIONS`] …), serving `members` only. libp2p's own
/// rate limits (reservations and circuits per peer and per IP) stay behind the members gate, so
/// a stranger's refused attempts cost a member nothing.
pub fn relay_config(members: &RelayMembers) -> relay::Config {
    let gate = |members: &RelayMembers| {
        let members = members.clone();
        Box::new(
            move |peer: PeerId, _: &libp2p::Multiaddr, _: std::time::Instant| members.allows(&peer),
        ) as Box<dyn relay::RateLimiter>
    };
    let per_minute = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    relay::Config {
        max_reservations: MAX_RESERVATIONS,
        max_reservations_per_peer: 4,
        reservation_duration: RESERVATION_DURATION,
        reservation_rate_limiters: vec![gate(members)],
        max_circuits: MAX_CIRCUITS,
        max_circuits_per_peer: MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: MAX_CIRCUIT_DURATION,
        max_circuit_bytes: MAX_CIRCUIT_BYTES,
        circuit_src_rate_limiters: vec![gate(members)],
    }
    // A burst of 30, then one a second: a member that lost its relay and redials every peer
    // gets through; a member in a loop does not fill the relay.
    .reservation_rate_per_peer(per_minute(30), Duration::from_secs(1))
    .circuit_src_per_peer(per_minute(120), Duration::from_secs(1))
}

/// AutoNAT (v1) tuned for a small network of members: the first probe two seconds after the
/// start, a retry every five seconds until one answer settles it, then a refresh every five
/// minutes. Private addresses count (a LAN or a test bed is a network too); a node asks any
/// connected peer it reached directly.
pub fn autonat_config() -> autonat::Config {
    autonat::Config {
        timeout: Duration::from_secs(10),
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(5),
        refresh_interval: Duration::from_secs(5 * 60),
        throttle_server_period: Duration::from_secs(3),
        use_connected: true,
        confidence_max: 1,
        max_peer_addresses: 8,
        throttle_clients_global_max: 16,
        throttle_clients_peer_max: 2,
        throttle_clients_period: Duration::from_secs(1),
        only_global_ips: false,
    }
}

/// Wraps a behaviour (AutoNAT) so that it exists only on connections with members: a
/// connection with anyone else (a stranger, or a joiner before it is a member) gets a handler
/// that speaks nothing, and the wrapped behaviour never hears of it. So a stranger can neither
/// make a member dial anywhere nor use up the dial-back budget members need; a member's own
/// probes go to members only.
pub struct MembersOnly<B> {
    inner: B,
    members: RelayMembers,
    /// Connections the inner behaviour was never told of.
    strangers: HashSet<ConnectionId>,
    /// How many connections to each peer the inner behaviour was told of and not yet told
    /// closed: the counts in the events it gets must be of those alone (request-response
    /// asserts that its own list empties exactly when `remaining_established` is 0, and a
    /// peer can hold a stranger's connection beside a member's, e.g. just after a removal).
    told: HashMap<PeerId, usize>,
}

impl<B> std::fmt::Debug for MembersOnly<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembersOnly")
            .field("strangers", &self.strangers.len())
            .finish_non_exhaustive()
    }
}

impl<B> MembersOnly<B> {
    /// `inner`, on connections with `members` only (the set the relay serves).
    pub fn new(inner: B, members: &RelayMembers) -> Self {
        Self {
            inner,
            members: members.clone(),
            strangers: HashSet::new(),
            told: HashMap::new(),
        }
    }

    /// The wrapped behaviour.
    pub fn inner(&mut self) -> &mut B {
        &mut self.inner
    }

    fn stranger(&mut self, connection: ConnectionId) -> THandler<Self>
    where
        B: NetworkBehaviour,
    {
        self.strangers.insert(connection);
        Either::Right(dummy::ConnectionHandler)
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for MembersOnly<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(connection, peer, addresses, role)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.members.allows(&peer) {
            return Ok(self.stranger(connection));
        }
        self.inner
            .handle_established_inbound_connection(connection, peer, local, remote)
            .map(Either::Left)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.members.allows(&peer) {
            return Ok(self.stranger(connection));
        }
        self.inner
            .handle_established_outbound_connection(connection, peer, addr, role, port_use)
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if self.strangers.contains(&e.connection_id) {
                    return;
                }
                let told = self.told.entry(e.peer_id).or_default();
                let other_established = *told;
                *told += 1;
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                if self.strangers.remove(&e.connection_id) {
                    return;
                }
                let remaining_established = match self.told.get_mut(&e.peer_id) {
                    Some(told) if *told > 1 => {
                        *told -= 1;
                        *told
                    }
                    _ => {
                        self.told.remove(&e.peer_id);
                        0
                    }
                };
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            FromSwarm::AddressChange(e) if self.strangers.contains(&e.connection_id) => {}
            event => self.inner.on_swarm_event(event),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => self
                .inner
                .on_connection_handler_event(peer, connection, event),
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx).map(|event| event.map_in(Either::Left))
    }
}

/// Reports addresses to the swarm as external address candidates
/// (`ToSwarm::NewExternalAddrCandidate`), which DCUtR keeps and sends the other end of a relayed
/// connection to dial. Identify reports the addresses peers observed the same way, but only on
/// a new identify exchange, and the swarm drops a candidate that is already a confirmed external
/// address; the daemon hands over what it knows as soon as AutoNAT finds the node private.
#[derive(Debug, Default)]
pub struct Candidates {
    queued: VecDeque<Multiaddr>,
    waker: Option<Waker>,
}

impl Candidates {
    /// Reports `addr` as an external address candidate at the swarm's next poll.
    pub fn add(&mut self, addr: Multiaddr) {
        if !self.queued.contains(&addr) {
            self.queued.push_back(addr);
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl NetworkBehaviour for Candidates {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.queued.pop_front() {
            Some(addr) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr)),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::ConnectedPoint;

    /// Keeps its own list of connections per peer, as request-response does, and checks the
    /// counts it is told against it.
    #[derive(Default)]
    struct Counting {
        open: HashMap<PeerId, HashSet<ConnectionId>>,
        checked: usize,
    }

    impl NetworkBehaviour for Counting {
        type ConnectionHandler = dummy::ConnectionHandler;
        type ToSwarm = Infallible;

        fn handle_established_inbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Ok(dummy::ConnectionHandler)
        }

        fn handle_established_outbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: Endpoint,
            _: PortUse,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Ok(dummy::ConnectionHandler)
        }

        fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
            match event {
                FromSwarm::ConnectionEstablished(e) => {
                    let open = self.open.entry(e.peer_id).or_default();
                    assert_eq!(e.other_established, open.len());
                    open.insert(e.connection_id);
                    self.checked += 1;
                }
                FromSwarm::ConnectionClosed(e) => {
                    let open = self.open.get_mut(&e.peer_id).expect("told of it");
                    assert!(open.remove(&e.connection_id), "told of it");
                    assert_eq!(e.remaining_established, open.len());
                    self.checked += 1;
                }
                _ => {}
            }
        }

        fn on_connection_handler_event(
            &mut self,
            _: PeerId,
            _: ConnectionId,
            never: THandlerOutEvent<Self>,
        ) {
            match never {}
        }

        fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, Infallible>> {
            Poll::Pending
        }
    }

    #[test]
    fn the_wrapped_behaviour_counts_only_the_connections_it_was_told_of() {
        let members = RelayMembers::default();
        let peer = PeerId::random();
        let mut gate = MembersOnly::new(Counting::default(), &members);
        let addr: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().unwrap();
        let endpoint = ConnectedPoint::Listener {
            local_addr: addr.clone(),
            send_back_addr: addr.clone(),
        };
        let (as_member, as_stranger, second) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        // Swarm-side counts of the peer's connections, as the swarm would report them.
        let mut swarm_count = 0;
        let establish = |gate: &mut MembersOnly<Counting>, id: ConnectionId, n: &mut usize| {
            assert!(
                gate.handle_established_inbound_connection(id, peer, &addr, &addr)
                    .is_ok()
            );
            gate.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: *n,
            }));
            *n += 1;
        };
        let close = |gate: &mut MembersOnly<Counting>, id: ConnectionId, n: &mut usize| {
            *n -= 1;
            gate.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                cause: None,
                remaining_established: *n,
            }));
        };
        // A member's connection, then (after its removal) a stranger's beside it, then the
        // member's connection closes while the stranger's stays: the CI crash of a debug build
        // (request-response's assertion) before the counts were rewritten.
        members.set([peer]);
        establish(&mut gate, as_member, &mut swarm_count);
        members.set([]);
        establish(&mut gate, as_stranger, &mut swarm_count);
        close(&mut gate, as_member, &mut swarm_count);
        // A member again: a new connection beside the stranger's, then both close.
        members.set([peer]);
        establish(&mut gate, second, &mut swarm_count);
        close(&mut gate, as_stranger, &mut swarm_count);
        close(&mut gate, second, &mut swarm_count);
        assert_eq!(
            gate.inner().checked,
            4,
            "told of the member connections only"
        );
        assert!(gate.told.is_empty());
    }

    #[test]
    fn only_members_pass_the_relay_gate() {
        let members = RelayMembers::default();
        let (member, stranger) = (PeerId::random(), PeerId::random());
        members.set([member]);
        assert!(members.allows(&member));
        assert!(!members.allows(&stranger));
        let mut config = relay_config(&members);
        let addr: libp2p::Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().unwrap();
        let now = std::time::Instant::now();
        let gate = &mut config.reservation_rate_limiters[0];
        assert!(gate.try_next(member, &addr, now));
        assert!(!gate.try_next(stranger, &addr, now));
        members.set([]);
        assert!(
            !gate.try_next(member, &addr, now),
            "a removed member is refused"
        );
    }
}
