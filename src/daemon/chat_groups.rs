//! The group-record part of the PQ4 messaging service (docs/messaging.md "Groups"): a group's
//! record lives on the `k` = 3 members closest to `group/<id>`. The coordinator checks that
//! the record is signed by the registered identity of the account it names; each holder
//! applies the group rules of `constella_behaviours::pq4_groups` (admins change members, the
//! concurrent-update order) to the version it holds. Group keys and messages never pass
//! through here: keys travel in pairwise sessions, messages through the members' mailboxes.

use constella_behaviours::pq4::{Bytes, ErrorKind, GroupRecord, ReplicaOp, Response};
use constella_behaviours::pq4_groups::{GROUP_ID_LEN, group_key};
use constella_keys::PreKeyBundle;
use tracing::info;

use super::{Origin, Service, err};
use crate::audit::{AuditEvent, AuditKind, AuditLog};

impl Service {
    /// Records messaging events in the node's audit log from now on.
    pub fn set_audit(&self, audit: AuditLog) {
        let _ = self.inner.audit.set(audit);
    }

    /// An audit entry for a group change coordinated here: who, from where, the group id and
    /// epoch, never names of members beyond the author, keys or contents.
    fn audit_group(
        &self,
        kind: AuditKind,
        record: &GroupRecord,
        origin: Origin,
        why: Option<String>,
    ) {
        let Some(audit) = self.inner.audit.get() else {
            return;
        };
        let from = super::devices::origin_text(origin);
        let mut event = AuditEvent::new(kind, format!("pq4:@{}", record.by), from)
            .detail("group", hex::encode(&record.gid.0))
            .detail("epoch", record.epoch)
            .detail("members", record.members.len());
        if let Some(why) = why {
            event = event.detail("reason", why);
        }
        audit.record(event);
    }

    /// Stores a new version of a group record; answers the version held afterwards (the
    /// winner of a concurrent update, which tells a losing author it lost).
    pub(super) async fn put_group(&self, record: GroupRecord, origin: Origin) -> Response {
        if let Err(e) = record.check_shape() {
            return err(ErrorKind::Invalid, e.to_string());
        }
        let account = match self.account(&record.by).await {
            Ok((account, _, _)) => account,
            Err(response) => return response,
        };
        let identity = match PreKeyBundle::from_bytes(&account.bundle.0)
            .map_err(|e| e.to_string())
            .and_then(|b| b.verify().map_err(|e| e.to_string()))
        {
            Ok(verified) => verified.identity().clone(),
            Err(e) => return err(ErrorKind::Internal, format!("@{}'s bundle: {e}", record.by)),
        };
        if let Err(e) = record.verify(&identity) {
            self.audit_group(
                AuditKind::ChatGroupRefused,
                &record,
                origin,
                Some(e.to_string()),
            );
            return err(ErrorKind::GroupRefused, e.to_string());
        }
        let holders = self.holders(&record.key()).await;
        // The version before, to tell a membership change from a plain rotation in the audit.
        let before = match best(
            self.ask_all(
                &holders,
                ReplicaOp::GetGroup {
                    gid: record.gid.clone(),
                },
            )
            .await,
        ) {
            Some(Ok(before)) => Some(before),
            _ => None,
        };
        let answers = self
            .ask_all(
                &holders,
                ReplicaOp::PutGroup {
                    record: record.clone(),
                },
            )
            .await;
        match best(answers) {
            Some(Ok(held)) => {
                info!(group = %hex::encode(&record.gid.0), epoch = record.epoch, by = %record.by, "group record stored");
                if *held == record {
                    let kind = if record.epoch == 0 {
                        AuditKind::ChatGroupCreated
                    } else if before.is_some_and(|b| b.membership_differs(&record)) {
                        AuditKind::ChatGroupMembersChanged
                    } else {
                        AuditKind::ChatGroupKeyRotated
                    };
                    self.audit_group(kind, &record, origin, None);
                }
                Response::Group(Some(held))
            }
            Some(Err(refusal)) => {
                if let Response::Error { message, .. } = &refusal {
                    self.audit_group(
                        AuditKind::ChatGroupRefused,
                        &record,
                        origin,
                        Some(message.clone()),
                    );
                }
                refusal
            }
            None => err(ErrorKind::Unavailable, "no holder of the group answered"),
        }
    }

    /// Offers every group record this node holds to its current holders among `members`
    /// (called by `hand_off_loop` after a membership change); returns how many puts succeeded.
    pub(super) async fn hand_off_groups(&self, members: &[libp2p::PeerId]) -> usize {
        let Ok(groups) = self.inner.store.held_groups() else {
            return 0;
        };
        let mut pushed = 0usize;
        for held in groups {
            let holders = constella_behaviours::pq4::closest(
                &held.current.key(),
                members,
                constella_behaviours::pq4::REPLICAS,
            );
            for peer in holders.into_iter().filter(|p| *p != self.inner.local) {
                let op = ReplicaOp::PutHeldGroup { held: held.clone() };
                pushed += usize::from(self.ask(peer, op).await.is_ok());
            }
        }
        pushed
    }

    /// The current version of a group record: the winner among the holders' versions.
    pub(super) async fn get_group(&self, gid: Bytes) -> Response {
        if gid.0.len() != GROUP_ID_LEN {
            return err(ErrorKind::Invalid, "a group id is 32 bytes");
        }
        let holders = self.holders(&group_key(&gid.0)).await;
        let answers = self.ask_all(&holders, ReplicaOp::GetGroup { gid }).await;
        match best(answers) {
            Some(Ok(held)) => Response::Group(Some(held)),
            Some(Err(response)) => response,
            None => err(ErrorKind::Unavailable, "no holder of the group answered"),
        }
    }
}

/// The winning version among holders' answers; else the first refusal; `None` when no holder
/// answered at all.
fn best(answers: Vec<Result<Response, String>>) -> Option<Result<Box<GroupRecord>, Response>> {
    let mut winner: Option<Box<GroupRecord>> = None;
    let mut refusal = None;
    let mut not_found = false;
    for answer in answers.into_iter().flatten() {
        match answer {
            Response::Group(Some(record)) if winner.as_ref().is_none_or(|w| record.beats(w)) => {
                winner = Some(record);
            }
            Response::Group(Some(_)) => {}
            Response::Group(None) => not_found = true,
            other @ Response::Error { .. } => {
                refusal.get_or_insert(other);
            }
            _ => {}
        }
    }
    match (winner, refusal) {
        (Some(winner), _) => Some(Ok(winner)),
        (None, Some(refusal)) => Some(Err(refusal)),
        (None, None) if not_found => Some(Err(err(
            ErrorKind::GroupNotFound,
            "no such group (or this node's holders do not have it)",
        ))),
        (None, None) => None,
    }
}
