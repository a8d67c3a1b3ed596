//! The device part of the PQ4 messaging service (seed 004 §14, docs/messaging.md "Devices"):
//! an account's device cards live with its account on the `k` = 3 holders of `user/NAME`.
//! The coordinator enrols a device after a register or login (`AddDevice`, proven with the
//! account's verifier), lists them (`Devices`), and applies a revocation signed by another
//! active device (`RevokeDevice`), holding the claim `revoke/NAME` on a majority of the
//! holders meanwhile, so two revocations of one account never interleave
//! (`RevocationInProgress`). Every mailbox operation of a revoked device is refused.
//!
//! Test knob: `CONSTELLA_TEST_PQ4_REVOKE_HOLD_MS` keeps the claim that long before applying a
//! revocation, so a test can start a second revocation of the account while the first one is
//! really in progress.
//!
//! It also writes the account audit entries (§18): registrations, logins, failed logins,
//! device enrolments and revocations, never with keys, passwords or contents.

use constella_behaviours::pq4::{
    self, Bytes, DeviceCard, DeviceEntry, ErrorKind, MailboxAuth, ReplicaOp, Response, Revocation,
};
use constella_behaviours::pq4_devices::{self, MAX_DEVICES, device_hex};
use tracing::{info, warn};

use super::{Origin, Service, err, now_ms, sha256};
use crate::audit::{AuditEvent, AuditKind};
use crate::daemon::chat_store::revocation_kind;

impl Service {
    /// An audit entry about account `username`, coordinated here.
    pub(super) fn audit_account(
        &self,
        kind: AuditKind,
        username: &str,
        origin: Origin,
        details: &[(&str, String)],
    ) {
        let Some(audit) = self.inner.audit.get() else {
            return;
        };
        let mut event = AuditEvent::new(kind, format!("pq4:@{username}"), origin_text(origin));
        for (key, value) in details {
            event = event.detail(key, value.clone());
        }
        audit.record(event);
    }

    /// The account's devices: the union of what its holders answer.
    pub(super) async fn devices(&self, username: &str) -> Result<Vec<DeviceEntry>, Response> {
        let holders = self.holders(&pq4::user_key(username)).await;
        let op = ReplicaOp::GetDevices {
            username: username.to_owned(),
        };
        let mut lists = Vec::new();
        for answer in self.ask_all(&holders, op).await {
            if let Ok(Response::Devices(list)) = answer {
                lists.push(list);
            }
        }
        if lists.is_empty() {
            return Err(err(
                ErrorKind::Unavailable,
                "no holder of the account answered",
            ));
        }
        Ok(pq4_devices::merge(lists))
    }

    /// Whether `auth.device` may use the mailbox: not revoked, and enrolled unless the account
    /// has no enrolled device at all (an account from before devices).
    pub(super) async fn device_allowed(&self, auth: &MailboxAuth) -> Result<(), Response> {
        let devices = self.devices(&auth.username).await?;
        match devices.iter().find(|d| d.card.id == auth.device) {
            Some(DeviceEntry {
                revoked: Some(revocation),
                ..
            }) => Err(revoked(revocation)),
            Some(_) => Ok(()),
            None if devices.is_empty() => Ok(()),
            None => Err(err(
                ErrorKind::DeviceNotFound,
                format!(
                    "this device is not enrolled with @{}; log in on it again (`constella chat login`)",
                    auth.username
                ),
            )),
        }
    }

    /// Enrols a device ([`pq4::Op::AddDevice`]).
    pub(super) async fn add_device(
        &self,
        auth: MailboxAuth,
        mut card: DeviceCard,
        origin: Origin,
    ) -> Response {
        if let Err(e) = card.check_shape() {
            return err(ErrorKind::Invalid, e);
        }
        if card.id != auth.device {
            return err(
                ErrorKind::Invalid,
                "the card is not the asking device's (its id differs)",
            );
        }
        if let Err(response) = self
            .authenticate_proof(&auth, &pq4::device_body(&card))
            .await
        {
            return response;
        }
        let devices = match self.devices(&auth.username).await {
            Ok(devices) => devices,
            Err(response) => return response,
        };
        if let Some(known) = devices.iter().find(|d| d.card.id == card.id) {
            return match &known.revoked {
                Some(revocation) => {
                    self.audit_account(
                        AuditKind::ChatRevokedDeviceRefused,
                        &auth.username,
                        origin,
                        &[("device", device_hex(&card.id))],
                    );
                    revoked(revocation)
                }
                None => Response::Devices(devices),
            };
        }
        if devices.iter().filter(|d| d.revoked.is_none()).count() >= MAX_DEVICES {
            return err(
                ErrorKind::Invalid,
                format!("an account has at most {MAX_DEVICES} active devices; revoke one first"),
            );
        }
        card.added_ms = now_ms();
        let holders = self.holders(&pq4::user_key(&auth.username)).await;
        let op = ReplicaOp::PutDevices {
            username: auth.username.clone(),
            devices: vec![DeviceEntry {
                card: card.clone(),
                revoked: None,
            }],
        };
        let answers = self.ask_all(&holders, op).await;
        let mut stored = 0;
        let mut lists = vec![devices];
        for answer in answers {
            if let Ok(Response::Devices(list)) = answer {
                stored += 1;
                lists.push(list);
            }
        }
        if stored == 0 {
            return err(ErrorKind::Unavailable, "no holder enrolled the device");
        }
        info!(username = %auth.username, device = %device_hex(&card.id), holders = stored, "device enrolled");
        self.audit_account(
            AuditKind::ChatDeviceAdded,
            &auth.username,
            origin,
            &[
                ("device", device_hex(&card.id)),
                ("name", card.name.clone()),
            ],
        );
        Response::Devices(pq4_devices::merge(lists))
    }

