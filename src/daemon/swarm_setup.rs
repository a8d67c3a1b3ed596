//! Building and starting the Swarm: the transport (TCP + noise + yamux, with the connect
//! bound), listening on the configured address, announcing the public one, subscribing to the
//! network's gossip topic; and turning the core's address texts into multiaddrs to dial.
//! Bytes on connections through relays are counted ([`RelayedBytes`], docs/nat.md).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};

use anyhow::{Context, Result, bail};
use constella_behaviours::{Behaviour, CONNECT_TIMEOUT, gossip_topic, kad_protocol};
use libp2p::core::transport::OptionalTransport;
use libp2p::gossipsub::IdentTopic;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, StreamProtocol, Swarm, SwarmBuilder, noise, relay, tcp, yamux};

use super::Keys;
use crate::state::NetworkState;
use crate::validate::HostPort;

/// Connections are kept open: the full mesh is how members see each other die at once.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Builds a Swarm over TCP + noise + yamux for the given behaviour.
pub fn build_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> Result<B>,
) -> Result<Swarm<B>> {
    build(key, None, behaviour)
}

/// Bytes this node sent and received on connections through relays (below noise and yamux:
/// what the relays forward for it), since the start. Shared by the transport and the daemon.
#[derive(Debug, Clone, Default)]
pub struct RelayedBytes(Arc<[AtomicU64; 2]>);

impl RelayedBytes {
    /// (sent, received).
    pub fn get(&self) -> (u64, u64) {
        (
            self.0[0].load(Ordering::Relaxed),
            self.0[1].load(Ordering::Relaxed),
        )
    }
}

/// A relayed connection whose bytes go to a [`RelayedBytes`].
struct Counted<C> {
    inner: C,
    bytes: RelayedBytes,
}

impl<C: AsyncRead + Unpin> AsyncRead for Counted<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.0[1].fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Counted<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.0[0].fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Builds a node's Swarm: [`build_swarm`]'s transport plus circuit relay (dialling and
/// listening through relays, docs/nat.md), counting relayed bytes into `relayed`;
/// `behaviour` gets the relay client's behaviour half.
pub fn build_node_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    relayed: &RelayedBytes,
    behaviour: impl FnOnce(&libp2p::identity::Keypair, relay::client::Behaviour) -> Result<B>,
) -> Result<Swarm<B>> {
    let (transport, client) = relay::client::new(key.public().to_peer_id());
    build(key, Some((transport, relayed.clone())), |key| {
        behaviour(key, client)
    })
}

fn build<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    relay: Option<(relay::client::Transport, RelayedBytes)>,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> Result<B>,
) -> Result<Swarm<B>> {
    let mut failure = None;
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            use libp2p::Transport as _;
            let noise = noise::Config::new(key)?;
            let relay = match relay {
                Some((relay, bytes)) => {
                    OptionalTransport::some(relay.map(move |inner, _| Counted {
                        inner,
                        bytes: bytes.clone(),
                    }))
                }
                None => OptionalTransport::none(),
            };
            let transport: Result<_, Box<dyn std::error::Error + Send + Sync>> = Ok(
                tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .or_transport(relay)
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(CONNECT_TIMEOUT),
            );
            transport
        })
        .map_err(|error| anyhow::anyhow!("cannot set up the TCP transport: {error}"))?
        .with_dns()
        .context("cannot set up DNS resolution")?
        .with_behaviour(|key| match behaviour(key) {
            Ok(b) => Ok(b),
            Err(error) => {
                let message = format!("{error:#}");
                failure = Some(error);
                Err(message.into())
            }
        });
    let swarm = match (swarm, failure) {
        (Ok(swarm), _) => swarm,
        (Err(_), Some(error)) => return Err(error),
        (Err(error), None) => bail!("cannot build the network behaviour: {error}"),
    };
    Ok(swarm
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build())
}

/// What starting the node's Swarm settled: where it is reached and what it speaks.
pub(super) struct Started {
    /// The address other nodes dial, announced first in heartbeats.
    pub public_addr: Multiaddr,
    /// The network's gossip topic (subscribed).
    pub topic: IdentTopic,
    /// The network's Kademlia protocol name.
    pub kad_protocol: StreamProtocol,
}

/// Listens on the state file's address, announces the public one and subscribes to the
/// network's gossip topic.
pub(super) fn start(
    swarm: &mut Swarm<Behaviour>,
    state: &NetworkState,
    keys: &Keys,
) -> Result<Started> {
    let listen: HostPort = state
        .node
        .listen
        .parse()
        .map_err(anyhow::Error::msg)
        .context("listen address in the state file")?;
    let public: HostPort = state
        .node
        .public_addr
        .parse()
        .map_err(anyhow::Error::msg)
        .context("public address in the state file")?;
    swarm.listen_on(listen.to_multiaddr()).map_err(|error| {
        // libp2p's transport errors repeat their source in their own text: name the root
        // cause once ("Address already in use (os error 98)"), not four times.
        let mut root: &dyn std::error::Error = &error;
        while let Some(source) = root.source() {
            root = source;
        }
        anyhow::anyhow!("cannot listen on {listen}: {root}")
    })?;
    swarm.add_external_address(public.to_multiaddr());
    let tag = state.tag(&keys.secret);
    let topic = gossip_topic(&tag);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .context("cannot subscribe to the gossip topic")?;
    Ok(Started {
        public_addr: public.to_multiaddr(),
        topic,
        kad_protocol: kad_protocol(&tag)?,
    })
}

/// The multiaddrs to dial for the core's address texts (`host:port` or multiaddr), leaving
/// out unusable ones (unparseable, or unspecified like 0.0.0.0).
pub(super) fn dial_addresses(addrs: &[String]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for text in addrs {
        let addr = match text.parse::<HostPort>() {
            Ok(host_port) => Some(host_port.to_multiaddr()),
            Err(_) => text.parse::<Multiaddr>().ok(),
        };
        if let Some(addr) = addr.filter(|a| !is_unspecified(a))
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

/// An address nobody can dial (0.0.0.0 or ::).
pub(super) fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
