//! A deterministic network simulator: runs many [`Node`] cores on a simulated network with a
//! virtual clock, injects faults, and checks the protocol's invariants as it goes.
//!
//! Nothing here does I/O, reads the wall clock or starts a thread: time is a `u64` count of
//! simulated milliseconds, every random choice comes from one seeded generator, and every
//! collection that is iterated is ordered, so one seed always gives the same run (replay a
//! failing seed with `constella-sim --seed K`). The cores see `Instant`s made from one base
//! instant plus the simulated time plus a per-node clock offset (skew).
//!
//! ## The network model
//! - **Links** between every pair of nodes: a one-way latency (`latency` plus a fixed per-link
//!   extra drawn from the seed, up to `latency_spread`), plus uniform jitter of ±`jitter` per
//!   message, and an independent loss probability `loss` per message and receiver.
//! - **Connections** are what the cores dial. A dial succeeds after one round trip if the
//!   target process is up and the link passes both ways; otherwise it fails after one round trip
//!   if the host refuses (the process is down but the host answers: a loud crash) or after
//!   `dial_timeout` if nothing answers (a silent crash, a partition, a blocked direction).
//!   A connection whose link stops passing (a partition) is closed on both sides after
//!   `conn_timeout` (the daemon's ping interval plus ping timeout) unless the link heals first.
//! - **Gossip** (`Output::Publish`) approximates gossipsub's mesh as one delivery to every node
//!   in the publisher's *connection component* (nodes joined by open connections whose links
//!   pass both ways), over the direct link's latency and jitter. Real gossipsub relays over a
//!   mesh (target degree 4, at least 1) and repairs gaps with IHAVE/IWANT: a copy arrives over
//!   several paths of one or two hops. The model counts a copy lost only if all of
//!   `GOSSIP_PATHS` (3) independent two-hop paths lose it (each hop with probability `loss`),
//!   which is still pessimistic (no IWANT repair) and optimistic about latency (one hop).
//! - **Heartbeats** (`Output::Heartbeat`, the beat protocol) go to each listed peer over its
//!   open connection, if that direction passes. The connection is TCP: a lost segment is
//!   resent after 200 ms, 400 ms, … (up to 5 losses in a row, then the frame is given up), and
//!   frames of one connection arrive in order, so a retransmitted one holds back the next.
//! - **Direct messages** (`Sync`/`SyncReply`) need an open connection whose direction passes.
//! - **Crashes**: silent (the peers notice nothing until `conn_timeout`, as with a host that
//!   vanished) or loud (the peers get `Disconnected` after one latency and dials are refused,
//!   as with a killed process on a live host). A **restart** is a new incarnation that starts
//!   from the last snapshot the node persisted (records, settings, invites, and the members
//!   recorded alive), as the daemon starts from its state file. A **graceful stop** feeds
//!   `Input::Stop` and takes the process down at `Output::Exit`.
//! - **Persist** outputs are kept as the node's snapshot; acknowledged writes are answered with
//!   `Input::Persisted` one millisecond later.
//! - **Joins** go through the real rules: a member records an invite (`Input::IssueInvite`), the
//!   joiner dials it and sends `Input::JoinRequest`; once admitted, the joiner starts a core
//!   from the admission's member list.
//!
//! ## Invariants, checked every `step` of simulated time (O(N) each)
//! - **stale-leader**: no node names a leader that is down or outside its connection component
//!   for longer than the detection bound (`offline_after` + margin; one round trip + margin
//!   after a loud crash of a peer it was connected to).
//! - **convergence**: once a phase has been stable for `settle_bound` (no fault since), every
//!   component has exactly one node hosting the leader services, every node of it names that
//!   leader and sees every other node of the component alive, and all hold the same roster
//!   (compared by a digest of the records).
//! - **false-offline** (when the scenario asserts it): no node marks a member offline while
//!   that member has been up and reachable for longer than the detection bound.
//!
//! A violation stops the run with the invariant, the node, the simulated time and the seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::multihash::Multihash;

use crate::gossip::{GossipBody, Heartbeat, MemberRecord};
use crate::membership::{Change, OfflineReason, Status};
use crate::node::{Ack, Config, Input, LocalNode, Node, Output, Restored, Snapshot, SyncMessage};
use crate::settings::NetworkSettings;
use crate::table::PeerTable;

/// Simulated time in milliseconds since the start of the run.
type Ms = u64;

/// Unix time the simulated clock starts at (invite expiry needs one).
/// Independent mesh paths a gossip copy can take to one receiver (see the module docs).
const GOSSIP_PATHS: usize = 3;
/// The first retransmission timeout of a lost heartbeat segment (Linux's minimum RTO).
const BEAT_RTO_MS: Ms = 200;
/// Losses in a row after which a heartbeat frame is given up (TCP would be 6+ s late by then).
const BEAT_RETRIES: u32 = 5;
const UNIX_START: u64 = 1_700_000_000;
/// The leader priority every simulated node gets (the leader is then the smallest id).
const PRIORITY: u32 = 100;
/// The ring of millisecond buckets covers this many milliseconds; later events wait in a heap.
const RING_MS: usize = 1 << 16;

/// Why a run could not start or did not pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The scenario asks for something impossible (a one-line reason).
    #[error("bad scenario: {0}")]
    BadScenario(String),
    /// An invariant failed.
    #[error("{0}")]
    Violation(Violation),
}

/// Which invariant failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// A node named a down or unreachable node leader for longer than the detection bound.
    StaleLeader,
    /// A component did not agree on one leader, or on the roster, once stable.
    Convergence,
    /// A member that was up and reachable was marked offline.
    FalseOffline,
    /// A join the scenario asked for was refused or never answered.
    Join,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::StaleLeader => "stale-leader",
            Invariant::Convergence => "convergence",
            Invariant::FalseOffline => "false-offline",
            Invariant::Join => "join",
        })
    }
}

/// A failed invariant: what, where, when, and the seed that replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// The node where it was seen.
    pub node: String,
    /// Simulated time.
    pub at: Duration,
    /// The run's seed.
    pub seed: u64,
    /// What exactly was wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant {} violated at node {} at t={:.3}s (seed {}): {}",
            self.invariant,
            self.node,
            self.at.as_secs_f64(),
            self.seed,
            self.detail
        )
    }
}

/// The simulated network's properties.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Base one-way latency of every link.
    pub latency: Duration,
    /// Each link gets a fixed extra latency drawn uniformly from `[0, latency_spread]`.
    pub latency_spread: Duration,
    /// Each message gets uniform jitter in `[-jitter, +jitter]` (never below zero in total).
    pub jitter: Duration,
    /// Probability that one message to one receiver is lost.
    pub loss: f64,
    /// How long a dial that nothing answers takes to fail (default: the daemon's transport
    /// bound, [`crate::CONNECT_TIMEOUT`], 3 s).
    pub dial_timeout: Duration,
    /// How long a connection whose link stopped passing stays open (default: the daemon's
    /// worst case, a ping sent just before the link broke plus [`crate::PING_INTERVAL`] to the
    /// next one and [`crate::PING_TIMEOUT`] for it to fail: 20 s).
    pub conn_timeout: Duration,
    /// Each node's clock is offset by a fixed amount drawn from `[0, clock_skew]`.
    pub clock_skew: Duration,
    /// Invariants are checked this often.
    pub step: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            latency_spread: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            dial_timeout: crate::CONNECT_TIMEOUT,
            conn_timeout: crate::PING_INTERVAL + crate::PING_TIMEOUT,
            clock_skew: Duration::from_millis(500),
            step: Duration::from_millis(100),
        }
    }
}

/// Which node a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The node most nodes name leader when the fault happens.
    Leader,
    /// Node number `i` (in leader order at the start: node 0 is the first leader).
    Node(usize),
}

/// Something that happens to the network at a given time.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The process dies; `loud`: its host refuses connections (peers notice at once).
    Crash {
        /// Which node.
        target: Target,
        /// Loud (connection reset) or silent (host gone).
        loud: bool,
    },
    /// Every crashed or stopped node starts again from its last snapshot.
    RestartAll,
    /// A graceful stop (SIGTERM): goodbye, stand down, exit after the drain.
    Stop(Target),
    /// Nodes `0..minority` (the first leaders) are cut off from the rest, both ways.
    Partition {
        /// Size of the side that holds node 0.
        minority: usize,
    },
    /// Every partition and blocked direction is lifted.
    Heal,
    /// Messages from node `from` to node `to` are dropped (one direction only).
    BlockOneWay {
        /// Sender side.
        from: usize,
        /// Receiver side.
        to: usize,
    },
    /// The loss probability changes.
    SetLoss(f64),
    /// Node `node`'s process is not scheduled for `length` (starved, SIGSTOPped, its loop
    /// blocked): it handles nothing and sends nothing; what reaches it waits, and when it runs
    /// again its timer comes first, then the backlog in arrival order (the worst order: the
    /// timer judges silences before the heartbeats that wait are read). Its kernel keeps its
    /// connections open.
    Pause {
        /// Which node.
        node: usize,
        /// How long.
        length: Duration,
    },
    /// `count` new nodes join, `gap` apart, each through a random member.
    Join {
        /// How many.
        count: usize,
        /// Time between two joins.
        gap: Duration,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = |t: &Target| match t {
            Target::Leader => "leader".to_owned(),
            Target::Node(i) => format!("n{i:04}"),
        };
        match self {
            Fault::Crash { target: t, loud } => write!(
                f,
                "crash-{}({})",
                target(t),
                if *loud { "loud" } else { "silent" }
            ),
            Fault::RestartAll => f.write_str("restart"),
            Fault::Stop(t) => write!(f, "stop-{}", target(t)),
            Fault::Partition { minority } => write!(f, "partition({minority}|rest)"),
            Fault::Heal => f.write_str("heal"),
            Fault::BlockOneWay { from, to } => write!(f, "block(n{from:04}->n{to:04})"),
            Fault::SetLoss(loss) => write!(f, "loss({:.1}%)", loss * 100.0),
            Fault::Join { count, .. } => write!(f, "join({count})"),
            Fault::Pause { node, length } => {
                write!(f, "pause(n{node:04}, {} ms)", length.as_millis())
            }
        }
    }
}

