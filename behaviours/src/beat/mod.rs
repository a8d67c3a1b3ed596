//! The beat protocol: heartbeats straight to each member over the connection already open to
//! it, instead of through gossipsub.
//!
//! Over gossipsub every heartbeat carried an ed25519 signature (signed once, checked by every
//! receiver, for every mesh duplicate), was relayed over several mesh paths, and was kept in
//! the message caches. Here each connection has one long-lived outbound stream; a heartbeat is
//! sealed once under the network's gossip key ([`crate::gossip::seal`], the AEAD that already
//! authenticates gossip as a member's) and the same bytes are written to every connected
//! member. The author is the connection's remote PeerId, which noise authenticated, so no
//! signature is needed: the core refuses a heartbeat whose `node_id` is not the connection's
//! peer ([`crate::node::Input::Heartbeat`]).
//!
//! Layout after rust-libp2p's `ping`: [`Behaviour`] (this file), [`handler`] (one
//! connection), [`protocol`] (the frames). Membership reaches every member this way because
//! the core keeps a connection to every member it can reach (a full mesh); a member that
//! is reachable only through a third node is not heard (see docs/design.md, "Failure
//! detector").

pub mod handler;
pub mod protocol;

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

pub use handler::{HandlerEvent, MAX_QUEUED_FRAMES};
pub use protocol::{MAX_FRAME_BYTES, PROTOCOL_NAME};

/// What the beat protocol reports to the event loop.
#[derive(Debug)]
pub enum Event {
    /// A frame from `peer` (the authenticated remote of the connection it came over).
    Received {
        /// The connection's remote.
        peer: PeerId,
        /// The frame as it arrived: still to be opened and checked.
        frame: Vec<u8>,
    },
    /// `peer` does not speak the beat protocol (an older constella): nothing is sent to it.
    Unsupported {
        /// The connection's remote.
        peer: PeerId,
    },
}

/// The beat protocol's `NetworkBehaviour`: [`Behaviour::send`] queues a frame for one peer.
#[derive(Default)]
pub struct Behaviour {
    actions: VecDeque<ToSwarm<Event, Arc<[u8]>>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("queued", &self.actions.len())
            .finish()
    }
}

impl Behaviour {
    /// A behaviour with nothing queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `frame` to `peer` over one of its connections. Nothing happens when `peer` is not
    /// connected: heartbeats are not kept for later (the next one supersedes them).
    pub fn send(&mut self, peer: PeerId, frame: Arc<[u8]>) {
        self.actions.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::Any,
            event: frame,
        });
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = handler::Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(handler::Handler::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(handler::Handler::new())
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = match event {
            HandlerEvent::Frame(frame) => Event::Received { peer, frame },
            HandlerEvent::Unsupported => Event::Unsupported { peer },
        };
        self.actions.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.actions.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}
