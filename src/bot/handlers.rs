//! What the bot does with an update: owner-only access, the commands, and the buttons.
//!
//! Access: the owner is the user whose username equals `owner_username` at the first contact;
//! that user's numeric id is then pinned in the network settings and required from then on
//! (a username sold or taken over later gets nothing). Anyone else gets no reply at all; each
//! attempt is logged with the user id and counted in `status`. Only private chats are served,
//! so nothing is ever shown to a group.

mod containers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
use crate::daemon::{Client, ClientError};
use crate::state::unix_now;
use crate::validate::Ttl;
use constella_behaviours::membership::MemberView;

/// Longest wait for the node's answer to a bot action (RPCs have their own, shorter, timeouts).
const ACTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Who sent an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The pinned owner.
    Owner,
    /// The owner's username, and no id is pinned yet: pin this id.
    Pin(u64),
    /// Anyone else.
    Refused,
}

/// Decides who `user` is, given the network settings and the owner's username.
pub fn access(user: &User, settings: &NetworkSettings, owner_username: &str) -> Access {
    if user.is_bot {
        return Access::Refused;
    }
    match settings.owner_user_id {
        Some(owner) if owner == user.id.0 => Access::Owner,
        Some(_) => Access::Refused,
        None => {
            let wanted = owner_username.trim_start_matches('@');
            let matches = user
                .username
                .as_deref()
                .is_some_and(|name| !wanted.is_empty() && name.eq_ignore_ascii_case(wanted));
            if matches {
                Access::Pin(user.id.0)
            } else {
                Access::Refused
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
    /// Reboot confirmations already used (MAC → expiry), so a double press reboots once.
    used_confirmations: HashMap<String, u64>,
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
            used_confirmations: HashMap::new(),
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
        if !self.authorise(&user).await {
            return;
        }
        if !private {
            debug!("ignored the owner's update from a group chat");
            return;
        }
        self.metrics.count_handled();
        match update.kind {
            UpdateKind::Message(message) => self.on_message(message).await,
            UpdateKind::CallbackQuery(query) => self.on_callback(query).await,
            _ => {}
        }
    }

    /// True for the owner (pinning the id at the first contact); false, logged and counted,
    /// for anyone else.
    async fn authorise(&mut self, user: &User) -> bool {
        let settings = self.settings.borrow().clone();
        match access(user, &settings, &self.config.owner_username) {
            Access::Owner => true,
            Access::Pin(id) => {
                let pin = NetworkSettings {
                    owner_user_id: Some(id),
                    ..settings
                };
                match self.client.merge_settings(pin).await {
                    Ok(merged) if merged.owner_user_id == Some(id) => {
                        info!(user_id = id, "the owner's Telegram id is now pinned");
                        true
                    }
                    Ok(_) => self.refuse(user),
                    Err(_) => false,
                }
            }
            Access::Refused => self.refuse(user),
        }
    }

    fn refuse(&self, user: &User) -> bool {
        self.metrics.count_refused();
        warn!(
            user_id = user.id.0,
            "refused a Telegram update from a user who is not the owner (no reply sent)"
        );
        false
    }

    // ---- messages ----

    async fn on_message(&mut self, message: Message) {
        let lang = self.lang();
        let chat = message.chat.id;
        let text = message.text().unwrap_or("");
        let Some((command, arg)) = parse_command(text, &self.bot_username) else {
            self.send(chat, Screen::text(ui::help(lang))).await;
            return;
        };
        match command.as_str() {
            "start" | "menu" | "nodes" | "list" => {
                let screen = match self.peers().await {
                    Ok(peers) => ui::node_list(lang, &peers),
                    Err(error) => Screen::text(ui::node_error(lang, &error)),
                };
                self.send(chat, screen).await;
            }
            "invite" => {
                let ttl = if arg.is_empty() { "15m" } else { arg };
                let text = match ttl.parse::<Ttl>() {
                    Ok(ttl) => match self.invite(ttl).await {
                        Ok((link, ttl)) => ui::invite(lang, &link, &ttl),
                        Err(error) => ui::node_error(lang, &error),
                    },
                    Err(error) => ui::invite_usage(lang, &error),
                };
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

    // ---- buttons ----

    async fn on_callback(&mut self, query: CallbackQuery) {
        let lang = self.lang();
        let Some(message) = query.message.as_ref() else {
            self.answer(&query, Some(ui::toast_stale(lang))).await;
            return;
        };
        let chat = message.chat().id;
        let message_id = message.id();
        let data = query.data.as_deref();
        // A node button, or one of the container screens' (handlers/containers.rs).
        let (action, container_press) = match data.and_then(Action::parse) {
            Some(action) => (Some(action), None),
            None => (None, data.and_then(containers::Press::parse)),
        };
        if action.is_none() && container_press.is_none() {
            debug!("a button with unknown callback data");
            self.answer(&query, Some(ui::toast_stale(lang))).await;
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
                self.on_container_press(&query, lang, press, &peers, binding)
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
        let short = match &action {
            Action::Card(n) | Action::Usage(n) | Action::AskReboot(n) | Action::Cancel(n) => n,
            Action::Reboot(c) => &c.node,
            Action::List => return,
        };
        let Some(peer) = resolve(&peers, short).cloned() else {
            self.answer(&query, Some(ui::toast_stale(lang))).await;
            return;
        };
        let offline = !peer.is_alive();
        match action {
            Action::List => {}
            Action::Card(_) => {
                self.answer(&query, None).await;
                let screen = self.node_card(lang, &peer).await;
                self.edit(chat, message_id, screen).await;
            }
            Action::Cancel(_) => {
                self.answer(&query, Some(ui::toast_cancelled(lang))).await;
                let screen = self.node_card(lang, &peer).await;
                self.edit(chat, message_id, screen).await;
            }
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
                self.on_confirmed_reboot(&query, lang, &peer, confirmation, binding)
                    .await;
            }
        }
    }

    /// Accepts a pressed confirmation once: a good MAC, not expired, not used before. Otherwise
    /// the press is answered with why (stale or expired) and the error returned; on success it
    /// is answered without a toast.
    async fn accept_confirmation(
        &mut self,
        query: &CallbackQuery,
        lang: Lang,
        confirmation: &Confirmation,
        binding: Binding,
    ) -> Result<(), ConfirmError> {
        let now = unix_now();
        match confirmation.verify(&self.config.secret, now, binding) {
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
        self.used_confirmations.retain(|_, expires| *expires >= now);
        if self
            .used_confirmations
            .insert(confirmation.mac.clone(), confirmation.expires_at)
            .is_some()
        {
            // A double tap or a replay: the first press acted.
            self.answer(query, Some(ui::toast_stale(lang))).await;
            return Err(ConfirmError::Forged);
        }
        self.answer(query, None).await;
        Ok(())
    }

    async fn on_confirmed_reboot(
        &mut self,
        query: &CallbackQuery,
        lang: Lang,
        peer: &MemberView,
        confirmation: Confirmation,
        binding: Binding,
    ) {
        match self
            .accept_confirmation(query, lang, &confirmation, binding)
            .await
        {
            Ok(()) => {}
            Err(ConfirmError::Expired) => {
                let chat = ChatId(binding.chat_id);
                let screen = self.node_card(lang, peer).await;
                self.edit(chat, MessageId(binding.message_id), screen).await;
                return;
            }
            Err(ConfirmError::Forged) => return,
        }
        let requested_by = format!("telegram:{}", binding.owner_id);
        info!(node = %peer.name, %requested_by, "reboot requested from Telegram");
        let text = match self.reboot(peer, &requested_by).await {
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

    // ---- the node ----

    async fn peers(&self) -> Result<Vec<MemberView>, ClientError> {
        self.client.peers().await
    }

    async fn invite(&self, ttl: Ttl) -> Result<(String, String), ClientError> {
        self.client
            .invite(ttl)
            .await
            .map(|invite| (invite.link, invite.ttl))
    }

    /// The node's figures, by node id (names can be reused after a leave; ids cannot).
    async fn usage_text(&self, lang: Lang, peer: &MemberView) -> String {
        match bounded(self.client.stats(&peer.node_id.to_base58())).await {
            Ok(stats) => ui::usage(lang, &stats),
            Err(error) => ui::action_failed(lang, &peer.name, &error),
        }
    }

    async fn reboot(&self, peer: &MemberView, requested_by: &str) -> Result<(), ClientError> {
        bounded(self.client.reboot(&peer.node_id.to_base58(), requested_by))
            .await
            .map(|accepted| {
                info!(node = %accepted.name, action = %accepted.action, "the node accepted the reboot");
            })
    }

    // ---- Telegram ----

    async fn send(&self, chat: ChatId, screen: Screen) {
        let mut request = self.bot.send_message(chat, screen.text);
        if let Some(keyboard) = screen.keyboard {
            request = request.reply_markup(keyboard);
        }
        if let Err(error) = request.await {
            warn!(%error, "cannot send a Telegram message");
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
    use teloxide::types::UserId;

    fn user(id: u64, username: Option<&str>) -> User {
        User {
            id: UserId(id),
            is_bot: false,
            first_name: "X".into(),
            last_name: None,
            username: username.map(str::to_owned),
            language_code: None,
            is_premium: false,
            added_to_attachment_menu: false,
        }
    }

    #[test]
    fn owner_is_pinned_by_username_then_by_id() {
        let unpinned = NetworkSettings::default();
        for owner in ["@Owner_Test", "owner_test", "@OWNER_TEST"] {
            assert_eq!(
                access(&user(7, Some("owner_test")), &unpinned, owner),
                Access::Pin(7)
            );
        }
        assert_eq!(
            access(&user(8, Some("someone")), &unpinned, "@owner_test"),
            Access::Refused
        );
        assert_eq!(
            access(&user(8, None), &unpinned, "@owner_test"),
            Access::Refused
        );
        let pinned = NetworkSettings {
            owner_user_id: Some(7),
            ..NetworkSettings::default()
        };
        assert_eq!(
            access(&user(7, Some("renamed")), &pinned, "@owner_test"),
            Access::Owner
        );
        // The username taken over by someone else gets nothing.
        assert_eq!(
            access(&user(9, Some("owner_test")), &pinned, "@owner_test"),
            Access::Refused
        );
        let mut bot = user(7, Some("owner_test"));
        bot.is_bot = true;
        assert_eq!(access(&bot, &pinned, "@owner_test"), Access::Refused);
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
        };
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let peers = [peer("a", a), peer("b", b)];
        assert_eq!(resolve(&peers, &short_peer_id(&a)).unwrap().name, "a");
        assert!(resolve(&peers, "cccccccc").is_none());
        let twins = [peer("a", a), peer("again", a)];
        assert!(resolve(&twins, &short_peer_id(&a)).is_none());
    }
}
