//! What this node holds for the PQ4 messaging service, in an embedded database
//! (`STATE_DIR/pq4.redb`, redb: pure Rust, ACID, one file, no C build), and the holder's side
//! of every [`ReplicaOp`]. Each operation is one write transaction, committed (fsync) before the
//! answer leaves, so a holder that said "stored" still has it after `kill -9`.
//!
//! Values are CBOR. Mailbox keys are `username \0 hex(id)`, so one user's queue is one range;
//! a mailbox's devices are `username \0 hex(device)`, and which device acknowledged which
//! message `username \0 hex(id) \0 hex(device)`.

use std::path::Path;

use constella_behaviours::pq4::DeviceEntry;
use constella_behaviours::pq4::{
    Account, Bytes, CLAIM_TTL, ErrorKind, LOGIN_FAILURE_WINDOW_MS, MAX_FETCH, MAX_OPKS, Opk,
    Queued, RECOVERY_FAILURE_WINDOW_MS, ReplicaOp, Response, invite_key,
};
use constella_behaviours::pq4_devices::{self, MAX_DEVICES, RevocationError};
use constella_behaviours::pq4_groups::{GroupRecord, HeldGroup, group_key};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[path = "chat_history_store.rs"]
mod history;

const INVITES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("invites");
const CLAIMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("claims");
const ACCOUNTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("accounts");
const MAILBOX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("mailbox");
/// Ids of acknowledged messages (value: when), so a late copy is not queued again.
const DELETED: TableDefinition<'_, &str, u64> = TableDefinition::new("deleted");
/// Devices enrolled in a mailbox (value: when first seen).
const DEVICES: TableDefinition<'_, &str, u64> = TableDefinition::new("devices");
/// Which device acknowledged which queued message (value: when).
const ACKED: TableDefinition<'_, &str, u64> = TableDefinition::new("acked");
/// Failed logins per account (value: CBOR list of ms timestamps within the window).
const FAILURES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("failures");
/// Registrations that lost a partition race, per name (value: CBOR list of accounts).
const LOST: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("lost");
/// Group records by `group/<hex id>` (value: a `HeldGroup`).
const GROUPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("groups");
/// An account's device cards and revocations, by username (value: CBOR list of
/// `DeviceEntry`).
const DEVICE_CARDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("device_cards");

/// Queued messages per mailbox on one holder: a full mailbox refuses more (the sender is told).
pub const MAX_QUEUED: usize = 10_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("corrupt record in {0}")]
    Corrupt(&'static str),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Debug, Serialize, Deserialize)]
struct InviteRecord {
    expires_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    owner: Bytes,
    /// 0 = permanent.
    expires_ms: u64,
}

/// Accounts with their prekeys, and queued messages by recipient.
pub type Held = (Vec<(Account, Vec<Opk>)>, Vec<(String, Queued)>);

/// The holder's database.
#[derive(Debug)]
pub struct ChatStore {
    db: Database,
    /// How long a queued message is kept unacknowledged.
    retention_ms: u64,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail for these plain types.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8], table: &'static str) -> Result<T, StoreError> {
    ciborium::from_reader(bytes).map_err(|_| StoreError::Corrupt(table))
}

fn mailbox_key(to: &str, id: &[u8]) -> String {
    format!("{to}\0{}", hex::encode(id))
}

