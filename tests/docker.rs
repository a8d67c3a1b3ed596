//! Containers on a node, against the real Docker engine of this machine: a container started
//! by the test from the locally imported test image (scripts/test-image.sh, nothing pulled) is
//! listed with the right state, restarted, stopped and started, and its output tailed, through
//! `constella docker` and through the bot (with the signed one-time confirmation). A node
//! whose Docker socket is absent says so, and its card has no containers button.
//!
//! Another member's containers are reached over RPC (`constella docker OTHER …`), and a
//! container that exits unexpectedly or restarts in a loop is told to the owner by the
//! leader's bot, whichever node runs it.
//!
//! The tests that need an engine skip with a printed reason when none answers; under CI=true
//! that fails.

mod common;

use std::time::{Duration, Instant};

use common::docker::{Cleanup, docker_ok, engine_answers, test_image, unique_prefix};
use common::fake_telegram::{BotMessage, FakeTelegram, TgUser};
use common::{Cluster, Node, agreed_leader, output_text as text, wait_for};

const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
const OWNER_ID: u64 = 5001;
const ANSWER: Duration = Duration::from_secs(20);

/// A container that prints a numbered line every 0.2 s and stops at once on SIGTERM.
fn start_ticker(cleanup: &mut Cleanup, name: &str) {
    cleanup.containers.push(name.to_owned());
    docker_ok(&[
        "run",
        "--detach",
        "--name",
        name,
        &test_image(),
        "sh",
        "-c",
        "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done",
    ]);
}

/// Docker's StartedAt of a container: it changes on every start.
fn started_at(name: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", name])
}

