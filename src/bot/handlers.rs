//! What the bot does with an update: access, the commands, and the buttons.
//!
//! Access ([`crate::access`]): the owner is the user whose username equals the owner's at the
//! first contact; that user's numeric id is then pinned in the network settings and required
//! from then on (a username sold or taken over later gets nothing). Accounts the owner granted
//! a role are pinned the same way and may do what their role allows; a request beyond it gets
//! a short refusal and is audited. The role is checked on every update from the current
//! settings, so a button shown while someone was an operator does nothing once they are a
//! viewer, and checked again right before a reboot runs, and once more by the node that acts
//! (reboots and container requests carry who asked: [`rpc::Requester`]). Anyone else gets no reply
//! at all; each attempt is counted in `status`, and logged and audited at most once per
//! [`STRANGER_WINDOW`] with a summary of the rest. Only private chats are served, so nothing is
//! ever shown to a group.
//!
//! A confirmation (reboot, container action, unit restart) is claimed in the network settings before it is
//! acted on, so a second press is refused by whichever node leads by then.

mod charts;
mod containers;
mod services;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use constella_behaviours::settings::NetworkSettings;
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::prelude::*;
use teloxide::types::{CallbackQuery, Message, MessageId, Update, UpdateKind, User};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::callback::{Action, Binding, ConfirmError, Confirmation, short_peer_id};
use super::ui::{self, Lang, Screen};
use super::{BotConfig, BotMetrics};
use crate::access::{self, Access, Rank, TelegramUser};
use crate::audit::{AuditEvent, AuditKind};
use crate::daemon::{Client, ClientError};
use crate::state::unix_now;
use crate::validate::Ttl;
use constella_behaviours::membership::MemberView;
use constella_behaviours::rpc;

/// Longest wait for the node's answer to a bot action (RPCs have their own, shorter, timeouts).
const ACTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Refused strangers are logged and audited at most once per this window; the next entry
/// after it summarises the ones held back.
pub(super) const STRANGER_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Distinct stranger ids remembered for one summary.
const MAX_STRANGER_IDS: usize = 100;
/// Audit entries `/audit` shows.
const AUDIT_SHOWN: usize = 15;

/// Refused strangers between two audit entries: a flood is one entry per window.
#[derive(Debug, Default)]
struct Strangers {
    window_started: Option<Instant>,
    held_back: u64,
    users: BTreeSet<u64>,
}

impl Strangers {
    /// Counts a refusal of `user_id`; returns the summary to log and audit now (the refusals
    /// held back since the last entry and their distinct users), or `None` to hold it back.
    fn refused(&mut self, user_id: u64, now: Instant) -> Option<(u64, usize)> {
        match self.window_started {
            Some(started) if now.duration_since(started) < STRANGER_WINDOW => {
                self.held_back += 1;
                if self.users.len() < MAX_STRANGER_IDS {
                    self.users.insert(user_id);
                }
                None
            }
            _ => {
                let summary = (self.held_back, self.users.len());
                *self = Strangers {
                    window_started: Some(now),
                    ..Strangers::default()
                };
                Some(summary)
            }
        }
    }
}

/// A command and its argument from a message text: `/invite@MyBot 15m` → ("invite", "15m").
fn parse_command<'a>(text: &'a str, bot_username: &str) -> Option<(String, &'a str)> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let (word, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let command = match word.split_once('@') {
        Some((command, target)) => {
            if !bot_username.is_empty() && !target.eq_ignore_ascii_case(bot_username) {
                return None;
            }
            command
        }
        None => word,
    };
    Some((command.to_ascii_lowercase(), arg.trim()))
}

/// Handles updates for the owner.
pub(super) struct Handlers {
    bot: Bot,
    config: Arc<BotConfig>,
    client: Client,
    settings: watch::Receiver<NetworkSettings>,
    metrics: Arc<BotMetrics>,
    bot_username: String,
    /// Who the update being handled is from, for the node that acts on it.
    requester: Option<rpc::Requester>,
    strangers: Strangers,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("bot_username", &self.bot_username)
            .finish_non_exhaustive()
    }
}

impl Handlers {
    pub(super) fn new(
        bot: Bot,
        config: Arc<BotConfig>,
        client: Client,
        settings: watch::Receiver<NetworkSettings>,
        metrics: Arc<BotMetrics>,
    ) -> Self {
        Self {
            bot,
            config,
            client,
            settings,
            metrics,
            bot_username: String::new(),
            requester: None,
            strangers: Strangers::default(),
        }
    }

    pub(super) fn set_username(&mut self, username: String) {
        self.bot_username = username;
    }

    fn lang(&self) -> Lang {
        Lang::from_code(&self.settings.borrow().language)
    }

