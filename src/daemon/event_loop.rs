//! The event loop: owns the Swarm and the membership machine, publishes heartbeats, admits
//! joiners, and answers the [`Client`](super::Client)'s commands. RPC is handled in
//! [`rpc`](super::rpc).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use constella_behaviours::gossip::{
    self, Goodbye, GossipBody, Heartbeat, MemberRecord, RosterUpdate,
};
use constella_behaviours::join::{JoinAccepted, JoinRefusal, JoinRequest, JoinResponse};
use constella_behaviours::membership::{
    Change, HEARTBEAT_INTERVAL, HeartbeatRejection, Membership, OFFLINE_AFTER, Status,
};
use constella_behaviours::settings::{NetworkSettings, SettingsUpdate};
use constella_behaviours::{Behaviour, BehaviourEvent, NetworkSecret, gossip_topic, kad_protocol};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::Command;
use super::rpc::Rpc;
use super::signals::{Leadership, NetworkEvent, Signals};
use crate::control::{BotReport, InviteReport, NodeRef, PeerReport, Rejections, StatusReport};
use crate::link::JoinLink;
use crate::reboot::RebootAction;
use crate::state::{Invite, NetworkState, StateDir, StoredSecret, token_hash, unix_now};
use crate::validate::{HostPort, ServerName, Ttl};

/// How often liveness is checked and disconnected members are redialled.
const LIVENESS_TICK: Duration = Duration::from_millis(250);
/// How often the full member list is published (anti-entropy).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait between two dials of an unreachable member.
const MAX_REDIAL_BACKOFF: Duration = Duration::from_secs(30);
/// How long `leave` and a graceful stop keep the loop running so the last message (tombstone or
/// goodbye) reaches the peers.
const LEAVE_DRAIN: Duration = Duration::from_secs(1);
/// Extra heartbeats sent when peers subscribe are spaced at least this far apart.
const EAGER_HEARTBEAT_GAP: Duration = Duration::from_millis(100);
/// How long a connection from a non-member may stay open: long enough for a Join to finish.
const STRANGER_IDLE_LIMIT: Duration = Duration::from_secs(12);
/// Used invites and expired ones are forgotten after this long.
const INVITE_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// A node that just started does not yet know who is alive: it hosts the leader services only
/// once every member answered or this long has passed (two heartbeats), so a restarted node
/// does not briefly poll the bot next to the real leader.
const LEADERSHIP_SETTLE: Duration = Duration::from_secs(4);

/// Why the loop is draining before it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// `leave`: the tombstone went out and the secret is deleted; the state is already saved.
    Leave,
    /// SIGTERM/SIGINT: the goodbye went out; the node stays a member and saves its state.
    Stop,
}

/// When to dial a disconnected member next.
#[derive(Debug, Clone, Copy)]
struct Redial {
    at: Instant,
    backoff: Duration,
}

/// The node's event loop.
pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    state_dir: StateDir,
    pub(super) state: NetworkState,
    secret: NetworkSecret,
    pub(super) membership: Membership,
    topic: IdentTopic,
    pub(super) local_id: PeerId,
    public_addr: Multiaddr,
    pub(super) started: Instant,
    heartbeat_counter: u32,
    /// When a heartbeat was last sent early because a peer subscribed.
    last_eager_heartbeat: Option<Instant>,
    /// A peer subscribed while the last early heartbeat was too recent: send one at this
    /// instant, so a member that subscribes right after another is not left waiting for the
    /// regular heartbeat (up to two seconds, during which it sees this node offline).
    eager_heartbeat_at: Option<Instant>,
    leader: PeerId,
    leader_changes: u64,
    /// Members whose last connection closed: a failed redial is evidence they are down.
    suspects: HashSet<PeerId>,
    redials: HashMap<PeerId, Redial>,
    /// Remote address of the latest connection of each peer (for joiners without --public-addr).
    remote_addrs: HashMap<PeerId, Multiaddr>,
    rejections: Rejections,
    /// Set by `leave` or a graceful stop: exit at this instant, once the last message had time
    /// to go out.
    exit_at: Option<Instant>,
    exit: Exit,
    kad_protocol: libp2p::StreamProtocol,
    /// Leadership, settings and notices for the bot.
    signals: Signals,
    /// Members this process saw go offline: only their return is news for the owner.
    reported_offline: HashSet<PeerId>,
    /// Set once every member answered, or `LEADERSHIP_SETTLE` after the start, and kept.
    settled: bool,
    /// Set by a graceful stop (goodbye): this node hands over without announcing it.
    standing_down: bool,
    /// Calls in flight and the reboot action.
    pub(super) rpc: Rpc,
}