fn list(node: &Node) -> Vec<serde_json::Value> {
    let out = node.cli(&["docker", &node.name, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(list: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|c| c["name"] == name)
}

#[test]
fn containers_are_listed_restarted_stopped_and_tailed_through_the_cli() {
    if !engine_answers("containers_are_listed_restarted_stopped_and_tailed_through_the_cli") {
        return;
    }
    let mut cleanup = Cleanup::default();
    let prefix = unique_prefix("cli");
    let web = format!("{prefix}-web");
    let done = format!("{prefix}-done");
    start_ticker(&mut cleanup, &web);
    cleanup.containers.push(done.clone());
    docker_ok(&["run", "--name", &done, &test_image(), "true"]);

    let cluster = Cluster::start(&["alpha", "bravo"], &[1, 100], None);
    let alpha = cluster.node("alpha");
    cluster.or_logs(|| {
        // Listed with the right state, and the figures of a running container.
        let containers = list(alpha);
        let running = find(&containers, &web).expect("the ticker is listed");
        assert_eq!(running["state"], "running", "{running}");
        assert_eq!(running["image"], test_image());
        assert!(running["mem_bytes"].as_u64().unwrap() > 0, "{running}");
        assert!(running["cpu_percent"].as_f64().is_some(), "{running}");
        assert!(running["uptime_secs"].as_u64().is_some(), "{running}");
        let exited = find(&containers, &done).expect("the finished one is listed");
        assert_eq!(exited["state"], "exited", "{exited}");
        assert_eq!(exited["uptime_secs"], 0);
        let table = alpha.ok(&["docker", "alpha"]);
        assert!(table.starts_with("NAME "), "{table}");
        assert!(
            table.lines().any(|l| l.starts_with(&web) && l.contains("running")),
            "{table}"
        );

        // The list round trip: the engine reads every running container's CPU over ~1 s.
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let at = Instant::now();
                list(alpha);
                at.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "BENCH constella docker NODE --json round trip ({} containers on the engine): median {} ms, max {} ms of 5",
            containers.len(),
            times[2].as_millis(),
            times[4].as_millis()
        );

        // The tail: exactly N lines, the newest last.
        wait_for(ANSWER, "five ticks", || {
            let out = alpha.cli(&["docker", "alpha", "logs", &web, "--tail", "3"]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && stdout.lines().count() == 3).then_some(())
        });
        let tail = alpha.ok(&["docker", "alpha", "logs", &web, "--tail", "3"]);
        let numbers: Vec<u64> = tail
            .lines()
            .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers.len(), 3, "{tail}");
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "consecutive: {tail}"
        );

        // Restart: not without a confirmation, then for real.
        let before = started_at(&web);
        let out = alpha.cli(&["docker", "alpha", "restart", &web]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
        assert_eq!(started_at(&web), before, "refused, nothing changed");
        let out = alpha.ok(&["docker", "alpha", "restart", &web, "--yes"]);
        assert_eq!(out, format!("{web}: restart done; now running.\n"));
        assert_ne!(started_at(&web), before);
        // The ticker counts from 1 again.
        wait_for(ANSWER, "the restarted ticker's first line", || {
            let tail = alpha.ok(&["docker", "alpha", "logs", &web, "--tail", "1000"]);
            (tail.lines().filter(|l| *l == "tick 1").count() == 2).then_some(())
        });

        // Stop and start.
        let out = alpha.ok(&["docker", "alpha", "stop", &web, "--yes"]);
        assert_eq!(out, format!("{web}: stop done; now exited.\n"));
        assert_eq!(find(&list(alpha), &web).unwrap()["state"], "exited");
        let out = alpha.ok(&["docker", "alpha", "start", &web, "--yes"]);
        assert_eq!(out, format!("{web}: start done; now running.\n"));

        // Bad requests: one line each, nothing touched.
        for (args, message) in [
            (
                vec!["docker", "alpha", "restart", "no-such-container-here", "--yes"],
                "no container named no-such-container-here on alpha",
            ),
            (
                vec!["docker", "alpha", "stop", "../../x", "--yes"],
                "is not a container name",
            ),
            (vec!["docker", "nobody"], "no node named nobody"),
        ] {
            let out = alpha.cli(&args);
            assert!(!out.status.success(), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(message), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
        let out = alpha.cli(&["docker", "alpha", "logs", &web, "--tail", "0"]);
        assert_eq!(out.status.code(), Some(2), "clap refuses it: {}", text(&out));
    });
}

fn owner() -> TgUser {
    TgUser::new(OWNER_ID, "Owner_Test")
}

fn bot_node(fake: &FakeTelegram, node: &mut Node) {
    node.init_args = vec!["--bot-token".into(), TOKEN.into()];
    node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
}

/// Opens the node list and `node`'s card; returns the card (one message, edited in place).
fn open_card(cluster: &Cluster, fake: &FakeTelegram, node: &str) -> BotMessage {
    wait_for(ANSWER, "the leader to poll", || {
        (!fake.polls().is_empty()).then_some(())
    });
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "the node list", OWNER_ID, |m| {
        m.text.starts_with("Узлы сети")
    });
    fake.press(&owner(), list.message_id, &list.button(node).unwrap());
    cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the node card", OWNER_ID, |m| {
            m.message_id == list.message_id && m.text.contains("Адрес")
        })
    })
}

