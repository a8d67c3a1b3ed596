//! The command line: validation of what operators type, help, file modes, and what happens with
//! no daemon or a corrupt state file.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::Node;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_init_arguments_are_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(root.path(), "delta-01");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--server-name",
                "Delta_01",
                "--public-addr",
                "127.0.0.1:4747",
                "--owner",
                "@Rmgss",
            ],
            "invalid server name",
        ),
        (
            &[
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1:4747",
                "--owner",
                "Rmgss",
            ],
            "invalid owner",
        ),
        (
            &[
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1:4747",
                "--owner",
                "@abc",
            ],
            "invalid owner",
        ),
        (
            &[
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1",
                "--owner",
                "@Rmgss",
            ],
            "invalid address",
        ),
        (
            &[
                "--server-name",
                "delta-01",
                "--public-addr",
                "127.0.0.1:4747",
            ],
            "--owner",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["init"];
        full.extend_from_slice(args);
        let out = node.cli(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!node.dir.exists(), "{args:?} wrote something");
    }
}

#[test]
fn init_writes_private_files_and_the_seed_shape() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(root.path(), "delta-01");
    node.init(7);
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node.dir), 0o700);
    assert_eq!(mode(&node.dir.join("network_state.json")), 0o600);
    assert_eq!(mode(&node.dir.join("node.key")), 0o600);
    let state = node.state_json().unwrap();
    for field in ["network_id", "owner_username", "network_secret", "peers"] {
        assert!(state.get(field).is_some(), "{field} missing: {state}");
    }
    assert_eq!(state["owner_username"], "@owner_test");
    let peer = &state["peers"][0];
    assert_eq!(peer["name"], "delta-01");
    assert_eq!(peer["addr"], node.addr());
    assert_eq!(peer["status"], "alive");
    assert_eq!(state["node"]["priority"], 7);
}

#[test]
fn status_and_peers_without_a_daemon_say_so() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(root.path(), "delta-01");
    node.init(1);
    for command in ["status", "peers", "invite"] {
        let out = node.cli(&[command]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("daemon is not running"),
            "{command}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn commands_on_an_empty_state_dir_say_how_to_start() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(root.path(), "delta-01");
    let out = node.cli(&["run"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run `constella init` or `constella join` first"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_corrupt_state_file_stops_the_node_and_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(root.path(), "delta-01");
    node.init(1);
    let path = node.dir.join("network_state.json");
    fs::write(&path, "{\"network_id\": ").unwrap();
    let out = node.cli(&["run"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("network_state.json is corrupt"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "{\"network_id\": ");
}

#[test]
fn help_answers_for_every_command() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(root.path(), "x");
    let top = String::from_utf8(node.cli(&["--help"]).stdout).unwrap();
    for command in ["init", "join", "run", "status", "peers", "invite", "leave"] {
        assert!(top.contains(command), "{command} missing from --help");
        let out = node.cli(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help");
        assert!(
            String::from_utf8(out.stdout)
                .unwrap()
                .contains("--state-dir"),
            "{command}"
        );
    }
    let invite = String::from_utf8(node.cli(&["invite", "--help"]).stdout).unwrap();
    assert!(invite.contains("at most 24h"));
    let out = node.cli(&["invite", "--ttl", "2d"]);
    assert!(stderr(&out).contains("invalid ttl"), "{}", stderr(&out));
}

#[test]
fn leave_refuses_without_confirmation_when_not_on_a_terminal() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(1);
    node.start();
    let out = node.cli(&["leave"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert!(node.is_running());
    assert!(node.state_json().unwrap().get("network_secret").is_some());
}
