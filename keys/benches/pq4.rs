//! PQ4 against the sum of its primitives and against vodozemac (Olm/Megolm).
//!
//! Each group has three lines: `pq4` (the protocol), `primitives` (the same primitive calls
//! the protocol makes, back to back, without any protocol code: the floor) and `vodozemac`
//! (the reference doing the same workload with X25519/Ed25519/AES). Run with
//! `cargo bench -p constella-keys --bench pq4 -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use constella_keys::x3dh;
use constella_keys::{
    GroupSession, KdfParams, KeyStore, PasswordKey, PreKeyBundle, SealedBlob, Session,
};
use criterion::{Criterion, criterion_group, criterion_main};
use ed448_goldilocks_plus::{Signature, SigningKey, VerifyingKey, x448};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey1024, Encapsulate, EncapsulationKey1024, KeyExport};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::Sha512;

const KIB: usize = 1024;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

/// Stand-alone primitives, sized like the protocol's inputs.
struct Prims {
    sk: SigningKey,
    vk: VerifyingKey,
    x_a: x448::StaticSecret,
    x_pub: x448::PublicKey,
    dk: DecapsulationKey1024,
    ek_bytes: Vec<u8>,
}

impl Prims {
    fn new() -> Self {
        let mut r = rng();
        let mut seed = ed448_goldilocks_plus::SecretKey::default();
        r.fill_bytes(&mut seed);
        let sk = SigningKey::from(&seed);
        let vk = sk.verifying_key();
        let x_a = x448::StaticSecret::random_from_rng(&mut r);
        let x_b = x448::StaticSecret::random_from_rng(&mut r);
        let x_pub = x448::PublicKey::from(&x_b);
        let mut s = [0u8; 64];
        r.fill_bytes(&mut s);
        let dk = DecapsulationKey1024::from_seed(Array::from(s));
        let ek_bytes = dk.encapsulation_key().to_bytes().to_vec();
        Self {
            sk,
            vk,
            x_a,
            x_pub,
            dk,
            ek_bytes,
        }
    }
    fn sign(&self, msg: &[u8]) -> [u8; 114] {
        self.sk.sign_ctx(b"ctx", msg).unwrap().to_bytes()
    }
    /// A signature arrives as bytes, so verifying one includes parsing it. (The library's
    /// `Signature::from_bytes` decompresses R, which `verify_ctx` does again: ≈0.43 ms of the
    /// ≈1.65 ms here; there is no unchecked constructor to avoid it.)
    fn verify(&self, sig: &[u8; 114], msg: &[u8]) {
        let sig = Signature::from_bytes(sig).unwrap();
        self.vk.verify_ctx(&sig, b"ctx", msg).unwrap();
    }
    /// Parsing a received Ed448 public key (point decompression).
    fn parse_key(&self) -> VerifyingKey {
        VerifyingKey::from_bytes(self.vk.as_bytes()).unwrap()
    }
    fn dh(&self) -> [u8; 56] {
        self.x_a.diffie_hellman(&self.x_pub).to_bytes()
    }
    fn keygen(&self, r: &mut ChaCha20Rng) -> x448::PublicKey {
        x448::PublicKey::from(&x448::StaticSecret::random_from_rng(r))
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    Hkdf::<Sha512>::new(Some(salt), ikm)
        .expand(info, out)
        .unwrap();
}

fn hmac512(key: &[u8], data: &[u8]) -> [u8; 64] {
    let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn chacha(key: &[u8; 32], pt: &[u8], encrypt: bool) -> Vec<u8> {
    let c = ChaCha20Poly1305::new(&(*key).into());
    let n = [0u8; 12].into();
    if encrypt {
        c.encrypt(
            &n,
            Payload {
                msg: pt,
                aad: &[0u8; 299],
            },
        )
        .unwrap()
    } else {
        c.decrypt(
            &n,
            Payload {
                msg: pt,
                aad: &[0u8; 299],
            },
        )
        .unwrap()
    }
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    let mut r = rng();
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    g.bench_function("pq4", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if bob.one_time_prekey_ids().is_empty() {
                    bob.replenish_one_time_prekeys(100, &mut r);
                }
                let opk = bob.one_time_prekey_ids()[0];
                let wire = bob.bundle(Some(opk)).to_bytes();
                let start = Instant::now();
                let bundle = PreKeyBundle::from_bytes(&wire).unwrap().verify().unwrap();
                let (msg, sa) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
                let msg = x3dh::InitialMessage::from_bytes(&msg.to_bytes()).unwrap();
                let sb = x3dh::respond(&mut bob, &msg).unwrap();
                total += start.elapsed();
                black_box((sa, sb));
            }
            total
        })
    });
    let p = Prims::new();
    let sig = p.sign(&[0u8; 1600]);
    g.bench_function("primitives", |b| {
        b.iter(|| {
            // 3 bundle signatures + the initiator's identity binding on the responder side.
            for _ in 0..4 {
                p.verify(&sig, &[0u8; 1600][..]);
            }
            // Both identities (the bundle's, and the initiator's on the responder side).
            black_box(p.parse_key());
            black_box(p.parse_key());
            let ek = EncapsulationKey1024::new(&Array::try_from(&p.ek_bytes[..]).unwrap()).unwrap();
            black_box(p.keygen(&mut r));
            // 4 DH each side.
            for _ in 0..8 {
                black_box(p.dh());
            }
            let (ct, _) = ek.encapsulate_with_rng(&mut r);
            black_box(p.dk.decapsulate(&ct));
            let mut out = [0u8; 32];
            for _ in 0..2 {
                hkdf(b"X3DH", &[0u8; 313], &[0u8; 3530], &mut out);
            }
            black_box(out)
        })
    });
    g.bench_function("vodozemac", |b| {
        use vodozemac::olm::{Account, OlmMessage, SessionConfig};
        let alice = Account::new();
        let mut bob = Account::new();
        b.iter(|| {
            bob.generate_one_time_keys(1);
            let otk = *bob.one_time_keys().values().next().unwrap();
            bob.mark_keys_as_published();
            let mut s = alice
                .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
                .unwrap();
            let OlmMessage::PreKey(m) = s.encrypt([0u8; KIB]).unwrap() else {
                unreachable!()
            };
            let r = bob
                .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
                .unwrap();
            black_box(r.plaintext)
        })
    });
    g.finish();
}

