//! The device's message history and its transfer to a new device (seed 004 §17;
//! docs/messaging.md "History transfer").
//!
//! Every message this device sends or reads is kept in `HOME/history.cbor`, sealed under the
//! password (a PQ4 sealed blob of kind `History`). `chat history export` on an old device seals
//! the whole history for one other active device of the account (`SealedHistory` under a fresh
//! master key, bound to that device's id), stores it in chunks on the account's holders and
//! prints a code (and a QR code) carrying the transfer id and the master key.
//! `chat history import CODE` on the new device downloads the chunks (each kept in
//! `HOME/history-import/<transfer>/` as it arrives, so an interrupted import continues where it
//! stopped), opens the history and merges it into its own; the holders then delete it.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use constella_behaviours::pq4::{
    Bytes, DeviceEntry, ErrorKind, HistoryAnswer, HistoryOp, Op, Response,
};
use constella_behaviours::pq4_devices::device_hex;
use constella_behaviours::pq4_history::{
    MAX_CHUNK_BYTES, Manifest, TRANSFER_ID_LEN, fetch_proof, history_device_id,
};
use constella_keys::error::HistoryError;
use constella_keys::sealed::BlobKind;
use constella_keys::{HistoryMasterKey, SealedBlob, SealedHistory};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::device::Device;
use super::link::Link;
use super::{Input, MailboxKey, Shown, check, connect, devices, now_ms, peer_name};

/// File name of the sealed history.
const FILE: &str = "history.cbor";
/// Directory of interrupted imports.
const IMPORTS: &str = "history-import";
/// Chunk length of an export (`CONSTELLA_TEST_HISTORY_CHUNK_BYTES` sets it, for tests).
const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes of the code's check value.
const CHECK_LEN: usize = 3;
/// The code's alphabet (RFC 4648 base32, lower case).
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `constella chat history …`
#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Seal this device's message history for a new device of the account and print the
    /// code (and a QR code) to import it there; valid for one hour.
    Export {
        /// The new device: its id (or at least 4 leading hex digits) or its name (default:
        /// the account's most recently enrolled other device).
        #[arg(long = "for", value_name = "DEVICE")]
        target: Option<String>,
        /// Print the QR code even when standard output is not a terminal.
        #[arg(long)]
        qr: bool,
    },
    /// Download the history another device exported for this one, and merge it.
    Import {
        /// The code `chat history export` printed.
        code: String,
    },
    /// Show the message history kept on this device.
    Show {
        /// Only the conversation with `@name` (or the group `name`).
        peer: Option<String>,
        /// A JSON list of {"peer","from","text","at","flagged","group"}.
        #[arg(long)]
        json: bool,
    },
}

/// One message in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The message id (SHA-256 of its envelope or frame): the same on every device.
    #[serde(default)]
    pub id: Bytes,
    /// The other side of a 1:1 conversation, or the group's name.
    pub peer: String,
    pub from: String,
    pub text: String,
    /// When a member accepted it (received) or when it was sent (ms since the epoch).
    pub at: u64,
    pub flagged: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub group: Option<String>,
}

/// Runs a history command.
pub async fn run(
    command: HistoryCommand,
    home: &Path,
    state_dir: &Path,
    via: Option<&str>,
    input: &mut Input,
) -> Result<()> {
    // A code is checked before anything else: a mistyped one changes nothing.
    let code = match &command {
        HistoryCommand::Import { code } => Some(Code::parse(code)?),
        _ => None,
    };
    let password = input.password("Password: ")?;
    let mut device = Device::unlock(home, &password)?;
    match command {
        HistoryCommand::Show { peer, json } => show(&device, peer.as_deref(), json),
        HistoryCommand::Export { target, qr } => {
            let mut link = connect(state_dir, via, &mut device).await?;
            export(&mut link, &mut device, target.as_deref(), qr).await
        }
        HistoryCommand::Import { .. } => {
            let Some(code) = code else {
                bail!("no code");
            };
            let mut link = connect(state_dir, via, &mut device).await?;
            import(&mut link, &mut device, &code).await
        }
    }
}

