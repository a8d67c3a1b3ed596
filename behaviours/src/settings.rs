//! Network settings: the small record of bot state that every node must hold, so that whichever
//! node leads next can host the owner's Telegram bot exactly where the last leader left off.
//!
//! [`NetworkSettings`] is a state-based CRDT: [`NetworkSettings::merge`] is commutative,
//! associative and idempotent, so nodes converge whatever the order in which gossip and
//! anti-entropy deliver it.
//!
//! - `owner_user_id` is pinned once and never unset; two different pins (only possible if two
//!   partitioned leaders met two different users with the owner's username) resolve to the
//!   smaller id on every node.
//! - `last_update_id` only grows: the highest Telegram update id any leader has handled.
//! - `language` is last-writer-wins by `language_version` (ties: the larger code).

use serde::{Deserialize, Serialize};

/// Bot state shared by every node of the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    /// The owner's numeric Telegram user id, pinned at the owner's first contact.
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
}

impl NetworkSettings {
    /// Merges `other` into `self`. Returns whether `self` changed.
    pub fn merge(&mut self, other: &NetworkSettings) -> bool {
        let before = self.clone();
        self.owner_user_id = match (self.owner_user_id, other.owner_user_id) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_update_id = self.last_update_id.max(other.last_update_id);
        let theirs = (other.language_version, &other.language);
        let ours = (self.language_version, &self.language);
        if theirs > ours {
            self.language.clone_from(&other.language);
            self.language_version = other.language_version;
        }
        *self != before
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

    fn settings() -> impl Strategy<Value = NetworkSettings> {
        (
            proptest::option::of(1u64..5),
            0u32..10,
            prop_oneof![Just(""), Just("ru"), Just("en")],
            0u64..4,
        )
            .prop_map(|(owner, last, lang, version)| NetworkSettings {
                owner_user_id: owner,
                last_update_id: last,
                language: lang.to_owned(),
                language_version: version,
            })
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
}
