//! Real network faults: nodes in network namespaces on a bridge, faults made by dropping
//! packets on the bridge with nft (no FIN, RST or ICMP reaches anyone), so a host vanishes the
//! way a VPS does, not the way a killed process on 127.0.0.1 does. Needs root (see
//! `common::netns`): skipped with a printed reason otherwise, and failing under `CI=true`.
//!
//! The deadlines here are generous bounds for a loaded 2-core machine; the figures each test
//! prints (and `benches/faults.rs` over many rounds) are the measurements.

mod common;

use std::time::{Duration, Instant};

use common::delay_switch::Impairment;
use common::fake_telegram::{BotMessage, FakeTelegram, TgUser};
use common::netns::{Lab, NAMES, Net, SERVICES_IP, agree};
use common::{Node, wait_for};

fn all(net: &Net) -> Vec<&Node> {
    net.nodes.iter().collect()
}

/// Lines of a node's log with "member offline" (its false offline marks, in a lossy run).
fn offline_marks(node: &Node) -> usize {
    node.log_text().matches("member offline").count()
}

#[test]
fn a_silent_leader_is_replaced_and_comes_back() {
    let Some(lab) = Lab::new(3) else { return };
    let net = Net::start(&lab, 3);
    net.or_logs(|| {
        let names = net.names(&[0, 1, 2]);
        let (leader, _) = agree(&all(&net), &names, &[], Duration::from_secs(20));
        assert_eq!(leader, "alpha");

        lab.isolate(0);
        let survivors: Vec<&Node> = net.nodes[1..].iter().collect();
        let (next, took) = agree(
            &survivors,
            &names[1..],
            &names[..1],
            Duration::from_secs(15),
        );
        assert_eq!(next, "bravo");
        eprintln!("figure: silent leader loss -> survivors agree on bravo in {took:?}");

        lab.heal();
        let (back, took) = agree(&all(&net), &names, &[], Duration::from_secs(20));
        assert_eq!(back, "alpha");
        eprintln!("figure: heal after a silent leader -> all agree in {took:?}");
    });
}

#[test]
fn a_three_two_partition_heals_and_the_minority_stands_down() {
    let Some(lab) = Lab::new(5) else { return };
    let net = Net::start(&lab, 5);
    net.or_logs(|| {
        let names = net.names(&[0, 1, 2, 3, 4]);
        agree(&all(&net), &names, &[], Duration::from_secs(30));

        // The leader's side is the minority: it must stop hosting, the majority elects charlie.
        lab.partition(&[0, 1], &[2, 3, 4]);
        let majority: Vec<&Node> = net.nodes[2..].iter().collect();
        let (leader, took) = agree(&majority, &names[2..], &names[..2], Duration::from_secs(15));
        assert_eq!(leader, "charlie");
        eprintln!("figure: 2|3 partition -> majority agrees in {took:?}");
        let minority = &net.nodes[0];
        wait_for(
            Duration::from_secs(15),
            "alpha to report the partition and stand down",
            || {
                let status = minority.status()?;
                (status["partitioned"]["sees"] == 2
                    && status["partitioned"]["of"] == 5
                    && status["hosting"] == false)
                    .then_some(())
            },
        );
        let text = minority.ok(&["status"]);
        assert!(text.contains("partitioned: sees 2 of 5"), "{text}");

        // Hold it for 30 s, then heal: one leader and everyone alive again within seconds.
        let held = Instant::now();
        wait_for(
            Duration::from_secs(40),
            "the partition to last 30 s",
            || (held.elapsed() >= Duration::from_secs(30)).then_some(()),
        );
        lab.heal();
        let (leader, took) = agree(&all(&net), &names, &[], Duration::from_secs(30));
        assert_eq!(leader, "alpha");
        eprintln!("figure: heal after a 30 s 2|3 partition -> all agree in {took:?}");
        let status = net.nodes[0].status().unwrap();
        assert!(status["partitioned"].is_null(), "{status}");
        assert_eq!(status["hosting"], true);
    });
}