impl ChatStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path, retention: std::time::Duration) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        for table in [INVITES, CLAIMS, ACCOUNTS, MAILBOX] {
            txn.open_table(table)?;
        }
        txn.open_table(FAILURES)?;
        txn.open_table(LOST)?;
        for table in [DELETED, DEVICES, ACKED] {
            txn.open_table(table)?;
        }
        history::create_tables(&txn)?;
        txn.commit()?;
        Ok(Self {
            db,
            retention_ms: retention.as_millis() as u64,
        })
    }

    fn expired(&self, message: &Queued, now_ms: u64) -> bool {
        message.at_ms.saturating_add(self.retention_ms) < now_ms
    }

    /// The holder's answer to one replica operation at `now_ms`.
    pub fn apply(&self, op: ReplicaOp, now_ms: u64) -> Result<Response, StoreError> {
        // A fetch by an enrolled device with nothing expired changes nothing: answered from a
        // read transaction, without a commit (fsync) on the delivery path.
        if let ReplicaOp::FetchMessages { to, device } = &op
            && let Some(messages) = self.fetch_unchanged(to, device, now_ms)?
        {
            return Ok(Response::Messages(messages));
        }
        let claim_ttl = CLAIM_TTL.as_millis() as u64;
        let txn = self.db.begin_write()?;
        let response = match op {
            ReplicaOp::PutInvite { hash, expires_ms } => {
                let mut t = txn.open_table(INVITES)?;
                let key = hex::encode(&hash.0);
                if t.get(key.as_str())?.is_none() {
                    let record = InviteRecord { expires_ms };
                    t.insert(key.as_str(), encode(&record).as_slice())?;
                }
                Response::Ok
            }
            ReplicaOp::ReserveInvite { hash, owner } => {
                let key = hex::encode(&hash.0);
                let valid = match txn.open_table(INVITES)?.get(key.as_str())? {
                    Some(v) => decode::<InviteRecord>(v.value(), "invites")?.expires_ms > now_ms,
                    None => false,
                };
                // The invite's use is a uniqueness claim like a name's: one attempt holds it,
                // and a committed registration holds it for ever.
                if valid {
                    claim(
                        &txn,
                        &invite_key(&hash.0),
                        owner,
                        now_ms + claim_ttl,
                        now_ms,
                    )?
                } else {
                    Response::Taken
                }
            }
            ReplicaOp::Claim { key, owner } => {
                claim(&txn, &key, owner, now_ms + claim_ttl, now_ms)?
            }
            ReplicaOp::Commit { key, owner } => {
                let mut t = txn.open_table(CLAIMS)?;
                let permanent = match t.get(key.as_str())? {
                    Some(v) => decode::<ClaimRecord>(v.value(), "claims")?.expires_ms == 0,
                    None => false,
                };
                // A permanent claim is never replaced: the first committed registration won.
                if !permanent {
                    let record = ClaimRecord {
                        owner,
                        expires_ms: 0,
                    };
                    t.insert(key.as_str(), encode(&record).as_slice())?;
                }
                Response::Ok
            }
            ReplicaOp::Abort { key, owner } => {
                let mut t = txn.open_table(CLAIMS)?;
                let drop = match t.get(key.as_str())? {
                    Some(v) => {
                        let c: ClaimRecord = decode(v.value(), "claims")?;
                        c.owner == owner && c.expires_ms != 0
                    }
                    None => false,
                };
                if drop {
                    t.remove(key.as_str())?;
                }
                Response::Ok
            }
            ReplicaOp::PutAccount { account, opks } => {
                let mut t = txn.open_table(ACCOUNTS)?;
                let existing: Option<(Account, Vec<Opk>)> =
                    match t.get(account.username.as_str())? {
                        Some(v) => Some(decode(v.value(), "accounts")?),
                        None => None,
                    };
                match existing {
                    // The same registration after a key update (§11): the copy with more
                    // updates is newer, with its own prekeys (the old store's are void). Key
                    // updates never fork: each needs a permanent claim on a majority.
                    Some((held, _))
                        if held.same_registration(&account)
                            && account.history() > held.history() =>
                    {
                        t.insert(
                            account.username.as_str(),
                            encode(&(&account, &opks)).as_slice(),
                        )?;
                        Response::Ok
                    }
                    Some((held, _))
                        if held.same_registration(&account)
                            && account.history() < held.history() =>
                    {
                        Response::Ok
                    }
                    // The same registration again (a hand-off): keep only the prekeys both
                    // still have, so a key taken on either side stays taken, plus those
                    // uploaded since that the older copy never knew (ids only grow).
                    Some((held, held_opks)) if held.same_registration(&account) => {
                        let held_max = held_opks.iter().map(|o| o.id).max();
                        let incoming_max = opks.iter().map(|o| o.id).max();
                        let newer = incoming_max > held_max;
                        let mut kept: Vec<Opk> = held_opks
                            .iter()
                            .filter(|o| {
                                opks.contains(o) || incoming_max.is_none_or(|max| o.id > max)
                            })
                            .cloned()
                            .collect();
                        kept.extend(
                            opks.iter()
                                .filter(|o| held_max.is_none_or(|max| o.id > max))
                                .cloned(),
                        );
                        let account = if newer { &account } else { &held };
                        t.insert(
                            account.username.as_str(),
                            encode(&(account, &kept)).as_slice(),
                        )?;
                        Response::Ok
                    }
                    // Two registrations of one name, made on the two sides of a partition:
                    // every holder keeps the same winner and remembers the loser, so its
                    // device is told (RegistrationLost) instead of "wrong password".
                    Some((held, held_opks)) => {
                        let (winner, winner_opks, loser) = if account.wins_over(&held) {
                            (account, opks, held)
                        } else {
                            (held, held_opks, account)
                        };
                        t.insert(
                            winner.username.as_str(),
                            encode(&(&winner, &winner_opks)).as_slice(),
                        )?;
                        drop(t);
                        let mut lost = txn.open_table(LOST)?;
                        let mut losers: Vec<Account> = match lost.get(loser.username.as_str())? {
                            Some(v) => decode(v.value(), "lost")?,
                            None => Vec::new(),
                        };
                        if !losers.iter().any(|l| l.same_registration(&loser)) {
                            losers.push(loser);
                        }
                        lost.insert(winner.username.as_str(), encode(&losers).as_slice())?;
                        Response::Ok
                    }
                    None => {
                        t.insert(
                            account.username.as_str(),
                            encode(&(&account, &opks)).as_slice(),
                        )?;
                        Response::Ok
                    }
                }
            }
            ReplicaOp::GetAccount { username } => {
                let t = txn.open_table(ACCOUNTS)?;
                let found: Option<(Account, Vec<Opk>)> = match t.get(username.as_str())? {
                    Some(v) => Some(decode(v.value(), "accounts")?),
                    None => None,
                };
                Response::Account(found.map(Box::new))
            }
            ReplicaOp::TakeOpk { username, id } => {
                let mut t = txn.open_table(ACCOUNTS)?;
                let found: Option<(Account, Vec<Opk>)> = match t.get(username.as_str())? {
                    Some(v) => Some(decode(v.value(), "accounts")?),
                    None => None,
                };
                match found {
                    Some((account, mut opks)) if opks.iter().any(|o| o.id == id) => {
                        opks.retain(|o| o.id != id);
                        t.insert(username.as_str(), encode(&(&account, &opks)).as_slice())?;
                        Response::Granted
                    }
                    _ => Response::Taken,
                }
            }
            ReplicaOp::PutMessage { to, message } => {
                let key = mailbox_key(&to, &message.id.0);
                let deleted = txn.open_table(DELETED)?.get(key.as_str())?.is_some();
                let mut t = txn.open_table(MAILBOX)?;
                let (lo, hi) = bounds(&to);
                let queued = t.range(lo.as_str()..hi.as_str())?.count();
                if deleted || self.expired(&message, now_ms) || t.get(key.as_str())?.is_some() {
                    Response::Ok
                } else if queued >= MAX_QUEUED {
                    Response::error(ErrorKind::Unavailable, format!("@{to}'s mailbox is full"))
                } else {
                    t.insert(key.as_str(), encode(&message).as_slice())?;
                    Response::Ok
                }
            }
            ReplicaOp::FetchMessages { to, device } => {
                enroll(&txn, &to, &device, now_ms)?;
                let acked = txn.open_table(ACKED)?;
                let mut t = txn.open_table(MAILBOX)?;
                let mut out = Vec::new();
                let mut expired = Vec::new();
                let (lo, hi) = bounds(&to);
                for entry in t.range(lo.as_str()..hi.as_str())? {
                    let (k, v) = entry?;
                    let message = decode::<Queued>(v.value(), "mailbox")?;
                    if self.expired(&message, now_ms) {
                        expired.push(k.value().to_owned());
                    } else if acked
                        .get(ack_key(&to, &message.id.0, &device).as_str())?
                        .is_none()
                    {
                        out.push(message);
                    }
                }
                // Past the retention a message is gone for good (its recipient's device
                // reports it lost); the tombstone keeps a hand-off from bringing it back.
                let mut d = txn.open_table(DELETED)?;
                for key in &expired {
                    t.remove(key.as_str())?;
                    d.insert(key.as_str(), now_ms)?;
                }
                out.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
                out.truncate(MAX_FETCH);
                Response::Messages(out)
            }
            ReplicaOp::DeleteMessages { to, ids, device } => {
                enroll(&txn, &to, &device, now_ms)?;
                let devices = waited_for(&txn, &to)?;
                let mut t = txn.open_table(MAILBOX)?;
                let mut d = txn.open_table(DELETED)?;
                let mut acked = txn.open_table(ACKED)?;
                for id in &ids {
                    let key = mailbox_key(&to, &id.0);
                    if t.get(key.as_str())?.is_none() {
                        continue;
                    }
                    acked.insert(ack_key(&to, &id.0, &device).as_str(), now_ms)?;
                    // Deleted only once every active device of the account has it.
                    if acked_by_all(&acked, &to, &id.0, &devices)? {
                        t.remove(key.as_str())?;
                        d.insert(key.as_str(), now_ms)?;
                        for other in &devices {
                            acked.remove(ack_key(&to, &id.0, other).as_str())?;
                        }
                    }
                }
                Response::Ok
            }
            // Kept by the service in memory (src/daemon/chat.rs), never stored.
            ReplicaOp::Watch { .. } | ReplicaOp::Notify { .. } => Response::Ok,
            ReplicaOp::LoginFailed { username } => {
                let mut t = txn.open_table(FAILURES)?;
                let mut recent = recent_failures(&t, &username, now_ms)?;
                recent.push(now_ms);
                t.insert(username.as_str(), encode(&recent).as_slice())?;
                Response::Failures {
                    recent: recent.len() as u32,
                }
            }
            ReplicaOp::LoginFailures { username } => {
                let t = txn.open_table(FAILURES)?;
                Response::Failures {
                    recent: recent_failures(&t, &username, now_ms)?.len() as u32,
                }
            }
            ReplicaOp::AddOpks {
                username,
                opks,
                sealed_keys,
            } => {
                let mut t = txn.open_table(ACCOUNTS)?;
                let found: Option<(Account, Vec<Opk>)> = match t.get(username.as_str())? {
                    Some(v) => Some(decode(v.value(), "accounts")?),
                    None => None,
                };
                match found {
                    Some((mut account, mut held)) => {
                        // Only new ids: a taken prekey never comes back.
                        let max = held.iter().map(|o| o.id).max();
                        held.extend(
                            opks.into_iter()
                                .filter(|o| max.is_none_or(|max| o.id > max)),
                        );
                        held.truncate(MAX_OPKS);
                        account.sealed_keys = sealed_keys;
                        t.insert(username.as_str(), encode(&(&account, &held)).as_slice())?;
                        Response::Ok
                    }
                    None => Response::error(ErrorKind::UserNotFound, "no such account here"),
                }
            }
            ReplicaOp::RecoveryFailed { username } => {
                recovery_failures(&txn, &username, now_ms, true)?
            }
            ReplicaOp::RecoveryFailures { username } => {
                recovery_failures(&txn, &username, now_ms, false)?
            }
            ReplicaOp::Lost { username } => {
                let t = txn.open_table(LOST)?;
                let losers: Vec<Account> = match t.get(username.as_str())? {
                    Some(v) => decode(v.value(), "lost")?,
                    None => Vec::new(),
                };
                Response::Lost(losers.into_iter().map(|a| a.verifier).collect())
            }
            op @ (ReplicaOp::PutGroup { .. }
            | ReplicaOp::GetGroup { .. }
            | ReplicaOp::PutHeldGroup { .. }
            | ReplicaOp::AckGroupKey { .. }
            | ReplicaOp::GroupStatus { .. }) => apply_group(&txn, op)?,
            op @ (ReplicaOp::PutDevices { .. }
            | ReplicaOp::GetDevices { .. }
            | ReplicaOp::RevokeDevice { .. }) => apply_devices(&txn, op, now_ms)?,
            ReplicaOp::History(op) => history::apply(&txn, op, now_ms)?,
        };
        txn.commit()?;
        Ok(response)
    }

    /// `to`'s messages for `device`, or `None` when the fetch must write (the device is not
    /// enrolled yet, or a message expired).
    fn fetch_unchanged(
        &self,
        to: &str,
        device: &Bytes,
        now_ms: u64,
    ) -> Result<Option<Vec<Queued>>, StoreError> {
        let txn = self.db.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        if devices.get(mailbox_key(to, &device.0).as_str())?.is_none() {
            return Ok(None);
        }
        let acked = txn.open_table(ACKED)?;
        let t = txn.open_table(MAILBOX)?;
        let (lo, hi) = bounds(to);
        let mut out = Vec::new();
        for entry in t.range(lo.as_str()..hi.as_str())? {
            let (_, v) = entry?;
            let message = decode::<Queued>(v.value(), "mailbox")?;
            if self.expired(&message, now_ms) {
                return Ok(None);
            }
            if acked
                .get(ack_key(to, &message.id.0, device).as_str())?
                .is_none()
            {
                out.push(message);
            }
        }
        out.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        out.truncate(MAX_FETCH);
        Ok(Some(out))
    }

    /// Everything this node holds, for the hand-off to the current holders: accounts with
    /// their prekeys, and queued messages by recipient.
    pub fn held(&self) -> Result<Held, StoreError> {
        let txn = self.db.begin_read()?;
        let mut accounts = Vec::new();
        for entry in txn.open_table(ACCOUNTS)?.iter()? {
            let (_, v) = entry?;
            accounts.push(decode(v.value(), "accounts")?);
        }
        let mut messages = Vec::new();
        for entry in txn.open_table(MAILBOX)?.iter()? {
            let (k, v) = entry?;
            let to = k.value().split('\0').next().unwrap_or_default().to_owned();
            messages.push((to, decode(v.value(), "mailbox")?));
        }
        Ok((accounts, messages))
    }
}

