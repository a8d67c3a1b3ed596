//! The Double Ratchet: conversation, out-of-order delivery, bounds, replays, storage.

mod common;

use common::{pair, rng};
use constella_keys::error::{RatchetError, SealError};
use constella_keys::ratchet::{MAX_SKIP, MAX_SKIPPED_TOTAL, RatchetMessage};
use constella_keys::{KdfParams, PasswordKey, Session};
use proptest::prelude::*;

#[test]
fn conversation_with_dh_steps() {
    let mut p = pair(10);
    let mut r = rng(11);
    // The responder cannot send before it has heard from the initiator.
    assert_eq!(
        p.b.encrypt(p.bob.identity(), 1, b"too early").unwrap_err(),
        RatchetError::NotReadyToSend
    );
    for round in 0..5u64 {
        for i in 0..3u64 {
            let m =
                p.a.encrypt(p.alice.identity(), round * 10 + i, b"ping")
                    .unwrap();
            let m = RatchetMessage::from_bytes(&m.to_bytes()).unwrap();
            assert_eq!(&p.b.decrypt(&m, &mut r).unwrap()[..], b"ping");
        }
        let m =
            p.b.encrypt(p.bob.identity(), round * 10 + 5, b"pong")
                .unwrap();
        assert_eq!(&p.a.decrypt(&m, &mut r).unwrap()[..], b"pong");
    }
}

#[test]
fn out_of_order_across_chains() {
    let mut p = pair(12);
    let mut r = rng(13);
    let a1: Vec<_> = (0..4)
        .map(|i| p.a.encrypt(p.alice.identity(), i, &[i as u8]).unwrap())
        .collect();
    p.b.decrypt(&a1[0], &mut r).unwrap();
    let b1 = p.b.encrypt(p.bob.identity(), 9, b"b").unwrap();
    p.a.decrypt(&b1, &mut r).unwrap();
    let a2 = p.a.encrypt(p.alice.identity(), 10, b"new chain").unwrap();
    // New chain arrives first; the rest of the old chain is stored as skipped keys.
    assert_eq!(&p.b.decrypt(&a2, &mut r).unwrap()[..], b"new chain");
    assert_eq!(p.b.skipped_keys(), 3);
    for m in a1[1..].iter().rev() {
        assert_eq!(p.b.decrypt(m, &mut r).unwrap()[0], m.header().n as u8);
    }
    assert_eq!(p.b.skipped_keys(), 0);
}

#[test]
fn replays_are_refused() {
    let mut p = pair(14);
    let mut r = rng(15);
    let m0 = p.a.encrypt(p.alice.identity(), 0, b"0").unwrap();
    let m1 = p.a.encrypt(p.alice.identity(), 1, b"1").unwrap();
    p.b.decrypt(&m1, &mut r).unwrap();
    p.b.decrypt(&m0, &mut r).unwrap(); // from the skipped store
    for m in [&m0, &m1] {
        assert_eq!(
            p.b.decrypt(m, &mut r).unwrap_err(),
            RatchetError::DuplicateOrExpired
        );
    }
    // A replay from a chain that has since been replaced.
    let b = p.b.encrypt(p.bob.identity(), 2, b"b").unwrap();
    p.a.decrypt(&b, &mut r).unwrap();
    let m2 = p.a.encrypt(p.alice.identity(), 3, b"2").unwrap();
    p.b.decrypt(&m2, &mut r).unwrap();
    assert_eq!(
        p.b.decrypt(&m1, &mut r).unwrap_err(),
        RatchetError::DuplicateOrExpired
    );
}

