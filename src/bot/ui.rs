//! What the bot says and which buttons it shows, in Russian (the seed's language, default) and
//! English (`/lang en`). Texts are plain (no parse mode), so no user-visible data needs escaping.

use std::fmt::Write as _;

use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::callback::{Action, ChartRange, Confirmation, short_peer_id};
use crate::daemon::ClientError;
use crate::daemon::signals::NetworkEvent;
use crate::output::{ENGLISH, RUSSIAN, Units};
use crate::stats::NodeStats;
use constella_behaviours::membership::MemberView;

/// Disks listed on a phone screen; more are counted.
const MAX_DISKS: usize = 3;

/// The interface language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Русский (the default, as in the seed).
    Ru,
    /// English.
    En,
}

impl Lang {
    /// The language of a settings code; anything but `"en"` is Russian.
    pub fn from_code(code: &str) -> Lang {
        if code == "en" { Lang::En } else { Lang::Ru }
    }

    /// [`Lang::pick`] as an owned string.
    pub fn pick_owned(self, ru: &'static str, en: &'static str) -> String {
        self.pick(ru, en).to_owned()
    }

    pub(crate) fn pick(self, ru: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Ru => ru,
            Lang::En => en,
        }
    }

    /// How figures are written: Russian units and a decimal comma, or English.
    pub(crate) fn units(self) -> &'static Units {
        match self {
            Lang::Ru => &RUSSIAN,
            Lang::En => &ENGLISH,
        }
    }
}

/// A message: text and optional inline keyboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub text: String,
    pub keyboard: Option<InlineKeyboardMarkup>,
}

impl Screen {
    /// A message without buttons.
    pub fn text(text: String) -> Self {
        Self {
            text,
            keyboard: None,
        }
    }
}

fn button(text: impl Into<String>, action: &Action) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(text.into(), action.encode())
}

/// The seed's list label: "• delta-01 — Хост", "• echo-02", "• fox-03 (offline)".
pub fn node_label(lang: Lang, peer: &MemberView) -> String {
    let mut label = format!("• {}", peer.name);
    if peer.leader {
        label.push_str(lang.pick(" — Хост", " — Host"));
    }
    if !peer.is_alive() {
        let _ = write!(label, " (offline)");
    }
    label
}

