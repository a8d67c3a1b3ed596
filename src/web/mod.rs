//! The web panel (`run --web-addr HOST:PORT`): the network at a glance in a browser, served by
//! every node that has it on, from that node's own view, so it does not depend on the leader.
//!
//! - [`tls`]: plain HTTP on a loopback address, HTTPS (a self-signed certificate, its
//!   fingerprint printed with every login link) on any other.
//! - [`auth`]: one-time login links (`constella web-login`, `/web` in the bot), sessions
//!   (HttpOnly, SameSite=Strict cookie; Secure over HTTPS), CSRF tokens, the rate limit.
//! - [`pages`]: server-rendered HTML (maud), Russian or English; [`svg`]: history charts.
//!
//! The panel talks to the node through the daemon's [`Client`], as the bot and the control
//! socket do. The live node list (`/events`, Server-Sent Events) follows the event loop's
//! member watch, which moves only when a name, a status or the leader changed: nothing is
//! polled.

mod actions;
pub mod auth;
mod pages;
mod svg;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use constella_behaviours::membership::MemberView;
use constella_behaviours::rpc::ServicesRequest;
use constella_behaviours::settings::NetworkSettings;
use maud::Markup;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::access::{self, Action, Rank};
use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::bot::callback::ChartRange;
use crate::bot::ui::{self, Lang};
use crate::daemon::Client;
use crate::validate::Ttl;

use auth::{Auth, SessionView};
pub use auth::{Principal, SessionInfo};
use pages::Frame;
use tls::ClientAddr;

/// Longest wait for a node's usage or history on its page.
const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(6);
/// Audit-log entries on `/audit`.
const AUDIT_ENTRIES: usize = 50;
/// `via` of the panel's audit entries.
const VIA_WEB: &str = "web";

/// `run --web-addr`: where to serve, and whether to use TLS on a loopback address too.
#[derive(Debug, Clone, Copy)]
pub struct WebOptions {
    pub addr: SocketAddr,
    /// HTTPS even on loopback (`--web-tls`); any other address always gets HTTPS.
    pub force_tls: bool,
}

/// A login link as `constella web-login --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebLogin {
    /// The one-time link.
    pub link: String,
    /// Unix seconds after which it no longer works.
    pub expires_at: u64,
    /// SHA-256 of the panel's certificate (`AB:CD:…`), when it is served over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// What the node hands the panel.
#[derive(Debug)]
pub struct PanelContext {
    pub client: Client,
    pub audit: AuditLog,
    pub settings: watch::Receiver<NetworkSettings>,
    /// The member list, sent by the event loop when a name, a status or the leader changed.
    pub members: watch::Receiver<Vec<MemberView>>,
    /// The owner named at `init` (the settings may name a later one).
    pub owner_username: String,
    pub node_name: String,
    /// The host other machines reach this node at (from its public address), for links of a
    /// panel bound to 0.0.0.0 / [::].
    pub public_host: String,
}

/// A handle to the running panel: the control socket and the bot make login links and list
/// or revoke sessions through it.
#[derive(Debug, Clone)]
pub struct Panel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    auth: Mutex<Auth>,
    ctx: PanelContext,
    /// `http://127.0.0.1:4780` or `https://…`.
    base_url: String,
    tls: bool,
    fingerprint: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Panel {
    /// A one-time login link for `principal`, valid 5 minutes, audited.
    pub fn login_link(&self, principal: Principal, via: &str) -> WebLogin {
        let token = self
            .inner
            .lock_auth()
            .issue_link(principal.clone(), Instant::now());
        let expires_at = unix_now() + auth::LINK_TTL.as_secs();
        self.inner.ctx.audit.record(
            AuditEvent::new(AuditKind::WebLinkIssued, principal.describe(), via)
                .detail("expires_at", expires_at),
        );
        WebLogin {
            link: format!("{}/login?t={token}", self.inner.base_url),
            expires_at,
            fingerprint: self.inner.fingerprint.clone(),
        }
    }

    /// The live sessions, oldest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.inner.lock_auth().list(Instant::now())
    }

    /// Ends session `id`, audited; an unknown id is an error naming it.
    pub fn revoke(&self, id: &str, by: &str, via: &str) -> Result<SessionInfo, String> {
        let revoked = self
            .inner
            .lock_auth()
            .revoke(id, Instant::now())
            .ok_or_else(|| format!("no web session {id:?} (see `constella web-sessions`)"))?;
        self.inner.ctx.audit.record(
            AuditEvent::new(AuditKind::WebSessionRevoked, by, via)
                .detail("session", revoked.id.clone())
                .detail("session_of", revoked.who.clone()),
        );
        Ok(revoked)
    }
}

