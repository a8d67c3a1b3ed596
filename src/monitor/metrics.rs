//! `run --metrics-addr HOST:PORT`: `GET /metrics` in the Prometheus/OpenMetrics text format,
//! encoded by the `prometheus-client` crate. Every scrape builds a fresh registry from the
//! latest sample, the node's status and the bot's counters, so nothing is kept between scrapes
//! but one scrape counter. The HTTP side is a minimal HTTP/1.1 responder (one request per
//! connection, bounded request head, 5 s to send it): Prometheus needs nothing more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{Monitor, Snapshot};
use crate::daemon::Client;
use crate::daemon::report::StatusReport;
use crate::daemon::signals::{BotMetrics, MetricsSnapshot};

/// Longest request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of prometheus-client's encoding.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type FloatGauge = Gauge<f64, AtomicU64>;
type Labelled = Family<Vec<(String, String)>, FloatGauge>;

/// Binds `addr` for [`serve`]: done before anything else starts, so a taken port stops `run`
/// with one line and nothing half-started.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr} (--metrics-addr)"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics are served beyond this host; firewall the port");
    }
    Ok(listener)
}

/// Serves `/metrics` on `listener` until the returned task is aborted.
pub fn serve(
    listener: TcpListener,
    monitor: Monitor,
    client: Client,
    bot: Arc<BotMetrics>,
) -> JoinHandle<()> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(%local, "serving Prometheus metrics at /metrics");
    }
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors and the like: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (monitor, client, bot, scrapes) = (
                monitor.clone(),
                client.clone(),
                bot.clone(),
                scrapes.clone(),
            );
            tokio::spawn(async move {
                if let Err(error) = answer(stream, &monitor, &client, &bot, &scrapes).await {
                    tracing::debug!(%error, "metrics request failed");
                }
            });
        }
    })
}

