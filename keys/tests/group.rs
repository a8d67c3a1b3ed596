//! Group keys: distribution through pairwise sessions, messages, rotation, removal.

mod common;

use common::{pair, rng};
use constella_keys::error::GroupError;
use constella_keys::group::{MAX_KEY_AGE_MS, MAX_MESSAGES_PER_KEY};
use constella_keys::{Content, GroupKeyShare, GroupMessage, GroupSession, KdfParams, PasswordKey};

/// The share inside a decrypted pairwise message (content type 2).
fn share_of(plaintext: &[u8]) -> GroupKeyShare {
    match Content::from_bytes(plaintext).unwrap() {
        Content::GroupKeyShare(share) => share,
        other => panic!("expected a group key share, got {other:?}"),
    }
}

#[test]
fn members_exchange_messages_and_rotate() {
    let mut r = rng(50);
    let mut ab = pair(51); // Alice <-> Bob
    let mut ac = pair(52); // Alice' <-> Carol; we reuse its responder as Carol
    // Build a group of Alice (from `ab`), Bob and Carol. Carol's session is with another Alice,
    // so give Carol a session with *our* Alice instead.
    let alice = &ab.alice;
    let bob_id = ab.bob.identity_public().clone();
    let carol = &mut ac.bob;
    let carol_bundle = carol
        .bundle(Some(carol.one_time_prekey_ids()[0]))
        .verify()
        .unwrap();
    let (init, sa) =
        constella_keys::x3dh::initiate(alice.identity(), &carol_bundle, &mut r).unwrap();
    let sc = constella_keys::x3dh::respond(carol, &init).unwrap();
    let mut a_to_c = constella_keys::Session::new(sa, &mut r).unwrap();
    let mut c_from_a = constella_keys::Session::new(sc, &mut r).unwrap();

    let mut ga = GroupSession::create(
        alice.identity_public(),
        &[bob_id.clone(), carol.identity_public().clone()],
        1_000,
        &mut r,
    )
    .unwrap();
    let share = ga.share();
    let wrapped_b = share.wrap(&mut ab.a, alice.identity(), 1_000).unwrap();
    let wrapped_c = share.wrap(&mut a_to_c, alice.identity(), 1_000).unwrap();
    let sb = share_of(&ab.b.decrypt(&wrapped_b, &mut r).unwrap());
    let sc = share_of(&c_from_a.decrypt(&wrapped_c, &mut r).unwrap());
    let mut gb = GroupSession::join(&sb, &bob_id, alice.identity_public()).unwrap();
    let mut gc = GroupSession::join(&sc, carol.identity_public(), alice.identity_public()).unwrap();
    assert_eq!(gb.members().len(), 3);

    let m = ga.encrypt(alice.identity(), 2_000, b"hello group").unwrap();
    let m = GroupMessage::from_bytes(&m.to_bytes()).unwrap();
    let (from, text) = gb.decrypt(&m).unwrap();
    assert_eq!(&from, alice.identity_public());
    assert_eq!(&text[..], b"hello group");
    assert_eq!(&gc.decrypt(&m).unwrap().1[..], b"hello group");
    // Replays are refused.
    assert_eq!(gb.decrypt(&m).unwrap_err(), GroupError::Duplicate);

    // Bob and Carol both send their message 0: no key/nonce reuse, both decrypt.
    let mb = gb.encrypt(ab.bob.identity(), 3_000, b"from bob").unwrap();
    let mc = gc.encrypt(carol.identity(), 3_000, b"from carol").unwrap();
    assert_eq!(mb.message_number(), mc.message_number());
    assert_eq!(&ga.decrypt(&mb).unwrap().1[..], b"from bob");
    assert_eq!(&ga.decrypt(&mc).unwrap().1[..], b"from carol");
    assert_eq!(&gc.decrypt(&mb).unwrap().1[..], b"from bob");

    // After 100 messages from Alice the key must rotate.
    for i in 1..MAX_MESSAGES_PER_KEY {
        ga.encrypt(alice.identity(), 4_000 + u64::from(i), b"x")
            .unwrap();
    }
    assert!(ga.needs_rotation(5_000));
    assert_eq!(
        ga.encrypt(alice.identity(), 5_000, b"x").unwrap_err(),
        GroupError::RotationRequired
    );
    let rotated = ga.rotate(5_000, &mut r).unwrap();
    assert_eq!(rotated.epoch(), 1);
    gb.apply(&rotated, alice.identity_public()).unwrap();
    let m = ga.encrypt(alice.identity(), 5_001, b"epoch 1").unwrap();
    assert_eq!(&gb.decrypt(&m).unwrap().1[..], b"epoch 1");
    // Carol has not applied the rotation yet.
    assert_eq!(gc.decrypt(&m).unwrap_err(), GroupError::UnknownEpoch(1));
    // A stale share cannot roll a member back.
    assert_eq!(
        gb.apply(&sb, alice.identity_public()).unwrap_err(),
        GroupError::UnknownEpoch(0)
    );

    // Seven days later the key must rotate even without messages.
    assert!(ga.needs_rotation(5_000 + MAX_KEY_AGE_MS));
    assert!(!ga.needs_rotation(5_000 + MAX_KEY_AGE_MS - 1));

    // Group state survives sealing.
    let pk = PasswordKey::generate("pw", KdfParams::new(64, 1, 1).unwrap(), &mut r).unwrap();
    let mut gb2 = GroupSession::open(&gb.seal(&pk, &mut r).unwrap(), &pk).unwrap();
    assert_eq!(gb2.decrypt(&m).unwrap_err(), GroupError::Duplicate);
}

