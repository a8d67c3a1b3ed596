//! Network settings: the small record of bot state that every node must hold, so that whichever
//! node leads next can host the owner's Telegram bot exactly where the last leader left off,
//! and serve the same people with the same rights.
//!
//! [`NetworkSettings`] is a state-based CRDT: [`NetworkSettings::merge`] is commutative,
//! associative and idempotent, so nodes converge whatever the order in which gossip and
//! anti-entropy deliver it.
//!
//! - The owner is versioned: `owner_version` 0 is the owner named at `init` (in every node's
//!   state file); `constella owner set` makes a new version with the new username. A higher
//!   version replaces the owner fields as a whole (username, pin, the former owner to tell).
//!   Within one version the pin is kept once set (two different pins, only possible if two
//!   partitioned leaders met two different users with the owner's username, resolve to the
//!   smaller id), a conflicting username resolves to the larger one, and "the former owner was
//!   told" only becomes true.
//! - `last_update_id` only grows: the highest Telegram update id any leader has handled.
//! - `language` is last-writer-wins by `language_version` (ties: the larger code).
//! - `roles` maps a Telegram username to a [`RoleGrant`]: per username, the higher version wins;
//!   at equal versions the lesser right wins (a revoke over a grant, viewer over operator) and
//!   a pinned id is kept (the smaller of two).
//! - `confirmations`: the bot's one-time confirmations (a reboot's, a container action's)
//!   claimed so far, so that a confirmation is acted on once across leaders. A grow-only set of
//!   claims (MAC, expiry, claimer, done) merged by union; what a MAC's claims say together is
//!   [`NetworkSettings::claim`]: the smallest claimer wins (first-wins once the claims have
//!   met), done if any claim is. The set keeps the claims within
//!   [`CONFIRMATION_RETENTION_SECS`] of its newest expiry, at most [`MAX_CONFIRMATIONS`] of
//!   them (each claim kept or dropped on its own, decided by the set, not the clock, so the
//!   merge stays a semilattice).
//! - `bot_token`: which bot token the network uses ([`BotTokenStamp`]: a version, a digest,
//!   the node that has it), never the token itself; the higher version wins (ties: the larger
//!   digest, then node). A node whose token does not match the stamp fetches it from a member.
//! - `alerts`: alert thresholds (last-writer-wins per rule) and alert episodes (a union of
//!   monotone facts), see [`crate::alerts`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::alerts::AlertState;

/// A role the owner grants to another Telegram account. The owner has every right; an
/// operator can do what a viewer can and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees the node list, node cards and usage.
    Viewer,
    /// Also reboots nodes and issues invites.
    Operator,
}

impl Role {
    /// The role's name as the CLI and the bot show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(format!("unknown role {other:?}: use viewer or operator")),
        }
    }
}

/// One account's role, as last granted or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGrant {
    /// The role; `None` once revoked (kept, so an older grant cannot come back).
    pub role: Option<Role>,
    /// Bumped by every grant or revoke of this username.
    pub version: u64,
    /// The account's numeric Telegram id, pinned at its first contact after the grant.
    #[serde(default)]
    pub user_id: Option<u64>,
}

impl RoleGrant {
    /// Order of rights at equal versions: a revoke is the least, then viewer, then operator.
    fn rights(&self) -> u8 {
        match self.role {
            None => 0,
            Some(Role::Viewer) => 1,
            Some(Role::Operator) => 2,
        }
    }

    fn merge(&mut self, other: &RoleGrant) {
        if other.version != self.version {
            if other.version > self.version {
                *self = other.clone();
            }
            return;
        }
        if other.rights() < self.rights() {
            self.role = other.role;
        }
        self.user_id = min_pin(self.user_id, other.user_id);
    }
}

/// How long (seconds, before the newest expiry in the set) a claimed confirmation is kept: far
/// beyond its own two minutes, after which the MAC alone refuses it.
pub const CONFIRMATION_RETENTION_SECS: u64 = 24 * 3600;
/// Most confirmation claims kept (the newest by expiry); a confirmation has one or two.
pub const MAX_CONFIRMATIONS: usize = 256;

/// Domain separation of [`token_digest`].
const TOKEN_DIGEST_DOMAIN: &[u8] = b"constella/bot-token-digest/v1\0";

