//! The Telegram bot across real nodes, against a fake Bot API server (tests/common/fake_telegram.rs).

mod common;

use std::time::{Duration, Instant};

use common::fake_telegram::{BotMessage, FakeTelegram, PollEnd, TgUser};
use common::{Cluster, Node, agreed_leader, agreed_leader_without, wait_for};

/// A token in @BotFather's format; the fake server accepts only this one.
const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
/// The secret half of [`TOKEN`]: it must never appear in a log.
const TOKEN_SECRET: &str = "AAHfakeTokenForConstellaTests_0123456789";
const OWNER_ID: u64 = 5001;
const AGREE: Duration = Duration::from_secs(15);
const ANSWER: Duration = Duration::from_secs(10);

fn owner() -> TgUser {
    // The network was created with --owner @owner_test: the match ignores case.
    TgUser::new(OWNER_ID, "Owner_Test")
}

/// A cluster whose nodes carry the bot token and talk to `fake`, each on its own port. A
/// reboot runs a command that appends who asked to [`reboot_marker`] instead.
fn bot_cluster(fake: &FakeTelegram, names: &[&str], priorities: &[u32]) -> Cluster {
    Cluster::start_with(names, priorities, None, |node: &mut Node| {
        node.init_args = vec!["--bot-token".into(), TOKEN.into()];
        node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
        let command = format!(
            "echo \"$CONSTELLA_REBOOT_REQUESTED_BY\" >> '{}'",
            reboot_marker(node).display()
        );
        node.env = vec![("CONSTELLA_REBOOT_COMMAND".into(), command)];
    })
}

fn reboot_marker(node: &Node) -> std::path::PathBuf {
    node.dir.with_extension("rebooted")
}

fn reboots(node: &Node) -> Vec<String> {
    std::fs::read_to_string(reboot_marker(node))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn is_list(m: &BotMessage) -> bool {
    m.text.starts_with("Узлы сети")
}

fn button_labels(m: &BotMessage) -> Vec<String> {
    m.buttons().into_iter().map(|(text, _)| text).collect()
}

fn bot_status(node: &Node) -> serde_json::Value {
    node.status().expect("status")["bot"].clone()
}

/// Waits until the bot message `id` satisfies `check` (it is edited in place); logs on failure.
fn edited(
    cluster: &Cluster,
    fake: &FakeTelegram,
    id: i64,
    what: &str,
    check: &dyn Fn(&BotMessage) -> bool,
) -> BotMessage {
    cluster
        .or_logs(|| fake.wait_message(ANSWER, what, OWNER_ID, |m| m.message_id == id && check(m)))
}

/// Waits until `node` polls the fake server.
/// A bot cluster of `names`, once every node names `host` leader and `host`'s bot polls.
fn hosted_cluster(fake: &FakeTelegram, names: &[&str], priorities: &[u32], host: &str) -> Cluster {
    let cluster = bot_cluster(fake, names, priorities);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(agreed_leader(&nodes, names, AGREE), host);
    wait_polling(fake, host);
    cluster
}

fn wait_polling(fake: &FakeTelegram, node: &str) {
    wait_for(ANSWER, &format!("{node} to poll"), || {
        fake.polls().iter().any(|p| p.node == node).then_some(())
    });
}

#[test]
fn owner_gets_the_node_list_cards_and_invites_and_strangers_get_nothing() {
    let fake = FakeTelegram::start(TOKEN);
    let mut cluster = hosted_cluster(
        &fake,
        &["alpha", "bravo", "charlie"],
        &[1, 100, 100],
        "alpha",
    );

    // A stranger writes first: no reply at all, and the attempt is counted.
    let stranger = TgUser::new(6001, "mallory_x");
    fake.send_text(&stranger, "/start");
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);
    assert_eq!(list.sent_by, "alpha");
    assert_eq!(
        button_labels(&list)[..3],
        ["• alpha — Хост", "• bravo", "• charlie"],
        "{list:?}"
    );
    assert!(fake.messages_to(stranger.id).is_empty());
    let bot = bot_status(cluster.node("alpha"));
    assert_eq!(bot["refused_updates"], 1, "{bot}");
    assert_eq!(bot["polling"], true);
    assert_eq!(bot["owner_pinned"], true);
    assert_eq!(bot_status(cluster.node("bravo"))["polling"], false);

    // The owner's id is pinned network-wide, and the token reached every joiner (0600 file).
    for node in &cluster.nodes {
        wait_for(ANSWER, "the owner pin on every node", || {
            let state = node.state_json()?;
            (state["settings"]["owner_user_id"] == OWNER_ID).then_some(())
        });
        let state = node.state_json().unwrap();
        assert_eq!(state["bot_token"], TOKEN, "{} has the token", node.name);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.dir.join("network_state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Someone who takes over the username later gets nothing.
    let usurper = TgUser::new(6002, "owner_test");
    fake.send_text(&usurper, "/start");
    wait_for(ANSWER, "the usurper to be refused", || {
        (bot_status(cluster.node("alpha"))["refused_updates"] == 2).then_some(())
    });
    assert!(fake.messages_to(usurper.id).is_empty());

    // A node card, edited in place.
    let bravo = list.button("bravo").unwrap();
    fake.press(&owner(), list.message_id, &bravo);
    let card = fake.wait_message(ANSWER, "bravo's card", OWNER_ID, |m| {
        m.message_id == list.message_id && m.text.contains("bravo") && m.text.contains("Адрес")
    });
    assert!(
        card.text.contains(&cluster.node("bravo").addr()),
        "{}",
        card.text
    );
    assert!(card.text.contains("Лидер: нет"), "{}", card.text);
    let labels = button_labels(&card);
    for label in ["Показать потребление", "Перезагрузить сервер", "« Назад"]
    {
        assert!(labels.iter().any(|l| l == label), "{labels:?}");
    }

    // A forged or stale button gets a short answer and changes nothing.
    let before = fake.message(list.message_id).text;
    let answers = fake.callback_answers().len();
    fake.press(&owner(), list.message_id, "c:ZZZZZZZZ");
    fake.press(
        &owner(),
        list.message_id,
        "R:ZZZZZZZZ:99999999999:0011223344556677",
    );
    wait_for(ANSWER, "two answers", || {
        (fake.callback_answers().len() >= answers + 2).then_some(())
    });
    for (_, answer) in &fake.callback_answers()[answers..] {
        assert!(
            answer["text"].as_str().unwrap().contains("устарела"),
            "{answer}"
        );
    }
    assert_eq!(fake.message(list.message_id).text, before);

    // Back to the list, in the same message.
    let back = card.button("Назад").unwrap();
    fake.press(&owner(), list.message_id, &back);
    fake.wait_message(ANSWER, "the list again", OWNER_ID, |m| {
        m.message_id == list.message_id && is_list(m)
    });

    // /invite: a bad ttl gets the usage text; a good one a link with which a node joins.
    fake.send_text(&owner(), "/invite 3d");
    fake.wait_message(ANSWER, "the usage text", OWNER_ID, |m| {
        m.text.starts_with("Использование: /invite")
    });
    fake.send_text(&owner(), "/invite 5m");
    let invite = fake.wait_message(ANSWER, "a join link", OWNER_ID, |m| {
        m.text.contains("join://")
    });
    let link = invite
        .text
        .split_whitespace()
        .find(|w| w.starts_with("join://"))
        .unwrap()
        .to_owned();
    let mut delta = Node::new(cluster.root.path(), "delta");
    delta.run_args = vec!["--telegram-api-url".into(), fake.url_for("delta")];
    delta.join(&link, 100);
    assert_eq!(delta.state_json().unwrap()["bot_token"], TOKEN);
    delta.start();
    cluster.nodes.push(delta);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    agreed_leader(&nodes, &["alpha", "bravo", "charlie", "delta"], AGREE);

    // The owner is told once, by the leader, that a node joined.
    let notice = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the join notice", OWNER_ID, |m| {
            m.text.contains("Новый узел в сети: delta")
        })
    });
    assert_eq!(notice.sent_by, "alpha");

    // Only the leader polled, and nobody got a 409 in a healthy network.
    let now = Instant::now();
    assert_eq!(
        fake.pollers_between(now - Duration::from_secs(3), now),
        ["alpha"]
    );
    assert_eq!(fake.conflicts(), 0);
    let logs = cluster.dump_logs();
    assert!(!logs.contains(TOKEN_SECRET), "the token leaked into a log");
    let notices = fake
        .messages_to(OWNER_ID)
        .into_iter()
        .filter(|m| m.text.contains("Новый узел в сети: delta"))
        .count();
    assert_eq!(notices, 1);
    // English, as a network setting that every node keeps.
    fake.send_text(&owner(), "/lang en");
    fake.wait_message(ANSWER, "the language answer", OWNER_ID, |m| {
        m.text == "Language: English."
    });
    fake.send_text(&owner(), "/start");
    let english = fake.wait_message(ANSWER, "the English list", OWNER_ID, |m| {
        m.text.starts_with("Nodes: 4")
    });
    assert_eq!(button_labels(&english)[0], "• alpha — Host");
    for node in &cluster.nodes {
        wait_for(ANSWER, "the language on every node", || {
            (node.state_json()?["settings"]["language"] == "en").then_some(())
        });
    }
}

