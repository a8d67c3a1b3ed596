//! The holder's side of history transfers (seed 004 §17, `pq4_history`): a transfer's
//! manifest in table `history` at `username \0 hex(transfer)`, its chunks in
//! `history_chunks` at `username \0 hex(transfer) \0 index (8 hex digits)`. The rules (who may
//! read, expiry, wrong keys) are `HeldTransfer::admit`'s; this module only keeps the records.
//! An expired transfer is deleted when it is next asked for and whenever the account begins
//! another transfer on this holder.

use constella_behaviours::pq4::{Bytes, ErrorKind, Response};
use constella_behaviours::pq4_history::{
    HeldTransfer, HistoryAnswer, HistoryReplica, MAX_TRANSFERS, Refusal,
};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{StoreError, bounds, decode, encode};

/// Transfers by `username \0 hex(transfer)` (CBOR `HeldTransfer`).
const HISTORY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("history");
/// Chunks by `username \0 hex(transfer) \0 index`.
const CHUNKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("history_chunks");

fn transfer_key(username: &str, transfer: &[u8]) -> String {
    format!("{username}\0{}", hex::encode(transfer))
}

fn chunk_key(transfer_key: &str, index: u32) -> String {
    format!("{transfer_key}\0{index:08x}")
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::error(kind, message)
}

fn not_found() -> Response {
    error(
        ErrorKind::TransferNotFound,
        "no such history transfer (imported already, expired, cancelled, or never made)",
    )
}

/// Deletes a transfer and its chunks.
fn delete(txn: &WriteTransaction, key: &str) -> Result<(), StoreError> {
    txn.open_table(HISTORY)?.remove(key)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    let (lo, hi) = bounds(key);
    let keys: Vec<String> = chunks
        .range(lo.as_str()..hi.as_str())?
        .map(|entry| entry.map(|(k, _)| k.value().to_owned()))
        .collect::<Result<_, _>>()?;
    for k in keys {
        chunks.remove(k.as_str())?;
    }
    Ok(())
}

/// Drops `username`'s expired transfers; answers how many are left.
fn purge(txn: &WriteTransaction, username: &str, now_ms: u64) -> Result<usize, StoreError> {
    let (lo, hi) = bounds(username);
    let mut live = 0;
    let mut expired = Vec::new();
    {
        let t = txn.open_table(HISTORY)?;
        for entry in t.range(lo.as_str()..hi.as_str())? {
            let (k, v) = entry?;
            // Chunk keys live in the other table, so every key here is a transfer.
            let held: HeldTransfer = decode(v.value(), "history")?;
            if now_ms > held.expires_ms {
                expired.push(k.value().to_owned());
            } else {
                live += 1;
            }
        }
    }
    for key in expired {
        delete(txn, &key)?;
    }
    Ok(live)
}

/// Checks a new device's access; a refusal that ends the transfer deletes it, a wrong key is
/// counted. `Ok(held)` when the device may read.
fn admit(
    txn: &WriteTransaction,
    key: &str,
    device: &Bytes,
    proof: &Bytes,
    now_ms: u64,
) -> Result<Result<HeldTransfer, Response>, StoreError> {
    let held: Option<HeldTransfer> = match txn.open_table(HISTORY)?.get(key)? {
        Some(v) => Some(decode(v.value(), "history")?),
        None => None,
    };
    let Some(mut held) = held else {
        return Ok(Err(not_found()));
    };
    match held.admit(&device.0, &proof.0, now_ms) {
        Ok(()) => Ok(Ok(held)),
        Err(refusal) => {
            let kind = match refusal {
                Refusal::Expired | Refusal::Cancelled => {
                    delete(txn, key)?;
                    if refusal == Refusal::Expired {
                        ErrorKind::TransferExpired
                    } else {
                        ErrorKind::TransferCancelled
                    }
                }
                Refusal::WrongKey => {
                    txn.open_table(HISTORY)?
                        .insert(key, encode(&held).as_slice())?;
                    ErrorKind::AuthenticationFailed
                }
                Refusal::OtherDevice => ErrorKind::Invalid,
            };
            Ok(Err(error(kind, refusal.to_string())))
        }
    }
}

/// Creates the tables (at open).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(HISTORY)?;
    txn.open_table(CHUNKS)?;
    Ok(())
}

