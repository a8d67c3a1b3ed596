//! Rotating the network secret (a member removed or departed, a lost tiebreak, the periodic
//! rotation): the new secret sealed to each
//! remaining member's PQ4 card and published under the current key, and a received rotation
//! opened and adopted when it wins over the epoch in use. The core rules when to rotate and
//! keeps the last rotation for late members; the secrets themselves never enter it.

use std::time::Instant;

use constella_behaviours::NetworkSecret;
use constella_behaviours::gossip::{Rotation, SealedFor};
use constella_behaviours::network_keys::{self, GossipKey, Purpose};
use constella_behaviours::node::Input;
use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::event_loop::EventLoop;
use crate::state::unix_now;

impl EventLoop {
    /// Makes a new secret for the next epoch, seals it to every remaining member's PQ4 card,
    /// publishes the rotation under the current key, then adopts it.
    pub(super) fn rotate(&mut self) {
        let started = Instant::now();
        let secret = NetworkSecret::generate();
        let epoch = self.state.secret_epoch + 1;
        let local = self.core.local().id;
        let plain = rotation_plaintext(epoch, &secret);
        let mut sealed = Vec::new();
        let mut without_card = Vec::new();
        for (id, record) in self.core.membership().remote_members() {
            if record.left {
                continue;
            }
            let blob = record.card.as_ref().map(|card| {
                network_keys::seal_to(&self.keys.pq4, id, card, Purpose::Rotation, &plain)
            });
            match blob {
                Some(Ok(blob)) => sealed.push(SealedFor { to: *id, blob }),
                Some(Err(error)) => {
                    warn!(member = %record.name, %error, "cannot seal the new secret to this member")
                }
                None => without_card.push(record.name.clone()),
            }
        }
        if !without_card.is_empty() {
            warn!(
                nodes = ?without_card,
                "these members have no PQ4 card (an older constella) and get no copy of the new secret; upgrade them and invite them again"
            );
        }
        let members = sealed.len();
        let rotation = Rotation {
            from: local,
            epoch,
            sealed,
            made_at: unix_now(),
        };
        // Published under the current key, which every remaining member still holds.
        self.feed(Input::Rotated {
            rotation: &rotation,
            publish: true,
            unix_now: unix_now(),
            replaced_ours: false,
        });
        self.state.last_rotation = Some(rotation);
        self.adopt(secret, epoch, local);
        info!(
            epoch,
            members,
            ms = started.elapsed().as_millis() as u64,
            "rotated the network secret"
        );
    }

    /// A rotation from a member: opens the copy sealed to this node and adopts it if it wins
    /// over the epoch in use (a higher epoch, or the same one from a smaller node id).
    pub(super) fn on_rotation(&mut self, rotation: &Rotation) {
        if !rotation.wins_over(self.state.secret_epoch, self.gossip.rotated_from()) {
            return;
        }
        let local = self.core.local().id;
        let Some(copy) = rotation.sealed.iter().find(|s| s.to == local) else {
            debug!(epoch = rotation.epoch, from = %rotation.from, "a rotation without a copy for this node");
            return;
        };
        let Some(card) = self
            .core
            .membership()
            .record(&rotation.from)
            .and_then(|r| r.card.clone())
        else {
            debug!(from = %rotation.from, "a rotation from a member without a PQ4 card");
            return;
        };
        // Sealed to our card as the maker knew it: the previous one right after `rotate-keys`.
        let opened =
            network_keys::open_from(&mut self.keys.pq4, &local, Purpose::Rotation, &copy.blob)
                .or_else(|error| match &mut self.keys.previous_pq4 {
                    Some(previous) => {
                        network_keys::open_from(previous, &local, Purpose::Rotation, &copy.blob)
                    }
                    None => Err(error),
                })
                .map_err(|e| e.to_string())
                .and_then(|(sender, plain)| {
                    if card.identity().ok().as_ref() != Some(&sender) {
                        return Err("not sealed by the rotating member's PQ4 identity".to_owned());
                    }
                    parse_rotation_plaintext(&plain)
                        .filter(|(epoch, _)| *epoch == rotation.epoch)
                        .ok_or_else(|| "malformed contents".to_owned())
                });
        match opened {
            Ok((epoch, secret)) => {
                // Seed 004 §13: the maker of the rotation that lost is told; the core rotates
                // again if the winner still reaches a node that is no longer a member.
                let replaced_ours =
                    self.gossip.rotated_from() == Some(&local) && epoch == self.state.secret_epoch;
                if replaced_ours {
                    warn!(
                        epoch,
                        winner = %self.core.name_of(&rotation.from),
                        "our rotation of this epoch lost the tiebreak to another member's; adopted theirs (rotating again if it still reaches a departed node)"
                    );
                }
                self.state.last_rotation = Some(rotation.clone());
                self.adopt(secret, epoch, rotation.from);
                self.feed(Input::Rotated {
                    rotation,
                    publish: false,
                    unix_now: unix_now(),
                    replaced_ours,
                });
                info!(epoch, from = %self.core.name_of(&rotation.from), "adopted a rotated network secret");
            }
            Err(error) => warn!(from = %rotation.from, %error, "refused a rotation"),
        }
    }

    /// Uses `secret` of `epoch` from now on (the previous key is still opened) and writes it.
    fn adopt(&mut self, secret: NetworkSecret, epoch: u64, from: PeerId) {
        self.gossip.adopt(GossipKey::derive(&secret, epoch), from);
        self.state.network_secret = Some(crate::state::StoredSecret::from_secret(&secret));
        self.state.secret_epoch = epoch;
        self.keys.secret = secret;
        self.persist(self.core.snapshot(), None);
    }
}

/// What a rotation seals to each member: `epoch (u64 BE) ‖ secret (64 hex digits)`.
fn rotation_plaintext(epoch: u64, secret: &NetworkSecret) -> zeroize::Zeroizing<Vec<u8>> {
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(72));
    plain.extend_from_slice(&epoch.to_be_bytes());
    plain.extend_from_slice(secret.to_hex().as_bytes());
    plain
}

fn parse_rotation_plaintext(plain: &[u8]) -> Option<(u64, NetworkSecret)> {
    let (epoch, hex) = plain.split_at_checked(8)?;
    let epoch = u64::from_be_bytes(epoch.try_into().ok()?);
    let secret = NetworkSecret::from_hex(std::str::from_utf8(hex).ok()?).ok()?;
    Some((epoch, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_plaintext_round_trips_and_refuses_short_or_garbled_input() {
        let secret = NetworkSecret::generate();
        let plain = rotation_plaintext(7, &secret);
        let (epoch, back) = parse_rotation_plaintext(&plain).expect("parses");
        assert_eq!(epoch, 7);
        assert_eq!(back.to_hex().as_str(), secret.to_hex().as_str());
        assert!(parse_rotation_plaintext(&plain[..5]).is_none());
        let mut garbled = plain.to_vec();
        garbled[9] = b'z';
        assert!(parse_rotation_plaintext(&garbled).is_none());
    }
}
