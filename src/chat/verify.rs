//! `constella chat fingerprint @NAME` and `chat verify @NAME` (seed 004 §16; docs/messaging.md
//! "Verification"): the 60-digit fingerprints of both identities (`constella_keys::Fingerprint`,
//! `SHA-256(username ‖ identity)`), printed in username order so that both sides print the
//! same two lines to compare aloud; `verify` records the identity the user compared. A later
//! difference between the network's identity of a contact and the verified (or pinned) one is
//! printed as a loud warning.

use std::io::IsTerminal;

use anyhow::Result;
use constella_behaviours::pq4::Bytes;
use constella_keys::Fingerprint;

use super::bundle;
use super::device::Device;
use super::link::Link;

/// What this device knows of a contact's current identity.
struct Status {
    /// `(username, 60 digits)` for both sides, in username order.
    lines: Vec<(String, String)>,
    identity: Bytes,
    /// The pinned identity differs from the network's.
    changed: bool,
    /// The verified identity is the current one.
    verified: bool,
    /// Verified once, but the identity is no longer that one.
    verified_then_changed: bool,
}

async fn status(link: &mut Link, device: &Device, peer: &str) -> Result<Status> {
    let theirs = bundle(link, peer, false).await?.identity().clone();
    let identity = Bytes(theirs.to_bytes().to_vec());
    let me = device.stored.username.clone();
    let mine = Fingerprint::new(&me, device.keys.identity().public());
    let mut lines = vec![
        (me, mine.digits()),
        (peer.to_owned(), Fingerprint::new(peer, &theirs).digits()),
    ];
    lines.sort();
    let pinned = device
        .stored
        .peers
        .get(peer)
        .and_then(|p| p.identity.clone());
    let verified = device.stored.verified.get(peer);
    Ok(Status {
        lines,
        changed: pinned.as_ref().is_some_and(|p| *p != identity),
        verified: verified == Some(&identity),
        verified_then_changed: verified.is_some_and(|v| *v != identity),
        identity,
    })
}

fn warn_if_changed(peer: &str, status: &Status) {
    if status.changed || status.verified_then_changed {
        eprintln!(
            "!!! WARNING: @{peer}'s IDENTITY KEY HAS CHANGED since you last talked or verified."
        );
        eprintln!("!!! Compare the fingerprints below with @{peer} in person before trusting it.");
    }
}

/// Prints both fingerprints (and whether the contact is verified).
pub async fn fingerprint(
    link: &mut Link,
    device: &mut Device,
    peer: &str,
    json: bool,
) -> Result<()> {
    let status = status(link, device, peer).await?;
    warn_if_changed(peer, &status);
    if json {
        let users: serde_json::Map<String, serde_json::Value> = status
            .lines
            .iter()
            .map(|(name, digits)| (name.clone(), serde_json::Value::from(digits.clone())))
            .collect();
        let value = serde_json::json!({
            "users": users,
            "verified": status.verified,
            "changed": status.changed || status.verified_then_changed,
        });
        println!("{value}");
    } else {
        for (name, digits) in &status.lines {
            println!("@{name:<12} {digits}");
        }
        let state = if status.verified {
            "verified"
        } else if status.verified_then_changed {
            "KEY CHANGED since verified"
        } else {
            "not verified (compare the numbers, then `chat verify`)"
        };
        println!("@{peer}: {state}");
    }
    Ok(())
}

/// Records that the user compared `peer`'s fingerprint and it matched: the current identity
/// is pinned and marked verified.
pub async fn verify(link: &mut Link, device: &mut Device, peer: &str) -> Result<()> {
    let status = status(link, device, peer).await?;
    warn_if_changed(peer, &status);
    for (name, digits) in &status.lines {
        println!("@{name:<12} {digits}");
    }
    let entry = device.stored.peers.entry(peer.to_owned()).or_default();
    entry.identity = Some(status.identity.clone());
    device
        .stored
        .verified
        .insert(peer.to_owned(), status.identity);
    device.save()?;
    println!("@{peer} is verified on this device");
    Ok(())
}

/// Before sending to a verified contact: if the network's identity of `peer` is no longer the
/// one the user verified, say so loudly and ask for confirmation (on a terminal: type `yes`;
/// otherwise the send is refused).
pub async fn confirm_send(link: &mut Link, device: &Device, peer: &str) -> Result<()> {
    if !device.stored.verified.contains_key(peer) {
        return Ok(());
    }
    let status = status(link, device, peer).await?;
    if !status.verified_then_changed {
        return Ok(());
    }
    warn_if_changed(peer, &status);
    for (name, digits) in &status.lines {
        eprintln!("@{name:<12} {digits}");
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "KeyChanged: @{peer}'s identity differs from the one you verified; not sent (compare the fingerprints, then `chat verify @{peer}`)"
        );
    }
    eprint!("Send to @{peer} anyway? Type yes: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        anyhow::bail!("not sent");
    }
    Ok(())
}
