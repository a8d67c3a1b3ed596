//! The audit log (seed 004 §18): this node's security events — joins and refusals, removals,
//! owner, role and token changes, reboots and who asked, invites, refused actions, and every
//! reading of the log itself — kept append-only, hash-chained and encrypted at rest.
//!
//! Files in the state directory (all 0600):
//! - `audit.key`: 32 random bytes, made at the first append. HKDF-SHA256 derives from it one
//!   key for the entries (ChaCha20-Poly1305) and one for the head (HMAC-SHA256).
//! - `audit.log`: one JSON line per entry, `{"seq","prev","nonce","data"}`: `seq` counts from
//!   1, `prev` is the SHA-256 of the previous line's bytes (zeros for the first), `data` the
//!   encrypted [`AuditEvent`] with `seq` and `prev` as associated data. A changed byte fails
//!   the decryption or breaks the chain at the next line; a removed or moved line breaks the
//!   sequence.
//! - `audit.head`: the last `seq` and line hash under an HMAC, so that removing the newest
//!   entries (truncating the file) is detected too.
//!
//! Several processes may use the log (the daemon appends; `constella audit` reads and records
//! that it did): every append holds an exclusive `flock` on `audit.log`, and re-reads the last
//! line if another process appended since; readers hold a shared one, so they never see half a
//! line. Whoever can read `audit.key` (root on this node) could rewrite the whole log: the
//! protection is against changes by anyone else and against accidents.
//!
//! [`AuditLog`] is the handle the daemon's tasks share: cloning is cheap, [`AuditLog::record`]
//! never blocks (a bounded queue to a writer thread, which writes what has queued up as one
//! batch with one fsync), and [`AuditLog::append`] waits until the entry is on disk.
//!
//! An entry never holds a secret or message content: the constructors take names, ids,
//! addresses and outcomes only.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// The encrypted, chained entries.
pub const LOG_FILE: &str = "audit.log";
/// The node key the log is encrypted under.
pub const KEY_FILE: &str = "audit.key";
/// The MAC'ed position of the newest entry.
pub const HEAD_FILE: &str = "audit.head";
/// Entries that may wait for the writer thread; beyond this [`AuditLog::record`] drops the
/// entry and counts it (see [`AuditLog::dropped`]) rather than block its caller.
pub const QUEUE: usize = 4096;
/// Domain separation of the associated data, the key derivation and the head MAC.
const DOMAIN: &[u8] = b"constella/audit/v1\0";

