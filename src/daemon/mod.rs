//! The node daemon: a [`Client`] handle and an [`EventLoop`](event_loop::EventLoop) that owns the
//! libp2p Swarm, joined by a bounded command channel with `oneshot` replies.

mod event_loop;
mod rpc;
pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use constella_behaviours::Behaviour;
use constella_behaviours::settings::NetworkSettings;
use libp2p::{Swarm, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::AuditLog;
use crate::bot::{self, BotConfig, BotMetrics};
use crate::control::{self, InviteReport, PeerReport, Request, Response, StatusReport};
use crate::reboot::RebootAction;
use crate::state::StateDir;
use crate::stats::{NodeStats, RebootAccepted};
use crate::validate::{ApiUrl, HostPort, Ttl};
use constella_behaviours::rpc::PeerInfo;

/// How many commands may wait for the event loop.
const COMMAND_QUEUE: usize = 32;
/// Connections are kept open: the full mesh is how members see each other die at once.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Timeout of one request-response exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A command for the event loop.
#[derive(Debug)]
pub enum Command {
    Status(oneshot::Sender<StatusReport>),
    Peers(oneshot::Sender<Vec<PeerReport>>),
    Invite(Ttl, oneshot::Sender<Result<InviteReport, String>>),
    Leave(oneshot::Sender<Result<(), String>>),
    /// Merge bot state into the network settings; persisted and published before the reply.
    MergeSettings(NetworkSettings, oneshot::Sender<NetworkSettings>),
    /// The member list as the node named (name or node id) by the string sees it.
    PeersOf(String, oneshot::Sender<Result<Vec<PeerInfo>, String>>),
    /// Resource figures of the node named (name or node id) by the string.
    Stats(String, oneshot::Sender<Result<NodeStats, String>>),
    /// Reboot a node.
    Reboot {
        target: String,
        requested_by: String,
        reply: oneshot::Sender<Result<RebootAccepted, String>>,
    },
}

/// A cloneable handle to the running node (`Clone + Send + Sync`): the control socket and the
/// Telegram bot use it from their own tasks. Every error is one line for a person to read.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| "the node is shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "the node is shutting down".to_owned())
    }

    /// Merges `settings` into the network settings: persisted, and published to every node,
    /// before the merged result is returned.
    pub async fn merge_settings(
        &self,
        settings: NetworkSettings,
    ) -> Result<NetworkSettings, String> {
        self.ask(|reply| Command::MergeSettings(settings, reply))
            .await
    }

    /// The member list as this node sees it, sorted by name, the leader marked.
    pub async fn peers(&self) -> Result<Vec<PeerReport>, String> {
        self.ask(Command::Peers).await
    }

    /// The member list as `target` sees it (`GetPeers`; this node answers itself).
    pub async fn peers_of(&self, target: &str) -> Result<Vec<PeerInfo>, String> {
        self.ask(|reply| Command::PeersOf(target.to_owned(), reply))
            .await?
    }

    /// This node, its network and its leader.
    pub async fn status(&self) -> Result<StatusReport, String> {
        self.ask(Command::Status).await
    }

    /// A new one-time join link valid for `ttl`.
    pub async fn invite(&self, ttl: Ttl) -> Result<InviteReport, String> {
        self.ask(|reply| Command::Invite(ttl, reply)).await?
    }

    /// Resource figures of `target` (a server name or node id; this node answers itself).
    /// Fails at once with "no node named X" for an unknown target, and within 5 s with
    /// "node X is offline" / "node X is unreachable" when it cannot be reached.
    pub async fn stats(&self, target: &str) -> Result<NodeStats, String> {
        self.ask(|reply| Command::Stats(target.to_owned(), reply))
            .await?
    }

    /// Asks `target` to reboot its host. `Ok` means the target accepted and is about to act;
    /// `requested_by` is written to the target's log.
    pub async fn reboot(&self, target: &str, requested_by: &str) -> Result<RebootAccepted, String> {
        self.ask(|reply| Command::Reboot {
            target: target.to_owned(),
            requested_by: requested_by.to_owned(),
            reply,
        })
        .await?
    }

    /// Leaves the network (tombstone, secret deleted); the daemon stops shortly after.
    pub async fn leave(&self) -> Result<(), String> {
        self.ask(Command::Leave).await?
    }

    /// Answers one control request.
    pub async fn handle(&self, request: Request) -> Response {
        let result = match request {
            Request::Status => self.status().await.map(|s| Response::Status(Box::new(s))),
            Request::Peers => self.peers().await.map(Response::Peers),
            Request::Invite { ttl_secs } => match format!("{ttl_secs}s").parse::<Ttl>() {
                Ok(ttl) => self.invite(ttl).await.map(Response::Invite),
                Err(error) => Err(error),
            },
            Request::Leave => self.leave().await.map(|()| Response::Left),
            Request::PeersOf { target } => self.peers_of(&target).await.map(Response::PeersOf),
            Request::Stats { target } => self
                .stats(&target)
                .await
                .map(|s| Response::Stats(Box::new(s))),
            Request::Reboot {
                target,
                requested_by,
            } => self
                .reboot(&target, &requested_by)
                .await
                .map(Response::RebootAccepted),
        };
        result.unwrap_or_else(Response::Error)
    }
}

