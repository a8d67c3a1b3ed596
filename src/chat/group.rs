//! `constella chat group …`: group chats (seed 004 §6–10, §13; docs/messaging.md "Groups").
//!
//! - The group's metadata is a signed [`GroupRecord`] the network keeps (`Op::PutGroup`); the
//!   holders and *this client* both apply the rules of `pq4_groups`: only admins change the
//!   members, a new version follows the one before, two versions of one epoch are ordered by
//!   their authors' keys.
//! - The group key ([`GroupSession`], sealed under the password in `device.cbor`) reaches each
//!   member as a `GroupKeyShare` inside the pairwise PQ4 session. A share is installed only
//!   when the group's record of that epoch was made by the share's sender and lists exactly
//!   the share's members: a key from a non-admin's forged removal, or from a change that lost
//!   a concurrent update, is refused.
//! - Group messages are encrypted once under the group key and queued in each member's
//!   mailbox as a [`GroupFrame`]; removed members get none, and could not open them.
//! - The key rotates before the 101st message of a sender under one key or after 7 days
//!   (`GroupSession::needs_rotation`), and on every add and remove.
//! - A member's client acknowledges each key it installs to the group's holders (§8.1 step
//!   6); the holders mark members that do not within the bound inactive and tell the admins
//!   (§8.2), whose clients check the notice against the holders' status before showing it.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use constella_behaviours::pq4::{Bytes, GroupRecord, Op, Queued, Response};
use constella_behaviours::pq4_groups::{
    GroupAck, GroupFrame, GroupStatus, HeldGroup, LeaveRequest, Offer, valid_group_name,
};
use constella_keys::{Content, GroupKeyShare, GroupMessage, GroupSession, IdentityPublicKey};
use serde::{Deserialize, Serialize};

use super::device::Device;
use super::link::Link;
use super::{Flag, bundle, check, now_ms, peer_name, seal_content};

/// `constella chat group …`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with you as its admin: `group create NAME @a @b…`.
    Create {
        name: String,
        /// The other members, `@name` each.
        #[arg(required = true)]
        members: Vec<String>,
        /// Make this member an admin too (repeatable); the creator always is one.
        #[arg(long = "admin", value_name = "@NAME")]
        admins: Vec<String>,
    },
    /// Send one message to every member.
    Send { name: String, text: String },
    /// Add a member (admins only); the key rotates, so the newcomer reads only what follows.
    Add {
        name: String,
        member: String,
        /// Make the new member an admin too.
        #[arg(long)]
        admin: bool,
    },
    /// Rotate the group key now (any member).
    Rotate { name: String },
    /// Remove a member (admins only); the key rotates and the removed member never gets it.
    Remove { name: String, member: String },
    /// Leave a group: the admins are asked to remove you; this device forgets the group key.
    Leave { name: String },
    /// Show the members and admins.
    Members {
        name: String,
        /// `{"group","id","epoch","members":[…],"admins":[…],"by","member"}`.
        #[arg(long)]
        json: bool,
    },
}

/// One group as this device knows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupState {
    /// The record versions accepted (current and the one it followed).
    pub held: HeldGroup,
    /// The group key state sealed under the password; `None` once we are out of the group.
    pub session: Option<constella_keys::SealedBlob>,
    /// We were removed or left.
    pub gone: bool,
}

/// Identities looked up during one command: the signed bundle the network holds, checked
/// against the identity this device pinned at the first contact.
#[derive(Default)]
struct Directory(HashMap<String, IdentityPublicKey>);

impl Directory {
    async fn get(
        &mut self,
        link: &mut Link,
        device: &mut Device,
        name: &str,
    ) -> Result<IdentityPublicKey> {
        if let Some(known) = self.0.get(name) {
            return Ok(known.clone());
        }
        let verified = bundle(link, name, false).await?;
        let identity = verified.identity().clone();
        let bytes = Bytes(identity.to_bytes().to_vec());
        let pinned = device
            .stored
            .peers
            .get(name)
            .and_then(|p| p.identity.clone());
        match pinned {
            // A key update (§11) whose chain leads from the pinned identity is followed.
            Some(pinned)
                if pinned != bytes
                    && !super::keys::follow(link, device, name, &bytes.0).await? =>
            {
                bail!("@{name}'s identity key changed since the last contact; refusing")
            }
            Some(_) => {}
            None => {
                device
                    .stored
                    .peers
                    .entry(name.to_owned())
                    .or_default()
                    .identity = Some(bytes)
            }
        }
        self.0.insert(name.to_owned(), identity.clone());
        Ok(identity)
    }
}

