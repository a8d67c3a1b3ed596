//! The event loop: owns the Swarm and the protocol core ([`Node`]), and only interprets. Swarm
//! events and commands become core [`Input`]s; the core's [`Output`]s become Swarm calls,
//! store writes and signals for the bot. Every rule lives in the core
//! (`constella_behaviours::node`); RPC plumbing lives in [`rpc`](super::rpc).

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use anyhow::{Context, Result};
use constella_behaviours::gossip::{self, GossipBody, GossipError};
use constella_behaviours::gossip::{Rotation, SealedFor};
use constella_behaviours::join::JoinStep;
use constella_behaviours::membership::Change;
use constella_behaviours::network_keys::{self, GossipKey, Pq4Card, Purpose};
use constella_behaviours::node::{
    Ack, Config, Input, LeaveOutcome, Node, Output, Refusal, Snapshot,
};
use constella_behaviours::sync::{SyncMessage, SyncResponse};
use constella_behaviours::{Behaviour, BehaviourEvent, NetworkSecret, gossip_topic, kad_protocol};
use constella_keys::KeyStore;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::kad::{self, store::RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::admission::Admissions;
use super::chat::ChatLink;
use super::error::ClientError;
use super::report::{self, InviteReport};
use super::rpc::{Followup, RebootAsk, Rpc};
use super::signals::Signals;
use super::store::{Store, Written};
use super::{Command, InviteLink};
use crate::state::{NetworkState, unix_now};
use crate::validate::{HostPort, Ttl};

/// The secrets of this node and its network, held by the event loop and never by the core.
pub(super) struct Keys {
    /// The network secret of the current epoch.
    pub secret: NetworkSecret,
    /// This node's PQ4 keys.
    pub pq4: KeyStore,
    /// This node's PQ4 card (public), put in its record.
    pub card: Pq4Card,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// The node's event loop.
pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    core: Node,
    commands: mpsc::Receiver<Command>,
    store: Store,
    written: mpsc::UnboundedReceiver<Written>,
    /// The parts of the state file the core does not rule on (this node, the secrets); the
    /// core's [`Snapshot`]s are laid over it for every write.
    state: NetworkState,
    keys: Keys,
    /// Encrypt and authenticate gossip: the current epoch's key first (used to publish), then
    /// the previous epoch's (still opened, for members that have not rotated yet).
    gossip_keys: Vec<GossipKey>,
    /// Who made the current epoch's secret, if this node adopted it from a rotation since it
    /// started (the tiebreak of concurrent rotations).
    rotated_from: Option<PeerId>,
    /// The address other nodes dial, announced first in heartbeats.
    public_addr: Multiaddr,
    topic: IdentTopic,
    kad_protocol: libp2p::StreamProtocol,
    signals: Signals,
    rpc: Rpc,
    started: Instant,
    /// When the core wants [`Input::Timer`].
    wake: Instant,
    exit: bool,
    admissions: Admissions,
    invites: HashMap<
        u64,
        (
            InviteReport,
            oneshot::Sender<Result<InviteReport, ClientError>>,
        ),
    >,
    next_request: u64,
    leave: Option<oneshot::Sender<Result<LeaveOutcome, ClientError>>>,
    /// The PQ4 messaging service's requests and answers (see [`super::chat`]).
    chat: ChatLink,
}

impl EventLoop {
    pub(super) fn new(
        mut swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        (store, written): (Store, mpsc::UnboundedReceiver<Written>),
        state: NetworkState,
        keys: Keys,
        (rpc, chat): (Rpc, ChatLink),
        signals: Signals,
    ) -> Result<Self> {
        let local_id = *swarm.local_peer_id();
        let listen: HostPort = state
            .node
            .listen
            .parse()
            .map_err(anyhow::Error::msg)
            .context("listen address in the state file")?;
        let public: HostPort = state
            .node
            .public_addr
            .parse()
            .map_err(anyhow::Error::msg)
            .context("public address in the state file")?;
        swarm
            .listen_on(listen.to_multiaddr())
            .with_context(|| format!("cannot listen on {listen}"))?;
        swarm.add_external_address(public.to_multiaddr());
        let tag = state.tag(&keys.secret);
        let topic = gossip_topic(&tag);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .context("cannot subscribe to the gossip topic")?;
        let now = Instant::now();
        let (local, restored) = state.restore(local_id, &public.to_multiaddr().to_string());
        let core = Node::new(Config::default(), local, restored, now, rand::random());
        for (id, record) in core.membership().remote_members() {
            if let Ok(addr) = record.addr.parse::<HostPort>() {
                swarm
                    .behaviour_mut()
                    .kad
                    .add_address(id, addr.to_multiaddr());
            }
        }
        let kad_protocol = kad_protocol(&tag)?;
        let gossip_keys = vec![GossipKey::derive(&keys.secret, state.secret_epoch)];
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
            gossip_keys,
            rotated_from: None,
            public_addr: public.to_multiaddr(),
            topic,
            kad_protocol,
            signals,
            rpc,
            started: now,
            wake: now,
            exit: false,
            admissions: Admissions::default(),
            invites: HashMap::new(),
            next_request: 0,
            leave: None,
            chat,
        })
    }

    /// Runs until `shutdown` has been handled, `leave` finishes, or every client is gone.
    pub(super) async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let card = self.keys.card.clone();
        self.feed(Input::OwnCard(&card));
        if let Some(rotation) = self.state.last_rotation.clone() {
            self.feed(Input::Rotated {
                rotation: &rotation,
                publish: false,
            });
        }
        self.feed(Input::Timer);
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
                () = sleep_until_opt(rpc_deadline) => self.rpc.expire(Instant::now()),
                Some(action) = self.chat.next_action() => {
                    self.chat.on_action(&mut self.swarm, &self.core, action);
                }
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
    fn feed(&mut self, input: Input<'_>) {
        self.feed_and_take(input, |_| None::<()>);
    }

    /// [`Self::feed`], keeping back the output that `take` picks (an answer to the input,
    /// for the caller that has the request in scope) instead of carrying it out.
    fn feed_and_take<T>(
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
                self.publish(&body);
                if matches!(body, GossipBody::Goodbye(_)) {
                    info!("said goodbye to the peers; stopping");
                }
            }
            Output::Sync { to, message } => {
                let addrs = dial_addresses(&self.core.addresses_of(&to));
                self.swarm
                    .behaviour_mut()
                    .sync
                    .send_request_with_addresses(&to, message, addrs);
            }
            // Answered where the request is in scope (`on_sync_request`).
            Output::SyncReply { .. } | Output::GossipVerdict(_) => {}
            Output::Dial { peer, addrs } => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(dial_addresses(&addrs))
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(error) = self.swarm.dial(opts) {
                    debug!(%peer, %error, "dial not started");
                }
            }
            Output::Disconnect(peer) => {
                debug!(%peer, "closing connections");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Output::Persist(snapshot, ack) => self.persist(snapshot, ack),
            Output::LeaderChanged { previous, leader } => info!(
                previous = %self.core.name_of(&previous),
                leader = %self.core.name_of(&leader),
                node_id = %leader,
                this_node = leader == self.core.local().id,
                "leader changed"
            ),
            Output::Membership(change) => self.log_change(&change),
            Output::Leadership(leadership) => {
                self.signals.leadership.send_replace(leadership);
            }
            Output::Notice(event) => {
                // No receiver (bot off) is fine: the notice is simply not needed.
                let _ = self.signals.notices.send(event);
            }
            Output::Settings(settings) => {
                debug!(?settings, "network settings changed");
                self.signals.settings.send_replace(settings);
            }
            Output::JoinAnswer { peer, answer } => {
                self.admissions
                    .answer(&mut self.swarm, &self.state, &self.keys, peer, answer);
            }
            Output::Rotate => self.rotate(),
            Output::RotationReceived(rotation) => self.on_rotation(&rotation),
            Output::AdmissionUndone { peer, name } => tracing::warn!(
                node = %name,
                node_id = %peer,
                "admission undone: the joiner never confirmed; its invite can be used again"
            ),
            Output::InviteRecorded { request, result } => {
                if let Some((report, reply)) = self.invites.remove(&request) {
                    if result.is_ok() {
                        info!(ttl = %report.ttl, expires_at = report.expires_at, "invite issued");
                    }
                    let _ = reply.send(result.map(|()| report).map_err(ClientError::Storage));
                }
            }
            Output::LeaveDone(result) => {
                match &result {
                    Ok(LeaveOutcome::Confirmed(member)) => {
                        info!(network = %self.state.network_id, %member, "left the network (acknowledged); the network secret was deleted");
                    }
                    Ok(LeaveOutcome::Unconfirmed) => {
                        tracing::warn!(network = %self.state.network_id, "left the network, but no member acknowledged it; the network secret was deleted");
                    }
                    Ok(LeaveOutcome::Alone) => {
                        info!(network = %self.state.network_id, "left the network (no other member); the network secret was deleted");
                    }
                    Err(_) => {}
                }
                if let Some(reply) = self.leave.take() {
                    let _ = reply.send(result.map_err(ClientError::Storage));
                }
            }
            Output::Exit => self.exit = true,
            Output::WakeAt(at) => self.wake = at,
        }
    }

    fn log_change(&mut self, change: &Change) {
        let core = &self.core;
        match change {
            Change::Joined(id) => {
                info!(node = %core.name_of(id), node_id = %id, "member joined");
                if let Some(addr) = core
                    .membership()
                    .record(id)
                    .and_then(|r| r.addr.parse::<HostPort>().ok())
                {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(id, addr.to_multiaddr());
                }
            }
            Change::Left(id) => info!(node_id = %id, "member left the network"),
            Change::Alive(id) => info!(node = %core.name_of(id), node_id = %id, "member alive"),
            Change::Offline(id, reason) => {
                info!(node = %core.name_of(id), node_id = %id, ?reason, "member offline");
            }
        }
    }

    /// Lays the core's snapshot over the rest of the state and queues the write.
    fn persist(&mut self, snapshot: Snapshot, ack: Option<Ack>) {
        self.store.save(self.state.with_snapshot(snapshot), ack);
    }

    fn publish(&mut self, body: &GossipBody) {
        // A rotation goes out under every key this node holds: a member that adopted a rival
        // rotation of the same epoch (another key for that epoch) still shares the previous
        // epoch's key, and its copy inside is sealed to it alone anyway.
        let keys = if matches!(body, GossipBody::Rotation(_)) {
            self.gossip_keys.len()
        } else {
            1
        };
        for index in 0..keys {
            let bytes = gossip::seal(&self.gossip_keys[index], body);
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes)
            {
                Ok(_) => {}
                // Alone, or before the first subscriptions are exchanged: nobody to tell yet.
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(error) => debug!(%error, "gossip publish failed"),
            }
        }
    }

    // ---- secret rotation ----

    /// Makes a new secret for the next epoch, seals it to every remaining member's PQ4 card,
    /// publishes the rotation under the current key, then adopts it.
    fn rotate(&mut self) {
        let started = Instant::now();
        let secret = NetworkSecret::generate();
        let epoch = self.state.secret_epoch + 1;
        let local = self.core.local().id;
        let plain = rotation_plaintext(epoch, &secret);
        let mut sealed = Vec::new();
        let mut without_card = Vec::new();
        for (id, record) in self.core.membership().remote_members() {
            if record.left {
                continue;
            }
            let blob = record.card.as_ref().map(|card| {
                network_keys::seal_to(&self.keys.pq4, id, card, Purpose::Rotation, &plain)
            });
            match blob {
                Some(Ok(blob)) => sealed.push(SealedFor { to: *id, blob }),
                Some(Err(error)) => {
                    tracing::warn!(node = %record.name, %error, "cannot seal the new secret to this member")
                }
                None => without_card.push(record.name.clone()),
            }
        }
        if !without_card.is_empty() {
            tracing::warn!(
                nodes = ?without_card,
                "these members have no PQ4 card (an older constella) and get no copy of the new secret; upgrade them and invite them again"
            );
        }
        let members = sealed.len();
        let rotation = Rotation {
            from: local,
            epoch,
            sealed,
        };
        // Published under the current key, which every remaining member still holds.
        self.feed(Input::Rotated {
            rotation: &rotation,
            publish: true,
        });
        self.state.last_rotation = Some(rotation);
        self.adopt(secret, epoch, local);
        info!(
            epoch,
            members,
            ms = started.elapsed().as_millis() as u64,
            "rotated the network secret"
        );
    }

    /// A rotation from a member: opens the copy sealed to this node and adopts it if it wins
    /// over the epoch in use (a higher epoch, or the same one from a smaller node id).
    fn on_rotation(&mut self, rotation: &Rotation) {
        if !rotation.wins_over(self.state.secret_epoch, self.rotated_from.as_ref()) {
            return;
        }
        let local = self.core.local().id;
        let Some(copy) = rotation.sealed.iter().find(|s| s.to == local) else {
            debug!(epoch = rotation.epoch, from = %rotation.from, "a rotation without a copy for this node");
            return;
        };
        let Some(card) = self
            .core
            .membership()
            .record(&rotation.from)
            .and_then(|r| r.card.clone())
        else {
            debug!(from = %rotation.from, "a rotation from a member without a PQ4 card");
            return;
        };
        let opened =
            network_keys::open_from(&mut self.keys.pq4, &local, Purpose::Rotation, &copy.blob)
                .map_err(|e| e.to_string())
                .and_then(|(sender, plain)| {
                    if card.identity().ok().as_ref() != Some(&sender) {
                        return Err("not sealed by the rotating member's PQ4 identity".to_owned());
                    }
                    parse_rotation_plaintext(&plain)
                        .filter(|(epoch, _)| *epoch == rotation.epoch)
                        .ok_or_else(|| "malformed contents".to_owned())
                });
        match opened {
            Ok((epoch, secret)) => {
                self.state.last_rotation = Some(rotation.clone());
                self.adopt(secret, epoch, rotation.from);
                self.feed(Input::Rotated {
                    rotation,
                    publish: false,
                });
                info!(epoch, from = %self.core.name_of(&rotation.from), "adopted a rotated network secret");
            }
            Err(error) => tracing::warn!(from = %rotation.from, %error, "refused a rotation"),
        }
    }

    /// Uses `secret` of `epoch` from now on (the previous key is still opened) and writes it.
    fn adopt(&mut self, secret: NetworkSecret, epoch: u64, from: PeerId) {
        let key = GossipKey::derive(&secret, epoch);
        let previous = self.gossip_keys[0].clone();
        self.gossip_keys = vec![key, previous];
        self.state.network_secret = Some(crate::state::StoredSecret::from_secret(&secret));
        self.state.secret_epoch = epoch;
        self.keys.secret = secret;
        self.rotated_from = Some(from);
        self.persist(self.core.snapshot(), None);
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let listeners = self.swarm.listeners().map(ToString::to_string).collect();
                let connected = self.swarm.connected_peers().count();
                let report = report::status(
                    &self.core,
                    &self.state,
                    self.started,
                    (listeners, connected),
                    &self.signals.bot.snapshot(),
                );
                drop(reply.send(report));
            }
            Command::Peers(reply) => drop(reply.send(self.core.view())),
            Command::Invite(ttl, reply) => self.create_invite(ttl, reply),
            Command::Leave(reply) => {
                if self.leave.is_some() {
                    let _ = reply.send(Err(ClientError::Invalid(
                        "a leave is already under way".to_owned(),
                    )));
                    return;
                }
                self.leave = Some(reply);
                self.feed(Input::Leave);
            }
            Command::Remove(target, reply) => {
                let result = match self.core.resolve(&target) {
                    None => Err(ClientError::UnknownNode(target)),
                    Some(peer) if peer == self.core.local().id => Err(ClientError::Invalid(
                        "that is this node: use `constella leave` on it".to_owned(),
                    )),
                    Some(peer) => {
                        let name = self.core.name_of(&peer);
                        info!(node = %name, node_id = %peer, "removing a member; the network secret will be rotated");
                        self.feed(Input::Remove(peer));
                        Ok(name)
                    }
                };
                let _ = reply.send(result);
            }
            Command::MergeSettings(settings, reply) => {
                self.feed(Input::MergeSettings(&settings));
                let _ = reply.send(self.core.settings().clone());
            }
            Command::PeersOf(target, reply) => {
                self.rpc.peers(&mut self.swarm, &self.core, &target, reply);
            }
            Command::Stats(target, reply) => {
                self.rpc.stats(&mut self.swarm, &self.core, &target, reply);
            }
            Command::History(target, request, reply) => {
                let (swarm, core) = (&mut self.swarm, &self.core);
                self.rpc.history(swarm, core, &target, request, reply);
            }
            Command::Reboot {
                target,
                requested_by,
                reply,
                by,
                confirmation,
            } => {
                let ask = RebootAsk {
                    requested_by,
                    by,
                    confirmation,
                };
                let followup = self
                    .rpc
                    .reboot(&mut self.swarm, &self.core, &target, ask, reply);
                self.follow(followup);
            }
            Command::Docker {
                target,
                request,
                by,
                reply,
            } => {
                let request = (request, by);
                self.rpc
                    .docker(&mut self.swarm, &self.core, &target, request, reply);
            }
            Command::ContainerAlert(alert) => self.rpc.alert(&mut self.swarm, &self.core, alert),
            Command::Services {
                target,
                request,
                by,
                reply,
            } => {
                let (swarm, core) = (&mut self.swarm, &self.core);
                self.rpc
                    .services(swarm, core, &target, (request, by), reply);
            }
            Command::BotToken { target, reply } => {
                self.rpc
                    .bot_token(&mut self.swarm, &self.core, &target, reply);
            }
        }
    }

    fn follow(&mut self, followup: Followup) {
        match followup {
            Followup::None => {}
            Followup::Stranger(peer) => self.feed(Input::StrangerRefused(peer)),
            Followup::Persist => self.persist(self.core.snapshot(), None),
            Followup::Claimed(settings) => {
                self.feed(Input::MergeSettings(&settings));
                self.persist(self.core.snapshot(), None);
            }
        }
    }

    /// Makes a token and its link; the core records the invite, and the link is handed out
    /// only once the record is durable.
    fn create_invite(
        &mut self,
        ttl: Ttl,
        reply: oneshot::Sender<Result<InviteReport, ClientError>>,
    ) {
        let link = match InviteLink::new(&self.state, self.core.local().id, ttl) {
            Ok(link) => link,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let request = self.next_request;
        self.next_request += 1;
        let token_sha256 = constella_behaviours::join::token_hash(&link.token);
        let unix_now = unix_now();
        let report = InviteReport {
            link: link.text,
            expires_at: unix_now + ttl.duration().as_secs(),
            ttl: ttl.to_string(),
        };
        self.invites.insert(request, (report, reply));
        self.feed(Input::IssueInvite {
            request,
            token_sha256: &token_sha256,
            unix_now,
            ttl_secs: ttl.duration().as_secs(),
        });
    }

    // ---- gossip and sync ----

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let verdict = match gossip::open_any(&self.gossip_keys, &message.data) {
            Ok(body) => {
                let input = Input::Gossip {
                    signer: message.source,
                    body: &body,
                };
                self.feed_and_take(input, |o| match o {
                    Output::GossipVerdict(verdict) => Some(*verdict),
                    _ => None,
                })
                .unwrap_or(Err(Refusal::Malformed))
            }
            Err(error) => {
                let refusal = match error {
                    GossipError::BadMac | GossipError::OtherEpoch(_) => Refusal::BadMac,
                    GossipError::IncompatibleVersion(_) => Refusal::IncompatibleVersion,
                    GossipError::TooLarge(_) | GossipError::Malformed => Refusal::Malformed,
                };
                self.feed(Input::GossipRefused(refusal));
                Err(refusal)
            }
        };
        let acceptance = match verdict {
            Ok(()) => MessageAcceptance::Accept,
            Err(reason) => {
                debug!(from = %source, author = ?message.source, ?reason, "gossip message refused");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    fn on_sync_event(&mut self, event: request_response::Event<SyncMessage, SyncResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let input = Input::SyncRequest {
                    from: peer,
                    message: &request,
                };
                let reply = self.feed_and_take(input, |o| match o {
                    Output::SyncReply { message, .. } => Some(message.clone()),
                    _ => None,
                });
                if reply.is_none() {
                    debug!(%peer, "sync refused: not a member");
                    self.feed(Input::StrangerRefused(peer));
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, reply);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        response: Some(message),
                        ..
                    },
                ..
            } => self.feed(Input::SyncAnswer {
                from: peer,
                message: &message,
            }),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "roster sync failed");
            }
            _ => {}
        }
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                let mut addrs: Vec<String> = vec![self.public_addr.to_string()];
                addrs.extend(self.swarm.listeners().map(ToString::to_string));
                addrs.dedup();
                self.feed(Input::Addresses(&addrs));
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
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&self.kad_protocol)
                    && self.core.membership().is_member(&peer_id) =>
            {
                for addr in info.listen_addrs.into_iter().filter(|a| !is_unspecified(a)) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Join(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                if let Some(ask) =
                    self.admissions
                        .receive(&mut self.swarm, &self.state, peer, &request, channel)
                {
                    if request.step == JoinStep::Confirm {
                        self.feed(Input::JoinConfirm(peer));
                        return;
                    }
                    self.feed(Input::JoinRequest {
                        peer,
                        token: &request.token,
                        name: &ask.name,
                        addr: &ask.addr,
                        priority: request.priority,
                        unix_now: unix_now(),
                        confirms: request.step == JoinStep::AskThenConfirm,
                        card: request.card.as_ref(),
                    });
                }
            }
            BehaviourEvent::Join(request_response::Event::InboundFailure {
                peer, error, ..
            }) => debug!(%peer, %error, "inbound join failed"),
            BehaviourEvent::Rpc(event) => {
                let followup =
                    self.rpc
                        .on_event(&mut self.swarm, &self.core, &mut self.keys.pq4, event);
                self.follow(followup);
            }
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
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
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            }) => {
                // Only members may store records here (the DHT filters every insert).
                if self.core.membership().is_member(&source) {
                    let _ = self.swarm.behaviour_mut().kad.store_mut().put(record);
                } else {
                    debug!(from = %source, "DHT record from a non-member refused");
                }
            }
            _ => {}
        }
    }
}

