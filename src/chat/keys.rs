//! User key updates (seed 004 §11, §13; docs/messaging.md "Key updates"): `chat update-keys`
//! makes a new key store, announces it with a `KeyUpdate` signed by the current identity and
//! the new one, stores it with the account's holders, tells every contact through the
//! existing pairwise session (signed with the old key, so they accept it), switches this
//! device to the new keys and rotates its groups. Sessions continue: a ratchet does not depend
//! on the identity once it runs.
//!
//! A contact that was offline, or had no session, learns it at its next contact: when an
//! identity it pinned is no longer the one the network or a message shows, it follows the
//! account's chain of updates from the pinned identity ([`follow`]) and accepts the new key
//! only if every link is signed by the one before; then it says so (loudly for a verified
//! contact). Another device of the same account follows the chain too ([`adopt`]) and opens
//! the new key store the network holds.
//!
//! §11.1's period: at every command a device checks whether the account's keys are older than
//! 90 days (`CONSTELLA_PQ4_KEY_UPDATE_SECS` shortens it) and then updates them itself
//! ([`update_if_due`]), exactly as `chat update-keys` does.

use anyhow::{Context, Result, bail};
use constella_behaviours::pq4::{Bytes, Op, Recovered, Response};
use constella_keys::{Content, Fingerprint, IdentityPublicKey, KeyStore, KeyUpdate, SealedBlob};
use sha2::{Digest, Sha256};

use super::device::Device;
use super::link::Link;
use super::{check, group};

/// §11.1: the keys are updated every 90 days.
const KEY_UPDATE_PERIOD_SECS: u64 = 90 * 24 * 3600;

