//! Known-answer vectors: `keys/tests/vectors/*.json`.
//!
//! Everything is generated from fixed seeds with ChaCha20Rng, and the JSON records the secret
//! inputs too (not only the seeds), so another implementation can check itself without
//! reproducing our RNG draw order. `cargo test -p constella-keys kat` compares; regenerate with
//! `PQ4_REGENERATE_VECTORS=1 cargo test -p constella-keys kat` after an intended change.

use std::path::PathBuf;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::envelope::{Content, ContentType, Envelope};
use crate::group::{GroupSession, message_key};
use crate::ratchet::RatchetMessage;
use crate::ratchet::message_key::MessageKey;
use crate::sealed::{BlobKind, KdfParams, PasswordKey, SealedBlob};
use crate::x3dh::{self, InitialMessage, SessionSecret};
use crate::{Fingerprint, HistoryMasterKey, KeyUpdate, SealedHistory};
use crate::{KeyStore, PreKeyBundle, Session};

fn h(bytes: &[u8]) -> Value {
    Value::String(hex::encode(bytes))
}

/// Draws `n` bytes from a clone of `rng`: what the next call will consume.
fn peek(rng: &ChaCha20Rng, n: usize) -> Vec<u8> {
    let mut c = rng.clone();
    let mut out = vec![0u8; n];
    c.fill_bytes(&mut out);
    out
}

fn store_secrets(store: &KeyStore, opk: Option<u32>) -> Value {
    let id = store.identity().secret_bytes();
    json!({
        "identity_ed448_seed": h(&id[..57]),
        "identity_x448_secret": h(&id[57..]),
        "identity_public": h(&store.identity_public().to_bytes()),
        "signed_prekey_id": store.signed_prekey().id(),
        "signed_prekey_secret": h(store.signed_prekey().secret().as_bytes()),
        "one_time_prekey_id": opk,
        "one_time_prekey_secret": opk
            .and_then(|id| store.one_time_prekey(id))
            .map(|k| h(k.secret().as_bytes())),
        "kem_prekey_id": store.kem_prekey().id(),
        "kem_prekey_seed_d_z": h(store.kem_prekey().seed()),
    })
}

/// A handshake vector: both sides' secrets, the bundle, Alice's random draws (ephemeral
/// secret, ML-KEM `m`), the initial message and the shared secret.
fn handshake_record(
    rng: &str,
    alice: Value,
    bob: Value,
    bundle: &PreKeyBundle,
    draws: &[u8],
    (initial, secret): (&InitialMessage, &SessionSecret),
) -> Value {
    json!({
        "rng": rng,
        "alice": alice,
        "bob": bob,
        "bundle_wire": h(&bundle.to_bytes()),
        "alice_ephemeral_secret": h(&draws[..56]),
        "kem_encaps_randomness_m": h(&draws[56..]),
        "initial_message_wire": h(&initial.to_bytes()),
        "kem_ciphertext": h(&initial.kem_ciphertext[..]),
        "shared_secret": h(secret.as_bytes()),
    })
}