    /// Handles one update (already claimed in the network).
    pub(super) async fn handle(&mut self, update: Update) {
        let (user, private) = match &update.kind {
            UpdateKind::Message(message) => match &message.from {
                Some(user) => (user.clone(), message.chat.is_private()),
                None => return,
            },
            UpdateKind::CallbackQuery(query) => (
                query.from.clone(),
                query
                    .message
                    .as_ref()
                    .is_some_and(|m| m.chat().is_private()),
            ),
            _ => {
                debug!(update_id = update.id.0, "ignored an update of another kind");
                return;
            }
        };
        let Some(rank) = self.authorise(&user).await else {
            return;
        };
        if !private {
            debug!("ignored an update from a group chat");
            return;
        }
        self.metrics.count_handled();
        self.requester = Some(rpc::Requester::Telegram {
            user_id: user.id.0,
            username: user.username.clone(),
        });
        let who = Who::new(&user, rank);
        match update.kind {
            UpdateKind::Message(message) => self.on_message(message, &who).await,
            UpdateKind::CallbackQuery(query) => self.on_callback(query, &who).await,
            _ => {}
        }
    }

    /// The rank of `user` from the current settings, pinning the owner's or a granted
    /// account's id at its first contact; `None`, logged and counted, for anyone else.
    async fn authorise(&mut self, user: &User) -> Option<Rank> {
        let settings = self.settings.borrow().clone();
        let telegram = TelegramUser {
            id: user.id.0,
            username: user.username.as_deref(),
            is_bot: user.is_bot,
        };
        match access::access(telegram, &settings, &self.config.owner_username) {
            Access::Known(rank) => Some(rank),
            Access::PinOwner(id) => {
                let pin = NetworkSettings {
                    owner_user_id: Some(id),
                    ..settings
                };
                match self.client.merge_settings(pin).await {
                    Ok(merged) if merged.owner_user_id == Some(id) => {
                        info!(user_id = id, "the owner's Telegram id is now pinned");
                        self.config.audit.record(AuditEvent::new(
                            AuditKind::OwnerPinned,
                            telegram_who(user),
                            "telegram",
                        ));
                        Some(Rank::Owner)
                    }
                    Ok(_) => self.refuse(user),
                    Err(_) => None,
                }
            }
            Access::PinGranted { key, role, id } => {
                let mut pin = settings;
                if let Some(grant) = pin.roles.get_mut(&key) {
                    grant.user_id = Some(id);
                }
                match self.client.merge_settings(pin).await {
                    Ok(merged) if merged.role_of_id(id) == Some(role) => {
                        info!(
                            user_id = id,
                            role = role.as_str(),
                            "a granted account's Telegram id is now pinned"
                        );
                        self.config.audit.record(
                            AuditEvent::new(AuditKind::RolePinned, telegram_who(user), "telegram")
                                .detail("role", role.as_str()),
                        );
                        Some(Rank::Granted(role))
                    }
                    Ok(_) => self.refuse(user),
                    Err(_) => None,
                }
            }
            Access::Refused => self.refuse(user),
        }
    }

    fn refuse(&mut self, user: &User) -> Option<Rank> {
        self.metrics.count_refused();
        let (held_back, held_users) = self.strangers.refused(user.id.0, Instant::now())?;
        warn!(
            user_id = user.id.0,
            held_back,
            held_users,
            "refused a Telegram update from a user who is neither the owner nor granted a role (no reply sent; held_back: refusals not logged in the last 10 minutes)"
        );
        self.config.audit.record(
            AuditEvent::new(AuditKind::StrangersRefused, telegram_who(user), "telegram")
                .detail("held_back", held_back)
                .detail("held_back_users", held_users),
        );
        None
    }

    /// The newest audit entries, for the owner; the reading is audited too.
    async fn audit_text(&self, lang: Lang, who: &Who) -> String {
        self.config.audit.record(
            AuditEvent::new(AuditKind::AuditViewed, who.text.clone(), "telegram")
                .detail("entries", AUDIT_SHOWN),
        );
        match self.config.audit.recent(AUDIT_SHOWN).await {
            Ok(events) => ui::audit(
                lang,
                &self.config.node_name,
                &crate::output::audit_lines(&events),
            ),
            Err(error) => ui::audit_failed(lang, &error.to_string()),
        }
    }

    /// Whether `who` may do `action`; if not, the refusal is logged and audited, and the
    /// caller answers with [`ui::not_allowed`].
    fn permits(&self, who: &Who, action: access::Action) -> bool {
        if who.rank.allows(action) {
            return true;
        }
        self.refused_action(&who.text, who.rank.as_str(), action);
        false
    }

    fn refused_action(&self, who: &str, role: &str, action: access::Action) {
        warn!(user = %who, role, action = action.as_str(), "refused an action the role does not allow");
        self.config.audit.record(
            AuditEvent::new(AuditKind::ActionRefused, who, "telegram")
                .detail("action", action.as_str())
                .detail("role", role),
        );
    }