    /// Applies a revocation ([`pq4::Op::RevokeDevice`]).
    pub(super) async fn revoke_device(&self, revocation: Revocation, origin: Origin) -> Response {
        let username = revocation.username.clone();
        let refused = |kind: ErrorKind, message: String| {
            self.audit_account(
                AuditKind::ChatDeviceRevokeRefused,
                &username,
                origin,
                &[
                    ("device", device_hex(&revocation.device)),
                    ("reason", format!("{kind:?}")),
                ],
            );
            err(kind, message)
        };
        let devices = match self.devices(&username).await {
            Ok(devices) => devices,
            Err(response) => return response,
        };
        if let Err(e) = pq4_devices::check_revocation(&devices, &revocation) {
            return refused(revocation_kind(&e), e.to_string());
        }
        // One revocation of an account at a time: the first to hold a majority of the claim
        // goes on, a concurrent one is told.
        let key = pq4::revocation_key(&username);
        let owner = Bytes(sha256(&revocation.signed_bytes()));
        let holders = self.holders(&pq4::user_key(&username)).await;
        let granted = self.claim_majority(&key, &owner, &holders).await;
        let release = ReplicaOp::Abort {
            key: key.clone(),
            owner: owner.clone(),
        };
        if !granted {
            self.ask_all(&holders, release).await;
            return refused(
                ErrorKind::RevocationInProgress,
                format!("another revocation of @{username}'s devices is being applied; try again"),
            );
        }
        info!(%username, device = %device_hex(&revocation.device), "revocation claim held; applying it");
        if let Some(hold) = std::env::var("CONSTELLA_TEST_PQ4_REVOKE_HOLD_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
        {
            tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
        }
        let op = ReplicaOp::RevokeDevice {
            revocation: revocation.clone(),
        };
        let answers = self.ask_all(&holders, op).await;
        self.ask_all(&holders, release).await;
        let mut lists = Vec::new();
        let mut refusal = None;
        for answer in answers {
            match answer {
                Ok(Response::Devices(list)) => lists.push(list),
                Ok(Response::Error { kind, message }) => refusal = Some((kind, message)),
                _ => {}
            }
        }
        if lists.is_empty() {
            return match refusal {
                Some((kind, message)) => refused(kind, message),
                None => err(ErrorKind::Unavailable, "no holder applied the revocation"),
            };
        }
        if let Some((kind, message)) = refusal {
            // A holder that missed a card refuses; the ones that applied it win, and the
            // merge (revocation kept for ever) spreads it at the next hand-off.
            warn!(%username, ?kind, %message, "a holder refused a revocation the others applied");
        }
        info!(%username, device = %device_hex(&revocation.device), holders = lists.len(), "device revoked");
        self.audit_account(
            AuditKind::ChatDeviceRevoked,
            &username,
            origin,
            &[
                ("device", device_hex(&revocation.device)),
                ("by_device", device_hex(&revocation.by)),
            ],
        );
        Response::Devices(pq4_devices::merge(lists))
    }

    /// Offers every account's device cards to the account's current holders; the number of
    /// offers that were answered.
    pub(super) async fn hand_off_devices(&self, members: &[libp2p::PeerId]) -> usize {
        let Ok(all) = self.inner.store.held_devices() else {
            return 0;
        };
        let mut pushed = 0;
        for (username, devices) in all {
            let holders = pq4::closest(&pq4::user_key(&username), members, pq4::REPLICAS);
            for peer in holders.into_iter().filter(|p| *p != self.inner.local) {
                let op = ReplicaOp::PutDevices {
                    username: username.clone(),
                    devices: devices.clone(),
                };
                pushed += usize::from(self.ask(peer, op).await.is_ok());
            }
        }
        pushed
    }
}

/// Where a request came from, for the audit log.
pub(super) fn origin_text(origin: Origin) -> String {
    match origin {
        Origin::Local => "chat socket".to_owned(),
        Origin::Member(_) => "member".to_owned(),
        Origin::Client(peer) => format!("chat client {peer}"),
    }
}

/// The answer to a revoked device.
fn revoked(revocation: &Revocation) -> Response {
    if revocation.by.0.is_empty() {
        return err(
            ErrorKind::DeviceRevoked,
            format!(
                "this device was revoked when @{} was recovered with its recovery code; it can \
                 no longer read the account's mailbox",
                revocation.username
            ),
        );
    }
    err(
        ErrorKind::DeviceRevoked,
        format!(
            "this device was revoked by device {} of @{} (at {} ms since the epoch); it can no \
             longer read the account's mailbox",
            device_hex(&revocation.by),
            revocation.username,
            revocation.at_ms
        ),
    )
}
