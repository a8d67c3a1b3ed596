//! The log lines for the core's outputs that only need telling: leader changes, membership
//! changes, undone admissions and the end of a leave. Tests and operators read these lines,
//! so their wording is part of the interface. Each carries an `event` field (`EVENT=` in the
//! journal, see src/logging.rs), and the member it is about as `member` (`MEMBER=`): `node`
//! (`NODE=`) is the node that logs, on every journal entry.

use constella_behaviours::membership::Change;
use constella_behaviours::node::{LeaveOutcome, Node};
use libp2p::PeerId;
use tracing::{info, warn};

/// The leader this node names moved.
pub(super) fn leader_changed(core: &Node, previous: &PeerId, leader: &PeerId) {
    info!(
        previous = %core.name_of(previous),
        leader = %core.name_of(leader),
        leader_id = %leader,
        this_node = *leader == core.local().id,
        event = "leader_changed",
        "leader changed"
    );
}

/// The core was called well after the instant it asked for: this process was not running
/// (starved or stopped) or its event loop was blocked. Worth a warning: the node excuses the
/// time and waits longer before it blames members (docs/design.md, "Local health").
pub(super) fn ran_late(late: std::time::Duration, health: u32) {
    warn!(
        late_ms = late.as_millis() as u64,
        health,
        event = "ran_late",
        "event loop ran late; local health score {health}"
    );
}

/// A member joined, left, came alive or went offline.
pub(super) fn membership(core: &Node, change: &Change) {
    match change {
        Change::Joined(id) => info!(
            member = %core.name_of(id),
            member_id = %id,
            event = "member_joined",
            "member joined"
        ),
        Change::Left(id) => {
            info!(event = "member_left", member_id = %id, "member left the network")
        }
        Change::Alive(id) => info!(
            member = %core.name_of(id),
            member_id = %id,
            event = "member_alive",
            "member alive"
        ),
        Change::Offline(id, reason) => {
            info!(
                member = %core.name_of(id),
                member_id = %id,
                ?reason,
                event = "member_offline",
                "member offline"
            );
        }
    }
}

/// A joiner never confirmed, so the core undid its admission.
pub(super) fn admission_undone(peer: &PeerId, name: &str) {
    warn!(
        member = %name,
        member_id = %peer,
        event = "admission_undone",
        "admission undone: the joiner never confirmed; its invite can be used again"
    );
}

/// This node left the network (or could not).
pub(super) fn leave_done(network_id: &str, result: &Result<LeaveOutcome, String>) {
    match result {
        Ok(LeaveOutcome::Confirmed(member)) => {
            info!(network = %network_id, %member, "left the network (acknowledged); the network secret was deleted");
        }
        Ok(LeaveOutcome::Unconfirmed) => {
            warn!(network = %network_id, "left the network, but no member acknowledged it; the network secret was deleted");
        }
        Ok(LeaveOutcome::Alone) => {
            info!(network = %network_id, "left the network (no other member); the network secret was deleted");
        }
        Err(_) => {}
    }
}
