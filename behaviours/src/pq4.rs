//! `/constella/pq4/1.0.0`: the PQ4 messaging service between members, and between a chat client
//! and the member that serves it (docs/messaging.md).
//!
//! One request-response protocol carries two kinds of operation:
//! - [`Op`] client operations (register, log in, fetch a bundle, send, fetch and acknowledge a
//!   mailbox). The member that receives one *coordinates* it: it finds the `k` members closest
//!   to the record key ([`closest`]) and talks to them with replica operations.
//! - [`ReplicaOp`]: what a coordinator asks of one holder. Only members may send these.
//!
//! Every request carries its protocol version `v`; a node serves [`MIN_VERSION`]`..=`[`VERSION`]
//! (seed 004 §21: "v and v−1") and answers [`Response::Unsupported`] otherwise, so an old
//! client learns what to upgrade to instead of failing to decode.
//!
//! Nothing here is secret to the serving nodes except what the client already encrypted or
//! sealed under its password: envelopes, sealed keys, the login verifier's preimage.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use libp2p::request_response;
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::pq4_devices::{DeviceCard, DeviceEntry, Revocation};
pub use crate::pq4_groups::GroupRecord;
pub use crate::pq4_history::{HistoryAnswer, HistoryOp, HistoryReplica};

type HmacSha256 = Hmac<Sha256>;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/constella/pq4/1.0.0");
/// The service version this node speaks.
pub const VERSION: u16 = 1;
/// The oldest version this node still serves (v − 1).
pub const MIN_VERSION: u16 = VERSION - 1;
/// Largest request: a registration with 100 one-time prekeys and the sealed keys is ~25 KiB;
/// an envelope is at most ~70 KiB.
pub const MAX_REQUEST_BYTES: u64 = 512 * 1024;
/// Largest response: a mailbox page (see [`MAX_FETCH`]).
pub const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;
/// Records of one key live on this many members.
pub const REPLICAS: usize = 3;
/// Messages returned by one mailbox fetch.
pub const MAX_FETCH: usize = 64;
/// Longest username and email.
pub const MAX_NAME_LEN: usize = 64;
/// Largest envelope a client may queue.
pub const MAX_ENVELOPE_BYTES: usize = 128 * 1024;
/// One-time prekeys an account may upload at once.
pub const MAX_OPKS: usize = 1000;
/// Parallel streams per connection.
const MAX_CONCURRENT_STREAMS: usize = 64;
/// Longest a [`Op::Wait`] is held open over libp2p: below [`crate::RPC_TIMEOUT`] (4.5 s), after
/// which the request-response protocol itself gives up on the answer.
pub const MAX_WAIT_REMOTE_MS: u64 = 3_000;
/// Longest a [`Op::Wait`] is held open on the local chat socket (the client's call timeout is
/// 30 s).
pub const MAX_WAIT_LOCAL_MS: u64 = 25_000;
/// Failed logins of one account, counted on its holders, within [`LOGIN_FAILURE_WINDOW_MS`]
/// before every node refuses to start another login for it.
pub const MAX_LOGIN_FAILURES: u32 = 5;
/// The window of [`MAX_LOGIN_FAILURES`].
pub const LOGIN_FAILURE_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Bytes that CBOR encodes as one byte string (a `Vec<u8>` would be an array of integers).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({})", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The sender's service version.
    pub v: u16,
    pub op: Op,
}

impl Request {
    /// A request of the current version.
    pub fn new(op: Op) -> Self {
        Self { v: VERSION, op }
    }
}