    /// Tells the owner that a change replaced once, if nobody has yet: the notice is claimed in
    /// the network settings before it is sent, so across leaders it goes out at most once.
    pub(super) async fn tell_former_owner(&mut self) {
        let settings = self.settings.borrow().clone();
        let Some(former) = settings
            .former_owner_id
            .filter(|_| !settings.former_owner_told)
        else {
            return;
        };
        let claim = NetworkSettings {
            former_owner_told: true,
            ..settings.clone()
        };
        if self.client.merge_settings(claim).await.is_err() {
            return;
        }
        let Ok(chat) = i64::try_from(former) else {
            return;
        };
        let owner = settings.owner(&self.config.owner_username).to_owned();
        info!(
            user_id = former,
            "telling the former owner about the owner change"
        );
        self.send(
            ChatId(chat),
            Screen::text(ui::former_owner(self.lang(), &owner)),
        )
        .await;
    }

    // ---- messages ----

    async fn on_message(&mut self, message: Message, who: &Who) {
        let lang = self.lang();
        let chat = message.chat.id;
        let text = message.text().unwrap_or("");
        let Some((command, arg)) = parse_command(text, &self.bot_username) else {
            self.send(chat, Screen::text(ui::help(lang))).await;
            return;
        };
        match command.as_str() {
            "start" | "menu" | "nodes" | "list" | "invite" | "lang" | "language" | "audit"
            | "chat_invite" | "web"
                if !self.permits(who, command_action(&command)) =>
            {
                self.send(chat, Screen::text(ui::not_allowed(lang).to_owned()))
                    .await;
            }
            "start" | "menu" | "nodes" | "list" => {
                let screen = match self.peers().await {
                    Ok(peers) => ui::node_list(lang, &peers),
                    Err(error) => Screen::text(ui::node_error(lang, &error)),
                };
                self.send(chat, screen).await;
            }
            "audit" => {
                let text = self.audit_text(lang, who).await;
                self.send(chat, Screen::text(text)).await;
            }
            "web" => {
                // The leader's own panel: the one this bot's node serves.
                let text = match &self.config.web {
                    Some(panel) => {
                        let login = panel.login_link(who.principal.clone(), "telegram");
                        ui::web_login(lang, &login.link, login.fingerprint.as_deref())
                    }
                    None => ui::web_off(lang, &self.config.node_name),
                };
                self.send(chat, Screen::text(text)).await;
            }
            "invite" => {
                let ttl = if arg.is_empty() { "15m" } else { arg };
                let text = match ttl.parse::<Ttl>() {
                    Ok(ttl) => match self.invite(ttl, who).await {
                        Ok((link, ttl)) => ui::invite(lang, &link, &ttl),
                        Err(error) => ui::node_error(lang, &error),
                    },
                    Err(error) => ui::invite_usage(lang, &error),
                };
                self.send(chat, Screen::text(text)).await;
            }
            "chat_invite" => {
                let text = if arg.is_empty() {
                    match self.chat_invite(who).await {
                        Ok(code) => ui::chat_invite(lang, &code),
                        Err(error) => ui::chat_invite_failed(lang, &error),
                    }
                } else {
                    ui::chat_invite_usage(lang)
                };
                self.send(chat, Screen::text(text)).await;
            }
            "overview" => {
                if self.permits(who, access::Action::Usage) {
                    self.on_overview(chat, lang, arg).await;
                } else {
                    self.send(chat, Screen::text(ui::not_allowed(lang).to_owned()))
                        .await;
                }
            }
            "services" | "restart" => {
                self.on_services_command(chat, lang, who, &command, arg)
                    .await;
            }
            "alerts" => {
                let text = self.alerts_command(lang, who, arg).await;
                self.send(chat, Screen::text(text)).await;
            }
            "lang" | "language" => {
                let text = match arg {
                    "ru" | "en" => {
                        let current = self.settings.borrow().clone();
                        let next = NetworkSettings {
                            language: arg.to_owned(),
                            language_version: current.language_version + 1,
                            ..current
                        };
                        match self.client.merge_settings(next).await {
                            Ok(merged) => ui::lang_set(Lang::from_code(&merged.language)),
                            Err(error) => ui::node_error(lang, &error),
                        }
                    }
                    _ => ui::lang_usage(),
                };
                self.send(chat, Screen::text(text)).await;
            }
            _ => self.send(chat, Screen::text(ui::help(lang))).await,
        }
    }

