//! The bot's systemd screens: the `⚙️ Службы` button on a node's card and `/services NODE` show
//! the node's watched units with their state; restarting one goes through the same signed
//! one-time confirmation as a reboot (`/restart NODE UNIT` opens that confirmation directly).
//!
//! Callback data (within Telegram's 64 bytes; a unit is named by [`unit_ref`], the first 8 hex
//! digits of the SHA-256 of its name, resolved against the node's list when pressed):
//!
//! | data | button |
//! | --- | --- |
//! | `sl:NODE` | the node's watched units |
//! | `sa:NODE:UNIT` | ask to confirm a restart |
//! | `sA:NODE:UNIT:EXPIRES:MAC` | the confirmed restart |
//!
//! The confirmation is a [`Confirmation`] over the subject `s/NODE/UNIT`: it cannot pass for a
//! reboot's (a bare node id) or a container's (`d/…`), nor be moved to another unit, node,
//! message or owner. It is claimed in the network settings before the restart is asked for,
//! so a second press, here or on a later leader, is refused; the node that restarts the unit
//! checks the presser's role again itself.

use std::time::Duration;

use constella_behaviours::membership::MemberView;
use constella_behaviours::rpc::{ServicesAnswer, ServicesRequest, unit_name};
use sha2::{Digest, Sha256};
use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId,
};
use tracing::info;

use super::{Handlers, Who};
use crate::bot::callback::{
    Binding, ConfirmError, Confirmation, MAX_CALLBACK_BYTES, is_lower_hex, is_mac_hex, is_short_id,
    parse_expiry, short_peer_id,
};
use crate::bot::ui::{self, Lang, Screen};
use crate::state::unix_now;

/// How long a services screen waits for its node (a restart waits for the unit to start).
const SERVICES_TIMEOUT: Duration = Duration::from_secs(40);
/// Hex digits of a unit's reference in callback data.
const UNIT_REF_LEN: usize = 8;

/// A services button's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Press {
    /// The node's watched units.
    List { node: String },
    /// Ask to confirm restarting a unit.
    Ask { node: String, unit: String },
    /// A confirmed restart; valid only with a good MAC before it expires.
    Confirmed {
        node: String,
        unit: String,
        confirmation: Confirmation,
    },
}

/// Seeing the units is like seeing usage; restarting one is an operator's, like a reboot.
pub(super) fn press_action(press: &Press) -> crate::access::Action {
    match press {
        Press::List { .. } => crate::access::Action::Usage,
        Press::Ask { .. } | Press::Confirmed { .. } => crate::access::Action::Reboot,
    }
}

/// A unit's reference in callback data.
pub(super) fn unit_ref(unit: &str) -> String {
    let digest = Sha256::digest(unit.as_bytes());
    hex::encode(&digest[..UNIT_REF_LEN / 2])
}

fn is_node(text: &str) -> bool {
    is_short_id(text)
}

fn is_hex(text: &str, len: usize) -> bool {
    is_lower_hex(text, len)
}

/// What the MAC of a restart confirmation covers besides expiry, owner, chat and message.
fn subject(node: &str, unit: &str) -> String {
    format!("s/{node}/{unit}")
}

impl Press {
    pub(super) fn encode(&self) -> String {
        match self {
            Press::List { node } => format!("sl:{node}"),
            Press::Ask { node, unit } => format!("sa:{node}:{unit}"),
            Press::Confirmed {
                node,
                unit,
                confirmation,
            } => format!(
                "sA:{node}:{unit}:{}:{}",
                confirmation.expires_at, confirmation.mac
            ),
        }
    }

    /// Parses callback data; anything not made by [`Press::encode`] is `None`.
    pub(super) fn parse(data: &str) -> Option<Press> {
        if data.len() > MAX_CALLBACK_BYTES {
            return None;
        }
        let fields: Vec<&str> = data.split(':').collect();
        match fields.as_slice() {
            ["sl", node] if is_node(node) => Some(Press::List {
                node: (*node).to_owned(),
            }),
            ["sa", node, unit] if is_node(node) && is_hex(unit, UNIT_REF_LEN) => Some(Press::Ask {
                node: (*node).to_owned(),
                unit: (*unit).to_owned(),
            }),
            ["sA", node, unit, expires, mac] if is_node(node) && is_hex(unit, UNIT_REF_LEN) => {
                let expires_at = parse_expiry(expires)?;
                is_mac_hex(mac).then_some(())?;
                Some(Press::Confirmed {
                    node: (*node).to_owned(),
                    unit: (*unit).to_owned(),
                    confirmation: Confirmation {
                        node: subject(node, unit),
                        expires_at,
                        mac: (*mac).to_owned(),
                    },
                })
            }
            _ => None,
        }
    }