/// A holder's side of a group record operation: the version held after it. A put is checked
/// by the group rules against what is held (`HeldGroup::offer`); a refused one changes
/// nothing. A holder that has no version accepts only a creation (epoch 0).
fn apply_group(txn: &redb::WriteTransaction, op: ReplicaOp) -> Result<Response, StoreError> {
    let mut t = txn.open_table(GROUPS)?;
    let (key, record) = match op {
        ReplicaOp::PutGroup { record } => (record.key(), Some(record)),
        ReplicaOp::GetGroup { gid } => (group_key(&gid.0), None),
        ReplicaOp::AckGroupKey { ack } => {
            let key = ack.key();
            let Some(mut held) = t
                .get(key.as_str())?
                .map(|v| decode::<HeldGroup>(v.value(), "groups"))
                .transpose()?
            else {
                return Ok(Response::error(
                    ErrorKind::GroupNotFound,
                    "no such group here",
                ));
            };
            if let Err(e) = held.record_ack(&ack) {
                return Ok(Response::error(ErrorKind::GroupRefused, e.to_string()));
            }
            t.insert(key.as_str(), encode(&held).as_slice())?;
            return Ok(Response::GroupStatus(held.status()));
        }
        ReplicaOp::GroupStatus { gid } => {
            let key = group_key(&gid.0);
            return Ok(match t.get(key.as_str())? {
                Some(v) => {
                    Response::GroupStatus(decode::<HeldGroup>(v.value(), "groups")?.status())
                }
                None => Response::error(ErrorKind::GroupNotFound, "no such group here"),
            });
        }
        ReplicaOp::PutHeldGroup { held: offered } => {
            let key = offered.current.key();
            let held: Option<HeldGroup> = match t.get(key.as_str())? {
                Some(v) => Some(decode(v.value(), "groups")?),
                None => None,
            };
            let updated = match held {
                None => offered,
                Some(mut held) => {
                    // A version the rules refuse (or an older one) leaves ours as it is.
                    held.merge_acks(&offered);
                    let _ = held.offer(offered.current);
                    held
                }
            };
            t.insert(key.as_str(), encode(&updated).as_slice())?;
            return Ok(Response::Group(Some(Box::new(updated.current))));
        }
        _ => {
            return Ok(Response::error(
                ErrorKind::Internal,
                "not a group operation",
            ));
        }
    };
    let held: Option<HeldGroup> = match t.get(key.as_str())? {
        Some(v) => Some(decode(v.value(), "groups")?),
        None => None,
    };
    let Some(record) = record else {
        return Ok(Response::Group(held.map(|h| Box::new(h.current))));
    };
    let updated = match held {
        Some(mut held) => match held.offer(record) {
            Ok(_) => held,
            Err(e) => return Ok(Response::error(ErrorKind::GroupRefused, e.to_string())),
        },
        None if record.epoch == 0 => match HeldGroup::create(record) {
            Ok(held) => held,
            Err(e) => return Ok(Response::error(ErrorKind::GroupRefused, e.to_string())),
        },
        None => return Ok(Response::Group(None)),
    };
    t.insert(key.as_str(), encode(&updated).as_slice())?;
    Ok(Response::Group(Some(Box::new(updated.current))))
}