/// The password-derived material an account registers: Argon2id parameters and salt (handed
/// to anyone who starts a login, as the client needs them to derive its key) and the login
/// verifier `HMAC(auth_key, "Login")` (never handed out; the coordinator checks a login's
/// challenge answer with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    pub salt: Bytes,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// An account as the holders keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub email: String,
    /// The identity public key, 113 bytes (`ed448 ‖ x448`).
    pub identity: Bytes,
    /// The signed prekey bundle without a one-time prekey (`PreKeyBundle::to_bytes`).
    pub bundle: Bytes,
    pub kdf: Kdf,
    /// `HMAC-SHA256(auth_key, "Login")` (docs/pq4.md, `LoginProof`).
    pub verifier: Bytes,
    /// The key store sealed under the password (`SealedBlob`, CBOR).
    pub sealed_keys: Bytes,
    /// When the registration started (ms since the epoch).
    pub created_ms: u64,
    /// The account's key updates (seed §11), oldest first: each `KeyUpdate` wire bytes, signed
    /// by the identity before it, so a contact that pinned any earlier identity can follow the
    /// chain to the current one.
    #[serde(default)]
    pub key_updates: Vec<Bytes>,
    /// [`recovery_hash`] of the recovery code shown once at registration (seed §15; empty:
    /// none).
    #[serde(default)]
    pub recovery: Bytes,
    /// The recoveries of the account, oldest first: each replaced the identity without a
    /// signature of the old one (every device was lost), vouched for by the recovery code.
    #[serde(default)]
    pub recoveries: Vec<Recovered>,
    /// When the current keys were installed by a key update or a recovery (ms since the
    /// epoch, the coordinator's clock; 0: at registration, `created_ms`).
    #[serde(default)]
    pub keys_ms: u64,
}

/// One account recovery, as the holders keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    pub at_ms: u64,
    /// The identity the account was registered with.
    pub root: Bytes,
    /// The identity replaced.
    pub old: Bytes,
    /// The identity that replaced it.
    pub new: Bytes,
}

/// A one-time prekey's public half as uploaded (`id`, X448 public key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opk {
    pub id: u32,
    pub key: Bytes,
}

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// `SHA-256(envelope)`: dedup key and what an acknowledgement names.
    pub id: Bytes,
    /// The username the sender claims (the envelope's signature decides whether it is true).
    pub from: String,
    /// When the serving member accepted it (ms since the epoch).
    pub at_ms: u64,
    pub envelope: Bytes,
}

/// Proof that a mailbox operation comes from the account's owner:
/// `mac = HMAC-SHA256(verifier, "PQ4 mailbox" ‖ username ‖ ts_ms (8 bytes BE) ‖ nonce ‖ device ‖ body)`
/// where `body` is the concatenated ids for an acknowledgement and empty for a fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailboxAuth {
    pub username: String,
    pub ts_ms: u64,
    pub nonce: Bytes,
    pub mac: Bytes,
    /// The device asking (16 random bytes the device chose; empty from a client that predates
    /// devices). A message leaves the mailbox once every device that fetched from it has
    /// acknowledged it.
    #[serde(default)]
    pub device: Bytes,
}

