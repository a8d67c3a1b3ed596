//! Account recovery (seed 004 §15; docs/messaging.md "Recovery"): the recovery code shown
//! once at registration, and `chat recover --username NAME --code CODE` on a new device after
//! every device was lost: new keys, a new password, every old device revoked. Contacts learn
//! the new identity at their next contact (loudly: it is not signed by the old one), and a
//! group admin's client re-invites the user when it meets the new identity.

use std::path::Path;

use anyhow::{Context, Result, bail};
use constella_behaviours::pq4::{self, Account, Bytes, Kdf, Op, Response};
use constella_keys::{KdfParams, KeyStore, PasswordKey};

use super::device::Device;
use super::link::Link;
use super::{check, now_ms};

/// A new recovery code: 20 random bytes as five groups of eight hex digits.
pub fn new_code() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes);
    hex::encode(bytes)
        .as_bytes()
        .chunks(8)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The code as typed: hex digits only, lower case (dashes and spaces ignored).
pub fn normalize(code: &str) -> Result<String> {
    let digits: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != 40 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("invalid recovery code: expected 40 hex digits (dashes allowed)");
    }
    Ok(digits)
}

/// `chat recover`: a new key store and password for `username`, proven with `code`.
pub async fn recover(
    link: &mut Link,
    home: &Path,
    username: &str,
    code: &str,
    password: &str,
) -> Result<(Device, String)> {
    let code = normalize(code)?;
    // The account's email and registration time stay: the coordinator takes them from the
    // account it holds.
    let mut rng = rand::rng();
    let key = PasswordKey::generate(password, KdfParams::PRODUCTION, &mut rng)
        .context("cannot derive the password key")?;
    let keys = KeyStore::generate_with_one_time_prekeys(super::opk_count(), &mut rng)
        .context("cannot generate keys")?;
    let opks = super::public_opks(&keys);
    let sealed = keys.seal(&key, &mut rng).context("cannot seal the keys")?;
    let next = new_code();
    let account = Account {
        username: username.to_owned(),
        // Filled in by the coordinator from the account it holds.
        email: String::new(),
        identity: Bytes(keys.identity_public().to_bytes().to_vec()),
        bundle: Bytes(keys.bundle(None).to_bytes()),
        kdf: Kdf {
            salt: Bytes(key.salt().to_vec()),
            m_kib: key.params().m_kib(),
            t: key.params().t(),
            p: key.params().p(),
        },
        verifier: Bytes(key.login_proof().as_bytes().to_vec()),
        sealed_keys: Bytes(sealed.to_bytes()),
        created_ms: now_ms(),
        key_updates: Vec::new(),
        recovery: Bytes(pq4::recovery_hash(username, &normalize(&next)?)),
        recoveries: Vec::new(),
        keys_ms: 0,
    };
    let op = Op::Recover {
        username: username.to_owned(),
        code,
        account,
        opks,
    };
    match check(link.call(op).await?)? {
        Response::Ok => {}
        other => bail!("unexpected answer: {other:?}"),
    }
    let device = Device::create(home, username, keys, key, false)?;
    Ok((device, next))
}
