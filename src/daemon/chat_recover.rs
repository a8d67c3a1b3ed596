//! Account recovery in the PQ4 messaging service (seed 004 §15; docs/messaging.md
//! "Recovery"): a user who lost every device gives the username and the recovery code shown
//! once at registration; a new device brings a new key store and a new password. The
//! coordinator checks the code against the hash the account's holders keep, counts wrong
//! codes on the holders (three are free, then each locks the account's recovery out twice
//! as long as the one before), lets exactly one recovery follow each identity (a permanent
//! claim on a majority, like a key update), stores the account with the new keys, the new
//! password's verifier and the new code's hash, and revokes every old device. Email/SMS codes
//! and secret questions of §15.1 are not offered: no mail server is part of the network.

use constella_behaviours::pq4::{
    self, Account, Bytes, DeviceEntry, ErrorKind, Opk, Recovered, ReplicaOp, Response, Revocation,
};
use tracing::{info, warn};

use super::{Origin, Service, check_account, constant_time_eq, err, now_ms};
use crate::audit::AuditKind;

/// The lock-out after the free wrong codes starts at this (ms) and doubles with each further
/// one; `CONSTELLA_PQ4_RECOVERY_DELAY_MS` on the node overrides it (tests).
const RECOVERY_DELAY_MS: u64 = 60_000;

fn base_delay_ms() -> u64 {
    std::env::var("CONSTELLA_PQ4_RECOVERY_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RECOVERY_DELAY_MS)
}

impl Service {
    /// Wrong recovery codes of `username` counted on its holders (the union of their times).
    async fn recovery_failures(&self, username: &str, holders: &[libp2p::PeerId]) -> Vec<u64> {
        let op = ReplicaOp::RecoveryFailures {
            username: username.to_owned(),
        };
        let mut all = Vec::new();
        for answer in self.ask_all(holders, op).await {
            if let Ok(Response::RecoveryFailures { times }) = answer {
                for t in times {
                    if !all.contains(&t) {
                        all.push(t);
                    }
                }
            }
        }
        all
    }

    /// Recovers an account ([`pq4::Op::Recover`]).
    pub(super) async fn recover(
        &self,
        username: String,
        code: String,
        new: Account,
        opks: Vec<Opk>,
        origin: Origin,
    ) -> Response {
        let (old, _, holders) = match self.account(&username).await {
            Ok(found) => found,
            Err(response) => return response,
        };
        let now = now_ms();
        let failures = self.recovery_failures(&username, &holders).await;
        if let Some(until) = pq4::recovery_locked_until(&failures, base_delay_ms())
            && until > now
        {
            return err(
                ErrorKind::RateLimited,
                format!(
                    "too many wrong recovery codes for @{username}; try again in {} s",
                    (until - now).div_ceil(1000)
                ),
            );
        }
        let proof = pq4::recovery_hash(&username, &code);
        if old.recovery.0.is_empty() || !constant_time_eq(&proof, &old.recovery.0) {
            let op = ReplicaOp::RecoveryFailed {
                username: username.clone(),
            };
            self.ask_all(&holders, op).await;
            warn!(%username, "wrong recovery code");
            self.audit_account(
                AuditKind::ChatRecoveryRefused,
                &username,
                origin,
                &[("failures", (failures.len() + 1).to_string())],
            );
            return err(ErrorKind::AuthenticationFailed, "wrong recovery code");
        }
        if new.username != old.username || new.recovery.0.len() != 32 {
            return err(
                ErrorKind::Invalid,
                "a recovery keeps the account's name and brings a new recovery code",
            );
        }
        // The registration stays the same one: its email and time are the held account's.
        let mut new = new;
        new.email = old.email.clone();
        new.created_ms = old.created_ms;
        if let Err(e) = check_account(&new, &opks) {
            return err(ErrorKind::Invalid, e);
        }
        // Exactly one recovery (or key update) follows each identity.
        let key = pq4::key_update_key(&username, &old.identity.0);
        let owner = Bytes(pq4::recovery_hash(&username, &hex::encode(&new.identity.0)));
        if !self.claim_majority(&key, &owner, &holders).await {
            self.abort(&[(key, holders.clone())], &owner).await;
            return err(
                ErrorKind::Conflict,
                format!("a concurrent recovery or key update of @{username} won; try again"),
            );
        }
        self.ask_all(&holders, ReplicaOp::Commit { key, owner })
            .await;
        let mut account = new;
        account.key_updates = old.key_updates.clone();
        account.recoveries = old.recoveries.clone();
        account.recoveries.push(Recovered {
            at_ms: now,
            root: old.first_identity(),
            old: old.identity.clone(),
            new: account.identity.clone(),
        });
        let put = ReplicaOp::PutAccount {
            account: account.clone(),
            opks,
        };
        let stored = Self::count(&self.ask_all(&holders, put).await, |r| {
            matches!(r, Response::Ok)
        });
        if stored == 0 {
            return err(
                ErrorKind::Unavailable,
                "no holder stored the recovered account",
            );
        }
        // Every old device is revoked (they hold the old keys and the old password).
        let revoked = match self.devices(&username).await {
            Ok(devices) => devices
                .into_iter()
                .filter(|d| d.revoked.is_none())
                .map(|d| DeviceEntry {
                    revoked: Some(Revocation {
                        username: username.clone(),
                        device: d.card.id.clone(),
                        by: Bytes::default(),
                        at_ms: now,
                        sig: Bytes::default(),
                    }),
                    card: d.card,
                })
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        let count = revoked.len();
        if count > 0 {
            let op = ReplicaOp::PutDevices {
                username: username.clone(),
                devices: revoked,
            };
            self.ask_all(&holders, op).await;
        }
        info!(%username, revoked = count, "account recovered");
        self.audit_account(
            AuditKind::ChatRecovered,
            &username,
            origin,
            &[("devices_revoked", count.to_string())],
        );
        Response::Ok
    }
}
