//! The node side of RPC (GetPeers, GetStats, Reboot, Docker, ContainerAlert): forwarding the
//! local client's calls to their target and matching the answers, and answering members' calls.
//! A reboot or container request made for someone ([`Requester`]) is checked again here, on the
//! node that acts, against this node's copy of the roles ([`access::check`]); container requests
//! run off the event loop on this node's Docker [`Engine`]. A container alert from a member is
//! handed to this node's bot (the leader's) as a [`NetworkEvent::Container`]. The event loop owns an
//! [`Rpc`] and hands it the Swarm and the protocol core it needs for each step; what RPC must
//! tell the core (a refused stranger, a reboot that wants the state saved) comes back as a
//! [`Followup`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use constella_behaviours::membership::{MemberView, Status};
use constella_behaviours::network_keys::{self, Purpose};
use constella_behaviours::node::Node;
use constella_behaviours::rpc::{
    ContainerAlert, DockerAnswer, DockerError, DockerRequest, History, MAX_REQUESTED_BY_CHARS,
    Requester, RpcAnswer, RpcRefusal, RpcRequest, RpcResponse, SealedToken, SecretToken,
};
use constella_behaviours::settings::NetworkSettings;
use constella_behaviours::{Behaviour, RPC_TIMEOUT};
use constella_keys::KeyStore;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::error::ClientError;
use super::log_limit::LogLimit;
use super::signals::NetworkEvent;
use super::swarm_setup::dial_addresses;
use crate::access::{self, Action};
use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::docker::Engine;
use crate::monitor::{self, HistoryReader};
use crate::reboot::RebootAction;
use crate::services::Services;
use crate::state::StoredSecret;
use crate::stats::{self, NodeStats, RebootAccepted};
use constella_behaviours::rpc::{ServicesAnswer, ServicesRequest};

/// Most calls this node waits on at once; more are refused rather than queued without bound.
const MAX_PENDING: usize = 64;
/// Most stats measurements running at once (each holds a blocking thread for ~200 ms).
const MAX_PARALLEL_STATS: usize = 2;
/// Answers of measurements waiting for the event loop.
const FINISHED_QUEUE: usize = 16;
/// Time between accepting a reboot and taking it, so the answer reaches the caller first.
const REBOOT_DELAY: Duration = Duration::from_secs(1);
/// Most container requests of members running at once (a list takes the engine ~1 s).
const MAX_PARALLEL_DOCKER: usize = 4;
/// How long a confirmation the target first hears of is remembered as claimed (its own
/// expiry is two minutes; see `bot::callback::CONFIRM_TTL_SECS`).
const CONFIRMATION_CLAIM_SECS: u64 = 120;

/// Where a call's answer goes.
#[derive(Debug)]
pub(super) enum Reply {
    /// A `GetPeers` for [`Client::peers_of`](super::Client::peers_of).
    Peers(oneshot::Sender<Result<Vec<MemberView>, ClientError>>),
    /// A `GetStats` for [`Client::stats`](super::Client::stats).
    Stats(oneshot::Sender<Result<NodeStats, ClientError>>),
    /// A `Reboot` for [`Client::reboot`](super::Client::reboot).
    Reboot(oneshot::Sender<Result<RebootAccepted, ClientError>>),
    /// A `Docker` for [`Client::docker`](super::Client::docker).
    Docker(oneshot::Sender<Result<DockerAnswer, DockerError>>),
    /// A `ContainerAlert` sent to the leader: nobody waits for it.
    Noted,
    /// A `GetBotToken` for [`Client::bot_token_of`](super::Client::bot_token_of), asked of
    /// `from`: its answer must be sealed by `from`'s PQ4 identity.
    BotToken {
        from: PeerId,
        reply: oneshot::Sender<Result<Option<SecretToken>, ClientError>>,
    },
    /// A `GetHistory` for [`Client::history`](super::Client::history).
    History(oneshot::Sender<Result<History, ClientError>>),
    /// A `Services` for [`Client::services`](super::Client::services).
    Services(oneshot::Sender<Result<ServicesAnswer, String>>),
}

