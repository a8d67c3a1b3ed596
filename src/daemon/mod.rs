//! The node daemon: a [`Client`] handle and an [`EventLoop`](event_loop::EventLoop) that owns the
//! libp2p Swarm and the protocol core, joined by a bounded command channel with `oneshot`
//! replies. The bot, the control socket and the CLI use the [`Client`] and the types here; the
//! daemon never uses theirs ([`crate::node`] wires them together).

mod admission;
mod beats;
pub mod chat;
mod chat_store;
mod commands;
pub mod error;
mod event_loop;
mod gossip_io;
mod kad_filter;
mod log_limit;
mod log_outputs;
mod nat;
pub mod node_keys;
mod replies;
pub mod report;
mod requests;
mod rotation;
mod rpc;
pub mod signals;
mod store;
mod swarm_setup;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use constella_behaviours::membership::MemberView;
use constella_behaviours::node::LeaveOutcome;
use constella_behaviours::rpc::{
    ContainerAlert, DockerAnswer, DockerError, DockerRequest, History, Requester, SecretToken,
};
use constella_behaviours::rpc::{ServicesAnswer, ServicesRequest};
use constella_behaviours::settings::NetworkSettings;
use constella_behaviours::{Behaviour, NetworkSecret};
use tokio::sync::{mpsc, oneshot};

pub use error::ClientError;
use report::{InviteReport, StatusReport};
pub use swarm_setup::build_swarm;

use crate::reboot::RebootAction;
use crate::state::{NetworkState, StateDir};
use crate::stats::{NodeStats, RebootAccepted};
use crate::validate::Ttl;

/// How many commands may wait for the event loop.
const COMMAND_QUEUE: usize = 32;
/// Timeout of one request-response exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A command for the event loop.
#[derive(Debug)]
pub enum Command {
    Status(oneshot::Sender<StatusReport>),
    Peers(oneshot::Sender<Vec<MemberView>>),
    Invite(Ttl, oneshot::Sender<Result<InviteReport, ClientError>>),
    Leave(oneshot::Sender<Result<LeaveOutcome, ClientError>>),
    /// Remove a member (name or node id): tombstone it and rotate the network secret. Answers
    /// the removed node's name.
    Remove(String, oneshot::Sender<Result<String, ClientError>>),
    /// Replace this node's PQ4 identity (`rotate-keys`, seed 004 §11).
    RotateKeys(oneshot::Sender<Result<node_keys::KeysRotated, ClientError>>),
    /// Merge bot state into the network settings; persisted and published before the reply.
    MergeSettings(NetworkSettings, oneshot::Sender<NetworkSettings>),
    /// [`Command::MergeSettings`], answered only once the merged state is on disk (fsynced,
    /// renamed into place): what must survive a crash before the caller acts on it.
    MergeSettingsDurably(
        NetworkSettings,
        oneshot::Sender<Result<NetworkSettings, ClientError>>,
    ),
    /// The member list as the node named (name or node id) by the string sees it.
    PeersOf(
        String,
        oneshot::Sender<Result<Vec<MemberView>, ClientError>>,
    ),
    /// Resource figures of the node named (name or node id) by the string.
    Stats(String, oneshot::Sender<Result<NodeStats, ClientError>>),
    /// Metric history of a node: (metrics, range in seconds).
    History(
        String,
        (Vec<String>, u64),
        oneshot::Sender<Result<History, ClientError>>,
    ),
    /// Reboot a node.
    Reboot {
        target: String,
        requested_by: String,
        reply: oneshot::Sender<Result<RebootAccepted, ClientError>>,
        /// Who asked, for the target's check (`None`: this node's CLI), and the bot's
        /// confirmation id.
        by: Option<Requester>,
        confirmation: Option<String>,
    },
    /// A container request for a node, made for `by`.
    Docker {
        target: String,
        request: DockerRequest,
        by: Requester,
        reply: oneshot::Sender<Result<DockerAnswer, DockerError>>,
    },
    /// A container alert of this node, for the leader's bot.
    ContainerAlert(ContainerAlert),
    /// A request about a node's watched systemd units, made for `by`.
    Services {
        target: String,
        request: ServicesRequest,
        by: Requester,
        reply: oneshot::Sender<Result<ServicesAnswer, String>>,
    },
    /// The bot token of another member (`GetBotToken`).
    BotToken {
        target: String,
        reply: oneshot::Sender<Result<Option<SecretToken>, ClientError>>,
    },
}