    /// `/alerts`: the thresholds and the open episodes; `/alerts cpu 90` (the owner) sets one
    /// for the whole network, audited.
    async fn alerts_command(&mut self, lang: Lang, who: &Who, arg: &str) -> String {
        use constella_behaviours::alerts::{Rule, parse_percent, parse_size};
        let mut words = arg.split_whitespace();
        let (Some(rule), Some(percent), None) = (words.next(), words.next(), words.next()) else {
            if !arg.trim().is_empty() {
                return ui::alerts_usage(lang);
            }
            return ui::alerts(lang, &self.settings.borrow().alerts);
        };
        if !self.permits(who, access::Action::Alerts) {
            return ui::not_allowed(lang).to_owned();
        }
        let current = self.settings.borrow().alerts.clone();
        let set = match rule.parse::<Rule>() {
            Ok(Rule::Traffic) => match parse_size(percent) {
                Ok(bytes) => {
                    crate::monitor::alerts::set_quota(
                        &self.client,
                        &current,
                        bytes,
                        who.text.clone(),
                        "telegram",
                    )
                    .await
                }
                Err(error) => return format!("{error}\n{}", ui::alerts_usage(lang)),
            },
            Ok(rule) => match parse_percent(percent) {
                Ok(percent) => {
                    crate::monitor::alerts::set_threshold(
                        &self.client,
                        &current,
                        (rule, percent),
                        who.text.clone(),
                        "telegram",
                    )
                    .await
                }
                Err(error) => return format!("{error}\n{}", ui::alerts_usage(lang)),
            },
            Err(error) => return format!("{error}\n{}", ui::alerts_usage(lang)),
        };
        match set {
            Ok((merged, event)) => {
                self.config.audit.record(event);
                ui::alerts(lang, &merged.alerts)
            }
            Err(error) => ui::node_error(lang, &error),
        }
    }

    // ---- buttons ----

    async fn on_callback(&mut self, query: CallbackQuery, who: &Who) {
        let lang = self.lang();
        let Some(message) = query.message.as_ref() else {
            self.answer(&query, Some(ui::toast_stale(lang))).await;
            return;
        };
        let chat = message.chat().id;
        let message_id = message.id();
        let data = query.data.as_deref();
        // A node button, or one of the container screens' (handlers/containers.rs), or one of
        // the services screens' (handlers/services.rs).
        let (action, container_press) = match data.and_then(Action::parse) {
            Some(action) => (Some(action), None),
            None => (None, data.and_then(containers::Press::parse)),
        };
        let services_press = match (&action, &container_press) {
            (None, None) => data.and_then(services::Press::parse),
            _ => None,
        };
        if action.is_none() && container_press.is_none() && services_press.is_none() {
            debug!("a button with unknown callback data");
            self.answer(&query, Some(ui::toast_stale(lang))).await;
            return;
        };
        // The presser's role now, not when the button was shown.
        let needed = match (&action, &container_press, &services_press) {
            (Some(action), _, _) => button_action(action),
            (None, Some(press), _) => containers::press_action(press),
            (None, None, Some(press)) => services::press_action(press),
            (None, None, None) => access::Action::List,
        };
        if !self.permits(who, needed) {
            self.answer(&query, Some(ui::not_allowed(lang))).await;
            return;
        }
        let peers = match self.peers().await {
            Ok(peers) => peers,
            Err(error) => {
                self.answer(&query, None).await;
                self.edit(chat, message_id, Screen::text(ui::node_error(lang, &error)))
                    .await;
                return;
            }
        };
        let binding = Binding {
            owner_id: query.from.id.0,
            chat_id: chat.0,
            message_id: message_id.0,
        };
        let Some(action) = action else {
            if let Some(press) = container_press {
                self.on_container_press(&query, who, lang, press, &peers, binding)
                    .await;
            } else if let Some(press) = services_press {
                self.on_services_press(&query, who, lang, press, &peers, binding)
                    .await;
            }
            return;
        };
        if let Action::List = action {
            self.answer(&query, None).await;
            self.edit(chat, message_id, ui::node_list(lang, &peers))
                .await;
            return;
        }
        if let Action::Overview = action {
            self.answer(&query, None).await;
            self.on_overview(chat, lang, "24h").await;
            return;
        }
        let short = match &action {
            Action::Card(n)
            | Action::Usage(n)
            | Action::AskReboot(n)
            | Action::AskRemove(n)
            | Action::Cancel(n)
            | Action::Charts(n)
            | Action::Chart(n, _) => n,
            Action::Reboot(c) | Action::Remove(c) => &c.node,
            Action::List | Action::Overview => return,
        };
        let Some(peer) = resolve(&peers, short).cloned() else {
            self.answer(&query, Some(ui::toast_stale(lang))).await;
            return;
        };
        let offline = !peer.is_alive();
        let can_reboot = who.rank.allows(access::Action::Reboot);
        match action {
            Action::List | Action::Overview => {}
            Action::Card(_) => {
                self.answer(&query, None).await;
                let screen = self.node_card(lang, &peer, can_reboot).await;
                let screen = self.with_remove(lang, who, &peer, screen);
                self.edit(chat, message_id, screen).await;
            }
            Action::Cancel(_) => {
                self.answer(&query, Some(ui::toast_cancelled(lang))).await;
                let screen = self.node_card(lang, &peer, can_reboot).await;
                let screen = self.with_remove(lang, who, &peer, screen);
                self.edit(chat, message_id, screen).await;
            }
            Action::AskRemove(_) | Action::Remove(_) if self.is_this_node(&peer) => {
                self.answer(&query, Some(&ui::toast_remove_self(lang, &peer.name)))
                    .await;
            }
            Action::AskRemove(short) => {
                let confirmation =
                    Confirmation::sign_removal(&self.config.secret, &short, unix_now(), binding);
                self.answer(&query, None).await;
                self.edit(
                    chat,
                    message_id,
                    ui::confirm_remove(lang, &peer, confirmation),
                )
                .await;
            }
            Action::Remove(confirmation) => {
                self.on_confirmed_remove(&query, who, lang, &peer, confirmation, binding)
                    .await;
            }
            Action::Charts(_) => {
                self.answer(&query, None).await;
                self.edit(chat, message_id, ui::chart_menu(lang, &peer))
                    .await;
            }
            Action::Chart(_, range) => self.on_chart(&query, lang, &peer, range).await,
            Action::Usage(_) | Action::AskReboot(_) | Action::Reboot(_) if offline => {
                self.answer(&query, Some(&ui::toast_offline(lang, &peer.name)))
                    .await;
            }
            Action::Usage(short) => {
                self.answer(&query, None).await;
                let text = self.usage_text(lang, &peer).await;
                self.edit(chat, message_id, ui::with_back(lang, text, Some(&short)))
                    .await;
            }
            Action::AskReboot(short) => {
                let confirmation =
                    Confirmation::sign(&self.config.secret, &short, unix_now(), binding);
                self.answer(&query, None).await;
                self.edit(
                    chat,
                    message_id,
                    ui::confirm_reboot(lang, &peer, confirmation),
                )
                .await;
            }
            Action::Reboot(confirmation) => {
                self.on_confirmed_reboot(&query, who, lang, &peer, confirmation, binding)
                    .await;
            }
        }
    }

