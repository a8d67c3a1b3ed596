//! The event loop: owns the Swarm and the protocol core ([`Node`]), and only interprets. Swarm
//! events and commands become core [`Input`]s; the core's [`Output`]s become Swarm calls,
//! store writes and signals for the bot. Every rule lives in the core
//! (`constella_behaviours::node`). Around the loop: [`commands`](super::commands) (client
//! commands), [`replies`](super::replies) (clients waiting for the core),
//! [`gossip_io`](super::gossip_io) (seal, open, publish), [`beats`](super::beats) (the beat
//! protocol), [`node_keys`](super::node_keys) (the core's config, this node's PQ4 card),
//! [`rotation`](super::rotation)
//! (the network secret), [`kad_filter`](super::kad_filter) (members-only DHT),
//! [`swarm_setup`](super::swarm_setup), [`log_outputs`](super::log_outputs), and the RPC
//! ([`rpc`](super::rpc)) and chat ([`chat`](super::chat)) services.

use std::future::Future;
use std::time::Instant;

use anyhow::Result;
use constella_behaviours::gossip::GossipBody;
use constella_behaviours::membership::Change;
use constella_behaviours::nat::RelayMembers;
use constella_behaviours::network_keys::GossipKey;
use constella_behaviours::node::{Ack, Input, Node, Output, Snapshot};
use constella_behaviours::{Behaviour, BehaviourEvent};
use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::request_response::{self, Message};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identify, kad};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::admission::Admissions;
use super::chat::ChatLink;
use super::gossip_io::GossipIo;
use super::kad_filter::KadFilter;
use super::nat::Nat;
use super::replies::Replies;
use super::rpc::Rpc;
use super::signals::Signals;
use super::store::{Store, Written};
use super::swarm_setup::{self, RelayedBytes, dial_addresses};
use super::{Command, Keys, log_outputs};
use crate::state::NetworkState;

/// The node's event loop. The fields are visible to the daemon's modules that carry out
/// commands and rotations on it.
pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) core: Node,
    commands: mpsc::Receiver<Command>,
    store: Store,
    written: mpsc::UnboundedReceiver<Written>,
    /// The parts of the state file the core does not rule on (this node, the secrets); the
    /// core's [`Snapshot`]s are laid over it for every write.
    pub(super) state: NetworkState,
    pub(super) keys: Keys,
    pub(super) gossip: GossipIo,
    kad: KadFilter,
    /// The address other nodes dial, announced first in heartbeats.
    pub(super) public_addr: Multiaddr,
    pub(super) signals: Signals,
    pub(super) rpc: Rpc,
    pub(super) started: Instant,
    /// When the core wants [`Input::Timer`].
    wake: Instant,
    exit: bool,
    pub(super) admissions: Admissions,
    pub(super) replies: Replies,
    /// The PQ4 messaging service's requests and answers (see [`super::chat`]).
    chat: ChatLink,
    /// AutoNAT, relays and hole punching (see [`super::nat`]).
    pub(super) nat: Nat,
}

impl EventLoop {
    pub(super) fn new(
        mut swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        (store, written): (Store, mpsc::UnboundedReceiver<Written>),
        state: NetworkState,
        keys: Keys,
        (rpc, chat): (Rpc, ChatLink),
        (signals, (relay_members, relayed_bytes)): (Signals, (RelayMembers, RelayedBytes)),
    ) -> Result<Self> {
        let started = swarm_setup::start(&mut swarm, &state, &keys)?;
        let local_id = *swarm.local_peer_id();
        let now = Instant::now();
        let public = started.public_addr.to_string();
        let (local, restored) = state.restore(local_id, &public);
        let config = super::node_keys::core_config()?;
        let core = Node::new(config, local, restored, now, rand::random());
        let kad = KadFilter::new(&mut swarm, &core, started.kad_protocol);
        let nat = Nat::new(relay_members, relayed_bytes, &core);
        let gossip_key = GossipKey::derive(&keys.secret, state.secret_epoch);
        info!(
            name = %state.node.name,
            node_id = %local_id,
            network = %state.network_id,
            "node starting; leader is {}",
            core.name_of(&core.leader())
        );
        Ok(Self {
            swarm,
            core,
            commands,
            store,
            written,
            state,
            keys,
            gossip: GossipIo::new(started.topic, gossip_key),
            kad,
            public_addr: started.public_addr,
            signals,
            rpc,
            started: now,
            wake: now,
            exit: false,
            admissions: Admissions::default(),
            replies: Replies::default(),
            chat,
            nat,
        })
    }

