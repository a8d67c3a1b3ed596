//! The state directory: `network_state.json` (the seed's shape plus what this node needs),
//! `node.key` (the libp2p identity) and `pq4.key` (the node's PQ4 identity, signed prekey and
//! ML-KEM-1024 prekey, [`constella_keys::KeyStore`] in its unsealed form).
//!
//! All files are 0600 in a 0700 directory and are replaced atomically (temporary file, fsync,
//! rename, fsync of the directory), so a crash never leaves a half-written file. A file that
//! cannot be read or parsed stops the node with an error naming it: it is never reset.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use constella_behaviours::NetworkSecret;
use constella_behaviours::gossip::KeyUpdateBytes;
use constella_behaviours::gossip::MemberRecord;
use constella_behaviours::membership::Status;
use constella_behaviours::node;
use constella_behaviours::settings::NetworkSettings;
use constella_keys::{IdentityPublicKey, KeyStore};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::private_dir::{self, Prepared};

/// File name of the network state.
pub const STATE_FILE: &str = "network_state.json";
/// File name of the node's private key.
pub const KEY_FILE: &str = "node.key";
/// File name of the node's PQ4 keys.
pub const PQ4_KEY_FILE: &str = "pq4.key";
/// The chain of custody of the node's PQ4 identity (`constella rotate-keys`, seed 004 §11):
/// CBOR list of key updates, each signed by the identity before it.
pub const PQ4_CUSTODY_FILE: &str = "pq4-custody.cbor";
/// File name of the control socket.
pub const SOCKET_FILE: &str = "control.sock";
/// File name of a bot token set with `constella bot-token set` (0600). It takes precedence
/// over `bot_token` in the state file, which the event loop owns.
pub const BOT_TOKEN_FILE: &str = "bot.token";
/// File name of the lock that `run`, `init` and `join` hold while they may write the state.
pub const LOCK_FILE: &str = ".lock";
/// Version of the state file layout.
pub const STATE_FORMAT: u32 = 1;

/// The state directory used when neither `--state-dir` nor `CONSTELLA_STATE_DIR` is given:
/// `/var/lib/constella` for root, otherwise `$XDG_STATE_HOME/constella` or
/// `~/.local/state/constella`.
pub fn default_state_dir() -> PathBuf {
    if private_dir::effective_uid() == Some(0) {
        return PathBuf::from("/var/lib/constella");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("constella");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/constella")
}

/// A member as written in `peers` (the seed's fields first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub name: String,
    pub addr: String,
    #[serde(with = "constella_behaviours::ids::base58")]
    pub node_id: PeerId,
    /// `"alive"` or `"offline"`, as last seen by this node.
    pub status: Status,
    pub priority: u32,
    /// Version of the member record (see `MemberRecord::version`).
    pub version: u64,
    /// Its PQ4 card (public prekey bundle signed by its node key), hex; absent before PQ4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<constella_behaviours::network_keys::Pq4Card>,
    /// See `MemberRecord::admission`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub admission: u32,
    /// The chain of custody of its PQ4 identity (`MemberRecord::key_updates`), hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_updates: Vec<constella_behaviours::gossip::KeyUpdateBytes>,
    /// Its relayed addresses, if it is behind NAT (`MemberRecord::relays`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A node that left: kept so that anti-entropy cannot bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartedEntry {
    pub name: String,
    #[serde(with = "constella_behaviours::ids::base58")]
    pub node_id: PeerId,
    pub version: u64,
    /// See `MemberRecord::admission`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub admission: u32,
    /// Removed by an operator at this Unix second (not a leave): see `MemberRecord::removed_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<u64>,
}

/// This node's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNode {
    pub name: String,
    #[serde(with = "constella_behaviours::ids::base58")]
    pub node_id: PeerId,
    /// The address other nodes dial, `host:port`.
    pub public_addr: String,
    /// The address to listen on, `host:port`.
    pub listen: String,
    pub priority: u32,
    /// Bumped at every start; the high half of heartbeat sequence numbers.
    pub incarnation: u32,
}

pub use constella_behaviours::node::Invite;

/// The network secret as stored: hex, wiped on drop, never shown by `Debug`.
#[derive(Clone, Default)]
pub struct StoredSecret(Zeroizing<String>);

impl Serialize for StoredSecret {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StoredSecret {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Self(Zeroizing::new(text)))
    }
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl StoredSecret {
    /// Wraps a secret that is already text (the bot token).
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }
    pub fn from_secret(secret: &NetworkSecret) -> Self {
        Self(secret.to_hex())
    }
    /// The hex text, for the Join response that hands it to an admitted node.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn decode(&self) -> Result<NetworkSecret> {
        NetworkSecret::from_hex(&self.0).context("network_secret in the state file is malformed")
    }
}

