//! History transfer to a new device (seed 004 §17; docs/messaging.md "History transfer"):
//! the wire types and the holders' rules.
//!
//! The old device seals its history for one new device of the same account
//! (`constella_keys::SealedHistory`, under a fresh master key) and stores the sealed bytes,
//! cut into chunks, on the account's holders with a [`Manifest`]. The new device gets the
//! master key out of band (the code or QR code `chat history export` prints) and downloads the
//! chunks, proving with each request that it knows the key ([`fetch_proof`]: the holders keep
//! only its SHA-256). The rules every holder applies ([`HeldTransfer::admit`]):
//! - only the device the transfer was made for may read it (`for_device`);
//! - a transfer expires [`TRANSFER_TTL_MS`] after the holder stored it: asked after that, the
//!   holder deletes it and answers `TransferExpired`;
//! - a wrong key proof counts; the [`MAX_WRONG_KEYS`]th cancels the transfer (deleted,
//!   `TransferCancelled`), as §17.2 asks ("on a repeated failure the transfer is cancelled").

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::pq4::{Bytes, MailboxAuth};

/// A transfer is kept this long after the holder stored it (the seed's one hour; the node's
/// `CONSTELLA_PQ4_HISTORY_TTL_MS` overrides it for tests).
pub const TRANSFER_TTL_MS: u64 = 60 * 60 * 1000;
/// Wrong key proofs that cancel a transfer.
pub const MAX_WRONG_KEYS: u32 = 2;
/// Length of a transfer id.
pub const TRANSFER_ID_LEN: usize = 8;
/// Largest chunk a device may store (a request is at most 512 KiB).
pub const MAX_CHUNK_BYTES: usize = 384 * 1024;
/// Largest sealed history (the keys crate's `MAX_HISTORY_LEN`).
pub const MAX_TRANSFER_BYTES: u64 = 256 * 1024 * 1024;
/// Transfers one account may have on its holders at once.
pub const MAX_TRANSFERS: usize = 4;

/// What the new device needs to fetch and check the chunks. Stored by the holders, handed to
/// the device the transfer is for once it proves the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`TRANSFER_ID_LEN`] random bytes (carried by the code).
    pub transfer: Bytes,
    /// The new device's id (16 bytes): only it may read the transfer.
    pub for_device: Bytes,
    /// The device that made it.
    pub by_device: Bytes,
    /// SHA-256 of [`fetch_proof`].
    pub proof_hash: Bytes,
    /// When the old device sealed it (its clock, ms).
    pub created_ms: u64,
    /// Length of the sealed history.
    pub total_len: u64,
    /// Chunk length (the last one may be shorter).
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub hashes: Vec<Bytes>,
    /// Messages in the history (shown to the new device before it downloads).
    pub messages: u32,
}

impl Manifest {
    /// Whether the manifest is self-consistent and within bounds.
    pub fn check(&self) -> Result<(), String> {
        if self.transfer.0.len() != TRANSFER_ID_LEN
            || self.for_device.0.len() != crate::pq4_devices::DEVICE_ID_LEN
            || self.proof_hash.0.len() != 32
        {
            return Err("malformed history transfer manifest".into());
        }
        if self.chunk_size == 0 || self.chunk_size as usize > MAX_CHUNK_BYTES {
            return Err(format!("chunks are 1 to {MAX_CHUNK_BYTES} bytes"));
        }
        if self.total_len == 0 || self.total_len > MAX_TRANSFER_BYTES {
            return Err(format!(
                "a sealed history is 1 to {MAX_TRANSFER_BYTES} bytes"
            ));
        }
        let chunks = self.total_len.div_ceil(u64::from(self.chunk_size));
        if chunks != self.hashes.len() as u64 || self.hashes.iter().any(|h| h.0.len() != 32) {
            return Err("the chunk hashes do not match the length".into());
        }
        Ok(())
    }

    /// The expected length of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        let start = u64::from(index).checked_mul(u64::from(self.chunk_size))?;
        if start >= self.total_len {
            return None;
        }
        Some((self.total_len - start).min(u64::from(self.chunk_size)) as usize)
    }

    /// Whether `chunk` is chunk `index` of this transfer.
    pub fn chunk_matches(&self, index: u32, chunk: &[u8]) -> bool {
        self.chunk_len(index) == Some(chunk.len())
            && self
                .hashes
                .get(index as usize)
                .is_some_and(|h| h.0 == Sha256::digest(chunk).as_slice())
    }
}