/// A client operation, coordinated by the member that receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// A one-time account invite (only from the member's own control path, never over libp2p).
    NewInvite {
        ttl_secs: u64,
    },
    Register {
        invite: String,
        account: Account,
        opks: Vec<Opk>,
    },
    /// Step 1 of a login: the salt and parameters, and a fresh challenge.
    LoginStart {
        username: String,
    },
    /// Step 2: `mac = HMAC-SHA256(verifier, "PQ4 login" ‖ nonce ‖ username)`.
    LoginFinish {
        username: String,
        nonce: Bytes,
        mac: Bytes,
    },
    /// A bundle with one one-time prekey (taken, never handed out again) if any is left.
    GetBundle {
        username: String,
    },
    /// The bundle without a one-time prekey (to check who sent a message).
    Identity {
        username: String,
    },
    /// Queue an envelope in `to`'s mailbox.
    Send {
        from: String,
        to: String,
        envelope: Bytes,
    },
    Fetch {
        auth: MailboxAuth,
    },
    Ack {
        auth: MailboxAuth,
        ids: Vec<Bytes>,
    },
    /// A holder's operation, member to member.
    Replica(ReplicaOp),
    /// Like [`Op::Fetch`], but held open up to `timeout_ms` (capped: [`MAX_WAIT_LOCAL_MS`],
    /// [`MAX_WAIT_REMOTE_MS`]) until a holder stores a message for the account, then answered
    /// with [`Response::Mailbox`] (which also tells the device how many one-time prekeys are
    /// left). `timeout_ms = 0` answers at once.
    Wait {
        auth: MailboxAuth,
        timeout_ms: u64,
    },
    /// More one-time prekeys for the account (the device was told it runs low), with the key
    /// store sealed again so that a device logging in later has their private halves.
    /// Authenticated like an acknowledgement, `body` = the ids (4 bytes BE each).
    UploadOpks {
        auth: MailboxAuth,
        opks: Vec<Opk>,
        sealed_keys: Bytes,
    },
    /// Store a new version of a group record (`pq4_groups`): the coordinator checks the
    /// author's signature against the registered account, each holder the admin rule and the
    /// concurrent-update order. Answer: [`Response::Group`] with the version now held.
    PutGroup {
        record: GroupRecord,
    },
    /// The current version of a group record (by group id).
    GetGroup {
        gid: Bytes,
    },
    /// A member's client installed the group key of `ack.epoch` (§8.1 step 6): the
    /// coordinator checks the signature against the member's registered identity, each holder
    /// that the member is in the group. Answer: [`Response::GroupStatus`].
    AckGroupKey {
        ack: crate::pq4_groups::GroupAck,
    },
    /// Who acknowledged the group's current key and who is marked inactive (§8.2), merged
    /// over the holders ([`Response::GroupStatus`]).
    GroupStatus {
        gid: Bytes,
    },
    /// Enrol this device (its id is `auth.device`, which must equal `card.id`) with the
    /// account's holders, after a register or a login. Authenticated like a fetch with
    /// `body` = [`device_body`] of the card. A revoked device is refused (`DeviceRevoked`).
    AddDevice {
        auth: MailboxAuth,
        card: DeviceCard,
    },
    /// The account's devices ([`Response::Devices`]); `body` = `b"devices"`.
    Devices {
        auth: MailboxAuth,
    },
    /// Revoke a device (seed §14): signed by another active device of the account.
    RevokeDevice {
        revocation: Revocation,
    },
    /// Replace the account's keys (seed §11): `update` is a `KeyUpdate` signed by the current
    /// identity and the new one; `bundle`, `opks` and `sealed_keys` are the new key store's.
    /// Authenticated like a fetch, `body` = `SHA-256(update)`. Of two updates of the same
    /// identity (two devices at once) exactly one wins: the first to commit the claim
    /// [`key_update_key`] on a majority of the holders; the other is answered `Conflict`.
    UpdateKeys {
        auth: MailboxAuth,
        update: Bytes,
        bundle: Bytes,
        opks: Vec<Opk>,
        sealed_keys: Bytes,
    },
    /// The account's key updates, oldest first ([`Response::KeyUpdates`]).
    KeyUpdates {
        username: String,
    },
    /// Recover an account after every device was lost (seed §15): the recovery code, and the
    /// new account (new keys, password verifier and recovery code hash; the email and the
    /// registration time are kept from the held account).
    Recover {
        username: String,
        code: String,
        account: Account,
        opks: Vec<Opk>,
    },
    /// History transfer to a new device (seed §17, `pq4_history`).
    History(HistoryOp),
}

