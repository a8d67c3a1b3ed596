//! Callback data of the bot's inline buttons: what a button asks for, in at most 64 bytes.
//!
//! Anything a client sends back is untrusted: it is parsed strictly, node references are
//! resolved against the current member list, and the one action that changes anything (a
//! confirmed reboot or removal) carries an expiry and an HMAC under the network secret, bound to the
//! owner, the chat and the message. A confirmation is therefore checkable by whichever node
//! leads when it is pressed, and cannot be forged or replayed into another message.

use constella_behaviours::NetworkSecret;

/// Telegram's limit on callback data.
pub const MAX_CALLBACK_BYTES: usize = 64;
/// Characters of the node id (its base58 tail) that name a node in callback data.
pub const SHORT_ID_LEN: usize = 8;
/// How long a reboot confirmation can be pressed.
pub const CONFIRM_TTL_SECS: u64 = 120;
/// Domain separation of the confirmation MAC.
const CONFIRM_MAC_DOMAIN: &[u8] = b"constella/bot-confirm/v1\0";
/// Domain of a removal's confirmation: a reboot's confirmation can never pass for one.
const REMOVE_MAC_DOMAIN: &[u8] = b"constella/bot-confirm-remove/v1\0";
/// Bytes of the MAC kept in the callback data (hex-encoded).
const CONFIRM_MAC_BYTES: usize = 8;

/// What a button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Show the node list.
    List,
    /// Show a node's card.
    Card(String),
    /// Show a node's CPU, RAM, disk and uptime.
    Usage(String),
    /// Ask to confirm a reboot.
    AskReboot(String),
    /// A confirmed reboot; valid only with a good MAC before `expires_at`.
    Reboot(Confirmation),
    /// The reboot was not confirmed: back to the card.
    Cancel(String),
    /// Ask to confirm removing a node from the network (the owner's alone).
    AskRemove(String),
    /// A confirmed removal; valid only with a good removal MAC before `expires_at`.
    Remove(Confirmation),
    /// Offer the chart ranges of a node.
    Charts(String),
    /// Send a chart of a node over a range (see [`ChartRange`]).
    Chart(String, ChartRange),
    /// Send the overview chart of every alive node (24 h).
    Overview,
}

/// The ranges a chart button offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartRange {
    Hour,
    Day,
    Week,
}

impl ChartRange {
    pub const ALL: [ChartRange; 3] = [ChartRange::Hour, ChartRange::Day, ChartRange::Week];

    /// Seconds covered.
    pub fn secs(self) -> u64 {
        match self {
            ChartRange::Hour => 3600,
            ChartRange::Day => 86_400,
            ChartRange::Week => 7 * 86_400,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ChartRange::Hour => "h",
            ChartRange::Day => "d",
            ChartRange::Week => "w",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// A signed reboot confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// The node's short id.
    pub node: String,
    /// Unix seconds after which the button is stale.
    pub expires_at: u64,
    /// Hex of the truncated HMAC.
    pub mac: String,
}

/// Where a confirmation was shown: the MAC binds it to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub owner_id: u64,
    pub chat_id: i64,
    pub message_id: i32,
}

/// Why a confirmation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    #[error("the confirmation has expired")]
    Expired,
    #[error("the confirmation does not verify")]
    Forged,
}

/// The short id of a node: the tail of its base58 PeerId (the head is the same for every
/// Ed25519 key).
pub fn short_id(node_id: &str) -> &str {
    let start = node_id.len().saturating_sub(SHORT_ID_LEN);
    node_id.get(start..).unwrap_or(node_id)
}

/// [`short_id`] of a node id.
pub fn short_peer_id(node_id: &libp2p::PeerId) -> String {
    short_id(&node_id.to_base58()).to_owned()
}

