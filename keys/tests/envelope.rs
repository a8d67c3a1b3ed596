//! The envelope (initial message + first ratchet message) and typed content.

mod common;

use common::rng;
use constella_keys::envelope::{MAX_CIPHERTEXT_LEN, RESERVED_CONTENT_TYPES};
use constella_keys::error::{DecodeError, EnvelopeError};
use constella_keys::{
    Content, ContentType, Envelope, GroupSession, KeyStore, KeyUpdate, Session, x3dh,
};
use proptest::prelude::*;

/// Alice's session to Bob and her initial message; Bob has not answered yet.
struct Start {
    alice: KeyStore,
    bob: KeyStore,
    a: Session,
    initial: x3dh::InitialMessage,
}

fn start(seed: u64, with_opk: bool) -> Start {
    let mut r = rng(seed);
    let alice = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
    let bob = KeyStore::generate_with_one_time_prekeys(2, &mut r).unwrap();
    let opk = with_opk.then(|| bob.one_time_prekey_ids()[0]);
    let bundle = bob.bundle(opk).verify().unwrap();
    let (initial, secret) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    let a = Session::new(secret, &mut r).unwrap();
    Start {
        alice,
        bob,
        a,
        initial,
    }
}

type CborMap = Vec<(ciborium::Value, ciborium::Value)>;

fn chat_text(content: &Content) -> &str {
    match content {
        Content::Chat(text) => text,
        other => panic!("expected chat, got {other:?}"),
    }
}

#[test]
fn first_message_carries_the_handshake_and_replies_do_not() {
    let mut s = start(100, true);
    let mut r = rng(101);
    let first = Envelope::seal(
        &mut s.a,
        s.alice.identity(),
        Some(&s.initial),
        1,
        &Content::chat("hello bob"),
    )
    .unwrap();
    let bytes = first.to_bytes();
    assert_eq!(bytes[0], 1, "version byte");

    // Bob: decode, build his side from the handshake, open.
    let got = Envelope::from_bytes(&bytes).unwrap();
    assert_eq!(got, first);
    assert_eq!(got.sender(), &s.alice.identity_public().to_bytes());
    let initial = got.initial().expect("handshake attached");
    let mut b = Session::new(x3dh::respond(&mut s.bob, initial).unwrap(), &mut r).unwrap();
    assert_eq!(chat_text(&got.open(&mut b, &mut r).unwrap()), "hello bob");

    // Bob answers with a group key share: no handshake, another content type.
    let group = GroupSession::create(
        s.bob.identity_public(),
        std::slice::from_ref(s.alice.identity_public()),
        5,
        &mut r,
    )
    .unwrap();
    let reply = Envelope::seal(
        &mut b,
        s.bob.identity(),
        None,
        2,
        &Content::GroupKeyShare(group.share()),
    )
    .unwrap();
    let reply = Envelope::from_bytes(&reply.to_bytes()).unwrap();
    assert!(reply.initial().is_none());
    let content = reply.open(&mut s.a, &mut r).unwrap();
    assert_eq!(content.content_type(), ContentType::GroupKeyShare);
    let Content::GroupKeyShare(share) = content else {
        unreachable!()
    };
    GroupSession::join(&share, s.alice.identity_public(), s.bob.identity_public()).unwrap();

    // The envelope's sender must own the session it is opened with.
    let again = Envelope::seal(&mut b, s.bob.identity(), None, 3, &Content::chat("x")).unwrap();
    let mut other = start(102, false);
    assert_eq!(
        again.open(&mut other.a, &mut r).unwrap_err(),
        EnvelopeError::WrongSession
    );
}

#[test]
fn a_group_key_share_is_never_read_as_chat_or_the_reverse() {
    let mut s = start(103, false);
    let mut r = rng(104);
    let group = GroupSession::create(s.alice.identity_public(), &[], 0, &mut r).unwrap();
    let wrapped = group.share().wrap(&mut s.a, s.alice.identity(), 1).unwrap();
    let mut b = Session::new(x3dh::respond(&mut s.bob, &s.initial).unwrap(), &mut r).unwrap();
    let plaintext = b.decrypt(&wrapped, &mut r).unwrap();
    assert_eq!(plaintext[0], ContentType::GroupKeyShare as u8);
    assert_eq!(
        Content::from_bytes(&plaintext).unwrap().content_type(),
        ContentType::GroupKeyShare
    );
    // A chat text that happens to be a share's bytes stays a chat text.
    let share_bytes = group.share().to_bytes();
    let mut disguised = vec![ContentType::Chat as u8];
    disguised.extend_from_slice(&share_bytes);
    assert!(matches!(
        Content::from_bytes(&disguised),
        Err(DecodeError::InvalidField("chat text")) | Ok(Content::Chat(_))
    ));
    // A share body that is chat text does not decode as a share.
    let mut fake = vec![ContentType::GroupKeyShare as u8];
    fake.extend_from_slice(b"\x01hello");
    assert!(Content::from_bytes(&fake).is_err());
}

