//! The history store: one fixed-size ring file per series and resolution, so the disk used is
//! known in advance and never grows.
//!
//! `DIR/10s/NAME.ring` holds 8,640 slots (24 h at 10 s), `DIR/1m/NAME.ring` 43,200 slots (30
//! days at 1 min). A file is a 16-byte header (`CSTHIST1`, step seconds u32 LE, slot count u32
//! LE) then slots of 8 bytes: unix seconds u32 LE and the value f32 LE. A sample at time `t`
//! goes to slot `(t / step) % slots`, overwriting what was there a full ring ago, so a write is
//! one `pwrite` of 8 bytes and nothing is ever compacted. A slot whose time is outside the asked
//! range (an old lap, or never written: time 0) is skipped when reading.
//!
//! The minute file's slot of the current minute is rewritten at every 10-second sample with the
//! running average of that minute, so a restart loses no minute. Writes are not synced: a host
//! crash may lose the last seconds the page cache held, a daemon restart loses nothing.
//! NAME is the metric with every byte outside `[A-Za-z0-9_.-]` written `%XX` (so
//! `disk_used_percent:/` is `disk_used_percent%3A%2F.ring`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

const MAGIC: &[u8; 8] = b"CSTHIST1";
const HEADER_BYTES: u64 = 16;
const SLOT_BYTES: u64 = 8;

/// One resolution of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Sub-directory name.
    pub dir: &'static str,
    /// Seconds per slot.
    pub step: u64,
    /// Slots in a ring.
    pub slots: u64,
}

impl Tier {
    /// Seconds a ring spans.
    pub const fn span(self) -> u64 {
        self.step * self.slots
    }

    /// Bytes of one ring file.
    pub const fn file_bytes(self) -> u64 {
        HEADER_BYTES + self.slots * SLOT_BYTES
    }
}

/// 10 s resolution for 24 h.
pub const FINE: Tier = Tier {
    dir: "10s",
    step: 10,
    slots: 8640,
};
/// 1 min resolution for 30 days.
pub const COARSE: Tier = Tier {
    dir: "1m",
    step: 60,
    slots: 43_200,
};

/// What can go wrong with the store.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("cannot use the history file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a history file of this format; move it away")]
    Foreign { path: PathBuf },
    /// The monthly traffic totals could not be written.
    #[error("{0}")]
    Traffic(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file name of a metric.
pub fn file_name(metric: &str) -> String {
    let mut name = String::with_capacity(metric.len() + 5);
    for byte in metric.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name.push_str(".ring");
    name
}

/// The metric a file name stands for, if it is one of ours.
fn metric_of(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".ring")?;
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// One open ring file.
#[derive(Debug)]
struct Ring {
    file: File,
    tier: Tier,
}

impl Ring {
    /// Opens the ring at `path`, creating it (sparse, full length) if absent.
    fn open(path: &Path, tier: Tier) -> Result<Self, HistoryError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_error(path))?;
        let length = file.metadata().map_err(io_error(path))?.len();
        let mut header = [0u8; HEADER_BYTES as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&(tier.step as u32).to_le_bytes());
        header[12..16].copy_from_slice(&(tier.slots as u32).to_le_bytes());
        if length == 0 {
            file.write_all_at(&header, 0).map_err(io_error(path))?;
            file.set_len(tier.file_bytes()).map_err(io_error(path))?;
        } else {
            let mut found = [0u8; HEADER_BYTES as usize];
            if length != tier.file_bytes()
                || file.read_exact_at(&mut found, 0).is_err()
                || found != header
            {
                return Err(HistoryError::Foreign {
                    path: path.to_owned(),
                });
            }
        }
        Ok(Self { file, tier })
    }

    fn write(&self, time: u64, value: f32) -> io::Result<()> {
        let slot = (time / self.tier.step) % self.tier.slots;
        let mut bytes = [0u8; SLOT_BYTES as usize];
        bytes[..4].copy_from_slice(&(time as u32).to_le_bytes());
        bytes[4..].copy_from_slice(&value.to_le_bytes());
        self.file
            .write_all_at(&bytes, HEADER_BYTES + slot * SLOT_BYTES)
    }
}

/// Reads every point of the ring at `path` within `[from, to]`, oldest first.
fn read_ring(path: &Path, tier: Tier, from: u64, to: u64) -> Result<Vec<(u64, f64)>, HistoryError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(path)(error)),
    };
    let mut bytes = vec![0u8; tier.file_bytes() as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|_| HistoryError::Foreign {
            path: path.to_owned(),
        })?;
    if &bytes[..8] != MAGIC {
        return Err(HistoryError::Foreign {
            path: path.to_owned(),
        });
    }
    let mut points: Vec<(u64, f64)> = bytes[HEADER_BYTES as usize..]
        .chunks_exact(SLOT_BYTES as usize)
        .filter_map(|slot| {
            let time = u64::from(u32::from_le_bytes(slot[..4].try_into().ok()?));
            let value = f32::from_le_bytes(slot[4..].try_into().ok()?);
            (time != 0 && (from..=to).contains(&time) && value.is_finite())
                .then_some((time, f64::from(value)))
        })
        .collect();
    points.sort_unstable_by_key(|&(time, _)| time);
    Ok(points)
}