#[test]
fn usage_and_confirmed_reboot_reach_exactly_the_chosen_node() {
    let fake = FakeTelegram::start(TOKEN);
    let mut cluster = hosted_cluster(
        &fake,
        &["alpha", "bravo", "charlie"],
        &[1, 100, 100],
        "alpha",
    );
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);
    let id = list.message_id;

    // Usage of a remote node: plausible figures, in place.
    fake.press(&owner(), id, &list.button("bravo").unwrap());
    let card = edited(&cluster, &fake, id, "bravo's card", &|m| {
        m.text.contains("bravo") && m.text.contains("Адрес")
    });
    fake.press(&owner(), id, &card.button("Показать потребление").unwrap());
    let usage = edited(&cluster, &fake, id, "bravo's usage", &|m| {
        m.text.starts_with("📊 bravo")
    });
    let cpu: f64 = usage
        .text
        .lines()
        .find_map(|l| l.strip_prefix("ЦП: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.replace(',', ".").parse().ok())
        .unwrap_or_else(|| panic!("no CPU line: {}", usage.text));
    assert!((0.0..=100.0).contains(&cpu), "{}", usage.text);
    for line in ["ОЗУ: ", "Диск /: ", "Сервер работает: ", "Демон работает: "]
    {
        assert!(usage.text.contains(line), "{}", usage.text);
    }
    assert!(
        usage.text.contains("ГиБ") || usage.text.contains("МиБ"),
        "{}",
        usage.text
    );

    // Reboot, then "Отмена": nothing runs anywhere.
    fake.press(&owner(), id, &usage.button("К узлу").unwrap());
    let card = edited(&cluster, &fake, id, "the card again", &|m| {
        m.text.contains("Адрес")
    });
    fake.press(&owner(), id, &card.button("Перезагрузить сервер").unwrap());
    let confirm = edited(&cluster, &fake, id, "the confirmation", &|m| {
        m.text.starts_with("Перезагрузить bravo?")
    });
    assert!(confirm.button("Да, перезагрузить").is_some());
    fake.press(&owner(), id, &confirm.button("Отмена").unwrap());
    let card = edited(&cluster, &fake, id, "the card after cancel", &|m| {
        m.text.contains("Адрес")
    });

    // Reboot, then "Да, перезагрузить": the reboot command runs on bravo, and only there.
    fake.press(&owner(), id, &card.button("Перезагрузить сервер").unwrap());
    let confirm = edited(&cluster, &fake, id, "the confirmation again", &|m| {
        m.text.starts_with("Перезагрузить bravo?")
    });
    let yes = confirm.button("Да, перезагрузить").unwrap();
    fake.press(&owner(), id, &yes);
    edited(&cluster, &fake, id, "the reboot result", &|m| {
        m.text.contains("bravo: перезагрузка запущена")
    });
    wait_for(ANSWER, "bravo's reboot command", || {
        (!reboots(cluster.node("bravo")).is_empty()).then_some(())
    });
    assert_eq!(reboots(cluster.node("bravo")), ["telegram:5001"]);

    // Pressing the same confirmation again (a double tap, or a replay) does nothing.
    let answer = fake.press_for_answer(&owner(), id, &yes, ANSWER);
    assert!(
        answer["text"].as_str().unwrap_or("").contains("устарела"),
        "{answer}"
    );
    assert_eq!(reboots(cluster.node("bravo")).len(), 1);
    assert!(reboots(cluster.node("alpha")).is_empty());
    assert!(reboots(cluster.node("charlie")).is_empty());

    // An offline node: its card opens, its actions say it is offline.
    cluster.node_mut("charlie").kill();
    let others: Vec<&Node> = cluster.nodes[..2].iter().collect();
    agreed_leader_without(&others, &["alpha", "bravo"], &["charlie"], AGREE);
    fake.press(&owner(), id, "l");
    let list = edited(&cluster, &fake, id, "the list with charlie offline", &|m| {
        button_labels(m).iter().any(|l| l == "• charlie (offline)")
    });
    fake.press(&owner(), id, &list.button("charlie").unwrap());
    let card = edited(&cluster, &fake, id, "charlie's card", &|m| {
        m.text.contains("charlie") && m.text.contains("offline")
    });
    for action in ["Показать потребление", "Перезагрузить сервер"]
    {
        let answer = fake.press_for_answer(&owner(), id, &card.button(action).unwrap(), ANSWER);
        assert!(
            answer["text"].as_str().unwrap().contains("charlie offline"),
            "{answer}"
        );
    }
    assert!(reboots(cluster.node("charlie")).is_empty());
}

#[test]
fn the_new_leader_answers_within_ten_seconds_and_no_update_is_lost_or_repeated() {
    let fake = FakeTelegram::start(TOKEN);
    let mut cluster = hosted_cluster(&fake, &["alpha", "bravo", "charlie"], &[1, 2, 100], "alpha");

    let first = fake.send_text(&owner(), "/start");
    let answered = fake.wait_message(ANSWER, "alpha's list", OWNER_ID, is_list);
    assert_eq!(answered.sent_by, "alpha");

    // Crash the leader and write at once: the next leader answers within 10 s.
    cluster.node_mut("alpha").kill();
    let killed = Instant::now();
    let second = fake.send_text(&owner(), "/help");
    let help = fake.wait_message(ANSWER, "the new leader's answer", OWNER_ID, |m| {
        m.text.starts_with("Constella")
    });
    let took = killed.elapsed();
    assert_eq!(help.sent_by, "bravo");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    eprintln!("failover: the new leader answered {took:?} after kill -9");

    // Each update reached one node only (a poll dropped on a leadership flap may deliver it
    // to the same node twice) and was answered exactly once.
    let delivered = fake.delivered();
    let nodes_of = |id: u32| {
        let mut nodes = delivered[&id].clone();
        nodes.dedup();
        nodes
    };
    assert_eq!(nodes_of(first), ["alpha"], "{delivered:?}");
    assert_eq!(nodes_of(second), ["bravo"], "{delivered:?}");
    let messages = fake.messages_to(OWNER_ID);
    assert_eq!(messages.iter().filter(|m| is_list(m)).count(), 1);
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.text.starts_with("Constella"))
            .count(),
        1
    );

    // The new leader tells the owner, once; charlie stays quiet.
    let notice = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the failover notice", OWNER_ID, |m| {
            m.text.contains("Хост сменился: alpha → bravo")
        })
    });
    assert_eq!(notice.sent_by, "bravo");
    assert!(notice.text.contains("alpha не отвечает"), "{}", notice.text);
    let survivors: Vec<&Node> = cluster.nodes[1..].iter().collect();
    agreed_leader_without(&survivors, &["bravo", "charlie"], &["alpha"], AGREE);
    assert!(
        fake.messages_to(OWNER_ID)
            .iter()
            .all(|m| m.sent_by != "charlie")
    );
    let now = Instant::now();
    assert_eq!(
        fake.pollers_between(now - Duration::from_secs(2), now),
        ["bravo"]
    );

    // alpha comes back and leads again: bravo, which saw it happen, tells the owner once.
    cluster.node_mut("alpha").start();
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(
        agreed_leader(&nodes, &["alpha", "bravo", "charlie"], AGREE),
        "alpha"
    );
    let back = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the handover notice", OWNER_ID, |m| {
            m.text.contains("Хост сменился: bravo → alpha")
        })
    });
    assert_eq!(back.sent_by, "bravo");
    assert!(back.text.contains("alpha снова в сети"), "{}", back.text);
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "alpha's list again", OWNER_ID, |m| {
        is_list(m) && m.sent_by == "alpha"
    });
    assert_eq!(button_labels(&list)[0], "• alpha — Хост");
    let handovers = fake
        .messages_to(OWNER_ID)
        .iter()
        .filter(|m| m.text.contains("Хост сменился"))
        .count();
    assert_eq!(handovers, 2, "one notice per change");
    // Rate limit: bravo's two notices are at least 10 s apart.
    let sent: Vec<Instant> = fake
        .calls_of("SendMessage", killed)
        .into_iter()
        .filter(|c| c.node == "bravo" && c.body["text"].as_str().unwrap_or("").starts_with("🔔"))
        .map(|c| c.at)
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1] - sent[0] >= Duration::from_millis(9_900),
        "{:?}",
        sent[1] - sent[0]
    );
}

