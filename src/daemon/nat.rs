//! Nodes behind NAT (docs/nat.md): the event loop's glue to libp2p's AutoNAT, Circuit Relay v2
//! and DCUtR. The rules that need the member list stay in the core: a node's relayed
//! addresses travel in its member record (`Input::Relays`), and every member dials them.
//!
//! - AutoNAT answers whether this node is reachable ([`Reachability`]). A public node offers
//!   the relay protocol to members ([`RelayMembers`] gates it); a private one stops.
//! - A private node keeps a reservation on up to [`MAX_RELAYS`] connected public members that
//!   offer the relay, replaces one that is lost (its connection closed, the reservation
//!   refused or expired) at the next tick, and hands the accepted relayed addresses to the core.
//! - An AutoNAT dial-back this node made for another member is closed as soon as it is
//!   established: it proved the point, and members keep one connection each.
//! - A private node stops claiming its recorded address (the NAT's outside address) as a
//!   confirmed external address and reports it, and the outside addresses members observe,
//!   as hole-punch candidates for DCUtR instead. Once a member is connected directly (a hole
//!   punched), its relayed connections are closed, so the relay carries nothing for the pair.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use constella_behaviours::BehaviourEvent;
use constella_behaviours::gossip::MAX_RELAYS;
use constella_behaviours::membership::{Link, MemberView};
use constella_behaviours::nat::RelayMembers;
use constella_behaviours::node::{Input, Node};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, autonat, dcutr, identify, relay};
use tracing::{debug, info};

use super::event_loop::EventLoop;
use super::report::NatCounters;
use super::swarm_setup::{RelayedBytes, dial_addresses, is_unspecified};

/// How often a private node checks its reservations.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// A reservation not accepted by then is given up and another relay tried.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A relay that refused or lost a reservation is not asked again before this.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A member's relayed connections are closed once a direct connection to it has lasted this
/// long (requests already under way on the relayed one get the time to finish).
const RELAYED_GRACE: Duration = Duration::from_secs(3);

/// Whether this node is reachable at the addresses it listens on, as AutoNAT last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Not probed yet: taken as public (the node announces its address and does not relay).
    Unknown,
    /// A member dialled it back.
    Public,
    /// Members could not dial it back: it needs relays.
    Private,
}

impl Reachability {
    /// `"public"` or `"private"`, as `status --json` shows it (unknown counts as public).
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Unknown | Reachability::Public => "public",
            Reachability::Private => "private",
        }
    }
}

/// One reservation asked of a relay.
#[derive(Debug)]
struct Reservation {
    /// The listener through the relay; `None` while this node is still dialling the relay
    /// directly (a reservation needs a direct connection, see [`Nat::direct`]).
    listener: Option<ListenerId>,
    /// The direct dial to the relay made for this reservation, until it is established.
    dialing: Option<ConnectionId>,
    asked: Instant,
    /// The relayed addresses the relay confirmed (empty until it accepts).
    addrs: Vec<Multiaddr>,
}

/// The NAT state of the event loop.
pub(super) struct Nat {
    members: RelayMembers,
    reachability: Reachability,
    /// Connected members that offer the relay protocol (from identify).
    offering: HashSet<PeerId>,
    reservations: BTreeMap<PeerId, Reservation>,
    /// The direct (not relayed) connections to each peer. A member may reach this node
    /// through another relay before this node has dialled it; libp2p's relay client would
    /// then dial it only while it is "disconnected", which fails, so this node dials the
    /// relay directly itself and asks for the reservation once such a connection exists.
    direct: HashMap<PeerId, HashMap<ConnectionId, Instant>>,
    /// The relayed (`/p2p-circuit`) connections to each peer.
    relayed: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Members reached only through a relay that this node last dialled directly, and when:
    /// a member that may offer the relay is identified over a direct connection.
    direct_dials: HashMap<PeerId, Instant>,
    /// Relays not to ask again before the instant.
    refused: HashMap<PeerId, Instant>,
    /// AutoNAT dial-backs this node is making for a member: its addresses being dialled.
    dial_backs: HashMap<PeerId, Vec<Multiaddr>>,
    /// The relayed addresses last handed to the core.
    published: Vec<String>,
    /// Hole punches that succeeded and failed since the start.
    punches: (u64, u64),
    /// Bytes on this node's relayed connections (counted by the transport).
    relayed_bytes: RelayedBytes,
    tick: tokio::time::Interval,
}

