//! `constella-sim`: runs the protocol core of N nodes on a simulated network (see
//! `constella_behaviours::sim`) and prints one line per scenario phase with its failover or
//! convergence time, then a summary with the simulator's speed. Exits 0 only when every
//! invariant held; otherwise prints the violation and the seed that replays it, and exits 1.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use constella_behaviours::sim::{self, Fault, NetConfig, Scenario, SimError, StartMode, Target};

const EXAMPLES: &str = "\
Examples:
  constella-sim --nodes 1000 --sim-secs 600 --seed 1
      the default set: start, converge, crash the leader (silent), restart it, crash it
      (loud), restart it, partition a third of the network (at most 10 nodes) off with the
      leader, heal
  constella-sim --nodes 5 --sim-secs 600 --loss 0.05 --latency-ms 100 --jitter-ms 50 \\
      --no-faults --assert-no-false-offline
      no faults but 5 % loss and 100 ms +- 50 ms: fails if any member is marked offline
  constella-sim --nodes 5 --sim-secs 200 --partition 30:2:60
      at 30 s nodes 0-1 (node 0 is the first leader) are cut off from 2-4, healed at 90 s
  constella-sim --nodes 50 --sim-secs 120 --crash 30:loud --restart 60
      the leader's process is killed at 30 s (peers see the reset), restarted at 60 s
  constella-sim --nodes 20 --sim-secs 120 --join 30:5:100
      5 nodes join 100 ms apart, each through a random member's invite

Times are simulated seconds since the start (decimals allowed). Nodes are numbered in leader
order at the start: node 0 leads first. Any fault flag (or --no-faults) replaces the
default set.";

/// Runs Constella's protocol core on a simulated network and checks its invariants.
#[derive(Debug, Parser)]
#[command(name = "constella-sim", version, after_help = EXAMPLES)]
struct Args {
    /// Nodes at the start.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Simulated seconds to run.
    #[arg(long, default_value_t = 600.0)]
    sim_secs: f64,
    /// Seed of every random choice; a failing run prints it for replay.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Base one-way latency of every link, in ms.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Each link gets a fixed extra latency up to this, in ms.
    #[arg(long, default_value_t = 20)]
    latency_spread_ms: u64,
    /// Per-message jitter, +- this many ms.
    #[arg(long, default_value_t = 5)]
    jitter_ms: u64,
    /// Probability that one message to one receiver is lost (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Each node's clock is offset by up to this many ms.
    #[arg(long, default_value_t = 500)]
    skew_ms: u64,
    /// A dial nobody answers fails after this many ms (the daemon's connect bound).
    #[arg(long, default_value_t = constella_behaviours::CONNECT_TIMEOUT.as_millis() as u64)]
    dial_timeout_ms: u64,
    /// A connection whose link stopped passing closes after this many ms (the daemon's ping
    /// interval plus ping timeout).
    #[arg(long, default_value_t = (constella_behaviours::PING_INTERVAL + constella_behaviours::PING_TIMEOUT).as_millis() as u64)]
    conn_timeout_ms: u64,
    /// Invariants are checked every this many simulated ms.
    #[arg(long, default_value_t = 100)]
    step_ms: u64,
    /// How the run begins: cold (fresh processes dial each other), warm (as cold, from a state
    /// file where all were alive) or steady (already running: connections open, subscriptions
    /// exchanged). Default: cold up to 100 nodes, steady beyond (a cold start costs O(N³)
    /// record merges under the current sync-on-subscribe rule).
    #[arg(long, value_enum)]
    start: Option<Start>,
    /// Run without any fault (steady state), instead of the default set.
    #[arg(long)]
    no_faults: bool,
    /// Fail on any false offline mark (a member up and reachable marked offline).
    #[arg(long)]
    assert_no_false_offline: bool,
    /// Turn local health awareness off (a late node then judges silences it could not hear).
    #[arg(long)]
    no_local_health: bool,
    /// AT[:loud]: crash the leader at AT s (silent: its host vanishes; loud: connections reset).
    #[arg(long, value_name = "AT[:loud]")]
    crash: Vec<String>,
    /// AT:NODE[:loud]: crash node NODE at AT s.
    #[arg(long, value_name = "AT:NODE[:loud]")]
    crash_node: Vec<String>,
    /// AT:NODE:MS: node NODE's process is not scheduled for MS ms from AT s (starved or
    /// stopped; its timer comes first when it runs again, then what waited).
    #[arg(long, value_name = "AT:NODE:MS")]
    pause: Vec<String>,
    /// AT: stop the leader gracefully (goodbye, stand down) at AT s.
    #[arg(long, value_name = "AT")]
    stop: Vec<String>,
    /// AT: restart every crashed or stopped node from its last snapshot at AT s.
    #[arg(long, value_name = "AT")]
    restart: Vec<String>,
    /// AT:SIZE:SECS: cut nodes 0..SIZE off from the rest at AT s, heal SECS later.
    #[arg(long, value_name = "AT:SIZE:SECS")]
    partition: Vec<String>,
    /// AT:FROM:TO:SECS: drop every message from node FROM to node TO for SECS.
    #[arg(long, value_name = "AT:FROM:TO:SECS")]
    block: Vec<String>,
    /// AT:P: set the loss probability to P at AT s.
    #[arg(long, value_name = "AT:P")]
    loss_at: Vec<String>,
    /// AT:COUNT[:GAP_MS]: COUNT nodes join GAP_MS apart (default 100) from AT s.
    #[arg(long, value_name = "AT:COUNT[:GAP_MS]")]
    join: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Start {
    Cold,
    Warm,
    Steady,
}

fn secs(text: &str, flag: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--{flag}: {text:?} is not a number of seconds"))
}

fn number<T: std::str::FromStr>(text: &str, flag: &str, what: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("--{flag}: {text:?} is not a valid {what}"))
}