#[test]
fn a_better_node_takes_the_bot_over_within_a_second() {
    let fake = FakeTelegram::start(TOKEN);
    // alpha starts alone and polls; bravo, with the lower priority number, then takes over.
    let mut cluster = hosted_cluster(&fake, &["alpha", "bravo"], &[100, 1], "bravo");
    let polls = fake.polls();
    let bravo_started = polls.iter().find(|p| p.node == "bravo").unwrap().started;
    assert!(
        polls.iter().any(|p| p.node == "alpha"),
        "alpha polled first"
    );
    // Let a few seconds pass: alpha must not poll again after bravo took over.
    std::thread::sleep(Duration::from_secs(3));
    let late: Vec<_> = fake
        .polls()
        .into_iter()
        .filter(|p| p.node == "alpha" && p.started > bravo_started + Duration::from_secs(1))
        .collect();
    assert!(
        late.is_empty(),
        "alpha polled after losing leadership: {late:?}"
    );
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "bravo's list", OWNER_ID, is_list);
    assert_eq!(list.sent_by, "bravo");
    assert_eq!(bot_status(cluster.node("alpha"))["polling"], false);

    // SIGTERM on the leader: its poll ends within a second, and alpha takes over.
    let stopping = Instant::now();
    assert!(cluster.node_mut("bravo").stop().success());
    let last = fake
        .polls()
        .into_iter()
        .rfind(|p| p.node == "bravo")
        .unwrap();
    let (ended, how) = last.ended.clone().expect("bravo's poll ended");
    assert!(
        ended <= stopping + Duration::from_secs(1),
        "bravo's poll ended {:?} after SIGTERM ({how:?})",
        ended - stopping
    );
    // Ended by bravo's bot dropping it, not by the fake answering 409 to alpha's new poll.
    assert!(
        matches!(how, PollEnd::Dropped),
        "bravo's poll was not dropped by its bot: {how:?}"
    );
    wait_for(ANSWER, "alpha to poll again", || {
        fake.polls()
            .iter()
            .any(|p| p.node == "alpha" && p.started > stopping)
            .then_some(())
    });
    // The owner hears of the handover once, from the new leader; the stopping one is silent.
    let notice = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the handover notice", OWNER_ID, |m| {
            m.text.contains("Хост сменился: bravo → alpha")
        })
    });
    assert_eq!(notice.sent_by, "alpha");
    // bravo has exited: whatever it sent is already recorded.
    let notices: Vec<BotMessage> = fake
        .messages_to(OWNER_ID)
        .into_iter()
        .filter(|m| m.text.contains("Хост сменился"))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
}

#[test]
fn a_second_poller_means_409_logged_once_per_episode_and_retries_within_seconds() {
    let fake = FakeTelegram::start(TOKEN);
    let cluster = bot_cluster(&fake, &["alpha"], &[1]);
    wait_polling(&fake, "alpha");
    let alpha = cluster.node("alpha");
    let conflict_logs = || alpha.log_text().matches("409 Conflict").count();

    for episode in 1..=2 {
        let started = Instant::now();
        let intruder = fake.start_intruder(Duration::from_millis(700));
        cluster.or_logs(|| {
            wait_for(AGREE, "several conflicts", || {
                let polls = fake.polls();
                let conflicts = polls
                    .iter()
                    .filter(|p| p.node == "alpha" && p.started >= started)
                    .filter(|p| {
                        matches!(p.ended, Some((_, common::fake_telegram::PollEnd::Conflict)))
                    })
                    .count();
                (conflicts >= 4).then_some(())
            })
        });
        // Retries stay within seconds (teloxide's own backoff would grow to 64 s).
        let starts: Vec<Instant> = fake
            .polls()
            .iter()
            .filter(|p| p.node == "alpha" && p.started >= started)
            .map(|p| p.started)
            .collect();
        let widest = starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        assert!(
            widest <= Duration::from_secs(4),
            "a retry waited {widest:?}"
        );
        assert_eq!(conflict_logs(), episode, "one warning per episode");
        fake.stop_intruder(intruder);

        // Alone again: the owner is answered, and the end of the episode is logged.
        fake.send_text(&owner(), "/help");
        cluster.or_logs(|| {
            wait_for(ANSWER, "an answer after the conflict", || {
                (fake
                    .messages_to(OWNER_ID)
                    .iter()
                    .filter(|m| m.text.starts_with("Constella"))
                    .count()
                    == episode)
                    .then_some(())
            })
        });
        assert!(alpha.log_text().contains("conflict is over"));
    }
    let status = bot_status(alpha);
    assert!(status["conflicts"].as_u64().unwrap() >= 8, "{status}");
}

