//! Join links: `join://<host>:<port>?net=<NetworkID>&token=<token>&ttl=<ttl>&peer=<PeerId>`.
//!
//! The seed's shape, plus `peer`: the PeerId of the issuing node. The joiner dials with that
//! PeerId pinned, so the token goes only to the node that issued it.

use std::fmt;
use std::str::FromStr;

use libp2p::PeerId;

use crate::validate::HostPort;

/// A parsed join link.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// Where the seed listens.
    pub seed: HostPort,
    /// The network to join.
    pub network_id: String,
    /// The one-time token.
    pub token: String,
    /// The TTL as issued (informational: the seed enforces expiry).
    pub ttl: Option<String>,
    /// The seed's PeerId.
    pub peer: PeerId,
}

impl fmt::Debug for JoinLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinLink")
            .field("seed", &self.seed)
            .field("network_id", &self.network_id)
            .field("token", &"<redacted>")
            .field("peer", &self.peer)
            .finish()
    }
}

impl fmt::Display for JoinLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "join://{}?net={}&token={}",
            self.seed, self.network_id, self.token
        )?;
        if let Some(ttl) = &self.ttl {
            write!(f, "&ttl={ttl}")?;
        }
        write!(f, "&peer={}", self.peer)
    }
}

impl FromStr for JoinLink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("malformed join link: {what}");
        let rest = s
            .trim()
            .strip_prefix("join://")
            .ok_or_else(|| bad("it must start with join://"))?;
        let (authority, query) = rest
            .split_once('?')
            .ok_or_else(|| bad("no ?net=…&token=… part"))?;
        let seed: HostPort = authority
            .trim_end_matches('/')
            .parse()
            .map_err(|_| bad("the seed address is not HOST:PORT"))?;
        let (mut net, mut token, mut ttl, mut peer) = (None, None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("a parameter has no value"))?;
            let slot = match key {
                "net" => &mut net,
                "token" => &mut token,
                "ttl" => &mut ttl,
                "peer" => &mut peer,
                // A link is made by `constella invite`; anything else in it is a mistake or
                // a tampered link, not something to ignore.
                other => return Err(bad(&format!("unknown parameter {other:?}"))),
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(bad(&format!("parameter {key} given twice")));
            }
        }
        let network_id = net.ok_or_else(|| bad("missing net"))?;
        let token = token.ok_or_else(|| bad("missing token"))?;
        let peer = peer.ok_or_else(|| bad("missing peer (the seed's PeerId)"))?;
        let peer = PeerId::from_str(&peer).map_err(|_| bad("peer is not a valid PeerId"))?;
        let is_id = |v: &str, max: usize| {
            !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !is_id(&network_id, 64) {
            return Err(bad("net must be letters and digits"));
        }
        if !is_id(&token, 128) {
            return Err(bad("token must be letters and digits"));
        }
        Ok(Self {
            seed,
            network_id,
            token,
            ttl,
            peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let peer = PeerId::random();
        let text = format!("join://203.0.113.10:4747?net=abcd1234&token=XYZ&ttl=15m&peer={peer}");
        let link: JoinLink = text.parse().unwrap();
        assert_eq!(link.seed.to_string(), "203.0.113.10:4747");
        assert_eq!(link.network_id, "abcd1234");
        assert_eq!(link.token, "XYZ");
        assert_eq!(link.peer, peer);
        assert_eq!(link.to_string(), text);
        assert!(!format!("{link:?}").contains("XYZ"));
    }

    #[test]
    fn malformed_links_name_the_problem() {
        let peer = PeerId::random();
        let cases = [
            (
                "http://1.2.3.4:1?net=a&token=b&peer=P".to_owned(),
                "join://",
            ),
            (
                format!("join://1.2.3.4?net=a&token=b&peer={peer}"),
                "HOST:PORT",
            ),
            (
                format!("join://1.2.3.4:1?token=b&peer={peer}"),
                "missing net",
            ),
            (
                format!("join://1.2.3.4:1?net=a&peer={peer}"),
                "missing token",
            ),
            ("join://1.2.3.4:1?net=a&token=b".to_owned(), "missing peer"),
            (
                "join://1.2.3.4:1?net=a&token=b&peer=nope".to_owned(),
                "valid PeerId",
            ),
            (
                format!("join://1.2.3.4:1?net=a&token=b%20&peer={peer}"),
                "token",
            ),
            (
                format!("join://1.2.3.4:1?net=a&net=b&token=b&peer={peer}"),
                "twice",
            ),
            (
                format!("join://1.2.3.4:1?net=a&token=b&peer={peer}&via=evil"),
                "unknown parameter \"via\"",
            ),
            (
                format!("join://1.2.3.4:+4747?net=a&token=b&peer={peer}"),
                "HOST:PORT",
            ),
        ];
        for (text, expected) in cases {
            let error = text.parse::<JoinLink>().unwrap_err();
            assert!(error.starts_with("malformed join link"), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
