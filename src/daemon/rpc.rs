//! The node side of RPC (GetPeers, GetStats, Reboot): forwarding the local client's calls to
//! their target and matching the answers, and answering members' calls. The event loop owns an
//! [`Rpc`] and hands it the Swarm and the protocol core it needs for each step; what RPC must
//! tell the core (a refused stranger, a reboot that wants the state saved) comes back as a
//! [`Followup`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use constella_behaviours::membership::{MemberView, Status};
use constella_behaviours::node::Node;
use constella_behaviours::rpc::{
    History, MAX_REQUESTED_BY_CHARS, RpcAnswer, RpcRefusal, RpcRequest, RpcResponse,
};
use constella_behaviours::{Behaviour, RPC_TIMEOUT};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::error::ClientError;
use super::event_loop::dial_addresses;
use super::log_limit::LogLimit;
use crate::monitor::{self, HistoryReader};
use crate::reboot::RebootAction;
use crate::stats::{self, NodeStats, RebootAccepted};

/// Most calls this node waits on at once; more are refused rather than queued without bound.
const MAX_PENDING: usize = 64;
/// Most stats measurements running at once (each holds a blocking thread for ~200 ms).
const MAX_PARALLEL_STATS: usize = 2;
/// Answers of measurements waiting for the event loop.
const FINISHED_QUEUE: usize = 16;
/// Time between accepting a reboot and taking it, so the answer reaches the caller first.
const REBOOT_DELAY: Duration = Duration::from_secs(1);

/// Where a call's answer goes.
#[derive(Debug)]
pub(super) enum Reply {
    /// A `GetPeers` for [`Client::peers_of`](super::Client::peers_of).
    Peers(oneshot::Sender<Result<Vec<MemberView>, ClientError>>),
    /// A `GetStats` for [`Client::stats`](super::Client::stats).
    Stats(oneshot::Sender<Result<NodeStats, ClientError>>),
    /// A `Reboot` for [`Client::reboot`](super::Client::reboot).
    Reboot(oneshot::Sender<Result<RebootAccepted, ClientError>>),
    /// A `GetHistory` for [`Client::history`](super::Client::history).
    History(oneshot::Sender<Result<History, ClientError>>),
}

impl Reply {
    fn fail(self, error: ClientError) {
        // A caller that gave up has dropped its receiver: nothing to tell.
        match self {
            Reply::Peers(tx) => drop(tx.send(Err(error))),
            Reply::Stats(tx) => drop(tx.send(Err(error))),
            Reply::Reboot(tx) => drop(tx.send(Err(error))),
            Reply::History(tx) => drop(tx.send(Err(error))),
        }
    }

    /// Hands over the answer if its kind matches the question.
    fn answer(self, name: &str, answer: RpcAnswer) {
        match (self, answer) {
            (Reply::Peers(tx), RpcAnswer::Peers(peers)) => drop(tx.send(Ok(peers))),
            (Reply::Stats(tx), RpcAnswer::Stats(stats)) => drop(tx.send(Ok(*stats))),
            (Reply::Reboot(tx), RpcAnswer::Reboot(accepted)) => drop(tx.send(Ok(accepted))),
            (Reply::History(tx), RpcAnswer::History(history)) => drop(tx.send(Ok(history))),
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

/// What the event loop must tell the core after an RPC step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Followup {
    /// Nothing.
    None,
    /// A non-member's request was refused or answered: close its connection soon.
    Stranger(PeerId),
    /// A reboot was accepted: save the state now.
    Persist,
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
    /// This node's metric history, for `GetHistory`.
    history: HistoryReader,
}

impl Rpc {
    pub(super) fn new(reboot: RebootAction, started: Instant, history: HistoryReader) -> Self {
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
            history,
        }
    }

    /// The earliest deadline of a waiting call.
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
        requested_by: String,
        reply: oneshot::Sender<Result<RebootAccepted, ClientError>>,
    ) -> Followup {
        match resolve(core, target) {
            Err(error) => drop(reply.send(Err(error))),
            Ok(Target::Local) => {
                let name = core.local().name.clone();
                let result = self
                    .reboot_here(core, requested_by, "the local control socket")
                    .map_err(|refusal| ClientError::Refused {
                        node: name,
                        reason: refusal.to_string(),
                    });
                let accepted = result.is_ok();
                let _ = reply.send(result);
                if accepted {
                    return Followup::Persist;
                }
            }
            Ok(Target::Remote { id, name }) => {
                let request = RpcRequest::Reboot { requested_by };
                self.call(swarm, core, id, name, request, Reply::Reboot(reply));
            }
        }
        Followup::None
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
                debug!(node = %pending.name, "RPC call timed out");
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
            } => return self.on_request(swarm, core, peer, request, channel),
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
                    debug!(node = %pending.name, %error, "RPC call failed");
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
            RpcRequest::Reboot { requested_by } => {
                let via = format!("node {caller} ({peer})");
                let response = self.reboot_here(core, requested_by, &via);
                let accepted = response.is_ok();
                respond(swarm, peer, channel, response.map(RpcAnswer::Reboot));
                if accepted {
                    return Followup::Persist;
                }
            }
        }
        Followup::None
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
            tokio::task::spawn_blocking(move || {
                let now = crate::state::unix_now();
                monitor::answer_history(&reader, &name, &metrics, range_secs, now)
            })
            .await
            .map_err(|error| format!("the history read failed: {error}"))?
        }
    }

    /// Accepts a reboot (after checking the privilege) and schedules the action a moment later
    /// so the answer goes out first. The caller saves the state ([`Followup::Persist`]).
    fn reboot_here(
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
        let accepted = RebootAccepted {
            name: core.local().name.clone(),
            node_id: core.local().id.to_base58(),
            requested_by: requested_by.clone(),
            action: described.clone(),
        };
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
}

impl MeasureJob {
    async fn run(self) -> Result<NodeStats, String> {
        let Self {
            name,
            node_id,
            started,
            permits,
        } = self;
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| "the node is shutting down".to_owned())?;
        tokio::task::spawn_blocking(move || stats::collect(&name, &node_id, started))
            .await
            .map_err(|error| format!("the measurement failed: {error}"))?
    }
}