/// Averages `points` into at most `max` buckets of equal time width (each point at its
/// bucket's last time), so a long range fits an answer.
pub fn downsample(points: Vec<(u64, f64)>, from: u64, to: u64, max: usize) -> Vec<(u64, f64)> {
    if points.len() <= max || max == 0 {
        return points;
    }
    let width = (to - from).div_ceil(max as u64).max(1);
    let mut out: Vec<(u64, f64)> = Vec::with_capacity(max);
    let mut current: Option<(u64, f64, u32, u64)> = None; // bucket, sum, count, last time
    for (time, value) in points {
        let bucket = (time - from) / width;
        match &mut current {
            Some((b, sum, count, last)) if *b == bucket => {
                *sum += value;
                *count += 1;
                *last = time;
            }
            _ => {
                if let Some((_, sum, count, last)) = current.take() {
                    out.push((last, sum / f64::from(count)));
                }
                current = Some((bucket, value, 1, time));
            }
        }
    }
    if let Some((_, sum, count, last)) = current {
        out.push((last, sum / f64::from(count)));
    }
    out
}

/// Reads the store under a directory; cheap to clone, used by RPC answers.
#[derive(Debug, Clone)]
pub struct HistoryReader {
    dir: PathBuf,
}

impl HistoryReader {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The history's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The tier a range is read from: the fine one while it covers the range.
    pub fn tier_for(range_secs: u64) -> Tier {
        if range_secs <= FINE.span() {
            FINE
        } else {
            COARSE
        }
    }

    /// Every metric with a ring in the tier.
    pub fn metrics(&self, tier: Tier) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join(tier.dir)) else {
            return Vec::new();
        };
        let mut metrics: Vec<String> = entries
            .filter_map(|e| metric_of(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        metrics.sort();
        metrics
    }

    /// The points of `metric` in `[from, to]`, at most `max_points` (averaged buckets beyond).
    pub fn read(
        &self,
        metric: &str,
        from: u64,
        to: u64,
        max_points: usize,
    ) -> Result<Vec<(u64, f64)>, HistoryError> {
        let tier = Self::tier_for(to.saturating_sub(from));
        let path = self.dir.join(tier.dir).join(file_name(metric));
        let points = read_ring(&path, tier, from, to)?;
        Ok(downsample(points, from, to, max_points))
    }
}

/// The writing side, owned by the sampler thread: open rings per metric and the running
/// average of the current minute.
#[derive(Debug)]
pub struct HistoryWriter {
    dir: PathBuf,
    rings: BTreeMap<String, (Ring, Ring)>,
    /// Per metric: the minute, the sum and count of its samples so far.
    minute: BTreeMap<String, (u64, f64, u32)>,
}

impl HistoryWriter {
    /// Creates the directories (0700 under the private state directory).
    pub fn open(dir: PathBuf) -> Result<Self, HistoryError> {
        for tier in [FINE, COARSE] {
            let path = dir.join(tier.dir);
            std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        }
        Ok(Self {
            dir,
            rings: BTreeMap::new(),
            minute: BTreeMap::new(),
        })
    }