impl Nat {
    pub(super) fn new(members: RelayMembers, relayed_bytes: RelayedBytes, core: &Node) -> Self {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let nat = Self {
            members,
            reachability: Reachability::Unknown,
            offering: HashSet::new(),
            reservations: BTreeMap::new(),
            direct: HashMap::new(),
            relayed: HashMap::new(),
            direct_dials: HashMap::new(),
            refused: HashMap::new(),
            dial_backs: HashMap::new(),
            punches: (0, 0),
            relayed_bytes,
            published: core
                .membership()
                .record(&core.local().id)
                .map(|r| r.relays.clone())
                .unwrap_or_default(),
            tick,
        };
        nat.members_changed(core);
        nat
    }

    /// The member list changed: the relay serves exactly the current members.
    pub(super) fn members_changed(&self, core: &Node) {
        let local = core.local().id;
        let members = core.membership().remote_members().map(|(id, _)| *id);
        self.members.set(members.filter(|id| *id != local));
    }

    /// Resolves at the next tick.
    pub(super) async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// `"public"` or `"private"`.
    pub(super) fn reachability(&self) -> &'static str {
        self.reachability.as_str()
    }

    /// The `nat` counters of `status --json`.
    pub(super) fn counters(&self) -> NatCounters {
        let (relayed_bytes_sent, relayed_bytes_received) = self.relayed_bytes.get();
        NatCounters {
            relayed_connections: self.relayed.values().map(HashSet::len).sum(),
            relayed_bytes_sent,
            relayed_bytes_received,
            hole_punches: self.punches.0,
            hole_punch_failures: self.punches.1,
        }
    }

    /// Fills in how this node is connected to each member of `view` (`peers --json`).
    pub(super) fn annotate_links(&self, view: &mut [MemberView]) {
        for member in view {
            member.connection = if self.direct.contains_key(&member.node_id) {
                Some(Link::Direct)
            } else if self.relayed.contains_key(&member.node_id) {
                Some(Link::Relayed)
            } else {
                None
            };
        }
    }

    /// The names of the relays holding an accepted reservation for this node, sorted.
    pub(super) fn relay_names(&self, core: &Node) -> Vec<String> {
        let mut names: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| !r.addrs.is_empty())
            .map(|(id, _)| core.name_of(id))
            .collect();
        names.sort();
        names
    }

    /// The relayed addresses to put in this node's record: the first each relay confirmed.
    fn relayed_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .reservations
            .values()
            .filter_map(|r| r.addrs.first())
            .map(ToString::to_string)
            .collect();
        addrs.sort();
        addrs.truncate(MAX_RELAYS);
        addrs
    }
}

impl EventLoop {
    /// Hands the core the addresses to announce: the public one, then every listen address.
    pub(super) fn announce_addresses(&mut self) {
        let mut addrs: Vec<String> = vec![self.public_addr.to_string()];
        addrs.extend(self.swarm.listeners().map(ToString::to_string));
        addrs.dedup();
        self.feed(Input::Addresses(&addrs));
    }

