//! `constella`: the command-line interface and daemon of a Constella node.

mod access;
mod audit;
mod bot;
mod bot_token;
mod chat;
mod cli;
mod control;
mod daemon;
mod docker;
mod join;
mod link;
mod logging;
mod monitor;
mod node;
mod output;
mod private_dir;
mod reboot;
mod rolling;
mod services;
mod state;
mod stats;
mod validate;
mod web;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use constella_behaviours::NetworkSecret;
use constella_behaviours::gossip::MemberRecord;
use constella_behaviours::node::LeaveOutcome;

use crate::cli::{
    AccessCommand, AlertsCommand, BotTokenCommand, Cli, Command, OwnerCommand, ServicesCommand,
    StatsArgs, listen_or_default,
};
use crate::control::{AdminRequest, Request, Response};
use crate::state::{LocalNode, NetworkState, STATE_FORMAT, StateDir, StoredSecret};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (log_dir, node) = match &cli.command {
        Command::Run(args) => {
            // This node's name, for `NODE=` on every journal entry (run fails later, with its
            // own message, if the state cannot be read).
            let node = (args.log_dir.is_none() && logging::under_systemd())
                .then(|| {
                    StateDir::new(
                        cli.state_dir
                            .clone()
                            .unwrap_or_else(state::default_state_dir),
                    )
                })
                .and_then(|dir| dir.load().ok())
                .map(|state| state.node.name.clone());
            (args.log_dir.as_deref(), node)
        }
        _ => (None, None),
    };
    // Held until the end of main: dropping it flushes the log file.
    let _log_guard = match logging::init(&logging::Destination::choose(log_dir, node)) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let state_dir = StateDir::new(cli.state_dir.unwrap_or_else(state::default_state_dir));
    match cli.command {
        Command::Init(args) => init(&state_dir, args),
        Command::Join(args) => {
            let port = args
                .public_addr
                .as_ref()
                .map_or(cli::DEFAULT_PORT, |a| a.port);
            let plan = join::JoinPlan {
                listen: listen_or_default(args.listen, port),
                name: args.server_name,
                link: args.link,
                public_addr: args.public_addr,
                priority: args.priority,
            };
            let state = join::join(&state_dir, plan).await?;
            println!(
                "Joined network {} as {} ({}); {} nodes in the network.",
                state.network_id,
                state.node.name,
                state.node.node_id,
                state.peers.len()
            );
            println!(
                "State written to {}. Start the node with: constella run",
                state_dir.path().display()
            );
            Ok(())
        }
        Command::Run(args) => {
            node::run(
                state_dir,
                args.listen,
                args.reboot_command,
                args.telegram_api_url,
                node::MonitorOptions {
                    metrics_addr: args.metrics_addr,
                    sampling: !args.no_sampling,
                    traffic_reset_day: args.traffic_reset_day,
                },
                args.web_addr.map(|addr| web::WebOptions {
                    addr,
                    force_tls: args.web_tls,
                }),
            )
            .await
        }
        Command::Status(args) => match ask(&state_dir, &Request::Status).await? {
            Response::Status(report) if args.json => print_json(&report),
            Response::Status(report) => print_text(&output::status_block(&report)),
            other => unexpected(other),
        },
        Command::Peers(args) => {
            let request = match args.from {
                Some(target) => Request::PeersOf { target },
                None => Request::Peers,
            };
            match ask(&state_dir, &request).await? {
                Response::Peers(peers) | Response::PeersOf(peers) if args.fingerprints => {
                    print_text(&output::fingerprints_table(&peers))
                }
                Response::Peers(peers) if args.json => print_json(&peers),
                Response::Peers(peers) => print_text(&output::peers_table(&peers)),
                Response::PeersOf(peers) if args.json => print_json(&peers),
                Response::PeersOf(peers) => print_text(&output::peers_table(&peers)),
                other => unexpected(other),
            }
        }
        Command::Stats(StatsArgs {
            target,
            json,
            history: Some(range_secs),
            metric,
        }) => {
            let request = Request::History {
                target,
                metrics: metric,
                range_secs,
            };
            match ask(&state_dir, &request).await? {
                Response::History(history) if json => {
                    print_json(&monitor::text::history_json(&history))
                }
                Response::History(history) => print_text(&monitor::text::history_table(
                    &history,
                    &output::human_duration(range_secs),
                )),
                other => unexpected(other),
            }
        }
        Command::Remove(args) => {
            if !args.yes
                && !confirm(&format!(
                    "Remove {} from the network for good? Every node drops it and the network secret is rotated; it can come back only with a new invite.",
                    args.target
                ))?
            {
                bail!("not confirmed; nothing changed");
            }
            match ask(
                &state_dir,
                &Request::Remove {
                    target: args.target,
                },
            )
            .await?
            {
                Response::Removed(name) => print_text(&format!(
                    "Removed {name}. The network secret is rotated to a new epoch, sealed to each remaining member; {name} gets no copy.\n{name} knew the Telegram bot token, which only @BotFather can change: revoke it there and run `constella bot-token set` with the new one.\n{name} can come back only with an invite issued from now on.\n"
                )),
                other => unexpected(other),
            }
        }
        Command::RotateKeys(args) => match ask(&state_dir, &Request::RotateKeys).await? {
            Response::KeysRotated(rotated) if args.json => print_json(&rotated),
            Response::KeysRotated(rotated) => print_text(&format!(
                "Replaced this node's PQ4 identity; the update is signed by the old one and spreads to every member.\n  old fingerprint: {}\n  new fingerprint: {}\n",
                rotated.previous_fingerprint, rotated.fingerprint
            )),
            other => unexpected(other),
        },
        Command::Verify(args) => match ask(&state_dir, &Request::Peers).await? {
            Response::Peers(peers) => {
                let Some(member) = peers
                    .iter()
                    .find(|p| p.name == args.target || p.node_id.to_base58() == args.target)
                else {
                    bail!("no member named {:?} (see `constella peers`)", args.target);
                };
                match output::verify_block(member) {
                    Some(text) => print_text(&text),
                    None => bail!(
                        "{} has no PQ4 card yet: it runs a constella from before PQ4; upgrade it",
                        member.name
                    ),
                }
            }
            other => unexpected(other),
        },
        Command::Stats(args) => {
            let request = Request::Stats {
                target: args.target,
            };
            match ask(&state_dir, &request).await? {
                Response::Stats(stats) if args.json => print_json(&stats),
                Response::Stats(stats) => print_text(&output::stats_block(&stats)),
                other => unexpected(other),
            }
        }
        Command::Reboot(args) => {
            if !args.yes
                && !confirm(&format!(
                    "Reboot the host of node {}? It goes offline until it boots again.",
                    args.target
                ))?
            {
                bail!("not confirmed; nothing changed");
            }
            let request = Request::Reboot {
                target: args.target,
                requested_by: format!("constella reboot (user {})", local_user()),
            };
            match ask(&state_dir, &request).await? {
                Response::RebootAccepted(accepted) => print_text(&format!(
                    "Node {} accepted the reboot ({}).\n",
                    accepted.name, accepted.action
                )),
                other => unexpected(other),
            }
        }
        Command::Invite(args) => {
            match ask(
                &state_dir,
                &Request::Invite {
                    ttl_secs: args.ttl.duration().as_secs(),
                },
            )
            .await?
            {
                Response::Invite(invite) => {
                    println!("{}", invite.link);
                    eprintln!(
                        "One-time link, valid for {}. On the new server run:\n  constella join --server-name NAME --join '{}'",
                        invite.ttl, invite.link
                    );
                    Ok(())
                }
                other => unexpected(other),
            }
        }
        Command::RollingRestart(args) => rolling::run(&state_dir, args).await,
        Command::Docker(args) => docker_command(&state_dir, args).await,
        Command::Owner(args) => match args.command {
            OwnerCommand::Set { username } => {
                let request = AdminRequest::OwnerSet {
                    username: username.as_str().to_owned(),
                    requested_by: local_user(),
                };
                match ask(&state_dir, &request).await? {
                    Response::OwnerChanged(change) => print_text(&format!(
                        "The owner is now {} (was {}); every node learns it through gossip.\n{} is served from their first /start; {} is told once and ignored from now on.\n",
                        change.owner, change.previous, change.owner, change.previous
                    )),
                    other => unexpected(other),
                }
            }
        },
        Command::Access(args) => {
            let requested_by = local_user();
            let request = match args.command {
                None => AdminRequest::AccessList,
                Some(AccessCommand::Grant { username, role }) => AdminRequest::AccessGrant {
                    username: username.as_str().to_owned(),
                    role,
                    requested_by,
                },
                Some(AccessCommand::Revoke { username }) => AdminRequest::AccessRevoke {
                    username: username.as_str().to_owned(),
                    requested_by,
                },
            };
            match ask(&state_dir, &request).await? {
                Response::Access(report) if args.json => print_json(&report),
                Response::Access(report) => print_text(&output::access_table(&report)),
                other => unexpected(other),
            }
        }
        Command::Alerts(args) => {
            let request = match args.command {
                None => AdminRequest::AlertsList,
                Some(AlertsCommand::Set { rule, value }) => {
                    use constella_behaviours::alerts::{Rule, parse_percent, parse_size};
                    if rule == Rule::Traffic {
                        AdminRequest::AlertsQuotaSet {
                            bytes: parse_size(&value).map_err(anyhow::Error::msg)?,
                            requested_by: local_user(),
                        }
                    } else {
                        AdminRequest::AlertsSet {
                            rule,
                            percent: parse_percent(&value).map_err(anyhow::Error::msg)?,
                            requested_by: local_user(),
                        }
                    }
                }
            };
            match ask(&state_dir, &request).await? {
                Response::Alerts(report) if args.json => print_json(&report),
                Response::Alerts(report) => print_text(&output::alerts_table(&report)),
                other => unexpected(other),
            }
        }
        Command::Services(args) => {
            use constella_behaviours::rpc::ServicesRequest;
            let (target, request) = match args.command {
                None => match args.node {
                    Some(node) => (node, ServicesRequest::List),
                    None => bail!("name a node: constella services NODE [--json]"),
                },
                Some(ServicesCommand::Add { node, unit }) => (node, ServicesRequest::Add { unit }),
                Some(ServicesCommand::Remove { node, unit }) => {
                    (node, ServicesRequest::Remove { unit })
                }
                Some(ServicesCommand::Restart { node, unit }) => {
                    (node, ServicesRequest::Restart { unit })
                }
            };
            if let Some(unit) = request.unit() {
                constella_behaviours::rpc::unit_name(unit).map_err(anyhow::Error::msg)?;
            }
            let restart = matches!(request, ServicesRequest::Restart { .. });
            match ask(&state_dir, &Request::Services { target, request }).await? {
                Response::Services(answer) if args.json => print_json(&answer),
                Response::Services(answer) => {
                    if restart {
                        println!("Restarted on {}.", answer.node);
                    }
                    print_text(&output::services_table(&answer))
                }
                other => unexpected(other),
            }
        }
        Command::Audit(args) => audit_command(&state_dir, &args),
        Command::WebLogin(args) => {
            let request = Request::WebLogin {
                requested_by: local_user(),
            };
            match ask(&state_dir, &request).await? {
                Response::WebLogin(login) if args.json => print_json(&login),
                Response::WebLogin(login) => {
                    println!("{}", login.link);
                    if let Some(fingerprint) = &login.fingerprint {
                        println!("certificate SHA-256: {fingerprint}");
                    }
                    eprintln!(
                        "One-time login link for the web panel, valid for 5 minutes.{}",
                        if login.fingerprint.is_some() {
                            " The certificate is self-signed: compare its SHA-256 fingerprint in the browser with the one above."
                        } else {
                            ""
                        }
                    );
                    Ok(())
                }
                other => unexpected(other),
            }
        }
        Command::WebSessions(args) => {
            let request = match args.command {
                Some(cli::WebSessionsCommand::Revoke { id }) => Request::WebRevoke {
                    id,
                    requested_by: local_user(),
                },
                None => Request::WebSessions,
            };
            match ask(&state_dir, &request).await? {
                Response::WebSessions(sessions) if args.json => print_json(&sessions),
                Response::WebSessions(sessions) => {
                    print_text(&output::web_sessions_table(&sessions))
                }
                Response::WebRevoked(session) => print_text(&format!(
                    "Revoked web session {} of {}.\n",
                    session.id, session.who
                )),
                other => unexpected(other),
            }
        }
        Command::Chat(args) => chat::run(args, state_dir.path()).await,
        Command::BotToken(args) => match args.command {
            BotTokenCommand::Set {
                token_on_command_line,
            } => {
                if token_on_command_line.is_some() {
                    bail!(
                        "the bot token is not taken from the command line (every local user can read it in /proc): set CONSTELLA_BOT_TOKEN or give it on stdin; nothing changed"
                    );
                }
                let token = read_bot_token()?;
                let request = AdminRequest::BotTokenSet {
                    token: StoredSecret::new(token.expose().to_owned()),
                    requested_by: local_user(),
                };
                match ask(&state_dir, &request).await? {
                    Response::BotTokenSet { bot_id } => print_text(&format!(
                        "The token of bot {bot_id} is stored in {} (0600) and this node's bot restarted with it.\nOther members keep the old token until you run this on each of them.\n",
                        state_dir.path().join(state::BOT_TOKEN_FILE).display()
                    )),
                    other => unexpected(other),
                }
            }
        },
        Command::Leave(args) => {
            let network = state_dir.load()?.network_id;
            if !args.yes
                && !confirm(&format!(
                    "Leave network {network}? Every node will remove this one and it will forget the network secret."
                ))?
            {
                bail!("not confirmed; nothing changed");
            }
            match ask(&state_dir, &Request::Leave).await? {
                Response::Left(outcome) => print_left(&network, &outcome),
                other => unexpected(other),
            }
        }
    }
}