#[test]
fn a_token_the_bot_api_refuses_is_reported_once_and_retried() {
    let fake = FakeTelegram::start(TOKEN);
    let other = "987654321:AAHsomeOtherTokenThatTheServerRefuses_01";
    let cluster = Cluster::start_with(&["alpha"], &[1], None, |node: &mut Node| {
        node.init_args = vec!["--bot-token".into(), other.into()];
        node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
    });
    let alpha = cluster.node("alpha");
    cluster.or_logs(|| {
        wait_for(AGREE, "three refused attempts", || {
            (fake.unauthorized().len() >= 3).then_some(())
        })
    });
    let log = alpha.log_text();
    assert_eq!(log.matches("refuses the bot token").count(), 1, "{log}");
    assert!(
        !log.contains("AAHsomeOtherToken"),
        "the token leaked: {log}"
    );
    assert!(fake.polls().is_empty());
}

#[test]
fn a_network_without_a_token_runs_with_the_bot_off_and_one_warning() {
    let cluster = Cluster::start(&["alpha"], &[1], None);
    let status = cluster.node("alpha").status().unwrap();
    assert_eq!(status["bot"]["enabled"], false);
    assert_eq!(status["bot"]["polling"], false);
    let log = cluster.node("alpha").log_text();
    assert_eq!(log.matches("the bot is off").count(), 1, "{log}");

    // A malformed token is refused at init without being echoed, and nothing is written.
    let bad = Node::new(cluster.root.path(), "bravo");
    let out = bad.cli(&[
        "init",
        "--server-name",
        "bravo",
        "--public-addr",
        &bad.addr(),
        "--owner",
        "@owner_test",
        "--bot-token",
        "bot:sekret-with-a-bad-bot-id",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid bot token"), "{stderr}");
    assert!(!stderr.contains("sekret"), "{stderr}");
    assert!(bad.state_json().is_none());
}

/// `constella audit --json` of `node`: its entries, oldest first.
fn audit_entries(node: &Node) -> Vec<serde_json::Value> {
    serde_json::from_str(&node.ok(&["audit", "--json"])).unwrap()
}

/// Entries of `kind` in `node`'s audit log.
fn audited(node: &Node, kind: &str) -> Vec<serde_json::Value> {
    audit_entries(node)
        .into_iter()
        .filter(|e| e["event_type"] == kind)
        .collect()
}

#[test]
fn an_owner_change_on_any_member_moves_the_bot_to_the_new_owner() {
    let fake = FakeTelegram::start(TOKEN);
    let cluster = hosted_cluster(&fake, &["alpha", "bravo"], &[1, 100], "alpha");
    fake.send_text(&owner(), "/start");
    fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);

    // On bravo, which does not host the bot: the change travels to alpha by gossip.
    let out = cluster.node("bravo").ok(&["owner", "set", "@new_owner_x"]);
    assert!(
        out.contains("The owner is now @new_owner_x (was @owner_test)"),
        "{out}"
    );
    for node in &cluster.nodes {
        cluster.or_logs(|| {
            wait_for(ANSWER, "the new owner on every node", || {
                let settings = node.state_json()?["settings"].clone();
                (settings["owner_username"] == "@new_owner_x"
                    && settings["owner_user_id"].is_null())
                .then_some(())
            })
        });
        assert_eq!(node.status().unwrap()["owner_username"], "@new_owner_x");
    }

    // The old owner is told once, then ignored.
    let notice = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the notice to the old owner", OWNER_ID, |m| {
            m.text.contains("Владелец сети сменился") && m.text.contains("@new_owner_x")
        })
    });
    assert_eq!(notice.sent_by, "alpha");
    let told = fake.messages_to(OWNER_ID).len();
    let refused = bot_status(cluster.node("alpha"))["refused_updates"]
        .as_u64()
        .unwrap();
    fake.send_text(&owner(), "/start");
    wait_for(ANSWER, "the old owner to be refused", || {
        (bot_status(cluster.node("alpha"))["refused_updates"].as_u64()? > refused).then_some(())
    });

    // The new owner is answered and pinned.
    let new_owner = TgUser::new(5002, "New_Owner_X");
    fake.send_text(&new_owner, "/start");
    let list = fake.wait_message(ANSWER, "the new owner's list", 5002, is_list);
    assert_eq!(list.sent_by, "alpha");
    for node in &cluster.nodes {
        wait_for(ANSWER, "the new owner's pin on every node", || {
            (node.state_json()?["settings"]["owner_user_id"] == 5002).then_some(())
        });
    }
    assert_eq!(
        fake.messages_to(OWNER_ID).len(),
        told,
        "the old owner got more"
    );

    // Audited where each thing happened: the change on bravo, the pin on alpha.
    let changed = audited(cluster.node("bravo"), "owner_changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["details"]["owner"], "@new_owner_x");
    assert_eq!(changed[0]["details"]["previous"], "@owner_test");
    assert!(changed[0]["who"].as_str().unwrap().starts_with("cli:"));
    let pinned = audited(cluster.node("alpha"), "owner_pinned");
    assert!(
        pinned
            .iter()
            .any(|e| e["who"] == "telegram:5002 (@New_Owner_X)"),
        "{pinned:?}"
    );
    let out = cluster.node("bravo").cli(&["owner", "set", "@NEW_owner_x"]);
    assert!(
        !out.status.success(),
        "setting the same owner again is refused"
    );
}