impl Reply {
    fn fail(self, error: ClientError) {
        // A caller that gave up has dropped its receiver: nothing to tell.
        match self {
            Reply::Peers(tx) => drop(tx.send(Err(error))),
            Reply::Stats(tx) => drop(tx.send(Err(error))),
            Reply::Reboot(tx) => drop(tx.send(Err(error))),
            Reply::Docker(tx) => drop(tx.send(Err(docker_error(error)))),
            Reply::Noted => debug!(%error, "a container alert did not reach the leader"),
            Reply::BotToken { reply, .. } => drop(reply.send(Err(error))),
            Reply::History(tx) => drop(tx.send(Err(error))),
            Reply::Services(tx) => drop(tx.send(Err(error.to_string()))),
        }
    }

    /// Hands over the answer if its kind matches the question.
    fn answer(self, name: &str, answer: RpcAnswer) {
        match (self, answer) {
            (Reply::Peers(tx), RpcAnswer::Peers(peers)) => drop(tx.send(Ok(peers))),
            (Reply::Stats(tx), RpcAnswer::Stats(stats)) => drop(tx.send(Ok(*stats))),
            (Reply::Reboot(tx), RpcAnswer::Reboot(accepted)) => drop(tx.send(Ok(accepted))),
            (Reply::Docker(tx), RpcAnswer::Docker(result)) => drop(tx.send(result)),
            (Reply::Noted, RpcAnswer::Noted) => {}
            (Reply::History(tx), RpcAnswer::History(history)) => drop(tx.send(Ok(history))),
            (Reply::Services(tx), RpcAnswer::Services(result)) => drop(tx.send(result)),
            (reply, _) => reply.fail(ClientError::BadAnswer {
                node: name.to_owned(),
                problem: "gave an answer of the wrong kind".to_owned(),
            }),
        }
    }
}

/// A call sent to another node, waiting for its answer.
#[derive(Debug)]
struct Pending {
    name: String,
    /// Whether the membership had the target offline when the call was made: a failure is
    /// then "offline", otherwise "unreachable" (believed alive, yet no answer).
    offline: bool,
    deadline: Instant,
    reply: Reply,
}

impl Pending {
    fn unreachable(&self) -> ClientError {
        if self.offline {
            ClientError::Offline(self.name.clone())
        } else {
            ClientError::Unreachable(self.name.clone())
        }
    }
}

/// A measurement finished off the event loop, to be sent back to the member that asked.
#[derive(Debug)]
pub(super) struct Finished {
    peer: PeerId,
    channel: ResponseChannel<RpcResponse>,
    response: RpcResponse,
}

/// A container request's failure to reach its node, as a container error.
fn docker_error(error: ClientError) -> DockerError {
    match error {
        ClientError::UnknownNode(name) => DockerError::NoSuchNode(name),
        other => DockerError::Unreachable(other.to_string()),
    }
}

/// A reboot as asked for: who asked (for the log, and for the target's check) and the bot's
/// confirmation, if it came from one.
#[derive(Debug)]
pub(super) struct RebootAsk {
    pub requested_by: String,
    pub by: Option<Requester>,
    pub confirmation: Option<String>,
}

/// What the event loop must tell the core after an RPC step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Followup {
    /// Nothing.
    None,
    /// A non-member's request was refused or answered: close its connection soon.
    Stranger(PeerId),
    /// A reboot was accepted: save the state now.
    Persist,
    /// A reboot confirmed in the bot was accepted: merge its claim (marked done) into the
    /// network settings, then save the state now.
    Claimed(Box<NetworkSettings>),
}

/// Which node a call is for.
enum Target {
    Local,
    Remote { id: PeerId, name: String },
}

/// The RPC state of the event loop.
#[derive(Debug)]
pub(super) struct Rpc {
    pending: HashMap<OutboundRequestId, Pending>,
    reboot: Arc<RebootAction>,
    /// Set from accepting a reboot until its action finished: a second request in between is
    /// answered "accepted" but does not act twice.
    rebooting: Arc<AtomicBool>,
    measuring: Arc<Semaphore>,
    finished_tx: mpsc::Sender<Finished>,
    finished_rx: mpsc::Receiver<Finished>,
    started: Instant,
    /// Refusals of strangers are logged at most once a minute per peer.
    refusals: LogLimit,
    /// This node's Docker engine, for members' container requests.
    docker: Engine,
    docker_permits: Arc<Semaphore>,
    /// Container alerts for this node's bot (the leader's).
    notices: broadcast::Sender<NetworkEvent>,
    /// The owner named at `init`: with the settings, who may do what.
    initial_owner: String,
    /// This node's bot token, for members that fetch it.
    bot_token: watch::Receiver<Option<StoredSecret>>,
    /// Where refusals by role and reboots asked by other members are recorded.
    audit: Option<AuditLog>,
    /// This node's metric history, for `GetHistory` (none in a node built without it).
    history: Option<HistoryReader>,
    /// This node's watched systemd units.
    services: Option<Services>,
}

