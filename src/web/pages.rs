//! The panel's pages, rendered on the server with `maud` (every value escaped), in Russian or
//! English like the bot. The node list uses the bot's own label (`• delta-01 — Хост`,
//! `(offline)`), so the panel and the chat never disagree on how a node is shown.

use constella_behaviours::membership::MemberView;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use constella_behaviours::alerts::{AlertState, Rule};
use constella_behaviours::rpc::ServicesAnswer;

use crate::access::{Action, Rank};
use crate::bot::callback::ChartRange;
use crate::bot::ui::{self, Lang};

/// The stylesheet, embedded.
pub const CSS: &str = include_str!("panel.css");
/// The script (the live node list), embedded.
pub const JS: &str = include_str!("panel.js");

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    pub lang: Lang,
    /// The node serving the panel.
    pub node: &'a str,
    /// The session's CSRF token (`None`: not logged in).
    pub csrf: Option<&'a str>,
    pub rank: Option<Rank>,
}

fn t(lang: Lang, ru: &'static str, en: &'static str) -> &'static str {
    lang.pick(ru, en)
}

/// A whole page: header with navigation, language switch and logout, then `body`.
pub fn page(frame: &Frame<'_>, title: &str, body: Markup) -> Markup {
    let lang = frame.lang;
    html! {
        (DOCTYPE)
        html lang=(match lang { Lang::Ru => "ru", Lang::En => "en" }) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Constella" }
                link rel="stylesheet" href="/static/panel.css";
                script src="/static/panel.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Constella" }
                    span.served { (t(lang, "узел ", "node ")) (frame.node) }
                    @if let Some(csrf) = frame.csrf {
                        nav {
                            a href="/" { (t(lang, "Узлы", "Nodes")) }
                            @if frame.rank.is_some_and(|r| r.allows(Action::Invite)) {
                                a href="/invite" { (t(lang, "Приглашение", "Invite")) }
                            }
                            a href="/alerts" { (t(lang, "Оповещения", "Alerts")) }
                            @if frame.rank.is_some_and(|r| r.allows(Action::Audit)) {
                                a href="/audit" { (t(lang, "Журнал", "Audit log")) }
                            }
                            form.inline method="post" action="/lang" {
                                input type="hidden" name="csrf" value=(csrf);
                                @match lang {
                                    Lang::Ru => button.link name="lang" value="en" { "English" },
                                    Lang::En => button.link name="lang" value="ru" { "Русский" },
                                }
                            }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { (t(lang, "Выйти", "Log out")) }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The live part of the node list: who leads, how many are alive, and every node as a link.
/// Sent again over Server-Sent Events whenever it changes.
pub fn node_list_fragment(lang: Lang, peers: &[MemberView]) -> Markup {
    let alive = peers.iter().filter(|p| p.is_alive()).count();
    let leader = peers.iter().find(|p| p.leader).map(|p| p.name.as_str());
    html! {
        p.summary {
            @match leader {
                Some(name) => { (t(lang, "Хост: ", "Host: ")) b #leader { (name) } },
                None => { (t(lang, "Хост не выбран", "No host")) },
            }
            " · " (t(lang, "в сети ", "alive ")) (alive) (t(lang, " из ", " of ")) (peers.len())
        }
        ul.nodes {
            @for peer in peers {
                li.node.leader[peer.leader].offline[!peer.is_alive()] data-name=(peer.name) {
                    a href={ "/node/" (peer.name) } { (ui::node_label(lang, peer)) }
                }
            }
        }
    }
}

/// `/`: the node list, live.
pub fn nodes(frame: &Frame<'_>, peers: &[MemberView]) -> Markup {
    let lang = frame.lang;
    page(
        frame,
        t(lang, "Узлы", "Nodes"),
        html! {
            h1 { (t(lang, "Узлы сети", "Nodes of the network")) }
            p.muted #live-state { (t(lang, "«Хост» — текущий лидер. Список обновляется сам.", "“Host” is the current leader. The list updates by itself.")) }
            div #nodes data-live="/events" { (node_list_fragment(lang, peers)) }
        },
    )
}

/// What the node page shows besides the member record.
#[derive(Debug)]
pub struct NodeDetails {
    /// The bot's usage text, or why there is none.
    pub usage: Result<String, String>,
    /// The charts (SVG), or why there are none.
    pub charts: Result<Vec<(String, String)>, String>,
    pub range: ChartRange,
    /// The watched systemd units, or why there are none.
    pub services: Result<ServicesAnswer, String>,
}

/// `/node/NAME`.
pub fn node(frame: &Frame<'_>, peer: &MemberView, details: &NodeDetails) -> Markup {
    let lang = frame.lang;
    let rank = frame.rank;
    let can = |action| rank.is_some_and(|r: Rank| r.allows(action));
    page(
        frame,
        &peer.name,
        html! {
            p { a href="/" { "« " (t(lang, "Узлы", "Nodes")) } }
            h1 { (ui::node_label(lang, peer)) }
            dl.card {
                dt { (t(lang, "Адрес", "Address")) } dd { (peer.addr) }
                dt { (t(lang, "Состояние", "Status")) }
                dd { @if peer.is_alive() { (t(lang, "в сети", "alive")) } @else { "offline" } }
                dt { (t(lang, "Хост", "Host")) } dd { @if peer.leader { (t(lang, "да", "yes")) } @else { (t(lang, "нет", "no")) } }
                dt { (t(lang, "Приоритет", "Priority")) } dd { (peer.priority) }
                dt { "Node ID" } dd.mono { (peer.node_id.to_base58()) }
                dt { (t(lang, "Отпечаток PQ4", "PQ4 fingerprint")) }
                dd.mono #fingerprint { (peer.fingerprint.as_deref().unwrap_or("—")) }
            }
            h2 { (t(lang, "Потребление", "Usage")) }
            @match &details.usage {
                Ok(text) => pre.usage { (text) },
                Err(error) => p.error { (error) },
            }
            h2 { (t(lang, "История", "History")) }
            p.ranges {
                @for range in ChartRange::ALL {
                    @if range == details.range {
                        b { (ui::chart_range(lang, range)) }
                    } @else {
                        a href={ "/node/" (peer.name) "?range=" (range.code()) } { (ui::chart_range(lang, range)) }
                    }
                    " "
                }
            }
            @match &details.charts {
                Ok(charts) => {
                    div.charts {
                        @for (title, svg) in charts {
                            figure { figcaption { (title) } (PreEscaped(svg)) }
                        }
                    }
                }
                Err(error) => p.error { (error) },
            }
            (services(lang, &peer.name, &details.services, can(Action::Reboot)))
            @if can(Action::Reboot) || can(Action::Remove) {
                h2 { (t(lang, "Действия", "Actions")) }
                p.actions {
                    @if can(Action::Reboot) {
                        a.button #reboot href={ "/node/" (peer.name) "/reboot" } { (t(lang, "Перезагрузить сервер", "Reboot the server")) }
                    }
                    @if can(Action::Remove) {
                        a.button.danger #remove href={ "/node/" (peer.name) "/remove" } { (t(lang, "Удалить из сети", "Remove from the network")) }
                    }
                }
            }
        },
    )
}

/// What a confirmation page asks to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm<'a> {
    Reboot {
        node: &'a str,
    },
    Remove {
        node: &'a str,
    },
    /// Restart a watched systemd unit of a node.
    Restart {
        node: &'a str,
        unit: &'a str,
    },
    /// Set an alert rule's threshold for the whole network (`percent` 0: off).
    Alert {
        rule: Rule,
        percent: u8,
        previous: u8,
    },
}

impl Confirm<'_> {
    /// The action's name in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Confirm::Reboot { .. } => "reboot",
            Confirm::Remove { .. } => "remove",
            Confirm::Restart { .. } => "restart",
            Confirm::Alert { .. } => "alerts",
        }
    }

    /// What the role must allow.
    pub fn action(self) -> Action {
        match self {
            Confirm::Reboot { .. } | Confirm::Restart { .. } => Action::Reboot,
            Confirm::Remove { .. } => Action::Remove,
            Confirm::Alert { .. } => Action::Alerts,
        }
    }

    /// Where the confirmation posts (the same path as the page, which [`Confirm::Alert`]
    /// carries in its query).
    fn post_to(self) -> String {
        match self {
            Confirm::Reboot { node } => format!("/node/{node}/reboot"),
            Confirm::Remove { node } => format!("/node/{node}/remove"),
            Confirm::Restart { node, unit } => format!("/node/{node}/restart/{unit}"),
            Confirm::Alert { .. } => "/alerts/set".to_owned(),
        }
    }

    /// Where "Cancel" goes.
    fn back(self) -> String {
        match self {
            Confirm::Reboot { node } | Confirm::Remove { node } | Confirm::Restart { node, .. } => {
                format!("/node/{node}")
            }
            Confirm::Alert { .. } => "/alerts".to_owned(),
        }
    }
}

