//! Account recovery (seed 004 §15; docs/messaging.md "Recovery"): the recovery code shown
//! once at registration, and `chat recover --username NAME --code CODE` on a new device after
//! every device was lost: new keys, a new password, every old device revoked. Contacts learn
//! the new identity at their next contact (loudly: it is not signed by the old one), and a
//! group admin's client re-invites the user when it meets the new identity.

use std::path::Path;

use anyhow::{Result, bail};
use constella_behaviours::pq4::{Op, Response};

use super::device::Device;
use super::link::Link;
use super::{NewAccount, check, new_account};

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
    let next = new_code();
    let NewAccount {
        account,
        opks,
        keys,
        key,
    } = new_account(username, "", password, &normalize(&next)?)?;
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