fn generate() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();

    // Bundle.
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3401);
    let bob = KeyStore::generate(&mut r).unwrap();
    let bundle = bob.bundle(Some(1));
    out.push((
        "bundle",
        json!({
            "rng": "ChaCha20Rng::seed_from_u64(0x50413401); KeyStore::generate",
            "secrets": store_secrets(&bob, Some(1)),
            "bundle_wire": h(&bundle.to_bytes()),
            "signed_prekey_public": h(&bundle.signed_prekey.key),
            "signed_prekey_signature": h(&bundle.signed_prekey.signature),
            "kem_prekey_public": h(&bundle.kem_prekey.key[..]),
            "kem_prekey_signature": h(&bundle.kem_prekey.signature),
            "identity_binding_signature": h(&bundle.identity.binding),
        }),
    ));

    // X3DH.
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3402);
    let alice = KeyStore::generate(&mut r).unwrap();
    let mut bob = KeyStore::generate(&mut r).unwrap();
    let bundle = bob.bundle(Some(7));
    let draws = peek(&r, 56 + 32);
    let (initial, sa) =
        x3dh::initiate(alice.identity(), &bundle.verify().unwrap(), &mut r).unwrap();
    let bob_secrets = store_secrets(&bob, Some(7));
    let sb = x3dh::respond(&mut bob, &initial).unwrap();
    assert_eq!(sa.as_bytes(), sb.as_bytes());
    out.push((
        "x3dh",
        handshake_record(
            "ChaCha20Rng::seed_from_u64(0x50413402); alice, bob = KeyStore::generate x2; initiate",
            store_secrets(&alice, None),
            bob_secrets,
            &bundle,
            &draws,
            (&initial, &sa),
        ),
    ));

    // Double Ratchet: three messages each way after that handshake.
    let alice_ratchet = peek(&r, 56);
    let mut a = Session::new(sa, &mut r).unwrap();
    let mut b = Session::new(sb, &mut r).unwrap();
    let root_after_init = a.root_key();
    let mut a_msgs = Vec::new();
    let mut bob_ratchet = Vec::new();
    for i in 0..3u64 {
        let mk = a.sending_message_key().unwrap();
        let text = format!("alice message {i}");
        let m = a
            .encrypt(alice.identity(), 1_700_000_000_000 + i, text.as_bytes())
            .unwrap();
        if i == 0 {
            bob_ratchet = peek(&r, 56);
        }
        assert_eq!(&b.decrypt(&m, &mut r).unwrap()[..], text.as_bytes());
        a_msgs.push(json!({
            "plaintext": text,
            "timestamp": 1_700_000_000_000 + i,
            "header": h(&m.header().to_bytes()),
            "message_key": h(mk.as_bytes()),
            "ciphertext": h(m.ciphertext()),
            "signature": h(m.signature()),
            "wire": h(&m.to_bytes()),
        }));
    }
    let mut b_msgs = Vec::new();
    for i in 0..3u64 {
        let mk = b.sending_message_key().unwrap();
        let text = format!("bob message {i}");
        let m = b
            .encrypt(bob.identity(), 1_700_000_001_000 + i, text.as_bytes())
            .unwrap();
        assert_eq!(&a.decrypt(&m, &mut r).unwrap()[..], text.as_bytes());
        b_msgs.push(json!({
            "plaintext": text,
            "timestamp": 1_700_000_001_000 + i,
            "header": h(&m.header().to_bytes()),
            "message_key": h(mk.as_bytes()),
            "ciphertext": h(m.ciphertext()),
            "signature": h(m.signature()),
            "wire": h(&m.to_bytes()),
        }));
    }
    out.push((
        "ratchet",
        json!({
            "rng": "continues the x3dh vector's RNG",
            "shared_secret": out[1].1["shared_secret"].clone(),
            "alice_first_ratchet_secret": h(&alice_ratchet),
            "bob_first_ratchet_secret": h(&bob_ratchet),
            "alice_root_key_after_init": h(&root_after_init),
            "alice_to_bob": a_msgs,
            "bob_to_alice": b_msgs,
        }),
    ));

    // Group.
    let group_key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let keys: Vec<Value> = [0u64, 1, 99, 100]
        .iter()
        .map(|&n| json!({ "message_number": n, "message_key": h(&*message_key(&group_key, n)) }))
        .collect();
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3403);
    let mut g =
        GroupSession::create(alice.identity_public(), &[], 1_700_000_002_000, &mut r).unwrap();
    let first = group_record(
        &mut g,
        alice.identity(),
        1_700_000_002_000,
        "group message 0",
    );
    // After one rotation, the third message under the new key: epoch 1, n = 2.
    g.rotate(1_700_000_002_100, &mut r).unwrap();
    for i in 0..2 {
        g.encrypt(alice.identity(), 1_700_000_002_101 + i, b"x")
            .unwrap();
    }
    let later = group_record(&mut g, alice.identity(), 1_700_000_002_200, "epoch 1, n 2");
    let mut message = json!({
        "rng": "ChaCha20Rng::seed_from_u64(0x50413403); GroupSession::create by the x3dh vector's alice",
        "sender_identity_public": h(&alice.identity_public().to_bytes()),
    });
    for (k, v) in first.as_object().unwrap() {
        message[k] = v.clone();
    }
    out.push((
        "group",
        json!({
            "group_key": h(&group_key),
            "message_keys": keys,
            "message": message,
            "message_after_rotation": later,
        }),
    ));

    // Password key and login proof.
    let salt: [u8; 16] = core::array::from_fn(|i| 0xA0 + i as u8);
    let mut entries = Vec::new();
    for params in [KdfParams::new(64, 1, 1).unwrap(), KdfParams::PRODUCTION] {
        let pk = PasswordKey::derive("correct horse battery staple", salt, params).unwrap();
        entries.push(json!({
            "m_kib": params.m_kib(), "t": params.t(), "p": params.p(),
            "encryption_key": h(pk.key_bytes()),
            "auth_key": h(&*pk.auth_key()),
            "login_proof": h(pk.login_proof().as_bytes()),
            "unlock_check": h(&pk.unlock_check()),
        }));
    }
    // A password typed in decomposed form: what is hashed is its NFC form.
    let decomposed = "Pa\u{308}sswo\u{308}rd \u{212b}";
    let composed = "Pässwörd Å";
    let test_params = KdfParams::new(64, 1, 1).unwrap();
    let pk = PasswordKey::derive(decomposed, salt, test_params).unwrap();
    assert_eq!(
        pk.key_bytes(),
        PasswordKey::derive(composed, salt, test_params)
            .unwrap()
            .key_bytes()
    );
    let normalisation = json!({
        "password": decomposed,
        "password_utf8": h(decomposed.as_bytes()),
        "nfc_utf8": h(composed.as_bytes()),
        "m_kib": 64, "t": 1, "p": 1,
        "encryption_key": h(pk.key_bytes()),
        "login_proof": h(pk.login_proof().as_bytes()),
    });
    out.push((
        "password",
        json!({
            "password": "correct horse battery staple",
            "salt": h(&salt),
            "argon2id": entries,
            "normalisation": normalisation,
        }),
    ));
    out.push(("sealed", sealed_blobs(salt)));
    out.extend(handshake_without_opk_and_envelopes());
    out.extend(key_update_fingerprint_history());
    out.push(("ratchet_steps", ratchet_steps()));
    out
}