#[test]
fn skipped_key_bound_is_enforced() {
    let mut p = pair(16);
    let mut r = rng(17);
    let mut last = None;
    for i in 0..=MAX_SKIP + 1 {
        last = Some(p.a.encrypt(p.alice.identity(), u64::from(i), b"x").unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.header().n, MAX_SKIP + 1);
    assert_eq!(
        p.b.decrypt(&last, &mut r).unwrap_err(),
        RatchetError::TooManySkipped {
            requested: u64::from(MAX_SKIP) + 1,
            limit: MAX_SKIP
        }
    );
    // Nothing was stored and the session still works.
    assert_eq!(p.b.skipped_keys(), 0);
    let m = p.a.encrypt(p.alice.identity(), 5000, b"y").unwrap();
    assert_eq!(
        p.b.decrypt(&m, &mut r).unwrap_err(),
        RatchetError::TooManySkipped {
            requested: u64::from(MAX_SKIP) + 2,
            limit: MAX_SKIP
        }
    );
}

#[test]
fn skipped_keys_are_capped_in_total_oldest_first() {
    let mut p = pair(25);
    let mut r = rng(26);
    let mut first_of_chain = Vec::new();
    for chain in 0..3u64 {
        let mut msgs = Vec::new();
        for i in 0..=MAX_SKIP {
            msgs.push(
                p.a.encrypt(p.alice.identity(), chain * 10_000 + u64::from(i), b"x")
                    .unwrap(),
            );
        }
        // Only the last message of each chain arrives.
        p.b.decrypt(msgs.last().unwrap(), &mut r).unwrap();
        first_of_chain.push(msgs.swap_remove(0));
        let reply = p.b.encrypt(p.bob.identity(), chain, b"r").unwrap();
        p.a.decrypt(&reply, &mut r).unwrap();
    }
    assert_eq!(p.b.skipped_keys(), MAX_SKIPPED_TOTAL);
    // The oldest chain's keys were evicted; the newer ones are still there.
    assert_eq!(
        p.b.decrypt(&first_of_chain[0], &mut r).unwrap_err(),
        RatchetError::DuplicateOrExpired
    );
    assert_eq!(&p.b.decrypt(&first_of_chain[2], &mut r).unwrap()[..], b"x");
}

#[test]
fn exactly_max_skip_is_accepted() {
    let mut p = pair(18);
    let mut r = rng(19);
    let mut msgs = Vec::new();
    for i in 0..=MAX_SKIP {
        msgs.push(p.a.encrypt(p.alice.identity(), u64::from(i), b"x").unwrap());
    }
    p.b.decrypt(msgs.last().unwrap(), &mut r).unwrap();
    assert_eq!(p.b.skipped_keys(), MAX_SKIP as usize);
    p.b.decrypt(&msgs[0], &mut r).unwrap();
}

#[test]
fn forged_or_tampered_messages_are_refused_without_state_change() {
    let mut p = pair(20);
    let mut r = rng(21);
    let m = p.a.encrypt(p.alice.identity(), 7, b"hello").unwrap();
    let bytes = m.to_bytes();
    // Flip one byte in each region of the encoding; all must fail on the signature.
    for i in [5usize, 60, 70, bytes.len() - 130, bytes.len() - 3] {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        if let Ok(t) = RatchetMessage::from_bytes(&t) {
            assert_eq!(
                p.b.decrypt(&t, &mut r).unwrap_err(),
                RatchetError::BadSignature
            );
        }
    }
    // Signed by the wrong identity: Mallory with her own session to Bob.
    let mut q = pair(22);
    let forged = q.a.encrypt(q.alice.identity(), 7, b"evil").unwrap();
    assert_eq!(
        p.b.decrypt(&forged, &mut r).unwrap_err(),
        RatchetError::BadSignature
    );
    assert_eq!(&p.b.decrypt(&m, &mut r).unwrap()[..], b"hello");
    // An identity that does not own the session cannot encrypt with it.
    assert!(p.a.encrypt(p.bob.identity(), 0, b"x").is_err());
    let _ = &mut q.b;
}

#[test]
fn sessions_seal_and_resume() {
    let mut p = pair(23);
    let mut r = rng(24);
    let key = PasswordKey::generate("pw", KdfParams::new(64, 1, 1).unwrap(), &mut r).unwrap();
    let m0 = p.a.encrypt(p.alice.identity(), 0, b"0").unwrap();
    let m1 = p.a.encrypt(p.alice.identity(), 1, b"1").unwrap();
    p.b.decrypt(&m1, &mut r).unwrap();
    let blob = p.b.seal(&key, &mut r).unwrap();
    let blob = constella_keys::SealedBlob::from_bytes(&blob.to_bytes()).unwrap();
    let mut b2 = Session::open(&blob, &key).unwrap();
    assert_eq!(b2.skipped_keys(), 1);
    assert_eq!(&b2.decrypt(&m0, &mut r).unwrap()[..], b"0");
    let reply = b2.encrypt(p.bob.identity(), 2, b"r").unwrap();
    assert_eq!(&p.a.decrypt(&reply, &mut r).unwrap()[..], b"r");

    let other = PasswordKey::generate("other", KdfParams::new(64, 1, 1).unwrap(), &mut r).unwrap();
    assert_eq!(
        Session::open(&blob, &other).unwrap_err(),
        SealError::WrongPassword
    );
    // A key-store blob is not a session.
    let store_blob = p.alice.seal(&key, &mut r).unwrap();
    assert_eq!(
        Session::open(&store_blob, &key).unwrap_err(),
        SealError::WrongKind
    );
}

#[derive(Debug, Clone)]
enum Delivery {
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Messages from both sides, in bursts, delivered in any order with drops and duplicates:
    /// every first delivery decrypts to its plaintext, every duplicate is refused.
    #[test]
    fn reorder_drop_duplicate(
        seed in any::<u64>(),
        bursts in prop::collection::vec((any::<bool>(), 1usize..5), 1..6),
        schedule in prop::collection::vec(
            prop_oneof![
                (0usize..64).prop_map(Delivery::Deliver),
                (0usize..64).prop_map(Delivery::Duplicate),
                (0usize..64).prop_map(Delivery::Drop),
            ],
            0..40,
        ),
    ) {
        let mut p = pair(seed);
        let mut r = rng(seed ^ 0xabc);
        // The first message always goes Alice -> Bob so that Bob can send.
        let first = p.a.encrypt(p.alice.identity(), 0, b"hello").unwrap();
        prop_assert_eq!(&p.b.decrypt(&first, &mut r).unwrap()[..], b"hello");
        let mut to_bob = Vec::new();
        let mut to_alice = Vec::new();
        let mut ts = 1u64;
        for (from_alice, count) in bursts {
            for _ in 0..count {
                let text = ts.to_be_bytes();
                if from_alice {
                    to_bob.push((p.a.encrypt(p.alice.identity(), ts, &text).unwrap(), text, false));
                } else {
                    to_alice.push((p.b.encrypt(p.bob.identity(), ts, &text).unwrap(), text, false));
                }
                ts += 1;
            }
        }
        let total = to_bob.len() + to_alice.len();
        for step in schedule {
            let (Delivery::Deliver(i) | Delivery::Duplicate(i) | Delivery::Drop(i)) = step.clone();
            let i = i % total;
            let (queue, session) = if i < to_bob.len() {
                (&mut to_bob[i], &mut p.b)
            } else {
                (&mut to_alice[i - to_bob.len()], &mut p.a)
            };
            let (msg, text, delivered) = queue;
            match step {
                Delivery::Drop(_) => {}
                Delivery::Deliver(_) | Delivery::Duplicate(_) => {
                    let times = if matches!(step, Delivery::Duplicate(_)) { 2 } else { 1 };
                    for _ in 0..times {
                        let res = session.decrypt(msg, &mut r);
                        if *delivered {
                            prop_assert_eq!(res.unwrap_err(), RatchetError::DuplicateOrExpired);
                        } else {
                            prop_assert_eq!(&res.unwrap()[..], &text[..]);
                            *delivered = true;
                        }
                    }
                }
            }
        }
    }
}
