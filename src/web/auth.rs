//! Who is logged in to the web panel: one-time login links, sessions, CSRF tokens and the rate
//! limit on failed links. Plain data behind one mutex in [`super::Panel`]; no I/O here, so the
//! rules are unit-tested with a clock the tests move.
//!
//! - A login link carries 32 random bytes; only their SHA-256 is kept, for 5 minutes. It is
//!   redeemed once: a second use is refused as a replay (the hash is remembered for 30 min).
//! - A session is a 32-byte random cookie (again only its hash is kept), a public id of 8 hex
//!   digits for `constella web-sessions`, and a CSRF token every state-changing form carries.
//!   It ends after 12 h without a request, or when revoked.
//! - A client address that presented 5 bad links within 10 minutes is refused every link
//!   (even a good one) until the window passes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::bot::ui::Lang;

/// How long a login link is valid.
pub const LINK_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a redeemed link is remembered, to tell a replay from a made-up link.
const USED_MEMORY: Duration = Duration::from_secs(30 * 60);
/// A session without a request for this long is over.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Bad links one client address may present per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Most links waiting to be used at once (a loop of `web-login` cannot grow memory).
const MAX_PENDING_LINKS: usize = 256;
/// Most sessions at once; the least recently used goes first.
const MAX_SESSIONS: usize = 256;

/// Who a link or a session is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Principal {
    /// `constella web-login` on a member (root on a server of the network): the owner's rights.
    Cli { who: String },
    /// `/web` in the bot: what this Telegram account's role allows, decided again at every
    /// request from the network settings as they are then.
    Telegram {
        user_id: u64,
        username: Option<String>,
    },
}

impl Principal {
    /// Who asks, for a node that checks the role itself (a restart on another member): the
    /// CLI's owner rights, or the Telegram account, whose role the target looks up.
    pub fn requester(&self) -> constella_behaviours::rpc::Requester {
        use constella_behaviours::rpc::Requester;
        match self {
            Principal::Cli { who } => Requester::Cli {
                user: format!("web panel, {}", who.strip_prefix("cli:").unwrap_or(who)),
            },
            Principal::Telegram { user_id, username } => Requester::Telegram {
                user_id: *user_id,
                username: username.clone(),
            },
        }
    }

    /// How it appears in the audit log: `cli:root (uid 0)` or `telegram:42 (@name)`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Cli { who } => who.clone(),
            Principal::Telegram {
                user_id,
                username: Some(name),
            } => format!("telegram:{user_id} (@{name})"),
            Principal::Telegram {
                user_id,
                username: None,
            } => format!("telegram:{user_id}"),
        }
    }
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Never issued here (or forgotten after 30 min).
    Unknown,
    /// Already used.
    Replayed,
    /// Older than 5 minutes.
    Expired,
    /// This address presented too many bad links.
    RateLimited,
}

impl Refusal {
    /// The reason in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown link",
            Refusal::Replayed => "link already used",
            Refusal::Expired => "link expired",
            Refusal::RateLimited => "too many bad links from this address",
        }
    }
}

/// What happened to a bad link, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub refusal: Refusal,
    /// This failure is the one that hit the limit (audited once per window; later refusals
    /// in the window are counted, not audited).
    pub limit_reached: bool,
    /// Audit this one (every failure up to the limit, then only the first refusal).
    pub audit: bool,
}

/// A session as `constella web-sessions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// 8 hex digits; `web-sessions revoke ID`.
    pub id: String,
    /// `cli:…` or `telegram:…`.
    pub who: String,
    /// The client address at login.
    pub addr: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last request.
    pub last_seen_at: u64,
    /// Seconds until it ends unless used.
    pub idle_expires_in_secs: u64,
}

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub principal: Principal,
    pub csrf: String,
    pub lang: Option<Lang>,
}

#[derive(Debug)]
struct PendingLink {
    principal: Principal,
    expires: Instant,
}

#[derive(Debug)]
struct Session {
    id: String,
    principal: Principal,
    csrf: String,
    addr: IpAddr,
    created_at: u64,
    last_seen: Instant,
    last_seen_at: u64,
    lang: Option<Lang>,
}

#[derive(Debug)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Links, sessions and failure counts of one panel.
#[derive(Debug, Default)]
pub struct Auth {
    links: HashMap<[u8; 32], PendingLink>,
    used: HashMap<[u8; 32], Instant>,
    sessions: HashMap<[u8; 32], Session>,
    failures: HashMap<IpAddr, Failures>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::fill(&mut raw[..]);
    hex::encode(raw)
}