#[test]
fn a_viewer_cannot_reboot_and_an_operator_can_until_revoked() {
    let fake = FakeTelegram::start(TOKEN);
    let cluster = hosted_cluster(&fake, &["alpha", "bravo"], &[1, 100], "alpha");
    let alpha = cluster.node("alpha");
    alpha.ok(&["access", "grant", "@viewer_v", "viewer"]);
    alpha.ok(&["access", "grant", "@operator_o", "operator"]);
    let viewer = TgUser::new(6101, "viewer_v");
    let operator = TgUser::new(6102, "Operator_O");
    let bravo_short = {
        let id = cluster.node("bravo").node_id();
        id[id.len() - 8..].to_owned()
    };
    let last_answer = |since: usize| {
        wait_for(ANSWER, "an answer to the press", || {
            (fake.callback_answers().len() > since).then_some(())
        });
        fake.callback_answers().last().unwrap().1["text"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };

    // The viewer sees the list and cards, without a reboot button.
    fake.send_text(&viewer, "/start");
    let list = fake.wait_message(ANSWER, "the viewer's list", viewer.id, is_list);
    fake.press(&viewer, list.message_id, &list.button("bravo").unwrap());
    let card = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the viewer's card", viewer.id, |m| {
            m.message_id == list.message_id && m.text.contains("Адрес")
        })
    });
    assert!(card.button("Показать потребление").is_some());
    assert!(card.button("Перезагрузить сервер").is_none(), "{card:?}");
    // Forged callbacks: the reboot question and a made-up confirmation. Refused by role.
    for data in [
        format!("r:{bravo_short}"),
        format!("R:{bravo_short}:99999999999:0011223344556677"),
    ] {
        let answers = fake.callback_answers().len();
        fake.press(&viewer, list.message_id, &data);
        assert!(last_answer(answers).contains("Недостаточно прав"), "{data}");
    }
    fake.send_text(&viewer, "/invite 5m");
    fake.wait_message(ANSWER, "the refused invite", viewer.id, |m| {
        m.text.contains("Недостаточно прав")
    });

    // The operator reboots bravo through the buttons.
    fake.send_text(&operator, "/start");
    let list = fake.wait_message(ANSWER, "the operator's list", operator.id, is_list);
    let id = list.message_id;
    fake.press(&operator, id, &list.button("bravo").unwrap());
    let card = fake.wait_message(ANSWER, "the operator's card", operator.id, |m| {
        m.message_id == id && m.text.contains("Адрес")
    });
    fake.press(&operator, id, &card.button("Перезагрузить сервер").unwrap());
    let confirm = fake.wait_message(ANSWER, "the confirmation", operator.id, |m| {
        m.message_id == id && m.text.starts_with("Перезагрузить bravo?")
    });
    fake.press(&operator, id, &confirm.button("Да, перезагрузить").unwrap());
    wait_for(ANSWER, "bravo's reboot command", || {
        (!reboots(cluster.node("bravo")).is_empty()).then_some(())
    });
    assert_eq!(reboots(cluster.node("bravo")), ["telegram:6102"]);

    // A confirmation shown while they were an operator does nothing once they are not.
    fake.send_text(&operator, "/start");
    let list = fake.wait_message(ANSWER, "the operator's second list", operator.id, |m| {
        is_list(m) && m.message_id != id
    });
    let id = list.message_id;
    fake.press(&operator, id, &format!("r:{bravo_short}"));
    let confirm = fake.wait_message(ANSWER, "a second confirmation", operator.id, |m| {
        m.message_id == id && m.text.starts_with("Перезагрузить bravo?")
    });
    alpha.ok(&["access", "grant", "@operator_o", "viewer"]);
    let answers = fake.callback_answers().len();
    fake.press(&operator, id, &confirm.button("Да, перезагрузить").unwrap());
    assert!(last_answer(answers).contains("Недостаточно прав"));
    assert_eq!(
        reboots(cluster.node("bravo")).len(),
        1,
        "the revoked press rebooted"
    );

    // Every grant, pin, reboot and refusal is in the leader's audit log, which verifies.
    let refused = audited(alpha, "action_refused");
    let refused_by = |who: &str| {
        refused
            .iter()
            .filter(|e| e["who"].as_str().unwrap_or("").starts_with(who))
            .count()
    };
    assert_eq!(refused_by("telegram:6101"), 3, "{refused:?}");
    assert_eq!(refused_by("telegram:6102"), 1, "{refused:?}");
    let reboots_audited = audited(alpha, "reboot_requested");
    assert!(
        reboots_audited
            .iter()
            .any(|e| e["who"] == "telegram:6102 (@Operator_O)"
                && e["details"]["outcome"] == "accepted"
                && e["details"]["target"] == "bravo"),
        "{reboots_audited:?}"
    );
    assert_eq!(audited(alpha, "role_granted").len(), 3);
    assert_eq!(audited(alpha, "role_pinned").len(), 2);
    let access: serde_json::Value = serde_json::from_str(&alpha.ok(&["access", "--json"])).unwrap();
    assert_eq!(access["users"].as_array().unwrap().len(), 2, "{access}");
    assert!(
        alpha
            .ok(&["audit", "--verify"])
            .starts_with("audit log verified")
    );
}

#[test]
fn a_new_bot_token_is_checked_stored_and_used_at_once_and_never_taken_from_argv() {
    const NEW_TOKEN: &str = "987654321:BBHnewTokenForConstellaTests_9876543210";
    const NEW_SECRET: &str = "BBHnewTokenForConstellaTests_9876543210";
    let fake = FakeTelegram::start(TOKEN);
    let mut cluster = bot_cluster(&fake, &["alpha"], &[1]);
    wait_polling(&fake, "alpha");
    fake.send_text(&owner(), "/start");
    fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);
    let alpha = cluster.node("alpha");

    // On the command line: refused without echo. Malformed: refused without echo.
    let out = alpha.cli(&["bot-token", "set", NEW_TOKEN]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("not taken from the command line"), "{error}");
    assert!(!error.contains(NEW_SECRET), "{error}");
    let out = alpha.cli_with(
        &["bot-token", "set"],
        &[("CONSTELLA_BOT_TOKEN", "1:sekret")],
        None,
    );
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("invalid bot token") && !error.contains("sekret"),
        "{error}"
    );
    assert!(!alpha.dir.join("bot.token").exists());

    // The token changes at @BotFather: the old one is refused from now on.
    fake.set_token(NEW_TOKEN);
    let out = alpha.cli_with(
        &["bot-token", "set"],
        &[("CONSTELLA_BOT_TOKEN", NEW_TOKEN)],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bot 987654321"));
    use std::os::unix::fs::PermissionsExt;
    let file = alpha.dir.join("bot.token");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), NEW_TOKEN);
    // The running bot answers with the new token.
    let since = fake.messages_to(OWNER_ID).len();
    fake.send_text(&owner(), "/start");
    cluster.or_logs(|| {
        wait_for(ANSWER, "an answer with the new token", || {
            (fake.messages_to(OWNER_ID).len() > since).then_some(())
        })
    });
    let changed = audited(alpha, "bot_token_changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["details"]["bot_id"], "987654321");

    // From stdin too; and a restarted node keeps the token it was given.
    fake.set_token(TOKEN);
    let out = alpha.cli_with(&["bot-token", "set"], &[], Some(&format!("{TOKEN}\n")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alpha = cluster.node_mut("alpha");
    alpha.stop();
    alpha.start();
    wait_polling(&fake, "alpha");
    let since = fake.messages_to(OWNER_ID).len();
    fake.send_text(&owner(), "/start");
    wait_for(ANSWER, "an answer after the restart", || {
        (fake.messages_to(OWNER_ID).len() > since).then_some(())
    });
    let logs = cluster.dump_logs() + &cluster.node("alpha").ok(&["audit"]);
    assert!(
        !logs.contains(NEW_SECRET) && !logs.contains(TOKEN_SECRET),
        "a token leaked"
    );
}

#[test]
fn a_confirmed_reboot_runs_once_even_when_the_leader_changes_before_the_second_press() {
    let fake = FakeTelegram::start(TOKEN);
    let mut cluster = hosted_cluster(&fake, &["alpha", "bravo", "charlie"], &[1, 2, 100], "alpha");
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);
    let id = list.message_id;
    fake.press(&owner(), id, &list.button("charlie").unwrap());
    let card = edited(&cluster, &fake, id, "charlie's card", &|m| {
        m.text.contains("charlie") && m.text.contains("Адрес")
    });
    fake.press(&owner(), id, &card.button("Перезагрузить сервер").unwrap());
    let confirm = edited(&cluster, &fake, id, "the confirmation", &|m| {
        m.text.starts_with("Перезагрузить charlie?")
    });
    let yes = confirm.button("Да, перезагрузить").unwrap();
    fake.press(&owner(), id, &yes);
    edited(&cluster, &fake, id, "the reboot result", &|m| {
        m.text.contains("charlie: перезагрузка запущена")
    });
    wait_for(ANSWER, "charlie's reboot command", || {
        (!reboots(cluster.node("charlie")).is_empty()).then_some(())
    });

    // The claim is network state: bravo, leading after alpha's crash, refuses the same press.
    wait_for(ANSWER, "the claim on bravo", || {
        let state = cluster.node("bravo").state_json()?;
        let claims = state["settings"]["confirmations"].as_array()?.clone();
        (!claims.is_empty()).then_some(())
    });
    cluster.node_mut("alpha").kill();
    wait_polling(&fake, "bravo");
    let answer = cluster.or_logs(|| fake.press_for_answer(&owner(), id, &yes, AGREE));
    assert!(
        answer["text"].as_str().unwrap_or("").contains("устарела"),
        "{answer}"
    );
    assert_eq!(reboots(cluster.node("charlie")).len(), 1);
    // The target marked the claim done: the state of charlie says so.
    let state = cluster.node("charlie").state_json().unwrap();
    let claims = state["settings"]["confirmations"].as_array().unwrap();
    assert!(claims.iter().any(|c| c["done"] == true), "{claims:?}");
    // And it recorded who asked in its own audit log.
    let asked = audited(cluster.node("charlie"), "reboot_requested");
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0]["who"], "telegram:5001 (@Owner_Test)");
    assert_eq!(asked[0]["details"]["outcome"], "accepted here");
}

