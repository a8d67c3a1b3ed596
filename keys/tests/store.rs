//! The key store sealed under a password, the login proof and KDF parameter validation.

mod common;

use common::rng;
use constella_keys::error::SealError;
use constella_keys::ratchet::{MAX_SKIPPED_TOTAL, PREVIOUS_REMOTE_KEYS};
use constella_keys::sealed::BlobKind;
use constella_keys::{
    GroupSession, KdfParams, KeyStore, LoginProof, PasswordKey, SealedBlob, Session,
};

fn cheap() -> KdfParams {
    KdfParams::new(64, 1, 1).unwrap()
}

#[test]
fn seal_and_open_round_trip() {
    let mut r = rng(30);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate("correct horse", cheap(), &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    let bytes = blob.to_bytes();
    let blob = SealedBlob::from_bytes(&bytes).unwrap();
    let key2 = blob.unlock("correct horse", &cheap()).unwrap();
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
    let key = PasswordKey::generate("right", cheap(), &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    let wrong = blob.unlock("wrong", &cheap()).unwrap();
    assert_eq!(
        KeyStore::open(&blob, &wrong).unwrap_err(),
        SealError::WrongPassword
    );
}

#[test]
fn tampered_blob_is_a_clear_error() {
    let mut r = rng(32);
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate("pw", cheap(), &mut r).unwrap();
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
    let key = PasswordKey::generate("pw", KdfParams::PRODUCTION, &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    assert_eq!(blob.params().unwrap(), KdfParams::PRODUCTION);
    let again = blob.unlock("pw", &KdfParams::PRODUCTION).unwrap();
    KeyStore::open(&blob, &again).unwrap();
    assert!(again.login_proof().verify(&key.login_proof()));

    // A cheap blob (say, substituted by a server) is refused under the production minimum.
    let weak_key = PasswordKey::generate("pw", cheap(), &mut r).unwrap();
    let weak = store.seal(&weak_key, &mut r).unwrap();
    assert!(matches!(
        weak.unlock("pw", &KdfParams::PRODUCTION),
        Err(SealError::InvalidParams(_))
    ));
}

#[test]
fn login_proof_depends_on_password_and_salt() {
    let p = cheap();
    let a = PasswordKey::derive("pw", [1; 16], p).unwrap().login_proof();
    let b = PasswordKey::derive("pw", [1; 16], p).unwrap().login_proof();
    let c = PasswordKey::derive("pW", [1; 16], p).unwrap().login_proof();
    let d = PasswordKey::derive("pw", [2; 16], p).unwrap().login_proof();
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
    let key = PasswordKey::generate("hunter2", cheap(), &mut r).unwrap();
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

#[test]
fn password_is_normalised_to_nfc_and_nothing_else() {
    let p = cheap();
    let key = |pw: &str| {
        *PasswordKey::derive(pw, [7; 16], p)
            .unwrap()
            .login_proof()
            .as_bytes()
    };
    // "ä" precomposed and decomposed, "Å" as U+00C5 and as ANGSTROM SIGN U+212B.
    assert_eq!(key("p\u{e4}ss \u{c5}"), key("pa\u{308}ss \u{212b}"));
    // No case folding, no trimming, no compatibility mapping (NFKC would fold "ﬁ" to "fi").
    assert_ne!(key("pass"), key("PASS"));
    assert_ne!(key("pass"), key(" pass"));
    assert_ne!(key("\u{fb01}"), key("fi"));
}

type CborMap = Vec<(ciborium::Value, ciborium::Value)>;

/// Opens `blob`, edits its plaintext map, seals the result again under `key`.
fn reseal(
    blob: &SealedBlob,
    key: &PasswordKey,
    kind: BlobKind,
    edit: impl Fn(&mut CborMap),
) -> SealedBlob {
    let plaintext = blob.open(key, kind).unwrap();
    let mut value: ciborium::Value = ciborium::from_reader(&plaintext[1..]).unwrap();
    if let ciborium::Value::Map(entries) = &mut value {
        edit(entries);
    }
    let mut bytes = vec![1u8];
    ciborium::into_writer(&value, &mut bytes).unwrap();
    SealedBlob::seal(key, kind, &bytes, &mut rng(35)).unwrap()
}

fn field<'a>(entries: &'a mut CborMap, name: &str) -> &'a mut ciborium::Value {
    &mut entries
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(name))
        .unwrap()
        .1
}

#[test]
fn sealed_state_outside_the_documented_form_is_refused() {
    use ciborium::Value as C;
    let mut r = rng(36);
    let key = PasswordKey::generate("pw", cheap(), &mut r).unwrap();

    // Key store: one-time prekeys by ascending id, each id below `next_id`.
    let store = KeyStore::generate_with_one_time_prekeys(3, &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap();
    KeyStore::open(&reseal(&blob, &key, BlobKind::KeyStore, |_| {}), &key).unwrap();
    let swapped = reseal(&blob, &key, BlobKind::KeyStore, |e| {
        if let C::Array(opks) = field(e, "opks") {
            opks.swap(0, 1);
        }
    });
    let low_next = reseal(&blob, &key, BlobKind::KeyStore, |e| {
        *field(e, "next_id") = C::Integer(3.into())
    });
    for bad in [swapped, low_next] {
        assert_eq!(KeyStore::open(&bad, &key).unwrap_err(), SealError::Contents);
    }

    // Session: `dh_remote` is null or 56 bytes and always present; bounded lists.
    let mut p = common::pair(37);
    let m = p.a.encrypt(p.alice.identity(), 1, b"x").unwrap();
    p.b.decrypt(&m, &mut r).unwrap();
    let blob = p.b.seal(&key, &mut r).unwrap();
    Session::open(&reseal(&blob, &key, BlobKind::Session, |_| {}), &key).unwrap();
    let empty_dh = reseal(&blob, &key, BlobKind::Session, |e| {
        *field(e, "dh_remote") = C::Bytes(vec![])
    });
    let no_dh = reseal(&blob, &key, BlobKind::Session, |e| {
        *field(e, "dh_remote") = C::Null
    });
    let absent_send = reseal(&blob, &key, BlobKind::Session, |e| {
        e.retain(|(k, _)| k.as_text() != Some("send"))
    });
    let many_previous = reseal(&blob, &key, BlobKind::Session, |e| {
        *field(e, "previous") = C::Array(vec![C::Bytes(vec![9; 56]); PREVIOUS_REMOTE_KEYS + 1])
    });
    let many_skipped = reseal(&blob, &key, BlobKind::Session, |e| {
        let one = C::Map(vec![
            (C::Text("dh".into()), C::Bytes(vec![9; 56])),
            (C::Text("n".into()), C::Integer(0.into())),
            (C::Text("key".into()), C::Bytes(vec![9; 32])),
        ]);
        *field(e, "skipped") = C::Array(vec![one; MAX_SKIPPED_TOTAL + 1])
    });
    for bad in [empty_dh, no_dh, absent_send, many_previous, many_skipped] {
        assert_eq!(Session::open(&bad, &key).unwrap_err(), SealError::Contents);
    }

    // Group: `seen` by ascending sender, ascending numbers below 100; `sent` at most 100.
    let mut g = GroupSession::create(p.alice.identity_public(), &[], 0, &mut r).unwrap();
    g.encrypt(p.alice.identity(), 1, b"x").unwrap();
    let blob = g.seal(&key, &mut r).unwrap();
    GroupSession::open(&reseal(&blob, &key, BlobKind::Group, |_| {}), &key).unwrap();
    let seen = |numbers: Vec<u32>| {
        let numbers = numbers.into_iter().map(|n| C::Integer(n.into())).collect();
        C::Array(vec![C::Map(vec![
            (C::Text("from".into()), C::Bytes(vec![1; 57])),
            (C::Text("n".into()), C::Array(numbers)),
        ])])
    };
    let ok = reseal(&blob, &key, BlobKind::Group, |e| {
        *field(e, "seen") = seen(vec![0, 5])
    });
    GroupSession::open(&ok, &key).unwrap();
    let unordered = reseal(&blob, &key, BlobKind::Group, |e| {
        *field(e, "seen") = seen(vec![5, 0])
    });
    let too_high = reseal(&blob, &key, BlobKind::Group, |e| {
        *field(e, "seen") = seen(vec![100])
    });
    let oversent = reseal(&blob, &key, BlobKind::Group, |e| {
        *field(e, "sent") = C::Integer(101.into())
    });
    for bad in [unordered, too_high, oversent] {
        assert_eq!(
            GroupSession::open(&bad, &key).unwrap_err(),
            SealError::Contents
        );
    }
}