/// Why the audit log cannot be used, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// There is no audit log in this state directory yet.
    #[error("no audit log in {0} yet (the daemon starts one at its first start)")]
    Missing(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// `audit.key` is not 32 bytes.
    #[error("{0} is not a valid audit key (32 bytes expected); it was left as it is")]
    BadKey(PathBuf),
    /// An entry was changed, removed or moved (`line` counts from 1).
    #[error("audit log entry {line}: {reason}")]
    Tampered {
        /// The line of `audit.log` where the chain breaks.
        line: u64,
        /// Why it does not verify.
        reason: String,
    },
    /// The head does not match the log.
    #[error("audit log head: {0}")]
    Head(String),
    /// The writer thread is gone (the daemon is stopping).
    #[error("the audit log writer has stopped")]
    Stopped,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What happened, as the `event_type` of an entry. Joins, refusals, removals, departures,
/// key rotations and refused strangers are recorded by the event loop's protocol core (one
/// `audit.record(AuditEvent::new(AuditKind::NodeJoined, node_id, addr).detail("name", name))`
/// each); the rest here and in the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // NodeJoined … StrangersRefused: wired into the protocol core (issue 9).
pub enum AuditKind {
    /// A node was admitted.
    NodeJoined,
    /// A join was refused.
    JoinRefused,
    /// A node was removed by the owner.
    NodeRemoved,
    /// A node left by itself.
    NodeLeft,
    /// A key was rotated.
    KeyRotated,
    /// Connections from non-members were refused (a summary, rate-limited).
    StrangersRefused,
    /// A reboot was asked for (and its outcome).
    RebootRequested,
    /// A join link was issued.
    InviteIssued,
    /// The owner was changed.
    OwnerChanged,
    /// The owner's Telegram id was pinned at their first contact.
    OwnerPinned,
    /// A role was granted.
    RoleGranted,
    /// A role was revoked.
    RoleRevoked,
    /// A granted account's Telegram id was pinned at its first contact.
    RolePinned,
    /// Someone asked for something their role does not allow.
    ActionRefused,
    /// The bot token was replaced.
    BotTokenChanged,
    /// An alert threshold was set (`constella alerts set`, the bot's `/alerts`).
    AlertThresholdChanged,
    /// The audit log was read or verified.
    AuditViewed,
    /// A one-time PQ4 chat account invite was issued (`/chat_invite`).
    ChatInviteIssued,
    /// A PQ4 group was created through this node (issue 14, §18).
    ChatGroupCreated,
    /// A PQ4 group's members or admins changed through this node.
    ChatGroupMembersChanged,
    /// A PQ4 group's key was rotated (same members) through this node.
    ChatGroupKeyRotated,
    /// A PQ4 group change was refused (not an admin, not a member, bad signature, stale).
    ChatGroupRefused,
    /// A PQ4 chat account was registered through this node.
    ChatRegistered,
    /// A PQ4 chat login succeeded through this node.
    ChatLogin,
    /// A PQ4 chat login failed (wrong password) through this node.
    ChatLoginFailed,
    /// A new device was enrolled with a PQ4 chat account (a new-device login).
    ChatDeviceAdded,
    /// A device of a PQ4 chat account was revoked.
    ChatDeviceRevoked,
    /// A device revocation was refused (§14.2: bad signature, unknown device, last device…).
    ChatDeviceRevokeRefused,
    /// A revoked device was refused access to its account's mailbox.
    ChatRevokedDeviceRefused,
    /// A PQ4 chat account's keys were updated (§11).
    ChatKeysUpdated,
    /// A PQ4 chat account was recovered with its recovery code (§15).
    ChatRecovered,
    /// A wrong recovery code was given (§15.2).
    ChatRecoveryRefused,
    /// A device stored its message history for another device of the account (§17).
    ChatHistoryExported,
    /// A device imported a history transfer (§17).
    ChatHistoryImported,
    /// A history import was refused: expired, cancelled, a wrong key, another device's.
    ChatHistoryRefused,
    /// A web panel login link was issued (`constella web-login`, `/web`).
    WebLinkIssued,
    /// A web panel login link was used: a session began.
    WebLogin,
    /// A web panel login link was refused (unknown, used, expired, rate-limited).
    WebLoginRefused,
    /// A web panel session was revoked (`constella web-sessions revoke`).
    WebSessionRevoked,
    /// A watched systemd unit's restart was asked for through the web panel (and its outcome).
    ServiceRestartRequested,
}

impl AuditKind {
    /// The `event_type` text.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::NodeJoined => "node_joined",
            AuditKind::JoinRefused => "join_refused",
            AuditKind::NodeRemoved => "node_removed",
            AuditKind::NodeLeft => "node_left",
            AuditKind::KeyRotated => "key_rotated",
            AuditKind::StrangersRefused => "strangers_refused",
            AuditKind::RebootRequested => "reboot_requested",
            AuditKind::InviteIssued => "invite_issued",
            AuditKind::OwnerChanged => "owner_changed",
            AuditKind::OwnerPinned => "owner_pinned",
            AuditKind::RoleGranted => "role_granted",
            AuditKind::RoleRevoked => "role_revoked",
            AuditKind::RolePinned => "role_pinned",
            AuditKind::ActionRefused => "action_refused",
            AuditKind::BotTokenChanged => "bot_token_changed",
            AuditKind::AlertThresholdChanged => "alert_threshold_changed",
            AuditKind::AuditViewed => "audit_viewed",
            AuditKind::ChatInviteIssued => "chat_invite_issued",
            AuditKind::ChatGroupCreated => "chat_group_created",
            AuditKind::ChatGroupMembersChanged => "chat_group_members_changed",
            AuditKind::ChatGroupKeyRotated => "chat_group_key_rotated",
            AuditKind::ChatGroupRefused => "chat_group_refused",
            AuditKind::ChatRegistered => "chat_registered",
            AuditKind::ChatLogin => "chat_login",
            AuditKind::ChatLoginFailed => "chat_login_failed",
            AuditKind::ChatDeviceAdded => "chat_device_added",
            AuditKind::ChatDeviceRevoked => "chat_device_revoked",
            AuditKind::ChatDeviceRevokeRefused => "chat_device_revoke_refused",
            AuditKind::ChatRevokedDeviceRefused => "chat_revoked_device_refused",
            AuditKind::ChatKeysUpdated => "chat_keys_updated",
            AuditKind::ChatRecovered => "chat_recovered",
            AuditKind::ChatRecoveryRefused => "chat_recovery_refused",
            AuditKind::ChatHistoryExported => "chat_history_exported",
            AuditKind::ChatHistoryImported => "chat_history_imported",
            AuditKind::ChatHistoryRefused => "chat_history_refused",
            AuditKind::WebLinkIssued => "web_link_issued",
            AuditKind::WebLogin => "web_login",
            AuditKind::WebLoginRefused => "web_login_refused",
            AuditKind::WebSessionRevoked => "web_session_revoked",
            AuditKind::ServiceRestartRequested => "service_restart_requested",
        }
    }
}

