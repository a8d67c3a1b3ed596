//! What this node holds for the PQ4 messaging service, in an embedded database
//! (`STATE_DIR/pq4.redb`, redb: pure Rust, ACID, one file, no C build), and the holder's side
//! of every [`ReplicaOp`]. Each operation is one write transaction, committed (fsync) before the
//! answer leaves, so a holder that said "stored" still has it after `kill -9`.
//!
//! Values are CBOR. Mailbox keys are `username \0 hex(id)`, so one user's queue is one range.

use std::path::Path;

use constella_behaviours::pq4::{
    Account, Bytes, CLAIM_TTL, ErrorKind, MAX_FETCH, Opk, Queued, ReplicaOp, Response, invite_key,
};
use constella_behaviours::pq4_groups::{HeldGroup, group_key};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const INVITES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("invites");
const CLAIMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("claims");
const ACCOUNTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("accounts");
const MAILBOX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("mailbox");
/// Ids of acknowledged messages (value: when), so a late copy is not queued again.
const DELETED: TableDefinition<'_, &str, u64> = TableDefinition::new("deleted");
/// Group records by `group/<hex id>` (value: a `HeldGroup`).
const GROUPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("groups");

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
        txn.open_table(DELETED)?;
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
                    // The same account again (a hand-off): keep only the prekeys both still
                    // have, so a key taken on either side stays taken.
                    Some((held, held_opks)) if held == account => {
                        let kept: Vec<Opk> =
                            held_opks.into_iter().filter(|o| opks.contains(o)).collect();
                        t.insert(
                            account.username.as_str(),
                            encode(&(&account, &kept)).as_slice(),
                        )?;
                        Response::Ok
                    }
                    Some(_) => Response::error(ErrorKind::UserAlreadyExists, "another account"),
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
            ReplicaOp::FetchMessages { to } => {
                let mut t = txn.open_table(MAILBOX)?;
                let mut out = Vec::new();
                let mut expired = Vec::new();
                let (lo, hi) = bounds(&to);
                for entry in t.range(lo.as_str()..hi.as_str())? {
                    let (k, v) = entry?;
                    let message = decode::<Queued>(v.value(), "mailbox")?;
                    if self.expired(&message, now_ms) {
                        expired.push(k.value().to_owned());
                    } else {
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
            ReplicaOp::DeleteMessages { to, ids } => {
                let mut t = txn.open_table(MAILBOX)?;
                let mut d = txn.open_table(DELETED)?;
                for id in &ids {
                    let key = mailbox_key(&to, &id.0);
                    t.remove(key.as_str())?;
                    d.insert(key.as_str(), now_ms)?;
                }
                Response::Ok
            }
            op @ (ReplicaOp::PutGroup { .. }
            | ReplicaOp::GetGroup { .. }
            | ReplicaOp::PutHeldGroup { .. }) => apply_group(&txn, op)?,
        };
        txn.commit()?;
        Ok(response)
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

impl ChatStore {
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

/// The bounds of one user's mailbox keys (`to \0 …` sorts below `to \x01`).
fn bounds(to: &str) -> (String, String) {
    (format!("{to}\0"), format!("{to}\u{1}"))
}
