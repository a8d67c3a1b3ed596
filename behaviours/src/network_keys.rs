//! PQ4 in the network: each node's card (its PQ4 prekey bundle signed by its libp2p key),
//! fingerprints, the members-only gossip key, the network tag that names the gossip topic and
//! the DHT, and messages sealed from one node to another with the hybrid handshake.
//!
//! - A [`Pq4Card`] travels in the node's [`MemberRecord`](crate::gossip::MemberRecord). Its
//!   signature by the node's libp2p key binds the PQ4 identity to the PeerId, so no member can
//!   swap another's card; [`crate::membership::Membership::merge`] refuses a record whose card
//!   is not signed by the node it describes.
//! - The fingerprint is PQ4's (docs/pq4.md §16) with the node's PeerId as the user id:
//!   `SHA-256(UTF-8(peer id base58) ‖ ed448 ‖ x448)`, 60 digits.
//! - [`seal_to`] / [`open_from`] carry secrets (the Join answer, a rotated network secret) under
//!   X448 + ML-KEM-1024 ([`constella_keys::oneshot`]): someone who recorded the noise (X25519)
//!   transport and later breaks it learns nothing of them.

use std::fmt;

use constella_keys::identity::IdentityWire;
use constella_keys::{
    Fingerprint, IdentityPublicKey, KeyStore, KeyUpdate, PreKeyBundle, VerifiedBundle,
};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::gossip::MemberRecord;
use crate::secret::NetworkSecret;

/// Domain of the libp2p signature over a card's bundle.
const CARD_DOMAIN: &[u8] = b"constella/pq4-card/v1\0";

/// Why a PQ4 operation failed. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Pq4Error {
    /// The card is not signed by the node it is said to belong to.
    #[error("the PQ4 card is not signed by node {0}")]
    CardSignature(PeerId),
    /// The bundle in a card does not decode or its signatures do not verify.
    #[error("the PQ4 bundle is invalid: {0}")]
    Bundle(String),
    /// Signing a card with the libp2p key failed.
    #[error("cannot sign the PQ4 card: {0}")]
    Sign(String),
    /// Sealing or opening failed (altered, or not for this node or purpose).
    #[error("sealed message: {0}")]
    Sealed(#[from] constella_keys::OneShotError),
    /// The plaintext of a sealed message is not what its purpose says.
    #[error("sealed message has unexpected contents")]
    Contents,
}

/// A node's PQ4 prekey bundle, signed by its libp2p key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pq4Card {
    /// The encoded [`PreKeyBundle`] (identity, signed prekey, ML-KEM-1024 prekey).
    #[serde(with = "crate::ids::bytes")]
    pub bundle: Vec<u8>,
    /// The node's libp2p signature over `CARD_DOMAIN ‖ bundle`.
    #[serde(with = "crate::ids::bytes")]
    pub sig: Vec<u8>,
}

impl fmt::Debug for Pq4Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pq4Card({} bytes)", self.bundle.len())
    }
}

impl Pq4Card {
    /// The card of the node holding `key` and `store`.
    pub fn new(key: &Keypair, store: &KeyStore) -> Result<Self, Pq4Error> {
        let bundle = store.bundle(None).to_bytes();
        let sig = key
            .sign(&[CARD_DOMAIN, &bundle].concat())
            .map_err(|e| Pq4Error::Sign(e.to_string()))?;
        Ok(Self { bundle, sig })
    }

    /// Whether `node`'s libp2p key signed this card. Only PeerIds that embed their public key
    /// (Ed25519, as every Constella node's) can be checked; others never match.
    pub fn signed_by(&self, node: &PeerId) -> bool {
        let multihash = node.as_ref();
        if multihash.code() != 0 {
            return false;
        }
        PublicKey::try_decode_protobuf(multihash.digest())
            .is_ok_and(|key| key.verify(&[CARD_DOMAIN, &self.bundle].concat(), &self.sig))
    }

    /// The bundle, every signature in it checked (three Ed448 verifications, about 5 ms).
    pub fn verified_bundle(&self) -> Result<VerifiedBundle, Pq4Error> {
        PreKeyBundle::from_bytes(&self.bundle)
            .map_err(|e| Pq4Error::Bundle(e.to_string()))?
            .verify()
            .map_err(|e| Pq4Error::Bundle(e.to_string()))
    }

    /// The PQ4 identity in the card, its binding signature checked.
    pub fn identity(&self) -> Result<IdentityPublicKey, Pq4Error> {
        PreKeyBundle::from_bytes(&self.bundle)
            .map_err(|e| Pq4Error::Bundle(e.to_string()))?
            .identity
            .verify()
            .map_err(|e| Pq4Error::Bundle(e.to_string()))
    }

    /// The 60-digit fingerprint of `node` with this card, or `None` if the card is not valid
    /// for it.
    pub fn fingerprint(&self, node: &PeerId) -> Option<String> {
        if !self.signed_by(node) {
            return None;
        }
        self.identity().ok().map(|id| fingerprint(node, &id))
    }
}