/// Contents of `network_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkState {
    pub network_id: String,
    pub owner_username: String,
    /// Absent after `leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_secret: Option<StoredSecret>,
    pub peers: Vec<PeerEntry>,
    pub format: u32,
    pub node: LocalNode,
    #[serde(default)]
    pub departed: Vec<DepartedEntry>,
    #[serde(default)]
    pub invites: Vec<Invite>,
    /// True once this node has left the network.
    #[serde(default)]
    pub left: bool,
    /// The Telegram bot token given at `init` (absent: the bot is off). A secret, like
    /// `network_secret`: never shown by `Debug`, removed on `leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<StoredSecret>,
    /// Bot state shared by the whole network (owner pin, last Telegram update, language).
    #[serde(default)]
    pub settings: NetworkSettings,
    /// The network tag naming the gossip topic and the DHT (a hash keyed by the first network
    /// secret; kept across rotations). Absent in files written before PQ4: then derived from
    /// the secret at the next start and written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tag: Option<String>,
    /// The epoch of `network_secret`: 0 until the first rotation.
    #[serde(default)]
    pub secret_epoch: u64,
    /// The last secret rotation this node adopted (public: one sealed copy per member), kept so
    /// that it still answers a member that was offline after this node restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<constella_behaviours::gossip::Rotation>,
}

impl NetworkState {
    /// The network tag: the stored one, or (a file from before PQ4) the one derived from the
    /// current secret, which every member of such a network derives alike.
    pub fn tag(&self, secret: &NetworkSecret) -> String {
        self.network_tag
            .clone()
            .unwrap_or_else(|| constella_behaviours::network_keys::network_tag(secret))
    }

    /// Member records (tombstones included) for the membership machine.
    pub fn records(&self) -> Vec<MemberRecord> {
        let current = self.peers.iter().map(|p| MemberRecord {
            node_id: p.node_id,
            name: p.name.clone(),
            addr: p.addr.clone(),
            priority: p.priority,
            version: p.version,
            left: false,
            card: p.card.clone(),
            admission: p.admission,
            removed_at: None,
            key_updates: p.key_updates.clone(),
            relays: p.relays.clone(),
        });
        let departed = self.departed.iter().map(|d| MemberRecord {
            node_id: d.node_id,
            name: d.name.clone(),
            addr: String::new(),
            priority: 0,
            version: d.version,
            left: true,
            card: None,
            admission: d.admission,
            removed_at: d.removed_at,
            key_updates: Vec::new(),
            relays: Vec::new(),
        });
        current.chain(departed).collect()
    }

    /// What the protocol core starts from: this node (announcing `public_addr` first) and the
    /// members, liveness, settings and invites this file recorded.
    pub fn restore(&self, id: PeerId, public_addr: &str) -> (node::LocalNode, node::Restored) {
        let local = node::LocalNode {
            id,
            name: self.node.name.clone(),
            priority: self.node.priority,
            incarnation: self.node.incarnation,
            addrs: vec![public_addr.to_owned()],
        };
        let restored = node::Restored {
            records: self.records(),
            alive: self
                .peers
                .iter()
                .filter(|p| p.status == Status::Alive)
                .map(|p| p.node_id)
                .collect(),
            settings: self.settings.clone(),
            invites: self.invites.clone(),
        };
        (local, restored)
    }

    /// This state with the core's snapshot laid over it: a node that left loses its secrets.
    pub fn with_snapshot(&self, snapshot: node::Snapshot) -> Self {
        let mut next = self.clone();
        next.set_members(&snapshot.members);
        next.settings = snapshot.settings;
        next.invites = snapshot.invites;
        if snapshot.left {
            next.left = true;
            next.network_secret = None;
            next.bot_token = None;
        }
        next
    }

    /// Replaces `peers` and `departed` with `members` (each record with its status).
    pub fn set_members(&mut self, members: &[(MemberRecord, Status)]) {
        self.peers = members
            .iter()
            .filter(|(r, _)| !r.left)
            .map(|(r, status)| PeerEntry {
                name: r.name.clone(),
                addr: r.addr.clone(),
                node_id: r.node_id,
                status: *status,
                priority: r.priority,
                version: r.version,
                card: r.card.clone(),
                admission: r.admission,
                key_updates: r.key_updates.clone(),
                relays: r.relays.clone(),
            })
            .collect();
        self.peers.sort_by(|a, b| a.name.cmp(&b.name));
        self.departed = members
            .iter()
            .filter(|(r, _)| r.left)
            .map(|(r, _)| DepartedEntry {
                name: r.name.clone(),
                node_id: r.node_id,
                version: r.version,
                admission: r.admission,
                removed_at: r.removed_at,
            })
            .collect();
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }

