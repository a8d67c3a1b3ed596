//! The node side of RPC (GetPeers, GetStats, Reboot): forwarding the local client's calls to
//! their target and matching the answers, and answering members' calls. The event loop owns
//! an [`Rpc`] and dispatches commands and `rpc` behaviour events here.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use constella_behaviours::RPC_TIMEOUT;
use constella_behaviours::membership::Status;
use constella_behaviours::rpc::{
    MAX_REQUESTED_BY_CHARS, PeerInfo, RpcAnswer, RpcRefusal, RpcRequest, RpcResponse,
};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::event_loop::EventLoop;
use crate::reboot::RebootAction;
use crate::stats::{self, NodeStats, RebootAccepted};

/// Most calls this node waits on at once; more are refused rather than queued without bound.
const MAX_PENDING: usize = 64;
/// Most stats measurements running at once (each holds a blocking thread for ~200 ms).
const MAX_PARALLEL_STATS: usize = 2;
/// Answers of measurements waiting for the event loop.
const FINISHED_QUEUE: usize = 16;
/// How long a refused stranger's connection stays open so the refusal reaches it: closing at
/// once can cut the answer off before the muxer flushed it.
const STRANGER_GRACE: Duration = Duration::from_millis(500);
/// Most strangers waiting to be disconnected; beyond this they are cut off at once.
const MAX_STRANGERS: usize = 256;
/// Time between accepting a reboot and taking it, so the answer reaches the caller first.
const REBOOT_DELAY: Duration = Duration::from_secs(1);

/// Where a call's answer goes.
#[derive(Debug)]
pub(super) enum Reply {
    /// A `GetPeers` for [`Client::peers_of`](super::Client::peers_of).
    Peers(oneshot::Sender<Result<Vec<PeerInfo>, String>>),
    /// A `GetStats` for [`Client::stats`](super::Client::stats).
    Stats(oneshot::Sender<Result<NodeStats, String>>),
    /// A `Reboot` for [`Client::reboot`](super::Client::reboot).
    Reboot(oneshot::Sender<Result<RebootAccepted, String>>),
}

impl Reply {
    fn fail(self, message: String) {
        // A caller that gave up has dropped its receiver: nothing to tell.
        match self {
            Reply::Peers(tx) => drop(tx.send(Err(message))),
            Reply::Stats(tx) => drop(tx.send(Err(message))),
            Reply::Reboot(tx) => drop(tx.send(Err(message))),
        }
    }