/// A cloneable handle to the running node (`Clone + Send + Sync`): the control socket and the
/// Telegram bot use it from their own tasks.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| ClientError::ShuttingDown)?;
        answer.await.map_err(|_| ClientError::ShuttingDown)
    }

    /// Merges `settings` into the network settings: persisted, and published to every node,
    /// before the merged result is returned.
    pub async fn merge_settings(
        &self,
        settings: NetworkSettings,
    ) -> Result<NetworkSettings, ClientError> {
        self.ask(|reply| Command::MergeSettings(settings, reply))
            .await
    }

    /// [`Client::merge_settings`], returning only once the merged settings are durably written
    /// (temp file, fsync, rename, fsync of the directory): a crash right after cannot lose them.
    pub async fn merge_settings_durably(
        &self,
        settings: NetworkSettings,
    ) -> Result<NetworkSettings, ClientError> {
        self.ask(|reply| Command::MergeSettingsDurably(settings, reply))
            .await?
    }

    /// The member list as this node sees it, sorted by name, the leader marked.
    pub async fn peers(&self) -> Result<Vec<MemberView>, ClientError> {
        self.ask(Command::Peers).await
    }

    /// The member list as `target` sees it (`GetPeers`; this node answers itself).
    pub async fn peers_of(&self, target: &str) -> Result<Vec<MemberView>, ClientError> {
        self.ask(|reply| Command::PeersOf(target.to_owned(), reply))
            .await?
    }

    /// This node, its network and its leader.
    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        self.ask(Command::Status).await
    }

    /// A new one-time join link valid for `ttl`, recorded durably before it is returned.
    pub async fn invite(&self, ttl: Ttl) -> Result<InviteReport, ClientError> {
        self.ask(|reply| Command::Invite(ttl, reply)).await?
    }

    /// Resource figures of `target` (a server name or node id; this node answers itself).
    /// Fails at once with [`ClientError::UnknownNode`] for an unknown target, and within 5 s
    /// with [`ClientError::Offline`] / [`ClientError::Unreachable`] when it cannot be reached.
    pub async fn stats(&self, target: &str) -> Result<NodeStats, ClientError> {
        self.ask(|reply| Command::Stats(target.to_owned(), reply))
            .await?
    }

    /// The sampled history of `metrics` (empty: all) on `target` over the last `range_secs`.
    pub async fn history(
        &self,
        target: &str,
        metrics: Vec<String>,
        range_secs: u64,
    ) -> Result<History, ClientError> {
        self.ask(|reply| Command::History(target.to_owned(), (metrics, range_secs), reply))
            .await?
    }

    /// Asks `target` to reboot its host. `Ok` means the target accepted and is about to act;
    /// `requested_by` is written to the target's log.
    pub async fn reboot(
        &self,
        target: &str,
        requested_by: &str,
    ) -> Result<RebootAccepted, ClientError> {
        self.ask(|reply| Command::Reboot {
            target: target.to_owned(),
            requested_by: requested_by.to_owned(),
            reply,
            by: None,
            confirmation: None,
        })
        .await?
    }

    /// Asks `target` to reboot for `by`, confirmed in the bot with `confirmation` (already
    /// claimed in the network settings): the target checks `by`'s role and the claim itself.
    pub async fn reboot_confirmed(
        &self,
        target: &str,
        requested_by: &str,
        by: Requester,
        confirmation: &str,
    ) -> Result<RebootAccepted, ClientError> {
        self.ask(|reply| Command::Reboot {
            target: target.to_owned(),
            requested_by: requested_by.to_owned(),
            reply,
            by: Some(by),
            confirmation: Some(confirmation.to_owned()),
        })
        .await?
    }

    /// A container request for `target` (a server name or node id), made for `by`: another
    /// member answers it over RPC after checking `by`'s role itself.
    pub async fn docker(
        &self,
        target: &str,
        request: DockerRequest,
        by: Requester,
    ) -> Result<DockerAnswer, DockerError> {
        self.ask(|reply| Command::Docker {
            target: target.to_owned(),
            request,
            by,
            reply,
        })
        .await
        .map_err(|error| DockerError::Unreachable(error.to_string()))?
    }

    /// A request about `target`'s watched systemd units (a server name or node id), made for
    /// `by`: the target checks `by`'s role itself. The error is one line.
    pub async fn services(
        &self,
        target: &str,
        request: ServicesRequest,
        by: Requester,
    ) -> Result<ServicesAnswer, String> {
        self.ask(|reply| Command::Services {
            target: target.to_owned(),
            request,
            by,
            reply,
        })
        .await
        .map_err(|error| error.to_string())?
    }

    /// The bot token `target` (another member) holds, fetched over the members-only RPC.
    pub async fn bot_token_of(&self, target: &str) -> Result<Option<SecretToken>, ClientError> {
        self.ask(|reply| Command::BotToken {
            target: target.to_owned(),
            reply,
        })
        .await?
    }

    /// Hands a container alert of this node to the leader's bot (this node's, if it leads).
    /// Fire and forget: an alert that cannot be delivered is logged at debug level.
    pub async fn container_alert(&self, alert: ContainerAlert) -> Result<(), ClientError> {
        self.commands
            .send(Command::ContainerAlert(alert))
            .await
            .map_err(|_| ClientError::ShuttingDown)
    }

    /// Removes a member (name or node id) and rotates the network secret; returns its name.
    pub async fn remove(&self, target: &str) -> Result<String, ClientError> {
        let target = target.to_owned();
        self.ask(|reply| Command::Remove(target, reply)).await?
    }

    /// Replaces this node's PQ4 identity with a new one signed by the old (`rotate-keys`).
    pub async fn rotate_keys(&self) -> Result<node_keys::KeysRotated, ClientError> {
        self.ask(Command::RotateKeys).await?
    }

    /// Leaves the network (tombstone, secret deleted) and says whether a member acknowledged
    /// it; the daemon stops shortly after.
    pub async fn leave(&self) -> Result<LeaveOutcome, ClientError> {
        self.ask(Command::Leave).await?
    }
}

