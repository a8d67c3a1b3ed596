//! An account's devices (seed 004 §14; docs/messaging.md "Devices"): `chat devices` lists
//! them, `chat revoke DEVICE` revokes one with a revocation signed by this device's own key,
//! then rotates every group this user is in. Each device enrols itself after `register` and
//! `login` with its id, its own key and a name; every `read` tells the user once about a new
//! device or a revoked one.

use anyhow::{Context, Result, bail};
use constella_behaviours::pq4::{self, Bytes, DeviceCard, DeviceEntry, Op, Response, Revocation};
use constella_behaviours::pq4_devices::{MAX_DEVICE_NAME, device_hex};
use constella_keys::KeyStore;

use super::device::Device;
use super::link::Link;
use super::{check, group, now_ms};

/// The default device name: the host name.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DEVICE_NAME)
        .collect();
    if host.is_empty() {
        "device".to_owned()
    } else {
        host
    }
}

/// Checks a `--device-name`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_DEVICE_NAME || name.chars().any(char::is_control) {
        bail!("invalid device name {name:?}: 1 to {MAX_DEVICE_NAME} printable characters");
    }
    Ok(())
}

impl Device {
    /// This device's own key store (its identity signs revocations), made and stored on
    /// first use.
    fn device_keys(&mut self) -> Result<KeyStore> {
        if let Some(blob) = &self.stored.device_key {
            return KeyStore::open(blob, &self.password).context("cannot open the device key");
        }
        let keys = KeyStore::generate_with_one_time_prekeys(0, &mut rand::rng())
            .context("cannot generate the device key")?;
        self.stored.device_key = Some(
            keys.seal(&self.password, &mut rand::rng())
                .context("cannot seal the device key")?,
        );
        self.save()?;
        Ok(keys)
    }
}

/// Enrols this device with the account (its card: id, key, name), then in its mailbox.
pub async fn enroll(link: &mut Link, device: &mut Device, name: Option<&str>) -> Result<()> {
    if let Some(name) = name {
        device.stored.device_name = name.to_owned();
    }
    if device.stored.device_name.is_empty() {
        device.stored.device_name = default_name();
    }
    let keys = device.device_keys()?;
    let card = DeviceCard {
        id: device.stored.device_id.clone(),
        key: Bytes(keys.identity_public().encode()),
        name: device.stored.device_name.clone(),
        added_ms: now_ms(),
    };
    let verifier = device.password.login_proof();
    link.authenticate(&device.stored.username, verifier.as_bytes())
        .await?;
    let auth = device.mailbox_key().auth(&pq4::device_body(&card));
    match check(link.call(Op::AddDevice { auth, card }).await?)? {
        Response::Devices(list) => remember(device, &list),
        other => bail!("unexpected answer: {other:?}"),
    }
    device.save()?;
    let auth = device.mailbox_key().auth(&[]);
    check(
        link.call(Op::Wait {
            auth,
            timeout_ms: 0,
        })
        .await?,
    )?;
    Ok(())
}