/// How a run begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Every process starts at once, knowing the roster but nobody alive; they dial each other
    /// and learn liveness from heartbeats. Under the current rules every new connection
    /// exchanges the whole roster both ways (sync on subscribe), so this costs O(N³) record
    /// merges in all: fine up to a few hundred nodes, about 4·10⁹ at 1,000.
    Cold,
    /// As `Cold`, but every node starts from a state file where all were alive.
    Warm,
    /// The network is already running: every node starts as in `Warm` with its connections
    /// open and the gossip subscriptions exchanged before the run begins (no start-up syncs).
    Steady,
}

impl StartMode {
    /// `Cold` up to 100 nodes, `Steady` beyond (see [`StartMode::Cold`]).
    pub fn for_size(nodes: usize) -> Self {
        if nodes <= 100 {
            StartMode::Cold
        } else {
            StartMode::Steady
        }
    }
}

impl fmt::Display for StartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMode::Cold => "cold",
            StartMode::Warm => "warm",
            StartMode::Steady => "steady",
        })
    }
}

/// One run: the network, the faults and what to assert.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A name for the summary.
    pub name: String,
    /// Nodes at the start (joins add more).
    pub nodes: usize,
    /// Simulated duration.
    pub duration: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// The network.
    pub net: NetConfig,
    /// Faults, by time since the start.
    pub faults: Vec<(Duration, Fault)>,
    /// How the nodes start.
    pub start: StartMode,
    /// Count any false offline mark as a violation.
    pub assert_no_false_offline: bool,
    /// Local health awareness on (the daemon's default; [`crate::health`]). Off, to show
    /// what it prevents.
    pub local_health: bool,
}

impl Scenario {
    /// A scenario with the default network and no faults.
    pub fn new(name: &str, nodes: usize, duration: Duration, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            nodes,
            duration,
            seed,
            net: NetConfig::default(),
            faults: Vec::new(),
            start: StartMode::for_size(nodes),
            assert_no_false_offline: false,
            local_health: true,
        }
    }

    /// The core configuration every node of this scenario runs.
    pub fn config(&self) -> Config {
        let mut config = Config::for_size(self.nodes);
        if !self.local_health {
            config.max_health = 0;
        }
        config
    }

    /// How long after a fault the network must have converged: detection, the slowest redial,
    /// a dial timeout and one heartbeat, plus the network's worst latency and a second.
    pub fn settle_bound(&self) -> Duration {
        let config = self.config();
        config.offline_after
            + config.max_redial
            + self.net.dial_timeout
            + config.heartbeat_interval
            + self.net.worst_latency() * 4
            + Duration::from_secs(1)
    }

    /// The default set: start, converge, crash the leader silently, restart it, crash it
    /// loudly, restart it, partition off a third of the network (at most ten nodes) with the
    /// leader, heal. Phases
    /// are `settle_bound` plus five seconds apart; those that do not fit in `duration` are left
    /// out.
    pub fn add_default_faults(&mut self) {
        let spacing = self.settle_bound() + Duration::from_secs(5);
        let faults = [
            Fault::Crash {
                target: Target::Leader,
                loud: false,
            },
            Fault::RestartAll,
            Fault::Crash {
                target: Target::Leader,
                loud: true,
            },
            Fault::RestartAll,
            // At most ten nodes: on heal every cross pair reconnects and exchanges whole
            // rosters (sync on subscribe), O(side x N^2) record merges at a thousand nodes.
            Fault::Partition {
                minority: (self.nodes / 3).clamp(1, 10),
            },
            Fault::Heal,
        ];
        let mut at = spacing;
        for fault in faults {
            if at + spacing > self.duration {
                break;
            }
            self.faults.push((at, fault));
            at += spacing;
        }
    }
}

impl NetConfig {
    /// The largest one-way delay a message can take.
    pub fn worst_latency(&self) -> Duration {
        self.latency + self.latency_spread + self.jitter
    }
}

/// What one phase (the time from one fault to the next) showed.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseReport {
    /// What started it (`start` or the fault).
    pub name: String,
    /// When it started.
    pub at: Duration,
    /// Time from the phase start to the last change before every component agreed (one leader
    /// hosting, same leader and roster everywhere, everyone seen alive); `None`: never agreed.
    pub converged_after: Option<Duration>,
    /// The leader(s) at the end of the phase, one per component, by name.
    pub leaders: Vec<String>,
    /// Components at the end of the phase.
    pub components: usize,
    /// Nodes up at the end of the phase.
    pub up: usize,
    /// False offline marks during the phase.
    pub false_offline: u64,
    /// Open connections per up node at the end of the phase: the mean and the most (the
    /// leader keeps one to every member; on a ring the others keep a few, see
    /// [`Node::wants`]).
    pub connections: (f64, usize),
}

/// What a run showed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The scenario's name.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// One per phase.
    pub phases: Vec<PhaseReport>,
    /// Events processed.
    pub events: u64,
    /// Calls of `Node::handle`.
    pub handle_calls: u64,
    /// Gossip deliveries.
    pub deliveries: u64,
    /// Sum over nodes of the simulated time each was up.
    pub node_seconds: f64,
    /// False offline marks over the run.
    pub false_offline: u64,
    /// The first violation, if any (the run stopped there).
    pub violation: Option<Violation>,
}

// ---------------------------------------------------------------------------------------------
// Randomness: one small seeded generator (SplitMix64), so the simulator's choices do not depend
// on any other crate's algorithm.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; `n > 0`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng(a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next()
}

// ---------------------------------------------------------------------------------------------
// The event queue: a ring of one-millisecond buckets (events within a bucket run in the order
// they were queued), and a heap for events beyond the ring.

#[derive(Debug)]
enum Event {
    Timer(u32),
    Check,
    Fault(usize),
    Gossip {
        to: u32,
        epoch: u32,
        from: u32,
        body: Rc<GossipBody>,
    },
    /// A heartbeat over the beat protocol reaches `to` on its connection from `from`.
    Beat {
        to: u32,
        epoch: u32,
        from: u32,
        /// The sender's place in its own member table (`u32::MAX`: none), passed to the
        /// receiver as a hint ([`Input::Heartbeat`]).
        place: u32,
        heartbeat: Rc<Heartbeat>,
    },
    /// A dial from `a` to `b` lands (success decided again on arrival).
    Connect {
        a: u32,
        b: u32,
        epoch_a: u32,
        epoch_b: u32,
    },
    Subscribed {
        to: u32,
        epoch: u32,
        peer: u32,
    },
    /// `to`'s last connection to `peer` closed (unless a newer connection exists).
    Disconnected {
        to: u32,
        epoch: u32,
        peer: u32,
    },
    /// A connection whose link stopped passing: closed now unless healed or replaced.
    ConnTimeout {
        a: u32,
        b: u32,
        generation: u32,
    },
    DialFailed {
        to: u32,
        epoch: u32,
        peer: u32,
    },
    Sync {
        to: u32,
        epoch: u32,
        from: u32,
        message: Rc<SyncMessage>,
        answer: bool,
    },
    Persisted {
        to: u32,
        epoch: u32,
        /// Boxed: an `Ack` can hold a node id, and the queue holds a hundred million events
        /// per run, nearly all gossip (kept small, they move fewer bytes).
        ack: Box<Ack>,
    },
    /// The joiner's request reaches its seed.
    JoinRequest {
        seed: u32,
        epoch: u32,
        joiner: u32,
    },
    /// The seed's answer reaches the joiner.
    JoinAdmitted {
        joiner: u32,
        admission: Rc<(Vec<MemberRecord>, NetworkSettings)>,
    },
    /// A join is due: the joiner asks a random member for a link.
    JoinStart(u32),
    /// A joiner's dial of its seed lands.
    JoinConnect {
        joiner: u32,
        seed: u32,
        epoch: u32,
    },
}

#[derive(Debug)]
struct Queue {
    now: Ms,
    ring: Vec<Vec<Event>>,
    /// Events at or beyond `now + RING_MS`, ordered by (time, sequence).
    far: BinaryHeap<Reverse<(Ms, u64, FarEvent)>>,
    seq: u64,
    len: usize,
    /// Emptied bucket vectors, reused for the next buckets that fill: allocating each
    /// millisecond's vector afresh and freeing it made the allocator hand whole huge pages back
    /// and the kernel zero new ones. Kept few, so no bucket holds a busy millisecond's capacity
    /// for good (that was gigabytes at 1,000 nodes).
    spare: Vec<Vec<Event>>,
}

/// A heap entry; ordered by (time, sequence) only.
#[derive(Debug)]
struct FarEvent(Event);

