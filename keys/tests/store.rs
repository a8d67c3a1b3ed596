//! The key store sealed under a password, the login proof and KDF parameter validation.

mod common;

use common::rng;
use constella_keys::error::SealError;
use constella_keys::{KdfParams, KeyStore, LoginProof, PasswordKey, SealedBlob};

fn cheap() -> KdfParams {
    KdfParams::new(64, 1, 1).unwrap()
}

#[test]
fn seal_and_open_round_trip() {
    let mut r = rng(30);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate(b"correct horse", cheap(), &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    let bytes = blob.to_bytes();
    let blob = SealedBlob::from_bytes(&bytes).unwrap();
    let key2 = blob.unlock(b"correct horse", &cheap()).unwrap();
    let opened = KeyStore::open(&blob, &key2).unwrap();
    assert_eq!(opened.identity_public(), store.identity_public());
    assert_eq!(opened.one_time_prekey_ids(), store.one_time_prekey_ids());
    assert_eq!(opened.bundle(Some(1)), store.bundle(Some(1)));
    assert_eq!(opened.one_time_prekey_ids().len(), 100);
}

#[test]
fn wrong_password_is_a_clear_error() {
    let mut r = rng(31);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate(b"right", cheap(), &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    let wrong = blob.unlock(b"wrong", &cheap()).unwrap();
    assert_eq!(
        KeyStore::open(&blob, &wrong).unwrap_err(),
        SealError::WrongPassword
    );
}

#[test]
fn tampered_blob_is_a_clear_error() {
    let mut r = rng(32);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate(b"pw", cheap(), &mut r).unwrap();
    let bytes = store.seal(&key, &mut r).unwrap().to_bytes();
    // Flip a byte in the ciphertext (the end of the encoding).
    let mut t = bytes.clone();
    let last = t.len() - 1;
    t[last] ^= 0x80;
    let blob = SealedBlob::from_bytes(&t).unwrap();
    assert_eq!(
        KeyStore::open(&blob, &key).unwrap_err(),
        SealError::Tampered
    );
    // Truncation, trailing bytes, another version: decode errors, never panics.
    assert!(SealedBlob::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        SealedBlob::from_bytes(&longer),
        Err(SealError::Decode(_))
    ));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(
        SealedBlob::from_bytes(&v2).unwrap_err(),
        SealError::Decode(constella_keys::DecodeError::UnsupportedVersion(2))
    );
}

#[test]
fn production_parameters_work_and_downgrade_is_refused() {
    // The one test that pays for the real Argon2id cost (m = 64 MiB, t = 3, p = 4).
    let mut r = rng(33);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate(b"pw", KdfParams::PRODUCTION, &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    assert_eq!(blob.params().unwrap(), KdfParams::PRODUCTION);
    let again = blob.unlock(b"pw", &KdfParams::PRODUCTION).unwrap();
    KeyStore::open(&blob, &again).unwrap();
    assert!(again.login_proof().verify(&key.login_proof()));

    // A cheap blob (say, substituted by a server) is refused under the production minimum.
    let weak_key = PasswordKey::generate(b"pw", cheap(), &mut r).unwrap();
    let weak = store.seal(&weak_key, &mut r).unwrap();
    assert!(matches!(
        weak.unlock(b"pw", &KdfParams::PRODUCTION),
        Err(SealError::InvalidParams(_))
    ));
}

#[test]
fn login_proof_depends_on_password_and_salt() {
    let p = cheap();
    let a = PasswordKey::derive(b"pw", [1; 16], p)
        .unwrap()
        .login_proof();
    let b = PasswordKey::derive(b"pw", [1; 16], p)
        .unwrap()
        .login_proof();
    let c = PasswordKey::derive(b"pW", [1; 16], p)
        .unwrap()
        .login_proof();
    let d = PasswordKey::derive(b"pw", [2; 16], p)
        .unwrap()
        .login_proof();
    assert!(a.verify(&b));
    assert!(!a.verify(&c));
    assert!(!a.verify(&d));
    assert!(a.verify(&LoginProof::from_bytes(*b.as_bytes())));
    assert_eq!(format!("{a:?}"), "LoginProof(<redacted>)");
}

#[test]
fn kdf_parameters_are_validated() {
    assert!(KdfParams::new(64, 1, 1).is_ok());
    assert!(KdfParams::new(64, 0, 1).is_err());
    assert!(KdfParams::new(64, 1, 0).is_err());
    assert!(KdfParams::new(16, 1, 4).is_err());
    assert!(KdfParams::new(KdfParams::MAX_M_KIB + 1, 1, 1).is_err());
    assert!(KdfParams::new(1024, KdfParams::MAX_T + 1, 1).is_err());
    assert!(KdfParams::new(1024, 1, 17).is_err());
    assert_eq!(
        KdfParams::PRODUCTION,
        KdfParams::new(64 * 1024, 3, 4).unwrap()
    );
}

#[test]
fn debug_output_is_redacted() {
    let mut r = rng(34);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate(b"hunter2", cheap(), &mut r).unwrap();
    let secret_hex: String = store
        .identity()
        .public()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dbg = format!("{store:?} {key:?}");
    assert!(!dbg.contains("hunter2"));
    assert!(!dbg.contains(&secret_hex));
    assert!(dbg.contains("IdentityKeyPair"));
}