/// `constella docker NODE [COMMAND]`: one container request through the control socket.
async fn docker_command(state_dir: &StateDir, args: cli::DockerArgs) -> Result<()> {
    use crate::cli::DockerCommand;
    use crate::docker::{ContainerAction, DockerAnswer, DockerRequest};
    let target = args.target;
    let (request, json) = match args.command {
        None => (DockerRequest::List, args.json),
        Some(DockerCommand::Logs(logs)) => (
            DockerRequest::Logs {
                name: logs.name,
                tail: logs.tail,
            },
            false,
        ),
        Some(DockerCommand::Start(c)) => {
            (confirmed_act(ContainerAction::Start, c, &target)?, false)
        }
        Some(DockerCommand::Stop(c)) => (confirmed_act(ContainerAction::Stop, c, &target)?, false),
        Some(DockerCommand::Restart(c)) => {
            (confirmed_act(ContainerAction::Restart, c, &target)?, false)
        }
    };
    let request = Request::Docker { target, request };
    match ask(state_dir, &request).await? {
        Response::Docker(DockerAnswer::Containers(list)) if json => print_json(&list),
        Response::Docker(DockerAnswer::Containers(list)) => {
            print_text(&output::containers_table(&list))
        }
        Response::Docker(DockerAnswer::Done { action, container }) => print_text(&format!(
            "{}: {} done; now {}.\n",
            container.name,
            action.as_str(),
            container.state
        )),
        Response::Docker(DockerAnswer::Logs { lines, .. }) => {
            print_text(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())
        }
        other => unexpected(other),
    }
}