#[test]
fn the_bot_lists_a_nodes_containers_and_restarts_one_after_a_signed_confirmation() {
    if !engine_answers(
        "the_bot_lists_a_nodes_containers_and_restarts_one_after_a_signed_confirmation",
    ) {
        return;
    }
    let mut cleanup = Cleanup::default();
    let web = format!("{}-web", unique_prefix("bot"));
    start_ticker(&mut cleanup, &web);
    let fake = FakeTelegram::start(TOKEN);
    let cluster = Cluster::start_with(&["alpha"], &[1], None, |node| bot_node(&fake, node));
    agreed_leader(&[cluster.node("alpha")], &["alpha"], ANSWER);

    let card = open_card(&cluster, &fake, "alpha");
    let id = card.message_id;
    let edited = |what: &str, check: &dyn Fn(&BotMessage) -> bool| {
        cluster.or_logs(|| {
            fake.wait_message(ANSWER, what, OWNER_ID, |m| m.message_id == id && check(m))
        })
    };
    let containers = card.button("🐳 Контейнеры").expect("the containers button");
    fake.press(&owner(), id, &containers);
    let list = edited("the container list", &|m| {
        m.text.starts_with("🐳 alpha — контейнеры")
    });
    assert!(
        list.text
            .lines()
            .any(|l| l.starts_with(&format!("🟢 {web} — running"))),
        "{}",
        list.text
    );

    fake.press(&owner(), id, &list.button(&web).unwrap());
    let card = edited("the container card", &|m| {
        m.text.starts_with(&format!("🐳 {web} на alpha")) && m.text.contains("tick ")
    });
    let log_lines = card.text.lines().filter(|l| l.starts_with("tick ")).count();
    assert!((1..=30).contains(&log_lines), "{}", card.text);
    assert!(card.text.contains("Последние строки лога"), "{}", card.text);

    // Restart asks first; "Отмена" goes back to the card and changes nothing.
    let before = started_at(&web);
    fake.press(&owner(), id, &card.button("Перезапустить").unwrap());
    let confirm = edited("the confirmation", &|m| {
        m.text
            .starts_with(&format!("Перезапустить контейнер {web} на alpha?"))
    });
    fake.press(&owner(), id, &confirm.button("Отмена").unwrap());
    let card = edited("the card after cancel", &|m| m.text.contains("Образ"));
    assert_eq!(started_at(&web), before);

    fake.press(&owner(), id, &card.button("Перезапустить").unwrap());
    let confirm = edited("the confirmation again", &|m| {
        m.text.starts_with("Перезапустить контейнер")
    });
    let yes = confirm.button("Да, перезапустить").unwrap();
    // The MAC binds the action: the same confirmation turned into a "stop" is refused.
    let forged = yes.replacen(":r:", ":t:", 1);
    let answer = fake.press_for_answer(&owner(), id, &forged, ANSWER);
    assert!(
        answer["text"].as_str().unwrap_or("").contains("устарела"),
        "{answer}"
    );
    assert_eq!(started_at(&web), before);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &web]),
        "running"
    );

    fake.press(&owner(), id, &yes);
    let done = edited("the restart result", &|m| {
        m.text.starts_with(&format!("✅ {web}: перезапущен"))
    });
    assert!(done.text.contains("running"), "{}", done.text);
    let after = started_at(&web);
    assert_ne!(after, before);

    // The same confirmation again (a double tap, or a replay) does nothing.
    let answer = fake.press_for_answer(&owner(), id, &yes, ANSWER);
    assert!(
        answer["text"].as_str().unwrap_or("").contains("устарела"),
        "{answer}"
    );
    assert_eq!(started_at(&web), after);
}