/// Test knob: a non-admin's client skips its own admin check and sends its key shares even
/// when the network refuses the record, to show that every member's client refuses them.
fn forging() -> bool {
    std::env::var_os("CONSTELLA_TEST_CHAT_FORGE_GROUP").is_some()
}

/// Test knob `CONSTELLA_TEST_CHAT_GROUP_BARRIER=DIR`: say `DIR/<user>.ready` and wait (at most
/// 60 s) for `DIR/go` before storing a change, so a test can make two changes truly concurrent.
async fn test_pause_before_put(me: &str) {
    super::test_barrier("CONSTELLA_TEST_CHAT_GROUP_BARRIER", me).await;
}

/// Runs a group command on an unlocked device.
pub async fn run(link: &mut Link, device: &mut Device, command: GroupCommand) -> Result<()> {
    let mut dir = Directory::default();
    match command {
        GroupCommand::Create {
            name,
            members,
            admins,
        } => create(link, device, &mut dir, &name, &members, &admins).await,
        GroupCommand::Send { name, text } => {
            let gid = find(device, &name)?;
            // Test knob: send this many numbered messages in one run (a rotation test needs
            // more than 100).
            let repeat: usize = std::env::var("CONSTELLA_TEST_CHAT_GROUP_REPEAT")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            for i in 1..=repeat {
                let line = if repeat == 1 {
                    text.clone()
                } else {
                    format!("{text} #{i}")
                };
                send(link, device, &mut dir, &gid, &line).await?;
            }
            Ok(())
        }
        GroupCommand::Add {
            name,
            member,
            admin,
        } => {
            let gid = find(device, &name)?;
            let member = peer_name(&member)?;
            let record = change(
                link,
                device,
                &mut dir,
                &gid,
                Change::Add(member.clone(), admin),
            )
            .await?;
            println!("added @{member} to {name} (key epoch {})", record.epoch);
            Ok(())
        }
        GroupCommand::Rotate { name } => {
            let gid = find(device, &name)?;
            let record = change(link, device, &mut dir, &gid, Change::Rotate).await?;
            println!("rotated the key of {name} (key epoch {})", record.epoch);
            Ok(())
        }
        GroupCommand::Remove { name, member } => {
            let gid = find(device, &name)?;
            let member = peer_name(&member)?;
            let record =
                change(link, device, &mut dir, &gid, Change::Remove(member.clone())).await?;
            println!("removed @{member} from {name} (key epoch {})", record.epoch);
            Ok(())
        }
        GroupCommand::Leave { name } => leave(link, device, &name).await,
        GroupCommand::Members { name, json } => {
            let gid = find(device, &name)?;
            refresh(link, device, &mut dir, &gid).await;
            let state = &device.stored.groups[&gid];
            let record = &state.held.current;
            // Who holds the current key and who is inactive (§8.2), as the holders say.
            let status = match ack_status(link, &record.gid.0).await {
                Ok(status) if status.epoch == record.epoch => Some(status),
                Ok(_) => None,
                Err(e) => {
                    eprintln!("the acknowledgements of {name} are not known now: {e:#}");
                    None
                }
            };
            if json {
                let value = serde_json::json!({
                    "group": record.name,
                    "id": hex::encode(&record.gid.0),
                    "epoch": record.epoch,
                    "members": record.members,
                    "admins": record.admins,
                    "by": record.by,
                    "member": !state.gone,
                    "acknowledged": status.as_ref().map(|s| &s.acknowledged),
                    "inactive": status.as_ref().map(|s| &s.inactive),
                });
                println!("{value}");
            } else {
                println!("group {} (key epoch {})", record.name, record.epoch);
                for m in &record.members {
                    let admin = if record.is_admin(m) { " (admin)" } else { "" };
                    let inactive = if status.as_ref().is_some_and(|s| s.inactive.contains(m)) {
                        " (inactive: did not acknowledge a key in time)"
                    } else {
                        ""
                    };
                    println!("  @{m}{admin}{inactive}");
                }
                if let Some(s) = &status {
                    println!(
                        "the current key is acknowledged by {} of {} member(s)",
                        s.acknowledged.len(),
                        record.members.len()
                    );
                }
                if state.gone {
                    println!("(you are no longer a member)");
                }
            }
            device.save()
        }
    }
}