/// Messages sent and delivered in the `ratchet_steps` scenario.
struct StepLog {
    sent: Vec<(String, RatchetMessage, Value)>,
    deliveries: Vec<Value>,
}

impl StepLog {
    /// Sends the next message of `who` ("a" or "b"), named `a0`, `a1`, … in send order.
    fn send(&mut self, who: &str, session: &mut Session, store: &KeyStore, ts: u64) {
        let count = self.sent.iter().filter(|m| m.0.starts_with(who)).count();
        let name = format!("{who}{count}");
        let mk = session.sending_message_key().unwrap();
        let text = format!("{name} at {ts}");
        let m = session
            .encrypt(store.identity(), ts, text.as_bytes())
            .unwrap();
        let mut rec = ratchet_record(&mk, &m);
        rec["name"] = json!(name);
        rec["plaintext"] = json!(text);
        rec["wire"] = h(&m.to_bytes());
        self.sent.push((name, m, rec));
    }

    fn message(&self, name: &str) -> &RatchetMessage {
        &self.sent.iter().find(|m| m.0 == name).unwrap().1
    }

    /// Delivers a message by name. `draws` is set when the receiver's DH ratchet turns: the
    /// ratchet secret it draws is recorded there.
    fn deliver(
        &mut self,
        name: &str,
        to: &mut Session,
        r: &mut ChaCha20Rng,
        draws: Option<&mut Vec<Value>>,
    ) {
        if let Some(draws) = draws {
            draws.push(h(&peek(r, 56)));
        }
        let (_, m, rec) = self.sent.iter().find(|m| m.0 == name).unwrap();
        let text = to.decrypt(m, r).unwrap();
        assert_eq!(&text[..], rec["plaintext"].as_str().unwrap().as_bytes());
        self.deliveries.push(json!({
            "message": name,
            "receiver_skipped_keys_after": to.skipped_keys(),
        }));
    }
}