#[test]
fn one_way_loss_of_the_leader_heals() {
    let Some(lab) = Lab::new(3) else { return };
    let net = Net::start(&lab, 3);
    net.or_logs(|| {
        let names = net.names(&[0, 1, 2]);
        agree(&all(&net), &names, &[], Duration::from_secs(20));
        lab.drop_egress(0);
        let survivors: Vec<&Node> = net.nodes[1..].iter().collect();
        let (next, took) = agree(
            &survivors,
            &names[1..],
            &names[..1],
            Duration::from_secs(15),
        );
        assert_eq!(next, "bravo");
        eprintln!("figure: leader egress dropped -> survivors agree in {took:?}");
        let held = Instant::now();
        wait_for(Duration::from_secs(30), "the fault to last 20 s", || {
            (held.elapsed() >= Duration::from_secs(20)).then_some(())
        });
        lab.heal();
        let (leader, took) = agree(&all(&net), &names, &[], Duration::from_secs(30));
        assert_eq!(leader, "alpha");
        eprintln!("figure: heal after 20 s of one-way loss -> all agree in {took:?}");
    });
}

#[test]
fn back_to_back_joins_are_listed_everywhere() {
    let Some(lab) = Lab::new(5) else { return };
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = NAMES.iter().map(|n| Node::new(root.path(), n)).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        lab.attach(node, i);
        node.port = 7000;
    }
    nodes[0].init(100);
    nodes[0].start();
    let mut slowest = Duration::ZERO;
    for i in 1..nodes.len() {
        let link = nodes[0].invite("5m");
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            nodes[i].join(&link, 100);
        }));
        if let Err(panic) = joined {
            eprintln!("==== seed\n{}", nodes[0].log_text());
            std::panic::resume_unwind(panic);
        }
        let started = Instant::now();
        nodes[i].start();
        let newcomer = nodes[i].name.clone();
        let earlier = &nodes[..i];
        wait_for(
            Duration::from_secs(10),
            &format!("every node to list {newcomer} alive"),
            || {
                earlier
                    .iter()
                    .all(|n| {
                        n.ask_socket(r#"{"command":"peers"}"#)
                            .and_then(|a| {
                                a["peers"].as_array().map(|p| {
                                    p.iter().any(|p| {
                                        p["name"] == newcomer.as_str() && p["status"] == "alive"
                                    })
                                })
                            })
                            .unwrap_or(false)
                    })
                    .then_some(())
            },
        );
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("figure: back-to-back joins -> slowest newcomer listed alive everywhere {slowest:?}");
}

