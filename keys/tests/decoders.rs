//! Every decoder of wire input, over random and mutated bytes: errors, never panics. The
//! fuzz targets in `keys/fuzz` do the same with coverage guidance; this runs in CI.

mod common;

use common::{pair, rng};
use constella_keys::error::DecodeError;
use constella_keys::x3dh::InitialMessage;
use constella_keys::{
    Content, Envelope, GroupKeyShare, GroupMessage, GroupSession, IdentityPublicKey, KdfParams,
    KeyUpdate, PasswordKey, PreKeyBundle, RatchetMessage, SealedBlob, SealedHistory,
};
use proptest::prelude::*;

/// Runs every decoder on `bytes`; none may panic.
fn decode_all(bytes: &[u8]) {
    let _ = PreKeyBundle::from_bytes(bytes).map(|b| b.verify());
    let _ = InitialMessage::from_bytes(bytes);
    let _ = RatchetMessage::from_bytes(bytes);
    let _ = GroupMessage::from_bytes(bytes);
    let _ = GroupKeyShare::from_bytes(bytes);
    let _ = KeyUpdate::from_bytes(bytes);
    let _ = SealedBlob::from_bytes(bytes);
    let _ = SealedHistory::from_bytes(bytes);
    let _ = IdentityPublicKey::decode(bytes);
    let _ = Envelope::from_bytes(bytes);
    let _ = Content::from_bytes(bytes);
}

/// One valid encoding of each wire type.
fn samples() -> Vec<Vec<u8>> {
    let mut p = pair(90);
    let mut r = rng(91);
    let m = p.a.encrypt(p.alice.identity(), 1, b"hello").unwrap();
    let mut g = GroupSession::create(p.alice.identity_public(), &[], 0, &mut r).unwrap();
    let gm = g.encrypt(p.alice.identity(), 1, b"hi").unwrap();
    let (_, update) = KeyUpdate::create(p.bob.identity(), &mut r).unwrap();
    let pk = PasswordKey::generate("pw", KdfParams::new(64, 1, 1).unwrap(), &mut r).unwrap();
    let history = constella_keys::HistoryMasterKey::generate(&mut r);
    let envelope = Envelope::new(
        p.alice.identity_public(),
        Some(p.initial.clone()),
        m.clone(),
    );
    vec![
        p.bob.bundle(Some(2)).to_bytes(),
        p.initial.to_bytes(),
        m.to_bytes(),
        gm.to_bytes(),
        g.share().to_bytes().to_vec(),
        update.to_bytes(),
        p.alice.seal(&pk, &mut r).unwrap().to_bytes(),
        SealedHistory::seal(&history, &[7; 32], b"h", 0, &mut r)
            .unwrap()
            .to_bytes(),
        p.alice.identity_public().encode(),
        envelope.to_bytes(),
    ]
}

/// Seeds the cargo-fuzz corpora with one valid message per target when
/// `PQ4_WRITE_FUZZ_CORPUS=1` is set.
#[test]
fn write_fuzz_corpus() {
    if std::env::var_os("PQ4_WRITE_FUZZ_CORPUS").is_none() {
        return;
    }
    let targets = [
        "bundle",
        "initial_message",
        "ratchet_message",
        "group_message",
        "group_key_share",
        "key_update",
        "sealed_blob",
        "sealed_history",
        "identity",
        "envelope",
    ];
    for (name, bytes) in targets.iter().zip(samples()) {
        let dir = format!("{}/fuzz/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/valid"), bytes).unwrap();
    }
}

