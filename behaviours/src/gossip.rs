//! What members say on the network's gossip topic, and how each message is protected.
//!
//! Every gossip message travels as an [`Envelope`]: the CBOR body encrypted and authenticated
//! with ChaCha20-Poly1305 under the [`GossipKey`] (derived from the network secret and its
//! epoch, [`crate::pq4`]), with a random 96-bit nonce and the envelope's version and epoch as
//! associated data. An outsider who subscribes to the topic sees only ciphertext. Gossipsub
//! additionally signs each message with the sender's libp2p key, and the receiver checks that
//! the signer is the node the body names. A message is accepted only if both checks pass and
//! the sender is a current member.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

use crate::network_keys::{GossipKey, Pq4Card};
use crate::settings::SettingsUpdate;

/// Version of the gossip wire format and heartbeat semantics. Nodes accept messages whose
/// version differs from theirs by at most one (see docs/protocol.md).
///
/// - 1: heartbeats and member lists.
/// - 2: adds [`Goodbye`]. A version-1 node cannot decode it and refuses it as malformed, which
///   is harmless: it then learns of the stop from the closed connection or missed heartbeats.
/// - 3: bodies encrypted (AEAD) instead of only MACed, on a topic named by the network tag;
///   records carry PQ4 cards. Versions 2 and 3 do not meet (different topics): see
///   docs/protocol.md.
/// - 4: the ring of observers: [`Silent`] verdicts, and [`Heartbeat::probe`]. A version-3 node
///   refuses a verdict as malformed and ignores the probe flag; it expects heartbeats from
///   every member, and gets them: a version-4 node sends every heartbeat to a member whose
///   last heartbeat said version 3 (docs/design.md, "The ring of observers").
pub const PROTOCOL_VERSION: u32 = 4;

/// Upper bound on an encoded envelope; anything larger is refused before decoding.
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;

/// A heartbeat: "I am alive", published every two seconds by every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's PeerId (base58 on the wire).
    #[serde(with = "crate::ids::base58")]
    pub node_id: PeerId,
    /// The sender's server name.
    pub name: String,
    /// The sender's leader priority (lower wins).
    pub priority: u32,
    /// Addresses the sender listens on, as multiaddrs.
    pub addrs: Vec<String>,
    /// Strictly increasing per sender: `incarnation << 32 | counter`, where the incarnation is
    /// bumped in the sender's state file at every start, so a restart never repeats a number.
    pub seq: u64,
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Seconds since the sender's daemon started.
    pub uptime_secs: u64,
    /// Members the sender has not heard from directly for a while (a missed heartbeat): the
    /// receiver is asked to answer with a [`Vouch`] for those it heard recently (the indirect
    /// probe of the failure detector, see [`crate::node`]). Empty on most heartbeats and then
    /// not encoded; older nodes ignore it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doubts: Vec<Doubt>,
    /// The answer to another member's doubts (sent to it alone, at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vouch: Option<Vouch>,
    /// "Answer me at once": the receiver sends one heartbeat back to the sender alone. A node
    /// that suspects it is cut off from most of the network probes every member with it (see
    /// [`crate::node`], the partition probe). Absent (false) on most heartbeats.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

/// A member a heartbeat's sender doubts (see [`Heartbeat::doubts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doubt(#[serde(with = "crate::ids::base58")] pub PeerId);

/// "Of the members you doubt, I heard these directly, this long ago": the answer to the
/// heartbeat whose sequence number is `asked`. The asker counts each as heard at the moment it
/// sent that heartbeat minus the age, never later than the voucher really heard it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouch {
    /// The `seq` of the asking heartbeat.
    pub asked: u64,
    /// The members heard directly, each with how long before this answer.
    pub heard: Vec<Heard>,
}

/// One member a [`Vouch`] speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    /// The member.
    #[serde(with = "crate::ids::base58")]
    pub node_id: PeerId,
    /// Milliseconds since the voucher last heard it directly.
    pub age_ms: u32,
}