impl Rpc {
    pub(super) fn new(
        reboot: RebootAction,
        started: Instant,
        docker: Engine,
        notices: broadcast::Sender<NetworkEvent>,
        initial_owner: String,
        bot_token: watch::Receiver<Option<StoredSecret>>,
        audit: Option<AuditLog>,
    ) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel(FINISHED_QUEUE);
        Self {
            pending: HashMap::new(),
            reboot: Arc::new(reboot),
            rebooting: Arc::new(AtomicBool::new(false)),
            measuring: Arc::new(Semaphore::new(MAX_PARALLEL_STATS)),
            finished_tx,
            finished_rx,
            started,
            refusals: LogLimit::default(),
            docker,
            docker_permits: Arc::new(Semaphore::new(MAX_PARALLEL_DOCKER)),
            notices,
            initial_owner,
            bot_token,
            audit,
            history: None,
            services: None,
        }
    }

    /// Answers `Services` for this node's watched systemd units.
    pub(super) fn with_services(mut self, services: Services) -> Self {
        self.services = Some(services);
        self
    }

    /// The services answer of this node, off the event loop.
    fn services_job(
        &self,
        request: ServicesRequest,
    ) -> impl std::future::Future<Output = Result<ServicesAnswer, String>> + Send + 'static {
        let services = self.services.clone();
        async move {
            match services {
                Some(services) => services.answer(request).await,
                None => Err("this node does not watch systemd units".to_owned()),
            }
        }
    }

    /// A request about `target`'s watched systemd units, made for `by`.
    pub(super) fn services(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        (request, by): (ServicesRequest, Requester),
        reply: oneshot::Sender<Result<ServicesAnswer, String>>,
    ) {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error.to_string()))),
            Ok(Target::Local) => {
                if let Err(refusal) =
                    self.permitted(core, &by, access::services_action(&request), "this node")
                {
                    drop(reply.send(Err(refusal.to_string())));
                    return;
                }
                let job = self.services_job(request);
                tokio::spawn(async move {
                    let _ = reply.send(job.await);
                });
            }
            Ok(Target::Remote { id, name }) => {
                let request = RpcRequest::Services { request, by };
                self.call(swarm, core, id, name, request, Reply::Services(reply));
            }
        }
    }

    /// Serves `GetHistory` from this node's sampled history.
    pub(super) fn with_history(mut self, history: HistoryReader) -> Self {
        self.history = Some(history);
        self
    }

    /// The earliest deadline of a waiting call (for [`sleep_until_opt`]).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// The next finished measurement.
    pub(super) async fn next_finished(&mut self) -> Option<Finished> {
        self.finished_rx.recv().await
    }

    // ---- calls from the local client ----

    /// `GetPeers` of `target` (this node answers from its own view).
    pub(super) fn peers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        reply: oneshot::Sender<Result<Vec<MemberView>, ClientError>>,
    ) {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error))),
            Ok(Target::Local) => drop(reply.send(Ok(core.view()))),
            Ok(Target::Remote { id, name }) => {
                self.call(
                    swarm,
                    core,
                    id,
                    name,
                    RpcRequest::GetPeers,
                    Reply::Peers(reply),
                );
            }
        }
    }

    /// `GetStats` of `target`.
    pub(super) fn stats(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        reply: oneshot::Sender<Result<NodeStats, ClientError>>,
    ) {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error))),
            Ok(Target::Local) => {
                let job = self.measure_job(core);
                tokio::spawn(async move {
                    let _ = reply.send(job.run().await.map_err(ClientError::Storage));
                });
            }
            Ok(Target::Remote { id, name }) => {
                self.call(
                    swarm,
                    core,
                    id,
                    name,
                    RpcRequest::GetStats,
                    Reply::Stats(reply),
                );
            }
        }
    }

    /// `GetHistory` of `target`.
    pub(super) fn history(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        (metrics, range_secs): (Vec<String>, u64),
        reply: oneshot::Sender<Result<History, ClientError>>,
    ) {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error))),
            Ok(Target::Local) => {
                let job = self.history_job(core, metrics, range_secs);
                tokio::spawn(async move {
                    let _ = reply.send(job.await.map_err(ClientError::Invalid));
                });
            }
            Ok(Target::Remote { id, name }) => {
                let request = RpcRequest::GetHistory {
                    metrics,
                    range_secs,
                };
                self.call(swarm, core, id, name, request, Reply::History(reply));
            }
        }
    }

    /// `Reboot` of `target`.
    pub(super) fn reboot(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        ask: RebootAsk,
        reply: oneshot::Sender<Result<RebootAccepted, ClientError>>,
    ) -> Followup {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error))),
            Ok(Target::Local) => {
                let name = core.local().name.clone();
                let local = core.local().id;
                let result = self.reboot_here(core, ask, local, "the local control socket");
                let (result, followup) = match result {
                    Ok((accepted, followup)) => (Ok(accepted), followup),
                    Err(refusal) => (
                        Err(ClientError::Refused {
                            node: name,
                            reason: refusal.to_string(),
                        }),
                        Followup::None,
                    ),
                };
                let _ = reply.send(result);
                return followup;
            }
            Ok(Target::Remote { id, name }) => {
                let RebootAsk {
                    requested_by,
                    by,
                    confirmation,
                } = ask;
                let request = RpcRequest::Reboot {
                    requested_by,
                    by,
                    confirmation,
                };
                self.call(swarm, core, id, name, request, Reply::Reboot(reply));
            }
        }
        Followup::None
    }

    /// A container request for another member, made for `by` (this node's own are answered
    /// by `docker::Containers` without the event loop).
    pub(super) fn docker(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        (request, by): (DockerRequest, Requester),
        reply: oneshot::Sender<Result<DockerAnswer, DockerError>>,
    ) {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(docker_error(error)))),
            Ok(Target::Local) => {
                let engine = self.docker.clone();
                tokio::spawn(async move {
                    let _ = reply.send(engine.answer(request).await);
                });
            }
            Ok(Target::Remote { id, name }) => {
                let request = RpcRequest::Docker { request, by };
                self.call(swarm, core, id, name, request, Reply::Docker(reply));
            }
        }
    }

    /// The bot token of `target`, another member.
    pub(super) fn bot_token(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        target: &str,
        reply: oneshot::Sender<Result<Option<SecretToken>, ClientError>>,
    ) {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error))),
            Ok(Target::Local) => drop(reply.send(Ok(self.local_token()))),
            Ok(Target::Remote { id, name }) => {
                let request = RpcRequest::GetBotToken;
                let reply = Reply::BotToken { from: id, reply };
                self.call(swarm, core, id, name, request, reply);
            }
        }
    }

    fn local_token(&self) -> Option<SecretToken> {
        self.bot_token
            .borrow()
            .as_ref()
            .map(|token| SecretToken::new(token.expose().to_owned()))
    }

    /// A container alert of this node: to this node's bot if it leads, else to the leader.
    pub(super) fn alert(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        alert: ContainerAlert,
    ) {
        let leader = core.leader();
        if leader == core.local().id {
            // No receiver (bot off) is fine: nobody to tell.
            let _ = self.notices.send(NetworkEvent::Container(alert));
            return;
        }
        let name = core.name_of(&leader);
        let request = RpcRequest::ContainerAlert(alert);
        self.call(swarm, core, leader, name, request, Reply::Noted);
    }

    fn call(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        id: PeerId,
        name: String,
        request: RpcRequest,
        reply: Reply,
    ) {
        if self.pending.len() >= MAX_PENDING {
            reply.fail(ClientError::Busy(MAX_PENDING));
            return;
        }
        if !swarm.is_connected(&id) {
            swarm.behaviour_mut().kad.get_closest_peers(id);
        }
        let addrs = dial_addresses(&core.addresses_of(&id));
        let request_id = swarm
            .behaviour_mut()
            .rpc
            .send_request_with_addresses(&id, request, addrs);
        self.pending.insert(
            request_id,
            Pending {
                offline: core.membership().status(&id) == Some(Status::Offline),
                name,
                deadline: Instant::now() + RPC_TIMEOUT,
                reply,
            },
        );
    }

    /// Fails the calls whose deadline has passed.
    pub(super) fn expire(&mut self, now: Instant) {
        let expired: Vec<OutboundRequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for request_id in expired {
            if let Some(pending) = self.pending.remove(&request_id) {
                debug!(member = %pending.name, "RPC call timed out");
                let error = pending.unreachable();
                pending.reply.fail(error);
            }
        }
    }

    // ---- the rpc behaviour's events ----

    pub(super) fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        pq4: &mut KeyStore,
        event: request_response::Event<RpcRequest, RpcResponse>,
    ) -> Followup {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => return self.on_request(swarm, core, pq4, peer, request, channel),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(pending) = self.pending.remove(&request_id) {
                    match response {
                        Ok(RpcAnswer::BotToken(sealed)) => match pending.reply {
                            Reply::BotToken { from, reply } => {
                                let opened = open_token(core, pq4, &from, &pending.name, sealed);
                                drop(reply.send(opened));
                            }
                            other => other.answer(&pending.name, RpcAnswer::BotToken(sealed)),
                        },
                        Ok(answer) => pending.reply.answer(&pending.name, answer),
                        Err(refusal) => pending.reply.fail(ClientError::Refused {
                            node: pending.name,
                            reason: refusal.to_string(),
                        }),
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(pending) = self.pending.remove(&request_id) {
                    debug!(member = %pending.name, %error, "RPC call failed");
                    let error = match error {
                        OutboundFailure::UnsupportedProtocols => ClientError::BadAnswer {
                            node: pending.name.clone(),
                            problem: "does not speak the RPC protocol (an older version?)"
                                .to_owned(),
                        },
                        OutboundFailure::Io(error) => ClientError::BadAnswer {
                            node: pending.name.clone(),
                            problem: format!("sent an unreadable answer: {error}"),
                        },
                        OutboundFailure::DialFailure
                        | OutboundFailure::Timeout
                        | OutboundFailure::ConnectionClosed => pending.unreachable(),
                    };
                    pending.reply.fail(error);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // A malformed or oversized frame fails its own stream only.
                if core.membership().is_member(&peer) {
                    warn!(%peer, %error, "RPC request failed");
                } else if let Some(held_back) = self.refusals.admit(peer, Instant::now()) {
                    warn!(%peer, %error, held_back, "RPC request from a stranger failed");
                }
                return stranger(core, peer);
            }
            request_response::Event::ResponseSent { peer, .. } => return stranger(core, peer),
        }
        Followup::None
    }

    fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        core: &Node,
        pq4: &KeyStore,
        peer: PeerId,
        request: RpcRequest,
        channel: ResponseChannel<RpcResponse>,
    ) -> Followup {
        if !core.membership().is_member(&peer) {
            if let Some(held_back) = self.refusals.admit(peer, Instant::now()) {
                warn!(
                    %peer,
                    ?request,
                    held_back,
                    "RPC refused: the caller is not a member (held_back: refusals of this peer not logged in the last minute)"
                );
            }
            respond(swarm, peer, channel, Err(RpcRefusal::NotMember));
            return Followup::None;
        }
        let caller = core.name_of(&peer);
        match request {
            RpcRequest::GetPeers => {
                let peers = core.view();
                respond(swarm, peer, channel, Ok(RpcAnswer::Peers(peers)));
            }
            RpcRequest::GetStats => {
                debug!(%caller, "stats requested");
                let job = self.measure_job(core);
                self.answer_later(peer, channel, async move {
                    job.run()
                        .await
                        .map(|s| RpcAnswer::Stats(Box::new(s)))
                        .map_err(RpcRefusal::Failed)
                });
            }
            RpcRequest::GetHistory {
                metrics,
                range_secs,
            } => {
                debug!(%caller, range_secs, "history requested");
                let job = self.history_job(core, metrics, range_secs);
                self.answer_later(peer, channel, async move {
                    job.await
                        .map(RpcAnswer::History)
                        .map_err(RpcRefusal::Invalid)
                });
            }
            RpcRequest::Reboot {
                requested_by,
                by,
                confirmation,
            } => {
                let via = format!("node {caller} ({peer})");
                let who = by
                    .as_ref()
                    .map_or_else(|| requested_by.clone(), Requester::describe);
                let ask = RebootAsk {
                    requested_by,
                    by,
                    confirmation,
                };
                let (response, followup) = match self.reboot_here(core, ask, peer, &via) {
                    Ok((accepted, followup)) => {
                        // The node that reboots records who asked too (the caller did before
                        // it sent the request).
                        if let Some(audit) = &self.audit {
                            audit.record(
                                AuditEvent::new(AuditKind::RebootRequested, who, via.clone())
                                    .detail("requested_by", accepted.requested_by.clone())
                                    .detail("outcome", "accepted here"),
                            );
                        }
                        (Ok(RpcAnswer::Reboot(accepted)), followup)
                    }
                    Err(refusal) => (Err(refusal), Followup::None),
                };
                respond(swarm, peer, channel, response);
                return followup;
            }
            RpcRequest::Docker { request, by } => {
                let via = format!("node {caller} ({peer})");
                let action = access::docker_action(&request);
                if let Err(refusal) = self.permitted(core, &by, action, &via) {
                    warn!(%caller, requester = by.describe(), %refusal, "container request refused");
                    respond(swarm, peer, channel, Err(refusal));
                    return Followup::None;
                }
                debug!(%caller, requester = by.describe(), ?request, "container request");
                let engine = self.docker.clone();
                let permits = Arc::clone(&self.docker_permits);
                self.answer_later(peer, channel, async move {
                    match permits.acquire_owned().await {
                        Ok(_permit) => Ok(RpcAnswer::Docker(engine.answer(request).await)),
                        Err(_) => Err(RpcRefusal::Failed("the node is shutting down".to_owned())),
                    }
                });
            }
            RpcRequest::Services { request, by } => {
                let via = format!("node {caller} ({peer})");
                let action = access::services_action(&request);
                if let Err(refusal) = self.permitted(core, &by, action, &via) {
                    warn!(%caller, requester = by.describe(), %refusal, "services request refused");
                    respond(swarm, peer, channel, Err(refusal));
                    return Followup::None;
                }
                debug!(%caller, requester = by.describe(), ?request, "services request");
                let job = self.services_job(request);
                self.answer_later(
                    peer,
                    channel,
                    async move { Ok(RpcAnswer::Services(job.await)) },
                );
            }
            RpcRequest::GetBotToken => {
                // Members only (checked above); the answer is never logged.
                let answer = match self.local_token() {
                    None => Ok(RpcAnswer::BotToken(None)),
                    Some(token) => seal_token(core, pq4, &peer, &token)
                        .map(|sealed| RpcAnswer::BotToken(Some(sealed))),
                };
                match &answer {
                    Ok(_) => {
                        info!(%caller, "a member fetched the bot token (sealed to its PQ4 card)")
                    }
                    Err(refusal) => warn!(%caller, %refusal, "the bot token was not sent"),
                }
                respond(swarm, peer, channel, answer);
            }
            RpcRequest::ContainerAlert(mut alert) => {
                if !alert.is_valid() {
                    let refusal = RpcRefusal::Invalid("a malformed container alert".to_owned());
                    respond(swarm, peer, channel, Err(refusal));
                    return Followup::None;
                }
                // The node is the caller, whatever the alert says.
                alert.node = caller;
                info!(event = "container_alert", member = %alert.node, container = %alert.container, kind = ?alert.kind, "container alert");
                let _ = self.notices.send(NetworkEvent::Container(alert));
                respond(swarm, peer, channel, Ok(RpcAnswer::Noted));
            }
        }
        Followup::None
    }

    /// Whether `by` may do `action` here, by this node's own copy of the roles.
    /// A refusal is recorded in this node's audit log (`action_refused`, from `via`).
    fn permitted(
        &self,
        core: &Node,
        by: &Requester,
        action: Action,
        via: &str,
    ) -> Result<(), RpcRefusal> {
        if !by.is_valid() {
            return Err(RpcRefusal::Invalid(
                "the requester's name is too long or not printable".to_owned(),
            ));
        }
        access::check(by, action, core.settings(), &self.initial_owner).map_err(|reason| {
            if let Some(audit) = &self.audit {
                audit.record(
                    AuditEvent::new(AuditKind::ActionRefused, by.describe(), via)
                        .detail("action", action.as_str())
                        .detail("checked_on", "target")
                        .detail("reason", reason.clone()),
                );
            }
            RpcRefusal::NotAllowed(reason)
        })
    }

    /// Works out an answer off the event loop; the loop sends it when it is ready.
    fn answer_later(
        &self,
        peer: PeerId,
        channel: ResponseChannel<RpcResponse>,
        work: impl std::future::Future<Output = RpcResponse> + Send + 'static,
    ) {
        let finished = self.finished_tx.clone();
        tokio::spawn(async move {
            let response = work.await;
            let _ = finished
                .send(Finished {
                    peer,
                    channel,
                    response,
                })
                .await;
        });
    }

    pub(super) fn on_finished(&mut self, swarm: &mut Swarm<Behaviour>, finished: Finished) {
        respond(swarm, finished.peer, finished.channel, finished.response);
    }

    // ---- what this node does when asked ----

    fn measure_job(&self, core: &Node) -> MeasureJob {
        MeasureJob {
            name: core.local().name.clone(),
            node_id: core.local().id.to_base58(),
            started: self.started,
            permits: Arc::clone(&self.measuring),
            history_dir: self.history.as_ref().map(|h| h.dir().to_owned()),
        }
    }

    /// Reads this node's history off the event loop (files of up to 350 KB each).
    fn history_job(
        &self,
        core: &Node,
        metrics: Vec<String>,
        range_secs: u64,
    ) -> impl std::future::Future<Output = Result<History, String>> + Send + 'static {
        let reader = self.history.clone();
        let name = core.local().name.clone();
        async move {
            let Some(reader) = reader else {
                return Err(format!("{name} keeps no metric history"));
            };
            tokio::task::spawn_blocking(move || {
                let now = crate::state::unix_now();
                monitor::answer_history(&reader, &name, &metrics, range_secs, now)
            })
            .await
            .map_err(|error| format!("the history read failed: {error}"))?
        }
    }

    /// Accepts a reboot (after checking the requester's role here, the bot's confirmation and
    /// the privilege) and schedules the action a moment later so the answer goes out first.
    /// The caller saves the state (the followup), with the confirmation's claim marked done.
    fn reboot_here(
        &mut self,
        core: &Node,
        ask: RebootAsk,
        caller: PeerId,
        via: &str,
    ) -> Result<(RebootAccepted, Followup), RpcRefusal> {
        let RebootAsk {
            requested_by,
            by,
            confirmation,
        } = ask;
        if let Some(by) = &by
            && let Err(refusal) = self.permitted(core, by, Action::Reboot, via)
        {
            warn!(requested_by, via, %refusal, "reboot refused");
            return Err(refusal);
        }
        let mut followup = Followup::Persist;
        if let Some(mac) = confirmation {
            let claimer = caller.to_base58();
            let claim = core.settings().claim(&mac);
            let claim = claim.as_ref();
            if claim.is_some_and(|c| c.done) {
                info!(
                    requested_by,
                    via, "reboot confirmation already acted on; nothing done"
                );
                return Ok((self.accepted(core, &requested_by), Followup::None));
            }
            if let Some(claim) = claim.filter(|c| c.claimed_by != claimer) {
                warn!(requested_by, via, claimed_by = %claim.claimed_by, "reboot refused: its confirmation was claimed by another node");
                return Err(RpcRefusal::NotAllowed(
                    "this confirmation was claimed by another leader".to_owned(),
                ));
            }
            let expires_at = claim.map_or_else(
                || crate::state::unix_now() + CONFIRMATION_CLAIM_SECS,
                |c| c.expires_at,
            );
            let done = core.settings().with_claim(&mac, expires_at, &claimer, true);
            followup = Followup::Claimed(Box::new(done));
        }
        let accepted = self.start_reboot(core, requested_by, via)?;
        Ok((accepted, followup))
    }

    fn accepted(&self, core: &Node, requested_by: &str) -> RebootAccepted {
        RebootAccepted {
            name: core.local().name.clone(),
            node_id: core.local().id.to_base58(),
            requested_by: requested_by.to_owned(),
            action: self.reboot.describe(),
        }
    }

    fn start_reboot(
        &mut self,
        core: &Node,
        requested_by: String,
        via: &str,
    ) -> Result<RebootAccepted, RpcRefusal> {
        if requested_by.chars().count() > MAX_REQUESTED_BY_CHARS
            || requested_by.chars().any(char::is_control)
        {
            return Err(RpcRefusal::Invalid(format!(
                "requested_by must be at most {MAX_REQUESTED_BY_CHARS} printable characters"
            )));
        }
        let action = Arc::clone(&self.reboot);
        let described = action.describe();
        if !action.permitted() {
            warn!(
                requested_by,
                via, "reboot refused: this daemon lacks root or CAP_SYS_BOOT"
            );
            return Err(RpcRefusal::RebootNotPermitted);
        }
        let accepted = self.accepted(core, &requested_by);
        if self.rebooting.swap(true, Ordering::SeqCst) {
            info!(
                requested_by,
                via, "reboot requested again; already under way"
            );
            return Ok(accepted);
        }
        warn!(
            requested_by,
            via,
            action = described,
            "reboot requested; rebooting in 1 s"
        );
        let rebooting = Arc::clone(&self.rebooting);
        tokio::spawn(async move {
            tokio::time::sleep(REBOOT_DELAY).await;
            action.perform(&requested_by).await;
            rebooting.store(false, Ordering::SeqCst);
        });
        Ok(accepted)
    }
}