/// The main menu: every node as a button.
pub fn node_list(lang: Lang, peers: &[MemberView]) -> Screen {
    let alive = peers.iter().filter(|p| p.is_alive()).count();
    let text = match lang {
        Lang::Ru => format!(
            "Узлы сети: {} (в сети {alive}).\n«Хост» — текущий лидер. Выберите узел:",
            peers.len()
        ),
        Lang::En => format!(
            "Nodes: {} ({alive} online).\n\"Host\" is the current leader. Choose a node:",
            peers.len()
        ),
    };
    let mut rows: Vec<Vec<InlineKeyboardButton>> = peers
        .iter()
        .map(|p| {
            vec![button(
                node_label(lang, p),
                &Action::Card(short_peer_id(&p.node_id)),
            )]
        })
        .collect();
    rows.push(vec![button(
        lang.pick("📊 Обзор сети (24 ч)", "📊 Network overview (24 h)"),
        &Action::Overview,
    )]);
    rows.push(vec![button(
        lang.pick("🔄 Обновить", "🔄 Refresh"),
        &Action::List,
    )]);
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// A node's card with its actions; the reboot button only for those who may reboot.
pub fn node_card(lang: Lang, peer: &MemberView, can_reboot: bool) -> Screen {
    let short = short_peer_id(&peer.node_id);
    let status = match (peer.is_alive(), lang) {
        (true, Lang::Ru) => "в сети",
        (true, Lang::En) => "online",
        (false, Lang::Ru) => "offline (не отвечает)",
        (false, Lang::En) => "offline (not answering)",
    };
    let leader = match (peer.leader, lang) {
        (true, Lang::Ru) => "да (Хост)",
        (true, Lang::En) => "yes (Host)",
        (false, Lang::Ru) => "нет",
        (false, Lang::En) => "no",
    };
    let mut text = match lang {
        Lang::Ru => format!(
            "🖥 {}\nID: …{short}\nАдрес: {}\nСтатус: {status}\nЛидер: {leader}",
            peer.name, peer.addr
        ),
        Lang::En => format!(
            "🖥 {}\nID: …{short}\nAddress: {}\nStatus: {status}\nLeader: {leader}",
            peer.name, peer.addr
        ),
    };
    // The fingerprint to compare with `constella verify` / `status` on the server itself.
    if let Some(digits) = &peer.fingerprint {
        text.push_str(&format!(
            "\n{}: {digits}",
            lang.pick("Отпечаток PQ4", "PQ4 fingerprint")
        ));
    }
    let mut rows = vec![
        vec![button(
            lang.pick("Показать потребление", "Show usage"),
            &Action::Usage(short.clone()),
        )],
        vec![button(
            lang.pick("📈 График", "📈 Chart"),
            &Action::Charts(short.clone()),
        )],
    ];
    if can_reboot {
        rows.push(vec![button(
            lang.pick("Перезагрузить сервер", "Reboot server"),
            &Action::AskReboot(short.clone()),
        )]);
    }
    rows.push(vec![button(lang.pick("« Назад", "« Back"), &Action::List)]);
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// The reboot confirmation.
pub fn confirm_reboot(lang: Lang, peer: &MemberView, confirmation: Confirmation) -> Screen {
    let short = confirmation.node.clone();
    let text = match lang {
        Lang::Ru => format!(
            "Перезагрузить {}?\nСервер будет недоступен несколько минут. Кнопка действует 2 минуты.",
            peer.name
        ),
        Lang::En => format!(
            "Reboot {}?\nThe server will be unreachable for a few minutes. This button works for 2 minutes.",
            peer.name
        ),
    };
    let rows = vec![vec![
        button(
            lang.pick("Да, перезагрузить", "Yes, reboot"),
            &Action::Reboot(confirmation),
        ),
        button(lang.pick("Отмена", "Cancel"), &Action::Cancel(short)),
    ]];
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// The owner's node card with a remove button above the way back.
pub fn with_remove_button(lang: Lang, mut screen: Screen, short: &str) -> Screen {
    if let Some(keyboard) = screen.keyboard.as_mut() {
        let row = vec![button(
            lang.pick("🗑 Удалить из сети", "🗑 Remove from the network"),
            &Action::AskRemove(short.to_owned()),
        )];
        let at = keyboard.inline_keyboard.len().saturating_sub(1);
        keyboard.inline_keyboard.insert(at, row);
    }
    screen
}

/// The confirmation step of a removal: what it does, and that it cannot be undone.
pub fn confirm_remove(lang: Lang, peer: &MemberView, confirmation: Confirmation) -> Screen {
    let short = confirmation.node.clone();
    let text = match lang {
        Lang::Ru => format!(
            "Удалить {} из сети навсегда?\nВсе узлы забудут его, а секрет сети сменится (новая эпоха), и он её не получит. Вернуть его можно только новым приглашением. Кнопка действует 2 минуты.",
            peer.name
        ),
        Lang::En => format!(
            "Remove {} from the network for good?\nEvery node drops it and the network secret is rotated to a new epoch it never gets. It can come back only with a new invite. This button works for 2 minutes.",
            peer.name
        ),
    };
    let rows = vec![vec![
        button(
            lang.pick("Да, удалить", "Yes, remove"),
            &Action::Remove(confirmation),
        ),
        button(lang.pick("Отмена", "Cancel"), &Action::Cancel(short)),
    ]];
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// A removal went through. The removed server knew the bot token, which only @BotFather can
/// change: the owner is told how.
pub fn removed(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "✅ {name} удалён из сети; секрет сети сменён, новый он не получит.\nОн знал токен бота: отзовите токен в @BotFather (/revoke) и задайте новый на любом узле: constella bot-token set."
        ),
        Lang::En => format!(
            "✅ {name} is removed from the network; the network secret is rotated and it gets no copy.\nIt knew the bot token: revoke it with @BotFather (/revoke) and set the new one on any node: constella bot-token set."
        ),
    }
}

/// A node cannot remove itself from the bot.
pub fn toast_remove_self(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Ru => format!("{name} — это узел бота: он уходит командой constella leave на нём"),
        Lang::En => format!("{name} runs this bot: it leaves with constella leave on it"),
    }
}

/// `screen` (a node's card) with a row of `button` above its last row ("« Назад").
pub fn with_row_above_back(mut screen: Screen, button: InlineKeyboardButton) -> Screen {
    if let Some(keyboard) = screen.keyboard.as_mut() {
        let at = keyboard.inline_keyboard.len().saturating_sub(1);
        keyboard.inline_keyboard.insert(at, vec![button]);
    }
    screen
}

/// A result screen with a way back to the node and to the list.
pub fn with_back(lang: Lang, text: String, node: Option<&str>) -> Screen {
    let mut row = Vec::new();
    if let Some(node) = node {
        row.push(button(
            lang.pick("« К узлу", "« To the node"),
            &Action::Card(node.to_owned()),
        ));
    }
    row.push(button(
        lang.pick("Список узлов", "Node list"),
        &Action::List,
    ));
    Screen {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(vec![row])),
    }
}

