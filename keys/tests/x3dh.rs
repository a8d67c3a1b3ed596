//! The hybrid X3DH handshake and every refusal it must make.

mod common;

use common::rng;
use constella_keys::error::{KeyError, X3dhError};
use constella_keys::x3dh::{self, Role};
use constella_keys::{KeyStore, PreKeyBundle};

#[test]
fn both_sides_agree_with_and_without_one_time_prekey() {
    let mut r = rng(1);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    for opk in [Some(bob.one_time_prekey_ids()[5]), None] {
        let bundle = PreKeyBundle::from_bytes(&bob.bundle(opk).to_bytes()).unwrap();
        let verified = bundle.verify().unwrap();
        assert_eq!(verified.one_time_prekey_id(), opk);
        let (msg, sa) = x3dh::initiate(alice.identity(), &verified, &mut r).unwrap();
        let msg = x3dh::InitialMessage::from_bytes(&msg.to_bytes()).unwrap();
        let sb = x3dh::respond(&mut bob, &msg).unwrap();
        assert_eq!(sa.as_bytes(), sb.as_bytes());
        assert_eq!(sa.role(), Role::Initiator);
        assert_eq!(sb.role(), Role::Responder);
        assert_eq!(sb.remote_identity(), alice.identity_public());
        assert_eq!(sa.remote_identity(), bob.identity_public());
    }
    assert_eq!(bob.one_time_prekey_ids().len(), 99);
}

#[test]
fn reused_one_time_prekey_is_refused() {
    let mut r = rng(2);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    let opk = bob.one_time_prekey_ids()[0];
    let bundle = bob.bundle(Some(opk)).verify().unwrap();
    let (msg, _) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    x3dh::respond(&mut bob, &msg).unwrap();
    assert!(!bob.one_time_prekey_ids().contains(&opk));
    // The same message again, and a fresh handshake against the same (now stale) bundle.
    assert_eq!(
        x3dh::respond(&mut bob, &msg).unwrap_err(),
        X3dhError::OneTimePreKeyUsed(opk)
    );
    let (msg2, _) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    assert_eq!(
        x3dh::respond(&mut bob, &msg2).unwrap_err(),
        X3dhError::OneTimePreKeyUsed(opk)
    );
}

#[test]
fn bad_signed_prekey_signature_is_refused() {
    let mut r = rng(3);
    let bob = KeyStore::generate(&mut r).unwrap();
    let mut bundle = bob.bundle(None);
    bundle.signed_prekey.signature[10] ^= 1;
    assert_eq!(
        bundle.verify().unwrap_err(),
        KeyError::BadSignature("signed prekey")
    );
    let mut bundle = bob.bundle(None);
    bundle.signed_prekey.key[3] ^= 1;
    assert_eq!(
        bundle.verify().unwrap_err(),
        KeyError::BadSignature("signed prekey")
    );
}

#[test]
fn unsigned_or_swapped_kem_key_is_refused() {
    let mut r = rng(4);
    let bob = KeyStore::generate(&mut r).unwrap();
    let mallory = KeyStore::generate(&mut r).unwrap();

    // Unsigned: the relay strips the signature.
    let mut bundle = bob.bundle(None);
    bundle.kem_prekey.signature = [0u8; 114];
    assert_eq!(
        bundle.verify().unwrap_err(),
        KeyError::BadSignature("KEM prekey")
    );

    // Swapped: the relay substitutes its own (validly self-signed) KEM key.
    let mut bundle = bob.bundle(None);
    bundle.kem_prekey = mallory.bundle(None).kem_prekey;
    assert_eq!(
        bundle.verify().unwrap_err(),
        KeyError::BadSignature("KEM prekey")
    );

    // Stripped entirely: the bundle no longer decodes.
    let bytes = bob.bundle(None).to_bytes();
    let mut value: ciborium::Value = ciborium::from_reader(&bytes[1..]).unwrap();
    if let ciborium::Value::Map(entries) = &mut value {
        entries.retain(|(k, _)| k.as_text() != Some("kk"));
    }
    let mut stripped = vec![1u8];
    ciborium::into_writer(&value, &mut stripped).unwrap();
    assert!(PreKeyBundle::from_bytes(&stripped).is_err());
}

#[test]
fn identity_binding_is_checked() {
    let mut r = rng(5);
    let bob = KeyStore::generate(&mut r).unwrap();
    let mallory = KeyStore::generate(&mut r).unwrap();
    let mut bundle = bob.bundle(None);
    // Bob's signing key with Mallory's DH key.
    bundle.identity.dh = *mallory.identity_public().dh_key_bytes();
    assert_eq!(
        bundle.verify().unwrap_err(),
        KeyError::BadSignature("identity binding")
    );
}

#[test]
fn low_order_keys_are_refused() {
    let mut r = rng(6);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    let bundle = bob.bundle(None).verify().unwrap();
    let (mut msg, _) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    // The all-zero u-coordinate is a low-order point: DH with it is non-contributory.
    msg.ephemeral = [0u8; 56];
    assert_eq!(
        x3dh::respond(&mut bob, &msg).unwrap_err(),
        X3dhError::Key(KeyError::NonContributory)
    );
}

#[test]
fn misrouted_and_unknown_prekeys_are_refused() {
    let mut r = rng(7);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    let mut carol = KeyStore::generate(&mut r).unwrap();
    let bundle = bob.bundle(None).verify().unwrap();
    let (msg, _) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    assert_eq!(
        x3dh::respond(&mut carol, &msg).unwrap_err(),
        X3dhError::WrongRecipient
    );
    let mut m = msg.clone();
    m.signed_prekey_id = 9;
    assert_eq!(
        x3dh::respond(&mut bob, &m).unwrap_err(),
        X3dhError::UnknownSignedPreKey(9)
    );
    let mut m = msg.clone();
    m.kem_prekey_id = 9;
    assert_eq!(
        x3dh::respond(&mut bob, &m).unwrap_err(),
        X3dhError::UnknownKemPreKey(9)
    );
    let mut m = msg;
    m.initiator.binding[0] ^= 1;
    assert_eq!(
        x3dh::respond(&mut bob, &m).unwrap_err(),
        X3dhError::Key(KeyError::BadSignature("identity binding"))
    );
}

#[test]
fn tampered_kem_ciphertext_gives_a_different_secret() {
    let mut r = rng(8);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    let bundle = bob.bundle(None).verify().unwrap();
    let (mut msg, sa) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    msg.kem_ciphertext[0] ^= 1;
    // ML-KEM rejects implicitly; the transcript binding makes the secrets differ.
    let sb = x3dh::respond(&mut bob, &msg).unwrap();
    assert_ne!(sa.as_bytes(), sb.as_bytes());
}