/// One entry, in the fields of seed 004 §18.2 that apply to a node: `timestamp`,
/// `event_type`, who (`user_id` there), the node (`device_id`), from where (`ip_address`, or
/// the channel: `telegram`, `control socket`, `cli`) and `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix time in milliseconds.
    pub timestamp: i64,
    /// What happened (an [`AuditKind`]; text, so a newer kind still reads).
    pub event_type: String,
    /// Who: `telegram:<id> (@name)`, `cli:<user> (uid N)`, a node id.
    pub who: String,
    /// The node that recorded it (filled in by the log).
    #[serde(default)]
    pub node: String,
    /// From where: an address, or the channel.
    pub from: String,
    /// Event-specific facts: names, ids, outcomes; never a secret or message content.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

impl AuditEvent {
    /// An event of `kind` now, by `who`, from `from`.
    pub fn new(kind: AuditKind, who: impl Into<String>, from: impl Into<String>) -> Self {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            timestamp,
            event_type: kind.as_str().to_owned(),
            who: who.into(),
            node: String::new(),
            from: from.into(),
            details: BTreeMap::new(),
        }
    }

    /// Adds a detail.
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// The two keys derived from `audit.key`.
struct Keys {
    entries: Zeroizing<[u8; 32]>,
    head: Zeroizing<[u8; 32]>,
}

impl Keys {
    fn derive(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(DOMAIN), master);
        let mut entries = Zeroizing::new([0u8; 32]);
        let mut head = Zeroizing::new([0u8; 32]);
        // Cannot fail: HKDF-SHA256 refuses only outputs longer than 255 × 32 bytes.
        let _ = hk.expand(b"entries", entries.as_mut_slice());
        let _ = hk.expand(b"head", head.as_mut_slice());
        Self { entries, head }
    }

    /// Reads `audit.key`, or makes one if `create` and there is none.
    fn load(dir: &Path, create: bool) -> Result<Self, AuditError> {
        let path = dir.join(KEY_FILE);
        let mut master = Zeroizing::new([0u8; 32]);
        match File::open(&path) {
            Ok(mut file) => {
                let mut bytes = Zeroizing::new(Vec::new());
                file.read_to_end(&mut bytes).map_err(io_error(&path))?;
                if bytes.len() != 32 {
                    return Err(AuditError::BadKey(path));
                }
                master.copy_from_slice(&bytes);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                rand::fill(master.as_mut_slice());
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.write_all(master.as_slice())
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(&path))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AuditError::Missing(dir.to_owned()));
            }
            Err(e) => return Err(io_error(&path)(e)),
        }
        Ok(Self::derive(&master))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&(*self.entries).into())
    }

    fn head_mac(&self, seq: u64, hash: &[u8; 32]) -> [u8; 32] {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.head.as_slice()) else {
            return [0; 32];
        };
        mac.update(DOMAIN);
        mac.update(b"head");
        mac.update(&seq.to_be_bytes());
        mac.update(hash);
        mac.finalize().into_bytes().into()
    }
}

