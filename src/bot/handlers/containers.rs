//! The bot's container screens: the `🐳 Контейнеры` button on a node's card (shown only when
//! the node has a Docker engine), the node's container list, a container's card with its
//! figures and the last [`CARD_LOG_LINES`] lines of its output, and start/stop/restart behind
//! the same signed one-time confirmation as a reboot.
//!
//! Callback data of these buttons (all within Telegram's 64 bytes; containers are named by
//! their 12-hex short id, nodes by their short id):
//!
//! | data | button |
//! | --- | --- |
//! | `dl:NODE` | the node's containers |
//! | `dc:NODE:CID` | a container's card |
//! | `da:NODE:CID:A` | ask to confirm action A (`s` start, `t` stop, `r` restart) |
//! | `dA:NODE:CID:A:EXPIRES:MAC` | the confirmed action |
//!
//! The confirmation is a [`Confirmation`] over the subject `d/NODE/CID/A`: it cannot be
//! mistaken for a reboot's (whose subject is a bare node id), nor moved to another container,
//! action, message or owner.

use std::fmt::Write as _;
use std::time::Duration;

use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId,
};
use tracing::info;

use super::{Handlers, Who};
use crate::bot::callback::{
    Action, Binding, ConfirmError, Confirmation, MAX_CALLBACK_BYTES, is_lower_hex, is_mac_hex,
    is_short_id, parse_expiry, short_peer_id,
};
use crate::bot::ui::{self, Lang, Screen};
use crate::docker::{ContainerAction, ContainerInfo, DockerAnswer, DockerError, DockerRequest};
use crate::output::{human_bytes, human_duration};
use crate::state::unix_now;
use constella_behaviours::membership::MemberView;

/// Log lines on a container's card.
pub const CARD_LOG_LINES: u32 = 30;
/// Containers listed (as lines and as buttons) on one screen.
const MAX_LISTED: usize = 20;
/// Characters of one log line shown on a card.
const MAX_LOG_LINE_CHARS: usize = 160;
/// Characters of log text on a card: Telegram's limit is 4096 for the whole message.
const MAX_LOG_CHARS: usize = 3000;
/// Length of a container's short id.
const CID_LEN: usize = 12;
/// How long the card waits to learn whether a node has Docker before it shows no button.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a container screen waits for its node.
const CONTAINERS_TIMEOUT: Duration = Duration::from_secs(30);

/// A container button's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Press {
    /// The node's container list.
    List { node: String },
    /// A container's card.
    Card { node: String, cid: String },
    /// Ask to confirm an action.
    Ask {
        node: String,
        cid: String,
        action: ContainerAction,
    },
    /// A confirmed action; valid only with a good MAC before it expires.
    Confirmed {
        cid: String,
        action: ContainerAction,
        confirmation: Confirmation,
    },
}

/// What a press needs of the presser's role: seeing containers is like seeing usage; acting
/// on one is an operator's, like a reboot.
pub(super) fn press_action(press: &Press) -> crate::access::Action {
    match press {
        Press::List { .. } | Press::Card { .. } => crate::access::Action::Usage,
        Press::Ask { .. } | Press::Confirmed { .. } => crate::access::Action::Reboot,
    }
}

fn action_code(action: ContainerAction) -> &'static str {
    match action {
        ContainerAction::Start => "s",
        ContainerAction::Stop => "t",
        ContainerAction::Restart => "r",
    }
}

fn parse_action(code: &str) -> Option<ContainerAction> {
    match code {
        "s" => Some(ContainerAction::Start),
        "t" => Some(ContainerAction::Stop),
        "r" => Some(ContainerAction::Restart),
        _ => None,
    }
}

fn is_node(text: &str) -> bool {
    is_short_id(text)
}

fn is_cid(text: &str) -> bool {
    is_lower_hex(text, CID_LEN)
}

/// What the MAC of a container confirmation covers besides expiry, owner, chat and message.
fn subject(node: &str, cid: &str, action: ContainerAction) -> String {
    format!("d/{node}/{cid}/{}", action_code(action))
}