impl Auth {
    /// A new one-time link token for `principal`, valid for [`LINK_TTL`].
    pub fn issue_link(&mut self, principal: Principal, now: Instant) -> String {
        self.forget_old(now);
        if self.links.len() >= MAX_PENDING_LINKS
            && let Some(oldest) = self
                .links
                .iter()
                .min_by_key(|(_, link)| link.expires)
                .map(|(hash, _)| *hash)
        {
            self.links.remove(&oldest);
        }
        let token = random_hex(32);
        self.links.insert(
            digest(&token),
            PendingLink {
                principal,
                expires: now + LINK_TTL,
            },
        );
        token
    }

    /// Whether `token` would be accepted now, without using it (the page with the login
    /// button). A bad token counts as a failure like [`Auth::redeem`].
    pub fn check_link(&mut self, token: &str, from: IpAddr, now: Instant) -> Result<(), Failure> {
        self.verdict(token, from, now).map(|_| ())
    }

    /// Uses `token`: a new session for its principal, and the session cookie.
    pub fn redeem(
        &mut self,
        token: &str,
        from: IpAddr,
        now: Instant,
        unix_now: u64,
    ) -> Result<(String, SessionView), Failure> {
        let hash = self.verdict(token, from, now)?;
        let link = self.links.remove(&hash).ok_or(Failure {
            refusal: Refusal::Unknown,
            limit_reached: false,
            audit: true,
        })?;
        self.used.insert(hash, now);
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(hash, _)| *hash)
        {
            self.sessions.remove(&oldest);
        }
        let cookie = random_hex(32);
        let session = Session {
            id: random_hex(4),
            principal: link.principal,
            csrf: random_hex(32),
            addr: from,
            created_at: unix_now,
            last_seen: now,
            last_seen_at: unix_now,
            lang: None,
        };
        let view = view(&session);
        self.sessions.insert(digest(&cookie), session);
        Ok((cookie, view))
    }

    fn verdict(&mut self, token: &str, from: IpAddr, now: Instant) -> Result<[u8; 32], Failure> {
        self.forget_old(now);
        if let Some(failures) = self.failures.get(&from)
            && failures.count >= MAX_FAILURES
        {
            return Err(Failure {
                refusal: Refusal::RateLimited,
                limit_reached: false,
                audit: false,
            });
        }
        let hash = digest(token.trim());
        let refusal = match self.links.get(&hash) {
            Some(link) if link.expires > now => return Ok(hash),
            Some(_) => Refusal::Expired,
            None if self.used.contains_key(&hash) => Refusal::Replayed,
            None => Refusal::Unknown,
        };
        let failures = self.failures.entry(from).or_insert(Failures {
            since: now,
            count: 0,
        });
        failures.count += 1;
        Err(Failure {
            refusal,
            limit_reached: failures.count == MAX_FAILURES,
            audit: true,
        })
    }

    /// The session of `cookie`, if it is live; its last use becomes now.
    pub fn session(&mut self, cookie: &str, now: Instant, unix_now: u64) -> Option<SessionView> {
        let hash = digest(cookie);
        let session = self.sessions.get_mut(&hash)?;
        if now.duration_since(session.last_seen) >= SESSION_IDLE {
            self.sessions.remove(&hash);
            return None;
        }
        session.last_seen = now;
        session.last_seen_at = unix_now;
        Some(view(session))
    }

    /// Whether `presented` is the CSRF token of the session `id` (constant time).
    pub fn csrf_matches(session: &SessionView, presented: &str) -> bool {
        !presented.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// Sets a session's language.
    pub fn set_lang(&mut self, id: &str, lang: Lang) {
        if let Some(session) = self.sessions.values_mut().find(|s| s.id == id) {
            session.lang = Some(lang);
        }
    }

    /// Ends the session `id` (the public id, or the whole cookie's session); returns it.
    pub fn revoke(&mut self, id: &str, now: Instant) -> Option<SessionInfo> {
        let hash = self
            .sessions
            .iter()
            .find(|(_, s)| s.id == id)
            .map(|(hash, _)| *hash)?;
        self.sessions.remove(&hash).map(|s| info(&s, now))
    }

    /// Live sessions, oldest first.
    pub fn list(&mut self, now: Instant) -> Vec<SessionInfo> {
        self.forget_old(now);
        let mut list: Vec<SessionInfo> = self.sessions.values().map(|s| info(s, now)).collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        list
    }

    fn forget_old(&mut self, now: Instant) {
        self.links
            .retain(|_, link| now.saturating_duration_since(link.expires) < USED_MEMORY);
        self.used
            .retain(|_, at| now.saturating_duration_since(*at) < USED_MEMORY);
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_seen) < SESSION_IDLE);
        self.failures
            .retain(|_, f| now.saturating_duration_since(f.since) < FAILURE_WINDOW);
    }
}

fn view(session: &Session) -> SessionView {
    SessionView {
        id: session.id.clone(),
        principal: session.principal.clone(),
        csrf: session.csrf.clone(),
        lang: session.lang,
    }
}

