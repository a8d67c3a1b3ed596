//! Hardening against accidents and outsiders, with real `constella` processes: descriptor
//! exhaustion, connection floods, directories that are not ours, a second daemon, stale
//! temporary files.

mod common;
#[path = "../benches/support/mod.rs"]
mod support;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Node, closed_by_remote, require_tool, wait_for};

/// Lines of `text` that contain `needle`.
fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn out_of_descriptors_the_control_socket_pauses_and_logs_once() {
    if !require_tool("prlimit", "apt-get install -y util-linux") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(100);
    // 64 descriptors: a few dozen idle control connections exhaust them.
    node.start_with(&["prlimit", "--nofile=64:64"], &[]);
    let socket = node.dir.join("control.sock");
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(UnixStream::connect(&socket).expect("connect to the control socket"));
    }
    wait_for(
        Duration::from_secs(10),
        "an accept failure in the log",
        || (count_lines(&node.log_text(), "control socket accept failed") > 0).then_some(()),
    );
    // Out of descriptors for 2 s: the loop pauses instead of spinning and logs once.
    let cpu_before = support::cpu_ticks(node.pid());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (support::cpu_ticks(node.pid()) - cpu_before) as f64 / 100.0;
    let cpu_share = cpu / started.elapsed().as_secs_f64();
    let log = node.log_text();
    assert_eq!(
        count_lines(&log, "control socket accept failed"),
        1,
        "one line per episode:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert!(
        cpu_share < 0.2,
        "the daemon used {:.0} % of a core while out of descriptors",
        cpu_share * 100.0
    );

    // Descriptors come back (one by one, so accepts may fail again for a moment): the daemon
    // answers again, and the episode ends with one summary once accepts keep working.
    drop(held);
    wait_for(Duration::from_secs(15), "status to answer again", || {
        node.cli(&["status"]).status.success().then_some(())
    });
    wait_for(Duration::from_secs(10), "the summary line", || {
        (count_lines(&node.log_text(), "control socket accepts connections again") > 0)
            .then_some(())
    });
    let log = node.log_text();
    assert_eq!(
        count_lines(&log, "control socket accepts connections again"),
        1,
        "{log}"
    );
    assert_eq!(
        count_lines(&log, "control socket accept failed"),
        1,
        "{log}"
    );
}

#[test]
fn a_flood_of_half_open_connections_is_bounded() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(100);
    node.start();
    // 300 TCP connections that never start the handshake: each would wait 10 s for its
    // upgrade. Beyond the pending-incoming limit (128) the node closes them at once.
    let flood: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(node.addr()).expect("connect"))
        .collect();
    let started = Instant::now();
    let mut closed = 0;
    for stream in &flood {
        stream.set_nonblocking(true).unwrap();
    }
    while started.elapsed() < Duration::from_secs(3) {
        closed = flood.iter().filter(|s| closed_by_remote(s)).count();
        if closed >= 150 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        closed >= 150,
        "only {closed} of 300 half-open connections were closed within 3 s"
    );
    assert!(node.cli(&["status"]).status.success());
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn directories_we_did_not_create_are_never_chmodded_and_unsafe_ones_are_refused() {
    let root = tempfile::tempdir().unwrap();

    // An existing state directory of ours is used as it is, not made 0700.
    let mut delta = Node::new(root.path(), "delta-01");
    std::fs::create_dir(&delta.dir).unwrap();
    set_mode(&delta.dir, 0o750);
    delta.init(100);
    assert_eq!(mode(&delta.dir), 0o750);

    // A world-writable one is refused with one line, and nothing is written in it.
    let echo = Node::new(root.path(), "echo-02");
    std::fs::create_dir(&echo.dir).unwrap();
    set_mode(&echo.dir, 0o777);
    let out = echo.cli_owned(&echo.init_command(100));
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("writable by group or others"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "{error}");
    assert_eq!(mode(&echo.dir), 0o777);
    assert_eq!(std::fs::read_dir(&echo.dir).unwrap().count(), 0);

    // One owned by another user is refused (as root: a directory given to nobody).
    if common::is_root() {
        let fox = Node::new(root.path(), "fox-03");
        std::fs::create_dir(&fox.dir).unwrap();
        set_mode(&fox.dir, 0o700);
        std::os::unix::fs::chown(&fox.dir, Some(65534), Some(65534)).unwrap();
        let out = fox.cli_owned(&fox.init_command(100));
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("owned by uid 65534"),
            "{}",
            stderr(&out)
        );
        assert_eq!(std::fs::read_dir(&fox.dir).unwrap().count(), 0);
    } else {
        eprintln!("not root: the foreign-owner case is covered by the unit test only");
    }

    // `run --log-dir` with a world-writable directory: refused, left as it is.
    let unsafe_logs = root.path().join("unsafe-logs");
    std::fs::create_dir(&unsafe_logs).unwrap();
    set_mode(&unsafe_logs, 0o777);
    let out = delta.cli(&["run", "--log-dir", unsafe_logs.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&unsafe_logs), 0o777);

    // `run --log-dir` through a symlink to a shared 0755 directory (think /var/log): the
    // logs are written there and its mode stays.
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o755);
    let link = root.path().join("logs");
    std::os::unix::fs::symlink(&shared, &link).unwrap();
    delta.run_args = vec!["--log-dir".into(), link.to_str().unwrap().into()];
    delta.start();
    assert_eq!(mode(&shared), 0o755);
    assert!(
        std::fs::read_dir(&shared).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".log"))
    );
}