/// A holder's side of a device operation (`pq4_devices`): cards are merged (a revocation is
/// kept for ever); a revocation is checked against the devices held here, and the revoked
/// device leaves the mailbox's enrolled devices (messages no longer wait for it, and those
/// every remaining device acknowledged are deleted now).
fn apply_devices(
    txn: &redb::WriteTransaction,
    op: ReplicaOp,
    now_ms: u64,
) -> Result<Response, StoreError> {
    let changes = match &op {
        ReplicaOp::PutDevices { username, .. } => Some(username.clone()),
        ReplicaOp::RevokeDevice { revocation } => Some(revocation.username.clone()),
        _ => None,
    };
    let response = apply_cards(txn, op)?;
    if let (Some(username), Response::Devices(_)) = (changes, &response) {
        forget_revoked(txn, &username, now_ms)?;
    }
    Ok(response)
}

fn apply_cards(txn: &redb::WriteTransaction, op: ReplicaOp) -> Result<Response, StoreError> {
    let mut t = txn.open_table(DEVICE_CARDS)?;
    let username = match &op {
        ReplicaOp::PutDevices { username, .. } | ReplicaOp::GetDevices { username } => {
            username.clone()
        }
        ReplicaOp::RevokeDevice { revocation } => revocation.username.clone(),
        _ => {
            return Ok(Response::error(
                ErrorKind::Internal,
                "not a device operation",
            ));
        }
    };
    let held: Vec<DeviceEntry> = match t.get(username.as_str())? {
        Some(v) => decode(v.value(), "device_cards")?,
        None => Vec::new(),
    };
    match op {
        ReplicaOp::PutDevices { devices, .. } => {
            let mut merged = pq4_devices::merge([held, devices]);
            if merged.len() > MAX_DEVICES {
                // The oldest revoked ones go first; active devices are never dropped.
                let extra = merged.len() - MAX_DEVICES;
                let mut dropped = 0;
                merged.retain(|d| {
                    let drop = dropped < extra && d.revoked.is_some();
                    dropped += usize::from(drop);
                    !drop
                });
            }
            t.insert(username.as_str(), encode(&merged).as_slice())?;
            Ok(Response::Devices(merged))
        }
        ReplicaOp::GetDevices { .. } => Ok(Response::Devices(held)),
        ReplicaOp::RevokeDevice { revocation } => {
            if let Err(e) = pq4_devices::check_revocation(&held, &revocation) {
                return Ok(Response::error(revocation_kind(&e), e.to_string()));
            }
            let device = revocation.device.clone();
            let mut updated = held;
            if let Some(entry) = updated.iter_mut().find(|d| d.card.id == device) {
                entry.revoked = Some(revocation);
            }
            t.insert(username.as_str(), encode(&updated).as_slice())?;
            Ok(Response::Devices(updated))
        }
        _ => Ok(Response::error(
            ErrorKind::Internal,
            "not a device operation",
        )),
    }
}