/// The ranges a node's chart can cover, as buttons.
pub fn chart_menu(lang: Lang, peer: &MemberView) -> Screen {
    let short = short_peer_id(&peer.node_id);
    let ranges = ChartRange::ALL
        .into_iter()
        .map(|range| {
            button(
                chart_range(lang, range),
                &Action::Chart(short.clone(), range),
            )
        })
        .collect();
    let back = vec![button(
        lang.pick("« К узлу", "« To the node"),
        &Action::Card(short.clone()),
    )];
    Screen {
        text: match lang {
            Lang::Ru => format!("📈 {}: за какое время показать график?", peer.name),
            Lang::En => format!("📈 {}: chart over which period?", peer.name),
        },
        keyboard: Some(InlineKeyboardMarkup::new(vec![ranges, back])),
    }
}

/// "1 ч", "24 ч", "7 д" (or English).
pub fn chart_range(lang: Lang, range: ChartRange) -> &'static str {
    match range {
        ChartRange::Hour => lang.pick("1 ч", "1 h"),
        ChartRange::Day => lang.pick("24 ч", "24 h"),
        ChartRange::Week => lang.pick("7 д", "7 d"),
    }
}

/// The panel titles of a chart.
pub fn chart_titles(lang: Lang) -> crate::monitor::chart::Titles {
    crate::monitor::chart::Titles {
        cpu: lang.pick("Процессор", "CPU"),
        ram: lang.pick("Память", "Memory"),
        disk: lang.pick("Диск /", "Disk /"),
        traffic: lang.pick("Трафик", "Traffic"),
        received: lang.pick("приём", "in"),
        sent: lang.pick("передача", "out"),
    }
}

/// "42 % — 1.6 / 3.8 GiB", short enough for a phone line.
fn share(units: &Units, used: u64, total: u64) -> String {
    if total == 0 {
        return "—".to_owned();
    }
    #[allow(clippy::cast_precision_loss)] // display only
    let percent = used as f64 * 100.0 / total as f64;
    format!(
        "{percent:.0} % — {} / {}",
        units.bytes(used),
        units.bytes(total)
    )
}

/// A node's CPU, RAM, disks and uptime, formatted for a phone, every figure and unit in the
/// interface language.
pub fn usage(lang: Lang, s: &NodeStats) -> String {
    let units = lang.units();
    let [one, five, fifteen] = s.load_average.map(|l| units.decimal(l, 2));
    let cpu = units.decimal(f64::from(s.cpu_percent), 1);
    let mut text = match lang {
        Lang::Ru => format!("📊 {} — потребление", s.name),
        Lang::En => format!("📊 {} — usage", s.name),
    };
    let _ = match lang {
        Lang::Ru => write!(text, "\nЦП: {cpu} % · нагрузка {one} {five} {fifteen}"),
        Lang::En => write!(text, "\nCPU: {cpu} % · load {one} {five} {fifteen}"),
    };
    let _ = write!(
        text,
        "\n{}: {}",
        lang.pick("ОЗУ", "RAM"),
        share(units, s.ram_used_bytes, s.ram_total_bytes)
    );
    if s.swap_total_bytes > 0 {
        let _ = write!(
            text,
            "\n{}: {}",
            lang.pick("Подкачка", "Swap"),
            share(units, s.swap_used_bytes, s.swap_total_bytes)
        );
    }
    let disk = lang.pick("Диск", "Disk");
    for d in s.disks.iter().take(MAX_DISKS) {
        let _ = write!(
            text,
            "\n{disk} {}: {}",
            d.mount,
            share(units, d.used_bytes, d.total_bytes)
        );
    }
    if s.disks.len() > MAX_DISKS {
        let more = s.disks.len() - MAX_DISKS;
        let _ = match lang {
            Lang::Ru => write!(text, "\n…и ещё {more} дисков"),
            Lang::En => write!(text, "\n…and {more} more disks"),
        };
    }
    let (host, daemon) = (
        units.duration(s.host_uptime_secs),
        units.duration(s.daemon_uptime_secs),
    );
    let _ = match lang {
        Lang::Ru => write!(text, "\nСервер работает: {host}\nДемон работает: {daemon}"),
        Lang::En => write!(text, "\nUptime: {host} (daemon {daemon})"),
    };
    if let Some(traffic) = &s.traffic {
        let title = lang.pick("Трафик за месяц", "Traffic this month");
        let reset = match lang {
            Lang::Ru => format!("сброс {}-го числа", traffic.reset_day),
            Lang::En => format!("resets on day {}", traffic.reset_day),
        };
        let _ = write!(text, "\n{title} ({reset}):");
        for iface in &traffic.interfaces {
            let _ = write!(
                text,
                "\n  {} ↓ {} ↑ {}",
                iface.name,
                units.bytes(iface.rx_bytes),
                units.bytes(iface.tx_bytes)
            );
        }
    }
    // The top three of each list fit a phone line each.
    let cpu: Vec<String> = s
        .top_cpu
        .iter()
        .take(3)
        .map(|p| {
            format!(
                "{} {} %",
                p.name,
                units.decimal(f64::from(p.cpu_percent), 0)
            )
        })
        .collect();
    let ram: Vec<String> = s
        .top_memory
        .iter()
        .take(3)
        .map(|p| format!("{} {}", p.name, units.bytes(p.rss_bytes)))
        .collect();
    for (title, top) in [
        (lang.pick("Топ ЦП", "Top CPU"), cpu),
        (lang.pick("Топ ОЗУ", "Top RAM"), ram),
    ] {
        if !top.is_empty() {
            let _ = write!(text, "\n{title}: {}", top.join(", "));
        }
    }
    text
}

