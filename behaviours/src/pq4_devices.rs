//! An account's devices (seed 004 §14; docs/messaging.md "Devices"): every device of an
//! account has its own 16-byte id and its own Ed448 device key, enrolled with the account's
//! holders when the device registers or logs in. A device is revoked by a [`Revocation`]
//! signed with the device key of *another* active device of the same account; the holders
//! then refuse every mailbox operation of the revoked device, and it is never enrolled again.
//!
//! The rules ([`check_revocation`]), applied by the coordinator before it asks the holders
//! and again by each holder against the devices it keeps:
//! - the device exists (`DeviceNotFound`) and is not revoked yet (`AlreadyRevoked`);
//! - the signer is another active device of the account and the signature holds
//!   (`InvalidSignature`);
//! - at least one active device remains (`LastActiveDevice`).

use constella_keys::IdentityPublicKey;
use constella_keys::identity::SIGNATURE_LEN;
use serde::{Deserialize, Serialize};

use crate::pq4::Bytes;

/// Length of a device id.
pub const DEVICE_ID_LEN: usize = 16;
/// Longest device name.
pub const MAX_DEVICE_NAME: usize = 64;
/// Devices one account may enrol.
pub const MAX_DEVICES: usize = 32;

/// One device as the account's holders know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCard {
    /// 16 random bytes the device chose (the `device` of its mailbox proofs).
    pub id: Bytes,
    /// The device's own public key (`IdentityPublicKey::encode`: Ed448 and X448 keys with
    /// their binding signature); it signs revocations of other devices.
    pub key: Bytes,
    /// A label for people (the host name by default).
    pub name: String,
    /// When the device was enrolled (ms since the epoch, the coordinator's clock).
    pub added_ms: u64,
}

/// "Device `device` of `username` is revoked", signed by device `by` of the same account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub username: String,
    pub device: Bytes,
    pub by: Bytes,
    pub at_ms: u64,
    pub sig: Bytes,
}

/// A device and, once revoked, the revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub card: DeviceCard,
    pub revoked: Option<Revocation>,
}

/// Why a revocation is refused (the §14.2 error names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("InvalidSignature: {0}")]
    InvalidSignature(String),
    #[error("DeviceNotFound: no device {0} on this account")]
    DeviceNotFound(String),
    #[error("AlreadyRevoked: device {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("LastActiveDevice: device {0} is the account's last active device")]
    LastActiveDevice(String),
}

#[derive(Serialize)]
struct SignedRevocation<'a> {
    domain: &'static str,
    username: &'a str,
    device: &'a Bytes,
    by: &'a Bytes,
    at_ms: u64,
}

impl Revocation {
    /// The bytes the revoking device signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing CBOR of a plain struct into a Vec cannot fail.
        let _ = ciborium::into_writer(
            &SignedRevocation {
                domain: "PQ4 device revocation",
                username: &self.username,
                device: &self.device,
                by: &self.by,
                at_ms: self.at_ms,
            },
            &mut out,
        );
        out
    }
}

impl DeviceCard {
    /// Whether the card is well formed.
    pub fn check_shape(&self) -> Result<(), String> {
        if self.id.0.len() != DEVICE_ID_LEN {
            return Err(format!("a device id has {DEVICE_ID_LEN} bytes"));
        }
        if self.name.is_empty()
            || self.name.len() > MAX_DEVICE_NAME
            || self.name.chars().any(char::is_control)
        {
            return Err(format!(
                "a device name has 1 to {MAX_DEVICE_NAME} printable characters"
            ));
        }
        IdentityPublicKey::decode(&self.key.0)
            .map(|_| ())
            .map_err(|e| format!("the device key: {e}"))
    }
}

/// Short printable form of a device id (hex).
pub fn device_hex(id: &Bytes) -> String {
    hex::encode(&id.0)
}

/// Checks `revocation` against the account's devices as known here.
pub fn check_revocation(
    devices: &[DeviceEntry],
    revocation: &Revocation,
) -> Result<(), RevocationError> {
    let target = device_hex(&revocation.device);
    let Some(entry) = devices.iter().find(|d| d.card.id == revocation.device) else {
        return Err(RevocationError::DeviceNotFound(target));
    };
    if entry.revoked.is_some() {
        return Err(RevocationError::AlreadyRevoked(target));
    }
    if devices.iter().filter(|d| d.revoked.is_none()).count() <= 1 {
        return Err(RevocationError::LastActiveDevice(target));
    }
    let signer = devices
        .iter()
        .find(|d| d.card.id == revocation.by && d.revoked.is_none())
        .filter(|d| d.card.id != revocation.device)
        .ok_or_else(|| {
            RevocationError::InvalidSignature(
                "a revocation is signed by another active device of the account".into(),
            )
        })?;
    let bad = || RevocationError::InvalidSignature("the signature does not verify".into());
    let key = IdentityPublicKey::decode(&signer.card.key.0).map_err(|_| bad())?;
    let sig: [u8; SIGNATURE_LEN] = revocation.sig.0.as_slice().try_into().map_err(|_| bad())?;
    key.verify_group_control(&revocation.signed_bytes(), &sig)
        .map_err(|_| bad())
}