async fn answer(
    mut stream: TcpStream,
    monitor: &Monitor,
    client: &Client,
    bot: &BotMetrics,
    scrapes: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if read.is_err() {
        return Ok(());
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let count = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
            let status = client.status().await.ok();
            let mut body = render(
                monitor.snapshot().as_ref(),
                status.as_ref(),
                bot.snapshot(),
                count,
            );
            if let Some(registry) = &monitor.libp2p {
                append_registry(&mut body, registry);
            }
            ("200 OK", CONTENT_TYPE, body)
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served here\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Appends the families of `registry` (libp2p's) to a rendered exposition: one `# EOF`, at
/// the end, as the format requires.
fn append_registry(body: &mut String, registry: &std::sync::Mutex<Registry>) {
    let mut extra = String::new();
    let encoded = match registry.lock() {
        Ok(registry) => encode(&mut extra, &registry),
        Err(_) => return,
    };
    if encoded.is_err() {
        return;
    }
    if let Some(stripped) = body.strip_suffix("# EOF\n") {
        body.truncate(stripped.len());
        body.push_str(&extra);
    }
}

/// The label a per-interface or per-mount series carries.
fn label_name(base: &str) -> &'static str {
    if base.starts_with("net_") {
        "interface"
    } else {
        "mount"
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = FloatGauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter: Counter = Counter::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

/// The exposition text of one scrape.
pub fn render(
    snapshot: Option<&Snapshot>,
    status: Option<&StatusReport>,
    bot: MetricsSnapshot,
    scrapes: u64,
) -> String {
    let mut registry = Registry::with_prefix("constella");
    counter(
        &mut registry,
        "metrics_scrapes",
        "Scrapes of this endpoint since the daemon started, this one included",
        scrapes,
    );
    if let Some(snapshot) = snapshot {
        gauge(
            &mut registry,
            "sample_time_seconds",
            "Unix time of the latest host sample",
            snapshot.time as f64,
        );
        let mut families: std::collections::BTreeMap<&str, Labelled> = Default::default();
        for (metric, value) in &snapshot.values {
            match metric.split_once(':') {
                None => gauge(&mut registry, metric, &help(metric), *value),
                Some((base, label)) => {
                    let family = families.entry(base).or_default();
                    family
                        .get_or_create(&vec![(label_name(base).to_owned(), label.to_owned())])
                        .set(*value);
                }
            }
        }
        for (base, family) in families {
            // A family may not share its name with the unlabelled total.
            let name = match base.strip_prefix("net_") {
                Some(rest) => format!("net_interface_{rest}"),
                None => base.to_owned(),
            };
            registry.register(name, help(base), family);
        }
    }
    if let Some(status) = status {
        let members = Family::<Vec<(String, String)>, FloatGauge>::default();
        members
            .get_or_create(&vec![("status".into(), "alive".into())])
            .set(status.alive as f64);
        members
            .get_or_create(&vec![("status".into(), "offline".into())])
            .set(status.offline as f64);
        registry.register(
            "members",
            "Members of the network by status, as this node sees them",
            members,
        );
        gauge(
            &mut registry,
            "is_leader",
            "1 while this node leads the network",
            f64::from(u8::from(status.is_leader)),
        );
        gauge(
            &mut registry,
            "connected_peers",
            "Peers with an open connection",
            status.connected_peers as f64,
        );
        counter(
            &mut registry,
            "leader_changes",
            "Leader changes seen since the daemon started",
            status.leader_changes,
        );
        let rejected = Family::<Vec<(String, String)>, Counter>::default();
        let r = &status.rejected_gossip;
        for (reason, count) in [
            ("bad_mac", r.bad_mac),
            ("wrong_signer", r.wrong_signer),
            ("non_member", r.non_member),
            ("replay", r.replay),
            ("malformed", r.malformed),
            ("incompatible_version", r.incompatible_version),
        ] {
            rejected
                .get_or_create(&vec![("reason".into(), reason.into())])
                .inc_by(count);
        }
        registry.register(
            "rejected_gossip",
            "Gossip messages refused, by reason",
            rejected,
        );
        gauge(
            &mut registry,
            "uptime_seconds",
            "Seconds since the daemon started",
            status.uptime_secs as f64,
        );
    }
    gauge(
        &mut registry,
        "bot_polling",
        "1 while this node's bot polls the Bot API",
        f64::from(u8::from(bot.polling)),
    );
    counter(
        &mut registry,
        "bot_updates_handled",
        "Bot updates this node handled",
        bot.handled,
    );
    counter(
        &mut registry,
        "bot_updates_refused",
        "Bot updates from strangers this node refused",
        bot.refused,
    );
    counter(
        &mut registry,
        "bot_poll_conflicts",
        "Bot API 409 conflicts (another poller)",
        bot.conflicts,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

fn help(metric: &str) -> String {
    match metric {
        "cpu_percent" => "CPU use of the host over the last sample interval, 0-100".into(),
        "load1" | "load5" | "load15" => "Load average".into(),
        "ram_used_bytes" => "RAM in use".into(),
        "ram_total_bytes" => "RAM installed".into(),
        "swap_used_bytes" => "Swap in use".into(),
        "swap_total_bytes" => "Swap configured".into(),
        "daemon_rss_bytes" => "Resident memory of the constella daemon".into(),
        "net_rx_bytes_per_sec" => "Bytes received per second (physical interfaces)".into(),
        "net_tx_bytes_per_sec" => "Bytes sent per second (physical interfaces)".into(),
        "disk_used_percent" => "Filesystem space in use, percent".into(),
        "disk_used_bytes" => "Filesystem space in use".into(),
        other => other.replace('_', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample named `name` (OpenMetrics types counters by family name,
    /// which prometheus-parse reads as untyped samples: the value is what matters).
    fn sample_value(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
        use prometheus_parse::Value;
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .and_then(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    #[test]
    fn a_scrape_parses_with_a_prometheus_parser() {
        let mut snapshot = Snapshot {
            time: 1_800_000_000,
            ..Snapshot::default()
        };
        snapshot.values.insert("cpu_percent".into(), 12.5);
        snapshot.values.insert("disk_used_percent:/".into(), 40.0);
        snapshot
            .values
            .insert("net_rx_bytes_per_sec:eth0".into(), 1000.0);
        let bot = MetricsSnapshot {
            polling: true,
            handled: 3,
            refused: 1,
            conflicts: 0,
        };
        let text = render(Some(&snapshot), None, bot, 7);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        assert_eq!(sample_value(&scrape, "constella_cpu_percent"), Some(12.5));
        assert_eq!(
            sample_value(&scrape, "constella_metrics_scrapes_total"),
            Some(7.0)
        );
        let disk = scrape
            .samples
            .iter()
            .find(|s| s.metric == "constella_disk_used_percent")
            .unwrap();
        assert_eq!(disk.labels.get("mount"), Some("/"));
        let eth0 = scrape
            .samples
            .iter()
            .find(|s| s.metric == "constella_net_interface_rx_bytes_per_sec")
            .unwrap();
        assert_eq!(eth0.labels.get("interface"), Some("eth0"));
        // Every family is declared once (Prometheus refuses a second TYPE line).
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let unique: std::collections::BTreeSet<&str> =
            types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(types.len(), unique.len(), "{text}");
    }
}
