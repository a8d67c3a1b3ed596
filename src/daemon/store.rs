//! The store task: the only writer of the state directory while the node runs.
//!
//! The event loop hands it whole states; writes happen on a thread of their own (temp file,
//! fsync, rename, fsync of the directory), never on the loop. States queued while a write is
//! under way are coalesced: only the newest is written, since each state contains everything
//! before it. A write the rules must wait for (an invite issued, a joiner admitted, a departure)
//! carries an [`Ack`], and its outcome comes back on the channel given to [`Store::spawn`]
//! once it is durable or has failed.

use std::thread;

use constella_behaviours::node::Ack;
use tokio::sync::mpsc;
use tracing::warn;

use crate::state::{NetworkState, StateDir};

/// The outcome of a write that carried an [`Ack`]: `Err` is one line for a person.
pub type Written = (Ack, Result<(), String>);

/// A handle to the store task. Dropping it lets the thread finish the queued writes and end.
#[derive(Debug)]
pub struct Store {
    jobs: mpsc::UnboundedSender<(NetworkState, Option<Ack>)>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Store {
    /// Starts the writer thread for `dir`; acknowledged writes are reported on `written`.
    pub fn spawn(dir: StateDir, written: mpsc::UnboundedSender<Written>) -> std::io::Result<Self> {
        let (jobs, mut queue) = mpsc::unbounded_channel::<(NetworkState, Option<Ack>)>();
        let thread = thread::Builder::new()
            .name("constella-store".to_owned())
            .spawn(move || {
                while let Some((mut state, ack)) = queue.blocking_recv() {
                    let mut acks: Vec<Ack> = ack.into_iter().collect();
                    // Coalesce: everything queued meanwhile is superseded by the newest state.
                    while let Ok((newer, ack)) = queue.try_recv() {
                        state = newer;
                        acks.extend(ack);
                    }
                    let result = dir.save(&state).map_err(|error| format!("{error:#}"));
                    if let Err(error) = &result {
                        warn!(error, "cannot save the network state");
                    }
                    for ack in acks {
                        let _ = written.send((ack, result.clone()));
                    }
                }
            })?;
        Ok(Self {
            jobs,
            thread: Some(thread),
        })
    }

    /// Queues `state` for writing; with an `ack`, its outcome is reported.
    pub fn save(&self, state: NetworkState, ack: Option<Ack>) {
        // The thread only ends when this handle is dropped, so a send cannot fail before.
        let _ = self.jobs.send((state, ack));
    }

    /// Writes everything queued and waits for the thread (at shutdown).
    pub fn finish(mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