    /// The member a screen's button names by `short` id, if it is current and alive; otherwise
    /// the press is answered with why (stale, offline) and `None` returned.
    async fn alive_peer(
        &self,
        query: &CallbackQuery,
        lang: Lang,
        peers: &[MemberView],
        short: &str,
    ) -> Option<MemberView> {
        let Some(peer) = resolve(peers, short).cloned() else {
            self.answer(query, Some(ui::toast_stale(lang))).await;
            return None;
        };
        if !peer.is_alive() {
            self.answer(query, Some(&ui::toast_offline(lang, &peer.name)))
                .await;
            return None;
        }
        Some(peer)
    }

    /// Accepts a pressed confirmation once: a good MAC, not expired, not used before. Otherwise
    /// the press is answered with why (stale or expired) and the error returned; on success it
    /// is answered without a toast.
    async fn accept_confirmation(
        &mut self,
        query: &CallbackQuery,
        who: &Who,
        lang: Lang,
        confirmation: &Confirmation,
        binding: Binding,
    ) -> Result<(), ConfirmError> {
        self.accept_confirmation_of(
            access::Action::Reboot,
            (query, who, lang),
            confirmation,
            binding,
        )
        .await
    }

    /// [`Self::accept_confirmation`] for `action` (a reboot or container action, or a
    /// removal, whose confirmations carry MACs of different domains).
    async fn accept_confirmation_of(
        &mut self,
        action: access::Action,
        (query, who, lang): (&CallbackQuery, &Who, Lang),
        confirmation: &Confirmation,
        binding: Binding,
    ) -> Result<(), ConfirmError> {
        let now = unix_now();
        let verified = if action == access::Action::Remove {
            confirmation.verify_removal(&self.config.secret, now, binding)
        } else {
            confirmation.verify(&self.config.secret, now, binding)
        };
        match verified {
            Ok(()) => {}
            Err(ConfirmError::Expired) => {
                self.answer(query, Some(ui::toast_expired(lang))).await;
                return Err(ConfirmError::Expired);
            }
            Err(ConfirmError::Forged) => {
                warn!("a confirmation with a bad MAC was refused");
                self.answer(query, Some(ui::toast_stale(lang))).await;
                return Err(ConfirmError::Forged);
            }
        }
        // Checked again where it runs, from the settings as they are now: a grant revoked
        // since this update was fetched stops the reboot here.
        match self.rank_now(&query.from) {
            Some(rank) if rank.allows(action) => {}
            rank => {
                let role = rank.map_or("none", Rank::as_str);
                self.refused_action(&who.text, role, action);
                self.answer(query, Some(ui::not_allowed(lang))).await;
                return Err(ConfirmError::Forged);
            }
        }
        if !self.claim(confirmation).await {
            // A double tap or a replay, here or on an earlier leader: the first press acted.
            self.answer(query, Some(ui::toast_stale(lang))).await;
            return Err(ConfirmError::Forged);
        }
        self.answer(query, None).await;
        Ok(())
    }

