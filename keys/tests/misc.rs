//! Key update, fingerprints and history transfer.

mod common;

use common::rng;
use constella_keys::error::DecodeError;
use constella_keys::error::{HistoryError, KeyUpdateError};
use constella_keys::history::{DEVICE_ID_LEN, TRANSFER_VALIDITY_MS};
use constella_keys::key_update::verify_chain;
use constella_keys::{Fingerprint, HistoryMasterKey, KeyStore, KeyUpdate, SealedHistory};

#[test]
fn key_update_chain_of_custody() {
    let mut r = rng(80);
    let v0 = KeyStore::generate(&mut r).unwrap();
    let (v1, u1) = KeyUpdate::create(v0.identity(), &mut r).unwrap();
    let (v2, u2) = KeyUpdate::create(v1.identity(), &mut r).unwrap();
    let u1 = KeyUpdate::from_bytes(&u1.to_bytes()).unwrap();
    let verified = u1.verify(v0.identity_public()).unwrap();
    assert_eq!(verified.identity(), v1.identity_public());
    assert_eq!(verified.one_time_prekeys().len(), 100);
    assert_eq!(
        verify_chain(v0.identity_public(), &[u1.clone(), u2.clone()]).unwrap(),
        *v2.identity_public()
    );
    // Out of order, or starting from the wrong identity: the chain is broken.
    assert_eq!(
        verify_chain(v0.identity_public(), std::slice::from_ref(&u2)).unwrap_err(),
        KeyUpdateError::BrokenChain
    );
    // An update signed by someone else.
    let mallory = KeyStore::generate(&mut r).unwrap();
    let (_, forged) = KeyUpdate::create(mallory.identity(), &mut r).unwrap();
    assert_eq!(
        forged.verify(v0.identity_public()).unwrap_err(),
        KeyUpdateError::BrokenChain
    );
    // Tampering with any new key breaks the old identity's signature.
    let bytes = u1.to_bytes();
    for i in [300usize, 900, 2000, bytes.len() - 400] {
        let mut t = bytes.clone();
        t[i] ^= 1;
        if let Ok(t) = KeyUpdate::from_bytes(&t) {
            assert!(t.verify(v0.identity_public()).is_err(), "byte {i}");
        }
    }
}

#[test]
fn fingerprints() {
    let mut r = rng(81);
    let a = KeyStore::generate(&mut r).unwrap();
    let b = KeyStore::generate(&mut r).unwrap();
    let fa = Fingerprint::new("alice", a.identity_public());
    let s = fa.to_string();
    let groups: Vec<_> = s.split(' ').collect();
    assert_eq!(groups.len(), 12);
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
    );
    assert!(fa.matches(&Fingerprint::new("alice", a.identity_public())));
    assert!(!fa.matches(&Fingerprint::new("alice", b.identity_public())));
    assert!(!fa.matches(&Fingerprint::new("alicf", a.identity_public())));
}

#[test]
fn fingerprint_digits_are_specified() {
    // Known digest → known digits, so the display rule cannot drift.
    let mut r = rng(82);
    let a = KeyStore::generate(&mut r).unwrap();
    let f = Fingerprint::new("u", a.identity_public());
    let d = f.as_bytes();
    let mut expected = Vec::new();
    for i in 0..6 {
        let mut v = 0u64;
        for b in &d[5 * i..5 * i + 5] {
            v = v << 8 | u64::from(*b);
        }
        let v = v % 10_000_000_000;
        expected.push(format!("{:05} {:05}", v / 100_000, v % 100_000));
    }
    assert_eq!(f.to_string(), expected.join(" "));
}

#[test]
fn history_transfer_is_bound_to_device_and_time() {
    let mut r = rng(83);
    let (new_device, other_device) = ([1u8; DEVICE_ID_LEN], [2u8; DEVICE_ID_LEN]);
    let master = HistoryMasterKey::generate(&mut r);
    let at = 10 * TRANSFER_VALIDITY_MS;
    let sealed = SealedHistory::seal(&master, &new_device, b"chat log", at, &mut r).unwrap();
    let sealed = SealedHistory::from_bytes(&sealed.to_bytes()).unwrap();
    assert_eq!(
        &sealed.open(&master, &new_device, at + 1_000).unwrap()[..],
        b"chat log"
    );
    assert_eq!(
        sealed.open(&master, &other_device, at).unwrap_err(),
        HistoryError::Decryption
    );
    let other = HistoryMasterKey::generate(&mut r);
    assert_eq!(
        sealed.open(&other, &new_device, at).unwrap_err(),
        HistoryError::Decryption
    );
    // Valid while |now − at| ≤ one hour: the boundary itself still opens.
    for now in [at + TRANSFER_VALIDITY_MS, at - TRANSFER_VALIDITY_MS] {
        sealed.open(&master, &new_device, now).unwrap();
    }
    for now in [at + TRANSFER_VALIDITY_MS + 1, at - TRANSFER_VALIDITY_MS - 1] {
        assert_eq!(
            sealed.open(&master, &new_device, now).unwrap_err(),
            HistoryError::Expired
        );
    }
    let mut bytes = sealed.to_bytes();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let t = SealedHistory::from_bytes(&bytes).unwrap();
    assert_eq!(
        t.open(&master, &new_device, at).unwrap_err(),
        HistoryError::Decryption
    );
    assert_eq!(format!("{master:?}"), "HistoryMasterKey(<redacted>)");
}

#[test]
fn key_update_lists_one_time_prekeys_by_ascending_id() {
    let mut r = rng(84);
    let v0 = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    let (v1, u) = KeyUpdate::create_with_one_time_prekeys(v0.identity(), 3, &mut r).unwrap();
    let ids: Vec<u32> = u
        .verify(v0.identity_public())
        .unwrap()
        .one_time_prekeys()
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, v1.one_time_prekey_ids());
    assert_eq!(ids, [1, 2, 3]);
    // The same update with two prekeys swapped: refused by the decoder, before any signature.
    let bytes = u.to_bytes();
    let mut value: ciborium::Value = ciborium::from_reader(&bytes[1..]).unwrap();
    if let ciborium::Value::Map(entries) = &mut value {
        for (k, v) in entries.iter_mut() {
            if let (Some("opks"), ciborium::Value::Array(opks)) = (k.as_text(), v) {
                opks.swap(0, 1);
            }
        }
    }
    let mut swapped = vec![1u8];
    ciborium::into_writer(&value, &mut swapped).unwrap();
    assert_eq!(
        KeyUpdate::from_bytes(&swapped).unwrap_err(),
        DecodeError::InvalidField("opks")
    );
}

#[test]
fn fingerprint_user_id_is_nfc_and_digits_use_six_chunks() {
    let mut r = rng(85);
    let a = KeyStore::generate(&mut r).unwrap();
    // "zoë" precomposed and decomposed give one fingerprint.
    assert!(
        Fingerprint::new("zo\u{eb}", a.identity_public())
            .matches(&Fingerprint::new("zoe\u{308}", a.identity_public()))
    );
    // 60 digits (bytes 30 and 31 of the digest are not shown: see
    // `fingerprint_digits_are_specified` for the rule chunk by chunk).
    let f = Fingerprint::new("alice", a.identity_public());
    assert_eq!(
        f.to_string().chars().filter(char::is_ascii_digit).count(),
        60
    );
}