/// The reboot was accepted by the node.
pub fn reboot_accepted(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Ru => {
            format!("✅ {name}: перезагрузка запущена. Узел вернётся в список, когда загрузится.")
        }
        Lang::En => {
            format!("✅ {name}: reboot started. The node will be back in the list once it boots.")
        }
    }
}

/// An action failed; `error` is the node's one-line reason.
pub fn action_failed(lang: Lang, name: &str, error: &ClientError) -> String {
    action_failed_text(lang, name, &client_error(lang, error))
}

/// [`action_failed`] with the reason already in words.
pub fn action_failed_text(lang: Lang, name: &str, error: &str) -> String {
    match lang {
        Lang::Ru => format!("❌ {name}: не получилось — {error}"),
        Lang::En => format!("❌ {name}: failed — {error}"),
    }
}

/// Short answers shown as a toast on a button press.
pub fn toast_offline(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Ru => format!("{name} offline: узел не отвечает"),
        Lang::En => format!("{name} is offline: the node does not answer"),
    }
}

pub fn toast_stale(lang: Lang) -> &'static str {
    lang.pick(
        "Кнопка устарела. Откройте список заново: /start",
        "This button is stale. Open the list again: /start",
    )
}

/// The answer to a request beyond the sender's role.
pub fn not_allowed(lang: Lang) -> &'static str {
    lang.pick(
        "Недостаточно прав: ваша роль этого не позволяет",
        "Not allowed: your role does not permit this",
    )
}

/// The one message a replaced owner gets.
pub fn former_owner(lang: Lang, new_owner: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Владелец сети сменился: теперь это {new_owner}. Этот бот больше не будет вам отвечать."
        ),
        Lang::En => format!(
            "The network has a new owner: {new_owner}. This bot will not answer you any more."
        ),
    }
}

pub fn toast_cancelled(lang: Lang) -> &'static str {
    lang.pick("Отменено", "Cancelled")
}

pub fn toast_expired(lang: Lang) -> &'static str {
    lang.pick(
        "Подтверждение истекло — ничего не сделано",
        "The confirmation expired — nothing was done",
    )
}

/// `/help` and the answer to anything the bot does not understand.
pub fn help(lang: Lang) -> String {
    lang.pick(
        "Constella — управление сетью серверов.\n\n/start — список узлов\n/invite [ttl] — ссылка для подключения нового узла (по умолчанию 15m, максимум 24h)\n/chat_invite — одноразовый код для регистрации в PQ4-чате\n/audit — последние записи журнала аудита (только владелец)\n/alerts — пороги оповещений; /alerts cpu 90 — изменить (только владелец)\n/overview [1h|24h|7d] — график всех узлов\n/services УЗЕЛ — службы systemd узла\n/web — ссылка для входа в веб-панель\n/lang en — English",
        "Constella — control of your server network.\n\n/start — node list\n/invite [ttl] — a join link for a new node (default 15m, at most 24h)\n/chat_invite — a one-time code to register a PQ4 chat account\n/audit — the latest audit-log entries (owner only)\n/alerts — alert thresholds; /alerts cpu 90 — change one (owner only)\n/overview [1h|24h|7d] — a chart of every node\n/services NODE — a node's systemd units\n/web — a login link for the web panel\n/lang ru — по-русски",
    )
    .to_owned()
}