    /// Runs until `shutdown` has been handled, `leave` finishes, or every client is gone.
    pub(super) async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        self.feed_own_card();
        if let Some(rotation) = self.state.last_rotation.clone() {
            self.feed(Input::Rotated {
                rotation: &rotation,
                publish: false,
                unix_now: crate::state::unix_now(),
                replaced_ours: false,
            });
        }
        self.feed(Input::Timer);
        self.publish_members();
        let mut signalled = false;
        while !self.exit {
            let rpc_deadline = self.rpc.next_deadline();
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((ack, result)) = self.written.recv() => match result {
                    Ok(()) => self.feed(Input::Persisted(ack)),
                    Err(error) => self.feed(Input::PersistFailed(ack, &error)),
                },
                () = tokio::time::sleep_until(self.wake.into()) => self.feed(Input::Timer),
                Some(finished) = self.rpc.next_finished() => {
                    self.rpc.on_finished(&mut self.swarm, finished);
                }
                () = super::rpc::sleep_until_opt(rpc_deadline) => self.rpc.expire(Instant::now()),
                Some(action) = self.chat.next_action() => {
                    self.chat.on_action(&mut self.swarm, &self.core, action);
                }
                () = self.nat.tick() => self.nat_tick(),
                () = &mut shutdown, if !signalled => {
                    signalled = true;
                    self.feed(Input::Stop);
                }
            }
        }
        if self.core.snapshot().left {
            info!("left the network; stopping");
        } else {
            self.persist(self.core.snapshot(), None);
            info!("node stopped");
        }
        self.store.finish();
        Ok(())
    }

    /// Hands one input to the core and carries out what it answers.
    pub(super) fn feed(&mut self, input: Input<'_>) {
        self.feed_and_take(input, |_| None::<()>);
    }

    /// [`Self::feed`], keeping back the output that `take` picks (an answer to the input,
    /// for the caller that has the request in scope) instead of carrying it out.
    pub(super) fn feed_and_take<T>(
        &mut self,
        input: Input<'_>,
        take: impl Fn(&Output) -> Option<T>,
    ) -> Option<T> {
        let outputs: Vec<Output> = self.core.handle(Instant::now(), input).collect();
        let mut taken = None;
        for output in outputs {
            match take(&output) {
                Some(value) => taken = Some(value),
                None => self.apply(output),
            }
        }
        taken
    }

    fn apply(&mut self, output: Output) {
        match output {
            Output::Publish(body) => {
                self.gossip.publish(&mut self.swarm, &body);
                if matches!(*body, GossipBody::Goodbye(_)) {
                    info!("said goodbye to the peers; stopping");
                }
            }
            Output::Heartbeat { to, heartbeat } => {
                super::beats::send(&mut self.swarm, self.gossip.sealing_key(), &to, *heartbeat);
            }
            Output::Sync { to, message } => {
                let addrs = dial_addresses(&self.core.addresses_of(&to));
                let sync = &mut self.swarm.behaviour_mut().sync;
                sync.send_request_with_addresses(&to, *message, addrs);
            }
            // Answered where the request is in scope (`on_sync_event`, `on_gossip`).
            Output::SyncReply { .. } | Output::GossipVerdict(_) => {}
            Output::Dial { peer, addrs } => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(dial_addresses(&addrs))
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    // Not from the listening port: a public member dialling a NAT-ed one's
                    // recorded address while it dials back from that port (the NAT keeping
                    // the port) would meet in a TCP simultaneous open, where both sides
                    // start the Noise handshake as initiator and it fails (docs/nat.md).
                    .allocate_new_port()
                    .build();
                if let Err(error) = self.swarm.dial(opts) {
                    debug!(%peer, %error, "dial not started");
                }
            }
            Output::Disconnect(peer) => {
                debug!(%peer, "closing connections");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Output::Persist(snapshot, ack) => self.persist(*snapshot, ack),
            Output::LeaderChanged { previous, leader } => {
                log_outputs::leader_changed(&self.core, &previous, &leader);
                self.publish_members();
            }
            Output::Membership(change) => {
                log_outputs::membership(&self.core, &change);
                self.publish_members();
                self.chat.membership_changed();
                self.nat.members_changed(&self.core);
                if let Change::Joined(id) = change {
                    self.kad.member_joined(&mut self.swarm, &self.core, &id);
                }
            }
            Output::Leadership(leadership) => {
                self.signals.leadership.send_replace(leadership);
                self.publish_members();
            }
            Output::Notice(event) => {
                // No receiver (bot off) is fine: the notice is simply not needed.
                let _ = self.signals.notices.send(event);
            }
            Output::Settings(settings) => {
                debug!(?settings, "network settings changed");
                self.signals.settings.send_replace(*settings);
            }
            Output::JoinAnswer { peer, answer } => {
                self.admissions.answer(
                    &mut self.swarm,
                    &self.state,
                    &self.keys,
                    peer,
                    answer.map(|a| *a),
                );
            }
            Output::Rotate => self.rotate(),
            Output::RotationReceived(rotation) => self.on_rotation(&rotation),
            Output::AdmissionUndone { peer, name } => {
                log_outputs::admission_undone(&peer, &name);
                self.publish_members();
            }
            Output::InviteRecorded { request, result } => {
                self.replies.invite_recorded(request, result);
            }
            Output::LeaveDone(result) => {
                log_outputs::leave_done(&self.state.network_id, &result);
                self.replies.leave_done(result);
            }
            Output::RanLate { late, health } => log_outputs::ran_late(late, health),
            Output::Exit => self.exit = true,
            Output::WakeAt(at) => self.wake = at,
        }
    }

    /// Lays the core's snapshot over the rest of the state and queues the write.
    pub(super) fn persist(&mut self, snapshot: Snapshot, ack: Option<Ack>) {
        self.store.save(self.state.with_snapshot(snapshot), ack);
    }

    /// Writes the core's state now; `durable` is told once it is on disk.
    pub(super) fn persist_durably(&mut self, durable: super::store::Durable) {
        let state = self.state.with_snapshot(self.core.snapshot());
        self.store.save_durably(state, durable);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.signals.record_libp2p(&event);
        self.nat_observe(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.announce_addresses();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                self.admissions
                    .connected(peer_id, endpoint.get_remote_address());
                self.feed(Input::Connected(peer_id));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.admissions.disconnected(&peer_id);
                self.feed(Input::Disconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if self.swarm.is_connected(&peer)
                    || matches!(error, DialError::DialPeerConditionFalse(_))
                {
                    return;
                }
                debug!(%peer, %error, "dial failed");
                self.feed(Input::DialFailed(peer));
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. }) => {
                self.feed(Input::Subscribed(peer_id));
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.kad
                    .identified(&mut self.swarm, &self.core, peer_id, info);
            }
            BehaviourEvent::Join(request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => self.on_join_request(peer, request, channel),
            BehaviourEvent::Join(request_response::Event::InboundFailure {
                peer, error, ..
            }) => debug!(%peer, %error, "inbound join failed"),
            BehaviourEvent::Rpc(event) => {
                let (swarm, core, pq4) = (&mut self.swarm, &self.core, &mut self.keys.pq4);
                let followup = self.rpc.on_event(swarm, core, pq4, event);
                self.follow(followup);
            }
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Beat(event) => self.on_beat_event(event),
            // Only a timeout says the connection is dead: a joiner's short-lived CLI process
            // does not speak ping at all ("unsupported"), and must keep its connection.
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                result: Err(libp2p::ping::Failure::Timeout),
                ..
            }) => {
                debug!(%peer, "ping timed out");
                self.feed(Input::PingFailed(peer));
            }
            BehaviourEvent::Pq4(event) => self.chat.on_event(&self.core, event),
            BehaviourEvent::Autonat(event) => self.on_autonat(event),
            BehaviourEvent::Relay(event) => self.on_relay(event),
            BehaviourEvent::RelayClient(event) => self.on_relay_client(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr(event),
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            }) => self
                .kad
                .put_record(&mut self.swarm, &self.core, source, record),
            _ => {}
        }
    }
}
