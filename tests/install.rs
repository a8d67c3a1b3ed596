//! scripts/install.sh and `constella rolling-restart`, run for real: nodes are installed under
//! temporary root prefixes (no systemd there, so they run detached, as in a container), form a
//! network on 127.0.0.1, are restarted one by one, and are uninstalled.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, Peer, free_port, output_text as text, wait_for};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");

fn script(name: &str) -> String {
    format!("{SCRIPTS}/{name}")
}

/// Runs install.sh with `args`, with no inherited CONSTELLA_* settings.
fn install_sh(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(script("install.sh"))
        .args(args)
        .env_remove("CONSTELLA_ROOT")
        .env_remove("CONSTELLA_STATE_DIR")
        .env_remove("CONSTELLA_BOT_TOKEN")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run install.sh")
}

/// A node installed under its own root prefix.
struct Installed {
    name: String,
    root: PathBuf,
    port: u16,
}

impl Installed {
    fn new(parent: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            root: parent.join(name),
            port: free_port(),
        }
    }
    fn prefix(&self) -> &str {
        self.root.to_str().unwrap()
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn bin(&self) -> PathBuf {
        self.root.join("usr/local/bin/constella")
    }
    fn state(&self) -> PathBuf {
        self.root.join("var/lib/constella")
    }
    fn unit(&self) -> PathBuf {
        self.root.join("etc/systemd/system/constella.service")
    }
    fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.state().join("constella.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }
    /// `constella --state-dir … ARGS` with the test's binary.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    fn peers(&self) -> Option<Vec<Peer>> {
        let out = self.cli(&["peers", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
    fn status(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
    fn init(&self, priority: u32) -> Output {
        let addr = self.addr();
        let priority = priority.to_string();
        install_sh(
            &[
                "init",
                "--server-name",
                &self.name,
                "--public-addr",
                &addr,
                "--listen",
                &addr,
                "--owner",
                "@owner_test",
                "--priority",
                &priority,
                "--binary",
                BIN,
                "--prefix",
                self.prefix(),
            ],
            &[],
        )
    }
    fn join(&self, link: &str) -> Output {
        let addr = self.addr();
        install_sh(
            &[
                "join",
                "--server-name",
                &self.name,
                "--join",
                link,
                "--public-addr",
                &addr,
                "--listen",
                &addr,
                "--binary",
                BIN,
                "--prefix",
                self.prefix(),
            ],
            &[],
        )
    }
    fn invite(&self) -> String {
        let out = self.cli(&["invite", "--ttl", "5m"]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
    fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(dir) = fs::read_dir(self.state().join("logs")) {
            let mut paths: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
            paths.sort();
            for path in paths {
                all += &format!("--- {}\n", path.display());
                all += &fs::read_to_string(path).unwrap_or_default();
            }
        }
        all
    }
}

/// Whether a process exists and has not exited (zombies count as exited).
fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Installed nodes of one test; detached daemons are killed even if the test fails.
struct Fleet {
    _dir: tempfile::TempDir,
    nodes: Vec<Installed>,
}

impl Fleet {
    fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes = names
            .iter()
            .map(|n| Installed::new(dir.path(), n))
            .collect();
        Self { _dir: dir, nodes }
    }
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("==== {}\n{}", n.name, n.logs()))
            .collect()
    }
    /// `init` on the first node, `join` with an invite of the first on the others.
    fn install_all(&self, priorities: &[u32]) {
        let out = self.nodes[0].init(priorities[0]);
        assert!(out.status.success(), "{}", text(&out));
        for node in &self.nodes[1..] {
            let out = node.join(&self.nodes[0].invite());
            assert!(out.status.success(), "{}", text(&out));
        }
    }
    /// Waits until every node sees every node alive.
    fn wait_all_alive(&self) {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        for node in &self.nodes {
            wait_for(
                Duration::from_secs(20),
                &format!("{} to see {names:?} alive", node.name),
                || {
                    let peers = node.peers()?;
                    (peers.len() == names.len()
                        && peers.iter().all(|p| p.status == "alive")
                        && names.iter().all(|n| peers.iter().any(|p| p.name == *n)))
                    .then_some(())
                },
            );
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(pid) = node.pid().filter(|pid| process_alive(*pid)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_init_and_join_form_a_network_and_uninstall_keeps_the_state() {
    let fleet = Fleet::new(&["alpha", "bravo"]);
    let (alpha, bravo) = (&fleet.nodes[0], &fleet.nodes[1]);

    let out = alpha.init(10);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemd") || stdout.contains("detached"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invite --ttl 15m"),
        "prints the invite command: {stdout}"
    );
    assert!(
        stdout.contains("alpha, leader — Хост"),
        "prints the status: {stdout}"
    );
    assert!(
        !stdout.contains("start the node with `constella run`"),
        "{stdout}"
    );
    assert_eq!(mode(&alpha.bin()), 0o755);
    assert_eq!(mode(&alpha.state()), 0o700);
    for file in ["network_state.json", "node.key"] {
        assert_eq!(mode(&alpha.state().join(file)), 0o600, "{file}");
    }
    let unit = fs::read_to_string(alpha.unit()).unwrap();
    for line in [
        "Restart=always",
        "AmbientCapabilities=CAP_SYS_BOOT",
        "CapabilityBoundingSet=CAP_SYS_BOOT",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "KillSignal=SIGTERM",
        "LimitNOFILE=65536",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line}:\n{unit}"
        );
    }
    assert!(unit.contains(&format!("ReadWritePaths={}", alpha.state().display())));
    assert!(unit.contains(&format!("ExecStart={} run", alpha.bin().display())));

    let out = bravo.join(&alpha.invite());
    assert!(out.status.success(), "{}", text(&out));
    fleet.wait_all_alive();
    for node in &fleet.nodes {
        let peers = node.peers().unwrap();
        assert_eq!(
            peers
                .iter()
                .filter(|p| p.leader)
                .map(|p| &p.name)
                .collect::<Vec<_>>(),
            ["alpha"],
            "{peers:?}"
        );
    }
    // Logs went to the rotated files in the state directory, not to a terminal.
    let log_dir = alpha.state().join("logs");
    assert_eq!(mode(&log_dir), 0o700);
    wait_for(Duration::from_secs(10), "alpha's log to show bravo", || {
        alpha
            .logs()
            .contains("member alive member=bravo")
            .then_some(())
    });

    // Re-running init keeps the existing network and restarts the node on it.
    let network = alpha.status().unwrap()["network_id"].clone();
    let out = alpha.init(10);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keeping it"),
        "{}",
        text(&out)
    );
    assert_eq!(alpha.status().unwrap()["network_id"], network);
    fleet.wait_all_alive();

    // Uninstall bravo: service and binary gone, process stopped (with a goodbye), state kept.
    let bravo_pid = bravo.pid().expect("bravo's pid file");
    let out = install_sh(&["uninstall", "--prefix", bravo.prefix()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!bravo.bin().exists());
    assert!(!bravo.unit().exists());
    assert!(!process_alive(bravo_pid), "bravo still runs");
    assert!(bravo.state().join("network_state.json").exists());
    assert!(bravo.state().join("node.key").exists());
    wait_for(Duration::from_secs(10), "bravo offline on alpha", || {
        alpha
            .peers()?
            .iter()
            .any(|p| p.name == "bravo" && p.status == "offline")
            .then_some(())
    });
    assert!(
        alpha
            .logs()
            .lines()
            .any(|l| l.contains("member offline member=bravo") && l.contains("reason=Goodbye")),
        "{}",
        fleet.logs()
    );

    // --purge also deletes the state.
    let out = install_sh(&["uninstall", "--purge", "--prefix", alpha.prefix()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!alpha.state().exists());
    assert!(!alpha.bin().exists());
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        // CI installs it (.ci/run); anywhere else say so and skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/usr/bin/systemd-analyze is missing under CI=true: .ci/run must install systemd"
        );
        eprintln!("SKIPPED: /usr/bin/systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let fleet = Fleet::new(&["alpha"]);
    let alpha = &fleet.nodes[0];
    let out = alpha.init(10);
    assert!(out.status.success(), "{}", text(&out));
    // --man=no: containers have no man pages for the Documentation= check.
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(alpha.unit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(&alpha.unit().display().to_string()),
        "warnings about the unit: {stderr}"
    );
    // And it does catch a broken unit (so the check above means something).
    let broken = alpha.root.join("broken.service");
    let unit = fs::read_to_string(alpha.unit()).unwrap();
    fs::write(&broken, unit.replace("Restart=always", "Restart=sometimes")).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.service:"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_arguments_print_usage_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root_str = root.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&[], "missing command"),
        (&["frobnicate"], "unknown command 'frobnicate'"),
        (
            &[
                "init",
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1:4747",
            ],
            "missing --owner",
        ),
        (
            &[
                "join",
                "--server-name",
                "echo-02",
                "--join",
                "https://example.org/?token=x",
            ],
            "malformed join link",
        ),
        (
            &[
                "join",
                "--server-name",
                "echo-02",
                "--join",
                "join://10.0.0.1:4747?token=abc",
            ],
            "malformed join link",
        ),
        (
            &[
                "init",
                "--server-name",
                "Delta_01",
                "--public-addr",
                "127.0.0.1:4747",
                "--owner",
                "@owner_test",
            ],
            "--server-name must be",
        ),
        (
            &[
                "init",
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1",
                "--owner",
                "@owner_test",
            ],
            "--public-addr must be HOST:PORT",
        ),
        (
            &[
                "init",
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1:4747",
                "--owner",
                "@owner_test",
                "--bogus",
            ],
            "unknown option '--bogus'",
        ),
        (&["uninstall", "--owner", "@owner_test"], "unknown option"),
    ];
    for (args, message) in cases {
        let out = install_sh(args, &[("CONSTELLA_ROOT", root_str)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage:"), "{args:?}: {stderr}");
        assert!(!root.exists(), "{args:?} touched {root_str}");
    }
    let out = install_sh(&["--help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("install.sh join"));
}

#[test]
fn shellcheck_passes_on_every_script() {
    let Ok(version) = Command::new("shellcheck").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "shellcheck is missing in CI: apt-get install -y shellcheck"
        );
        eprintln!("SKIPPED: shellcheck is not installed (apt-get install -y shellcheck)");
        return;
    };
    assert!(version.status.success());
    let mut scripts: Vec<PathBuf> = fs::read_dir(SCRIPTS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 2, "{scripts:?}");
    let out = Command::new("shellcheck").args(&scripts).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// One sample of every node's `status --json`.
fn agreed_leader(nodes: &[Installed]) -> Option<String> {
    sample(nodes).0
}

/// One sample: the agreed leader's node id, if any, and what each node said (for the report).
fn sample(nodes: &[Installed]) -> (Option<String>, String) {
    let answers: Vec<(&str, Option<serde_json::Value>)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.status()))
        .collect();
    let said = answers
        .iter()
        .map(|(name, status)| match status {
            Some(s) => format!("{name}→{}", s["leader"]["name"].as_str().unwrap_or("?")),
            None => format!("{name}→(down)"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let statuses: Vec<serde_json::Value> = answers.into_iter().filter_map(|(_, s)| s).collect();
    (judge(&statuses), said)
}

fn judge(statuses: &[serde_json::Value]) -> Option<String> {
    let leader = statuses.first()?["leader"]["node_id"].as_str()?.to_owned();
    let all_agree = statuses
        .iter()
        .all(|s| s["leader"]["node_id"].as_str() == Some(leader.as_str()));
    // The named leader must itself be up and know it leads.
    let leader_up = statuses
        .iter()
        .any(|s| s["node_id"].as_str() == Some(leader.as_str()) && s["is_leader"] == true);
    (all_agree && leader_up).then_some(leader)
}

#[test]
fn rolling_restart_of_three_nodes_keeps_a_leader() {
    let fleet = Arc::new(Fleet::new(&["alpha", "bravo", "charlie"]));
    fleet.install_all(&[1, 100, 100]);
    fleet.wait_all_alive();
    let incarnations: Vec<u64> = fleet
        .nodes
        .iter()
        .map(|n| n.status().unwrap()["incarnation"].as_u64().unwrap())
        .collect();

    // Sample every 100 ms while the restart runs.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (fleet, done) = (Arc::clone(&fleet), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut samples = 0u32;
            let mut leaderless_samples = 0u32;
            let mut longest = Duration::ZERO;
            let mut since: Option<Instant> = None;
            let (mut stretch, mut worst) = (Vec::new(), Vec::new());
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                let at = Instant::now();
                let (leader, said) = sample(&fleet.nodes);
                let agreed = leader.is_some();
                samples += 1;
                match (agreed, since) {
                    (false, None) => since = Some(at),
                    (true, Some(from)) => {
                        if at - from > longest {
                            longest = at - from;
                            worst = std::mem::take(&mut stretch);
                        }
                        stretch.clear();
                        since = None;
                    }
                    _ => {}
                }
                if !agreed {
                    leaderless_samples += 1;
                    stretch.push(format!("{:>6} ms: {said}", start.elapsed().as_millis()));
                }
                std::thread::sleep(Duration::from_millis(100).saturating_sub(at.elapsed()));
            }
            if let Some(from) = since
                && from.elapsed() > longest
            {
                longest = from.elapsed();
                worst = stretch;
            }
            (samples, leaderless_samples, longest, start.elapsed(), worst)
        })
    };

    let first = &fleet.nodes[0];
    let ctl = format!(
        "{BIN} --state-dir {}/{{name}}/var/lib/constella",
        first.root.parent().unwrap().display()
    );
    let restart = format!(
        "bash {} restart --prefix {}/{{name}}",
        script("install.sh"),
        first.root.parent().unwrap().display()
    );
    let out = Command::new(BIN)
        .arg("--state-dir")
        .arg(first.state())
        .args([
            "rolling-restart",
            "--ctl",
            &ctl,
            "--restart-cmd",
            &restart,
            "--timeout",
            "60",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    done.store(true, Ordering::SeqCst);
    let (samples, leaderless, longest, elapsed, worst) = sampler.join().unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), fleet.logs());
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    println!(
        "BENCH rolling restart of 3 nodes: {:.1} s; longest stretch without an agreed leader: {} ms \
         ({leaderless} of {samples} samples of `status --json` on every node, one sample every ~{} ms)",
        elapsed.as_secs_f64(),
        longest.as_millis(),
        elapsed.as_millis() / u128::from(samples.max(1)),
    );
    if !worst.is_empty() {
        println!("BENCH the longest stretch, what each node named as leader:");
        for line in &worst {
            println!("BENCH   {line}");
        }
    }
    assert!(stdout.contains("Rolling restart done: 3 nodes"), "{stdout}");
    // The leader went last.
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("] restarting ").map(|(_, name)| name))
        .collect();
    assert_eq!(order.last(), Some(&"alpha"), "{stdout}");
    assert_eq!(order.len(), 3, "{stdout}");

    // Every node runs a new process and is alive everywhere, with one agreed leader.
    fleet.wait_all_alive();
    for (node, before) in fleet.nodes.iter().zip(incarnations) {
        let after = node.status().unwrap()["incarnation"].as_u64().unwrap();
        assert!(after > before, "{} was not restarted", node.name);
    }
    assert_eq!(
        wait_for(Duration::from_secs(10), "an agreed leader", || {
            agreed_leader(&fleet.nodes)
        }),
        fleet.nodes[0].status().unwrap()["node_id"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn rolling_restart_refuses_while_a_node_is_offline_and_restarts_nothing() {
    let fleet = Fleet::new(&["alpha", "bravo"]);
    fleet.install_all(&[1, 100]);
    fleet.wait_all_alive();
    // A dry run prints the plan, the leader last, and restarts nothing.
    let alpha = &fleet.nodes[0];
    let before = alpha.status().unwrap()["incarnation"].clone();
    let out = alpha.cli(&[
        "rolling-restart",
        "--dry-run",
        "--restart-cmd",
        "echo restart {name} at {addr}",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    let alpha_line = plan
        .find("alpha (leader): echo restart alpha at 127.0.0.1:")
        .unwrap();
    let bravo_line = plan
        .find("bravo: echo restart bravo at 127.0.0.1:")
        .unwrap();
    assert!(bravo_line < alpha_line, "{plan}");
    assert!(plan.contains("Dry run: nothing was restarted."), "{plan}");
    assert_eq!(alpha.status().unwrap()["incarnation"], before);

    let out = install_sh(&["uninstall", "--prefix", fleet.nodes[1].prefix()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(Duration::from_secs(10), "bravo offline", || {
        alpha
            .peers()?
            .iter()
            .any(|p| p.name == "bravo" && p.status == "offline")
            .then_some(())
    });
    let incarnation = alpha.status().unwrap()["incarnation"].clone();
    let out = alpha.cli(&[
        "rolling-restart",
        "--restart-cmd",
        "false",
        "--ctl",
        "false",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bravo offline"), "{stderr}");
    assert_eq!(alpha.status().unwrap()["incarnation"], incarnation);
}