/// A container action, once the operator confirmed it (`--yes` or on the terminal).
fn confirmed_act(
    action: docker::ContainerAction,
    container: cli::ContainerArgs,
    target: &str,
) -> Result<docker::DockerRequest> {
    if !container.yes
        && !confirm(&format!(
            "{} container {} on {target}?",
            output::capitalised(action.as_str()),
            container.name
        ))?
    {
        bail!("not confirmed; nothing changed");
    }
    Ok(docker::DockerRequest::Act {
        name: container.name,
        action,
    })
}

fn init(state_dir: &StateDir, args: cli::InitArgs) -> Result<()> {
    state_dir.refuse_initialised()?;
    let bot_token = args
        .bot_token
        .as_ref()
        .map(validate::SecretArg::bot_token)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let lock = state_dir.create_and_lock()?;
    let result = state_dir
        .refuse_initialised()
        .and_then(|()| init_locked(state_dir, args, bot_token));
    if result.is_err() {
        lock.abandon();
    }
    result
}

/// `init` once the state directory is locked.
fn init_locked(
    state_dir: &StateDir,
    args: cli::InitArgs,
    bot_token: Option<validate::BotToken>,
) -> Result<()> {
    let key = state_dir.load_or_create_key()?;
    let node_id = key.public().to_peer_id();
    let pq4 = state_dir.load_or_create_pq4()?;
    let card = constella_behaviours::network_keys::Pq4Card::new(&key, &pq4)?;
    let secret = NetworkSecret::generate();
    let mut network_id = [0u8; 8];
    rand::fill(&mut network_id);
    let listen = listen_or_default(args.listen, args.public_addr.port);
    let record = MemberRecord {
        node_id,
        name: args.server_name.as_str().to_owned(),
        addr: args.public_addr.to_string(),
        priority: args.priority,
        version: 1,
        left: false,
        card: Some(card),
        admission: 0,
        removed_at: None,
        key_updates: Vec::new(),
        relays: Vec::new(),
    };
    let mut state = NetworkState {
        network_id: hex::encode(network_id),
        owner_username: args.owner.as_str().to_owned(),
        network_secret: Some(StoredSecret::from_secret(&secret)),
        peers: Vec::new(),
        format: STATE_FORMAT,
        node: LocalNode {
            name: record.name.clone(),
            node_id,
            public_addr: args.public_addr.to_string(),
            listen: listen.to_string(),
            priority: args.priority,
            incarnation: 0,
        },
        departed: Vec::new(),
        invites: Vec::new(),
        left: false,
        bot_token: bot_token.map(|t| StoredSecret::new(t.expose().to_owned())),
        settings: Default::default(),
        network_tag: Some(constella_behaviours::network_keys::network_tag(&secret)),
        secret_epoch: 0,
        last_rotation: None,
    };
    state.set_members(&[(record, constella_behaviours::membership::Status::Alive)]);
    state_dir.save(&state)?;
    println!(
        "Created network {} with {} ({node_id}).",
        state.network_id, state.node.name
    );
    println!("State written to {}.", state_dir.path().display());
    if state.bot_token.is_none() {
        println!("No --bot-token given: the network runs with the Telegram bot off.");
    }
    println!(
        "Next: start the node with `constella run`, then add servers with `constella invite`."
    );
    Ok(())
}