/// A short digest of a bot token (hex of 16 bytes of SHA-256): tells whether two nodes hold
/// the same token without either showing it. The token's secret half has far too much entropy
/// for the digest to help guess it.
pub fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(TOKEN_DIGEST_DOMAIN);
    hash.update(token.as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// The bot token the network uses, as set by `constella bot-token set` on some member.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BotTokenStamp {
    /// One more at every change.
    pub version: u64,
    /// [`token_digest`] of the token.
    pub digest: String,
    /// The node (PeerId, base58) where it was set: the first one asked for it.
    pub from: String,
    /// The bot's numeric id (the token's public half), for logs and the audit log.
    pub bot_id: String,
}

/// A bot confirmation claimed by a leader before it acted on it (or marked done by the node
/// that acted). Ordered by expiry first: the set drops the oldest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfirmationClaim {
    /// Unix seconds after which the confirmation is refused anyway.
    pub expires_at: u64,
    /// The confirmation's MAC (hex).
    pub mac: String,
    /// The node (PeerId, base58) whose bot claimed it; of two concurrent claims the smaller.
    pub claimed_by: String,
    /// The target acted on it (a reboot was started): any further request with it is a no-op.
    #[serde(default)]
    pub done: bool,
}

/// A Telegram username as the settings key it: lowercase, without `@`.
pub fn username_key(username: &str) -> String {
    username.trim().trim_start_matches('@').to_ascii_lowercase()
}

