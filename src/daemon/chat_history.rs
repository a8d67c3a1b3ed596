//! History transfer in the PQ4 messaging service (seed 004 §17; docs/messaging.md "History
//! transfer"): the old device stores its sealed history, in chunks, on the account's `k` = 3
//! holders (`user/NAME`), for one other active device of the account; that device fetches it
//! chunk by chunk, proving with every request that it holds the transfer key, and asks the
//! holders to delete it once imported. Every step is a mailbox-proven request of an enrolled,
//! unrevoked device. The holders' rules (expiry after an hour, only the target device, a second
//! wrong key cancels) are `pq4_history::HeldTransfer::admit`'s.

use constella_behaviours::pq4::{self, ErrorKind, ReplicaOp, Response};
use constella_behaviours::pq4_devices::device_hex;
use constella_behaviours::pq4_history::{
    HistoryAnswer, HistoryOp, HistoryReplica, TRANSFER_TTL_MS,
};
use libp2p::PeerId;
use tracing::{info, warn};

use super::{Origin, Service, err};
use crate::audit::AuditKind;

/// How long holders keep a transfer: an hour, or `CONSTELLA_PQ4_HISTORY_TTL_MS` (tests).
fn ttl_ms() -> u64 {
    std::env::var("CONSTELLA_PQ4_HISTORY_TTL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRANSFER_TTL_MS)
}

/// The answer to give out of several holders' answers: a history answer if any holder had
/// one, else the refusal that says most (a cancelled or expired transfer before a wrong key,
/// before "not held here").
fn best(answers: Vec<Result<Response, String>>, what: &str) -> Response {
    let rank = |kind: &ErrorKind| match kind {
        ErrorKind::TransferCancelled => 0,
        ErrorKind::TransferExpired => 1,
        ErrorKind::AuthenticationFailed => 2,
        ErrorKind::Invalid => 3,
        ErrorKind::TransferNotFound => 5,
        _ => 4,
    };
    let mut refusal: Option<Response> = None;
    for answer in answers.into_iter().flatten() {
        match answer {
            Response::History(_) => return answer,
            Response::Error { ref kind, .. } => {
                let better = match &refusal {
                    Some(Response::Error { kind: held, .. }) => rank(kind) < rank(held),
                    _ => true,
                };
                if better {
                    refusal = Some(answer);
                }
            }
            _ => {}
        }
    }
    refusal.unwrap_or_else(|| {
        err(
            ErrorKind::Unavailable,
            format!("no holder of the account answered {what}"),
        )
    })
}

impl Service {
    /// One history transfer operation ([`pq4::Op::History`]).
    pub(super) async fn history(&self, op: HistoryOp, origin: Origin) -> Response {
        let auth = op.auth().clone();
        if let Err(response) = self.authenticate(&auth, &op.body(), origin).await {
            return response;
        }
        let username = auth.username.clone();
        let holders = self.holders(&pq4::user_key(&username)).await;
        match op {
            HistoryOp::Begin { manifest, .. } => {
                if manifest.by_device != auth.device {
                    return err(ErrorKind::Invalid, "a transfer is begun by its own device");
                }
                if let Err(why) = manifest.check() {
                    return err(ErrorKind::Invalid, why);
                }
                // The target must be another active device of the account.
                let devices = match self.devices(&username).await {
                    Ok(devices) => devices,
                    Err(response) => return response,
                };
                let target = devices.iter().find(|d| d.card.id == manifest.for_device);
                match target {
                    Some(d) if d.revoked.is_none() && d.card.id != auth.device => {}
                    Some(d) if d.revoked.is_some() => {
                        return err(
                            ErrorKind::DeviceRevoked,
                            format!(
                                "device {} of @{username} is revoked",
                                device_hex(&manifest.for_device)
                            ),
                        );
                    }
                    _ => {
                        return err(
                            ErrorKind::DeviceNotFound,
                            format!(
                                "no other device {} on @{username}",
                                device_hex(&manifest.for_device)
                            ),
                        );
                    }
                }
                let details = [
                    ("device", device_hex(&auth.device)),
                    ("for_device", device_hex(&manifest.for_device)),
                    ("bytes", manifest.total_len.to_string()),
                    ("chunks", manifest.hashes.len().to_string()),
                ];
                let op = ReplicaOp::History(HistoryReplica::Begin {
                    username: username.clone(),
                    manifest,
                    ttl_ms: ttl_ms(),
                });
                let response = best(self.ask_all(&holders, op).await, "the transfer");
                if matches!(response, Response::History(_)) {
                    info!(%username, "history transfer begun");
                    self.audit_account(AuditKind::ChatHistoryExported, &username, origin, &details);
                }
                response
            }
            HistoryOp::Put {
                transfer,
                index,
                chunk,
                ..
            } => {
                let op = ReplicaOp::History(HistoryReplica::Put {
                    username,
                    transfer,
                    index,
                    chunk,
                });
                best(self.ask_all(&holders, op).await, "the chunk")
            }
            HistoryOp::Open {
                transfer, proof, ..
            } => {
                let op = ReplicaOp::History(HistoryReplica::Open {
                    username: username.clone(),
                    transfer,
                    device: auth.device.clone(),
                    proof,
                });
                let response = best(self.ask_all(&holders, op).await, "the transfer");
                self.audit_refusal(&username, &auth.device, origin, &response);
                response
            }
            HistoryOp::Chunk {
                transfer,
                proof,
                index,
                ..
            } => {
                let op = HistoryReplica::Chunk {
                    username: username.clone(),
                    transfer,
                    device: auth.device.clone(),
                    proof,
                    index,
                };
                let response = self.first_chunk(&holders, op).await;
                self.audit_refusal(&username, &auth.device, origin, &response);
                response
            }
            HistoryOp::Done {
                transfer,
                proof,
                imported,
                ..
            } => {
                let op = ReplicaOp::History(HistoryReplica::Delete {
                    username: username.clone(),
                    transfer,
                    device: auth.device.clone(),
                    proof,
                });
                let response = best(self.ask_all(&holders, op).await, "the deletion");
                if matches!(response, Response::History(_)) {
                    info!(%username, imported, "history transfer imported");
                    self.audit_account(
                        AuditKind::ChatHistoryImported,
                        &username,
                        origin,
                        &[
                            ("device", device_hex(&auth.device)),
                            ("messages", imported.to_string()),
                        ],
                    );
                }
                response
            }
        }
    }

    /// A chunk from the first holder that has it (closest first): a holder that died or
    /// missed the chunk is passed over.
    async fn first_chunk(&self, holders: &[PeerId], op: HistoryReplica) -> Response {
        let mut answers = Vec::new();
        for holder in holders {
            let answer = self.ask(*holder, ReplicaOp::History(op.clone())).await;
            match &answer {
                Ok(Response::History(HistoryAnswer::Chunk(_))) => {
                    return answer.unwrap_or_else(|_| err(ErrorKind::Internal, "unreachable"));
                }
                // The transfer's end (expired, cancelled) is final: no other holder is asked.
                Ok(Response::Error {
                    kind: ErrorKind::TransferExpired | ErrorKind::TransferCancelled,
                    ..
                }) => return best(vec![answer], "the chunk"),
                Err(e) => {
                    warn!(member = %holder, error = %e, "history chunk: holder did not answer")
                }
                _ => {}
            }
            answers.push(answer);
        }
        best(answers, "the chunk")
    }

    /// Audits a refused import (expired, cancelled, wrong key, another device's transfer).
    fn audit_refusal(
        &self,
        username: &str,
        device: &pq4::Bytes,
        origin: Origin,
        response: &Response,
    ) {
        let Response::Error { kind, .. } = response else {
            return;
        };
        if matches!(
            kind,
            ErrorKind::TransferExpired
                | ErrorKind::TransferCancelled
                | ErrorKind::AuthenticationFailed
                | ErrorKind::Invalid
        ) {
            warn!(%username, reason = ?kind, "history transfer refused");
            self.audit_account(
                AuditKind::ChatHistoryRefused,
                username,
                origin,
                &[
                    ("device", device_hex(device)),
                    ("reason", format!("{kind:?}")),
                ],
            );
        }
    }
}