impl EventLoop {
    pub(super) fn new(
        mut swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        state_dir: StateDir,
        state: NetworkState,
        secret: NetworkSecret,
        reboot: RebootAction,
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
        let public_addr = public.to_multiaddr();
        swarm.add_external_address(public_addr.clone());
        let topic = gossip_topic(&state.network_id);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .context("cannot subscribe to the gossip topic")?;
        let mut membership = Membership::new(local_id, state.records(), OFFLINE_AFTER);
        let now = Instant::now();
        // Members alive when this node last stopped are assumed still alive (a restart in a
        // running network), so it names the network's leader at once instead of itself. Dials
        // start at once below; a refused one marks the member offline (it is a suspect).
        let mut suspects = HashSet::new();
        for peer in state.peers.iter().filter(|p| p.status == "alive") {
            if let Ok(id) = PeerId::from_str(&peer.node_id)
                && id != local_id
            {
                membership.assume_alive(&id, now);
                suspects.insert(id);
            }
        }
        let kad_protocol = kad_protocol(&state.network_id)?;
        let mut event_loop = Self {
            swarm,
            commands,
            state_dir,
            state,
            secret,
            leader: membership.leader(),
            membership,
            topic,
            local_id,
            public_addr,
            started: now,
            heartbeat_counter: 0,
            last_eager_heartbeat: None,
            eager_heartbeat_at: None,
            leader_changes: 0,
            suspects,
            redials: HashMap::new(),
            remote_addrs: HashMap::new(),
            rejections: Rejections::default(),
            exit_at: None,
            exit: Exit::Stop,
            kad_protocol,
            signals,
            reported_offline: HashSet::new(),
            settled: false,
            standing_down: false,
            rpc: Rpc::new(reboot),
        };
        for (id, record) in event_loop.membership.remote_members() {
            if let Ok(addr) = record.addr.parse::<HostPort>() {
                event_loop
                    .swarm
                    .behaviour_mut()
                    .kad
                    .add_address(id, addr.to_multiaddr());
            }
        }
        event_loop.dial_members(now);
        info!(
            name = %event_loop.state.node.name,
            node_id = %local_id,
            network = %event_loop.state.network_id,
            "node starting; leader is {}",
            event_loop.name_of(&event_loop.leader)
        );
        Ok(event_loop)
    }

