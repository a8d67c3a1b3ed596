//! The GetUpdates loop of the leader.
//!
//! Handover guarantees come from three rules:
//! - The offset is one past the highest update id known in the network (the network settings
//!   carry it), so a new leader starts exactly where the last one stopped.
//! - Before an update is handled it is claimed: its id is merged into the network settings,
//!   which the event loop persists and gossips before answering. An update is therefore handled
//!   at most once across leaders; one that was fetched but not claimed when leadership moved is
//!   still unconfirmed at Telegram, and the next leader fetches it.
//! - Ids at or below the highest claimed one are skipped, so a re-delivered update is dropped.
//!
//! A 409 Conflict (another process polls the same token: a partition with two leaders) is
//! logged once per episode and retried with a backoff of at most a few seconds.

use std::sync::Arc;
use std::time::Duration;

use constella_behaviours::settings::NetworkSettings;
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::prelude::*;
use teloxide::types::{AllowedUpdate, BotCommand, Update};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::handlers::Handlers;
use super::{BotConfig, BotMetrics, lost};
use crate::daemon::Client;
use crate::daemon::signals::Leadership;

/// Long-poll timeout. Leadership loss drops the poll at once, so this only bounds idle traffic.
const POLL_TIMEOUT_SECS: u32 = 10;
/// First retry delay after a failed request.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Retries never wait longer than this: a failover must finish in seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Retry delays: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], with ±20 % jitter so two
/// partitioned leaders do not poll in lockstep.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let jitter = rand::random_range(0.8..1.2);
        base.mul_f64(jitter).min(BACKOFF_MAX)
    }
}

/// Which kind of failure is going on, so each episode is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Episode {
    /// Requests succeed.
    Healthy,
    /// Telegram answers 409: another process polls this token.
    Conflict,
    /// Requests fail for another reason (network, server).
    Failing,
}

