//! `constella chat`: the PQ4 chat client (docs/messaging.md). All cryptography happens here,
//! on the device; the network only sees sealed keys, signed bundles and encrypted envelopes.
//!
//! - [`device`]: the device's keys and sessions in its home directory, sealed under the password.
//! - [`link`]: the connection to a member (its `pq4.sock`, or `--via` over libp2p).
//! - [`group`]: group chats (`chat group …`).
//! - [`verify`]: fingerprints and verified contacts (`chat fingerprint`, `chat verify`).

mod device;
mod devices;
mod group;
mod history;
mod keys;
mod link;
mod recover;
mod verify;

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use constella_behaviours::pq4::{
    self, Account, Bytes, Kdf, MailboxAuth, Op, Opk, Queued, Response,
};
use constella_keys::{
    Content, Envelope, EnvelopeError, InitialMessage, KdfParams, KeyStore, PasswordKey,
    PreKeyBundle, RatchetError, SealedBlob, Session, x3dh,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use device::Device;
use link::Link;

/// `constella chat …`
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The device's data directory (keys and sessions, sealed under the password).
    #[arg(long, global = true, env = "CONSTELLA_CHAT_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Reach the network through any member over libp2p instead of the local node.
    #[arg(long, global = true, value_name = "MULTIADDR")]
    pub via: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    #[command(subcommand)]
    pub command: ChatCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Print a one-time account invite code (on a member).
    Invite {
        /// Validity in seconds (default 7 days).
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        ttl_secs: u64,
    },
    /// Create an account: keys are generated here and registered with the network.
    Register {
        #[arg(long, value_name = "NAME")]
        username: String,
        #[arg(long, value_name = "EMAIL")]
        email: String,
        #[arg(long, value_name = "CODE")]
        invite: String,
        /// This device's name among the account's devices (default: the host name).
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Log in on this device with the password (challenge-response; the password never leaves).
    Login {
        #[arg(long, value_name = "NAME")]
        username: String,
        /// This device's name among the account's devices (default: the host name).
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Send one message.
    Send {
        /// The recipient, `@name`.
        to: String,
        text: String,
    },
    /// Show new messages (and remove them from the mailbox).
    Read {
        /// Keep waiting for messages.
        #[arg(long)]
        follow: bool,
        /// A JSON list of {"from","text","at","flagged"}.
        #[arg(long)]
        json: bool,
    },
    /// Chat with one user: incoming messages appear, each line typed is sent.
    Open {
        /// The peer, `@name`.
        to: String,
    },
    /// Group chats: create, send, add, remove, leave, members.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Show the 60-digit fingerprints of you and a contact (both sides print the same).
    Fingerprint {
        /// The contact, `@name`.
        peer: String,
        #[arg(long)]
        json: bool,
    },
    /// Record that you compared a contact's fingerprint and it matched.
    Verify {
        /// The contact, `@name`.
        peer: String,
    },
    /// Recover an account after losing every device: new keys and a new password on this
    /// device, every old device revoked (the code was shown at registration).
    Recover {
        #[arg(long, value_name = "NAME")]
        username: String,
        #[arg(long, value_name = "CODE")]
        code: String,
        /// This device's name among the account's devices (default: the host name).
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Replace this account's keys (identity, prekeys) with new ones signed by the current
    /// identity; contacts are told, sessions continue, groups get a new key.
    UpdateKeys,
    /// List the account's devices.
    Devices {
        /// A JSON list of {"id","name","added","revoked","revoked_by","revoked_at","this"}.
        #[arg(long)]
        json: bool,
    },
    /// Revoke another device of the account (signed by this one); rotates your groups' keys.
    Revoke {
        /// The device: its id (hex, or at least 4 leading digits) or its name.
        device: String,
    },
    /// The message history on this device: show it, move it to a new device.
    History {
        #[command(subcommand)]
        command: history::HistoryCommand,
    },
}

/// How long one mailbox wait of `read --follow` and `open` asks to be held open (the member
/// caps it: 25 s on its socket, 3 s over `--via`); messages are pushed as soon as a holder
/// stores them.
const WAIT_MS: u64 = 25_000;
/// Pause after a failed wait before the next (a member restarting, a reconnection).
const RETRY: Duration = Duration::from_secs(1);
/// One-time prekeys a device keeps on the network; when fewer than a quarter are left, the
/// device uploads new ones at its next contact.
const OPK_TARGET: usize = constella_keys::store::ONE_TIME_PREKEY_COUNT as usize;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a chat command.
pub async fn run(args: ChatArgs, state_dir: &Path) -> Result<()> {
    let home = args.home.clone().unwrap_or_else(device::default_home);
    let mut input = Input::new(args.password_stdin);
    match args.command {
        ChatCommand::Invite { ttl_secs } => {
            let mut link = Link::connect(state_dir, args.via.as_deref()).await?;
            match check(link.call(Op::NewInvite { ttl_secs }).await?)? {
                Response::Invite { code } => println!("{code}"),
                other => bail!("unexpected answer: {other:?}"),
            }
            Ok(())
        }
        ChatCommand::Register {
            username,
            email,
            invite,
            device_name,
        } => {
            if let Some(name) = &device_name {
                devices::check_name(name)?;
            }
            if !pq4::valid_username(&username) {
                bail!("invalid username {username:?}: 1-32 of a-z, 0-9, _ starting with a letter");
            }
            if !pq4::valid_email(&email) {
                bail!("invalid email address {email:?}");
            }
            let password = input.password("Password for the new account: ")?;
            if password.chars().count() < 8 {
                bail!("the password is too short (at least 8 characters)");
            }
            let mut link = Link::connect(state_dir, args.via.as_deref()).await?;
            let code = recover::new_code();
            let mut device = register(
                &mut link, &home, &username, &email, &invite, &password, &code,
            )
            .await?;
            devices::enroll(&mut link, &mut device, device_name.as_deref()).await?;
            println!("registered @{username}");
            println!(
                "recovery code (shown once; keep it offline: with it you recover @{username} if every device is lost): {code}"
            );
            Ok(())
        }
        ChatCommand::Login {
            username,
            device_name,
        } => {
            if let Some(name) = &device_name {
                devices::check_name(name)?;
            }
            let password = input.password("Password: ")?;
            let mut link = Link::connect(state_dir, args.via.as_deref()).await?;
            let mut device = login(&mut link, &home, &username, &password).await?;
            devices::enroll(&mut link, &mut device, device_name.as_deref()).await?;
            println!("logged in as @{username}");
            Ok(())
        }
        ChatCommand::Send { to, text } => {
            let to = peer_name(&to)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            send(&mut link, &mut device, &to, &text).await?;
            Ok(())
        }
        ChatCommand::Read { follow, json } => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            devices::report_changes(&mut link, &mut device).await?;
            let mut all = Vec::new();
            loop {
                if follow {
                    // Held open by the member until a message arrives (pushed by a holder).
                    let mut print = |message: &Shown| print_message(message, json);
                    match receive(&mut link, &mut device, WAIT_MS, &mut print).await {
                        Ok(()) => {}
                        Err(error) if is_final(&error) => return Err(error),
                        Err(error) => {
                            eprintln!("{error:#}; trying again");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                } else {
                    let mut batch = Vec::new();
                    let mut keep = |message: &Shown| {
                        batch.push(message.clone());
                        Ok(())
                    };
                    receive(&mut link, &mut device, 0, &mut keep).await?;
                    let more = !batch.is_empty();
                    all.extend(batch);
                    if !more {
                        break;
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for message in &all {
                    print_message(message, false)?;
                }
            }
            Ok(())
        }
        ChatCommand::Open { to } => {
            let to = peer_name(&to)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            let waiter = connect(state_dir, args.via.as_deref(), &mut device).await?;
            open(&mut link, waiter, &mut device, &to).await
        }
        ChatCommand::Group { command } => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            group::run(&mut link, &mut device, command).await
        }
        ChatCommand::Fingerprint { peer, json } => {
            let peer = peer_name(&peer)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            verify::fingerprint(&mut link, &mut device, &peer, json).await
        }
        ChatCommand::Verify { peer } => {
            let peer = peer_name(&peer)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            verify::verify(&mut link, &mut device, &peer).await
        }
        ChatCommand::Recover {
            username,
            code,
            device_name,
        } => {
            if let Some(name) = &device_name {
                devices::check_name(name)?;
            }
            if !pq4::valid_username(&username) {
                bail!("invalid username {username:?}: 1-32 of a-z, 0-9, _ starting with a letter");
            }
            recover::normalize(&code)?;
            let password = input.password("New password for the account: ")?;
            if password.chars().count() < 8 {
                bail!("the password is too short (at least 8 characters)");
            }
            let mut link = Link::connect(state_dir, args.via.as_deref()).await?;
            let (mut device, next) =
                recover::recover(&mut link, &home, &username, &code, &password).await?;
            devices::enroll(&mut link, &mut device, device_name.as_deref()).await?;
            println!("recovered @{username} on this device; every other device is revoked");
            println!("new recovery code (shown once; the old one no longer works): {next}");
            Ok(())
        }
        ChatCommand::UpdateKeys => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            keys::update(&mut link, &mut device).await
        }
        ChatCommand::Devices { json } => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            devices::show(&mut link, &mut device, json).await
        }
        ChatCommand::Revoke { device: target } => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &mut device).await?;
            devices::revoke(&mut link, &mut device, &target).await
        }
        ChatCommand::History { command } => {
            history::run(command, &home, state_dir, args.via.as_deref(), &mut input).await
        }
    }
}

/// A one-time account invite from the messaging service of the member in `state_dir` (the bot's
/// `/chat_invite`; `constella chat invite` does the same).
pub async fn new_invite(state_dir: &Path, ttl_secs: u64) -> Result<String> {
    let mut link = Link::connect(state_dir, None).await?;
    match check(link.call(Op::NewInvite { ttl_secs }).await?)? {
        Response::Invite { code } => Ok(code),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// A link for an unlocked device, logged in if it goes `--via` a member, after checking that
/// the account is still this device's.
async fn connect(state_dir: &Path, via: Option<&str>, device: &mut Device) -> Result<Link> {
    let mut link = Link::connect(state_dir, via).await?;
    let verifier = device.password.login_proof();
    link.authenticate(&device.stored.username, verifier.as_bytes())
        .await?;
    still_ours(&mut link, device).await?;
    keys::update_if_due(&mut link, device).await?;
    Ok(link)
}

/// Fails with a clear error when the network serves another identity under this device's
/// name: the name was registered on both sides of a partition and the other one won. When the
/// account's keys were updated on another device, this device follows them (`keys::adopt`).
async fn still_ours(link: &mut Link, device: &mut Device) -> Result<()> {
    let username = device.stored.username.clone();
    let op = Op::Identity {
        username: username.clone(),
    };
    let served = match link.call(op).await? {
        Response::Bundle { bundle, .. } => bundle,
        Response::Error {
            kind: pq4::ErrorKind::UserNotFound,
            ..
        } => bail!("UserNotFound: the account @{username} no longer exists on the network"),
        other => {
            check(other)?;
            bail!("unexpected answer to an identity lookup")
        }
    };
    let bundle = PreKeyBundle::from_bytes(&served.0).context("the account's bundle")?;
    let verified = bundle
        .verify()
        .context("the network serves a bundle with a bad signature for this account")?;
    let served = verified.identity().to_bytes();
    if served != device.keys.identity_public().to_bytes()
        && !keys::adopt(link, device, &served).await?
    {
        bail!(
            "RegistrationLost: {}",
            pq4::registration_lost_message(&username)
        );
    }
    Ok(())
}

/// Errors a retry cannot cure: the account is gone or the password is not accepted.
fn is_final(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    [
        "RegistrationLost",
        "UserNotFound",
        "AuthenticationFailed",
        "RateLimited",
        "DeviceRevoked",
        "DeviceNotFound",
    ]
    .iter()
    .any(|kind| text.contains(kind))
}

/// Test knob: when the environment variable `var` names a directory, say `DIR/<tag>.ready`
/// and wait (at most 60 s) for `DIR/go`, so a test can make two clients' steps concurrent.
async fn test_barrier(var: &str, tag: &str) {
    let Some(dir) = std::env::var_os(var) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::write(dir.join(format!("{tag}.ready")), b"");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !dir.join("go").exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `@name` or `name` → `name`.
fn peer_name(text: &str) -> Result<String> {
    let name = text.strip_prefix('@').unwrap_or(text);
    if !pq4::valid_username(name) {
        bail!("invalid username {text:?}: expected @name");
    }
    Ok(name.to_owned())
}

/// Standard input: the password line first (with `--password-stdin`), then chat lines.
struct Input {
    password_stdin: bool,
}

impl Input {
    fn new(password_stdin: bool) -> Self {
        Self { password_stdin }
    }

    fn password(&mut self, prompt: &str) -> Result<Zeroizing<String>> {
        let terminal = std::io::stdin().is_terminal();
        if !self.password_stdin && !terminal {
            bail!("no password: give --password-stdin or run on a terminal");
        }
        if terminal && !self.password_stdin {
            eprint!("{prompt}");
            // Best effort: without stty the line is echoed, which is still not argv.
            let _ = std::process::Command::new("stty").arg("-echo").status();
        }
        let mut line = Zeroizing::new(String::new());
        let read = std::io::stdin().read_line(&mut line);
        if terminal && !self.password_stdin {
            let _ = std::process::Command::new("stty").arg("echo").status();
            eprintln!();
        }
        read.context("cannot read the password")?;
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        if line.is_empty() {
            bail!("the password is empty");
        }
        Ok(line)
    }
}

fn check(response: Response) -> Result<Response> {
    match response {
        Response::Error { kind, message } => bail!("{kind:?}: {message}"),
        Response::Unsupported { min, max } => bail!(
            "the node serves PQ4 service versions {min}..={max}, this client speaks {}",
            pq4::VERSION
        ),
        other => Ok(other),
    }
}

async fn register(
    link: &mut Link,
    home: &Path,
    username: &str,
    email: &str,
    invite: &str,
    password: &str,
    recovery_code: &str,
) -> Result<Device> {
    let NewAccount {
        account,
        opks,
        keys,
        key,
    } = new_account(
        username,
        email,
        password,
        &recover::normalize(recovery_code)?,
    )?;
    let op = Op::Register {
        invite: invite.trim().to_owned(),
        account,
        opks,
    };
    match check(link.call(op).await?)? {
        Response::Registered => {}
        other => bail!("unexpected answer: {other:?}"),
    }
    Device::create(home, username, keys, key, false)
}

async fn login(link: &mut Link, home: &Path, username: &str, password: &str) -> Result<Device> {
    let start = Op::LoginStart {
        username: username.to_owned(),
    };
    let (kdf, nonce) = match check(link.call(start).await?)? {
        Response::LoginChallenge { kdf, nonce } => (kdf, nonce),
        other => bail!("unexpected answer: {other:?}"),
    };
    let params = KdfParams::new(kdf.m_kib, kdf.t, kdf.p).context("the account's parameters")?;
    if !params.at_least(&KdfParams::PRODUCTION) {
        bail!("the account's key derivation parameters are below the minimum; refusing");
    }
    let salt: [u8; 16] = kdf
        .salt
        .0
        .as_slice()
        .try_into()
        .context("the account's salt has the wrong length")?;
    let key = PasswordKey::derive(password, salt, params).context("cannot derive the key")?;
    let verifier = key.login_proof();
    let finish = Op::LoginFinish {
        username: username.to_owned(),
        mac: Bytes(pq4::login_mac(verifier.as_bytes(), &nonce.0, username)),
        nonce,
    };
    let account = match check(link.call(finish).await?)? {
        Response::LoggedIn { account } => account,
        other => bail!("unexpected answer: {other:?}"),
    };
    let blob = SealedBlob::from_bytes(&account.sealed_keys.0).context("the sealed keys")?;
    let keys = KeyStore::open(&blob, &key).context("cannot open the account's keys")?;
    Device::create(home, username, keys, key, true)
}

/// One-time prekeys a new key store gets (test knob `CONSTELLA_TEST_CHAT_OPKS`: fewer, so a
/// test can run them out).
/// A fresh account record for `username`, what `register` and `recover` send: new keys with
/// one-time prekeys, sealed under a key derived from `password`, and the hash of the
/// (normalised) `recovery_code`. `email` is empty for a recovery: the coordinator keeps the
/// account's own.
struct NewAccount {
    account: Account,
    opks: Vec<Opk>,
    keys: KeyStore,
    key: PasswordKey,
}

fn new_account(
    username: &str,
    email: &str,
    password: &str,
    recovery_code: &str,
) -> Result<NewAccount> {
    let mut rng = rand::rng();
    let key = PasswordKey::generate(password, KdfParams::PRODUCTION, &mut rng)
        .context("cannot derive the password key")?;
    let keys = KeyStore::generate_with_one_time_prekeys(opk_count(), &mut rng)
        .context("cannot generate keys")?;
    let opks = public_opks(&keys);
    let sealed = keys.seal(&key, &mut rng).context("cannot seal the keys")?;
    let account = Account {
        username: username.to_owned(),
        email: email.to_owned(),
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
        recovery: Bytes(pq4::recovery_hash(username, recovery_code)),
        recoveries: Vec::new(),
        keys_ms: 0,
    };
    Ok(NewAccount {
        account,
        opks,
        keys,
        key,
    })
}

fn opk_count() -> usize {
    std::env::var("CONSTELLA_TEST_CHAT_OPKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(constella_keys::store::ONE_TIME_PREKEY_COUNT as usize)
}

/// The public halves of a key store's one-time prekeys, as uploaded.
fn public_opks(keys: &KeyStore) -> Vec<Opk> {
    keys.one_time_prekey_ids()
        .into_iter()
        .filter_map(|id| keys.bundle(Some(id)).one_time_prekey)
        .map(|k| Opk {
            id: k.id,
            key: Bytes(k.key.to_vec()),
        })
        .collect()
}

/// Fetches `username`'s bundle (taking a one-time prekey if `take`), verified.
async fn bundle(
    link: &mut Link,
    username: &str,
    take: bool,
) -> Result<constella_keys::VerifiedBundle> {
    let op = if take {
        Op::GetBundle {
            username: username.to_owned(),
        }
    } else {
        Op::Identity {
            username: username.to_owned(),
        }
    };
    let (bytes, opk) = match check(link.call(op).await?)? {
        Response::Bundle { bundle, opk } => (bundle, opk),
        other => bail!("unexpected answer: {other:?}"),
    };
    let mut bundle = PreKeyBundle::from_bytes(&bytes.0).context("@{username}'s bundle")?;
    if let Some(opk) = opk {
        bundle.one_time_prekey = Some(constella_keys::prekeys::OneTimePreKeyPublic {
            id: opk.id,
            key: opk
                .key
                .0
                .as_slice()
                .try_into()
                .context("a one-time prekey of the wrong length")?,
        });
    }
    bundle
        .verify()
        .with_context(|| format!("@{username}'s bundle has a bad signature; not used"))
}

async fn send(link: &mut Link, device: &mut Device, to: &str, text: &str) -> Result<()> {
    verify::confirm_send(link, device, to).await?;
    let envelope = seal_message(link, device, to, text).await?;
    // Test knobs: keep a copy of what was sent (to replay or tamper with it), or lose it.
    if let Some(path) = std::env::var_os("CONSTELLA_TEST_CHAT_ENVELOPE_OUT") {
        std::fs::write(path, &envelope).context("test knob: cannot write the envelope")?;
    }
    if std::env::var_os("CONSTELLA_TEST_CHAT_DROP").is_some() {
        return Ok(());
    }
    let op = Op::Send {
        from: device.stored.username.clone(),
        to: to.to_owned(),
        envelope: Bytes(envelope),
    };
    match check(link.call(op).await?)? {
        Response::Sent { id, .. } => {
            history::record_sent(device, id, to, text);
            Ok(())
        }
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Encrypts `text` for `to`, starting a session if there is none; the advanced session is
/// stored before the envelope leaves (a crash then loses one message, never reuses a key).
async fn seal_message(
    link: &mut Link,
    device: &mut Device,
    to: &str,
    text: &str,
) -> Result<Vec<u8>> {
    seal_content(link, device, to, &Content::chat(text)).await
}

/// Encrypts any content (a chat line, a group key share) for `to` in the pairwise session.
async fn seal_content(
    link: &mut Link,
    device: &mut Device,
    to: &str,
    content: &Content,
) -> Result<Vec<u8>> {
    let mut rng = rand::rng();
    let session = device.session(to)?;
    let (mut session, initial) = match session {
        Some(session) => {
            let initial = match device.stored.peers.get(to).and_then(|p| p.initial.as_ref()) {
                Some(bytes) => Some(InitialMessage::from_bytes(&bytes.0).context("handshake")?),
                None => None,
            };
            (session, initial)
        }
        None => {
            let verified = bundle(link, to, true).await?;
            let identity = Bytes(verified.identity().to_bytes().to_vec());
            let changed = device
                .stored
                .peers
                .get(to)
                .and_then(|p| p.identity.as_ref())
                .is_some_and(|pinned| *pinned != identity);
            if changed && !keys::follow(link, device, to, &identity.0).await? {
                bail!("@{to}'s identity key changed since the last contact; refusing to send");
            }
            let peer = device.stored.peers.entry(to.to_owned()).or_default();
            peer.identity = Some(identity);
            let (initial, secret) =
                x3dh::initiate(device.keys.identity(), &verified, &mut rng).context("handshake")?;
            peer.initial = Some(Bytes(initial.to_bytes()));
            let session = Session::new(secret, &mut rng).context("session")?;
            (session, Some(initial))
        }
    };
    let envelope = Envelope::seal(
        &mut session,
        device.keys.identity(),
        initial.as_ref(),
        now_ms(),
        content,
    )
    .context("cannot encrypt")?;
    device.put_session(to, &session)?;
    device.save()?;
    Ok(envelope.to_bytes())
}

/// A message as shown (`read --json` prints a list of these).
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub from: String,
    pub text: String,
    /// When the serving member accepted it (ms since the epoch).
    pub at: u64,
    /// Bad signature, undecryptable, or not from the identity the sender claims.
    pub flagged: bool,
    /// The group, for a group message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn print_message(message: &Shown, json: bool) -> Result<()> {
    let group = message
        .group
        .as_ref()
        .map_or(String::new(), |g| format!("[{g}] "));
    if json {
        println!("{}", serde_json::to_string(message)?);
    } else if message.flagged {
        println!(
            "{group}@{} [FLAGGED: potentially malicious] {}",
            message.from, message.text
        );
    } else {
        println!("{group}@{}: {}", message.from, message.text);
    }
    Ok(())
}

/// What a device proves mailbox operations with, detached from the device so that the
/// waiting task of `chat open` can hold it.
pub struct MailboxKey {
    username: String,
    device: Bytes,
    verifier: Zeroizing<Vec<u8>>,
}

impl MailboxKey {
    fn auth(&self, body: &[u8]) -> MailboxAuth {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        let ts_ms = now_ms();
        MailboxAuth {
            mac: Bytes(pq4::mailbox_mac(
                &self.verifier,
                &self.username,
                ts_ms,
                &nonce,
                &self.device.0,
                body,
            )),
            username: self.username.clone(),
            ts_ms,
            nonce: Bytes(nonce.to_vec()),
            device: self.device.clone(),
        }
    }
}

impl Device {
    fn mailbox_key(&self) -> MailboxKey {
        MailboxKey {
            username: self.stored.username.clone(),
            device: self.stored.device_id.clone(),
            verifier: Zeroizing::new(self.password.login_proof().as_bytes().to_vec()),
        }
    }
}

/// Asks the mailbox once (held open up to `wait_ms` when it is empty), then opens and
/// acknowledges what came.
async fn receive(
    link: &mut Link,
    device: &mut Device,
    wait_ms: u64,
    show: &mut dyn FnMut(&Shown) -> Result<()>,
) -> Result<()> {
    let auth = device.mailbox_key().auth(&[]);
    let answer = check(
        link.call(Op::Wait {
            auth,
            timeout_ms: wait_ms,
        })
        .await?,
    )?;
    process(link, device, answer, show).await
}

/// Opens a mailbox answer, stores the sessions, acknowledges, and uploads one-time prekeys
/// when the network says few are left.
async fn process(
    link: &mut Link,
    device: &mut Device,
    answer: Response,
    show: &mut dyn FnMut(&Shown) -> Result<()>,
) -> Result<()> {
    let (messages, opks_left) = match answer {
        Response::Mailbox {
            messages,
            opks_left,
        } => (messages, opks_left as usize),
        other => bail!("unexpected answer: {other:?}"),
    };
    open_all(link, device, messages, show).await?;
    if opks_left * 4 < OPK_TARGET {
        refill(link, device, opks_left).await?;
    }
    Ok(())
}

/// Generates one-time prekeys up to [`OPK_TARGET`] on the network, stores their private
/// halves here first (a public key is never uploaded without its private half kept), then
/// uploads them with the key store sealed again.
async fn refill(link: &mut Link, device: &mut Device, left: usize) -> Result<()> {
    let before: std::collections::BTreeSet<u32> =
        device.keys.one_time_prekey_ids().into_iter().collect();
    let wanted = OPK_TARGET.saturating_sub(left);
    device
        .keys
        .replenish_one_time_prekeys(before.len() + wanted, &mut rand::rng());
    let opks: Vec<Opk> = device
        .keys
        .one_time_prekey_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .filter_map(|id| device.keys.bundle(Some(id)).one_time_prekey)
        .map(|k| Opk {
            id: k.id,
            key: Bytes(k.key.to_vec()),
        })
        .collect();
    if opks.is_empty() {
        return Ok(());
    }
    device.save_keys()?;
    let body: Vec<u8> = opks.iter().flat_map(|o| o.id.to_be_bytes()).collect();
    let auth = device.mailbox_key().auth(&body);
    let count = opks.len();
    let op = Op::UploadOpks {
        auth,
        opks,
        sealed_keys: Bytes(device.stored.keys.to_bytes()),
    };
    check(link.call(op).await?)?;
    eprintln!("uploaded {count} one-time prekeys (the network had {left} left)");
    Ok(())
}

/// Opens fetched messages, stores the sessions, shows the messages, then acknowledges them
/// (shown before the acknowledgement's round trip; a copy fetched again after a crash in
/// between is recognised by its id and not shown twice).
async fn open_all(
    link: &mut Link,
    device: &mut Device,
    messages: Vec<Queued>,
    show: &mut dyn FnMut(&Shown) -> Result<()>,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut shown = Vec::new();
    let mut ids = Vec::new();
    let mut keys_changed = false;
    for message in messages {
        ids.push(message.id.clone());
        if device.seen(&message.id) {
            continue;
        }
        device.mark_seen(message.id.clone());
        let opened =
            match constella_behaviours::pq4_groups::GroupFrame::from_bytes(&message.envelope.0) {
                Some(frame) => group::on_frame(link, device, &message, frame)
                    .await
                    .map(|m| m.map(|(group, text)| (text, Some(group)))),
                None => open_one(link, device, &message, &mut keys_changed)
                    .await
                    .map(|m| m.map(|text| (text, None))),
            };
        match opened {
            Ok(Some((text, group))) => shown.push((
                message.id.clone(),
                Shown {
                    from: message.from.clone(),
                    text,
                    at: message.at_ms,
                    flagged: false,
                    group,
                },
            )),
            Ok(None) => {}
            Err(Flag(reason)) => shown.push((
                message.id.clone(),
                Shown {
                    from: message.from.clone(),
                    text: format!("<{reason}>"),
                    at: message.at_ms,
                    flagged: true,
                    group: None,
                },
            )),
        }
    }
    report_lost(device);
    if keys_changed {
        device.save_keys()?;
    } else {
        device.save()?;
    }
    history::record_read(device, &shown);
    for (_, message) in &shown {
        show(message)?;
    }
    let body: Vec<u8> = ids.iter().flat_map(|i| i.0.iter().copied()).collect();
    let auth = device.mailbox_key().auth(&body);
    check(link.call(Op::Ack { auth, ids }).await?)?;
    // §15.1 step 9: a recovered contact is re-invited to the groups we administer.
    for peer in std::mem::take(&mut device.recovered) {
        group::reinvite(link, device, &peer).await;
    }
    Ok(())
}

/// Why a message is shown flagged.
struct Flag(String);

/// Opens one queued message: `Some(text)`, `None` for a refused replay or a non-chat content,
/// or a [`Flag`].
async fn open_one(
    link: &mut Link,
    device: &mut Device,
    message: &Queued,
    keys_changed: &mut bool,
) -> Result<Option<String>, Flag> {
    let flag = |why: &str| Flag(why.to_owned());
    let from = &message.from;
    if !pq4::valid_username(from) {
        return Err(flag("sender name is not valid"));
    }
    let envelope =
        Envelope::from_bytes(&message.envelope.0).map_err(|_| flag("malformed message"))?;
    // The sender's identity: pinned at the first contact, else their signed bundle's.
    let pinned = device
        .stored
        .peers
        .get(from)
        .and_then(|p| p.identity.clone());
    let identity = match pinned {
        Some(identity) => identity,
        None => {
            let verified = bundle(link, from, false)
                .await
                .map_err(|e| Flag(format!("cannot check the sender: {e:#}")))?;
            Bytes(verified.identity().to_bytes().to_vec())
        }
    };
    let identity = if envelope.sender().as_slice() == identity.0.as_slice() {
        identity
    } else if keys::follow(link, device, from, envelope.sender().as_slice())
        .await
        .unwrap_or(false)
    {
        // The sender updated their keys (§11) and the chain leads from the pinned identity.
        Bytes(envelope.sender().to_vec())
    } else {
        return Err(flag("not signed by the identity of the claimed sender"));
    };
    let mut rng = rand::rng();
    let mut session = device
        .session(from)
        .map_err(|_| flag("stored session unreadable"))?;
    if let Some(initial) = envelope.initial() {
        let hash = Bytes(Sha256::digest(initial.to_bytes()).to_vec());
        let known = device
            .stored
            .peers
            .get(from)
            .and_then(|p| p.initial_hash.as_ref())
            == Some(&hash);
        // A handshake not seen before starts a new session (the peer reinstalled, or this is
        // the first message); the same handshake again rides on later messages until we answer.
        if !known {
            let secret = x3dh::respond(&mut device.keys, initial)
                .map_err(|e| Flag(format!("bad handshake: {e}")))?;
            *keys_changed = true;
            session = Some(Session::new(secret, &mut rng).map_err(|_| flag("bad handshake"))?);
            let peer = device.stored.peers.entry(from.clone()).or_default();
            peer.initial_hash = Some(hash);
            peer.initial = None;
        }
    }
    let Some(mut session) = session else {
        return Err(flag("no session with the sender"));
    };
    match envelope.open(&mut session, &mut rng) {
        Ok(content) => {
            let peer = device.stored.peers.entry(from.clone()).or_default();
            peer.identity = Some(identity);
            // We heard back: the handshake no longer needs to travel with our messages.
            if envelope.initial().is_none() {
                peer.initial = None;
            }
            device
                .put_session(from, &session)
                .map_err(|_| flag("cannot store the session"))?;
            match content {
                Content::Chat(text) => Ok(Some(text.as_str().to_owned())),
                Content::GroupKeyShare(share) => {
                    group::on_share(link, device, from, &share).await;
                    Ok(None)
                }
                Content::KeyUpdate(update) => {
                    if let Err(why) = keys::on_update(device, from, &update) {
                        eprintln!("refused a key update from @{from}: {why}");
                    }
                    Ok(None)
                }
            }
        }
        Err(EnvelopeError::Ratchet(RatchetError::DuplicateOrExpired)) => {
            eprintln!("refused a replayed message from @{from}");
            Ok(None)
        }
        Err(EnvelopeError::Ratchet(RatchetError::BadSignature)) => {
            Err(flag("bad signature: potentially malicious, not decrypted"))
        }
        Err(e) => Err(Flag(format!("cannot decrypt: {e}"))),
    }
}

/// Messages a session skipped and the mailbox no longer has are reported lost, once.
fn report_lost(device: &mut Device) {
    let names: Vec<String> = device.stored.peers.keys().cloned().collect();
    for name in names {
        let Ok(Some(session)) = device.session(&name) else {
            continue;
        };
        let skipped = session.skipped_keys();
        let Some(peer) = device.stored.peers.get_mut(&name) else {
            continue;
        };
        if skipped > peer.lost_reported {
            eprintln!(
                "{} message(s) from @{name} lost (no longer in the mailbox)",
                skipped - peer.lost_reported
            );
        }
        peer.lost_reported = skipped;
    }
}

/// `chat open`: lines typed are sent over `link`; `waiter`, a second connection, holds a
/// mailbox wait open, so incoming messages appear as soon as a holder stores them.
async fn open(link: &mut Link, mut waiter: Link, device: &mut Device, to: &str) -> Result<()> {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    // The waiting task hands each answer over and waits until it was acknowledged, so the
    // next wait does not return the same messages.
    let (batches_tx, mut batches) = tokio::sync::mpsc::channel::<Result<Response>>(1);
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let key = device.mailbox_key();
    let waiting = tokio::spawn(async move {
        loop {
            let op = Op::Wait {
                auth: key.auth(&[]),
                timeout_ms: WAIT_MS,
            };
            let answer = waiter.call(op).await.and_then(check);
            if batches_tx.send(answer).await.is_err() || done.recv().await.is_none() {
                break;
            }
        }
    });
    eprintln!("chatting with @{to}; type a line to send it, end with Ctrl-D");
    let result = async {
        loop {
            tokio::select! {
                line = lines_rx.recv() => match line {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => send(link, device, to, &line).await?,
                    None => {
                        // Input ended: show what is waiting, then leave.
                        let mut print = |message: &Shown| print_message(message, false);
                        receive(link, device, 0, &mut print).await?;
                        return Ok(());
                    }
                },
                answer = batches.recv() => {
                    match answer {
                        Some(Ok(answer)) => {
                            let mut print = |message: &Shown| print_message(message, false);
                            process(link, device, answer, &mut print).await?;
                        }
                        Some(Err(error)) if is_final(&error) => return Err(error),
                        Some(Err(error)) => {
                            eprintln!("{error:#}; trying again");
                            tokio::time::sleep(RETRY).await;
                        }
                        None => bail!("the mailbox wait stopped"),
                    }
                    let _ = done_tx.send(()).await;
                }
            }
        }
    }
    .await;
    waiting.abort();
    result
}
