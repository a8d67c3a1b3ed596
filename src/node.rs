//! `constella run`: puts a node together. Loads the state, starts the daemon (event loop and
//! protocol core), the control socket and, where the network has a token, the Telegram bot,
//! then waits for the node to stop. This is the one place that knows all of them.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::bot::{self, BotConfig};
use crate::control;
use crate::daemon::{self, signals};
use crate::reboot::RebootAction;
use crate::state::StateDir;
use crate::validate::{ApiUrl, HostPort};

/// Monitoring options of `run` (see src/monitor/).
#[derive(Debug, Clone, Copy)]
pub struct MonitorOptions {
    /// Serve Prometheus metrics here (`--metrics-addr`), or not at all.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Sample this host every 10 s into the history (on unless `--no-sampling`).
    pub sampling: bool,
    /// The day of the month the traffic totals start again (`--traffic-reset-day`).
    pub traffic_reset_day: u8,
}

/// Runs the node until SIGINT/SIGTERM or `leave`. `reboot_command`, if set, replaces the
/// host reboot that `Reboot` triggers (run with `sh -c`). `telegram_api_url`, if set, points
/// the bot at another Bot API server.
pub async fn run(
    state_dir: StateDir,
    listen_override: Option<HostPort>,
    reboot_command: Option<String>,
    telegram_api_url: Option<ApiUrl>,
    monitoring: MonitorOptions,
    web: Option<crate::web::WebOptions>,
) -> Result<()> {
    // Before anything is read or written: a second `run` is refused here, unchanged.
    let _lock = state_dir.lock()?;
    let reboot = match reboot_command {
        Some(command) if command.trim().is_empty() => bail!(
            "the reboot command (--reboot-command or CONSTELLA_REBOOT_COMMAND) is empty; unset it to reboot the host"
        ),
        Some(command) => RebootAction::Command(command),
        None => RebootAction::Host,
    };
    tracing::info!(
        action = reboot.describe(),
        permitted = reboot.permitted(),
        "reboot requests will run this action"
    );
    let mut state = state_dir.load()?;
    if state.left {
        bail!(
            "this node left network {}; join again with a new link (remove {} first)",
            state.network_id,
            state_dir.state_path().display()
        );
    }
    let secret = state
        .network_secret
        .as_ref()
        .context("the state file has no network secret")?
        .decode()?;
    let key = state_dir.load_key()?;
    let local_id = key.public().to_peer_id();
    if local_id != state.node.node_id {
        bail!(
            "{} belongs to node {} but the state names {}",
            state_dir.key_path().display(),
            local_id,
            state.node.node_id
        );
    }
    // A node created before PQ4 gets its PQ4 keys now; its card goes into its record (with a
    // new version) once the daemon starts, and spreads like any record change.
    let pq4 = state_dir.load_or_create_pq4()?;
    if state.network_tag.is_none() {
        state.network_tag = Some(state.tag(&secret));
    }
    if let Some(listen) = listen_override {
        state.node.listen = listen.to_string();
    }
    state.node.incarnation = state.node.incarnation.wrapping_add(1);
    state_dir.save(&state)?;

    let metrics_listener = match monitoring.metrics_addr {
        Some(addr) => Some(crate::monitor::metrics::bind(addr).await?),
        None => None,
    };
    let listener = control::bind(&state_dir.socket_path()).await?;
    let mut monitor = crate::monitor::Monitor::start(
        state_dir.path(),
        monitoring.sampling,
        monitoring.traffic_reset_day,
    )?;
    let metrics = Arc::new(signals::BotMetrics::default());
    let (mut signals, watchers) = signals::Signals::new(state.settings.clone(), metrics.clone());
    if metrics_listener.is_some() {
        signals = signals.with_libp2p_metrics(monitor.with_libp2p_metrics());
    }
    let audit =
        AuditLog::open(state_dir.path(), &state.node.name).context("cannot open the audit log")?;
    // A token from `constella bot-token set` wins over the one in the state file.
    let token = state_dir
        .load_bot_token()?
        .or_else(|| state.bot_token.clone());
    let (bot_tokens, tokens) = watch::channel(token);
    let signals = signals
        .with_bot_token(tokens.clone())
        .with_audit(audit.clone());
    let owner_username = state.owner_username.clone();
    let node_name = state.node.name.clone();
    let node_id = state.node.node_id.to_base58();
    let public_addr = state.node.public_addr.clone();
    let bot_secret = secret.clone();
    let (client, node) = daemon::start(
        state_dir.clone(),
        state,
        secret,
        (key, pq4),
        reboot,
        signals,
        shutdown_signal(),
    )?;
    // Containers: answered off the event loop (see src/docker.rs).
    let containers = crate::docker::Containers::new(
        crate::docker::Engine::from_env(&node_name),
        client.clone(),
        &node_name,
        &node_id,
    );
    // Container exits and restart loops: told to the leader's bot.
    let watcher = tokio::spawn(crate::docker::watch(
        crate::docker::Engine::from_env(&node_name),
        client.clone(),
    ));
    // A token set on another member (`bot-token set`) reaches this one (see src/bot_token.rs).
    let token_follower = tokio::spawn(crate::bot_token::follow(
        client.clone(),
        watchers.settings.clone(),
        bot_tokens.clone(),
        state_dir.clone(),
        audit.clone(),
        node_id.clone(),
    ));
    // The web panel (`--web-addr`): served by every node that has it on, from its own view.
    let web = match web {
        Some(options) => {
            let public_host = public_addr
                .rsplit_once(':')
                .map_or(public_addr.as_str(), |(host, _)| host)
                .to_owned();
            let (panel, task) = crate::web::start(
                options,
                state_dir.path(),
                crate::web::PanelContext {
                    client: client.clone(),
                    audit: audit.clone(),
                    settings: watchers.settings.clone(),
                    members: watchers.members.clone(),
                    owner_username: owner_username.clone(),
                    node_name: node_name.clone(),
                    public_host,
                },
            )
            .await?;
            Some((panel, task))
        }
        None => None,
    };
    let panel = web.as_ref().map(|(panel, _)| panel.clone());
    let control_task = tokio::spawn(control::serve(
        listener,
        control::Control::new(
            client.clone(),
            audit.clone(),
            bot_tokens,
            state_dir.clone(),
            containers.clone(),
        )
        .with_web(panel.clone()),
    ));
    // Threshold alerts of this node's own figures, as network state (src/monitor/alerts.rs).
    let alert_task = tokio::spawn(crate::monitor::alerts::watch(
        client.clone(),
        monitor.clone(),
        watchers.settings.clone(),
        node_id.clone(),
        node_name.clone(),
        crate::monitor::sample_interval(),
    ));
    let metrics_task = metrics_listener.map(|listener| {
        crate::monitor::metrics::serve(listener, monitor.clone(), client.clone(), metrics.clone())
    });
    let bot = bot::host(
        BotConfig {
            api_url: telegram_api_url.map(|u| u.url().clone()),
            owner_username,
            node_name,
            node_id,
            secret: bot_secret,
            containers,
            audit,
            chat_state_dir: state_dir.path().to_owned(),
            web: panel,
        },
        tokens,
        client,
        watchers,
        metrics,
    );
    let result = node.await;
    // Stops the poll at once: the in-flight long poll is dropped with its task.
    bot.stop();
    control_task.abort();
    watcher.abort();
    token_follower.abort();
    alert_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some((_, task)) = web {
        task.abort();
    }
    let _ = std::fs::remove_file(state_dir.socket_path());
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = int.recv() => tracing::info!("SIGINT received, stopping"),
    }
}