#[test]
fn a_join_into_an_unusable_directory_fails_before_the_token_is_spent() {
    let root = tempfile::tempdir().unwrap();
    let mut seed = Node::new(root.path(), "delta-01");
    seed.init(100);
    seed.start();
    let link = seed.invite("5m");
    let echo = Node::new(root.path(), "echo-02");
    std::fs::create_dir(&echo.dir).unwrap();
    set_mode(&echo.dir, 0o777);
    let out = echo.cli_owned(&echo.join_args(&link, 100));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    // The same link still works from a usable directory.
    let fox = Node::new(root.path(), "fox-03");
    fox.join(&link, 100);
}

#[test]
fn a_second_run_is_refused_before_it_writes_anything() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(100);
    node.start();
    let incarnation = |node: &Node| node.state_json().unwrap()["node"]["incarnation"].clone();
    let before = incarnation(&node);
    let out = node.cli(&["run"]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("another constella process"), "{error}");
    assert!(error.contains(&format!("pid {}", node.pid())), "{error}");
    assert_eq!(
        incarnation(&node),
        before,
        "the refused run changed the state file"
    );
    // `init` into the same directory is refused as well, and the daemon is unharmed.
    let out = node.cli_owned(&node.init_command(100));
    assert!(!out.status.success());
    assert!(node.is_running());
    assert!(node.cli(&["status"]).status.success());
}

#[test]
fn stale_temporary_files_are_removed_at_start() {
    use std::os::unix::fs::OpenOptionsExt;
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "delta-01");
    node.init(100);
    // What a kill -9 in the middle of a save leaves: a 0600 copy of the state, secret and all.
    let stale = node.dir.join("network_state.tmp.999999");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&stale)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        &std::fs::read(node.dir.join("network_state.json")).unwrap(),
    )
    .unwrap();
    drop(file);
    node.start();
    assert!(!stale.exists(), "the stale temporary file is still there");
    assert!(node.log_text().contains("removed a temporary file"));
}

#[test]
fn a_first_node_starts_without_kademlia_warnings() {
    let root = tempfile::tempdir().unwrap();
    let mut delta = Node::new(root.path(), "delta-01");
    delta.init(100);
    delta.start();
    // kad used to try a bootstrap 500 ms after the first listen address, with nobody to ask.
    wait_for(Duration::from_secs(10), "2 s of uptime", || {
        let uptime = delta.status()?["uptime_secs"].as_u64()?;
        (uptime >= 2).then_some(())
    });
    let mut echo = Node::new(root.path(), "echo-02");
    echo.join(&delta.invite("5m"), 100);
    echo.start();
    common::agreed_leader(
        &[&delta, &echo],
        &["delta-01", "echo-02"],
        Duration::from_secs(15),
    );
    for node in [&delta, &echo] {
        let log = node.log_text();
        assert_eq!(count_lines(&log, "libp2p_kad"), 0, "{}:\n{log}", node.name);
    }
}