fn pq4_pair(r: &mut ChaCha20Rng) -> (KeyStore, KeyStore, Session, Session) {
    let alice = KeyStore::generate(r).unwrap();
    let mut bob = KeyStore::generate(r).unwrap();
    let bundle = bob.bundle(Some(1)).verify().unwrap();
    let (msg, sa) = x3dh::initiate(alice.identity(), &bundle, r).unwrap();
    let sb = x3dh::respond(&mut bob, &msg).unwrap();
    let mut a = Session::new(sa, r).unwrap();
    let mut b = Session::new(sb, r).unwrap();
    let m = a.encrypt(alice.identity(), 0, b"hi").unwrap();
    b.decrypt(&m, r).unwrap();
    (alice, bob, a, b)
}

fn olm_pair() -> (vodozemac::olm::Session, vodozemac::olm::Session) {
    use vodozemac::olm::{Account, OlmMessage, SessionConfig};
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(m) = a.encrypt("hi").unwrap() else {
        unreachable!()
    };
    let b = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
        .unwrap()
        .session;
    (a, b)
}

fn ratchet(c: &mut Criterion) {
    let payload = vec![0x42u8; KIB];
    let p = Prims::new();
    let mut r = rng();

    let mut g = c.benchmark_group("ratchet_burst_1KiB");
    let (alice, _bob, mut a, mut b) = pq4_pair(&mut r);
    let mut ts = 1;
    g.bench_function("pq4", |bn| {
        bn.iter(|| {
            ts += 1;
            let m = a.encrypt(alice.identity(), ts, &payload).unwrap();
            let m = constella_keys::RatchetMessage::from_bytes(&m.to_bytes()).unwrap();
            black_box(b.decrypt(&m, &mut r).unwrap())
        })
    });
    g.bench_function("primitives", |bn| {
        let key = [7u8; 32];
        bn.iter(|| {
            // Sender: KDF_CK (2 HMAC), message keys (HKDF), seal, sign. Receiver: the same
            // derivations, verify, open.
            let mut out = [0u8; 44];
            for _ in 0..2 {
                black_box(hmac512(&key, &[1]));
                black_box(hmac512(&key, &[2]));
                hkdf(&[], &key, b"PQ4 message keys", &mut out);
            }
            let ct = chacha(&key, &payload, true);
            let sig = p.sign(&[&[0u8; 299][..], &ct].concat());
            p.verify(&sig, &[&[0u8; 299][..], &ct].concat());
            black_box(chacha(&key, &ct, false))
        })
    });
    let (mut oa, mut ob) = olm_pair();
    g.bench_function("vodozemac", |bn| {
        bn.iter(|| {
            let m = oa.encrypt(&payload).unwrap();
            black_box(ob.decrypt(&m).unwrap())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ratchet_pingpong_1KiB");
    let (alice, bob, mut a, mut b) = pq4_pair(&mut r);
    let mut turn = false;
    g.bench_function("pq4", |bn| {
        bn.iter(|| {
            ts += 1;
            turn = !turn;
            let (snd, rcv, id) = if turn {
                (&mut b, &mut a, bob.identity())
            } else {
                (&mut a, &mut b, alice.identity())
            };
            let m = snd.encrypt(id, ts, &payload).unwrap();
            let m = constella_keys::RatchetMessage::from_bytes(&m.to_bytes()).unwrap();
            black_box(rcv.decrypt(&m, &mut r).unwrap())
        })
    });
    g.bench_function("primitives", |bn| {
        let key = [7u8; 32];
        bn.iter(|| {
            // As the burst, plus the receiver's DH ratchet step: 2 X448 DH, 1 key generation,
            // 2 KDF_RK.
            let mut out = [0u8; 64];
            black_box(p.dh());
            black_box(p.dh());
            black_box(p.keygen(&mut r));
            hkdf(&key, &[0u8; 56], b"PQ4 root", &mut out);
            hkdf(&key, &[0u8; 56], b"PQ4 root", &mut out);
            let mut mk = [0u8; 44];
            for _ in 0..2 {
                black_box(hmac512(&key, &[1]));
                black_box(hmac512(&key, &[2]));
                hkdf(&[], &key, b"PQ4 message keys", &mut mk);
            }
            let ct = chacha(&key, &payload, true);
            let sig = p.sign(&[&[0u8; 299][..], &ct].concat());
            p.verify(&sig, &[&[0u8; 299][..], &ct].concat());
            black_box(chacha(&key, &ct, false))
        })
    });
    let (mut oa, mut ob) = olm_pair();
    let mut turn = false;
    g.bench_function("vodozemac", |bn| {
        bn.iter(|| {
            turn = !turn;
            let (snd, rcv) = if turn {
                (&mut ob, &mut oa)
            } else {
                (&mut oa, &mut ob)
            };
            let m = snd.encrypt(&payload).unwrap();
            black_box(rcv.decrypt(&m).unwrap())
        })
    });
    g.finish();
}

fn group(c: &mut Criterion) {
    let payload = vec![0x42u8; KIB];
    let p = Prims::new();
    let mut r = rng();
    let mut g = c.benchmark_group("group_1KiB");
    let alice = KeyStore::generate(&mut r).unwrap();
    let bob = KeyStore::generate(&mut r).unwrap();
    let mut ts = 0u64;
    let mut ga = GroupSession::create(
        alice.identity_public(),
        &[bob.identity_public().clone()],
        ts,
        &mut r,
    )
    .unwrap();
    let mut gb =
        GroupSession::join(&ga.share(), bob.identity_public(), alice.identity_public()).unwrap();
    g.bench_function("pq4", |bn| {
        bn.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                ts += 1;
                if ga.needs_rotation(ts) {
                    // Rotation is every 100 messages; keep it out of the per-message figure.
                    let share = ga.rotate(ts, &mut r).unwrap();
                    gb.apply(&share, alice.identity_public()).unwrap();
                }
                let start = Instant::now();
                let m = ga.encrypt(alice.identity(), ts, &payload).unwrap();
                let m = constella_keys::GroupMessage::from_bytes(&m.to_bytes()).unwrap();
                black_box(gb.decrypt(&m).unwrap());
                total += start.elapsed();
            }
            total
        })
    });
    g.bench_function("primitives", |bn| {
        let key = [7u8; 32];
        bn.iter(|| {
            let mut mk = [0u8; 32];
            let mut aead = [0u8; 44];
            for _ in 0..2 {
                hkdf(&[], &key, b"MessageKey\0\0\0\0\0\0\0\x05", &mut mk);
                hkdf(&[0u8; 113], &mk, b"PQ4 group AEAD", &mut aead);
            }
            let ct = chacha(&key, &payload, true);
            let sig = p.sign(&[&[0u8; 162][..], &ct].concat());
            p.verify(&sig, &[&[0u8; 162][..], &ct].concat());
            black_box(chacha(&key, &ct, false))
        })
    });
    {
        use vodozemac::megolm::{GroupSession as Outbound, InboundGroupSession, SessionConfig};
        let mut out = Outbound::new(SessionConfig::version_1());
        let mut inb = InboundGroupSession::new(&out.session_key(), SessionConfig::version_1());
        g.bench_function("vodozemac", |bn| {
            bn.iter(|| {
                let m = out.encrypt(&payload);
                black_box(inb.decrypt(&m).unwrap())
            })
        });
    }
    g.finish();
}

fn unlock(c: &mut Criterion) {
    let mut g = c.benchmark_group("argon2id_unlock");
    g.sample_size(10);
    let mut r = rng();
    let store = KeyStore::generate(&mut r).unwrap();
    let key = PasswordKey::generate("password", KdfParams::PRODUCTION, &mut r).unwrap();
    let blob = store.seal(&key, &mut r).unwrap().to_bytes();
    g.bench_function("pq4", |bn| {
        bn.iter(|| {
            let blob = SealedBlob::from_bytes(&blob).unwrap();
            let k = blob.unlock("password", &KdfParams::PRODUCTION).unwrap();
            black_box(KeyStore::open(&blob, &k).unwrap())
        })
    });
    let p = Prims::new();
    g.bench_function("primitives", |bn| {
        let params = argon2::Params::new(64 * 1024, 3, 4, Some(32)).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let ct = chacha(&[1u8; 32], &vec![0u8; 9000], true);
        bn.iter(|| {
            let mut k = [0u8; 32];
            a.hash_password_into(b"password", &[0u8; 16], &mut k)
                .unwrap();
            let mut out = [0u8; 32];
            hkdf(&[0u8; 16], &k, b"Auth", &mut out);
            hkdf(&[0u8; 32], &k, b"PQ4 seal\x01", &mut out);
            black_box(chacha(&[1u8; 32], &ct, false));
            // Rebuilding the keys: Ed448 key expansion + binding signature, 2 X448 public keys
            // (identity, signed prekey), ML-KEM key expansion from its seed.
            let sk = SigningKey::from(&ed448_goldilocks_plus::SecretKey::default());
            black_box(sk.sign_ctx(b"ctx", &[0u8; 113]).unwrap());
            black_box(p.keygen(&mut r));
            black_box(p.keygen(&mut r));
            black_box(DecapsulationKey1024::from_seed(Array::from([3u8; 64])))
        })
    });
    g.bench_function("vodozemac", |bn| {
        // vodozemac has no password KDF; its equivalent is unpickling an account with a
        // 32-byte pickle key, shown for scale only.
        let mut acc = vodozemac::olm::Account::new();
        acc.generate_one_time_keys(100);
        let pickled = acc.pickle().encrypt(&[1u8; 32]);
        bn.iter(|| {
            black_box(vodozemac::olm::AccountPickle::from_encrypted(&pickled, &[1u8; 32]).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, handshake, ratchet, group, unlock);
criterion_main!(benches);