pub fn invite_usage(lang: Lang, error: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Использование: /invite [ttl], например /invite 15m или /invite 2h (от 1s до 24h).\n{error}"
        ),
        Lang::En => format!(
            "Usage: /invite [ttl], e.g. /invite 15m or /invite 2h (from 1s to 24h).\n{error}"
        ),
    }
}

/// A new invite link, as `constella invite` prints it.
pub fn invite(lang: Lang, link: &str, ttl: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Одноразовая ссылка, действует {ttl}:\n\n{link}\n\nНа новом сервере:\nconstella join --server-name ИМЯ --join '{link}'"
        ),
        Lang::En => format!(
            "One-time link, valid for {ttl}:\n\n{link}\n\nOn the new server run:\nconstella join --server-name NAME --join '{link}'"
        ),
    }
}

/// A chat account invite code and how to use it.
pub fn chat_invite(lang: Lang, code: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Одноразовый код регистрации в PQ4-чате, действует 7 дней:\n\n{code}\n\nРегистрация:\nconstella chat register --username ИМЯ --email ПОЧТА --invite {code}"
        ),
        Lang::En => format!(
            "One-time PQ4 chat account invite, valid for 7 days:\n\n{code}\n\nTo register:\nconstella chat register --username NAME --email EMAIL --invite {code}"
        ),
    }
}

/// `/web`: a one-time login link to the leader's web panel (and its certificate's fingerprint
/// over HTTPS).
pub fn web_login(lang: Lang, link: &str, fingerprint: Option<&str>) -> String {
    let mut text = match lang {
        Lang::Ru => format!("Вход в веб-панель, ссылка одноразовая, действует 5 минут:\n\n{link}"),
        Lang::En => format!("Web panel login, a one-time link valid for 5 minutes:\n\n{link}"),
    };
    if let Some(fingerprint) = fingerprint {
        let _ = match lang {
            Lang::Ru => write!(
                text,
                "\n\nСертификат самоподписанный; сверьте его отпечаток SHA-256 в браузере:\n{fingerprint}"
            ),
            Lang::En => write!(
                text,
                "\n\nThe certificate is self-signed; compare its SHA-256 fingerprint in the browser:\n{fingerprint}"
            ),
        };
    }
    text
}

/// `/web` when the leader serves no panel.
pub fn web_off(lang: Lang, node: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Веб-панель на узле {node} (Хост) выключена: запустите его с `constella run --web-addr 127.0.0.1:4780`."
        ),
        Lang::En => format!(
            "The web panel is off on {node} (the host): run it with `constella run --web-addr 127.0.0.1:4780`."
        ),
    }
}

pub fn chat_invite_usage(lang: Lang) -> String {
    lang.pick(
        "Использование: /chat_invite (без аргументов; код действует 7 дней).",
        "Usage: /chat_invite (no argument; the code is valid for 7 days).",
    )
    .to_owned()
}

pub fn services_usage(lang: Lang) -> String {
    lang.pick(
        "Использование: /services УЗЕЛ — службы узла; /restart УЗЕЛ СЛУЖБА — перезапустить (подтверждение кнопкой).",
        "Usage: /services NODE — the node's units; /restart NODE UNIT — restart one (confirmed with a button).",
    )
    .to_owned()
}

pub fn chat_invite_failed(lang: Lang, error: &anyhow::Error) -> String {
    match lang {
        Lang::Ru => format!("Не удалось выдать код: {error:#}"),
        Lang::En => format!("Cannot issue an invite: {error:#}"),
    }
}

/// `/services NODE`: each watched unit with its state.
pub fn services(
    lang: Lang,
    answer: &constella_behaviours::rpc::ServicesAnswer,
    restarted: bool,
) -> String {
    let mut out = match (lang, restarted) {
        (Lang::Ru, true) => format!("Перезапущено на {}.\n", answer.node),
        (Lang::En, true) => format!("Restarted on {}.\n", answer.node),
        (Lang::Ru, false) => format!("Службы {}:\n", answer.node),
        (Lang::En, false) => format!("Units of {}:\n", answer.node),
    };
    if !answer.systemd {
        out.push_str(lang.pick(
            "systemd на узле недоступен.\n",
            "systemd is not reachable on the node.\n",
        ));
    }
    if answer.units.is_empty() {
        out.push_str(lang.pick("Нет отслеживаемых служб.", "No watched units."));
    }
    for unit in &answer.units {
        let mark = match unit.active_state.as_str() {
            "active" => "🟢",
            "failed" => "🔴",
            "" => "⚪",
            _ => "🟡",
        };
        out.push_str(&format!(
            "{mark} {} — {} ({})\n",
            unit.unit, unit.active_state, unit.sub_state
        ));
    }
    out
}