#[test]
fn trailing_bytes_wrong_version_and_truncation_are_refused() {
    let s = samples();
    let check = |bytes: &[u8]| -> Vec<bool> {
        vec![
            PreKeyBundle::from_bytes(bytes).is_ok(),
            InitialMessage::from_bytes(bytes).is_ok(),
            RatchetMessage::from_bytes(bytes).is_ok(),
            GroupMessage::from_bytes(bytes).is_ok(),
            GroupKeyShare::from_bytes(bytes).is_ok(),
            KeyUpdate::from_bytes(bytes).is_ok(),
            SealedBlob::from_bytes(bytes).is_ok(),
            SealedHistory::from_bytes(bytes).is_ok(),
            IdentityPublicKey::decode(bytes).is_ok(),
            Envelope::from_bytes(bytes).is_ok(),
        ]
    };
    for (i, bytes) in s.iter().enumerate() {
        // Each sample decodes as its own type and as no other.
        let ok = check(bytes);
        assert!(ok[i], "sample {i} does not decode");
        assert_eq!(ok.iter().filter(|x| **x).count(), 1, "sample {i}: {ok:?}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            !check(&longer).iter().any(|x| *x),
            "trailing byte, sample {i}"
        );
        let mut v = bytes.clone();
        v[0] = 2;
        assert!(!check(&v).iter().any(|x| *x), "version 2, sample {i}");
        assert!(!check(&bytes[..bytes.len() - 1]).iter().any(|x| *x));
    }
    assert_eq!(
        RatchetMessage::from_bytes(&[7, 0xa0]).unwrap_err(),
        DecodeError::UnsupportedVersion(7)
    );
    assert_eq!(
        RatchetMessage::from_bytes(&s[2][..s[2].len() - 1]).unwrap_err(),
        DecodeError::Malformed
    );
    let mut t = s[2].clone();
    t.extend_from_slice(&[0xa0]);
    assert_eq!(
        RatchetMessage::from_bytes(&t).unwrap_err(),
        DecodeError::TrailingBytes
    );
    // A byte string claiming 2^63 bytes must fail quickly without allocating.
    let mut huge = vec![1u8, 0xa1, 0x62, b'd', b'h', 0x5b];
    huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
    decode_all(&huge);
}