    /// Records one sample of `metric` at `time` in both tiers.
    pub fn record(&mut self, metric: &str, time: u64, value: f64) -> Result<(), HistoryError> {
        if !self.rings.contains_key(metric) {
            let name = file_name(metric);
            let fine = Ring::open(&self.dir.join(FINE.dir).join(&name), FINE)?;
            let coarse = Ring::open(&self.dir.join(COARSE.dir).join(&name), COARSE)?;
            self.rings.insert(metric.to_owned(), (fine, coarse));
        }
        let Some((fine, coarse)) = self.rings.get(metric) else {
            return Ok(());
        };
        let minute = time / COARSE.step;
        let entry = self
            .minute
            .entry(metric.to_owned())
            .or_insert((minute, 0.0, 0));
        if entry.0 != minute {
            *entry = (minute, 0.0, 0);
        }
        entry.1 += value;
        entry.2 += 1;
        let average = entry.1 / f64::from(entry.2);
        let path = || self.dir.join(FINE.dir).join(file_name(metric));
        fine.write(time, value as f32)
            .map_err(|e| io_error(&path())(e))?;
        coarse
            .write(minute * COARSE.step, average as f32)
            .map_err(|e| io_error(&path())(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for metric in ["cpu_percent", "disk_used_percent:/", "net_rx:wg0 é"] {
            assert_eq!(metric_of(&file_name(metric)).as_deref(), Some(metric));
        }
        assert_eq!(file_name("disk:/"), "disk%3A%2F.ring");
    }

    #[test]
    fn samples_survive_reopening_and_laps_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let base = 1_800_000_000u64;
        {
            let mut writer = HistoryWriter::open(dir.path().to_owned()).unwrap();
            for i in 0..30 {
                writer
                    .record("cpu_percent", base + i * 10, i as f64)
                    .unwrap();
            }
        }
        let reader = HistoryReader::new(dir.path().to_owned());
        let points = reader.read("cpu_percent", base, base + 290, 1000).unwrap();
        assert_eq!(points.len(), 30);
        assert_eq!(points[3], (base + 30, 3.0));
        assert_eq!(reader.metrics(FINE), vec!["cpu_percent".to_owned()]);
        // A full lap later the same slot holds the new sample, the old one is gone.
        let mut writer = HistoryWriter::open(dir.path().to_owned()).unwrap();
        writer
            .record("cpu_percent", base + FINE.span(), 99.0)
            .unwrap();
        let points = reader
            .read("cpu_percent", base, base + FINE.span(), 100_000)
            .unwrap();
        assert!(points.contains(&(base + FINE.span(), 99.0)));
        assert!(!points.iter().any(|&(t, _)| t == base));
        // Minute averages: samples 0..5 fall in the first minute (base is a minute boundary).
        let coarse = reader
            .read("cpu_percent", base - 60, base + 2 * 86_400, 100_000)
            .unwrap();
        assert_eq!(coarse[0], (base, 2.5));
        // Files have their fixed size.
        let size = std::fs::metadata(dir.path().join("1m").join("cpu_percent.ring"))
            .unwrap()
            .len();
        assert_eq!(size, COARSE.file_bytes());
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = HistoryWriter::open(dir.path().to_owned()).unwrap();
        std::fs::write(dir.path().join("10s").join("x.ring"), b"hello").unwrap();
        let error = writer.record("x", 1_800_000_000, 1.0).unwrap_err();
        assert!(error.to_string().contains("not a history file"), "{error}");
    }

    #[test]
    fn downsampling_averages_buckets() {
        let points: Vec<(u64, f64)> = (0..100).map(|i| (i, i as f64)).collect();
        let out = downsample(points, 0, 99, 10);
        assert_eq!(out.len(), 10);
        assert_eq!(out[0], (9, 4.5));
    }

    /// Compressed time: 30 days of 10-second rounds of a typical host's 15 series, written as
    /// fast as the store takes them; prints the disk used and the cost of a round.
    /// `cargo test --release --bin constella -- --ignored --nocapture figures_`
    #[test]
    #[ignore = "a figure, not a check: takes seconds in release"]
    fn figures_history_disk_for_30_days() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut writer = HistoryWriter::open(dir.path().to_owned()).unwrap();
        let metrics: Vec<String> = [
            "cpu_percent",
            "load1",
            "load5",
            "load15",
            "ram_used_bytes",
            "ram_total_bytes",
            "swap_used_bytes",
            "swap_total_bytes",
            "daemon_rss_bytes",
            "net_rx_bytes_per_sec",
            "net_tx_bytes_per_sec",
            "net_rx_bytes_per_sec:eth0",
            "net_tx_bytes_per_sec:eth0",
            "disk_used_percent:/",
            "disk_used_bytes:/",
        ]
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
        let start = 1_800_000_000u64;
        let rounds = 30 * 8640u64;
        let began = std::time::Instant::now();
        for round in 0..rounds {
            for (i, metric) in metrics.iter().enumerate() {
                writer
                    .record(metric, start + round * 10, (round + i as u64) as f64)
                    .unwrap();
            }
        }
        let took = began.elapsed();
        let mut blocks = 0u64;
        let mut apparent = 0u64;
        for tier in [FINE, COARSE] {
            for entry in std::fs::read_dir(dir.path().join(tier.dir)).unwrap() {
                let meta = entry.unwrap().metadata().unwrap();
                blocks += meta.blocks() * 512;
                apparent += meta.len();
            }
        }
        println!(
            "30 days x {} series: {} B on disk ({:.2} MiB), apparent {} B; {:.1} us per 10-second round",
            metrics.len(),
            blocks,
            blocks as f64 / 1048576.0,
            apparent,
            took.as_secs_f64() * 1e6 / rounds as f64
        );
        let reader = HistoryReader::new(dir.path().to_owned());
        let now = start + rounds * 10;
        for range in [3600, 86_400, 7 * 86_400, 30 * 86_400] {
            let began = std::time::Instant::now();
            let points = reader.read("cpu_percent", now - range, now, 720).unwrap();
            println!(
                "read {range} s of one series: {} points in {:.2} ms",
                points.len(),
                began.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
