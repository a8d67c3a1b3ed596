//! The seed side of a Join, as far as the wire goes: the checks of a request's own contents
//! (network id, name, address), the answer channels waiting for the core's ruling, and the
//! answer itself, to which the daemon adds the secrets the core never holds. Whether a token
//! is good, a name free, and when the joiner is admitted are the core's rules.

use std::collections::HashMap;
use std::time::Instant;

use constella_behaviours::join::{JoinAccepted, JoinRefusal, JoinRequest, JoinResponse};
use constella_behaviours::node::Admission;
use constella_behaviours::{Behaviour, NetworkSecret};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId, Swarm};
use tracing::{debug, info, warn};

use super::log_limit::LogLimit;

use crate::state::{NetworkState, StoredSecret};
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
    waiting: HashMap<PeerId, ResponseChannel<JoinResponse>>,
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
            Ok(ask) => {
                self.waiting.insert(peer, channel);
                Some(ask)
            }
        }
    }

    fn check(
        &self,
        state: &NetworkState,
        peer: &PeerId,
        request: &JoinRequest,
    ) -> Result<Ask, JoinRefusal> {
        if request.network_id != state.network_id {
            return Err(JoinRefusal::WrongNetwork {
                actual: state.network_id.clone(),
            });
        }
        let name: ServerName = request.name.parse().map_err(JoinRefusal::Invalid)?;
        let addr = match &request.addr {
            Some(addr) => addr.parse::<HostPort>().map_err(JoinRefusal::Invalid)?,
            None => self.observed_address(peer, request.listen_port)?,
        };
        Ok(Ask {
            name: name.as_str().to_owned(),
            addr: addr.to_string(),
        })
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

    /// Sends the core's ruling, with the network's secrets added to an admission.
    pub(super) fn answer(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        state: &NetworkState,
        secret: &NetworkSecret,
        peer: PeerId,
        answer: Result<Admission, JoinRefusal>,
    ) {
        let Some(channel) = self.waiting.remove(&peer) else {
            return;
        };
        let response = answer.map(|admission| JoinAccepted {
            network_id: state.network_id.clone(),
            network_secret: StoredSecret::from_secret(secret).expose().to_owned(),
            owner_username: state.owner_username.clone(),
            record: admission.record,
            members: admission.members,
            bot_token: state.bot_token.as_ref().map(|t| t.expose().to_owned()),
            settings: admission.settings,
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
                info!(node = %accepted.record.name, node_id = %peer, "admitted a new node");
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