impl Heartbeat {
    /// The incarnation half of the sequence number.
    pub fn incarnation(&self) -> u32 {
        (self.seq >> 32) as u32
    }
}

/// A goodbye: "I am stopping now", published once by a member that shuts down (SIGTERM) without
/// leaving the network. Receivers mark it offline at once and re-elect, instead of waiting for
/// missed heartbeats; it stays a member and is alive again with its next incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// The sender's PeerId (base58 on the wire).
    #[serde(with = "crate::ids::base58")]
    pub node_id: PeerId,
    /// In the sender's heartbeat sequence (`incarnation << 32 | counter`), after its last
    /// heartbeat: a replayed goodbye is refused like a replayed heartbeat, and a heartbeat of the
    /// same incarnation relayed late cannot revive the node.
    pub seq: u64,
}

impl Goodbye {
    /// The incarnation that is stopping.
    pub fn incarnation(&self) -> u32 {
        (self.seq >> 32) as u32
    }
}

/// "These members went silent": published by a member that watches them (one of their ring
/// observers, see [`crate::membership`]) when their silence passed the offline bound and no
/// other observer vouched for them. Members that do not watch them learn it only this way.
/// Each comes with the last sequence number the observer had from it: a receiver that has a
/// newer incarnation, or heard the member itself just now, keeps it alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silent {
    /// The observer that publishes it.
    #[serde(with = "crate::ids::base58")]
    pub from: PeerId,
    /// The silent members.
    pub members: Vec<SilentMember>,
}

/// One member of a [`Silent`] verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentMember {
    /// The member.
    #[serde(with = "crate::ids::base58")]
    pub node_id: PeerId,
    /// The last `seq` the observer had from it (0: none).
    pub seq: u64,
}

/// One entry of the member list as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// PeerId (base58 on the wire and in the state file).
    #[serde(with = "crate::ids::base58")]
    pub node_id: PeerId,
    /// Server name, unique among current members.
    pub name: String,
    /// Public address `host:port` given at init or join.
    pub addr: String,
    /// Leader priority (lower wins).
    pub priority: u32,
    /// Version of this record; the higher version wins a merge.
    pub version: u64,
    /// True once the node has left: a tombstone that keeps anti-entropy from resurrecting it.
    pub left: bool,
    /// The node's PQ4 card (its prekey bundle signed by its libp2p key). Absent for records
    /// written before PQ4 and for tombstones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Pq4Card>,
    /// How many times this node was admitted before this record's admission (0 for the first).
    /// A fresh admission through a new invite counts one more, which supersedes a tombstone of
    /// any version; within one admission a tombstone is final (see `membership::supersedes`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub admission: u32,
    /// Set on the tombstone of an operator's removal (Unix seconds of the removal), as opposed
    /// to a leave: only an invite issued after it may admit the node again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<u64>,
    /// The chain of custody of the card's PQ4 identity since this admission (seed 004 §11): each
    /// key update signed by the identity before it. A member accepts a card with another
    /// identity only through a chain from one it trusted
    /// ([`crate::network_keys::custody_holds`]). At most [`MAX_KEY_UPDATES`] kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_updates: Vec<KeyUpdateBytes>,
    /// A node behind NAT is dialled through these relayed addresses (`…/p2p/<relay>/p2p-circuit`
    /// multiaddrs, one per public member holding a reservation for it; docs/nat.md). Empty for
    /// a node reached at its public address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
}

/// How many relayed addresses a record keeps: a node reserves on at most two relays.
pub const MAX_RELAYS: usize = 2;

/// How many key updates a record keeps (the most recent): a member further behind than that
/// cannot follow the chain and keeps the identity it trusted until the node is invited again.
pub const MAX_KEY_UPDATES: usize = 8;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One encoded [`constella_keys::KeyUpdate`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpdateBytes(#[serde(with = "crate::ids::bytes")] pub Vec<u8>);

impl std::fmt::Debug for KeyUpdateBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyUpdate({} bytes)", self.0.len())
    }
}