impl Inner {
    fn lock_auth(&self) -> std::sync::MutexGuard<'_, Auth> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cookie_name(&self) -> &'static str {
        // `__Host-` binds the cookie to this origin over HTTPS (no Domain, Path=/, Secure).
        if self.tls {
            "__Host-constella_session"
        } else {
            "constella_session"
        }
    }

    /// The rank of a session's principal in the settings as they are now (`None`: no rights
    /// left, e.g. a revoked role).
    fn rank(&self, principal: &Principal) -> Option<Rank> {
        match principal {
            Principal::Cli { .. } => Some(Rank::Owner),
            Principal::Telegram { user_id, username } => {
                let settings = self.ctx.settings.borrow().clone();
                let user = access::TelegramUser {
                    id: *user_id,
                    username: username.as_deref(),
                    is_bot: false,
                };
                match access::access(user, &settings, &self.ctx.owner_username) {
                    access::Access::Known(rank) => Some(rank),
                    access::Access::PinOwner(_) => Some(Rank::Owner),
                    access::Access::PinGranted { role, .. } => Some(Rank::Granted(role)),
                    access::Access::Refused => None,
                }
            }
        }
    }

    fn default_lang(&self) -> Lang {
        Lang::from_code(&self.ctx.settings.borrow().language)
    }

    fn refused(&self, who: &str, action: &str, reason: &str) {
        tracing::warn!(user = %who, action, reason, "web panel refused a request");
        self.ctx.audit.record(
            AuditEvent::new(AuditKind::ActionRefused, who, VIA_WEB)
                .detail("action", action)
                .detail("reason", reason),
        );
    }
}