fn percent_text(lang: Lang, percent: u8) -> String {
    if percent == 0 {
        t(lang, "выкл.", "off").to_owned()
    } else {
        format!("{percent} %")
    }
}

/// The confirmation step of an action: a form that posts with the CSRF token.
pub fn confirm(frame: &Frame<'_>, what: Confirm<'_>) -> Markup {
    let lang = frame.lang;
    let csrf = frame.csrf.unwrap_or_default();
    let (question, yes) = match what {
        Confirm::Reboot { node } => (
            match lang {
                Lang::Ru => {
                    format!("Перезагрузить сервер {node}? Он будет недоступен, пока не загрузится.")
                }
                Lang::En => {
                    format!("Reboot the server {node}? It is offline until it boots again.")
                }
            },
            t(lang, "Да, перезагрузить", "Yes, reboot"),
        ),
        Confirm::Remove { node } => (
            match lang {
                Lang::Ru => format!(
                    "Удалить {node} из сети навсегда? Секрет сети сменится; вернуться он сможет только по новому приглашению."
                ),
                Lang::En => format!(
                    "Remove {node} from the network for good? The network secret is rotated; it can come back only with a new invite."
                ),
            },
            t(lang, "Да, удалить", "Yes, remove"),
        ),
        Confirm::Restart { node, unit } => (
            match lang {
                Lang::Ru => format!("Перезапустить службу {unit} на {node}?"),
                Lang::En => format!("Restart the unit {unit} on {node}?"),
            },
            t(lang, "Да, перезапустить", "Yes, restart"),
        ),
        Confirm::Alert {
            rule,
            percent,
            previous,
        } => (
            match lang {
                Lang::Ru => format!(
                    "Порог {} для всех узлов сети: {} (сейчас {})?",
                    rule.as_str(),
                    percent_text(lang, percent),
                    percent_text(lang, previous)
                ),
                Lang::En => format!(
                    "The {} threshold of every node in the network: {} (now {})?",
                    rule.as_str(),
                    percent_text(lang, percent),
                    percent_text(lang, previous)
                ),
            },
            t(lang, "Да, изменить", "Yes, change it"),
        ),
    };
    page(
        frame,
        yes,
        html! {
            h1 { (question) }
            form.confirm method="post" action=(what.post_to()) {
                input type="hidden" name="csrf" value=(csrf);
                @if let Confirm::Alert { rule, percent, .. } = what {
                    input type="hidden" name="rule" value=(rule.as_str());
                    input type="hidden" name="percent" value=(percent);
                }
                button.danger #confirm type="submit" { (yes) }
                " "
                a.button #cancel href=(what.back()) { (t(lang, "Отмена", "Cancel")) }
            }
        },
    )
}

