//! `constella chat`: the PQ4 chat client (docs/messaging.md). All cryptography happens here,
//! on the device; the network only sees sealed keys, signed bundles and encrypted envelopes.
//!
//! - [`device`]: the device's keys and sessions in its home directory, sealed under the password.
//! - [`link`]: the connection to a member (its `pq4.sock`, or `--via` over libp2p).
//! - [`group`]: group chats (`chat group …`).
//! - [`verify`]: fingerprints and verified contacts (`chat fingerprint`, `chat verify`).

mod device;
mod group;
mod link;
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
    },
    /// Log in on this device with the password (challenge-response; the password never leaves).
    Login {
        #[arg(long, value_name = "NAME")]
        username: String,
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
}

/// How often `read --follow` and `open` ask the mailbox.
const POLL: Duration = Duration::from_millis(100);

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
        } => {
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
            register(&mut link, &home, &username, &email, &invite, &password).await?;
            println!("registered @{username}");
            Ok(())
        }
        ChatCommand::Login { username } => {
            let password = input.password("Password: ")?;
            let mut link = Link::connect(state_dir, args.via.as_deref()).await?;
            login(&mut link, &home, &username, &password).await?;
            println!("logged in as @{username}");
            Ok(())
        }
        ChatCommand::Send { to, text } => {
            let to = peer_name(&to)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &device).await?;
            send(&mut link, &mut device, &to, &text).await?;
            Ok(())
        }
        ChatCommand::Read { follow, json } => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &device).await?;
            let mut all = Vec::new();
            loop {
                let batch = receive(&mut link, &mut device).await?;
                if follow {
                    for message in &batch {
                        print_message(message, json)?;
                    }
                    tokio::time::sleep(POLL).await;
                } else {
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
            let mut link = connect(state_dir, args.via.as_deref(), &device).await?;
            open(&mut link, &mut device, &to).await
        }
        ChatCommand::Group { command } => {
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &device).await?;
            group::run(&mut link, &mut device, command).await
        }
        ChatCommand::Fingerprint { peer, json } => {
            let peer = peer_name(&peer)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &device).await?;
            verify::fingerprint(&mut link, &mut device, &peer, json).await
        }
        ChatCommand::Verify { peer } => {
            let peer = peer_name(&peer)?;
            let password = input.password("Password: ")?;
            let mut device = Device::unlock(&home, &password)?;
            let mut link = connect(state_dir, args.via.as_deref(), &device).await?;
            verify::verify(&mut link, &mut device, &peer).await
        }
    }
}

/// A link for an unlocked device, logged in if it goes `--via` a member.
async fn connect(state_dir: &Path, via: Option<&str>, device: &Device) -> Result<Link> {
    let mut link = Link::connect(state_dir, via).await?;
    let verifier = device.password.login_proof();
    link.authenticate(&device.stored.username, verifier.as_bytes())
        .await?;
    Ok(link)
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
) -> Result<()> {
    let mut rng = rand::rng();
    let key = PasswordKey::generate(password, KdfParams::PRODUCTION, &mut rng)
        .context("cannot derive the password key")?;
    // Test knob: fewer one-time prekeys, so a test can run them out.
    let opk_count = std::env::var("CONSTELLA_TEST_CHAT_OPKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(constella_keys::store::ONE_TIME_PREKEY_COUNT as usize);
    let keys = KeyStore::generate_with_one_time_prekeys(opk_count, &mut rng)
        .context("cannot generate keys")?;
    let opks: Vec<Opk> = keys
        .one_time_prekey_ids()
        .into_iter()
        .filter_map(|id| keys.bundle(Some(id)).one_time_prekey)
        .map(|k| Opk {
            id: k.id,
            key: Bytes(k.key.to_vec()),
        })
        .collect();
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
    };
    let op = Op::Register {
        invite: invite.trim().to_owned(),
        account,
        opks,
    };
    match check(link.call(op).await?)? {
        Response::Registered => {}
        other => bail!("unexpected answer: {other:?}"),
    }
    Device::create(home, username, keys, key, false)?;
    Ok(())
}

async fn login(link: &mut Link, home: &Path, username: &str, password: &str) -> Result<()> {
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
    Device::create(home, username, keys, key, true)?;
    Ok(())
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
        Response::Sent { .. } => Ok(()),
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
            let peer = device.stored.peers.entry(to.to_owned()).or_default();
            if peer
                .identity
                .as_ref()
                .is_some_and(|pinned| *pinned != identity)
            {
                bail!("@{to}'s identity key changed since the last contact; refusing to send");
            }
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
#[derive(Debug, Serialize)]
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

fn mailbox_auth(device: &Device, body: &[u8]) -> MailboxAuth {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let ts_ms = now_ms();
    let username = device.stored.username.clone();
    let verifier = device.password.login_proof();
    MailboxAuth {
        mac: Bytes(pq4::mailbox_mac(
            verifier.as_bytes(),
            &username,
            ts_ms,
            &nonce,
            body,
        )),
        username,
        ts_ms,
        nonce: Bytes(nonce.to_vec()),
    }
}

/// Fetches the mailbox once, opens what it holds, stores the sessions, then acknowledges.
async fn receive(link: &mut Link, device: &mut Device) -> Result<Vec<Shown>> {
    let auth = mailbox_auth(device, &[]);
    let messages = match check(link.call(Op::Fetch { auth }).await?)? {
        Response::Messages(messages) => messages,
        other => bail!("unexpected answer: {other:?}"),
    };
    if messages.is_empty() {
        return Ok(Vec::new());
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
            Ok(Some((text, group))) => shown.push(Shown {
                from: message.from.clone(),
                text,
                at: message.at_ms,
                flagged: false,
                group,
            }),
            Ok(None) => {}
            Err(Flag(reason)) => shown.push(Shown {
                from: message.from.clone(),
                text: format!("<{reason}>"),
                at: message.at_ms,
                flagged: true,
                group: None,
            }),
        }
    }
    report_lost(device);
    if keys_changed {
        device.save_keys()?;
    } else {
        device.save()?;
    }
    let body: Vec<u8> = ids.iter().flat_map(|i| i.0.iter().copied()).collect();
    let auth = mailbox_auth(device, &body);
    check(link.call(Op::Ack { auth, ids }).await?)?;
    Ok(shown)
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
    if envelope.sender().as_slice() != identity.0.as_slice() {
        return Err(flag("not signed by the identity of the claimed sender"));
    }
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
                _ => Ok(None),
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

async fn open(link: &mut Link, device: &mut Device, to: &str) -> Result<()> {
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
    eprintln!("chatting with @{to}; type a line to send it, end with Ctrl-D");
    let mut input_open = true;
    loop {
        tokio::select! {
            line = lines_rx.recv(), if input_open => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => send(link, device, to, &line).await?,
                None => input_open = false,
            },
            () = tokio::time::sleep(POLL) => {
                for message in receive(link, device).await? {
                    print_message(&message, false)?;
                }
                if !input_open {
                    return Ok(());
                }
            }
        }
    }
}