/// The account's devices as the network holds them.
pub(super) async fn list(link: &mut Link, device: &Device) -> Result<Vec<DeviceEntry>> {
    let auth = device.mailbox_key().auth(pq4::DEVICES_BODY);
    match check(link.call(Op::Devices { auth }).await?)? {
        Response::Devices(list) => Ok(list),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Records the list as seen, without reporting.
fn remember(device: &mut Device, list: &[DeviceEntry]) {
    device.stored.known_devices = list
        .iter()
        .map(|d| (device_hex(&d.card.id), d.revoked.is_some()))
        .collect();
}

/// Tells the user (stderr) about devices enrolled or revoked since this device last looked.
pub async fn report_changes(link: &mut Link, device: &mut Device) -> Result<()> {
    let list = list(link, device).await?;
    let mine = device_hex(&device.stored.device_id);
    for entry in &list {
        let id = device_hex(&entry.card.id);
        if id == mine {
            continue;
        }
        let known = device.stored.known_devices.get(&id).copied();
        match (known, entry.revoked.is_some()) {
            (None, false) => eprintln!(
                "a new device {:?} ({id}) was enrolled with @{}; if it is not yours, revoke it: \
                 `constella chat revoke {id}`",
                entry.card.name, device.stored.username
            ),
            (None | Some(false), true) => eprintln!(
                "device {:?} ({id}) of @{} was revoked",
                entry.card.name, device.stored.username
            ),
            _ => {}
        }
    }
    remember(device, &list);
    device.save()
}

/// `chat devices [--json]`.
pub async fn show(link: &mut Link, device: &mut Device, json: bool) -> Result<()> {
    let list = list(link, device).await?;
    let mine = device_hex(&device.stored.device_id);
    if json {
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": device_hex(&d.card.id),
                    "name": d.card.name,
                    "added": d.card.added_ms,
                    "revoked": d.revoked.is_some(),
                    "revoked_by": d.revoked.as_ref().map(|r| device_hex(&r.by)),
                    "revoked_at": d.revoked.as_ref().map(|r| r.at_ms),
                    "this": device_hex(&d.card.id) == mine,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for d in &list {
            let id = device_hex(&d.card.id);
            let this = if id == mine { " (this device)" } else { "" };
            let state = match &d.revoked {
                Some(r) if r.by.0.is_empty() => "revoked by the account's recovery".to_owned(),
                Some(r) => format!("revoked by {}", device_hex(&r.by)),
                None => "active".to_owned(),
            };
            println!("{id}  {:<20} {state}{this}", d.card.name);
        }
    }
    remember(device, &list);
    device.save()
}

/// `chat revoke DEVICE`: DEVICE is a device id (hex) or an unambiguous prefix of one, or a
/// device name.
pub async fn revoke(link: &mut Link, device: &mut Device, target: &str) -> Result<()> {
    let list = list(link, device).await?;
    let wanted = target.to_ascii_lowercase();
    let matches: Vec<&DeviceEntry> = list
        .iter()
        .filter(|d| {
            let id = device_hex(&d.card.id);
            (wanted.len() >= 4 && id.starts_with(&wanted)) || d.card.name == target
        })
        .collect();
    let entry = match matches.as_slice() {
        [] => bail!(
            "DeviceNotFound: no device {target:?} on @{}; see `constella chat devices`",
            device.stored.username
        ),
        [one] => *one,
        _ => bail!("{target:?} names more than one device; give more of its id"),
    };
    let keys = device.device_keys()?;
    let mut revocation = Revocation {
        username: device.stored.username.clone(),
        device: entry.card.id.clone(),
        by: device.stored.device_id.clone(),
        at_ms: now_ms(),
        sig: Bytes::default(),
    };
    revocation.sig = Bytes(
        keys.identity()
            .sign_group_control(&revocation.signed_bytes())
            .context("cannot sign the revocation")?
            .to_vec(),
    );
    let list = match check(link.call(Op::RevokeDevice { revocation }).await?)? {
        Response::Devices(list) => list,
        other => bail!("unexpected answer: {other:?}"),
    };
    remember(device, &list);
    device.save()?;
    let id = device_hex(&entry.card.id);
    println!("revoked device {:?} ({id})", entry.card.name);
    // §14.1 step 5: new keys for every group, so the revoked device opens nothing sent later.
    let failed = group::rotate_all(link, device).await;
    if !failed.is_empty() {
        for (name, why) in &failed {
            eprintln!(
                "PartialGroupKeyUpdateFailure: the key of group {name} was not rotated: {why}"
            );
        }
        eprintln!(
            "PartialGroupKeyUpdateFailure: the device is revoked, but {} group(s) kept their key; \
             run `constella chat group rotate NAME` for each",
            failed.len()
        );
    }
    Ok(())
}