/// `ed448 ‖ x448` of an identity as announced (not verified).
fn wire_bytes(identity: &IdentityWire) -> Vec<u8> {
    [&identity.signing[..], &identity.dh[..]].concat()
}

/// The identity in a card's bundle as announced (not verified), `None` if it does not decode.
fn announced_identity(card: &Pq4Card) -> Option<Vec<u8>> {
    PreKeyBundle::from_bytes(&card.bundle)
        .ok()
        .map(|bundle| wire_bytes(&bundle.identity))
}

/// Whether `incoming` may replace `current` (the record of the same node this member holds) as
/// far as the PQ4 identity goes: seed 004 §11, a new identity is accepted only with a chain of
/// key updates, each signed by the identity before it, from the identity this member trusts.
///
/// - A later admission (the node was invited again) starts a new chain: the admitting member
///   took its card in the Join.
/// - The same identity (or no card on either side) needs nothing.
/// - Otherwise the incoming chain must start at the identity of `current`'s card, or — for a
///   rival update of the same version (two holders of the key updating at once, §13.2) — at the
///   identity that `current`'s last update replaced. A key replaced earlier than that can forge
///   nothing.
///
/// Costs a few Ed448 verifications, and only when the identity changes.
pub fn custody_holds(current: &MemberRecord, incoming: &MemberRecord) -> bool {
    if incoming.admission != current.admission {
        return true;
    }
    let (Some(ours), Some(theirs)) = (&current.card, &incoming.card) else {
        return true;
    };
    if ours.bundle == theirs.bundle {
        return true;
    }
    let (Some(trusted), Some(announced)) = (announced_identity(ours), announced_identity(theirs))
    else {
        return false;
    };
    if trusted == announced {
        return true;
    }
    let mut anchors = vec![trusted];
    if incoming.version == current.version
        && let Some(last) = current.key_updates.last()
        && let Ok(last) = KeyUpdate::from_bytes(&last.0)
    {
        anchors.push(wire_bytes(last.old_identity()));
    }
    let Ok(chain) = incoming
        .key_updates
        .iter()
        .map(|u| KeyUpdate::from_bytes(&u.0))
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let Some(start) = chain
        .iter()
        .position(|u| anchors.contains(&wire_bytes(u.old_identity())))
    else {
        return false;
    };
    let Ok(anchor) = chain[start].old_identity().verify() else {
        return false;
    };
    constella_keys::key_update::verify_chain(&anchor, &chain[start..])
        .is_ok_and(|end| end.to_bytes()[..] == announced[..])
}

/// The fingerprint of `node` with the PQ4 identity `identity`, as 12 groups of 5 digits.
pub fn fingerprint(node: &PeerId, identity: &IdentityPublicKey) -> String {
    Fingerprint::new(&node.to_base58(), identity).digits()
}

/// What a sealed message is for; bound into its key, so one purpose cannot be replayed as
/// another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The secrets a seed hands an admitted joiner.
    JoinSecrets,
    /// A new network secret after a rotation.
    Rotation,
    /// The bot token, fetched by a member whose token is out of date (`GetBotToken`).
    BotToken,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::JoinSecrets => b"constella/join-secrets/v1\0",
            Purpose::Rotation => b"constella/rotation/v1\0",
            Purpose::BotToken => b"constella/bot-token/v1\0",
        }
    }
}

fn context(purpose: Purpose, recipient: &PeerId) -> Vec<u8> {
    [purpose.label(), &recipient.to_bytes()].concat()
}

/// Seals `plaintext` from the holder of `ours` to the node `to` whose card is `card` (checked
/// here: signed by `to`, every bundle signature valid).
pub fn seal_to(
    ours: &KeyStore,
    to: &PeerId,
    card: &Pq4Card,
    purpose: Purpose,
    plaintext: &[u8],
) -> Result<Vec<u8>, Pq4Error> {
    if !card.signed_by(to) {
        return Err(Pq4Error::CardSignature(*to));
    }
    let bundle = card.verified_bundle()?;
    let sealed = constella_keys::oneshot::seal(
        ours.identity(),
        &bundle,
        &context(purpose, to),
        plaintext,
        &mut rand::rng(),
    )?;
    Ok(sealed.to_bytes())
}

/// Opens a message sealed to this node (`local`, holding `ours`) for `purpose`. Returns the
/// sender's PQ4 identity (compare it with the sender's card) and the plaintext.
pub fn open_from(
    ours: &mut KeyStore,
    local: &PeerId,
    purpose: Purpose,
    sealed: &[u8],
) -> Result<(IdentityPublicKey, Zeroizing<Vec<u8>>), Pq4Error> {
    let message = constella_keys::oneshot::SealedMessage::from_bytes(sealed)?;
    Ok(constella_keys::oneshot::open(
        ours,
        &message,
        &context(purpose, local),
    )?)
}

