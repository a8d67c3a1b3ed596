//! Real hosts: three Docker containers with systemd as PID 1 (the image of
//! scripts/test-image.sh, nothing pulled), on their own Docker network, each a stand-in for a
//! VPS. The README's install commands run in them for real (`install.sh init` on the first,
//! `install.sh join` with a link on the others), and then: the unit is active and logs to the
//! journal, the nodes agree on one Хост, re-running install.sh (an upgrade) keeps the node's
//! state, the daemon reaches the Docker engine from inside the unit's confinement, a `systemctl
//! restart` of the leader fails over and back, `constella reboot` and the bot's reboot button
//! (the leader's bot, talking to a fake Bot API on the host machine) each reboot exactly the
//! container they name (Docker's restart policy brings it back, the unit starts at boot),
//! `constella rolling-restart` restarts the three over ssh with its default commands, and
//! `install.sh uninstall` leaves no unit behind. A second test has a node watch a real unit on
//! another host, see it fail, and restart it over RPC.
//!
//! The binary is the debug build cargo made for this test (`CARGO_BIN_EXE_constella`), with its
//! debug info stripped on the way in: a release build would add minutes of CI for nothing the
//! test looks at, since what is under test is the install, the unit and systemd.
//!
//! Skipped with a printed reason when no Docker engine answers; under CI=true that fails.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::{Cleanup, docker, docker_ok, engine_answers, test_image, unique_prefix};
use common::fake_telegram::{FakeTelegram, TgUser};
use common::{BIN, Peer, output_text as text, wait_for};

/// Where the staged repository (install.sh and the binary) appears in each container.
const REPO_IN_HOST: &str = "/root/constella";
const PORT: u16 = 4747;
/// A token in @BotFather's format; the fake Bot API accepts only this one.
const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
const OWNER_ID: u64 = 5001;

/// One container, one "VPS".
struct Host {
    /// The server name, also its host name on the test network.
    name: String,
    /// The Docker container name.
    container: String,
}

impl Host {
    fn exec(&self, args: &[&str]) -> Output {
        self.exec_env(&[], args)
    }