    pub(super) fn node(&self) -> &str {
        match self {
            Press::List { node } | Press::Ask { node, .. } | Press::Confirmed { node, .. } => node,
        }
    }
}

fn button(text: impl Into<String>, data: String) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(text.into(), data)
}

/// `screen` (a node's card) with the services button above its last row ("« Назад").
pub(super) fn with_services_button(lang: Lang, screen: Screen, node: &str) -> Screen {
    let data = Press::List {
        node: node.to_owned(),
    }
    .encode();
    ui::with_row_above_back(screen, button(lang.pick("⚙️ Службы", "⚙️ Services"), data))
}

/// The node's units with their state; a restart button for each when the presser may.
fn list_screen(
    lang: Lang,
    peer: &MemberView,
    answer: &ServicesAnswer,
    can_restart: bool,
    note: Option<String>,
) -> Screen {
    let node = short_peer_id(&peer.node_id);
    let mut text = String::new();
    if let Some(note) = note {
        text.push_str(&note);
        text.push_str("\n\n");
    }
    text.push_str(&ui::services(lang, answer, false));
    let mut rows = Vec::new();
    if can_restart && answer.systemd {
        for unit in &answer.units {
            rows.push(vec![button(
                format!("🔄 {}", unit.unit),
                Press::Ask {
                    node: node.clone(),
                    unit: unit_ref(&unit.unit),
                }
                .encode(),
            )]);
        }
    }
    let back = ui::with_back(lang, String::new(), Some(&node));
    rows.extend(back.keyboard.map(|k| k.inline_keyboard).unwrap_or_default());
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// The confirmation of a restart.
fn confirm_screen(lang: Lang, peer: &MemberView, unit: &str, confirmation: Confirmation) -> Screen {
    let node = short_peer_id(&peer.node_id);
    let text = match lang {
        Lang::Ru => format!(
            "Перезапустить службу {unit} на {}?\nКнопка действует 2 минуты.",
            peer.name
        ),
        Lang::En => format!(
            "Restart unit {unit} on {}?\nThis button works for 2 minutes.",
            peer.name
        ),
    };
    let rows = vec![vec![
        button(
            lang.pick("Да, перезапустить", "Yes, restart"),
            Press::Confirmed {
                node: node.clone(),
                unit: unit_ref(unit),
                confirmation,
            }
            .encode(),
        ),
        button(lang.pick("Отмена", "Cancel"), Press::List { node }.encode()),
    ]];
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// The member named `text` (name or node id).
fn find<'a>(peers: &'a [MemberView], text: &str) -> Option<&'a MemberView> {
    peers
        .iter()
        .find(|p| p.name == text || p.node_id.to_base58() == text)
}

impl Handlers {
    async fn services_of(
        &self,
        peer: &MemberView,
        request: ServicesRequest,
    ) -> Result<ServicesAnswer, String> {
        let node_id = peer.node_id.to_base58();
        let call = self.client.services(&node_id, request, self.requester());
        match tokio::time::timeout(SERVICES_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err("no answer in time".to_owned()),
        }
    }

    /// The watched unit of `peer` whose reference is `unit_ref`.
    async fn unit_named(&self, peer: &MemberView, reference: &str) -> Result<String, String> {
        let answer = self.services_of(peer, ServicesRequest::List).await?;
        let mut matches = answer
            .units
            .iter()
            .filter(|u| unit_ref(&u.unit) == reference);
        match (matches.next(), matches.next()) {
            (Some(unit), None) => Ok(unit.unit.clone()),
            _ => Err("the unit is no longer watched".to_owned()),
        }
    }

    async fn services_screen(
        &self,
        lang: Lang,
        who: &Who,
        peer: &MemberView,
        note: Option<String>,
    ) -> Screen {
        let can_restart = who.rank.allows(crate::access::Action::Reboot);
        match self.services_of(peer, ServicesRequest::List).await {
            Ok(answer) => list_screen(lang, peer, &answer, can_restart, note),
            Err(error) => ui::with_back(
                lang,
                ui::action_failed_text(lang, &peer.name, &error),
                Some(&short_peer_id(&peer.node_id)),
            ),
        }
    }