    /// Whether a network state exists here.
    pub fn is_initialised(&self) -> bool {
        self.state_path().exists()
    }

    /// Refuses to create a network state where one exists (`init`, `join`).
    pub fn refuse_initialised(&self) -> Result<()> {
        if self.is_initialised() {
            let existing = self
                .load()
                .map(|s| s.network_id)
                .unwrap_or_else(|_| "?".into());
            bail!(
                "{} already holds the state of network {existing}; refusing to overwrite it (use another --state-dir, or remove it after `constella leave`)",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// Creates the directory (0700) if needed, or checks an existing one (never changing its
    /// mode), then takes its lock: for `init` and `join`, before anything is written.
    pub fn create_and_lock(&self) -> Result<StateLock> {
        let prepared = private_dir::prepare(&self.dir, "state directory")?;
        match self.lock() {
            Ok(mut lock) => {
                lock.created_dir = prepared == Prepared::Created;
                Ok(lock)
            }
            Err(error) => {
                if prepared == Prepared::Created {
                    let _ = fs::remove_dir(&self.dir);
                }
                Err(error)
            }
        }
    }

    /// Takes the exclusive lock of an existing state directory, held until the returned guard
    /// is dropped (for `run`, the whole life of the daemon), and then removes temporary files
    /// that a process killed in the middle of a write left behind. Refuses at once, writing
    /// nothing, if another process holds it.
    pub fn lock(&self) -> Result<StateLock> {
        let path = self.dir.join(LOCK_FILE);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no network state in {}: run `constella init` or `constella join` first (or pass --state-dir)",
                self.dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                bail!(
                    "another constella process{holder} is using {} (it holds {}); stop it first, nothing was changed",
                    self.dir.display(),
                    path.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // For the message of a process refused above; the lock itself is the flock.
        let mut pid_file = &file;
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(pid_file, "{}", std::process::id()));
        self.remove_stale_temp_files();
        Ok(StateLock {
            _file: file,
            path,
            dir: self.dir.clone(),
            created_dir: false,
        })
    }

    pub fn pq4_key_path(&self) -> PathBuf {
        self.dir.join(PQ4_KEY_FILE)
    }

    /// The node's PQ4 keys, if this directory has them.
    pub fn existing_pq4(&self) -> Result<Option<KeyStore>> {
        let path = self.pq4_key_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        KeyStore::from_unsealed_bytes(&bytes)
            .map(Some)
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a valid PQ4 key file; it was left as it is",
                    path.display()
                )
            })
    }

    /// New PQ4 keys (no one-time prekeys: a node's bundle is published in its record and
    /// used by many senders, so it offers none), not yet written.
    pub fn generate_pq4() -> Result<KeyStore> {
        KeyStore::generate_with_one_time_prekeys(0, &mut rand::rng())
            .map_err(|e| anyhow::anyhow!("cannot generate the PQ4 keys: {e}"))
    }

    /// Writes the PQ4 keys atomically (0600), refusing to replace existing ones.
    pub fn save_pq4(&self, store: &KeyStore) -> Result<()> {
        let path = self.pq4_key_path();
        if path.exists() {
            bail!(
                "{} already exists; refusing to replace a node's PQ4 identity",
                path.display()
            );
        }
        write_atomic(&path, &store.to_unsealed_bytes())
    }

    /// Replaces the PQ4 keys after a key update (`constella rotate-keys`). The chain of custody
    /// is written first: a crash between the two writes leaves an update for keys that never
    /// took effect, which [`StateDir::pq4_custody`] leaves out.
    pub fn replace_pq4(&self, store: &KeyStore, custody: &[KeyUpdateBytes]) -> Result<()> {
        let mut bytes = Vec::new();
        ciborium::into_writer(&custody, &mut bytes).context("cannot encode the key updates")?;
        write_atomic(&self.dir.join(PQ4_CUSTODY_FILE), &bytes)?;
        write_atomic(&self.pq4_key_path(), &store.to_unsealed_bytes())
    }