#[test]
fn a_node_without_docker_says_so_and_its_card_has_no_containers_button() {
    let fake = FakeTelegram::start(TOKEN);
    let cluster = Cluster::start_with(&["alpha"], &[1], None, |node| {
        bot_node(&fake, node);
        node.env = vec![(
            "CONSTELLA_DOCKER_SOCKET".into(),
            "/nonexistent/docker.sock".into(),
        )];
    });
    let alpha = cluster.node("alpha");
    let out = alpha.cli(&["docker", "alpha"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: alpha has no Docker engine (no socket at /nonexistent/docker.sock)\n"
    );
    let card = open_card(&cluster, &fake, "alpha");
    let labels: Vec<String> = card.buttons().into_iter().map(|(text, _)| text).collect();
    assert!(
        labels.iter().any(|l| l == "Показать потребление"),
        "{labels:?}"
    );
    assert!(
        !labels.iter().any(|l| l.contains("Контейнеры")),
        "{labels:?}"
    );
}

/// Names of containers made by these tests for the ops work: prefixed `ops-`.
fn ops_prefix(what: &str) -> String {
    format!("ops-{}", unique_prefix(what))
}

#[test]
fn another_members_containers_are_listed_restarted_and_tailed_over_rpc() {
    if !engine_answers("another_members_containers_are_listed_restarted_and_tailed_over_rpc") {
        return;
    }
    let mut cleanup = Cleanup::default();
    let web = format!("{}-web", ops_prefix("rpc"));
    start_ticker(&mut cleanup, &web);
    // alpha has no engine of its own: whatever it shows of bravo's came over the network.
    let cluster = Cluster::start_with(&["alpha", "bravo"], &[1, 100], None, |node| {
        if node.name == "alpha" {
            node.env = vec![("CONSTELLA_DOCKER_SOCKET".into(), "off".into())];
        }
    });
    let alpha = cluster.node("alpha");
    cluster.or_logs(|| {
        let out = alpha.cli(&["docker", "alpha"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("alpha has no Docker engine"),
            "{}",
            text(&out)
        );

        let remote = |args: &[&str]| {
            let mut all = vec!["docker", "bravo"];
            all.extend_from_slice(args);
            alpha.cli(&all)
        };
        let out = remote(&["--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let containers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let listed = find(&containers, &web).expect("bravo's ticker is listed on alpha");
        assert_eq!(listed["state"], "running", "{listed}");
        assert!(listed["mem_bytes"].as_u64().unwrap() > 0, "{listed}");

        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let at = Instant::now();
                assert!(remote(&["--json"]).status.success());
                at.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "BENCH constella docker OTHER-NODE --json round trip over RPC ({} containers on the engine): median {} ms, max {} ms of 5",
            containers.len(),
            times[2].as_millis(),
            times[4].as_millis()
        );

        wait_for(ANSWER, "three ticks over RPC", || {
            let out = remote(&["logs", &web, "--tail", "3"]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && stdout.lines().count() == 3).then_some(())
        });
        let tail = alpha.ok(&["docker", "bravo", "logs", &web, "--tail", "3"]);
        assert!(tail.lines().all(|l| l.starts_with("tick ")), "{tail}");

        let before = started_at(&web);
        let out = alpha.ok(&["docker", "bravo", "restart", &web, "--yes"]);
        assert_eq!(out, format!("{web}: restart done; now running.\n"));
        assert_ne!(started_at(&web), before);

        let out = remote(&["stop", "no-such-container-here", "--yes"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr, "error: no container named no-such-container-here on bravo\n",
            "bravo's own error, one line"
        );
    });
}

#[test]
fn the_bot_lists_and_restarts_the_containers_of_a_node_that_does_not_host_it() {
    if !engine_answers("the_bot_lists_and_restarts_the_containers_of_a_node_that_does_not_host_it")
    {
        return;
    }
    let mut cleanup = Cleanup::default();
    let web = format!("{}-web", ops_prefix("botrpc"));
    start_ticker(&mut cleanup, &web);
    let fake = FakeTelegram::start(TOKEN);
    // The bot runs on alpha, which has no engine: bravo's containers come over RPC.
    let cluster = Cluster::start_with(&["alpha", "bravo"], &[1, 100], None, |node| {
        bot_node(&fake, node);
        if node.name == "alpha" {
            node.env = vec![("CONSTELLA_DOCKER_SOCKET".into(), "off".into())];
        }
    });
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(agreed_leader(&nodes, &["alpha", "bravo"], ANSWER), "alpha");
    let card = open_card(&cluster, &fake, "bravo");
    let id = card.message_id;
    let edited = |what: &str, check: &dyn Fn(&BotMessage) -> bool| {
        cluster.or_logs(|| {
            fake.wait_message(ANSWER, what, OWNER_ID, |m| m.message_id == id && check(m))
        })
    };
    let containers = card
        .button("🐳 Контейнеры")
        .expect("bravo's card has the containers button");
    fake.press(&owner(), id, &containers);
    let list = edited("bravo's container list", &|m| {
        m.text.starts_with("🐳 bravo — контейнеры")
    });
    assert!(
        list.text
            .lines()
            .any(|l| l.starts_with(&format!("🟢 {web} — running"))),
        "{}",
        list.text
    );
    fake.press(&owner(), id, &list.button(&web).unwrap());
    let card = edited("the container card", &|m| {
        m.text.starts_with(&format!("🐳 {web} на bravo")) && m.text.contains("tick ")
    });
    let before = started_at(&web);
    fake.press(&owner(), id, &card.button("Перезапустить").unwrap());
    let confirm = edited("the confirmation", &|m| {
        m.text.starts_with("Перезапустить контейнер")
    });
    fake.press(&owner(), id, &confirm.button("Да, перезапустить").unwrap());
    edited("the restart result", &|m| {
        m.text.starts_with(&format!("✅ {web}: перезапущен"))
    });
    assert_ne!(started_at(&web), before);
}

#[test]
fn an_unexpected_exit_and_a_restart_loop_are_told_to_the_owner() {
    if !engine_answers("an_unexpected_exit_and_a_restart_loop_are_told_to_the_owner") {
        return;
    }
    let mut cleanup = Cleanup::default();
    let prefix = ops_prefix("alert");
    let (calm, crash, looping) = (
        format!("{prefix}-calm"),
        format!("{prefix}-crash"),
        format!("{prefix}-loop"),
    );
    let fake = FakeTelegram::start(TOKEN);
    // The leader (alpha) has no engine: bravo's alerts reach the owner through it.
    let cluster = Cluster::start_with(&["alpha", "bravo"], &[1, 100], None, |node| {
        bot_node(&fake, node);
        if node.name == "alpha" {
            node.env = vec![("CONSTELLA_DOCKER_SOCKET".into(), "off".into())];
        }
    });
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(agreed_leader(&nodes, &["alpha", "bravo"], ANSWER), "alpha");
    wait_for(ANSWER, "the leader to poll", || {
        (!fake.polls().is_empty()).then_some(())
    });
    fake.send_text(&owner(), "/start");
    fake.wait_message(
        ANSWER,
        "the node list (the owner is pinned)",
        OWNER_ID,
        |m| m.text.starts_with("Узлы сети"),
    );

    // Stopped by somebody (a kill before the exit): no alert.
    cleanup.containers.push(calm.clone());
    docker_ok(&[
        "run",
        "--detach",
        "--name",
        &calm,
        &test_image(),
        "sleep",
        "600",
    ]);
    docker_ok(&["stop", "-t", "1", &calm]);
    let told = |needle: String| {
        cluster.or_logs(|| {
            fake.wait_message(Duration::from_secs(60), &needle, OWNER_ID, |m| {
                m.text.contains(&needle)
            })
        })
    };
    // Exits non-zero by itself, a second after it starts.
    cleanup.containers.push(crash.clone());
    docker_ok(&[
        "run",
        "--detach",
        "--name",
        &crash,
        &test_image(),
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    let crash_started = std::time::SystemTime::now();
    told(format!("Контейнер {crash} на bravo завершился с кодом 3"));
    // When the alert reached the leader, from its log line (the message itself follows the
    // bot's batching and its 10 s gap after the previous notice, here bravo's join).
    let at_leader = cluster
        .node("alpha")
        .log_text()
        .lines()
        .find(|l| l.contains("container alert") && l.contains(&crash))
        .and_then(|l| seconds_of_day(l.split_whitespace().next()?))
        .expect("the leader logs the alert");
    let started = crash_started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 86_400.0;
    println!(
        "BENCH a container exits on a member (1 s after its start) → the alert at the leader: {} ms",
        ((at_leader - started - 1.0) * 1000.0).round()
    );
    // Dies again and again under Docker's restart policy (told at least 10 s after the last
    // notice: the bot's rate limit).
    cleanup.containers.push(looping.clone());
    docker_ok(&[
        "run",
        "--detach",
        "--restart",
        "always",
        "--name",
        &looping,
        &test_image(),
        "sh",
        "-c",
        "exit 1",
    ]);
    told(format!(
        "Контейнер {looping} на bravo перезапускается по кругу"
    ));
    let all: Vec<String> = fake
        .messages_to(OWNER_ID)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert!(
        !all.iter().any(|t| t.contains(&calm)),
        "a container somebody stopped is no alert: {all:#?}"
    );
    let loops = all
        .iter()
        .filter(|t| t.contains(&format!("{looping} на bravo перезапускается")))
        .count();
    assert_eq!(loops, 1, "a loop is told once: {all:#?}");
}

/// Seconds since midnight UTC of a log line's timestamp (`2026-11-29T23:07:16.826229Z`).
fn seconds_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}