fn parts<'a>(text: &'a str, flag: &str, min: usize, max: usize) -> Result<Vec<&'a str>, String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() < min || parts.len() > max {
        return Err(format!(
            "--{flag}: {text:?} does not have the form shown in --help"
        ));
    }
    Ok(parts)
}

fn loud(part: Option<&&str>, flag: &str) -> Result<bool, String> {
    match part {
        None => Ok(false),
        Some(&"loud") => Ok(true),
        Some(&"silent") => Ok(false),
        Some(other) => Err(format!("--{flag}: {other:?} is neither loud nor silent")),
    }
}

fn faults(args: &Args) -> Result<Vec<(Duration, Fault)>, String> {
    let mut faults = Vec::new();
    for text in &args.crash {
        let p = parts(text, "crash", 1, 2)?;
        let loud = loud(p.get(1), "crash")?;
        faults.push((
            secs(p[0], "crash")?,
            Fault::Crash {
                target: Target::Leader,
                loud,
            },
        ));
    }
    for text in &args.crash_node {
        let p = parts(text, "crash-node", 2, 3)?;
        let node = number(p[1], "crash-node", "node number")?;
        let loud = loud(p.get(2), "crash-node")?;
        faults.push((
            secs(p[0], "crash-node")?,
            Fault::Crash {
                target: Target::Node(node),
                loud,
            },
        ));
    }
    for text in &args.pause {
        let p = parts(text, "pause", 3, 3)?;
        let node = number(p[1], "pause", "node number")?;
        let ms: u64 = number(p[2], "pause", "length in ms")?;
        faults.push((
            secs(p[0], "pause")?,
            Fault::Pause {
                node,
                length: Duration::from_millis(ms),
            },
        ));
    }
    for text in &args.stop {
        faults.push((secs(text, "stop")?, Fault::Stop(Target::Leader)));
    }
    for text in &args.restart {
        faults.push((secs(text, "restart")?, Fault::RestartAll));
    }
    for text in &args.partition {
        let p = parts(text, "partition", 3, 3)?;
        let at = secs(p[0], "partition")?;
        let minority = number(p[1], "partition", "side size")?;
        faults.push((at, Fault::Partition { minority }));
        faults.push((at + secs(p[2], "partition")?, Fault::Heal));
    }
    for text in &args.block {
        let p = parts(text, "block", 4, 4)?;
        let at = secs(p[0], "block")?;
        let from = number(p[1], "block", "node number")?;
        let to = number(p[2], "block", "node number")?;
        faults.push((at, Fault::BlockOneWay { from, to }));
        faults.push((at + secs(p[3], "block")?, Fault::Heal));
    }
    for text in &args.loss_at {
        let p = parts(text, "loss-at", 2, 2)?;
        let loss = number(p[1], "loss-at", "probability")?;
        faults.push((secs(p[0], "loss-at")?, Fault::SetLoss(loss)));
    }
    for text in &args.join {
        let p = parts(text, "join", 2, 3)?;
        let count = number(p[1], "join", "count")?;
        let gap_ms: u64 = match p.get(2) {
            Some(gap) => number(gap, "join", "gap in ms")?,
            None => 100,
        };
        faults.push((
            secs(p[0], "join")?,
            Fault::Join {
                count,
                gap: Duration::from_millis(gap_ms),
            },
        ));
    }
    faults.sort_by_key(|(at, _)| *at);
    Ok(faults)
}

