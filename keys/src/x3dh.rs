//! The hybrid X3DH handshake (X448 + ML-KEM-1024), kept separate from the ratchet.
//!
//! ```text
//! DH1 = X448(IK_A, SPK_B)   DH2 = X448(EK_A, IK_B)   DH3 = X448(EK_A, SPK_B)
//! DH4 = X448(EK_A, OPK_B)   (only when a one-time prekey is used)
//! (kem_ct, kem_ss) = ML-KEM-1024.Encaps(KK_B)
//! SK = HKDF-SHA512(salt = "X3DH", ikm = F ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ kem_ss,
//!                  info = IK_A ‖ IK_B ‖ EK_A ‖ SPK_B [‖ OPK_B] ‖ KK_B ‖ kem_ct, L = 32)
//! ```
//! `F` is 57 bytes of 0xFF, as PQXDH prefixes for X448, so the KDF input never starts like a
//! valid X448 output used elsewhere. The info binds both identities, every prekey and the KEM
//! ciphertext, so the secret commits to the whole transcript.

use core::fmt;

use ed448_goldilocks_plus::x448;
use ml_kem::Encapsulate;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::bundle::VerifiedBundle;
use crate::error::{DecodeError, X3dhError};
use crate::identity::{DH_PUBLIC_LEN, IdentityKeyPair, IdentityPublicKey, IdentityWire};
use crate::prekeys::{KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN};
use crate::primitives::{hkdf_sha512, x448_dh, x448_public};
use crate::store::KeyStore;
use crate::wire;

/// HKDF salt of the handshake.
const SALT: &[u8] = b"X3DH";
/// Largest initial message accepted by the decoder.
pub const MAX_INITIAL_MESSAGE_LEN: usize = 4096;

/// The initiator's handshake message: `version ‖ CBOR{ik, to, ek, spk, opk, kk, ct}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMessage {
    /// The initiator's identity.
    #[serde(rename = "ik")]
    pub initiator: IdentityWire,
    /// The responder's identity bytes (`ed448 ‖ x448`), so a misrouted message is refused.
    #[serde(rename = "to", with = "wire::fixed")]
    pub recipient: [u8; 113],
    /// The initiator's ephemeral X448 key.
    #[serde(rename = "ek", with = "wire::fixed")]
    pub ephemeral: [u8; DH_PUBLIC_LEN],
    /// Id of the signed prekey used.
    #[serde(rename = "spk")]
    pub signed_prekey_id: u32,
    /// Id of the one-time prekey used, if any.
    #[serde(rename = "opk", deserialize_with = "wire::nullable::deserialize")]
    pub one_time_prekey_id: Option<u32>,
    /// Id of the KEM prekey used.
    #[serde(rename = "kk")]
    pub kem_prekey_id: u32,
    /// The ML-KEM-1024 ciphertext.
    #[serde(rename = "ct", with = "wire::fixed_box")]
    pub kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

impl InitialMessage {
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_with_capacity(self, 2048)
    }

    /// Decodes a message (shape only; [`respond`] verifies it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, MAX_INITIAL_MESSAGE_LEN)
    }
}

/// Which side of the handshake produced a [`SessionSecret`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Alice: fetched the bundle and sent the initial message.
    Initiator,
    /// Bob: owned the bundle and received the initial message.
    Responder,
}

/// The handshake's output: the 32-byte shared secret, both identities, and what the ratchet
/// needs to start (the responder's signed prekey, public for Alice, secret for Bob).
pub struct SessionSecret {
    pub(crate) secret: Zeroizing<[u8; 32]>,
    pub(crate) role: Role,
    pub(crate) local: IdentityPublicKey,
    pub(crate) remote: IdentityPublicKey,
    pub(crate) remote_ratchet: Option<[u8; DH_PUBLIC_LEN]>,
    pub(crate) local_ratchet: Option<x448::StaticSecret>,
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSecret")
            .field("role", &self.role)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

// Every secret field zeroizes itself on drop (`Zeroizing`, `x448::StaticSecret`).
impl ZeroizeOnDrop for SessionSecret {}

impl SessionSecret {
    /// The shared secret `SK`; exposed for known-answer tests and for callers that derive
    /// other keys from the handshake.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.secret
    }
    /// Our side.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The peer's identity, verified during the handshake.
    pub fn remote_identity(&self) -> &IdentityPublicKey {
        &self.remote
    }
}

