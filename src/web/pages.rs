//! The panel's pages, rendered on the server with `maud` (every value escaped), in Russian or
//! English like the bot. The node list uses the bot's own label (`• delta-01 — Хост`,
//! `(offline)`), so the panel and the chat never disagree on how a node is shown.

use constella_behaviours::membership::MemberView;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::access::Rank;
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
                            @if frame.rank.is_some_and(|r| r.allows(crate::access::Action::Invite)) {
                                a href="/invite" { (t(lang, "Приглашение", "Invite")) }
                            }
                            @if frame.rank.is_some_and(|r| r.allows(crate::access::Action::Audit)) {
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
            @if can(crate::access::Action::Reboot) || can(crate::access::Action::Remove) {
                h2 { (t(lang, "Действия", "Actions")) }
                p.actions {
                    @if can(crate::access::Action::Reboot) {
                        a.button #reboot href={ "/node/" (peer.name) "/reboot" } { (t(lang, "Перезагрузить сервер", "Reboot the server")) }
                    }
                    @if can(crate::access::Action::Remove) {
                        a.button.danger #remove href={ "/node/" (peer.name) "/remove" } { (t(lang, "Удалить из сети", "Remove from the network")) }
                    }
                }
            }
        },
    )
}

/// Which action a confirmation page is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Reboot,
    Remove,
}

/// The confirmation step of a reboot or a removal: a form that posts with the CSRF token.
pub fn confirm(frame: &Frame<'_>, name: &str, what: Confirm) -> Markup {
    let lang = frame.lang;
    let csrf = frame.csrf.unwrap_or_default();
    let (question, yes, path) = match what {
        Confirm::Reboot => (
            match lang {
                Lang::Ru => {
                    format!("Перезагрузить сервер {name}? Он будет недоступен, пока не загрузится.")
                }
                Lang::En => {
                    format!("Reboot the server {name}? It is offline until it boots again.")
                }
            },
            t(lang, "Да, перезагрузить", "Yes, reboot"),
            "reboot",
        ),
        Confirm::Remove => (
            match lang {
                Lang::Ru => format!(
                    "Удалить {name} из сети навсегда? Секрет сети сменится; вернуться он сможет только по новому приглашению."
                ),
                Lang::En => format!(
                    "Remove {name} from the network for good? The network secret is rotated; it can come back only with a new invite."
                ),
            },
            t(lang, "Да, удалить", "Yes, remove"),
            "remove",
        ),
    };
    page(
        frame,
        yes,
        html! {
            h1 { (question) }
            form.confirm method="post" action={ "/node/" (name) "/" (path) } {
                input type="hidden" name="csrf" value=(csrf);
                button.danger #confirm type="submit" { (yes) }
                " "
                a.button #cancel href={ "/node/" (name) } { (t(lang, "Отмена", "Cancel")) }
            }
        },
    )
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
}