/// One holder's part of an operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaOp {
    PutInvite {
        hash: Bytes,
        expires_ms: u64,
    },
    /// Reserve an invite for a registration (`owner` names the attempt): a [`ReplicaOp::Claim`]
    /// of [`invite_key`] granted only while the invite exists and has not expired; undone by
    /// [`ReplicaOp::Abort`], made final by [`ReplicaOp::Commit`] of that key.
    ReserveInvite {
        hash: Bytes,
        owner: Bytes,
    },
    /// Claim a unique key (`user/NAME`, `email/ADDR`) for a registration attempt; pending
    /// claims expire after [`CLAIM_TTL`].
    Claim {
        key: String,
        owner: Bytes,
    },
    /// Make `owner`'s claim permanent (also where this holder granted another attempt: the
    /// committing attempt holds a majority, the other cannot).
    Commit {
        key: String,
        owner: Bytes,
    },
    /// Drop `owner`'s pending claim.
    Abort {
        key: String,
        owner: Bytes,
    },
    /// Store (or refresh) an account with its unused one-time prekeys.
    PutAccount {
        account: Account,
        opks: Vec<Opk>,
    },
    GetAccount {
        username: String,
    },
    /// Remove one-time prekey `id`: [`Response::Granted`] if this holder still had it.
    TakeOpk {
        username: String,
        id: u32,
    },
    PutMessage {
        to: String,
        message: Queued,
    },
    /// The messages `device` has not acknowledged yet (the device is enrolled in the
    /// mailbox by asking).
    FetchMessages {
        to: String,
        #[serde(default)]
        device: Bytes,
    },
    /// `device` acknowledged these; a message acknowledged by every enrolled device is deleted
    /// and its id remembered, so a holder that missed the deletion cannot hand it back out
    /// through a hand-off.
    DeleteMessages {
        to: String,
        ids: Vec<Bytes>,
        #[serde(default)]
        device: Bytes,
    },
    /// Tell the asking member (with [`ReplicaOp::Notify`]) when a message for `to` is stored
    /// here within `ttl_ms` (kept in memory only).
    Watch {
        to: String,
        ttl_ms: u64,
    },
    /// A message for `to` was stored (holder to the watching member).
    Notify {
        to: String,
    },
    /// Count one failed login of `username`; answered with [`Response::Failures`].
    LoginFailed {
        username: String,
    },
    /// The failed logins of `username` within the window.
    LoginFailures {
        username: String,
    },
    /// Add one-time prekeys to an account and replace its sealed key store.
    AddOpks {
        username: String,
        opks: Vec<Opk>,
        sealed_keys: Bytes,
    },
    /// The login verifiers of registrations of `username` that lost to another one when a
    /// partition healed ([`Response::Lost`]).
    Lost {
        username: String,
    },
    /// Offer a group record version (signature checked by the coordinator).
    PutGroup {
        record: GroupRecord,
    },
    GetGroup {
        gid: Bytes,
    },
    /// Hand-off of a group as a holder keeps it (current and previous version), from a member
    /// whose records moved: taken whole by a holder that has none, else offered as a version.
    PutHeldGroup {
        held: crate::pq4_groups::HeldGroup,
    },
    /// Record a member's acknowledgement of a group key (signature checked by the
    /// coordinator).
    AckGroupKey {
        ack: crate::pq4_groups::GroupAck,
    },
    /// This holder's [`crate::pq4_groups::GroupStatus`] of a group.
    GroupStatus {
        gid: Bytes,
    },
    /// Merge device cards into an account's devices (enrolment, hand-off): a card already
    /// held is kept, a revocation is kept for ever.
    PutDevices {
        username: String,
        devices: Vec<DeviceEntry>,
    },
    /// The account's devices ([`Response::Devices`]).
    GetDevices {
        username: String,
    },
    /// Apply a revocation after checking it against the devices held here
    /// (`pq4_devices::check_revocation`).
    RevokeDevice {
        revocation: Revocation,
    },
    /// Count one wrong recovery code of `username` ([`Response::RecoveryFailures`]).
    RecoveryFailed {
        username: String,
    },
    /// The wrong recovery codes of `username` within [`RECOVERY_FAILURE_WINDOW_MS`].
    RecoveryFailures {
        username: String,
    },
    /// A holder's part of a history transfer (`pq4_history`).
    History(HistoryReplica),
}

/// How long a pending uniqueness claim holds.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

/// Why an operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    UserAlreadyExists,
    EmailAlreadyUsed,
    UserNotFound,
    AuthenticationFailed,
    /// Too many failed logins for this account; try again later.
    RateLimited,
    InvalidInvite,
    /// Malformed or out-of-bounds request.
    Invalid,
    /// Replica operations are for members only.
    NotAMember,
    /// Not enough holders answered.
    Unavailable,
    /// Two registrations split the holders and neither won: try again.
    Conflict,
    Internal,
    /// The account was registered on one side of a partition while another registration of
    /// the same name won on the other side; this device's account is gone.
    RegistrationLost,
    /// A group change refused by the group rules (not an admin, not a member, stale, bad
    /// signature).
    GroupRefused,
    GroupNotFound,
    /// A device revocation whose signature is not another active device's (§14.2).
    InvalidSignature,
    /// No such device on the account (§14.2).
    DeviceNotFound,
    /// The account's last active device cannot be revoked (§14.2).
    LastActiveDevice,
    /// Another revocation of this account is being applied (§14.2).
    RevocationInProgress,
    /// The device is revoked already (§14.2).
    AlreadyRevoked,
    /// The asking device was revoked: it may no longer read or enrol.
    DeviceRevoked,
    /// No such history transfer (never made, imported already, expired or cancelled).
    TransferNotFound,
    /// The history transfer expired (§17.2: the key is valid for one hour); deleted.
    TransferExpired,
    /// A second wrong history key cancelled the transfer (§17.2); deleted.
    TransferCancelled,
}