#[test]
fn the_owner_reads_the_audit_log_in_the_bot_and_strangers_are_audited_in_summary() {
    let fake = FakeTelegram::start(TOKEN);
    let cluster = bot_cluster(&fake, &["alpha"], &[1]);
    let alpha = cluster.node("alpha");
    wait_polling(&fake, "alpha");
    fake.send_text(&owner(), "/start");
    fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);

    // Three strangers write, one twice: one entry now, the rest held back for the summary.
    for (id, name) in [
        (6201, "mallory_a"),
        (6202, "mallory_b"),
        (6201, "mallory_a"),
    ] {
        fake.send_text(&TgUser::new(id, name), "/start");
    }
    let refused = cluster.or_logs(|| {
        wait_for(ANSWER, "the strangers counted", || {
            let status = bot_status(alpha);
            (status["refused_updates"].as_u64()? >= 3).then_some(())
        });
        // Recorded without waiting for the disk: the entry follows within moments.
        wait_for(ANSWER, "the strangers audited", || {
            let refused = audited(alpha, "strangers_refused");
            (!refused.is_empty()).then_some(refused)
        })
    });
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["who"], "telegram:6201 (@mallory_a)");
    assert!(fake.messages_to(6201).is_empty());

    fake.send_text(&owner(), "/audit");
    let shown = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the audit entries", OWNER_ID, |m| {
            m.text.starts_with("📜 Журнал аудита узла alpha")
        })
    });
    for kind in ["owner_pinned", "strangers_refused"] {
        assert!(shown.text.contains(kind), "{}", shown.text);
    }
    assert!(!shown.text.contains(TOKEN_SECRET));
    assert_eq!(
        audited(alpha, "audit_viewed").len(),
        1 + 1,
        "the bot's reading and the CLI's before"
    );

    // A viewer may not read it.
    alpha.ok(&["access", "grant", "@viewer_w", "viewer"]);
    let viewer = TgUser::new(6301, "viewer_w");
    // The grant is in alpha's settings (and its bot's) before `access grant` returns.
    fake.send_text(&viewer, "/audit");
    let answer = fake.wait_message(ANSWER, "the viewer's refusal", viewer.id, |_| true);
    assert!(!answer.text.starts_with("📜"), "{}", answer.text);
    assert!(!audited(alpha, "action_refused").is_empty());
}

#[test]
fn a_new_bot_token_reaches_every_member_including_one_that_was_offline() {
    const NEW_TOKEN: &str = "987654321:BBHnewTokenForConstellaTests_9876543210";
    const NEW_SECRET: &str = "BBHnewTokenForConstellaTests_9876543210";
    let fake = FakeTelegram::start(TOKEN);
    let mut cluster = hosted_cluster(&fake, &["alpha", "bravo", "charlie"], &[1, 2, 100], "alpha");
    cluster.node_mut("charlie").stop();

    // Set on bravo, which does not host the bot; @BotFather refuses the old token from now on.
    fake.set_token(NEW_TOKEN);
    let set_at = Instant::now();
    let out = cluster.node("bravo").cli_with(
        &["bot-token", "set"],
        &[("CONSTELLA_BOT_TOKEN", NEW_TOKEN)],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = |cluster: &Cluster, node: &str| {
        std::fs::read_to_string(cluster.node(node).dir.join("bot.token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    cluster.or_logs(|| {
        wait_for(AGREE, "the new token on alpha", || {
            (token_file(&cluster, "alpha") == NEW_TOKEN).then_some(())
        })
    });
    let took = set_at.elapsed();
    eprintln!("BENCH bot-token set on one member to the token stored on another: {took:?}");
    // The leader's bot answers with it.
    fake.send_text(&owner(), "/start");
    cluster.or_logs(|| fake.wait_message(AGREE, "an answer with the new token", OWNER_ID, is_list));
    let received = audited(cluster.node("alpha"), "bot_token_changed");
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0]["details"]["bot_id"], "987654321");
    assert_eq!(received[0]["from"], "network");

    // charlie was offline during the change: it fetches the token when it comes back.
    assert_ne!(token_file(&cluster, "charlie"), NEW_TOKEN);
    cluster.node_mut("charlie").start();
    cluster.or_logs(|| {
        wait_for(AGREE, "the new token on charlie", || {
            (token_file(&cluster, "charlie") == NEW_TOKEN).then_some(())
        })
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cluster.node("charlie").dir.join("bot.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Nothing showed the token: not the logs, not the states, not the audit logs.
    let mut seen = cluster.dump_logs();
    for node in &cluster.nodes {
        seen += &std::fs::read_to_string(node.dir.join("network_state.json")).unwrap_or_default();
        seen += &node.ok(&["audit"]);
    }
    assert!(!seen.contains(NEW_SECRET));
}

#[test]
fn chat_invite_gives_operators_a_one_time_account_code_and_viewers_nothing() {
    let fake = FakeTelegram::start(TOKEN);
    let cluster = hosted_cluster(&fake, &["alpha", "bravo"], &[1, 100], "alpha");
    let alpha = cluster.node("alpha");
    alpha.ok(&["access", "grant", "@viewer_v", "viewer"]);
    alpha.ok(&["access", "grant", "@operator_o", "operator"]);
    let viewer = TgUser::new(6101, "viewer_v");
    let operator = TgUser::new(6102, "operator_o");

    fake.send_text(&viewer, "/chat_invite");
    fake.wait_message(ANSWER, "the refused chat invite", viewer.id, |m| {
        m.text.contains("Недостаточно прав")
    });
    fake.send_text(&operator, "/chat_invite extra");
    fake.wait_message(ANSWER, "the usage text", operator.id, |m| {
        m.text.starts_with("Использование: /chat_invite")
    });
    let code_in = |m: &BotMessage| {
        m.text
            .split_whitespace()
            .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_owned)
    };
    fake.send_text(&operator, "/chat_invite");
    let message = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "a chat invite", operator.id, |m| {
            code_in(m).is_some()
        })
    });
    let code = code_in(&message).unwrap();
    assert!(
        message.text.contains("constella chat register"),
        "{message:?}"
    );
    fake.send_text(&owner(), "/chat_invite");
    fake.wait_message(ANSWER, "the owner's chat invite", OWNER_ID, |m| {
        code_in(m).is_some()
    });

    // The code registers an account on another member, once.
    let register = |home: &str, name: &str| {
        let home = cluster.root.path().join(home);
        let email = format!("{name}@example.org");
        cluster.node("bravo").cli_with(
            &[
                "chat",
                "--home",
                home.to_str().unwrap(),
                "--password-stdin",
                "register",
                "--username",
                name,
                "--email",
                &email,
                "--invite",
                &code,
            ],
            &[],
            Some("correct horse battery\n"),
        )
    };
    let out = register("first", "tina");
    assert!(out.status.success(), "{}", common::output_text(&out));
    let out = register("second", "uma");
    assert!(!out.status.success());
    assert!(
        common::output_text(&out).contains("InvalidInvite"),
        "{}",
        common::output_text(&out)
    );
    // Audited with who asked, never the code.
    let issued = audited(alpha, "chat_invite_issued");
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert!(
        issued.iter().any(
            |e| e["who"] == "telegram:6102 (@operator_o)" && e["details"]["role"] == "operator"
        ),
        "{issued:?}"
    );
    assert!(!alpha.ok(&["audit", "--json"]).contains(&code));
}