/// `ratchet_steps.json`: out-of-order delivery with skipped keys, `pn > 0`, and at least two
/// DH ratchet steps on each side.
fn ratchet_steps() -> Value {
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3408);
    let alice = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    let mut bob = KeyStore::generate_with_one_time_prekeys(1, &mut r).unwrap();
    let bundle = bob.bundle(Some(1)).verify().unwrap();
    let (initial, sa) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    let sb = x3dh::respond(&mut bob, &initial).unwrap();
    let shared = h(sa.as_bytes());
    let mut alice_dh = vec![h(&peek(&r, 56))];
    let mut a = Session::new(sa, &mut r).unwrap();
    let mut b = Session::new(sb, &mut r).unwrap();
    let mut bob_dh = Vec::new();

    let mut log = StepLog {
        sent: Vec::new(),
        deliveries: Vec::new(),
    };
    let t = 1_700_000_006_000;
    for i in 0..3 {
        log.send("a", &mut a, &alice, t + i);
    }
    log.deliver("a0", &mut b, &mut r, Some(&mut bob_dh));
    log.deliver("a2", &mut b, &mut r, None);
    log.send("b", &mut b, &bob, t + 10);
    log.send("b", &mut b, &bob, t + 11);
    log.deliver("b1", &mut a, &mut r, Some(&mut alice_dh));
    log.deliver("b0", &mut a, &mut r, None);
    log.send("a", &mut a, &alice, t + 20);
    log.send("a", &mut a, &alice, t + 21);
    log.deliver("a4", &mut b, &mut r, Some(&mut bob_dh));
    log.deliver("a1", &mut b, &mut r, None);
    log.deliver("a3", &mut b, &mut r, None);
    log.send("b", &mut b, &bob, t + 30);
    log.deliver("b2", &mut a, &mut r, Some(&mut alice_dh));
    log.send("a", &mut a, &alice, t + 40);
    log.deliver("a5", &mut b, &mut r, Some(&mut bob_dh));
    assert_eq!(log.message("a3").header().pn, 3);
    assert_eq!(log.message("b2").header().pn, 2);
    let StepLog { sent, deliveries } = log;
    json!({
        "rng": "ChaCha20Rng::seed_from_u64(0x50413408); see kat.rs ratchet_steps",
        "alice": store_secrets(&alice, None),
        "bob": store_secrets(&bob, Some(1)),
        "shared_secret": shared,
        "alice_ratchet_secrets": alice_dh,
        "bob_ratchet_secrets": bob_dh,
        "messages_in_send_order": sent.into_iter().map(|m| m.2).collect::<Vec<_>>(),
        "delivery_order": deliveries,
    })
}

/// `key_update.json`, `fingerprint.json`, `history.json`.
fn key_update_fingerprint_history() -> Vec<(&'static str, Value)> {
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3407);
    let old = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    let (new, update) = KeyUpdate::create_with_one_time_prekeys(old.identity(), 3, &mut r).unwrap();
    let wire = update.to_bytes();
    let parsed: ciborium::Value = ciborium::from_reader(&wire[1..]).unwrap();
    let fields = cbor_json(&parsed);
    let opk_secrets: Vec<Value> = new
        .one_time_prekey_ids()
        .iter()
        .map(|id| json!({ "id": id, "secret": h(new.one_time_prekey(*id).unwrap().secret().as_bytes()) }))
        .collect();
    let key_update = json!({
        "rng": "ChaCha20Rng::seed_from_u64(0x50413407); old = KeyStore::generate_with_one_time_prekeys(0); KeyUpdate::create_with_one_time_prekeys(old, 3)",
        "old": store_secrets(&old, None),
        "new": store_secrets(&new, None),
        "new_one_time_prekeys": opk_secrets,
        "transcript": h(&update.transcript_bytes()),
        "old_sig": fields["old_sig"].clone(),
        "new_sig": fields["new_sig"].clone(),
        "wire": h(&wire),
    });

    let fingerprints: Vec<Value> = [("alice", "alice"), ("zoe\u{308}", "zo\u{eb}")]
        .iter()
        .map(|(user_id, nfc)| {
            let f = Fingerprint::new(user_id, old.identity_public());
            json!({
                "user_id": user_id,
                "user_id_nfc_utf8": h(nfc.as_bytes()),
                "identity_public": h(&old.identity_public().to_bytes()),
                "digest": h(f.as_bytes()),
                "digits": f.to_string(),
            })
        })
        .collect();

    let master = HistoryMasterKey::generate(&mut r);
    let device_id: [u8; 32] = core::array::from_fn(|i| 0xD0 ^ i as u8);
    let salt = peek(&r, 32);
    let at = 1_700_000_005_000;
    let sealed = SealedHistory::seal(&master, &device_id, b"chat history", at, &mut r).unwrap();
    let wire = sealed.to_bytes();
    let parsed: ciborium::Value = ciborium::from_reader(&wire[1..]).unwrap();
    let salt: [u8; 32] = salt.try_into().unwrap();
    let history = json!({
        "rng": "continues the key_update vector's RNG: master key, then salt",
        "master_key": h(master.as_bytes()),
        "device_id_new": h(&device_id),
        "salt": h(&salt),
        "at": at,
        "history": "chat history",
        "temp_key": h(&*master.temp_key(&salt)),
        "ciphertext": cbor_json(&parsed)["ct"].clone(),
        "wire": h(&wire),
        "opens_until": at + crate::history::TRANSFER_VALIDITY_MS,
    });
    vec![
        ("key_update", key_update),
        ("fingerprint", json!({ "fingerprints": fingerprints })),
        ("history", history),
    ]
}

