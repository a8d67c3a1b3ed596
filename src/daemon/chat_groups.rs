//! The group-record part of the PQ4 messaging service (docs/messaging.md "Groups"): a group's
//! record lives on the `k` = 3 members closest to `group/<id>`. The coordinator checks that
//! the record is signed by the registered identity of the account it names; each holder
//! applies the group rules of `constella_behaviours::pq4_groups` (admins change members, the
//! concurrent-update order) to the version it holds. Group keys and messages never pass
//! through here: keys travel in pairwise sessions, messages through the members' mailboxes.
//!
//! The holders also keep the members' acknowledgements of each key (§8.1 step 6) and, when a
//! key is older than the bound (`CONSTELLA_PQ4_GROUP_ACK_SECS`, default 24 h) and some member
//! has not acknowledged it, mark that member inactive and tell the group's admins (§8.2).

use std::time::Duration;

use constella_behaviours::pq4::{Bytes, ErrorKind, GroupRecord, ReplicaOp, Response};
use constella_behaviours::pq4_groups::{
    GROUP_ID_LEN, GroupAck, GroupFrame, GroupStatus, group_key,
};
use constella_keys::{IdentityPublicKey, PreKeyBundle};
use tracing::{info, warn};

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

    /// The identity in `username`'s registered bundle.
    async fn registered_identity(&self, username: &str) -> Result<IdentityPublicKey, Response> {
        let (account, _, _) = self.account(username).await?;
        PreKeyBundle::from_bytes(&account.bundle.0)
            .map_err(|e| e.to_string())
            .and_then(|b| b.verify().map_err(|e| e.to_string()))
            .map(|verified| verified.identity().clone())
            .map_err(|e| err(ErrorKind::Internal, format!("@{username}'s bundle: {e}")))
    }

    /// Stores a new version of a group record; answers the version held afterwards (the
    /// winner of a concurrent update, which tells a losing author it lost).
    pub(super) async fn put_group(&self, record: GroupRecord, origin: Origin) -> Response {
        if let Err(e) = record.check_shape() {
            return err(ErrorKind::Invalid, e.to_string());
        }
        let identity = match self.registered_identity(&record.by).await {
            Ok(identity) => identity,
            Err(response) => return response,
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

    /// Records a member's acknowledgement of a group key on the group's holders
    /// ([`constella_behaviours::pq4::Op::AckGroupKey`]); answers the merged status.
    pub(super) async fn ack_group_key(&self, ack: GroupAck) -> Response {
        let identity = match self.registered_identity(&ack.by).await {
            Ok(identity) => identity,
            Err(response) => return response,
        };
        if let Err(e) = ack.verify(&identity) {
            return err(ErrorKind::GroupRefused, e.to_string());
        }
        let holders = self.holders(&ack.key()).await;
        let answers = self.ask_all(&holders, ReplicaOp::AckGroupKey { ack }).await;
        status_of(answers)
    }

    /// The acknowledgement state of a group's current key, merged over its holders.
    pub(super) async fn group_status(&self, gid: Bytes) -> Response {
        if gid.0.len() != GROUP_ID_LEN {
            return err(ErrorKind::Invalid, "a group id is 32 bytes");
        }
        let holders = self.holders(&group_key(&gid.0)).await;
        status_of(self.ask_all(&holders, ReplicaOp::GroupStatus { gid }).await)
    }

    /// §8.2 on this holder: every tick, marks inactive the members of groups held here that
    /// did not acknowledge a key within the bound, and queues a notice for each admin. Every
    /// holder does it; the notice's bytes are the same from each, so the admin's mailbox keeps
    /// one.
    pub async fn inactivity_loop(self) {
        let bound = group_ack_bound();
        let tick = (bound / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let bound_ms = bound.as_millis() as u64;
        loop {
            tokio::time::sleep(tick).await;
            let marked = match self.inner.store.mark_inactive(super::now_ms(), bound_ms) {
                Ok(marked) => marked,
                Err(e) => {
                    warn!(error = %e, "cannot check group acknowledgements");
                    continue;
                }
            };
            for (record, members) in marked {
                info!(group = %hex::encode(&record.gid.0), epoch = record.epoch, inactive = members.len(), "group members did not acknowledge the key in time; marked inactive");
                let frame = GroupFrame::Inactive {
                    gid: record.gid.clone(),
                    epoch: record.epoch,
                    members,
                }
                .to_bytes();
                for admin in &record.admins {
                    let response = self.send(String::new(), admin, Bytes(frame.clone())).await;
                    if let Response::Error { message, .. } = response {
                        warn!(member = %admin, %message, "group admin not told of inactive members");
                    }
                }
            }
        }
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

/// How long members have to acknowledge a group key before they are marked inactive (§8.2
/// says "a defined time"; `CONSTELLA_PQ4_GROUP_ACK_SECS`, default 24 hours).
fn group_ack_bound() -> Duration {
    std::env::var("CONSTELLA_PQ4_GROUP_ACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_GROUP_ACK_BOUND, Duration::from_secs)
}

/// The default of [`group_ack_bound`].
const DEFAULT_GROUP_ACK_BOUND: Duration = Duration::from_secs(24 * 3600);

/// The merged status of the holders' answers; else the first refusal.
fn status_of(answers: Vec<Result<Response, String>>) -> Response {
    let mut statuses: Vec<GroupStatus> = Vec::new();
    let mut refusal = None;
    for answer in answers.into_iter().flatten() {
        match answer {
            Response::GroupStatus(status) => statuses.push(status),
            other @ Response::Error { .. } => {
                refusal.get_or_insert(other);
            }
            _ => {}
        }
    }
    match (GroupStatus::merge(statuses), refusal) {
        (Some(status), _) => Response::GroupStatus(status),
        (None, Some(refusal)) => refusal,
        (None, None) => err(ErrorKind::Unavailable, "no holder of the group answered"),
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
