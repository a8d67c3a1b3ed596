//! Joining by one-time link, and every way a join is refused: the joiner gets one clear line and
//! a non-zero exit, writes nothing, and the seed changes nothing.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BIN, Node, wait_for};

struct Seed {
    _root: tempfile::TempDir,
    node: Node,
    root_path: std::path::PathBuf,
}

fn seed() -> Seed {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "alpha");
    node.init(100);
    node.start();
    Seed {
        root_path: root.path().to_owned(),
        _root: root,
        node,
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

fn replace_param(link: &str, key: &str, value: &str) -> String {
    let (head, query) = link.split_once('?').unwrap();
    let params: Vec<String> = query
        .split('&')
        .map(|p| {
            if p.starts_with(&format!("{key}=")) {
                format!("{key}={value}")
            } else {
                p.to_owned()
            }
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

/// Tries a join that must be refused; checks the joiner wrote nothing. Returns stderr.
fn refused(seed: &Seed, name: &str, link: &str) -> String {
    let mut joiner = Node::new(&seed.root_path, &format!("joiner-{}", common::free_port()));
    joiner.name = name.to_owned();
    let args = joiner.join_args(link, 100);
    let out = joiner.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !out.status.success(),
        "join {name} succeeded but should not have"
    );
    assert!(
        !joiner.dir.join("network_state.json").exists(),
        "a refused join wrote state"
    );
    assert!(
        !joiner.dir.join("node.key").exists(),
        "a refused join wrote a key"
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn member_names(node: &Node) -> Vec<String> {
    node.peers().unwrap().into_iter().map(|p| p.name).collect()
}

fn invites(node: &Node) -> serde_json::Value {
    node.state_json().unwrap()["invites"].clone()
}

#[test]
fn refusals_change_nothing_and_say_why() {
    let seed = seed();
    let link = seed.node.invite("5m");
    let before_invites = invites(&seed.node);

    let unknown = replace_param(&link, "token", "0123456789abcdef0123456789abcdef");
    assert!(refused(&seed, "bravo", &unknown).contains("not known"));

    let wrong_net = replace_param(&link, "net", "ffffffffffffffff");
    assert!(refused(&seed, "bravo", &wrong_net).contains("wrong network id"));

    let impostor = libp2p::PeerId::random().to_base58();
    let err = refused(&seed, "bravo", &replace_param(&link, "peer", &impostor));
    assert!(
        err.contains("not the seed") && err.contains("token was not sent"),
        "{err}"
    );

    let err = refused(&seed, "alpha", &link);
    assert!(err.contains("already taken"), "{err}");

    let dead_port = common::free_port();
    let err = refused(
        &seed,
        "bravo",
        &link.replace(&seed.node.addr(), &format!("127.0.0.1:{dead_port}")),
    );
    assert!(err.contains("cannot reach the seed"), "{err}");

    // None of that consumed the token or changed the member list…
    assert_eq!(invites(&seed.node), before_invites);
    assert_eq!(member_names(&seed.node), ["alpha"]);
    // …so the real join still works, once.
    let bravo = Node::new(&seed.root_path, "bravo");
    bravo.join(&link, 100);
    assert!(bravo.dir.join("network_state.json").exists());
    let err = refused(&seed, "charlie", &link);
    assert!(err.contains("already used"), "{err}");
    wait_for(Duration::from_secs(5), "bravo listed on the seed", || {
        (member_names(&seed.node) == ["alpha", "bravo"]).then_some(())
    });
}

#[test]
fn an_expired_token_is_refused() {
    let seed = seed();
    let link = seed.node.invite("1s");
    let expires_at = invites(&seed.node)[0]["expires_at"].as_u64().unwrap();
    wait_for(
        Duration::from_secs(5),
        "the invite's expiry time to pass",
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            (now > expires_at).then_some(())
        },
    );
    let err = refused(&seed, "bravo", &link);
    assert!(err.contains("expired"), "{err}");
    assert_eq!(member_names(&seed.node), ["alpha"]);
    assert!(invites(&seed.node)[0]["used_at"].is_null());
}

#[test]
fn malformed_links_are_refused_before_any_network_use() {
    let root = tempfile::tempdir().unwrap();
    let joiner = Node::new(root.path(), "bravo");
    for link in [
        "http://x",
        "join://1.2.3.4:4747?net=a&token=b",
        "join://1.2.3.4?net=a&token=b&peer=x",
    ] {
        let out = joiner.cli(&["join", "--server-name", "bravo", "--join", link]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("malformed join link"), "{err}");
        assert!(!joiner.dir.exists(), "nothing may be written");
    }
}

#[test]
fn a_silent_seed_times_out_within_ten_seconds() {
    // Accepts TCP but never speaks: the noise handshake cannot finish.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let root = tempfile::tempdir().unwrap();
    let joiner = Node::new(root.path(), "bravo");
    let link = format!(
        "join://127.0.0.1:{port}?net=abcd&token=abcd&ttl=15m&peer={}",
        libp2p::PeerId::random()
    );
    let started = Instant::now();
    let out = joiner.cli(&["join", "--server-name", "bravo", "--join", &link]);
    let took = started.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("did not answer") || err.contains("cannot reach"),
        "{err}"
    );
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(!joiner.dir.exists());
    drop(held);
}

#[test]
fn two_joiners_racing_with_one_token_exactly_one_gets_in() {
    let seed = seed();
    let link = seed.node.invite("5m");
    let joiners: Vec<Node> = ["bravo", "charlie"]
        .iter()
        .map(|n| Node::new(&seed.root_path, n))
        .collect();
    let children: Vec<_> = joiners
        .iter()
        .map(|j| {
            Command::new(BIN)
                .arg("--state-dir")
                .arg(&j.dir)
                .args(j.join_args(&link, 100))
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        winners,
        1,
        "{:?}",
        outputs.iter().map(stderr).collect::<Vec<_>>()
    );
    let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
    assert!(stderr(loser).contains("already used"), "{}", stderr(loser));
    let with_state = joiners
        .iter()
        .filter(|j| j.dir.join("network_state.json").exists())
        .count();
    assert_eq!(with_state, 1);
    wait_for(
        Duration::from_secs(5),
        "exactly two members on the seed",
        || (member_names(&seed.node).len() == 2).then_some(()),
    );
}

#[test]
fn a_state_dir_that_already_holds_a_network_is_not_overwritten() {
    let seed = seed();
    let link = seed.node.invite("5m");
    let out = seed.node.cli(
        &seed
            .node
            .join_args(&link, 1)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds the state of network"),
        "{}",
        stderr(&out)
    );
    let out = seed.node.cli(&[
        "init",
        "--server-name",
        "x",
        "--public-addr",
        "127.0.0.1:1",
        "--owner",
        "@someone",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );
    assert_eq!(member_names(&seed.node), ["alpha"]);
}