/// `/alerts`: every rule's threshold and the open episodes; the owner gets a form per rule
/// that leads to the confirmation step.
pub fn alerts(frame: &Frame<'_>, state: &AlertState) -> Markup {
    let lang = frame.lang;
    let can_set = frame.rank.is_some_and(|r| r.allows(Action::Alerts));
    let open: Vec<_> = state.episodes.values().filter(|e| e.is_open()).collect();
    page(
        frame,
        t(lang, "Оповещения", "Alerts"),
        html! {
            h1 { (t(lang, "Пороги оповещений", "Alert thresholds")) }
            p.muted { (t(lang, "Для всех узлов сети. Бот Хоста сообщает владельцу один раз, когда порог превышен, и один раз, когда всё снова в норме.", "For every node of the network. The Host's bot tells the owner once when a threshold is crossed and once at recovery.")) }
            table.rules #thresholds {
                @for rule in Rule::ALL {
                    tr data-rule=(rule.as_str()) {
                        th { (rule.as_str()) }
                        td.value { (percent_text(lang, state.percent(rule))) }
                        td {
                            @match (rule.default_hold_secs(), lang) {
                                (0, _) => {},
                                (secs, Lang::Ru) => { "дольше " (secs / 60) " мин" },
                                (secs, Lang::En) => { "for " (secs / 60) " min" },
                            }
                        }
                        @if can_set {
                            td {
                                form.inline method="get" action="/alerts/set" {
                                    input type="hidden" name="rule" value=(rule.as_str());
                                    input.percent type="text" name="percent" inputmode="numeric" size="4"
                                        value=(state.percent(rule)) aria-label=(t(lang, "порог, % или off", "threshold, % or off"));
                                    " "
                                    button.set type="submit" { (t(lang, "Изменить", "Change")) }
                                }
                            }
                        }
                    }
                }
            }
            p #traffic-quota {
                (t(lang, "Месячная квота трафика (rx+tx, на узел): ", "Monthly traffic quota (rx+tx, per node): "))
                @match state.quota_bytes() {
                    0 => { (t(lang, "выкл.", "off")) },
                    bytes => { (crate::output::human_bytes(bytes)) },
                }
            }
            h2 { (t(lang, "Открытые оповещения", "Open alerts")) }
            @if open.is_empty() {
                p #no-alerts { (t(lang, "Открытых оповещений нет.", "No open alerts.")) }
            } @else {
                ul #open-alerts {
                    @for e in open {
                        @if e.rule == Rule::Traffic {
                            li { span.dot { "●" } " " (e.node_name) ": traffic " (crate::output::human_bytes(e.used_bytes)) " > " (crate::output::human_bytes(e.quota_bytes)) }
                        } @else {
                            li { span.dot { "●" } " " (e.node_name) ": " (e.rule.as_str()) " " (e.value) " % > " (e.threshold) " %" }
                        }
                    }
                }
            }
        },
    )
}