    /// `/services NODE` (a viewer) shows the node's units with restart buttons for an
    /// operator; `/restart NODE UNIT` (an operator) opens the restart's confirmation.
    pub(super) async fn on_services_command(
        &mut self,
        chat: ChatId,
        lang: Lang,
        who: &Who,
        command: &str,
        arg: &str,
    ) {
        let words: Vec<&str> = arg.split_whitespace().collect();
        let (node, unit) = match (command, words.as_slice()) {
            ("services", [node]) => (*node, None),
            ("restart", [node, unit]) => (*node, Some(*unit)),
            _ => {
                self.send(chat, Screen::text(ui::services_usage(lang)))
                    .await;
                return;
            }
        };
        let needed = if unit.is_some() {
            crate::access::Action::Reboot
        } else {
            crate::access::Action::Usage
        };
        if !self.permits(who, needed) {
            self.send(chat, Screen::text(ui::not_allowed(lang).to_owned()))
                .await;
            return;
        }
        let peer = match self.peers().await {
            Ok(peers) => find(&peers, node).cloned(),
            Err(error) => {
                self.send(chat, Screen::text(ui::node_error(lang, &error)))
                    .await;
                return;
            }
        };
        let Some(peer) = peer else {
            let text = match lang {
                Lang::Ru => format!("Нет узла с именем {node}."),
                Lang::En => format!("No node named {node}."),
            };
            self.send(chat, Screen::text(text)).await;
            return;
        };
        let Some(unit) = unit else {
            let screen = self.services_screen(lang, who, &peer, None).await;
            self.send(chat, screen).await;
            return;
        };
        let unit = match unit_name(unit) {
            Ok(unit) => unit,
            Err(error) => {
                self.send(chat, Screen::text(error)).await;
                return;
            }
        };
        // Only a watched unit can be restarted: the node refuses any other.
        let watched = match self.services_of(&peer, ServicesRequest::List).await {
            Ok(answer) => answer.units.iter().any(|u| u.unit == unit),
            Err(error) => {
                let text = ui::action_failed_text(lang, &peer.name, &error);
                self.send(chat, Screen::text(text)).await;
                return;
            }
        };
        if !watched {
            let text = match lang {
                Lang::Ru => format!(
                    "{unit} не отслеживается на {0}: constella services add {0} {unit}",
                    peer.name
                ),
                Lang::En => format!(
                    "{unit} is not watched on {0}: constella services add {0} {unit}",
                    peer.name
                ),
            };
            self.send(chat, Screen::text(text)).await;
            return;
        }
        // The confirmation is bound to its message: sent first, then signed into it.
        let Some(message) = self
            .send_returning(chat, Screen::text("…".to_owned()))
            .await
        else {
            return;
        };
        let binding = Binding {
            owner_id: who.user_id,
            chat_id: chat.0,
            message_id: message.0,
        };
        let node = short_peer_id(&peer.node_id);
        let confirmation = Confirmation::sign(
            &self.config.secret,
            &subject(&node, &unit_ref(&unit)),
            unix_now(),
            binding,
        );
        self.edit(
            chat,
            message,
            confirm_screen(lang, &peer, &unit, confirmation),
        )
        .await;
    }

