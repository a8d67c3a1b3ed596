//! Monitoring with real nodes on 127.0.0.1: the metric history survives a restart and is
//! served to another node over `GetHistory`; `/metrics` parses with a Prometheus text-format
//! parser and its figures move with the network.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, Node, free_port, wait_for};

/// Samples every second instead of every 10 s (still stored in 10-second slots).
const FAST_SAMPLING: (&str, &str) = ("CONSTELLA_TEST_SAMPLE_INTERVAL_MS", "1000");

type HistoryJson = BTreeMap<String, Vec<(u64, f64)>>;

fn history(from: &Node, target: &str, range: &str) -> Option<HistoryJson> {
    let out = from.cli(&["stats", target, "--history", range, "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The 10-second slots that hold points (faster samples overwrite each other in a slot).
fn slots(points: &[(u64, f64)]) -> Vec<u64> {
    points.iter().map(|p| p.0 / 10).collect()
}

fn fast(node: &mut Node) {
    node.env
        .push((FAST_SAMPLING.0.to_owned(), FAST_SAMPLING.1.to_owned()));
}

#[test]
fn history_survives_a_restart_and_is_asked_from_another_node() {
    let mut cluster = Cluster::start_with(&["alpha", "bravo"], &[10, 20], None, fast);
    let before: Vec<u64> = cluster.or_logs(|| {
        let alpha = cluster.node("alpha");
        wait_for(
            Duration::from_secs(40),
            "two 10-second slots of cpu_percent",
            || {
                let h = history(alpha, "alpha", "1h")?;
                let cpu = h.get("cpu_percent")?;
                (cpu.len() >= 2).then(|| slots(cpu))
            },
        )
    });
    cluster.or_logs(|| {
        let h = history(cluster.node("alpha"), "alpha", "1h").unwrap();
        for metric in [
            "cpu_percent",
            "ram_used_bytes",
            "net_rx_bytes_per_sec",
            "net_tx_bytes_per_sec",
        ] {
            let points = h
                .get(metric)
                .unwrap_or_else(|| panic!("{metric} missing: {h:?}"));
            assert!(!points.is_empty(), "{metric} has no points");
        }
        assert!(h["ram_used_bytes"].iter().all(|p| p.1 > 0.0));
        // bravo asks alpha over GetHistory and sees alpha's samples.
        let remote = wait_for(
            Duration::from_secs(15),
            "bravo to get alpha's history",
            || history(cluster.node("bravo"), "alpha", "1h"),
        );
        let times = slots(&remote["cpu_percent"]);
        assert!(
            before.iter().all(|t| times.contains(t)),
            "{before:?} not in {times:?}"
        );
        // The text form: one line per series with a sparkline.
        let text = cluster
            .node("bravo")
            .ok(&["stats", "alpha", "--history", "1h"]);
        assert!(
            text.contains("cpu_percent") && text.contains("alpha over the last 1h"),
            "{text}"
        );
        // Only asked metrics, and a range beyond what is kept is refused with one line.
        let only = cluster.node("bravo").ok(&[
            "stats",
            "alpha",
            "--history",
            "24h",
            "--json",
            "--metric",
            "load1",
        ]);
        let only: HistoryJson = serde_json::from_str(&only).unwrap();
        assert_eq!(only.keys().collect::<Vec<_>>(), vec!["load1"]);
        let out = cluster
            .node("bravo")
            .cli(&["stats", "alpha", "--history", "31d"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("30 days"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    // Restart alpha: what it sampled before is still there.
    cluster.node_mut("alpha").stop();
    cluster.node_mut("alpha").start();
    cluster.or_logs(|| {
        let h = history(cluster.node("alpha"), "alpha", "1h").unwrap();
        let times = slots(&h["cpu_percent"]);
        assert!(
            before.iter().all(|t| times.contains(t)),
            "{before:?} not in {times:?}"
        );
        let dir = cluster.node("alpha").dir.join("history");
        let size = std::fs::metadata(dir.join("10s").join("cpu_percent.ring"))
            .unwrap()
            .len();
        assert_eq!(size, 16 + 8640 * 8, "a ring file has its fixed size");
    });
}

/// `GET /metrics` over plain HTTP/1.1; the body.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of sample `name` with label `label` (if given) in a parsed scrape.
fn value(body: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    use prometheus_parse::{Scrape, Value};
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// The sum of every sample of `name` (all label sets) in a parsed scrape.
fn sum(body: &str, name: &str) -> f64 {
    use prometheus_parse::{Scrape, Value};
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_endpoint_parses_and_follows_the_network() {
    let port = free_port();
    let mut cluster = Cluster::start_with(&["alpha", "bravo"], &[10, 20], None, |node| {
        fast(node);
        if node.name == "alpha" {
            node.run_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
        }
    });
    cluster.or_logs(|| {
        wait_for(Duration::from_secs(20), "both members alive", || {
            let body = scrape(port)?;
            (value(&body, "constella_members", Some(("status", "alive"))) == Some(2.0))
                .then_some(())
        });
        // A settings change on bravo reaches alpha as a gossip message (an idle network sends
        // none: heartbeats have their own protocol).
        cluster.node("bravo").ok(&["alerts", "set", "cpu", "95"]);
        let body = wait_for(
            Duration::from_secs(20),
            "a scrape with a sample and bravo's settings received",
            || {
                let body = scrape(port)?;
                (value(&body, "constella_cpu_percent", None).is_some()
                    && sum(&body, "libp2p_gossipsub_messages_total") >= 1.0)
                    .then_some(body)
            },
        );
        assert_eq!(
            value(&body, "constella_is_leader", None),
            Some(1.0),
            "{body}"
        );
        assert!(value(&body, "constella_ram_used_bytes", None).unwrap() > 0.0);
        assert!(
            value(&body, "constella_leader_changes_total", None).is_some(),
            "{body}"
        );
        assert!(value(&body, "constella_disk_used_percent", Some(("mount", "/"))).is_some());
        // libp2p's own metrics, in the same exposition (one `# EOF`, at the end).
        assert!(
            sum(&body, "libp2p_swarm_connections_established_total") >= 1.0,
            "{body}"
        );
        assert!(
            sum(&body, "libp2p_gossipsub_messages_total") >= 1.0,
            "{body}"
        );
        assert_eq!(body.matches("# EOF").count(), 1);
        assert!(body.ends_with("# EOF\n"));
        let first = value(&body, "constella_metrics_scrapes_total", None).unwrap();
        let next = scrape(port).unwrap();
        assert_eq!(
            value(&next, "constella_metrics_scrapes_total", None),
            Some(first + 1.0)
        );
        // Anything but GET /metrics is refused.
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    });
    cluster.node_mut("bravo").kill();
    cluster.or_logs(|| {
        wait_for(
            Duration::from_secs(30),
            "alpha's scrape to count bravo offline",
            || {
                let body = scrape(port)?;
                (value(&body, "constella_members", Some(("status", "offline"))) == Some(1.0))
                    .then_some(())
            },
        );
    });
    // A taken port is refused with one line at start.
    let mut clash = Node::new(cluster.root.path(), "charlie");
    clash.init(30);
    clash.run_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_constella"))
        .arg("--state-dir")
        .arg(&clash.dir)
        .arg("run")
        .args(&clash.run_args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen for metrics"), "{stderr}");
}

mod chart {
    use super::*;
    use common::fake_telegram::{FakeTelegram, TgUser};

    const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
    const OWNER_ID: u64 = 5001;
    const ANSWER: Duration = Duration::from_secs(15);

    #[test]
    fn the_leader_sends_a_chart_of_another_node_as_a_photo() {
        let fake = FakeTelegram::start(TOKEN);
        let cluster = Cluster::start_with(&["alpha", "bravo"], &[1, 100], None, |node| {
            fast(node);
            node.init_args = vec!["--bot-token".into(), TOKEN.into()];
            node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
        });
        let owner = TgUser::new(OWNER_ID, "Owner_Test");
        cluster.or_logs(|| {
            wait_for(ANSWER, "bravo to have sampled", || {
                let h = history(cluster.node("alpha"), "bravo", "1h")?;
                (!h.get("cpu_percent")?.is_empty()).then_some(())
            });
            wait_for(ANSWER, "alpha to poll", || {
                fake.polls().iter().any(|p| p.node == "alpha").then_some(())
            });
        });
        fake.send_text(&owner, "/start");
        let list = fake.wait_message(ANSWER, "the node list", OWNER_ID, |m| {
            m.text.starts_with("Узлы сети")
        });
        fake.press(&owner, list.message_id, &list.button("bravo").unwrap());
        let card = cluster.or_logs(|| {
            fake.wait_message(ANSWER, "bravo's card", OWNER_ID, |m| {
                m.message_id == list.message_id && m.text.contains("Адрес")
            })
        });
        let charts = card
            .button("📈 График")
            .expect("a chart button on the card");
        fake.press(&owner, list.message_id, &charts);
        let menu = cluster.or_logs(|| {
            fake.wait_message(ANSWER, "the chart ranges", OWNER_ID, |m| {
                m.message_id == list.message_id && m.button("7 д").is_some()
            })
        });
        assert!(menu.button("24 ч").is_some(), "{menu:?}");
        fake.press(&owner, list.message_id, &menu.button("1 ч").unwrap());
        let photo = cluster
            .or_logs(|| wait_for(ANSWER, "a chart photo", || fake.photos().into_iter().next()));
        assert_eq!(photo.node, "alpha", "the leader sends it");
        assert_eq!(photo.chat_id, OWNER_ID as i64);
        assert!(photo.caption.contains("bravo"), "{}", photo.caption);
        assert_eq!(photo.file_name, "bravo.png");
        let decoder = png::Decoder::new(std::io::Cursor::new(&photo.bytes));
        let reader = decoder.read_info().expect("a PNG");
        assert_eq!((reader.info().width, reader.info().height), (1000, 1100));

        // The overview of every node, in one photo.
        fake.send_text(&owner, "/overview 24h");
        let overview = cluster.or_logs(|| {
            wait_for(ANSWER, "the overview photo", || {
                fake.photos()
                    .into_iter()
                    .find(|p| p.file_name == "overview.png")
            })
        });
        assert_eq!(overview.node, "alpha");
        assert!(
            overview.caption.contains("Обзор сети"),
            "{}",
            overview.caption
        );
        let decoder = png::Decoder::new(std::io::Cursor::new(&overview.bytes));
        let reader = decoder.read_info().expect("a PNG");
        assert_eq!((reader.info().width, reader.info().height), (1000, 1100));

        // The same overview from the node list's button.
        fake.send_text(&owner, "/start");
        let list = fake.wait_message(ANSWER, "a second node list", OWNER_ID, |m| {
            m.text.starts_with("Узлы сети") && m.message_id != list.message_id
        });
        fake.press(
            &owner,
            list.message_id,
            &list.button("📊 Обзор сети").unwrap(),
        );
        let overviews = cluster.or_logs(|| {
            wait_for(ANSWER, "the overview photo from the button", || {
                let overviews: Vec<_> = fake
                    .photos()
                    .into_iter()
                    .filter(|p| p.file_name == "overview.png")
                    .collect();
                (overviews.len() == 2).then_some(overviews)
            })
        });
        assert_eq!(overviews[1].node, "alpha");
        assert!(overviews[1].caption.contains("Обзор сети"));
    }
}

mod alerts {
    use super::*;
    use common::agreed_leader_without;
    use common::fake_telegram::{FakeTelegram, TgUser};

    const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
    const OWNER_ID: u64 = 5001;
    const ANSWER: Duration = Duration::from_secs(20);

    /// Lines of every message the owner got that start with `prefix` (`🔴 alpha: ОЗУ`).
    fn lines(fake: &FakeTelegram, prefix: &str) -> usize {
        fake.messages_to(OWNER_ID)
            .iter()
            .flat_map(|m| m.text.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|line| line.starts_with(prefix))
            .count()
    }

    fn alerts_json(node: &Node) -> Option<serde_json::Value> {
        let out = node.cli(&["alerts", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    /// Every RAM episode `node` knows of is told (alert, and recovery once recovered).
    fn ram_episodes_told(node: &Node, recovered: bool) -> Option<usize> {
        let report = alerts_json(node)?;
        let episodes: Vec<&serde_json::Value> = report["episodes"]
            .as_array()?
            .iter()
            .filter(|e| e["rule"] == "ram")
            .collect();
        episodes
            .iter()
            .all(|e| {
                e["alert_sent"] == true
                    && (!recovered || (e["recovered_at"].is_u64() && e["recovery_sent"] == true))
            })
            .then_some(episodes.len())
    }

    /// A bot cluster of `names` (alpha leads) sampling fast, alerts 200 ms apart, with `env`;
    /// once alpha's bot polls, the owner has sent /start and got the node list.
    fn alert_cluster(
        fake: &FakeTelegram,
        names: &[&str],
        priorities: &[u32],
        env: &[(&str, &str)],
    ) -> Cluster {
        let cluster = Cluster::start_with(names, priorities, None, |node| {
            fast(node);
            node.init_args = vec!["--bot-token".into(), TOKEN.into()];
            node.run_args = vec!["--telegram-api-url".into(), fake.url_for(&node.name)];
            node.env
                .push(("CONSTELLA_TEST_ALERT_GAP_MS".into(), "200".into()));
            for (k, v) in env {
                node.env.push(((*k).into(), (*v).into()));
            }
        });
        let owner = TgUser::new(OWNER_ID, "Owner_Test");
        cluster.or_logs(|| {
            wait_for(ANSWER, "alpha to poll", || {
                fake.polls().iter().any(|p| p.node == "alpha").then_some(())
            });
        });
        fake.send_text(&owner, "/start");
        fake.wait_message(ANSWER, "the node list", OWNER_ID, |m| {
            m.text.starts_with("Узлы сети")
        });
        cluster
    }

    /// The RAM episodes in the node's state file on disk: (alert_sent, recovery_sent) each.
    fn ram_episodes_on_disk(node: &Node) -> Vec<(bool, bool)> {
        let Some(state) = node.state_json() else {
            return Vec::new();
        };
        state["settings"]["alerts"]["episodes"]
            .as_object()
            .map(|episodes| {
                episodes
                    .values()
                    .filter(|e| e["rule"] == "ram")
                    .map(|e| (e["alert_sent"] == true, e["recovery_sent"] == true))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The "sent" mark is on disk (fsynced, renamed into place) before the message leaves:
    /// every state write is held back 1 s (a test knob), the node is killed the moment the
    /// fake Bot API has the alert, and after the restart the owner gets no second alert. With
    /// the mark only in memory and gossip (a one-node network has no one to gossip to), the
    /// restarted node would find the episode unsent and send it again.
    #[test]
    fn an_alert_marked_sent_is_on_disk_before_it_is_sent_so_a_crash_never_repeats_it() {
        const DELAY: (&str, &str) = ("CONSTELLA_TEST_STORE_DELAY_MS", "1000");
        let fake = FakeTelegram::start(TOKEN);
        let mut cluster = alert_cluster(&fake, &["alpha"], &[1], &[DELAY]);
        // The owner is on disk before the episode opens.
        cluster.or_logs(|| {
            wait_for(ANSWER, "the owner on disk", || {
                cluster.node("alpha").state_json()?["settings"]["owner_user_id"]
                    .as_u64()
                    .filter(|id| *id == OWNER_ID)
            })
        });
        cluster.node("alpha").ok(&["alerts", "set", "ram", "1"]);
        // Polled tightly: the node must be killed within the 1 s a write is held back.
        let deadline = std::time::Instant::now() + ANSWER;
        while lines(&fake, "🔴 alpha: ОЗУ") == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no alert:\n{}",
                cluster.dump_logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let on_disk = ram_episodes_on_disk(cluster.node("alpha"));
        cluster.node_mut("alpha").kill();
        assert_eq!(
            on_disk,
            vec![(true, false)],
            "the alert left before its mark was on disk"
        );
        // Restarted without the knob; it leads and polls again, and the episode recovers.
        let node = cluster.node_mut("alpha");
        node.env.retain(|(k, _)| k != DELAY.0);
        node.start();
        let polls_before = fake.polls().len();
        cluster.or_logs(|| {
            wait_for(ANSWER, "alpha to poll again", || {
                (fake.polls().len() > polls_before + 1).then_some(())
            });
        });
        cluster.node("alpha").ok(&["alerts", "set", "ram", "100"]);
        cluster.or_logs(|| {
            wait_for(ANSWER, "the recovery", || {
                (lines(&fake, "🟢 alpha: ОЗУ") >= 1).then_some(())
            });
        });
        // A repeated alert would have gone out before or with the recovery.
        assert_eq!(lines(&fake, "🔴 alpha: ОЗУ"), 1, "the alert was sent twice");
        assert_eq!(lines(&fake, "🟢 alpha: ОЗУ"), 1);
    }

    #[test]
    fn a_forced_alert_and_its_recovery_reach_the_owner_once_across_a_failover() {
        let fake = FakeTelegram::start(TOKEN);
        let names = ["alpha", "bravo", "charlie"];
        let mut cluster = alert_cluster(&fake, &names, &[1, 100, 100], &[]);

        // Defaults, and bad input refused with one line and nothing changed.
        let report = alerts_json(cluster.node("bravo")).unwrap();
        assert_eq!(report["thresholds"]["cpu"]["percent"], 90, "{report}");
        assert_eq!(report["thresholds"]["ram"]["percent"], 90);
        assert_eq!(report["thresholds"]["disk"]["percent"], 90);
        assert_eq!(report["thresholds"]["cpu"]["hold_secs"], 300);
        for bad in [["cpu", "101"], ["gpu", "50"], ["ram", "0"]] {
            let out = cluster
                .node("alpha")
                .cli(&["alerts", "set", bad[0], bad[1]]);
            assert!(!out.status.success(), "{bad:?} accepted");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("invalid") || stderr.contains("unknown"),
                "{stderr}"
            );
        }
        assert_eq!(alerts_json(cluster.node("alpha")).unwrap(), report);

        // The threshold forced low: every node's RAM is above 1 %.
        cluster.node("bravo").ok(&["alerts", "set", "ram", "1"]);
        cluster.or_logs(|| {
            wait_for(ANSWER, "the three RAM alerts", || {
                names
                    .iter()
                    .all(|n| lines(&fake, &format!("🔴 {n}: ОЗУ")) >= 1)
                    .then_some(())
            });
            // The marks reached the other nodes before the leader dies.
            for name in ["bravo", "charlie"] {
                wait_for(ANSWER, "the alerts marked sent everywhere", || {
                    (ram_episodes_told(cluster.node(name), false)? == 3).then_some(())
                });
            }
        });
        let alerts_from: Vec<String> = fake
            .messages_to(OWNER_ID)
            .iter()
            .filter(|m| m.text.contains("🔴"))
            .map(|m| m.sent_by.clone())
            .collect();
        assert!(alerts_from.iter().all(|n| n == "alpha"), "{alerts_from:?}");

        // The leader dies in the middle of the episodes; another leads.
        cluster.node_mut("alpha").kill();
        let survivors: Vec<&Node> = cluster.nodes.iter().filter(|n| n.name != "alpha").collect();
        let new_leader = cluster.or_logs(|| {
            agreed_leader_without(
                &survivors,
                &["bravo", "charlie"],
                &["alpha"],
                Duration::from_secs(40),
            )
        });
        cluster
            .node(&new_leader)
            .ok(&["alerts", "set", "ram", "100"]);
        cluster.or_logs(|| {
            wait_for(ANSWER, "the two recoveries", || {
                ["bravo", "charlie"]
                    .iter()
                    .all(|n| lines(&fake, &format!("🟢 {n}: ОЗУ")) >= 1)
                    .then_some(())
            });
        });
        // The dead leader's own episode recovers when it comes back (and leads again).
        cluster.node_mut("alpha").start();
        cluster.or_logs(|| {
            wait_for(ANSWER, "alpha's recovery", || {
                (lines(&fake, "🟢 alpha: ОЗУ") >= 1).then_some(())
            });
            for node in &cluster.nodes {
                wait_for(ANSWER, "every episode told everywhere", || {
                    (ram_episodes_told(node, true)? == 3).then_some(())
                });
            }
        });
        for name in names {
            assert_eq!(
                lines(&fake, &format!("🔴 {name}: ОЗУ")),
                1,
                "{name}'s alerts"
            );
            assert_eq!(
                lines(&fake, &format!("🟢 {name}: ОЗУ")),
                1,
                "{name}'s recoveries"
            );
        }
        let recoveries_from: Vec<String> = fake
            .messages_to(OWNER_ID)
            .iter()
            .filter(|m| m.text.contains("🟢 bravo") || m.text.contains("🟢 charlie"))
            .map(|m| m.sent_by.clone())
            .collect();
        assert!(
            recoveries_from.iter().all(|n| *n == new_leader),
            "{recoveries_from:?}"
        );
    }

    /// The monthly traffic quota forced tiny (1 KiB; the test knob counts loopback, which is
    /// all a test node talks over): one alert through the fake Bot API while the month's
    /// total keeps growing, and one recovery when the quota is turned off.
    #[test]
    fn a_node_over_a_tiny_traffic_quota_alerts_once_and_recovers_when_it_is_off() {
        const ALERT: &str = "🔴 alpha: трафик за месяц";
        let fake = FakeTelegram::start(TOKEN);
        let cluster = alert_cluster(
            &fake,
            &["alpha"],
            &[1],
            &[("CONSTELLA_TEST_COUNT_LOOPBACK", "1")],
        );
        let alpha = cluster.node("alpha");
        let report = alerts_json(alpha).unwrap();
        assert_eq!(
            report["traffic"]["enabled"], false,
            "off by default: {report}"
        );
        for bad in ["5XB", "0", "lots"] {
            let out = alpha.cli(&["alerts", "set", "traffic", bad]);
            assert!(!out.status.success(), "{bad:?} accepted");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("invalid traffic quota"), "{stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
        assert_eq!(
            alerts_json(alpha).unwrap(),
            report,
            "a refused quota changed nothing"
        );
        alpha.ok(&["alerts", "set", "traffic", "1KiB"]);
        let report = alerts_json(alpha).unwrap();
        assert_eq!(report["traffic"]["quota_bytes"], 1024, "{report}");
        assert_eq!(report["traffic"]["default"], false);
        cluster.or_logs(|| {
            wait_for(ANSWER, "the traffic alert", || {
                (lines(&fake, ALERT) >= 1).then_some(())
            });
        });
        // The month's total keeps growing over the quota for two more long polls (10 s each,
        // many sample rounds): still one.
        let polls = fake.polls().len();
        cluster.or_logs(|| {
            wait_for(Duration::from_secs(40), "two more polls", || {
                (fake.polls().len() >= polls + 2).then_some(())
            });
        });
        let report = alerts_json(alpha).unwrap();
        let episodes: Vec<&serde_json::Value> = report["episodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["rule"] == "traffic")
            .collect();
        assert_eq!(episodes.len(), 1, "{report}");
        assert!(
            episodes[0]["used_bytes"].as_u64().unwrap() > 1024,
            "{report}"
        );
        assert_eq!(episodes[0]["quota_bytes"], 1024);
        assert_eq!(lines(&fake, ALERT), 1, "the traffic alert was sent twice");
        alpha.ok(&["alerts", "set", "traffic", "off"]);
        cluster.or_logs(|| {
            wait_for(ANSWER, "the recovery", || {
                (lines(&fake, "🟢 alpha: трафик за месяц") >= 1).then_some(())
            });
        });
        assert_eq!(lines(&fake, ALERT), 1);
        assert_eq!(lines(&fake, "🟢 alpha: трафик за месяц"), 1);
    }
}

mod services {
    use super::*;

    /// Whether systemd is this machine's init (a container or CI runner usually has none).
    fn systemd_runs() -> bool {
        std::path::Path::new("/run/systemd/system").is_dir()
    }

    fn services_json(from: &Node, node: &str) -> serde_json::Value {
        let out = from.cli(&["services", node, "--json"]);
        assert!(out.status.success(), "{}", common::output_text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn main_pid(unit: &str) -> String {
        let out = std::process::Command::new("systemctl")
            .args(["show", "-p", "MainPID", "--value", unit])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn a_unit_is_added_shown_and_restarted_on_another_node() {
        let real = systemd_runs();
        let standin_dir = tempfile::tempdir().unwrap();
        let unit_base = format!("constella-test-{}", std::process::id());
        if real {
            let out = std::process::Command::new("systemd-run")
                .args(["--unit", &unit_base, "sleep", "600"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", common::output_text(&out));
        } else {
            eprintln!(
                "services: systemd is not this machine's init (no /run/systemd/system), so a \
                 transient systemd-run unit cannot exist here; a stand-in systemctl \
                 (CONSTELLA_SYSTEMCTL) proves the path. tests/systemd_hosts.rs restarts a real \
                 unit under systemd."
            );
            common::systemctl_standin(standin_dir.path());
        }
        let script = standin_dir.path().join("systemctl");
        let dir = standin_dir.path().to_owned();
        let cluster = Cluster::start_with(&["alpha", "bravo"], &[10, 20], None, |node| {
            if !real {
                node.env
                    .push(("CONSTELLA_SYSTEMCTL".into(), script.display().to_string()));
                node.env
                    .push(("STANDIN_DIR".into(), dir.display().to_string()));
            }
        });
        let alpha = cluster.node("alpha");
        let unit = format!("{unit_base}.service");
        cluster.or_logs(|| {
            wait_for(
                Duration::from_secs(20),
                "bravo to be alive on alpha",
                || {
                    let (_, alive) = alpha.leader_and_alive()?;
                    (alive == 2).then_some(())
                },
            );
        });
        let empty = services_json(alpha, "bravo");
        assert_eq!(empty["node"], "bravo");
        assert_eq!(empty["units"].as_array().unwrap().len(), 0);

        alpha.ok(&["services", "add", "bravo", &unit_base]);
        let listed = services_json(alpha, "bravo");
        assert_eq!(listed["systemd"], true, "{listed}");
        let entry = &listed["units"][0];
        assert_eq!(entry["unit"], unit.as_str(), "`.service` is added");
        assert_eq!(entry["active_state"], "active", "{listed}");
        assert_eq!(entry["sub_state"], "running", "{listed}");
        // Kept by bravo itself.
        let kept: Vec<String> = serde_json::from_slice(
            &std::fs::read(cluster.node("bravo").dir.join("services.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(kept, vec![unit.clone()]);

        // Refusals: one line, nothing changed.
        for (args, says) in [
            (
                vec!["services", "add", "bravo", "x;reboot"],
                "invalid unit name",
            ),
            (
                vec!["services", "add", "bravo", &unit_base],
                "watched already",
            ),
            (
                vec!["services", "restart", "bravo", "other"],
                "is not watched",
            ),
            (vec!["services", "nosuchnode"], "nosuchnode"),
        ] {
            let out = alpha.cli(&args);
            assert!(!out.status.success(), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(says), "{args:?}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
        assert_eq!(
            services_json(alpha, "bravo")["units"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let before = real.then(|| main_pid(&unit));
        let out = alpha.ok(&["services", "restart", "bravo", &unit_base]);
        assert!(out.contains("Restarted on bravo"), "{out}");
        if real {
            let after = main_pid(&unit);
            assert_ne!(Some(after), before, "a new main process");
            let _ = std::process::Command::new("systemctl")
                .args(["stop", &unit])
                .output();
        } else {
            let count = std::fs::read_to_string(dir.join(&unit)).unwrap();
            assert_eq!(count.trim(), "1", "one restart ran on bravo");
            let listed = services_json(alpha, "bravo");
            assert_eq!(listed["units"][0]["description"], "restarted 1 times");
            // A failing restart reports systemctl's own line.
            alpha.ok(&["services", "add", "bravo", "missing"]);
            let out = alpha.cli(&["services", "restart", "bravo", "missing"]);
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("Unit missing.service not found"),
                "{stderr}"
            );
        }
        alpha.ok(&["services", "remove", "bravo", &unit_base]);
        let left: Vec<String> = services_json(alpha, "bravo")["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["unit"].as_str().unwrap().to_owned())
            .collect();
        assert!(!left.contains(&unit), "{left:?}");
    }
}