    /// Claims `confirmation` in the network settings for this node: false if any node claimed
    /// it before (this one included), or another node's concurrent claim wins (the smaller
    /// node id). The claim is merged and gossiped before the action is asked for.
    async fn claim(&self, confirmation: &Confirmation) -> bool {
        let Ok(current) = self.client.merge_settings(NetworkSettings::default()).await else {
            return false;
        };
        if current.claim(&confirmation.mac).is_some() {
            info!("a confirmation that was already claimed was pressed again; refused");
            return false;
        }
        let me = &self.config.node_id;
        let claim = current.with_claim(&confirmation.mac, confirmation.expires_at, me, false);
        match self.client.merge_settings(claim).await {
            Ok(merged) => merged
                .claim(&confirmation.mac)
                .is_some_and(|c| &c.claimed_by == me),
            Err(_) => false,
        }
    }

    async fn on_confirmed_reboot(
        &mut self,
        query: &CallbackQuery,
        who: &Who,
        lang: Lang,
        peer: &MemberView,
        confirmation: Confirmation,
        binding: Binding,
    ) {
        match self
            .accept_confirmation(query, who, lang, &confirmation, binding)
            .await
        {
            Ok(()) => {}
            Err(ConfirmError::Expired) => {
                let chat = ChatId(binding.chat_id);
                let screen = self.node_card(lang, peer, true).await;
                self.edit(chat, MessageId(binding.message_id), screen).await;
                return;
            }
            Err(ConfirmError::Forged) => return,
        }
        let requested_by = format!("telegram:{}", binding.owner_id);
        info!(event = "reboot_requested", member = %peer.name, %requested_by, "reboot requested from Telegram");
        let result = self
            .reboot(peer, &requested_by, who, &confirmation.mac)
            .await;
        let text = match result {
            Ok(()) => ui::reboot_accepted(lang, &peer.name),
            Err(error) => ui::action_failed(lang, &peer.name, &error),
        };
        let screen = ui::with_back(lang, text, Some(&short_peer_id(&peer.node_id)));
        self.edit(
            ChatId(binding.chat_id),
            MessageId(binding.message_id),
            screen,
        )
        .await;
    }

    /// The owner's node card gains a remove button (not on this node's own card: a node
    /// leaves with `constella leave` on it).
    fn with_remove(&self, lang: Lang, who: &Who, peer: &MemberView, screen: Screen) -> Screen {
        if who.rank.allows(access::Action::Remove) && !self.is_this_node(peer) {
            ui::with_remove_button(lang, screen, &short_peer_id(&peer.node_id))
        } else {
            screen
        }
    }

    fn is_this_node(&self, peer: &MemberView) -> bool {
        peer.node_id.to_base58() == self.config.node_id
    }

    /// A confirmed removal: checked (MAC, expiry, the owner's rank now, claimed once), audited,
    /// then the node removes the member and rotates the network secret.
    async fn on_confirmed_remove(
        &mut self,
        query: &CallbackQuery,
        who: &Who,
        lang: Lang,
        peer: &MemberView,
        confirmation: Confirmation,
        binding: Binding,
    ) {
        let (chat, message) = (ChatId(binding.chat_id), MessageId(binding.message_id));
        match self
            .accept_confirmation_of(
                access::Action::Remove,
                (query, who, lang),
                &confirmation,
                binding,
            )
            .await
        {
            Ok(()) => {}
            Err(ConfirmError::Expired) => {
                let screen = self.node_card(lang, peer, true).await;
                let screen = self.with_remove(lang, who, peer, screen);
                self.edit(chat, message, screen).await;
                return;
            }
            Err(ConfirmError::Forged) => return,
        }
        info!(event = "removal_requested", member = %peer.name, who = %who.text, "removal requested from Telegram");
        let result = bounded(self.client.remove(&peer.node_id.to_base58())).await;
        let text = match result {
            Ok(name) => {
                self.config.audit.record(
                    AuditEvent::new(AuditKind::NodeRemoved, who.text.clone(), "telegram")
                        .detail("node", name.clone()),
                );
                ui::removed(lang, &name)
            }
            Err(error) => ui::action_failed(lang, &peer.name, &error),
        };
        self.edit(chat, message, ui::with_back(lang, text, None))
            .await;
    }

    // ---- the node ----

    async fn peers(&self) -> Result<Vec<MemberView>, ClientError> {
        self.client.peers().await
    }