#[test]
fn content_refusals() {
    assert_eq!(
        Content::from_bytes(&[]).unwrap_err(),
        DecodeError::Malformed
    );
    for kind in [
        0u8,
        RESERVED_CONTENT_TYPES[0],
        RESERVED_CONTENT_TYPES[1],
        200,
    ] {
        assert_eq!(
            Content::from_bytes(&[kind, b'x']).unwrap_err(),
            DecodeError::UnknownContentType(kind)
        );
    }
    assert_eq!(
        Content::from_bytes(&[1, 0xff, 0xfe]).unwrap_err(),
        DecodeError::InvalidField("chat text")
    );
    // An empty chat text is a valid message.
    assert_eq!(chat_text(&Content::from_bytes(&[1]).unwrap()), "");
    // Debug never shows the text.
    assert_eq!(format!("{:?}", Content::chat("secret")), "Chat(<6 bytes>)");
}

#[test]
fn envelope_refusals() {
    let mut s = start(105, true);
    let env = Envelope::seal(
        &mut s.a,
        s.alice.identity(),
        Some(&s.initial),
        1,
        &Content::chat("hi"),
    )
    .unwrap();
    let bytes = env.to_bytes();
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(
        Envelope::from_bytes(&v2).unwrap_err(),
        DecodeError::UnsupportedVersion(2)
    );
    let edit = |f: &dyn Fn(&mut CborMap)| -> Vec<u8> {
        let mut value: ciborium::Value = ciborium::from_reader(&bytes[1..]).unwrap();
        if let ciborium::Value::Map(entries) = &mut value {
            f(entries);
        }
        let mut out = vec![1u8];
        ciborium::into_writer(&value, &mut out).unwrap();
        out
    };
    // `from` must be the initiator named in `init`.
    let other = start(106, false);
    let lie = edit(&|e| {
        e[0].1 = ciborium::Value::Bytes(other.alice.identity_public().to_bytes().to_vec())
    });
    assert_eq!(
        Envelope::from_bytes(&lie).unwrap_err(),
        DecodeError::InvalidField("from")
    );
    // `init` is null or a map, never absent.
    let absent = edit(&|e| e.retain(|(k, _)| k.as_text() != Some("init")));
    assert_eq!(
        Envelope::from_bytes(&absent).unwrap_err(),
        DecodeError::Malformed
    );
    let null = edit(&|e| e[1].1 = ciborium::Value::Null);
    assert!(Envelope::from_bytes(&null).unwrap().initial().is_none());
    // A ciphertext longer than the largest plaintext plus its tag.
    let huge = edit(&|e| {
        if let ciborium::Value::Map(msg) = &mut e[2].1 {
            for (k, v) in msg.iter_mut() {
                if k.as_text() == Some("ct") {
                    *v = ciborium::Value::Bytes(vec![0; MAX_CIPHERTEXT_LEN + 1]);
                }
            }
        }
    });
    assert_eq!(
        Envelope::from_bytes(&huge).unwrap_err(),
        DecodeError::InvalidField("msg")
    );
}

#[test]
fn key_update_notice_round_trips() {
    let mut s = start(107, false);
    let mut r = rng(108);
    let (_, update) = KeyUpdate::create(s.alice.identity(), &mut r).unwrap();
    let env = Envelope::seal(
        &mut s.a,
        s.alice.identity(),
        Some(&s.initial),
        1,
        &Content::KeyUpdate(Box::new(update.clone())),
    )
    .unwrap();
    let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
    let mut b = Session::new(x3dh::respond(&mut s.bob, &s.initial).unwrap(), &mut r).unwrap();
    let Content::KeyUpdate(got) = env.open(&mut b, &mut r).unwrap() else {
        panic!("expected a key update")
    };
    assert_eq!(*got, update);
    got.verify(s.alice.identity_public()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any chat text, with or without the handshake, any timestamp: the envelope decodes to
    /// itself, re-encodes to the same bytes, and opens to the same text.
    #[test]
    fn envelope_round_trip(
        seed in any::<u64>(),
        text in ".{0,200}",
        with_init in any::<bool>(),
        with_opk in any::<bool>(),
        ts in any::<u64>(),
    ) {
        let mut s = start(seed, with_opk);
        let mut r = rng(seed ^ 1);
        let env = Envelope::seal(
            &mut s.a,
            s.alice.identity(),
            with_init.then_some(&s.initial),
            ts,
            &Content::chat(&text),
        )
        .unwrap();
        let bytes = env.to_bytes();
        let got = Envelope::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&got, &env);
        prop_assert_eq!(got.to_bytes(), bytes);
        prop_assert_eq!(got.message().timestamp(), ts);
        let mut b = Session::new(x3dh::respond(&mut s.bob, &s.initial).unwrap(), &mut r).unwrap();
        let content = got.open(&mut b, &mut r).unwrap();
        prop_assert_eq!(chat_text(&content), text.as_str());
    }
}