/// The poller: kept across leadership terms (it remembers the highest update it claimed).
pub(super) struct Poller {
    bot: Bot,
    client: Client,
    settings: watch::Receiver<NetworkSettings>,
    metrics: Arc<BotMetrics>,
    handlers: Handlers,
    /// The highest update id this node claimed.
    claimed: u32,
    /// GetMe, the webhook check and the command list were done.
    prepared: bool,
    episode: Episode,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Bot` is left out: its Debug shows the token.
        f.debug_struct("Poller")
            .field("claimed", &self.claimed)
            .field("prepared", &self.prepared)
            .field("episode", &self.episode)
            .finish_non_exhaustive()
    }
}

impl Poller {
    pub(super) fn new(
        bot: Bot,
        config: Arc<BotConfig>,
        client: Client,
        settings: watch::Receiver<NetworkSettings>,
        metrics: Arc<BotMetrics>,
    ) -> Self {
        let handlers = Handlers::new(
            bot.clone(),
            config,
            client.clone(),
            settings.clone(),
            metrics.clone(),
        );
        Self {
            bot,
            client,
            settings,
            metrics,
            handlers,
            claimed: 0,
            prepared: false,
            episode: Episode::Healthy,
        }
    }

    /// The highest update id handled anywhere in the network, as far as this node knows.
    fn handled_up_to(&self) -> u32 {
        self.claimed.max(self.settings.borrow().last_update_id)
    }

    /// Polls and handles updates until this node stops leading.
    pub(super) async fn serve(&mut self, leadership: &mut watch::Receiver<Leadership>) {
        let mut backoff = Backoff::new();
        loop {
            if !self.prepared {
                let result = tokio::select! {
                    result = self.prepare() => result,
                    () = lost(leadership) => return,
                };
                match result {
                    Ok(()) => self.prepared = true,
                    Err(error) => {
                        self.on_error(&error);
                        if !pause(backoff.next(), leadership).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            // An owner change since the last poll: the replaced owner is told once.
            self.handlers.tell_former_owner().await;
            let handled = self.handled_up_to();
            let mut request = self
                .bot
                .get_updates()
                .timeout(POLL_TIMEOUT_SECS)
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
            if handled > 0 {
                // Also confirms, at Telegram, every update up to `handled`.
                request =
                    request.offset(i32::try_from(handled).unwrap_or(i32::MAX).saturating_add(1));
            }
            let result = tokio::select! {
                result = request.send() => result,
                () = lost(leadership) => return,
            };
            match result {
                Ok(updates) => {
                    self.on_success();
                    backoff.reset();
                    for update in updates {
                        if !leadership.borrow().is_local {
                            // Not claimed, so not lost: the next leader fetches it.
                            return;
                        }
                        if !self.claim_and_handle(update).await {
                            return;
                        }
                    }
                }
                Err(error) => {
                    self.on_error(&error);
                    let delay = match error {
                        RequestError::RetryAfter(after) => after.duration().min(BACKOFF_MAX * 3),
                        _ => backoff.next(),
                    };
                    if !pause(delay, leadership).await {
                        return;
                    }
                }
            }
        }
    }

    /// GetMe (which also checks the token), no webhook, and the command menu.
    async fn prepare(&mut self) -> Result<(), RequestError> {
        let me = self.bot.get_me().await?;
        self.handlers.set_username(me.username().to_owned());
        let webhook = self.bot.get_webhook_info().await?;
        if webhook.url.is_some() {
            // GetUpdates is refused while a webhook is set.
            warn!("the bot had a webhook set; removing it to poll from the leader");
            self.bot.delete_webhook().await?;
        }
        let commands = [
            BotCommand::new("start", "Узлы сети / Nodes"),
            BotCommand::new("invite", "Ссылка для нового узла / Join link"),
            BotCommand::new("chat_invite", "Приглашение в PQ4-чат / Chat account invite"),
            BotCommand::new("web", "Вход в веб-панель / Web panel login"),
            BotCommand::new("lang", "Язык / Language (ru, en)"),
            BotCommand::new("help", "Помощь / Help"),
        ];
        self.bot.set_my_commands(commands).await?;
        info!(bot = %me.username(), "connected to the Bot API");
        Ok(())
    }

    /// Claims `update` in the network, then handles it. False if the node is stopping.
    async fn claim_and_handle(&mut self, update: Update) -> bool {
        let id = update.id.0;
        if id <= self.handled_up_to() {
            debug!(update_id = id, "update already handled; skipped");
            return true;
        }
        let claim = NetworkSettings {
            last_update_id: id,
            ..self.settings.borrow().clone()
        };
        match self.client.merge_settings(claim).await {
            Ok(_) => self.claimed = id,
            Err(_) => return false,
        }
        self.handlers.handle(update).await;
        true
    }

    fn on_success(&mut self) {
        match self.episode {
            Episode::Healthy => {}
            Episode::Conflict => info!("the Bot API conflict is over: this node alone polls"),
            Episode::Failing => info!("the Bot API answers again"),
        }
        self.episode = Episode::Healthy;
    }

    fn on_error(&mut self, error: &RequestError) {
        let conflict = matches!(
            error,
            RequestError::Api(ApiError::TerminatedByOtherGetUpdates)
        );
        if conflict {
            self.metrics.count_conflict();
            if self.episode != Episode::Conflict {
                warn!(
                    "409 Conflict from the Bot API: another process polls this bot token (two nodes that each think they lead, or a bot outside this network); retrying every few seconds"
                );
            }
            self.episode = Episode::Conflict;
        } else {
            // teloxide removes the token from request errors before they reach us.
            if self.episode != Episode::Failing {
                if matches!(error, RequestError::Api(ApiError::InvalidToken)) {
                    warn!(
                        "the Bot API refuses the bot token (401 Unauthorized, or 404 from a wrong --telegram-api-url); retrying every few seconds"
                    );
                } else {
                    warn!(%error, "a Bot API request failed; retrying every few seconds");
                }
            } else {
                debug!(%error, "a Bot API request failed again");
            }
            self.episode = Episode::Failing;
        }
    }
}

/// Sleeps for `delay`; false if leadership was lost meanwhile.
async fn pause(delay: Duration, leadership: &mut watch::Receiver<Leadership>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = lost(leadership) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_seconds() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next()).collect();
        assert!(delays[0] <= BACKOFF_MIN.mul_f64(1.2));
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX), "{delays:?}");
        assert!(delays[19] >= BACKOFF_MAX.mul_f64(0.8));
        backoff.reset();
        assert!(backoff.next() <= BACKOFF_MIN.mul_f64(1.2));
    }
}
