//! Kademlia limited to members: only members' addresses enter the routing table (from their
//! records, and from identify when they speak the network's Kademlia protocol), and only
//! members may store records here (the DHT is built to hand every insert to us for this check,
//! see `constella_behaviours::dht`).

use constella_behaviours::Behaviour;
use constella_behaviours::node::Node;
use libp2p::kad::{self, store::RecordStore};
use libp2p::{PeerId, StreamProtocol, Swarm, identify};
use tracing::debug;

use super::swarm_setup::is_unspecified;
use crate::validate::HostPort;

/// Which peers Kademlia learns about and accepts records from.
pub(super) struct KadFilter {
    /// The network's Kademlia protocol: a peer that does not speak it is not routed to.
    protocol: StreamProtocol,
}

impl KadFilter {
    /// Seeds the routing table with every remote member's recorded address.
    pub(super) fn new(swarm: &mut Swarm<Behaviour>, core: &Node, protocol: StreamProtocol) -> Self {
        for (id, record) in core.membership().remote_members() {
            add_address(swarm, id, &record.addr);
        }
        Self { protocol }
    }

    /// A member joined: route to its recorded address.
    pub(super) fn member_joined(&self, swarm: &mut Swarm<Behaviour>, core: &Node, id: &PeerId) {
        if let Some(record) = core.membership().record(id) {
            add_address(swarm, id, &record.addr);
        }
    }

    /// A peer told its addresses: a member speaking our Kademlia protocol is routed to them.
    pub(super) fn identified(
        &self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        peer: PeerId,
        info: identify::Info,
    ) {
        if !info.protocols.contains(&self.protocol) || !core.membership().is_member(&peer) {
            return;
        }
        for addr in info.listen_addrs.into_iter().filter(|a| !is_unspecified(a)) {
            swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
    }

    /// A peer asks to store a record here: only members may.
    pub(super) fn put_record(
        &self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        source: PeerId,
        record: kad::Record,
    ) {
        if core.membership().is_member(&source) {
            let _ = swarm.behaviour_mut().kad.store_mut().put(record);
        } else {
            debug!(from = %source, "DHT record from a non-member refused");
        }
    }
}

/// Routes to a member's recorded `host:port` (a record with an unusable one is skipped).
fn add_address(swarm: &mut Swarm<Behaviour>, id: &PeerId, addr: &str) {
    if let Ok(addr) = addr.parse::<HostPort>() {
        swarm
            .behaviour_mut()
            .kad
            .add_address(id, addr.to_multiaddr());
    }
}