    /// Runs until `shutdown` completes, `leave` finishes, or every client is gone.
    pub(super) async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        let mut liveness = tokio::time::interval(LIVENESS_TICK);
        let mut reconcile = tokio::time::interval_at(
            tokio::time::Instant::now() + RECONCILE_INTERVAL,
            RECONCILE_INTERVAL,
        );
        for timer in [&mut heartbeat, &mut liveness, &mut reconcile] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        tokio::pin!(shutdown);
        self.publish_leadership();
        let mut signalled = false;
        loop {
            let exit_at = self.exit_at;
            let eager_heartbeat_at = self.eager_heartbeat_at.filter(|_| exit_at.is_none());
            let rpc_deadline = self.rpc.next_deadline();
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = heartbeat.tick(), if exit_at.is_none() => self.publish_heartbeat(),
                _ = liveness.tick() => self.on_liveness_tick(),
                _ = reconcile.tick(), if exit_at.is_none() => {
                    self.publish_roster();
                    self.publish_settings();
                }
                () = sleep_until_opt(eager_heartbeat_at) => self.send_eager_heartbeat(),
                Some(finished) = self.rpc.next_finished() => self.on_rpc_finished(finished),
                () = sleep_until_opt(rpc_deadline) => self.on_rpc_deadlines(),
                () = sleep_until_opt(exit_at) => break,
                () = &mut shutdown, if !signalled => {
                    signalled = true;
                    if exit_at.is_none() && !self.say_goodbye() {
                        break;
                    }
                }
            }
        }
        match self.exit {
            Exit::Leave => info!("left the network; stopping"),
            Exit::Stop => {
                self.persist();
                info!("node stopped");
            }
        }
        Ok(())
    }

    /// Tells the peers this node is stopping so they re-elect at once, and schedules the exit
    /// after [`LEAVE_DRAIN`]. Returns false when no peer is connected: nothing to wait for.
    fn say_goodbye(&mut self) -> bool {
        let goodbye = Goodbye {
            node_id: self.local_id.to_base58(),
            seq: self.next_seq(),
        };
        self.exit = Exit::Stop;
        // Set before the election below, so the bot stops without announcing a handover (the
        // next leader announces it).
        self.standing_down = true;
        // From now on this node names the next leader, as its peers will once they read this.
        self.membership.stand_down();
        self.elect();
        if self.swarm.connected_peers().next().is_none() {
            return false;
        }
        self.publish(GossipBody::Goodbye(goodbye));
        info!("said goodbye to the peers; stopping");
        self.exit_at = Some(Instant::now() + LEAVE_DRAIN);
        true
    }

    /// The next number of this node's heartbeat sequence (`incarnation << 32 | counter`).
    fn next_seq(&mut self) -> u64 {
        self.heartbeat_counter = self.heartbeat_counter.wrapping_add(1);
        (u64::from(self.state.node.incarnation) << 32) | u64::from(self.heartbeat_counter)
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status_report());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_reports());
            }
            Command::Invite(ttl, reply) => {
                let _ = reply.send(self.create_invite(ttl));
            }
            Command::Leave(reply) => self.leave(reply),
            Command::MergeSettings(settings, reply) => {
                self.merge_settings(&settings, true);
                let _ = reply.send(self.state.settings.clone());
            }
            Command::PeersOf(target, reply) => self.rpc_peers(&target, reply),
            Command::Stats(target, reply) => self.rpc_stats(&target, reply),
            Command::Reboot {
                target,
                requested_by,
                reply,
            } => self.rpc_reboot(&target, requested_by, reply),
        }
    }

    fn status_report(&self) -> StatusReport {
        let view = self.membership.view();
        let alive = view.iter().filter(|p| p.status == Status::Alive).count();
        StatusReport {
            name: self.state.node.name.clone(),
            node_id: self.local_id.to_base58(),
            network_id: self.state.network_id.clone(),
            owner_username: self.state.owner_username.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: gossip::PROTOCOL_VERSION,
            leader: NodeRef {
                name: self.name_of(&self.leader),
                node_id: self.leader.to_base58(),
            },
            is_leader: self.leader == self.local_id,
            leader_changes: self.leader_changes,
            alive,
            offline: view.len() - alive,
            uptime_secs: self.started.elapsed().as_secs(),
            incarnation: self.state.node.incarnation,
            listen_addrs: self.swarm.listeners().map(ToString::to_string).collect(),
            connected_peers: self.swarm.connected_peers().count(),
            rejected_gossip: self.rejections.clone(),
            bot: self.bot_report(),
        }
    }

    fn bot_report(&self) -> BotReport {
        let settings = &self.state.settings;
        let metrics = self.signals.bot.snapshot();
        BotReport {
            enabled: self.state.bot_token.is_some(),
            polling: metrics.polling,
            owner_pinned: settings.owner_user_id.is_some(),
            last_update_id: settings.last_update_id,
            language: settings.language.clone(),
            handled_updates: metrics.handled,
            refused_updates: metrics.refused,
            conflicts: metrics.conflicts,
        }
    }

    fn peer_reports(&self) -> Vec<PeerReport> {
        self.membership
            .view()
            .into_iter()
            .map(|p| PeerReport {
                name: p.name,
                node_id: p.node_id.to_base58(),
                addr: p.addr,
                status: p.status.as_str().to_owned(),
                leader: p.leader,
            })
            .collect()
    }

    fn create_invite(&mut self, ttl: Ttl) -> Result<InviteReport, String> {
        let mut raw = [0u8; 16];
        rand::fill(&mut raw);
        let token = hex::encode(raw);
        let now = unix_now();
        let expires_at = now + ttl.duration().as_secs();
        let mut next = self.state.clone();
        next.invites
            .retain(|i| i.expires_at.max(i.used_at.unwrap_or(0)) + INVITE_RETENTION_SECS > now);
        next.invites.push(Invite {
            token_sha256: token_hash(&token),
            created_at: now,
            expires_at,
            used_at: None,
            used_by: None,
        });
        self.state_dir
            .save(&next)
            .map_err(|e| format!("cannot record the invite: {e:#}"))?;
        self.state = next;
        let seed: HostPort = self.state.node.public_addr.parse().map_err(|e: String| e)?;
        let link = JoinLink {
            seed,
            network_id: self.state.network_id.clone(),
            token,
            ttl: Some(ttl.to_string()),
            peer: self.local_id,
        };
        info!(ttl = %ttl, expires_at, "invite issued");
        Ok(InviteReport {
            link: link.to_string(),
            expires_at,
            ttl: ttl.to_string(),
        })
    }

    fn leave(&mut self, reply: oneshot::Sender<Result<(), String>>) {
        let Some(tombstone) = self.membership.leave() else {
            let _ = reply.send(Err("this node is not in its own member list".to_owned()));
            return;
        };
        self.publish(GossipBody::Roster(RosterUpdate {
            from: self.local_id.to_base58(),
            records: vec![tombstone],
        }));
        let mut next = self.state.clone();
        next.set_records(&self.membership.records(), |_| "offline");
        next.left = true;
        next.network_secret = None;
        next.bot_token = None;
        next.invites.clear();
        if let Err(error) = self.state_dir.save(&next) {
            let _ = reply.send(Err(format!("cannot record the departure: {error:#}")));
            return;
        }
        self.state = next;
        info!(network = %self.state.network_id, "left the network; the network secret was deleted");
        let _ = reply.send(Ok(()));
        self.exit = Exit::Leave;
        self.exit_at = Some(Instant::now() + LEAVE_DRAIN);
        self.publish_leadership();
    }

    // ---- network settings ----

    /// Merges settings from the bot (`publish`) or from gossip; on a change, persists them and
    /// tells the bot. The bot's own changes are published at once, so the next leader has them.
    fn merge_settings(&mut self, incoming: &NetworkSettings, publish: bool) {
        if !self.state.settings.merge(incoming) {
            return;
        }
        debug!(settings = ?self.state.settings, "network settings changed");
        self.persist();
        self.signals
            .settings
            .send_replace(self.state.settings.clone());
        if publish {
            self.publish_settings();
        }
    }

    fn publish_settings(&mut self) {
        self.publish(GossipBody::Settings(SettingsUpdate {
            from: self.local_id.to_base58(),
            settings: self.state.settings.clone(),
        }));
    }

    /// Tells the bot whether to poll: this node leads, has settled, and is not leaving.
    fn publish_leadership(&mut self) {
        self.settled = self.settled
            || self.started.elapsed() >= LEADERSHIP_SETTLE
            || self
                .membership
                .remote_members()
                .all(|(id, _)| self.membership.status(id) == Some(Status::Alive));
        let next = Leadership {
            is_local: self.leader == self.local_id && self.settled && self.exit_at.is_none(),
            leader_name: self.name_of(&self.leader),
            leaving: self.exit_at.is_some() || self.standing_down,
        };
        self.signals.leadership.send_if_modified(|current| {
            let changed = *current != next;
            if changed {
                *current = next;
            }
            changed
        });
    }

    /// Queues membership events for the owner on the node that led before or after them: the
    /// one whose bot will speak (see `bot::notify`), so exactly one node tells.
    fn notify(&mut self, events: Vec<NetworkEvent>, was_leading: bool) {
        if events.is_empty() || !(was_leading || self.signals.leadership.borrow().is_local) {
            return;
        }
        for event in events {
            // No receiver (bot off) is fine: the notice is simply not needed.
            let _ = self.signals.notices.send(event);
        }
    }

    // ---- gossip ----

    fn publish(&mut self, body: GossipBody) {
        let bytes = gossip::seal(&self.secret, &body);
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

    fn publish_heartbeat(&mut self) {
        let seq = self.next_seq();
        let mut addrs: Vec<String> = vec![self.public_addr.to_string()];
        addrs.extend(self.swarm.listeners().map(ToString::to_string));
        addrs.dedup();
        let heartbeat = Heartbeat {
            node_id: self.local_id.to_base58(),
            name: self.state.node.name.clone(),
            priority: self.state.node.priority,
            addrs,
            seq,
            protocol_version: gossip::PROTOCOL_VERSION,
            uptime_secs: self.started.elapsed().as_secs(),
        };
        self.publish(GossipBody::Heartbeat(heartbeat));
    }

    /// An extra heartbeat for peers that just subscribed. Spaced out so that a restart of many
    /// peers at once is not answered by a storm; one asked for too soon is sent later.
    fn send_eager_heartbeat(&mut self) {
        let now = Instant::now();
        match self.last_eager_heartbeat {
            Some(last) if now < last + EAGER_HEARTBEAT_GAP => {
                self.eager_heartbeat_at = Some(last + EAGER_HEARTBEAT_GAP);
            }
            _ => {
                self.last_eager_heartbeat = Some(now);
                self.eager_heartbeat_at = None;
                self.publish_heartbeat();
                // A restarted member may have missed settings changes while it was down.
                self.publish_settings();
            }
        }
    }

    fn publish_roster(&mut self) {
        let records = self.membership.records();
        self.publish(GossipBody::Roster(RosterUpdate {
            from: self.local_id.to_base58(),
            records,
        }));
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let verdict = self.judge_gossip(&message);
        let acceptance = match verdict {
            Ok(()) => MessageAcceptance::Accept,
            Err(reason) => {
                debug!(from = %source, author = ?message.source, reason, "gossip message refused");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    fn judge_gossip(&mut self, message: &gossipsub::Message) -> Result<(), &'static str> {
        let body = match gossip::open(&self.secret, &message.data) {
            Ok(body) => body,
            Err(gossip::GossipError::BadMac) => {
                self.rejections.bad_mac += 1;
                return Err("bad mac");
            }
            Err(gossip::GossipError::IncompatibleVersion(_)) => {
                self.rejections.incompatible_version += 1;
                return Err("incompatible version");
            }
            Err(_) => {
                self.rejections.malformed += 1;
                return Err("malformed");
            }
        };
        // Gossipsub checked the signature of `message.source`; it must be the body's author.
        let author = PeerId::from_str(body.author()).ok();
        if message.source.is_none() || author != message.source {
            self.rejections.wrong_signer += 1;
            return Err("signer is not the author");
        }
        let Some(author) = author else {
            return Err("no author");
        };
        if !self.membership.is_member(&author) {
            self.rejections.non_member += 1;
            return Err("not a member");
        }
        match body {
            GossipBody::Heartbeat(heartbeat) => {
                let connected = self.swarm.is_connected(&author);
                match self
                    .membership
                    .on_heartbeat(&heartbeat, connected, Instant::now())
                {
                    Ok(change) => self.apply_changes(change.into_iter().collect()),
                    Err(HeartbeatRejection::Replay) => {
                        self.rejections.replay += 1;
                        return Err("replayed sequence number");
                    }
                    Err(HeartbeatRejection::NonMember) => {
                        self.rejections.non_member += 1;
                        return Err("not a member");
                    }
                }
            }
            GossipBody::Roster(roster) => {
                let changes = self.membership.merge(&roster.records);
                self.apply_changes(changes);
            }
            GossipBody::Settings(update) => self.merge_settings(&update.settings, false),
            GossipBody::Goodbye(goodbye) => match self.membership.on_goodbye(&goodbye) {
                Ok(change) => self.apply_changes(change.into_iter().collect()),
                Err(HeartbeatRejection::Replay) => {
                    self.rejections.replay += 1;
                    return Err("replayed sequence number");
                }
                Err(HeartbeatRejection::NonMember) => {
                    self.rejections.non_member += 1;
                    return Err("not a member");
                }
            },
        }
        Ok(())
    }

    // ---- membership ----

    fn on_liveness_tick(&mut self) {
        let now = Instant::now();
        let changes = self.membership.tick(now);
        self.apply_changes(changes);
        self.drop_strangers(now);
        if self.exit_at.is_none() {
            self.dial_members(now);
        }
        self.publish_leadership();
    }

    /// Logs changes, keeps connections and the state file in step, and re-elects.
    fn apply_changes(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut roster_changed = false;
        let mut events = Vec::new();
        for change in &changes {
            match change {
                Change::Joined(id) => {
                    roster_changed = true;
                    info!(node = %self.name_of(id), node_id = %id, "member joined");
                    self.redials.remove(id);
                    events.push(NetworkEvent::Joined(self.name_of(id)));
                }
                Change::Left(id) => {
                    roster_changed = true;
                    info!(node_id = %id, "member left the network");
                    self.suspects.remove(id);
                    self.redials.remove(id);
                    self.reported_offline.remove(id);
                    let _ = self.swarm.disconnect_peer_id(*id);
                    events.push(NetworkEvent::Left(self.departed_name(id)));
                }
                Change::Alive(id) => {
                    info!(node = %self.name_of(id), node_id = %id, "member alive");
                    if self.reported_offline.remove(id) {
                        events.push(NetworkEvent::Back(self.name_of(id)));
                    }
                }
                Change::Offline(id, reason) => {
                    info!(node = %self.name_of(id), node_id = %id, ?reason, "member offline");
                    self.reported_offline.insert(*id);
                    events.push(NetworkEvent::Offline(self.name_of(id)));
                }
            }
        }
        if roster_changed {
            self.dial_members(Instant::now());
        }
        let was_leading = self.signals.leadership.borrow().is_local;
        self.elect();
        self.notify(events, was_leading);
        self.persist();
    }

    /// The name of a node, tombstones included (a departed node has no current record).
    fn departed_name(&self, id: &PeerId) -> String {
        let node_id = id.to_base58();
        self.membership
            .records()
            .into_iter()
            .find(|r| r.node_id == node_id)
            .map_or(node_id, |r| r.name)
    }

    fn elect(&mut self) {
        let leader = self.membership.leader();
        if leader != self.leader {
            self.leader_changes += 1;
            info!(
                previous = %self.name_of(&self.leader),
                leader = %self.name_of(&leader),
                node_id = %leader,
                this_node = leader == self.local_id,
                "leader changed"
            );
            self.leader = leader;
        }
        self.publish_leadership();
    }

    /// Dials every member we are not connected to whose redial time has come.
    fn dial_members(&mut self, now: Instant) {
        let targets: Vec<(PeerId, Vec<Multiaddr>)> = self
            .membership
            .remote_members()
            .filter(|(id, _)| !self.swarm.is_connected(id))
            .filter(|(id, _)| self.redials.get(id).is_none_or(|r| r.at <= now))
            .map(|(id, record)| (*id, self.addresses_of(id, record)))
            .collect();
        for (peer, addrs) in targets {
            let backoff = self.redials.get(&peer).map_or(Duration::from_secs(1), |r| {
                (r.backoff * 2).min(MAX_REDIAL_BACKOFF)
            });
            self.redials.insert(
                peer,
                Redial {
                    at: now + backoff,
                    backoff,
                },
            );
            self.dial(peer, addrs);
        }
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            debug!(%peer, %error, "dial not started");
        }
    }

    pub(super) fn addresses_of(&self, id: &PeerId, record: &MemberRecord) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = record
            .addr
            .parse::<HostPort>()
            .map(|a| a.to_multiaddr())
            .into_iter()
            .collect();
        for announced in self.membership.announced_addrs(id) {
            if let Ok(addr) = announced.parse::<Multiaddr>()
                && !addrs.contains(&addr)
                && !is_unspecified(&addr)
            {
                addrs.push(addr);
            }
        }
        addrs
    }

    pub(super) fn name_of(&self, id: &PeerId) -> String {
        self.membership
            .record(id)
            .map_or_else(|| id.to_base58(), |r| r.name.clone())
    }

    /// Writes the member list and statuses to the state file. A failure is logged, not fatal:
    /// the node keeps running on what it knows and tries again at the next change.
    pub(super) fn persist(&mut self) {
        let membership = &self.membership;
        let status_of = |node_id: &str| {
            PeerId::from_str(node_id)
                .ok()
                .and_then(|id| membership.status(&id))
                .map_or("offline", Status::as_str)
        };
        let mut next = self.state.clone();
        next.set_records(&membership.records(), status_of);
        match self.state_dir.save(&next) {
            Ok(()) => self.state = next,
            Err(error) => warn!(
                error = format!("{error:#}"),
                "cannot save the network state"
            ),
        }
    }

    // ---- join (seed side) ----

    fn on_join_request(
        &mut self,
        peer: PeerId,
        request: JoinRequest,
        channel: ResponseChannel<JoinResponse>,
    ) {
        let response = self.admit(peer, request);
        match &response {
            Ok(accepted) => {
                info!(node = %accepted.record.name, node_id = %peer, "admitted a new node")
            }
            Err(refusal) => warn!(from = %peer, %refusal, "join refused"),
        }
        if self
            .swarm
            .behaviour_mut()
            .join
            .send_response(channel, response)
            .is_err()
        {
            warn!(from = %peer, "the joiner went away before the answer");
        }
    }

    /// Checks a join and, if it is good, records it. Every refusal leaves the state untouched.
    fn admit(&mut self, peer: PeerId, request: JoinRequest) -> JoinResponse {
        if request.network_id != self.state.network_id {
            return Err(JoinRefusal::WrongNetwork {
                actual: self.state.network_id.clone(),
            });
        }
        let name: ServerName = request.name.parse().map_err(JoinRefusal::Invalid)?;
        let hash = token_hash(&request.token);
        let now = unix_now();
        let Some(index) = self
            .state
            .invites
            .iter()
            .position(|i| i.token_sha256 == hash)
        else {
            return Err(JoinRefusal::UnknownToken);
        };
        let invite = &self.state.invites[index];
        if invite.used_at.is_some() {
            return Err(JoinRefusal::TokenUsed);
        }
        if now >= invite.expires_at {
            return Err(JoinRefusal::ExpiredToken);
        }
        if self
            .membership
            .find_by_name(name.as_str())
            .is_some_and(|owner| owner != peer)
        {
            return Err(JoinRefusal::NameTaken(name.as_str().to_owned()));
        }
        if self.membership.is_member(&peer) {
            return Err(JoinRefusal::Invalid(
                "this node is already a member".to_owned(),
            ));
        }
        let addr = match &request.addr {
            Some(addr) => addr.parse::<HostPort>().map_err(JoinRefusal::Invalid)?,
            None => self.observed_address(&peer, request.listen_port)?,
        };
        // Record first, on a copy: if the state cannot be written, nothing changed.
        let mut trial = Membership::new(self.local_id, self.membership.records(), OFFLINE_AFTER);
        let record = trial.admit(
            peer,
            name.as_str().to_owned(),
            addr.to_string(),
            request.priority,
        );
        let mut next = self.state.clone();
        next.invites[index].used_at = Some(now);
        next.invites[index].used_by = Some(peer.to_base58());
        next.set_records(&trial.records(), |_| "offline");
        if let Err(error) = self.state_dir.save(&next) {
            return Err(JoinRefusal::SeedFailure(format!("{error:#}")));
        }
        self.state.invites = next.invites;
        self.membership.merge(std::slice::from_ref(&record));
        self.apply_changes(vec![Change::Joined(peer)]);
        self.publish_roster();
        let secret = StoredSecret::from_secret(&self.secret);
        Ok(JoinAccepted {
            network_id: self.state.network_id.clone(),
            network_secret: secret.expose().to_owned(),
            owner_username: self.state.owner_username.clone(),
            record,
            members: self.membership.records(),
            bot_token: self.state.bot_token.as_ref().map(|t| t.expose().to_owned()),
            settings: self.state.settings.clone(),
        })
    }

    fn observed_address(&self, peer: &PeerId, port: u16) -> Result<HostPort, JoinRefusal> {
        let ip = self.remote_addrs.get(peer).and_then(|addr| {
            addr.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(ip.to_string()),
                Protocol::Ip6(ip) => Some(ip.to_string()),
                _ => None,
            })
        });
        match ip {
            Some(host) if port != 0 => Ok(HostPort { host, port }),
            _ => Err(JoinRefusal::Invalid(
                "no public address given and none could be observed".to_owned(),
            )),
        }
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                self.remote_addrs
                    .insert(peer_id, endpoint.get_remote_address().clone());
                self.suspects.remove(&peer_id);
                self.redials.remove(&peer_id);
                self.membership.on_connected(&peer_id);
                // A joiner needs the connection for its Join; any other stranger gets nothing.
                self.expire_stranger(peer_id, STRANGER_IDLE_LIMIT);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.remote_addrs.remove(&peer_id);
                if self.membership.is_member(&peer_id) && self.exit_at.is_none() {
                    // Its process may have died: a redial tells at once (refused) or in time.
                    self.suspects.insert(peer_id);
                    if let Some(record) = self.membership.record(&peer_id).cloned() {
                        let addrs = self.addresses_of(&peer_id, &record);
                        self.dial(peer_id, addrs);
                    }
                }
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
                if self.suspects.remove(&peer) {
                    let change = self.membership.on_unreachable(&peer);
                    self.apply_changes(change.into_iter().collect());
                }
                debug!(%peer, %error, "dial failed");
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
            }) => {
                self.on_gossip(propagation_source, message_id, message);
            }
            // A (re)started member: tell it at once that we are alive.
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. })
                if self.membership.is_member(&peer_id) && self.exit_at.is_none() =>
            {
                self.send_eager_heartbeat();
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&self.kad_protocol)
                    && self.membership.is_member(&peer_id) =>
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
            }) => self.on_join_request(peer, request, channel),
            BehaviourEvent::Rpc(event) => self.on_rpc_event(event),
            BehaviourEvent::Join(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                debug!(%peer, %error, "inbound join failed");
            }
            _ => {}
        }
    }
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
