//! The PQ4 messaging service of a node (docs/messaging.md): it holds records in its
//! [`ChatStore`] and coordinates client operations over the `k` = 3 members closest to each
//! record key.
//!
//! The event loop owns the Swarm, so it keeps a [`ChatLink`]: inbound pq4 requests are handed
//! to the [`Service`] (answered from a task), and the service's [`Action`]s (send a request to
//! a member, answer an inbound one, tell the alive members) come back to the event loop through
//! one channel. The local chat client reaches the same service through `STATE_DIR/pq4.sock`
//! (length-prefixed CBOR frames of the same [`Request`]/[`Response`] types).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use constella_behaviours::node::Node;
use constella_behaviours::pq4::{
    self, Account, Bytes, ErrorKind, MAX_ENVELOPE_BYTES, MAX_FETCH, MAX_NAME_LEN, MAX_OPKS, Op,
    Opk, Queued, REPLICAS, ReplicaOp, Request, Response, login_mac, mailbox_mac,
};
use constella_behaviours::{Behaviour, RPC_TIMEOUT};
use futures::future::join_all;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::chat_store::ChatStore;
use crate::audit::AuditKind;

#[path = "chat_devices.rs"]
mod devices;
#[path = "chat_groups.rs"]
mod groups;
#[path = "chat_history.rs"]
mod history;
#[path = "chat_keys.rs"]
mod keys;
#[path = "chat_recover.rs"]
mod recover;