/// A member list, published on every join and leave and every 30 s (anti-entropy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterUpdate {
    /// PeerId of the publisher (base58 on the wire).
    #[serde(with = "crate::ids::base58")]
    pub from: PeerId,
    /// The records the publisher knows, tombstones included.
    pub records: Vec<MemberRecord>,
}

/// A new network secret, sealed to each remaining member's PQ4 card (seed 004 §8: removal always
/// rotates, and the removed member gets no copy). Travels on gossip under the previous epoch's
/// key, and in sync answers, so a member that was offline catches up when it returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The member that made the new secret (base58 on the wire).
    #[serde(with = "crate::ids::base58")]
    pub from: PeerId,
    /// The new epoch (the previous one plus one).
    pub epoch: u64,
    /// One sealed copy per member ([`crate::network_keys::Purpose::Rotation`]).
    pub sealed: Vec<SealedFor>,
    /// When it was made (Unix seconds, the maker's clock): the periodic rotation counts from it.
    #[serde(default)]
    pub made_at: u64,
}

impl Rotation {
    /// Whether this rotation wins over `other` for the same epoch: concurrent rotations resolve
    /// to the one from the smaller node id, on every node alike (seed 004 §13, first-wins with a
    /// deterministic tiebreak).
    pub fn wins_over(&self, other_epoch: u64, other_from: Option<&PeerId>) -> bool {
        self.epoch > other_epoch
            || (self.epoch == other_epoch
                && other_from.is_some_and(|o| self.from.to_bytes() < o.to_bytes()))
    }
}

/// A rotated secret sealed to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFor {
    /// The member it is sealed to.
    #[serde(with = "crate::ids::base58")]
    pub to: PeerId,
    /// The PQ4 one-shot message.
    #[serde(with = "crate::ids::bytes")]
    pub blob: Vec<u8>,
}

/// The bodies that can travel on the gossip topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipBody {
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`RosterUpdate`].
    Roster(RosterUpdate),
    /// See [`SettingsUpdate`].
    Settings(SettingsUpdate),
    /// See [`Goodbye`] (protocol version 2).
    Goodbye(Goodbye),
    /// See [`Rotation`] (protocol version 3).
    Rotation(Rotation),
    /// See [`Silent`] (protocol version 4).
    Silent(Silent),
}

impl GossipBody {
    /// The PeerId that claims to have written this body.
    pub fn author(&self) -> PeerId {
        match self {
            GossipBody::Heartbeat(hb) => hb.node_id,
            GossipBody::Roster(roster) => roster.from,
            GossipBody::Settings(settings) => settings.from,
            GossipBody::Goodbye(goodbye) => goodbye.node_id,
            GossipBody::Rotation(rotation) => rotation.from,
            GossipBody::Silent(silent) => silent.from,
        }
    }
}

/// `{v, e, n, ct}`: version, secret epoch, nonce, and the encrypted body with its tag.
#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    e: u64,
    #[serde(with = "crate::ids::bytes")]
    n: Vec<u8>,
    #[serde(with = "crate::ids::bytes")]
    ct: Vec<u8>,
}

/// Associated data of a gossip ciphertext: domain, version and epoch.
fn associated_data(version: u32, epoch: u64) -> Vec<u8> {
    [
        &b"constella/gossip/v3\0"[..],
        &version.to_be_bytes(),
        &epoch.to_be_bytes(),
    ]
    .concat()
}

/// Why a gossip message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GossipError {
    /// Larger than [`MAX_GOSSIP_BYTES`].
    #[error("gossip message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not a well-formed envelope or body.
    #[error("malformed gossip message")]
    Malformed,
    /// The envelope's protocol version is more than one away from ours.
    #[error("gossip protocol version {0} is not compatible with {PROTOCOL_VERSION}")]
    IncompatibleVersion(u32),
    /// The ciphertext does not authenticate under our gossip key (not a member, or altered).
    #[error("gossip message fails authentication")]
    BadMac,
    /// Sealed under another epoch of the network secret than ours.
    #[error("gossip message is for secret epoch {0}")]
    OtherEpoch(u64),
}

