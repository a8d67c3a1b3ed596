//! The long-term identity: an Ed448 signing key and an X448 Diffie-Hellman key, bound
//! together by an Ed448 signature over the X448 public key.
//!
//! Two keys are needed because no maintained Rust library offers E521 (which the seed uses
//! for both roles), and converting one Ed448 key into X448 is neither supported by the library
//! nor a pattern we want to reproduce. The binding signature stops anyone from pairing a
//! victim's signing key with their own DH key.

use core::fmt;

use ed448_goldilocks_plus::{
    CompressedEdwardsY, EdwardsPoint, Signature, SigningKey, VerifyingKey, x448,
};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::primitives::x448_public;

/// Length of an Ed448 public key.
pub const SIGNING_PUBLIC_LEN: usize = 57;
/// Length of an X448 public key.
pub const DH_PUBLIC_LEN: usize = 56;
/// Length of an Ed448 signature.
pub const SIGNATURE_LEN: usize = 114;
/// Length of an identity public key as used in KDF inputs and fingerprints: `ed448 ‖ x448`.
pub const IDENTITY_LEN: usize = SIGNING_PUBLIC_LEN + DH_PUBLIC_LEN;

/// Ed448 contexts (RFC 8032 `ctx`), one per kind of signed object, so that a signature made
/// for one purpose can never be replayed as another.
pub(crate) mod ctx {
    pub(crate) const IDENTITY_BINDING: &[u8] = b"PQ4 identity binding";
    pub(crate) const SIGNED_PREKEY: &[u8] = b"PQ4 signed prekey";
    pub(crate) const KEM_PREKEY: &[u8] = b"PQ4 KEM prekey";
    pub(crate) const RATCHET_MESSAGE: &[u8] = b"PQ4 ratchet message";
    pub(crate) const GROUP_MESSAGE: &[u8] = b"PQ4 group message";
    pub(crate) const GROUP_CONTROL: &[u8] = b"PQ4 group control";
    pub(crate) const KEY_UPDATE_OLD: &[u8] = b"PQ4 key update by old identity";
    pub(crate) const KEY_UPDATE_NEW: &[u8] = b"PQ4 key update by new identity";
}

/// Our identity key pair. Zeroized on drop (both inner keys are `ZeroizeOnDrop`).
pub struct IdentityKeyPair {
    signing: SigningKey,
    dh: x448::StaticSecret,
    public: IdentityPublicKey,
}

// Both secret fields zeroize themselves on drop (`SigningKey`, `x448::StaticSecret`).
impl zeroize::ZeroizeOnDrop for IdentityKeyPair {}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl IdentityKeyPair {
    /// Generates a fresh identity.
    pub fn generate(rng: &mut impl CryptoRng) -> Result<Self, KeyError> {
        let mut sign_seed = Zeroizing::new([0u8; 57]);
        rng.fill_bytes(sign_seed.as_mut_slice());
        let mut dh_seed = Zeroizing::new([0u8; 56]);
        rng.fill_bytes(dh_seed.as_mut_slice());
        Self::from_secret_parts(&sign_seed, &dh_seed)
    }

    /// Rebuilds an identity from its secret parts (the Ed448 seed and the X448 scalar).
    pub(crate) fn from_secret_parts(sign_seed: &[u8; 57], dh: &[u8; 56]) -> Result<Self, KeyError> {
        let mut secret = ed448_goldilocks_plus::SecretKey::default();
        secret.copy_from_slice(sign_seed);
        let signing = SigningKey::from(&secret);
        zeroize::Zeroize::zeroize(secret.as_mut_slice());
        let dh = x448::StaticSecret::from(*dh);
        let dh_public = x448_public(&dh);
        let verifying = signing.verifying_key();
        let binding = sign_with(
            &signing,
            ctx::IDENTITY_BINDING,
            &[verifying.as_bytes(), &dh_public],
        )?;
        let public = IdentityPublicKey {
            signing: verifying,
            dh: dh_public,
            binding,
        };
        Ok(Self {
            signing,
            dh,
            public,
        })
    }