/// File name of the chat socket in the state directory.
pub const SOCKET: &str = "pq4.sock";
/// File name of the database in the state directory.
pub const DATABASE: &str = "pq4.redb";
/// How long a login challenge may be answered.
const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// How far a mailbox proof's clock may be from ours.
const AUTH_SKEW_MS: u64 = 5 * 60 * 1000;
/// Account invites are valid this long unless asked otherwise.
pub const DEFAULT_INVITE_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long a queued message waits for its recipient (`CONSTELLA_PQ4_RETENTION_SECS`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a non-member client's login holds for its PeerId.
const CLIENT_SESSION: Duration = Duration::from_secs(3600);
/// After the core reports a membership change, how long to wait for more before handing off
/// (a partition heal or a restart brings several changes within a few milliseconds).
const HANDOFF_SETTLE: Duration = Duration::from_millis(300);
/// How long a wait gives the holders to confirm its watch.
const WATCH_REGISTER: Duration = Duration::from_millis(500);
/// Slack added to a watch's lifetime over the wait it serves.
const WATCH_SLACK_MS: u64 = 2_000;

/// What the service asks of the event loop.
#[derive(Debug)]
pub enum Action {
    Send {
        peer: PeerId,
        request: Box<Request>,
        reply: oneshot::Sender<Result<Response, String>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    /// The alive members (this node included).
    Members(oneshot::Sender<Vec<PeerId>>),
}

/// The event loop's side: routes pq4 events and carries out [`Action`]s.
#[derive(Debug)]
pub struct ChatLink {
    service: Service,
    actions: mpsc::UnboundedReceiver<Action>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, String>>>,
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The local chat socket (0600, this node's operator).
    Local,
    /// A member over libp2p (a coordinator asking a holder).
    Member(PeerId),
    /// A non-member over libp2p: a `--via` chat client (noise-proven PeerId).
    Client(PeerId),
}

/// The service handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    local: PeerId,
    store: ChatStore,
    actions: mpsc::UnboundedSender<Action>,
    /// Open login challenges: nonce → (username, expiry).
    challenges: Mutex<HashMap<Vec<u8>, (String, Instant)>>,
    /// Holder side of pushes: account → members watching its mailbox, until when.
    watchers: Mutex<HashMap<String, Vec<(PeerId, Instant)>>>,
    /// Coordinator side of pushes: account → a counter bumped when a holder says a message
    /// arrived (waiting [`Op::Wait`]s subscribe to it).
    arrivals: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Bumped by the event loop when the core reports a membership change (hand-off).
    membership: Notify,
    /// Non-member clients that logged in: PeerId → (account, when).
    clients: Mutex<HashMap<PeerId, (String, Instant)>>,
    /// The node's audit log, once the node set it (`Service::set_audit`).
    audit: std::sync::OnceLock<crate::audit::AuditLog>,
}

/// The answer to a wrong login proof.
const WRONG_PASSWORD: &str = "wrong password";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

fn err(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::error(kind, message)
}

/// Opens the store and builds the link and the service.
pub fn open(state_dir: &Path, local: PeerId) -> anyhow::Result<(ChatLink, Service)> {
    let retention = std::env::var("CONSTELLA_PQ4_RETENTION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_RETENTION, Duration::from_secs);
    let store = ChatStore::open(&state_dir.join(DATABASE), retention)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", DATABASE))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let service = Service {
        inner: Arc::new(Inner {
            local,
            store,
            actions: tx,
            challenges: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(HashMap::new()),
            membership: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            audit: std::sync::OnceLock::new(),
        }),
    };
    Ok((
        ChatLink {
            service: service.clone(),
            actions: rx,
            pending: HashMap::new(),
        },
        service,
    ))
}

impl ChatLink {
    /// The next action of the service.
    pub async fn next_action(&mut self) -> Option<Action> {
        self.actions.recv().await
    }

    /// Carries out one action.
    pub fn on_action(&mut self, swarm: &mut Swarm<Behaviour>, core: &Node, action: Action) {
        match action {
            Action::Send {
                peer,
                request,
                reply,
            } => {
                let id = swarm.behaviour_mut().pq4.send_request(&peer, *request);
                self.pending.insert(id, reply);
            }
            Action::Respond { channel, response } => {
                if swarm
                    .behaviour_mut()
                    .pq4
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!("pq4 answer not delivered: the requester is gone");
                }
            }
            Action::Members(reply) => {
                let members = core
                    .view()
                    .into_iter()
                    .filter(|m| m.is_alive())
                    .map(|m| m.node_id)
                    .collect();
                let _ = reply.send(members);
            }
        }
    }

    /// The core reported a membership change: hand records to the new holders.
    pub fn membership_changed(&self) {
        self.service.inner.membership.notify_one();
    }

    /// Routes one pq4 event.
    pub fn on_event(&mut self, core: &Node, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let origin = if core.membership().is_member(&peer) {
                    Origin::Member(peer)
                } else {
                    Origin::Client(peer)
                };
                let service = self.service.clone();
                tokio::spawn(async move {
                    let response = service.serve(request, origin).await;
                    let _ = service
                        .inner
                        .actions
                        .send(Action::Respond { channel, response });
                });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound pq4 request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

impl Service {
    /// Answers one request.
    async fn serve(&self, request: Request, origin: Origin) -> Response {
        if !pq4::serves(request.v) {
            return Response::Unsupported {
                min: pq4::MIN_VERSION,
                max: pq4::VERSION,
            };
        }
        if let Origin::Client(peer) = origin
            && let Err(refusal) = self.client_may(peer, &request.op)
        {
            return refusal;
        }
        let from = match origin {
            Origin::Member(peer) | Origin::Client(peer) => peer,
            Origin::Local => self.inner.local,
        };
        match request.op {
            Op::Replica(op) => self.apply_replica(op, from),
            Op::NewInvite { ttl_secs } => self.new_invite(ttl_secs).await,
            Op::Register {
                invite,
                account,
                opks,
            } => {
                let username = account.username.clone();
                let response = self.register(invite, account, opks).await;
                if matches!(response, Response::Registered) {
                    self.audit_account(AuditKind::ChatRegistered, &username, origin, &[]);
                }
                response
            }
            Op::LoginStart { username } => self.login_start(&username).await,
            Op::LoginFinish {
                username,
                nonce,
                mac,
            } => {
                let response = self.login_finish(&username, &nonce.0, &mac.0).await;
                match &response {
                    Response::LoggedIn { .. } => {
                        self.audit_account(AuditKind::ChatLogin, &username, origin, &[]);
                    }
                    Response::Error {
                        kind: ErrorKind::AuthenticationFailed,
                        message,
                    } if message == WRONG_PASSWORD => {
                        self.audit_account(AuditKind::ChatLoginFailed, &username, origin, &[]);
                    }
                    _ => {}
                }
                if let (Origin::Client(peer), Response::LoggedIn { .. }) = (origin, &response)
                    && let Ok(mut clients) = self.inner.clients.lock()
                {
                    clients.retain(|_, (_, at)| at.elapsed() < CLIENT_SESSION);
                    clients.insert(peer, (username, Instant::now()));
                }
                response
            }
            Op::GetBundle { username } => self.get_bundle(&username).await,
            Op::Identity { username } => match self.account(&username).await {
                Ok((account, _, _)) => Response::Bundle {
                    bundle: account.bundle,
                    opk: None,
                },
                Err(response) => response,
            },
            Op::Send { from, to, envelope } => self.send(from, &to, envelope).await,
            Op::Fetch { auth } => match self.authenticate(&auth, &[], origin).await {
                Ok(_) => match self.fetch(&auth.username, &auth.device).await {
                    Ok(messages) => Response::Messages(messages),
                    Err(response) => response,
                },
                Err(response) => response,
            },
            Op::Wait { auth, timeout_ms } => {
                let cap = match origin {
                    Origin::Local => pq4::MAX_WAIT_LOCAL_MS,
                    _ => pq4::MAX_WAIT_REMOTE_MS,
                };
                self.wait(auth, Duration::from_millis(timeout_ms.min(cap)), origin)
                    .await
            }
            Op::UploadOpks {
                auth,
                opks,
                sealed_keys,
            } => {
                let body: Vec<u8> = opks.iter().flat_map(|o| o.id.to_be_bytes()).collect();
                if let Err(response) = self.authenticate(&auth, &body, origin).await {
                    return response;
                }
                if opks.len() > MAX_OPKS || opks.iter().any(|o| o.key.0.len() != 56) {
                    return err(ErrorKind::Invalid, "too many or malformed one-time prekeys");
                }
                let count = opks.len();
                let op = ReplicaOp::AddOpks {
                    username: auth.username.clone(),
                    opks,
                    sealed_keys,
                };
                let holders = self.holders(&pq4::user_key(&auth.username)).await;
                let answers = self.ask_all(&holders, op).await;
                let stored = Self::count(&answers, |r| matches!(r, Response::Ok));
                if stored == 0 {
                    return err(ErrorKind::Unavailable, "no holder took the prekeys");
                }
                info!(username = %auth.username, count, holders = stored, "one-time prekeys uploaded");
                Response::Ok
            }
            Op::Ack { auth, ids } => {
                let body: Vec<u8> = ids.iter().flat_map(|i| i.0.iter().copied()).collect();
                match self.authenticate(&auth, &body, origin).await {
                    Ok(_) => {
                        let op = ReplicaOp::DeleteMessages {
                            to: auth.username.clone(),
                            ids,
                            device: auth.device.clone(),
                        };
                        let holders = self.holders(&pq4::user_key(&auth.username)).await;
                        self.ask_all(&holders, op).await;
                        Response::Ok
                    }
                    Err(response) => response,
                }
            }
            Op::PutGroup { record } => self.put_group(record, origin).await,
            Op::GetGroup { gid } => self.get_group(gid).await,
            Op::AckGroupKey { ack } => self.ack_group_key(ack).await,
            Op::GroupStatus { gid } => self.group_status(gid).await,
            Op::AddDevice { auth, card } => self.add_device(auth, card, origin).await,
            Op::Devices { auth } => {
                match self.authenticate(&auth, pq4::DEVICES_BODY, origin).await {
                    Ok(_) => match self.devices(&auth.username).await {
                        Ok(devices) => Response::Devices(devices),
                        Err(response) => response,
                    },
                    Err(response) => response,
                }
            }
            Op::RevokeDevice { revocation } => self.revoke_device(revocation, origin).await,
            Op::UpdateKeys {
                auth,
                update,
                bundle,
                opks,
                sealed_keys,
            } => {
                self.update_keys(auth, update, bundle, opks, sealed_keys, origin)
                    .await
            }
            Op::KeyUpdates { username } => self.key_updates(&username).await,
            Op::Recover {
                username,
                code,
                account,
                opks,
            } => self.recover(username, code, account, opks, origin).await,
            Op::History(op) => self.history(op, origin).await,
        }
    }

    /// What a non-member client may ask: to register (an invite is the ticket) and to log in;
    /// after a login on this connection's PeerId, the operations of that account only.
    /// Holder operations and invites are for members.
    fn client_may(&self, peer: PeerId, op: &Op) -> Result<(), Response> {
        let account = self
            .inner
            .clients
            .lock()
            .ok()
            .and_then(|c| c.get(&peer).cloned())
            .filter(|(_, at)| at.elapsed() < CLIENT_SESSION)
            .map(|(name, _)| name);
        let own = |name: &str| account.as_deref() == Some(name);
        let allowed = match op {
            Op::Replica(_) | Op::NewInvite { .. } => {
                return Err(err(ErrorKind::NotAMember, "for members only"));
            }
            Op::Register { .. }
            | Op::LoginStart { .. }
            | Op::LoginFinish { .. }
            | Op::Recover { .. } => true,
            Op::GetBundle { .. }
            | Op::Identity { .. }
            | Op::GetGroup { .. }
            | Op::GroupStatus { .. }
            | Op::KeyUpdates { .. } => account.is_some(),
            Op::PutGroup { record } => own(&record.by),
            Op::AckGroupKey { ack } => own(&ack.by),
            Op::Send { from, .. } => own(from),
            Op::RevokeDevice { revocation } => own(&revocation.username),
            Op::Fetch { auth }
            | Op::Ack { auth, .. }
            | Op::Wait { auth, .. }
            | Op::UploadOpks { auth, .. }
            | Op::AddDevice { auth, .. }
            | Op::UpdateKeys { auth, .. }
            | Op::Devices { auth } => own(&auth.username),
            Op::History(op) => own(&op.auth().username),
        };
        if allowed {
            Ok(())
        } else {
            Err(err(
                ErrorKind::AuthenticationFailed,
                "log in as this account first (a client that is not a member must)",
            ))
        }
    }

    /// A holder's part of an operation from member `from` (this node for its own).
    fn apply_replica(&self, op: ReplicaOp, from: PeerId) -> Response {
        match op {
            ReplicaOp::Watch { to, ttl_ms } => {
                let now = Instant::now();
                let until = now + Duration::from_millis(ttl_ms.min(2 * pq4::MAX_WAIT_LOCAL_MS));
                if let Ok(mut watchers) = self.inner.watchers.lock() {
                    watchers.retain(|_, list| {
                        list.retain(|(_, until)| *until > now);
                        !list.is_empty()
                    });
                    let list = watchers.entry(to).or_default();
                    list.retain(|(peer, _)| *peer != from);
                    list.push((from, until));
                }
                Response::Ok
            }
            ReplicaOp::Notify { to } => {
                self.arrived(&to);
                Response::Ok
            }
            ReplicaOp::PutMessage { to, message } => {
                let response = self.apply_local(ReplicaOp::PutMessage {
                    to: to.clone(),
                    message,
                });
                if matches!(response, Response::Ok) {
                    self.tell_watchers(&to);
                }
                response
            }
            op => self.apply_local(op),
        }
    }

    /// A message for `to` was stored here: every member waiting on that mailbox hears of it.
    fn tell_watchers(&self, to: &str) {
        let now = Instant::now();
        let peers: Vec<PeerId> = self
            .inner
            .watchers
            .lock()
            .ok()
            .and_then(|w| w.get(to).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, until)| *until > now)
            .map(|(peer, _)| peer)
            .collect();
        for peer in peers {
            if peer == self.inner.local {
                self.arrived(to);
            } else {
                let service = self.clone();
                let to = to.to_owned();
                tokio::spawn(async move {
                    let _ = service.ask(peer, ReplicaOp::Notify { to }).await;
                });
            }
        }
    }

    /// Wakes the [`Op::Wait`]s of this node on `to`'s mailbox.
    fn arrived(&self, to: &str) {
        if let Ok(mut arrivals) = self.inner.arrivals.lock() {
            if let Some(sender) = arrivals.get(to) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
            arrivals.retain(|_, sender| sender.receiver_count() > 0);
        }
    }

    /// A receiver that changes when a message for `to` arrives.
    fn subscribe(&self, to: &str) -> watch::Receiver<u64> {
        match self.inner.arrivals.lock() {
            Ok(mut arrivals) => {
                arrivals.retain(|_, sender| sender.receiver_count() > 0);
                arrivals
                    .entry(to.to_owned())
                    .or_insert_with(|| watch::channel(0).0)
                    .subscribe()
            }
            Err(_) => watch::channel(0).1,
        }
    }

    /// Answers [`Op::Wait`]: the device's messages now, or — when there are none — the moment
    /// a holder stores one (it was asked to watch the mailbox first), or none after `timeout`.
    async fn wait(&self, auth: pq4::MailboxAuth, timeout: Duration, origin: Origin) -> Response {
        let opks_left = match self.authenticate(&auth, &[], origin).await {
            Ok((_, opks)) => opks.len() as u32,
            Err(response) => return response,
        };
        let username = auth.username.clone();
        let mut arrivals = self.subscribe(&username);
        if !timeout.is_zero() {
            let holders = self.holders(&pq4::user_key(&username)).await;
            let op = ReplicaOp::Watch {
                to: username.clone(),
                ttl_ms: timeout.as_millis() as u64 + WATCH_SLACK_MS,
            };
            // A holder that does not answer quickly (dying, not yet marked offline) must not
            // hold up the wait: the others watch, and the fetch below asks it anyway.
            let answers = tokio::time::timeout(WATCH_REGISTER, self.ask_all(&holders, op))
                .await
                .unwrap_or_default();
            let watching = Self::count(&answers, |r| matches!(r, Response::Ok));
            debug!(%username, watching, from = %devices::origin_text(origin), "mailbox watched");
        }
        let mut messages = match self.fetch(&username, &auth.device).await {
            Ok(messages) => messages,
            Err(response) => return response,
        };
        if messages.is_empty()
            && !timeout.is_zero()
            && tokio::time::timeout(timeout, arrivals.changed())
                .await
                .is_ok()
        {
            messages = match self.fetch(&username, &auth.device).await {
                Ok(messages) => messages,
                Err(response) => return response,
            };
            debug!(
                %username,
                count = messages.len(),
                from = %devices::origin_text(origin),
                "mailbox wait answered by a push"
            );
        }
        Response::Mailbox {
            messages,
            opks_left,
        }
    }

    fn apply_local(&self, op: ReplicaOp) -> Response {
        // redb commits are short; doing them on the runtime thread keeps the order of one
        // coordinator's operations on this holder.
        self.inner
            .store
            .apply(op, now_ms())
            .unwrap_or_else(|e| err(ErrorKind::Internal, e.to_string()))
    }

    /// The alive members as the core sees them.
    async fn members(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.inner.actions.send(Action::Members(tx)).is_err() {
            return vec![self.inner.local];
        }
        let mut members = rx.await.unwrap_or_default();
        if !members.contains(&self.inner.local) {
            members.push(self.inner.local);
        }
        members
    }

    /// The holders of `key`, closest first.
    async fn holders(&self, key: &str) -> Vec<PeerId> {
        pq4::closest(key, &self.members().await, REPLICAS)
    }

    /// One holder's answer (this node answers itself).
    async fn ask(&self, peer: PeerId, op: ReplicaOp) -> Result<Response, String> {
        if peer == self.inner.local {
            return Ok(self.apply_replica(op, peer));
        }
        let (reply, answer) = oneshot::channel();
        let request = Box::new(Request::new(Op::Replica(op)));
        self.inner
            .actions
            .send(Action::Send {
                peer,
                request,
                reply,
            })
            .map_err(|_| "the node is stopping".to_owned())?;
        match tokio::time::timeout(RPC_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the node is stopping".to_owned()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// Every holder's answer, asked at once.
    async fn ask_all(&self, holders: &[PeerId], op: ReplicaOp) -> Vec<Result<Response, String>> {
        join_all(holders.iter().map(|peer| self.ask(*peer, op.clone()))).await
    }

    fn count(answers: &[Result<Response, String>], f: impl Fn(&Response) -> bool) -> usize {
        answers.iter().filter(|a| a.as_ref().is_ok_and(&f)).count()
    }

    async fn new_invite(&self, ttl_secs: u64) -> Response {
        let mut raw = [0u8; 16];
        rand::fill(&mut raw);
        let code = hex::encode(raw);
        let hash = Bytes(sha256(code.as_bytes()));
        let ttl = if ttl_secs == 0 {
            DEFAULT_INVITE_TTL_SECS
        } else {
            ttl_secs
        };
        let op = ReplicaOp::PutInvite {
            hash: hash.clone(),
            expires_ms: now_ms().saturating_add(ttl.saturating_mul(1000)),
        };
        let holders = self.holders(&pq4::invite_key(&hash.0)).await;
        let answers = self.ask_all(&holders, op).await;
        let stored = Self::count(&answers, |r| matches!(r, Response::Ok));
        // A registration reserves the invite on a majority of its holders.
        if stored < pq4::majority(holders.len()) {
            return err(
                ErrorKind::Unavailable,
                format!("the invite reached {stored} of {} holders", holders.len()),
            );
        }
        info!("account invite issued ({stored} holders)");
        Response::Invite { code }
    }

    async fn register(&self, invite: String, account: Account, opks: Vec<Opk>) -> Response {
        if let Err(problem) = check_account(&account, &opks) {
            return err(ErrorKind::Invalid, problem);
        }
        let owner = Bytes(sha256(&{
            let mut out = Vec::new();
            let _ = ciborium::into_writer(&account, &mut out);
            out
        }));
        let hash = Bytes(sha256(invite.trim().as_bytes()));
        let keys = [
            (pq4::invite_key(&hash.0), ErrorKind::InvalidInvite),
            (
                pq4::user_key(&account.username),
                ErrorKind::UserAlreadyExists,
            ),
            (
                format!("email/{}", account.email.to_lowercase()),
                ErrorKind::EmailAlreadyUsed,
            ),
        ];
        let mut claimed: Vec<(String, Vec<PeerId>)> = Vec::new();
        for (key, refusal) in &keys {
            let holders = self.holders(key).await;
            let op = if *refusal == ErrorKind::InvalidInvite {
                ReplicaOp::ReserveInvite {
                    hash: hash.clone(),
                    owner: owner.clone(),
                }
            } else {
                ReplicaOp::Claim {
                    key: key.clone(),
                    owner: owner.clone(),
                }
            };
            let answers = self.ask_all(&holders, op).await;
            let granted = Self::count(&answers, |r| matches!(r, Response::Granted));
            let taken = Self::count(&answers, |r| matches!(r, Response::Taken));
            claimed.push((key.clone(), holders.clone()));
            if granted < pq4::majority(holders.len()) {
                self.abort(&claimed, &owner).await;
                let message = match refusal {
                    ErrorKind::InvalidInvite => "the invite code is unknown, used or expired",
                    ErrorKind::UserAlreadyExists => "the username is taken",
                    _ => "the email address is already registered",
                };
                return if taken > 0 && granted + taken >= pq4::majority(holders.len()) {
                    err(*refusal, message)
                } else if taken > 0 {
                    err(
                        ErrorKind::Conflict,
                        "another registration of this name is in progress; try again",
                    )
                } else {
                    err(ErrorKind::Unavailable, "too few holders answered")
                };
            }
        }
        for (key, holders) in &claimed {
            let op = ReplicaOp::Commit {
                key: key.clone(),
                owner: owner.clone(),
            };
            self.ask_all(holders, op).await;
        }
        let holders = self.holders(&pq4::user_key(&account.username)).await;
        let username = account.username.clone();
        let answers = self
            .ask_all(&holders, ReplicaOp::PutAccount { account, opks })
            .await;
        let stored = Self::count(&answers, |r| matches!(r, Response::Ok));
        if stored == 0 {
            return err(ErrorKind::Unavailable, "no holder stored the account");
        }
        info!(%username, holders = stored, "account registered");
        Response::Registered
    }

    async fn abort(&self, claimed: &[(String, Vec<PeerId>)], owner: &Bytes) {
        for (key, holders) in claimed {
            let op = ReplicaOp::Abort {
                key: key.clone(),
                owner: owner.clone(),
            };
            self.ask_all(holders, op).await;
        }
    }

    /// The account and the one-time prekeys of the first holder that has it.
    async fn account(&self, username: &str) -> Result<(Account, Vec<Opk>, Vec<PeerId>), Response> {
        if !pq4::valid_username(username) {
            return Err(err(ErrorKind::UserNotFound, "no such user"));
        }
        let holders = self.holders(&pq4::user_key(username)).await;
        let op = ReplicaOp::GetAccount {
            username: username.to_owned(),
        };
        let answers = self.ask_all(&holders, op).await;
        let mut answered = 0;
        // Right after a partition heals, holders may still hold the two registrations of one
        // name until the hand-off reaches them: serve the one every holder will keep
        // (`Account::wins_over`), never the loser, or the winner's device would be told its
        // account is gone. Otherwise the closest holder's copy.
        let mut served: Option<(Account, Vec<Opk>)> = None;
        for answer in answers {
            if let Ok(Response::Account(found)) = answer {
                answered += 1;
                let Some(found) = found else { continue };
                let (account, opks) = *found;
                served = match served {
                    Some((held, _))
                        if !held.same_registration(&account) && account.wins_over(&held) =>
                    {
                        Some((account, opks))
                    }
                    None => Some((account, opks)),
                    kept => kept,
                };
            }
        }
        if let Some((account, opks)) = served {
            return Ok((account, opks, holders));
        }
        Err(if answered == 0 {
            err(ErrorKind::Unavailable, "no holder of the account answered")
        } else {
            err(ErrorKind::UserNotFound, format!("no user @{username}"))
        })
    }

    /// Whether any holder of the account counted too many failed logins (so switching the
    /// node a login goes through does not reset the count).
    async fn rate_limited(&self, username: &str) -> bool {
        if !pq4::valid_username(username) {
            return false;
        }
        let holders = self.holders(&pq4::user_key(username)).await;
        let op = ReplicaOp::LoginFailures {
            username: username.to_owned(),
        };
        let answers = self.ask_all(&holders, op).await;
        Self::count(
            &answers,
            |r| matches!(r, Response::Failures { recent } if *recent >= pq4::MAX_LOGIN_FAILURES),
        ) > 0
    }

    /// Counts a failed login on every holder of the account.
    async fn failed(&self, username: &str, holders: &[PeerId]) {
        let op = ReplicaOp::LoginFailed {
            username: username.to_owned(),
        };
        self.ask_all(holders, op).await;
    }

    /// Whether `proves` holds for the verifier of a registration of `username` that lost a
    /// partition race (so its device is told so, not "wrong password").
    async fn lost(
        &self,
        username: &str,
        holders: &[PeerId],
        proves: impl Fn(&[u8]) -> bool,
    ) -> bool {
        let op = ReplicaOp::Lost {
            username: username.to_owned(),
        };
        self.ask_all(holders, op).await.into_iter().any(|answer| {
            matches!(answer, Ok(Response::Lost(verifiers)) if verifiers.iter().any(|v| proves(&v.0)))
        })
    }

    async fn login_start(&self, username: &str) -> Response {
        let (found, limited) = tokio::join!(self.account(username), self.rate_limited(username));
        if limited {
            return err(
                ErrorKind::RateLimited,
                "too many failed logins for this account; wait 5 minutes",
            );
        }
        let account = match found {
            Ok((account, _, _)) => account,
            Err(response) => return response,
        };
        let mut nonce = [0u8; 32];
        rand::fill(&mut nonce);
        if let Ok(mut challenges) = self.inner.challenges.lock() {
            challenges.retain(|_, (_, until)| *until > Instant::now());
            challenges.insert(
                nonce.to_vec(),
                (username.to_owned(), Instant::now() + CHALLENGE_TTL),
            );
        }
        Response::LoginChallenge {
            kdf: account.kdf,
            nonce: Bytes(nonce.to_vec()),
        }
    }

    async fn login_finish(&self, username: &str, nonce: &[u8], answer: &[u8]) -> Response {
        if self.rate_limited(username).await {
            return err(
                ErrorKind::RateLimited,
                "too many failed logins for this account; wait 5 minutes",
            );
        }
        // Single use: a challenge is gone once answered, rightly or not.
        let open = self
            .inner
            .challenges
            .lock()
            .ok()
            .and_then(|mut c| c.remove(nonce))
            .is_some_and(|(name, until)| name == username && until > Instant::now());
        if !open {
            return err(
                ErrorKind::AuthenticationFailed,
                "the login challenge is unknown or expired",
            );
        }
        let (account, holders) = match self.account(username).await {
            Ok((account, _, holders)) => (account, holders),
            Err(response) => return response,
        };
        let expected = login_mac(&account.verifier.0, nonce, username);
        if !constant_time_eq(&expected, answer) {
            let proves = |v: &[u8]| constant_time_eq(&login_mac(v, nonce, username), answer);
            if self.lost(username, &holders, proves).await {
                return registration_lost(username);
            }
            self.failed(username, &holders).await;
            warn!(%username, "failed login");
            return err(ErrorKind::AuthenticationFailed, WRONG_PASSWORD);
        }
        Response::LoggedIn {
            account: Box::new(account),
        }
    }

    async fn get_bundle(&self, username: &str) -> Response {
        let (account, opks, holders) = match self.account(username).await {
            Ok(found) => found,
            Err(response) => return response,
        };
        // A prekey is handed out only when a majority of its holders removed it now: two
        // coordinators racing for one key cannot both get a majority.
        for opk in opks.iter().take(3) {
            let op = ReplicaOp::TakeOpk {
                username: username.to_owned(),
                id: opk.id,
            };
            let answers = self.ask_all(&holders, op).await;
            if Self::count(&answers, |r| matches!(r, Response::Granted))
                >= pq4::majority(holders.len())
            {
                return Response::Bundle {
                    bundle: account.bundle,
                    opk: Some(opk.clone()),
                };
            }
        }
        // The handshake proceeds without one (docs/pq4.md: "may be null").
        info!(%username, "bundle handed out without a one-time prekey (none left)");
        Response::Bundle {
            bundle: account.bundle,
            opk: None,
        }
    }

    async fn send(&self, from: String, to: &str, envelope: Bytes) -> Response {
        if envelope.0.len() > MAX_ENVELOPE_BYTES || from.len() > MAX_NAME_LEN {
            return err(ErrorKind::Invalid, "the message is too large");
        }
        if let Err(response) = self.account(to).await {
            return response;
        }
        let id = Bytes(sha256(&envelope.0));
        let message = Queued {
            id: id.clone(),
            from,
            at_ms: now_ms(),
            envelope,
        };
        let holders = self.holders(&pq4::user_key(to)).await;
        let op = ReplicaOp::PutMessage {
            to: to.to_owned(),
            message,
        };
        let answers = self.ask_all(&holders, op).await;
        let stored = Self::count(&answers, |r| matches!(r, Response::Ok));
        if stored == 0 {
            return answers
                .into_iter()
                .find_map(|a| a.ok().filter(|r| matches!(r, Response::Error { .. })))
                .unwrap_or_else(|| err(ErrorKind::Unavailable, "no holder stored the message"));
        }
        Response::Sent {
            id,
            stored: stored as u32,
        }
    }

    /// The union of what the holders have for `device` (oldest first, one page).
    async fn fetch(&self, username: &str, device: &Bytes) -> Result<Vec<Queued>, Response> {
        let holders = self.holders(&pq4::user_key(username)).await;
        let op = ReplicaOp::FetchMessages {
            to: username.to_owned(),
            device: device.clone(),
        };
        let mut all: HashMap<Vec<u8>, Queued> = HashMap::new();
        let mut answered = 0;
        for answer in self.ask_all(&holders, op).await {
            if let Ok(Response::Messages(messages)) = answer {
                answered += 1;
                for m in messages {
                    all.entry(m.id.0.clone()).or_insert(m);
                }
            }
        }
        if answered == 0 {
            return Err(err(
                ErrorKind::Unavailable,
                "no holder of the mailbox answered",
            ));
        }
        let mut messages: Vec<Queued> = all.into_values().collect();
        messages.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        messages.truncate(MAX_FETCH);
        Ok(messages)
    }

    /// Checks a mailbox proof against the account's verifier and that the asking device is
    /// enrolled and not revoked; the account's one-time prekeys come back with it.
    async fn authenticate(
        &self,
        auth: &pq4::MailboxAuth,
        body: &[u8],
        origin: Origin,
    ) -> Result<(Account, Vec<Opk>), Response> {
        let (proof, device) = tokio::join!(
            self.authenticate_proof(auth, body),
            self.device_allowed(auth)
        );
        let found = proof?;
        if let Err(response) = device {
            if matches!(
                response,
                Response::Error {
                    kind: ErrorKind::DeviceRevoked,
                    ..
                }
            ) {
                self.audit_account(
                    AuditKind::ChatRevokedDeviceRefused,
                    &auth.username,
                    origin,
                    &[(
                        "device",
                        constella_behaviours::pq4_devices::device_hex(&auth.device),
                    )],
                );
            }
            return Err(response);
        }
        Ok(found)
    }

    /// Checks a mailbox proof against the account's verifier only.
    async fn authenticate_proof(
        &self,
        auth: &pq4::MailboxAuth,
        body: &[u8],
    ) -> Result<(Account, Vec<Opk>), Response> {
        let (account, opks, holders) = self.account(&auth.username).await?;
        if now_ms().abs_diff(auth.ts_ms) > AUTH_SKEW_MS {
            return Err(err(
                ErrorKind::AuthenticationFailed,
                "the request's clock is more than 5 minutes off",
            ));
        }
        let proves = |verifier: &[u8]| {
            let expected = mailbox_mac(
                verifier,
                &auth.username,
                auth.ts_ms,
                &auth.nonce.0,
                &auth.device.0,
                body,
            );
            constant_time_eq(&expected, &auth.mac.0)
        };
        if proves(&account.verifier.0) {
            Ok((account, opks))
        } else if self.lost(&auth.username, &holders, proves).await {
            Err(registration_lost(&auth.username))
        } else {
            Err(err(
                ErrorKind::AuthenticationFailed,
                "mailbox proof does not match",
            ))
        }
    }

    /// Hands records to the current holders whenever the core reports a membership change
    /// (the event loop calls [`ChatLink::membership_changed`]): every record
    /// this node holds (accounts, mailboxes, groups) is offered to each of its holders (puts are idempotent, acknowledged
    /// messages are refused by their tombstones).
    pub async fn hand_off_loop(self) {
        let mut last: Vec<PeerId> = Vec::new();
        loop {
            self.inner.membership.notified().await;
            tokio::time::sleep(HANDOFF_SETTLE).await;
            let mut members = self.members().await;
            members.sort();
            if members == last {
                continue;
            }
            last = members.clone();
            let Ok((accounts, messages)) = self.inner.store.held() else {
                continue;
            };
            let mut pushed = 0usize;
            for (account, opks) in accounts {
                let holders = pq4::closest(&pq4::user_key(&account.username), &members, REPLICAS);
                for peer in holders.into_iter().filter(|p| *p != self.inner.local) {
                    let op = ReplicaOp::PutAccount {
                        account: account.clone(),
                        opks: opks.clone(),
                    };
                    pushed += usize::from(self.ask(peer, op).await.is_ok());
                }
            }
            for (to, message) in messages {
                let holders = pq4::closest(&pq4::user_key(&to), &members, REPLICAS);
                for peer in holders.into_iter().filter(|p| *p != self.inner.local) {
                    let op = ReplicaOp::PutMessage {
                        to: to.clone(),
                        message: message.clone(),
                    };
                    pushed += usize::from(self.ask(peer, op).await.is_ok());
                }
            }
            pushed += self.hand_off_groups(&members).await;
            pushed += self.hand_off_devices(&members).await;
            if pushed > 0 {
                info!(pushed, "pq4 records handed off after a membership change");
            }
        }
    }

    /// Serves the local chat socket until the listener fails.
    pub async fn serve_socket(self, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let service = self.clone();
                    tokio::spawn(async move {
                        if let Err(error) = service.serve_stream(stream).await {
                            debug!(%error, "chat socket connection ended");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "chat socket accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn serve_stream(&self, mut stream: UnixStream) -> std::io::Result<()> {
        while let Some(frame) = read_frame(&mut stream, pq4::MAX_REQUEST_BYTES as usize).await? {
            let response = match ciborium::from_reader::<Request, _>(frame.as_slice()) {
                Ok(request) => self.serve(request, Origin::Local).await,
                Err(error) => err(ErrorKind::Invalid, format!("malformed request: {error}")),
            };
            let mut out = Vec::new();
            let _ = ciborium::into_writer(&response, &mut out);
            write_frame(&mut stream, &out).await?;
        }
        Ok(())
    }
}

/// Binds the chat socket (0600), replacing a stale one.
pub fn bind(state_dir: &Path) -> anyhow::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let path = state_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// Reads one `u32 BE length ‖ bytes` frame; `None` at a clean end of stream.
pub async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one frame.
pub async fn write_frame(
    stream: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

fn registration_lost(username: &str) -> Response {
    err(
        ErrorKind::RegistrationLost,
        pq4::registration_lost_message(username),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bounds and shape of a registration (the bundle's signatures are checked by every client
/// that uses it; here only that it decodes and belongs to the account's identity).
fn check_account(account: &Account, opks: &[Opk]) -> Result<(), String> {
    if !pq4::valid_username(&account.username) {
        return Err("username must be 1-32 of a-z, 0-9, _ starting with a letter".to_owned());
    }
    if !pq4::valid_email(&account.email) {
        return Err("email address is not valid".to_owned());
    }
    if account.identity.0.len() != 113 || account.verifier.0.len() != 32 {
        return Err("identity or verifier has the wrong length".to_owned());
    }
    if opks.len() > MAX_OPKS || opks.iter().any(|o| o.key.0.len() != 56) {
        return Err("too many or malformed one-time prekeys".to_owned());
    }
    let bundle = constella_keys::PreKeyBundle::from_bytes(&account.bundle.0)
        .map_err(|e| format!("bundle: {e}"))?;
    let verified = bundle.verify().map_err(|e| format!("bundle: {e}"))?;
    if verified.identity().to_bytes().as_slice() != account.identity.0.as_slice() {
        return Err("the bundle belongs to another identity".to_owned());
    }
    Ok(())
}
