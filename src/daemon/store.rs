//! The store task: the only writer of the state directory while the node runs.
//!
//! The event loop hands it whole states; writes happen on a thread of their own (temp file,
//! fsync, rename, fsync of the directory), never on the loop. States queued while a write is
//! under way are coalesced: only the newest is written, since each state contains everything
//! before it. A write the rules must wait for (an invite issued, a joiner admitted, a departure)
//! carries an [`Ack`], and its outcome comes back on the channel given to [`Store::spawn`]
//! once it is durable or has failed. A caller outside the core that must not go on before a
//! write is durable (the bot marking an alert sent before sending it) passes a [`Durable`]
//! sender to [`Store::save_durably`] instead.
//!
//! Test knob: `CONSTELLA_TEST_STORE_DELAY_MS` delays every write by that much, so a test can
//! kill the node between a change and its write.

use std::thread;

use constella_behaviours::node::Ack;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::state::{NetworkState, StateDir};

/// The outcome of a write that carried an [`Ack`]: `Err` is one line for a person.
pub type Written = (Ack, Result<(), String>);

/// Told once the state queued with it is on disk (fsynced and renamed into place), or why not.
pub type Durable = oneshot::Sender<Result<(), String>>;

/// One queued write.
type Job = (NetworkState, Option<Ack>, Option<Durable>);

/// A handle to the store task. Dropping it lets the thread finish the queued writes and end.
#[derive(Debug)]
pub struct Store {
    jobs: mpsc::UnboundedSender<Job>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Store {
    /// Starts the writer thread for `dir`; acknowledged writes are reported on `written`.
    pub fn spawn(dir: StateDir, written: mpsc::UnboundedSender<Written>) -> std::io::Result<Self> {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let delay = std::env::var("CONSTELLA_TEST_STORE_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
        let thread = thread::Builder::new()
            .name("constella-store".to_owned())
            .spawn(move || {
                while let Some((mut state, ack, durable)) = queue.blocking_recv() {
                    if let Some(delay) = delay {
                        thread::sleep(delay);
                    }
                    let mut acks: Vec<Ack> = ack.into_iter().collect();
                    let mut waiting: Vec<Durable> = durable.into_iter().collect();
                    // Coalesce: everything queued meanwhile is superseded by the newest state.
                    while let Ok((newer, ack, durable)) = queue.try_recv() {
                        state = newer;
                        acks.extend(ack);
                        waiting.extend(durable);
                    }
                    let result = dir.save(&state).map_err(|error| format!("{error:#}"));
                    if let Err(error) = &result {
                        warn!(error, "cannot save the network state");
                    }
                    for ack in acks {
                        let _ = written.send((ack, result.clone()));
                    }
                    for durable in waiting {
                        let _ = durable.send(result.clone());
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
        let _ = self.jobs.send((state, ack, None));
    }

    /// Queues `state` for writing; `durable` is told once it (or a newer state) is on disk.
    pub fn save_durably(&self, state: NetworkState, durable: Durable) {
        let _ = self.jobs.send((state, None, Some(durable)));
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