/// One line of `audit.log`.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    seq: u64,
    prev: String,
    nonce: String,
    data: String,
}

/// `audit.head`.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    mac: String,
}

fn associated_data(seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut aad = DOMAIN.to_vec();
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(prev);
    aad
}

fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// Where the chain ends: the last entry's number and line hash (0 and zeros when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    seq: u64,
    hash: [u8; 32],
    /// The file length this was read at.
    len: u64,
}

/// Holds an flock on a file until dropped.
struct Flock<'a>(&'a File);

/// Takes the exclusive lock of the log file `file` (at `path`, for errors).
fn lock_exclusive<'a>(file: &'a File, path: &Path) -> Result<Flock<'a>, AuditError> {
    file.lock().map_err(io_error(path))?;
    Ok(Flock(file))
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The log files of one state directory, opened for appending.
pub struct AuditFile {
    dir: PathBuf,
    file: File,
    keys: Keys,
    tail: Tail,
    head: File,
}

impl std::fmt::Debug for AuditFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFile")
            .field("dir", &self.dir)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl AuditFile {
    /// Opens the log of `dir` for appending; with `create`, makes the key and files if there
    /// are none (the daemon), otherwise fails with [`AuditError::Missing`] (the CLI).
    pub fn open(dir: &Path, create: bool) -> Result<Self, AuditError> {
        let path = dir.join(LOG_FILE);
        if !create && !path.exists() {
            return Err(AuditError::Missing(dir.to_owned()));
        }
        let keys = Keys::load(dir, create)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        let head_path = dir.join(HEAD_FILE);
        let head = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&head_path)
            .map_err(io_error(&head_path))?;
        let mut log = Self {
            dir: dir.to_owned(),
            file,
            keys,
            tail: Tail {
                seq: 0,
                hash: [0; 32],
                len: 0,
            },
            head,
        };
        let tail = {
            let _lock = lock_exclusive(&log.file, &path)?;
            read_tail(&log.file, &path)?
        };
        log.tail = tail;
        Ok(log)
    }

    /// Appends `events` (stamped with `node`) as one write, fsynced, then moves the head.
    pub fn append(&mut self, node: &str, events: &[AuditEvent]) -> Result<(), AuditError> {
        let path = self.dir.join(LOG_FILE);
        let _lock = lock_exclusive(&self.file, &path)?;
        let len = self.file.metadata().map_err(io_error(&path))?.len();
        let tail = if len == self.tail.len {
            self.tail
        } else {
            // Another process (`constella audit`) appended since: chain on from its entry.
            read_tail(&self.file, &path)?
        };
        let cipher = self.keys.cipher();
        let mut out = Vec::with_capacity(events.len() * 400);
        let (mut seq, mut prev) = (tail.seq, tail.hash);
        for event in events {
            let mut event = event.clone();
            node.clone_into(&mut event.node);
            let plaintext = Zeroizing::new(
                serde_json::to_vec(&event)
                    .map_err(|e| io_error(&path)(io::Error::new(io::ErrorKind::InvalidData, e)))?,
            );
            seq += 1;
            let mut nonce = [0u8; 12];
            rand::fill(&mut nonce);
            let aad = associated_data(seq, &prev);
            let data = cipher
                .encrypt(
                    &nonce.into(),
                    Payload {
                        msg: &plaintext,
                        aad: &aad,
                    },
                )
                .map_err(|_| {
                    io_error(&path)(io::Error::other("the entry could not be encrypted"))
                })?;
            let line = serde_json::to_vec(&Line {
                seq,
                prev: hex::encode(prev),
                nonce: hex::encode(nonce),
                data: hex::encode(data),
            })
            .map_err(|e| io_error(&path)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            prev = line_hash(&line);
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        (&self.file)
            .write_all(&out)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error(&path))?;
        self.tail = Tail {
            seq,
            hash: prev,
            len: len + out.len() as u64,
        };
        self.write_head()
    }

    /// Overwrites `audit.head` in place (under the log's lock; a few dozen bytes).
    fn write_head(&self) -> Result<(), AuditError> {
        let path = self.dir.join(HEAD_FILE);
        let head = Head {
            seq: self.tail.seq,
            hash: hex::encode(self.tail.hash),
            mac: hex::encode(self.keys.head_mac(self.tail.seq, &self.tail.hash)),
        };
        let mut bytes = serde_json::to_vec(&head)
            .map_err(|e| io_error(&path)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        bytes.push(b'\n');
        (&self.head)
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&self.head).write_all(&bytes))
            .and_then(|()| self.head.set_len(bytes.len() as u64))
            .map_err(io_error(&path))
    }
}