/// One answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The request's version is not served.
    Unsupported {
        min: u16,
        max: u16,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    Ok,
    Invite {
        code: String,
    },
    Registered,
    LoginChallenge {
        kdf: Kdf,
        nonce: Bytes,
    },
    LoggedIn {
        account: Box<Account>,
    },
    Bundle {
        bundle: Bytes,
        opk: Option<Opk>,
    },
    /// How many holders stored the message.
    Sent {
        id: Bytes,
        stored: u32,
    },
    Messages(Vec<Queued>),
    // Replica answers.
    Granted,
    Taken,
    Account(Option<Box<(Account, Vec<Opk>)>>),
    /// The answer to [`Op::Wait`].
    Mailbox {
        messages: Vec<Queued>,
        /// One-time prekeys the account has left (a device uploads more when few are).
        opks_left: u32,
    },
    /// Failed logins within the window on this holder.
    Failures {
        recent: u32,
    },
    /// Verifiers of losing registrations.
    Lost(Vec<Bytes>),
    /// The group record version held (after a put: the winner, which may not be the one put).
    Group(Option<Box<GroupRecord>>),
    /// Acknowledgements of a group's current key and the members marked inactive.
    GroupStatus(crate::pq4_groups::GroupStatus),
    /// An account's devices.
    Devices(Vec<DeviceEntry>),
    /// An account's key updates, oldest first, its current identity and its recoveries.
    KeyUpdates {
        updates: Vec<Bytes>,
        identity: Bytes,
        #[serde(default)]
        recoveries: Vec<Recovered>,
        /// When the current keys were made ([`Account::keys_since_ms`]).
        #[serde(default)]
        since_ms: u64,
    },
    /// When the wrong recovery codes within the window were given (ms since the epoch).
    RecoveryFailures {
        times: Vec<u64>,
    },
    /// The answer to a history transfer operation.
    History(HistoryAnswer),
}

impl Response {
    /// An error answer.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error {
            kind,
            message: message.into(),
        }
    }
}

impl Account {
    /// When the account's current keys were made: the last key update or recovery, else the
    /// registration (§11.1: a device updates them when they are 90 days old).
    pub fn keys_since_ms(&self) -> u64 {
        let recovered = self.recoveries.last().map_or(0, |r| r.at_ms);
        self.keys_ms.max(recovered).max(self.created_ms)
    }

    /// Whether `other` is this same registration (possibly with prekeys uploaded since).
    pub fn same_registration(&self, other: &Account) -> bool {
        self.username == other.username
            && self.first_identity() == other.first_identity()
            && self.created_ms == other.created_ms
    }

    /// How far the account moved from its registration: (recoveries, key updates). Of two
    /// copies of one registration the one with more history is newer.
    pub fn history(&self) -> (usize, usize) {
        (self.recoveries.len(), self.key_updates.len())
    }

    /// The identity the account was registered with (before any key update).
    pub fn first_identity(&self) -> Bytes {
        if let Some(first) = self.recoveries.first() {
            return first.root.clone();
        }
        self.key_updates
            .first()
            .and_then(|u| constella_keys::KeyUpdate::from_bytes(&u.0).ok())
            .map(|u| {
                let old = u.old_identity();
                Bytes([&old.signing[..], &old.dh[..]].concat())
            })
            .unwrap_or_else(|| self.identity.clone())
    }

    /// Whether this registration beats `other` of the same name, which was made on the other
    /// side of a partition: the earlier one wins, ties broken by the smaller identity key.
    /// Every holder decides the same from the two records alone.
    pub fn wins_over(&self, other: &Account) -> bool {
        (self.created_ms, &self.identity) < (other.created_ms, &other.identity)
    }
}

