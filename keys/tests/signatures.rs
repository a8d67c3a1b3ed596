//! Ed448 verification strictness (docs/pq4.md §2, "Ed448"): what `ed448-goldilocks-plus`
//! accepts on its own, and what PQ4 refuses on top of it.

mod common;

use common::rng;
use constella_keys::KeyStore;
use constella_keys::error::KeyError;
use ed448_goldilocks_plus::{Signature, VerifyingKey};

/// The group order L, 57 bytes little-endian.
const ORDER_LE: &str = "f34458ab92c27823558fc58d72c26c219036d6ae49db4ec4e923ca7cffffffffffffffffffffffffffffffffffffffffffffffffffffff3f00";
/// p − 1 (the y coordinate of (0, −1), a point of order 2), 57 bytes little-endian.
const P_MINUS_ONE_LE: &str = "fefffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffffffffffffffffffffffffffffffffffffffffffffffffff00";

fn add_le(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut carry = 0u16;
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let s = u16::from(*x) + u16::from(*y) + carry;
            carry = s >> 8;
            s as u8
        })
        .collect()
}

#[test]
fn non_canonical_public_key_is_refused_although_the_library_accepts_it() {
    let mut r = rng(60);
    let alice = KeyStore::generate(&mut r).unwrap();
    let wire = alice.identity_public().to_wire();
    let mut bent = wire.clone();
    // Byte 56 holds only the sign of x in its top bit; its low seven bits must be zero.
    bent.signing[56] |= 0x01;
    // The library decodes both byte strings to the same point...
    let lib = VerifyingKey::from_bytes(&bent.signing).expect("library accepts it");
    assert_eq!(
        lib.to_edwards(),
        VerifyingKey::from_bytes(&wire.signing)
            .unwrap()
            .to_edwards()
    );
    // ...PQ4 refuses the second encoding before looking at any signature.
    assert_eq!(
        bent.verify().unwrap_err(),
        KeyError::InvalidPublicKey("identity signing key")
    );
    wire.verify().unwrap();
}

#[test]
fn small_order_public_key_is_refused() {
    let mut r = rng(61);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut wire = alice.identity_public().to_wire();
    wire.signing = hex::decode(P_MINUS_ONE_LE).unwrap().try_into().unwrap();
    assert!(VerifyingKey::from_bytes(&wire.signing).is_err());
    assert_eq!(
        wire.verify().unwrap_err(),
        KeyError::InvalidPublicKey("identity signing key")
    );
}

#[test]
fn signature_with_s_plus_order_or_bent_r_is_refused() {
    let mut r = rng(62);
    let alice = KeyStore::generate(&mut r).unwrap();
    let wire = alice.identity_public().to_wire();
    // S + L: the same scalar mod L, not canonical. The library refuses it itself.
    let mut malleated = wire.clone();
    let s_plus_l = add_le(&wire.binding[57..], &hex::decode(ORDER_LE).unwrap());
    malleated.binding[57..].copy_from_slice(&s_plus_l);
    assert!(Signature::from_bytes(&malleated.binding).is_err());
    assert_eq!(
        malleated.verify().unwrap_err(),
        KeyError::BadSignature("identity binding")
    );
    // R with a low bit of its last byte set: the library parses it, PQ4 refuses it.
    let mut bent = wire.clone();
    bent.binding[56] |= 0x01;
    assert!(Signature::from_bytes(&bent.binding).is_ok());
    assert_eq!(
        bent.verify().unwrap_err(),
        KeyError::BadSignature("identity binding")
    );
    // S = 0 is refused too.
    let mut zero = wire;
    zero.binding[57..].fill(0);
    assert_eq!(
        zero.verify().unwrap_err(),
        KeyError::BadSignature("identity binding")
    );
}