/// Reads and verifies the whole log of `dir`: every entry decrypts, follows the one before
/// it, and the newest matches the head. Returns the entries, oldest first, or the first place
/// where the log was changed, cut or reordered.
pub fn read_verified(dir: &Path) -> Result<Vec<AuditEvent>, AuditError> {
    let path = dir.join(LOG_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if dir.join(HEAD_FILE).exists() {
                Err(AuditError::Head(format!(
                    "{} is gone but the head records entries",
                    path.display()
                )))
            } else {
                Err(AuditError::Missing(dir.to_owned()))
            };
        }
        Err(e) => return Err(io_error(&path)(e)),
    };
    let keys = Keys::load(dir, false)?;
    // A shared lock: no append is half-written while we read.
    file.lock_shared().map_err(io_error(&path))?;
    let _lock = Flock(&file);
    let mut text = Vec::new();
    (&file).read_to_end(&mut text).map_err(io_error(&path))?;
    let head = fs::read(dir.join(HEAD_FILE)).unwrap_or_default();
    drop(_lock);

    let cipher = keys.cipher();
    let mut events = Vec::new();
    let mut prev = [0u8; 32];
    let mut hashes = Vec::new();
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    let raws: Vec<&[u8]> = if body.is_empty() {
        Vec::new()
    } else {
        body.split(|&b| b == b'\n').collect()
    };
    for (index, raw) in raws.into_iter().enumerate() {
        let number = index as u64 + 1;
        let tampered = |reason: &str| AuditError::Tampered {
            line: number,
            reason: reason.to_owned(),
        };
        let line: Line = serde_json::from_slice(raw)
            .map_err(|_| tampered("not a well-formed entry (changed)"))?;
        if line.seq != number {
            return Err(tampered(&format!(
                "carries number {} (an entry was removed or the order changed)",
                line.seq
            )));
        }
        if line.prev != hex::encode(prev) {
            return Err(tampered(
                "does not follow the entry before it (that one was changed, removed or moved)",
            ));
        }
        let nonce: [u8; 12] = hex::decode(&line.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| tampered("its nonce is damaged (changed)"))?;
        let data =
            hex::decode(&line.data).map_err(|_| tampered("its data is damaged (changed)"))?;
        let plaintext = cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &data,
                    aad: &associated_data(line.seq, &prev),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| tampered("does not decrypt under this node's key (changed)"))?;
        let event: AuditEvent = serde_json::from_slice(&plaintext)
            .map_err(|_| tampered("decrypts to something that is not an event"))?;
        prev = line_hash(raw);
        hashes.push(prev);
        events.push(event);
    }
    check_head(&keys, &head, &hashes)?;
    Ok(events)
}

