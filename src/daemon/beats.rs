//! The event loop's side of the beat protocol ([`constella_behaviours::beat`]): a heartbeat
//! the core wants sent is sealed once under the current gossip key and the same bytes go to
//! every recipient; a frame that arrives is opened and must hold a heartbeat before the core
//! sees it (the core then checks that its author is the connection's peer).

use std::sync::Arc;

use constella_behaviours::gossip::{self, GossipBody, GossipError, Heartbeat};
use constella_behaviours::network_keys::GossipKey;
use constella_behaviours::node::{Input, Refusal};
use constella_behaviours::{Behaviour, beat};
use libp2p::{PeerId, Swarm};
use tracing::debug;

use super::event_loop::EventLoop;

/// Seals `heartbeat` under `key` and queues it for each of `to`.
pub(super) fn send(
    swarm: &mut Swarm<Behaviour>,
    key: &GossipKey,
    to: &[PeerId],
    heartbeat: Heartbeat,
) {
    if !heartbeat.doubts.is_empty() || heartbeat.vouch.is_some() {
        // The failure detector at work (docs/design.md, Failure detector): debug only, it
        // happens on every lossy link.
        tracing::debug!(
            to = ?to,
            seq = heartbeat.seq,
            doubts = ?heartbeat.doubts.iter().map(|d| d.0).collect::<Vec<_>>(),
            vouch = ?heartbeat.vouch,
            "beat: asking or vouching"
        );
    }
    let frame: Arc<[u8]> = gossip::seal(key, &GossipBody::Heartbeat(heartbeat)).into();
    let beat = &mut swarm.behaviour_mut().beat;
    for peer in to {
        beat.send(*peer, Arc::clone(&frame));
    }
}

/// Opens a frame with any of `keys` (the current epoch's, then the previous one during a
/// rotation); anything but a heartbeat is refused as malformed.
pub(super) fn open(keys: &[GossipKey], frame: &[u8]) -> Result<Heartbeat, Refusal> {
    match gossip::open_any(keys, frame) {
        Ok(GossipBody::Heartbeat(heartbeat)) => {
            if !heartbeat.doubts.is_empty() || heartbeat.vouch.is_some() {
                tracing::debug!(
                    from = %heartbeat.node_id,
                    seq = heartbeat.seq,
                    doubts = ?heartbeat.doubts.iter().map(|d| d.0).collect::<Vec<_>>(),
                    vouch = ?heartbeat.vouch,
                    "beat: asked or vouched"
                );
            }
            Ok(heartbeat)
        }
        Ok(_) => Err(Refusal::Malformed),
        Err(GossipError::BadMac | GossipError::OtherEpoch(_)) => Err(Refusal::BadMac),
        Err(GossipError::IncompatibleVersion(_)) => Err(Refusal::IncompatibleVersion),
        Err(GossipError::TooLarge(_) | GossipError::Malformed) => Err(Refusal::Malformed),
    }
}

impl EventLoop {
    /// A beat-protocol event: a received frame is opened and its heartbeat handed to the core.
    pub(super) fn on_beat_event(&mut self, event: beat::Event) {
        match event {
            beat::Event::Received { peer, frame } => match open(self.gossip.keys(), &frame) {
                Ok(heartbeat) => self.feed(Input::Heartbeat {
                    from: peer,
                    heartbeat: &heartbeat,
                    place: None,
                }),
                Err(refusal) => self.feed(Input::GossipRefused(refusal)),
            },
            beat::Event::Unsupported { peer } => {
                debug!(%peer, "peer does not speak the beat protocol");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use constella_behaviours::NetworkSecret;
    use constella_behaviours::gossip::{Goodbye, PROTOCOL_VERSION};

    use super::*;

    fn heartbeat(node_id: PeerId) -> Heartbeat {
        Heartbeat {
            node_id,
            name: "a".into(),
            priority: 10,
            addrs: vec!["/ip4/10.0.0.1/tcp/4747".into()],
            seq: 1 << 32 | 1,
            protocol_version: PROTOCOL_VERSION,
            uptime_secs: 3,
            doubts: Vec::new(),
            vouch: None,
            probe: false,
        }
    }

    #[test]
    fn a_sealed_heartbeat_opens_only_under_the_networks_key_and_only_as_a_heartbeat() {
        let key = GossipKey::derive(&NetworkSecret::generate(), 1);
        let other = GossipKey::derive(&NetworkSecret::generate(), 1);
        let id = PeerId::random();
        let frame = gossip::seal(&key, &GossipBody::Heartbeat(heartbeat(id)));
        assert!(frame.len() <= constella_behaviours::beat::MAX_FRAME_BYTES);
        assert_eq!(open(std::slice::from_ref(&key), &frame), Ok(heartbeat(id)));
        assert_eq!(open(&[other], &frame), Err(Refusal::BadMac));
        let mut altered = frame.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            open(std::slice::from_ref(&key), &altered),
            Err(Refusal::BadMac)
        );
        let goodbye = gossip::seal(
            &key,
            &GossipBody::Goodbye(Goodbye {
                node_id: id,
                seq: 2,
            }),
        );
        assert_eq!(open(&[key], &goodbye), Err(Refusal::Malformed));
    }
}