    /// Looks at every Swarm event before the loop handles it.
    pub(super) fn nat_observe(&mut self, event: &SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } if endpoint.is_dialer()
                && self
                    .nat
                    .dial_backs
                    .get(peer_id)
                    .is_some_and(|addrs| addrs.contains(endpoint.get_remote_address()))
                && self
                    .nat
                    .reservations
                    .get(peer_id)
                    .is_none_or(|r| r.dialing != Some(*connection_id)) =>
            {
                // AutoNAT has seen it (behaviours see the connection first): close it.
                debug!(peer = %peer_id, "closing an AutoNAT dial-back");
                self.nat.dial_backs.remove(peer_id);
                self.swarm.close_connection(*connection_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } if !endpoint.is_relayed() => {
                self.nat
                    .direct
                    .entry(*peer_id)
                    .or_default()
                    .insert(*connection_id, Instant::now());
                self.nat_listen_through(*peer_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                self.nat
                    .relayed
                    .entry(*peer_id)
                    .or_default()
                    .insert(*connection_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id: Some(peer_id),
                error,
            } => {
                let ours = self
                    .nat
                    .reservations
                    .get(peer_id)
                    .is_some_and(|r| r.dialing == Some(*connection_id));
                if ours {
                    debug!(relay = %self.core.name_of(peer_id), %error, "cannot dial the relay directly");
                    self.drop_reservation(*peer_id, true);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(direct) = self.nat.direct.get_mut(peer_id) {
                    direct.remove(connection_id);
                    if direct.is_empty() {
                        self.nat.direct.remove(peer_id);
                    }
                }
                if let Some(relayed) = self.nat.relayed.get_mut(peer_id) {
                    relayed.remove(connection_id);
                    if relayed.is_empty() {
                        self.nat.relayed.remove(peer_id);
                    }
                }
                if *num_established > 0 {
                    return;
                }
                self.nat.offering.remove(peer_id);
                if self.nat.reservations.contains_key(peer_id) {
                    info!(relay = %self.core.name_of(peer_id), "lost the connection to a relay");
                    self.drop_reservation(*peer_id, true);
                    self.nat_refresh();
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let found = self
                    .nat
                    .reservations
                    .iter_mut()
                    .find(|(_, r)| r.listener == Some(*listener_id));
                if let Some((relay, reservation)) = found {
                    if reservation.addrs.is_empty() {
                        info!(relay = %self.core.name_of(relay), %address, "relay reservation accepted");
                    }
                    if !reservation.addrs.contains(address) {
                        reservation.addrs.push(address.clone());
                    }
                    self.nat_publish();
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let found = self
                    .nat
                    .reservations
                    .iter()
                    .find(|(_, r)| r.listener == Some(*listener_id))
                    .map(|(relay, _)| *relay);
                if let Some(relay) = found {
                    info!(relay = %self.core.name_of(&relay), ?reason, "relay reservation ended");
                    self.drop_reservation(relay, true);
                    self.nat_refresh();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => {
                let over_direct = self
                    .nat
                    .direct
                    .get(peer_id)
                    .is_some_and(|c| c.contains_key(connection_id));
                if over_direct
                    && self.nat.reachability == Reachability::Private
                    && self.core.membership().is_member(peer_id)
                {
                    self.hole_punch_candidate(&info.observed_addr);
                }
                let offers = info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
                    && self.core.membership().is_member(peer_id);
                let changed = if offers {
                    self.nat.offering.insert(*peer_id)
                } else {
                    self.nat.offering.remove(peer_id)
                };
                if changed {
                    debug!(peer = %peer_id, offers, "relay offer changed");
                    self.nat_refresh();
                }
            }
            _ => {}
        }
    }

    /// Every tick: keeps the reservations a private node needs.
    pub(super) fn nat_tick(&mut self) {
        let now = Instant::now();
        self.nat.refused.retain(|_, until| *until > now);
        let stale: Vec<PeerId> = self
            .nat
            .reservations
            .iter()
            .filter(|(_, r)| r.addrs.is_empty() && now - r.asked > RESERVE_TIMEOUT)
            .map(|(relay, _)| *relay)
            .collect();
        for relay in stale {
            debug!(relay = %self.core.name_of(&relay), "relay reservation timed out");
            self.drop_reservation(relay, true);
        }
        self.nat_dial_relayed_members(now);
        self.close_relayed_where_direct(now);
        self.nat_refresh();
    }

    /// Closes the relayed connections to members this node also reaches directly (after a
    /// hole punch, or a member that reached it through a relay before its direct dial
    /// succeeded) once the direct one has lasted [`RELAYED_GRACE`]: requests then go direct,
    /// and the relay carries nothing for the pair.
    fn close_relayed_where_direct(&mut self, now: Instant) {
        let mut closing = Vec::new();
        for (peer, relayed) in &self.nat.relayed {
            let settled = self.nat.direct.get(peer).is_some_and(|direct| {
                direct
                    .values()
                    .any(|since| now.duration_since(*since) >= RELAYED_GRACE)
            });
            if settled {
                closing.extend(relayed.iter().map(|c| (*peer, *c)));
            }
        }
        for (peer, connection) in closing {
            debug!(member = %self.core.name_of(&peer), "closing a relayed connection: connected directly");
            self.swarm.close_connection(connection);
        }
    }

    /// Reports `observed` (an outside address of this node a member saw), with the port this
    /// node listens on, as a hole-punch candidate: DCUtR dials from the listening port, which
    /// an endpoint-independent NAT maps to the same outside port for every destination.
    fn hole_punch_candidate(&mut self, observed: &Multiaddr) {
        let Some(port) = self.listen_port() else {
            return;
        };
        let mut candidate = Multiaddr::empty();
        for protocol in observed.iter() {
            match protocol {
                Protocol::Ip4(_) | Protocol::Ip6(_) => candidate.push(protocol),
                Protocol::Tcp(_) => candidate.push(Protocol::Tcp(port)),
                _ => break,
            }
        }
        if candidate.iter().count() == 2 && !is_unspecified(&candidate) {
            debug!(%candidate, "hole-punch candidate");
            self.swarm.behaviour_mut().candidates.add(candidate);
        }
    }

    /// The TCP port this node listens on (not through a relay).
    fn listen_port(&self) -> Option<u16> {
        self.swarm
            .listeners()
            .filter(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
            .find_map(|a| {
                a.iter().find_map(|p| match p {
                    Protocol::Tcp(port) => Some(port),
                    _ => None,
                })
            })
    }

    /// A private node lacking relays dials directly the members it reaches only through a
    /// relay (one that reached it through another relay before its own direct dial
    /// succeeded): the core dials only disconnected members, and a relay is found (identify)
    /// and reserved on over a direct connection. Members known to be behind NAT (their
    /// record has relayed addresses) are skipped; each is dialled at most every
    /// [`RETRY_AFTER`].
    fn nat_dial_relayed_members(&mut self, now: Instant) {
        self.nat
            .direct_dials
            .retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
        if self.nat.reachability != Reachability::Private
            || self.nat.reservations.len() >= MAX_RELAYS
        {
            return;
        }
        let relayed: Vec<PeerId> = self
            .core
            .membership()
            .remote_members()
            .filter(|(id, record)| {
                record.relays.is_empty()
                    && self.swarm.is_connected(id)
                    && !self.nat.direct.contains_key(id)
                    && !self.nat.reservations.contains_key(id)
                    && !self.nat.direct_dials.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in relayed {
            let Some(addr) = self.relay_addr(&peer) else {
                continue;
            };
            self.nat.direct_dials.insert(peer, now);
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    debug!(peer = %self.core.name_of(&peer), "dialling directly a member reached only through a relay")
                }
                Err(error) => {
                    debug!(peer = %self.core.name_of(&peer), %error, "direct dial not started")
                }
            }
        }
    }

    pub(super) fn on_autonat(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { old, new } => {
                let reachability = match new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                info!(?old, ?new, "reachability: {}", reachability.as_str());
                let was = std::mem::replace(&mut self.nat.reachability, reachability);
                if reachability == Reachability::Private && was != Reachability::Private {
                    // The recorded address is the NAT's outside address: not dialable, and as
                    // a confirmed external address it kept identify's observations of it from
                    // ever reaching DCUtR (the swarm drops such candidates). Hand it to DCUtR
                    // as a candidate instead.
                    let public = self.public_addr.clone();
                    self.swarm.remove_external_address(&public);
                    self.hole_punch_candidate(&public);
                } else if reachability == Reachability::Public {
                    self.swarm.add_external_address(self.public_addr.clone());
                }
                let status = if reachability == Reachability::Public {
                    relay::Status::Enable
                } else {
                    relay::Status::Disable
                };
                self.swarm.behaviour_mut().relay.set_status(Some(status));
                self.nat_refresh();
            }
            autonat::Event::InboundProbe(autonat::InboundProbeEvent::Request {
                peer,
                addresses,
                ..
            }) => {
                self.nat.dial_backs.insert(peer, addresses);
            }
            autonat::Event::InboundProbe(
                autonat::InboundProbeEvent::Response { peer, .. }
                | autonat::InboundProbeEvent::Error { peer, .. },
            ) => {
                self.nat.dial_backs.remove(&peer);
            }
            autonat::Event::OutboundProbe(event) => debug!(?event, "AutoNAT probe"),
        }
    }

    pub(super) fn on_relay(&mut self, event: relay::Event) {
        match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed: false,
            } => info!(node = %self.core.name_of(&src_peer_id), "relaying for a member behind NAT"),
            relay::Event::ReservationReqDenied { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "relay reservation refused (not a member, or over a limit)");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                ..
            } => debug!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit refused"),
            event => debug!(?event, "relay"),
        }
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        debug!(?event, "relay client");
    }

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        let member = self.core.name_of(&event.remote_peer_id);
        match event.result {
            Ok(_) => {
                self.nat.punches.0 += 1;
                info!(%member, "hole punched: direct connection");
            }
            Err(error) => {
                self.nat.punches.1 += 1;
                info!(%member, %error, "hole punch failed; staying relayed");
            }
        }
    }

    /// Asks for the reservations a private node lacks, gives up those a public node holds,
    /// and hands changed relayed addresses to the core.
    fn nat_refresh(&mut self) {
        if self.nat.reachability != Reachability::Private {
            let relays: Vec<PeerId> = self.nat.reservations.keys().copied().collect();
            for relay in relays {
                self.drop_reservation(relay, false);
            }
        } else {
            let gone: Vec<PeerId> = self
                .nat
                .reservations
                .keys()
                .filter(|id| !self.core.membership().is_member(id))
                .copied()
                .collect();
            for relay in gone {
                self.drop_reservation(relay, false);
            }
            let mut candidates: Vec<PeerId> = self
                .nat
                .offering
                .iter()
                .filter(|id| {
                    !self.nat.reservations.contains_key(id)
                        && !self.nat.refused.contains_key(id)
                        && self.core.membership().is_member(id)
                        && self.swarm.is_connected(id)
                })
                .copied()
                .collect();
            candidates.sort();
            for relay in candidates {
                if self.nat.reservations.len() >= MAX_RELAYS {
                    break;
                }
                self.reserve(relay);
            }
        }
        self.nat_publish();
    }

    /// Asks `relay` for a reservation: at once when a direct connection to it exists,
    /// otherwise after dialling it directly (see [`Nat::direct`]).
    fn reserve(&mut self, relay: PeerId) {
        let mut reservation = Reservation {
            listener: None,
            dialing: None,
            asked: Instant::now(),
            addrs: Vec::new(),
        };
        if !self.nat.direct.contains_key(&relay) {
            let Some(addr) = self.relay_addr(&relay) else {
                return;
            };
            let opts = DialOpts::peer_id(relay)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            let dialing = opts.connection_id();
            if let Err(error) = self.swarm.dial(opts) {
                debug!(relay = %self.core.name_of(&relay), %error, "cannot dial the relay directly");
                self.nat.refused.insert(relay, Instant::now() + RETRY_AFTER);
                return;
            }
            debug!(relay = %self.core.name_of(&relay), "dialling a relay directly to reserve on it");
            reservation.dialing = Some(dialing);
        }
        self.nat.reservations.insert(relay, reservation);
        self.nat_listen_through(relay);
    }

    /// The direct address of `relay` from its member record.
    fn relay_addr(&self, relay: &PeerId) -> Option<Multiaddr> {
        let record = self.core.membership().record(relay)?;
        dial_addresses(std::slice::from_ref(&record.addr))
            .into_iter()
            .next()
    }

    /// Listens through `relay` (the reservation request proper) once a reservation is
    /// wanted there, none is asked yet, and a direct connection to it exists.
    fn nat_listen_through(&mut self, relay: PeerId) {
        let waiting = self
            .nat
            .reservations
            .get(&relay)
            .is_some_and(|r| r.listener.is_none());
        if !waiting || !self.nat.direct.contains_key(&relay) {
            return;
        }
        let Some(addr) = self.relay_addr(&relay) else {
            self.drop_reservation(relay, true);
            return;
        };
        let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                info!(relay = %self.core.name_of(&relay), %circuit, "asking a relay for a reservation");
                if let Some(reservation) = self.nat.reservations.get_mut(&relay) {
                    reservation.listener = Some(listener);
                    reservation.dialing = None;
                    reservation.asked = Instant::now();
                }
            }
            Err(error) => {
                debug!(%circuit, %error, "cannot listen through the relay");
                self.drop_reservation(relay, true);
            }
        }
    }

    /// Forgets the reservation on `relay` (closing its listener); `failed` keeps the relay
    /// from being asked again for a while.
    fn drop_reservation(&mut self, relay: PeerId, failed: bool) {
        if let Some(listener) = self
            .nat
            .reservations
            .remove(&relay)
            .and_then(|r| r.listener)
        {
            self.swarm.remove_listener(listener);
        }
        if failed {
            self.nat.refused.insert(relay, Instant::now() + RETRY_AFTER);
        }
    }

    /// Hands the relayed addresses to the core when they changed (record and heartbeats).
    /// Until AutoNAT has answered, the record keeps what it had: a restarted node behind NAT
    /// reserves on the same relays again, which gives the same addresses.
    fn nat_publish(&mut self) {
        let addrs = self.nat.relayed_addrs();
        if self.nat.reachability == Reachability::Unknown || addrs == self.nat.published {
            return;
        }
        info!(relays = ?self.nat.relay_names(&self.core), "relayed addresses changed");
        self.nat.published = addrs.clone();
        self.feed(Input::Relays(&addrs));
        self.announce_addresses();
    }
}