impl Press {
    pub(super) fn encode(&self) -> String {
        match self {
            Press::List { node } => format!("dl:{node}"),
            Press::Card { node, cid } => format!("dc:{node}:{cid}"),
            Press::Ask { node, cid, action } => {
                format!("da:{node}:{cid}:{}", action_code(*action))
            }
            Press::Confirmed {
                cid,
                action,
                confirmation,
            } => {
                let node = confirmation
                    .node
                    .split('/')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                format!(
                    "dA:{node}:{cid}:{}:{}:{}",
                    action_code(*action),
                    confirmation.expires_at,
                    confirmation.mac
                )
            }
        }
    }

    /// Parses callback data; anything not made by [`Press::encode`] is `None`.
    pub(super) fn parse(data: &str) -> Option<Press> {
        if data.len() > MAX_CALLBACK_BYTES {
            return None;
        }
        let mut parts = data.split(':');
        let kind = parts.next()?;
        let fields: Vec<&str> = parts.collect();
        match (kind, fields.as_slice()) {
            ("dl", [node]) if is_node(node) => Some(Press::List {
                node: (*node).to_owned(),
            }),
            ("dc", [node, cid]) if is_node(node) && is_cid(cid) => Some(Press::Card {
                node: (*node).to_owned(),
                cid: (*cid).to_owned(),
            }),
            ("da", [node, cid, code]) if is_node(node) && is_cid(cid) => Some(Press::Ask {
                node: (*node).to_owned(),
                cid: (*cid).to_owned(),
                action: parse_action(code)?,
            }),
            ("dA", [node, cid, code, expires, mac]) if is_node(node) && is_cid(cid) => {
                let action = parse_action(code)?;
                let expires_at = parse_expiry(expires)?;
                is_mac_hex(mac).then_some(())?;
                Some(Press::Confirmed {
                    cid: (*cid).to_owned(),
                    action,
                    confirmation: Confirmation {
                        node: subject(node, cid, action),
                        expires_at,
                        mac: (*mac).to_owned(),
                    },
                })
            }
            _ => None,
        }
    }

    fn node(&self) -> &str {
        match self {
            Press::List { node } | Press::Card { node, .. } | Press::Ask { node, .. } => node,
            Press::Confirmed { confirmation, .. } => {
                confirmation.node.split('/').nth(1).unwrap_or_default()
            }
        }
    }
}

fn button(text: impl Into<String>, data: String) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(text.into(), data)
}

fn pick(lang: Lang, ru: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Ru => ru,
        Lang::En => en,
    }
}

/// `screen` (a node's card) with the containers button above its last row ("« Назад").
fn with_containers_button(lang: Lang, screen: Screen, node: &str) -> Screen {
    let data = Press::List {
        node: node.to_owned(),
    }
    .encode();
    ui::with_row_above_back(
        screen,
        button(pick(lang, "🐳 Контейнеры", "🐳 Containers"), data),
    )
}

fn state_icon(state: &str) -> &'static str {
    match state {
        "running" => "🟢",
        "restarting" => "🟡",
        "paused" => "⏸",
        _ => "⚪",
    }
}

fn figures(lang: Lang, c: &ContainerInfo) -> String {
    if c.state == "running" {
        format!(
            "{}, {} · CPU {:.1} % · RAM {}",
            c.state,
            human_duration(c.uptime_secs),
            c.cpu_percent,
            human_bytes(c.mem_bytes)
        )
    } else {
        match lang {
            Lang::Ru => format!("{} (не запущен)", c.state),
            Lang::En => format!("{} (not running)", c.state),
        }
    }
}

