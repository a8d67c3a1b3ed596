//! Gossip on the wire: sealing the core's bodies under the network key and publishing them,
//! opening received messages (MAC checked) before the core sees them, and the keys of the
//! current and the previous secret epoch.

use constella_behaviours::Behaviour;
use constella_behaviours::gossip::{self, GossipBody, GossipError};
use constella_behaviours::network_keys::GossipKey;
use constella_behaviours::node::{Input, Output, Refusal};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::{PeerId, Swarm};
use tracing::debug;

use super::event_loop::EventLoop;

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

    /// The keys that open messages: the current epoch's first, then the previous one's.
    pub(super) fn keys(&self) -> &[GossipKey] {
        &self.keys
    }

    /// The key that seals what this node sends (the current epoch's).
    pub(super) fn sealing_key(&self) -> &GossipKey {
        &self.keys[0]
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

    /// Whether `data` is sealed under an epoch newer than ours: we missed a rotation (checked
    /// only for messages that did not open).
    pub(super) fn is_newer_epoch(&self, data: &[u8]) -> bool {
        matches!(gossip::open_any(&self.keys, data),
            Err(GossipError::OtherEpoch(epoch)) if epoch > self.keys[0].epoch())
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

impl EventLoop {
    /// A gossip message from `source`: opened (MAC checked) and handed to the core, whose
    /// verdict goes back to gossipsub (forward it or not).
    pub(super) fn on_gossip(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = match self.gossip.open(&message.data) {
            Ok(body) => {
                let input = Input::Gossip {
                    signer: message.source,
                    body: &body,
                };
                self.feed_and_take(input, |o| match o {
                    Output::GossipVerdict(verdict) => Some(*verdict),
                    _ => None,
                })
                .unwrap_or(Err(Refusal::Malformed))
            }
            Err(refusal) => {
                if let Some(author) = message.source
                    && refusal == Refusal::BadMac
                    && self.gossip.is_newer_epoch(&message.data)
                {
                    // We missed a rotation: ask its author for it now.
                    self.feed(Input::NewerEpoch(author));
                }
                self.feed(Input::GossipRefused(refusal));
                Err(refusal)
            }
        };
        let acceptance = match verdict {
            Ok(()) => MessageAcceptance::Accept,
            Err(reason) => {
                debug!(from = %source, author = ?message.source, ?reason, "gossip message refused");
                MessageAcceptance::Reject
            }
        };
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub.report_message_validation_result(&id, &source, acceptance);
    }
}