    /// A join link; the audit log gets its TTL and expiry, never the link or the token.
    async fn invite(&self, ttl: Ttl, who: &Who) -> Result<(String, String), ClientError> {
        let invite = self.client.invite(ttl).await?;
        self.config.audit.record(
            AuditEvent::new(AuditKind::InviteIssued, who.text.clone(), "telegram")
                .detail("ttl", invite.ttl.clone())
                .detail("expires_at", invite.expires_at),
        );
        Ok((invite.link, invite.ttl))
    }

    /// A one-time chat account invite from this node's messaging service (its `pq4.sock`);
    /// the audit log gets who asked, never the code.
    async fn chat_invite(&self, who: &Who) -> anyhow::Result<String> {
        let code = crate::chat::new_invite(&self.config.chat_state_dir, 0).await?;
        self.config.audit.record(
            AuditEvent::new(AuditKind::ChatInviteIssued, who.text.clone(), "telegram")
                .detail("role", who.rank.as_str()),
        );
        Ok(code)
    }

    /// The node's figures, by node id (names can be reused after a leave; ids cannot).
    async fn usage_text(&self, lang: Lang, peer: &MemberView) -> String {
        match bounded(self.client.stats(&peer.node_id.to_base58())).await {
            Ok(stats) => ui::usage(lang, &stats),
            Err(error) => ui::action_failed(lang, &peer.name, &error),
        }
    }

    /// Asks `peer` to reboot. The request is on disk in the audit log before it is sent (the
    /// machine that reboots may be this one); the outcome follows.
    async fn reboot(
        &self,
        peer: &MemberView,
        requested_by: &str,
        who: &Who,
        confirmation: &str,
    ) -> Result<(), ClientError> {
        let asked = AuditEvent::new(AuditKind::RebootRequested, who.text.clone(), "telegram")
            .detail("target", peer.name.clone())
            .detail("node_id", peer.node_id.to_base58())
            .detail("role", who.rank.as_str());
        if let Err(error) = self.config.audit.append(asked.clone()).await {
            warn!(%error, "the reboot request could not be audited; it is refused");
            return Err(ClientError::Storage(
                "the audit log cannot be written".to_owned(),
            ));
        }
        let by = self.requester();
        let target = peer.node_id.to_base58();
        let result = bounded(
            self.client
                .reboot_confirmed(&target, requested_by, by, confirmation),
        )
        .await
        .map(|accepted| {
            info!(member = %accepted.name, action = %accepted.action, "the node accepted the reboot");
        });
        let outcome = match &result {
            Ok(()) => "accepted".to_owned(),
            Err(error) => format!("failed: {error}"),
        };
        self.config.audit.record(asked.detail("outcome", outcome));
        result
    }

    /// Who the update being handled is from, for the node that acts on it.
    fn requester(&self) -> rpc::Requester {
        self.requester.clone().unwrap_or(rpc::Requester::Telegram {
            user_id: 0,
            username: None,
        })
    }

    /// The rank of `user` from the settings as they are now (no pinning).
    fn rank_now(&self, user: &User) -> Option<Rank> {
        let telegram = TelegramUser {
            id: user.id.0,
            username: user.username.as_deref(),
            is_bot: user.is_bot,
        };
        match access::access(
            telegram,
            &self.settings.borrow(),
            &self.config.owner_username,
        ) {
            Access::Known(rank) => Some(rank),
            _ => None,
        }
    }

    // ---- Telegram ----

    async fn send(&self, chat: ChatId, screen: Screen) {
        self.send_returning(chat, screen).await;
    }

    /// [`Self::send`], answering the sent message's id (`None` if it was not sent).
    async fn send_returning(&self, chat: ChatId, screen: Screen) -> Option<MessageId> {
        let mut request = self.bot.send_message(chat, screen.text);
        if let Some(keyboard) = screen.keyboard {
            request = request.reply_markup(keyboard);
        }
        match request.await {
            Ok(message) => Some(message.id),
            Err(error) => {
                warn!(%error, "cannot send a Telegram message");
                None
            }
        }
    }

    /// Replaces the text and buttons of a message in place.
    async fn edit(&self, chat: ChatId, message: MessageId, screen: Screen) {
        let mut request = self.bot.edit_message_text(chat, message, screen.text);
        if let Some(keyboard) = screen.keyboard {
            request = request.reply_markup(keyboard);
        }
        match request.await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => {}
            Err(error) => warn!(%error, "cannot edit a Telegram message"),
        }
    }

    async fn answer(&self, query: &CallbackQuery, text: Option<&str>) {
        let mut request = self.bot.answer_callback_query(query.id.clone());
        if let Some(text) = text {
            request = request.text(text);
        }
        if let Err(error) = request.await {
            debug!(%error, "cannot answer a button press");
        }
    }
}

/// Who an update is from, for the log and the audit log.
#[derive(Debug, Clone)]
pub(super) struct Who {
    /// `telegram:<id> (@name)`.
    text: String,
    rank: Rank,
    /// The Telegram user id (a confirmation sent in answer to a command is bound to it).
    user_id: u64,
    /// The account, for a web panel login (`/web`).
    principal: crate::web::Principal,
}

