//! The seed side of a Join, as far as the wire goes: the checks of a request's own contents
//! (network id, name, address), the answer channels waiting for the core's ruling, and the
//! answer itself, to which the daemon adds the secrets the core never holds, sealed to the
//! joiner's PQ4 card ([`constella_behaviours::network_keys::seal_to`]: X448 + ML-KEM-1024), so that
//! the Join response carries none of them in the clear. Whether a token is good, a name free,
//! and when the joiner is admitted are the core's rules.

use std::collections::HashMap;
use std::time::Instant;

use constella_behaviours::Behaviour;
use constella_behaviours::join::{JoinAccepted, JoinRefusal, JoinRequest, JoinResponse, JoinStep};
use constella_behaviours::node::Admission;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId, Swarm};
use tracing::{debug, info, warn};

use super::log_limit::LogLimit;

use super::Keys;
use crate::state::NetworkState;
use constella_behaviours::join::JoinSecrets;
use constella_behaviours::network_keys::{self, Pq4Card, Purpose};

/// The answer to a confirmation: the admission stands; no secrets.
fn confirmed(state: &NetworkState, admission: Admission) -> JoinAccepted {
    JoinAccepted {
        network_id: state.network_id.clone(),
        network_secret: String::new(),
        owner_username: String::new(),
        record: admission.record,
        members: admission.members,
        bot_token: None,
        settings: Default::default(),
        sealed: Vec::new(),
    }
}

/// The Join answer for an admission: the public parts in the clear, the secrets sealed to
/// `card`. A card that cannot be sealed to (its bundle fails to verify) refuses the join; the
/// core undoes the admission when the joiner never confirms.
pub(super) fn accepted(
    state: &NetworkState,
    keys: &Keys,
    peer: PeerId,
    card: &Pq4Card,
    admission: Admission,
) -> Result<JoinAccepted, JoinRefusal> {
    let secrets = JoinSecrets {
        network_secret: keys.secret.to_hex().to_string(),
        secret_epoch: state.secret_epoch,
        network_tag: state.tag(&keys.secret),
        owner_username: state.owner_username.clone(),
        bot_token: state.bot_token.as_ref().map(|t| t.expose().to_owned()),
        settings: admission.settings.clone(),
    };
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(4096));
    ciborium::into_writer(&secrets, &mut *plain)
        .map_err(|e| JoinRefusal::SeedFailure(format!("cannot encode the secrets: {e}")))?;
    let sealed = network_keys::seal_to(&keys.pq4, &peer, card, Purpose::JoinSecrets, &plain)
        .map_err(|e| JoinRefusal::Invalid(e.to_string()))?;
    Ok(JoinAccepted {
        sealed,
        ..confirmed(state, admission)
    })
}
use crate::validate::{HostPort, ServerName};

/// A request whose contents are valid: what the core rules on.
#[derive(Debug)]
pub(super) struct Ask {
    /// The server name asked for.
    pub name: String,
    /// The joiner's public address, given or observed (`host:port`).
    pub addr: String,
}

/// Joins waiting for the core's ruling, and where each connection came from.
#[derive(Default)]
pub(super) struct Admissions {
    /// Each waiting joiner's answer channel and the card its secrets will be sealed to (`None`
    /// for a confirmation: its answer only says the admission stands, the joiner has the
    /// secrets already, so nothing is sealed again).
    waiting: HashMap<PeerId, (ResponseChannel<JoinResponse>, Option<Pq4Card>)>,
    /// Remote address of the latest connection of each peer (for joiners without an address).
    remote_addrs: HashMap<PeerId, Multiaddr>,
    /// Refusals are logged at most once a minute per peer (an outsider can cause them).
    refusals: LogLimit,
}

