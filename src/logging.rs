//! Where the logs go.
//!
//! - Under systemd (`JOURNAL_STREAM` or `INVOCATION_ID` set) logs go to stderr, which journald
//!   stores and rotates; without timestamps or colours, since the journal adds its own.
//! - `constella run --log-dir DIR` writes them to files in DIR instead: one file per UTC day,
//!   a new file whenever the current one passes [`MAX_FILE_BYTES`], and only the newest
//!   [`MAX_FILES`] kept, so the directory never holds more than about
//!   `MAX_FILES × MAX_FILE_BYTES`. install.sh uses this where there is no systemd.
//! - Otherwise (a terminal, a test) they go to stderr.
//!
//! The level comes from `RUST_LOG` (e.g. `RUST_LOG=debug`), default [`DEFAULT_FILTER`].
//! Files are written from a background thread through a bounded queue
//! (`tracing_appender::non_blocking`), so a slow disk never stalls the event loop; if the queue
//! is full, lines are dropped rather than blocking.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tracing_appender::non_blocking::WorkerGuard;

/// Used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,libp2p=warn";
/// A log file is closed and a new one started once it passes this size.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// How many log files are kept (the oldest are deleted).
pub const MAX_FILES: usize = 14;
/// Log file names: `constella.YYYY-MM-DD.log`, then `constella.YYYY-MM-DD.N.log` after a size
/// rotation on the same day.
const PREFIX: &str = "constella.";
const SUFFIX: &str = ".log";

/// Where [`init`] sends the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// stderr, with timestamps and colours when it is a terminal.
    Stderr,
    /// stderr read by journald: no timestamps (the journal has them), no colours.
    Journal,
    /// Rotated files in this directory.
    Files(PathBuf),
}

impl Destination {
    /// Files if a directory is given, else the journal under systemd, else stderr.
    pub fn choose(log_dir: Option<&Path>) -> Self {
        Self::pick(log_dir, under_systemd())
    }