fn scenario(args: &Args) -> Result<Scenario, String> {
    let duration = secs(&args.sim_secs.to_string(), "sim-secs")?;
    let faults = faults(args)?;
    let name = if args.no_faults {
        "steady"
    } else if faults.is_empty() {
        "default"
    } else {
        "custom"
    };
    let mut scenario = Scenario::new(name, args.nodes, duration, args.seed);
    scenario.net = NetConfig {
        latency: Duration::from_millis(args.latency_ms),
        latency_spread: Duration::from_millis(args.latency_spread_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        loss: args.loss,
        dial_timeout: Duration::from_millis(args.dial_timeout_ms),
        conn_timeout: Duration::from_millis(args.conn_timeout_ms),
        clock_skew: Duration::from_millis(args.skew_ms),
        step: Duration::from_millis(args.step_ms),
    };
    if let Some(start) = args.start {
        scenario.start = match start {
            Start::Cold => StartMode::Cold,
            Start::Warm => StartMode::Warm,
            Start::Steady => StartMode::Steady,
        };
    }
    scenario.assert_no_false_offline = args.assert_no_false_offline;
    scenario.local_health = !args.no_local_health;
    if name == "default" {
        scenario.add_default_faults();
    } else {
        scenario.faults = faults;
    }
    Ok(scenario)
}

/// CPU seconds (user + system) this process used, from /proc/self/stat (in 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// glibc backs its heap with transparent huge pages only when asked (the kernel's `madvise`
/// mode, the default on this machine). At a thousand nodes the cores' member tables are close
/// to a gigabyte read at random, and with 4 KiB pages nearly every lookup also misses the TLB:
/// huge pages took a third off the CPU time of the 1,000-node run. The setting is read when the
/// process starts, so the simulator runs itself again once with
/// `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, unless `GLIBC_TUNABLES` is already set (set it,
/// even empty, to opt out). Returns the child's exit status, or `None` to go on in-process.
fn rerun_with_huge_pages() -> Option<ExitCode> {
    if !cfg!(target_os = "linux") || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        .status()
        .ok()?;
    Some(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn main() -> ExitCode {
    if let Some(status) = rerun_with_huge_pages() {
        return status;
    }
    let args = Args::parse();
    let scenario = match scenario(&args) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("constella-sim: {error}");
            return ExitCode::from(2);
        }
    };
    let nodes = scenario.nodes;
    let seed = scenario.seed;
    let replay = scenario.replay_command();
    let cpu_before = cpu_seconds();
    let result = sim::Sim::new(scenario).map(sim::Sim::run);
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(before), Some(after)) => after - before,
        _ => f64::NAN,
    };
    let report = match result {
        Ok(report) => report,
        Err(SimError::BadScenario(reason)) => {
            eprintln!("constella-sim: bad scenario: {reason}");
            return ExitCode::from(2);
        }
        Err(error @ SimError::Violation(_)) => {
            eprintln!("constella-sim: {error}");
            eprintln!("replay: {replay}");
            return ExitCode::FAILURE;
        }
    };
    for phase in &report.phases {
        let what = if phase.name.starts_with("crash") || phase.name.starts_with("stop") {
            "failover"
        } else {
            "converge"
        };
        println!(
            "scenario={} nodes={nodes} seed={seed} measures={what} {phase}",
            phase.name
        );
    }
    println!(
        "summary nodes={nodes} seed={seed} events={} handle_calls={} gossip_deliveries={} \
         cpu_secs={cpu:.2} node_secs={:.0} node_secs_per_cpu_sec={:.0} false_offline={} result={}",
        report.events,
        report.handle_calls,
        report.deliveries,
        report.node_seconds,
        report.node_seconds / cpu,
        report.false_offline,
        if report.violation.is_some() {
            "VIOLATION"
        } else {
            "ok"
        }
    );
    match report.violation {
        Some(violation) => {
            eprintln!("constella-sim: {violation}");
            eprintln!("replay: {replay}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