impl Who {
    fn new(user: &User, rank: Rank) -> Self {
        Self {
            text: telegram_who(user),
            rank,
            user_id: user.id.0,
            principal: crate::web::Principal::Telegram {
                user_id: user.id.0,
                username: user.username.clone(),
            },
        }
    }
}

/// `telegram:<id> (@name)`: how a Telegram user appears in the audit log.
fn telegram_who(user: &User) -> String {
    match &user.username {
        Some(name) => format!("telegram:{} (@{name})", user.id.0),
        None => format!("telegram:{}", user.id.0),
    }
}

/// The action a command asks for.
fn command_action(command: &str) -> access::Action {
    match command {
        "invite" => access::Action::Invite,
        "lang" | "language" => access::Action::Language,
        "audit" => access::Action::Audit,
        "chat_invite" => access::Action::ChatInvite,
        "services" => access::Action::Usage,
        // Showing them is a list; setting one is checked again where it is set.
        _ => access::Action::List,
    }
}

/// The action a button asks for.
fn button_action(action: &Action) -> access::Action {
    match action {
        Action::List | Action::Card(_) | Action::Cancel(_) => access::Action::List,
        Action::Usage(_) | Action::Charts(_) | Action::Chart(..) | Action::Overview => {
            access::Action::Usage
        }
        Action::AskReboot(_) | Action::Reboot(_) => access::Action::Reboot,
        Action::AskRemove(_) | Action::Remove(_) => access::Action::Remove,
    }
}

/// `call`, or an error after [`ACTION_TIMEOUT`] (the RPCs time out sooner on their own; this
/// keeps a stuck call from stalling the bot).
async fn bounded<T>(call: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
    tokio::time::timeout(ACTION_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(ClientError::Unreachable("?".to_owned())))
}

/// The current member whose node id ends with `short`, if exactly one does.
fn resolve<'a>(peers: &'a [MemberView], short: &str) -> Option<&'a MemberView> {
    let mut matches = peers.iter().filter(|p| short_peer_id(&p.node_id) == short);
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_and_commands_map_to_the_actions_roles_allow() {
        assert_eq!(button_action(&Action::List), access::Action::List);
        assert_eq!(
            button_action(&Action::Usage("AbCdEfGh".into())),
            access::Action::Usage
        );
        assert_eq!(
            button_action(&Action::AskReboot("AbCdEfGh".into())),
            access::Action::Reboot
        );
        assert_eq!(command_action("invite"), access::Action::Invite);
        assert_eq!(command_action("lang"), access::Action::Language);
        assert_eq!(command_action("start"), access::Action::List);
        assert_eq!(command_action("audit"), access::Action::Audit);
        assert!(
            !Rank::Granted(constella_behaviours::settings::Role::Operator)
                .allows(access::Action::Audit)
        );
        assert!(Rank::Owner.allows(access::Action::Audit));
    }

    #[test]
    fn strangers_are_told_once_per_window_with_a_summary_of_the_rest() {
        let start = Instant::now();
        let mut strangers = Strangers::default();
        assert_eq!(strangers.refused(1, start), Some((0, 0)));
        assert_eq!(strangers.refused(1, start + Duration::from_secs(1)), None);
        assert_eq!(strangers.refused(2, start + Duration::from_secs(2)), None);
        assert_eq!(strangers.refused(2, start + Duration::from_secs(3)), None);
        let later = start + STRANGER_WINDOW + Duration::from_secs(1);
        assert_eq!(
            strangers.refused(3, later),
            Some((3, 2)),
            "3 held back, 2 users"
        );
        assert_eq!(strangers.refused(3, later), None);
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("/start", "b"), Some(("start".into(), "")));
        assert_eq!(
            parse_command(" /Invite@B 15m ", "b"),
            Some(("invite".into(), "15m"))
        );
        assert_eq!(parse_command("/invite@other 15m", "b"), None);
        assert_eq!(parse_command("hello", "b"), None);
    }

    #[test]
    fn short_ids_resolve_only_when_unique() {
        let peer = |name: &str, node_id: libp2p::PeerId| MemberView {
            name: name.into(),
            node_id,
            addr: String::new(),
            status: constella_behaviours::membership::Status::Alive,
            leader: false,
            priority: 100,
            uptime_secs: None,
            fingerprint: None,
            relayed: false,
            connection: None,
        };
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let peers = [peer("a", a), peer("b", b)];
        assert_eq!(resolve(&peers, &short_peer_id(&a)).unwrap().name, "a");
        assert!(resolve(&peers, "cccccccc").is_none());
        let twins = [peer("a", a), peer("again", a)];
        assert!(resolve(&twins, &short_peer_id(&a)).is_none());
    }
}