fn info(session: &Session, now: Instant) -> SessionInfo {
    SessionInfo {
        id: session.id.clone(),
        who: session.principal.describe(),
        addr: session.addr.to_string(),
        created_at: session.created_at,
        last_seen_at: session.last_seen_at,
        idle_expires_in_secs: SESSION_IDLE
            .saturating_sub(now.saturating_duration_since(session.last_seen))
            .as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Principal {
        Principal::Cli {
            who: "cli:root (uid 0)".into(),
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_link_works_once_then_is_a_replay() {
        let mut auth = Auth::default();
        let t0 = Instant::now();
        let token = auth.issue_link(cli(), t0);
        assert!(
            auth.check_link(&token, HOME, t0).is_ok(),
            "peeking does not use it"
        );
        let (cookie, session) = auth.redeem(&token, HOME, t0, 100).unwrap();
        assert_eq!(session.principal, cli());
        let again = auth.redeem(&token, HOME, t0, 100).unwrap_err();
        assert_eq!(again.refusal, Refusal::Replayed);
        assert!(again.audit);
        let unknown = auth.redeem("00", HOME, t0, 100).unwrap_err();
        assert_eq!(unknown.refusal, Refusal::Unknown);
        let live = auth.session(&cookie, t0, 100).unwrap();
        assert_eq!(live.id, session.id);
        assert!(auth.session("not-a-cookie", t0, 100).is_none());
    }

    #[test]
    fn links_expire_after_five_minutes() {
        let mut auth = Auth::default();
        let t0 = Instant::now();
        let token = auth.issue_link(cli(), t0);
        let late = auth
            .redeem(&token, HOME, t0 + LINK_TTL + Duration::from_secs(1), 0)
            .unwrap_err();
        assert_eq!(late.refusal, Refusal::Expired);
        let fresh = auth.issue_link(cli(), t0);
        assert!(
            auth.redeem(&fresh, HOME, t0 + LINK_TTL - Duration::from_secs(1), 0)
                .is_ok()
        );
    }

    #[test]
    fn five_bad_links_lock_the_address_out_for_the_window() {
        let mut auth = Auth::default();
        let t0 = Instant::now();
        let good = auth.issue_link(cli(), t0);
        for i in 1..=MAX_FAILURES {
            let failure = auth.redeem(&format!("bad{i}"), HOME, t0, 0).unwrap_err();
            assert_eq!(failure.limit_reached, i == MAX_FAILURES);
            assert!(failure.audit);
        }
        let locked = auth.redeem(&good, HOME, t0, 0).unwrap_err();
        assert_eq!(locked.refusal, Refusal::RateLimited);
        assert!(
            !locked.audit,
            "refusals past the limit are counted, not audited"
        );
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let elsewhere = auth.issue_link(cli(), t0);
        assert!(auth.redeem(&elsewhere, other, t0, 0).is_ok());
        // After the window the address may try again (the good link is still valid).
        let later = t0 + FAILURE_WINDOW + Duration::from_secs(1);
        let fresh = auth.issue_link(cli(), later);
        assert!(auth.redeem(&fresh, HOME, later, 0).is_ok());
    }

    #[test]
    fn sessions_end_after_twelve_idle_hours_or_when_revoked() {
        let mut auth = Auth::default();
        let t0 = Instant::now();
        let token = auth.issue_link(cli(), t0);
        let (cookie, session) = auth.redeem(&token, HOME, t0, 0).unwrap();
        let almost = t0 + SESSION_IDLE - Duration::from_secs(1);
        assert!(
            auth.session(&cookie, almost, 0).is_some(),
            "use keeps it alive"
        );
        assert!(
            auth.session(&cookie, almost + SESSION_IDLE - Duration::from_secs(1), 0)
                .is_some()
        );
        assert!(
            auth.session(&cookie, almost + SESSION_IDLE * 2, 0)
                .is_none(),
            "idle for 12 h"
        );
        let token = auth.issue_link(cli(), t0);
        let (cookie, session2) = auth.redeem(&token, HOME, t0, 5).unwrap();
        assert_ne!(session.id, session2.id);
        assert_eq!(auth.list(t0).len(), 1);
        let revoked = auth.revoke(&session2.id, t0).unwrap();
        assert_eq!(revoked.who, "cli:root (uid 0)");
        assert!(auth.session(&cookie, t0, 0).is_none());
        assert!(auth.revoke(&session2.id, t0).is_none());
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let mut auth = Auth::default();
        let t0 = Instant::now();
        let token = auth.issue_link(cli(), t0);
        let (_, session) = auth.redeem(&token, HOME, t0, 0).unwrap();
        assert!(Auth::csrf_matches(&session, &session.csrf.clone()));
        assert!(!Auth::csrf_matches(&session, ""));
        assert!(!Auth::csrf_matches(&session, &session.csrf[1..]));
    }
}