/// What a rotation seals to each member: `epoch (u64 BE) ‖ secret (64 hex digits)`.
fn rotation_plaintext(epoch: u64, secret: &NetworkSecret) -> zeroize::Zeroizing<Vec<u8>> {
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(72));
    plain.extend_from_slice(&epoch.to_be_bytes());
    plain.extend_from_slice(secret.to_hex().as_bytes());
    plain
}

fn parse_rotation_plaintext(plain: &[u8]) -> Option<(u64, NetworkSecret)> {
    let (epoch, hex) = plain.split_at_checked(8)?;
    let epoch = u64::from_be_bytes(epoch.try_into().ok()?);
    let secret = NetworkSecret::from_hex(std::str::from_utf8(hex).ok()?).ok()?;
    Some((epoch, secret))
}

/// The multiaddrs to dial for the core's address texts (`host:port` or multiaddr), leaving
/// out unusable ones (unparseable, or unspecified like 0.0.0.0).
pub(super) fn dial_addresses(addrs: &[String]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for text in addrs {
        let addr = match text.parse::<HostPort>() {
            Ok(host_port) => Some(host_port.to_multiaddr()),
            Err(_) => text.parse::<Multiaddr>().ok(),
        };
        if let Some(addr) = addr.filter(|a| !is_unspecified(a))
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
