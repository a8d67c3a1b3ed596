//! The chat client's connection to a member: the local node's `STATE_DIR/pq4.sock`
//! (length-prefixed CBOR frames of [`Request`]/[`Response`]), or with `--via MULTIADDR` any
//! member over libp2p, speaking only `/constella/pq4/1.0.0` as a non-member client with a
//! fresh PeerId. Such a client must log in as its account before anything but register and
//! login is answered; [`Link::authenticate`] does that, and again after a reconnection (a
//! member closes a non-member's connection after a while).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use constella_behaviours::pq4::{self, Bytes, Op, Request, Response};
use futures::StreamExt;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::daemon::chat::{SOCKET, read_frame, write_frame};

/// How long one operation may take (a registration asks three holders three times).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Reply = oneshot::Sender<Result<Response, String>>;

/// Dials one request may have before its failure is reported.
const DIALS: u32 = 3;

/// A connection to the messaging service.
#[derive(Debug)]
pub struct Link {
    transport: Transport,
    /// The account and its login verifier, to log in again after a reconnection.
    login: Option<(String, Zeroizing<Vec<u8>>)>,
}

#[derive(Debug)]
enum Transport {
    Local(UnixStream),
    Via {
        addr: Multiaddr,
        requests: mpsc::Sender<(Request, Reply)>,
    },
}

impl Link {
    /// Connects to the local member (`state_dir`), or to `via` over libp2p.
    pub async fn connect(state_dir: &Path, via: Option<&str>) -> Result<Self> {
        let transport = match via {
            Some(via) => {
                let addr: Multiaddr = via
                    .parse()
                    .map_err(|e| anyhow!("--via {via:?} is not a multiaddr: {e}"))?;
                let requests = dial(addr.clone())?;
                Transport::Via { addr, requests }
            }
            None => {
                let path = state_dir.join(SOCKET);
                let stream = UnixStream::connect(&path).await.with_context(|| {
                    format!(
                        "the constella daemon is not running (no chat service on {})",
                        path.display()
                    )
                })?;
                Transport::Local(stream)
            }
        };
        Ok(Self {
            transport,
            login: None,
        })
    }

    /// Logs in as `username` with the verifier (`--via` only: the local socket is the node
    /// operator's and needs no login).
    pub async fn authenticate(&mut self, username: &str, verifier: &[u8]) -> Result<()> {
        if matches!(self.transport, Transport::Local(_)) {
            return Ok(());
        }
        self.login = Some((username.to_owned(), Zeroizing::new(verifier.to_vec())));
        self.log_in().await
    }

    async fn log_in(&mut self) -> Result<()> {
        let Some((username, verifier)) = self.login.clone() else {
            return Ok(());
        };
        let start = Op::LoginStart {
            username: username.clone(),
        };
        let nonce = match self.exchange(start).await? {
            Response::LoginChallenge { nonce, .. } => nonce,
            other => return Err(answer_error(other)),
        };
        let finish = Op::LoginFinish {
            username: username.clone(),
            mac: Bytes(pq4::login_mac(&verifier, &nonce.0, &username)),
            nonce,
        };
        match self.exchange(finish).await? {
            Response::LoggedIn { .. } => Ok(()),
            other => Err(answer_error(other)),
        }
    }

    /// One request and its answer; over `--via`, a lost connection is dialled again (and the
    /// login repeated) once.
    pub async fn call(&mut self, op: Op) -> Result<Response> {
        match self.exchange(op.clone()).await {
            Err(error) if matches!(self.transport, Transport::Via { .. }) => {
                let Transport::Via { addr, .. } = &self.transport else {
                    return Err(error);
                };
                let addr = addr.clone();
                self.transport = Transport::Via {
                    requests: dial(addr.clone())?,
                    addr,
                };
                self.log_in().await.context("logging in again")?;
                self.exchange(op).await
            }
            other => other,
        }
    }

    async fn exchange(&mut self, op: Op) -> Result<Response> {
        let request = Request::new(op);
        match &mut self.transport {
            Transport::Local(stream) => {
                let mut out = Vec::new();
                ciborium::into_writer(&request, &mut out).context("cannot encode the request")?;
                let exchange = async {
                    write_frame(stream, &out).await?;
                    read_frame(stream, pq4::MAX_RESPONSE_BYTES as usize).await
                };
                let frame = tokio::time::timeout(CALL_TIMEOUT, exchange)
                    .await
                    .context("the node did not answer within 30 s")?
                    .context("the connection to the node failed")?
                    .context("the node closed the connection")?;
                ciborium::from_reader(frame.as_slice()).context("the node's answer is malformed")
            }
            Transport::Via { addr, requests } => {
                let (reply, answer) = oneshot::channel();
                requests
                    .send((request, reply))
                    .await
                    .map_err(|_| anyhow!("the connection to {addr} is gone"))?;
                tokio::time::timeout(CALL_TIMEOUT, answer)
                    .await
                    .with_context(|| format!("{addr} did not answer within 30 s"))?
                    .map_err(|_| anyhow!("the connection to {addr} is gone"))?
                    .map_err(|e| anyhow!("{addr}: {e}"))
            }
        }
    }
}

fn answer_error(response: Response) -> anyhow::Error {
    match response {
        Response::Error { kind, message } => anyhow!("{kind:?}: {message}"),
        other => anyhow!("unexpected answer: {other:?}"),
    }
}

/// Starts a client swarm (fresh identity, only the pq4 protocol) that talks to the member at
/// `addr` (which must end in `/p2p/PEERID`, so noise proves whom we reached).
fn dial(addr: Multiaddr) -> Result<mpsc::Sender<(Request, Reply)>> {
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        bail!("--via {addr}: the multiaddr must end in /p2p/<node id> of the member");
    };
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = crate::daemon::build_swarm(key, |_| {
        Ok(pq4::behaviour(constella_behaviours::RPC_TIMEOUT))
    })?;
    swarm.add_peer_address(peer, addr);
    let (tx, mut rx) = mpsc::channel::<(Request, Reply)>(8);
    tokio::spawn(async move {
        // Each request with its reply and how many dials it has had.
        let mut pending: std::collections::HashMap<OutboundRequestId, (Request, Reply, u32)> =
            std::collections::HashMap::new();
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some((request, reply)) => {
                        let id = swarm.behaviour_mut().send_request(&peer, request.clone());
                        pending.insert(id, (request, reply, 1));
                    }
                    None => break,
                },
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) => {
                        if let Some((_, reply, _)) = pending.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    // A dial that failed never reached the member (a busy member can take
                    // longer than the connect timeout to finish the handshake): try again.
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        error: request_response::OutboundFailure::DialFailure,
                        ..
                    }) if pending.get(&request_id).is_some_and(|(_, _, dials)| *dials < DIALS) => {
                        if let Some((request, reply, dials)) = pending.remove(&request_id) {
                            let id = swarm.behaviour_mut().send_request(&peer, request.clone());
                            pending.insert(id, (request, reply, dials + 1));
                        }
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id, error, ..
                    }) => {
                        if let Some((_, reply, _)) = pending.remove(&request_id) {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. }
                        if peer_id == peer =>
                    {
                        // Answers still owed on the closed connection will not come.
                        for (_, (_, reply, _)) in pending.drain() {
                            let _ = reply.send(Err("the member closed the connection".into()));
                        }
                        break;
                    }
                    _ => {}
                },
            }
        }
    });
    Ok(tx)
}
