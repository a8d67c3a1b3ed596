//! Docker for tests: whether an engine answers, the locally built test host image
//! (scripts/test-image.sh: Debian with systemd, nothing pulled), and a guard that removes the
//! containers and networks a test made even when the test fails.
//!
//! The tests drive Docker with the `docker` command: it is the test's tool, not the product's
//! (the daemon itself talks to the Engine API directly).

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs `docker ARGS`.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// Runs `docker ARGS`, which must succeed; returns its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// True if a Docker engine answers. Otherwise prints why the test is skipped, and panics when
/// env CI=true: CI machines have an engine, so a missing one there is a failure.
pub fn engine_answers(test: &str) -> bool {
    let reason = match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(error) => format!("the docker command cannot run: {error}"),
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {reason} (CI=true: this must not be skipped)"
    );
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// The tag of the test host image, built or reused by scripts/test-image.sh (once per test
/// process; the script itself serialises builds across processes).
pub fn test_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
        let out = Command::new("bash")
            .arg(script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/test-image.sh");
        assert!(
            out.status.success(),
            "scripts/test-image.sh failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .expect("test-image.sh prints the tag last")
            .trim()
            .to_owned()
    })
    .clone()
}

/// A name prefix no other test run uses at the same time (process id and clock).
pub fn unique_prefix(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("constella-{what}-{}-{nanos:x}", std::process::id())
}

/// Containers and networks to remove when the test ends, however it ends.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for network in &self.networks {
            let _ = docker(&["network", "rm", network]);
        }
    }
}