impl PartialEq for FarEvent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for FarEvent {}
impl PartialOrd for FarEvent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for FarEvent {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Queue {
    fn new() -> Self {
        Self {
            now: 0,
            ring: (0..RING_MS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
            seq: 0,
            len: 0,
            spare: Vec::new(),
        }
    }

    fn push(&mut self, at: Ms, event: Event) {
        let at = at.max(self.now);
        self.len += 1;
        if at < self.now + RING_MS as u64 {
            let bucket = &mut self.ring[(at as usize) & (RING_MS - 1)];
            if bucket.capacity() == 0
                && let Some(spare) = self.spare.pop()
            {
                *bucket = spare;
            }
            bucket.push(event);
        } else {
            self.seq += 1;
            self.far.push(Reverse((at, self.seq, FarEvent(event))));
        }
    }

    /// Moves the clock to `at` and returns the events of that millisecond, in queue order.
    fn take(&mut self, at: Ms) -> Vec<Event> {
        self.now = at;
        // Far events that now fit in the ring move in (in their order).
        while let Some(Reverse((t, _, _))) = self.far.peek() {
            if *t >= at + RING_MS as u64 {
                break;
            }
            if let Some(Reverse((t, _, FarEvent(event)))) = self.far.pop() {
                self.ring[(t as usize) & (RING_MS - 1)].push(event);
            }
        }
        let events = std::mem::take(&mut self.ring[(at as usize) & (RING_MS - 1)]);
        self.len -= events.len();
        events
    }

    /// Gives back a bucket vector that [`Queue::take`] returned, emptied.
    fn give_back(&mut self, mut events: Vec<Event>) {
        const SPARE: usize = 64;
        if self.spare.len() < SPARE && events.capacity() > 0 {
            events.clear();
            self.spare.push(events);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes and the network state.

#[derive(Debug)]
struct SimNode {
    id: PeerId,
    name: String,
    /// The running core, if the process is up.
    core: Option<Box<Node>>,
    /// Bumped at every crash and start: events for an older process are dropped.
    epoch: u32,
    incarnation: u32,
    /// The node's clock offset.
    skew: Duration,
    /// The last snapshot the node persisted (its state file).
    snapshot: Option<Box<Snapshot>>,
    /// The records it started with before any snapshot.
    initial: Rc<Vec<MemberRecord>>,
    /// When the process last started or went down.
    up_since: Ms,
    down_since: Ms,
    /// The timer event queued for it (`None`: none queued).
    wake: Option<Ms>,
    /// Remote members it sees alive (kept from its `Membership` outputs).
    alive_seen: usize,
    /// A joiner that has not been admitted yet: no core, not a member.
    joining: Option<Joining>,
    /// Set by a loud crash: the peers connected to it then (they learn of it at once).
    loud_witnesses: Option<BTreeSet<u32>>,
    /// Down because of a graceful stop.
    stopping: bool,
    /// Simulated milliseconds it was up, summed over its processes.
    up_ms: u64,
    /// Paused ([`Fault::Pause`]) until then: events for it wait.
    paused_until: Ms,
}

/// One direction of a link (see `Sim::lanes`).
#[derive(Debug, Clone, Copy, Default)]
struct Lane {
    /// When the last heartbeat sent on it arrives, in ms: a connection is one TCP stream, so
    /// a later frame never overtakes an earlier, retransmitted one.
    tail: u32,
    /// The fixed extra latency of the link, in ms.
    extra: u16,
}

#[derive(Debug, Clone)]
struct Joining {
    seed: u32,
    token: String,
    asked_at: Ms,
}

/// The state of one run.
#[derive(Debug)]
pub struct Sim {
    scenario: Scenario,
    config: Config,
    base: Instant,
    rng: Rng,
    queue: Queue,
    nodes: Vec<SimNode>,
    /// Node number by id (looked up for every heartbeat sent: a cheap hash, not SipHash).
    index: PeerTable<u32>,
    /// Upper bound on the number of nodes (start plus joins): the side of the matrices.
    capacity: usize,
    /// Connection generation per pair (`lo * capacity + hi`); 0: no connection.
    conns: Vec<u32>,
    next_generation: u32,
    /// Connection open per pair, both ways: row `a` (`row_words` words) has bit `b` set when
    /// `a` and `b` are connected. Asked for every heartbeat, and the bits of a thousand nodes
    /// stay in the cache where the generations do not; the components are a breadth-first
    /// walk over whole words of these rows.
    open: Vec<u64>,
    /// Words per row of `open`.
    row_words: usize,
    /// Per direction (`from * capacity + to`): the link's fixed extra latency and when the last
    /// heartbeat sent on it arrives; side by side, since every heartbeat sent reads both.
    lanes: Vec<Lane>,
    /// Partition side of each node (all 0 when whole).
    side: Vec<u8>,
    /// Blocked directions (from, to).
    blocked: BTreeSet<(u32, u32)>,
    loss: f64,
    // Connection components of the up members, recomputed when stale.
    comp: Vec<u32>,
    comp_members: Vec<Vec<u32>>,
    comps_stale: bool,
    /// The last time a component could have split (stale-leader bound starts there).
    split_at: Ms,
    /// The last fault (a node down, a link changed): false offline marks are judged from
    /// there, not from a connection the cores closed themselves (a member silent through loss
    /// is disconnected and redialled; that churn must not hide the false mark that caused it).
    fault_at: Ms,
    // Phases and measurements.
    phases: Vec<PhaseReport>,
    phase_start: Ms,
    /// Last time any leader, leadership or liveness changed anywhere.
    last_change: Ms,
    /// Since when (the last change before) the convergence conditions have held.
    converged_since: Option<Ms>,
    roster_ok_since: Option<Ms>,
    last_roster_check: Option<Ms>,
    phase_false_offline: u64,
    // Counters.
    events: u64,
    handle_calls: u64,
    deliveries: u64,
    false_offline: u64,
    next_request: u64,
    /// Invites being recorded, by request number: the joiner waiting for each.
    invites_pending: BTreeMap<u64, u32>,
    violation: Option<Violation>,
    out: Vec<Output>,
}

/// A deterministic node id: a SHA-256-shaped multihash of the seed and the index.
fn node_id(seed: u64, index: usize) -> PeerId {
    let mut digest = [0u8; 32];
    let mut rng = Rng(mix(seed, index as u64 + 1));
    for chunk in digest.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    match Multihash::<64>::wrap(0x12, &digest).map(PeerId::from_multihash) {
        Ok(Ok(id)) => id,
        // A 32-byte SHA-256 multihash is always a valid PeerId.
        _ => unreachable!("a SHA-256 multihash is a valid PeerId"),
    }
}

fn record(id: PeerId, name: &str, index: usize) -> MemberRecord {
    MemberRecord {
        node_id: id,
        name: name.to_owned(),
        addr: format!(
            "10.{}.{}.{}:4747",
            index >> 16,
            (index >> 8) & 255,
            index & 255
        ),
        priority: PRIORITY,
        version: 1,
        left: false,
        card: None,
        admission: 0,
        removed_at: None,
        key_updates: Vec::new(),
        relays: Vec::new(),
    }
}

fn to_ms(d: Duration) -> Ms {
    d.as_millis() as Ms
}

impl Sim {
    /// Sets up a run: `scenario.nodes` members that all know each other, none started yet.
    pub fn new(scenario: Scenario) -> Result<Self, SimError> {
        if scenario.nodes == 0 {
            return Err(SimError::BadScenario("at least one node is needed".into()));
        }
        if !(0.0..=1.0).contains(&scenario.net.loss) {
            return Err(SimError::BadScenario(format!(
                "loss {} is not a probability in [0, 1]",
                scenario.net.loss
            )));
        }
        if scenario.net.step.is_zero() {
            return Err(SimError::BadScenario(
                "the check step must be positive".into(),
            ));
        }
        let joins: usize = scenario
            .faults
            .iter()
            .map(|(_, f)| match f {
                Fault::Join { count, .. } => *count,
                _ => 0,
            })
            .sum();
        let capacity = scenario.nodes + joins;
        if capacity > 8192 {
            return Err(SimError::BadScenario(format!(
                "{capacity} nodes: the simulator keeps N x N link tables and stops at 8192"
            )));
        }
        for (_, fault) in &scenario.faults {
            let check = |i: usize| {
                if i >= scenario.nodes {
                    Err(SimError::BadScenario(format!(
                        "{fault}: node {i} does not exist (nodes are 0..{})",
                        scenario.nodes
                    )))
                } else {
                    Ok(())
                }
            };
            match fault {
                Fault::Crash {
                    target: Target::Node(i),
                    ..
                }
                | Fault::Stop(Target::Node(i))
                | Fault::Pause { node: i, .. } => check(*i)?,
                Fault::BlockOneWay { from, to } => {
                    check(*from)?;
                    check(*to)?;
                }
                Fault::Partition { minority } if *minority == 0 || *minority >= scenario.nodes => {
                    return Err(SimError::BadScenario(format!(
                        "partition side of {minority} out of {} nodes",
                        scenario.nodes
                    )));
                }
                Fault::SetLoss(loss) if !(0.0..=1.0).contains(loss) => {
                    return Err(SimError::BadScenario(format!(
                        "loss {loss} is not a probability in [0, 1]"
                    )));
                }
                _ => {}
            }
        }
        let mut rng = Rng(scenario.seed);
        // Ids in leader order, so node 0 is the first leader (all priorities are equal).
        let mut ids: Vec<PeerId> = (0..capacity).map(|i| node_id(scenario.seed, i)).collect();
        ids[..scenario.nodes].sort_by_key(|id| id.to_bytes());
        let mut nodes = Vec::with_capacity(capacity);
        let mut index = PeerTable::new();
        for (i, id) in ids.iter().enumerate() {
            let name = if i < scenario.nodes {
                format!("n{i:04}")
            } else {
                format!("j{:04}", i - scenario.nodes)
            };
            index.insert(*id, i as u32);
            let skew_ms = to_ms(scenario.net.clock_skew);
            nodes.push(SimNode {
                id: *id,
                name,
                core: None,
                epoch: 0,
                incarnation: 0,
                skew: Duration::from_millis(if skew_ms == 0 {
                    0
                } else {
                    rng.below(skew_ms + 1)
                }),
                snapshot: None,
                initial: Rc::default(),
                up_since: 0,
                paused_until: 0,
                down_since: 0,
                wake: None,
                alive_seen: 0,
                joining: None,
                loud_witnesses: None,
                stopping: false,
                up_ms: 0,
            });
        }
        // One shared copy: at a thousand nodes a copy each would be a million records.
        let records: Rc<Vec<MemberRecord>> = Rc::new(
            (0..scenario.nodes)
                .map(|i| record(nodes[i].id, &nodes[i].name, i))
                .collect(),
        );
        for node in nodes.iter_mut().take(scenario.nodes) {
            node.initial = Rc::clone(&records);
        }
        let spread = to_ms(scenario.net.latency_spread);
        let mut lanes = vec![Lane::default(); capacity * capacity];
        for lo in 0..capacity {
            for hi in lo + 1..capacity {
                let extra = if spread == 0 {
                    0
                } else {
                    rng.below(spread + 1).min(u64::from(u16::MAX)) as u16
                };
                lanes[lo * capacity + hi].extra = extra;
                lanes[hi * capacity + lo].extra = extra;
            }
        }
        let config = scenario.config();
        let loss = scenario.net.loss;
        Ok(Self {
            config,
            base: Instant::now(),
            rng,
            queue: Queue::new(),
            nodes,
            index,
            capacity,
            conns: vec![0; capacity * capacity],
            next_generation: 1,
            open: vec![0; capacity * capacity.div_ceil(64)],
            row_words: capacity.div_ceil(64),
            lanes,
            side: vec![0; capacity],
            blocked: BTreeSet::new(),
            loss,
            comp: vec![u32::MAX; capacity],
            comp_members: Vec::new(),
            comps_stale: true,
            split_at: 0,
            fault_at: 0,
            phases: Vec::new(),
            phase_start: 0,
            last_change: 0,
            converged_since: None,
            roster_ok_since: None,
            last_roster_check: None,
            phase_false_offline: 0,
            events: 0,
            handle_calls: 0,
            deliveries: 0,
            false_offline: 0,
            next_request: 0,
            invites_pending: BTreeMap::new(),
            violation: None,
            out: Vec::new(),
            scenario,
        })
    }

    /// Runs the scenario to its end or to the first violation.
    pub fn run(mut self) -> RunReport {
        let mode = self.scenario.start;
        self.open_phase(format!("start({mode})"), 0);
        let everyone: Vec<PeerId> = self.nodes[..self.scenario.nodes]
            .iter()
            .map(|n| n.id)
            .collect();
        let alive: &[PeerId] = if mode == StartMode::Cold {
            &[]
        } else {
            &everyone
        };
        if mode == StartMode::Steady {
            // Connections first, so each core learns of them as it starts.
            for a in 0..self.scenario.nodes as u32 {
                for b in a + 1..self.scenario.nodes as u32 {
                    self.open_connection(a, b);
                }
            }
        }
        for i in 0..self.scenario.nodes {
            let records = self.nodes[i].initial.to_vec();
            self.start_core(
                i as u32,
                records,
                alive,
                NetworkSettings::default(),
                Vec::new(),
                false,
            );
        }
        // Every core exists before the first one acts (one component computation, not N).
        for i in 0..self.scenario.nodes as u32 {
            self.call(i, Input::Timer);
        }
        for (i, _) in self.scenario.faults.iter().enumerate() {
            let at = to_ms(self.scenario.faults[i].0);
            self.queue.push(at, Event::Fault(i));
        }
        let step = to_ms(self.scenario.net.step);
        self.queue.push(step, Event::Check);
        let end = to_ms(self.scenario.duration);
        let mut at = 0;
        while at <= end && self.violation.is_none() {
            if self.queue.len == 0 {
                break;
            }
            // Events queued for this same millisecond while it runs are run before moving on.
            loop {
                // A bucket's vector goes back to a small pool once run: kept in the ring,
                // every bucket would hold the capacity of its busiest millisecond (gigabytes at
                // 1,000 nodes).
                let mut events = self.queue.take(at);
                if events.is_empty() {
                    self.queue.give_back(events);
                    break;
                }
                for event in events.drain(..) {
                    self.events += 1;
                    self.dispatch(event);
                    if self.violation.is_some() {
                        break;
                    }
                }
                self.queue.give_back(events);
                if self.violation.is_some() {
                    break;
                }
            }
            at += 1;
        }
        let end = end.min(at.saturating_sub(1));
        self.close_phase(end);
        for node in &mut self.nodes {
            if node.core.is_some() {
                node.up_ms += end.saturating_sub(node.up_since);
            }
        }
        let node_seconds = self.nodes.iter().map(|n| n.up_ms as f64 / 1000.0).sum();
        RunReport {
            name: self.scenario.name.clone(),
            seed: self.scenario.seed,
            phases: self.phases,
            events: self.events,
            handle_calls: self.handle_calls,
            deliveries: self.deliveries,
            node_seconds,
            false_offline: self.false_offline,
            violation: self.violation,
        }
    }

    // ---- time and links ----

    fn instant(&self, node: u32, at: Ms) -> Instant {
        self.base + self.nodes[node as usize].skew + Duration::from_millis(at)
    }

    fn slot(&self, a: u32, b: u32) -> usize {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        lo as usize * self.capacity + hi as usize
    }

    /// One-way delay of one message from `a` to `b`.
    fn delay(&mut self, a: u32, b: u32) -> Ms {
        let extra = self.lanes[a as usize * self.capacity + b as usize].extra;
        let base = to_ms(self.scenario.net.latency) + u64::from(extra);
        let jitter = to_ms(self.scenario.net.jitter);
        if jitter == 0 {
            return base.max(1);
        }
        let offset = self.rng.below(2 * jitter + 1);
        (base + offset).saturating_sub(jitter).max(1)
    }

    fn passes(&self, from: u32, to: u32) -> bool {
        self.side[from as usize] == self.side[to as usize]
            && (self.blocked.is_empty() || !self.blocked.contains(&(from, to)))
    }

    fn passes_both(&self, a: u32, b: u32) -> bool {
        self.passes(a, b) && self.passes(b, a)
    }

    fn is_up(&self, node: u32) -> bool {
        self.nodes[node as usize].core.is_some()
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.unit() < self.loss
    }

    /// Whether a gossip copy fails to reach one receiver: it is lost only if every one of
    /// [`GOSSIP_PATHS`] independent two-hop mesh paths loses it (see the module docs).
    fn gossip_lost(&mut self) -> bool {
        if self.loss <= 0.0 {
            return false;
        }
        let path_loss = 1.0 - (1.0 - self.loss) * (1.0 - self.loss);
        (0..GOSSIP_PATHS).all(|_| self.rng.unit() < path_loss)
    }

    /// Sets the connection generation of a pair's slot (0: closed) and its open bit.
    fn set_conn(&mut self, a: u32, b: u32, generation: u32) {
        let slot = self.slot(a, b);
        self.conns[slot] = generation;
        for (row, column) in [(a as usize, b as usize), (b as usize, a as usize)] {
            let word = &mut self.open[row * self.row_words + column / 64];
            let bit = 1u64 << (column % 64);
            if generation == 0 {
                *word &= !bit;
            } else {
                *word |= bit;
            }
        }
    }

    fn connected(&self, a: u32, b: u32) -> bool {
        let (a, b) = (a as usize, b as usize);
        self.open[a * self.row_words + b / 64] & (1 << (b % 64)) != 0
    }

    /// Connection components of the up members over open connections that pass both ways.
    ///
    /// A breadth-first walk over whole words of the connection rows: a component grows by
    /// `row(a) & unvisited & same side`, so a thousand fully connected nodes cost about 16
    /// thousand word operations, not a check per pair (half a million). It runs after every
    /// change that can split a component (a connection closed, a crash, a partition), before
    /// the next gossip is delivered.
    fn ensure_components(&mut self) {
        if !self.comps_stale {
            return;
        }
        self.comps_stale = false;
        let n = self.nodes.len();
        let words = self.row_words;
        // Nodes not yet in a component: the up ones.
        let mut unvisited = vec![0u64; words];
        for a in 0..n {
            if self.is_up(a as u32) {
                unvisited[a / 64] |= 1 << (a % 64);
            }
        }
        // One mask per partition side, so a walk never crosses a partition.
        let mut sides: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
        for a in 0..n {
            sides
                .entry(self.side[a])
                .or_insert_with(|| vec![0u64; words])[a / 64] |= 1 << (a % 64);
        }
        self.comp.iter_mut().for_each(|c| *c = u32::MAX);
        self.comp_members.clear();
        let mut stack = Vec::new();
        for start in 0..n {
            if unvisited[start / 64] & (1 << (start % 64)) == 0 {
                continue;
            }
            let c = self.comp_members.len() as u32;
            let mut members = Vec::new();
            unvisited[start / 64] &= !(1 << (start % 64));
            stack.push(start);
            while let Some(a) = stack.pop() {
                self.comp[a] = c;
                members.push(a as u32);
                let row = &self.open[a * words..(a + 1) * words];
                let side = &sides[&self.side[a]];
                for w in 0..words {
                    let mut next = row[w] & unvisited[w] & side[w];
                    while next != 0 {
                        let b = w * 64 + next.trailing_zeros() as usize;
                        next &= next - 1;
                        // A blocked direction cuts the connection for the component too.
                        if !self.blocked.is_empty() && !self.passes_both(a as u32, b as u32) {
                            continue;
                        }
                        unvisited[w] &= !(1 << (b % 64));
                        stack.push(b);
                    }
                }
            }
            // Members in ascending order, as the union-find numbering gave them.
            members.sort_unstable();
            self.comp_members.push(members);
        }
    }

    // ---- processes ----

    fn start_core(
        &mut self,
        i: u32,
        records: Vec<MemberRecord>,
        alive: &[PeerId],
        settings: NetworkSettings,
        invites: Vec<crate::node::Invite>,
        kick: bool,
    ) {
        let now = self.queue.now;
        let node = &mut self.nodes[i as usize];
        node.epoch += 1;
        node.incarnation += 1;
        node.up_since = now;
        node.stopping = false;
        node.loud_witnesses = None;
        node.joining = None;
        let local = LocalNode {
            id: node.id,
            name: node.name.clone(),
            priority: PRIORITY,
            incarnation: node.incarnation,
            addrs: Vec::new(),
        };
        let seed = mix(
            self.scenario.seed,
            (u64::from(i) << 32) | u64::from(node.incarnation),
        );
        let instant = self.base + node.skew + Duration::from_millis(now);
        let restored = Restored {
            records,
            alive: alive.to_vec(),
            settings,
            invites,
        };
        let core = Node::new(self.config.clone(), local, restored, instant, seed);
        node.alive_seen = count_alive(&core);
        node.core = Some(Box::new(core));
        node.wake = None;
        self.comps_stale = true;
        // Connections that survived (a joiner's connection to its seed) are known at once.
        let peers: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|p| *p != i && self.connected(i, *p))
            .collect();
        for peer in peers {
            let id = self.nodes[peer as usize].id;
            self.call(i, Input::Connected(id));
        }
        if kick {
            self.call(i, Input::Timer);
        }
        self.note_change();
    }

    fn take_down(&mut self, i: u32, loud: bool) {
        let now = self.queue.now;
        let Some(_) = self.nodes[i as usize].core.take() else {
            return;
        };
        let node = &mut self.nodes[i as usize];
        node.up_ms += now.saturating_sub(node.up_since);
        node.down_since = now;
        node.epoch += 1;
        node.wake = None;
        self.comps_stale = true;
        self.split_at = now;
        self.fault_at = now;
        let mut witnesses = BTreeSet::new();
        for peer in 0..self.nodes.len() as u32 {
            if peer == i || !self.connected(i, peer) {
                continue;
            }
            self.set_conn(i, peer, 0);
            let epoch = self.nodes[peer as usize].epoch;
            if loud && self.passes(i, peer) {
                witnesses.insert(peer);
                let at = now + self.delay(i, peer);
                self.queue.push(
                    at,
                    Event::Disconnected {
                        to: peer,
                        epoch,
                        peer: i,
                    },
                );
            } else {
                let at = now + to_ms(self.scenario.net.conn_timeout);
                self.queue.push(
                    at,
                    Event::Disconnected {
                        to: peer,
                        epoch,
                        peer: i,
                    },
                );
            }
        }
        self.nodes[i as usize].loud_witnesses = loud.then_some(witnesses);
        self.note_change();
    }

    /// Feeds one input to node `i` and carries out what it asks.
    fn call(&mut self, i: u32, input: Input<'_>) {
        let now = self.queue.now;
        let instant = self.instant(i, now);
        // One buffer lent to every core (a nested call, from carrying out an output, gets a
        // fresh one). Nearly every input's outputs are a verdict (nothing to do) and the
        // wake-up, which is always last.
        let mut out = std::mem::take(&mut self.out);
        {
            let Some(core) = self.nodes[i as usize].core.as_mut() else {
                self.out = out;
                return;
            };
            self.handle_calls += 1;
            core.handle_into(instant, input, &mut out);
        }
        for output in out.drain(..) {
            match output {
                Output::GossipVerdict(_) => {}
                output if self.violation.is_none() => self.carry_out(i, output),
                _ => {}
            }
        }
        self.out = out;
    }

    fn carry_out(&mut self, i: u32, output: Output) {
        let now = self.queue.now;
        match output {
            Output::Publish(body) => self.publish(i, *body),
            Output::Heartbeat { to, heartbeat } => self.send_beats(i, &to, *heartbeat),
            Output::Sync { to, message } => self.send_sync(i, to, *message, false),
            Output::SyncReply { to, message } => self.send_sync(i, to, *message, true),
            Output::Dial { peer, .. } => self.dial(i, peer),
            Output::Disconnect(peer) => self.disconnect(i, peer),
            Output::Persist(snapshot, ack) => {
                self.nodes[i as usize].snapshot = Some(snapshot);
                if let Some(ack) = ack {
                    let epoch = self.nodes[i as usize].epoch;
                    self.queue.push(
                        now + 1,
                        Event::Persisted {
                            to: i,
                            epoch,
                            ack: Box::new(ack),
                        },
                    );
                }
            }
            Output::GossipVerdict(_)
            | Output::Notice(_)
            | Output::Settings(_)
            | Output::AdmissionUndone { .. }
            // The simulator models no secrets: a rotation changes no rule it checks.
            | Output::Rotate
            | Output::RotationReceived(_) => {}
            Output::LeaderChanged { .. } | Output::Leadership(_) => self.note_change(),
            Output::Membership(change) => self.on_membership(i, change),
            Output::JoinAnswer { peer, answer } => {
                let Some(&joiner) = self.index.get(&peer) else {
                    return;
                };
                match answer {
                    Ok(admission) => {
                        if self.nodes[joiner as usize].joining.is_none() {
                            return;
                        }
                        let at = now + self.delay(i, joiner);
                        self.queue.push(
                            at,
                            Event::JoinAdmitted {
                                joiner,
                                admission: Rc::new((admission.members, admission.settings)),
                            },
                        );
                    }
                    Err(refusal) => {
                        let name = self.nodes[joiner as usize].name.clone();
                        self.violate(
                            Invariant::Join,
                            &name,
                            format!(
                                "join through {} refused: {refusal}",
                                self.nodes[i as usize].name
                            ),
                        );
                    }
                }
            }
            Output::InviteRecorded { request, result } => {
                self.on_invite_recorded(i, request, result)
            }
            Output::LeaveDone(_) | Output::RanLate { .. } => {}
            Output::Exit => {
                self.nodes[i as usize].stopping = true;
                self.take_down(i, true);
            }
            Output::WakeAt(at) => {
                let node = &mut self.nodes[i as usize];
                if node.core.is_none() {
                    return;
                }
                let origin = self.base + node.skew;
                let offset = at.saturating_duration_since(origin);
                // Round up: a timer must not fire before its deadline.
                let mut wake = offset.as_millis() as Ms;
                if Duration::from_millis(wake) < offset {
                    wake += 1;
                }
                let wake = wake.max(now + 1);
                if node.wake != Some(wake) {
                    node.wake = Some(wake);
                    self.queue.push(wake, Event::Timer(i));
                }
            }
        }
    }

    fn publish(&mut self, from: u32, body: GossipBody) {
        self.ensure_components();
        let now = self.queue.now;
        let c = self.comp[from as usize];
        if c == u32::MAX {
            return;
        }
        let body = Rc::new(body);
        let members = std::mem::take(&mut self.comp_members[c as usize]);
        for &to in &members {
            if to == from || self.gossip_lost() {
                continue;
            }
            let at = now + self.delay(from, to);
            let epoch = self.nodes[to as usize].epoch;
            self.queue.push(
                at,
                Event::Gossip {
                    to,
                    epoch,
                    from,
                    body: Rc::clone(&body),
                },
            );
        }
        self.comp_members[c as usize] = members;
    }

    /// Heartbeats straight to each of `to` over its open connection ([`crate::beat`]). A
    /// connection is TCP: a lost segment is not lost but resent after the retransmission
    /// timeout (200 ms, doubling), and frames arrive in order, so a late one holds back the
    /// next. After [`BEAT_RETRIES`] losses in a row the frame is given up (the connection
    /// would be failing anyway).
    fn send_beats(&mut self, from: u32, to: &[PeerId], heartbeat: Heartbeat) {
        let now = self.queue.now;
        let heartbeat = Rc::new(heartbeat);
        let place = self.nodes[from as usize]
            .core
            .as_deref()
            .and_then(Node::own_place)
            .and_then(|place| u32::try_from(place).ok())
            .unwrap_or(u32::MAX);
        for peer in to {
            let Some(&to) = self.index.get(peer) else {
                continue;
            };
            if !self.connected(from, to) || !self.passes(from, to) {
                continue;
            }
            let mut resent = 0;
            let mut rto = BEAT_RTO_MS;
            while resent < BEAT_RETRIES && self.lost() {
                resent += 1;
                rto *= 2;
            }
            if resent == BEAT_RETRIES {
                continue;
            }
            // The retransmission waits sum to BEAT_RTO_MS · (2^resent − 1).
            let retransmission = rto - BEAT_RTO_MS;
            let lane = from as usize * self.capacity + to as usize;
            let tail = Ms::from(self.lanes[lane].tail);
            let at = (now + retransmission + self.delay(from, to)).max(tail);
            // Simulated milliseconds fit in 32 bits for 49 days.
            self.lanes[lane].tail = at as u32;
            let epoch = self.nodes[to as usize].epoch;
            self.queue.push(
                at,
                Event::Beat {
                    to,
                    epoch,
                    from,
                    place,
                    heartbeat: Rc::clone(&heartbeat),
                },
            );
        }
    }

    fn send_sync(&mut self, from: u32, to: PeerId, message: SyncMessage, answer: bool) {
        let Some(&to) = self.index.get(&to) else {
            return;
        };
        if !self.connected(from, to) || !self.passes(from, to) || self.lost() {
            return;
        }
        let at = self.queue.now + self.delay(from, to);
        let epoch = self.nodes[to as usize].epoch;
        self.queue.push(
            at,
            Event::Sync {
                to,
                epoch,
                from,
                message: Rc::new(message),
                answer,
            },
        );
    }

    fn dial(&mut self, from: u32, peer: PeerId) {
        let Some(&to) = self.index.get(&peer) else {
            return;
        };
        let now = self.queue.now;
        if to == from || self.connected(from, to) {
            return;
        }
        let epoch = self.nodes[from as usize].epoch;
        let reachable = self.passes_both(from, to);
        if reachable && self.is_up(to) {
            let rtt = self.delay(from, to) + self.delay(to, from);
            let epoch_b = self.nodes[to as usize].epoch;
            self.queue.push(
                now + rtt,
                Event::Connect {
                    a: from,
                    b: to,
                    epoch_a: epoch,
                    epoch_b,
                },
            );
        } else {
            // The host answers with a reset when it is reachable and was not silently lost.
            let silent_host = self.nodes[to as usize].loud_witnesses.is_none()
                && !self.nodes[to as usize].stopping;
            let wait = if reachable && !silent_host {
                self.delay(from, to) + self.delay(to, from)
            } else {
                to_ms(self.scenario.net.dial_timeout)
            };
            self.queue.push(
                now + wait,
                Event::DialFailed {
                    to: from,
                    epoch,
                    peer: to,
                },
            );
        }
    }

    fn disconnect(&mut self, from: u32, peer: PeerId) {
        let Some(&to) = self.index.get(&peer) else {
            return;
        };
        if !self.connected(from, to) {
            return;
        }
        self.set_conn(from, to, 0);
        self.comps_stale = true;
        self.split_at = self.queue.now;
        let now = self.queue.now;
        let epoch_from = self.nodes[from as usize].epoch;
        self.queue.push(
            now,
            Event::Disconnected {
                to: from,
                epoch: epoch_from,
                peer: to,
            },
        );
        let at = now + self.delay(from, to);
        let epoch_to = self.nodes[to as usize].epoch;
        self.queue.push(
            at,
            Event::Disconnected {
                to,
                epoch: epoch_to,
                peer: from,
            },
        );
    }

    fn open_connection(&mut self, a: u32, b: u32) {
        self.set_conn(a, b, self.next_generation);
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        if self.comps_stale || !self.is_up(a) || !self.is_up(b) || !self.passes_both(a, b) {
            return;
        }
        // A new edge can only join two components: merge the smaller into the larger.
        let (ca, cb) = (self.comp[a as usize], self.comp[b as usize]);
        if ca == cb || ca == u32::MAX || cb == u32::MAX {
            self.comps_stale |= ca == u32::MAX || cb == u32::MAX;
            return;
        }
        let (big, small) =
            if self.comp_members[ca as usize].len() >= self.comp_members[cb as usize].len() {
                (ca, cb)
            } else {
                (cb, ca)
            };
        let moved = std::mem::take(&mut self.comp_members[small as usize]);
        for &n in &moved {
            self.comp[n as usize] = big;
        }
        self.comp_members[big as usize].extend(moved);
    }

    // ---- events ----

    fn alive_epoch(&self, node: u32, epoch: u32) -> bool {
        let n = &self.nodes[node as usize];
        n.epoch == epoch && n.core.is_some()
    }

    /// The node an event is an input of (`None`: the network's or the checker's own).
    fn input_of(event: &Event) -> Option<u32> {
        match event {
            Event::Timer(i) | Event::JoinStart(i) => Some(*i),
            Event::Gossip { to, .. }
            | Event::Beat { to, .. }
            | Event::Subscribed { to, .. }
            | Event::Disconnected { to, .. }
            | Event::DialFailed { to, .. }
            | Event::Sync { to, .. }
            | Event::Persisted { to, .. } => Some(*to),
            Event::JoinRequest { seed, .. } => Some(*seed),
            Event::JoinAdmitted { joiner, .. } | Event::JoinConnect { joiner, .. } => Some(*joiner),
            Event::Connect { a, .. } => Some(*a),
            Event::Check | Event::Fault(_) | Event::ConnTimeout { .. } => None,
        }
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.queue.now;
        if let Some(i) = Self::input_of(&event) {
            let until = self.nodes[i as usize].paused_until;
            if until > now {
                // A paused process handles it when it runs again, in arrival order.
                if let Event::Timer(i) = event {
                    if self.nodes[i as usize].wake == Some(now) {
                        self.nodes[i as usize].wake = Some(until);
                        self.queue.push(until, Event::Timer(i));
                    }
                } else {
                    self.queue.push(until, event);
                }
                return;
            }
        }
        match event {
            Event::Timer(i) => {
                if self.nodes[i as usize].wake == Some(now) {
                    self.nodes[i as usize].wake = None;
                    self.call(i, Input::Timer);
                }
            }
            Event::Check => {
                self.check();
                let step = to_ms(self.scenario.net.step);
                self.queue.push(now + step, Event::Check);
            }
            Event::Fault(index) => self.apply_fault(index),
            Event::Gossip {
                to,
                epoch,
                from,
                body,
            } => {
                if self.alive_epoch(to, epoch) {
                    self.deliveries += 1;
                    let signer = Some(self.nodes[from as usize].id);
                    self.call(
                        to,
                        Input::Gossip {
                            signer,
                            body: &body,
                        },
                    );
                }
            }
            Event::Beat {
                to,
                epoch,
                from,
                place,
                heartbeat,
            } => {
                // A frame of a connection that has since closed is gone with it.
                if self.alive_epoch(to, epoch) && self.connected(from, to) {
                    self.deliveries += 1;
                    let from = self.nodes[from as usize].id;
                    self.call(
                        to,
                        Input::Heartbeat {
                            from,
                            heartbeat: &heartbeat,
                            place: (place != u32::MAX).then_some(place as usize),
                        },
                    );
                }
            }
            Event::Connect {
                a,
                b,
                epoch_a,
                epoch_b,
            } => {
                if !self.alive_epoch(a, epoch_a) {
                    return;
                }
                if !self.alive_epoch(b, epoch_b) || !self.passes_both(a, b) {
                    let peer = self.nodes[b as usize].id;
                    self.call(a, Input::DialFailed(peer));
                    return;
                }
                if self.connected(a, b) {
                    return;
                }
                self.open_connection(a, b);
                let (id_a, id_b) = (self.nodes[a as usize].id, self.nodes[b as usize].id);
                self.call(a, Input::Connected(id_b));
                self.call(b, Input::Connected(id_a));
                // Gossipsub exchanges subscriptions right after the connection is up.
                for (to, peer) in [(a, b), (b, a)] {
                    let at = now + self.delay(peer, to);
                    let epoch = self.nodes[to as usize].epoch;
                    self.queue.push(at, Event::Subscribed { to, epoch, peer });
                }
            }
            Event::Subscribed { to, epoch, peer } => {
                if self.alive_epoch(to, epoch) && self.connected(to, peer) {
                    let id = self.nodes[peer as usize].id;
                    self.call(to, Input::Subscribed(id));
                }
            }
            Event::Disconnected { to, epoch, peer } => {
                // A newer connection replaced the one that closed: not the last one.
                if self.alive_epoch(to, epoch) && !self.connected(to, peer) {
                    let id = self.nodes[peer as usize].id;
                    self.call(to, Input::Disconnected(id));
                }
            }
            Event::ConnTimeout { a, b, generation } => {
                let slot = self.slot(a, b);
                if self.conns[slot] != generation || self.passes_both(a, b) {
                    return;
                }
                self.set_conn(a, b, 0);
                self.comps_stale = true;
                for (to, peer) in [(a, b), (b, a)] {
                    let epoch = self.nodes[to as usize].epoch;
                    self.dispatch(Event::Disconnected { to, epoch, peer });
                }
            }
            Event::DialFailed { to, epoch, peer } => {
                if self.alive_epoch(to, epoch) && !self.connected(to, peer) {
                    let id = self.nodes[peer as usize].id;
                    self.call(to, Input::DialFailed(id));
                }
            }
            Event::Sync {
                to,
                epoch,
                from,
                message,
                answer,
            } => {
                if !self.alive_epoch(to, epoch) || !self.connected(to, from) {
                    return;
                }
                let from = self.nodes[from as usize].id;
                if answer {
                    self.call(
                        to,
                        Input::SyncAnswer {
                            from,
                            message: &message,
                        },
                    );
                } else {
                    self.call(
                        to,
                        Input::SyncRequest {
                            from,
                            message: &message,
                        },
                    );
                }
            }
            Event::Persisted { to, epoch, ack } => {
                if self.alive_epoch(to, epoch) {
                    self.call(to, Input::Persisted(*ack));
                }
            }
            Event::JoinConnect {
                joiner,
                seed,
                epoch,
            } => self.on_join_connect(joiner, seed, epoch),
            Event::JoinRequest {
                seed,
                epoch,
                joiner,
            } => self.on_join_request(seed, epoch, joiner),
            Event::JoinStart(joiner) => self.on_join_start(joiner),
            Event::JoinAdmitted { joiner, admission } => {
                if self.nodes[joiner as usize].joining.is_none() {
                    return;
                }
                let (members, settings) = Rc::unwrap_or_clone(admission);
                self.start_core(joiner, members, &[], settings, Vec::new(), true);
            }
        }
    }

    // ---- membership outputs ----

    fn on_membership(&mut self, i: u32, change: Change) {
        self.note_change();
        match change {
            Change::Alive(_) => self.nodes[i as usize].alive_seen += 1,
            Change::Offline(target, reason) => {
                let node = &mut self.nodes[i as usize];
                node.alive_seen = node.alive_seen.saturating_sub(1);
                self.judge_offline_mark(i, target, reason);
            }
            Change::Joined(_) | Change::Left(_) => {
                // Rare: count again (the core rebuilt the entry's liveness).
                self.nodes[i as usize].alive_seen = self.nodes[i as usize]
                    .core
                    .as_deref()
                    .map_or(0, count_alive);
            }
        }
    }

    /// An offline mark is false if the member has been up and reachable (same component,
    /// both directions pass) for longer than the detection bound.
    fn judge_offline_mark(&mut self, i: u32, target: PeerId, reason: OfflineReason) {
        if reason == OfflineReason::Goodbye {
            return;
        }
        let Some(&t) = self.index.get(&target) else {
            return;
        };
        self.ensure_components();
        let now = self.queue.now;
        let bound = to_ms(self.detection_bound());
        let node = &self.nodes[t as usize];
        let reachable_for_long = node.core.is_some()
            && now.saturating_sub(node.up_since.max(node.paused_until)) > bound
            && now.saturating_sub(self.fault_at) > bound
            && self.passes_both(i, t);
        if !reachable_for_long {
            return;
        }
        self.false_offline += 1;
        self.phase_false_offline += 1;
        if self.scenario.assert_no_false_offline {
            let name = self.nodes[i as usize].name.clone();
            let detail = format!(
                "marked {} offline ({reason:?}) while it was up and reachable",
                self.nodes[t as usize].name
            );
            self.violate(Invariant::FalseOffline, &name, detail);
        }
    }

    fn note_change(&mut self) {
        self.last_change = self.queue.now;
    }

    fn detection_bound(&self) -> Duration {
        self.config.offline_after + self.margin()
    }

    fn margin(&self) -> Duration {
        self.scenario.net.worst_latency() * 2 + self.scenario.net.step + Duration::from_secs(1)
    }

    fn violate(&mut self, invariant: Invariant, node: &str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                node: node.to_owned(),
                at: Duration::from_millis(self.queue.now),
                seed: self.scenario.seed,
                detail,
            });
        }
    }