impl std::fmt::Debug for Admissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admissions")
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl Admissions {
    pub(super) fn connected(&mut self, peer: PeerId, remote: &Multiaddr) {
        self.remote_addrs.insert(peer, remote.clone());
    }

    pub(super) fn disconnected(&mut self, peer: &PeerId) {
        self.remote_addrs.remove(peer);
    }

    /// Checks a request's own contents. A bad one is refused here and then; a good one waits
    /// for the core, which answers through [`Admissions::answer`].
    pub(super) fn receive(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        state: &NetworkState,
        peer: PeerId,
        request: &JoinRequest,
        channel: ResponseChannel<JoinResponse>,
    ) -> Option<Ask> {
        if self.waiting.contains_key(&peer) {
            let refusal = JoinRefusal::Invalid("a join of this node is already in progress".into());
            self.send(swarm, peer, channel, Err(refusal));
            return None;
        }
        match self.check(state, &peer, request) {
            Err(refusal) => {
                self.send(swarm, peer, channel, Err(refusal));
                None
            }
            Ok((ask, card)) => {
                let card = (request.step != JoinStep::Confirm).then_some(card);
                self.waiting.insert(peer, (channel, card));
                Some(ask)
            }
        }
    }

    fn check(
        &self,
        state: &NetworkState,
        peer: &PeerId,
        request: &JoinRequest,
    ) -> Result<(Ask, Pq4Card), JoinRefusal> {
        if request.network_id != state.network_id {
            return Err(JoinRefusal::WrongNetwork {
                actual: state.network_id.clone(),
            });
        }
        // Without a card the secrets could travel only under noise (X25519): refused, so
        // that a recorded join never yields them.
        let Some(card) = request.card.clone() else {
            return Err(JoinRefusal::Invalid(
                "the joiner sent no PQ4 card; upgrade constella on the joining node".to_owned(),
            ));
        };
        let name: ServerName = request.name.parse().map_err(JoinRefusal::Invalid)?;
        let addr = match &request.addr {
            Some(addr) => addr.parse::<HostPort>().map_err(JoinRefusal::Invalid)?,
            None => self.observed_address(peer, request.listen_port)?,
        };
        Ok((
            Ask {
                name: name.as_str().to_owned(),
                addr: addr.to_string(),
            },
            card,
        ))
    }

    fn observed_address(&self, peer: &PeerId, port: u16) -> Result<HostPort, JoinRefusal> {
        let ip = self.remote_addrs.get(peer).and_then(|addr| {
            addr.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(ip.to_string()),
                Protocol::Ip6(ip) => Some(ip.to_string()),
                _ => None,
            })
        });
        match ip {
            Some(host) if port != 0 => Ok(HostPort { host, port }),
            _ => Err(JoinRefusal::Invalid(
                "no public address given and none could be observed".to_owned(),
            )),
        }
    }

    /// Sends the core's ruling, with the network's secrets sealed to the joiner's card added
    /// to an admission.
    pub(super) fn answer(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        state: &NetworkState,
        keys: &Keys,
        peer: PeerId,
        answer: Result<Admission, JoinRefusal>,
    ) {
        let Some((channel, card)) = self.waiting.remove(&peer) else {
            return;
        };
        let response = answer.and_then(|admission| match &card {
            Some(card) => accepted(state, keys, peer, card, admission),
            None => Ok(confirmed(state, admission)),
        });
        self.send(swarm, peer, channel, response);
    }

    fn send(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        channel: ResponseChannel<JoinResponse>,
        response: JoinResponse,
    ) {
        match &response {
            Ok(accepted) => {
                info!(event = "member_admitted", member = %accepted.record.name, member_id = %peer, "admitted a new node");
            }
            Err(refusal) => {
                if let Some(held_back) = self.refusals.admit(peer, Instant::now()) {
                    warn!(from = %peer, %refusal, held_back, "join refused");
                }
            }
        }
        if swarm
            .behaviour_mut()
            .join
            .send_response(channel, response)
            .is_err()
        {
            debug!(from = %peer, "the joiner went away before the answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::NetworkSecret;
    use constella_behaviours::gossip::MemberRecord;
    use libp2p::identity::Keypair;

    fn state(secret: &NetworkSecret, bot_token: &str) -> NetworkState {
        serde_json::from_value(serde_json::json!({
            "network_id": "abcd1234",
            "owner_username": "@owner_secret_name",
            "network_secret": secret.to_hex().as_str(),
            "bot_token": bot_token,
            "peers": [],
            "format": 1,
            "node": {"name": "alpha", "node_id": PeerId::random().to_base58(),
                     "public_addr": "127.0.0.1:4747", "listen": "127.0.0.1:4747",
                     "priority": 10, "incarnation": 1},
        }))
        .unwrap()
    }

    fn record(id: PeerId, card: Option<Pq4Card>) -> MemberRecord {
        MemberRecord {
            node_id: id,
            name: "echo-02".into(),
            addr: "127.0.0.1:4800".into(),
            priority: 100,
            version: 1,
            left: false,
            card,
            admission: 0,
            removed_at: None,
            key_updates: Vec::new(),
            relays: Vec::new(),
        }
    }

    /// The Join answer as the codec puts it on the wire (CBOR) holds neither the network
    /// secret (raw or hex), nor the bot token, nor the owner: only the joiner's PQ4 keys open
    /// them. So a recording of the noise transport, decrypted with X25519 keys revealed later,
    /// yields none of them.
    #[test]
    fn the_join_answer_on_the_wire_holds_no_secret_and_only_the_joiner_opens_it() {
        let secret_bytes = [0x5a; 32];
        let secret = NetworkSecret::from_bytes(secret_bytes);
        let token = "123456789:AAE-the-bot-token-secret-part";
        let state = state(&secret, token);
        let seed_key = Keypair::generate_ed25519();
        let seed_pq4 = crate::state::StateDir::generate_pq4().unwrap();
        let seed_card = Pq4Card::new(&seed_key, &seed_pq4).unwrap();
        let keys = Keys {
            secret: secret.clone(),
            pq4: seed_pq4,
            card: seed_card.clone(),
            node_key: seed_key.clone(),
            key_updates: Vec::new(),
            previous_pq4: None,
            dir: crate::state::StateDir::new(std::env::temp_dir()),
        };
        let joiner_key = Keypair::generate_ed25519();
        let joiner = joiner_key.public().to_peer_id();
        let mut joiner_pq4 = crate::state::StateDir::generate_pq4().unwrap();
        let joiner_card = Pq4Card::new(&joiner_key, &joiner_pq4).unwrap();
        let admission = Admission {
            record: record(joiner, Some(joiner_card.clone())),
            members: vec![record(seed_key.public().to_peer_id(), Some(seed_card))],
            settings: Default::default(),
        };
        let answer = accepted(&state, &keys, joiner, &joiner_card, admission).unwrap();
        let response: JoinResponse = Ok(answer.clone());
        let mut wire = Vec::new();
        ciborium::into_writer(&response, &mut wire).unwrap();
        let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(&secret_bytes), "raw secret on the wire");
        assert!(
            !contains(secret.to_hex().as_bytes()),
            "hex secret on the wire"
        );
        assert!(!contains(token.as_bytes()), "bot token on the wire");
        assert!(
            !contains(b"the-bot-token"),
            "part of the bot token on the wire"
        );
        assert!(!contains(b"owner_secret_name"), "owner on the wire");

        // The joiner, and only the joiner, opens it.
        let (_, plain) = network_keys::open_from(
            &mut joiner_pq4,
            &joiner,
            Purpose::JoinSecrets,
            &answer.sealed,
        )
        .unwrap();
        let secrets: JoinSecrets = ciborium::from_reader(plain.as_slice()).unwrap();
        assert_eq!(secrets.network_secret, secret.to_hex().as_str());
        assert_eq!(secrets.bot_token.as_deref(), Some(token));
        assert_eq!(secrets.owner_username, "@owner_secret_name");
        assert_eq!(secrets.network_tag, network_keys::network_tag(&secret));
        let mut other = crate::state::StateDir::generate_pq4().unwrap();
        assert!(
            network_keys::open_from(&mut other, &joiner, Purpose::JoinSecrets, &answer.sealed)
                .is_err()
        );
    }

    #[test]
    fn a_card_of_another_node_is_refused() {
        let state = state(&NetworkSecret::from_bytes([1; 32]), "1:x");
        let seed_key = Keypair::generate_ed25519();
        let pq4 = crate::state::StateDir::generate_pq4().unwrap();
        let card = Pq4Card::new(&seed_key, &pq4).unwrap();
        let keys = Keys {
            secret: NetworkSecret::from_bytes([1; 32]),
            pq4,
            card: card.clone(),
            node_key: seed_key.clone(),
            key_updates: Vec::new(),
            previous_pq4: None,
            dir: crate::state::StateDir::new(std::env::temp_dir()),
        };
        let joiner = PeerId::random();
        let admission = Admission {
            record: record(joiner, None),
            members: vec![],
            settings: Default::default(),
        };
        // The seed's own card offered as the joiner's: not signed by the joiner.
        assert!(accepted(&state, &keys, joiner, &card, admission).is_err());
    }
}