/// Merges what several holders answered: every card any of them has, revoked if any of them
/// has it revoked (a revocation is final).
pub fn merge(answers: impl IntoIterator<Item = Vec<DeviceEntry>>) -> Vec<DeviceEntry> {
    let mut all: Vec<DeviceEntry> = Vec::new();
    for list in answers {
        for entry in list {
            match all.iter_mut().find(|e| e.card.id == entry.card.id) {
                Some(have) => {
                    if have.revoked.is_none() {
                        have.revoked = entry.revoked;
                    }
                }
                None => all.push(entry),
            }
        }
    }
    all.sort_by(|a, b| (a.card.added_ms, &a.card.id).cmp(&(b.card.added_ms, &b.card.id)));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_keys::IdentityKeyPair;

    fn device(n: u8) -> (IdentityKeyPair, DeviceEntry) {
        let pair = IdentityKeyPair::generate(&mut rand::rng()).unwrap();
        let card = DeviceCard {
            id: Bytes(vec![n; DEVICE_ID_LEN]),
            key: Bytes(pair.public().encode()),
            name: format!("d{n}"),
            added_ms: u64::from(n),
        };
        card.check_shape().unwrap();
        (
            pair,
            DeviceEntry {
                card,
                revoked: None,
            },
        )
    }

    fn revoke(by: (&IdentityKeyPair, u8), device: u8) -> Revocation {
        let mut r = Revocation {
            username: "bob".into(),
            device: Bytes(vec![device; DEVICE_ID_LEN]),
            by: Bytes(vec![by.1; DEVICE_ID_LEN]),
            at_ms: 7,
            sig: Bytes::default(),
        };
        r.sig = Bytes(by.0.sign_group_control(&r.signed_bytes()).unwrap().to_vec());
        r
    }

    #[test]
    fn a_revocation_needs_another_active_device_and_leaves_one() {
        let (k1, d1) = device(1);
        let (k2, d2) = device(2);
        let mut devices = vec![d1, d2];
        // Signed by the device itself: refused.
        assert!(matches!(
            check_revocation(&devices, &revoke((&k2, 2), 2)),
            Err(RevocationError::InvalidSignature(_))
        ));
        // Claims device 1 but signed with device 2's key: refused.
        assert!(matches!(
            check_revocation(&devices, &revoke((&k2, 1), 2)),
            Err(RevocationError::InvalidSignature(_))
        ));
        assert!(matches!(
            check_revocation(&devices, &revoke((&k1, 1), 9)),
            Err(RevocationError::DeviceNotFound(_))
        ));
        let good = revoke((&k1, 1), 2);
        check_revocation(&devices, &good).unwrap();
        devices[1].revoked = Some(good.clone());
        assert!(matches!(
            check_revocation(&devices, &good),
            Err(RevocationError::AlreadyRevoked(_))
        ));
        // Device 1 is the last active one now.
        assert!(matches!(
            check_revocation(&devices, &revoke((&k2, 2), 1)),
            Err(RevocationError::LastActiveDevice(_))
        ));
        let (k3, d3) = device(3);
        devices.push(d3);
        check_revocation(&devices, &revoke((&k3, 3), 1)).unwrap();
        devices[0].revoked = Some(revoke((&k3, 3), 1));
        // A signature over other bytes does not verify.
        let mut forged = revoke((&k3, 3), 1);
        forged.at_ms += 1;
        assert!(check_revocation(&devices[..], &forged).is_err());
        let _ = k1;
    }

    #[test]
    fn the_last_active_device_is_not_revoked() {
        let (k1, d1) = device(1);
        let (_, mut d2) = device(2);
        let (k3, d3) = device(3);
        d2.revoked = Some(revoke((&k1, 1), 2));
        let devices = vec![d1, d2, d3];
        check_revocation(&devices, &revoke((&k3, 3), 1)).unwrap();
        let mut after = devices.clone();
        after[0].revoked = Some(revoke((&k3, 3), 1));
        // Device 3 is the only active one.
        assert!(matches!(
            check_revocation(&after, &revoke((&k3, 3), 3)),
            Err(RevocationError::LastActiveDevice(_))
        ));
    }

    #[test]
    fn merged_answers_keep_every_card_and_every_revocation() {
        let (k1, d1) = device(1);
        let (_, d2) = device(2);
        let mut revoked = d2.clone();
        revoked.revoked = Some(revoke((&k1, 1), 2));
        let merged = merge([vec![d1.clone(), d2], vec![revoked.clone()]]);
        assert_eq!(merged, vec![d1, revoked]);
    }
}