    // ---- faults ----

    fn majority_leader(&self) -> Option<u32> {
        let mut votes: BTreeMap<u32, usize> = BTreeMap::new();
        for node in &self.nodes {
            if let Some(core) = &node.core
                && let Some(&l) = self.index.get(&core.leader())
            {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(l, n)| (*n, Reverse(*l)))
            .map(|(l, _)| l)
    }

    fn resolve(&self, target: Target) -> Option<u32> {
        match target {
            Target::Leader => self.majority_leader(),
            Target::Node(i) => Some(i as u32),
        }
    }

    fn apply_fault(&mut self, index: usize) {
        let now = self.queue.now;
        let fault = self.scenario.faults[index].1.clone();
        self.close_phase(now);
        self.open_phase(fault.to_string(), now);
        match fault {
            Fault::Crash { target, loud } => {
                if let Some(i) = self.resolve(target) {
                    self.take_down(i, loud);
                }
            }
            Fault::Stop(target) => {
                if let Some(i) = self.resolve(target) {
                    self.call(i, Input::Stop);
                }
            }
            Fault::RestartAll => {
                let down: Vec<u32> = (0..self.nodes.len() as u32)
                    .filter(|i| {
                        let n = &self.nodes[*i as usize];
                        n.core.is_none() && n.joining.is_none() && n.incarnation > 0
                    })
                    .collect();
                for i in down {
                    self.restart(i);
                }
            }
            Fault::Partition { minority } => {
                for (i, side) in self.side.iter_mut().enumerate() {
                    *side = u8::from(i >= minority);
                }
                self.links_changed();
            }
            Fault::Heal => {
                self.side.iter_mut().for_each(|s| *s = 0);
                self.blocked.clear();
                self.links_changed();
            }
            Fault::BlockOneWay { from, to } => {
                self.blocked.insert((from as u32, to as u32));
                self.links_changed();
            }
            Fault::SetLoss(loss) => self.loss = loss,
            Fault::Pause { node, length } => {
                let end = now + to_ms(length);
                self.nodes[node].paused_until = end;
                // Its timer, if one is due meanwhile, comes first when it runs again.
                if let Some(wake) = self.nodes[node].wake
                    && wake < end
                {
                    self.nodes[node].wake = Some(end);
                    self.queue.push(end, Event::Timer(node as u32));
                }
            }
            Fault::Join { count, gap } => {
                let first = self
                    .nodes
                    .iter()
                    .position(|n| n.incarnation == 0 && n.joining.is_none() && n.core.is_none());
                let Some(first) = first else {
                    return;
                };
                for k in 0..count {
                    let joiner = (first + k) as u32;
                    let at = now + k as u64 * to_ms(gap);
                    self.schedule_join(joiner, at);
                }
            }
        }
    }

    fn restart(&mut self, i: u32) {
        let node = &self.nodes[i as usize];
        let (records, alive, settings, invites) = match &node.snapshot {
            Some(snapshot) => (
                snapshot.members.iter().map(|(r, _)| r.clone()).collect(),
                snapshot
                    .members
                    .iter()
                    .filter(|(_, s)| *s == Status::Alive)
                    .map(|(r, _)| r.node_id)
                    .collect::<Vec<_>>(),
                snapshot.settings.clone(),
                snapshot.invites.clone(),
            ),
            None => (
                node.initial.to_vec(),
                Vec::new(),
                NetworkSettings::default(),
                Vec::new(),
            ),
        };
        self.start_core(i, records, &alive, settings, invites, true);
    }

    /// Links changed (a partition, a heal, a blocked direction): connections that no longer
    /// pass time out unless the link comes back first.
    fn links_changed(&mut self) {
        let now = self.queue.now;
        self.comps_stale = true;
        self.split_at = now;
        self.fault_at = now;
        let at = now + to_ms(self.scenario.net.conn_timeout);
        let n = self.nodes.len() as u32;
        for a in 0..n {
            for b in a + 1..n {
                let generation = self.conns[self.slot(a, b)];
                if generation != 0 && !self.passes_both(a, b) {
                    self.queue.push(at, Event::ConnTimeout { a, b, generation });
                }
            }
        }
    }

    // ---- joins ----

    /// The joiner gets a link from a random up member at `at`.
    fn schedule_join(&mut self, joiner: u32, at: Ms) {
        let token = format!("sim-token-{}-{joiner}", self.scenario.seed);
        self.nodes[joiner as usize].joining = Some(Joining {
            seed: u32::MAX,
            token,
            asked_at: at,
        });
        self.queue.push(at, Event::JoinStart(joiner));
    }

    /// Picks the seed among the up members and has it record an invite.
    fn on_join_start(&mut self, joiner: u32) {
        let now = self.queue.now;
        let Some(joining) = self.nodes[joiner as usize].joining.clone() else {
            return;
        };
        let up: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|i| self.is_up(*i))
            .collect();
        if up.is_empty() {
            let name = self.nodes[joiner as usize].name.clone();
            self.violate(Invariant::Join, &name, "no member is up to join".into());
            return;
        }
        let seed = up[self.rng.below(up.len() as u64) as usize];
        if let Some(j) = self.nodes[joiner as usize].joining.as_mut() {
            j.seed = seed;
        }
        self.next_request += 1;
        let request = self.next_request;
        self.invites_pending.insert(request, joiner);
        let hash = crate::join::token_hash(&joining.token);
        let unix_now = UNIX_START + now / 1000;
        self.call(
            seed,
            Input::IssueInvite {
                request,
                token_sha256: &hash,
                unix_now,
                ttl_secs: 3600,
            },
        );
    }