/// A client's history operation (wrapped in `Op::History`). Every one carries a mailbox
/// proof with `body` = [`HistoryOp::body`], so only an enrolled, unrevoked device of the
/// account may ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HistoryOp {
    /// The old device begins a transfer.
    Begin {
        auth: MailboxAuth,
        manifest: Manifest,
    },
    /// One chunk of a begun transfer (old device).
    Put {
        auth: MailboxAuth,
        transfer: Bytes,
        index: u32,
        chunk: Bytes,
    },
    /// The manifest (new device): `proof` is [`fetch_proof`].
    Open {
        auth: MailboxAuth,
        transfer: Bytes,
        proof: Bytes,
    },
    /// One chunk (new device).
    Chunk {
        auth: MailboxAuth,
        transfer: Bytes,
        proof: Bytes,
        index: u32,
    },
    /// The new device imported the history: the holders delete the transfer.
    Done {
        auth: MailboxAuth,
        transfer: Bytes,
        proof: Bytes,
        /// Messages merged (for the audit log).
        imported: u32,
    },
}

impl HistoryOp {
    /// The mailbox proof's `body`: `"history" ‖ kind ‖ transfer ‖ index (u32 BE) ‖
    /// SHA-256(chunk or manifest)`, so a proof for one request does not serve another.
    pub fn body(&self) -> Vec<u8> {
        let (kind, transfer, index, digest): (u8, &[u8], u32, Vec<u8>) = match self {
            HistoryOp::Begin { manifest, .. } => {
                let mut bytes = Vec::new();
                let _ = ciborium::into_writer(manifest, &mut bytes);
                (1, &manifest.transfer.0, 0, Sha256::digest(&bytes).to_vec())
            }
            HistoryOp::Put {
                transfer,
                index,
                chunk,
                ..
            } => (2, &transfer.0, *index, Sha256::digest(&chunk.0).to_vec()),
            HistoryOp::Open {
                transfer, proof, ..
            } => (3, &transfer.0, 0, Sha256::digest(&proof.0).to_vec()),
            HistoryOp::Chunk {
                transfer,
                proof,
                index,
                ..
            } => (4, &transfer.0, *index, Sha256::digest(&proof.0).to_vec()),
            HistoryOp::Done {
                transfer,
                proof,
                imported,
                ..
            } => (5, &transfer.0, *imported, Sha256::digest(&proof.0).to_vec()),
        };
        [
            &b"history"[..],
            &[kind],
            transfer,
            &index.to_be_bytes(),
            &digest,
        ]
        .concat()
    }

    /// The mailbox proof, to set once the request is complete (its body covers the rest).
    pub fn auth_mut(&mut self) -> &mut MailboxAuth {
        match self {
            HistoryOp::Begin { auth, .. }
            | HistoryOp::Put { auth, .. }
            | HistoryOp::Open { auth, .. }
            | HistoryOp::Chunk { auth, .. }
            | HistoryOp::Done { auth, .. } => auth,
        }
    }

    /// The mailbox proof.
    pub fn auth(&self) -> &MailboxAuth {
        match self {
            HistoryOp::Begin { auth, .. }
            | HistoryOp::Put { auth, .. }
            | HistoryOp::Open { auth, .. }
            | HistoryOp::Chunk { auth, .. }
            | HistoryOp::Done { auth, .. } => auth,
        }
    }
}

/// A holder's part (wrapped in `ReplicaOp::History`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HistoryReplica {
    Begin {
        username: String,
        manifest: Manifest,
        ttl_ms: u64,
    },
    Put {
        username: String,
        transfer: Bytes,
        index: u32,
        chunk: Bytes,
    },
    /// The manifest, if `device` may read it with `proof`.
    Open {
        username: String,
        transfer: Bytes,
        device: Bytes,
        proof: Bytes,
    },
    Chunk {
        username: String,
        transfer: Bytes,
        device: Bytes,
        proof: Bytes,
        index: u32,
    },
    /// Delete the transfer (imported), if `device` may read it with `proof`.
    Delete {
        username: String,
        transfer: Bytes,
        device: Bytes,
        proof: Bytes,
    },
}

/// An answer to a history operation (wrapped in `Response::History`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HistoryAnswer {
    /// The transfer (or the chunk) is stored.
    Stored,
    Manifest(Box<Manifest>),
    Chunk(Bytes),
    /// The transfer is deleted.
    Deleted,
}

/// A transfer as a holder keeps it (the chunks are kept beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTransfer {
    pub manifest: Manifest,
    /// The holder's clock: when it stored the manifest plus the TTL.
    pub expires_ms: u64,
    /// Wrong key proofs so far.
    pub wrong_keys: u32,
}

/// Why a holder refuses to hand a transfer out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The transfer expired: the holder deletes it.
    #[error("the history transfer expired (a code is valid for one hour); nothing was imported")]
    Expired,
    /// Made for another device of the account.
    #[error("this history transfer was made for another device of the account")]
    OtherDevice,
    /// A wrong key, not yet the last allowed.
    #[error("wrong history transfer key (one more wrong key cancels the transfer)")]
    WrongKey,
    /// The last allowed wrong key: the holder deletes the transfer.
    #[error("wrong history transfer key again: the transfer is cancelled; export it again")]
    Cancelled,
}