#[test]
fn wrong_field_lengths_are_refused() {
    // A ratchet message whose `dh` is 55 bytes.
    let mut p = pair(92);
    let m = p.a.encrypt(p.alice.identity(), 1, b"x").unwrap();
    let bytes = m.to_bytes();
    let mut value: ciborium::Value = ciborium::from_reader(&bytes[1..]).unwrap();
    if let ciborium::Value::Map(entries) = &mut value {
        for (k, v) in entries.iter_mut() {
            if k.as_text() == Some("dh") {
                *v = ciborium::Value::Bytes(vec![0; 55]);
            }
        }
    }
    let mut t = vec![1u8];
    ciborium::into_writer(&value, &mut t).unwrap();
    assert_eq!(
        RatchetMessage::from_bytes(&t).unwrap_err(),
        DecodeError::Malformed
    );
    // An unknown extra field.
    if let ciborium::Value::Map(entries) = &mut value {
        entries.push((
            ciborium::Value::Text("x".into()),
            ciborium::Value::Integer(1.into()),
        ));
    }
    let mut t = vec![1u8];
    ciborium::into_writer(&value, &mut t).unwrap();
    assert!(RatchetMessage::from_bytes(&t).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
        let mut v = vec![1u8];
        v.extend_from_slice(&bytes);
        decode_all(&v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_messages_never_panic(
        which in 0usize..10,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        thread_local! {
            static SAMPLES: Vec<Vec<u8>> = samples();
        }
        let mut bytes = SAMPLES.with(|s| s[which].clone());
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        decode_all(&bytes);
        let keep = cut.index(bytes.len() + 1);
        decode_all(&bytes[..keep]);
    }
}

/// Replaces the first occurrence of `from` in `bytes` by `to` (the test's way of re-encoding
/// one field differently while leaving the rest of a valid message untouched).
fn splice(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

fn ratchet_sample() -> Vec<u8> {
    let mut p = pair(93);
    p.a.encrypt(p.alice.identity(), 1, b"x").unwrap().to_bytes()
}

#[test]
fn every_strictness_rule_refuses_with_its_own_reason() {
    let valid = ratchet_sample();
    RatchetMessage::from_bytes(&valid).unwrap();
    let refuse = |bytes: Vec<u8>| RatchetMessage::from_bytes(&bytes).unwrap_err();
    let nc = DecodeError::Noncanonical;
    // "pn": 0 written as a one-byte argument (0x18 0x00) instead of 0x00.
    assert_eq!(
        refuse(splice(&valid, b"\x62pn\x00", b"\x62pn\x18\x00")),
        nc("integer or length not in shortest form")
    );
    // The map's own length (6 entries) in a longer form.
    assert_eq!(
        refuse(splice(&valid, b"\x01\xa6", b"\x01\xb8\x06")),
        nc("integer or length not in shortest form")
    );
    // A key's length in a longer form: "pn" as 0x78 0x02.
    assert_eq!(
        refuse(splice(&valid, b"\x62pn", b"\x78\x02pn")),
        nc("integer or length not in shortest form")
    );
    // An indefinite-length map.
    let mut indefinite = splice(&valid, b"\x01\xa6", b"\x01\xbf");
    indefinite.push(0xff);
    assert_eq!(refuse(indefinite), nc("indefinite length"));
    // A tag (1 = epoch time) around the timestamp.
    assert_eq!(refuse(splice(&valid, b"\x62ts", b"\x62ts\xc1")), nc("tag"));
    // A negative integer, a float, `true`.
    assert_eq!(
        refuse(splice(&valid, b"\x62pn\x00", b"\x62pn\x20")),
        nc("negative integer")
    );
    assert_eq!(
        refuse(splice(&valid, b"\x62pn\x00", b"\x62pn\xf9\x00\x00")),
        nc("float or simple value other than null")
    );
    assert_eq!(
        refuse(splice(&valid, b"\x62pn\x00", b"\x62pn\xf5")),
        nc("float or simple value other than null")
    );
    // Keys that are byte strings or integers (serde would take both as field names).
    assert_eq!(
        refuse(splice(&valid, b"\x62pn", b"\x42pn")),
        nc("map key is not a text string")
    );
    assert_eq!(
        refuse(splice(&valid, b"\x62pn\x00", b"\x01\x00")),
        nc("map key is not a text string")
    );
    // A key that is not UTF-8.
    assert_eq!(
        refuse(splice(&valid, b"\x62pn", b"\x62\xff\xfe")),
        nc("text string is not UTF-8")
    );
    // Nesting deeper than the limit, before any type is looked at.
    let mut deep = vec![1u8];
    deep.extend(std::iter::repeat_n(0x81, 40));
    deep.push(0);
    assert_eq!(refuse(deep), nc("nesting too deep"));
    // A duplicate key (the map claims 7 entries, "pn" twice).
    assert_eq!(
        refuse(splice(
            &valid,
            b"\x01\xa6\x62dh",
            b"\x01\xa7\x62pn\x00\x62dh"
        )),
        DecodeError::Malformed
    );
    // A reserved additional-information value (28).
    assert_eq!(
        refuse(splice(&valid, b"\x62pn\x00", b"\x62pn\x1c")),
        DecodeError::Malformed
    );
}

#[test]
fn one_time_prekey_is_null_never_absent() {
    let p = pair(94);
    let bundle = p.bob.bundle(None).to_bytes();
    assert!(
        bundle.windows(5).any(|w| w == b"\x63opk\xf6"),
        "encoders write opk: null"
    );
    PreKeyBundle::from_bytes(&bundle).unwrap();
    // The same bundle with the "opk" entry left out (and the map's count lowered).
    let absent = splice(
        &splice(&bundle, b"\x63opk\xf6", b""),
        b"\x01\xa4",
        b"\x01\xa3",
    );
    assert_eq!(
        PreKeyBundle::from_bytes(&absent).unwrap_err(),
        DecodeError::Malformed
    );
    let initial = p.initial.to_bytes();
    let with_null = {
        let mut m = InitialMessage::from_bytes(&initial).unwrap();
        m.one_time_prekey_id = None;
        m.to_bytes()
    };
    assert!(with_null.windows(5).any(|w| w == b"\x63opk\xf6"));
    let absent = splice(
        &splice(&with_null, b"\x63opk\xf6", b""),
        b"\x01\xa7",
        b"\x01\xa6",
    );
    assert_eq!(
        InitialMessage::from_bytes(&absent).unwrap_err(),
        DecodeError::Malformed
    );
}

#[test]
fn maximum_length_counts_the_version_byte() {
    use constella_keys::x3dh::MAX_INITIAL_MESSAGE_LEN;
    // 0x01 then CBOR `1`, then filler: exactly the maximum is parsed (and refused for its
    // trailing bytes); one byte more is refused unread.
    let mut at_max = vec![1u8; MAX_INITIAL_MESSAGE_LEN];
    at_max[1] = 0x01;
    assert_eq!(
        InitialMessage::from_bytes(&at_max).unwrap_err(),
        DecodeError::TrailingBytes
    );
    at_max.push(1);
    assert_eq!(
        InitialMessage::from_bytes(&at_max).unwrap_err(),
        DecodeError::TooLarge
    );
}