/// The id (hex) of the group called `name` on this device.
fn find(device: &Device, name: &str) -> Result<String> {
    let matches: Vec<&String> = device
        .stored
        .groups
        .iter()
        .filter(|(_, s)| s.held.current.name == name)
        .map(|(gid, _)| gid)
        .collect();
    match matches.as_slice() {
        [] => bail!(
            "GroupNotFound: no group {name:?} on this device (see `chat read` for invitations)"
        ),
        [one] => Ok((*one).clone()),
        many => {
            // Prefer the one we are still in.
            let live: Vec<&&String> = many
                .iter()
                .filter(|gid| !device.stored.groups[**gid].gone)
                .collect();
            match live.as_slice() {
                [one] => Ok((**one).clone()),
                _ => bail!("more than one group is called {name:?} on this device"),
            }
        }
    }
}

fn gid_hex(gid: &[u8]) -> String {
    hex::encode(gid)
}

/// Signs a record version as this device's user.
fn sign(device: &Device, mut record: GroupRecord) -> Result<GroupRecord> {
    let identity = device.keys.identity();
    record.by = device.stored.username.clone();
    record.by_key = Bytes(identity.public().signing_key_bytes().to_vec());
    record.at_ms = now_ms();
    let sig = identity
        .sign_group_control(&record.signed_bytes())
        .context("cannot sign the group record")?;
    record.sig = Bytes(sig.to_vec());
    Ok(record)
}

async fn put_record(link: &mut Link, record: GroupRecord) -> Result<GroupRecord> {
    match check(link.call(Op::PutGroup { record }).await?)? {
        Response::Group(Some(held)) => Ok(*held),
        other => bail!("unexpected answer: {other:?}"),
    }
}

