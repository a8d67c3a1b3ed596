//! Helpers for tests that drive `constella chat …` on real nodes: run a chat command with the
//! password on stdin, register an account with a fresh invite, read the mailbox as JSON, and
//! queue raw bytes in a mailbox straight through a node's `pq4.sock`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ciborium::Value as Cbor;
use serde_json::Value;

use super::{Cluster, Node, agreed_leader, keys_by_peer_id, output_text, wait_for};

pub const PASSWORD: &str = "correct horse battery";

/// `constella chat --home HOME --password-stdin ARGS` on `node`, with extra environment.
pub fn chat_env(
    node: &Node,
    home: &Path,
    password: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut all = vec!["chat", "--home", home.to_str().unwrap(), "--password-stdin"];
    all.extend_from_slice(args);
    node.cli_with(&all, env, Some(&format!("{password}\n")))
}

/// A chat command that must succeed; its stdout.
pub fn chat_ok(node: &Node, home: &Path, args: &[&str]) -> String {
    let out = chat_env(node, home, PASSWORD, args, &[]);
    assert!(
        out.status.success(),
        "{} chat {args:?} failed: {}",
        node.name,
        output_text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Registers `name` through `node` with a fresh invite from it.
pub fn register(node: &Node, home: &Path, name: &str) {
    let code = node.ok(&["chat", "invite"]).trim().to_owned();
    let email = format!("{name}@example.org");
    chat_ok(
        node,
        home,
        &[
            "register",
            "--username",
            name,
            "--email",
            &email,
            "--invite",
            &code,
        ],
    );
}

/// `chat read --json` once: the items, and what the client said on stderr.
pub fn read_json(node: &Node, home: &Path) -> (Vec<Value>, String) {
    let out = chat_env(node, home, PASSWORD, &["read", "--json"], &[]);
    assert!(
        out.status.success(),
        "{} chat read failed: {}",
        node.name,
        output_text(&out)
    );
    let items: Vec<Value> = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("read --json is not JSON ({e}): {}", output_text(&out)));
    (items, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Reads until at least `count` items came (or the deadline); all items and all stderr.
pub fn read_until(node: &Node, home: &Path, count: usize) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut said = String::new();
    wait_for(Duration::from_secs(60), "messages to arrive", || {
        let (got, err) = read_json(node, home);
        items.extend(got);
        said.push_str(&err);
        (items.len() >= count).then_some(())
    });
    (items, said)
}

/// Queues `envelope` in `to`'s mailbox as if `from` sent it, straight through `node`'s
/// service; the answer's variant name (`Sent`, `Error`, …).
pub fn raw_send(node: &Node, from: &str, to: &str, envelope: &[u8]) -> String {
    use std::io::{Read, Write};
    let body = Cbor::Map(vec![
        (Cbor::Text("from".into()), Cbor::Text(from.into())),
        (Cbor::Text("to".into()), Cbor::Text(to.into())),
        (
            Cbor::Text("envelope".into()),
            Cbor::Bytes(envelope.to_vec()),
        ),
    ]);
    let request = Cbor::Map(vec![
        (Cbor::Text("v".into()), Cbor::Integer(1.into())),
        (
            Cbor::Text("op".into()),
            Cbor::Map(vec![(Cbor::Text("Send".into()), body)]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&request, &mut bytes).unwrap();
    let mut stream = std::os::unix::net::UnixStream::connect(node.dir.join("pq4.sock")).unwrap();
    stream
        .write_all(&(bytes.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&bytes).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).unwrap();
    match ciborium::from_reader::<Cbor, _>(answer.as_slice()).unwrap() {
        Cbor::Text(t) => t,
        Cbor::Map(m) => m[0].0.as_text().unwrap().to_owned(),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Three nodes (alpha, bravo, charlie, equal priority) that agree on one leader.
pub fn three_nodes() -> Cluster {
    let cluster = Cluster::start(
        &["alpha", "bravo", "charlie"],
        &[100, 100, 100],
        Some(keys_by_peer_id(3)),
    );
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(
        &nodes,
        &["alpha", "bravo", "charlie"],
        Duration::from_secs(60),
    );
    cluster
}

/// The state directory of `name`'s chat device in the cluster's directory.
pub fn device_home(cluster: &Cluster, name: &str) -> PathBuf {
    cluster.root.path().join(format!("{name}-device"))
}

/// A running `constella chat … read --follow --json` (with `args` before `read`, such as
/// `--via ADDR`): each line it prints, as it prints it. Killed when dropped.
pub struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    pub fn start(node: &Node, home: &Path, args: &[&str]) -> Self {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(super::BIN)
            .arg("--state-dir")
            .arg(&node.dir)
            .args(["chat", "--home", home.to_str().unwrap(), "--password-stdin"])
            .args(args)
            .args(["read", "--follow", "--json"])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.as_mut().unwrap(), "{PASSWORD}").unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line printed within `within`; fails the test naming `what` otherwise.
    pub fn next(&self, within: Duration, what: &str) -> String {
        self.lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("{what}: nothing printed ({e})"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
