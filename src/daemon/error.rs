//! What can go wrong when asking the running node something: one typed error for the in-process
//! [`Client`](super::Client) and for RPC calls, so the bot can say it in the owner's language
//! and tests can match the variant. `Display` is the one English line the CLI prints.

use serde::{Deserialize, Serialize};

/// Why a request to the node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ClientError {
    /// The node is stopping; nothing was done.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// No current member has this name or node id.
    #[error("no node named {0}")]
    UnknownNode(String),
    /// The target is known to be offline and did not answer.
    #[error("node {0} is offline")]
    Offline(String),
    /// The target was believed alive but did not answer in time.
    #[error("node {0} is unreachable")]
    Unreachable(String),
    /// The target answered with a refusal.
    #[error("node {node}: {reason}")]
    Refused {
        /// The target's name.
        node: String,
        /// Its reason, as it gave it.
        reason: String,
    },
    /// The target answered something this node cannot use (another protocol version?).
    #[error("node {node} {problem}")]
    BadAnswer {
        /// The target's name.
        node: String,
        /// What was wrong with the answer.
        problem: String,
    },
    /// Too many calls are in flight; nothing was done.
    #[error("too many calls in flight ({0}); try again shortly")]
    Busy(usize),
    /// The state could not be written; nothing was changed.
    #[error("{0}")]
    Storage(String),
    /// The request itself is not acceptable.
    #[error("{0}")]
    Invalid(String),
}
