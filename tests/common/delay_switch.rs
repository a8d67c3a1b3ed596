//! A userspace switch that delays and drops frames, for faults the kernel here cannot make
//! (it has no `sch_netem`): loss with a delay and jitter on every frame.
//!
//! It replaces a [`super::netns::Lab`]'s bridge: the ports leave `br0`, and one thread in the
//! switch namespace reads every frame that arrives on a port (an `AF_PACKET` socket per port,
//! frames this thread sent itself skipped), drops it with the given probability, and otherwise
//! writes it to every other port after `delay ± jitter` (uniform, per frame, so frames may be
//! reordered, as with netem's jitter). Flooding every frame to every port is a hub, which is
//! enough for a few nodes: a node's kernel ignores frames for other MAC addresses.
//! Dropping the switch stops the thread; the ports stay detached (the lab is deleted next).
//! The thread runs at a real-time priority (`SCHED_FIFO`), so load on the machine delays the
//! nodes, not the network between them.

#![allow(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the switch treats each frame.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Percent of frames dropped (each frame, each direction, independently).
    pub loss_percent: u32,
    /// Mean one-way delay added to every frame.
    pub delay: Duration,
    /// The delay varies uniformly within ± this.
    pub jitter: Duration,
}

/// The running switch; dropping it stops the thread.
pub struct DelaySwitch {
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DelaySwitch {
    /// Starts forwarding between `ports` (interface names in namespace `ns`).
    pub fn start(ns: &str, ports: &[String], impairment: Impairment) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, ports) = (ns.to_owned(), ports.to_vec());
        let thread = {
            let (stop, forwarded, dropped) = (stop.clone(), forwarded.clone(), dropped.clone());
            std::thread::spawn(move || {
                enter_netns(&ns);
                run_before_the_nodes();
                let sockets: Vec<OwnedFd> = ports.iter().map(|p| packet_socket(p)).collect();
                ready_tx.send(()).expect("the starter waits");
                run(&sockets, impairment, &stop, &forwarded, &dropped);
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the delay switch to open its sockets");
        Self {
            stop,
            forwarded,
            dropped,
            thread: Some(thread),
        }
    }

    /// (frames forwarded, frames dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.forwarded.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for DelaySwitch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The switch is the network, not one of its hosts: under load (CI runs the fault tests side by
/// side, and a build may run beside them) a starved switch holds every frame of every node at
/// once, which looks like a partition of everyone, not the loss and delay under test. A
/// real-time priority (the tests run as root) lets it run whenever a frame is due; it sleeps
/// in `poll` otherwise, so it takes little from the nodes. Without the privilege it runs as
/// it is and says so.
fn run_before_the_nodes() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter.
    let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if done != 0 {
        eprintln!(
            "delay switch: no real-time priority ({}); frames may wait when the machine is busy",
            std::io::Error::last_os_error()
        );
    }
}

fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns with a valid namespace fd changes only this thread's network namespace.
    let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn packet_socket(port: &str) -> OwnedFd {
    let name = std::ffi::CString::new(port).expect("a port name");
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(
        index != 0,
        "no port {port}: {}",
        std::io::Error::last_os_error()
    );
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket call; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set are those bind reads.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(bound, 0, "bind {port}: {}", std::io::Error::last_os_error());
    fd
}

/// Writes the TCP checksum of an IPv4 frame. A veth leaves it to "hardware" (checksum
/// offload): a frame read from the port carries only the pseudo-header sum, which a bridge
/// passes on with its offload mark but a frame written by a packet socket does not; the
/// receiver would drop every segment.
fn fill_tcp_checksum(frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return;
    }
    let header = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let (start, end) = (14 + header, 14 + total);
    if header < 20 || end > frame.len() || end < start + 20 {
        return;
    }
    frame[start + 16] = 0;
    frame[start + 17] = 0;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&frame[26..34]);
    add(&[0, 6]);
    add(&((end - start) as u16).to_be_bytes());
    add(&frame[start..end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    frame[start + 16..start + 18].copy_from_slice(&checksum.to_be_bytes());
}

/// A small deterministic generator (xorshift64*): loss and jitter need no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A frame waiting for its release: (when, a sequence number for a stable order, the port to
/// write it to, the frame).
type Pending = (Instant, u64, usize, Arc<[u8]>);

fn run(
    sockets: &[OwnedFd],
    impairment: Impairment,
    stop: &AtomicBool,
    forwarded: &AtomicU64,
    dropped: &AtomicU64,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    // (release time, sequence for a stable order, port to write to, frame)
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut buffer = vec![0u8; 65_536];
    let mut polls: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let jitter_us = impairment.jitter.as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _, _))) = queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, port, frame))) = queue.pop() else {
                break;
            };
            // SAFETY: the frame buffer is valid for its length; the fd is open.
            unsafe {
                libc::send(
                    sockets[port].as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                );
            }
        }
        let timeout_ms = queue.peek().map_or(10, |Reverse((at, _, _, _))| {
            at.saturating_duration_since(now).as_millis().clamp(0, 10) as i32
        });
        // SAFETY: polls is a valid array of pollfd of the length given.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as u64, timeout_ms) };
        if ready <= 0 {
            continue;
        }
        for (from, poll) in polls.iter_mut().enumerate() {
            if poll.revents & libc::POLLIN == 0 {
                continue;
            }
            poll.revents = 0;
            loop {
                // SAFETY: zeroed sockaddr_ll is valid for recvfrom to fill.
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: buffer and addr are valid for the sizes given.
                let n = unsafe {
                    libc::recvfrom(
                        sockets[from].as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                        0,
                        (&raw mut addr).cast(),
                        &mut len,
                    )
                };
                if n <= 0 {
                    break;
                }
                // Frames this switch wrote out come back as outgoing: never forward them.
                if addr.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                if rng.below(100) < u64::from(impairment.loss_percent) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                forwarded.fetch_add(1, Ordering::Relaxed);
                let frame = &mut buffer[..n as usize];
                fill_tcp_checksum(frame);
                let frame: Arc<[u8]> = (&*frame).into();
                let base = impairment.delay.as_micros() as u64;
                let offset = rng.below(2 * jitter_us + 1);
                let delay = Duration::from_micros((base + offset).saturating_sub(jitter_us));
                let at = Instant::now() + delay;
                for to in (0..sockets.len()).filter(|to| *to != from) {
                    sequence += 1;
                    queue.push(Reverse((at, sequence, to, Arc::clone(&frame))));
                }
            }
        }
    }
}