/// The request-response behaviour.
pub type Behaviour = request_response::cbor::Behaviour<Request, Response>;

/// A pq4 behaviour with bounded frames and the given timeout.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::bounded_cbor(
        PROTOCOL,
        MAX_REQUEST_BYTES,
        MAX_RESPONSE_BYTES,
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}

/// Whether `v` is served.
pub fn serves(v: u16) -> bool {
    (MIN_VERSION..=VERSION).contains(&v)
}

/// The `k` members closest to `key` by XOR distance of `SHA-256(key)` and
/// `SHA-256(peer id bytes)` (Kademlia's metric over the member list), closest first.
pub fn closest(key: &str, members: &[PeerId], k: usize) -> Vec<PeerId> {
    let target: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut ranked: Vec<([u8; 32], PeerId)> = members
        .iter()
        .map(|peer| {
            let h: [u8; 32] = Sha256::digest(peer.to_bytes()).into();
            let mut d = [0u8; 32];
            for (i, byte) in d.iter_mut().enumerate() {
                *byte = h[i] ^ target[i];
            }
            (d, *peer)
        })
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(k).map(|(_, p)| p).collect()
}

/// Answers needed out of `holders` for a decision only one attempt can win: a strict majority.
pub fn majority(holders: usize) -> usize {
    holders / 2 + 1
}

/// What the loser of a partition race is told (by a member, or by its own client when the
/// network serves another identity under its name). It names `UserAlreadyExists` (seed §1.2):
/// that is what the losing registration would have been answered without the partition.
pub fn registration_lost_message(username: &str) -> String {
    format!(
        "@{username} was also registered on the other side of a network partition, and that \
         registration won when the partition healed (UserAlreadyExists for this one); this \
         device's account is gone, register again under another name"
    )
}

/// The record key of an account and its mailbox.
pub fn user_key(username: &str) -> String {
    format!("user/{username}")
}

/// The body of an [`Op::AddDevice`] proof: the card's id, key and name.
pub fn device_body(card: &DeviceCard) -> Vec<u8> {
    [&card.id.0[..], &card.key.0, card.name.as_bytes()].concat()
}

/// The body of an [`Op::Devices`] proof.
pub const DEVICES_BODY: &[u8] = b"devices";

/// The uniqueness claim a coordinator holds while it applies a revocation of `username`'s
/// devices (one revocation of an account at a time: `RevocationInProgress`).
pub fn revocation_key(username: &str) -> String {
    format!("revoke/{username}")
}

/// The uniqueness claim that lets exactly one key update follow `identity` (made permanent
/// once it wins).
pub fn key_update_key(username: &str, identity: &[u8]) -> String {
    format!("keys/{username}/{}", hex::encode(Sha256::digest(identity)))
}

/// Wrong recovery codes are remembered this long.
pub const RECOVERY_FAILURE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Wrong recovery codes allowed before the lock-out starts.
pub const FREE_RECOVERY_FAILURES: usize = 3;

/// `SHA-256("PQ4 recovery" ‖ username ‖ code)`: what the holders keep of a recovery code (the
/// code has 160 random bits, so a plain hash does not help a guesser).
pub fn recovery_hash(username: &str, code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"PQ4 recovery");
    h.update((username.len() as u32).to_be_bytes());
    h.update(username.as_bytes());
    h.update(code.as_bytes());
    h.finalize().to_vec()
}

/// Until when recovery is locked out after the wrong codes given at `times`: the first
/// [`FREE_RECOVERY_FAILURES`] are free, then each locks it out twice as long as the one
/// before, starting at `base_ms` after the last (at most the window).
pub fn recovery_locked_until(times: &[u64], base_ms: u64) -> Option<u64> {
    let extra = times.len().checked_sub(FREE_RECOVERY_FAILURES)?;
    let last = times.iter().copied().max()?;
    let delay = base_ms
        .saturating_mul(1u64 << extra.min(20))
        .min(RECOVERY_FAILURE_WINDOW_MS);
    Some(last.saturating_add(delay))
}