/// The error kind of a refused revocation.
pub fn revocation_kind(e: &RevocationError) -> ErrorKind {
    match e {
        RevocationError::InvalidSignature(_) => ErrorKind::InvalidSignature,
        RevocationError::DeviceNotFound(_) => ErrorKind::DeviceNotFound,
        RevocationError::AlreadyRevoked(_) => ErrorKind::AlreadyRevoked,
        RevocationError::LastActiveDevice(_) => ErrorKind::LastActiveDevice,
    }
}

impl ChatStore {
    /// Every account's device cards this node holds, for the hand-off.
    pub fn held_devices(&self) -> Result<Vec<(String, Vec<DeviceEntry>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(DEVICE_CARDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            all.push((k.value().to_owned(), decode(v.value(), "device_cards")?));
        }
        Ok(all)
    }

    /// §8.2: marks inactive, in every group held here whose current key is `bound_ms` old
    /// and was not checked yet, the members that did not acknowledge it; the groups where
    /// someone was marked, with those members. Writes only when something is due.
    pub fn mark_inactive(
        &self,
        now_ms: u64,
        bound_ms: u64,
    ) -> Result<Vec<(GroupRecord, Vec<String>)>, StoreError> {
        let due: Vec<String> = self
            .held_groups()?
            .into_iter()
            .filter_map(|mut held| {
                let before = held.checked;
                held.mark_inactive(now_ms, bound_ms);
                (held.checked != before).then(|| held.current.key())
            })
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_write()?;
        let mut marked = Vec::new();
        {
            let mut t = txn.open_table(GROUPS)?;
            for key in due {
                let Some(mut held) = t
                    .get(key.as_str())?
                    .map(|v| decode::<HeldGroup>(v.value(), "groups"))
                    .transpose()?
                else {
                    continue;
                };
                let before = held.checked;
                let missing = held.mark_inactive(now_ms, bound_ms);
                if held.checked != before {
                    t.insert(key.as_str(), encode(&held).as_slice())?;
                }
                if !missing.is_empty() {
                    marked.push((held.current.clone(), missing));
                }
            }
        }
        txn.commit()?;
        Ok(marked)
    }

