//! Recomputes the known-answer vectors from docs/pq4.md using only the primitive crates, not
//! constella-keys: evidence that the document alone is enough for a compatible implementation.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use ed448_goldilocks_plus::{SigningKey, x448};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey1024, KeyExport};
use serde_json::Value;
use sha2::{Sha256, Sha512};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hx(v).try_into().unwrap()
}

fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    Hkdf::<Sha512>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .unwrap();
    out
}

fn hmac512(key: &[u8], data: &[u8]) -> [u8; 64] {
    let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn x(secret: &[u8; 56], public: &[u8; 56]) -> [u8; 56] {
    x448::StaticSecret::from(*secret)
        .diffie_hellman(&x448::PublicKey::from(*public))
        .to_bytes()
}

fn xpub(secret: &[u8; 56]) -> [u8; 56] {
    x448::PublicKey::from(&x448::StaticSecret::from(*secret)).to_bytes()
}

fn ik(side: &Value) -> Vec<u8> {
    let mut seed = ed448_goldilocks_plus::SecretKey::default();
    seed.copy_from_slice(&hx(&side["identity_ed448_seed"]));
    let ed = SigningKey::from(&seed).verifying_key();
    let ik = [
        &ed.as_bytes()[..],
        &xpub(&arr(&side["identity_x448_secret"])),
    ]
    .concat();
    assert_eq!(ik, hx(&side["identity_public"]));
    ik
}

#[test]
fn x3dh_and_first_ratchet_messages_from_the_document() {
    let v = load("x3dh");
    let (a, b) = (&v["alice"], &v["bob"]);
    let (ik_a, ik_b) = (ik(a), ik(b));
    let spk_b = xpub(&arr(&b["signed_prekey_secret"]));
    let opk_b = xpub(&arr(&b["one_time_prekey_secret"]));
    let ek_secret: [u8; 56] = arr(&v["alice_ephemeral_secret"]);
    let ek = xpub(&ek_secret);
    let dk = DecapsulationKey1024::from_seed(Array::from(arr::<64>(&b["kem_prekey_seed_d_z"])));
    let kk_b = dk.encapsulation_key().to_bytes().to_vec();
    let m: [u8; 32] = arr(&v["kem_encaps_randomness_m"]);
    let (ct, ss) = dk
        .encapsulation_key()
        .encapsulate_deterministic(&Array::from(m));
    assert_eq!(ct.to_vec(), hx(&v["kem_ciphertext"]));
    assert_eq!(dk.decapsulate(&ct), ss);

    let ikm = [
        &[0xFFu8; 57][..],
        &x(&arr(&a["identity_x448_secret"]), &spk_b),
        &x(&ek_secret, &ik_b[57..].try_into().unwrap()),
        &x(&ek_secret, &spk_b),
        &x(&ek_secret, &opk_b),
        &ss,
    ]
    .concat();
    let info = [&ik_a[..], &ik_b, &ek, &spk_b, &opk_b, &kk_b, &ct].concat();
    let sk: [u8; 32] = hkdf(b"X3DH", &ikm, &info);
    assert_eq!(sk.to_vec(), hx(&v["shared_secret"]));

    // Ratchet: Alice's first sending chain and her first three messages.
    let r = load("ratchet");
    let dh_a: [u8; 56] = arr(&r["alice_first_ratchet_secret"]);
    let out: [u8; 64] = hkdf(&sk, &x(&dh_a, &spk_b), b"PQ4 root");
    assert_eq!(out[..32].to_vec(), hx(&r["alice_root_key_after_init"]));
    let mut ck: [u8; 32] = out[32..].try_into().unwrap();
    for (n, msg) in r["alice_to_bob"].as_array().unwrap().iter().enumerate() {
        let mk = &hmac512(&ck, &[1])[..32];
        assert_eq!(mk.to_vec(), hx(&msg["message_key"]), "message {n}");
        ck = hmac512(&ck, &[2])[..32].try_into().unwrap();
        let header = [
            &xpub(&dh_a)[..],
            &0u32.to_be_bytes(),
            &(n as u32).to_be_bytes(),
        ]
        .concat();
        assert_eq!(header, hx(&msg["header"]));
        let ts = msg["timestamp"].as_u64().unwrap();
        let ad = [&[1u8][..], &ik_a, &ik_b, &ts.to_be_bytes(), &header].concat();
        let okm: [u8; 44] = hkdf(&[], mk, b"PQ4 message keys");
        let c = ChaCha20Poly1305::new(&<[u8; 32]>::try_from(&okm[..32]).unwrap().into());
        let nonce: [u8; 12] = okm[32..].try_into().unwrap();
        let pt = c
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &hx(&msg["ciphertext"]),
                    aad: &ad,
                },
            )
            .unwrap();
        assert_eq!(pt, msg["plaintext"].as_str().unwrap().as_bytes());
        // The signature: pure Ed448 with context over AD ‖ ciphertext.
        let vk = ed448_goldilocks_plus::VerifyingKey::from_bytes(
            &<[u8; 57]>::try_from(&ik_a[..57]).unwrap(),
        )
        .unwrap();
        let sig = ed448_goldilocks_plus::Signature::from_bytes(&arr(&msg["signature"])).unwrap();
        vk.verify_ctx(
            &sig,
            b"PQ4 ratchet message",
            &[&ad[..], &hx(&msg["ciphertext"])].concat(),
        )
        .unwrap();
    }
}

#[test]
fn group_keys_and_password_proof_from_the_document() {
    let g = load("group");
    let key = hx(&g["group_key"]);
    for e in g["message_keys"].as_array().unwrap() {
        let n = e["message_number"].as_u64().unwrap();
        let info = [&b"MessageKey"[..], &n.to_be_bytes()].concat();
        let mk: [u8; 32] = hkdf(&[], &key, &info);
        assert_eq!(mk.to_vec(), hx(&e["message_key"]), "n = {n}");
    }

    let p = load("password");
    let salt = hx(&p["salt"]);
    let entry = &p["argon2id"][0];
    let params = argon2::Params::new(
        entry["m_kib"].as_u64().unwrap() as u32,
        entry["t"].as_u64().unwrap() as u32,
        entry["p"].as_u64().unwrap() as u32,
        Some(32),
    )
    .unwrap();
    let mut ek = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(p["password"].as_str().unwrap().as_bytes(), &salt, &mut ek)
        .unwrap();
    assert_eq!(ek.to_vec(), hx(&entry["encryption_key"]));
    let auth: [u8; 32] = hkdf(&salt, &ek, b"Auth");
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&auth).unwrap();
    m.update(b"Login");
    assert_eq!(
        m.finalize().into_bytes().to_vec(),
        hx(&entry["login_proof"])
    );
}