/// Whether `text` can be a node's [`short_id`] in callback data.
pub fn is_short_id(text: &str) -> bool {
    text.len() == SHORT_ID_LEN && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The expiry of a confirmation in callback data: decimal digits only, at most 20.
pub fn parse_expiry(text: &str) -> Option<u64> {
    (text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Whether `text` is a confirmation's truncated MAC in callback data (lower-case hex).
pub fn is_mac_hex(text: &str) -> bool {
    is_lower_hex(text, CONFIRM_MAC_BYTES * 2)
}

/// Whether `text` is `len` lower-case hex digits.
pub fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Action {
    /// The callback data for this action.
    pub fn encode(&self) -> String {
        match self {
            Action::List => "l".to_owned(),
            Action::Overview => "o".to_owned(),
            Action::Card(node) => format!("c:{node}"),
            Action::Usage(node) => format!("u:{node}"),
            Action::AskReboot(node) => format!("r:{node}"),
            Action::Reboot(c) => format!("R:{}:{}:{}", c.node, c.expires_at, c.mac),
            Action::Cancel(node) => format!("x:{node}"),
            Action::AskRemove(node) => format!("d:{node}"),
            Action::Remove(c) => format!("D:{}:{}:{}", c.node, c.expires_at, c.mac),
            Action::Charts(node) => format!("g:{node}"),
            Action::Chart(node, range) => format!("G:{node}:{}", range.code()),
        }
    }

    /// Parses callback data; anything not made by [`Action::encode`] is `None`.
    pub fn parse(data: &str) -> Option<Action> {
        if data.len() > MAX_CALLBACK_BYTES {
            return None;
        }
        if data == "l" {
            return Some(Action::List);
        }
        if data == "o" {
            return Some(Action::Overview);
        }
        let (kind, rest) = data.split_once(':')?;
        let node = |text: &str| is_short_id(text).then(|| text.to_owned());
        match kind {
            "c" => node(rest).map(Action::Card),
            "u" => node(rest).map(Action::Usage),
            "r" => node(rest).map(Action::AskReboot),
            "x" => node(rest).map(Action::Cancel),
            "d" => node(rest).map(Action::AskRemove),
            "g" => node(rest).map(Action::Charts),
            "G" => {
                let (id, range) = rest.split_once(':')?;
                Some(Action::Chart(node(id)?, ChartRange::from_code(range)?))
            }
            "R" | "D" => {
                let mut parts = rest.split(':');
                let (Some(id), Some(exp), Some(mac), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                let expires_at = parse_expiry(exp)?;
                is_mac_hex(mac).then_some(())?;
                let confirmation = Confirmation {
                    node: node(id)?,
                    expires_at,
                    mac: mac.to_owned(),
                };
                Some(if kind == "R" {
                    Action::Reboot(confirmation)
                } else {
                    Action::Remove(confirmation)
                })
            }
            _ => None,
        }
    }
}

fn confirm_body(node: &str, expires_at: u64, binding: Binding) -> String {
    format!(
        "{node}:{expires_at}:{}:{}:{}",
        binding.owner_id, binding.chat_id, binding.message_id
    )
}

impl Confirmation {
    /// A confirmation for rebooting `node`, shown in the message of `binding`.
    pub fn sign(secret: &NetworkSecret, node: &str, now: u64, binding: Binding) -> Self {
        Self::sign_in(CONFIRM_MAC_DOMAIN, secret, node, now, binding)
    }

    /// A confirmation for removing `node`, shown in the message of `binding`.
    pub fn sign_removal(secret: &NetworkSecret, node: &str, now: u64, binding: Binding) -> Self {
        Self::sign_in(REMOVE_MAC_DOMAIN, secret, node, now, binding)
    }

    /// Checks a removal's confirmation (MAC and expiry).
    pub fn verify_removal(
        &self,
        secret: &NetworkSecret,
        now: u64,
        binding: Binding,
    ) -> Result<(), ConfirmError> {
        self.verify_in(REMOVE_MAC_DOMAIN, secret, now, binding)
    }

    fn sign_in(
        domain: &[u8],
        secret: &NetworkSecret,
        node: &str,
        now: u64,
        binding: Binding,
    ) -> Self {
        let expires_at = now + CONFIRM_TTL_SECS;
        let tag = secret.mac(domain, confirm_body(node, expires_at, binding).as_bytes());
        Self {
            node: node.to_owned(),
            expires_at,
            mac: hex::encode(&tag[..CONFIRM_MAC_BYTES]),
        }
    }

    /// Checks the MAC (in constant time) and the expiry.
    pub fn verify(
        &self,
        secret: &NetworkSecret,
        now: u64,
        binding: Binding,
    ) -> Result<(), ConfirmError> {
        self.verify_in(CONFIRM_MAC_DOMAIN, secret, now, binding)
    }

    fn verify_in(
        &self,
        domain: &[u8],
        secret: &NetworkSecret,
        now: u64,
        binding: Binding,
    ) -> Result<(), ConfirmError> {
        let tag = secret.mac(
            domain,
            confirm_body(&self.node, self.expires_at, binding).as_bytes(),
        );
        let expected = hex::encode(&tag[..CONFIRM_MAC_BYTES]);
        let same = expected.len() == self.mac.len()
            && expected
                .bytes()
                .zip(self.mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(ConfirmError::Forged);
        }
        if now > self.expires_at {
            return Err(ConfirmError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NODE: &str = "12D3KooWAbCdEfGh";

    /// Where a confirmation in these tests is shown.
    pub(crate) fn binding() -> Binding {
        Binding {
            owner_id: 42,
            chat_id: 42,
            message_id: 7,
        }
    }

    #[test]
    fn round_trip_within_the_limit() {
        let secret = NetworkSecret::from_bytes([3; 32]);
        let short = short_id(NODE).to_owned();
        assert_eq!(short, "AbCdEfGh");
        let confirmation = Confirmation::sign(&secret, &short, u64::from(u32::MAX), binding());
        for action in [
            Action::List,
            Action::Overview,
            Action::Card(short.clone()),
            Action::Usage(short.clone()),
            Action::AskReboot(short.clone()),
            Action::Cancel(short.clone()),
            Action::AskRemove(short.clone()),
            Action::Remove(Confirmation::sign_removal(
                &secret,
                &short,
                u64::from(u32::MAX),
                binding(),
            )),
            Action::Reboot(confirmation),
            Action::Charts(short.clone()),
            Action::Chart(short.clone(), ChartRange::Week),
        ] {
            let data = action.encode();
            assert!(data.len() <= MAX_CALLBACK_BYTES, "{data}");
            assert_eq!(Action::parse(&data), Some(action));
        }
    }

    #[test]
    fn malformed_data_is_refused() {
        for bad in [
            "",
            "l:",
            "c:",
            "c:short",
            "c:AbCdEfGh1",
            "c:AbCd/fGh",
            "z:AbCdEfGh",
            "R:AbCdEfGh:1:00",
            "R:AbCdEfGh:x:0011223344556677",
            "R:AbCdEfGh:1:0011223344556677:9",
            "R:AbCdEfGh:1:00112233445566ZZ",
            &format!("c:{}", "A".repeat(70)),
        ] {
            assert_eq!(Action::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn confirmations_expire_and_cannot_be_forged_or_moved() {
        let secret = NetworkSecret::from_bytes([3; 32]);
        let now = 1_000_000;
        let c = Confirmation::sign(&secret, "AbCdEfGh", now, binding());
        assert_eq!(c.verify(&secret, now + 5, binding()), Ok(()));
        assert_eq!(
            c.verify(&secret, now + CONFIRM_TTL_SECS + 1, binding()),
            Err(ConfirmError::Expired)
        );
        let other_secret = NetworkSecret::from_bytes([4; 32]);
        assert_eq!(
            c.verify(&other_secret, now, binding()),
            Err(ConfirmError::Forged)
        );
        let moved = Binding {
            message_id: 8,
            ..binding()
        };
        assert_eq!(c.verify(&secret, now, moved), Err(ConfirmError::Forged));
        let stranger = Binding {
            owner_id: 43,
            ..binding()
        };
        assert_eq!(c.verify(&secret, now, stranger), Err(ConfirmError::Forged));
        let mut other_node = c.clone();
        other_node.node = "ZZZZEfGh".into();
        assert_eq!(
            other_node.verify(&secret, now, binding()),
            Err(ConfirmError::Forged)
        );
        // A reboot's confirmation is no removal's, and the other way round.
        assert_eq!(
            c.verify_removal(&secret, now, binding()),
            Err(ConfirmError::Forged)
        );
        let removal = Confirmation::sign_removal(&secret, "AbCdEfGh", now, binding());
        assert_eq!(removal.verify_removal(&secret, now, binding()), Ok(()));
        assert_eq!(
            removal.verify(&secret, now, binding()),
            Err(ConfirmError::Forged)
        );
        let mut later = c;
        later.expires_at += 1000;
        assert_eq!(
            later.verify(&secret, now, binding()),
            Err(ConfirmError::Forged)
        );
    }
}