/// A node's container list.
fn list_screen(lang: Lang, peer: &MemberView, containers: &[ContainerInfo]) -> Screen {
    let node = short_peer_id(&peer.node_id);
    let running = containers.iter().filter(|c| c.state == "running").count();
    let mut text = match lang {
        Lang::Ru => format!(
            "🐳 {} — контейнеры: {} (запущено {running})",
            peer.name,
            containers.len()
        ),
        Lang::En => format!(
            "🐳 {} — containers: {} ({running} running)",
            peer.name,
            containers.len()
        ),
    };
    if containers.is_empty() {
        text.push_str(pick(lang, "\nКонтейнеров нет.", "\nNo containers."));
    }
    for c in containers.iter().take(MAX_LISTED) {
        let _ = write!(
            text,
            "\n{} {} — {}",
            state_icon(&c.state),
            c.name,
            figures(lang, c)
        );
    }
    if containers.len() > MAX_LISTED {
        let more = containers.len() - MAX_LISTED;
        let _ = match lang {
            Lang::Ru => write!(text, "\n…и ещё {more}"),
            Lang::En => write!(text, "\n…and {more} more"),
        };
    }
    let mut rows: Vec<Vec<InlineKeyboardButton>> = containers
        .iter()
        .take(MAX_LISTED)
        .map(|c| {
            vec![button(
                format!("{} {}", state_icon(&c.state), c.name),
                Press::Card {
                    node: node.clone(),
                    cid: c.id.clone(),
                }
                .encode(),
            )]
        })
        .collect();
    rows.push(vec![
        button(
            pick(lang, "🔄 Обновить", "🔄 Refresh"),
            Press::List { node: node.clone() }.encode(),
        ),
        button(
            pick(lang, "« К узлу", "« To the node"),
            Action::Card(node).encode(),
        ),
    ]);
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// The newest log lines that fit a card, each cut to [`MAX_LOG_LINE_CHARS`].
fn log_block(lines: &[String]) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut chars = 0;
    for line in lines.iter().rev() {
        let mut line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_LOG_LINE_CHARS)
            .collect();
        if line.chars().count() == MAX_LOG_LINE_CHARS {
            line.push('…');
        }
        chars += line.chars().count() + 1;
        if chars > MAX_LOG_CHARS {
            break;
        }
        kept.push(line);
    }
    kept.reverse();
    kept.join("\n")
}