/// One history operation on this holder, inside the caller's write transaction.
pub(super) fn apply(
    txn: &WriteTransaction,
    op: HistoryReplica,
    now_ms: u64,
) -> Result<Response, StoreError> {
    Ok(match op {
        HistoryReplica::Begin {
            username,
            manifest,
            ttl_ms,
        } => {
            if let Err(why) = manifest.check() {
                return Ok(error(ErrorKind::Invalid, why));
            }
            let key = transfer_key(&username, &manifest.transfer.0);
            let exists = txn.open_table(HISTORY)?.get(key.as_str())?.is_some();
            if !exists && purge(txn, &username, now_ms)? >= MAX_TRANSFERS {
                return Ok(error(
                    ErrorKind::Invalid,
                    format!(
                        "@{username} has {MAX_TRANSFERS} history transfers waiting already; \
                         import one or let them expire"
                    ),
                ));
            }
            if !exists {
                let held = HeldTransfer {
                    manifest,
                    expires_ms: now_ms.saturating_add(ttl_ms),
                    wrong_keys: 0,
                };
                txn.open_table(HISTORY)?
                    .insert(key.as_str(), encode(&held).as_slice())?;
            }
            Response::History(HistoryAnswer::Stored)
        }
        HistoryReplica::Put {
            username,
            transfer,
            index,
            chunk,
        } => {
            let key = transfer_key(&username, &transfer.0);
            let held: Option<HeldTransfer> = match txn.open_table(HISTORY)?.get(key.as_str())? {
                Some(v) => Some(decode(v.value(), "history")?),
                None => None,
            };
            let Some(held) = held else {
                return Ok(not_found());
            };
            if now_ms > held.expires_ms {
                delete(txn, &key)?;
                return Ok(not_found());
            }
            if !held.manifest.chunk_matches(index, &chunk.0) {
                return Ok(error(
                    ErrorKind::Invalid,
                    format!("chunk {index} does not match the transfer's manifest"),
                ));
            }
            txn.open_table(CHUNKS)?
                .insert(chunk_key(&key, index).as_str(), chunk.0.as_slice())?;
            Response::History(HistoryAnswer::Stored)
        }
        HistoryReplica::Open {
            username,
            transfer,
            device,
            proof,
        } => {
            let key = transfer_key(&username, &transfer.0);
            match admit(txn, &key, &device, &proof, now_ms)? {
                Ok(held) => Response::History(HistoryAnswer::Manifest(Box::new(held.manifest))),
                Err(refusal) => refusal,
            }
        }
        HistoryReplica::Chunk {
            username,
            transfer,
            device,
            proof,
            index,
        } => {
            let key = transfer_key(&username, &transfer.0);
            match admit(txn, &key, &device, &proof, now_ms)? {
                Ok(_) => match txn
                    .open_table(CHUNKS)?
                    .get(chunk_key(&key, index).as_str())?
                {
                    Some(v) => Response::History(HistoryAnswer::Chunk(Bytes(v.value().to_vec()))),
                    None => error(
                        ErrorKind::TransferNotFound,
                        format!("chunk {index} of the transfer is not held here"),
                    ),
                },
                Err(refusal) => refusal,
            }
        }
        HistoryReplica::Delete {
            username,
            transfer,
            device,
            proof,
        } => {
            let key = transfer_key(&username, &transfer.0);
            match admit(txn, &key, &device, &proof, now_ms)? {
                Ok(_) => {
                    delete(txn, &key)?;
                    Response::History(HistoryAnswer::Deleted)
                }
                Err(refusal) => refusal,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use constella_behaviours::pq4::ReplicaOp;
    use constella_behaviours::pq4_history::{Manifest, fetch_proof};
    use sha2::{Digest, Sha256};

    use super::super::ChatStore;
    use super::*;

    fn replica(store: &ChatStore, op: HistoryReplica, now: u64) -> Response {
        store.apply(ReplicaOp::History(op), now).unwrap()
    }

    #[test]
    fn a_transfer_is_stored_read_by_its_device_and_deleted_when_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChatStore::open(
            &dir.path().join("pq4.redb"),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let master = [5u8; 32];
        let transfer = Bytes(vec![1; 8]);
        let proof = Bytes(fetch_proof(&master, &transfer.0));
        let chunks: [&[u8]; 2] = [b"abcd", b"ef"];
        let manifest = Manifest {
            transfer: transfer.clone(),
            for_device: Bytes(vec![2; 16]),
            by_device: Bytes(vec![3; 16]),
            proof_hash: Bytes(Sha256::digest(&proof.0).to_vec()),
            created_ms: 0,
            total_len: 6,
            chunk_size: 4,
            hashes: chunks
                .iter()
                .map(|c| Bytes(Sha256::digest(c).to_vec()))
                .collect(),
            messages: 3,
        };
        let begin = HistoryReplica::Begin {
            username: "alice".into(),
            manifest,
            ttl_ms: 1000,
        };
        assert!(matches!(
            replica(&store, begin, 10),
            Response::History(HistoryAnswer::Stored)
        ));
        for (index, chunk) in chunks.iter().enumerate() {
            let put = HistoryReplica::Put {
                username: "alice".into(),
                transfer: transfer.clone(),
                index: index as u32,
                chunk: Bytes(chunk.to_vec()),
            };
            assert!(matches!(
                replica(&store, put, 20),
                Response::History(HistoryAnswer::Stored)
            ));
        }
        let wrong = HistoryReplica::Put {
            username: "alice".into(),
            transfer: transfer.clone(),
            index: 1,
            chunk: Bytes(b"xx".to_vec()),
        };
        assert!(matches!(replica(&store, wrong, 20), Response::Error { .. }));
        let chunk = |device: u8, index, now| {
            let op = HistoryReplica::Chunk {
                username: "alice".into(),
                transfer: transfer.clone(),
                device: Bytes(vec![device; 16]),
                proof: proof.clone(),
                index,
            };
            replica(&store, op, now)
        };
        match chunk(2, 1, 30) {
            Response::History(HistoryAnswer::Chunk(bytes)) => assert_eq!(bytes.0, b"ef"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            chunk(9, 1, 30),
            Response::Error {
                kind: ErrorKind::Invalid,
                ..
            }
        ));
        assert!(matches!(
            chunk(2, 0, 1011),
            Response::Error {
                kind: ErrorKind::TransferExpired,
                ..
            }
        ));
        // Deleted: asked again, it is gone (chunks too).
        assert!(matches!(
            chunk(2, 0, 30),
            Response::Error {
                kind: ErrorKind::TransferNotFound,
                ..
            }
        ));
    }
}
