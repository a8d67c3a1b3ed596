//! `constella rotate-keys`: replaces this node's PQ4 identity with a new one (seed 004 §11).
//!
//! The new identity, signed prekey and ML-KEM-1024 prekey come with a key update signed by the
//! old identity (chain of custody) and by the new one. The update is appended to the chain kept
//! in `pq4-custody.cbor` and carried in the node's member record, where every member checks it
//! before it accepts the new card ([`constella_behaviours::network_keys::custody_holds`]). The
//! old keys stay in memory until the node stops, so a rotated network secret sealed to the old
//! card while the new one spread still opens.

use constella_behaviours::gossip::KeyUpdateBytes;
use constella_behaviours::network_keys::{self, Pq4Card};
use constella_behaviours::node::Input;
use constella_keys::KeyUpdate;
use libp2p::PeerId;

use super::Keys;
use super::error::ClientError;
use super::event_loop::EventLoop;

/// The environment variable that sets the periodic rotation of the network secret (seconds;
/// 7 days if unset), for tests and operators who want it more often.
pub(super) const ROTATION_SECS_ENV: &str = "CONSTELLA_ROTATION_SECS";

/// The periodic rotation interval from [`ROTATION_SECS_ENV`], or `None` if unset.
pub(super) fn rotation_interval_from_env() -> anyhow::Result<Option<std::time::Duration>> {
    let Ok(text) = std::env::var(ROTATION_SECS_ENV) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(secs) if secs >= 1 => Ok(Some(std::time::Duration::from_secs(secs))),
        _ => anyhow::bail!(
            "{ROTATION_SECS_ENV} must be a whole number of seconds, at least 1 (got {text:?})"
        ),
    }
}

/// The core's configuration: the defaults, with the periodic rotation from
/// [`ROTATION_SECS_ENV`] if set.
pub(super) fn core_config() -> anyhow::Result<constella_behaviours::node::Config> {
    let mut config = constella_behaviours::node::Config::default();
    if let Some(interval) = rotation_interval_from_env()? {
        config.rotation_interval = interval;
    }
    Ok(config)
}

impl EventLoop {
    /// Puts this node's card (and its chain of custody) in its record.
    pub(super) fn feed_own_card(&mut self) {
        let (card, chain) = (self.keys.card.clone(), self.keys.key_updates.clone());
        self.feed(Input::OwnCard {
            card: &card,
            key_updates: &chain,
        });
    }
}

/// What `rotate-keys` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeysRotated {
    /// The fingerprint of the identity replaced.
    pub previous_fingerprint: String,
    /// The fingerprint of the new identity.
    pub fingerprint: String,
    /// How many key updates the chain of custody holds now.
    pub chain: usize,
}

/// Makes the new keys, writes them (custody first) and switches `keys` to them. On any error
/// nothing changed: the files are written atomically and `keys` is touched only after both.
pub(super) fn rotate(keys: &mut Keys, local: &PeerId) -> Result<KeysRotated, ClientError> {
    let (store, update) =
        KeyUpdate::create_with_one_time_prekeys(keys.pq4.identity(), 0, &mut rand::rng())
            .map_err(|e| ClientError::Storage(format!("cannot make the new PQ4 keys: {e}")))?;
    let card = Pq4Card::new(&keys.node_key, &store)
        .map_err(|e| ClientError::Storage(format!("cannot sign the new PQ4 card: {e}")))?;
    let mut chain = keys.key_updates.clone();
    chain.push(KeyUpdateBytes(update.to_bytes()));
    keys.dir
        .replace_pq4(&store, &chain)
        .map_err(|e| ClientError::Storage(format!("{e:#}")))?;
    let previous_fingerprint = network_keys::fingerprint(local, keys.pq4.identity_public());
    let fingerprint = network_keys::fingerprint(local, store.identity_public());
    keys.previous_pq4 = Some(std::mem::replace(&mut keys.pq4, store));
    keys.card = card;
    keys.key_updates = chain;
    Ok(KeysRotated {
        previous_fingerprint,
        fingerprint,
        chain: keys.key_updates.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateDir;
    use constella_behaviours::NetworkSecret;
    use constella_behaviours::gossip::MemberRecord;
    use libp2p::identity::Keypair;

    fn record(id: PeerId, card: &Pq4Card, chain: &[KeyUpdateBytes], version: u64) -> MemberRecord {
        MemberRecord {
            node_id: id,
            name: "n".into(),
            addr: "127.0.0.1:1".into(),
            priority: 1,
            version,
            left: false,
            card: Some(card.clone()),
            admission: 0,
            removed_at: None,
            key_updates: chain.to_vec(),
            relays: Vec::new(),
        }
    }

    #[test]
    fn a_key_update_is_written_chained_and_accepted_only_with_its_chain() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path().to_path_buf());
        let node_key = Keypair::generate_ed25519();
        let id = node_key.public().to_peer_id();
        let pq4 = StateDir::generate_pq4().unwrap();
        let first = Pq4Card::new(&node_key, &pq4).unwrap();
        let mut keys = Keys {
            secret: NetworkSecret::from_bytes([1; 32]),
            pq4,
            card: first.clone(),
            node_key: node_key.clone(),
            key_updates: Vec::new(),
            previous_pq4: None,
            dir: state_dir.clone(),
        };
        let one = rotate(&mut keys, &id).unwrap();
        let second = keys.card.clone();
        let two = rotate(&mut keys, &id).unwrap();
        assert_eq!(two.chain, 2);
        assert_eq!(one.fingerprint, two.previous_fingerprint);
        assert_ne!(one.previous_fingerprint, two.fingerprint);
        // Written: the keys reload as the new identity, with the chain that ends there.
        let stored = state_dir.existing_pq4().unwrap().unwrap();
        assert_eq!(stored.identity_public(), keys.pq4.identity_public());
        assert_eq!(
            state_dir.pq4_custody(stored.identity_public()).unwrap(),
            keys.key_updates
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(crate::state::PQ4_CUSTODY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A member that trusts the first identity accepts the third through the whole chain,
        // and one that trusts the second through its last link.
        let third = record(id, &keys.card, &keys.key_updates, 3);
        let from_first = record(id, &first, &[], 1);
        let from_second = record(id, &second, &keys.key_updates[..1], 2);
        assert!(network_keys::custody_holds(&from_first, &third));
        assert!(network_keys::custody_holds(&from_second, &third));
        // Without the chain, with a link missing, or with a chain from another identity: refused.
        assert!(!network_keys::custody_holds(
            &from_first,
            &record(id, &keys.card, &[], 3)
        ));
        assert!(!network_keys::custody_holds(
            &from_first,
            &record(id, &keys.card, &keys.key_updates[1..], 3)
        ));
        let stranger = StateDir::generate_pq4().unwrap();
        let (forged_store, forged) =
            KeyUpdate::create_with_one_time_prekeys(stranger.identity(), 0, &mut rand::rng())
                .unwrap();
        let forged_card = Pq4Card::new(&node_key, &forged_store).unwrap();
        let forged = record(id, &forged_card, &[KeyUpdateBytes(forged.to_bytes())], 3);
        assert!(!network_keys::custody_holds(&from_second, &forged));
        // A later admission (invited again) starts a new chain.
        let mut readmitted = record(id, &forged_card, &[], 4);
        readmitted.admission = 1;
        assert!(network_keys::custody_holds(&from_second, &readmitted));
        // The old keys are kept to open what was sealed to the old card meanwhile.
        assert!(keys.previous_pq4.is_some());
    }
}
