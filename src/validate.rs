//! Validated forms of what operators type: server names, owner usernames, addresses, TTLs.
//!
//! clap parses raw strings; these types turn them into values that are known to be good, with a
//! one-line error that names what is wrong.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// A server name: a DNS label (1–63 lowercase letters, digits or hyphens, no hyphen at either end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName(String);

impl FromStr for ServerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() || s.len() > 63 || !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(format!(
                "invalid server name {s:?}: use 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl ServerName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Telegram username with its `@`: `@` then 5–32 letters, digits or underscores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerUsername(String);

/// Whether `s` is `@` followed by 5–32 letters, digits or underscores.
fn is_telegram_username(s: &str) -> bool {
    let body = s.strip_prefix('@').unwrap_or("");
    (5..=32).contains(&body.len()) && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl FromStr for OwnerUsername {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !is_telegram_username(s) {
            return Err(format!(
                "invalid owner {s:?}: a Telegram username is @ followed by 5-32 letters, digits or _"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Any Telegram username (`access grant @user`), with the same rule as [`OwnerUsername`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl FromStr for Username {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !is_telegram_username(s) {
            return Err(format!(
                "invalid Telegram username {s:?}: use @ followed by 5-32 letters, digits or _"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl Username {
    /// The username with its `@`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl OwnerUsername {
    /// The username with its `@`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `host:port`, where host is an IPv4 address, a bracketed IPv6 address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host, without brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid address {s:?}: expected HOST:PORT, e.g. 203.0.113.10:4747");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        // Digits only: `u16::from_str` also takes a sign ("+4747").
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            inner.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            inner.to_owned()
        } else {
            let is_ip = host.parse::<std::net::Ipv4Addr>().is_ok();
            let is_dns = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !is_ip && !is_dns {
                return Err(bad());
            }
            host.to_owned()
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// The TCP multiaddr of this address (`/ip4`, `/ip6` or `/dns`).
    pub fn to_multiaddr(&self) -> Multiaddr {
        let host = match self.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => Protocol::Ip4(ip),
            Ok(std::net::IpAddr::V6(ip)) => Protocol::Ip6(ip),
            Err(_) => Protocol::Dns(self.host.clone().into()),
        };
        Multiaddr::empty().with(host).with(Protocol::Tcp(self.port))
    }
}

/// A Telegram bot token as @BotFather gives it: the bot's numeric id, `:`, and a secret of
/// letters, digits, `_` and `-`. A secret: `Debug` and errors never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(zeroize::Zeroizing<String>);

impl FromStr for BotToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let ok = s.split_once(':').is_some_and(|(id, secret)| {
            !id.is_empty()
                && id.len() <= 20
                && id.bytes().all(|b| b.is_ascii_digit())
                && (20..=128).contains(&secret.len())
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok {
            // The text itself is not repeated: it may be a real token with a typo.
            return Err(
                "invalid bot token: expected <bot id>:<secret> as given by @BotFather (digits, a colon, then 20-128 letters, digits, _ or -)"
                    .to_owned(),
            );
        }
        Ok(Self(zeroize::Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BotToken(<redacted>)")
    }
}

impl BotToken {
    /// The token text, for the state file and the Bot API client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret as typed on the command line, checked later: clap repeats a value it refuses in
/// its error message, so secrets are accepted as text here and validated without echo.
#[derive(Clone)]
pub struct SecretArg(zeroize::Zeroizing<String>);

impl FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(zeroize::Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(<redacted>)")
    }
}

impl SecretArg {
    /// Validates the text as a bot token.
    pub fn bot_token(&self) -> Result<BotToken, String> {
        self.0.parse()
    }
}

/// The base URL of a Bot API server: `http://` or `https://`, with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl(url::Url);

impl FromStr for ApiUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid Telegram API URL {s:?}: {why}");
        let mut url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("use http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed"));
        }
        // teloxide appends `/bot<token>/<Method>` as path segments: a trailing slash after a
        // prefix would leave an empty segment (`/prefix//bot…`).
        if url.path().len() > 1 && url.path().ends_with('/') {
            let path = url.path().trim_end_matches('/').to_owned();
            url.set_path(&path);
        }
        Ok(Self(url))
    }
}

impl ApiUrl {
    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

/// How long an invite stays valid: a number and a unit (`s`, `m`, `h`), from 1 s to 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Duration);

/// The longest an invite may live.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Seconds in `30s`, `15m`, `2h` or (with `days`) `7d`; `None` if it is not such a span.
fn parse_span(s: &str, days: bool) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" if days => 86_400,
        _ => return None,
    };
    number.checked_mul(unit)
}

impl FromStr for Ttl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match parse_span(s, false) {
            Some(secs) if secs > 0 && secs <= MAX_TTL.as_secs() => {
                Ok(Self(Duration::from_secs(secs)))
            }
            _ => Err(format!(
                "invalid ttl {s:?}: use a number and a unit, e.g. 30s, 15m, 2h (at most 24h)"
            )),
        }
    }
}

/// How far back `audit --since` looks: `30m`, `1h`, `7d` (at most 3650 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(Duration);

impl FromStr for Age {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match parse_span(s, true) {
            Some(secs) if secs > 0 && secs <= 3650 * 86_400 => Ok(Self(Duration::from_secs(secs))),
            _ => Err(format!(
                "invalid age {s:?}: use a number and a unit, e.g. 30m, 1h, 7d (at most 3650d)"
            )),
        }
    }
}

impl Age {
    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl Ttl {
    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs.is_multiple_of(3600) {
            write!(f, "{}h", secs / 3600)
        } else if secs.is_multiple_of(60) {
            write!(f, "{}m", secs / 60)
        } else {
            write!(f, "{secs}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for good in ["delta-01", "a", "x1", &"a".repeat(63)] {
            assert!(good.parse::<ServerName>().is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Delta", "a_b", "a.b", "ж", &"a".repeat(64)] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn owners() {
        for good in ["@Rmgss", "@abc_12345", &format!("@{}", "a".repeat(32))] {
            assert!(good.parse::<OwnerUsername>().is_ok(), "{good}");
        }
        for bad in [
            "Rmgss",
            "@abcd",
            "@ab-cde",
            "@",
            &format!("@{}", "a".repeat(33)),
        ] {
            assert!(bad.parse::<OwnerUsername>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bot_tokens() {
        let token: BotToken = "123456:AAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao"
            .parse()
            .unwrap();
        assert_eq!(token.expose(), "123456:AAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao");
        assert!(!format!("{token:?}").contains("AAF7"));
        for bad in [
            "",
            "123456",
            "abc:AAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao",
            ":AAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao",
            "123456:short",
            "123456:AAF7 g0gYncWnm5IyfZlpPRqRRv6kNAGlao",
        ] {
            let error = bad.parse::<BotToken>().unwrap_err();
            assert!(bad.len() < 8 || !error.contains(bad), "{error}");
        }
    }

    #[test]
    fn api_urls() {
        for good in [
            "https://api.telegram.org",
            "http://127.0.0.1:8081/",
            "http://h/prefix",
        ] {
            assert!(good.parse::<ApiUrl>().is_ok(), "{good}");
        }
        let prefixed: ApiUrl = "http://h:8081/tg/".parse().unwrap();
        assert_eq!(prefixed.url().as_str(), "http://h:8081/tg");
        for bad in [
            "",
            "ftp://h",
            "127.0.0.1:8081",
            "http://h/?q=1",
            "file:///tmp",
        ] {
            assert!(bad.parse::<ApiUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_ports() {
        let hp: HostPort = "203.0.113.10:4747".parse().unwrap();
        assert_eq!(hp.to_multiaddr().to_string(), "/ip4/203.0.113.10/tcp/4747");
        let v6: HostPort = "[::1]:4747".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:4747");
        assert_eq!(v6.to_multiaddr().to_string(), "/ip6/::1/tcp/4747");
        let dns: HostPort = "node.example.com:1".parse().unwrap();
        assert_eq!(
            dns.to_multiaddr().to_string(),
            "/dns/node.example.com/tcp/1"
        );
        for bad in [
            "1.2.3.4",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            ":4747",
            "a b:1",
            "[zz]:1",
            "::1:4747",
            "1.2.3.4:+4747",
            "1.2.3.4: 4747",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ages_and_usernames() {
        assert_eq!(
            "7d".parse::<Age>().unwrap().duration().as_secs(),
            7 * 86_400
        );
        assert_eq!("1h".parse::<Age>().unwrap().duration().as_secs(), 3600);
        for bad in ["", "0h", "7", "1w", "-1h", "3651d"] {
            assert!(bad.parse::<Age>().is_err(), "{bad}");
        }
        assert!("1d".parse::<Ttl>().is_err(), "a ttl has no days");
        assert!("@carol_v".parse::<Username>().is_ok());
        let error = "carol".parse::<Username>().unwrap_err();
        assert!(error.starts_with("invalid Telegram username"), "{error}");
    }

    #[test]
    fn ttls() {
        assert_eq!(
            "15m".parse::<Ttl>().unwrap().duration(),
            Duration::from_secs(900)
        );
        assert_eq!("24h".parse::<Ttl>().unwrap().to_string(), "24h");
        assert_eq!("90s".parse::<Ttl>().unwrap().to_string(), "90s");
        for bad in [
            "",
            "15",
            "m",
            "0m",
            "25h",
            "1d",
            "-1m",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<Ttl>().is_err(), "{bad}");
        }
    }
}