#[test]
fn removed_member_cannot_read_new_messages() {
    let mut r = rng(60);
    let mut ab = pair(61);
    let alice = &ab.alice;
    // Carol: a second responder for Alice.
    let mut carol = constella_keys::KeyStore::generate(&mut r).unwrap();
    let bundle = carol.bundle(None).verify().unwrap();
    let (init, sa) = constella_keys::x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    let sc = constella_keys::x3dh::respond(&mut carol, &init).unwrap();
    let mut a_to_c = constella_keys::Session::new(sa, &mut r).unwrap();
    let mut c_from_a = constella_keys::Session::new(sc, &mut r).unwrap();

    let bob_id = ab.bob.identity_public().clone();
    let mut ga = GroupSession::create(
        alice.identity_public(),
        &[bob_id.clone(), carol.identity_public().clone()],
        0,
        &mut r,
    )
    .unwrap();
    let share = ga.share();
    let wb = share.wrap(&mut ab.a, alice.identity(), 0).unwrap();
    let wc = share.wrap(&mut a_to_c, alice.identity(), 0).unwrap();
    let mut gb = GroupSession::join(
        &share_of(&ab.b.decrypt(&wb, &mut r).unwrap()),
        &bob_id,
        alice.identity_public(),
    )
    .unwrap();
    let mut gc = GroupSession::join(
        &share_of(&c_from_a.decrypt(&wc, &mut r).unwrap()),
        carol.identity_public(),
        alice.identity_public(),
    )
    .unwrap();
    let before = ga.encrypt(alice.identity(), 1, b"before").unwrap();
    assert_eq!(&gc.decrypt(&before).unwrap().1[..], b"before");

    // Remove Carol: the new key goes to Bob only, through Bob's pairwise session.
    let new_share = ga
        .remove_member(carol.identity_public(), 2, &mut r)
        .unwrap();
    let wb = new_share.wrap(&mut ab.a, alice.identity(), 2).unwrap();
    let received = share_of(&ab.b.decrypt(&wb, &mut r).unwrap());
    gb.apply(&received, alice.identity_public()).unwrap();
    assert_eq!(gb.members().len(), 2);

    let after = ga.encrypt(alice.identity(), 3, b"after").unwrap();
    assert_eq!(&gb.decrypt(&after).unwrap().1[..], b"after");
    // Carol cannot read it, cannot open Bob's wrapped share, and cannot apply the new key.
    assert_eq!(gc.decrypt(&after).unwrap_err(), GroupError::UnknownEpoch(1));
    assert!(c_from_a.decrypt(&wb, &mut r).is_err());
    assert_eq!(
        gc.apply(&received, alice.identity_public()).unwrap_err(),
        GroupError::Membership
    );
    // Carol's messages are refused by the remaining members.
    let from_carol = gc.encrypt(carol.identity(), 4, b"still here?").unwrap();
    assert!(gb.decrypt(&from_carol).is_err());
}

#[test]
fn non_members_and_forgeries_are_refused() {
    let mut r = rng(70);
    let a = constella_keys::KeyStore::generate(&mut r).unwrap();
    let b = constella_keys::KeyStore::generate(&mut r).unwrap();
    let mallory = constella_keys::KeyStore::generate(&mut r).unwrap();
    let mut ga = GroupSession::create(
        a.identity_public(),
        &[b.identity_public().clone()],
        0,
        &mut r,
    )
    .unwrap();
    let mut gb = GroupSession::join(&ga.share(), b.identity_public(), a.identity_public()).unwrap();
    // Mallory, knowing the key (say, leaked), still cannot send as a non-member.
    let mut gm = GroupSession::join(&ga.share(), b.identity_public(), a.identity_public()).unwrap();
    assert_eq!(
        gm.encrypt(mallory.identity(), 1, b"x").unwrap_err(),
        GroupError::NotAMember
    );
    let m = ga.encrypt(a.identity(), 1, b"hi").unwrap();
    let mut bytes = m.to_bytes();
    let n = bytes.len();
    bytes[n - 20] ^= 1; // inside the signature
    let t = GroupMessage::from_bytes(&bytes).unwrap();
    assert_eq!(gb.decrypt(&t).unwrap_err(), GroupError::BadSignature);
    assert_eq!(&gb.decrypt(&m).unwrap().1[..], b"hi");
    // Joining a group that does not list us is refused.
    assert_eq!(
        GroupSession::join(&ga.share(), mallory.identity_public(), a.identity_public())
            .unwrap_err(),
        GroupError::Membership
    );
}