/// The next group message `g` sends, with every input (`epoch`, `n`, timestamp, key) and
/// intermediate value (message key, AEAD key and nonce, AD, signed head).
fn group_record(
    g: &mut GroupSession,
    identity: &crate::IdentityKeyPair,
    ts: u64,
    text: &str,
) -> Value {
    let share = g.share();
    let msg = g.encrypt(identity, ts, text.as_bytes()).unwrap();
    let sender = identity.public().to_bytes();
    let (aead_key, nonce) = crate::group::aead_parts(&share.key, msg.message_number(), &sender);
    let ad = [&g.group_id()[..], &sender, &ts.to_be_bytes()].concat();
    let wire = msg.to_bytes();
    let parsed: ciborium::Value = ciborium::from_reader(&wire[1..]).unwrap();
    let fields = cbor_json(&parsed);
    json!({
        "group_id": h(g.group_id()),
        "group_key": h(&share.key),
        "epoch": msg.epoch(),
        "n": msg.message_number(),
        "timestamp": ts,
        "plaintext": text,
        "message_key": h(&*message_key(&share.key, u64::from(msg.message_number()))),
        "aead_key": h(&*aead_key),
        "nonce": h(&nonce),
        "ad": h(&ad),
        "ciphertext": fields["ct"].clone(),
        "signature": fields["sig"].clone(),
        "wire": h(&wire),
    })
}

/// A CBOR value as JSON: byte strings as hex, maps as objects (JSON loses the key order; the
/// document gives it).
fn cbor_json(value: &ciborium::Value) -> Value {
    use ciborium::Value as C;
    match value {
        C::Bytes(b) => h(b),
        C::Integer(i) => json!(u64::try_from(*i).unwrap()),
        C::Null => Value::Null,
        C::Text(t) => json!(t),
        C::Array(items) => Value::Array(items.iter().map(cbor_json).collect()),
        C::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_text().unwrap().to_owned(), cbor_json(v)))
                .collect(),
        ),
        other => panic!("not in PQ4's CBOR subset: {other:?}"),
    }
}

/// One sealed blob: its plaintext (and the plaintext's fields), per-blob salt, key, header,
/// ciphertext and wire bytes.
fn sealed_record(key: &PasswordKey, blob: &SealedBlob, kind: BlobKind, bsalt: &[u8]) -> Value {
    let plaintext = blob.open(key, kind).unwrap();
    let fields: ciborium::Value = ciborium::from_reader(&plaintext[1..]).unwrap();
    let bsalt: [u8; 32] = bsalt.try_into().unwrap();
    let wire = blob.to_bytes();
    let parsed: ciborium::Value = ciborium::from_reader(&wire[1..]).unwrap();
    json!({
        "kind": kind as u8,
        "plaintext": h(&plaintext),
        "plaintext_fields": cbor_json(&fields),
        "bsalt": h(&bsalt),
        "blob_key": h(&*key.blob_key(&bsalt, kind)),
        "header": h(&blob.header()),
        "ciphertext": cbor_json(&parsed)["ct"].clone(),
        "wire": h(&wire),
    })
}