/// Removing a node from the bot (issue 12): the owner alone, and only through a confirmation
/// step. An operator or a viewer sees no remove button, and their forged presses (the question
/// and a made-up confirmation) are refused by role and audited; the owner's "Отмена" changes
/// nothing; the owner's "Да, удалить" removes the node everywhere and rotates the secret, tells
/// the owner to replace the bot token the removed server knew, and cannot be pressed twice.
#[test]
fn the_owner_removes_a_node_from_the_bot_after_a_confirmation_and_no_one_else_can() {
    const REMOVE: &str = "🗑 Удалить из сети";
    let fake = FakeTelegram::start(TOKEN);
    let cluster = hosted_cluster(
        &fake,
        &["alpha", "bravo", "charlie"],
        &[1, 100, 100],
        "alpha",
    );
    let alpha = cluster.node("alpha");
    alpha.ok(&["access", "grant", "@viewer_v", "viewer"]);
    alpha.ok(&["access", "grant", "@operator_o", "operator"]);
    let charlie_short = {
        let id = cluster.node("charlie").node_id();
        id[id.len() - 8..].to_owned()
    };
    let last_answer = |since: usize| {
        wait_for(ANSWER, "an answer to the press", || {
            (fake.callback_answers().len() > since).then_some(())
        });
        fake.callback_answers().last().unwrap().1["text"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let epoch = |node: &Node| node.status().and_then(|s| s["secret_epoch"].as_u64());
    let names = |node: &Node| -> Vec<String> {
        node.peers()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect()
    };

    for user in [
        TgUser::new(6201, "viewer_v"),
        TgUser::new(6202, "Operator_O"),
    ] {
        fake.send_text(&user, "/start");
        let list = fake.wait_message(ANSWER, "the list", user.id, is_list);
        fake.press(&user, list.message_id, &list.button("charlie").unwrap());
        let card = cluster.or_logs(|| {
            fake.wait_message(ANSWER, "charlie's card", user.id, |m| {
                m.message_id == list.message_id && m.text.contains("Адрес")
            })
        });
        assert!(card.button(REMOVE).is_none(), "{card:?}");
        for data in [
            format!("d:{charlie_short}"),
            format!("D:{charlie_short}:99999999999:0011223344556677"),
        ] {
            let answers = fake.callback_answers().len();
            fake.press(&user, list.message_id, &data);
            assert!(last_answer(answers).contains("Недостаточно прав"), "{data}");
        }
    }
    assert_eq!(epoch(alpha), Some(0));
    assert_eq!(names(alpha), ["alpha", "bravo", "charlie"]);

    // The owner: no button on the bot's own node, one on charlie's card.
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "the owner's list", OWNER_ID, is_list);
    let id = list.message_id;
    fake.press(&owner(), id, &list.button("alpha").unwrap());
    let own = edited(&cluster, &fake, id, "alpha's card", &|m| {
        m.text.contains("alpha") && m.text.contains("Адрес")
    });
    assert!(own.button(REMOVE).is_none(), "{own:?}");
    fake.press(&owner(), id, "l");
    let list = edited(&cluster, &fake, id, "the list again", &|m| is_list(m));
    fake.press(&owner(), id, &list.button("charlie").unwrap());
    let card = edited(&cluster, &fake, id, "charlie's card", &|m| {
        m.text.contains("charlie") && m.text.contains("Адрес")
    });
    // Asked, then cancelled: nothing changes.
    fake.press(&owner(), id, &card.button(REMOVE).unwrap());
    let confirm = edited(&cluster, &fake, id, "the confirmation", &|m| {
        m.text.starts_with("Удалить charlie из сети навсегда?")
    });
    fake.press(&owner(), id, &confirm.button("Отмена").unwrap());
    let card = edited(&cluster, &fake, id, "the card after cancel", &|m| {
        m.text.contains("Адрес")
    });
    assert_eq!(names(alpha), ["alpha", "bravo", "charlie"]);
    // Asked and confirmed: removed everywhere, the secret rotated.
    fake.press(&owner(), id, &card.button(REMOVE).unwrap());
    let confirm = edited(&cluster, &fake, id, "the confirmation again", &|m| {
        m.text.starts_with("Удалить charlie из сети навсегда?")
    });
    let yes = confirm.button("Да, удалить").unwrap();
    fake.press(&owner(), id, &yes);
    let done = edited(&cluster, &fake, id, "the removal result", &|m| {
        m.text.contains("charlie удалён из сети")
    });
    assert!(done.text.contains("@BotFather"), "{}", done.text);
    cluster.or_logs(|| {
        wait_for(AGREE, "alpha and bravo on epoch 1 without charlie", || {
            let ok = ["alpha", "bravo"].iter().all(|n| {
                let node = cluster.node(n);
                epoch(node) == Some(1) && names(node) == ["alpha", "bravo"]
            });
            ok.then_some(())
        })
    });
    // The same confirmation again does nothing.
    let answer = fake.press_for_answer(&owner(), id, &yes, ANSWER);
    assert!(
        answer["text"].as_str().unwrap_or("").contains("устарела"),
        "{answer}"
    );
    assert_eq!(epoch(alpha), Some(1));
    // Audited: the owner's removal, and the four refused presses.
    let removed = audited(alpha, "node_removed");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["details"]["node"], "charlie");
    assert!(
        removed[0]["who"]
            .as_str()
            .unwrap_or("")
            .starts_with("telegram:5001"),
        "{removed:?}"
    );
    let refused = audited(alpha, "action_refused")
        .into_iter()
        .filter(|e| e["details"]["action"] == "remove")
        .count();
    assert_eq!(refused, 4);
}