/// The bot and the control socket share the client across tasks.
const _: () = {
    const fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Client>();
};

/// The secrets of this node and its network, held by the event loop and never by the core.
pub(super) struct Keys {
    /// The network secret of the current epoch.
    pub secret: NetworkSecret,
    /// This node's PQ4 keys.
    pub pq4: constella_keys::KeyStore,
    /// This node's PQ4 card (public), put in its record.
    pub card: constella_behaviours::network_keys::Pq4Card,
    /// This node's libp2p key, which signs its cards.
    pub node_key: libp2p::identity::Keypair,
    /// The chain of custody of `pq4` (key updates since the first identity; see
    /// [`node_keys`]).
    pub key_updates: Vec<constella_behaviours::gossip::KeyUpdateBytes>,
    /// The PQ4 keys replaced by `rotate-keys` since the start: a rotation sealed to the old
    /// card while the new one spread still opens.
    pub previous_pq4: Option<constella_keys::KeyStore>,
    /// Where `rotate-keys` writes the new PQ4 keys.
    pub dir: StateDir,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Builds the node: its event loop (returned as a future that runs until the node stops,
/// given `shutdown` for SIGTERM/SIGINT) and a [`Client`] to talk to it.
pub fn start(
    state_dir: StateDir,
    state: NetworkState,
    secret: NetworkSecret,
    (key, pq4): (libp2p::identity::Keypair, constella_keys::KeyStore),
    reboot: RebootAction,
    signals: signals::Signals,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Client, impl Future<Output = Result<()>>)> {
    let tag = state.tag(&secret);
    let card = constella_behaviours::network_keys::Pq4Card::new(&key, &pq4)?;
    let key_updates = state_dir.pq4_custody(pq4.identity_public())?;
    let node_key = key.clone();
    let keys_dir = state_dir.clone();
    let relay_members = constella_behaviours::nat::RelayMembers::default();
    let relayed_bytes = swarm_setup::RelayedBytes::default();
    let swarm = swarm_setup::build_node_swarm(key, &relayed_bytes, |key, relay_client| {
        let members = &relay_members;
        Ok(Behaviour::new(
            key,
            &tag,
            REQUEST_TIMEOUT,
            relay_client,
            members,
        )?)
    })?;
    let (chat, chat_service) = chat::open(state_dir.path(), *swarm.local_peer_id())?;
    if let Some(audit) = signals.audit.clone() {
        chat_service.set_audit(audit);
    }
    let (chat_listener, _) = chat::bind(state_dir.path())?;
    tokio::spawn(chat_service.clone().serve_socket(chat_listener));
    tokio::spawn(chat_service.clone().inactivity_loop());
    tokio::spawn(chat_service.hand_off_loop());
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let history = crate::monitor::HistoryReader::new(crate::monitor::history_dir(state_dir.path()));
    let services = crate::services::Services::new(state_dir.path(), &state.node.name);
    let store = store::Store::spawn(state_dir, written_tx).context("cannot start the store")?;
    let rpc = rpc::Rpc::new(
        reboot,
        std::time::Instant::now(),
        crate::docker::Engine::from_env(&state.node.name),
        signals.notices.clone(),
        state.owner_username.clone(),
        signals.bot_token.clone(),
        signals.audit.clone(),
    )
    .with_history(history)
    .with_services(services);
    let event_loop = event_loop::EventLoop::new(
        swarm,
        commands_rx,
        (store, written_rx),
        state,
        Keys {
            secret,
            pq4,
            card,
            node_key,
            key_updates,
            previous_pq4: None,
            dir: keys_dir,
        },
        (rpc, chat),
        (signals, (relay_members, relayed_bytes)),
    )?;
    let client = Client {
        commands: commands_tx,
    };
    Ok((client, event_loop.run(shutdown)))
}
