//! Where the logs go.
//!
//! - Under systemd (`JOURNAL_STREAM` or `INVOCATION_ID` set) each event is sent to journald as a
//!   native entry (`tracing-journald`) with its fields as journal fields, upper-cased and without
//!   a prefix: `EVENT=leader_changed`, `MEMBER=bravo`, `LEADER=…`, and on every entry `NODE=`
//!   this node's name. So `journalctl -u constella NODE=alpha EVENT=leader_changed` works;
//!   `-o verbose` or `-o json` shows the fields, the plain view shows the message. If the
//!   journal's socket cannot be reached, lines go to stderr as before (no timestamps or colours:
//!   the journal adds its own).
//! - `constella run --log-dir DIR` writes them to `DIR/constella.log` instead, rotated by the
//!   `file-rotate` crate once it passes [`MAX_FILE_BYTES`]: the full file is renamed
//!   `constella.log.YYYYMMDDTHHMMSS` (the rotation's local time: UTC on most servers) and only
//!   the newest [`MAX_ROTATED`] of those are kept, so the directory never holds more than about
//!   `(MAX_ROTATED + 1) × MAX_FILE_BYTES`. install.sh uses this where there is no systemd.
//! - Otherwise (a terminal, a test) they go to stderr.
//!
//! The level comes from `RUST_LOG` (e.g. `RUST_LOG=debug`), default [`DEFAULT_FILTER`].
//! Files are written from a background thread through a bounded queue
//! (`tracing_appender::non_blocking`), so a slow disk never stalls the event loop; if the queue
//! is full, lines are dropped rather than blocking.

use std::fs::OpenOptions;
use std::io::{self, IsTerminal};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use file_rotate::compression::Compression;
use file_rotate::suffix::{AppendTimestamp, DateFrom, FileLimit};
use file_rotate::{ContentLimit, FileRotate};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,libp2p=warn";
/// A log file is rotated once a write takes it past this size (a line is never split).
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// How many rotated files are kept besides the current one (the oldest are deleted).
pub const MAX_ROTATED: usize = 13;
/// The file being written in a `--log-dir`.
pub const LOG_FILE: &str = "constella.log";
/// The rotated files' suffix: the local time of the rotation (`.1`, `.2` … added when two fall in
/// the same second).
const ROTATED_FORMAT: &str = "%Y%m%dT%H%M%S";

/// Where [`init`] sends the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// stderr, with timestamps and colours when it is a terminal.
    Stderr,
    /// Native journald entries with structured fields; `NODE=` is this node's name if known.
    Journal { node: Option<String> },
    /// Rotated files in this directory.
    Files(PathBuf),
}

impl Destination {
    /// Files if a directory is given, else the journal under systemd, else stderr. `node` is
    /// this node's name, sent as `NODE=` with every journal entry.
    pub fn choose(log_dir: Option<&Path>, node: Option<String>) -> Self {
        Self::pick(log_dir, under_systemd(), node)
    }

    fn pick(log_dir: Option<&Path>, under_systemd: bool, node: Option<String>) -> Self {
        match log_dir {
            Some(dir) => Self::Files(dir.to_owned()),
            None if under_systemd => Self::Journal { node },
            None => Self::Stderr,
        }
    }
}