/// Encodes, encrypts and authenticates a body for publishing.
pub fn seal(key: &GossipKey, body: &GossipBody) -> Vec<u8> {
    seal_as(PROTOCOL_VERSION, key, body)
}

/// [`seal`] with an explicit envelope version (tests of the compatibility rule).
fn seal_as(version: u32, key: &GossipKey, body: &GossipBody) -> Vec<u8> {
    let plain = zeroize::Zeroizing::new(to_cbor(body));
    let mut nonce = [0u8; 12];
    rand::fill(&mut nonce);
    let cipher = ChaCha20Poly1305::new(key.bytes().into());
    let aad = associated_data(version, key.epoch());
    let ct = match cipher.encrypt(
        &nonce.into(),
        Payload {
            msg: &plain,
            aad: &aad,
        },
    ) {
        Ok(ct) => ct,
        // Only inputs beyond 256 GiB fail; a body is bounded far below.
        Err(_) => unreachable!("ChaCha20-Poly1305 refused a gossip body"),
    };
    to_cbor(&Envelope {
        v: version,
        e: key.epoch(),
        n: nonce.to_vec(),
        ct,
    })
}

/// [`open_any`] with one key.
pub fn open(key: &GossipKey, bytes: &[u8]) -> Result<GossipBody, GossipError> {
    open_any(std::slice::from_ref(key), bytes)
}

/// Checks, decrypts and decodes a received message with the key of its epoch among `keys` (the
/// current epoch and the one before, during a rotation). The ciphertext is authenticated before
/// the body is parsed, so unauthenticated input reaches only the (small, bounded) envelope
/// decoder.
pub fn open_any(keys: &[GossipKey], bytes: &[u8]) -> Result<GossipBody, GossipError> {
    if bytes.len() > MAX_GOSSIP_BYTES {
        return Err(GossipError::TooLarge(bytes.len()));
    }
    let envelope: Envelope = ciborium::from_reader(bytes).map_err(|_| GossipError::Malformed)?;
    if envelope.v.abs_diff(PROTOCOL_VERSION) > 1 {
        return Err(GossipError::IncompatibleVersion(envelope.v));
    }
    let Some(key) = keys.iter().find(|k| k.epoch() == envelope.e) else {
        return Err(GossipError::OtherEpoch(envelope.e));
    };
    let nonce: [u8; 12] = envelope
        .n
        .as_slice()
        .try_into()
        .map_err(|_| GossipError::Malformed)?;
    let cipher = ChaCha20Poly1305::new(key.bytes().into());
    let aad = associated_data(envelope.v, envelope.e);
    let plain = cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &envelope.ct,
                aad: &aad,
            },
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| GossipError::BadMac)?;
    ciborium::from_reader(plain.as_slice()).map_err(|_| GossipError::Malformed)
}

fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing plain structs into a Vec cannot fail: there is no I/O error and no map with
    // non-string keys.
    if let Err(error) = ciborium::into_writer(value, &mut out) {
        unreachable!("CBOR encoding into memory failed: {error}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::NetworkSecret;
    use proptest::prelude::*;

    fn key(byte: u8) -> GossipKey {
        GossipKey::derive(&NetworkSecret::from_bytes([byte; 32]), 0)
    }

    #[test]
    fn the_body_is_not_readable_and_another_epoch_is_refused() {
        let sealed = seal(&key(7), &heartbeat());
        assert!(!sealed.windows(8).any(|w| w == b"delta-01"));
        let other = GossipKey::derive(&NetworkSecret::from_bytes([7; 32]), 1);
        assert_eq!(open(&other, &sealed), Err(GossipError::OtherEpoch(0)));
    }

    /// A fixed node id, so that bodies compare equal across calls.
    fn example_id() -> PeerId {
        "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
            .parse()
            .unwrap()
    }

    fn heartbeat() -> GossipBody {
        GossipBody::Heartbeat(Heartbeat {
            node_id: example_id(),
            name: "delta-01".into(),
            priority: 10,
            addrs: vec!["/ip4/127.0.0.1/tcp/4747".into()],
            seq: (3 << 32) | 7,
            protocol_version: PROTOCOL_VERSION,
            uptime_secs: 42,
            doubts: Vec::new(),
            vouch: None,
            probe: false,
        })
    }

    #[test]
    fn round_trip() {
        let secret = key(7);
        let sealed = seal(&secret, &heartbeat());
        assert_eq!(open(&secret, &sealed), Ok(heartbeat()));
        let GossipBody::Heartbeat(hb) = heartbeat() else {
            unreachable!()
        };
        assert_eq!(hb.incarnation(), 3);
    }

    #[test]
    fn a_roster_with_cards_round_trips() {
        let key_pair = libp2p::identity::Keypair::generate_ed25519();
        let store =
            constella_keys::KeyStore::generate_with_one_time_prekeys(0, &mut rand::rng()).unwrap();
        let card = Pq4Card::new(&key_pair, &store).unwrap();
        let id = key_pair.public().to_peer_id();
        // Four cards: the encrypted body is larger than ciborium's 4 KiB scratch buffer.
        let record = MemberRecord {
            node_id: id,
            name: "a".into(),
            addr: "127.0.0.1:1".into(),
            priority: 1,
            version: 2,
            left: false,
            card: Some(card),
            admission: 0,
            removed_at: None,
            key_updates: Vec::new(),
            relays: Vec::new(),
        };
        let roster = GossipBody::Roster(RosterUpdate {
            from: id,
            records: vec![record; 4],
        });
        let sealed = seal(&key(7), &roster);
        assert_eq!(open(&key(7), &sealed), Ok(roster));
    }

    #[test]
    fn goodbye_round_trip() {
        let secret = key(7);
        let goodbye = GossipBody::Goodbye(Goodbye {
            node_id: example_id(),
            seq: (5 << 32) | 9,
        });
        assert_eq!(open(&secret, &seal(&secret, &goodbye)), Ok(goodbye.clone()));
        assert_eq!(goodbye.author(), example_id());
        let GossipBody::Goodbye(g) = goodbye else {
            unreachable!()
        };
        assert_eq!(g.incarnation(), 5);
    }

    #[test]
    fn versions_one_apart_are_accepted_and_further_ones_refused() {
        let secret = key(7);
        for version in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION, PROTOCOL_VERSION + 1] {
            assert_eq!(
                open(&secret, &seal_as(version, &secret, &heartbeat())),
                Ok(heartbeat()),
                "version {version}"
            );
        }
        for version in [PROTOCOL_VERSION - 2, PROTOCOL_VERSION + 2] {
            assert_eq!(
                open(&secret, &seal_as(version, &secret, &heartbeat())),
                Err(GossipError::IncompatibleVersion(version))
            );
        }
    }

    #[test]
    fn wrong_secret_is_refused() {
        let sealed = seal(&key(7), &heartbeat());
        assert_eq!(open(&key(8), &sealed), Err(GossipError::BadMac));
    }

    #[test]
    fn no_flipped_bit_forges_a_different_body() {
        // Some flips only re-encode the envelope's framing (a text key as a byte string), which
        // CBOR decoders may accept; what must never happen is a different body being accepted.
        let secret = key(7);
        let sealed = seal(&secret, &heartbeat());
        let mut refused = 0;
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            match open(&secret, &bad) {
                Ok(body) => assert_eq!(body, heartbeat(), "bit {i} flipped forged a body"),
                Err(_) => refused += 1,
            }
        }
        assert!(
            refused > sealed.len() * 8 * 9 / 10,
            "only {refused} flips refused"
        );
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let secret = key(7);
        let big = vec![0u8; MAX_GOSSIP_BYTES + 1];
        assert_eq!(
            open(&secret, &big),
            Err(GossipError::TooLarge(MAX_GOSSIP_BYTES + 1))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let secret = key(7);
            prop_assert!(open(&secret, &bytes).is_err());
        }
    }
}