/// The head must be authentic and name an entry the log still has, with the same hash.
fn check_head(keys: &Keys, head: &[u8], hashes: &[[u8; 32]]) -> Result<(), AuditError> {
    if head.is_empty() {
        return if hashes.is_empty() {
            Ok(())
        } else {
            Err(AuditError::Head(
                "audit.head is missing or empty: cannot tell whether entries were removed at the end"
                    .to_owned(),
            ))
        };
    }
    let head: Head = serde_json::from_slice(head)
        .map_err(|_| AuditError::Head("audit.head is damaged".to_owned()))?;
    let hash: [u8; 32] = hex::decode(&head.hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| AuditError::Head("audit.head is damaged".to_owned()))?;
    let expected = hex::encode(keys.head_mac(head.seq, &hash));
    if expected != head.mac {
        return Err(AuditError::Head(
            "audit.head does not verify under this node's key (changed)".to_owned(),
        ));
    }
    let count = hashes.len() as u64;
    if head.seq > count {
        return Err(AuditError::Head(format!(
            "the log ends at entry {count} but entry {} was written: the newest entries were removed",
            head.seq
        )));
    }
    let recorded = usize::try_from(head.seq)
        .ok()
        .and_then(|seq| seq.checked_sub(1))
        .and_then(|i| hashes.get(i));
    if head.seq > 0 && recorded != Some(&hash) {
        return Err(AuditError::Tampered {
            line: head.seq,
            reason: "is not the entry that was written there (changed)".to_owned(),
        });
    }
    Ok(())
}

/// Reads where the chain ends. An incomplete last line (a write cut short by a crash) was
/// never acknowledged: it is cut off, with a warning.
fn read_tail(file: &File, path: &Path) -> Result<Tail, AuditError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    if len == 0 {
        return Ok(Tail {
            seq: 0,
            hash: [0; 32],
            len,
        });
    }
    // Read backwards until the last complete line is in the buffer.
    let mut window = 4096u64.min(len);
    let (buffer, start) = loop {
        let start = len - window;
        let mut buffer = vec![0u8; usize::try_from(window).unwrap_or(usize::MAX)];
        (&*file)
            .seek(SeekFrom::Start(start))
            .and_then(|_| (&*file).read_exact(&mut buffer))
            .map_err(io_error(path))?;
        let body = &buffer[..buffer.len() - usize::from(buffer.ends_with(b"\n"))];
        if body.contains(&b'\n') || start == 0 {
            break (buffer, start);
        }
        window = (window * 2).min(len);
    };
    let mut complete = buffer.len();
    if !buffer.ends_with(b"\n") {
        complete = buffer
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let keep = start + complete as u64;
        tracing::warn!(
            file = %path.display(),
            bytes = len - keep,
            "the audit log ends in an incomplete entry (an interrupted write); it was cut off"
        );
        file.set_len(keep).map_err(io_error(path))?;
        if keep == 0 {
            return Ok(Tail {
                seq: 0,
                hash: [0; 32],
                len: 0,
            });
        }
    }
    let body = &buffer[..complete - 1];
    let last = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(body, |i| &body[i + 1..]);
    let line: Line = serde_json::from_slice(last).map_err(|e| AuditError::Tampered {
        line: 0,
        reason: format!("the last line cannot be read ({e}); run `constella audit --verify`"),
    })?;
    Ok(Tail {
        seq: line.seq,
        hash: line_hash(last),
        len: start + complete as u64,
    })
}

/// A job for the writer thread.
enum Job {
    Append(AuditEvent, Option<oneshot::Sender<Result<(), String>>>),
}