    /// The invite is on the seed's disk: the joiner dials the seed.
    fn on_invite_recorded(&mut self, seed: u32, request: u64, result: Result<(), String>) {
        let now = self.queue.now;
        let Some(joiner) = self.invites_pending.remove(&request) else {
            return;
        };
        if let Err(error) = result {
            let name = self.nodes[joiner as usize].name.clone();
            self.violate(
                Invariant::Join,
                &name,
                format!("invite not recorded: {error}"),
            );
            return;
        }
        let rtt = self.delay(joiner, seed) + self.delay(seed, joiner);
        let epoch = self.nodes[seed as usize].epoch;
        self.queue.push(
            now + rtt,
            Event::JoinConnect {
                joiner,
                seed,
                epoch,
            },
        );
    }

    /// The joiner's dial of its seed lands; its Join request follows.
    fn on_join_connect(&mut self, joiner: u32, seed: u32, epoch: u32) {
        let now = self.queue.now;
        if self.nodes[joiner as usize].joining.is_none() {
            return;
        }
        if !self.alive_epoch(seed, epoch) || !self.passes_both(joiner, seed) {
            let name = self.nodes[joiner as usize].name.clone();
            let detail = format!(
                "could not reach its seed {}",
                self.nodes[seed as usize].name
            );
            self.violate(Invariant::Join, &name, detail);
            return;
        }
        self.open_connection(joiner, seed);
        let id = self.nodes[joiner as usize].id;
        self.call(seed, Input::Connected(id));
        let at = now + self.delay(joiner, seed);
        self.queue.push(
            at,
            Event::JoinRequest {
                seed,
                epoch,
                joiner,
            },
        );
    }

