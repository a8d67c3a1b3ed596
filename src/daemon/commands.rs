//! The client commands ([`Command`]): each becomes a core input, an RPC to another member, or
//! an answer read from the core; replies the core must rule on first wait in
//! [`Replies`](super::replies::Replies).

use constella_behaviours::node::Input;
use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::info;

use super::Command;
use super::error::ClientError;
use super::event_loop::EventLoop;
use super::report::{self, InviteReport};
use super::rpc::{Followup, RebootAsk};
use crate::link::JoinLink;
use crate::state::{NetworkState, unix_now};
use crate::validate::{HostPort, Ttl};

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let listeners = self.swarm.listeners().map(ToString::to_string).collect();
                let connected = self.swarm.connected_peers().count();
                let mut report = report::status(
                    &self.core,
                    &self.state,
                    self.started,
                    (listeners, connected),
                    &self.signals.bot.snapshot(),
                );
                report.reachability = self.nat.reachability().to_owned();
                report.relays = self.nat.relay_names(&self.core);
                report.nat = self.nat.counters();
                drop(reply.send(report));
            }
            Command::Peers(reply) => {
                let mut view = self.core.view();
                self.nat.annotate_links(&mut view);
                drop(reply.send(view));
            }
            Command::Invite(ttl, reply) => self.create_invite(ttl, reply),
            Command::Leave(reply) => {
                if self.replies.leave(reply) {
                    self.feed(Input::Leave);
                }
            }
            Command::Remove(target, reply) => {
                let result = match self.core.resolve(&target) {
                    None => Err(ClientError::UnknownNode(target)),
                    Some(peer) if peer == self.core.local().id => Err(ClientError::Invalid(
                        "that is this node: use `constella leave` on it".to_owned(),
                    )),
                    Some(peer) => {
                        let name = self.core.name_of(&peer);
                        info!(event = "member_removed", member = %name, member_id = %peer, "removing a member; the network secret will be rotated");
                        self.feed(Input::Remove {
                            peer,
                            unix_now: unix_now(),
                        });
                        Ok(name)
                    }
                };
                let _ = reply.send(result);
            }
            Command::RotateKeys(reply) => {
                let local = self.core.local().id;
                let result = super::node_keys::rotate(&mut self.keys, &local);
                if let Ok(rotated) = &result {
                    info!(fingerprint = %rotated.fingerprint, chain = rotated.chain, "replaced this node's PQ4 identity (key update signed by the old one)");
                    self.feed_own_card();
                }
                let _ = reply.send(result);
            }
            Command::MergeSettings(settings, reply) => {
                self.feed(Input::MergeSettings(&settings));
                let _ = reply.send(self.core.settings().clone());
            }
            Command::MergeSettingsDurably(settings, reply) => {
                self.feed(Input::MergeSettings(&settings));
                let merged = self.core.settings().clone();
                let (durable, written) = oneshot::channel();
                self.persist_durably(durable);
                // Answered off the loop once the store thread has written it.
                tokio::spawn(async move {
                    let result = match written.await {
                        Ok(Ok(())) => Ok(merged),
                        Ok(Err(error)) => Err(ClientError::Storage(error)),
                        Err(_) => Err(ClientError::ShuttingDown),
                    };
                    let _ = reply.send(result);
                });
            }
            Command::PeersOf(target, reply) => {
                self.rpc.peers(&mut self.swarm, &self.core, &target, reply);
            }
            Command::Stats(target, reply) => {
                self.rpc.stats(&mut self.swarm, &self.core, &target, reply);
            }
            Command::History(target, request, reply) => {
                let (swarm, core) = (&mut self.swarm, &self.core);
                self.rpc.history(swarm, core, &target, request, reply);
            }
            Command::Reboot {
                target,
                requested_by,
                reply,
                by,
                confirmation,
            } => {
                let ask = RebootAsk {
                    requested_by,
                    by,
                    confirmation,
                };
                let followup = self
                    .rpc
                    .reboot(&mut self.swarm, &self.core, &target, ask, reply);
                self.follow(followup);
            }
            Command::Docker {
                target,
                request,
                by,
                reply,
            } => {
                let request = (request, by);
                self.rpc
                    .docker(&mut self.swarm, &self.core, &target, request, reply);
            }
            Command::ContainerAlert(alert) => self.rpc.alert(&mut self.swarm, &self.core, alert),
            Command::Services {
                target,
                request,
                by,
                reply,
            } => {
                let (swarm, core) = (&mut self.swarm, &self.core);
                self.rpc
                    .services(swarm, core, &target, (request, by), reply);
            }
            Command::BotToken { target, reply } => {
                self.rpc
                    .bot_token(&mut self.swarm, &self.core, &target, reply);
            }
        }
    }

    /// Carries out what an RPC exchange left for the core or the store.
    pub(super) fn follow(&mut self, followup: Followup) {
        match followup {
            Followup::None => {}
            Followup::Stranger(peer) => self.feed(Input::StrangerRefused(peer)),
            Followup::Persist => self.persist(self.core.snapshot(), None),
            Followup::Claimed(settings) => {
                self.feed(Input::MergeSettings(&settings));
                self.persist(self.core.snapshot(), None);
            }
        }
    }

    /// Makes a token and its link; the core records the invite, and the link is handed out
    /// only once the record is durable.
    fn create_invite(
        &mut self,
        ttl: Ttl,
        reply: oneshot::Sender<Result<InviteReport, ClientError>>,
    ) {
        let link = match InviteLink::new(&self.state, self.core.local().id, ttl) {
            Ok(link) => link,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let token_sha256 = constella_behaviours::join::token_hash(&link.token);
        let unix_now = unix_now();
        let report = InviteReport {
            link: link.text,
            expires_at: unix_now + ttl.duration().as_secs(),
            ttl: ttl.to_string(),
        };
        let request = self.replies.invite(report, reply);
        self.feed(Input::IssueInvite {
            request,
            token_sha256: &token_sha256,
            unix_now,
            ttl_secs: ttl.duration().as_secs(),
        });
    }
}

/// A new join link of this node: the token goes to the joiner, its hash to the core.
struct InviteLink {
    token: String,
    text: String,
}

impl InviteLink {
    fn new(state: &NetworkState, local: PeerId, ttl: Ttl) -> Result<Self, ClientError> {
        let mut raw = [0u8; 16];
        rand::fill(&mut raw);
        let token = hex::encode(raw);
        let seed: HostPort = state
            .node
            .public_addr
            .parse()
            .map_err(ClientError::Invalid)?;
        let link = JoinLink {
            seed,
            network_id: state.network_id.clone(),
            token: token.clone(),
            ttl: Some(ttl.to_string()),
            peer: local,
        };
        Ok(Self {
            token,
            text: link.to_string(),
        })
    }
}
