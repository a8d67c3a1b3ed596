//! A stranger flood for tests and benchmarks: many idle connections to one node, each from its
//! own libp2p identity with a completed noise handshake (what an outsider's client makes, not
//! just a TCP half-open), each dialled again a moment after the node closes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, identity, noise, tcp, yamux};

/// A running flood; dropping it stops every connection.
pub struct StrangerFlood {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the flood achieved so far.
#[derive(Default)]
pub struct Counts {
    /// Connections up now.
    pub open: AtomicU64,
    /// Connections established since the start (noise handshake done).
    pub established: AtomicU64,
    /// Connections the node closed.
    pub closed: AtomicU64,
}

impl StrangerFlood {
    /// Starts `connections` strangers against `addr` (a `/ip4/…/tcp/…` multiaddr); each dials
    /// again `redial` after its connection closes or its dial fails.
    pub fn start(addr: Multiaddr, connections: usize, redial: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (stop_flag, shared) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("flood runtime");
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..connections)
                    .map(|_| {
                        tokio::spawn(stranger(
                            addr.clone(),
                            redial,
                            stop_flag.clone(),
                            shared.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
        });
        Self {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// The counters.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl Drop for StrangerFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One stranger: connect, hold the connection idle, dial again when it is closed.
async fn stranger(addr: Multiaddr, redial: Duration, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let Ok(builder) =
        libp2p::SwarmBuilder::with_existing_identity(identity::Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
    else {
        return;
    };
    let Ok(builder) = builder.with_behaviour(|_| dummy::Behaviour);
    let mut swarm = builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    let _ = swarm.dial(addr.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut redial_at: Option<tokio::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { .. } => {
                    counts.open.fetch_add(1, Ordering::Relaxed);
                    counts.established.fetch_add(1, Ordering::Relaxed);
                }
                SwarmEvent::ConnectionClosed { .. } => {
                    counts.open.fetch_sub(1, Ordering::Relaxed);
                    counts.closed.fetch_add(1, Ordering::Relaxed);
                    redial_at = Some(tokio::time::Instant::now() + redial);
                }
                SwarmEvent::OutgoingConnectionError { .. } => {
                    redial_at = Some(tokio::time::Instant::now() + redial);
                }
                _ => {}
            },
            _ = tick.tick() => {
                if redial_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    redial_at = None;
                    let _ = swarm.dial(addr.clone());
                }
            }
        }
    }
}