fn resolve(core: &Node, target: &str) -> Result<Target, ClientError> {
    match core.resolve(target) {
        None => Err(ClientError::UnknownNode(target.to_owned())),
        Some(id) if id == core.local().id => Ok(Target::Local),
        Some(id) => Ok(Target::Remote {
            name: core.name_of(&id),
            id,
        }),
    }
}

/// A stranger keeps nothing beyond its refusal: its connections close once the refusal had
/// time to go out.
fn stranger(core: &Node, peer: PeerId) -> Followup {
    if core.membership().is_member(&peer) {
        Followup::None
    } else {
        Followup::Stranger(peer)
    }
}

/// The bot token sealed to `to`'s PQ4 card, as the member list holds it: only that member can
/// open it, even with the Noise transport recorded and broken later.
fn seal_token(
    core: &Node,
    pq4: &KeyStore,
    to: &PeerId,
    token: &SecretToken,
) -> Result<SealedToken, RpcRefusal> {
    let card = core
        .membership()
        .record(to)
        .and_then(|record| record.card.as_ref())
        .ok_or_else(|| {
            RpcRefusal::Failed(
                "the asking member has no PQ4 card: the bot token is sent only sealed to one"
                    .to_owned(),
            )
        })?;
    network_keys::seal_to(pq4, to, card, Purpose::BotToken, token.expose().as_bytes())
        .map(SealedToken)
        .map_err(|error| RpcRefusal::Failed(format!("cannot seal the bot token: {error}")))
}

