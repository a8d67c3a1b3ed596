//! Command-line arguments. clap parses raw text into the validated types of
//! [`validate`](crate::validate); anything it cannot parse is refused with one line naming it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::link::JoinLink;
use constella_behaviours::settings::Role;

use crate::validate::{Age, ApiUrl, HostPort, OwnerUsername, SecretArg, ServerName, Ttl, Username};

/// Default leader priority: lower numbers win, so give a preferred leader a smaller one.
pub const DEFAULT_PRIORITY: u32 = 100;
/// Default TCP port.
pub const DEFAULT_PORT: u16 = 4747;

#[derive(Debug, Parser)]
#[command(
    name = "constella",
    version,
    about = "A peer-to-peer network of VPS nodes with an elected leader (\"Хост\") and no central server",
    long_about = "A peer-to-peer network of VPS nodes with an elected leader (\"Хост\") and no central server.\n\n\
        Start a network with `init`, print a one-time link with `invite`, add a node with `join`, \
        then keep each node running with `run`. `status` and `peers` ask the running daemon.",
    after_help = "The state directory defaults to /var/lib/constella for root, otherwise \
        $XDG_STATE_HOME/constella or ~/.local/state/constella. Logs go to stderr (the journal \
        under systemd), or to rotated files with `run --log-dir DIR`; set RUST_LOG \
        (e.g. RUST_LOG=debug) to change the level."
)]
pub struct Cli {
    /// Directory holding network_state.json, node.key and the control socket.
    #[arg(long, global = true, env = "CONSTELLA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new network with this server as its first node.
    Init(InitArgs),
    /// Join an existing network with a one-time link from `constella invite`.
    Join(JoinArgs),
    /// Run the node (in the foreground; use the systemd unit for a service).
    Run(RunArgs),
    /// Show this node, the network and its leader.
    Status(OutputArgs),
    /// List the network's nodes; the leader is marked "— Хост".
    Peers(PeersArgs),
    /// Remove a member for good (a lost or compromised server): every node drops it and the
    /// network secret is rotated to a new epoch that it never gets.
    Remove(RemoveArgs),
    /// Show a node's PQ4 fingerprint, to compare with what that node shows itself.
    Verify(VerifyArgs),
    /// Replace this node's PQ4 identity with a new one, signed by the old (chain of custody);
    /// every member accepts it only through that chain. Its fingerprint changes.
    RotateKeys(OutputArgs),
    /// Print a one-time join link for a new node.
    Invite(InviteArgs),
    /// Leave the network: every node removes this one, and it forgets the network secret.
    Leave(LeaveArgs),
    /// Show a node's CPU, memory, disk and uptime (asked over the network).
    Stats(StatsArgs),
    /// Reboot a node's host (asked over the network; the target needs root or CAP_SYS_BOOT).
    Reboot(RebootArgs),
    /// Restart every node of the network one at a time, the leader last, waiting until each is
    /// alive again on every other node before the next.
    RollingRestart(RollingRestartArgs),
    /// List a node's Docker containers; start, stop or restart one; show its output.
    Docker(DockerArgs),
    /// Change the network's owner: the Telegram account the bot serves with every right.
    Owner(OwnerArgs),
    /// Who may use the bot besides the owner: list, grant or revoke roles.
    Access(AccessArgs),
    /// Show this node's audit log (security events), or verify that nothing in it was changed.
    Audit(AuditArgs),
    /// Replace the Telegram bot token on this node.
    BotToken(BotTokenArgs),
    /// Threshold alerts (CPU, RAM, disk): the thresholds and the recent alert episodes, or
    /// set a threshold for the whole network.
    Alerts(AlertsArgs),
    /// A node's watched systemd units: their status, add or remove one, restart one.
    Services(ServicesArgs),
    /// PQ4 end-to-end encrypted chat: accounts, 1:1 messages (docs/messaging.md).
    Chat(crate::chat::ChatArgs),
    /// Print a one-time login link (valid 5 minutes) for this node's web panel.
    WebLogin(OutputArgs),
    /// List this node's web panel sessions, or revoke one.
    WebSessions(WebSessionsArgs),
}

