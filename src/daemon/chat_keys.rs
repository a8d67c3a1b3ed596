//! User key updates in the PQ4 messaging service (seed 004 §11, §13; docs/messaging.md "Key
//! updates"): a device replaces its account's identity, signed prekey, KEM prekey and one-time
//! prekeys with a `KeyUpdate` signed by the current identity (and by the new one). The
//! coordinator checks the chain and the new bundle, then lets exactly one update follow each
//! identity: the first to win the claim `keys/NAME/<hash of the identity>` on a majority of
//! the account's holders commits it for ever, so two devices updating at once never fork the
//! account; the other is answered `Conflict` and follows the winner at its next command. The
//! account keeps the whole chain, so a contact that pinned any earlier identity can follow it.

use constella_behaviours::pq4::{self, Bytes, ErrorKind, MailboxAuth, Opk, ReplicaOp, Response};
use constella_keys::{KeyUpdate, PreKeyBundle};
use tracing::info;

use super::{Origin, Service, check_account, err, sha256};
use crate::audit::AuditKind;

/// Key updates one account may accumulate (each is ~8 KiB with 100 one-time prekeys).
const MAX_KEY_UPDATES: usize = 64;

impl Service {
    /// Applies a key update ([`pq4::Op::UpdateKeys`]).
    pub(super) async fn update_keys(
        &self,
        auth: MailboxAuth,
        update: Bytes,
        bundle: Bytes,
        opks: Vec<Opk>,
        sealed_keys: Bytes,
        origin: Origin,
    ) -> Response {
        let body = sha256(&update.0);
        let account = match self.authenticate(&auth, &body, origin).await {
            Ok((account, _)) => account,
            Err(response) => return response,
        };
        let username = account.username.clone();
        let parsed = match KeyUpdate::from_bytes(&update.0) {
            Ok(parsed) => parsed,
            Err(e) => return err(ErrorKind::Invalid, format!("the key update: {e}")),
        };
        let current = match PreKeyBundle::from_bytes(&account.bundle.0)
            .map_err(|e| e.to_string())
            .and_then(|b| b.verify().map_err(|e| e.to_string()))
        {
            Ok(verified) => verified.identity().clone(),
            Err(e) => return err(ErrorKind::Internal, format!("@{username}'s bundle: {e}")),
        };
        let verified = match parsed.verify(&current) {
            Ok(verified) => verified,
            Err(e) => {
                return err(
                    ErrorKind::InvalidSignature,
                    format!(
                        "the key update does not follow @{username}'s current identity: {e} \
                         (another device may have updated the keys first)"
                    ),
                );
            }
        };
        let mut new = account.clone();
        new.identity = Bytes(verified.identity().to_bytes().to_vec());
        new.bundle = bundle;
        new.sealed_keys = sealed_keys;
        new.key_updates.push(update);
        new.keys_ms = super::now_ms();
        if new.key_updates.len() > MAX_KEY_UPDATES {
            return err(
                ErrorKind::Invalid,
                format!("an account keeps at most {MAX_KEY_UPDATES} key updates"),
            );
        }
        if let Err(e) = check_account(&new, &opks) {
            return err(ErrorKind::Invalid, e);
        }
        // Exactly one update follows each identity: the first with a majority of the claim.
        let key = pq4::key_update_key(&username, &account.identity.0);
        let owner = Bytes(body);
        let holders = self.holders(&pq4::user_key(&username)).await;
        if !self.claim_majority(&key, &owner, &holders).await {
            self.abort(&[(key, holders)], &owner).await;
            return err(
                ErrorKind::Conflict,
                format!(
                    "a concurrent key update of @{username} from another device won; this \
                     device follows it at its next command"
                ),
            );
        }
        let commit = ReplicaOp::Commit {
            key,
            owner: owner.clone(),
        };
        self.ask_all(&holders, commit).await;
        let put = ReplicaOp::PutAccount {
            account: new.clone(),
            opks,
        };
        let stored = Self::count(&self.ask_all(&holders, put).await, |r| {
            matches!(r, Response::Ok)
        });
        if stored == 0 {
            return err(ErrorKind::Unavailable, "no holder stored the new keys");
        }
        info!(%username, updates = new.key_updates.len(), holders = stored, "account keys updated");
        self.audit_account(
            AuditKind::ChatKeysUpdated,
            &username,
            origin,
            &[("updates", new.key_updates.len().to_string())],
        );
        Response::KeyUpdates {
            since_ms: new.keys_since_ms(),
            updates: new.key_updates,
            identity: new.identity,
            recoveries: new.recoveries,
        }
    }

    /// Claims `key` for `owner` on `holders`: whether a strict majority granted it (the
    /// caller aborts what it got otherwise).
    pub(super) async fn claim_majority(
        &self,
        key: &str,
        owner: &Bytes,
        holders: &[libp2p::PeerId],
    ) -> bool {
        let claim = ReplicaOp::Claim {
            key: key.to_owned(),
            owner: owner.clone(),
        };
        let granted = Self::count(&self.ask_all(holders, claim).await, |r| {
            matches!(r, Response::Granted)
        });
        granted >= pq4::majority(holders.len())
    }

    /// The account's key updates ([`pq4::Op::KeyUpdates`]).
    pub(super) async fn key_updates(&self, username: &str) -> Response {
        match self.account(username).await {
            Ok((account, _, _)) => Response::KeyUpdates {
                since_ms: account.keys_since_ms(),
                updates: account.key_updates,
                identity: account.identity,
                recoveries: account.recoveries,
            },
            Err(response) => response,
        }
    }
}