/// The node page's services section: each watched unit with its state, and a way to restart
/// it for a role that may.
fn services(
    lang: Lang,
    node: &str,
    units: &Result<ServicesAnswer, String>,
    can_restart: bool,
) -> Markup {
    html! {
        h2 { (t(lang, "Службы", "Services")) }
        @match units {
            Err(error) => p.error #services-error { (error) },
            Ok(answer) => {
                @if !answer.systemd {
                    p.muted { (t(lang, "systemd на узле недоступен.", "systemd is not reachable on the node.")) }
                }
                @if answer.units.is_empty() {
                    p.muted #no-services { (t(lang, "Нет отслеживаемых служб (constella services add УЗЕЛ СЛУЖБА).", "No watched units (constella services add NODE UNIT).")) }
                } @else {
                    ul.services #services {
                        @for unit in &answer.units {
                            li.unit data-unit=(unit.unit) data-state=(unit.active_state) {
                                span.mono { (unit.unit) } " — " (unit.active_state) " (" (unit.sub_state) ")"
                                @if !unit.description.is_empty() { span.muted { " · " (unit.description) } }
                                @if can_restart {
                                    " " a.button.small.restart href={ "/node/" (node) "/restart/" (unit.unit) } { (t(lang, "Перезапустить", "Restart")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A result or an error, with a way back.
pub fn message(frame: &Frame<'_>, title: &str, text: &str, back: &str) -> Markup {
    let lang = frame.lang;
    page(
        frame,
        title,
        html! {
            h1 { (title) }
            p #message { (text) }
            p { a href=(back) { "« " (t(lang, "Назад", "Back")) } }
        },
    )
}

/// `/invite`: the form (the confirmation step) or the new link with its QR code.
pub fn invite(frame: &Frame<'_>, made: Option<(&str, &str, &str)>) -> Markup {
    let lang = frame.lang;
    let csrf = frame.csrf.unwrap_or_default();
    page(
        frame,
        t(lang, "Приглашение", "Invite"),
        html! {
            h1 { (t(lang, "Одноразовая ссылка для нового узла", "A one-time link for a new node")) }
            @match made {
                Some((link, ttl, qr)) => {
                    p { (t(lang, "Действует ", "Valid for ")) (ttl) ". " (t(lang, "На новом сервере:", "On the new server:")) }
                    pre.mono #invite-link { "constella join --server-name NAME --join '" (link) "'" }
                    div.qr { (PreEscaped(qr)) }
                }
                None => {
                    form method="post" action="/invite" {
                        input type="hidden" name="csrf" value=(csrf);
                        label { (t(lang, "Срок действия", "Valid for")) " "
                            select name="ttl" {
                                option value="15m" selected { "15 min" }
                                option value="1h" { "1 h" }
                                option value="24h" { "24 h" }
                            }
                        }
                        " "
                        button #create type="submit" { (t(lang, "Создать ссылку", "Create the link")) }
                    }
                }
            }
        },
    )
}

/// `/audit`: the serving node's audit log, verified.
pub fn audit(frame: &Frame<'_>, lines: Result<String, String>) -> Markup {
    let lang = frame.lang;
    page(
        frame,
        t(lang, "Журнал аудита", "Audit log"),
        html! {
            h1 { (t(lang, "Журнал аудита узла ", "Audit log of node ")) (frame.node) }
            @match lines {
                Ok(lines) => { p.muted { (t(lang, "Проверен; последние записи, старые сверху.", "Verified; the latest entries, oldest first.")) } pre.audit { (lines) } },
                Err(error) => p.error { (t(lang, "Журнал не проходит проверку: ", "The log does not verify: ")) (error) },
            }
        },
    )
}

/// `GET /login?t=…`: a button that uses the link (a preview bot fetching the URL uses nothing).
pub fn login(lang: Lang, node: &str, token: &str) -> Markup {
    let frame = Frame {
        lang,
        node,
        csrf: None,
        rank: None,
    };
    page(
        &frame,
        t(lang, "Вход", "Log in"),
        html! {
            h1 { (t(lang, "Вход в панель", "Log in to the panel")) }
            form method="post" action="/login" {
                input type="hidden" name="t" value=(token);
                button #login type="submit" { (t(lang, "Войти", "Log in")) }
            }
        },
    )
}

/// Not logged in, or the link was refused.
pub fn denied(lang: Lang, node: &str, reason: &str) -> Markup {
    let frame = Frame {
        lang,
        node,
        csrf: None,
        rank: None,
    };
    page(
        &frame,
        t(lang, "Нет доступа", "No access"),
        html! {
            h1 { (t(lang, "Нет доступа", "No access")) }
            p #denied { (reason) }
            p.muted { (t(lang, "Новая ссылка для входа: `constella web-login` на узле сети или /web в боте.", "A new login link: `constella web-login` on a member, or /web in the bot.")) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::membership::Status;

    fn member(name: &str, leader: bool, alive: bool) -> MemberView {
        MemberView {
            name: name.into(),
            node_id: libp2p::PeerId::random(),
            addr: "127.0.0.1:1".into(),
            status: if alive {
                Status::Alive
            } else {
                Status::Offline
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
    fn the_list_uses_the_seed_labels_and_escapes_names() {
        let peers = [
            member("delta-01", true, true),
            member("echo-02", false, true),
            member("fox<03>", false, false),
        ];
        let html = node_list_fragment(Lang::Ru, &peers).into_string();
        assert!(html.contains("• delta-01 — Хост"), "{html}");
        assert!(html.contains("• echo-02<"), "{html}");
        assert!(html.contains("• fox&lt;03&gt; (offline)"), "{html}");
        assert!(html.contains("в сети 2 из 3"), "{html}");
        let english = node_list_fragment(Lang::En, &peers).into_string();
        assert!(english.contains("alive 2 of 3"), "{english}");
    }

    #[test]
    fn the_alerts_page_offers_the_form_to_the_owner_alone() {
        use constella_behaviours::settings::Role;
        let state = AlertState::default().with_threshold(Rule::Ram, 95);
        let frame = |rank| Frame {
            lang: Lang::En,
            node: "alpha",
            csrf: Some("c0ffee"),
            rank: Some(rank),
        };
        let owner = alerts(&frame(Rank::Owner), &state).into_string();
        assert_eq!(
            owner.matches("action=\"/alerts/set\"").count(),
            3,
            "{owner}"
        );
        assert!(owner.contains("95 %") && owner.contains("90 %"), "{owner}");
        assert!(
            owner.contains("Monthly traffic quota (rx+tx, per node): off"),
            "{owner}"
        );
        let mut quota = state.clone();
        quota.merge(&state.with_quota(1 << 30));
        let page = alerts(&frame(Rank::Owner), &quota).into_string();
        assert!(page.contains("per node): 1.0 GiB"), "{page}");
        for role in [Role::Viewer, Role::Operator] {
            let page = alerts(&frame(Rank::Granted(role)), &state).into_string();
            assert!(!page.contains("/alerts/set"), "{page}");
            assert!(page.contains("95 %"), "{page}");
        }
        let confirm = confirm(
            &frame(Rank::Owner),
            Confirm::Alert {
                rule: Rule::Disk,
                percent: 0,
                previous: 90,
            },
        )
        .into_string();
        assert!(
            confirm.contains("disk threshold of every node in the network: off (now 90 %)"),
            "{confirm}"
        );
        assert!(
            confirm.contains("name=\"percent\" value=\"0\""),
            "{confirm}"
        );
    }
}