pub fn alerts_usage(lang: Lang) -> String {
    lang.pick(
        "Использование: /alerts — пороги; /alerts cpu|ram|disk 1..100|off — изменить порог для всей сети; /alerts traffic 500GiB|off — месячная квота трафика.",
        "Usage: /alerts — the thresholds; /alerts cpu|ram|disk 1..100|off — set one for the whole network; /alerts traffic 500GiB|off — the monthly traffic quota.",
    )
    .to_owned()
}

/// `/alerts`: each rule's threshold and the episodes still open.
pub fn alerts(lang: Lang, state: &constella_behaviours::alerts::AlertState) -> String {
    use constella_behaviours::alerts::Rule;
    let mut out = lang
        .pick("Пороги оповещений:\n", "Alert thresholds:\n")
        .to_owned();
    for rule in Rule::ALL {
        let percent = state.percent(rule);
        let value = if percent == 0 {
            lang.pick("выкл.", "off").to_owned()
        } else {
            format!("{percent} %")
        };
        let hold = match (rule.default_hold_secs(), lang) {
            (0, _) => String::new(),
            (secs, Lang::Ru) => format!(" (дольше {} мин)", secs / 60),
            (secs, Lang::En) => format!(" (for {} min)", secs / 60),
        };
        out.push_str(&format!("{}: {value}{hold}\n", rule.as_str()));
    }
    let quota = match state.quota_bytes() {
        0 => lang.pick("выкл.", "off").to_owned(),
        bytes => format!(
            "{}{}",
            lang.units().bytes(bytes),
            lang.pick(" в месяц", "/month")
        ),
    };
    out.push_str(&format!("traffic: {quota}\n"));
    let open: Vec<_> = state.episodes.values().filter(|e| e.is_open()).collect();
    if open.is_empty() {
        out.push_str(lang.pick("Открытых оповещений нет.", "No open alerts."));
    } else {
        out.push_str(lang.pick("Открыты:\n", "Open:\n"));
        for e in open {
            if e.rule == Rule::Traffic {
                out.push_str(&format!(
                    "🔴 {}: traffic {} > {}\n",
                    e.node_name,
                    lang.units().bytes(e.used_bytes),
                    lang.units().bytes(e.quota_bytes)
                ));
                continue;
            }
            out.push_str(&format!(
                "🔴 {}: {} {} % > {} %\n",
                e.node_name,
                e.rule.as_str(),
                e.value,
                e.threshold
            ));
        }
    }
    out
}

pub fn lang_usage() -> String {
    "/lang ru — по-русски\n/lang en — English".to_owned()
}

pub fn lang_set(lang: Lang) -> String {
    lang.pick("Язык: русский.", "Language: English.").to_owned()
}

/// A [`ClientError`] in the owner's language.
pub fn client_error(lang: Lang, error: &ClientError) -> String {
    match lang {
        Lang::En => error.to_string(),
        Lang::Ru => match error {
            ClientError::ShuttingDown => "узел останавливается".to_owned(),
            ClientError::UnknownNode(name) => format!("нет узла с именем {name}"),
            ClientError::Offline(name) => format!("узел {name} offline"),
            ClientError::Unreachable(name) => format!("узел {name} недоступен"),
            ClientError::Refused { node, reason } => format!("узел {node} отказал: {reason}"),
            ClientError::BadAnswer { node, problem } => {
                format!("узел {node} ответил непонятно: {problem}")
            }
            ClientError::Busy(n) => {
                format!("слишком много запросов одновременно ({n}); повторите чуть позже")
            }
            ClientError::Storage(detail) => format!("не удалось сохранить состояние: {detail}"),
            ClientError::Invalid(detail) => format!("неверный запрос: {detail}"),
        },
    }
}

pub fn node_error(lang: Lang, error: &ClientError) -> String {
    node_error_text(lang, &client_error(lang, error))
}

/// [`node_error`] with the reason already in words.
pub fn node_error_text(lang: Lang, error: &str) -> String {
    match lang {
        Lang::Ru => format!("Узел не ответил: {error}"),
        Lang::En => format!("The node did not answer: {error}"),
    }
}

