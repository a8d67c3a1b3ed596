//! The members' request-response protocols the core answers: roster sync (push-pull of
//! records, answered from the core's own reply) and Join (checked for its own contents by
//! [`Admissions`](super::admission::Admissions), ruled on by the core, answered when the
//! core's [`Output::JoinAnswer`] arrives).

use constella_behaviours::join::{JoinRequest, JoinResponse, JoinStep};
use constella_behaviours::node::{Input, Output};
use constella_behaviours::sync::{SyncMessage, SyncResponse};
use libp2p::PeerId;
use libp2p::request_response::{self, Message, ResponseChannel};
use tracing::debug;

use super::event_loop::EventLoop;
use crate::state::unix_now;

impl EventLoop {
    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<SyncMessage, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let input = Input::SyncRequest {
                    from: peer,
                    message: &request,
                };
                let reply = self.feed_and_take(input, |o| match o {
                    Output::SyncReply { message, .. } => Some((**message).clone()),
                    _ => None,
                });
                if reply.is_none() {
                    debug!(%peer, "sync refused: not a member");
                    self.feed(Input::StrangerRefused(peer));
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, reply);
            }
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        response: Some(message),
                        ..
                    },
                ..
            } => self.feed(Input::SyncAnswer {
                from: peer,
                message: &message,
            }),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "roster sync failed");
            }
            _ => {}
        }
    }

    pub(super) fn on_join_request(
        &mut self,
        peer: PeerId,
        request: JoinRequest,
        channel: ResponseChannel<JoinResponse>,
    ) {
        let (swarm, state) = (&mut self.swarm, &self.state);
        let Some(ask) = self
            .admissions
            .receive(swarm, state, peer, &request, channel)
        else {
            return;
        };
        if request.step == JoinStep::Confirm {
            self.feed(Input::JoinConfirm(peer));
            return;
        }
        self.feed(Input::JoinRequest {
            peer,
            token: &request.token,
            name: &ask.name,
            addr: &ask.addr,
            priority: request.priority,
            unix_now: unix_now(),
            confirms: request.step == JoinStep::AskThenConfirm,
            card: request.card.as_ref(),
        });
    }
}