/// Binds `options.addr` and serves the panel until the returned task is aborted. A taken
/// port or a bad certificate stops `run` at start.
pub async fn start(
    options: WebOptions,
    state_dir: &Path,
    ctx: PanelContext,
) -> Result<(Panel, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen for the web panel on {}", options.addr))?;
    let local = listener
        .local_addr()
        .context("the web panel's socket has no address")?;
    let tls = options.force_tls || !local.ip().is_loopback();
    let host = if local.ip().is_unspecified() {
        ctx.public_host.clone()
    } else {
        match local.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    };
    let certificate = if tls {
        let mut names = vec!["localhost".to_owned(), ctx.public_host.clone()];
        if !local.ip().is_unspecified() {
            names.push(local.ip().to_string());
        }
        names.dedup();
        Some(tls::Certificate::load_or_create(state_dir, &names)?)
    } else {
        None
    };
    let listener = tls::WebListener::new(listener, certificate.as_ref())?;
    let scheme = if tls { "https" } else { "http" };
    let base_url = format!("{scheme}://{host}:{}", local.port());
    tracing::info!(url = %base_url, tls, "web panel listening; `constella web-login` prints a login link");
    let inner = Arc::new(Inner {
        auth: Mutex::new(Auth::default()),
        ctx,
        base_url,
        tls,
        fingerprint: certificate.map(|c| c.fingerprint),
    });
    let app = router(inner.clone());
    let server = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ClientAddr>(),
        )
        .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the web panel stopped");
        }
    });
    Ok((Panel { inner }, server))
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", get(nodes_page))
        .route("/events", get(events))
        .route("/node/{name}", get(node_page))
        .route(
            "/node/{name}/{*action}",
            get(actions::node_confirm).post(actions::node_act),
        )
        .route("/alerts", get(actions::alerts_page))
        .route(
            "/alerts/set",
            get(actions::alert_confirm).post(actions::alert_set),
        )
        .route("/invite", get(invite_form).post(invite))
        .route("/audit", get(audit_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/lang", axum::routing::post(set_lang))
        .route("/static/panel.css", get(css))
        .route("/static/panel.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(inner)
}

/// Every answer: no caching, no framing, scripts and styles from this origin only. The
/// referrer goes to this origin alone (`same-origin`): with `no-referrer` Chromium sends
/// `Origin: null` on the panel's own form posts, which the origin check would refuse.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

// ---- requests ----

/// A request from a live session.
struct Authed {
    session: SessionView,
    rank: Rank,
    lang: Lang,
}

impl Authed {
    fn who(&self) -> String {
        self.session.principal.describe()
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Not logged in (or the session ended): the page that says how to get a link.
struct LoginNeeded(Lang, String);

impl IntoResponse for LoginNeeded {
    fn into_response(self) -> Response {
        let text = self.0.pick(
            "Сессии нет или она закончилась.",
            "No session, or it has ended.",
        );
        (
            StatusCode::UNAUTHORIZED,
            Html(pages::denied(self.0, &self.1, text).into_string()),
        )
            .into_response()
    }
}

impl FromRequestParts<Arc<Inner>> for Authed {
    type Rejection = LoginNeeded;

    async fn from_request_parts(
        parts: &mut Parts,
        inner: &Arc<Inner>,
    ) -> Result<Self, Self::Rejection> {
        let refuse = || LoginNeeded(inner.default_lang(), inner.ctx.node_name.clone());
        let cookie = cookie_value(&parts.headers, inner.cookie_name()).ok_or_else(refuse)?;
        let session = inner
            .lock_auth()
            .session(cookie, Instant::now(), unix_now())
            .ok_or_else(refuse)?;
        let Some(rank) = inner.rank(&session.principal) else {
            // The role was revoked since the login: the session ends with it.
            inner.lock_auth().revoke(&session.id, Instant::now());
            inner.refused(
                &session.principal.describe(),
                "web_session",
                "no role any more",
            );
            return Err(refuse());
        };
        let lang = session.lang.unwrap_or_else(|| inner.default_lang());
        Ok(Authed {
            session,
            rank,
            lang,
        })
    }
}

fn frame<'a>(inner: &'a Inner, authed: &'a Authed) -> Frame<'a> {
    Frame {
        lang: authed.lang,
        node: &inner.ctx.node_name,
        csrf: Some(&authed.session.csrf),
        rank: Some(authed.rank),
    }
}

fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn html_status(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A state-changing request must carry the session's CSRF token, and a browser's `Origin`
/// (when it sends one) must be this panel's: the refusal (audited), or `None` when it may go
/// on.
fn refuse_post(
    inner: &Inner,
    authed: &Authed,
    headers: &HeaderMap,
    csrf: &str,
    action: &str,
) -> Option<Response> {
    let origin_ok = match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let scheme = if inner.tls { "https" } else { "http" };
            origin == format!("{scheme}://{host}")
        }
    };
    let reason = if !origin_ok {
        "request from another origin"
    } else if !Auth::csrf_matches(&authed.session, csrf) {
        "missing or wrong CSRF token"
    } else {
        return None;
    };
    inner.refused(&authed.who(), action, reason);
    let lang = authed.lang;
    Some(html_status(
        StatusCode::FORBIDDEN,
        pages::message(
            &frame(inner, authed),
            lang.pick("Запрос отклонён", "Request refused"),
            &match lang {
                Lang::Ru => format!("Запрос отклонён: {reason}. Ничего не изменено."),
                Lang::En => format!("Request refused: {reason}. Nothing changed."),
            },
            "/",
        ),
    ))
}

/// The role does not allow `action`: audited, 403.
fn not_allowed(inner: &Inner, authed: &Authed, action: &str) -> Response {
    inner.refused(&authed.who(), action, authed.rank.as_str());
    html_status(
        StatusCode::FORBIDDEN,
        pages::message(
            &frame(inner, authed),
            authed.lang.pick("Нет прав", "Not allowed"),
            ui::not_allowed(authed.lang),
            "/",
        ),
    )
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn nodes_page(State(inner): State<Arc<Inner>>, authed: Authed) -> Response {
    match inner.ctx.client.peers().await {
        Ok(peers) => html(pages::nodes(&frame(&inner, &authed), &peers)),
        Err(error) => html_status(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(
                &frame(&inner, &authed),
                "Constella",
                &ui::node_error(authed.lang, &error),
                "/",
            ),
        ),
    }
}

/// `/events`: the node list fragment now and at every change, until the session ends.
async fn events(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    authed: Authed,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let cookie = cookie_value(&headers, inner.cookie_name())
        .unwrap_or_default()
        .to_owned();
    // The list as it is now first, then at every change.
    let mut members = inner.ctx.members.clone();
    members.mark_changed();
    let lang = authed.lang;
    let stream = futures::stream::unfold(
        (members, inner, cookie),
        move |(mut members, inner, cookie)| async move {
            members.changed().await.ok()?;
            // A revoked or expired session gets nothing more.
            inner
                .lock_auth()
                .session(&cookie, Instant::now(), unix_now())?;
            let fragment =
                pages::node_list_fragment(lang, &members.borrow_and_update()).into_string();
            let event = Event::default().event("nodes").data(fragment);
            Some((Ok(event), (members, inner, cookie)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn find_member(inner: &Inner, authed: &Authed, name: &str) -> Result<MemberView, Response> {
    let peers = inner.ctx.client.peers().await.map_err(|error| {
        html_status(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(
                &frame(inner, authed),
                "Constella",
                &ui::node_error(authed.lang, &error),
                "/",
            ),
        )
    })?;
    peers.into_iter().find(|p| p.name == name).ok_or_else(|| {
        html_status(
            StatusCode::NOT_FOUND,
            pages::message(
                &frame(inner, authed),
                authed.lang.pick("Нет такого узла", "No such node"),
                &match authed.lang {
                    Lang::Ru => format!("В сети нет узла {name}."),
                    Lang::En => format!("The network has no node {name}."),
                },
                "/",
            ),
        )
    })
}

async fn node_page(
    State(inner): State<Arc<Inner>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<RangeQuery>,
    authed: Authed,
) -> Response {
    if !authed.rank.allows(Action::Usage) {
        return not_allowed(&inner, &authed, Action::Usage.as_str());
    }
    let peer = match find_member(&inner, &authed, &name).await {
        Ok(peer) => peer,
        Err(response) => return response,
    };
    let range = query
        .range
        .as_deref()
        .and_then(ChartRange::from_code)
        .unwrap_or(ChartRange::Hour);
    let lang = authed.lang;
    let details = if peer.is_alive() {
        let client = &inner.ctx.client;
        let metrics = [
            "cpu_percent",
            "ram_used_bytes",
            "ram_total_bytes",
            "disk_used_percent:/",
            "net_rx_bytes_per_sec",
            "net_tx_bytes_per_sec",
        ]
        .map(str::to_owned)
        .to_vec();
        let by = authed.session.principal.requester();
        let (stats, history, services) = tokio::join!(
            tokio::time::timeout(NODE_CALL_TIMEOUT, client.stats(&name)),
            tokio::time::timeout(
                NODE_CALL_TIMEOUT,
                client.history(&name, metrics, range.secs())
            ),
            tokio::time::timeout(
                NODE_CALL_TIMEOUT,
                client.services(&name, ServicesRequest::List, by)
            ),
        );
        let timed_out = || lang.pick("узел не ответил вовремя", "the node did not answer in time");
        pages::NodeDetails {
            usage: match stats {
                Ok(Ok(stats)) => Ok(ui::usage(lang, &stats)),
                Ok(Err(error)) => Err(ui::node_error(lang, &error)),
                Err(_) => Err(timed_out().to_owned()),
            },
            charts: match history {
                Ok(Ok(history)) => Ok(charts(lang, &history, range)),
                Ok(Err(error)) => Err(ui::node_error(lang, &error)),
                Err(_) => Err(timed_out().to_owned()),
            },
            range,
            services: services.unwrap_or_else(|_| Err(timed_out().to_owned())),
        }
    } else {
        let offline = ui::toast_offline(lang, &peer.name);
        pages::NodeDetails {
            usage: Err(offline.clone()),
            charts: Err(offline.clone()),
            range,
            services: Err(offline),
        }
    };
    html(pages::node(&frame(&inner, &authed), &peer, &details))
}

/// CPU, RAM, disk `/` and traffic over `range`, as the bot's PNG chart has them.
fn charts(
    lang: Lang,
    history: &constella_behaviours::rpc::History,
    range: ChartRange,
) -> Vec<(String, String)> {
    let to = history
        .series
        .iter()
        .flat_map(|s| s.points.last().map(|p| p.0))
        .max()
        .unwrap_or_else(unix_now);
    let span = (to.saturating_sub(range.secs()), to);
    let percent = |v: f64| format!("{v:.0} %");
    let rate = |v: f64| format!("{}/s", crate::output::human_bytes(v as u64));
    let ram = svg::percent_of(
        &svg::series(history, "ram_used_bytes"),
        &svg::series(history, "ram_total_bytes"),
    );
    let line = |label, colour, points| svg::Line {
        label,
        colour,
        points,
    };
    let titles = ui::chart_titles(lang);
    vec![
        (
            titles.cpu.to_owned(),
            svg::chart(
                titles.cpu,
                &[line("cpu", "#3565c8", svg::series(history, "cpu_percent"))],
                span,
                Some(100.0),
                percent,
            ),
        ),
        (
            titles.ram.to_owned(),
            svg::chart(
                titles.ram,
                &[line("ram", "#7a3fb0", ram)],
                span,
                Some(100.0),
                percent,
            ),
        ),
        (
            titles.disk.to_owned(),
            svg::chart(
                titles.disk,
                &[line(
                    "/",
                    "#b36b00",
                    svg::series(history, "disk_used_percent:/"),
                )],
                span,
                Some(100.0),
                percent,
            ),
        ),
        (
            titles.traffic.to_owned(),
            svg::chart(
                titles.traffic,
                &[
                    line(
                        "rx",
                        "#2a8a4a",
                        svg::series(history, "net_rx_bytes_per_sec"),
                    ),
                    line(
                        "tx",
                        "#c23b3b",
                        svg::series(history, "net_tx_bytes_per_sec"),
                    ),
                ],
                span,
                None,
                rate,
            ),
        ),
    ]
}

async fn invite_form(State(inner): State<Arc<Inner>>, authed: Authed) -> Response {
    if !authed.rank.allows(Action::Invite) {
        return not_allowed(&inner, &authed, Action::Invite.as_str());
    }
    html(pages::invite(&frame(&inner, &authed), None))
}

#[derive(Debug, Deserialize)]
struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ttl: String,
}

async fn invite(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    authed: Authed,
    Form(form): Form<InviteForm>,
) -> Response {
    if let Some(response) = refuse_post(&inner, &authed, &headers, &form.csrf, "invite") {
        return response;
    }
    if !authed.rank.allows(Action::Invite) {
        return not_allowed(&inner, &authed, Action::Invite.as_str());
    }
    let lang = authed.lang;
    let ttl = match form.ttl.parse::<Ttl>() {
        Ok(ttl) => ttl,
        Err(error) => {
            return html_status(
                StatusCode::BAD_REQUEST,
                pages::message(
                    &frame(&inner, &authed),
                    lang.pick("Приглашение", "Invite"),
                    &error,
                    "/invite",
                ),
            );
        }
    };
    match inner.ctx.client.invite(ttl).await {
        Ok(invite) => {
            inner.ctx.audit.record(
                AuditEvent::new(AuditKind::InviteIssued, authed.who(), VIA_WEB)
                    .detail("ttl", invite.ttl.clone())
                    .detail("expires_at", invite.expires_at),
            );
            let qr = qr_svg(&invite.link).unwrap_or_default();
            html(pages::invite(
                &frame(&inner, &authed),
                Some((&invite.link, &invite.ttl, &qr)),
            ))
        }
        Err(error) => html_status(
            StatusCode::BAD_GATEWAY,
            pages::message(
                &frame(&inner, &authed),
                lang.pick("Приглашение", "Invite"),
                &ui::node_error(lang, &error),
                "/invite",
            ),
        ),
    }
}

/// The link as a QR code (SVG), for a phone's camera.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
    )
}

async fn audit_page(State(inner): State<Arc<Inner>>, authed: Authed) -> Response {
    if !authed.rank.allows(Action::Audit) {
        return not_allowed(&inner, &authed, Action::Audit.as_str());
    }
    let lines = inner
        .ctx
        .audit
        .recent(AUDIT_ENTRIES)
        .await
        .map(|events| crate::output::audit_lines(&events))
        .map_err(|error| error.to_string());
    inner.ctx.audit.record(
        AuditEvent::new(AuditKind::AuditViewed, authed.who(), VIA_WEB)
            .detail("entries", AUDIT_ENTRIES),
    );
    html(pages::audit(&frame(&inner, &authed), lines))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    t: String,
}

/// A refused link: audited (up to the rate limit, then once), 403 or 429.
fn link_refused(inner: &Inner, from: IpAddr, failure: auth::Failure) -> Response {
    let lang = inner.default_lang();
    if failure.audit {
        let mut event = AuditEvent::new(AuditKind::WebLoginRefused, format!("web:{from}"), VIA_WEB)
            .detail("reason", failure.refusal.as_str());
        if failure.limit_reached {
            event = event.detail(
                "rate_limited",
                format!(
                    "{} bad links: this address is refused for {} min",
                    auth::MAX_FAILURES,
                    auth::FAILURE_WINDOW.as_secs() / 60
                ),
            );
        }
        inner.ctx.audit.record(event);
        tracing::warn!(%from, reason = failure.refusal.as_str(), "web panel refused a login link");
    }
    let (status, text) = match failure.refusal {
        auth::Refusal::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            lang.pick(
                "Слишком много неверных ссылок с этого адреса; попробуйте позже.",
                "Too many bad links from this address; try again later.",
            ),
        ),
        auth::Refusal::Replayed => (
            StatusCode::FORBIDDEN,
            lang.pick(
                "Эта ссылка уже использована.",
                "This link was used already.",
            ),
        ),
        auth::Refusal::Expired => (
            StatusCode::FORBIDDEN,
            lang.pick("Срок ссылки истёк.", "This link has expired."),
        ),
        auth::Refusal::Unknown => (
            StatusCode::FORBIDDEN,
            lang.pick("Неизвестная ссылка.", "Unknown link."),
        ),
    };
    html_status(status, pages::denied(lang, &inner.ctx.node_name, text))
}

async fn login_page(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(ClientAddr(from)): ConnectInfo<ClientAddr>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let checked = inner
        .lock_auth()
        .check_link(&query.t, from.ip(), Instant::now());
    match checked {
        Ok(()) => html(pages::login(
            inner.default_lang(),
            &inner.ctx.node_name,
            &query.t,
        )),
        Err(failure) => link_refused(&inner, from.ip(), failure),
    }
}

async fn login(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(ClientAddr(from)): ConnectInfo<ClientAddr>,
    Form(form): Form<LoginQuery>,
) -> Response {
    let redeemed = inner
        .lock_auth()
        .redeem(&form.t, from.ip(), Instant::now(), unix_now());
    let (cookie, session) = match redeemed {
        Ok(pair) => pair,
        Err(failure) => return link_refused(&inner, from.ip(), failure),
    };
    let who = session.principal.describe();
    tracing::info!(user = %who, %from, session = %session.id, "web panel login");
    inner.ctx.audit.record(
        AuditEvent::new(AuditKind::WebLogin, who, VIA_WEB)
            .detail("session", session.id.clone())
            .detail("address", from.ip().to_string()),
    );
    let secure = if inner.tls { "; Secure" } else { "" };
    let set_cookie = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict{secure}",
        inner.cookie_name()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    authed: Authed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(response) = refuse_post(&inner, &authed, &headers, &form.csrf, "logout") {
        return response;
    }
    inner.lock_auth().revoke(&authed.session.id, Instant::now());
    let expired = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        inner.cookie_name(),
        if inner.tls { "; Secure" } else { "" }
    );
    let mut response = html(pages::denied(
        authed.lang,
        &inner.ctx.node_name,
        authed.lang.pick("Вы вышли.", "You are logged out."),
    ));
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct LangForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: String,
}

async fn set_lang(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    authed: Authed,
    Form(form): Form<LangForm>,
) -> Response {
    if let Some(response) = refuse_post(&inner, &authed, &headers, &form.csrf, "language") {
        return response;
    }
    let lang = if form.lang == "en" {
        Lang::En
    } else {
        Lang::Ru
    };
    inner.lock_auth().set_lang(&authed.session.id, lang);
    Redirect::to("/").into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::JS,
    )
        .into_response()
}

async fn not_found(State(inner): State<Arc<Inner>>) -> Response {
    let lang = inner.default_lang();
    html_status(
        StatusCode::NOT_FOUND,
        pages::denied(
            lang,
            &inner.ctx.node_name,
            lang.pick("Нет такой страницы.", "No such page."),
        ),
    )
}