/// The history kept on this device, oldest first.
pub fn load(device: &Device) -> Result<Vec<Entry>> {
    let path = device.home.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let blob =
        SealedBlob::from_bytes(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    let plain = blob
        .open(&device.password, BlobKind::History)
        .with_context(|| format!("{} does not open with this password", path.display()))?;
    ciborium::from_reader(plain.as_slice())
        .with_context(|| format!("{} is corrupt", path.display()))
}

/// Seals and writes the history (temporary file 0600, fsync, rename).
fn save(device: &Device, entries: &[Entry]) -> Result<()> {
    let mut plain = Zeroizing::new(Vec::new());
    ciborium::into_writer(entries, &mut *plain).context("cannot encode the history")?;
    let blob = SealedBlob::seal(
        &device.password,
        BlobKind::History,
        &plain,
        &mut rand::rng(),
    )
    .context("cannot seal the history")?;
    write_atomically(&device.home.join(FILE), &blob.to_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Merges `incoming` into `held` by message id (an unflagged copy replaces a flagged one: the
/// old device could read what this one could not); answers how many were new.
fn merge(held: &mut Vec<Entry>, incoming: Vec<Entry>) -> usize {
    let mut by_id: BTreeMap<Vec<u8>, usize> = held
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.id.0.is_empty())
        .map(|(i, e)| (e.id.0.clone(), i))
        .collect();
    let mut new = 0;
    for entry in incoming {
        match by_id.get(&entry.id.0) {
            Some(&i) if !entry.id.0.is_empty() => {
                if held[i].flagged && !entry.flagged {
                    held[i] = entry;
                }
            }
            _ => {
                if !entry.id.0.is_empty() {
                    by_id.insert(entry.id.0.clone(), held.len());
                }
                held.push(entry);
                new += 1;
            }
        }
    }
    held.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    new
}

/// Adds messages to the history. A failure is reported, never fatal: the messages were
/// shown and acknowledged already.
fn record(device: &Device, entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let result = load(device).and_then(|mut held| {
        merge(&mut held, entries);
        save(device, &held)
    });
    if let Err(e) = result {
        eprintln!("cannot record the message history: {e:#}");
    }
}

/// Records messages this device read (`chat read`, `chat open`).
pub fn record_read(device: &Device, shown: &[(Bytes, Shown)]) {
    let entries = shown
        .iter()
        .map(|(id, m)| Entry {
            id: id.clone(),
            peer: m.group.clone().unwrap_or_else(|| m.from.clone()),
            from: m.from.clone(),
            text: m.text.clone(),
            at: m.at,
            flagged: m.flagged,
            group: m.group.clone(),
        })
        .collect();
    record(device, entries);
}

/// Records a message this device sent to `to`.
pub fn record_sent(device: &Device, id: Bytes, to: &str, text: &str) {
    let entry = Entry {
        id,
        peer: to.to_owned(),
        from: device.stored.username.clone(),
        text: text.to_owned(),
        at: now_ms(),
        flagged: false,
        group: None,
    };
    record(device, vec![entry]);
}

/// `chat history show`.
fn show(device: &Device, peer: Option<&str>, json: bool) -> Result<()> {
    let peer = match peer {
        Some(p) if p.starts_with('@') => Some(peer_name(p)?),
        Some(p) => Some(p.to_owned()),
        None => None,
    };
    let entries: Vec<Entry> = load(device)?
        .into_iter()
        .filter(|e| peer.as_ref().is_none_or(|p| e.peer == *p))
        .collect();
    if json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "peer": e.peer, "from": e.from, "text": e.text, "at": e.at,
                    "flagged": e.flagged, "group": e.group,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(());
    }
    for e in &entries {
        let group = e
            .group
            .as_ref()
            .map_or(String::new(), |g| format!("[{g}] "));
        let to = if e.from == device.stored.username && e.group.is_none() {
            format!(" → @{}", e.peer)
        } else {
            String::new()
        };
        let flag = if e.flagged { " [FLAGGED]" } else { "" };
        println!("{group}@{}{to}{flag}: {}", e.from, e.text);
    }
    Ok(())
}

/// What the code carries: the transfer id and the master key, with a check value so a
/// mistyped code is caught before it reaches the network.
struct Code {
    transfer: [u8; TRANSFER_ID_LEN],
    master: HistoryMasterKey,
}

impl Code {
    fn check_value(transfer: &[u8], master: &[u8]) -> [u8; CHECK_LEN] {
        let digest = Sha256::new()
            .chain_update(b"PQ4 history code")
            .chain_update(transfer)
            .chain_update(master)
            .finalize();
        let mut out = [0u8; CHECK_LEN];
        out.copy_from_slice(&digest[..CHECK_LEN]);
        out
    }

    /// `transfer ‖ master key ‖ check`, base32 in groups of five letters.
    fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(TRANSFER_ID_LEN + 32 + CHECK_LEN));
        raw.extend_from_slice(&self.transfer);
        raw.extend_from_slice(self.master.as_bytes());
        raw.extend_from_slice(&Self::check_value(&self.transfer, self.master.as_bytes()));
        let text = base32(&raw);
        let grouped: Vec<&str> = text
            .as_bytes()
            .chunks(5)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        Zeroizing::new(grouped.join("-"))
    }

    fn parse(text: &str) -> Result<Self> {
        let invalid = "invalid history code: expected the 69 letters and digits \
                       `constella chat history export` printed (dashes allowed)";
        let clean: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let Some(raw) = unbase32(&clean) else {
            bail!("{invalid}");
        };
        let raw = Zeroizing::new(raw);
        if raw.len() != TRANSFER_ID_LEN + 32 + CHECK_LEN {
            bail!("{invalid}");
        }
        let (transfer, rest) = raw.split_at(TRANSFER_ID_LEN);
        let (master, check) = rest.split_at(32);
        if Self::check_value(transfer, master) != check {
            bail!("invalid history code: a letter is wrong (its check value does not match)");
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(master);
        let mut id = [0u8; TRANSFER_ID_LEN];
        id.copy_from_slice(transfer);
        Ok(Self {
            transfer: id,
            master: HistoryMasterKey::from_bytes(key),
        })
    }
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = ((acc << 5) | v) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be zero padding (one encoding per code).
    (acc & ((1 << bits) - 1) == 0).then_some(out)
}

/// The new device: named by `--for`, else the most recently enrolled active device other than
/// this one.
fn target<'a>(
    list: &'a [DeviceEntry],
    mine: &Bytes,
    wanted: Option<&str>,
) -> Result<&'a DeviceEntry> {
    let others = list
        .iter()
        .filter(|d| d.revoked.is_none() && d.card.id != *mine);
    let Some(wanted) = wanted else {
        return others.max_by_key(|d| d.card.added_ms).context(
            "DeviceNotFound: no other active device on this account; log in on the new \
             device first (`constella chat login`), then export",
        );
    };
    let lower = wanted.to_ascii_lowercase();
    let matches: Vec<&DeviceEntry> = others
        .filter(|d| {
            (lower.len() >= 4 && device_hex(&d.card.id).starts_with(&lower))
                || d.card.name == wanted
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            bail!("DeviceNotFound: no other active device {wanted:?}; see `constella chat devices`")
        }
        _ => bail!("{wanted:?} names more than one device; give more of its id"),
    }
}

