//! Gossip on the wire: sealing the core's bodies under the network key and publishing them,
//! opening received messages (MAC checked) before the core sees them, and the keys of the
//! current and the previous secret epoch.

use constella_behaviours::Behaviour;
use constella_behaviours::gossip::{self, GossipBody, GossipError};
use constella_behaviours::network_keys::GossipKey;
use constella_behaviours::node::Refusal;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::{PeerId, Swarm};
use tracing::debug;

/// The network's gossip topic and the keys that seal and open it.
pub(super) struct GossipIo {
    topic: IdentTopic,
    /// The current epoch's key first (used to publish), then the previous epoch's (still
    /// opened, for members that have not rotated yet).
    keys: Vec<GossipKey>,
    /// Who made the current epoch's secret, if this node adopted it from a rotation since it
    /// started (the tiebreak of concurrent rotations).
    rotated_from: Option<PeerId>,
}

impl GossipIo {
    pub(super) fn new(topic: IdentTopic, key: GossipKey) -> Self {
        Self {
            topic,
            keys: vec![key],
            rotated_from: None,
        }
    }

    /// Seals `body` and publishes it on the topic.
    pub(super) fn publish(&self, swarm: &mut Swarm<Behaviour>, body: &GossipBody) {
        // A rotation goes out under every key this node holds: a member that adopted a rival
        // rotation of the same epoch (another key for that epoch) still shares the previous
        // epoch's key, and its copy inside is sealed to it alone anyway.
        let keys = if matches!(body, GossipBody::Rotation(_)) {
            &self.keys[..]
        } else {
            &self.keys[..1]
        };
        for key in keys {
            let bytes = gossip::seal(key, body);
            match swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes)
            {
                Ok(_) => {}
                // Alone, or before the first subscriptions are exchanged: nobody to tell yet.
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(error) => debug!(%error, "gossip publish failed"),
            }
        }
    }

    /// Opens a received message under any key held, or says why the core must not see it.
    pub(super) fn open(&self, data: &[u8]) -> Result<GossipBody, Refusal> {
        gossip::open_any(&self.keys, data).map_err(|error| match error {
            GossipError::BadMac | GossipError::OtherEpoch(_) => Refusal::BadMac,
            GossipError::IncompatibleVersion(_) => Refusal::IncompatibleVersion,
            GossipError::TooLarge(_) | GossipError::Malformed => Refusal::Malformed,
        })
    }

    /// Who made the current epoch's secret, if adopted from a rotation since the start.
    pub(super) fn rotated_from(&self) -> Option<&PeerId> {
        self.rotated_from.as_ref()
    }

    /// Publishes under `key` from now on (made by `from`); the previous key is still opened.
    pub(super) fn adopt(&mut self, key: GossipKey, from: PeerId) {
        let previous = self.keys[0].clone();
        self.keys = vec![key, previous];
        self.rotated_from = Some(from);
    }
}