/// `constella audit`: reads and verifies the log from the state directory (the daemon need
/// not run), and records that it was read: access to the log is audited too.
fn audit_command(state_dir: &StateDir, args: &cli::AuditArgs) -> Result<()> {
    let result = audit::read_verified(state_dir.path());
    if !matches!(result, Err(audit::AuditError::Missing(_))) {
        let outcome = match &result {
            Ok(events) => format!("verified {} entries", events.len()),
            Err(error) => format!("failed: {error}"),
        };
        let who = format!(
            "cli:{} (uid {})",
            local_user(),
            private_dir::effective_uid().map_or_else(|| "unknown".to_owned(), |u| u.to_string())
        );
        let node = state_dir
            .load()
            .map_or_else(|_| "?".to_owned(), |s| s.node.name);
        let viewed = audit::AuditEvent::new(audit::AuditKind::AuditViewed, who, "cli")
            .detail("verify", args.verify)
            .detail("outcome", outcome);
        if let Err(error) = audit::AuditFile::open(state_dir.path(), false)
            .and_then(|mut log| log.append(&node, &[viewed]))
        {
            eprintln!("warning: this reading could not be recorded in the audit log: {error}");
        }
    }
    let mut events = result?;
    if args.verify {
        return print_text(&format!(
            "audit log verified: {} entries, each decrypts and follows the one before it, none missing at the end\n",
            events.len()
        ));
    }
    if let Some(since) = args.since {
        let cutoff = i64::try_from(state::unix_now().saturating_sub(since.duration().as_secs()))
            .unwrap_or(0)
            .saturating_mul(1000);
        events.retain(|e| e.timestamp >= cutoff);
    }
    if args.json {
        print_json(&events)
    } else {
        print_text(&output::audit_lines(&events))
    }
}