    fn on_join_request(&mut self, seed: u32, epoch: u32, joiner: u32) {
        if !self.alive_epoch(seed, epoch) {
            return;
        }
        let Some(joining) = self.nodes[joiner as usize].joining.clone() else {
            return;
        };
        let node = &self.nodes[joiner as usize];
        let (peer, name) = (node.id, node.name.clone());
        let addr = format!("10.200.{}.{}:4747", joiner >> 8, joiner & 255);
        let unix_now = UNIX_START + self.queue.now / 1000;
        self.call(
            seed,
            Input::JoinRequest {
                peer,
                token: &joining.token,
                name: &name,
                addr: &addr,
                priority: PRIORITY,
                unix_now,
                // The simulated joiner writes nothing that could fail: no confirmation step.
                confirms: false,
                card: None,
            },
        );
    }

    // ---- phases and invariants ----

    fn open_phase(&mut self, name: String, at: Ms) {
        self.phases.push(PhaseReport {
            name,
            at: Duration::from_millis(at),
            converged_after: None,
            leaders: Vec::new(),
            components: 0,
            up: 0,
            false_offline: 0,
            connections: (0.0, 0),
        });
        self.phase_start = at;
        self.converged_since = None;
        self.roster_ok_since = None;
        self.last_roster_check = None;
        self.phase_false_offline = 0;
        self.note_change();
    }