/// One line of a notification.
pub fn event_line(lang: Lang, event: &NetworkEvent) -> String {
    match (event, lang) {
        (NetworkEvent::LeaderChanged { from, to }, Lang::Ru) => {
            format!("Хост сменился: {from} → {to}")
        }
        (NetworkEvent::LeaderChanged { from, to }, Lang::En) => {
            format!("New Host: {from} → {to}")
        }
        (NetworkEvent::Joined(n), Lang::Ru) => format!("Новый узел в сети: {n}"),
        (NetworkEvent::Joined(n), Lang::En) => format!("A node joined: {n}"),
        (NetworkEvent::Left(n), Lang::Ru) => format!("Узел {n} покинул сеть"),
        (NetworkEvent::Left(n), Lang::En) => format!("{n} left the network"),
        (NetworkEvent::Offline(n), Lang::Ru) => format!("Узел {n} не отвечает (offline)"),
        (NetworkEvent::Offline(n), Lang::En) => format!("{n} stopped answering (offline)"),
        (NetworkEvent::Back(n), Lang::Ru) => format!("Узел {n} снова в сети"),
        (NetworkEvent::Back(n), Lang::En) => format!("{n} is back online"),
        (NetworkEvent::Container(alert), lang) => container_alert_line(lang, alert),
    }
}

/// A container alert as one line of a notification.
fn container_alert_line(lang: Lang, alert: &constella_behaviours::rpc::ContainerAlert) -> String {
    use constella_behaviours::rpc::AlertKind;
    let (node, name) = (&alert.node, &alert.container);
    match (alert.kind, lang) {
        (AlertKind::Exited { exit_code }, Lang::Ru) => {
            format!("🐳 Контейнер {name} на {node} завершился с кодом {exit_code}")
        }
        (AlertKind::Exited { exit_code }, Lang::En) => {
            format!("🐳 Container {name} on {node} exited with code {exit_code}")
        }
        (
            AlertKind::RestartLoop {
                restarts,
                window_secs,
            },
            Lang::Ru,
        ) => format!(
            "🐳 Контейнер {name} на {node} перезапускается по кругу: {restarts} падения за {} мин",
            window_secs.div_ceil(60)
        ),
        (
            AlertKind::RestartLoop {
                restarts,
                window_secs,
            },
            Lang::En,
        ) => format!(
            "🐳 Container {name} on {node} is in a restart loop: {restarts} exits within {} min",
            window_secs.div_ceil(60)
        ),
    }
}

/// The last audit-log entries for the owner (`/audit`), newest last, within Telegram's limit.
pub fn audit(lang: Lang, node: &str, lines: &str) -> String {
    const MAX_CHARS: usize = 3800;
    let mut body: Vec<&str> = lines.lines().collect();
    let mut size: usize = body.iter().map(|l| l.chars().count() + 1).sum();
    while size > MAX_CHARS && !body.is_empty() {
        size -= body.remove(0).chars().count() + 1;
    }
    let header = match lang {
        Lang::Ru => format!("📜 Журнал аудита узла {node} (проверен), последние записи:"),
        Lang::En => format!("📜 Audit log of {node} (verified), latest entries:"),
    };
    if body.is_empty() {
        return format!("{header}\n{}", lang.pick("(пусто)", "(empty)"));
    }
    format!("{header}\n\n{}", body.join("\n"))
}

/// The audit log could not be read or does not verify.
pub fn audit_failed(lang: Lang, error: &str) -> String {
    match lang {
        Lang::Ru => format!("⚠️ Журнал аудита не читается или не проходит проверку: {error}"),
        Lang::En => format!("⚠️ The audit log cannot be read or does not verify: {error}"),
    }
}