    fn pick(log_dir: Option<&Path>, under_systemd: bool) -> Self {
        match log_dir {
            Some(dir) => Self::Files(dir.to_owned()),
            None if under_systemd => Self::Journal,
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

/// Installs the global subscriber. Keep the returned guard until the process ends: dropping it
/// flushes the file writer.
pub fn init(destination: &Destination) -> Result<Option<WorkerGuard>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match destination {
        Destination::Stderr => {
            builder
                .with_writer(io::stderr)
                .with_ansi(io::stderr().is_terminal())
                .init();
            Ok(None)
        }
        Destination::Journal => {
            builder
                .with_writer(io::stderr)
                .with_ansi(false)
                .without_time()
                .init();
            Ok(None)
        }
        Destination::Files(dir) => {
            let file = RotatingFile::open(dir, MAX_FILE_BYTES, MAX_FILES)?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            builder.with_writer(writer).with_ansi(false).init();
            Ok(Some(guard))
        }
    }
}

/// A log file that rotates daily (UTC) and by size, keeping a bounded number of files.
#[derive(Debug)]
pub struct RotatingFile {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    clock: fn() -> u64,
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    file: File,
    day: String,
    index: u32,
    size: u64,
}

impl RotatingFile {
    /// Creates `dir` (0700) if needed (an existing one is checked, never chmodded) and opens
    /// today's newest file for appending.
    pub fn open(dir: &Path, max_bytes: u64, max_files: usize) -> Result<Self> {
        Self::with_clock(dir, max_bytes, max_files, unix_now)
    }

    fn with_clock(
        dir: &Path,
        max_bytes: u64,
        max_files: usize,
        clock: fn() -> u64,
    ) -> Result<Self> {
        // Created 0700, or an existing one checked and left as it is (`--log-dir /var/log`
        // must not become 0700).
        crate::private_dir::prepare(dir, "log directory")?;
        let mut file = Self {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            clock,
            current: None,
        };
        file.roll()
            .with_context(|| format!("cannot open a log file in {}", dir.display()))?;
        Ok(file)
    }

    /// The path of the file being written.
    #[cfg(test)]
    pub fn current_path(&self) -> Option<PathBuf> {
        self.current
            .as_ref()
            .map(|c| self.dir.join(file_name(&c.day, c.index)))
    }

    /// Opens the file for now: today's newest if it has room, else the next one; then prunes.
    fn roll(&mut self) -> io::Result<()> {
        let day = utc_day((self.clock)());
        let newest_today = list_logs(&self.dir)?
            .into_iter()
            .filter(|(d, _)| *d == day)
            .map(|(_, index)| index)
            .max();
        let mut index = match (&self.current, newest_today) {
            (Some(c), _) if c.day == day => c.index + 1,
            (_, Some(index)) => index,
            (_, None) => 0,
        };
        loop {
            let path = self.dir.join(file_name(&day, index));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            let size = file.metadata()?.len();
            if size < self.max_bytes {
                self.current = Some(Current {
                    file,
                    day,
                    index,
                    size,
                });
                break;
            }
            index += 1;
        }
        self.prune()
    }

    /// Deletes the oldest files beyond `max_files` (never the current one).
    fn prune(&self) -> io::Result<()> {
        let mut logs = list_logs(&self.dir)?;
        if logs.len() <= self.max_files {
            return Ok(());
        }
        logs.sort();
        let excess = logs.len() - self.max_files;
        for (day, index) in logs.into_iter().take(excess) {
            let is_current = self
                .current
                .as_ref()
                .is_some_and(|c| c.day == day && c.index == index);
            if !is_current {
                fs::remove_file(self.dir.join(file_name(&day, index)))?;
            }
        }
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let today = utc_day((self.clock)());
        let full = self.current.as_ref().is_none_or(|c| {
            c.day != today || (c.size > 0 && c.size + buf.len() as u64 > self.max_bytes)
        });
        if full {
            self.roll()?;
        }
        let current = self
            .current
            .as_mut()
            .ok_or_else(|| io::Error::other("no log file is open"))?;
        current.file.write_all(buf)?;
        current.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some(current) => current.file.flush(),
            None => Ok(()),
        }
    }
}

fn file_name(day: &str, index: u32) -> String {
    if index == 0 {
        format!("{PREFIX}{day}{SUFFIX}")
    } else {
        format!("{PREFIX}{day}.{index}{SUFFIX}")
    }
}

/// The (day, index) of every log file in `dir`; other files are left alone.
fn list_logs(dir: &Path) -> io::Result<Vec<(String, u32)>> {
    let mut logs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
        else {
            continue;
        };
        let (day, index) = match stem.split_once('.') {
            Some((day, index)) => match index.parse::<u32>() {
                Ok(index) => (day, index),
                Err(_) => continue,
            },
            None => (stem, 0),
        };
        let is_day = day.len() == 10
            && day.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if is_day {
            logs.push((day.to_owned(), index));
        }
    }
    Ok(logs)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD` (UTC) of a Unix time, by the civil-from-days algorithm (H. Hinnant).
pub fn utc_day(unix_secs: u64) -> String {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn an_explicit_log_dir_wins_then_the_journal_then_stderr() {
        let dir = Path::new("/var/lib/constella/logs");
        assert_eq!(
            Destination::pick(Some(dir), true),
            Destination::Files(dir.to_owned())
        );
        assert_eq!(Destination::pick(None, true), Destination::Journal);
        assert_eq!(Destination::pick(None, false), Destination::Stderr);
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
        let mut log = RotatingFile::open(tmp.path(), 100, 3).unwrap();
        let mut line = [b'x'; 40];
        line[39] = b'\n';
        for _ in 0..20 {
            log.write_all(&line).unwrap();
        }
        log.flush().unwrap();
        let names = names(tmp.path());
        let logs: Vec<&String> = names.iter().filter(|n| n.ends_with(".log")).collect();
        assert_eq!(logs.len(), 3, "{names:?}");
        assert!(names.contains(&"unrelated.txt".to_owned()));
        for name in &logs {
            let size = fs::metadata(tmp.path().join(name)).unwrap().len();
            assert!(size <= 100, "{name} has {size} bytes");
        }
        // The file written last is the current one, and is the newest kept.
        let current = log.current_path().unwrap();
        assert!(current.exists());
        let current_name = current.file_name().unwrap().to_str().unwrap().to_owned();
        let index = |n: &str| n.split('.').nth(2).and_then(|i| i.parse::<u32>().ok());
        assert_eq!(
            logs.iter().map(|n| index(n)).max().unwrap(),
            index(&current_name)
        );
        let mode = fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        assert_eq!(
            fs::metadata(&current).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    static NOW: AtomicU64 = AtomicU64::new(1_795_305_000);

    #[test]
    fn rotates_daily_and_resumes_todays_file() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = || NOW.load(Ordering::SeqCst);
        let mut log = RotatingFile::with_clock(tmp.path(), 1000, 10, clock).unwrap();
        log.write_all(b"first day\n").unwrap();
        NOW.store(1_795_305_600 + 10, Ordering::SeqCst);
        log.write_all(b"second day\n").unwrap();
        log.flush().unwrap();
        assert_eq!(
            names(tmp.path()),
            vec!["constella.2026-11-21.log", "constella.2026-11-22.log"]
        );
        drop(log);
        // A restart appends to today's file rather than starting another.
        let mut log = RotatingFile::with_clock(tmp.path(), 1000, 10, clock).unwrap();
        log.write_all(b"after restart\n").unwrap();
        log.flush().unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("constella.2026-11-22.log")).unwrap(),
            "second day\nafter restart\n"
        );
    }
}