/// `sealed.json`: a key store, a session and a group state sealed under the password vector's
/// key at the test parameters.
fn sealed_blobs(salt: [u8; 16]) -> Value {
    let params = KdfParams::new(64, 1, 1).unwrap();
    let key = PasswordKey::derive("correct horse battery staple", salt, params).unwrap();
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3406);

    let mut store = KeyStore::generate_with_one_time_prekeys(3, &mut r).unwrap();
    let alice = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    // Spend the first one-time prekey, so `opks` starts at id 2 and `next_id` is 4.
    let bundle = store.bundle(Some(1)).verify().unwrap();
    let (initial, sa) = x3dh::initiate(alice.identity(), &bundle, &mut r).unwrap();
    let sb = x3dh::respond(&mut store, &initial).unwrap();
    let bsalt = peek(&r, 32);
    let store_blob = store.seal(&key, &mut r).unwrap();
    let mut store_record = sealed_record(&key, &store_blob, BlobKind::KeyStore, &bsalt);
    store_record["secrets"] = store_secrets(&store, None);

    // Bob's session after: Alice sends 0, 1, 2 and Bob gets only 2 (0 and 1 are skipped);
    // Bob replies; Alice sends on a new chain and Bob gets it (her first key is "previous").
    let mut a = Session::new(sa, &mut r).unwrap();
    let mut b = Session::new(sb, &mut r).unwrap();
    let sent: Vec<_> = (0..3)
        .map(|i| a.encrypt(alice.identity(), i, b"a").unwrap())
        .collect();
    b.decrypt(&sent[2], &mut r).unwrap();
    let reply = b.encrypt(store.identity(), 3, b"b").unwrap();
    a.decrypt(&reply, &mut r).unwrap();
    let next = a.encrypt(alice.identity(), 4, b"a").unwrap();
    b.decrypt(&next, &mut r).unwrap();
    assert_eq!(b.skipped_keys(), 2);
    let bsalt = peek(&r, 32);
    let session_blob = b.seal(&key, &mut r).unwrap();
    let session_record = sealed_record(&key, &session_blob, BlobKind::Session, &bsalt);
    // `index` is the index of the next key: Bob received n = 0 on Alice's second chain (so
    // `recv` is at 1) and that DH step gave him a new sending chain (at 0); `pn` is the length
    // of his previous sending chain (the one reply).
    assert_eq!(session_record["plaintext_fields"]["send"]["index"], 0);
    assert_eq!(session_record["plaintext_fields"]["recv"]["index"], 1);
    assert_eq!(session_record["plaintext_fields"]["pn"], 1);

    // Bob's view of a group with Alice: her messages 0 and 1 under epoch 0, her rotation,
    // her message 0 under epoch 1, his own message 0.
    let mut ga = GroupSession::create(
        alice.identity_public(),
        core::slice::from_ref(store.identity_public()),
        1_700_000_004_000,
        &mut r,
    )
    .unwrap();
    let mut gb = GroupSession::join(
        &ga.share(),
        store.identity_public(),
        alice.identity_public(),
    )
    .unwrap();
    for i in 0..2 {
        let m = ga
            .encrypt(alice.identity(), 1_700_000_004_001 + i, b"g")
            .unwrap();
        gb.decrypt(&m).unwrap();
    }
    // Alice rotates: epoch 0's key (and what Bob saw under it) is retired, kept for receiving.
    let rotated = ga.rotate(1_700_000_004_005, &mut r).unwrap();
    gb.apply(&rotated, alice.identity_public()).unwrap();
    let m = ga
        .encrypt(alice.identity(), 1_700_000_004_006, b"g")
        .unwrap();
    gb.decrypt(&m).unwrap();
    gb.encrypt(store.identity(), 1_700_000_004_009, b"mine")
        .unwrap();
    let bsalt = peek(&r, 32);
    let group_blob = gb.seal(&key, &mut r).unwrap();
    let group_record = sealed_record(&key, &group_blob, BlobKind::Group, &bsalt);

    json!({
        "rng": "ChaCha20Rng::seed_from_u64(0x50413406); see kat.rs sealed_blobs",
        "password": "correct horse battery staple",
        "salt": h(&salt),
        "m_kib": 64, "t": 1, "p": 1,
        "encryption_key": h(key.key_bytes()),
        "unlock_check": h(&key.unlock_check()),
        "key_store": store_record,
        "session": session_record,
        "group": group_record,
    })
}

/// One ratchet message as the vectors record it: the chain's message key `MK` and the AEAD
/// key and nonce derived from it, the header, ciphertext, signature.
fn ratchet_record(mk: &MessageKey, m: &RatchetMessage) -> Value {
    let (aead_key, nonce) = mk.aead_parts();
    json!({
        "timestamp": m.timestamp(),
        "header": h(&m.header().to_bytes()),
        "message_key": h(mk.as_bytes()),
        "aead_key": h(&*aead_key),
        "nonce": h(&nonce),
        "ciphertext": h(m.ciphertext()),
        "signature": h(m.signature()),
    })
}