    /// Every group this node holds, for the hand-off to the current holders.
    pub fn held_groups(&self) -> Result<Vec<HeldGroup>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(GROUPS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut groups = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            groups.push(decode(v.value(), "groups")?);
        }
        Ok(groups)
    }
}

/// Grants `key` to `owner` if it is free, already `owner`'s, or held by an expired claim.
fn claim(
    txn: &redb::WriteTransaction,
    key: &str,
    owner: Bytes,
    expires_ms: u64,
    now_ms: u64,
) -> Result<Response, StoreError> {
    let mut t = txn.open_table(CLAIMS)?;
    let current: Option<ClaimRecord> = match t.get(key)? {
        Some(v) => Some(decode(v.value(), "claims")?),
        None => None,
    };
    let free = match &current {
        None => true,
        Some(c) => c.owner == owner || (c.expires_ms != 0 && c.expires_ms <= now_ms),
    };
    if !free {
        return Ok(Response::Taken);
    }
    let permanent = current.is_some_and(|c| c.expires_ms == 0);
    let record = ClaimRecord {
        owner,
        expires_ms: if permanent { 0 } else { expires_ms },
    };
    t.insert(key, encode(&record).as_slice())?;
    Ok(Response::Granted)
}

/// Enrolls `device` in `to`'s mailbox (it fetched or acknowledged through this holder).
fn enroll(
    txn: &redb::WriteTransaction,
    to: &str,
    device: &Bytes,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(DEVICES)?;
    let key = mailbox_key(to, &device.0);
    if t.get(key.as_str())?.is_none() {
        t.insert(key.as_str(), now_ms)?;
    }
    Ok(())
}

/// The devices a message for `to` waits for before it is deleted: every device enrolled in
/// the mailbox here and every active device card of the account, less the revoked ones.
/// The cards count because they are handed off with the account while enrolments are not:
/// a holder that took the mailbox over still waits for a device that never asked it.
fn waited_for(txn: &redb::WriteTransaction, to: &str) -> Result<Vec<Bytes>, StoreError> {
    let mut devices = std::collections::BTreeSet::new();
    let t = txn.open_table(DEVICES)?;
    let (lo, hi) = bounds(to);
    for entry in t.range(lo.as_str()..hi.as_str())? {
        let (k, _) = entry?;
        let hex_id = k.value().split('\0').nth(1).unwrap_or_default().to_owned();
        let id = hex::decode(hex_id).map_err(|_| StoreError::Corrupt("devices"))?;
        devices.insert(Bytes(id));
    }
    let cards: Vec<DeviceEntry> = match txn.open_table(DEVICE_CARDS)?.get(to)? {
        Some(v) => decode(v.value(), "device_cards")?,
        None => Vec::new(),
    };
    for entry in cards {
        if entry.revoked.is_some() {
            devices.remove(&entry.card.id);
        } else {
            devices.insert(entry.card.id);
        }
    }
    Ok(devices.into_iter().collect())
}