async fn fetch_record(link: &mut Link, gid: &[u8]) -> Result<GroupRecord> {
    let op = Op::GetGroup {
        gid: Bytes(gid.to_vec()),
    };
    match check(link.call(op).await?)? {
        Response::Group(Some(held)) => Ok(*held),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// The holders' acknowledgement state of a group's current key.
async fn ack_status(link: &mut Link, gid: &[u8]) -> Result<GroupStatus> {
    let op = Op::GroupStatus {
        gid: Bytes(gid.to_vec()),
    };
    match check(link.call(op).await?)? {
        Response::GroupStatus(status) => Ok(status),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// §8.1 step 6: tells the group's holders that this device installed the key of `epoch`.
async fn acknowledge(link: &mut Link, device: &Device, gid: &[u8], epoch: u32) -> Result<()> {
    let mut ack = GroupAck {
        gid: Bytes(gid.to_vec()),
        epoch,
        by: device.stored.username.clone(),
        at_ms: now_ms(),
        sig: Bytes::default(),
    };
    let sig = device
        .keys
        .identity()
        .sign_group_control(&ack.signed_bytes())
        .context("cannot sign the acknowledgement")?;
    ack.sig = Bytes(sig.to_vec());
    match check(link.call(Op::AckGroupKey { ack }).await?)? {
        Response::GroupStatus(_) => Ok(()),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// The holders say `members` did not acknowledge the key of `epoch` in time (§8.2): an admin's
/// client tells the user about those the holders still list as inactive.
async fn on_inactive(
    link: &mut Link,
    device: &mut Device,
    gid: &Bytes,
    epoch: u32,
    members: &[String],
) -> Result<()> {
    let me = device.stored.username.clone();
    let Some(state) = device.stored.groups.get(&gid_hex(&gid.0)) else {
        return Ok(());
    };
    if state.gone || !state.held.current.is_admin(&me) {
        return Ok(());
    }
    let name = state.held.current.name.clone();
    // The notice is not signed: believe only what the group's holders say now.
    let now = ack_status(link, &gid.0).await?;
    let confirmed: Vec<&String> = members
        .iter()
        .filter(|m| now.inactive.contains(m))
        .collect();
    if confirmed.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = confirmed.iter().map(|m| format!("@{m}")).collect();
    eprintln!(
        "group {name}: {} did not acknowledge the key of epoch {epoch} in time and {} marked \
         inactive (see `constella chat group members {name}`)",
        names.join(", "),
        if names.len() == 1 { "is" } else { "are" }
    );
    Ok(())
}

/// Checks a record's signature against its author's identity.
async fn verify_record(
    link: &mut Link,
    device: &mut Device,
    dir: &mut Directory,
    record: &GroupRecord,
) -> Result<()> {
    let author = dir.get(link, device, &record.by).await?;
    record.verify(&author)?;
    Ok(())
}

/// Offers `record` to what this device holds of its group and tells the user what changed
/// for them. Returns the outcome; a refused record changes nothing.
fn accept(device: &mut Device, gid: &str, record: GroupRecord) -> Result<Offer> {
    let me = device.stored.username.clone();
    let Some(state) = device.stored.groups.get_mut(gid) else {
        bail!("unknown group");
    };
    let before = state.held.current.clone();
    let outcome = state.held.offer(record)?;
    let now = &state.held.current;
    if outcome == Offer::Installed {
        if before.epoch == now.epoch && before.by == me && now.by != me {
            eprintln!(
                "your change of group {} (key epoch {}) lost to a concurrent one by @{}; following it",
                now.name, now.epoch, now.by
            );
        }
        if !now.is_member(&me) && !state.gone {
            eprintln!("you were removed from group {} by @{}", now.name, now.by);
            state.gone = true;
            state.session = None;
        }
    }
    Ok(outcome)
}

/// Brings this device's record of a group up to the network's (best effort: offline, the
/// local one is shown).
async fn refresh(link: &mut Link, device: &mut Device, dir: &mut Directory, gid: &str) {
    let Ok(raw) = hex::decode(gid) else { return };
    let result = async {
        let record = fetch_record(link, &raw).await?;
        verify_record(link, device, dir, &record).await?;
        accept(device, gid, record)
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %format!("{e:#}"), "group record not refreshed");
    }
}

fn session(device: &Device, state: &GroupState) -> Result<GroupSession> {
    let Some(blob) = &state.session else {
        bail!(
            "you are not a member of group {} any more",
            state.held.current.name
        );
    };
    GroupSession::open(blob, &device.password).context("cannot open the stored group key")
}

fn store_session(device: &mut Device, gid: &str, session: &GroupSession) -> Result<()> {
    let sealed = session
        .seal(&device.password, &mut rand::rng())
        .context("cannot seal the group key")?;
    if let Some(state) = device.stored.groups.get_mut(gid) {
        state.session = Some(sealed);
    }
    Ok(())
}

async fn queue(link: &mut Link, device: &Device, to: &str, bytes: Vec<u8>) -> Result<()> {
    // The group figures (benches/chat_groups.rs) add these up.
    tracing::debug!(member = %to, bytes = bytes.len(), "group traffic queued in a mailbox");
    let op = Op::Send {
        from: device.stored.username.clone(),
        to: to.to_owned(),
        envelope: Bytes(bytes),
    };
    match check(link.call(op).await?)? {
        Response::Sent { .. } => Ok(()),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Sends the current key to each of `to` through the pairwise sessions; names those that
/// could not be reached (§6.2: they are skipped, the sender is told).
async fn distribute(
    link: &mut Link,
    device: &mut Device,
    session: &GroupSession,
    to: &[String],
) -> Vec<String> {
    let me = device.stored.username.clone();
    let mut missed = Vec::new();
    for name in to.iter().filter(|n| **n != me) {
        let content = Content::GroupKeyShare(session.share());
        let sent = async {
            let envelope = seal_content(link, device, name, &content).await?;
            queue(link, device, name, envelope).await
        }
        .await;
        if let Err(e) = sent {
            eprintln!("the group key did not reach @{name}: {e:#}");
            missed.push(name.clone());
        }
    }
    missed
}

async fn create(
    link: &mut Link,
    device: &mut Device,
    dir: &mut Directory,
    name: &str,
    members: &[String],
    extra_admins: &[String],
) -> Result<()> {
    if !valid_group_name(name) {
        bail!("invalid group name {name:?}: 1-64 of letters, digits, - _ .");
    }
    if device
        .stored
        .groups
        .values()
        .any(|s| s.held.current.name == name && !s.gone)
    {
        bail!("you are already in a group called {name:?}");
    }
    let me = device.stored.username.clone();
    let mut names = Vec::new();
    for m in members {
        let m = peer_name(m)?;
        if m != me && !names.contains(&m) {
            names.push(m);
        }
    }
    // §6.2: a member whose bundle is unavailable is skipped, and the creator told.
    let mut reachable = Vec::new();
    let mut identities = Vec::new();
    for m in names {
        match dir.get(link, device, &m).await {
            Ok(id) => {
                identities.push(id);
                reachable.push(m);
            }
            Err(e) => eprintln!("@{m} skipped: {e:#}"),
        }
    }
    if reachable.is_empty() {
        bail!("no member could be added; the group was not created");
    }
    let own = device.keys.identity().public().clone();
    let session = GroupSession::create(&own, &identities, now_ms(), &mut rand::rng())
        .context("cannot create the group key")?;
    let mut all = vec![me.clone()];
    all.extend(reachable.iter().cloned());
    let mut admins = vec![me.clone()];
    for a in extra_admins {
        let a = peer_name(a)?;
        if !all.contains(&a) {
            bail!("--admin @{a} is not one of the members");
        }
        if !admins.contains(&a) {
            admins.push(a);
        }
    }
    let record = sign(
        device,
        GroupRecord {
            gid: Bytes(session.group_id().to_vec()),
            name: name.to_owned(),
            epoch: session.epoch(),
            members: all,
            admins,
            by: String::new(),
            by_key: Bytes::default(),
            at_ms: 0,
            sig: Bytes::default(),
        },
    )?;
    put_record(link, record.clone()).await?;
    let gid = gid_hex(session.group_id());
    device.stored.groups.insert(
        gid.clone(),
        GroupState {
            held: HeldGroup::create(record.clone())?,
            session: None,
            gone: false,
        },
    );
    store_session(device, &gid, &session)?;
    device.save()?;
    let missed = distribute(link, device, &session, &reachable).await;
    device.save()?;
    println!(
        "created group {name} with {} member(s){}",
        record.members.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!("; the key did not reach: @{}", missed.join(", @"))
        }
    );
    Ok(())
}

enum Change {
    /// A new member, and whether as an admin.
    Add(String, bool),
    Remove(String),
    Rotate,
}

/// A new version of the group: the key rotated, members changed as asked; stored in the
/// network, then the key sent to the members. Returns the stored record.
async fn change(
    link: &mut Link,
    device: &mut Device,
    dir: &mut Directory,
    gid: &str,
    change: Change,
) -> Result<GroupRecord> {
    // Start from the network's version, so a change is not based on a stale one.
    refresh(link, device, dir, gid).await;
    let me = device.stored.username.clone();
    let state = &device.stored.groups[gid];
    if state.gone {
        bail!(
            "you are not a member of group {} any more",
            state.held.current.name
        );
    }
    let current = state.held.current.clone();
    let name = current.name.clone();
    let mut session = session(device, state)?;
    if session.epoch() != current.epoch {
        bail!(
            "this device's key of {name} (epoch {}) is behind the group (epoch {}): run `chat read` first",
            session.epoch(),
            current.epoch
        );
    }
    let forge = forging();
    let membership = !matches!(change, Change::Rotate);
    if membership && !current.is_admin(&me) && !forge {
        bail!("NotAnAdmin: only an admin of {name} adds or removes members");
    }
    let mut members = current.members.clone();
    let mut admins = current.admins.clone();
    let mut removed = None;
    let mut rng = rand::rng();
    match &change {
        Change::Add(x, admin) => {
            if current.is_member(x) {
                bail!("@{x} is already a member of {name}");
            }
            let id = dir.get(link, device, x).await?;
            session.add_member(&id, now_ms(), &mut rng)?;
            members.push(x.clone());
            if *admin {
                admins.push(x.clone());
            }
        }
        Change::Remove(x) => {
            if !current.is_member(x) {
                bail!("@{x} is not a member of {name}");
            }
            if *x == me {
                bail!("to leave {name}, use `chat group leave {name}`");
            }
            let id = dir.get(link, device, x).await?;
            session.remove_member(&id, now_ms(), &mut rng)?;
            members.retain(|m| m != x);
            admins.retain(|m| m != x);
            removed = Some(x.clone());
        }
        Change::Rotate => {
            // After a key update (§11) our entry still names the old identity: replace it.
            let own = device.keys.identity_public().clone();
            if session.members().contains(&own) {
                session.rotate(now_ms(), &mut rng)?;
            } else {
                session.replace_own(&own, now_ms(), &mut rng)?;
            }
        }
    }
    let record = sign(
        device,
        GroupRecord {
            epoch: session.epoch(),
            members,
            admins,
            ..current
        },
    )?;
    test_pause_before_put(&me).await;
    match put_record(link, record.clone()).await {
        Ok(held) if held == record => {}
        Ok(winner) => {
            // Lost a concurrent update (§13): follow the winner; our key is not kept.
            verify_record(link, device, dir, &winner).await?;
            accept(device, gid, winner.clone())?;
            device.save()?;
            bail!(
                "Conflict: a concurrent change of {name} by @{} won (key epoch {}); yours was not applied",
                winner.by,
                winner.epoch
            );
        }
        Err(e) if forge => {
            eprintln!("the network refused the record ({e:#}); test knob: sending the key anyway");
            distribute(link, device, &session, &record.members).await;
            device.save()?;
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    if let Some(state) = device.stored.groups.get_mut(gid) {
        state
            .held
            .offer(record.clone())
            .context("cannot apply our own change")?;
    }
    store_session(device, gid, &session)?;
    device.save()?;
    let missed = distribute(link, device, &session, &record.members).await;
    if let Some(x) = removed {
        // Tell the removed member (the record only; it gets no key).
        let frame = GroupFrame::Record(record.clone()).to_bytes();
        if let Err(e) = queue(link, device, &x, frame).await {
            eprintln!("@{x} was not told of the removal: {e:#}");
        }
    }
    device.save()?;
    if !missed.is_empty() {
        eprintln!(
            "the new key of {name} did not reach @{}",
            missed.join(", @")
        );
    }
    Ok(record)
}

async fn send(
    link: &mut Link,
    device: &mut Device,
    dir: &mut Directory,
    gid: &str,
    text: &str,
) -> Result<()> {
    let state = &device.stored.groups[gid];
    let mut group = session(device, state)?;
    if group.needs_rotation(now_ms()) {
        drop(group);
        let record = change(link, device, dir, gid, Change::Rotate).await?;
        eprintln!(
            "rotated the key of {} (key epoch {}): 100 messages or 7 days under the last one",
            record.name, record.epoch
        );
        group = session(device, &device.stored.groups[gid])?;
    }
    let message = group
        .encrypt(device.keys.identity(), now_ms(), text.as_bytes())
        .context("cannot encrypt")?;
    // The advanced counter is stored before the message leaves (a crash never reuses a key).
    store_session(device, gid, &group)?;
    device.save()?;
    let frame = GroupFrame::Message(Bytes(message.to_bytes())).to_bytes();
    // Test knob: keep a copy of what was sent (to show who can and cannot open it).
    if let Some(path) = std::env::var_os("CONSTELLA_TEST_CHAT_ENVELOPE_OUT") {
        std::fs::write(path, &frame).context("test knob: cannot write the envelope")?;
    }
    let me = device.stored.username.clone();
    let members = device.stored.groups[gid].held.current.members.clone();
    let mut missed = Vec::new();
    for m in members.iter().filter(|m| **m != me) {
        if let Err(e) = queue(link, device, m, frame.clone()).await {
            eprintln!("not delivered to @{m}: {e:#}");
            missed.push(m.clone());
        }
    }
    if !missed.is_empty() && missed.len() == members.len() - 1 {
        bail!("the message reached no member");
    }
    Ok(())
}

async fn leave(link: &mut Link, device: &mut Device, name: &str) -> Result<()> {
    let gid = find(device, name)?;
    let me = device.stored.username.clone();
    let state = &device.stored.groups[&gid];
    if state.gone {
        bail!("you are not a member of group {name} any more");
    }
    let record = state.held.current.clone();
    let others: Vec<String> = record
        .admins
        .iter()
        .filter(|a| **a != me)
        .cloned()
        .collect();
    if others.is_empty() && record.members.len() > 1 {
        bail!("you are the only admin of {name}: remove the other members first");
    }
    let mut request = LeaveRequest {
        gid: record.gid.clone(),
        by: me.clone(),
        at_ms: now_ms(),
        sig: Bytes::default(),
    };
    let sig = device
        .keys
        .identity()
        .sign_group_control(&request.signed_bytes())
        .context("cannot sign")?;
    request.sig = Bytes(sig.to_vec());
    let frame = GroupFrame::Leave(request).to_bytes();
    let mut told = 0;
    for admin in &others {
        match queue(link, device, admin, frame.clone()).await {
            Ok(()) => told += 1,
            Err(e) => eprintln!("@{admin} was not told: {e:#}"),
        }
    }
    if told == 0 && !others.is_empty() {
        bail!("no admin of {name} could be told; still a member");
    }
    if let Some(state) = device.stored.groups.get_mut(&gid) {
        state.gone = true;
        state.session = None;
    }
    device.save()?;
    println!("left {name}; this device forgot its key, and an admin's client removes you");
    Ok(())
}

/// Handles a group frame from the mailbox: `Some((group, text))` for a message to show.
pub(super) async fn on_frame(
    link: &mut Link,
    device: &mut Device,
    message: &Queued,
    frame: Result<GroupFrame, String>,
) -> Result<Option<(String, String)>, Flag> {
    let flag = |why: String| Flag(why);
    let frame = frame.map_err(|e| flag(format!("malformed group traffic: {e}")))?;
    let mut dir = Directory::default();
    match frame {
        GroupFrame::Message(bytes) => {
            let msg = GroupMessage::from_bytes(&bytes.0)
                .map_err(|_| flag("malformed group message".into()))?;
            let gid = gid_hex(msg.group_id());
            let Some(state) = device.stored.groups.get(&gid) else {
                return Err(flag("a message of a group this device is not in".into()));
            };
            let name = state.held.current.name.clone();
            let mut group = session(device, state).map_err(|_| {
                flag(format!(
                    "group {name}: not a member any more; cannot decrypt"
                ))
            })?;
            let (sender, text) = group
                .decrypt(&msg)
                .map_err(|e| flag(format!("group {name}: cannot decrypt: {e}")))?;
            let claimed = dir
                .get(link, device, &message.from)
                .await
                .map_err(|e| flag(format!("cannot check the sender: {e:#}")))?;
            if claimed != sender {
                return Err(flag(format!(
                    "group {name}: not signed by the identity of the claimed sender"
                )));
            }
            store_session(device, &gid, &group).map_err(|e| flag(format!("{e:#}")))?;
            let text = String::from_utf8(text.to_vec())
                .map_err(|_| flag("group message is not text".into()))?;
            Ok(Some((name, text)))
        }
        GroupFrame::Record(record) => {
            let gid = gid_hex(&record.gid.0);
            if !device.stored.groups.contains_key(&gid) {
                return Ok(None);
            }
            let checked = async {
                verify_record(link, device, &mut dir, &record).await?;
                accept(device, &gid, record)
            }
            .await;
            if let Err(e) = checked {
                eprintln!("refused a group record from @{}: {e:#}", message.from);
            }
            Ok(None)
        }
        GroupFrame::Inactive {
            gid,
            epoch,
            members,
        } => {
            if let Err(e) = on_inactive(link, device, &gid, epoch, &members).await {
                eprintln!("a notice of inactive group members not checked: {e:#}");
            }
            Ok(None)
        }
        GroupFrame::Leave(request) => {
            if let Err(e) = on_leave(link, device, &mut dir, message, request).await {
                eprintln!(
                    "a leave request from @{} not carried out: {e:#}",
                    message.from
                );
            }
            Ok(None)
        }
    }
}

/// An admin's client removes a member who asked to leave.
async fn on_leave(
    link: &mut Link,
    device: &mut Device,
    dir: &mut Directory,
    message: &Queued,
    request: LeaveRequest,
) -> Result<()> {
    if request.by != message.from {
        bail!("the request names another member");
    }
    let leaver = dir.get(link, device, &request.by).await?;
    request.verify(&leaver)?;
    let gid = gid_hex(&request.gid.0);
    let me = device.stored.username.clone();
    let Some(state) = device.stored.groups.get(&gid) else {
        bail!("unknown group");
    };
    let name = state.held.current.name.clone();
    if state.gone || !state.held.current.is_admin(&me) {
        return Ok(());
    }
    if !state.held.current.is_member(&request.by) {
        return Ok(());
    }
    let record = change(link, device, dir, &gid, Change::Remove(request.by.clone())).await?;
    eprintln!(
        "@{} left {name}; removed (key epoch {})",
        request.by, record.epoch
    );
    Ok(())
}

/// A group key received from `from` through our pairwise session.
pub(super) async fn on_share(
    link: &mut Link,
    device: &mut Device,
    from: &str,
    share: &GroupKeyShare,
) {
    if let Err(e) = accept_share(link, device, from, share).await {
        eprintln!("refused a group key from @{from}: {e:#}");
    }
}

async fn accept_share(
    link: &mut Link,
    device: &mut Device,
    from: &str,
    share: &GroupKeyShare,
) -> Result<()> {
    let mut dir = Directory::default();
    let gid = gid_hex(share.group_id());
    let from_id = dir.get(link, device, from).await?;
    let own = device.keys.identity().public().clone();
    let me = device.stored.username.clone();
    let known = device.stored.groups.get(&gid).map(|s| s.held.clone());
    let stale = known.as_ref().is_none_or(|h| {
        h.current.epoch < share.epoch()
            || (h.current.epoch == share.epoch() && h.current.by != from)
    });
    let mut held = known;
    if stale {
        let fetched = fetch_record(link, share.group_id()).await?;
        verify_record(link, device, &mut dir, &fetched).await?;
        held = Some(match held {
            Some(_) => {
                accept(device, &gid, fetched).context("the group's record")?;
                device.stored.groups[&gid].held.clone()
            }
            // A newcomer has no earlier version to check against: it takes the holders' one
            // (which they checked against theirs).
            None if fetched.epoch == 0 => HeldGroup::create(fetched)?,
            None => HeldGroup::starting_at(fetched),
        });
    }
    let Some(held) = held else {
        bail!("no record of the group");
    };
    let record = &held.current;
    if record.epoch != share.epoch() || record.by != from {
        bail!(
            "it is not the key of group {}'s current record (key epoch {} by @{}): a change not signed by an admin, or one that lost a concurrent update",
            record.name,
            record.epoch,
            record.by
        );
    }
    if !record.is_member(&me) {
        bail!("the group's record does not list us");
    }
    let joined = GroupSession::join(share, &own, &from_id).context("the key share")?;
    let in_share: BTreeSet<Vec<u8>> = joined
        .members()
        .iter()
        .map(|m| m.to_bytes().to_vec())
        .collect();
    let mut in_record = BTreeSet::new();
    for m in &record.members {
        // The identity pinned at the first contact, else the network's (then pinned).
        let pinned = device.stored.peers.get(m).and_then(|p| p.identity.clone());
        let id = match pinned {
            _ if *m == me => own.to_bytes().to_vec(),
            Some(pinned) => pinned.0,
            None => dir.get(link, device, m).await?.to_bytes().to_vec(),
        };
        in_record.insert(id);
    }
    if in_share != in_record {
        bail!("the key's member list differs from the group's record");
    }
    let name = record.name.clone();
    let existing = device
        .stored
        .groups
        .get(&gid)
        .and_then(|s| s.session.clone());
    let group = match existing {
        Some(blob) => {
            let mut group = GroupSession::open(&blob, &device.password)
                .context("cannot open the stored group key")?;
            group.apply(share, &from_id).context("the key share")?;
            group
        }
        None => {
            eprintln!("you are in group {name} now (by @{from})");
            joined
        }
    };
    let state = device
        .stored
        .groups
        .entry(gid.clone())
        .or_insert_with(|| GroupState {
            held: held.clone(),
            session: None,
            gone: false,
        });
    state.held = held;
    state.gone = false;
    let epoch = group.epoch();
    store_session(device, &gid, &group)?;
    // §8.1 step 6; a member that does not is shown inactive to the admins (§8.2).
    if let Err(e) = acknowledge(link, device, share.group_id(), epoch).await {
        eprintln!("could not acknowledge the key of group {name} (key epoch {epoch}): {e:#}");
    }
    Ok(())
}

/// Rotates the key of every group this device is still in (after a device revocation, so the
/// revoked device's copy of the keys opens nothing sent later); the groups that failed, with
/// why.
pub(super) async fn rotate_all(link: &mut Link, device: &mut Device) -> Vec<(String, String)> {
    let mut dir = Directory::default();
    let live: Vec<String> = device
        .stored
        .groups
        .iter()
        .filter(|(_, s)| !s.gone)
        .map(|(gid, _)| gid.clone())
        .collect();
    let mut failed = Vec::new();
    for gid in live {
        let name = device.stored.groups[&gid].held.current.name.clone();
        match change(link, device, &mut dir, &gid, Change::Rotate).await {
            Ok(record) => eprintln!("rotated the key of {name} (key epoch {})", record.epoch),
            Err(e) => failed.push((name, format!("{e:#}"))),
        }
    }
    failed
}

/// A member's identity changed through a key update this device verified (`super::keys`):
/// every group session here names `new` instead of `old` from now on, so that member's next
/// key share and messages are accepted.
pub(super) fn replace_identity(device: &mut Device, old: &[u8], new: &IdentityPublicKey) {
    let gids: Vec<String> = device
        .stored
        .groups
        .iter()
        .filter(|(_, s)| s.session.is_some())
        .map(|(gid, _)| gid.clone())
        .collect();
    for gid in gids {
        let Ok(mut group) = session(device, &device.stored.groups[&gid]) else {
            continue;
        };
        let Some(old) = group
            .members()
            .iter()
            .find(|m| m.to_bytes().as_slice() == old)
            .cloned()
        else {
            continue;
        };
        if group.replace_member(&old, new).is_ok() {
            let _ = store_session(device, &gid, &group);
        }
    }
}

/// `peer` recovered their account (§15): in every group we administer that lists them, a new
/// key goes to every member, `peer`'s new identity included, so their new device is in the
/// group again ("re-invited"). Failures are reported, not fatal.
pub(super) async fn reinvite(link: &mut Link, device: &mut Device, peer: &str) {
    let me = device.stored.username.clone();
    let mut dir = Directory::default();
    let gids: Vec<String> = device
        .stored
        .groups
        .iter()
        .filter(|(_, s)| !s.gone && s.held.current.is_admin(&me) && s.held.current.is_member(peer))
        .map(|(gid, _)| gid.clone())
        .collect();
    for gid in gids {
        let name = device.stored.groups[&gid].held.current.name.clone();
        match change(link, device, &mut dir, &gid, Change::Rotate).await {
            Ok(record) => eprintln!(
                "re-invited @{peer} to {name} after their recovery (key epoch {})",
                record.epoch
            ),
            Err(e) => eprintln!("could not re-invite @{peer} to {name}: {e:#}"),
        }
    }
}