    /// `docker exec` with `env` (`NAME=value`) set for the command.
    fn exec_env(&self, env: &[&str], args: &[&str]) -> Output {
        let mut all = vec!["exec"];
        for var in env {
            all.extend_from_slice(&["--env", var]);
        }
        all.push(self.container.as_str());
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Runs a command in the container that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{}: {args:?} failed: {}",
            self.name,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `install.sh ARGS` as the README has it, from the staged clone.
    fn install_sh(&self, env: &[&str], args: &[&str]) -> Output {
        let script = format!("{REPO_IN_HOST}/scripts/install.sh");
        let mut all = vec![script.as_str()];
        all.extend_from_slice(args);
        self.exec_env(env, &all)
    }

    /// `install.sh init` as the README has it, naming this host; `extra` args after.
    fn install_init(&self, env: &[&str], extra: &[&str]) -> Output {
        let public = format!("{}:{PORT}", self.name);
        let binary = format!("{REPO_IN_HOST}/constella");
        let mut args = vec![
            "init",
            "--server-name",
            &self.name,
            "--public-addr",
            &public,
            "--owner",
            "@owner_test",
            "--binary",
            &binary,
        ];
        args.extend_from_slice(extra);
        self.install_sh(env, &args)
    }

    /// `install.sh join` with `link`, naming this host.
    fn install_join(&self, link: &str) -> Output {
        let public = format!("{}:{PORT}", self.name);
        let binary = format!("{REPO_IN_HOST}/constella");
        self.install_sh(
            &[],
            &[
                "join",
                "--server-name",
                &self.name,
                "--join",
                link,
                "--public-addr",
                &public,
                "--binary",
                &binary,
            ],
        )
    }

    fn peers(&self) -> Option<Vec<Peer>> {
        let out = self.exec(&["constella", "peers", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = self.exec(&["constella", "status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn incarnation(&self) -> u64 {
        self.status().expect("status")["incarnation"]
            .as_u64()
            .unwrap()
    }

    fn leader_changes(&self) -> u64 {
        self.status().expect("status")["leader_changes"]
            .as_u64()
            .unwrap()
    }

    /// Docker's record of the container's start: (StartedAt, RestartCount).
    fn started(&self) -> (String, u64) {
        let out = docker_ok(&[
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.RestartCount}}",
            &self.container,
        ]);
        let (at, count) = out.split_once(' ').unwrap();
        (at.to_owned(), count.parse().unwrap())
    }

    /// systemd's overall state once booting is over (`running`, `degraded`, …); `None` while
    /// it boots, or before its bus answers ("offline").
    fn system_state(&self) -> Option<String> {
        let out = self.exec(&["systemctl", "is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let booting = ["", "offline", "initializing", "starting", "stopping"];
        (!booting.contains(&state.as_str())).then_some(state)
    }

    fn journal(&self) -> String {
        self.journal_where(&[])
    }

    /// The messages of the unit's journal entries whose fields match all of `matches`
    /// (`FIELD=value`, as `journalctl` takes them).
    fn journal_where(&self, matches: &[&str]) -> String {
        let mut args = vec!["journalctl", "-u", "constella", "--no-pager", "-o", "cat"];
        args.extend_from_slice(matches);
        let out = self.exec(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The three hosts and their network; removed on drop, after printing every node's journal if
/// the test failed.
struct Hosts {
    hosts: Vec<Host>,
    /// The host machine's address on the test network (where the fake Bot API listens).
    gateway: String,
    _staging: tempfile::TempDir,
    cleanup: Cleanup,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for host in &self.hosts {
                eprintln!(
                    "==== {} ({}): journalctl -u constella\n{}",
                    host.name,
                    host.container,
                    host.journal()
                );
            }
        }
        let _ = &self.cleanup;
    }
}

impl Hosts {
    /// Starts `names` as systemd containers on a new network and waits until each has booted.
    fn boot(names: &[&str]) -> Self {
        let image = test_image();
        let prefix = unique_prefix("host");
        let mut cleanup = Cleanup::default();
        let network = format!("{prefix}-net");
        docker_ok(&["network", "create", &network]);
        cleanup.networks.push(network.clone());
        let gateway = docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            &network,
        ]);

        // The "clone of the repository" the README's commands run from: install.sh, and the
        // binary install.sh is told to use (--binary).
        let staging = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(staging.path().join("scripts")).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"),
            staging.path().join("scripts/install.sh"),
        )
        .unwrap();
        stage_binary(&staging.path().join("constella"));
        let mount = format!("{}:{REPO_IN_HOST}:ro", staging.path().display());

        let mut hosts = Vec::new();
        for name in names {
            let container = format!("{prefix}-{name}");
            cleanup.containers.push(container.clone());
            docker_ok(&[
                "run",
                "--detach",
                "--name",
                &container,
                "--hostname",
                name,
                "--network",
                &network,
                "--network-alias",
                name,
                // What systemd as PID 1 needs: its own cgroup namespace, a tmpfs /run, and
                // CAP_SYS_ADMIN for its mounts (and the unit's ProtectSystem/PrivateTmp).
                // CAP_SYS_BOOT because a VPS's root may reboot it.
                "--cgroupns=private",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "--cap-add",
                "SYS_ADMIN",
                "--cap-add",
                "SYS_BOOT",
                "--stop-signal",
                "SIGRTMIN+3",
                // A reboot ends the container; Docker starts it again, as a VPS comes back.
                "--restart",
                "unless-stopped",
                "--volume",
                &mount,
                // The machine's Docker engine, as a VPS's own: `constella docker` from inside
                // the confined unit.
                "--volume",
                "/var/run/docker.sock:/var/run/docker.sock",
                &image,
            ]);
            hosts.push(Host {
                name: (*name).to_owned(),
                container,
            });
        }
        let hosts = Self {
            hosts,
            gateway,
            _staging: staging,
            cleanup,
        };
        for host in &hosts.hosts {
            hosts.wait_booted(host);
        }
        hosts
    }

    fn wait_booted(&self, host: &Host) {
        let state = wait_for(
            Duration::from_secs(60),
            &format!("systemd on {} to finish booting", host.name),
            || host.system_state(),
        );
        assert_eq!(
            state,
            "running",
            "{}: failed units:\n{}",
            host.name,
            host.ok(&["systemctl", "--failed", "--no-legend"])
        );
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    /// The leader every host in `hosts` names, once each sees all of `alive` alive and exactly
    /// one leader, and they agree.
    fn agreed_leader(&self, hosts: &[&Host], alive: &[&str], deadline: Duration) -> String {
        wait_for(
            deadline,
            &format!("{alive:?} alive with one agreed leader"),
            || {
                let mut leaders = Vec::new();
                for host in hosts {
                    let peers = host.peers()?;
                    let all_alive = alive
                        .iter()
                        .all(|n| peers.iter().any(|p| p.name == *n && p.status == "alive"));
                    let marked: Vec<&Peer> = peers.iter().filter(|p| p.leader).collect();
                    if !all_alive || marked.len() != 1 {
                        return None;
                    }
                    leaders.push(marked[0].name.clone());
                }
                let first = leaders.first()?.clone();
                leaders.iter().all(|l| *l == first).then_some(first)
            },
        )
    }

    fn all(&self) -> Vec<&Host> {
        self.hosts.iter().collect()
    }

    /// Every container's (StartedAt, RestartCount), to tell which one rebooted.
    fn starts(&self) -> Vec<(String, u64)> {
        self.hosts.iter().map(Host::started).collect()
    }

    /// After a reboot of `target` was asked for at `asked` (with `before` = [`Hosts::starts`]
    /// just before): waits until its container has started again, systemd has booted and every
    /// node sees all alive; prints how long that took after `what`; checks that exactly that
    /// container restarted, once.
    fn await_reboot(&self, target: &Host, before: &[(String, u64)], asked: Instant, what: &str) {
        let index = self
            .hosts
            .iter()
            .position(|h| h.name == target.name)
            .unwrap();
        wait_for(
            Duration::from_secs(60),
            &format!("{}'s container to start again", target.name),
            || (target.started() != before[index]).then_some(()),
        );
        self.wait_booted(target);
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        self.agreed_leader(&self.all(), &names, Duration::from_secs(60));
        println!(
            "BENCH {what} → {} alive again on every node: {} ms",
            target.name,
            asked.elapsed().as_millis()
        );
        for (host, earlier) in self.hosts.iter().zip(before) {
            let expected = if host.name == target.name {
                earlier.1 + 1
            } else {
                earlier.1
            };
            assert_eq!(host.started().1, expected, "restarts of {}", host.name);
            if host.name != target.name {
                assert_eq!(&host.started(), earlier, "{} rebooted too", host.name);
            }
        }
    }
}

/// Copies the test's binary to `to` without its debug info (a fifth of the size).
fn stage_binary(to: &Path) {
    let stripped = Command::new("objcopy")
        .args(["--strip-debug", BIN])
        .arg(to)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(BIN, to).unwrap();
    }
}

#[test]
fn three_systemd_hosts_install_fail_over_reboot_roll_and_uninstall() {
    if !engine_answers("three_systemd_hosts_install_fail_over_reboot_roll_and_uninstall") {
        return;
    }
    let hosts = Hosts::boot(&["alpha", "bravo", "charlie"]);
    let (alpha, bravo, charlie) = (
        hosts.host("alpha"),
        hosts.host("bravo"),
        hosts.host("charlie"),
    );

    // The bot talks to a fake Bot API on the host machine, set the way an operator points it
    // at a self-hosted one: a drop-in (`systemctl edit constella`), here written before the
    // install so the first start has it.
    let fake = FakeTelegram::start(TOKEN);
    for host in &hosts.hosts {
        let url = fake.url_for_at(&host.name, &hosts.gateway);
        host.ok(&[
            "sh",
            "-c",
            &format!(
                "mkdir -p /etc/systemd/system/constella.service.d && \
                 printf '[Service]\\nEnvironment=CONSTELLA_TELEGRAM_API_URL={url}\\n' \
                 >/etc/systemd/system/constella.service.d/telegram.conf"
            ),
        ]);
    }

    // ---- install, as the README says ----
    let token_env = format!("CONSTELLA_BOT_TOKEN={TOKEN}");
    let out = alpha.install_init(&[&token_env], &["--priority", "10"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("started constella.service"), "{stdout}");
    assert!(stdout.contains("invite --ttl 15m"), "{stdout}");

    let join = |host: &Host, link: &str| host.install_join(link);
    let mut joined = vec!["alpha"];
    let mut last_link = String::new();
    for host in [bravo, charlie] {
        last_link = alpha.ok(&["constella", "invite", "--ttl", "15m"]);
        let started = Instant::now();
        let out = join(host, last_link.trim());
        assert!(out.status.success(), "{}", text(&out));
        joined.push(&host.name);
        let members: Vec<&Host> = joined.iter().map(|n| hosts.host(n)).collect();
        hosts.agreed_leader(&members, &joined, Duration::from_secs(30));
        println!(
            "BENCH install.sh join of {} → alive on every node: {} ms (install.sh itself included)",
            host.name,
            started.elapsed().as_millis()
        );
    }

    // ---- the service under systemd ----
    for host in &hosts.hosts {
        assert_eq!(
            host.ok(&["systemctl", "is-active", "constella"]).trim(),
            "active"
        );
        assert_eq!(
            host.ok(&["systemctl", "is-enabled", "constella"]).trim(),
            "enabled"
        );
        // The unit's confinement holds under a real systemd: root with CAP_SYS_BOOT only.
        let pid = host.ok(&["systemctl", "show", "-p", "MainPID", "--value", "constella"]);
        let caps = host.ok(&["grep", "^CapEff", &format!("/proc/{}/status", pid.trim())]);
        assert!(
            caps.trim().ends_with("0000000000400000"),
            "{}: {caps}",
            host.name
        );
    }
    // Native journal entries with structured fields: NODE= the node that logs, EVENT=, MEMBER=.
    wait_for(
        Duration::from_secs(10),
        "alpha's journal to show bravo and charlie alive",
        || {
            ["bravo", "charlie"]
                .iter()
                .all(|member| {
                    alpha
                        .journal_where(&[
                            "NODE=alpha",
                            "EVENT=member_alive",
                            &format!("MEMBER={member}"),
                        ])
                        .contains("member alive")
                })
                .then_some(())
        },
    );
    let leader = hosts.agreed_leader(
        &hosts.all(),
        &["alpha", "bravo", "charlie"],
        Duration::from_secs(10),
    );
    assert_eq!(leader, "alpha");
    for host in &hosts.hosts {
        let peers = host.peers().unwrap();
        assert_eq!(peers.len(), 3, "{peers:?}");
        let text = host.ok(&["constella", "peers"]);
        assert_eq!(text.matches("— Хост").count(), 1, "{text}");
        assert!(text.contains("• alpha — Хост"), "{text}");
    }

    // ---- re-running install.sh (an upgrade of one node) keeps its state, restarts the unit ----
    let incarnation = charlie.incarnation();
    let out = join(charlie, last_link.trim());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already holds a network state: keeping it"),
        "{}",
        text(&out)
    );
    assert!(charlie.incarnation() > incarnation);
    hosts.agreed_leader(
        &hosts.all(),
        &["alpha", "bravo", "charlie"],
        Duration::from_secs(30),
    );

    // ---- containers, asked of the daemon under the unit's confinement ----
    let out = alpha.exec(&["constella", "docker", "alpha", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let containers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let bravo_container = containers
        .iter()
        .find(|c| c["name"] == bravo.container.as_str())
        .expect("the engine's containers include the hosts");
    assert_eq!(bravo_container["state"], "running");

    // ---- systemctl restart of the leader: it fails over and back ----
    let changes_before = bravo.leader_changes();
    let incarnation = alpha.incarnation();
    let started = Instant::now();
    alpha.ok(&["systemctl", "restart", "constella"]);
    wait_for(
        Duration::from_secs(30),
        "bravo to see the leader go and come back",
        || (bravo.leader_changes() >= changes_before + 2).then_some(()),
    );
    let leader = hosts.agreed_leader(
        &hosts.all(),
        &["alpha", "bravo", "charlie"],
        Duration::from_secs(30),
    );
    println!(
        "BENCH systemctl restart of the leader → it leads again, agreed by all: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(leader, "alpha");
    assert!(alpha.incarnation() > incarnation);

    // ---- constella reboot: exactly that container reboots, and comes back ----
    let before = hosts.starts();
    let charlie_incarnation = charlie.incarnation();
    let asked = Instant::now();
    let out = alpha.ok(&["constella", "reboot", "charlie", "--yes"]);
    assert!(
        out.contains("Node charlie accepted the reboot (systemctl reboot)"),
        "{out}"
    );
    hosts.await_reboot(charlie, &before, asked, "constella reboot charlie");
    // The unit started at boot, on the state it had.
    assert_eq!(
        charlie.ok(&["systemctl", "is-active", "constella"]).trim(),
        "active"
    );
    assert!(charlie.incarnation() > charlie_incarnation);

    // ---- a reboot from the bot: the leader's bot, the signed confirmation, bravo reboots ----
    let owner = TgUser::new(OWNER_ID, "owner_test");
    wait_for(Duration::from_secs(30), "alpha's bot to poll", || {
        fake.polls().iter().any(|p| p.node == "alpha").then_some(())
    });
    fake.send_text(&owner, "/start");
    let answer = Duration::from_secs(20);
    let list = fake.wait_message(answer, "the node list", OWNER_ID, |m| {
        m.text.starts_with("Узлы сети")
    });
    let id = list.message_id;
    fake.press(&owner, id, &list.button("bravo").unwrap());
    let card = fake.wait_message(answer, "bravo's card", OWNER_ID, |m| {
        m.message_id == id && m.text.contains("bravo") && m.text.contains("Адрес")
    });
    fake.press(&owner, id, &card.button("Перезагрузить сервер").unwrap());
    let confirm = fake.wait_message(answer, "the confirmation", OWNER_ID, |m| {
        m.message_id == id && m.text.starts_with("Перезагрузить bravo?")
    });
    let before = hosts.starts();
    let asked = Instant::now();
    fake.press(&owner, id, &confirm.button("Да, перезагрузить").unwrap());
    fake.wait_message(answer, "the bot's answer", OWNER_ID, |m| {
        m.message_id == id && m.text.contains("bravo: перезагрузка запущена")
    });
    hosts.await_reboot(bravo, &before, asked, "the bot's reboot confirmation");

    // ---- rolling restart, with its default ssh commands ----
    alpha.ok(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        "/root/.ssh/id_ed25519",
    ]);
    let key = alpha.ok(&["cat", "/root/.ssh/id_ed25519.pub"]);
    alpha.ok(&[
        "sh",
        "-c",
        "printf 'Host *\\n  StrictHostKeyChecking accept-new\\n  BatchMode yes\\n' >/root/.ssh/config",
    ]);
    for host in &hosts.hosts {
        host.ok(&[
            "sh",
            "-c",
            &format!(
                "printf '%s\\n' '{}' >>/root/.ssh/authorized_keys",
                key.trim()
            ),
        ]);
        wait_for(
            Duration::from_secs(30),
            &format!("sshd on {}", host.name),
            || {
                let out = host.exec(&["systemctl", "is-active", "ssh"]);
                out.status.success().then_some(())
            },
        );
    }
    let incarnations: Vec<u64> = hosts.hosts.iter().map(Host::incarnation).collect();
    let started = Instant::now();
    let out = alpha.exec(&["constella", "rolling-restart", "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    println!(
        "BENCH rolling-restart of 3 systemd hosts over ssh: {} ms",
        started.elapsed().as_millis()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Rolling restart done: 3 nodes"), "{stdout}");
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("] restarting ").map(|(_, name)| name))
        .collect();
    assert_eq!(order.last(), Some(&"alpha"), "the leader last: {stdout}");
    for (host, before) in hosts.hosts.iter().zip(incarnations) {
        assert!(
            host.incarnation() > before,
            "{} was not restarted",
            host.name
        );
    }
    assert_eq!(
        hosts.agreed_leader(
            &hosts.all(),
            &["alpha", "bravo", "charlie"],
            Duration::from_secs(30)
        ),
        "alpha"
    );

    // ---- uninstall leaves no unit behind ----
    let out = charlie.install_sh(&[], &["uninstall"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !charlie
            .exec(&["test", "-e", "/etc/systemd/system/constella.service"])
            .status
            .success()
    );
    // systemd knows no such unit any more (list-unit-files exits 1 when nothing matches).
    let units = charlie.exec(&[
        "systemctl",
        "list-unit-files",
        "--no-legend",
        "constella.service",
    ]);
    assert!(
        String::from_utf8_lossy(&units.stdout).trim().is_empty(),
        "{}",
        text(&units)
    );
    let cat = charlie.exec(&["systemctl", "cat", "constella.service"]);
    assert!(!cat.status.success(), "{}", text(&cat));
    assert!(
        !charlie
            .exec(&["systemctl", "is-active", "constella"])
            .status
            .success()
    );
    assert!(
        !charlie
            .exec(&["test", "-e", "/usr/local/bin/constella"])
            .status
            .success()
    );
    assert!(
        charlie
            .exec(&["test", "-f", "/var/lib/constella/node.key"])
            .status
            .success()
    );
    wait_for(Duration::from_secs(10), "charlie offline on alpha", || {
        alpha
            .peers()?
            .iter()
            .any(|p| p.name == "charlie" && p.status == "offline")
            .then_some(())
    });
}

/// A unit whose start fails unless `/run/demo-ok` exists (a oneshot: `systemctl start` and
/// `restart` wait for it and report its failure), without systemd's own restarts.
const DEMO_UNIT: &str = "[Unit]\nDescription=Constella test unit\n\n[Service]\n\
Type=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'test -e /run/demo-ok'\n";

/// The unit's `active_state` as `constella services bravo --json` on `from` reports it.
fn unit_state(from: &Host, node: &str, unit: &str) -> Option<String> {
    let out = from.exec(&["constella", "services", node, "--json"]);
    if !out.status.success() {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    assert_eq!(answer["systemd"], true, "{answer}");
    answer["units"]
        .as_array()?
        .iter()
        .find(|u| u["unit"] == unit)
        .and_then(|u| u["active_state"].as_str())
        .map(str::to_owned)
}

#[test]
fn a_node_watches_a_real_unit_sees_it_fail_and_restarts_it_over_rpc() {
    if !engine_answers("a_node_watches_a_real_unit_sees_it_fail_and_restarts_it_over_rpc") {
        return;
    }
    let hosts = Hosts::boot(&["alpha", "bravo"]);
    let (alpha, bravo) = (hosts.host("alpha"), hosts.host("bravo"));
    let out = alpha.install_init(&[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let link = alpha.ok(&["constella", "invite", "--ttl", "15m"]);
    let out = bravo.install_join(link.trim());
    assert!(out.status.success(), "{}", text(&out));
    hosts.agreed_leader(&hosts.all(), &["alpha", "bravo"], Duration::from_secs(30));

    // A real unit on bravo, failed by systemd.
    bravo.ok(&[
        "sh",
        "-c",
        &format!(
            "printf \"{DEMO_UNIT}\" >/etc/systemd/system/demo.service && systemctl daemon-reload"
        ),
    ]);
    let _ = bravo.exec(&["systemctl", "start", "demo"]);
    wait_for(
        Duration::from_secs(10),
        "systemd to mark demo failed",
        || {
            let out = bravo.exec(&["systemctl", "is-failed", "demo"]);
            (String::from_utf8_lossy(&out.stdout).trim() == "failed").then_some(())
        },
    );

    // alpha asks bravo's node (over RPC) to watch it, and sees it failed.
    alpha.ok(&["constella", "services", "add", "bravo", "demo"]);
    assert_eq!(
        unit_state(alpha, "bravo", "demo.service").as_deref(),
        Some("failed")
    );
    let shown = alpha.ok(&["constella", "services", "bravo"]);
    assert!(shown.contains("demo.service"), "{shown}");

    // A restart that fails is reported with systemd's own reason, one line.
    let out = alpha.exec(&["constella", "services", "restart", "bravo", "demo"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("systemctl restart demo.service failed on bravo"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Fixed, then restarted over RPC from alpha, by bravo's own node under its confinement.
    bravo.ok(&["touch", "/run/demo-ok"]);
    let started = Instant::now();
    let out = alpha.ok(&["constella", "services", "restart", "bravo", "demo"]);
    println!(
        "BENCH services restart of a real unit on another node over RPC: {} ms",
        started.elapsed().as_millis()
    );
    assert!(out.contains("Restarted on bravo"), "{out}");
    assert_eq!(
        bravo.ok(&["systemctl", "is-active", "demo"]).trim(),
        "active"
    );
    assert_eq!(
        unit_state(alpha, "bravo", "demo.service").as_deref(),
        Some("active")
    );
    // bravo's journal has the restart as a structured entry.
    let entry = bravo.journal_where(&["NODE=bravo", "EVENT=service_restart", "UNIT=demo.service"]);
    assert!(entry.contains("restarting a systemd unit"), "{entry}");
    // And the unit failing again (restarted on bravo itself) is seen again.
    bravo.ok(&["rm", "/run/demo-ok"]);
    let _ = bravo.exec(&["systemctl", "restart", "demo"]);
    wait_for(
        Duration::from_secs(10),
        "alpha to see demo fail again",
        || (unit_state(alpha, "bravo", "demo.service")? == "failed").then_some(()),
    );
}