#[derive(Debug, Args)]
pub struct WebSessionsArgs {
    #[command(subcommand)]
    pub command: Option<WebSessionsCommand>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebSessionsCommand {
    /// End a session at once (its id from `constella web-sessions`).
    Revoke {
        /// The session id (8 hex digits).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// This server's name, a DNS label such as delta-01.
    #[arg(long, value_name = "NAME")]
    pub server_name: ServerName,
    /// The address other nodes reach this one at, HOST:PORT (port 4747 by default).
    #[arg(long, value_name = "HOST:PORT")]
    pub public_addr: HostPort,
    /// The Telegram username of the network's owner, e.g. @Rmgss.
    #[arg(long, value_name = "@USERNAME")]
    pub owner: OwnerUsername,
    /// The Telegram bot token from @BotFather; it travels to every node so that any leader can
    /// host the bot. Without one the network runs with the bot off.
    #[arg(
        long,
        env = "CONSTELLA_BOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub bot_token: Option<SecretArg>,
    /// Leader priority: the alive node with the lowest number leads (ties: smallest node id).
    #[arg(long, default_value_t = DEFAULT_PRIORITY, value_name = "N")]
    pub priority: u32,
    /// Where to listen, HOST:PORT [default: 0.0.0.0 and the port of --public-addr].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<HostPort>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// This server's name, a DNS label such as echo-02.
    #[arg(long, value_name = "NAME")]
    pub server_name: ServerName,
    /// The link printed by `constella invite` on a member.
    #[arg(long = "join", value_name = "LINK")]
    pub link: JoinLink,
    /// The address other nodes reach this one at [default: the IP the seed sees, and the listen port].
    #[arg(long, value_name = "HOST:PORT")]
    pub public_addr: Option<HostPort>,
    /// Leader priority: the alive node with the lowest number leads (ties: smallest node id).
    #[arg(long, default_value_t = DEFAULT_PRIORITY, value_name = "N")]
    pub priority: u32,
    /// Where to listen, HOST:PORT [default: 0.0.0.0 and the port of --public-addr, or 4747].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<HostPort>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Listen here instead of the address recorded at init/join, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<HostPort>,
    /// Bot API server the bot talks to when this node leads: a self-hosted telegram-bot-api or a
    /// test server [default: https://api.telegram.org].
    #[arg(long, env = "CONSTELLA_TELEGRAM_API_URL", value_name = "URL")]
    pub telegram_api_url: Option<ApiUrl>,
    /// Run this shell command instead of rebooting the host when a reboot is requested
    /// (for testing or a custom procedure). Unset, the host reboots (needs root or CAP_SYS_BOOT).
    #[arg(long, env = "CONSTELLA_REBOOT_COMMAND", value_name = "COMMAND")]
    pub reboot_command: Option<String>,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics (off unless set; e.g.
    /// 127.0.0.1:9474).
    #[arg(long, env = "CONSTELLA_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the web panel on HOST:PORT (off unless set): plain HTTP on a loopback address
    /// (e.g. 127.0.0.1:4780), HTTPS with a self-signed certificate on any other.
    #[arg(long, env = "CONSTELLA_WEB_ADDR", value_name = "HOST:PORT")]
    pub web_addr: Option<std::net::SocketAddr>,
    /// Serve the web panel over HTTPS on a loopback address too.
    #[arg(long, env = "CONSTELLA_WEB_TLS", requires = "web_addr")]
    pub web_tls: bool,
    /// Do not sample this host's figures (no history, no host figures on /metrics).
    #[arg(long, env = "CONSTELLA_NO_SAMPLING")]
    pub no_sampling: bool,
    /// The day of the month (1–31, UTC) the monthly traffic totals start again, as your
    /// provider bills them; in shorter months, the month's last day.
    #[arg(long, env = "CONSTELLA_TRAFFIC_RESET_DAY", value_name = "DAY", default_value_t = 1,
        value_parser = crate::monitor::traffic::parse_reset_day)]
    pub traffic_reset_day: u8,
    /// Write logs to files in DIR (one per UTC day and per 10 MiB, the newest 14 kept) instead
    /// of stderr.
    #[arg(long, env = "CONSTELLA_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Ask this node (name or node id) for its view instead of the local one.
    #[arg(long, value_name = "NODE")]
    pub from: Option<String>,
    /// Show each node's 60-digit PQ4 fingerprint.
    #[arg(long, conflicts_with = "json")]
    pub fingerprints: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The node, by server name or node id.
    #[arg(value_name = "NODE")]
    pub target: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The node, by server name or node id.
    #[arg(value_name = "NODE")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The node, by server name or node id.
    #[arg(value_name = "NODE")]
    pub target: String,
    /// Print the raw figures as JSON (units in the field names).
    #[arg(long)]
    pub json: bool,
    /// Show the sampled history over this range instead (1h, 24h, 7d … at most 30d): a
    /// sparkline table, or with --json `{"metric": [[unix_secs, value], …], …}`.
    #[arg(long, value_name = "RANGE", value_parser = crate::monitor::parse_range)]
    pub history: Option<u64>,
    /// With --history: only this metric (repeatable), e.g. cpu_percent, disk_used_percent:/.
    #[arg(long, value_name = "METRIC", requires = "history")]
    pub metric: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RebootArgs {
    /// The node, by server name or node id.
    #[arg(value_name = "NODE")]
    pub target: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Without a command: every container of NODE with its state, uptime, CPU \
    and memory. Only the node itself is served for now (run it on that node)."
)]
pub struct DockerArgs {
    /// The node, by server name or node id.
    #[arg(value_name = "NODE")]
    pub target: String,
    /// Print the container list as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<DockerCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DockerCommand {
    /// Start a stopped container.
    Start(ContainerArgs),
    /// Stop a container (SIGTERM, SIGKILL after 10 s).
    Stop(ContainerArgs),
    /// Restart a container.
    Restart(ContainerArgs),
    /// Print the last lines of a container's output (stdout and stderr).
    Logs(ContainerLogsArgs),
}

#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// The container, by name or id.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ContainerLogsArgs {
    /// The container, by name or id.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// How many lines, from 1 to 1000.
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub tail: u32,
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// How long the link stays valid: 30s, 15m, 2h … at most 24h.
    #[arg(long, default_value = "15m", value_name = "TTL")]
    pub ttl: Ttl,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Placeholders in both templates: {name}, {host}, {port}, {addr} (host:port) \
    and {node_id} of the node concerned. The member list comes from the node whose state directory \
    this runs against (--state-dir, default the local node); every member must be alive.\n\n\
    Without systemd: --restart-cmd 'ssh root@{host} /path/to/repo/scripts/install.sh restart'."
)]
pub struct RollingRestartArgs {
    /// Shell command that restarts one node.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = "ssh root@{host} systemctl restart constella"
    )]
    pub restart_cmd: String,
    /// Shell command that runs `constella` against one node; `status --json` and
    /// `peers --json` are appended.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = "ssh root@{host} constella"
    )]
    pub ctl: String,
    /// Seconds a restarted node may take to be alive again on every node.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Print the plan and restart nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct OwnerArgs {
    #[command(subcommand)]
    pub command: OwnerCommand,
}

