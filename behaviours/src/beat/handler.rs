//! One connection's side of the beat protocol: one long-lived outbound stream that carries
//! the frames the behaviour hands over, and the inbound stream the remote opened, read frame
//! by frame. Neither stream keeps the connection alive (the membership rules decide which
//! connections stay), and nothing here keeps a timer: the core decides when to send, and
//! the silence of a member is the core's to judge.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::StreamProtocol;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamUpgradeError, SubstreamProtocol,
};

use super::protocol::{self, PROTOCOL_NAME};

/// Frames waiting while the stream opens or the previous frame is being written. A heartbeat
/// supersedes the one before it, so a connection that cannot keep up loses the oldest rather
/// than buffering without bound.
pub const MAX_QUEUED_FRAMES: usize = 2;

/// What a connection reports to the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// A frame arrived from the remote (not yet opened or checked).
    Frame(Vec<u8>),
    /// The remote does not speak the beat protocol: nothing is sent on this connection.
    Unsupported,
}

type SendFuture = BoxFuture<'static, io::Result<Stream>>;
type RecvFuture = BoxFuture<'static, io::Result<(Stream, Vec<u8>)>>;

enum Outbound {
    /// The stream is being negotiated.
    Opening,
    /// Open, nothing to write.
    Idle(Stream),
    /// A frame is being written.
    Sending(SendFuture),
    /// The remote does not speak the protocol (reported once).
    Unsupported { reported: bool },
}

/// The beat protocol's connection handler.
pub struct Handler {
    queue: VecDeque<Arc<[u8]>>,
    outbound: Option<Outbound>,
    inbound: Option<RecvFuture>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            outbound: None,
            inbound: None,
        }
    }

    fn on_dial_upgrade_error(&mut self, error: StreamUpgradeError<Infallible>) {
        self.outbound = match error {
            StreamUpgradeError::NegotiationFailed => {
                self.queue.clear();
                Some(Outbound::Unsupported { reported: false })
            }
            // Open again for the next frame.
            StreamUpgradeError::Timeout | StreamUpgradeError::Io(_) => None,
            StreamUpgradeError::Apply(never) => match never {},
        };
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Arc<[u8]>;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL_NAME), ())
    }

    fn on_behaviour_event(&mut self, frame: Arc<[u8]>) {
        if matches!(self.outbound, Some(Outbound::Unsupported { .. })) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED_FRAMES {
            self.queue.pop_front();
        }
        self.queue.push_back(frame);
    }

    fn connection_keep_alive(&self) -> bool {
        false
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(inbound) = self.inbound.as_mut() {
            match inbound.poll_unpin(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok((stream, frame))) => {
                    self.inbound = Some(protocol::recv_frame(stream).boxed());
                    // Polled again at once by the swarm, which re-arms the read's waker.
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                        HandlerEvent::Frame(frame),
                    ));
                }
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "inbound beat stream ended");
                    self.inbound = None;
                }
            }
        }
        loop {
            match self.outbound.take() {
                Some(Outbound::Unsupported { reported }) => {
                    self.outbound = Some(Outbound::Unsupported { reported: true });
                    if !reported {
                        return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                            HandlerEvent::Unsupported,
                        ));
                    }
                    return Poll::Pending;
                }
                Some(Outbound::Opening) => {
                    self.outbound = Some(Outbound::Opening);
                    return Poll::Pending;
                }
                Some(Outbound::Sending(mut sending)) => match sending.poll_unpin(cx) {
                    Poll::Pending => {
                        self.outbound = Some(Outbound::Sending(sending));
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(stream)) => self.outbound = Some(Outbound::Idle(stream)),
                    Poll::Ready(Err(error)) => {
                        // Reopened for the next frame; this one is lost, as on a lossy link.
                        tracing::debug!(%error, "outbound beat stream failed");
                    }
                },
                Some(Outbound::Idle(stream)) => match self.queue.pop_front() {
                    Some(frame) => {
                        let sending = async move { protocol::send_frame(stream, &frame).await };
                        self.outbound = Some(Outbound::Sending(sending.boxed()));
                    }
                    None => {
                        self.outbound = Some(Outbound::Idle(stream));
                        return Poll::Pending;
                    }
                },
                None if self.queue.is_empty() => return Poll::Pending,
                None => {
                    self.outbound = Some(Outbound::Opening);
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL_NAME), ()),
                    });
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                // A newer stream from the remote replaces the old one (it reopened after an
                // error on its side).
                self.inbound = Some(protocol::recv_frame(stream).boxed());
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = Some(Outbound::Idle(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.on_dial_upgrade_error(error);
            }
            _ => {}
        }
    }
}