/// The daemon's handle on its audit log: cheap to clone, safe to use from any task.
#[derive(Clone)]
pub struct AuditLog {
    jobs: mpsc::Sender<Job>,
    dropped: Arc<AtomicU64>,
    /// The state directory the log is in, for [`AuditLog::recent`].
    dir: PathBuf,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or starts) the log of the state directory `dir` and starts its writer thread,
    /// which stamps entries with `node` and runs until every handle is dropped.
    pub fn open(dir: &Path, node: &str) -> Result<Self, AuditError> {
        let mut file = AuditFile::open(dir, true)?;
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let node = node.to_owned();
        let spawned = std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || {
                let mut failing = false;
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < QUEUE {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let events: Vec<AuditEvent> = batch
                        .iter()
                        .map(|Job::Append(event, _)| event.clone())
                        .collect();
                    let result = file.append(&node, &events).map_err(|e| e.to_string());
                    match &result {
                        Err(error) if !failing => {
                            tracing::error!(%error, entries = events.len(), "cannot write the audit log");
                        }
                        Ok(()) if failing => tracing::info!("the audit log is written again"),
                        _ => {}
                    }
                    failing = result.is_err();
                    for Job::Append(_, reply) in batch {
                        if let Some(reply) = reply {
                            let _ = reply.send(result.clone());
                        }
                    }
                }
            });
        spawned.map_err(io_error(&dir.join(LOG_FILE)))?;
        Ok(Self {
            jobs,
            dropped: Arc::new(AtomicU64::new(0)),
            dir: dir.to_owned(),
        })
    }

    /// The newest `count` entries, oldest first, after verifying the whole log (off the
    /// async threads: the log is read and decrypted from disk).
    pub async fn recent(&self, count: usize) -> Result<Vec<AuditEvent>, AuditError> {
        let dir = self.dir.clone();
        let mut events = tokio::task::spawn_blocking(move || read_verified(&dir))
            .await
            .map_err(|_| AuditError::Stopped)??;
        let skip = events.len().saturating_sub(count);
        events.drain(..skip);
        Ok(events)
    }

    /// Queues `event` and returns at once. If the queue is full (the disk cannot keep up)
    /// the entry is dropped and counted, with a warning at the 1st, 2nd, 4th, 8th … drop.
    pub fn record(&self, event: AuditEvent) {
        if self.jobs.try_send(Job::Append(event, None)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The 1st, 2nd, 4th, 8th … drop: a flood of drops is a handful of lines.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the audit log cannot keep up: entries were dropped"
                );
            }
        }
    }

    /// Appends `event` and waits until it is on disk.
    pub async fn append(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (reply, written) = oneshot::channel();
        self.jobs
            .send(Job::Append(event, Some(reply)))
            .await
            .map_err(|_| AuditError::Stopped)?;
        written
            .await
            .map_err(|_| AuditError::Stopped)?
            .map_err(|reason| AuditError::Io {
                path: PathBuf::from(LOG_FILE),
                source: io::Error::other(reason),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent::new(
            AuditKind::RebootRequested,
            format!("telegram:{n}"),
            "telegram",
        )
        .detail("target", "echo-02")
    }

    fn lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(dir.join(LOG_FILE), text).unwrap();
    }

    fn written(count: u32) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = AuditFile::open(tmp.path(), true).unwrap();
        for n in 0..count {
            log.append("delta-01", &[event(n)]).unwrap();
        }
        tmp
    }

    #[test]
    fn entries_read_back_in_order_and_are_encrypted() {
        let tmp = written(5);
        let events = read_verified(tmp.path()).unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[3].who, "telegram:3");
        assert_eq!(events[3].node, "delta-01");
        assert_eq!(events[3].event_type, "reboot_requested");
        let raw = fs::read_to_string(tmp.path().join(LOG_FILE)).unwrap();
        assert!(
            !raw.contains("telegram") && !raw.contains("echo-02"),
            "{raw}"
        );
        for file in [LOG_FILE, KEY_FILE, HEAD_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(tmp.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        // A second writer (another process) chains on from the first one's entries.
        let mut other = AuditFile::open(tmp.path(), false).unwrap();
        other.append("cli", &[event(9)]).unwrap();
        let mut first = AuditFile::open(tmp.path(), false).unwrap();
        first.append("delta-01", &[event(10), event(11)]).unwrap();
        assert_eq!(read_verified(tmp.path()).unwrap().len(), 8);
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let tmp = written(5);
        let mut bytes = fs::read(tmp.path().join(LOG_FILE)).unwrap();
        // A byte inside the third line's data.
        let third = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .unwrap()
            .0;
        bytes[third + 150] ^= 0x01;
        fs::write(tmp.path().join(LOG_FILE), bytes).unwrap();
        let error = read_verified(tmp.path()).unwrap_err().to_string();
        assert!(error.starts_with("audit log entry 3:"), "{error}");
    }

    #[test]
    fn a_dropped_line_is_detected() {
        let tmp = written(5);
        let mut all = lines(tmp.path());
        all.remove(1);
        write_lines(tmp.path(), &all);
        let error = read_verified(tmp.path()).unwrap_err().to_string();
        assert!(error.starts_with("audit log entry 2:"), "{error}");
        assert!(error.contains("removed"), "{error}");
    }

    #[test]
    fn a_swapped_pair_is_detected() {
        let tmp = written(5);
        let mut all = lines(tmp.path());
        all.swap(2, 3);
        write_lines(tmp.path(), &all);
        let error = read_verified(tmp.path()).unwrap_err().to_string();
        assert!(error.starts_with("audit log entry 3:"), "{error}");
    }

    #[test]
    fn removing_the_newest_entries_is_detected() {
        let tmp = written(5);
        let mut all = lines(tmp.path());
        all.truncate(3);
        write_lines(tmp.path(), &all);
        let error = read_verified(tmp.path()).unwrap_err().to_string();
        assert!(error.contains("newest entries were removed"), "{error}");
        // And the head itself cannot be edited to match.
        let head = fs::read_to_string(tmp.path().join(HEAD_FILE)).unwrap();
        fs::write(
            tmp.path().join(HEAD_FILE),
            head.replace("\"seq\":5", "\"seq\":3"),
        )
        .unwrap();
        let error = read_verified(tmp.path()).unwrap_err().to_string();
        assert!(error.contains("does not verify"), "{error}");
    }

    #[test]
    fn an_interrupted_write_is_cut_off_and_the_log_goes_on() {
        let tmp = written(3);
        let mut file = OpenOptions::new()
            .append(true)
            .open(tmp.path().join(LOG_FILE))
            .unwrap();
        file.write_all(b"{\"seq\":4,\"prev\":\"ab").unwrap();
        let mut log = AuditFile::open(tmp.path(), true).unwrap();
        log.append("delta-01", &[event(4)]).unwrap();
        assert_eq!(read_verified(tmp.path()).unwrap().len(), 4);
    }

    #[test]
    fn reading_while_another_process_appends_always_verifies() {
        let tmp = written(1);
        let dir = tmp.path().to_owned();
        let writer = std::thread::spawn(move || {
            let mut log = AuditFile::open(&dir, false).unwrap();
            for n in 0..300 {
                log.append("delta-01", &[event(n), event(n)]).unwrap();
            }
        });
        let mut reads = 0;
        let mut seen = 0;
        while !writer.is_finished() || reads == 0 {
            let events = read_verified(tmp.path()).unwrap();
            assert!(events.len() >= seen, "the log shrank");
            seen = events.len();
            reads += 1;
        }
        writer.join().unwrap();
        assert_eq!(read_verified(tmp.path()).unwrap().len(), 601);
        assert!(reads > 1, "the reader never overlapped the writer");
    }

    #[tokio::test]
    async fn the_handle_records_without_waiting_and_appends_durably() {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::open(tmp.path(), "delta-01").unwrap();
        for n in 0..100 {
            log.clone().record(event(n));
        }
        log.append(event(100)).await.unwrap();
        let events = read_verified(tmp.path()).unwrap();
        assert_eq!(events.len(), 101);
        assert_eq!(events[100].who, "telegram:100");
    }
}
