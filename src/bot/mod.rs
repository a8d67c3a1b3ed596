//! The owner's Telegram bot. Every node runs the supervisor; only the current leader polls.
//!
//! - [`mod@self`]: the supervisor. It waits on the leadership watch, starts the [`poller`]
//!   when this node leads and drops it (with its in-flight long poll) as soon as it does not.
//! - [`poller`]: the GetUpdates loop: offsets from the network settings, each update claimed
//!   in the network before it is handled, 409 Conflict with a backoff of seconds.
//! - [`handlers`]: access (owner and granted roles), commands and buttons.
//! - [`callback`]: validated callback data; [`ui`]: texts and keyboards (ru/en).
//! - [`notify`]: membership events for the owner, batched and rate-limited, sent by the
//!   leader only.
//! - [`alerts`]: threshold alerts and recoveries from the network settings, each marked sent
//!   in the network before the leader sends it.

mod alerts;
pub mod callback;
mod handlers;
mod notify;
mod poller;
pub mod ui;

use std::sync::Arc;

use constella_behaviours::NetworkSecret;
use teloxide::Bot;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::audit::AuditLog;
use crate::daemon::Client;
use crate::daemon::signals::{BotMetrics, Leadership, NetworkEvent, Watchers};
use crate::state::StoredSecret;

/// What the bot needs to know about its network (the token comes separately: it can change
/// while the node runs, see [`host`]).
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// Another Bot API server, or the official one when `None`.
    pub api_url: Option<url::Url>,
    /// The owner's username from `init`, with or without `@`.
    pub owner_username: String,
    /// This node's name (for the leader-change notice).
    pub node_name: String,
    /// This node's id (base58): whose claim a confirmation is.
    pub node_id: String,
    /// Signs reboot confirmations so that any leader can check them.
    pub secret: NetworkSecret,
    /// The nodes' containers (the `🐳` screens).
    pub containers: crate::docker::Containers,
    /// Where reboots, invites, pins and refused actions are recorded.
    pub audit: AuditLog,
    /// The state directory whose chat socket (`pq4.sock`) gives `/chat_invite` its codes.
    pub chat_state_dir: std::path::PathBuf,
    /// This node's web panel, for `/web` (`None`: not started with `--web-addr`).
    pub web: Option<crate::web::Panel>,
}

/// The running bot tasks; dropping the handle stops them.
#[derive(Debug)]
pub struct BotHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl BotHandle {
    /// Stops the bot now: an in-flight long poll is dropped with its task.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for BotHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs the bot with the token `tokens` holds, and again from scratch with each new one
/// (`constella bot-token set`): the old bot's tasks, its long poll included, stop first.
/// Without a token the bot is off, with one warning.
pub fn host(
    config: BotConfig,
    mut tokens: watch::Receiver<Option<StoredSecret>>,
    client: Client,
    watchers: Watchers,
    metrics: Arc<BotMetrics>,
) -> BotHandle {
    if tokens.borrow().is_none() {
        warn!(
            "this network has no Telegram bot token (constella init --bot-token, or constella bot-token set): the bot is off"
        );
    }
    let task = tokio::spawn(async move {
        loop {
            let token = tokens.borrow_and_update().clone();
            let running = token.map(|token| {
                spawn(
                    config.clone(),
                    &token,
                    client.clone(),
                    watchers.resubscribe(),
                    metrics.clone(),
                )
            });
            if tokens.changed().await.is_err() {
                // Nobody can change the token any more: keep this bot until the node stops.
                return std::future::pending::<()>().await;
            }
            drop(running);
            metrics.set_polling(false);
            info!("the bot token was replaced: the bot starts again with the new one");
        }
    });
    BotHandle { tasks: vec![task] }
}

/// Builds the Bot API client. The token never reaches a log: teloxide strips it from errors,
/// and `Bot` (whose `Debug` would show it) is never formatted.
fn make_bot(config: &BotConfig, token: &StoredSecret) -> Option<Bot> {
    let http = match teloxide::net::default_reqwest_settings().build() {
        Ok(http) => http,
        Err(error) => {
            warn!(%error, "cannot build the HTTP client: the Telegram bot is off");
            return None;
        }
    };
    let bot = Bot::with_client(token.expose(), http);
    Some(match &config.api_url {
        Some(url) => bot.set_api_url(url.clone()),
        None => bot,
    })
}

/// Starts the bot supervisor and the notifier with `token`.
fn spawn(
    config: BotConfig,
    token: &StoredSecret,
    client: Client,
    watchers: Watchers,
    metrics: Arc<BotMetrics>,
) -> BotHandle {
    let Some(bot) = make_bot(&config, token) else {
        return BotHandle { tasks: Vec::new() };
    };
    let config = Arc::new(config);
    let Watchers {
        leadership,
        settings,
        notices,
        notices_tx,
        members: _,
    } = watchers;
    let notifier = tokio::spawn(notify::run(
        bot.clone(),
        notices,
        leadership.clone(),
        settings.clone(),
        config.node_name.clone(),
    ));
    let alerter = tokio::spawn(alerts::run(
        bot.clone(),
        client.clone(),
        leadership.clone(),
        settings.clone(),
    ));
    let poller = poller::Poller::new(bot, config.clone(), client, settings, metrics.clone());
    let supervisor = tokio::spawn(supervise(config, poller, leadership, notices_tx, metrics));
    BotHandle {
        tasks: vec![supervisor, notifier, alerter],
    }
}

/// Polls while this node leads; stops within one leadership change.
async fn supervise(
    config: Arc<BotConfig>,
    mut poller: poller::Poller,
    mut leadership: watch::Receiver<Leadership>,
    notices: broadcast::Sender<NetworkEvent>,
    metrics: Arc<BotMetrics>,
) {
    let mut last_leader = String::new();
    loop {
        loop {
            let current = leadership.borrow_and_update().clone();
            if current.is_local {
                break;
            }
            // This node's own name shows up while it settles: only another leader counts.
            if !current.leader_name.is_empty() && current.leader_name != config.node_name {
                last_leader = current.leader_name;
            }
            if leadership.changed().await.is_err() {
                return;
            }
        }
        info!("this node leads: the Telegram bot starts polling");
        if !last_leader.is_empty() && last_leader != config.node_name {
            let _ = notices.send(NetworkEvent::LeaderChanged {
                from: std::mem::take(&mut last_leader),
                to: config.node_name.clone(),
            });
        }
        last_leader.clone_from(&config.node_name);
        metrics.set_polling(true);
        poller.serve(&mut leadership).await;
        metrics.set_polling(false);
        info!("the Telegram bot stopped polling");
        if leadership.has_changed().is_err() {
            return;
        }
        // Handed over while alive (a better node joined or came back): only this node saw the
        // change happen, so it announces it; the new leader never saw this one lead.
        let now = leadership.borrow().clone();
        if !now.leaving && !now.leader_name.is_empty() && now.leader_name != config.node_name {
            let _ = notices.send(NetworkEvent::LeaderChanged {
                from: config.node_name.clone(),
                to: now.leader_name,
            });
        }
    }
}

/// Resolves when this node no longer leads (or the node is stopping).
async fn lost(leadership: &mut watch::Receiver<Leadership>) {
    loop {
        if !leadership.borrow_and_update().is_local {
            return;
        }
        if leadership.changed().await.is_err() {
            return;
        }
    }
}