/// One HTTP/1.1 exchange with the web panel at `addr` (plain HTTP on loopback): the whole
/// answer, head and body.
fn http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the web panel answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn web_gives_the_owner_a_login_link_to_the_leaders_panel() {
    let fake = FakeTelegram::start(TOKEN);
    let port = common::free_port();
    let web = format!("127.0.0.1:{port}");
    let cluster = Cluster::start_with(&["alpha"], &[1], None, |node: &mut Node| {
        node.init_args = vec!["--bot-token".into(), TOKEN.into()];
        node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
        node.env = vec![("CONSTELLA_WEB_ADDR".into(), web.clone())];
    });
    let alpha = cluster.node("alpha");
    wait_polling(&fake, "alpha");
    fake.send_text(&owner(), "/start");
    fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);
    fake.send_text(&owner(), "/web");
    let message = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the login link", OWNER_ID, |m| {
            m.text.contains("/login?t=")
        })
    });
    let link = message
        .text
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a link")
        .to_owned();
    assert!(
        link.starts_with(&format!("http://{web}/login?t=")),
        "{link}"
    );
    let token = link.rsplit_once("t=").unwrap().1;
    let login = http(
        &web,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {web}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\nt={token}",
            token.len() + 2
        ),
    );
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let page = http(
        &web,
        &format!("GET / HTTP/1.1\r\nHost: {web}\r\nCookie: {pair}\r\nConnection: close\r\n\r\n"),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("• alpha — Хост"), "{page}");
    // The session is the owner's Telegram account, listed on the node.
    let sessions = alpha.ok(&["web-sessions"]);
    assert!(
        sessions.contains(&format!("telegram:{OWNER_ID} (@Owner_Test)")),
        "{sessions}"
    );
    let issued = audited(alpha, "web_link_issued");
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["from"], "telegram");
}

/// Restarting a systemd unit from Telegram goes through a signed one-time button, like a
/// reboot: from the node card (`⚙️ Службы` → `🔄 UNIT` → `Да, перезапустить`) and from
/// `/restart NODE UNIT`, which answers with that confirmation. The restart runs on the named
/// node (a stand-in systemctl counts it: this test is about the bot; tests/systemd_hosts.rs
/// restarts a real unit); a second press, a forged MAC, another unit's MAC and the old text
/// confirmation all do nothing.
#[test]
fn a_unit_restart_from_telegram_needs_its_signed_button_and_runs_once() {
    let fake = FakeTelegram::start(TOKEN);
    let standin = tempfile::tempdir().unwrap();
    let script = common::systemctl_standin(standin.path());
    let cluster = Cluster::start_with(&["alpha", "bravo"], &[1, 100], None, |node: &mut Node| {
        node.init_args = vec!["--bot-token".into(), TOKEN.into()];
        node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
        node.env = vec![
            ("CONSTELLA_SYSTEMCTL".into(), script.display().to_string()),
            ("STANDIN_DIR".into(), standin.path().display().to_string()),
        ];
    });
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    assert_eq!(agreed_leader(&nodes, &["alpha", "bravo"], AGREE), "alpha");
    wait_polling(&fake, "alpha");
    let alpha = cluster.node("alpha");
    alpha.ok(&["services", "add", "bravo", "web"]);
    alpha.ok(&["services", "add", "bravo", "db"]);
    let restarts = |unit: &str| {
        std::fs::read_to_string(standin.path().join(unit))
            .map(|n| n.trim().parse::<u32>().unwrap())
            .unwrap_or(0)
    };

    // From the card.
    fake.send_text(&owner(), "/start");
    let list = fake.wait_message(ANSWER, "the node list", OWNER_ID, is_list);
    let id = list.message_id;
    fake.press(&owner(), id, &list.button("bravo").unwrap());
    let card = edited(&cluster, &fake, id, "bravo's card", &|m| {
        m.text.contains("Адрес") && m.button("Службы").is_some()
    });
    fake.press(&owner(), id, &card.button("⚙️ Службы").unwrap());
    let units = edited(&cluster, &fake, id, "bravo's units", &|m| {
        m.text.starts_with("Службы bravo")
    });
    assert!(
        units.text.contains("🟢 web.service — active"),
        "{}",
        units.text
    );
    assert!(units.button("🔄 db.service").is_some(), "{units:?}");
    fake.press(&owner(), id, &units.button("🔄 web.service").unwrap());
    let confirm = edited(&cluster, &fake, id, "the confirmation", &|m| {
        m.text
            .starts_with("Перезапустить службу web.service на bravo?")
    });
    assert_eq!(restarts("web.service"), 0, "asked, not yet confirmed");
    let yes = confirm.button("Да, перезапустить").unwrap();
    fake.press(&owner(), id, &yes);
    edited(&cluster, &fake, id, "the restart's result", &|m| {
        m.text.starts_with("✅ web.service: перезапущена")
    });
    assert_eq!(restarts("web.service"), 1);
    assert_eq!(restarts("db.service"), 0);

    // The same press again, a forged MAC, and the MAC moved to another unit: refused.
    let forged = format!("{}{}", &yes[..yes.len() - 4], "0000");
    let db_ref = units
        .button("🔄 db.service")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let web_ref = yes.split(':').nth(2).unwrap().to_owned();
    let moved = yes.replace(&web_ref, &db_ref);
    for data in [&yes, &forged, &moved] {
        let answer = fake.press_for_answer(&owner(), id, data, ANSWER);
        assert!(
            answer["text"].as_str().unwrap_or("").contains("устарела"),
            "{data}: {answer}"
        );
    }
    assert_eq!(restarts("web.service"), 1);
    assert_eq!(restarts("db.service"), 0);

    // `/restart NODE UNIT` answers with the signed confirmation; the old text one is gone.
    fake.send_text(&owner(), "/restart bravo db да");
    fake.wait_message(ANSWER, "the usage", OWNER_ID, |m| {
        m.text.starts_with("Использование: /services")
    });
    fake.send_text(&owner(), "/restart bravo nosuch");
    fake.wait_message(ANSWER, "not watched", OWNER_ID, |m| {
        m.text.contains("nosuch.service не отслеживается на bravo")
    });
    fake.send_text(&owner(), "/restart bravo db");
    let confirm = cluster.or_logs(|| {
        fake.wait_message(ANSWER, "the command's confirmation", OWNER_ID, |m| {
            m.text
                .starts_with("Перезапустить службу db.service на bravo?")
                && m.button("Да, перезапустить").is_some()
        })
    });
    assert_eq!(restarts("db.service"), 0);
    fake.press(
        &owner(),
        confirm.message_id,
        &confirm.button("Да, перезапустить").unwrap(),
    );
    edited(
        &cluster,
        &fake,
        confirm.message_id,
        "the command's result",
        &|m| m.text.starts_with("✅ db.service: перезапущена"),
    );
    assert_eq!(restarts("db.service"), 1);
    assert_eq!(restarts("web.service"), 1);
    // Signed for its own message: pressed under another, it does not verify.
    let answer = fake.press_for_answer(
        &owner(),
        id,
        &confirm.button("Да, перезапустить").unwrap(),
        ANSWER,
    );
    assert!(answer["text"].as_str().unwrap_or("").contains("устарела"));
    assert_eq!(restarts("db.service"), 1);
}
