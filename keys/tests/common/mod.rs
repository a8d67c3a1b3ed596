#![allow(dead_code)]

use constella_keys::x3dh::{self, InitialMessage};
use constella_keys::{KeyStore, Session};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub struct Pair {
    pub alice: KeyStore,
    pub bob: KeyStore,
    pub a: Session,
    pub b: Session,
    pub initial: InitialMessage,
}

/// Alice and Bob with a session; Bob's side is ready after Alice's first message arrives.
pub fn pair(seed: u64) -> Pair {
    let mut r = rng(seed);
    let alice = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
    let mut bob = KeyStore::generate_with_one_time_prekeys(2, &mut r).unwrap();
    let opk = bob.one_time_prekey_ids()[0];
    let bundle = bob.bundle(Some(opk)).verify().unwrap();
    let (initial, secret_a) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    let secret_b = x3dh::respond(&mut bob, &initial).unwrap();
    assert_eq!(secret_a.as_bytes(), secret_b.as_bytes());
    let a = Session::new(secret_a, &mut r).unwrap();
    let b = Session::new(secret_b, &mut r).unwrap();
    Pair {
        alice,
        bob,
        a,
        b,
        initial,
    }
}