/// A batch of events as one message; at most `max_lines` are listed.
pub fn notification(lang: Lang, events: &[NetworkEvent], max_lines: usize) -> String {
    let mut text = lang
        .pick("🔔 Изменения в сети:", "🔔 Network changes:")
        .to_owned();
    for event in events.iter().take(max_lines) {
        let _ = write!(text, "\n• {}", event_line(lang, event));
    }
    if events.len() > max_lines {
        let more = events.len() - max_lines;
        let _ = match lang {
            Lang::Ru => write!(text, "\n…и ещё {more}"),
            Lang::En => write!(text, "\n…and {more} more"),
        };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, status: &str, leader: bool) -> MemberView {
        MemberView {
            name: name.into(),
            node_id: libp2p::PeerId::random(),
            addr: "203.0.113.10:4747".into(),
            status: if status == "alive" {
                constella_behaviours::membership::Status::Alive
            } else {
                constella_behaviours::membership::Status::Offline
            },
            leader,
            priority: 100,
            uptime_secs: None,
            fingerprint: None,
            relayed: false,
            connection: None,
        }
    }

    #[test]
    fn the_node_card_shows_the_pq4_fingerprint() {
        let mut p = peer("delta-01", "alive", true);
        assert!(!node_card(Lang::En, &p, false).text.contains("fingerprint"));
        p.fingerprint = Some("12345 ".repeat(11) + "67890");
        let card = node_card(Lang::En, &p, false).text;
        assert!(card.contains("PQ4 fingerprint: 12345 12345"), "{card}");
        assert!(
            node_card(Lang::Ru, &p, false)
                .text
                .contains("Отпечаток PQ4")
        );
    }

    #[test]
    fn list_labels_are_the_seeds() {
        let peers = [
            peer("delta-01", "alive", true),
            peer("echo-02", "alive", false),
            peer("fox-03", "offline", false),
        ];
        let screen = node_list(Lang::Ru, &peers);
        let rows = &screen.keyboard.unwrap().inline_keyboard;
        let labels: Vec<&str> = rows.iter().map(|r| r[0].text.as_str()).collect();
        assert_eq!(
            labels,
            [
                "• delta-01 — Хост",
                "• echo-02",
                "• fox-03 (offline)",
                "📊 Обзор сети (24 ч)",
                "🔄 Обновить"
            ]
        );
        assert_eq!(node_label(Lang::En, &peers[0]), "• delta-01 — Host");
    }

    #[test]
    fn usage_fits_a_phone() {
        let gib = 1024 * 1024 * 1024;
        let stats = NodeStats {
            name: "echo-02".into(),
            node_id: "id".into(),
            cpu_percent: 12.34,
            load_average: [0.15, 0.1, 0.05],
            ram_used_bytes: gib,
            ram_total_bytes: 4 * gib,
            swap_used_bytes: 0,
            swap_total_bytes: 0,
            disks: (0..5)
                .map(|i| crate::stats::DiskUsage {
                    mount: if i == 0 {
                        "/".into()
                    } else {
                        format!("/mnt/{i}")
                    },
                    used_bytes: 20 * gib,
                    total_bytes: 80 * gib,
                })
                .collect(),
            host_uptime_secs: 3 * 86400 + 4 * 3600,
            daemon_uptime_secs: 302,
            daemon_rss_bytes: 15 << 20,
            top_cpu: vec![],
            top_memory: vec![],
            traffic: None,
        };
        let mut busy = stats.clone();
        busy.top_cpu = vec![crate::stats::ProcessUsage {
            pid: 7,
            name: "nginx".into(),
            cpu_percent: 150.0,
            rss_bytes: gib,
        }];
        let busy = usage(Lang::Ru, &busy);
        assert!(busy.ends_with("\nТоп ЦП: nginx 150 %"), "{busy}");
        let text = usage(Lang::Ru, &stats);
        assert_eq!(
            text,
            "📊 echo-02 — потребление\nЦП: 12,3 % · нагрузка 0,15 0,10 0,05\nОЗУ: 25 % — 1,0 ГиБ / 4,0 ГиБ\nДиск /: 25 % — 20,0 ГиБ / 80,0 ГиБ\nДиск /mnt/1: 25 % — 20,0 ГиБ / 80,0 ГиБ\nДиск /mnt/2: 25 % — 20,0 ГиБ / 80,0 ГиБ\n…и ещё 2 дисков\nСервер работает: 3 д 4 ч\nДемон работает: 5 мин 2 с"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 40), "{text}");
        // Russian through and through: no Latin unit or word outside names and paths.
        let latin: Vec<&str> = text
            .lines()
            .skip(1)
            .filter(|l| {
                l.replace("/mnt/", "")
                    .chars()
                    .any(|c| c.is_ascii_alphabetic())
            })
            .collect();
        assert!(latin.is_empty(), "{latin:?}");
        let english = usage(Lang::En, &stats);
        assert!(
            english.contains("\nCPU: 12.3 % · load 0.15 0.10 0.05\nRAM: 25 % — 1.0 GiB / 4.0 GiB"),
            "{english}"
        );
        assert!(
            english.ends_with("\nUptime: 3d 4h (daemon 5m 2s)"),
            "{english}"
        );
    }

    #[test]
    fn notifications_are_capped() {
        let events: Vec<NetworkEvent> = (0..30)
            .map(|i| NetworkEvent::Offline(format!("n{i}")))
            .collect();
        let text = notification(Lang::Ru, &events, 20);
        assert_eq!(text.lines().count(), 22, "{text}");
        assert!(text.ends_with("…и ещё 10"));
    }
}