    /// The chain of custody that ends at `identity` (the keys in `pq4.key`): empty for a node
    /// that never updated its keys.
    pub fn pq4_custody(&self, identity: &IdentityPublicKey) -> Result<Vec<KeyUpdateBytes>> {
        let path = self.dir.join(PQ4_CUSTODY_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let chain: Vec<KeyUpdateBytes> = ciborium::from_reader(&bytes[..])
            .with_context(|| format!("{} is not a list of key updates", path.display()))?;
        let ends_here = |u: &KeyUpdateBytes| {
            constella_keys::KeyUpdate::from_bytes(&u.0).is_ok_and(|u| {
                u.new_identity().signing == identity.signing_key_bytes()
                    && &u.new_identity().dh == identity.dh_key_bytes()
            })
        };
        Ok(match chain.iter().rposition(ends_here) {
            Some(last) => chain[..=last].to_vec(),
            None => Vec::new(),
        })
    }

    /// The PQ4 keys in this directory, or new ones written there (a node created before PQ4
    /// gets its keys at its next start).
    pub fn load_or_create_pq4(&self) -> Result<KeyStore> {
        if let Some(store) = self.existing_pq4()? {
            return Ok(store);
        }
        let store = Self::generate_pq4()?;
        self.save_pq4(&store)?;
        Ok(store)
    }

    /// The bot token set with `constella bot-token set`, if any.
    pub fn load_bot_token(&self) -> Result<Option<StoredSecret>> {
        let path = self.dir.join(BOT_TOKEN_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(StoredSecret::new(text.trim().to_owned()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the bot token file atomically (0600).
    pub fn save_bot_token(&self, token: &str) -> Result<()> {
        write_atomic(&self.dir.join(BOT_TOKEN_FILE), token.as_bytes())
    }

    /// Removes the bot token file (on `leave`: the node keeps no secret of the network).
    pub fn remove_bot_token(&self) {
        let _ = fs::remove_file(self.dir.join(BOT_TOKEN_FILE));
    }

    /// Removes `*.tmp.<pid>` files of [`write_atomic`] (they may hold the network secret).
    /// Only called under the lock, when no write of ours can be under way.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_temp = [
                "network_state.tmp.",
                "node.tmp.",
                "bot.tmp.",
                "pq4.tmp.",
                "pq4-custody.tmp.",
                "web.tmp.",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
            if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => tracing::warn!(
                        file = %entry.path().display(),
                        "removed a temporary file left by an interrupted write"
                    ),
                    Err(error) => tracing::warn!(
                        file = %entry.path().display(),
                        %error,
                        "cannot remove a stale temporary file"
                    ),
                }
            }
        }
    }

    /// Reads the network state. A missing file says how to create one.
    pub fn load(&self) -> Result<NetworkState> {
        let path = self.state_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no network state in {}: run `constella init` or `constella join` first (or pass --state-dir)",
                self.dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let state: NetworkState = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt; it was left as it is", path.display()))?;
        if state.format != STATE_FORMAT {
            bail!(
                "{} has format {}, this constella reads format {STATE_FORMAT}",
                path.display(),
                state.format
            );
        }
        Ok(state)
    }

    /// Replaces the network state atomically.
    pub fn save(&self, state: &NetworkState) -> Result<()> {
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(state).context("cannot encode the network state")?,
        );
        write_atomic(&self.state_path(), &json)
    }

    /// Writes a new private key (refusing to replace one).
    pub fn save_key(&self, key: &Keypair) -> Result<()> {
        let path = self.key_path();
        if path.exists() {
            bail!(
                "{} already exists; refusing to replace a node's identity",
                path.display()
            );
        }
        let bytes = Zeroizing::new(
            key.to_protobuf_encoding()
                .context("cannot encode the node key")?,
        );
        write_atomic(&path, &bytes)
    }

    /// The key already in this directory, if any: a server keeps its identity across `leave`
    /// and a later join, and an operator may place a key here before `init` or `join`.
    pub fn existing_key(&self) -> Result<Option<Keypair>> {
        if self.key_path().exists() {
            self.load_key().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The key in this directory, or a new one written there.
    pub fn load_or_create_key(&self) -> Result<Keypair> {
        if let Some(key) = self.existing_key()? {
            return Ok(key);
        }
        let key = Keypair::generate_ed25519();
        self.save_key(&key)?;
        Ok(key)
    }

    /// Reads the private key.
    pub fn load_key(&self) -> Result<Keypair> {
        let path = self.key_path();
        let bytes = Zeroizing::new(
            fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        Keypair::from_protobuf_encoding(&bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a valid node key; it was left as it is",
                path.display()
            )
        })
    }
}

/// The exclusive lock of a state directory (`flock` on `.lock`); released when dropped, and
/// by the kernel if the process dies.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
    path: PathBuf,
    dir: PathBuf,
    /// The directory was created for this command.
    created_dir: bool,
}