/// The bot and the control socket share the client across tasks.
const _: () = {
    const fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Client>();
};

/// Builds a Swarm over TCP + noise + yamux for the given behaviour.
pub fn build_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> Result<B>,
) -> Result<Swarm<B>> {
    let mut failure = None;
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .context("cannot set up the TCP transport")?
        .with_dns()
        .context("cannot set up DNS resolution")?
        .with_behaviour(|key| match behaviour(key) {
            Ok(b) => Ok(b),
            Err(error) => {
                let message = format!("{error:#}");
                failure = Some(error);
                Err(message.into())
            }
        });
    let swarm = match (swarm, failure) {
        (Ok(swarm), _) => swarm,
        (Err(_), Some(error)) => return Err(error),
        (Err(error), None) => bail!("cannot build the network behaviour: {error}"),
    };
    Ok(swarm
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build())
}

/// Runs the node until SIGINT/SIGTERM or `leave`. `reboot_command`, if set, replaces the
/// host reboot that `Reboot` triggers (run with `sh -c`). `telegram_api_url`, if set, points
/// the bot at another Bot API server.
pub async fn run(
    state_dir: StateDir,
    listen_override: Option<HostPort>,
    reboot_command: Option<String>,
    telegram_api_url: Option<ApiUrl>,
) -> Result<()> {
    // Before anything is read or written: a second `run` is refused here, unchanged.
    let _lock = state_dir.lock()?;
    let reboot = match reboot_command {
        Some(command) if command.trim().is_empty() => bail!(
            "the reboot command (--reboot-command or CONSTELLA_REBOOT_COMMAND) is empty; unset it to reboot the host"
        ),
        Some(command) => RebootAction::Command(command),
        None => RebootAction::Host,
    };
    tracing::info!(
        action = reboot.describe(),
        permitted = reboot.permitted(),
        "reboot requests will run this action"
    );
    let mut state = state_dir.load()?;
    if state.left {
        bail!(
            "this node left network {}; join again with a new link (remove {} first)",
            state.network_id,
            state_dir.state_path().display()
        );
    }
    let secret = state
        .network_secret
        .as_ref()
        .context("the state file has no network secret")?
        .decode()?;
    let key = state_dir.load_key()?;
    let local_id = key.public().to_peer_id();
    if local_id.to_base58() != state.node.node_id {
        bail!(
            "{} belongs to node {} but the state names {}",
            state_dir.key_path().display(),
            local_id,
            state.node.node_id
        );
    }
    if let Some(listen) = listen_override {
        state.node.listen = listen.to_string();
    }
    state.node.incarnation = state.node.incarnation.wrapping_add(1);
    state_dir.save(&state)?;

    let network_id = state.network_id.clone();
    let swarm = build_swarm(key, |key| {
        Ok(Behaviour::new(key, &network_id, REQUEST_TIMEOUT)?)
    })?;
    let listener = control::bind(&state_dir.socket_path()).await?;
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let client = Client {
        commands: commands_tx,
    };
    let audit =
        AuditLog::open(state_dir.path(), &state.node.name).context("cannot open the audit log")?;
    // A token from `constella bot-token set` wins over the one in the state file.
    let token = state_dir
        .load_bot_token()?
        .or_else(|| state.bot_token.clone());
    let (bot_tokens, tokens) = watch::channel(token);
    let control_task = tokio::spawn(control::serve(
        listener,
        control::Control::new(client.clone(), audit.clone(), bot_tokens, state_dir.clone()),
    ));

    let metrics = Arc::new(BotMetrics::default());
    let (signals, watchers) = signals::Signals::new(state.settings.clone(), metrics.clone());
    let bot = bot::host(
        BotConfig {
            api_url: telegram_api_url.map(|u| u.url().clone()),
            owner_username: state.owner_username.clone(),
            node_name: state.node.name.clone(),
            secret: secret.clone(),
            audit,
        },
        tokens,
        client,
        watchers,
        metrics,
    );

    let event_loop = event_loop::EventLoop::new(
        swarm,
        commands_rx,
        state_dir.clone(),
        state,
        secret,
        reboot,
        signals,
    )?;
    let result = event_loop.run(shutdown_signal()).await;
    // Stops the poll at once: the in-flight long poll is dropped with its task.
    bot.stop();
    control_task.abort();
    let _ = std::fs::remove_file(state_dir.socket_path());
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = int.recv() => tracing::info!("SIGINT received, stopping"),
    }
}