    fn close_phase(&mut self, _at: Ms) {
        self.ensure_components();
        let leaders: Vec<String> = self
            .comp_members
            .iter()
            .filter_map(|members| {
                let first = members.first()?;
                let core = self.nodes[*first as usize].core.as_deref()?;
                Some(core.name_of(&core.leader()))
            })
            .collect();
        let converged_after = match (self.converged_since, self.roster_ok_since) {
            (Some(since), Some(_)) => Some(Duration::from_millis(
                since.saturating_sub(self.phase_start),
            )),
            _ => None,
        };
        let up = self.nodes.iter().filter(|n| n.core.is_some()).count();
        let per_node: Vec<usize> = (0..self.nodes.len())
            .filter(|a| self.nodes[*a].core.is_some())
            .map(|a| {
                let row = &self.open[a * self.row_words..(a + 1) * self.row_words];
                row.iter().map(|word| word.count_ones() as usize).sum()
            })
            .collect();
        let connections = (
            per_node.iter().sum::<usize>() as f64 / per_node.len().max(1) as f64,
            per_node.iter().copied().max().unwrap_or(0),
        );
        if let Some(phase) = self.phases.last_mut() {
            phase.connections = connections;
            phase.converged_after = converged_after;
            phase.components = self.comp_members.iter().filter(|m| !m.is_empty()).count();
            phase.leaders = leaders;
            phase.up = up;
            phase.false_offline = self.phase_false_offline;
        }
    }