    /// The secret parts, for sealing: `ed448 seed (57) ‖ x448 scalar (56)`.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; IDENTITY_LEN]> {
        let mut out = Zeroizing::new([0u8; IDENTITY_LEN]);
        out[..57].copy_from_slice(self.signing.as_bytes());
        out[57..].copy_from_slice(self.dh.as_bytes());
        out
    }

    /// The public half.
    pub fn public(&self) -> &IdentityPublicKey {
        &self.public
    }

    /// Signs `parts` (concatenated) under the Ed448 context `context`.
    pub(crate) fn sign(&self, context: &[u8], parts: &[&[u8]]) -> Result<[u8; 114], KeyError> {
        sign_with(&self.signing, context, parts)
    }

    /// Signs a group control record (a group's membership record or a leave request; the
    /// caller domain-separates the two inside `bytes`) under the context "PQ4 group control".
    pub fn sign_group_control(&self, bytes: &[u8]) -> Result<[u8; SIGNATURE_LEN], KeyError> {
        self.sign(ctx::GROUP_CONTROL, &[bytes])
    }

    pub(crate) fn dh_secret(&self) -> &x448::StaticSecret {
        &self.dh
    }
}

fn sign_with(
    key: &SigningKey,
    context: &[u8],
    parts: &[&[u8]],
) -> Result<[u8; SIGNATURE_LEN], KeyError> {
    let msg = parts.concat();
    key.sign_ctx(context, &msg)
        .map(|s| s.to_bytes())
        .map_err(|_| KeyError::Encoding)
}

/// True if `bytes` is the canonical encoding of a point of the prime-order subgroup.
///
/// `ed448-goldilocks-plus` 0.18 decodes the y coordinate modulo p and ignores the low seven
/// bits of the last byte, so several byte strings decode to one point; RFC 8032 §5.2.3 refuses
/// all but one. Re-encoding and comparing restores that rule (its `decompress` already refuses
/// points off the curve and points with a torsion component).
fn is_canonical_point(bytes: &[u8; SIGNING_PUBLIC_LEN]) -> bool {
    Option::<EdwardsPoint>::from(CompressedEdwardsY(*bytes).decompress())
        .is_some_and(|point| point.compress().to_bytes() == *bytes)
}

/// Parses an Ed448 public key: on the curve, in the prime-order subgroup, not the identity,
/// canonically encoded.
pub(crate) fn parse_verifying_key(
    bytes: &[u8; SIGNING_PUBLIC_LEN],
    what: &'static str,
) -> Result<VerifyingKey, KeyError> {
    if !is_canonical_point(bytes) {
        return Err(KeyError::InvalidPublicKey(what));
    }
    VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey(what))
}

/// Verifies an Ed448 signature made with [`IdentityKeyPair::sign`]: pure Ed448 with context,
/// `R` canonical and torsion-free, `0 < S < L` (the library's check), and the cofactorless
/// equation `[S]B = R + [k]A`, which for torsion-free `R` and `A` equals the cofactored one.
pub(crate) fn verify_with(
    key: &VerifyingKey,
    context: &[u8],
    parts: &[&[u8]],
    signature: &[u8; SIGNATURE_LEN],
    what: &'static str,
) -> Result<(), KeyError> {
    let mut r = [0u8; SIGNING_PUBLIC_LEN];
    r.copy_from_slice(&signature[..SIGNING_PUBLIC_LEN]);
    if !is_canonical_point(&r) {
        return Err(KeyError::BadSignature(what));
    }
    let sig = Signature::from_bytes(signature).map_err(|_| KeyError::BadSignature(what))?;
    let msg = parts.concat();
    key.verify_ctx(&sig, context, &msg)
        .map_err(|_| KeyError::BadSignature(what))
}

/// A verified identity public key: the Ed448 key, the X448 key and the binding signature,
/// checked when the value was built. Holding one means the binding holds.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityPublicKey {
    signing: VerifyingKey,
    dh: [u8; DH_PUBLIC_LEN],
    binding: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.signing.as_bytes();
        write!(
            f,
            "IdentityPublicKey({:02x}{:02x}{:02x}{:02x}…)",
            b[0], b[1], b[2], b[3]
        )
    }
}