/// The record key of an invite (by the hash of its code).
pub fn invite_key(hash: &[u8]) -> String {
    format!("invite/{}", hex::encode(hash))
}

/// A username: 1..=32 of `a-z 0-9 _`, starting with a letter (lower case only, so one name
/// cannot be registered twice in two cases).
pub fn valid_username(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An email address, loosely: `local@domain` without spaces, at most [`MAX_NAME_LEN`].
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= MAX_NAME_LEN
        && !local.is_empty()
        && domain.contains('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `HMAC-SHA256(key, parts…)`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut m) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// The answer to a login challenge.
pub fn login_mac(verifier: &[u8], nonce: &[u8], username: &str) -> Vec<u8> {
    mac(verifier, &[b"PQ4 login", nonce, username.as_bytes()])
}

/// The proof of a mailbox operation.
pub fn mailbox_mac(
    verifier: &[u8],
    username: &str,
    ts_ms: u64,
    nonce: &[u8],
    device: &[u8],
    body: &[u8],
) -> Vec<u8> {
    mac(
        verifier,
        &[
            b"PQ4 mailbox",
            username.as_bytes(),
            &ts_ms.to_be_bytes(),
            nonce,
            device,
            body,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_is_stable_and_bounded() {
        let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        let a = closest("user/bob", &peers, 3);
        let mut shuffled = peers.clone();
        shuffled.reverse();
        assert_eq!(a, closest("user/bob", &shuffled, 3));
        assert_eq!(a.len(), 3);
        assert_eq!(closest("user/bob", &peers[..2], 3).len(), 2);
    }

    #[test]
    fn versions_served() {
        assert!(serves(VERSION) && serves(MIN_VERSION) && !serves(VERSION + 1));
    }

    #[test]
    fn bytes_are_a_cbor_byte_string() {
        let mut out = Vec::new();
        ciborium::into_writer(&Bytes(vec![0xff; 40]), &mut out).unwrap();
        assert_eq!(out.len(), 42);
        let back: Bytes = ciborium::from_reader(&out[..]).unwrap();
        assert_eq!(back.0, vec![0xff; 40]);
    }

    #[test]
    fn the_earlier_registration_wins_and_every_holder_agrees() {
        let account = |created_ms, id: u8| Account {
            username: "carol".into(),
            email: "c@example.org".into(),
            identity: Bytes(vec![id; 113]),
            bundle: Bytes::default(),
            kdf: Kdf {
                salt: Bytes::default(),
                m_kib: 0,
                t: 0,
                p: 0,
            },
            verifier: Bytes::default(),
            sealed_keys: Bytes::default(),
            created_ms,
            key_updates: Vec::new(),
            recovery: Bytes::default(),
            recoveries: Vec::new(),
            keys_ms: 0,
        };
        let (early, late) = (account(1, 9), account(2, 1));
        assert!(early.wins_over(&late) && !late.wins_over(&early));
        let (a, b) = (account(5, 1), account(5, 2));
        assert!(a.wins_over(&b) && !b.wins_over(&a));
        assert!(!a.wins_over(&a) && a.same_registration(&a) && !a.same_registration(&b));
    }

    #[test]
    fn wrong_recovery_codes_lock_out_for_longer_and_longer() {
        assert_eq!(recovery_locked_until(&[1, 2], 100), None);
        assert_eq!(recovery_locked_until(&[1, 2, 3], 100), Some(103));
        assert_eq!(recovery_locked_until(&[1, 2, 3, 50], 100), Some(250));
        assert_eq!(recovery_locked_until(&[1, 2, 3, 50, 60], 100), Some(460));
        assert_eq!(
            recovery_locked_until(&[0; 40], u64::MAX),
            Some(RECOVERY_FAILURE_WINDOW_MS)
        );
        assert_ne!(recovery_hash("bob", "a"), recovery_hash("bo", "ba"));
    }

    #[test]
    fn names() {
        assert!(valid_username("bob_2"));
        assert!(!valid_username("Bob") && !valid_username("2bob") && !valid_username(""));
        assert!(valid_email("a@b.c") && !valid_email("a b@c.d") && !valid_email("ab.c"));
    }
}