    /// One check step: the stale-leader bound for every node, then (until the phase has
    /// converged, or once stable) the convergence conditions. O(N), plus an O(N * members)
    /// roster digest at most once per second while the other conditions hold.
    fn check(&mut self) {
        self.ensure_components();
        let now = self.queue.now;
        self.check_stale_leaders(now);
        self.check_joins(now);
        if self.violation.is_some() {
            return;
        }
        let agreed = self.leaders_agree();
        match agreed {
            Ok(()) => {
                if self.converged_since.is_none() {
                    self.converged_since = Some(self.last_change);
                    self.roster_ok_since = None;
                }
                if self.roster_ok_since.is_none()
                    && self.last_roster_check.is_none_or(|at| now >= at + 1000)
                {
                    self.last_roster_check = Some(now);
                    match self.rosters_agree() {
                        Ok(()) => self.roster_ok_since = Some(now),
                        Err((node, detail)) => {
                            if self.stable(now) {
                                self.violate(Invariant::Convergence, &node, detail);
                            }
                        }
                    }
                }
            }
            Err((node, detail)) => {
                self.converged_since = None;
                self.roster_ok_since = None;
                if self.stable(now) {
                    self.violate(Invariant::Convergence, &node, detail);
                }
            }
        }
    }

    /// A join must be answered within the settle bound.
    fn check_joins(&mut self, now: Ms) {
        let bound = to_ms(self.scenario.settle_bound());
        let late = self
            .nodes
            .iter()
            .find(|n| n.joining.as_ref().is_some_and(|j| now > j.asked_at + bound));
        if let Some(node) = late {
            let name = node.name.clone();
            self.violate(
                Invariant::Join,
                &name,
                "not admitted within the settle bound".into(),
            );
        }
    }

    /// Whether the last fault is older than the settle bound.
    fn stable(&self, now: Ms) -> bool {
        now >= self.phase_start + to_ms(self.scenario.settle_bound())
            && now >= self.split_at + to_ms(self.scenario.settle_bound())
    }

    fn check_stale_leaders(&mut self, now: Ms) {
        let bound = to_ms(self.detection_bound());
        let loud_bound = to_ms(self.scenario.net.worst_latency() * 3 + self.margin());
        for n in 0..self.nodes.len() {
            let Some(core) = self.nodes[n].core.as_deref() else {
                continue;
            };
            let leader = core.leader();
            let Some(&l) = self.index.get(&leader) else {
                continue;
            };
            if l as usize == n {
                continue;
            }
            let started = self.nodes[n].up_since;
            let target = &self.nodes[l as usize];
            let (since, limit) = if target.core.is_none() {
                let tight = target
                    .loud_witnesses
                    .as_ref()
                    .is_some_and(|w| w.contains(&(n as u32)));
                (
                    target.down_since.max(started),
                    if tight { loud_bound } else { bound },
                )
            } else if self.comp[l as usize] != self.comp[n] {
                (self.split_at.max(started), bound)
            } else {
                continue;
            };
            if now > since + limit {
                let name = self.nodes[n].name.clone();
                let detail = format!(
                    "names {} leader {:.1}s after it became {} (bound {:.1}s)",
                    self.nodes[l as usize].name,
                    (now - since) as f64 / 1000.0,
                    if self.nodes[l as usize].core.is_none() {
                        "down"
                    } else {
                        "unreachable"
                    },
                    limit as f64 / 1000.0
                );
                self.violate(Invariant::StaleLeader, &name, detail);
                return;
            }
        }
    }

    /// Every component: one leader that hosts, named by all, and everyone sees everyone of the
    /// component alive.
    fn leaders_agree(&self) -> Result<(), (String, String)> {
        for members in &self.comp_members {
            let Some(&first) = members.first() else {
                continue;
            };
            let Some(first_core) = self.nodes[first as usize].core.as_deref() else {
                continue;
            };
            let leader = first_core.leader();
            let Some(&l) = self.index.get(&leader) else {
                return Err((
                    self.nodes[first as usize].name.clone(),
                    "names an unknown leader".into(),
                ));
            };
            if self.comp[l as usize] != self.comp[first as usize] {
                return Err((
                    self.nodes[first as usize].name.clone(),
                    format!(
                        "names {} leader, outside its component",
                        self.nodes[l as usize].name
                    ),
                ));
            }
            let mut hosts = 0;
            for &n in members {
                let node = &self.nodes[n as usize];
                let Some(core) = node.core.as_deref() else {
                    continue;
                };
                if core.leader() != leader {
                    return Err((
                        node.name.clone(),
                        format!(
                            "names {} leader while {} names {}",
                            core.name_of(&core.leader()),
                            self.nodes[first as usize].name,
                            self.nodes[l as usize].name
                        ),
                    ));
                }
                if core.leadership().is_local {
                    hosts += 1;
                }
                if node.alive_seen + 1 != members.len() {
                    return Err((
                        node.name.clone(),
                        format!(
                            "sees {} members alive, its component has {} others",
                            node.alive_seen,
                            members.len() - 1
                        ),
                    ));
                }
            }
            // A leader that cannot see a majority of the members heard recently stands down
            // (the partition rule): its component then hosts nobody. The rule as the leader last
            // derived it: members age out of its memory between two inputs, and it acts on them
            // at its next timer (within a heartbeat interval), not at the instant they do.
            let expected = match self.nodes[l as usize].core.as_deref() {
                Some(core) if core.partitioned().is_some() => 0,
                _ => 1,
            };
            if hosts != expected {
                return Err((
                    self.nodes[l as usize].name.clone(),
                    format!(
                        "{hosts} nodes host the leader services in one component (expected {expected})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every up member holds the same roster (the digest of all its records).
    fn rosters_agree(&self) -> Result<(), (String, String)> {
        let mut first: Option<(crate::membership::RosterDigest, &str)> = None;
        for node in &self.nodes {
            let Some(core) = node.core.as_deref() else {
                continue;
            };
            // The digest the roster sync compares (every record, tombstones included): the
            // check holds the cores to what they themselves take for "the same list".
            let digest = core.membership().records_digest(|_| false);
            match first {
                None => first = Some((digest, &node.name)),
                Some((d, name)) if d != digest => {
                    return Err((
                        node.name.clone(),
                        format!("its roster differs from {name}'s"),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn count_alive(core: &Node) -> usize {
    let membership = core.membership();
    membership
        .remote_members()
        .filter(|(id, _)| membership.status(id) == Some(Status::Alive))
        .count()
}

/// Runs a scenario and turns a violation into an error.
pub fn run(scenario: Scenario) -> Result<RunReport, SimError> {
    let report = Sim::new(scenario)?.run();
    match &report.violation {
        Some(violation) => Err(SimError::Violation(violation.clone())),
        None => Ok(report),
    }
}

impl fmt::Display for PhaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let converged = self.converged_after.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.3}s", d.as_secs_f64()),
        );
        write!(
            f,
            "at={:.1}s converged_after={converged} up={} components={} leaders={} false_offline={} \
             connections={:.1}/{}",
            self.at.as_secs_f64(),
            self.up,
            self.components,
            self.leaders.join(","),
            self.false_offline,
            self.connections.0,
            self.connections.1
        )
    }
}

impl Scenario {
    /// The `constella-sim` command line that replays this scenario (faults the command line
    /// cannot express are left out, with a note).
    pub fn replay_command(&self) -> String {
        let net = &self.net;
        let mut args = format!(
            "cargo run --release --bin constella-sim -- --nodes {} --sim-secs {} --seed {} \
             --latency-ms {} --latency-spread-ms {} --jitter-ms {} --loss {} --skew-ms {} \
             --dial-timeout-ms {} --conn-timeout-ms {} --step-ms {} --start {}",
            self.nodes,
            self.duration.as_secs_f64(),
            self.seed,
            net.latency.as_millis(),
            net.latency_spread.as_millis(),
            net.jitter.as_millis(),
            net.loss,
            net.clock_skew.as_millis(),
            net.dial_timeout.as_millis(),
            net.conn_timeout.as_millis(),
            net.step.as_millis(),
            self.start
        );
        if self.assert_no_false_offline {
            args.push_str(" --assert-no-false-offline");
        }
        if !self.local_health {
            args.push_str(" --no-local-health");
        }
        if self.faults.is_empty() {
            args.push_str(" --no-faults");
        }
        let secs = |d: Duration| d.as_secs_f64();
        let heal_after = |from: usize| {
            self.faults[from + 1..]
                .iter()
                .find(|(_, f)| *f == Fault::Heal)
                .map_or(self.duration, |(at, _)| *at)
        };
        let mut skip_heals = 0usize;
        for (k, (at, fault)) in self.faults.iter().enumerate() {
            let at_s = secs(*at);
            let flag = match fault {
                Fault::Crash {
                    target: Target::Leader,
                    loud,
                } => format!(" --crash {at_s}{}", if *loud { ":loud" } else { "" }),
                Fault::Crash {
                    target: Target::Node(i),
                    loud,
                } => format!(
                    " --crash-node {at_s}:{i}{}",
                    if *loud { ":loud" } else { "" }
                ),
                Fault::RestartAll => format!(" --restart {at_s}"),
                Fault::Stop(Target::Leader) => format!(" --stop {at_s}"),
                Fault::Stop(Target::Node(i)) => format!(" (stop of node {i} not expressible)"),
                Fault::Partition { minority } => {
                    skip_heals += 1;
                    format!(
                        " --partition {at_s}:{minority}:{}",
                        secs(heal_after(k).saturating_sub(*at))
                    )
                }
                Fault::BlockOneWay { from, to } => {
                    skip_heals += 1;
                    format!(
                        " --block {at_s}:{from}:{to}:{}",
                        secs(heal_after(k).saturating_sub(*at))
                    )
                }
                Fault::Heal if skip_heals > 0 => {
                    skip_heals -= 1;
                    String::new()
                }
                Fault::Heal => format!(" --partition {at_s}:1:0"),
                Fault::SetLoss(loss) => format!(" --loss-at {at_s}:{loss}"),
                Fault::Join { count, gap } => {
                    format!(" --join {at_s}:{count}:{}", gap.as_millis())
                }
                Fault::Pause { node, length } => {
                    format!(" --pause {at_s}:{node}:{}", length.as_millis())
                }
            };
            args.push_str(&flag);
        }
        args
    }
}
