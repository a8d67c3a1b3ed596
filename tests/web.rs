//! The web panel (`run --web-addr`) in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against three real nodes. Log in with a one-time link, see the
//! nodes with the right Хост, watch the list follow a kill -9 of the leader without a reload,
//! reboot a node through the confirmation (the reboot command runs on exactly that node), a
//! replayed link and a forged POST refused, and no horizontal scroll on a 390 px wide window.
//! Screenshots go to `target/tmp/web-screenshots/`.
//!
//! Without `chromium` and `chromedriver` the browser test is skipped with a printed reason,
//! and fails under `CI=true` (`.ci/run` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::fake_telegram::{FakeTelegram, TgUser};
use common::{Cluster, Node, agreed_leader, free_port, is_root, require_tool, wait_for};
use fantoccini::Locator;
use serde_json::json;

const AGREE: Duration = Duration::from_secs(20);

fn marker(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}.rebooted"))
}

fn marker_lines(root: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(marker(root, name))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Three nodes, each serving the panel on its own loopback port, each reboot replaced by a
/// marker command; alpha (priority 10) leads, then bravo (20).
fn panel_cluster() -> (Cluster, Vec<u16>) {
    let root = tempfile::tempdir().unwrap();
    let names = ["alpha", "bravo", "charlie"];
    let priorities = [10, 20, 30];
    let mut nodes: Vec<Node> = names.iter().map(|n| Node::new(root.path(), n)).collect();
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    for (node, port) in nodes.iter_mut().zip(&ports) {
        node.run_args = vec!["--web-addr".into(), format!("127.0.0.1:{port}")];
    }
    let start = |node: &mut Node| {
        let command = format!(
            "echo \"$CONSTELLA_REBOOT_REQUESTED_BY\" >> '{}'",
            marker(root.path(), &node.name).display()
        );
        node.start_with(&[], &[("CONSTELLA_REBOOT_COMMAND", &command)]);
    };
    nodes[0].init(priorities[0]);
    start(&mut nodes[0]);
    for i in 1..nodes.len() {
        let link = nodes[0].invite("5m");
        nodes[i].join(&link, priorities[i]);
        start(&mut nodes[i]);
    }
    (Cluster { root, nodes }, ports)
}

/// `constella web-login` on `node`: the link (first line) and the fingerprint line, if any.
fn web_login(node: &Node) -> (String, Option<String>) {
    let out = node.ok(&["web-login"]);
    let mut lines = out.lines();
    let link = lines.next().expect("a link line").trim().to_owned();
    let fingerprint = lines.next().map(|l| l.trim().to_owned());
    (link, fingerprint)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        wait_for(Duration::from_secs(10), "chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, driven synchronously (the node helpers are blocking).
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    shots: PathBuf,
}

impl Browser {
    fn open(driver: &Driver) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut args = vec![
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1200,900",
        ];
        if is_root() {
            args.push("--no-sandbox");
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": args, "binary": "/usr/bin/chromium" }),
        );
        let client = rt
            .block_on(
                fantoccini::ClientBuilder::rustls()
                    .unwrap()
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{}", driver.port)),
            )
            .expect("a Chromium session through chromedriver");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            rt,
            client: Some(client),
            shots,
        }
    }

    fn c(&self) -> &fantoccini::Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .unwrap()
            .to_string()
    }

    /// The first element matching `css`, waiting up to 10 s for it (a click's navigation may
    /// still be loading the page that has it).
    fn wait_element(&self, css: &str) -> fantoccini::elements::Element {
        self.rt
            .block_on(
                self.c()
                    .wait()
                    .at_most(Duration::from_secs(10))
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| panic!("no {css} on {}: {e}", self.url()))
    }

    fn click(&self, css: &str) {
        let element = self.wait_element(css);
        self.rt.block_on(element.click()).unwrap();
    }

    /// The text of `css`, waiting for the element to appear (after a click).
    fn wait_text(&self, css: &str) -> String {
        let element = self.wait_element(css);
        self.rt.block_on(element.text()).unwrap()
    }

    /// Waits until the page's URL contains `part` (after a click).
    fn wait_url(&self, part: &str) {
        wait_for(
            Duration::from_secs(10),
            &format!("the URL to contain {part}"),
            || self.url().contains(part).then_some(()),
        );
    }

    /// The text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let element = self.rt.block_on(self.c().find(Locator::Css(css))).ok()?;
        self.rt.block_on(element.text()).ok()
    }

    fn js(&self, script: &str) -> serde_json::Value {
        self.rt
            .block_on(self.c().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.c().set_window_size(width, height))
            .unwrap();
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let path = self.shots.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The HTTP status of a request the open page makes itself (with its session cookie and
    /// its own Origin): a form POST with `body`, or a GET when `body` is `None`.
    fn status(&self, path: &str, body: Option<&str>) -> u64 {
        let init = match body {
            Some(body) => format!(
                "{{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, body: {body:?}}}"
            ),
            None => "{}".to_owned(),
        };
        self.js(&format!(
            "return fetch({path:?}, {init}).then(r => r.status);"
        ))
        .as_u64()
        .unwrap()
    }

    /// The session's CSRF token, from the page's own forms.
    fn csrf(&self) -> String {
        self.js("return document.querySelector('input[name=csrf]').value;")
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Uses a one-time link and waits for the node list.
    fn log_in(&self, link: &str) {
        self.goto(link);
        self.click("#login");
        wait_for(Duration::from_secs(10), "the node list after login", || {
            (!self.labels().is_empty()).then_some(())
        });
    }

    fn log_out(&self) {
        self.click("form[action='/logout'] button");
        self.wait_text("#denied");
    }

    /// How many elements match `css`.
    fn count(&self, css: &str) -> u64 {
        self.js(&format!(
            "return document.querySelectorAll({css:?}).length;"
        ))
        .as_u64()
        .unwrap()
    }

    /// The node names and labels the list shows now.
    fn labels(&self) -> Vec<String> {
        let value = self.js(
            "return Array.from(document.querySelectorAll('#nodes li.node')).map(li => li.textContent.trim());",
        );
        serde_json::from_value(value).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
    }
}

fn browser_available() -> bool {
    require_tool("chromium", "apt-get install -y chromium chromium-driver")
        && require_tool(
            "chromedriver",
            "apt-get install -y chromium chromium-driver",
        )
}

#[test]
fn the_panel_in_a_browser_logs_in_follows_a_failover_reboots_and_fits_a_phone() {
    if !browser_available() {
        return;
    }
    let (mut cluster, ports) = panel_cluster();
    let root = cluster.root.path().to_owned();
    let leader = cluster.or_logs(|| {
        agreed_leader(
            &[
                cluster.node("alpha"),
                cluster.node("bravo"),
                cluster.node("charlie"),
            ],
            &["alpha", "bravo", "charlie"],
            AGREE,
        )
    });
    assert_eq!(leader, "alpha");
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    // bravo, a follower, serves the panel: it must not depend on the leader.
    let base = format!("http://127.0.0.1:{}", ports[1]);

    // Not logged in: no list.
    browser.goto(&format!("{base}/"));
    assert!(
        browser.text("#denied").is_some(),
        "a page without a session"
    );
    assert!(browser.text("#nodes").is_none());

    // Log in with a one-time link.
    let (link, fingerprint) = web_login(cluster.node("bravo"));
    assert!(
        link.starts_with(&format!("{base}/login?t=")),
        "the link on its own line: {link}"
    );
    assert_eq!(
        fingerprint, None,
        "plain HTTP on loopback has no certificate"
    );
    browser.goto(&link);
    browser.click("#login");
    wait_for(Duration::from_secs(10), "the node list after login", || {
        (browser.labels().len() == 3).then_some(())
    });
    assert_eq!(
        browser.labels(),
        vec!["• alpha — Хост", "• bravo", "• charlie"]
    );
    browser.screenshot("nodes.png");
    let weight = browser.js(
        "return Promise.all(['/', '/static/panel.css', '/static/panel.js'].map(u => fetch(u).then(r => r.blob()).then(b => b.size)));",
    );
    println!("FIGURE web page weight of the node list (3 nodes): HTML, CSS, JS bytes = {weight}");

    // The same link again is refused, and audited.
    browser.goto(&link);
    let denied = browser
        .text("#denied")
        .expect("a refusal page for a replayed link");
    assert!(denied.contains("уже использована"), "{denied}");
    let audit = cluster.node("bravo").ok(&["audit"]);
    assert!(
        audit.contains("web_login_refused") && audit.contains("reason=link already used"),
        "{audit}"
    );
    assert!(audit.contains("web_login "), "{audit}");

    // A forged POST (the session cookie goes with it, the CSRF token does not) is refused and
    // changes nothing; so is one with a wrong token.
    browser.goto(&format!("{base}/"));
    let forged = browser.js(
        "return fetch('/node/charlie/reboot', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: ''}).then(r => r.status);",
    );
    assert_eq!(forged, json!(403));
    let wrong = browser.js(
        "return fetch('/node/charlie/reboot', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf=00112233'}).then(r => r.status);",
    );
    assert_eq!(wrong, json!(403));
    assert!(
        marker_lines(&root, "charlie").is_empty(),
        "a refused request changes nothing"
    );
    let audit = cluster.node("bravo").ok(&["audit"]);
    assert!(
        audit.contains("action_refused") && audit.contains("reason=missing or wrong CSRF token"),
        "{audit}"
    );

    // Reboot charlie through the confirmation step.
    browser.goto(&format!("{base}/node/charlie"));
    let card = browser.text("main").unwrap();
    assert!(card.contains("charlie"), "{card}");
    let node_fingerprint = browser.text("#fingerprint").unwrap();
    assert_eq!(
        node_fingerprint.split_whitespace().count(),
        12,
        "the 60-digit PQ4 fingerprint: {node_fingerprint}"
    );
    browser.screenshot("node.png");
    browser.click("#reboot");
    browser.wait_url("/node/charlie/reboot");
    assert!(
        marker_lines(&root, "charlie").is_empty(),
        "the confirmation page itself does nothing"
    );
    browser.screenshot("confirm.png");
    browser.click("#confirm");
    let answer = browser.wait_text("#message");
    assert!(answer.contains("charlie"), "{answer}");
    let lines = wait_for(Duration::from_secs(10), "charlie's reboot command", || {
        let lines = marker_lines(&root, "charlie");
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("web panel"), "{lines:?}");
    assert!(marker_lines(&root, "alpha").is_empty());
    assert!(marker_lines(&root, "bravo").is_empty());

    // An invite through its form: the join line and a QR code.
    browser.goto(&format!("{base}/invite"));
    browser.click("#create");
    let invite = browser.wait_text("#invite-link");
    assert!(
        invite.starts_with("constella join --server-name NAME --join 'join://"),
        "{invite}"
    );
    assert_eq!(
        browser.js("return document.querySelectorAll('.qr svg').length;"),
        json!(1)
    );
    assert!(
        cluster
            .node("bravo")
            .ok(&["audit"])
            .contains("invite_issued")
    );

    // A phone: 390 px wide, no horizontal scroll on the list, a node page, a confirmation.
    browser.resize(390, 844);
    for path in [
        "/",
        "/node/charlie",
        "/node/alpha/reboot",
        "/invite",
        "/alerts",
    ] {
        browser.goto(&format!("{base}{path}"));
        let widths = browser.js(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth];",
        );
        let [scroll, client, inner] = [0, 1, 2].map(|i| widths[i].as_u64().unwrap());
        assert!(inner <= 400, "the window is phone-sized: {widths}");
        assert!(
            scroll <= client,
            "{path} scrolls sideways at {inner} px: {widths}"
        );
    }
    browser.goto(&format!("{base}/"));
    browser.screenshot("phone-nodes.png");
    browser.resize(1200, 900);

    // kill -9 the leader: the open page follows without a reload.
    browser.goto(&format!("{base}/"));
    wait_for(Duration::from_secs(10), "the live stream to open", || {
        browser
            .js("return document.getElementById('nodes').getAttribute('data-updated');")
            .as_str()
            .map(str::to_owned)
    });
    browser.js("window.notReloaded = true; return null;");
    let killed_at = unix_millis();
    cluster.node_mut("alpha").kill();
    let bravo = cluster.node("bravo");
    let node_knew_at = cluster.or_logs(|| {
        wait_for(
            Duration::from_secs(20),
            "bravo to see the new leader",
            || {
                let (leader, alive) = bravo.leader_and_alive()?;
                (leader == "bravo" && alive == 2).then(unix_millis)
            },
        )
    });
    let page_showed_at = wait_for(
        Duration::from_secs(10),
        "the page to show bravo as Хост",
        || {
            let labels = browser.labels();
            (labels == ["• alpha (offline)", "• bravo — Хост", "• charlie"]).then(|| {
                browser
                    .js("return Number(document.getElementById('nodes').getAttribute('data-updated'));")
                    .as_u64()
                    .unwrap()
            })
        },
    );
    assert_eq!(
        browser.js("return window.notReloaded === true;"),
        json!(true),
        "updated in place, not reloaded"
    );
    browser.screenshot("failover.png");
    println!(
        "FIGURE web failover: kill -9 of the leader -> bravo's view changed {} ms; -> page showed it {} ms ({} ms after the node knew)",
        node_knew_at - killed_at,
        page_showed_at.saturating_sub(killed_at),
        page_showed_at as i64 - node_knew_at as i64
    );
    assert!(
        page_showed_at <= node_knew_at + 2000,
        "the page lagged the node by {} ms",
        page_showed_at - node_knew_at
    );

    // The session is listed, and revoking it logs the browser out.
    let sessions: serde_json::Value =
        serde_json::from_str(&bravo.ok(&["web-sessions", "--json"])).unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    bravo.ok(&["web-sessions", "revoke", &id]);
    browser.goto(&format!("{base}/"));
    assert!(
        browser.text("#denied").is_some(),
        "a revoked session is logged out"
    );
    println!("screenshots in {}", browser.shots.display());
}

const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
/// The unit every node watches (restarted by the stand-in `systemctl`).
const UNIT: &str = "web-demo.service";

/// How many times the stand-in `systemctl` of `node` restarted [`UNIT`].
fn restarts(node: &Node) -> u32 {
    std::fs::read_to_string(node.dir.with_extension("units").join(UNIT))
        .map_or(0, |t| t.trim().parse().unwrap())
}

/// `/web` in the bot for `user`: the one-time link it answers with.
fn bot_web_link(fake: &FakeTelegram, cluster: &Cluster, user: &TgUser) -> String {
    let since = fake.messages_to(user.id).len();
    fake.send_text(user, "/web");
    let message = cluster.or_logs(|| {
        wait_for(Duration::from_secs(10), "the /web link", || {
            fake.messages_to(user.id)
                .into_iter()
                .skip(since)
                .find(|m| m.text.contains("/login?t="))
        })
    });
    message
        .text
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a link")
        .to_owned()
}

/// Roles in the browser, on the leader's panel that `/web` links to. A viewer sees the list,
/// node pages, services and alert thresholds, and is refused (403, audited, nothing changed)
/// every action page and every action POST even with its own valid CSRF token. An operator
/// restarts a unit and reboots a node through their confirmation pages (each runs on exactly
/// that node, once) but cannot remove, set alerts or read the audit log. The owner
/// (`web-login`) sets an alert threshold for the whole network and removes a node, both
/// through confirmation pages.
///
/// `systemctl` is a stand-in here (CONSTELLA_SYSTEMCTL): systemd is not this machine's init,
/// and the stand-in counts restarts per node; tests/monitoring.rs restarts a real unit where
/// systemd runs.
#[test]
fn roles_in_the_browser_a_viewer_only_looks_an_operator_restarts_and_the_owner_removes() {
    if !browser_available() {
        return;
    }
    let fake = FakeTelegram::start(TOKEN);
    let tools = tempfile::tempdir().unwrap();
    let systemctl = common::systemctl_standin(tools.path());
    let cluster = Cluster::start_with(
        &["alpha", "bravo", "charlie"],
        &[10, 20, 30],
        None,
        |node: &mut Node| {
            let units = node.dir.with_extension("units");
            std::fs::create_dir_all(&units).unwrap();
            node.init_args = vec!["--bot-token".into(), TOKEN.into()];
            node.run_args = vec![
                "--telegram-api-url".into(),
                fake.url_for(&node.name),
                "--web-addr".into(),
                format!("127.0.0.1:{}", free_port()),
            ];
            let reboot = format!(
                "echo \"$CONSTELLA_REBOOT_REQUESTED_BY\" >> '{}'",
                node.dir.with_extension("rebooted").display()
            );
            node.env = vec![
                ("CONSTELLA_REBOOT_COMMAND".into(), reboot),
                (
                    "CONSTELLA_SYSTEMCTL".into(),
                    systemctl.display().to_string(),
                ),
                ("STANDIN_DIR".into(), units.display().to_string()),
            ];
        },
    );
    let names = ["alpha", "bravo", "charlie"];
    let nodes: Vec<&Node> = names.iter().map(|n| cluster.node(n)).collect();
    assert_eq!(
        cluster.or_logs(|| agreed_leader(&nodes, &names, AGREE)),
        "alpha"
    );
    wait_for(Duration::from_secs(15), "alpha's bot to poll", || {
        fake.polls().iter().any(|p| p.node == "alpha").then_some(())
    });
    let alpha = cluster.node("alpha");
    for name in names {
        alpha.ok(&["services", "add", name, UNIT]);
    }
    alpha.ok(&["access", "grant", "@viewer_v", "viewer"]);
    alpha.ok(&["access", "grant", "@operator_o", "operator"]);
    let viewer = TgUser::new(6101, "viewer_v");
    let operator = TgUser::new(6102, "Operator_O");
    let reboots = |name: &str| {
        std::fs::read_to_string(cluster.node(name).dir.with_extension("rebooted"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let ram_threshold = |node: &Node| -> u64 {
        let report: serde_json::Value =
            serde_json::from_str(&node.ok(&["alerts", "--json"])).unwrap();
        report["thresholds"]["ram"]["percent"].as_u64().unwrap()
    };
    let refused = |who: &str| {
        alpha
            .ok(&["audit"])
            .lines()
            .filter(|l| l.contains("action_refused") && l.contains(who))
            .count()
    };
    let driver = Driver::start();
    let browser = Browser::open(&driver);

    // The viewer: looks, and is refused every action, even with its own CSRF token.
    let link = bot_web_link(&fake, &cluster, &viewer);
    let base = link.split("/login").next().unwrap().to_owned();
    browser.log_in(&link);
    assert_eq!(browser.labels(), ["• alpha — Хост", "• bravo", "• charlie"]);
    browser.goto(&format!("{base}/node/charlie"));
    wait_for(Duration::from_secs(1), "the services list", || {
        browser.text("#services").filter(|t| t.contains(UNIT))
    });
    assert_eq!(browser.count("#reboot, #remove, a.restart"), 0);
    browser.goto(&format!("{base}/alerts"));
    assert_eq!(browser.count("#thresholds tr"), 3);
    assert_eq!(browser.count("form[action='/alerts/set']"), 0);
    browser.screenshot("viewer-alerts.png");
    let csrf = browser.csrf();
    let restart_path = format!("/node/charlie/restart/{UNIT}");
    let pages = [
        "/node/charlie/reboot",
        "/node/charlie/remove",
        restart_path.as_str(),
        "/alerts/set?rule=ram&percent=50",
        "/audit",
        "/invite",
    ];
    for path in pages {
        assert_eq!(browser.status(path, None), 403, "viewer GET {path}");
    }
    let body = format!("csrf={csrf}");
    let alert_body = format!("csrf={csrf}&rule=ram&percent=50");
    let posts = [
        ("/node/charlie/reboot", body.as_str()),
        ("/node/charlie/remove", body.as_str()),
        (restart_path.as_str(), body.as_str()),
        ("/alerts/set", alert_body.as_str()),
        ("/invite", body.as_str()),
    ];
    for (path, body) in posts {
        assert_eq!(browser.status(path, Some(body)), 403, "viewer POST {path}");
    }
    wait_for(
        Duration::from_secs(5),
        "the viewer's refusals audited",
        || (refused("telegram:6101") >= pages.len() + posts.len()).then_some(()),
    );
    browser.log_out();

    // The operator: restarts a unit and reboots a node through the confirmation pages.
    let link = bot_web_link(&fake, &cluster, &operator);
    browser.log_in(&link);
    browser.goto(&format!("{base}/node/charlie"));
    assert_eq!(browser.count("#remove"), 0);
    assert_eq!(browser.count("#reboot"), 1);
    browser.js("document.getElementById('services').scrollIntoView(); return null;");
    browser.screenshot("node-services.png");
    browser.click("a.restart");
    browser.wait_url(&restart_path);
    browser.screenshot("confirm-restart.png");
    assert_eq!(
        restarts(cluster.node("charlie")),
        0,
        "the page itself does nothing"
    );
    browser.click("#confirm");
    let answer = browser.wait_text("#message");
    assert!(
        answer.contains("charlie") && answer.contains(UNIT),
        "{answer}"
    );
    assert_eq!(restarts(cluster.node("charlie")), 1);
    assert_eq!(
        restarts(cluster.node("alpha")) + restarts(cluster.node("bravo")),
        0
    );
    wait_for(Duration::from_secs(5), "the restart audited", || {
        let audit = alpha.ok(&["audit"]);
        audit
            .lines()
            .any(|l| {
                l.contains("service_restart_requested")
                    && l.contains("telegram:6102")
                    && l.contains("outcome=accepted")
            })
            .then_some(())
    });
    browser.goto(&format!("{base}/node/bravo"));
    browser.click("#reboot");
    browser.click("#confirm");
    wait_for(Duration::from_secs(10), "bravo's reboot command", || {
        (reboots("bravo") == 1).then_some(())
    });
    assert_eq!(reboots("alpha") + reboots("charlie"), 0);
    let csrf = browser.csrf();
    for path in [
        "/node/charlie/remove",
        "/alerts/set?rule=ram&percent=50",
        "/audit",
    ] {
        assert_eq!(browser.status(path, None), 403, "operator GET {path}");
    }
    let body = format!("csrf={csrf}");
    let alert_body = format!("csrf={csrf}&rule=ram&percent=50");
    assert_eq!(browser.status("/node/charlie/remove", Some(&body)), 403);
    assert_eq!(browser.status("/alerts/set", Some(&alert_body)), 403);
    browser.log_out();
    assert_eq!(ram_threshold(alpha), 90, "nobody changed the threshold");
    assert_eq!(
        cluster.node("charlie").peers().unwrap().len(),
        3,
        "nobody removed charlie"
    );

    // The owner: an alert threshold for the whole network, then the removal of charlie.
    let (link, _) = web_login(alpha);
    browser.log_in(&link);
    browser.goto(&format!("{base}/alerts"));
    browser.js(
        "document.querySelector(\"tr[data-rule='ram'] input.percent\").value = '95'; return null;",
    );
    browser.screenshot("owner-alerts.png");
    browser.click("tr[data-rule='ram'] button.set");
    browser.wait_url("/alerts/set?rule=ram&percent=95");
    assert_eq!(
        ram_threshold(alpha),
        90,
        "the confirmation page itself does nothing"
    );
    browser.click("#confirm");
    assert!(browser.wait_text("#message").contains("ram: 95 %"));
    let bravo = cluster.node("bravo");
    wait_for(
        Duration::from_secs(10),
        "bravo to have the new threshold",
        || (ram_threshold(bravo) == 95).then_some(()),
    );
    let audit = alpha.ok(&["audit"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("alert_threshold_changed") && l.contains("via web")),
        "{audit}"
    );
    // A bad threshold is refused by name and changes nothing.
    browser.goto(&format!("{base}/alerts/set?rule=ram&percent=101"));
    assert!(browser.wait_text("#message").contains("101"));
    assert_eq!(ram_threshold(alpha), 95);

    browser.goto(&format!("{base}/"));
    browser.js("window.notReloaded = true; return null;");
    browser.goto(&format!("{base}/node/charlie"));
    browser.click("#remove");
    browser.wait_url("/node/charlie/remove");
    browser.screenshot("confirm-remove.png");
    assert_eq!(
        alpha.peers().unwrap().len(),
        3,
        "the confirmation page itself does nothing"
    );
    browser.click("#confirm");
    let answer = browser.wait_text("#message");
    assert!(answer.contains("charlie"), "{answer}");
    for node in [alpha, bravo] {
        cluster.or_logs(|| {
            wait_for(
                Duration::from_secs(10),
                "charlie gone from the member list",
                || {
                    let peers = node.peers()?;
                    (peers.len() == 2 && peers.iter().all(|p| p.name != "charlie")).then_some(())
                },
            )
        });
    }
    browser.goto(&format!("{base}/"));
    assert_eq!(browser.labels(), ["• alpha — Хост", "• bravo"]);
    wait_for(Duration::from_secs(5), "the removal audited", || {
        let audit = alpha.ok(&["audit"]);
        audit
            .lines()
            .any(|l| l.contains("node_removed") && l.contains("via web"))
            .then_some(())
    });
}

#[test]
fn web_login_needs_the_panel_and_https_prints_the_certificate_fingerprint() {
    let root = tempfile::tempdir().unwrap();
    let mut plain = Node::new(root.path(), "alpha");
    plain.init(100);
    plain.start();
    let out = plain.cli(&["web-login"]);
    assert!(!out.status.success());
    let text = common::output_text(&out);
    assert!(
        text.contains("the web panel is off on this node") && text.contains("--web-addr"),
        "{text}"
    );
    plain.stop();

    // --web-tls: HTTPS on loopback too, with a certificate made at the first start.
    let port = free_port();
    plain.run_args = vec![
        "--web-addr".into(),
        format!("127.0.0.1:{port}"),
        "--web-tls".into(),
    ];
    plain.start();
    let (link, fingerprint) = web_login(&plain);
    assert!(
        link.starts_with(&format!("https://127.0.0.1:{port}/login?t=")),
        "{link}"
    );
    let fingerprint = fingerprint.expect("a fingerprint line");
    let pem = std::fs::read_to_string(plain.dir.join("web.crt")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    use sha2::Digest as _;
    assert_eq!(
        fingerprint,
        format!(
            "certificate SHA-256: {}",
            hex_colons(&sha2::Sha256::digest(&der))
        )
    );
    // A real TLS handshake: a rustls client that trusts web.crt alone (webpki checks the
    // signature, the dates and that the certificate names 127.0.0.1 and localhost) gets the
    // certificate whose SHA-256 web-login printed, and the panel over it.
    let token = link.rsplit_once("t=").unwrap().1.to_owned();
    let trusted = || {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .unwrap();
        roots
    };
    for name in ["127.0.0.1", "localhost"] {
        let request = format!(
            "GET /login?t={token} HTTP/1.1\r\nHost: {name}:{port}\r\nConnection: close\r\n\r\n"
        );
        let (served, page) = tls_request(port, trusted(), name, &request).unwrap();
        assert_eq!(
            format!(
                "certificate SHA-256: {}",
                hex_colons(&sha2::Sha256::digest(&served))
            ),
            fingerprint,
            "the served certificate is the printed one"
        );
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("id=\"login\""), "{page}");
    }
    let body = format!("t={token}");
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (_, answer) = tls_request(port, trusted(), "127.0.0.1", &login).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie");
    assert!(cookie.starts_with("__Host-constella_session="), "{cookie}");
    for flag in ["Path=/", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.split("; ").any(|f| f == flag), "{flag} in {cookie}");
    }
    // A client that trusts nothing, or not this name, refuses the handshake: the checks above
    // are the verifier's, not an accept-anything client's.
    let error = tls_request(port, rustls::RootCertStore::empty(), "127.0.0.1", "").unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    let error = tls_request(port, trusted(), "example.org", "").unwrap_err();
    assert!(error.contains("NotValidForName"), "{error}");
    // Plain HTTP on the TLS port gets no page.
    let mut plain_http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain_http
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    use std::io::{Read as _, Write as _};
    plain_http
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain_http.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(plain.dir.join("web.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The same certificate after a restart.
    plain.stop();
    plain.start();
    let (_, again) = web_login(&plain);
    assert_eq!(again.unwrap(), fingerprint);
    // A bad --web-addr is refused by name, and a taken port stops `run`.
    let out = plain.cli(&["run", "--web-addr", "nowhere"]);
    assert!(!out.status.success());
    assert!(common::output_text(&out).contains("--web-addr"));
}

/// `AB:CD:…`, as browsers show a fingerprint.
fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One TLS connection to the panel on `port`, verified by webpki against `roots` for
/// `server_name`: the certificate the server presented and its answer to `request` (nothing
/// is sent when `request` is empty). The error is the handshake's or the connection's.
fn tls_request(
    port: u16,
    roots: rustls::RootCertStore,
    server_name: &str,
    request: &str,
) -> Result<(Vec<u8>, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or("no certificate")?;
        let mut answer = Vec::new();
        if !request.is_empty() {
            tls.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let read = tls.read_to_end(&mut answer);
            match tokio::time::timeout(Duration::from_secs(10), read).await {
                Err(_) => return Err("no answer".to_owned()),
                Ok(Ok(_)) => {}
                // The server may close without a close_notify after `Connection: close`.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Ok(Err(e)) => return Err(e.to_string()),
            }
        }
        Ok((served, String::from_utf8_lossy(&answer).into_owned()))
    })
}

/// CPU seconds (user + system) and resident KiB of process `pid`.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (ticks / hz, rss)
}

/// Figure: idle CPU and RSS of a node with the panel on, first with no browser, then with one
/// browser on the live node list (its SSE stream open). `CONSTELLA_WEB_IDLE_SECS` sets each
/// window (default 60 s).
#[test]
#[ignore = "a figure, not a check: cargo test --test web -- --ignored --nocapture"]
fn figures_idle_cpu_and_rss_with_the_panel_and_one_browser() {
    if !browser_available() {
        return;
    }
    let window = Duration::from_secs(
        std::env::var("CONSTELLA_WEB_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "alpha");
    let port = free_port();
    node.run_args = vec!["--web-addr".into(), format!("127.0.0.1:{port}")];
    node.init(100);
    node.start();
    std::thread::sleep(Duration::from_secs(10)); // start-up work (sampler, first heartbeats)
    let measure = |what: &str| {
        let (cpu0, _) = cpu_and_rss(node.pid());
        let started = std::time::Instant::now();
        std::thread::sleep(window);
        let (cpu1, rss) = cpu_and_rss(node.pid());
        let percent = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
        println!(
            "FIGURE web idle {what}: {percent:.2} % CPU, RSS {:.1} MiB over {} s",
            rss as f64 / 1024.0,
            window.as_secs()
        );
    };
    measure("panel on, no browser");
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    let (link, _) = web_login(&node);
    browser.goto(&link);
    browser.click("#login");
    wait_for(Duration::from_secs(10), "the live list", || {
        browser
            .js("return document.getElementById('nodes') && document.getElementById('nodes').getAttribute('data-updated');")
            .as_str()
            .map(str::to_owned)
    });
    measure("panel on, one browser on the live list");
}