async fn ask(state_dir: &StateDir, request: &impl serde::Serialize) -> Result<Response> {
    match control::call(&state_dir.socket_path(), request).await? {
        Response::Error(message) => bail!("{message}"),
        response => Ok(response),
    }
}

fn unexpected(response: Response) -> Result<()> {
    bail!("the daemon gave an unexpected answer: {response:?}")
}

/// What a recorded leave tells the operator. A leave no member confirmed is still recorded
/// (exit code 0), but the operator must finish it elsewhere: said on stderr.
fn print_left(network: &str, outcome: &LeaveOutcome) -> Result<()> {
    match outcome {
        LeaveOutcome::Confirmed(member) => print_text(&format!(
            "Left network {network}; {member} confirmed and tells the others.\n"
        )),
        LeaveOutcome::Alone => print_text(&format!(
            "Left network {network}; it had no other member.\n"
        )),
        LeaveOutcome::Unconfirmed => {
            print_text(&format!("Left network {network}.\n"))?;
            eprintln!(
                "warning: no member confirmed; the others will list this node as offline until you run `constella remove NAME` on one of them"
            );
            Ok(())
        }
    }
}

fn print_text(text: &str) -> Result<()> {
    print!("{text}");
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("cannot encode JSON")?
    );
    Ok(())
}