    /// Hands over the answer if its kind matches the question.
    fn answer(self, name: &str, answer: RpcAnswer) {
        match (self, answer) {
            (Reply::Peers(tx), RpcAnswer::Peers(peers)) => {
                let _ = tx.send(Ok(peers));
            }
            (Reply::Stats(tx), RpcAnswer::Stats(stats)) => {
                let _ = tx.send(Ok(*stats));
            }
            (Reply::Reboot(tx), RpcAnswer::Reboot(accepted)) => {
                let _ = tx.send(Ok(accepted));
            }
            (reply, _) => reply.fail(format!("node {name} gave an answer of the wrong kind")),
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

/// A measurement finished off the event loop, to be sent back to the member that asked.
#[derive(Debug)]
pub(super) struct Finished {
    peer: PeerId,
    channel: ResponseChannel<RpcResponse>,
    response: RpcResponse,
}

/// Which node a call is for.
enum Target {
    /// This node.
    Local,
    /// Another member.
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
    /// Refused non-members and when to close their connections.
    strangers: HashMap<PeerId, Instant>,
}

impl Rpc {
    pub(super) fn new(reboot: RebootAction) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel(FINISHED_QUEUE);
        Self {
            pending: HashMap::new(),
            reboot: Arc::new(reboot),
            rebooting: Arc::new(AtomicBool::new(false)),
            measuring: Arc::new(Semaphore::new(MAX_PARALLEL_STATS)),
            finished_tx,
            finished_rx,
            strangers: HashMap::new(),
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
}

impl EventLoop {
    // ---- calls from the local client ----

    /// `GetPeers` of `target` (this node answers from its own view).
    pub(super) fn rpc_peers(
        &mut self,
        target: &str,
        reply: oneshot::Sender<Result<Vec<PeerInfo>, String>>,
    ) {
        match self.resolve(target) {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(Target::Local) => {
                let _ = reply.send(Ok(self.peer_infos()));
            }
            Ok(Target::Remote { id, name }) => {
                self.call(id, name, RpcRequest::GetPeers, Reply::Peers(reply));
            }
        }
    }

    /// `GetStats` of `target`.
    pub(super) fn rpc_stats(
        &mut self,
        target: &str,
        reply: oneshot::Sender<Result<NodeStats, String>>,
    ) {
        match self.resolve(target) {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(Target::Local) => {
                let job = self.measure_job();
                tokio::spawn(async move {
                    let _ = reply.send(job.run().await);
                });
            }
            Ok(Target::Remote { id, name }) => {
                self.call(id, name, RpcRequest::GetStats, Reply::Stats(reply));
            }
        }
    }

    /// `Reboot` of `target`.
    pub(super) fn rpc_reboot(
        &mut self,
        target: &str,
        requested_by: String,
        reply: oneshot::Sender<Result<RebootAccepted, String>>,
    ) {
        match self.resolve(target) {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(Target::Local) => {
                let name = self.state.node.name.clone();
                let result = self
                    .reboot_here(requested_by, "the local control socket")
                    .map_err(|refusal| format!("node {name}: {refusal}"));
                let _ = reply.send(result);
            }
            Ok(Target::Remote { id, name }) => {
                let request = RpcRequest::Reboot { requested_by };
                self.call(id, name, request, Reply::Reboot(reply));
            }
        }
    }

    /// A target by server name or node id; unknown targets fail at once.
    fn resolve(&self, target: &str) -> Result<Target, String> {
        let id = self.membership.find_by_name(target).or_else(|| {
            PeerId::from_str(target)
                .ok()
                .filter(|id| self.membership.is_member(id))
        });
        match id {
            None => Err(format!("no node named {target}")),
            Some(id) if id == self.local_id => Ok(Target::Local),
            Some(id) => Ok(Target::Remote {
                name: self.name_of(&id),
                id,
            }),
        }
    }

    /// Sends `request` to `id` over an existing connection, or dials it with the addresses
    /// the network announced plus whatever Kademlia's routing table knows.
    fn call(&mut self, id: PeerId, name: String, request: RpcRequest, reply: Reply) {
        if self.rpc.pending.len() >= MAX_PENDING {
            reply.fail(format!(
                "too many calls in flight ({MAX_PENDING}); try again shortly"
            ));
            return;
        }
        let addrs = self
            .membership
            .record(&id)
            .cloned()
            .map(|record| self.addresses_of(&id, &record))
            .unwrap_or_default();
        if !self.swarm.is_connected(&id) {
            // Refresh what Kademlia knows of it, for this dial's retries and the next call.
            self.swarm.behaviour_mut().kad.get_closest_peers(id);
        }
        let request_id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request_with_addresses(&id, request, addrs);
        self.rpc.pending.insert(
            request_id,
            Pending {
                offline: self.membership.status(&id) == Some(Status::Offline),
                name,
                deadline: Instant::now() + RPC_TIMEOUT,
                reply,
            },
        );
    }

    /// Why a call got no answer, for the operator.
    fn unreachable(pending: &Pending) -> String {
        if pending.offline {
            format!("node {} is offline", pending.name)
        } else {
            format!("node {} is unreachable", pending.name)
        }
    }

    /// Fails the calls whose deadline passed.
    pub(super) fn on_rpc_deadlines(&mut self) {
        let now = Instant::now();
        let expired: Vec<OutboundRequestId> = self
            .rpc
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for request_id in expired {
            if let Some(pending) = self.rpc.pending.remove(&request_id) {
                let message = Self::unreachable(&pending);
                debug!(node = %pending.name, "RPC call timed out");
                pending.reply.fail(message);
            }
        }
    }

    // ---- the rpc behaviour ----

    pub(super) fn on_rpc_event(&mut self, event: request_response::Event<RpcRequest, RpcResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_rpc_request(peer, request, channel),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(pending) = self.rpc.pending.remove(&request_id) else {
                    return;
                };
                match response {
                    Ok(answer) => pending.reply.answer(&pending.name, answer),
                    Err(refusal) => pending
                        .reply
                        .fail(format!("node {}: {refusal}", pending.name)),
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                let Some(pending) = self.rpc.pending.remove(&request_id) else {
                    return;
                };
                debug!(node = %pending.name, %error, "RPC call failed");
                let message = match error {
                    OutboundFailure::UnsupportedProtocols => format!(
                        "node {} does not speak the RPC protocol (an older version?)",
                        pending.name
                    ),
                    OutboundFailure::Io(error) => {
                        format!("node {} sent an unreadable answer: {error}", pending.name)
                    }
                    OutboundFailure::DialFailure
                    | OutboundFailure::Timeout
                    | OutboundFailure::ConnectionClosed => Self::unreachable(&pending),
                };
                pending.reply.fail(message);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // A malformed or oversized frame fails its own stream only.
                warn!(%peer, %error, "RPC request failed");
                self.drop_if_stranger(peer);
            }
            request_response::Event::ResponseSent { peer, .. } => self.drop_if_stranger(peer),
        }
    }

    /// A stranger keeps nothing beyond its refusal: its connections close once the refusal
    /// had time to go out.
    fn drop_if_stranger(&mut self, peer: PeerId) {
        self.expire_stranger(peer, STRANGER_GRACE);
    }

    /// Schedules the connections of `peer`, if it is not a member, to be closed `after` from
    /// now (or sooner, if already scheduled sooner). Past [`MAX_STRANGERS`] waiting, at once.
    pub(super) fn expire_stranger(&mut self, peer: PeerId, after: Duration) {
        if self.membership.is_member(&peer) {
            return;
        }
        let deadline = Instant::now() + after;
        if let Some(at) = self.rpc.strangers.get_mut(&peer) {
            *at = (*at).min(deadline);
        } else if self.rpc.strangers.len() >= MAX_STRANGERS {
            let _ = self.swarm.disconnect_peer_id(peer);
        } else {
            self.rpc.strangers.insert(peer, deadline);
        }
    }

    /// Closes the connections of strangers whose time is up (liveness tick).
    pub(super) fn drop_strangers(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .rpc
            .strangers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.rpc.strangers.remove(&peer);
            if !self.membership.is_member(&peer) {
                debug!(%peer, "closing a refused stranger's connection");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_rpc_request(
        &mut self,
        peer: PeerId,
        request: RpcRequest,
        channel: ResponseChannel<RpcResponse>,
    ) {
        if !self.membership.is_member(&peer) {
            warn!(%peer, ?request, "RPC refused: the caller is not a member");
            self.respond(peer, channel, Err(RpcRefusal::NotMember));
            return;
        }
        let caller = self.name_of(&peer);
        match request {
            RpcRequest::GetPeers => {
                let peers = self.peer_infos();
                self.respond(peer, channel, Ok(RpcAnswer::Peers(peers)));
            }
            RpcRequest::GetStats => {
                debug!(%caller, "stats requested");
                let job = self.measure_job();
                let finished = self.rpc.finished_tx.clone();
                tokio::spawn(async move {
                    let response = job
                        .run()
                        .await
                        .map(|s| RpcAnswer::Stats(Box::new(s)))
                        .map_err(RpcRefusal::Failed);
                    let _ = finished
                        .send(Finished {
                            peer,
                            channel,
                            response,
                        })
                        .await;
                });
            }
            RpcRequest::Reboot { requested_by } => {
                let via = format!("node {caller} ({peer})");
                let response = self.reboot_here(requested_by, &via).map(RpcAnswer::Reboot);
                self.respond(peer, channel, response);
            }
        }
    }

    pub(super) fn on_rpc_finished(&mut self, finished: Finished) {
        self.respond(finished.peer, finished.channel, finished.response);
    }

    fn respond(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<RpcResponse>,
        response: RpcResponse,
    ) {
        if self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response)
            .is_err()
        {
            debug!(%peer, "the caller went away before the answer");
        }
    }

    // ---- what this node does when asked ----

    fn peer_infos(&self) -> Vec<PeerInfo> {
        self.membership
            .view()
            .into_iter()
            .map(|p| PeerInfo {
                name: p.name,
                node_id: p.node_id.to_base58(),
                addr: p.addr,
                status: p.status.as_str().to_owned(),
            })
            .collect()
    }

    fn measure_job(&self) -> MeasureJob {
        MeasureJob {
            name: self.state.node.name.clone(),
            node_id: self.local_id.to_base58(),
            started: self.started,
            permits: Arc::clone(&self.rpc.measuring),
        }
    }

    /// Accepts a reboot (after checking the privilege), saves the state, and schedules the
    /// action a moment later so the answer goes out first.
    fn reboot_here(
        &mut self,
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
        let action = Arc::clone(&self.rpc.reboot);
        let described = action.describe();
        if !action.permitted() {
            warn!(
                requested_by,
                via, "reboot refused: this daemon lacks root or CAP_SYS_BOOT"
            );
            return Err(RpcRefusal::RebootNotPermitted);
        }
        let accepted = RebootAccepted {
            name: self.state.node.name.clone(),
            node_id: self.local_id.to_base58(),
            requested_by: requested_by.clone(),
            action: described.clone(),
        };
        if self.rpc.rebooting.swap(true, Ordering::SeqCst) {
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
        self.persist();
        let rebooting = Arc::clone(&self.rpc.rebooting);
        tokio::spawn(async move {
            tokio::time::sleep(REBOOT_DELAY).await;
            action.perform(&requested_by).await;
            rebooting.store(false, Ordering::SeqCst);
        });
        Ok(accepted)
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
