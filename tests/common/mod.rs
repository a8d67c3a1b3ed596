//! Test harness: real `constella` processes on 127.0.0.1, each with its own state directory,
//! driven through the real CLI. Waits poll a condition until a deadline, never sleep blindly.

#![allow(dead_code)]

pub mod chat;
pub mod delay_switch;
pub mod docker;
pub mod fake_telegram;
pub mod nat_bed;
pub mod netns;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub const BIN: &str = env!("CARGO_BIN_EXE_constella");

/// The `constella` binary the nodes run: env `CONSTELLA_BIN` if set (a bench built in the dev
/// profile can run a release daemon: `CONSTELLA_BIN=target/release/constella cargo bench
/// --profile dev --bench scale`), else the one cargo built with this test.
pub fn bin() -> String {
    std::env::var("CONSTELLA_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A libp2p swarm of our own in the test (TCP + noise + yamux, 60 s idle timeout): an
/// outsider or a probe that is not a Constella node.
pub fn test_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| behaviour(key))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// A row of `peers --json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub node_id: String,
    pub addr: String,
    pub status: String,
    pub leader: bool,
    /// The PQ4 fingerprint (absent for a node without a card).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A finished process's exit status, stdout and stderr, for an assertion message.
pub fn output_text(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline` naming `what`.
pub fn wait_for<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stand-in `systemctl`, written to `dir/systemctl` (returned): answers `--version`, `show`
/// (every unit loaded and running, with how often it was restarted) and `restart` (counted in
/// `$STANDIN_DIR/UNIT`; a unit named `missing.service` fails as systemd would). A node uses it
/// with env `CONSTELLA_SYSTEMCTL` (the path) and `STANDIN_DIR`.
pub fn systemctl_standin(dir: &Path) -> PathBuf {
    const STANDIN: &str = r#"#!/bin/sh
case "$1" in
  --version) echo "systemd 257 (stand-in)";;
  show) shift; shift; first=1
    for unit in "$@"; do
      [ $first = 1 ] || echo; first=0
      n=$(cat "$STANDIN_DIR/$unit" 2>/dev/null || echo 0)
      printf 'Id=%s\nLoadState=loaded\nActiveState=active\nSubState=running\nDescription=restarted %s times\n' "$unit" "$n"
    done;;
  restart)
    if [ "$2" = missing.service ]; then
      echo "Failed to restart missing.service: Unit missing.service not found." >&2; exit 5
    fi
    n=$(cat "$STANDIN_DIR/$2" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$STANDIN_DIR/$2";;
  *) echo "stand-in: unexpected $*" >&2; exit 1;;
esac
"#;
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("systemctl");
    fs::write(&script, STANDIN).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Whether `tool` can be run here. Missing, the test is skipped with a printed reason, and
/// fails instead when env `CI` is `true`.
pub fn require_tool(tool: &str, install_hint: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing in CI: {install_hint}"
        );
        eprintln!("SKIPPED: {tool} is not installed ({install_hint})");
    }
    found
}

/// Whether the tests run as root (some cases need it, e.g. giving a directory away).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Whether the remote closed `stream` (set non-blocking): EOF or a reset. A silent open
/// connection would block.
pub fn closed_by_remote(stream: &std::net::TcpStream) -> bool {
    match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// One node: a state directory, a port, and maybe a running daemon.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// Extra arguments for `init` (e.g. `--bot-token`).
    pub init_args: Vec<String>,
    /// Extra arguments for `run` (e.g. `--telegram-api-url`).
    pub run_args: Vec<String>,
    /// Extra environment of the daemon.
    pub env: Vec<(String, String)>,
    /// The address it listens on and announces (127.0.0.1 unless in a network namespace).
    pub host: String,
    /// A command the daemon and `join` run through (e.g. `ip netns exec NS`).
    pub prefix: Vec<String>,
}

impl Node {
    pub fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        Self {
            name: name.to_owned(),
            log: root.join(format!("{name}.log")),
            dir,
            port: free_port(),
            child: None,
            init_args: Vec::new(),
            run_args: Vec::new(),
            env: Vec::new(),
            host: "127.0.0.1".to_owned(),
            prefix: Vec::new(),
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Runs a CLI command against this node's state directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run constella")
    }

    /// Runs a CLI command with extra environment and, if given, `input` on stdin.
    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(bin())
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run constella");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Places a fresh identity key in the state directory (used before init/join when a test
    /// needs to know or order the PeerIds).
    pub fn install_key(&self, key: &libp2p::identity::Keypair) {
        fs::create_dir_all(&self.dir).unwrap();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join("node.key"))
            .unwrap();
        std::io::Write::write_all(&mut file, &key.to_protobuf_encoding().unwrap()).unwrap();
    }

    /// The `init` command line of this node (its address, owner `@owner_test`, `init_args`).
    pub fn init_command(&self, priority: u32) -> Vec<String> {
        let addr = self.addr();
        let mut args: Vec<String> = [
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
            &priority.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.init_args.iter().cloned());
        args
    }

    pub fn init(&self, priority: u32) {
        self.ok_owned(&self.init_command(priority));
    }

    /// [`Node::cli`] with owned arguments.
    pub fn cli_owned(&self, args: &[String]) -> Output {
        self.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// [`Node::ok`] with owned arguments.
    pub fn ok_owned(&self, args: &[String]) -> String {
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn join_args(&self, link: &str, priority: u32) -> Vec<String> {
        [
            "join",
            "--server-name",
            &self.name,
            "--join",
            link,
            "--public-addr",
            &self.addr(),
            "--listen",
            &self.addr(),
            "--priority",
            &priority.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn join(&self, link: &str, priority: u32) {
        self.join_with(&self.join_args(link, priority));
    }

    /// Runs `join` with `args` (see [`Node::join_args`]), in the node's namespace if it has one.
    pub fn join_with(&self, args: &[String]) {
        if self.prefix.is_empty() {
            self.ok_owned(args);
            return;
        }
        // In a namespace: the joiner must reach the seed from there.
        let out = Command::new(&self.prefix[0])
            .args(&self.prefix[1..])
            .arg(bin())
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run constella join");
        assert!(
            out.status.success(),
            "{} join: {}",
            self.name,
            output_text(&out)
        );
    }

    /// Runs its bot against `api_url` (a fake Bot API) with `token`, and replaces a reboot by a
    /// command that appends who asked to `<dir>.rebooted`.
    pub fn use_fake_bot_and_reboot_marker(&mut self, token: &str, api_url: String) {
        self.init_args = vec!["--bot-token".into(), token.into()];
        self.run_args = vec!["--telegram-api-url".into(), api_url];
        let marker = self.dir.with_extension("rebooted");
        let command = format!(
            "echo \"$CONSTELLA_REBOOT_REQUESTED_BY\" >> '{}'",
            marker.display()
        );
        self.env = vec![("CONSTELLA_REBOOT_COMMAND".into(), command)];
    }

    pub fn invite(&self, ttl: &str) -> String {
        self.ok(&["invite", "--ttl", ttl]).trim().to_owned()
    }

    /// Starts the daemon and waits until it answers on its control socket.
    pub fn start(&mut self) {
        let prefix = self.prefix.clone();
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        self.start_with(&prefix, &[]);
    }

    /// Like [`Node::start`], with the daemon run through `prefix` (e.g. `setpriv …`) and with
    /// extra environment variables.
    pub fn start_with(&mut self, prefix: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin());
                command
            }
            None => Command::new(bin()),
        };
        let child = command
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("run")
            .args(&self.run_args)
            .env(
                "RUST_LOG",
                std::env::var("CONSTELLA_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            // After the default, so a node's own RUST_LOG wins.
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn constella run");
        self.child = Some(child);
        let name = self.name.clone();
        wait_for(
            Duration::from_secs(10),
            &format!("{name} to answer status"),
            || {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("{name} exited with {status}:\n{}", self.log_text());
                }
                self.cli(&["status"]).status.success().then_some(())
            },
        );
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("not running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        wait_for(
            Duration::from_secs(10),
            "daemon to exit after SIGTERM",
            || child.try_wait().unwrap(),
        )
    }

    /// Waits for the daemon to exit by itself (after `leave`).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("not running");
        wait_for(Duration::from_secs(10), "daemon to exit", || {
            child.try_wait().unwrap()
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// Asks the daemon over its control socket directly (no CLI process): for measurements
    /// whose resolution must be finer than a process spawn.
    pub fn ask_socket(&self, request: &str) -> Option<serde_json::Value> {
        use std::io::{BufRead, Write};
        let mut stream =
            std::os::unix::net::UnixStream::connect(self.dir.join("control.sock")).ok()?;
        stream.write_all(format!("{request}\n").as_bytes()).ok()?;
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }

    /// (leader name, alive count) as this node sees it, straight from its control socket.
    pub fn leader_and_alive(&self) -> Option<(String, usize)> {
        let answer = self.ask_socket(r#"{"command":"peers"}"#)?;
        let peers = answer.get("peers")?.as_array()?;
        let alive = peers.iter().filter(|p| p["status"] == "alive").count();
        let leader = peers.iter().find(|p| p["leader"] == true)?["name"]
            .as_str()?
            .to_owned();
        Some((leader, alive))
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn peers(&self) -> Option<Vec<Peer>> {
        let out = self.cli(&["peers", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn node_id(&self) -> String {
        let state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(self.dir.join("network_state.json")).unwrap())
                .unwrap();
        state["node"]["node_id"].as_str().unwrap().to_owned()
    }

    pub fn state_json(&self) -> Option<serde_json::Value> {
        fs::read_to_string(self.dir.join("network_state.json"))
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The name of the leader `node` sees, if all of `expect_alive` are alive in its view and all
/// of `expect_offline` are offline.
pub fn leader_seen(node: &Node, expect_alive: &[&str], expect_offline: &[&str]) -> Option<String> {
    let peers = node.peers()?;
    let has = |name: &str, status: &str| peers.iter().any(|p| p.name == name && p.status == status);
    if !expect_alive.iter().all(|n| has(n, "alive"))
        || !expect_offline.iter().all(|n| has(n, "offline"))
    {
        return None;
    }
    let leaders: Vec<&Peer> = peers.iter().filter(|p| p.leader).collect();
    (leaders.len() == 1).then(|| leaders[0].name.clone())
}

/// Waits until every node in `nodes` sees all of `alive` alive and they agree on one leader.
pub fn agreed_leader(nodes: &[&Node], alive: &[&str], deadline: Duration) -> String {
    agreed_leader_without(nodes, alive, &[], deadline)
}

/// Like [`agreed_leader`], and every node also sees all of `offline` offline.
pub fn agreed_leader_without(
    nodes: &[&Node],
    alive: &[&str],
    offline: &[&str],
    deadline: Duration,
) -> String {
    wait_for(
        deadline,
        &format!("{alive:?} alive, {offline:?} offline and one agreed leader"),
        || {
            let seen: Vec<Option<String>> = nodes
                .iter()
                .map(|n| leader_seen(n, alive, offline))
                .collect();
            let first = seen.first()?.clone()?;
            seen.iter()
                .all(|s| s.as_deref() == Some(&first))
                .then_some(first)
        },
    )
}

/// Keys sorted by their PeerId bytes (the tie-break of the leader order).
pub fn keys_by_peer_id(n: usize) -> Vec<libp2p::identity::Keypair> {
    let mut keys: Vec<_> = (0..n)
        .map(|_| libp2p::identity::Keypair::generate_ed25519())
        .collect();
    keys.sort_by_key(|k| k.public().to_peer_id().to_bytes());
    keys
}

/// A network of nodes that were init'ed/joined and started, in a temporary directory.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// `priorities[0]` inits the network, the rest join through invites of the first node.
    /// `keys`, if given, are the nodes' identities in the same order.
    pub fn start(
        names: &[&str],
        priorities: &[u32],
        keys: Option<Vec<libp2p::identity::Keypair>>,
    ) -> Self {
        Self::start_with(names, priorities, keys, |_| {})
    }

    /// Like [`Cluster::start`], with `configure` applied to every node before it is set up.
    pub fn start_with(
        names: &[&str],
        priorities: &[u32],
        keys: Option<Vec<libp2p::identity::Keypair>>,
        configure: impl Fn(&mut Node),
    ) -> Self {
        Self::start_reporting(names, priorities, keys, configure, |_, _| {})
    }

    /// Like [`Cluster::start_with`], calling `started(i, took)` once node `i` answers
    /// `status` (`took`: from the start of its join, or of the first node's init).
    pub fn start_reporting(
        names: &[&str],
        priorities: &[u32],
        keys: Option<Vec<libp2p::identity::Keypair>>,
        configure: impl Fn(&mut Node),
        mut started: impl FnMut(usize, Duration),
    ) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = names.iter().map(|n| Node::new(root.path(), n)).collect();
        nodes.iter_mut().for_each(&configure);
        if let Some(keys) = keys {
            for (node, key) in nodes.iter().zip(keys) {
                node.install_key(&key);
            }
        }
        let at = Instant::now();
        nodes[0].init(priorities[0]);
        nodes[0].start();
        started(0, at.elapsed());
        for i in 1..nodes.len() {
            let at = Instant::now();
            let link = nodes[0].invite("5m");
            nodes[i].join(&link, priorities[i]);
            nodes[i].start();
            started(i, at.elapsed());
        }
        Self { root, nodes }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// Runs `f`; if it panics, prints every node's log first (a failed wait says what it
    /// waited for, the logs say why).
    pub fn or_logs<T>(&self, f: impl FnOnce() -> T) -> T {
        or_logs(&self.nodes, f)
    }

    pub fn dump_logs(&self) -> String {
        dump_logs(&self.nodes)
    }
}

/// Runs `f`; if it panics, prints the log of every node of `nodes` first.
pub fn or_logs<T>(nodes: &[Node], f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(panic) => {
            eprintln!("{}", dump_logs(nodes));
            std::panic::resume_unwind(panic)
        }
    }
}

/// Every node's log, each under a `==== name` line.
pub fn dump_logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("==== {}\n{}", n.name, n.log_text()))
        .collect()
}