impl StateLock {
    /// Undoes a failed `init` or `join`: removes the lock file, and the directory too if it
    /// was created for this command and nothing else is in it.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.path);
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// Writes `bytes` to `path` through a 0600 temporary file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("state path has no directory")?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> NetworkState {
        NetworkState {
            network_id: "abcd1234".into(),
            owner_username: "@Rmgss".into(),
            network_secret: Some(StoredSecret::from_secret(&NetworkSecret::generate())),
            peers: vec![],
            format: STATE_FORMAT,
            node: LocalNode {
                name: "delta-01".into(),
                node_id: PeerId::random(),
                public_addr: "127.0.0.1:4747".into(),
                listen: "127.0.0.1:4747".into(),
                priority: 100,
                incarnation: 0,
            },
            departed: vec![],
            invites: vec![],
            left: false,
            bot_token: Some(StoredSecret::new("123456:bot-token-secret-part".into())),
            settings: NetworkSettings::default(),
            network_tag: None,
            secret_epoch: 0,
            last_rotation: None,
        }
    }

    #[test]
    fn pq4_keys_are_0600_read_back_and_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let _lock = dir.create_and_lock().unwrap();
        assert!(dir.existing_pq4().unwrap().is_none());
        let store = dir.load_or_create_pq4().unwrap();
        let mode = fs::metadata(dir.pq4_key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = dir.load_or_create_pq4().unwrap();
        assert_eq!(again.identity_public(), store.identity_public());
        assert!(dir.save_pq4(&again).is_err());
        fs::write(dir.pq4_key_path(), b"junk").unwrap();
        let error = dir.existing_pq4().unwrap_err().to_string();
        assert!(
            error.contains("pq4.key") && error.contains("left as it is"),
            "{error}"
        );
    }

    #[test]
    fn save_load_modes_and_redaction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let _lock = dir.create_and_lock().unwrap();
        let state = sample();
        dir.save(&state).unwrap();
        let mode = fs::metadata(dir.state_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let loaded = dir.load().unwrap();
        assert_eq!(loaded.network_id, "abcd1234");
        assert!(!format!("{loaded:?}").contains(&*state.network_secret.as_ref().unwrap().0));
        assert!(!format!("{loaded:?}").contains("bot-token-secret-part"));
        assert_eq!(
            loaded.bot_token.unwrap().expose(),
            "123456:bot-token-secret-part"
        );
        // Only the final file (and the lock) is left behind.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [LOCK_FILE, STATE_FILE]);
    }

    #[test]
    fn the_lock_is_exclusive_and_clears_stale_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let lock = dir.create_and_lock().unwrap();
        // A second holder is refused (flock locks are per open file, so this holds even
        // within one process).
        let error = format!("{:#}", dir.lock().unwrap_err());
        assert!(error.contains("another constella process"), "{error}");
        assert!(
            error.contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        drop(lock);

        let stale = dir.path().join("network_state.tmp.424242");
        let stale_key = dir.path().join("node.tmp.424242");
        fs::write(&stale, b"secret").unwrap();
        fs::write(&stale_key, b"key").unwrap();
        let unrelated = dir.path().join("notes.txt");
        fs::write(&unrelated, b"keep").unwrap();
        let _lock = dir.lock().unwrap();
        assert!(!stale.exists() && !stale_key.exists());
        assert!(unrelated.exists());
    }

    #[test]
    fn an_abandoned_new_directory_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create_and_lock().unwrap().abandon();
        assert!(!dir.path().exists());
        // An existing directory stays; only the lock file goes.
        fs::create_dir(dir.path()).unwrap();
        dir.create_and_lock().unwrap().abandon();
        assert!(dir.path().exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_state_file_without_bot_fields_still_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_owned());
        let mut json = serde_json::to_value(sample()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("bot_token");
        object.remove("settings");
        fs::write(dir.state_path(), json.to_string()).unwrap();
        let loaded = dir.load().unwrap();
        assert!(loaded.bot_token.is_none());
        assert_eq!(loaded.settings, NetworkSettings::default());
    }

    #[test]
    fn corrupt_state_names_the_file_and_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_owned());
        fs::write(dir.state_path(), "{ not json").unwrap();
        let error = format!("{:#}", dir.load().unwrap_err());
        assert!(error.contains("network_state.json is corrupt"), "{error}");
        assert_eq!(fs::read_to_string(dir.state_path()).unwrap(), "{ not json");
    }

    #[test]
    fn key_round_trip_and_no_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_owned());
        let key = Keypair::generate_ed25519();
        dir.save_key(&key).unwrap();
        assert_eq!(dir.load_key().unwrap().public(), key.public());
        assert!(dir.save_key(&Keypair::generate_ed25519()).is_err());
        assert_eq!(
            fs::metadata(dir.key_path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