/// Whether every one of `devices` acknowledged message `id` of `to` (never for no device).
fn acked_by_all(
    acked: &redb::Table<'_, &str, u64>,
    to: &str,
    id: &[u8],
    devices: &[Bytes],
) -> Result<bool, StoreError> {
    if devices.is_empty() {
        return Ok(false);
    }
    for device in devices {
        if acked.get(ack_key(to, id, device).as_str())?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// After a change of `username`'s device cards: revoked devices leave the mailbox, and the
/// messages every remaining device acknowledged are deleted (tombstoned) now, as they no
/// longer wait for the revoked one.
fn forget_revoked(
    txn: &redb::WriteTransaction,
    username: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let cards: Vec<DeviceEntry> = match txn.open_table(DEVICE_CARDS)?.get(username)? {
        Some(v) => decode(v.value(), "device_cards")?,
        None => Vec::new(),
    };
    let revoked: Vec<&Bytes> = cards
        .iter()
        .filter(|e| e.revoked.is_some())
        .map(|e| &e.card.id)
        .collect();
    if revoked.is_empty() {
        return Ok(());
    }
    {
        let mut enrolled = txn.open_table(DEVICES)?;
        for id in &revoked {
            enrolled.remove(mailbox_key(username, &id.0).as_str())?;
        }
    }
    let devices = waited_for(txn, username)?;
    let mut t = txn.open_table(MAILBOX)?;
    let mut d = txn.open_table(DELETED)?;
    let mut acked = txn.open_table(ACKED)?;
    let (lo, hi) = bounds(username);
    let mut done = Vec::new();
    for entry in t.range(lo.as_str()..hi.as_str())? {
        let (k, v) = entry?;
        let message = decode::<Queued>(v.value(), "mailbox")?;
        if acked_by_all(&acked, username, &message.id.0, &devices)? {
            done.push((k.value().to_owned(), message.id));
        }
    }
    for (key, id) in done {
        t.remove(key.as_str())?;
        d.insert(key.as_str(), now_ms)?;
        for device in devices.iter().chain(revoked.iter().copied()) {
            acked.remove(ack_key(username, &id.0, device).as_str())?;
        }
    }
    Ok(())
}

/// The wrong recovery codes of `username` within the window, after counting one more if
/// `count`.
fn recovery_failures(
    txn: &redb::WriteTransaction,
    username: &str,
    now_ms: u64,
    count: bool,
) -> Result<Response, StoreError> {
    let mut t = txn.open_table(FAILURES)?;
    let key = format!("recover/{username}");
    let mut times: Vec<u64> = match t.get(key.as_str())? {
        Some(v) => decode(v.value(), "failures")?,
        None => Vec::new(),
    };
    times.retain(|at| now_ms.saturating_sub(*at) < RECOVERY_FAILURE_WINDOW_MS);
    if count {
        times.push(now_ms);
    }
    t.insert(key.as_str(), encode(&times).as_slice())?;
    Ok(Response::RecoveryFailures { times })
}

/// Which device acknowledged which message.
fn ack_key(to: &str, id: &[u8], device: &Bytes) -> String {
    format!("{to}\0{}\0{}", hex::encode(id), hex::encode(&device.0))
}

/// The failed logins of `username` within the window.
fn recent_failures(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    username: &str,
    now_ms: u64,
) -> Result<Vec<u64>, StoreError> {
    let all: Vec<u64> = match t.get(username)? {
        Some(v) => decode(v.value(), "failures")?,
        None => Vec::new(),
    };
    Ok(all
        .into_iter()
        .filter(|at| now_ms.saturating_sub(*at) < LOGIN_FAILURE_WINDOW_MS)
        .collect())
}

/// The bounds of one user's mailbox keys (`to \0 …` sorts below `to \x01`).
fn bounds(to: &str) -> (String, String) {
    (format!("{to}\0"), format!("{to}\u{1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::pq4::Kdf;

    fn store() -> (tempfile::TempDir, ChatStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ChatStore::open(
            &dir.path().join("pq4.redb"),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        (dir, store)
    }

    fn queued(id: u8) -> Queued {
        Queued {
            id: Bytes(vec![id; 32]),
            from: "alice".into(),
            at_ms: 1_000,
            envelope: Bytes(vec![id; 10]),
        }
    }

    fn fetch(store: &ChatStore, device: u8) -> usize {
        let op = ReplicaOp::FetchMessages {
            to: "bob".into(),
            device: Bytes(vec![device]),
        };
        match store.apply(op, 2_000).unwrap() {
            Response::Messages(m) => m.len(),
            other => panic!("{other:?}"),
        }
    }

    fn ack(store: &ChatStore, device: u8, id: u8) {
        let op = ReplicaOp::DeleteMessages {
            to: "bob".into(),
            ids: vec![Bytes(vec![id; 32])],
            device: Bytes(vec![device]),
        };
        store.apply(op, 2_000).unwrap();
    }

    #[test]
    fn a_message_is_deleted_when_every_device_acknowledged_it() {
        let (_dir, store) = store();
        // Two devices enrolled by fetching.
        assert_eq!(fetch(&store, 1), 0);
        assert_eq!(fetch(&store, 2), 0);
        let put = |m| ReplicaOp::PutMessage {
            to: "bob".into(),
            message: m,
        };
        store.apply(put(queued(7)), 1_500).unwrap();
        ack(&store, 1, 7);
        // Gone for the first device, still there for the second.
        assert_eq!((fetch(&store, 1), fetch(&store, 2)), (0, 1));
        ack(&store, 2, 7);
        assert_eq!((fetch(&store, 1), fetch(&store, 2)), (0, 0));
        // Deleted with a tombstone: a late copy (a hand-off) is not queued again.
        store.apply(put(queued(7)), 1_600).unwrap();
        assert_eq!(fetch(&store, 2), 0);
        // A device that shows up later is counted from then on.
        store.apply(put(queued(8)), 1_700).unwrap();
        assert_eq!(fetch(&store, 3), 1);
        ack(&store, 1, 8);
        ack(&store, 2, 8);
        assert_eq!(fetch(&store, 3), 1);
        ack(&store, 3, 8);
        assert_eq!(fetch(&store, 3), 0);
    }

    fn card(device: u8, revoked: bool) -> DeviceEntry {
        use constella_behaviours::pq4::{DeviceCard, Revocation};
        DeviceEntry {
            card: DeviceCard {
                id: Bytes(vec![device]),
                key: Bytes::default(),
                name: format!("d{device}"),
                added_ms: u64::from(device),
            },
            revoked: revoked.then(|| Revocation {
                username: "bob".into(),
                device: Bytes(vec![device]),
                by: Bytes(vec![1]),
                at_ms: 1_800,
                sig: Bytes::default(),
            }),
        }
    }

    #[test]
    fn a_message_waits_for_every_active_device_card_but_not_for_a_revoked_one() {
        let (_dir, store) = store();
        // Device 1 asks this holder; device 2 is known here only by its card (it enrolled
        // through the other holders, or the cards came with a hand-off).
        assert_eq!(fetch(&store, 1), 0);
        let cards = |entries| ReplicaOp::PutDevices {
            username: "bob".into(),
            devices: entries,
        };
        store
            .apply(cards(vec![card(1, false), card(2, false)]), 1_000)
            .unwrap();
        let put = |m| ReplicaOp::PutMessage {
            to: "bob".into(),
            message: m,
        };
        store.apply(put(queued(7)), 1_500).unwrap();
        store.apply(put(queued(8)), 1_500).unwrap();
        ack(&store, 1, 7);
        ack(&store, 1, 8);
        // Still queued for device 2, which never asked this holder.
        assert_eq!((fetch(&store, 1), fetch(&store, 2)), (0, 2));
        ack(&store, 2, 7);
        assert_eq!(fetch(&store, 2), 1);
        // Device 2 is revoked before it acknowledged 8: 8 no longer waits for it and goes
        // now, tombstoned (a late copy is not queued again).
        store.apply(cards(vec![card(2, true)]), 1_900).unwrap();
        assert_eq!(fetch(&store, 1), 0);
        store.apply(put(queued(8)), 2_000).unwrap();
        assert_eq!(fetch(&store, 3), 0);
        // A new message waits for device 1 and for device 3 (enrolled by its fetch), not 2.
        store.apply(put(queued(9)), 2_000).unwrap();
        ack(&store, 1, 9);
        assert_eq!(fetch(&store, 3), 1);
        ack(&store, 3, 9);
        assert_eq!((fetch(&store, 1), fetch(&store, 3)), (0, 0));
    }

    fn account(created_ms: u64, id: u8) -> Account {
        Account {
            username: "carol".into(),
            email: format!("c{id}@example.org"),
            identity: Bytes(vec![id; 113]),
            bundle: Bytes::default(),
            kdf: Kdf {
                salt: Bytes::default(),
                m_kib: 0,
                t: 0,
                p: 0,
            },
            verifier: Bytes(vec![id; 32]),
            sealed_keys: Bytes::default(),
            created_ms,
            key_updates: Vec::new(),
            recovery: Bytes::default(),
            recoveries: Vec::new(),
            keys_ms: 0,
        }
    }

    fn held(store: &ChatStore) -> Account {
        let op = ReplicaOp::GetAccount {
            username: "carol".into(),
        };
        match store.apply(op, 0).unwrap() {
            Response::Account(Some(found)) => found.0,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_registrations_of_a_name_resolve_the_same_way_in_either_order() {
        let (early, late) = (account(1, 2), account(2, 1));
        for order in [[&early, &late], [&late, &early]] {
            let (_dir, store) = store();
            for a in order {
                let op = ReplicaOp::PutAccount {
                    account: a.clone(),
                    opks: vec![],
                };
                assert!(matches!(store.apply(op, 0).unwrap(), Response::Ok));
            }
            assert_eq!(held(&store), early);
            let op = ReplicaOp::Lost {
                username: "carol".into(),
            };
            match store.apply(op, 0).unwrap() {
                Response::Lost(verifiers) => assert_eq!(verifiers, vec![late.verifier.clone()]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn uploaded_prekeys_survive_a_hand_off_and_taken_ones_stay_taken() {
        let (_dir, store) = store();
        let opk = |id| Opk {
            id,
            key: Bytes(vec![0; 56]),
        };
        let a = account(1, 1);
        let put = |opks| ReplicaOp::PutAccount {
            account: a.clone(),
            opks,
        };
        store.apply(put(vec![opk(1), opk(2)]), 0).unwrap();
        let take = ReplicaOp::TakeOpk {
            username: "carol".into(),
            id: 1,
        };
        store.apply(take, 0).unwrap();
        let add = ReplicaOp::AddOpks {
            username: "carol".into(),
            opks: vec![opk(3), opk(1)],
            sealed_keys: Bytes(vec![9]),
        };
        store.apply(add, 0).unwrap();
        // An older copy handed off (it still has 1, never heard of 3): 1 stays taken, 3 stays.
        store.apply(put(vec![opk(1), opk(2)]), 0).unwrap();
        let op = ReplicaOp::GetAccount {
            username: "carol".into(),
        };
        let Response::Account(Some(found)) = store.apply(op, 0).unwrap() else {
            panic!()
        };
        let ids: Vec<u32> = found.1.iter().map(|o| o.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(found.0.sealed_keys, Bytes(vec![9]));
    }

    #[test]
    fn failed_logins_are_counted_within_the_window() {
        let (_dir, store) = store();
        let failed = |at| {
            let op = ReplicaOp::LoginFailed {
                username: "bob".into(),
            };
            store.apply(op, at).unwrap()
        };
        failed(1_000);
        failed(2_000);
        let count = |at| {
            let op = ReplicaOp::LoginFailures {
                username: "bob".into(),
            };
            match store.apply(op, at).unwrap() {
                Response::Failures { recent } => recent,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(count(3_000), 2);
        assert_eq!(count(1_500 + LOGIN_FAILURE_WINDOW_MS), 1);
        assert_eq!(count(10 * LOGIN_FAILURE_WINDOW_MS), 0);
    }
}