/// Opens a bot token `from` sealed to this node; refused unless `from`'s PQ4 identity (its card
/// in the member list) sealed it.
fn open_token(
    core: &Node,
    pq4: &mut KeyStore,
    from: &PeerId,
    name: &str,
    sealed: Option<SealedToken>,
) -> Result<Option<SecretToken>, ClientError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let bad = |problem: &str| ClientError::BadAnswer {
        node: name.to_owned(),
        problem: problem.to_owned(),
    };
    let identity = core
        .membership()
        .record(from)
        .and_then(|record| record.card.as_ref())
        .and_then(|card| card.identity().ok())
        .ok_or_else(|| bad("has no PQ4 card to check the bot token's seal against"))?;
    let local = core.local().id;
    let (sender, plain) = network_keys::open_from(pq4, &local, Purpose::BotToken, &sealed.0)
        .map_err(|_| bad("sent a bot token that does not open"))?;
    if sender != identity {
        return Err(bad("sealed the bot token with another PQ4 identity"));
    }
    let token =
        String::from_utf8(plain.to_vec()).map_err(|_| bad("sent a bot token that is not text"))?;
    Ok(Some(SecretToken::new(token)))
}

fn respond(
    swarm: &mut Swarm<Behaviour>,
    peer: PeerId,
    channel: ResponseChannel<RpcResponse>,
    response: RpcResponse,
) {
    if swarm
        .behaviour_mut()
        .rpc
        .send_response(channel, response)
        .is_err()
    {
        debug!(%peer, "the caller went away before the answer");
    }
}

/// One measurement of this node, runnable off the event loop.
struct MeasureJob {
    name: String,
    node_id: String,
    started: Instant,
    permits: Arc<Semaphore>,
    /// Where the monthly traffic totals are (the history's directory).
    history_dir: Option<std::path::PathBuf>,
}

impl MeasureJob {
    async fn run(self) -> Result<NodeStats, String> {
        let Self {
            name,
            node_id,
            started,
            permits,
            history_dir,
        } = self;
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| "the node is shutting down".to_owned())?;
        tokio::task::spawn_blocking(move || {
            stats::collect(&name, &node_id, started, history_dir.as_deref())
        })
        .await
        .map_err(|error| format!("the measurement failed: {error}"))?
    }
}

/// Sleeps until `at`, or forever when there is none (the loop's wait for an RPC deadline).
pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
