//! The node RPC protocol: a member asks another member for its view of the network
//! (`GetPeers`), its resource usage (`GetStats`), or to reboot its host (`Reboot`).
//!
//! One request-response exchange per call on `/constella/rpc/1.0.0`, CBOR-encoded, with
//! bounded frames: a frame larger than the bound, or one that does not decode, fails that one
//! stream (the codec returns an error) and leaves the connection and its other streams alone.
//! The answering node checks that the caller is a member before doing anything.

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::request_response::{self, ProtocolSupport};
use serde::{Deserialize, Serialize};

/// The RPC protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/constella/rpc/1.0.0");

/// Largest request accepted: the biggest one is `Reboot` with a short `requested_by`.
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024;
/// Largest response accepted: a member list of a few hundred nodes, or stats with many disks.
pub const MAX_RESPONSE_BYTES: u64 = 256 * 1024;
/// Longest `requested_by` a node accepts in a `Reboot`.
pub const MAX_REQUESTED_BY_CHARS: usize = 200;
/// Most parallel RPC streams on one connection.
pub const MAX_CONCURRENT_STREAMS: usize = 32;

/// What a caller asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcRequest {
    /// The member list as the answering node sees it.
    GetPeers,
    /// The answering node's CPU, memory, disk and uptime figures.
    GetStats,
    /// Reboot the answering node's host.
    Reboot {
        /// Who asked, for the target's log (e.g. "@owner via telegram", "cli on delta-01").
        requested_by: String,
    },
}

/// Space on one mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Mount point, e.g. `/`.
    pub mount: String,
    /// Bytes in use (total minus available to unprivileged users).
    pub used_bytes: u64,
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
}

/// A node's resource usage, sampled when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Server name of the node measured.
    pub name: String,
    /// PeerId of the node measured, base58.
    pub node_id: String,
    /// CPU use of the whole host, 0–100, averaged over a short window (about 200 ms).
    pub cpu_percent: f32,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// RAM in use, bytes.
    pub ram_used_bytes: u64,
    /// RAM installed, bytes (MemTotal).
    pub ram_total_bytes: u64,
    /// Swap in use, bytes.
    pub swap_used_bytes: u64,
    /// Swap configured, bytes.
    pub swap_total_bytes: u64,
    /// `/` and every other real mounted filesystem.
    pub disks: Vec<DiskUsage>,
    /// Seconds since the host booted.
    pub host_uptime_secs: u64,
    /// Seconds since the daemon started.
    pub daemon_uptime_secs: u64,
    /// Resident memory of the daemon process, bytes.
    pub daemon_rss_bytes: u64,
}

/// The target's promise to reboot, sent before it acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootAccepted {
    /// Server name of the node that will reboot.
    pub name: String,
    /// Its PeerId, base58.
    pub node_id: String,
    /// Who asked, as the target logged it.
    pub requested_by: String,
    /// What the target will run: `"reboot(2)"`, `"systemctl reboot"` or the operator's command.
    pub action: String,
}

/// A successful answer; its variant matches the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcAnswer {
    /// Answer to [`RpcRequest::GetPeers`].
    Peers(Vec<crate::membership::MemberView>),
    /// Answer to [`RpcRequest::GetStats`].
    Stats(Box<NodeStats>),
    /// Answer to [`RpcRequest::Reboot`].
    Reboot(RebootAccepted),
}

/// Why the answering node did not do what was asked. Each is one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RpcRefusal {
    /// The caller is not a member of the answering node's network.
    #[error("the caller is not a member of this network")]
    NotMember,
    /// The daemon lacks the privilege to reboot its host.
    #[error("reboot needs root or CAP_SYS_BOOT")]
    RebootNotPermitted,
    /// The request is unusable (e.g. an over-long `requested_by`).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node tried and failed (e.g. it could not read its figures).
    #[error("{0}")]
    Failed(String),
}

/// The answering node's reply.
pub type RpcResponse = Result<RpcAnswer, RpcRefusal>;

/// The request-response behaviour for RPC.
pub type Behaviour = request_response::cbor::Behaviour<RpcRequest, RpcResponse>;

/// An RPC behaviour with bounded frames, bounded parallel streams and the given timeout.
pub fn behaviour(timeout: Duration) -> Behaviour {
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_REQUEST_BYTES)
        .set_response_size_maximum(MAX_RESPONSE_BYTES);
    request_response::Behaviour::with_codec(
        codec,
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_stay_small() {
        let request = RpcRequest::Reboot {
            requested_by: "x".repeat(MAX_REQUESTED_BY_CHARS),
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&request, &mut bytes).unwrap();
        assert!((bytes.len() as u64) < MAX_REQUEST_BYTES);
        let back: RpcRequest = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, request);

        let refusal: RpcResponse = Err(RpcRefusal::RebootNotPermitted);
        let mut bytes = Vec::new();
        ciborium::into_writer(&refusal, &mut bytes).unwrap();
        let back: RpcResponse = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, refusal);
    }
}
