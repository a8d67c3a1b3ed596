//! Group keys: distribution through pairwise sessions, messages, rotation, removal.

mod common;

use common::{pair, rng};
use constella_keys::error::GroupError;
use constella_keys::group::{MAX_KEY_AGE_MS, MAX_MESSAGES_PER_KEY, MAX_RETIRED_KEYS};
use constella_keys::{Content, GroupKeyShare, GroupMessage, GroupSession, KdfParams, PasswordKey};
use constella_keys::{IdentityPublicKey, KeyStore, ShareOutcome};

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
    // The previous epoch's share cannot roll a member back (its key is only kept for
    // receiving); one older than that is refused outright.
    assert_eq!(
        gb.apply(&sb, alice.identity_public()).unwrap(),
        ShareOutcome::KeptForReceiving
    );
    assert_eq!(gb.epoch(), 1);
    let epoch2 = ga.rotate(5_002, &mut r).unwrap();
    gb.apply(&epoch2, alice.identity_public()).unwrap();
    assert_eq!(
        gb.apply(&sb, alice.identity_public()).unwrap_err(),
        GroupError::StaleShare(0)
    );
    assert_eq!(gb.epoch(), 2);

    // Seven days later the key must rotate even without messages.
    assert!(ga.needs_rotation(5_002 + MAX_KEY_AGE_MS));
    assert!(!ga.needs_rotation(5_002 + MAX_KEY_AGE_MS - 1));

    // Group state survives sealing, retired keys and their replay state included.
    let pk = PasswordKey::generate("pw", KdfParams::new(64, 1, 1).unwrap(), &mut r).unwrap();
    let mut gb2 = GroupSession::open(&gb.seal(&pk, &mut r).unwrap(), &pk).unwrap();
    assert_eq!(gb2.decrypt(&m).unwrap_err(), GroupError::Duplicate);
    assert_eq!(gb2.epoch(), 2);
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

/// Three members with a group created by the first; every member has joined.
fn three_members(seed: u64) -> (Vec<KeyStore>, Vec<GroupSession>) {
    let mut r = rng(seed);
    let stores: Vec<_> = (0..3)
        .map(|_| KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap())
        .collect();
    let ids: Vec<IdentityPublicKey> = stores.iter().map(|s| s.identity_public().clone()).collect();
    let g0 = GroupSession::create(&ids[0], &ids[1..], 0, &mut r).unwrap();
    let share = g0.share();
    let mut groups = vec![g0];
    for id in &ids[1..] {
        groups.push(GroupSession::join(&share, id, &ids[0]).unwrap());
    }
    (stores, groups)
}

#[test]
fn concurrent_rotations_to_one_epoch_converge_on_the_smaller_signer() {
    let mut r = rng(300);
    let (stores, mut g) = three_members(301);
    let id = |i: usize| stores[i].identity_public();
    // Members 0 and 1 both rotate from epoch 0 to epoch 1.
    let s0 = g[0].rotate(10, &mut r).unwrap();
    let s1 = g[1].rotate(11, &mut r).unwrap();
    let (winner, loser) = if id(0).signing_key_bytes() < id(1).signing_key_bytes() {
        (0, 1)
    } else {
        (1, 0)
    };
    let shares = [&s0, &s1];
    // The loser sends under its own key before it hears of the other rotation.
    let early = g[loser]
        .encrypt(stores[loser].identity(), 12, b"early")
        .unwrap();
    // Each rotator hears of the other; member 2 hears of the loser first, then the winner.
    assert_eq!(
        g[loser].apply(shares[winner], id(winner)).unwrap(),
        ShareOutcome::Installed
    );
    assert_eq!(
        g[winner].apply(shares[loser], id(loser)).unwrap(),
        ShareOutcome::KeptForReceiving
    );
    assert_eq!(
        g[2].apply(shares[loser], id(loser)).unwrap(),
        ShareOutcome::Installed
    );
    assert_eq!(
        g[2].apply(shares[winner], id(winner)).unwrap(),
        ShareOutcome::Installed
    );
    assert_eq!(
        g[2].apply(shares[winner], id(winner)).unwrap(),
        ShareOutcome::AlreadyCurrent
    );
    // Everyone holds the winner's share now.
    let current = g[winner].share().to_bytes();
    for member in &g {
        assert_eq!(member.epoch(), 1);
        assert_eq!(member.share().to_bytes(), current);
    }
    // The loser's early message still opens everywhere (a retired key of epoch 1) ...
    assert_eq!(&g[winner].decrypt(&early).unwrap().1[..], b"early");
    assert_eq!(&g[2].decrypt(&early).unwrap().1[..], b"early");
    assert_eq!(g[2].decrypt(&early).unwrap_err(), GroupError::Duplicate);
    // ... and new messages go under the common key.
    let after = g[loser]
        .encrypt(stores[loser].identity(), 13, b"after")
        .unwrap();
    assert_eq!(&g[winner].decrypt(&after).unwrap().1[..], b"after");
    assert_eq!(&g[2].decrypt(&after).unwrap().1[..], b"after");
}