fn chunk_bytes() -> usize {
    std::env::var("CONSTELLA_TEST_HISTORY_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=MAX_CHUNK_BYTES).contains(n))
        .unwrap_or(CHUNK_BYTES)
}

async fn call_history(link: &mut Link, op: HistoryOp) -> Result<HistoryAnswer> {
    match check(link.call(Op::History(op)).await?)? {
        Response::History(answer) => Ok(answer),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// `chat history export`.
async fn export(
    link: &mut Link,
    device: &mut Device,
    wanted: Option<&str>,
    qr: bool,
) -> Result<()> {
    let entries = load(device)?;
    if entries.is_empty() {
        bail!("there is no message history on this device to export");
    }
    let list = devices::list(link, device).await?;
    let target = target(&list, &device.stored.device_id, wanted)?;
    let mut rng = rand::rng();
    let mut plain = Zeroizing::new(Vec::new());
    ciborium::into_writer(&entries, &mut *plain).context("cannot encode the history")?;
    let master = HistoryMasterKey::generate(&mut rng);
    let now = now_ms();
    let sealed = SealedHistory::seal(
        &master,
        &history_device_id(&target.card.id.0),
        &plain,
        now,
        &mut rng,
    )
    .context("cannot seal the history")?
    .to_bytes();
    let mut transfer = [0u8; TRANSFER_ID_LEN];
    rand::fill(&mut transfer);
    let proof = fetch_proof(master.as_bytes(), &transfer);
    let size = chunk_bytes();
    let chunks: Vec<&[u8]> = sealed.chunks(size).collect();
    let manifest = Manifest {
        transfer: Bytes(transfer.to_vec()),
        for_device: target.card.id.clone(),
        by_device: device.stored.device_id.clone(),
        proof_hash: Bytes(Sha256::digest(&proof).to_vec()),
        created_ms: now,
        total_len: sealed.len() as u64,
        chunk_size: size as u32,
        hashes: chunks
            .iter()
            .map(|c| Bytes(Sha256::digest(c).to_vec()))
            .collect(),
        messages: entries.len() as u32,
    };
    let key = device.mailbox_key();
    let begin = HistoryOp::Begin {
        auth: key.auth(&[]),
        manifest,
    };
    call_history(link, signed(&key, begin)).await?;
    for (index, chunk) in chunks.iter().enumerate() {
        let op = HistoryOp::Put {
            auth: key.auth(&[]),
            transfer: Bytes(transfer.to_vec()),
            index: index as u32,
            chunk: Bytes(chunk.to_vec()),
        };
        call_history(link, signed(&key, op))
            .await
            .with_context(|| format!("storing chunk {} of {}", index + 1, chunks.len()))?;
    }
    let code = Code { transfer, master }.encode();
    println!(
        "history of @{} sealed for device {:?} ({}): {} message(s), {} bytes in {} chunk(s); \
         the code is valid for one hour",
        device.stored.username,
        target.card.name,
        device_hex(&target.card.id),
        entries.len(),
        sealed.len(),
        chunks.len()
    );
    if (qr || std::io::stdout().is_terminal())
        && let Ok(qr) = qrcode::QrCode::new(code.as_bytes())
    {
        use qrcode::render::unicode::Dense1x2;
        let art = qr
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .build();
        println!("{art}");
    }
    println!("code: {}", code.as_str());
    println!(
        "on the new device: constella chat history import {}",
        code.as_str()
    );
    Ok(())
}

/// `op` with its mailbox proof over the complete request.
fn signed(key: &MailboxKey, mut op: HistoryOp) -> HistoryOp {
    let body = op.body();
    *op.auth_mut() = key.auth(&body);
    op
}

/// Where the chunks of an import in progress are kept.
fn import_dir(device: &Device, transfer: &[u8]) -> PathBuf {
    device.home.join(IMPORTS).join(hex::encode(transfer))
}

/// Drops an import in progress (the transfer is gone from the network).
fn forget(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
}

/// `chat history import CODE`.
async fn import(link: &mut Link, device: &mut Device, code: &Code) -> Result<()> {
    let transfer = Bytes(code.transfer.to_vec());
    let proof = Bytes(fetch_proof(code.master.as_bytes(), &code.transfer));
    let key = device.mailbox_key();
    let dir = import_dir(device, &code.transfer);
    let open = signed(
        &key,
        HistoryOp::Open {
            auth: key.auth(&[]),
            transfer: transfer.clone(),
            proof: proof.clone(),
        },
    );
    let manifest = match link.call(Op::History(open)).await? {
        Response::History(HistoryAnswer::Manifest(m)) => m,
        Response::Error {
            kind:
                kind @ (ErrorKind::TransferExpired
                | ErrorKind::TransferCancelled
                | ErrorKind::TransferNotFound),
            message,
        } => {
            // The transfer is gone from the network: so is what this device had of it.
            forget(&dir);
            bail!("{kind:?}: {message}");
        }
        other => {
            check(other)?;
            bail!("unexpected answer to a history transfer");
        }
    };
    if manifest.transfer != transfer || manifest.check().is_err() {
        bail!("the network answered another or a malformed history transfer; nothing imported");
    }
    let count = manifest.hashes.len() as u32;
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut held: Vec<Option<Vec<u8>>> = (0..count)
        .map(|i| {
            fs::read(dir.join(format!("{i:08}.chunk")))
                .ok()
                .filter(|c| manifest.chunk_matches(i, c))
        })
        .collect();
    let already = held.iter().filter(|c| c.is_some()).count();
    if already > 0 {
        eprintln!("resuming an interrupted import: {already} of {count} chunk(s) already here");
    }
    let stop_after: Option<usize> = std::env::var("CONSTELLA_TEST_HISTORY_STOP_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    let delay_ms: u64 = std::env::var("CONSTELLA_TEST_HISTORY_CHUNK_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut fetched = 0;
    for index in 0..count {
        if held[index as usize].is_some() {
            continue;
        }
        if stop_after == Some(fetched) {
            bail!("test knob: the import stopped after {fetched} chunk(s)");
        }
        let op = signed(
            &key,
            HistoryOp::Chunk {
                auth: key.auth(&[]),
                transfer: transfer.clone(),
                proof: proof.clone(),
                index,
            },
        );
        let chunk = match link.call(Op::History(op)).await? {
            Response::History(HistoryAnswer::Chunk(chunk)) => chunk.0,
            Response::Error {
                kind: kind @ (ErrorKind::TransferExpired | ErrorKind::TransferCancelled),
                message,
            } => {
                forget(&dir);
                bail!("{kind:?}: {message}");
            }
            other => {
                check(other).with_context(|| format!("chunk {} of {count}", index + 1))?;
                bail!("unexpected answer to a history chunk");
            }
        };
        if !manifest.chunk_matches(index, &chunk) {
            bail!(
                "chunk {} of {count} does not match the transfer; run the import again",
                index + 1
            );
        }
        write_atomically(&dir.join(format!("{index:08}.chunk")), &chunk)?;
        held[index as usize] = Some(chunk);
        fetched += 1;
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
    }
    let sealed: Vec<u8> = held.into_iter().flatten().flatten().collect();
    let sealed =
        SealedHistory::from_bytes(&sealed).context("the transferred history is malformed")?;
    let plain = match sealed.open(
        &code.master,
        &history_device_id(&device.stored.device_id.0),
        now_ms(),
    ) {
        Ok(plain) => plain,
        Err(HistoryError::Expired) => {
            forget(&dir);
            bail!(
                "TransferExpired: the history was sealed more than an hour ago; nothing was imported"
            )
        }
        Err(_) => bail!(
            "the history does not open with this code on this device (a wrong code, or made \
             for another device); nothing was imported"
        ),
    };
    let incoming: Vec<Entry> =
        ciborium::from_reader(plain.as_slice()).context("the transferred history is malformed")?;
    let total = incoming.len();
    let mut entries = load(device)?;
    let new = merge(&mut entries, incoming);
    save(device, &entries)?;
    forget(&dir);
    let done = signed(
        &key,
        HistoryOp::Done {
            auth: key.auth(&[]),
            transfer,
            proof,
            imported: total as u32,
        },
    );
    let deleted = link.call(Op::History(done)).await.and_then(check);
    println!(
        "imported {total} message(s) from device {} ({new} new on this device)",
        device_hex(&manifest.by_device)
    );
    if let Err(e) = deleted {
        eprintln!(
            "the transfer could not be deleted from the network ({e:#}); it expires within the hour"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_round_trips_and_a_changed_letter_is_caught() {
        let code = Code {
            transfer: [9; TRANSFER_ID_LEN],
            master: HistoryMasterKey::from_bytes([42; 32]),
        };
        let text = code.encode();
        let back = Code::parse(&text).unwrap();
        assert_eq!(back.transfer, code.transfer);
        assert_eq!(back.master.as_bytes(), code.master.as_bytes());
        assert_eq!(text.replace('-', "").len(), 69);
        let mut changed: Vec<char> = text.chars().collect();
        changed[3] = if changed[3] == 'a' { 'b' } else { 'a' };
        let changed: String = changed.into_iter().collect();
        assert!(Code::parse(&changed).is_err());
        assert!(Code::parse("not a code").is_err());
    }

    #[test]
    fn merge_keeps_one_copy_and_prefers_the_readable_one() {
        let entry = |id: u8, at, flagged| Entry {
            id: Bytes(vec![id]),
            peer: "bob".into(),
            from: "bob".into(),
            text: format!("m{id}"),
            at,
            flagged,
            group: None,
        };
        let mut held = vec![entry(1, 10, true), entry(3, 30, false)];
        let new = merge(&mut held, vec![entry(1, 10, false), entry(2, 20, false)]);
        assert_eq!(new, 1);
        assert_eq!(held.len(), 3);
        assert!(!held[0].flagged && held[1].at == 20);
    }
}