/// The key that encrypts gossip bodies: derived from the network secret and its epoch, so a
/// rotation to a new epoch gives a new key.
#[derive(Clone)]
pub struct GossipKey {
    key: Zeroizing<[u8; 32]>,
    epoch: u64,
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey(epoch {}, <redacted>)", self.epoch)
    }
}

impl GossipKey {
    /// `HKDF-SHA256(salt = "constella", ikm = secret, info = "constella/gossip-key/v3\0" ‖
    /// epoch as u64 BE)`.
    pub fn derive(secret: &NetworkSecret, epoch: u64) -> Self {
        let key = secret.derive_key(&[b"constella/gossip-key/v3\0", &epoch.to_be_bytes()]);
        Self { key, epoch }
    }

    /// The epoch of the secret it was derived from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

/// The network tag: 32 hex digits of a hash keyed by the network secret. It names the gossip
/// topic and the Kademlia protocol instead of the network id, so an outsider who connects
/// learns neither the network id nor a name it could subscribe to. It is fixed when the network
/// is created (or first upgraded) and kept across rotations, so a rotation changes no protocol
/// name.
pub fn network_tag(secret: &NetworkSecret) -> String {
    hex::encode(&secret.derive_key(&[b"constella/network-tag/v1\0"])[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_is_bound_to_its_node_and_seals_to_it() {
        let mut rng = rand::rng();
        let key_a = Keypair::generate_ed25519();
        let key_b = Keypair::generate_ed25519();
        let (a, b) = (key_a.public().to_peer_id(), key_b.public().to_peer_id());
        let store_a = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        let mut store_b = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        let card_b = Pq4Card::new(&key_b, &store_b).unwrap();
        assert!(card_b.signed_by(&b) && !card_b.signed_by(&a));
        let digits = card_b.fingerprint(&b).unwrap();
        assert_eq!(digits.len(), 60 + 11);
        assert!(card_b.fingerprint(&a).is_none());
        // A card for `b` claimed for `a` is refused before anything is sealed.
        assert!(seal_to(&store_a, &a, &card_b, Purpose::Rotation, b"s").is_err());
        let sealed = seal_to(&store_a, &b, &card_b, Purpose::Rotation, b"s").unwrap();
        let (sender, plain) = open_from(&mut store_b, &b, Purpose::Rotation, &sealed).unwrap();
        assert_eq!(&plain[..], b"s");
        assert_eq!(&sender, store_a.identity_public());
        assert!(open_from(&mut store_b, &b, Purpose::JoinSecrets, &sealed).is_err());
        // The card survives CBOR and JSON.
        let json = serde_json::to_string(&card_b).unwrap();
        assert_eq!(serde_json::from_str::<Pq4Card>(&json).unwrap(), card_b);
        let mut cbor = Vec::new();
        ciborium::into_writer(&card_b, &mut cbor).unwrap();
        assert!(cbor.len() < card_b.bundle.len() + 200);
        assert_eq!(
            ciborium::from_reader::<Pq4Card, _>(&cbor[..]).unwrap(),
            card_b
        );
    }

    #[test]
    fn a_sealed_bot_token_holds_no_token_and_opens_only_for_its_member_and_purpose() {
        let mut rng = rand::rng();
        let key_b = Keypair::generate_ed25519();
        let b = key_b.public().to_peer_id();
        let c = Keypair::generate_ed25519().public().to_peer_id();
        let store_a = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        let mut store_b = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        let mut store_c = KeyStore::generate_with_one_time_prekeys(0, &mut rng).unwrap();
        let card_b = Pq4Card::new(&key_b, &store_b).unwrap();
        let token = b"123456789:AAE-secret-bot-token-for-the-test";
        let sealed = seal_to(&store_a, &b, &card_b, Purpose::BotToken, token).unwrap();
        assert!(!sealed.windows(token.len()).any(|w| w == token));
        assert!(!sealed.windows(8).any(|w| w == &token[10..18]));
        assert!(open_from(&mut store_c, &c, Purpose::BotToken, &sealed).is_err());
        assert!(open_from(&mut store_b, &b, Purpose::Rotation, &sealed).is_err());
        let (sender, plain) = open_from(&mut store_b, &b, Purpose::BotToken, &sealed).unwrap();
        assert_eq!(&plain[..], token);
        assert_eq!(&sender, store_a.identity_public());
    }

    #[test]
    fn gossip_keys_and_tags_depend_on_secret_and_epoch() {
        let s1 = NetworkSecret::from_bytes([1; 32]);
        let s2 = NetworkSecret::from_bytes([2; 32]);
        assert_ne!(
            GossipKey::derive(&s1, 0).bytes(),
            GossipKey::derive(&s1, 1).bytes()
        );
        assert_ne!(
            GossipKey::derive(&s1, 0).bytes(),
            GossipKey::derive(&s2, 0).bytes()
        );
        assert_ne!(network_tag(&s1), network_tag(&s2));
        assert_eq!(network_tag(&s1).len(), 32);
        assert!(!format!("{:?}", GossipKey::derive(&s1, 0)).contains("01"));
    }
}