/// Two pins of the same thing: the one set, or the smaller of two.
fn min_pin(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bot state shared by every node of the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    /// The owner's numeric Telegram user id, pinned at the owner's first contact (for the
    /// current `owner_version`).
    #[serde(default)]
    pub owner_user_id: Option<u64>,
    /// The highest Telegram update id handled by a leader (0: none yet).
    #[serde(default)]
    pub last_update_id: u32,
    /// The bot's interface language code (`"ru"` or `"en"`); empty means the default.
    #[serde(default)]
    pub language: String,
    /// Version of `language`; the higher one wins a merge.
    #[serde(default)]
    pub language_version: u64,
    /// The owner's username set by `constella owner set` (with `@`); empty while the owner is
    /// still the one named at `init`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_username: String,
    /// 0: the owner from `init`; one more at every owner change.
    #[serde(default)]
    pub owner_version: u64,
    /// The pinned id of the owner that the last change replaced: the bot tells them once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_owner_id: Option<u64>,
    /// The former owner was told (claimed before the message is sent, so it is sent once).
    #[serde(default)]
    pub former_owner_told: bool,
    /// Accounts with a role, keyed by [`username_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleGrant>,
    /// Claims of bot confirmations (see [`NetworkSettings::claim`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub confirmations: BTreeSet<ConfirmationClaim>,
    /// The bot token set last with `constella bot-token set` (none: the one from `init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<BotTokenStamp>,
    /// Alert thresholds and episodes (see [`crate::alerts`]); boxed so that settings gossip
    /// stays the size of a heartbeat on the stack.
    #[serde(default, skip_serializing_if = "is_default")]
    pub alerts: Box<AlertState>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl NetworkSettings {
    /// Merges `other` into `self`. Returns whether `self` changed.
    pub fn merge(&mut self, other: &NetworkSettings) -> bool {
        let before = self.clone();
        self.merge_owner(other);
        self.last_update_id = self.last_update_id.max(other.last_update_id);
        let theirs = (other.language_version, &other.language);
        let ours = (self.language_version, &self.language);
        if theirs > ours {
            self.language.clone_from(&other.language);
            self.language_version = other.language_version;
        }
        for (name, grant) in &other.roles {
            match self.roles.get_mut(name) {
                Some(ours) => ours.merge(grant),
                None => {
                    self.roles.insert(name.clone(), grant.clone());
                }
            }
        }
        self.confirmations
            .extend(other.confirmations.iter().cloned());
        self.trim_confirmations();
        if other.bot_token > self.bot_token {
            self.bot_token.clone_from(&other.bot_token);
        }
        self.alerts.merge(&other.alerts);
        *self != before
    }

    /// Keeps the claimed confirmations within [`CONFIRMATION_RETENTION_SECS`] of the newest
    /// expiry, and of those the [`MAX_CONFIRMATIONS`] newest (by expiry, then MAC).
    fn trim_confirmations(&mut self) {
        let Some(newest) = self.confirmations.last().map(|c| c.expires_at) else {
            return;
        };
        let oldest_kept = newest.saturating_sub(CONFIRMATION_RETENTION_SECS);
        while self.confirmations.first().is_some_and(|c| {
            c.expires_at < oldest_kept || self.confirmations.len() > MAX_CONFIRMATIONS
        }) {
            self.confirmations.pop_first();
        }
    }

    /// What the claims of confirmation `mac` say together: claimed by the smallest claimer,
    /// done if any claim is, expiring at the latest expiry; `None` if nobody claimed it.
    pub fn claim(&self, mac: &str) -> Option<ConfirmationClaim> {
        self.confirmations
            .iter()
            .filter(|c| c.mac == mac)
            .cloned()
            .reduce(|mut merged, c| {
                if c.claimed_by < merged.claimed_by {
                    merged.claimed_by = c.claimed_by;
                }
                merged.expires_at = merged.expires_at.max(c.expires_at);
                merged.done |= c.done;
                merged
            })
    }

    /// These settings with confirmation `mac` claimed by node `by` (nothing else changed).
    pub fn with_claim(&self, mac: &str, expires_at: u64, by: &str, done: bool) -> NetworkSettings {
        NetworkSettings {
            confirmations: BTreeSet::from([ConfirmationClaim {
                expires_at,
                mac: mac.to_owned(),
                claimed_by: by.to_owned(),
                done,
            }]),
            ..NetworkSettings::default()
        }
        .merged_into(self)
    }

    fn merged_into(self, base: &NetworkSettings) -> NetworkSettings {
        let mut next = base.clone();
        next.merge(&self);
        next
    }

    fn merge_owner(&mut self, other: &NetworkSettings) {
        if other.owner_version != self.owner_version {
            if other.owner_version > self.owner_version {
                self.owner_version = other.owner_version;
                self.owner_username.clone_from(&other.owner_username);
                self.owner_user_id = other.owner_user_id;
                self.former_owner_id = other.former_owner_id;
                self.former_owner_told = other.former_owner_told;
            }
            return;
        }
        if other.owner_username > self.owner_username {
            self.owner_username.clone_from(&other.owner_username);
        }
        self.owner_user_id = min_pin(self.owner_user_id, other.owner_user_id);
        self.former_owner_id = min_pin(self.former_owner_id, other.former_owner_id);
        self.former_owner_told |= other.former_owner_told;
    }

    /// The owner's username: the one set by `owner set`, else `initial` (from `init`).
    pub fn owner<'a>(&'a self, initial: &'a str) -> &'a str {
        if self.owner_version == 0 || self.owner_username.is_empty() {
            initial
        } else {
            &self.owner_username
        }
    }

    /// These settings with `username` as the new owner: a new owner version, no pin yet, and
    /// the old owner's pinned id remembered so that the bot tells them once.
    pub fn with_owner(&self, username: &str) -> NetworkSettings {
        NetworkSettings {
            owner_username: username.to_owned(),
            owner_version: self.owner_version + 1,
            owner_user_id: None,
            former_owner_id: self.owner_user_id,
            former_owner_told: false,
            ..self.clone()
        }
    }

    /// These settings with `username` given `role` (`None`: revoked), as a new version of its
    /// grant. A change of role keeps the account's pinned id; a grant after a revoke starts
    /// unpinned (the username may have changed hands meanwhile).
    pub fn with_role(&self, username: &str, role: Option<Role>) -> NetworkSettings {
        let key = username_key(username);
        let previous = self.roles.get(&key);
        let version = previous.map_or(1, |g| g.version + 1);
        let user_id = previous
            .filter(|g| g.role.is_some())
            .and_then(|g| g.user_id);
        let mut next = self.clone();
        next.roles.insert(
            key,
            RoleGrant {
                role,
                version,
                user_id,
            },
        );
        next
    }

    /// The current role of the account pinned as `user_id`, if any.
    pub fn role_of_id(&self, user_id: u64) -> Option<Role> {
        self.roles
            .values()
            .find(|g| g.user_id == Some(user_id))
            .and_then(|g| g.role)
    }

    /// Accounts that hold a role now (revoked ones left out), by username.
    pub fn granted(&self) -> impl Iterator<Item = (&String, &RoleGrant)> {
        self.roles.iter().filter(|(_, g)| g.role.is_some())
    }
}

/// Network settings as published on the gossip topic (on every change and every 30 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsUpdate {
    /// PeerId of the publisher (base58 on the wire).
    #[serde(with = "crate::ids::base58")]
    pub from: libp2p::PeerId,
    /// The publisher's merged settings.
    pub settings: NetworkSettings,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant() -> impl Strategy<Value = RoleGrant> {
        (
            prop_oneof![
                Just(None),
                Just(Some(Role::Viewer)),
                Just(Some(Role::Operator))
            ],
            0u64..3,
            proptest::option::of(1u64..4),
        )
            .prop_map(|(role, version, user_id)| RoleGrant {
                role,
                version,
                user_id,
            })
    }

    fn settings() -> impl Strategy<Value = NetworkSettings> {
        let base = (
            proptest::option::of(1u64..5),
            0u32..10,
            prop_oneof![Just(""), Just("ru"), Just("en")],
            0u64..4,
        );
        let owner = (
            prop_oneof![Just(""), Just("@alice_1"), Just("@bob_22")],
            0u64..3,
            proptest::option::of(1u64..5),
            any::<bool>(),
        );
        let roles = proptest::collection::btree_map(
            prop_oneof![Just("carol".to_owned()), Just("dave".to_owned())],
            grant(),
            0..3,
        );
        let claim = (
            prop_oneof![
                Just(0u64),
                Just(100),
                Just(CONFIRMATION_RETENTION_SECS + 50),
                Just(CONFIRMATION_RETENTION_SECS + 200)
            ],
            prop_oneof![Just("a".to_owned()), Just("b".to_owned())],
            any::<bool>(),
            (0..MAX_CONFIRMATIONS as u32 + 40).prop_map(|n| format!("{n:x}")),
        )
            .prop_map(|(expires_at, claimed_by, done, mac)| ConfirmationClaim {
                expires_at,
                mac,
                claimed_by,
                done,
            });
        let confirmations = proptest::collection::btree_set(claim, 0..MAX_CONFIRMATIONS + 20);
        (base, owner, roles, confirmations).prop_map(
            |(
                (owner_id, last, lang, version),
                (name, owner_version, former, told),
                roles,
                confirmations,
            )| {
                let mut settings = NetworkSettings {
                    owner_user_id: owner_id,
                    last_update_id: last,
                    language: lang.to_owned(),
                    language_version: version,
                    owner_username: name.to_owned(),
                    owner_version,
                    former_owner_id: former,
                    former_owner_told: told,
                    roles,
                    confirmations,
                    bot_token: (last % 3 != 0).then(|| BotTokenStamp {
                        version: u64::from(last % 3),
                        digest: format!("{:x}", last % 2),
                        from: "a".into(),
                        bot_id: "1".into(),
                    }),
                    alerts: Box::default(),
                };
                // What a node holds is always trimmed (merge trims).
                settings.trim_confirmations();
                settings
            },
        )
    }

    #[test]
    fn pin_is_kept_and_update_ids_only_grow() {
        let mut a = NetworkSettings::default();
        let b = NetworkSettings {
            owner_user_id: Some(42),
            last_update_id: 7,
            ..NetworkSettings::default()
        };
        assert!(a.merge(&b));
        assert!(!a.merge(&b), "merging twice changes nothing");
        assert!(
            !a.merge(&NetworkSettings::default()),
            "an empty record unpins nothing"
        );
        assert_eq!(a.owner_user_id, Some(42));
        assert_eq!(a.last_update_id, 7);
        let older = NetworkSettings {
            last_update_id: 3,
            ..a.clone()
        };
        assert!(!a.merge(&older));
        assert_eq!(a.last_update_id, 7);
    }

    #[test]
    fn newer_language_wins() {
        let mut a = NetworkSettings {
            language: "ru".into(),
            language_version: 1,
            ..NetworkSettings::default()
        };
        let b = NetworkSettings {
            language: "en".into(),
            language_version: 2,
            ..NetworkSettings::default()
        };
        assert!(a.merge(&b));
        assert_eq!(a.language, "en");
        let stale = NetworkSettings {
            language: "ru".into(),
            language_version: 1,
            ..NetworkSettings::default()
        };
        assert!(!a.merge(&stale));
        assert_eq!(a.language, "en");
    }

    proptest! {
        #[test]
        fn merge_is_a_semilattice(a in settings(), b in settings(), c in settings()) {
            let merged = |x: &NetworkSettings, y: &NetworkSettings| {
                let mut m = x.clone();
                m.merge(y);
                m
            };
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
        }
    }

    #[test]
    fn an_owner_change_unpins_and_remembers_the_former_owner() {
        let pinned = NetworkSettings {
            owner_user_id: Some(42),
            ..NetworkSettings::default()
        };
        assert_eq!(pinned.owner("@first_owner"), "@first_owner");
        let changed = pinned.with_owner("@second_owner");
        assert_eq!(changed.owner("@first_owner"), "@second_owner");
        assert_eq!(changed.owner_user_id, None);
        assert_eq!(changed.former_owner_id, Some(42));
        // A node that still has the old pin takes the change, pin and all, whatever the order.
        let mut old = pinned.clone();
        assert!(old.merge(&changed));
        assert_eq!(old, changed);
        let mut new = changed.clone();
        assert!(!new.merge(&pinned), "the old owner cannot come back");
        // The new owner's pin and "told" stick within the version.
        let told = NetworkSettings {
            owner_user_id: Some(77),
            former_owner_told: true,
            ..changed.clone()
        };
        let mut merged = changed;
        assert!(merged.merge(&told));
        assert_eq!(merged.owner_user_id, Some(77));
        assert!(merged.former_owner_told);
    }

    #[test]
    fn a_confirmation_is_claimed_once_first_wins_and_old_ones_go() {
        let empty = NetworkSettings::default();
        let by_b = empty.with_claim("m1", 100, "node-b", false);
        let by_a = empty.with_claim("m1", 100, "node-a", false);
        assert_eq!(by_b.claim("m1").unwrap().claimed_by, "node-b");
        let mut merged = by_b.clone();
        assert!(merged.merge(&by_a));
        assert_eq!(
            merged.claim("m1").unwrap().claimed_by,
            "node-a",
            "the smaller wins"
        );
        let done = merged.with_claim("m1", 100, "node-b", true);
        assert!(done.claim("m1").unwrap().done);
        assert_eq!(done.claim("m1").unwrap().claimed_by, "node-a");
        // Claims a day older than the newest are forgotten; the MAC's expiry refuses them.
        let later = done.with_claim("m2", 100 + CONFIRMATION_RETENTION_SECS + 1, "node-a", false);
        assert!(later.claim("m1").is_none());
        assert!(later.claim("m2").is_some());
        let mut many = NetworkSettings::default();
        for n in 0..MAX_CONFIRMATIONS as u64 + 5 {
            many = many.with_claim(&format!("{n:04}"), 1000 + n, "x", false);
        }
        assert_eq!(many.confirmations.len(), MAX_CONFIRMATIONS);
        assert!(many.claim("0000").is_none());
        assert!(NetworkSettings::default().claim("m1").is_none());
    }

    #[test]
    fn roles_are_granted_pinned_and_revoked() {
        let granted = NetworkSettings::default().with_role("@Carol_X", Some(Role::Operator));
        let grant = &granted.roles["carol_x"];
        assert_eq!(
            (grant.role, grant.version, grant.user_id),
            (Some(Role::Operator), 1, None)
        );
        let mut pinned = granted.clone();
        pinned.roles.get_mut("carol_x").unwrap().user_id = Some(9);
        assert_eq!(pinned.role_of_id(9), Some(Role::Operator));
        // A change of role keeps the pin; a grant after a revoke starts unpinned.
        let viewer = pinned.with_role("carol_x", Some(Role::Viewer));
        assert_eq!(viewer.role_of_id(9), Some(Role::Viewer));
        let revoked = pinned.with_role("carol_x", None);
        assert_eq!(revoked.role_of_id(9), None);
        let again = revoked.with_role("carol_x", Some(Role::Viewer));
        assert_eq!(again.roles["carol_x"].user_id, None);
        assert_eq!(revoked.granted().count(), 0);
        // The revoke wins over the older grant and its pin, in either order.
        let mut a = pinned.clone();
        a.merge(&revoked);
        let mut b = revoked.clone();
        b.merge(&pinned);
        assert_eq!(a, b);
        assert_eq!(a.roles["carol_x"].role, None);
        // Concurrent edits at one version: the lesser right wins.
        let viewer = granted.with_role("carol_x", Some(Role::Viewer));
        let also_operator = granted.with_role("carol_x", Some(Role::Operator));
        let mut c = viewer.clone();
        c.merge(&also_operator);
        assert_eq!(c.roles["carol_x"].role, Some(Role::Viewer));
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("admin".parse::<Role>().is_err());
    }
}