/// A container's card: figures, the last lines of its output, and its actions.
fn card_screen(
    lang: Lang,
    peer: &MemberView,
    container: &ContainerInfo,
    logs: Result<Vec<String>, String>,
    note: Option<String>,
) -> Screen {
    let node = short_peer_id(&peer.node_id);
    let mut text = String::new();
    if let Some(note) = note {
        let _ = writeln!(text, "{note}\n");
    }
    let _ = match lang {
        Lang::Ru => write!(
            text,
            "🐳 {} на {}\nОбраз: {}\nСостояние: {}",
            container.name,
            peer.name,
            container.image,
            figures(lang, container)
        ),
        Lang::En => write!(
            text,
            "🐳 {} on {}\nImage: {}\nState: {}",
            container.name,
            peer.name,
            container.image,
            figures(lang, container)
        ),
    };
    match logs {
        Ok(lines) if lines.is_empty() => {
            text.push_str(pick(lang, "\n\nЛог пуст.", "\n\nThe log is empty."));
        }
        Ok(lines) => {
            let _ = match lang {
                Lang::Ru => write!(text, "\n\nПоследние строки лога:\n{}", log_block(&lines)),
                Lang::En => write!(text, "\n\nLast log lines:\n{}", log_block(&lines)),
            };
        }
        Err(error) => {
            let _ = match lang {
                Lang::Ru => write!(text, "\n\nЛог недоступен: {error}"),
                Lang::En => write!(text, "\n\nNo log: {error}"),
            };
        }
    }
    let ask = |action: ContainerAction, label: &str| {
        button(
            label,
            Press::Ask {
                node: node.clone(),
                cid: container.id.clone(),
                action,
            }
            .encode(),
        )
    };
    let actions = if container.state == "running" {
        vec![
            ask(
                ContainerAction::Restart,
                pick(lang, "🔁 Перезапустить", "🔁 Restart"),
            ),
            ask(ContainerAction::Stop, pick(lang, "⏹ Остановить", "⏹ Stop")),
        ]
    } else {
        vec![ask(
            ContainerAction::Start,
            pick(lang, "▶️ Запустить", "▶️ Start"),
        )]
    };
    let rows = vec![
        actions,
        vec![
            button(
                pick(lang, "🔄 Обновить", "🔄 Refresh"),
                Press::Card {
                    node: node.clone(),
                    cid: container.id.clone(),
                }
                .encode(),
            ),
            button(
                pick(lang, "« Контейнеры", "« Containers"),
                Press::List { node }.encode(),
            ),
        ],
    ];
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

fn action_words(lang: Lang, action: ContainerAction) -> (&'static str, &'static str) {
    // (question verb, past participle)
    match (lang, action) {
        (Lang::Ru, ContainerAction::Start) => ("Запустить", "запущен"),
        (Lang::Ru, ContainerAction::Stop) => ("Остановить", "остановлен"),
        (Lang::Ru, ContainerAction::Restart) => ("Перезапустить", "перезапущен"),
        (Lang::En, ContainerAction::Start) => ("Start", "started"),
        (Lang::En, ContainerAction::Stop) => ("Stop", "stopped"),
        (Lang::En, ContainerAction::Restart) => ("Restart", "restarted"),
    }
}

/// The confirmation of a container action.
fn confirm_screen(
    lang: Lang,
    peer: &MemberView,
    container: &ContainerInfo,
    action: ContainerAction,
    confirmation: Confirmation,
) -> Screen {
    let node = short_peer_id(&peer.node_id);
    let (verb, _) = action_words(lang, action);
    let text = match lang {
        Lang::Ru => format!(
            "{verb} контейнер {} на {}?\nКнопка действует 2 минуты.",
            container.name, peer.name
        ),
        Lang::En => format!(
            "{verb} container {} on {}?\nThis button works for 2 minutes.",
            container.name, peer.name
        ),
    };
    let rows = vec![vec![
        button(
            match lang {
                Lang::Ru => format!("Да, {}", verb.to_lowercase()),
                Lang::En => format!("Yes, {}", verb.to_lowercase()),
            },
            Press::Confirmed {
                cid: container.id.clone(),
                action,
                confirmation,
            }
            .encode(),
        ),
        button(
            pick(lang, "Отмена", "Cancel"),
            Press::Card {
                node,
                cid: container.id.clone(),
            }
            .encode(),
        ),
    ]];
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

impl Handlers {
    /// A node's card, with the containers button when the node has a Docker engine.
    pub(super) async fn node_card(
        &self,
        lang: Lang,
        peer: &MemberView,
        can_reboot: bool,
    ) -> Screen {
        let screen = ui::node_card(lang, peer, can_reboot);
        if !peer.is_alive() {
            return screen;
        }
        let screen =
            super::services::with_services_button(lang, screen, &short_peer_id(&peer.node_id));
        let node_id = peer.node_id.to_base58();
        let probe = self
            .config
            .containers
            .call(&node_id, DockerRequest::Probe, self.requester());
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => with_containers_button(lang, screen, &short_peer_id(&peer.node_id)),
            _ => screen,
        }
    }

    async fn containers(
        &self,
        peer: &MemberView,
        request: DockerRequest,
    ) -> Result<DockerAnswer, String> {
        let node_id = peer.node_id.to_base58();
        let call = self
            .config
            .containers
            .call(&node_id, request, self.requester());
        match tokio::time::timeout(CONTAINERS_TIMEOUT, call).await {
            Ok(result) => result.map_err(|e: DockerError| e.to_string()),
            Err(_) => Err("no answer in time".to_owned()),
        }
    }

    async fn container(&self, peer: &MemberView, cid: &str) -> Result<ContainerInfo, String> {
        match self
            .containers(peer, DockerRequest::Inspect { name: cid.into() })
            .await?
        {
            DockerAnswer::Container(info) => Ok(info),
            _ => Err("an answer of the wrong kind".to_owned()),
        }
    }

    async fn card(&self, lang: Lang, peer: &MemberView, cid: &str, note: Option<String>) -> Screen {
        let container = match self.container(peer, cid).await {
            Ok(container) => container,
            Err(error) => {
                let text = ui::action_failed_text(lang, &peer.name, &error);
                return ui::with_back(lang, text, Some(&short_peer_id(&peer.node_id)));
            }
        };
        let request = DockerRequest::Logs {
            name: cid.to_owned(),
            tail: CARD_LOG_LINES,
        };
        let logs = match self.containers(peer, request).await {
            Ok(DockerAnswer::Logs { lines, .. }) => Ok(lines),
            Ok(_) => Err("an answer of the wrong kind".to_owned()),
            Err(error) => Err(error),
        };
        card_screen(lang, peer, &container, logs, note)
    }

    /// Handles a container button (already authorised as the owner's), pressed under the
    /// message of `binding`, with the current member list.
    pub(super) async fn on_container_press(
        &mut self,
        query: &CallbackQuery,
        who: &Who,
        lang: Lang,
        press: Press,
        peers: &[MemberView],
        binding: Binding,
    ) {
        let (chat, message_id) = (ChatId(binding.chat_id), MessageId(binding.message_id));
        let Some(peer) = self.alive_peer(query, lang, peers, press.node()).await else {
            return;
        };
        match press {
            Press::List { .. } => {
                self.answer(query, None).await;
                let screen = match self.containers(&peer, DockerRequest::List).await {
                    Ok(DockerAnswer::Containers(list)) => list_screen(lang, &peer, &list),
                    Ok(_) => Screen::text(ui::node_error_text(lang, "an answer of the wrong kind")),
                    Err(error) => ui::with_back(
                        lang,
                        ui::action_failed_text(lang, &peer.name, &error),
                        Some(&short_peer_id(&peer.node_id)),
                    ),
                };
                self.edit(chat, message_id, screen).await;
            }
            Press::Card { cid, .. } => {
                self.answer(query, None).await;
                let screen = self.card(lang, &peer, &cid, None).await;
                self.edit(chat, message_id, screen).await;
            }
            Press::Ask { node, cid, action } => {
                let container = match self.container(&peer, &cid).await {
                    Ok(container) => container,
                    Err(error) => {
                        self.answer(query, Some(&error)).await;
                        return;
                    }
                };
                let confirmation = Confirmation::sign(
                    &self.config.secret,
                    &subject(&node, &cid, action),
                    unix_now(),
                    binding,
                );
                self.answer(query, None).await;
                let screen = confirm_screen(lang, &peer, &container, action, confirmation);
                self.edit(chat, message_id, screen).await;
            }
            Press::Confirmed {
                cid,
                action,
                confirmation,
            } => {
                self.on_confirmed_container_action(
                    query,
                    who,
                    lang,
                    &peer,
                    &cid,
                    action,
                    confirmation,
                    binding,
                )
                .await;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_confirmed_container_action(
        &mut self,
        query: &CallbackQuery,
        who: &Who,
        lang: Lang,
        peer: &MemberView,
        cid: &str,
        action: ContainerAction,
        confirmation: Confirmation,
        binding: Binding,
    ) {
        let (chat, message_id) = (ChatId(binding.chat_id), MessageId(binding.message_id));
        match self
            .accept_confirmation(query, who, lang, &confirmation, binding)
            .await
        {
            Ok(()) => {}
            Err(ConfirmError::Expired) => {
                let screen = self.card(lang, peer, cid, None).await;
                self.edit(chat, message_id, screen).await;
                return;
            }
            Err(ConfirmError::Forged) => return,
        }
        info!(
            member = %peer.name,
            container = cid,
            action = action.as_str(),
            requested_by = %format!("telegram:{}", binding.owner_id),
            "container action requested from Telegram"
        );
        let request = DockerRequest::Act {
            name: cid.to_owned(),
            action,
        };
        let note = match self.containers(peer, request).await {
            Ok(DockerAnswer::Done { container, .. }) => {
                let (_, done) = action_words(lang, action);
                match lang {
                    Lang::Ru => format!("✅ {}: {done}", container.name),
                    Lang::En => format!("✅ {}: {done}", container.name),
                }
            }
            Ok(_) => ui::action_failed_text(lang, &peer.name, "an answer of the wrong kind"),
            Err(error) => ui::action_failed_text(lang, &peer.name, &error),
        };
        let screen = self.card(lang, peer, cid, Some(note)).await;
        self.edit(chat, message_id, screen).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::NetworkSecret;

    use crate::bot::callback::tests::binding;

    fn peer() -> MemberView {
        MemberView {
            name: "delta-01".into(),
            node_id: libp2p::PeerId::random(),
            addr: "203.0.113.10:4747".into(),
            status: constella_behaviours::membership::Status::Alive,
            leader: true,
            priority: 100,
            uptime_secs: None,
            fingerprint: None,
            relayed: false,
            connection: None,
        }
    }

    #[test]
    fn presses_round_trip_within_the_limit() {
        let secret = NetworkSecret::from_bytes([3; 32]);
        let (node, cid) = ("AbCdEfGh", "0123456789ab");
        let confirmation = Confirmation::sign(
            &secret,
            &subject(node, cid, ContainerAction::Restart),
            u64::from(u32::MAX) * 1000,
            binding(),
        );
        for press in [
            Press::List { node: node.into() },
            Press::Card {
                node: node.into(),
                cid: cid.into(),
            },
            Press::Ask {
                node: node.into(),
                cid: cid.into(),
                action: ContainerAction::Stop,
            },
            Press::Confirmed {
                cid: cid.into(),
                action: ContainerAction::Restart,
                confirmation,
            },
        ] {
            let data = press.encode();
            assert!(data.len() <= MAX_CALLBACK_BYTES, "{data}");
            assert_eq!(Press::parse(&data), Some(press), "{data}");
            // Never taken for one of the node buttons.
            assert_eq!(Action::parse(&data), None, "{data}");
        }
    }

    #[test]
    fn malformed_presses_are_refused() {
        for bad in [
            "",
            "dl:",
            "dl:short",
            "dc:AbCdEfGh",
            "dc:AbCdEfGh:0123456789AB",
            "dc:AbCdEfGh:0123456789a",
            "dc:AbCdEfGh:../../x/yy",
            "da:AbCdEfGh:0123456789ab:k",
            "dA:AbCdEfGh:0123456789ab:r:1",
            "dA:AbCdEfGh:0123456789ab:r:x:0011223344556677",
            "dA:AbCdEfGh:0123456789ab:r:1:0011223344556677:9",
            "dl:AbCdEfGh:extra",
        ] {
            assert_eq!(Press::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_confirmation_binds_container_and_action() {
        let secret = NetworkSecret::from_bytes([3; 32]);
        let now = 1_000_000;
        let sign = |action| {
            Confirmation::sign(
                &secret,
                &subject("AbCdEfGh", "0123456789ab", action),
                now,
                binding(),
            )
        };
        let restart = sign(ContainerAction::Restart);
        let data = Press::Confirmed {
            cid: "0123456789ab".into(),
            action: ContainerAction::Restart,
            confirmation: restart.clone(),
        }
        .encode();
        let Some(Press::Confirmed { confirmation, .. }) = Press::parse(&data) else {
            panic!("{data}");
        };
        assert_eq!(confirmation.verify(&secret, now, binding()), Ok(()));
        // The same MAC on another action or container does not verify.
        for tampered in [
            data.replace(":r:", ":t:"),
            data.replace("0123456789ab", "0123456789ac"),
        ] {
            let Some(Press::Confirmed { confirmation, .. }) = Press::parse(&tampered) else {
                panic!("{tampered}");
            };
            assert_eq!(
                confirmation.verify(&secret, now, binding()),
                Err(ConfirmError::Forged),
                "{tampered}"
            );
        }
        // Nor does a reboot confirmation's, for the same node.
        let reboot = Confirmation::sign(&secret, "AbCdEfGh", now, binding());
        assert_ne!(reboot.mac, restart.mac);
    }

    #[test]
    fn the_card_shows_the_newest_log_lines_within_telegrams_limit() {
        let peer = peer();
        let container = ContainerInfo {
            name: "web".into(),
            image: "nginx:1.27".into(),
            state: "running".into(),
            uptime_secs: 65,
            cpu_percent: 0.5,
            mem_bytes: 5 << 20,
            id: "0123456789ab".into(),
        };
        let lines: Vec<String> = (0..30)
            .map(|i| format!("{i:02} {}", "x".repeat(300)))
            .collect();
        let screen = card_screen(Lang::Ru, &peer, &container, Ok(lines), None);
        assert!(screen.text.chars().count() < 4096, "{}", screen.text.len());
        assert!(screen.text.contains("29 xxx"), "the newest line is shown");
        assert!(!screen.text.contains("00 xxx"), "the oldest gave way");
        let labels: Vec<String> = screen
            .keyboard
            .unwrap()
            .inline_keyboard
            .iter()
            .flatten()
            .map(|b| b.text.clone())
            .collect();
        assert_eq!(
            labels,
            [
                "🔁 Перезапустить",
                "⏹ Остановить",
                "🔄 Обновить",
                "« Контейнеры"
            ]
        );
        let stopped = ContainerInfo {
            state: "exited".into(),
            ..container
        };
        let screen = card_screen(Lang::En, &peer, &stopped, Ok(Vec::new()), None);
        assert!(
            screen.text.contains("exited (not running)"),
            "{}",
            screen.text
        );
        assert!(screen.text.contains("The log is empty."));
    }

    #[test]
    fn the_button_goes_above_back() {
        let peer = peer();
        let screen =
            with_containers_button(Lang::Ru, ui::node_card(Lang::Ru, &peer, true), "AbCdEfGh");
        let rows = screen.keyboard.unwrap().inline_keyboard;
        let n = rows.len();
        assert_eq!(rows[n - 2][0].text, "🐳 Контейнеры");
        assert_eq!(rows[n - 1][0].text, "« Назад");
    }
}