#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Make @USERNAME the owner on every node. The old owner's Telegram id is unpinned and they
    /// are told once; the new owner is pinned at their first /start.
    Set {
        /// The new owner's Telegram username, e.g. @Rmgss.
        #[arg(value_name = "@USERNAME")]
        username: OwnerUsername,
    },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Roles: viewer (node list, cards, usage), operator (also reboot and invite). \
    The owner alone changes the owner, the token and the roles, and removes nodes. An account is \
    pinned by its numeric Telegram id at its first message to the bot after the grant."
)]
pub struct AccessArgs {
    #[command(subcommand)]
    pub command: Option<AccessCommand>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Give a Telegram account a role: viewer or operator.
    Grant {
        #[arg(value_name = "@USERNAME")]
        username: Username,
        #[arg(value_name = "ROLE")]
        role: Role,
    },
    /// Take an account's role away.
    Revoke {
        #[arg(value_name = "@USERNAME")]
        username: Username,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries newer than this: 30m, 1h, 7d.
    #[arg(long, value_name = "AGE")]
    pub since: Option<Age>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check the whole log (every entry decrypts and follows the one before it, and none is
    /// missing at the end); exits non-zero naming the first entry that does not.
    #[arg(long, conflicts_with_all = ["since", "json"])]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct BotTokenArgs {
    #[command(subcommand)]
    pub command: BotTokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum BotTokenCommand {
    /// Read a new token from CONSTELLA_BOT_TOKEN or stdin (never the command line), check it,
    /// store it (0600) and restart this node's bot with it. Run it on every member.
    Set {
        /// Refused: a token on the command line is visible to every local user in /proc.
        #[arg(hide = true, value_name = "TOKEN")]
        token_on_command_line: Option<SecretArg>,
    },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Defaults: cpu 90 % (held for 5 minutes), ram 90 %, disk 90 % (the fullest \
    mount), traffic off (a monthly quota in bytes, rx+tx of every interface since the node's \
    --traffic-reset-day). An episode recovers 5 points below its threshold (traffic: at the \
    month's reset, or when the quota is raised). The leader's bot tells the owner \
    once when an episode opens and once when it recovers."
)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Set a rule's threshold on every node: `alerts set cpu 90`, `alerts set disk off`,
    /// `alerts set traffic 500GiB` (the monthly traffic quota).
    Set {
        /// cpu, ram, disk or traffic.
        #[arg(value_name = "RULE")]
        rule: constella_behaviours::alerts::Rule,
        /// A percentage from 1 to 100, or off; for traffic a size (500GB, 1.5TiB, bytes) or off.
        #[arg(value_name = "PERCENT|SIZE")]
        value: String,
    },
}

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Each node keeps its own list (STATE_DIR/services.json) and answers with its own \
    systemctl; any member can ask it over the network. Listing needs a viewer's right, changing \
    the list or restarting an operator's (the CLI of a member may do both)."
)]
pub struct ServicesArgs {
    #[command(subcommand)]
    pub command: Option<ServicesCommand>,
    /// The node (server name or node id) whose units to show.
    #[arg(value_name = "NODE")]
    pub node: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Watch a systemd unit on NODE (its status shows in `services NODE` and the bot).
    Add {
        #[arg(value_name = "NODE")]
        node: String,
        #[arg(value_name = "UNIT")]
        unit: String,
    },
    /// Stop watching a unit on NODE.
    Remove {
        #[arg(value_name = "NODE")]
        node: String,
        #[arg(value_name = "UNIT")]
        unit: String,
    },
    /// Restart a watched unit on NODE (`systemctl restart UNIT` there).
    Restart {
        #[arg(value_name = "NODE")]
        node: String,
        #[arg(value_name = "UNIT")]
        unit: String,
    },
}

/// The listen address: the one given, or all interfaces on `port`.
pub fn listen_or_default(listen: Option<HostPort>, port: u16) -> HostPort {
    listen.unwrap_or(HostPort {
        host: "0.0.0.0".to_owned(),
        port,
    })
}