/// A bot token from `CONSTELLA_BOT_TOKEN`, else one line of stdin (not echoed on a
/// terminal), validated without repeating it.
fn read_bot_token() -> Result<validate::BotToken> {
    let text = match std::env::var("CONSTELLA_BOT_TOKEN") {
        Ok(token) if !token.trim().is_empty() => zeroize::Zeroizing::new(token),
        _ => {
            let stdin = std::io::stdin();
            let terminal = stdin.is_terminal();
            if terminal {
                eprint!("New bot token from @BotFather (not shown): ");
                // Best effort: without stty the line is echoed, which is still not argv.
                let _ = std::process::Command::new("stty").arg("-echo").status();
            }
            let mut line = zeroize::Zeroizing::new(String::new());
            let read = stdin.lock().read_line(&mut line);
            if terminal {
                let _ = std::process::Command::new("stty").arg("echo").status();
                eprintln!();
            }
            read.context("cannot read the token from stdin")?;
            line
        }
    };
    if text.trim().is_empty() {
        bail!("no bot token: set CONSTELLA_BOT_TOKEN or give it on stdin; nothing changed");
    }
    text.parse::<validate::BotToken>()
        .map_err(anyhow::Error::msg)
}

/// Who runs this command, for the target's log: the sudo caller if any, else the login name.
fn local_user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

/// Asks on the terminal; refuses (rather than assuming yes) when stdin is not a terminal.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question}\nstdin is not a terminal: pass --yes to confirm");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