/// The key update period in ms (`CONSTELLA_PQ4_KEY_UPDATE_SECS`, default 90 days).
fn period_ms() -> u64 {
    std::env::var("CONSTELLA_PQ4_KEY_UPDATE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(KEY_UPDATE_PERIOD_SECS)
        .saturating_mul(1000)
}

/// `3 days` or `42 s`.
fn age(ms: u64) -> String {
    match ms / 1000 {
        s if s >= 86_400 => format!("{} days", s / 86_400),
        s => format!("{s} s"),
    }
}

/// When the network says `username`'s current keys were made.
async fn keys_since(link: &mut Link, username: &str) -> Result<u64> {
    let op = Op::KeyUpdates {
        username: username.to_owned(),
    };
    match check(link.call(op).await?)? {
        Response::KeyUpdates { since_ms, .. } => Ok(since_ms),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// §11.1 "every 90 days": when the account's keys are older than the period, this device
/// updates them itself (what `chat update-keys` does, said on stderr). The network is asked
/// only when the age this device last learned is past the period (keys only get newer). A
/// failure other than a final one (a revoked device…) is reported and the command goes on.
pub async fn update_if_due(link: &mut Link, device: &mut Device) -> Result<()> {
    let period = period_ms();
    let now = super::now_ms();
    let known = device.stored.keys_since_ms;
    if known != 0 && now.saturating_sub(known) < period {
        return Ok(());
    }
    let username = device.stored.username.clone();
    let since = keys_since(link, &username).await?;
    device.stored.keys_since_ms = since;
    if now.saturating_sub(since) < period {
        return device.save();
    }
    eprintln!(
        "the keys of @{username} were made {} ago, more than the key update period ({}): \
         updating them",
        age(now.saturating_sub(since)),
        age(period)
    );
    match update_as(link, device, true).await {
        Ok(()) => Ok(()),
        Err(e) if super::is_final(&e) => Err(e),
        Err(e) => {
            eprintln!(
                "the automatic key update failed: {e:#}; it is tried again at the next command"
            );
            Ok(())
        }
    }
}

/// `chat update-keys`.
pub async fn update(link: &mut Link, device: &mut Device) -> Result<()> {
    update_as(link, device, false).await
}

/// A key update; `auto`: started by [`update_if_due`], so its report goes to stderr (stdout
/// belongs to the command the user ran).
async fn update_as(link: &mut Link, device: &mut Device, auto: bool) -> Result<()> {
    let mut rng = rand::rng();
    let (store, update) = KeyUpdate::create_with_one_time_prekeys(
        device.keys.identity(),
        super::opk_count(),
        &mut rng,
    )
    .context("cannot generate the new keys")?;
    let opks = super::public_opks(&store);
    let sealed = store
        .seal(&device.password, &mut rng)
        .context("cannot seal the new keys")?;
    let bytes = update.to_bytes();
    let auth = device.mailbox_key().auth(&Sha256::digest(&bytes));
    let op = Op::UpdateKeys {
        auth,
        update: Bytes(bytes),
        bundle: Bytes(store.bundle(None).to_bytes()),
        opks,
        sealed_keys: Bytes(sealed.to_bytes()),
    };
    test_barrier(device).await;
    match check(link.call(op).await?)? {
        Response::KeyUpdates { .. } => {}
        other => bail!("unexpected answer: {other:?}"),
    }
    // Tell every contact in its session, still signed with the old identity they know.
    let contacts: Vec<String> = device
        .stored
        .peers
        .iter()
        .filter(|(_, p)| p.session.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    let content = Content::KeyUpdate(Box::new(update));
    let mut told = 0;
    for peer in &contacts {
        let sent = async {
            let envelope = super::seal_content(link, device, peer, &content).await?;
            let op = Op::Send {
                from: device.stored.username.clone(),
                to: peer.clone(),
                envelope: Bytes(envelope),
            };
            check(link.call(op).await?)
        }
        .await;
        match sent {
            Ok(_) => told += 1,
            Err(e) => eprintln!(
                "could not tell @{peer} now ({e:#}); they learn it at their next contact (the \
                 network keeps the chain)"
            ),
        }
    }
    device.keys = store;
    device.stored.keys_since_ms = super::now_ms();
    let new = device.keys.identity_public().clone();
    rebind_all(device, &new)?;
    device.save_keys()?;
    let me = device.stored.username.clone();
    let report = format!(
        "updated the keys of @{me}; told {told} contact(s); your new fingerprint: {}",
        Fingerprint::new(&me, device.keys.identity_public()).digits()
    );
    if auto {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    // Group members must see the new identity in the group key too.
    for (name, why) in group::rotate_all(link, device).await {
        eprintln!("the key of group {name} was not rotated: {why}; run `chat group rotate {name}`");
    }
    Ok(())
}

/// The account's key updates and current identity as the network holds them.
async fn chain(link: &mut Link, username: &str) -> Result<(Vec<KeyUpdate>, Vec<Recovered>)> {
    let op = Op::KeyUpdates {
        username: username.to_owned(),
    };
    match check(link.call(op).await?)? {
        Response::KeyUpdates {
            updates,
            recoveries,
            ..
        } => {
            let parsed = updates
                .iter()
                .map(|u| KeyUpdate::from_bytes(&u.0))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("@{username}'s key updates"))?;
            Ok((parsed, recoveries))
        }
        other => bail!("unexpected answer: {other:?}"),
    }
}

fn wire_bytes(update: &KeyUpdate, new: bool) -> Vec<u8> {
    let id = if new {
        update.new_identity()
    } else {
        update.old_identity()
    };
    [&id.signing[..], &id.dh[..]].concat()
}

/// Follows `from`'s identity chain from `start` to `target`; `None` when `target` is not
/// reached through updates each signed by the identity before.
fn walk(updates: &[KeyUpdate], start: &[u8], target: &[u8]) -> Option<IdentityPublicKey> {
    let first = updates.iter().position(|u| wire_bytes(u, false) == start)?;
    let mut current = updates[first].old_identity().verify().ok()?;
    for u in &updates[first..] {
        current = u.verify(&current).ok()?.identity().clone();
        if current.to_bytes().as_slice() == target {
            return Some(current);
        }
    }
    None
}

/// A contact's identity `seen` (in a message or the network's bundle) differs from the one
/// pinned: accepts it if the account's chain of key updates leads there from the pinned one,
/// re-pins it and tells the user. `Ok(false)` when it does not.
pub async fn follow(link: &mut Link, device: &mut Device, peer: &str, seen: &[u8]) -> Result<bool> {
    let Some(pinned) = device
        .stored
        .peers
        .get(peer)
        .and_then(|p| p.identity.clone())
    else {
        return Ok(false);
    };
    let (updates, recoveries) = chain(link, peer).await?;
    if let Some(new) = walk(&updates, &pinned.0, seen) {
        accepted(device, peer, &new, false);
        return Ok(true);
    }
    // A recovery (§15) is not signed by the old identity: the network vouches for it with
    // the account's recovery code. Accepted loudly, and only for the identity the last
    // recovery installed (or one its own key updates lead to).
    let Some(last) = recoveries.last() else {
        return Ok(false);
    };
    if last.new.0 != seen && walk(&updates, &last.new.0, seen).is_none() {
        return Ok(false);
    }
    let served = super::bundle(link, peer, false).await?.identity().clone();
    if served.to_bytes().as_slice() != seen {
        return Ok(false);
    }
    accepted(device, peer, &served, true);
    if !device.recovered.iter().any(|p| p == peer) {
        device.recovered.push(peer.to_owned());
    }
    Ok(true)
}

/// A key update received in `peer`'s session, checked against the identity pinned for them.
pub fn on_update(device: &mut Device, peer: &str, update: &KeyUpdate) -> Result<(), String> {
    let pinned = device
        .stored
        .peers
        .get(peer)
        .and_then(|p| p.identity.clone())
        .ok_or("no identity pinned for the sender")?;
    if wire_bytes(update, false) != pinned.0 {
        return Err(format!(
            "a key update from @{peer} does not replace the identity pinned for them"
        ));
    }
    let current = update.old_identity().verify().map_err(|e| e.to_string())?;
    let verified = update
        .verify(&current)
        .map_err(|e| format!("a key update from @{peer} does not verify: {e}"))?;
    accepted(device, peer, verified.identity(), false);
    Ok(())
}

/// Pins `identity` for `peer` and says so (loudly when the user had verified the old one, or
/// when it comes from a recovery).
fn accepted(device: &mut Device, peer: &str, new: &IdentityPublicKey, recovery: bool) {
    let identity = Bytes(new.to_bytes().to_vec());
    let verified = device.stored.verified.contains_key(peer);
    let entry = device.stored.peers.entry(peer.to_owned()).or_default();
    if entry.identity.as_ref() == Some(&identity) {
        return;
    }
    if let Some(old) = entry.identity.replace(identity) {
        group::replace_identity(device, &old.0, new);
    }
    // The pairwise session carries on under the new identity (the sender rebound its end).
    if let Ok(Some(mut session)) = device.session(peer) {
        session.rebind(None, Some(new));
        let _ = device.put_session(peer, &session);
    }
    if recovery {
        eprintln!(
            "!!! WARNING: @{peer} RECOVERED THEIR ACCOUNT: the new identity key is NOT signed by \
             the old one (the network vouches for it with @{peer}'s recovery code). Compare \
             fingerprints in person: `constella chat fingerprint @{peer}`, then `chat verify @{peer}`."
        );
    } else if verified {
        eprintln!(
            "!!! WARNING: @{peer} UPDATED THEIR IDENTITY KEY (signed by the key you verified). \
             Compare fingerprints again: `constella chat fingerprint @{peer}`, then `chat verify @{peer}`."
        );
    } else {
        eprintln!(
            "@{peer} updated their identity key (signed by the key you knew); compare \
             fingerprints: `constella chat fingerprint @{peer}`"
        );
    }
}

/// This device's identity is no longer the account's: if the account's chain leads from ours
/// to the network's (another device updated the keys), opens the new key store the network
/// holds and switches to it. `Ok(false)` when it does not.
pub async fn adopt(link: &mut Link, device: &mut Device, served: &[u8]) -> Result<bool> {
    let username = device.stored.username.clone();
    let ours = device.keys.identity_public().to_bytes().to_vec();
    let (updates, recoveries) = chain(link, &username).await?;
    if walk(&updates, &ours, served).is_none() {
        if !recoveries.is_empty() {
            bail!(
                "DeviceRevoked: @{username} was recovered with its recovery code on another \
                 device; this device's keys are revoked and it can no longer read or send for \
                 the account"
            );
        }
        return Ok(false);
    }
    // The sealed key store comes with a login (challenge answered with this device's key).
    let start = Op::LoginStart {
        username: username.clone(),
    };
    let nonce = match check(link.call(start).await?)? {
        Response::LoginChallenge { nonce, .. } => nonce,
        other => bail!("unexpected answer: {other:?}"),
    };
    let verifier = device.password.login_proof();
    let finish = Op::LoginFinish {
        username: username.clone(),
        mac: Bytes(constella_behaviours::pq4::login_mac(
            verifier.as_bytes(),
            &nonce.0,
            &username,
        )),
        nonce,
    };
    let account = match check(link.call(finish).await?)? {
        Response::LoggedIn { account } => account,
        other => bail!("unexpected answer: {other:?}"),
    };
    let blob = SealedBlob::from_bytes(&account.sealed_keys.0).context("the sealed keys")?;
    let keys = KeyStore::open(&blob, &device.password).context("cannot open the new keys")?;
    if keys.identity_public().to_bytes().as_slice() != served {
        bail!("the network's key store does not hold @{username}'s current identity");
    }
    let old = device.keys.identity_public().to_bytes();
    let new = keys.identity_public().clone();
    device.keys = keys;
    group::replace_identity(device, &old, &new);
    rebind_all(device, &new)?;
    device.save_keys()?;
    eprintln!(
        "the keys of @{username} were updated on another device; this device follows them \
         (new fingerprint {})",
        Fingerprint::new(&username, device.keys.identity_public()).digits()
    );
    Ok(true)
}

/// Test knob `CONSTELLA_TEST_CHAT_KEYS_BARRIER=DIR`: say `DIR/<device id>.ready` and wait (at
/// most 60 s) for `DIR/go` before sending the update, so a test can make two devices' updates
/// truly concurrent.
async fn test_barrier(device: &Device) {
    let id = hex::encode(&device.stored.device_id.0);
    super::test_barrier("CONSTELLA_TEST_CHAT_KEYS_BARRIER", &id).await;
}

/// Our identity changed: every pairwise session carries on under the new one (each contact
/// rebinds its end when it accepts the update).
fn rebind_all(device: &mut Device, new: &IdentityPublicKey) -> Result<()> {
    let peers: Vec<String> = device
        .stored
        .peers
        .iter()
        .filter(|(_, p)| p.session.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    for peer in peers {
        if let Some(mut session) = device.session(&peer)? {
            session.rebind(Some(new), None);
            device.put_session(&peer, &session)?;
        }
    }
    Ok(())
}
