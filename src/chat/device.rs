//! The device's data in its home directory (`--home`, `CONSTELLA_CHAT_HOME`): one file,
//! `device.cbor` (0600, in a 0700 directory), holding the key store and every ratchet session
//! sealed under the password (PQ4 sealed blobs), and what is not secret in clear: the
//! username, each peer's pinned identity, the handshake still attached to outgoing messages,
//! and the ids of messages already received (so a copy from a holder that missed an
//! acknowledgement is not shown twice).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use constella_behaviours::pq4::Bytes;
use constella_keys::{KdfParams, KeyStore, PasswordKey, SealedBlob, Session};
use serde::{Deserialize, Serialize};

/// File name of the device state.
const FILE: &str = "device.cbor";
/// Received message ids remembered.
const SEEN: usize = 8192;

/// One peer as this device knows it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Peer {
    /// The identity (113 bytes) pinned at the first contact.
    pub identity: Option<Bytes>,
    /// The ratchet session, sealed.
    pub session: Option<SealedBlob>,
    /// The handshake to attach until the peer answers (we initiated).
    pub initial: Option<Bytes>,
    /// SHA-256 of the handshake our responder session came from.
    pub initial_hash: Option<Bytes>,
    /// Skipped messages already reported lost.
    pub lost_reported: usize,
}

/// The stored device state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    pub username: String,
    pub keys: SealedBlob,
    pub peers: BTreeMap<String, Peer>,
    pub seen: VecDeque<Bytes>,
    /// This device among the account's devices (16 random bytes, chosen at register or login):
    /// the mailbox keeps a message until every device has acknowledged it.
    #[serde(default)]
    pub device_id: Bytes,
    /// Groups by hex group id (`super::group`).
    #[serde(default)]
    pub groups: BTreeMap<String, super::group::GroupState>,
    /// Contacts whose fingerprint the user confirmed (`chat verify`): the identity confirmed.
    #[serde(default)]
    pub verified: BTreeMap<String, Bytes>,
    /// This device's own key (a key store whose identity signs revocations of the account's
    /// other devices), sealed under the password; made at the first enrolment.
    #[serde(default)]
    pub device_key: Option<SealedBlob>,
    /// This device's name among the account's devices.
    #[serde(default)]
    pub device_name: String,
    /// The account's devices as this device last saw them (hex id → revoked), so that a new
    /// or revoked device is reported once (`super::devices`).
    #[serde(default)]
    pub known_devices: BTreeMap<String, bool>,
    /// When the account's current keys were made, as the network last said (0: not asked
    /// yet); a device asks again only once this is older than the key update period
    /// (`super::keys::update_if_due`).
    #[serde(default)]
    pub keys_since_ms: u64,
}

/// An unlocked device: the stored state, the key store and the password key.
pub struct Device {
    pub home: PathBuf,
    pub stored: Stored,
    pub keys: KeyStore,
    pub password: PasswordKey,
    /// Contacts whose account recovery this command accepted: a group admin re-invites them
    /// once the batch of messages is handled (`super::group::reinvite`).
    pub recovered: Vec<String>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("username", &self.stored.username)
            .finish_non_exhaustive()
    }
}

/// The default home: `$XDG_DATA_HOME/constella/chat` or `~/.local/share/constella/chat`.
pub fn default_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("constella/chat");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/constella/chat")
}

impl Device {
    /// A new device for `username` (after register or login).
    pub fn create(
        home: &Path,
        username: &str,
        keys: KeyStore,
        password: PasswordKey,
        keep_peers: bool,
    ) -> Result<Self> {
        crate::private_dir::prepare(home, "chat home")?;
        let mut peers = BTreeMap::new();
        let mut seen = VecDeque::new();
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        let mut device_id = Bytes(id.to_vec());
        let mut groups = BTreeMap::new();
        let mut verified = BTreeMap::new();
        let mut device_key = None;
        let mut device_name = String::new();
        let mut known_devices = BTreeMap::new();
        if keep_peers
            && let Ok(old) = read(home)
            && old.username == username
        {
            peers = old.peers;
            seen = old.seen;
            if !old.device_id.0.is_empty() {
                device_id = old.device_id;
            }
            groups = old.groups;
            verified = old.verified;
            // The same device logging in again keeps its key (a revoked device stays revoked).
            device_key = old.device_key;
            device_name = old.device_name;
            known_devices = old.known_devices;
        }
        let sealed = keys
            .seal(&password, &mut rand::rng())
            .context("cannot seal the keys")?;
        let device = Self {
            home: home.to_owned(),
            stored: Stored {
                username: username.to_owned(),
                keys: sealed,
                peers,
                seen,
                device_id,
                groups,
                verified,
                device_key,
                device_name,
                known_devices,
                keys_since_ms: 0,
            },
            keys,
            password,
            recovered: Vec::new(),
        };
        device.save()?;
        Ok(device)
    }

    /// Opens the device in `home` with the password.
    pub fn unlock(home: &Path, password: &str) -> Result<Self> {
        let stored = read(home)?;
        let key = stored
            .keys
            .unlock(password, &KdfParams::PRODUCTION)
            .context("cannot derive the key")?;
        let keys = KeyStore::open(&stored.keys, &key)
            .map_err(|_| anyhow::anyhow!("AuthenticationFailed: wrong password for this device"))?;
        Ok(Self {
            home: home.to_owned(),
            stored,
            keys,
            password: key,
            recovered: Vec::new(),
        })
    }

    /// The session with `peer`, if any.
    pub fn session(&self, peer: &str) -> Result<Option<Session>> {
        match self.stored.peers.get(peer).and_then(|p| p.session.as_ref()) {
            Some(blob) => Ok(Some(
                Session::open(blob, &self.password).context("cannot open a stored session")?,
            )),
            None => Ok(None),
        }
    }

    /// Stores `session` as the one with `peer`.
    pub fn put_session(&mut self, peer: &str, session: &Session) -> Result<()> {
        let sealed = session
            .seal(&self.password, &mut rand::rng())
            .context("cannot seal a session")?;
        self.stored
            .peers
            .entry(peer.to_owned())
            .or_default()
            .session = Some(sealed);
        Ok(())
    }

    /// Whether a message id was already received.
    pub fn seen(&self, id: &Bytes) -> bool {
        self.stored.seen.contains(id)
    }

    /// Remembers a received message id.
    pub fn mark_seen(&mut self, id: Bytes) {
        self.stored.seen.push_back(id);
        while self.stored.seen.len() > SEEN {
            self.stored.seen.pop_front();
        }
    }

    /// Reseals the key store (after a one-time prekey was used) and writes the file.
    pub fn save_keys(&mut self) -> Result<()> {
        self.stored.keys = self
            .keys
            .seal(&self.password, &mut rand::rng())
            .context("cannot seal the keys")?;
        self.save()
    }

    /// Writes the state atomically (temporary file 0600, fsync, rename).
    pub fn save(&self) -> Result<()> {
        let mut bytes = Vec::new();
        ciborium::into_writer(&self.stored, &mut bytes).context("cannot encode the device")?;
        let path = self.home.join(FILE);
        let tmp = self.home.join(format!("{FILE}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

fn read(home: &Path) -> Result<Stored> {
    let path = home.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no chat account on this device ({} is missing): run `constella chat register` or `constella chat login`",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    ciborium::from_reader(bytes.as_slice())
        .with_context(|| format!("{} is corrupt", path.display()))
}