/// Issue 11: 20 % loss on every packet for `CONSTELLA_LOSSY_SECS` (30 here): no member is
/// marked offline and the leader never changes. A heartbeat stuck in one connection's TCP
/// retransmissions is covered by the other member's vouch (the failure detector's indirect
/// probe); before that, one false mark in some runs.
#[test]
fn a_lossy_network_marks_nobody_offline() {
    let Some(lab) = Lab::new(3) else { return };
    let net = Net::start(&lab, 3);
    net.or_logs(|| {
        let names = net.names(&[0, 1, 2]);
        agree(&all(&net), &names, &[], Duration::from_secs(20));
        let before: Vec<usize> = net.nodes.iter().map(offline_marks).collect();
        let changes_before: Vec<u64> = net
            .nodes
            .iter()
            .map(|n| n.status().unwrap()["leader_changes"].as_u64().unwrap())
            .collect();
        let secs: u64 = std::env::var("CONSTELLA_LOSSY_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        lab.loss(20);
        let held = Instant::now();
        wait_for(
            Duration::from_secs(secs + 10),
            "the lossy run to end",
            || (held.elapsed() >= Duration::from_secs(secs)).then_some(()),
        );
        lab.heal();
        for (i, node) in net.nodes.iter().enumerate() {
            let marks = offline_marks(node) - before[i];
            let changes =
                node.status().unwrap()["leader_changes"].as_u64().unwrap() - changes_before[i];
            eprintln!(
                "figure: 20 % loss for {secs} s: {} offline marks {marks}, leader changes {changes}, failure detector {}",
                node.name,
                node.status().unwrap()["failure_detector"]
            );
            assert_eq!(marks, 0, "{} marked a member offline", node.name);
            assert_eq!(changes, 0, "{} changed leader", node.name);
        }
    });
}

/// The fake Bot API's token (see tests/bot.rs).
const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
const OWNER_ID: u64 = 5001;

fn owner() -> TgUser {
    TgUser::new(OWNER_ID, "Owner_Test")
}

fn is_list(m: &BotMessage) -> bool {
    m.text.starts_with("Узлы сети")
}

fn reboots(node: &Node) -> usize {
    std::fs::read_to_string(node.dir.with_extension("rebooted"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Issue 11, split brain: every node has the bot, both sides of a 2|3 partition keep running
/// for `CONSTELLA_SPLIT_SECS` (30; the figure run holds 150, past the 2 min after which an
/// earlier rule let the minority host again). Only the majority's leader starts polls after
/// the minority stood down; every owner message sent meanwhile is answered exactly once; a
/// reboot confirmed through the majority's bot runs once, and the same press after the heal,
/// at the minority's returned leader, is refused as stale.
#[test]
fn a_long_partition_never_lets_the_minority_poll_and_nothing_is_handled_twice() {
    let Some(lab) = Lab::new(5) else { return };
    let fake = FakeTelegram::start(TOKEN);
    let net = Net::start_with(&lab, 5, |node| {
        let url = lab.in_services(|| fake.url_for_at(&node.name, SERVICES_IP));
        node.use_fake_bot_and_reboot_marker(TOKEN, url);
    });
    let hold = Duration::from_secs(
        std::env::var("CONSTELLA_SPLIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let answer = Duration::from_secs(15);
    net.or_logs(|| {
        let names = net.names(&[0, 1, 2, 3, 4]);
        let (leader, _) = agree(&all(&net), &names, &[], Duration::from_secs(30));
        assert_eq!(leader, "alpha");
        wait_for(answer, "alpha to poll", || {
            fake.polls().iter().any(|p| p.node == "alpha").then_some(())
        });
        fake.send_text(&owner(), "/start");
        fake.wait_message(answer, "the node list from alpha", OWNER_ID, |m| {
            is_list(m) && m.sent_by == "alpha"
        });

        lab.partition(&[0, 1], &[2, 3, 4]);
        let split = Instant::now();
        let majority: Vec<&Node> = net.nodes[2..].iter().collect();
        let (leader, _) = agree(&majority, &names[2..], &names[..2], Duration::from_secs(15));
        assert_eq!(leader, "charlie");
        for minority in &net.nodes[..2] {
            wait_for(answer, "the minority to stand down", || {
                let status = minority.status()?;
                (status["hosting"] == false && status["bot"]["polling"] == false).then_some(())
            });
        }
        let stood_down = Instant::now();
        wait_for(answer, "charlie to poll", || {
            fake.polls()
                .iter()
                .any(|p| p.node == "charlie" && p.started > split)
                .then_some(())
        });

        // The owner writes throughout the partition; each message is answered once.
        let lists_before = fake.messages_to(OWNER_ID).iter().filter(|m| is_list(m)).count();
        let mut sent = 0;
        while split.elapsed() < hold {
            fake.send_text(&owner(), "/start");
            sent += 1;
            let want = lists_before + sent;
            wait_for(answer, "the answer to /start", || {
                let lists = fake.messages_to(OWNER_ID).into_iter().filter(is_list).count();
                (lists >= want).then_some(())
            });
            std::thread::sleep(Duration::from_millis(500));
        }

        // A reboot of delta through charlie's bot, confirmed once.
        fake.send_text(&owner(), "/start");
        sent += 1;
        wait_for(answer, "a fresh node list", || {
            let lists = fake.messages_to(OWNER_ID).into_iter().filter(is_list).count();
            (lists >= lists_before + sent).then_some(())
        });
        let lists: Vec<BotMessage> = fake.messages_to(OWNER_ID).into_iter().filter(is_list).collect();
        assert_eq!(lists.len(), lists_before + sent, "each /start answered exactly once");
        assert!(
            lists[lists_before..].iter().all(|m| m.sent_by == "charlie"),
            "only the majority's bot answered: {:?}",
            lists[lists_before..].iter().map(|m| &m.sent_by).collect::<Vec<_>>()
        );
        let list = lists.last().expect("a list").clone();
        let id = list.message_id;
        fake.press(&owner(), id, &list.button("delta").expect("delta's button"));
        let card = fake.wait_message(answer, "delta's card", OWNER_ID, |m| {
            m.message_id == id && m.text.contains("delta") && m.text.contains("Адрес")
        });
        fake.press(&owner(), id, &card.button("Перезагрузить сервер").unwrap());
        let confirm = fake.wait_message(answer, "the confirmation", OWNER_ID, |m| {
            m.message_id == id && m.text.starts_with("Перезагрузить delta?")
        });
        let yes = confirm.button("Да, перезагрузить").unwrap();
        fake.press(&owner(), id, &yes);
        wait_for(answer, "delta's reboot command", || {
            (reboots(&net.nodes[3]) == 1).then_some(())
        });
        let healed = Instant::now();
        lab.heal();

        // Only charlie started polls between the stand-down and the heal.
        let mut pollers: Vec<String> = fake
            .polls()
            .into_iter()
            .filter(|p| p.started > stood_down && p.started < healed)
            .map(|p| p.node)
            .collect();
        pollers.dedup();
        assert_eq!(pollers, ["charlie"], "pollers during the partition");
        eprintln!(
            "figure: 2|3 partition held {:.0} s with bots on both sides: pollers {pollers:?}, {sent} owner messages each answered once",
            healed.duration_since(split).as_secs_f64(),
        );

        // After the heal alpha hosts again; the same confirmation pressed again is refused.
        let (leader, _) = agree(&all(&net), &names, &[], Duration::from_secs(30));
        assert_eq!(leader, "alpha");
        wait_for(answer, "alpha to poll again", || {
            fake.polls()
                .iter()
                .any(|p| p.node == "alpha" && p.started > healed)
                .then_some(())
        });
        wait_for(answer, "the claim on alpha", || {
            let state = net.nodes[0].state_json()?;
            let claims = state["settings"]["confirmations"].as_array()?.clone();
            (!claims.is_empty()).then_some(())
        });
        let answer_body = fake.press_for_answer(&owner(), id, &yes, answer);
        assert!(
            answer_body["text"].as_str().unwrap_or("").contains("устарела"),
            "{answer_body}"
        );
        assert_eq!(reboots(&net.nodes[3]), 1, "the reboot ran once");
    });
}

/// Issue 11: 5 % loss with 100 ± 50 ms of delay on every frame (a userspace switch, since the
/// kernel here has no netem) for `CONSTELLA_SOAK_SECS` (30 here; the 10-minute soak is
/// `a_ten_minute_lossy_jittery_soak_marks_nobody_offline`): no member is marked offline and
/// the leader never changes.
///
/// With only the direct path this failed in every run (1–4 false offline marks per node and up
/// to 4 leader changes in 30 s): one path per heartbeat leaves no slack for a retransmission
/// timeout near 0.5 s at a 200 ms round trip. The indirect probes (a member not heard directly
/// for 1.25 s is asked about; another's vouch keeps it alive) cover a stalled connection, but
/// at load average ~13 on 2 cores it still failed 3 of 5 runs: a node that had not run for
/// about 2 s (starved) read its timer before the heartbeats waiting in its sockets and marked
/// members offline. Local health awareness (behaviours/src/health.rs: a late node excuses the
/// time it was not running and stretches its bound) covers that case. With it, 3 of 4 runs
/// passed at load average 16–30; the failing one (load ~30) had marks [1, 0, 2] with NO late
/// wake on any node: one node heard by neither other and hearing neither for ~2.5 s. Not a
/// starved daemon but the starved userspace switch, the one thread every frame goes through
/// (its own TCP connect took 1.3 s instead of ~0.45 s). It now runs at a real-time priority
/// (tests/common/delay_switch.rs),
/// and the test passed 7 of 7 runs, 2 of them beside the whole fault suite and 3 beside two
/// CPU-bound simulator runs.
/// `CONSTELLA_FAULTS_LOGS=dir CONSTELLA_TEST_LOG=info,constella::daemon::beats=debug` keeps the
/// node logs (asks, vouches, late wakes) for a look.
#[test]
fn a_lossy_jittery_network_marks_nobody_offline() {
    let secs: u64 = std::env::var("CONSTELLA_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    lossy_jittery(secs);
}

/// Issue 11's soak: the same network for 10 minutes (about 11 minutes in all). Run:
/// `cargo test --test faults a_ten_minute -- --ignored --nocapture` (as root). Its first run
/// (load average ~30, the switch at a normal priority) failed: offline marks [1, 1, 2], one
/// node heard by neither other for ~2.5 s with no late wake anywhere. With the switch at a
/// real-time priority: marks [0, 0, 0], no leader change (docs/design.md, measured figures).
#[test]
#[ignore = "10 minutes; run with --ignored (the 30 s version runs by default)"]
fn a_ten_minute_lossy_jittery_soak_marks_nobody_offline() {
    lossy_jittery(600);
}

fn lossy_jittery(secs: u64) {
    let Some(lab) = Lab::new(3) else { return };
    let (marks, changes, rtt, counts, late) = soak(&lab, 3, secs);
    eprintln!(
        "figure: 5 % loss, 100 ± 50 ms for {secs} s: TCP connect {rtt:?}; frames forwarded/dropped {counts:?}; offline marks {marks:?}, leader changes {changes:?}; late wakes (count, longest ms) {late:?}"
    );
    assert!(
        rtt >= Duration::from_millis(100),
        "the delay applies: connect took {rtt:?}"
    );
    assert!(marks.iter().all(|m| *m == 0), "offline marks {marks:?}");
    assert!(
        changes.iter().all(|c| *c == 0),
        "leader changes {changes:?}"
    );
}

/// Starts `n` nodes behind 5 % loss and 100 ± 50 ms (from the start: a network whose delay
/// jumps from nothing to 200 ms round trips mid-connection is not the fault under test), waits
/// until they agree, then runs them for `secs`; returns each node's offline marks and leader
/// changes meanwhile, one TCP connect's time through the switch, the switch's (forwarded,
/// dropped) frame counts, and each node's late wakes (count, longest in ms: its process did
/// not run for a while, see behaviours/src/health.rs).
type Soak = (Vec<usize>, Vec<u64>, Duration, (u64, u64), Vec<(u64, u64)>);

fn soak(lab: &Lab, n: usize, secs: u64) -> Soak {
    let switch = lab.impair(Impairment {
        loss_percent: 5,
        delay: Duration::from_millis(100),
        jitter: Duration::from_millis(50),
    });
    let net = Net::start(lab, n);
    let names = net.names(&(0..n).collect::<Vec<_>>());
    net.or_logs(|| agree(&all(&net), &names, &[], Duration::from_secs(60)));
    let leader_changes = |n: &Node| n.status().unwrap()["leader_changes"].as_u64().unwrap();
    let marks_before: Vec<usize> = net.nodes.iter().map(offline_marks).collect();
    let changes_before: Vec<u64> = net.nodes.iter().map(leader_changes).collect();
    let target: std::net::SocketAddr = format!("{}:7000", lab.ip(0)).parse().unwrap();
    let rtt = lab.in_services(|| {
        let started = Instant::now();
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10))
            .expect("connect through the switch");
        started.elapsed()
    });
    let held = Instant::now();
    wait_for(Duration::from_secs(secs + 10), "the soak to end", || {
        (held.elapsed() >= Duration::from_secs(secs)).then_some(())
    });
    let counts = switch.counts();
    let marks: Vec<usize> = net
        .nodes
        .iter()
        .zip(&marks_before)
        .map(|(n, b)| offline_marks(n) - b)
        .collect();
    let changes = net
        .nodes
        .iter()
        .zip(&changes_before)
        .map(|(n, b)| leader_changes(n) - b)
        .collect();
    if let Ok(dir) = std::env::var("CONSTELLA_FAULTS_LOGS") {
        // Whole node logs for a closer look (run with CONSTELLA_TEST_LOG=debug or narrower).
        for node in &net.nodes {
            let path = std::path::Path::new(&dir).join(format!("{}.log", node.name));
            std::fs::write(&path, node.log_text()).expect("write a node log");
            eprintln!("{}: log in {}", node.name, path.display());
        }
    }
    if marks.iter().any(|m| *m > 0) {
        for node in &net.nodes {
            for line in node
                .log_text()
                .lines()
                .filter(|l| l.contains("member offline"))
            {
                eprintln!("{}: {line}", node.name);
            }
        }
    }
    for node in &net.nodes {
        eprintln!(
            "{}: failure detector {}",
            node.name,
            node.status().unwrap()["failure_detector"]
        );
    }
    let late = net
        .nodes
        .iter()
        .map(|node| {
            let detector = &node.status().unwrap()["failure_detector"];
            let field = |k: &str| detector[k].as_u64().unwrap_or(0);
            (field("late_wakes"), field("longest_late_ms"))
        })
        .collect();
    drop(switch);
    (marks, changes, rtt, counts, late)
}