/// Whether systemd started this process with its output going to the journal.
pub fn under_systemd() -> bool {
    ["JOURNAL_STREAM", "INVOCATION_ID"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
}

/// The journald layer: fields as they are named in the code, upper-cased, no `F_` prefix;
/// `SYSLOG_IDENTIFIER=constella`; `NODE=` on every entry.
pub fn journal_layer(node: Option<&str>) -> io::Result<tracing_journald::Layer> {
    let layer = tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("constella".to_owned());
    Ok(match node {
        Some(node) => layer.with_custom_fields([("NODE", node)]),
        None => layer,
    })
}

/// Installs the global subscriber. Keep the returned guard until the process ends: dropping it
/// flushes the file writer.
pub fn init(destination: &Destination) -> Result<Option<WorkerGuard>> {
    let builder = tracing_subscriber::fmt().with_env_filter(filter());
    match destination {
        Destination::Stderr => {
            builder
                .with_writer(io::stderr)
                .with_ansi(io::stderr().is_terminal())
                .init();
            Ok(None)
        }
        Destination::Journal { node } => {
            match journal_layer(node.as_deref()) {
                Ok(layer) => tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init(),
                Err(error) => {
                    builder
                        .with_writer(io::stderr)
                        .with_ansi(false)
                        .without_time()
                        .init();
                    tracing::warn!(%error, "cannot reach the journal's socket; logging to stderr");
                }
            }
            Ok(None)
        }
        Destination::Files(dir) => {
            let file = rotating_file(dir, MAX_FILE_BYTES, MAX_ROTATED)?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            builder.with_writer(writer).with_ansi(false).init();
            Ok(Some(guard))
        }
    }
}

/// `DIR/constella.log`, appended to (0600), rotated past `max_bytes` with `max_rotated` older
/// files kept. Creates `dir` (0700) if needed; an existing one is checked, never chmodded
/// (`--log-dir /var/log` must not become 0700).
pub fn rotating_file(
    dir: &Path,
    max_bytes: usize,
    max_rotated: usize,
) -> Result<FileRotate<AppendTimestamp>> {
    crate::private_dir::prepare(dir, "log directory")?;
    let path = dir.join(LOG_FILE);
    // Opened once here to report a failure with its reason: the crate would only drop lines.
    let mut options = OpenOptions::new();
    options.read(true).create(true).append(true).mode(0o600);
    if let Err(error) = options.open(&path) {
        bail!("cannot open the log file {}: {error}", path.display());
    }
    Ok(FileRotate::new(
        path,
        AppendTimestamp::with_format(
            ROTATED_FORMAT,
            FileLimit::MaxFiles(max_rotated),
            DateFrom::Now,
        ),
        ContentLimit::BytesSurpassed(max_bytes.max(1)),
        Compression::None,
        Some(options),
    ))
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub fn utc_day(unix_secs: u64) -> String {
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(secs) {
        Ok(at) => at.strftime("%Y-%m-%d").to_string(),
        Err(_) => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_explicit_log_dir_wins_then_the_journal_then_stderr() {
        let dir = Path::new("/var/lib/constella/logs");
        let node = Some("alpha".to_owned());
        assert_eq!(
            Destination::pick(Some(dir), true, node.clone()),
            Destination::Files(dir.to_owned())
        );
        assert_eq!(
            Destination::pick(None, true, node.clone()),
            Destination::Journal { node }
        );
        assert_eq!(Destination::pick(None, false, None), Destination::Stderr);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_795_305_599), "2026-11-21");
        assert_eq!(utc_day(1_795_305_600), "2026-11-22");
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let tmp = tempfile::tempdir().unwrap();
        // An existing directory keeps its mode (it may be shared, like /var/log).
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(tmp.path().join("unrelated.txt"), "keep me").unwrap();
        let mut log = rotating_file(tmp.path(), 100, 2).unwrap();
        let mut line = [b'x'; 40];
        line[39] = b'\n';
        for i in 0..20u8 {
            line[0] = b'a' + i;
            log.write_all(&line).unwrap();
        }
        log.flush().unwrap();
        let names = names(tmp.path());
        let logs: Vec<&String> = names.iter().filter(|n| n.starts_with(LOG_FILE)).collect();
        // The current file and two rotated ones.
        assert_eq!(logs.len(), 3, "{names:?}");
        assert!(names.contains(&"unrelated.txt".to_owned()));
        for name in &logs {
            let bytes = fs::read(tmp.path().join(name)).unwrap();
            // Rotated past 100 bytes, whole lines only.
            assert!(bytes.len() <= 100 + 40, "{name} has {} bytes", bytes.len());
            assert!(bytes.ends_with(b"\n") || bytes.is_empty(), "{name}");
            let mode = fs::metadata(tmp.path().join(name)).unwrap().permissions();
            assert_eq!(mode.mode() & 0o777, 0o600, "{name}");
        }
        // Three lines a file (rotated once past 100 bytes): the current file has the newest
        // two, the two rotated ones the six before; the older ones were deleted.
        let firsts = |name: &str| -> String {
            fs::read_to_string(tmp.path().join(name))
                .unwrap()
                .lines()
                .map(|l| l.chars().next().unwrap())
                .collect()
        };
        assert_eq!(firsts(LOG_FILE), "st");
        let mut rotated: Vec<String> = logs
            .iter()
            .filter(|n| n.as_str() != LOG_FILE)
            .map(|n| firsts(n))
            .collect();
        rotated.sort();
        assert_eq!(rotated, vec!["mno", "pqr"]);
        let mode = fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn a_restart_appends_to_the_current_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = rotating_file(tmp.path(), 1000, 3).unwrap();
        log.write_all(b"before restart\n").unwrap();
        log.flush().unwrap();
        drop(log);
        let mut log = rotating_file(tmp.path(), 1000, 3).unwrap();
        log.write_all(b"after restart\n").unwrap();
        log.flush().unwrap();
        assert_eq!(names(tmp.path()), vec![LOG_FILE]);
        assert_eq!(
            fs::read_to_string(tmp.path().join(LOG_FILE)).unwrap(),
            "before restart\nafter restart\n"
        );
    }

    #[test]
    fn an_unwritable_log_dir_is_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let error = rotating_file(&file, 100, 2).err().expect("refused");
        let text = format!("{error:#}");
        assert!(!text.contains('\n'), "{text}");
    }
}