impl core::hash::Hash for IdentityPublicKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.to_bytes().hash(state);
    }
}

impl IdentityPublicKey {
    /// `ed448 public (57) ‖ x448 public (56)`: the form used in KDF inputs and fingerprints.
    pub fn to_bytes(&self) -> [u8; IDENTITY_LEN] {
        let mut out = [0u8; IDENTITY_LEN];
        out[..57].copy_from_slice(self.signing.as_bytes());
        out[57..].copy_from_slice(&self.dh);
        out
    }

    /// The Ed448 public key.
    pub fn signing_key_bytes(&self) -> [u8; SIGNING_PUBLIC_LEN] {
        let mut out = [0u8; SIGNING_PUBLIC_LEN];
        out.copy_from_slice(self.signing.as_bytes());
        out
    }

    /// The X448 public key.
    pub fn dh_key_bytes(&self) -> &[u8; DH_PUBLIC_LEN] {
        &self.dh
    }

    /// Verifies a signature by this identity.
    pub(crate) fn verify(
        &self,
        context: &[u8],
        parts: &[&[u8]],
        signature: &[u8; SIGNATURE_LEN],
        what: &'static str,
    ) -> Result<(), KeyError> {
        verify_with(&self.signing, context, parts, signature, what)
    }

    /// Verifies a signature made by [`IdentityKeyPair::sign_group_control`].
    pub fn verify_group_control(
        &self,
        bytes: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), KeyError> {
        self.verify(
            ctx::GROUP_CONTROL,
            &[bytes],
            signature,
            "group control record",
        )
    }

    /// The wire form, carrying the binding signature.
    pub fn to_wire(&self) -> IdentityWire {
        let mut signing = [0u8; SIGNING_PUBLIC_LEN];
        signing.copy_from_slice(self.signing.as_bytes());
        IdentityWire {
            signing,
            dh: self.dh,
            binding: self.binding,
        }
    }

    /// Encodes the wire form as a standalone message.
    pub fn encode(&self) -> Vec<u8> {
        crate::wire::encode(&self.to_wire())
    }

    /// Decodes and verifies a standalone identity.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let wire: IdentityWire = crate::wire::decode(bytes, 512)
            .map_err(|_| KeyError::InvalidPublicKey("identity encoding"))?;
        wire.verify()
    }
}

/// An identity public key as carried on the wire; [`IdentityWire::verify`] turns it into an
/// [`IdentityPublicKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityWire {
    /// Ed448 public key.
    #[serde(rename = "sig", with = "crate::wire::fixed")]
    pub signing: [u8; SIGNING_PUBLIC_LEN],
    /// X448 public key.
    #[serde(rename = "dh", with = "crate::wire::fixed")]
    pub dh: [u8; DH_PUBLIC_LEN],
    /// Ed448 signature binding the X448 key to the Ed448 key.
    #[serde(rename = "bind", with = "crate::wire::fixed")]
    pub binding: [u8; SIGNATURE_LEN],
}

impl IdentityWire {
    /// Checks the Ed448 key encoding and the binding signature.
    pub fn verify(&self) -> Result<IdentityPublicKey, KeyError> {
        let signing = parse_verifying_key(&self.signing, "identity signing key")?;
        verify_with(
            &signing,
            ctx::IDENTITY_BINDING,
            &[&self.signing, &self.dh],
            &self.binding,
            "identity binding",
        )?;
        Ok(IdentityPublicKey {
            signing,
            dh: self.dh,
            binding: self.binding,
        })
    }

    /// Rebuilds an identity from storage that is itself authenticated (a sealed blob), so the
    /// binding signature is not verified again.
    pub(crate) fn trusted(&self) -> Result<IdentityPublicKey, KeyError> {
        let signing = parse_verifying_key(&self.signing, "identity signing key")?;
        Ok(IdentityPublicKey {
            signing,
            dh: self.dh,
            binding: self.binding,
        })
    }
}