impl HeldTransfer {
    /// Whether `device` may read the transfer at `now_ms` with `proof`. A wrong proof is
    /// counted here (the caller stores `self` again); `Expired` and `Cancelled` mean the
    /// caller deletes the transfer.
    pub fn admit(&mut self, device: &[u8], proof: &[u8], now_ms: u64) -> Result<(), Refusal> {
        if now_ms > self.expires_ms {
            return Err(Refusal::Expired);
        }
        if device != self.manifest.for_device.0.as_slice() {
            return Err(Refusal::OtherDevice);
        }
        let hash = Sha256::digest(proof);
        if bool::from(hash.as_slice().ct_eq(&self.manifest.proof_hash.0)) {
            return Ok(());
        }
        self.wrong_keys = self.wrong_keys.saturating_add(1);
        if self.wrong_keys >= MAX_WRONG_KEYS {
            Err(Refusal::Cancelled)
        } else {
            Err(Refusal::WrongKey)
        }
    }
}

/// The key proof a new device sends: `HMAC-SHA256(master key, "PQ4 history fetch" ‖
/// transfer id)`. The holders keep `SHA-256` of it, so they can check a proof but not make
/// one, and learn nothing of the master key.
pub fn fetch_proof(master: &[u8; 32], transfer: &[u8]) -> Vec<u8> {
    crate::pq4::mac(master, &[b"PQ4 history fetch", transfer])
}

/// The 32-byte `device_id_new` of seed §17 (docs/pq4.md §11) for a Constella device:
/// `SHA-256("PQ4 history device" ‖ device id (16))`, so the sealed history opens only on the
/// device it was made for.
pub fn history_device_id(device: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"PQ4 history device");
    h.update(device);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(now: u64) -> (HeldTransfer, Vec<u8>) {
        let master = [7u8; 32];
        let transfer = vec![1u8; TRANSFER_ID_LEN];
        let proof = fetch_proof(&master, &transfer);
        let manifest = Manifest {
            transfer: Bytes(transfer),
            for_device: Bytes(vec![2; 16]),
            by_device: Bytes(vec![3; 16]),
            proof_hash: Bytes(Sha256::digest(&proof).to_vec()),
            created_ms: now,
            total_len: 10,
            chunk_size: 4,
            hashes: vec![Bytes(vec![0; 32]); 3],
            messages: 1,
        };
        manifest.check().unwrap();
        (
            HeldTransfer {
                manifest,
                expires_ms: now + TRANSFER_TTL_MS,
                wrong_keys: 0,
            },
            proof,
        )
    }

    #[test]
    fn the_right_device_with_the_key_reads_until_it_expires() {
        let (mut t, proof) = held(1000);
        assert_eq!(t.admit(&[2; 16], &proof, 1000), Ok(()));
        assert_eq!(t.admit(&[2; 16], &proof, 1000 + TRANSFER_TTL_MS), Ok(()));
        assert_eq!(
            t.admit(&[2; 16], &proof, 1001 + TRANSFER_TTL_MS),
            Err(Refusal::Expired)
        );
        assert_eq!(t.admit(&[9; 16], &proof, 1000), Err(Refusal::OtherDevice));
        assert_eq!(t.wrong_keys, 0);
    }

    #[test]
    fn a_second_wrong_key_cancels() {
        let (mut t, proof) = held(0);
        assert_eq!(t.admit(&[2; 16], &[0; 32], 5), Err(Refusal::WrongKey));
        assert_eq!(t.admit(&[2; 16], &proof, 5), Ok(()));
        assert_eq!(t.admit(&[2; 16], &[1; 32], 5), Err(Refusal::Cancelled));
    }

    #[test]
    fn chunks_are_checked_by_length_and_hash() {
        let (t, _) = held(0);
        let mut m = t.manifest;
        assert_eq!(m.chunk_len(0), Some(4));
        assert_eq!(m.chunk_len(2), Some(2));
        assert_eq!(m.chunk_len(3), None);
        m.hashes[2] = Bytes(Sha256::digest(b"ab").to_vec());
        assert!(m.chunk_matches(2, b"ab"));
        assert!(!m.chunk_matches(2, b"ac") && !m.chunk_matches(1, b"ab"));
        m.hashes.pop();
        assert!(m.check().is_err());
    }

    #[test]
    fn proofs_bind_the_request() {
        let auth = MailboxAuth {
            username: "a".into(),
            ts_ms: 0,
            nonce: Bytes::default(),
            mac: Bytes::default(),
            device: Bytes::default(),
        };
        let chunk = |index, proof: &[u8]| HistoryOp::Chunk {
            auth: auth.clone(),
            transfer: Bytes(vec![1; 8]),
            proof: Bytes(proof.to_vec()),
            index,
        };
        assert_ne!(chunk(0, b"p").body(), chunk(1, b"p").body());
        assert_ne!(chunk(0, b"p").body(), chunk(0, b"q").body());
        assert_ne!(history_device_id(&[1; 16]), history_device_id(&[2; 16]));
    }
}