/// Runs the initiator's side against a verified bundle.
pub fn initiate(
    our: &IdentityKeyPair,
    bundle: &VerifiedBundle,
    rng: &mut impl CryptoRng,
) -> Result<(InitialMessage, SessionSecret), X3dhError> {
    let mut ek_bytes = Zeroizing::new([0u8; 56]);
    rng.fill_bytes(ek_bytes.as_mut_slice());
    let ek = x448::StaticSecret::from(*ek_bytes);
    let ek_pub = x448_public(&ek);

    let their_ik = &bundle.identity;
    let spk = &bundle.signed_prekey.key;
    let dh1 = x448_dh(our.dh_secret(), spk)?;
    let dh2 = x448_dh(&ek, their_ik.dh_key_bytes())?;
    let dh3 = x448_dh(&ek, spk)?;
    let dh4 = match &bundle.one_time_prekey {
        Some(opk) => Some(x448_dh(&ek, &opk.key)?),
        None => None,
    };
    let (ct, ss) = bundle.kem_key.encapsulate_with_rng(rng);
    let ss = Zeroizing::new(<[u8; 32]>::from(ss));
    let mut kem_ct = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
    kem_ct.copy_from_slice(&ct);

    let secret = derive_secret(
        &Dh {
            dh1: &dh1,
            dh2: &dh2,
            dh3: &dh3,
            dh4: dh4.as_deref(),
            kem_ss: &ss,
        },
        &Transcript {
            ik_a: &our.public().to_bytes(),
            ik_b: &their_ik.to_bytes(),
            ek_a: &ek_pub,
            spk_b: spk,
            opk_b: bundle.one_time_prekey.as_ref().map(|k| &k.key),
            kk_b: &bundle.kem_prekey.key,
            kem_ct: &kem_ct,
        },
    );

    let message = InitialMessage {
        initiator: our.public().to_wire(),
        recipient: their_ik.to_bytes(),
        ephemeral: ek_pub,
        signed_prekey_id: bundle.signed_prekey.id,
        one_time_prekey_id: bundle.one_time_prekey.as_ref().map(|k| k.id),
        kem_prekey_id: bundle.kem_prekey.id,
        kem_ciphertext: kem_ct,
    };
    let session = SessionSecret {
        secret,
        role: Role::Initiator,
        local: our.public().clone(),
        remote: their_ik.clone(),
        remote_ratchet: Some(*spk),
        local_ratchet: None,
    };
    Ok((message, session))
}

/// Runs the responder's side. The one-time prekey named by the message is removed from the
/// store on success, so a second message naming it is refused.
pub fn respond(store: &mut KeyStore, message: &InitialMessage) -> Result<SessionSecret, X3dhError> {
    let our_ik = store.identity_public().clone();
    if message.recipient != our_ik.to_bytes() {
        return Err(X3dhError::WrongRecipient);
    }
    let their_ik = message.initiator.verify()?;
    let spk = store.signed_prekey();
    if spk.id() != message.signed_prekey_id {
        return Err(X3dhError::UnknownSignedPreKey(message.signed_prekey_id));
    }
    let kk = store.kem_prekey();
    if kk.id() != message.kem_prekey_id {
        return Err(X3dhError::UnknownKemPreKey(message.kem_prekey_id));
    }
    let opk = match message.one_time_prekey_id {
        Some(id) => Some(
            store
                .one_time_prekey(id)
                .ok_or(X3dhError::OneTimePreKeyUsed(id))?,
        ),
        None => None,
    };

    let dh1 = x448_dh(spk.secret(), their_ik.dh_key_bytes())?;
    let dh2 = x448_dh(store.identity().dh_secret(), &message.ephemeral)?;
    let dh3 = x448_dh(spk.secret(), &message.ephemeral)?;
    let dh4 = match opk {
        Some(k) => Some(x448_dh(k.secret(), &message.ephemeral)?),
        None => None,
    };
    let ss = kk.decapsulate(&message.kem_ciphertext);

    let secret = derive_secret(
        &Dh {
            dh1: &dh1,
            dh2: &dh2,
            dh3: &dh3,
            dh4: dh4.as_deref(),
            kem_ss: &ss,
        },
        &Transcript {
            ik_a: &their_ik.to_bytes(),
            ik_b: &our_ik.to_bytes(),
            ek_a: &message.ephemeral,
            spk_b: &spk.public().key,
            opk_b: opk.map(|k| &k.public().key),
            kk_b: &kk.public().key,
            kem_ct: &message.kem_ciphertext,
        },
    );
    let local_ratchet = spk.secret().clone();

    if let Some(id) = message.one_time_prekey_id {
        store.consume_one_time_prekey(id);
    }
    Ok(SessionSecret {
        secret,
        role: Role::Responder,
        local: our_ik,
        remote: their_ik,
        remote_ratchet: None,
        local_ratchet: Some(local_ratchet),
    })
}

struct Dh<'a> {
    dh1: &'a [u8; 56],
    dh2: &'a [u8; 56],
    dh3: &'a [u8; 56],
    dh4: Option<&'a [u8; 56]>,
    kem_ss: &'a [u8; 32],
}

struct Transcript<'a> {
    ik_a: &'a [u8; 113],
    ik_b: &'a [u8; 113],
    ek_a: &'a [u8; 56],
    spk_b: &'a [u8; 56],
    opk_b: Option<&'a [u8; 56]>,
    kk_b: &'a [u8; KEM_PUBLIC_LEN],
    kem_ct: &'a [u8; KEM_CIPHERTEXT_LEN],
}

fn derive_secret(dh: &Dh<'_>, t: &Transcript<'_>) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(57 + 4 * 56 + 32));
    ikm.extend_from_slice(&[0xFF; 57]);
    ikm.extend_from_slice(dh.dh1);
    ikm.extend_from_slice(dh.dh2);
    ikm.extend_from_slice(dh.dh3);
    if let Some(dh4) = dh.dh4 {
        ikm.extend_from_slice(dh4);
    }
    ikm.extend_from_slice(dh.kem_ss);
    let opk: &[u8] = t.opk_b.map_or(&[], |k| &k[..]);
    hkdf_sha512::<32>(
        SALT,
        &ikm,
        &[t.ik_a, t.ik_b, t.ek_a, t.spk_b, opk, t.kk_b, t.kem_ct],
    )
}