/// `x3dh_no_opk.json` (a handshake against a bundle with `opk: null`) and `envelope.json` (the
/// first envelope of that session, with the initial message and a chat text, and the reply,
/// without it, carrying a group key share).
fn handshake_without_opk_and_envelopes() -> Vec<(&'static str, Value)> {
    let mut r = ChaCha20Rng::seed_from_u64(0x5041_3404);
    let alice = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    let mut bob = KeyStore::generate_with_one_time_prekeys(0, &mut r).unwrap();
    let bundle = bob.bundle(None);
    let draws = peek(&r, 56 + 32);
    let (initial, sa) =
        x3dh::initiate(alice.identity(), &bundle.verify().unwrap(), &mut r).unwrap();
    let sb = x3dh::respond(&mut bob, &initial).unwrap();
    assert_eq!(sa.as_bytes(), sb.as_bytes());
    let handshake = handshake_record(
        "ChaCha20Rng::seed_from_u64(0x50413404); alice, bob = KeyStore::generate_with_one_time_prekeys(0) x2; initiate",
        store_secrets(&alice, None),
        store_secrets(&bob, None),
        &bundle,
        &draws,
        (&initial, &sa),
    );

    let alice_ratchet = peek(&r, 56);
    let mut a = Session::new(sa, &mut r).unwrap();
    let mut b = Session::new(sb, &mut r).unwrap();
    let ts = 1_700_000_003_000;
    let mk = a.sending_message_key().unwrap();
    let first = Envelope::seal(
        &mut a,
        alice.identity(),
        Some(&initial),
        ts,
        &Content::chat("hello bob"),
    )
    .unwrap();
    let bob_ratchet = peek(&r, 56);
    let opened = Envelope::from_bytes(&first.to_bytes())
        .unwrap()
        .open(&mut b, &mut r)
        .unwrap();
    assert!(matches!(opened, Content::Chat(ref t) if t.as_str() == "hello bob"));
    let mut first_record = ratchet_record(&mk, first.message());
    first_record["content"] = h(&Content::chat("hello bob").to_bytes());
    first_record["wire"] = h(&first.to_bytes());

    let mut g = ChaCha20Rng::seed_from_u64(0x5041_3405);
    let group = GroupSession::create(
        bob.identity_public(),
        core::slice::from_ref(alice.identity_public()),
        ts + 1,
        &mut g,
    )
    .unwrap();
    let share = Content::GroupKeyShare(group.share());
    let mk = b.sending_message_key().unwrap();
    let reply = Envelope::seal(&mut b, bob.identity(), None, ts + 2, &share).unwrap();
    let opened = reply.open(&mut a, &mut r).unwrap();
    assert_eq!(opened.content_type(), ContentType::GroupKeyShare);
    let mut reply_record = ratchet_record(&mk, reply.message());
    reply_record["content"] = h(&share.to_bytes());
    reply_record["wire"] = h(&reply.to_bytes());
    reply_record["group"] = json!({
        "rng": "ChaCha20Rng::seed_from_u64(0x50413405); GroupSession::create by bob with alice",
        "group_id": h(group.group_id()),
        "group_key": h(&group.share().key),
        "epoch": 0,
        "at": ts + 1,
    });
    let envelopes = json!({
        "rng": "continues the x3dh_no_opk vector's RNG",
        "shared_secret": handshake["shared_secret"].clone(),
        "alice_first_ratchet_secret": h(&alice_ratchet),
        "bob_first_ratchet_secret": h(&bob_ratchet),
        "alice_to_bob_with_init": first_record,
        "bob_to_alice_group_key_share": reply_record,
    });
    vec![("x3dh_no_opk", handshake), ("envelope", envelopes)]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[test]
fn known_answer_vectors() {
    let generated = generate();
    if std::env::var_os("PQ4_REGENERATE_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, value) in &generated {
            let text = serde_json::to_string_pretty(value).unwrap() + "\n";
            std::fs::write(dir().join(format!("{name}.json")), text).unwrap();
        }
        return;
    }
    for (name, value) in &generated {
        let path = dir().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "missing {path:?}: run PQ4_REGENERATE_VECTORS=1 cargo test -p constella-keys kat"
            )
        });
        let stored: Value = serde_json::from_str(&text).unwrap();
        assert!(
            &stored == value,
            "{name}.json differs from the implementation: the protocol bytes changed"
        );
    }
}