#[test]
fn previous_epoch_messages_open_but_not_from_removed_members() {
    let mut r = rng(302);
    let (stores, mut g) = three_members(303);
    // Members 1 and 2 send under epoch 0 while member 0 removes member 2 and rotates.
    let from_1 = g[1].encrypt(stores[1].identity(), 1, b"in flight").unwrap();
    let from_2 = g[2].encrypt(stores[2].identity(), 1, b"removed").unwrap();
    g[0].remove_member(stores[2].identity_public(), 2, &mut r)
        .unwrap();
    assert_eq!(&g[0].decrypt(&from_1).unwrap().1[..], b"in flight");
    assert_eq!(g[0].decrypt(&from_2).unwrap_err(), GroupError::NotAMember);
    // A message under an epoch not yet held is unknown.
    let next = g[0].encrypt(stores[0].identity(), 3, b"epoch 1").unwrap();
    assert_eq!(
        g[1].decrypt(&next).unwrap_err(),
        GroupError::UnknownEpoch(1)
    );
    // Retired keys are bounded: after MAX_RETIRED_KEYS more rotations epoch 0 is gone.
    let late = g[1].encrypt(stores[1].identity(), 4, b"late").unwrap();
    for i in 0..MAX_RETIRED_KEYS as u64 {
        g[0].rotate(5 + i, &mut r).unwrap();
    }
    assert_eq!(
        g[0].decrypt(&late).unwrap_err(),
        GroupError::UnknownEpoch(0)
    );
}

#[test]
fn apply_checks_group_sender_and_membership() {
    let mut r = rng(304);
    let (stores, mut g) = three_members(305);
    let (_, mut other) = three_members(306);
    let foreign = other[0].rotate(1, &mut r).unwrap();
    assert_eq!(
        g[1].apply(&foreign, stores[0].identity_public())
            .unwrap_err(),
        GroupError::WrongGroup
    );
    let share = g[0].rotate(1, &mut r).unwrap();
    let outsider = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    assert_eq!(
        g[1].apply(&share, outsider.identity_public()).unwrap_err(),
        GroupError::NotAMember
    );
    // A share that drops the receiver is refused (it was removed).
    let without_1 = g[0]
        .remove_member(stores[1].identity_public(), 2, &mut r)
        .unwrap();
    assert_eq!(
        g[1].apply(&without_1, stores[0].identity_public())
            .unwrap_err(),
        GroupError::Membership
    );
    assert_eq!(g[1].epoch(), 0, "a refused share changes nothing");
}

#[test]
fn key_age_is_enforced_by_the_sender_only() {
    let (stores, mut g) = three_members(307);
    // Created at 0: usable while now < 7 days, refused from exactly 7 days on.
    let last = g[0]
        .encrypt(stores[0].identity(), MAX_KEY_AGE_MS - 1, b"last")
        .unwrap();
    assert_eq!(
        g[0].encrypt(stores[0].identity(), MAX_KEY_AGE_MS, b"late")
            .unwrap_err(),
        GroupError::RotationRequired
    );
    // A clock behind the key's creation counts as age 0.
    let (_, mut h) = three_members(308);
    h[0].rotate(1_000_000, &mut rng(309)).unwrap();
    assert!(!h[0].needs_rotation(0));
    // Receivers take the message whatever their own clock says: decrypt has no clock.
    assert_eq!(&g[1].decrypt(&last).unwrap().1[..], b"last");
}
