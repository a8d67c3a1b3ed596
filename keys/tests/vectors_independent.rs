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

/// The subset of CBOR PQ4 uses (docs/pq4.md §2), written by hand from RFC 8949: shortest-form
/// heads, definite lengths, text keys in the documented order.
enum Cbor {
    U(u64),
    B(Vec<u8>),
    Null,
    A(Vec<Cbor>),
    M(Vec<(&'static str, Cbor)>),
}

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn cbor(c: &Cbor, out: &mut Vec<u8>) {
    match c {
        Cbor::U(n) => head(0, *n, out),
        Cbor::B(b) => {
            head(2, b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Cbor::Null => out.push(0xf6),
        Cbor::A(items) => {
            head(4, items.len() as u64, out);
            items.iter().for_each(|i| cbor(i, out));
        }
        Cbor::M(entries) => {
            head(5, entries.len() as u64, out);
            for (k, v) in entries {
                head(3, k.len() as u64, out);
                out.extend_from_slice(k.as_bytes());
                cbor(v, out);
            }
        }
    }
}

/// `0x01 ‖ CBOR(value)`: a wire object.
fn wire(value: &Cbor) -> Vec<u8> {
    let mut out = vec![1u8];
    cbor(value, &mut out);
    out
}

fn signing_key(side: &Value) -> SigningKey {
    let mut seed = ed448_goldilocks_plus::SecretKey::default();
    seed.copy_from_slice(&hx(&side["identity_ed448_seed"]));
    SigningKey::from(&seed)
}

fn sign(side: &Value, ctx: &[u8], msg: &[u8]) -> Vec<u8> {
    signing_key(side)
        .sign_ctx(ctx, msg)
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// The `Identity` map of a side, its binding signature computed here.
fn identity_map(side: &Value) -> Cbor {
    let ik = ik(side);
    Cbor::M(vec![
        ("sig", Cbor::B(ik[..57].to_vec())),
        ("dh", Cbor::B(ik[57..].to_vec())),
        ("bind", Cbor::B(sign(side, b"PQ4 identity binding", &ik))),
    ])
}

fn aead_seal(key: &[u8], nonce: &[u8], ad: &[u8], pt: &[u8]) -> Vec<u8> {
    let c = ChaCha20Poly1305::new(&<[u8; 32]>::try_from(key).unwrap().into());
    let nonce: [u8; 12] = nonce.try_into().unwrap();
    c.encrypt(&nonce.into(), Payload { msg: pt, aad: ad })
        .unwrap()
}

/// KDF_CK's message key, and the AEAD key and nonce from it (§6).
fn message_keys(ck: &[u8; 32]) -> ([u8; 32], [u8; 32], [u8; 12]) {
    let mk: [u8; 32] = hmac512(ck, &[1])[..32].try_into().unwrap();
    let okm: [u8; 44] = hkdf(&[], &mk, b"PQ4 message keys");
    (
        mk,
        okm[..32].try_into().unwrap(),
        okm[32..].try_into().unwrap(),
    )
}

/// Checks one recorded ratchet message (sent from `sender` to `recipient` with chain key
/// `ck`, ratchet public key `dh`, `pn`, `n`, plaintext `content`) and returns its map.
fn ratchet_message(
    rec: &Value,
    ck: &[u8; 32],
    (dh, pn, n): (&[u8; 56], u32, u32),
    (sender, recipient): (&Value, &Value),
    content: &[u8],
) -> Cbor {
    let (mk, key, nonce) = message_keys(ck);
    assert_eq!(
        mk.to_vec(),
        hx(&rec["message_key"]),
        "MK is the chain output"
    );
    assert_eq!(key.to_vec(), hx(&rec["aead_key"]));
    assert_eq!(nonce.to_vec(), hx(&rec["nonce"]));
    let header = [&dh[..], &pn.to_be_bytes(), &n.to_be_bytes()].concat();
    assert_eq!(header, hx(&rec["header"]));
    let ts = rec["timestamp"].as_u64().unwrap();
    let ad = [
        &[1u8][..],
        &ik(sender),
        &ik(recipient),
        &ts.to_be_bytes(),
        &header,
    ]
    .concat();
    let ct = aead_seal(&key, &nonce, &ad, content);
    assert_eq!(ct, hx(&rec["ciphertext"]));
    let sig = sign(sender, b"PQ4 ratchet message", &[&ad[..], &ct].concat());
    assert_eq!(sig, hx(&rec["signature"]));
    Cbor::M(vec![
        ("dh", Cbor::B(dh.to_vec())),
        ("pn", Cbor::U(pn.into())),
        ("n", Cbor::U(n.into())),
        ("ts", Cbor::U(ts)),
        ("ct", Cbor::B(ct)),
        ("sig", Cbor::B(sig)),
    ])
}

fn kdf_rk(rk: &[u8], dh_out: &[u8; 56]) -> ([u8; 32], [u8; 32]) {
    let out: [u8; 64] = hkdf(rk, dh_out, b"PQ4 root");
    (out[..32].try_into().unwrap(), out[32..].try_into().unwrap())
}

/// The bundle map of a side (§2, §3), its signatures computed here, with the one-time prekey
/// `(id, public key)` or `null`.
fn bundle_map(side: &Value, opk: Option<(u32, [u8; 56])>) -> Cbor {
    let spk_id = side["signed_prekey_id"].as_u64().unwrap() as u32;
    let spk = xpub(&arr(&side["signed_prekey_secret"]));
    let kk_id = side["kem_prekey_id"].as_u64().unwrap() as u32;
    let dk = DecapsulationKey1024::from_seed(Array::from(arr::<64>(&side["kem_prekey_seed_d_z"])));
    let kk = dk.encapsulation_key().to_bytes().to_vec();
    let opk = match opk {
        Some((id, key)) => Cbor::M(vec![
            ("id", Cbor::U(id.into())),
            ("key", Cbor::B(key.to_vec())),
        ]),
        None => Cbor::Null,
    };
    Cbor::M(vec![
        ("ik", identity_map(side)),
        (
            "spk",
            signed_prekey_map(side, b"PQ4 signed prekey", spk_id, &spk).0,
        ),
        ("opk", opk),
        (
            "kk",
            signed_prekey_map(side, b"PQ4 KEM prekey", kk_id, &kk).0,
        ),
    ])
}

#[test]
fn bundles_initial_message_and_both_ratchet_directions_from_the_document() {
    // bundle.json: a bundle offering one-time prekey 1.
    let v = load("bundle");
    let s = &v["secrets"];
    let opk = (
        s["one_time_prekey_id"].as_u64().unwrap() as u32,
        xpub(&arr(&s["one_time_prekey_secret"])),
    );
    assert_eq!(wire(&bundle_map(s, Some(opk))), hx(&v["bundle_wire"]));

    // x3dh.json: the bundle and the initial message, with an OPK.
    let v = load("x3dh");
    let (a, b) = (&v["alice"], &v["bob"]);
    let opk = (
        b["one_time_prekey_id"].as_u64().unwrap() as u32,
        xpub(&arr(&b["one_time_prekey_secret"])),
    );
    assert_eq!(wire(&bundle_map(b, Some(opk))), hx(&v["bundle_wire"]));
    let initial = Cbor::M(vec![
        ("ik", identity_map(a)),
        ("to", Cbor::B(ik(b))),
        (
            "ek",
            Cbor::B(xpub(&arr(&v["alice_ephemeral_secret"])).to_vec()),
        ),
        ("spk", Cbor::U(b["signed_prekey_id"].as_u64().unwrap())),
        ("opk", Cbor::U(opk.0.into())),
        ("kk", Cbor::U(b["kem_prekey_id"].as_u64().unwrap())),
        ("ct", Cbor::B(hx(&v["kem_ciphertext"]))),
    ]);
    assert_eq!(wire(&initial), hx(&v["initial_message_wire"]));

    // ratchet.json, both directions: Alice's first chain, then Bob's after his first step.
    let r = load("ratchet");
    let sk = hx(&r["shared_secret"]);
    let spk_b = xpub(&arr(&b["signed_prekey_secret"]));
    let dh_a: [u8; 56] = arr(&r["alice_first_ratchet_secret"]);
    let dh_b: [u8; 56] = arr(&r["bob_first_ratchet_secret"]);
    let (rk1, ck_a) = kdf_rk(&sk, &x(&dh_a, &spk_b));
    let (_, ck_b) = kdf_rk(&rk1, &x(&dh_b, &xpub(&dh_a)));
    for (list, ck0, dh, (sender, recipient)) in [
        ("alice_to_bob", ck_a, xpub(&dh_a), (a, b)),
        ("bob_to_alice", ck_b, xpub(&dh_b), (b, a)),
    ] {
        let mut ck = ck0;
        for (n, m) in r[list].as_array().unwrap().iter().enumerate() {
            // ratchet.json predates the aead_key/nonce fields: derive them from MK here.
            let (mk, key, nonce) = message_keys(&ck);
            let mut m = m.clone();
            assert_eq!(hx(&m["message_key"]), mk.to_vec(), "{list} {n}: MK");
            m["aead_key"] = Value::String(hex::encode(key));
            m["nonce"] = Value::String(hex::encode(nonce));
            let text = m["plaintext"].as_str().unwrap().as_bytes().to_vec();
            let msg = ratchet_message(&m, &ck, (&dh, 0, n as u32), (sender, recipient), &text);
            assert_eq!(wire(&msg), hx(&m["wire"]), "{list} {n}");
            ck = hmac512(&ck, &[2])[..32].try_into().unwrap();
        }
    }
}

/// The handshake without a one-time prekey: no DH4, no OPK in the info, `opk: null` on the
/// wire — and the bundle and initial message re-encoded by hand.
fn handshake_without_opk() -> (Value, Cbor) {
    let v = load("x3dh_no_opk");
    let (a, b) = (&v["alice"], &v["bob"]);
    assert!(b["one_time_prekey_id"].is_null());
    let (ik_a, ik_b) = (ik(a), ik(b));
    let spk_b = xpub(&arr(&b["signed_prekey_secret"]));
    let spk_id = b["signed_prekey_id"].as_u64().unwrap() as u32;
    let kk_id = b["kem_prekey_id"].as_u64().unwrap() as u32;
    let dk = DecapsulationKey1024::from_seed(Array::from(arr::<64>(&b["kem_prekey_seed_d_z"])));
    let kk_b = dk.encapsulation_key().to_bytes().to_vec();
    let bundle = bundle_map(b, None);
    assert_eq!(wire(&bundle), hx(&v["bundle_wire"]));

    let ek_secret: [u8; 56] = arr(&v["alice_ephemeral_secret"]);
    let ek = xpub(&ek_secret);
    let m: [u8; 32] = arr(&v["kem_encaps_randomness_m"]);
    let (ct, ss) = dk
        .encapsulation_key()
        .encapsulate_deterministic(&Array::from(m));
    assert_eq!(ct.to_vec(), hx(&v["kem_ciphertext"]));
    let ikm = [
        &[0xFFu8; 57][..],
        &x(&arr(&a["identity_x448_secret"]), &spk_b),
        &x(&ek_secret, &ik_b[57..].try_into().unwrap()),
        &x(&ek_secret, &spk_b),
        &ss,
    ]
    .concat();
    let info = [&ik_a[..], &ik_b, &ek, &spk_b, &kk_b, &ct].concat();
    let sk: [u8; 32] = hkdf(b"X3DH", &ikm, &info);
    assert_eq!(sk.to_vec(), hx(&v["shared_secret"]));

    let initial = Cbor::M(vec![
        ("ik", identity_map(a)),
        ("to", Cbor::B(ik_b)),
        ("ek", Cbor::B(ek.to_vec())),
        ("spk", Cbor::U(spk_id.into())),
        ("opk", Cbor::Null),
        ("kk", Cbor::U(kk_id.into())),
        ("ct", Cbor::B(ct.to_vec())),
    ]);
    assert_eq!(wire(&initial), hx(&v["initial_message_wire"]));
    (v, initial)
}

#[test]
fn handshake_without_one_time_prekey_from_the_document() {
    handshake_without_opk();
}

#[test]
fn envelopes_and_content_from_the_document() {
    let (v, initial) = handshake_without_opk();
    let (a, b) = (&v["alice"], &v["bob"]);
    let e = load("envelope");
    let sk = hx(&v["shared_secret"]);
    let spk_b = xpub(&arr(&b["signed_prekey_secret"]));
    let dh_a: [u8; 56] = arr(&e["alice_first_ratchet_secret"]);
    let dh_b: [u8; 56] = arr(&e["bob_first_ratchet_secret"]);
    let (dh_a_pub, dh_b_pub) = (xpub(&dh_a), xpub(&dh_b));

    // Alice's first message: chat text, with the initial message attached.
    let (rk1, ck_a) = kdf_rk(&sk, &x(&dh_a, &spk_b));
    let first = &e["alice_to_bob_with_init"];
    let content = [&[1u8][..], b"hello bob"].concat();
    assert_eq!(content, hx(&first["content"]));
    let msg = ratchet_message(first, &ck_a, (&dh_a_pub, 0, 0), (a, b), &content);
    let envelope = Cbor::M(vec![
        ("from", Cbor::B(ik(a))),
        ("init", initial),
        ("msg", msg),
    ]);
    assert_eq!(wire(&envelope), hx(&first["wire"]));

    // Bob's reply: his first DH step, a group key share, no initial message.
    let (_, ck_b) = kdf_rk(&rk1, &x(&dh_b, &dh_a_pub));
    let reply = &e["bob_to_alice_group_key_share"];
    let g = &reply["group"];
    let share = wire(&Cbor::M(vec![
        ("gid", Cbor::B(hx(&g["group_id"]))),
        ("epoch", Cbor::U(g["epoch"].as_u64().unwrap())),
        ("key", Cbor::B(hx(&g["group_key"]))),
        ("at", Cbor::U(g["at"].as_u64().unwrap())),
        ("members", Cbor::A(vec![identity_map(b), identity_map(a)])),
    ]));
    let content = [&[2u8][..], &share].concat();
    assert_eq!(content, hx(&reply["content"]));
    let msg = ratchet_message(reply, &ck_b, (&dh_b_pub, 0, 0), (b, a), &content);
    let envelope = Cbor::M(vec![
        ("from", Cbor::B(ik(b))),
        ("init", Cbor::Null),
        ("msg", msg),
    ]);
    assert_eq!(wire(&envelope), hx(&reply["wire"]));
}

fn argon2id(password: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> [u8; 32] {
    let params = argon2::Params::new(m, t, p, Some(32)).unwrap();
    let mut out = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .unwrap();
    out
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[test]
fn auth_key_unlock_check_and_normalisation_from_the_document() {
    let p = load("password");
    let salt = hx(&p["salt"]);
    // The test-parameter entry (the production one costs 64 MiB; the KAT test covers it).
    let entry = &p["argon2id"][0];
    let ek = argon2id(p["password"].as_str().unwrap().as_bytes(), &salt, 64, 1, 1);
    assert_eq!(ek.to_vec(), hx(&entry["encryption_key"]));
    let auth: [u8; 32] = hkdf(&salt, &ek, b"Auth");
    assert_eq!(auth.to_vec(), hx(&entry["auth_key"]));
    assert_eq!(hmac256(&auth, b"Login"), hx(&entry["login_proof"]));
    assert_eq!(
        hmac256(&auth, b"PQ4 unlock check"),
        hx(&entry["unlock_check"])
    );

    // The password is hashed as UTF-8 of its NFC form.
    let n = &p["normalisation"];
    let typed = n["password"].as_str().unwrap();
    assert_eq!(typed.as_bytes(), hx(&n["password_utf8"]));
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(typed);
    assert_eq!(nfc.as_bytes(), hx(&n["nfc_utf8"]));
    assert_ne!(
        nfc.as_bytes(),
        typed.as_bytes(),
        "the vector exercises normalisation"
    );
    let ek = argon2id(nfc.as_bytes(), &salt, 64, 1, 1);
    assert_eq!(ek.to_vec(), hx(&n["encryption_key"]));
    let auth: [u8; 32] = hkdf(&salt, &ek, b"Auth");
    assert_eq!(hmac256(&auth, b"Login"), hx(&n["login_proof"]));
}

// The plaintexts of sealed state, key by key in the document's order (§4).
const KEY_STORE: &[&str] = &[
    "sign", "dh", "spk_id", "spk", "spk_sig", "opks", "kk_id", "kk", "kk_sig", "next_id",
];
const SESSION: &[&str] = &[
    "local",
    "remote",
    "root",
    "dh_self",
    "dh_remote",
    "send",
    "recv",
    "pn",
    "skipped",
    "previous",
];
const GROUP_STATE: &[&str] = &["share", "own", "by", "sent", "seen", "retired"];
/// The order of the maps found under each field name (or in the list under it).
const LAYOUT: &[(&str, &[&str])] = &[
    ("local", &["sig", "dh", "bind"]),
    ("remote", &["sig", "dh", "bind"]),
    ("own", &["sig", "dh", "bind"]),
    ("members", &["sig", "dh", "bind"]),
    ("send", &["key", "index"]),
    ("recv", &["key", "index"]),
    ("skipped", &["dh", "n", "key"]),
    ("opks", &["id", "key", "public"]),
    ("share", &["gid", "epoch", "key", "at", "members"]),
    ("seen", &["from", "n"]),
    ("retired", &["epoch", "key", "seen"]),
];

fn leaf(v: &Value) -> Cbor {
    match v {
        Value::String(_) => Cbor::B(hx(v)),
        Value::Number(n) => Cbor::U(n.as_u64().unwrap()),
        Value::Null => Cbor::Null,
        other => panic!("not a leaf: {other}"),
    }
}

fn encode_fields(v: &Value, order: &[&'static str]) -> Cbor {
    assert_eq!(v.as_object().unwrap().len(), order.len(), "{v}");
    Cbor::M(
        order
            .iter()
            .map(|k| (*k, encode_field(k, &v[*k])))
            .collect(),
    )
}

fn encode_field(name: &str, v: &Value) -> Cbor {
    let layout = || LAYOUT.iter().find(|(n, _)| *n == name).unwrap().1;
    match v {
        Value::Object(_) => encode_fields(v, layout()),
        Value::Array(items) => Cbor::A(
            items
                .iter()
                .map(|i| match i {
                    Value::Object(_) => encode_fields(i, layout()),
                    Value::Array(inner) => Cbor::A(inner.iter().map(leaf).collect()),
                    _ => leaf(i),
                })
                .collect(),
        ),
        _ => leaf(v),
    }
}

#[test]
fn sealed_blobs_from_the_document() {
    let s = load("sealed");
    let salt = hx(&s["salt"]);
    let ek = argon2id(s["password"].as_str().unwrap().as_bytes(), &salt, 64, 1, 1);
    assert_eq!(ek.to_vec(), hx(&s["encryption_key"]));
    let auth: [u8; 32] = hkdf(&salt, &ek, b"Auth");
    let check = hmac256(&auth, b"PQ4 unlock check");
    assert_eq!(check, hx(&s["unlock_check"]));

    for (name, order) in [
        ("key_store", KEY_STORE),
        ("session", SESSION),
        ("group", GROUP_STATE),
    ] {
        let b = &s[name];
        let kind = b["kind"].as_u64().unwrap() as u8;
        // The plaintext: 0x01 ‖ CBOR map, keys in the documented order.
        let plaintext = hx(&b["plaintext"]);
        assert_eq!(
            wire(&encode_fields(&b["plaintext_fields"], order)),
            plaintext,
            "{name}"
        );
        // k is one byte in the HKDF info and in the header.
        let bsalt = hx(&b["bsalt"]);
        let blob_key: [u8; 32] = hkdf(&bsalt, &ek, &[&b"PQ4 seal"[..], &[kind]].concat());
        assert_eq!(blob_key.to_vec(), hx(&b["blob_key"]), "{name}");
        let header = [
            &[1u8, kind][..],
            &salt,
            &64u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            &check,
            &bsalt,
        ]
        .concat();
        assert_eq!(header.len(), 94);
        assert_eq!(header, hx(&b["header"]), "{name}");
        let ct = aead_seal(&blob_key, &[0u8; 12], &header, &plaintext);
        assert_eq!(ct, hx(&b["ciphertext"]), "{name}");
        let blob = Cbor::M(vec![
            ("kind", Cbor::U(kind.into())),
            ("salt", Cbor::B(salt.clone())),
            ("m", Cbor::U(64)),
            ("t", Cbor::U(1)),
            ("p", Cbor::U(1)),
            ("check", Cbor::B(check.clone())),
            ("bsalt", Cbor::B(bsalt)),
            ("ct", Cbor::B(ct)),
        ]);
        assert_eq!(wire(&blob), hx(&b["wire"]), "{name}");
    }

    // The key store's fields follow from its secrets: publics and signatures recomputed here,
    // one-time prekeys by ascending id, each below `next_id`.
    let ks = &s["key_store"];
    let (f, secrets) = (&ks["plaintext_fields"], &ks["secrets"]);
    assert_eq!(f["sign"], secrets["identity_ed448_seed"]);
    assert_eq!(f["dh"], secrets["identity_x448_secret"]);
    assert_eq!(f["spk"], secrets["signed_prekey_secret"]);
    assert_eq!(f["kk"], secrets["kem_prekey_seed_d_z"]);
    let spk_id = f["spk_id"].as_u64().unwrap() as u32;
    let spk = xpub(&arr(&f["spk"]));
    let spk_signed = [&spk_id.to_be_bytes()[..], &spk].concat();
    assert_eq!(
        hx(&f["spk_sig"]),
        sign(secrets, b"PQ4 signed prekey", &spk_signed)
    );
    let kk_id = f["kk_id"].as_u64().unwrap() as u32;
    let dk = DecapsulationKey1024::from_seed(Array::from(arr::<64>(&f["kk"])));
    let kk_signed = [&kk_id.to_be_bytes()[..], &dk.encapsulation_key().to_bytes()].concat();
    assert_eq!(
        hx(&f["kk_sig"]),
        sign(secrets, b"PQ4 KEM prekey", &kk_signed)
    );
    let ids: Vec<u64> = f["opks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(hx(&o["public"]), xpub(&arr(&o["key"])).to_vec());
            o["id"].as_u64().unwrap()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(ids.iter().all(|id| *id < f["next_id"].as_u64().unwrap()));
}

#[test]
fn group_messages_from_the_document() {
    let g = load("group");
    // The sender is the x3dh vector's Alice.
    let alice = &load("x3dh")["alice"];
    let ik_a = ik(alice);
    assert_eq!(hx(&g["message"]["sender_identity_public"]), ik_a);
    for name in ["message", "message_after_rotation"] {
        let m = &g[name];
        let (epoch, n, ts) = (
            m["epoch"].as_u64().unwrap() as u32,
            m["n"].as_u64().unwrap() as u32,
            m["timestamp"].as_u64().unwrap(),
        );
        let gid = hx(&m["group_id"]);
        let key = hx(&m["group_key"]);
        let info = [&b"MessageKey"[..], &u64::from(n).to_be_bytes()].concat();
        let mk: [u8; 32] = hkdf(&[], &key, &info);
        assert_eq!(mk.to_vec(), hx(&m["message_key"]), "{name}");
        let okm: [u8; 44] = hkdf(&ik_a, &mk, b"PQ4 group AEAD");
        assert_eq!(okm[..32].to_vec(), hx(&m["aead_key"]), "{name}");
        assert_eq!(okm[32..].to_vec(), hx(&m["nonce"]), "{name}");
        let ad = [&gid[..], &ik_a, &ts.to_be_bytes()].concat();
        assert_eq!(ad, hx(&m["ad"]), "{name}");
        let ct = aead_seal(
            &okm[..32],
            &okm[32..],
            &ad,
            m["plaintext"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(ct, hx(&m["ciphertext"]), "{name}");
        let signed = [&[1u8][..], &epoch.to_be_bytes(), &n.to_be_bytes(), &ad, &ct].concat();
        let sig = sign(alice, b"PQ4 group message", &signed);
        assert_eq!(sig, hx(&m["signature"]), "{name}");
        let msg = Cbor::M(vec![
            ("gid", Cbor::B(gid)),
            ("epoch", Cbor::U(epoch.into())),
            ("from", Cbor::B(ik_a[..57].to_vec())),
            ("n", Cbor::U(n.into())),
            ("ts", Cbor::U(ts)),
            ("ct", Cbor::B(ct)),
            ("sig", Cbor::B(sig)),
        ]);
        assert_eq!(wire(&msg), hx(&m["wire"]), "{name}");
    }
    assert_eq!(g["message_after_rotation"]["epoch"], 1);
    assert_eq!(g["message_after_rotation"]["n"], 2);
}

/// The `{id, key, sig}` map of a signed prekey or KEM prekey, signed here.
fn signed_prekey_map(side: &Value, ctx: &[u8], id: u32, key: &[u8]) -> (Cbor, Vec<u8>) {
    let sig = sign(side, ctx, &[&id.to_be_bytes()[..], key].concat());
    let map = Cbor::M(vec![
        ("id", Cbor::U(id.into())),
        ("key", Cbor::B(key.to_vec())),
        ("sig", Cbor::B(sig.clone())),
    ]);
    (map, sig)
}

#[test]
fn key_update_from_the_document() {
    let v = load("key_update");
    let (old, new) = (&v["old"], &v["new"]);
    let (ik_old, ik_new) = (ik(old), ik(new));
    let bind_new = sign(new, b"PQ4 identity binding", &ik_new);
    let spk_id = new["signed_prekey_id"].as_u64().unwrap() as u32;
    let spk = xpub(&arr(&new["signed_prekey_secret"]));
    let (spk_map, spk_sig) = signed_prekey_map(new, b"PQ4 signed prekey", spk_id, &spk);
    let kk_id = new["kem_prekey_id"].as_u64().unwrap() as u32;
    let dk = DecapsulationKey1024::from_seed(Array::from(arr::<64>(&new["kem_prekey_seed_d_z"])));
    let kk = dk.encapsulation_key().to_bytes().to_vec();
    let (kk_map, kk_sig) = signed_prekey_map(new, b"PQ4 KEM prekey", kk_id, &kk);
    // One-time prekeys by ascending id.
    let opks: Vec<(u32, [u8; 56])> = v["new_one_time_prekeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_u64().unwrap() as u32, xpub(&arr(&o["secret"]))))
        .collect();
    assert!(opks.windows(2).all(|w| w[0].0 < w[1].0));
    let mut t = [&ik_old[..], &ik_new, &bind_new].concat();
    t.extend_from_slice(&spk_id.to_be_bytes());
    t.extend_from_slice(&spk);
    t.extend_from_slice(&spk_sig);
    t.extend_from_slice(&(opks.len() as u32).to_be_bytes());
    for (id, key) in &opks {
        t.extend_from_slice(&id.to_be_bytes());
        t.extend_from_slice(key);
    }
    t.extend_from_slice(&kk_id.to_be_bytes());
    t.extend_from_slice(&kk);
    t.extend_from_slice(&kk_sig);
    assert_eq!(t, hx(&v["transcript"]));
    let old_sig = sign(old, b"PQ4 key update by old identity", &t);
    let new_sig = sign(new, b"PQ4 key update by new identity", &t);
    assert_eq!(old_sig, hx(&v["old_sig"]));
    assert_eq!(new_sig, hx(&v["new_sig"]));
    let opk_maps = opks
        .iter()
        .map(|(id, key)| {
            Cbor::M(vec![
                ("id", Cbor::U((*id).into())),
                ("key", Cbor::B(key.to_vec())),
            ])
        })
        .collect();
    let update = Cbor::M(vec![
        ("old", identity_map(old)),
        ("new", identity_map(new)),
        ("spk", spk_map),
        ("opks", Cbor::A(opk_maps)),
        ("kk", kk_map),
        ("old_sig", Cbor::B(old_sig)),
        ("new_sig", Cbor::B(new_sig)),
    ]);
    assert_eq!(wire(&update), hx(&v["wire"]));
}

#[test]
fn fingerprints_from_the_document() {
    let v = load("fingerprint");
    for f in v["fingerprints"].as_array().unwrap() {
        let user_id = f["user_id"].as_str().unwrap();
        let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(user_id);
        assert_eq!(nfc.as_bytes(), hx(&f["user_id_nfc_utf8"]));
        let mut h = <Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, nfc.as_bytes());
        sha2::Digest::update(&mut h, hx(&f["identity_public"]));
        let digest: [u8; 32] = sha2::Digest::finalize(h).into();
        assert_eq!(digest.to_vec(), hx(&f["digest"]), "{user_id}");
        // i = 0, 1, …, 5: six 5-byte chunks, bytes 30 and 31 unused.
        let digits: Vec<String> = (0..6)
            .map(|i| {
                let v = digest[5 * i..5 * i + 5]
                    .iter()
                    .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
                    % 10_000_000_000;
                format!("{:05} {:05}", v / 100_000, v % 100_000)
            })
            .collect();
        assert_eq!(digits.join(" "), f["digits"].as_str().unwrap());
    }
}

#[test]
fn history_transfer_from_the_document() {
    let v = load("history");
    let (master, salt) = (hx(&v["master_key"]), hx(&v["salt"]));
    let device_id = hx(&v["device_id_new"]);
    assert_eq!(device_id.len(), 32);
    let temp_key: [u8; 32] = hkdf(&salt, &master, b"HistoryTransfer");
    assert_eq!(temp_key.to_vec(), hx(&v["temp_key"]));
    let at = v["at"].as_u64().unwrap();
    let ad = [&[1u8][..], &at.to_be_bytes(), &device_id].concat();
    let ct = aead_seal(
        &temp_key,
        &[0u8; 12],
        &ad,
        v["history"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(ct, hx(&v["ciphertext"]));
    let blob = Cbor::M(vec![
        ("salt", Cbor::B(salt)),
        ("at", Cbor::U(at)),
        ("ct", Cbor::B(ct)),
    ]);
    assert_eq!(wire(&blob), hx(&v["wire"]));
    assert_eq!(v["opens_until"].as_u64().unwrap(), at + 3_600_000);
}

/// The Double Ratchet run from §6 alone over `ratchet_steps.json`: every chain from the root
/// chain, every message's header (`pn`, `n`), keys, ciphertext, signature and wire bytes, and
/// the receivers' skipped-key stores through an out-of-order delivery.
#[test]
fn ratchet_steps_from_the_document() {
    let v = load("ratchet_steps");
    let (alice, bob) = (&v["alice"], &v["bob"]);
    let sk = hx(&v["shared_secret"]);
    let secrets = |side: &str| -> Vec<[u8; 56]> {
        v[side].as_array().unwrap().iter().map(arr::<56>).collect()
    };
    let (a_dh, b_dh) = (
        secrets("alice_ratchet_secrets"),
        secrets("bob_ratchet_secrets"),
    );
    // At least two DH steps on each side after the start: Alice's first key is her start.
    assert!(a_dh.len() >= 3 && b_dh.len() >= 2);
    // The ratchet keys in the order they start sending chains: SPK_B (Bob's start), then
    // Alice's, Bob's, Alice's, … Chain k is keyed by X448 of keys k and k + 1.
    let mut keys = vec![arr::<56>(&bob["signed_prekey_secret"])];
    for i in 0..a_dh.len().max(b_dh.len()) {
        keys.extend(a_dh.get(i));
        keys.extend(b_dh.get(i));
    }
    let mut rk: Vec<u8> = sk;
    let mut chains = Vec::new();
    for k in 0..keys.len() - 1 {
        let (next, ck) = kdf_rk(&rk, &x(&keys[k + 1], &xpub(&keys[k])));
        chains.push(ck);
        rk = next.to_vec();
    }
    let pubs: Vec<[u8; 56]> = keys.iter().map(xpub).collect();

    // Each message: its chain from the header's key, n = its place in that chain, pn = the
    // length of the sender's previous chain (k − 2).
    let messages = v["messages_in_send_order"].as_array().unwrap();
    let chain_of = |m: &Value| -> usize {
        let dh = &hx(&m["header"])[..56];
        pubs.iter().position(|p| &p[..] == dh).unwrap() - 1
    };
    let count_in =
        |k: usize, upto: usize| messages[..upto].iter().filter(|m| chain_of(m) == k).count() as u32;
    for (i, m) in messages.iter().enumerate() {
        let k = chain_of(m);
        let from_alice = m["name"].as_str().unwrap().starts_with('a');
        assert_eq!(k % 2 == 0, from_alice, "Alice sends on even chains");
        let n = count_in(k, i);
        let pn = if k >= 2 {
            count_in(k - 2, messages.len())
        } else {
            0
        };
        let mut ck = chains[k];
        for _ in 0..n {
            ck = hmac512(&ck, &[2])[..32].try_into().unwrap();
        }
        let (sender, recipient) = if from_alice {
            (alice, bob)
        } else {
            (bob, alice)
        };
        let text = m["plaintext"].as_str().unwrap().as_bytes();
        let msg = ratchet_message(m, &ck, (&pubs[k + 1], pn, n), (sender, recipient), text);
        assert_eq!(wire(&msg), hx(&m["wire"]), "{}", m["name"]);
    }
    assert!(
        messages
            .iter()
            .any(|m| hx(&m["header"])[56..60] != [0, 0, 0, 0]),
        "pn > 0"
    );

    // Delivery: a receiver stores the skipped keys of its current receiving chain up to the
    // header's pn when a new chain starts, and of the new (or current) chain up to n.
    #[derive(Default)]
    struct Receiver {
        chain: Option<usize>,
        index: u32,
        skipped: std::collections::BTreeSet<(usize, u32)>,
    }
    let mut receivers = [Receiver::default(), Receiver::default()]; // [Alice, Bob]
    for d in v["delivery_order"].as_array().unwrap() {
        let name = d["message"].as_str().unwrap();
        let i = messages.iter().position(|m| m["name"] == name).unwrap();
        let k = chain_of(&messages[i]);
        let header = hx(&messages[i]["header"]);
        let pn = u32::from_be_bytes(header[56..60].try_into().unwrap());
        let n = count_in(k, i);
        let to = &mut receivers[if k % 2 == 0 { 1 } else { 0 }];
        if !to.skipped.remove(&(k, n)) {
            if to.chain != Some(k) {
                if let Some(old) = to.chain {
                    to.skipped.extend((to.index..pn).map(|j| (old, j)));
                }
                to.chain = Some(k);
                to.index = 0;
            }
            assert!(n >= to.index, "{name} is not a replay");
            to.skipped.extend((to.index..n).map(|j| (k, j)));
            to.index = n + 1;
        }
        assert_eq!(
            to.skipped.len() as u64,
            d["receiver_skipped_keys_after"].as_u64().unwrap(),
            "after {name}"
        );
    }
}
