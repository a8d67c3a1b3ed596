//! Audit log append cost: one entry written and fsynced, a batch of entries in one write, the
//! non-blocking `record` call the daemon's tasks make, and reading a long log back with full
//! verification. `cargo bench --bench audit`; `CONSTELLA_BENCH_ENTRIES` (default 500) sets the
//! number of single appends. The log is written under target/ (the real disk, not tmpfs).

#[path = "../src/audit.rs"]
#[allow(dead_code)]
mod audit;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use audit::{AuditEvent, AuditFile, AuditKind, AuditLog};

fn event(n: u64) -> AuditEvent {
    AuditEvent::new(
        AuditKind::RebootRequested,
        format!("telegram:{n} (@operator_o)"),
        "telegram",
    )
    .detail("target", "echo-02")
    .detail(
        "node_id",
        "12D3KooWNDsCABJHsEu5FaaB5mmq15RrgsCzhkNKjNidcuFpFvKE",
    )
    .detail("outcome", "accepted")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let entries = support::env_or("CONSTELLA_BENCH_ENTRIES", 500);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    // One entry per append: encrypt, chain, write, fdatasync, head.
    let mut log = AuditFile::open(dir.path(), true).unwrap();
    let mut samples: Vec<Duration> = (0..entries)
        .map(|n| {
            let start = Instant::now();
            log.append("delta-01", &[event(n)]).unwrap();
            start.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "append of one entry (fsynced): median {:.0} µs, p90 {:.0} µs, p99 {:.0} µs ({entries} samples)",
        micros(support::percentile(&samples, 0.5)),
        micros(support::percentile(&samples, 0.9)),
        micros(support::percentile(&samples, 0.99)),
    );

    // A batch in one write and one fsync, as the writer thread does when entries queue up.
    let batch: Vec<AuditEvent> = (0..100).map(event).collect();
    let mut per_entry: Vec<Duration> = (0..20)
        .map(|_| {
            let start = Instant::now();
            log.append("delta-01", &batch).unwrap();
            start.elapsed() / 100
        })
        .collect();
    per_entry.sort();
    println!(
        "append in batches of 100: median {:.1} µs per entry (20 batches)",
        micros(support::percentile(&per_entry, 0.5))
    );
    drop(log);

    // What a task pays: `record` only queues. Then how long the writer takes to drain.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let calls = 4000u64;
    let (record_cost, drained) = runtime.block_on(async {
        let log = AuditLog::open(handle_dir.path(), "delta-01").unwrap();
        let start = Instant::now();
        for n in 0..calls {
            log.record(event(n));
        }
        let record_cost = start.elapsed() / u32::try_from(calls).unwrap();
        log.append(event(calls)).await.unwrap();
        (record_cost, start.elapsed())
    });
    println!(
        "AuditLog::record: {:.2} µs per call (never waits for the disk); {} entries on disk after {:.0} ms ({:.0} entries/s)",
        micros(record_cost),
        calls + 1,
        drained.as_secs_f64() * 1e3,
        (calls + 1) as f64 / drained.as_secs_f64()
    );

    // Reading back everything with full verification (what `constella audit` does).
    let total = audit::read_verified(dir.path()).unwrap().len();
    let start = Instant::now();
    let read = audit::read_verified(dir.path()).unwrap().len();
    assert_eq!(read, total);
    let size = std::fs::metadata(dir.path().join(audit::LOG_FILE))
        .unwrap()
        .len();
    println!(
        "read and verify {total} entries ({:.1} MiB): {:.0} ms ({:.1} µs per entry; {} bytes per entry on disk)",
        size as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64() * 1e3,
        micros(start.elapsed()) / total as f64,
        size / total as u64
    );
}