    /// Handles a services button (already authorised), pressed under the message of
    /// `binding`, with the current member list.
    pub(super) async fn on_services_press(
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
                let screen = self.services_screen(lang, who, &peer, None).await;
                self.edit(chat, message_id, screen).await;
            }
            Press::Ask { node, unit } => {
                let name = match self.unit_named(&peer, &unit).await {
                    Ok(name) => name,
                    Err(error) => {
                        self.answer(query, Some(&error)).await;
                        return;
                    }
                };
                let confirmation = Confirmation::sign(
                    &self.config.secret,
                    &subject(&node, &unit),
                    unix_now(),
                    binding,
                );
                self.answer(query, None).await;
                let screen = confirm_screen(lang, &peer, &name, confirmation);
                self.edit(chat, message_id, screen).await;
            }
            Press::Confirmed {
                unit, confirmation, ..
            } => {
                match self
                    .accept_confirmation(query, who, lang, &confirmation, binding)
                    .await
                {
                    Ok(()) => {}
                    Err(ConfirmError::Expired) => {
                        let screen = self.services_screen(lang, who, &peer, None).await;
                        self.edit(chat, message_id, screen).await;
                        return;
                    }
                    Err(ConfirmError::Forged) => return,
                }
                let note = match self.unit_named(&peer, &unit).await {
                    Ok(name) => {
                        info!(
                            event = "service_restart_requested",
                            member = %peer.name,
                            unit = %name,
                            requested_by = %format!("telegram:{}", binding.owner_id),
                            "unit restart requested from Telegram"
                        );
                        let request = ServicesRequest::Restart { unit: name.clone() };
                        match self.services_of(&peer, request).await {
                            Ok(_) => match lang {
                                Lang::Ru => format!("✅ {name}: перезапущена"),
                                Lang::En => format!("✅ {name}: restarted"),
                            },
                            Err(error) => ui::action_failed_text(lang, &peer.name, &error),
                        }
                    }
                    Err(error) => ui::action_failed_text(lang, &peer.name, &error),
                };
                let screen = self.services_screen(lang, who, &peer, Some(note)).await;
                self.edit(chat, message_id, screen).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::NetworkSecret;

    use crate::bot::callback::Action;
    use crate::bot::callback::tests::binding;

    #[test]
    fn presses_round_trip_within_the_limit() {
        let secret = NetworkSecret::from_bytes([3; 32]);
        let unit = unit_ref("a-rather-long-unit-name@instance-with-more.service");
        assert_eq!(unit.len(), UNIT_REF_LEN);
        let confirmation = Confirmation::sign(
            &secret,
            &subject("AbCdEfGh", &unit),
            u64::from(u32::MAX) * 1000,
            binding(),
        );
        for press in [
            Press::List {
                node: "AbCdEfGh".into(),
            },
            Press::Ask {
                node: "AbCdEfGh".into(),
                unit: unit.clone(),
            },
            Press::Confirmed {
                node: "AbCdEfGh".into(),
                unit: unit.clone(),
                confirmation,
            },
        ] {
            let data = press.encode();
            assert!(data.len() <= MAX_CALLBACK_BYTES, "{data}");
            assert_eq!(Press::parse(&data), Some(press.clone()), "{data}");
            // Not mistaken for a node button or a container button.
            assert_eq!(Action::parse(&data), None, "{data}");
        }
    }

    #[test]
    fn malformed_presses_are_refused() {
        for bad in [
            "",
            "sl:",
            "sl:AbCd",
            "sa:AbCdEfGh:nginx",
            "sa:AbCdEfGh:0011223",
            "sA:AbCdEfGh:00112233:1:00",
            "sA:AbCdEfGh:00112233:x:0011223344556677",
            "sA:AbCdEfGh:00112233:1:0011223344556677:9",
            "sA:AbCdEfGh:0011223Z:1:0011223344556677",
        ] {
            assert_eq!(Press::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_restart_confirmation_binds_node_and_unit_and_is_no_reboot() {
        let secret = NetworkSecret::from_bytes([3; 32]);
        let now = 1_000_000;
        let nginx = unit_ref("nginx.service");
        let c = Confirmation::sign(&secret, &subject("AbCdEfGh", &nginx), now, binding());
        let data = Press::Confirmed {
            node: "AbCdEfGh".into(),
            unit: nginx.clone(),
            confirmation: c.clone(),
        }
        .encode();
        let Some(Press::Confirmed { confirmation, .. }) = Press::parse(&data) else {
            panic!("{data}");
        };
        assert_eq!(confirmation.verify(&secret, now, binding()), Ok(()));
        // The same MAC on another unit, or read as a reboot of the node, does not verify.
        let other = Press::parse(&data.replace(&nginx, &unit_ref("sshd.service"))).unwrap();
        let Press::Confirmed { confirmation, .. } = other else {
            panic!()
        };
        assert_eq!(
            confirmation.verify(&secret, now, binding()),
            Err(ConfirmError::Forged)
        );
        let as_reboot = Confirmation {
            node: "AbCdEfGh".into(),
            ..c
        };
        assert_eq!(
            as_reboot.verify(&secret, now, binding()),
            Err(ConfirmError::Forged)
        );
    }
}
