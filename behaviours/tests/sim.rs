//! Scenarios of the network simulator (`constella_behaviours::sim`) run against the real
//! protocol core: leader crashes, a partition and its heal, a lossy jittery network, back-to-back
//! joins, and random fault schedules. Every scenario checks the simulator's invariants at every
//! step; these tests additionally check the figures each scenario must show. A failure prints
//! the violation and the `constella-sim` command that replays it.

use std::time::Duration;

use constella_behaviours::node::Config;
use constella_behaviours::sim::{
    self, Fault, Invariant, PhaseReport, RunReport, Scenario, SimError, StartMode, Target,
};
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs a scenario; on a violation, fails with it and the command that replays it.
fn run(scenario: Scenario) -> RunReport {
    let replay = scenario.replay_command();
    match sim::run(scenario) {
        Ok(report) => report,
        Err(error) => panic!("{error}\nreplay: {replay}"),
    }
}

fn phase<'a>(report: &'a RunReport, prefix: &str) -> &'a PhaseReport {
    report
        .phases
        .iter()
        .find(|p| p.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no phase {prefix} in {:?}", report.phases))
}

/// Crashes the leader silently at 30 s and loudly after it restarted; checks the failover
/// times against the detection bounds and that the first leader takes over again.
fn leader_crashes(nodes: usize) {
    let config = Config::for_size(nodes);
    let mut scenario = Scenario::new("leader-crash", nodes, secs(170), 7);
    let crash = |loud| Fault::Crash {
        target: Target::Leader,
        loud,
    };
    scenario.faults = vec![
        (secs(30), crash(false)),
        (secs(75), Fault::RestartAll),
        (secs(120), crash(true)),
    ];
    let report = run(scenario);
    let silent = phase(&report, "crash-leader(silent)");
    let failover = silent
        .converged_after
        .expect("no failover after a silent crash");
    assert!(
        failover <= config.offline_after + secs(1),
        "silent failover took {failover:?}, more than offline_after {:?}",
        config.offline_after
    );
    assert_eq!(silent.leaders, vec!["n0001".to_owned()]);
    assert_eq!(silent.up, nodes - 1);
    let back = phase(&report, "restart");
    assert!(back.converged_after.is_some());
    assert_eq!(
        back.leaders,
        vec!["n0000".to_owned()],
        "the first leader leads again"
    );
    let loud = phase(&report, "crash-leader(loud)");
    let failover = loud
        .converged_after
        .expect("no failover after a loud crash");
    assert!(
        failover < secs(1),
        "a loud crash is seen through the reset and a refused dial, took {failover:?}"
    );
    assert_eq!(loud.leaders, vec!["n0001".to_owned()]);
    assert_eq!(report.false_offline, 0);
}

#[test]
fn leader_crash_in_5_nodes() {
    leader_crashes(5);
}

#[test]
fn leader_crash_in_50_nodes() {
    leader_crashes(50);
}

/// About 40 s in a debug build (most of it heartbeats: 500 nodes each hear every other).
#[test]
fn leader_crash_in_500_nodes() {
    leader_crashes(500);
}

#[test]
fn partition_3_2_and_heal() {
    // Nodes 0-1 (with the leader) on one side, 2-4 on the other.
    let mut scenario = Scenario::new("partition", 5, secs(200), 3);
    scenario.faults = vec![
        (secs(30), Fault::Partition { minority: 2 }),
        (secs(100), Fault::Heal),
    ];
    let settle = scenario.settle_bound();
    let report = run(scenario);
    let split = phase(&report, "partition");
    assert_eq!(split.components, 2);
    assert_eq!(split.leaders, vec!["n0000".to_owned(), "n0002".to_owned()]);
    assert!(split.converged_after.is_some_and(|d| d <= settle));
    let healed = phase(&report, "heal");
    assert_eq!(healed.components, 1);
    assert_eq!(healed.leaders, vec!["n0000".to_owned()]);
    assert!(
        healed.converged_after.is_some_and(|d| d <= settle),
        "heal: {healed}"
    );
}

/// 5 % loss per hop and 100 ms ± 50 ms for ten simulated minutes: no member may be marked
/// offline. Gossip copies travel over the mesh's several paths (the simulator's model, see
/// `sim.rs`); with one copy per receiver over one lossy link, as an earlier model had it, two
/// lost heartbeats in a row plus a late third already marked a member offline (6 false marks in
/// 188 s with seed 1): `offline_after` is exactly three heartbeat intervals, which leaves no slack
/// for a network that loses single messages. Issue 11's detector must keep this at zero.
#[test]
fn lossy_jittery_network_has_no_false_offline_marks() {
    let mut scenario = Scenario::new("lossy", 5, secs(600), 11);
    scenario.net.loss = 0.05;
    scenario.net.latency = Duration::from_millis(100);
    scenario.net.jitter = Duration::from_millis(50);
    scenario.assert_no_false_offline = true;
    let report = run(scenario);
    assert_eq!(report.false_offline, 0);
    assert_eq!(phase(&report, "start").leaders, vec!["n0000".to_owned()]);
}

#[test]
fn back_to_back_joins_are_all_admitted_and_known_everywhere() {
    let mut scenario = Scenario::new("joins", 5, secs(120), 5);
    scenario.faults = vec![
        (
            secs(20),
            Fault::Join {
                count: 4,
                gap: Duration::from_millis(50),
            },
        ),
        (
            secs(60),
            Fault::Join {
                count: 3,
                gap: Duration::ZERO,
            },
        ),
    ];
    let report = run(scenario);
    let first = &report.phases[1];
    assert!(first.converged_after.is_some(), "{first}");
    let last = report.phases.last().expect("phases");
    assert_eq!(last.up, 12, "every joiner runs a core");
    assert_eq!(last.components, 1);
    assert!(
        last.converged_after.is_some(),
        "all agree on one roster: {last}"
    );
}

#[test]
fn one_seed_gives_one_run() {
    let scenario = || {
        let mut s = Scenario::new("default", 20, secs(200), 42);
        s.add_default_faults();
        s.net.loss = 0.01;
        s
    };
    let (a, b) = (run(scenario()), run(scenario()));
    assert_eq!(a, b);
    let mut other = scenario();
    other.seed = 43;
    assert_ne!(run(other).events, a.events, "another seed, another run");
}

#[test]
fn the_checker_catches_false_offline_marks_and_names_the_seed() {
    // At 90 % loss a member goes unheard, directly and through every helper, for longer than
    // the (health-stretched) offline bound: the invariant must trip. (70 % no longer did once
    // indirect probes, nacks and local health awareness came in.)
    let mut scenario = Scenario::new("very-lossy", 5, secs(300), 9);
    scenario.net.loss = 0.9;
    scenario.assert_no_false_offline = true;
    match sim::run(scenario) {
        Err(SimError::Violation(violation)) => {
            assert_eq!(violation.invariant, Invariant::FalseOffline);
            assert_eq!(violation.seed, 9);
            let text = violation.to_string();
            assert!(
                text.contains("seed 9") && text.contains("false-offline"),
                "{text}"
            );
        }
        other => panic!("expected a false-offline violation, got {other:?}"),
    }
}

#[test]
fn a_bad_scenario_is_refused_with_a_reason() {
    let mut scenario = Scenario::new("bad", 5, secs(10), 1);
    scenario.faults = vec![(secs(1), Fault::Partition { minority: 5 })];
    assert!(matches!(
        sim::run(scenario),
        Err(SimError::BadScenario(reason)) if reason.contains("partition")
    ));
}

#[test]
fn a_cold_start_converges_quickly() {
    let mut scenario = Scenario::new("cold", 30, secs(30), 2);
    scenario.start = StartMode::Cold;
    let report = run(scenario);
    let start = phase(&report, "start");
    assert!(
        start.converged_after.is_some_and(|d| d < secs(2)),
        "{start}"
    );
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        any::<bool>().prop_map(|loud| Fault::Crash {
            target: Target::Leader,
            loud
        }),
        Just(Fault::RestartAll),
        (1usize..5).prop_map(|minority| Fault::Partition { minority }),
        Just(Fault::Heal),
        (0u32..3).prop_map(|p| Fault::SetLoss(f64::from(p) / 100.0)),
    ]
}

/// Runs `schedule` (fault, at that second) on `nodes` nodes, then heals, restarts and ends the
/// loss at 160 s: every invariant must hold at every step, and the last phase must converge.
fn random_schedule_keeps_the_invariants(
    name: &str,
    nodes: usize,
    seed: u64,
    schedule: Vec<(u64, Fault)>,
) -> Result<(), TestCaseError> {
    let mut scenario = Scenario::new(name, nodes, secs(260), seed);
    let mut faults: Vec<(Duration, Fault)> =
        schedule.into_iter().map(|(at, f)| (secs(at), f)).collect();
    faults.sort_by_key(|(at, _)| *at);
    faults.push((secs(160), Fault::Heal));
    faults.push((secs(160), Fault::RestartAll));
    faults.push((secs(160), Fault::SetLoss(0.0)));
    scenario.faults = faults;
    let replay = scenario.replay_command();
    let report = sim::run(scenario);
    prop_assert!(
        report.is_ok(),
        "{}\nreplay: {}",
        report.err().map(|e| e.to_string()).unwrap_or_default(),
        replay
    );
    let last = report.ok().and_then(|r| r.phases.last().cloned());
    prop_assert!(
        last.as_ref()
            .is_some_and(|p| p.converged_after.is_some() && p.components == 1),
        "not converged at the end: {:?}\nreplay: {}",
        last,
        replay
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random fault schedules on 6 nodes: every invariant holds at every step. A failure
    /// prints the violation with its seed and the command that replays it.
    #[test]
    fn random_fault_schedules_keep_the_invariants(
        seed in any::<u64>(),
        schedule in proptest::collection::vec((5u64..150, fault()), 1..6),
    ) {
        random_schedule_keeps_the_invariants("random", 6, seed, schedule)?;
    }
}

/// Issue 11: a silent host is offline everywhere, and a new leader agreed, within 3 s at the
/// 95th percentile. Twenty seeds (each a different moment of the heartbeat cycle and
/// different latencies) of a silent leader crash in a 5-node network.
#[test]
fn a_silent_leader_is_replaced_within_three_seconds_p95() {
    let mut times: Vec<Duration> = (1..=20)
        .map(|seed| {
            let mut scenario = Scenario::new("silent-leader", 5, secs(60), seed);
            // A different moment of the heartbeat cycle in every round.
            scenario.faults = vec![(
                secs(30) + Duration::from_millis(seed * 53),
                Fault::Crash {
                    target: Target::Leader,
                    loud: false,
                },
            )];
            let report = run(scenario);
            phase(&report, "crash-leader(silent)")
                .converged_after
                .expect("no failover after a silent crash")
        })
        .collect();
    times.sort();
    let p95 = times[times.len() * 95 / 100 - 1];
    eprintln!(
        "figure: simulated silent leader loss, 5 nodes, 20 seeds: median {:?}, p95 {p95:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(p95 <= secs(3), "p95 {p95:?}: {times:?}");
}

/// Issue 11: after a partition heals, one leader and everyone alive within 6 s, whatever the
/// partition's length (the redial backoff is capped at 1.5 s; a connection silent past the
/// offline bound is closed rather than left to TCP's retransmissions). While split, the
/// minority (with the first leader) hosts nobody: the convergence invariant checks it.
#[test]
fn partitions_heal_within_six_seconds_whatever_their_length() {
    for length in [30, 300] {
        let mut scenario = Scenario::new("partition-heal", 5, secs(60 + length + 60), 5);
        scenario.faults = vec![
            (secs(60), Fault::Partition { minority: 2 }),
            (secs(60 + length), Fault::Heal),
        ];
        let report = run(scenario);
        let healed = phase(&report, "heal");
        let took = healed
            .converged_after
            .expect("no convergence after the heal");
        eprintln!("figure: simulated heal after a {length} s 2|3 partition: {took:?}");
        assert!(took <= secs(6), "heal after {length} s took {took:?}");
        assert_eq!(healed.leaders, vec!["n0000".to_owned()]);
    }
}

/// Issue 11: 20 % loss for three simulated minutes, in 5 and in 3 nodes. Heartbeats travel over
/// the direct connection, modelled as TCP (a lost segment is resent after 200 ms, 400 ms, …, and
/// holds back the frames behind it); four losses in a row make a heartbeat 3 s late, which
/// the 2.5 s bound alone called offline (2 false marks in 180 s before indirect probes). Now a
/// member not heard directly for 1.5 s is asked about, and another member's vouch keeps it
/// alive: no false mark, even in 3 nodes where a single other member can vouch. On real
/// sockets, `tests/faults.rs` (`a_lossy_network_marks_nobody_offline`) asserts the same.
#[test]
fn twenty_percent_loss_marks_nobody_offline() {
    for (nodes, seed) in [(5, 12), (3, 13)] {
        let mut scenario = Scenario::new("lossy-20", nodes, secs(180), seed);
        scenario.net.loss = 0.2;
        scenario.assert_no_false_offline = true;
        let report = run(scenario);
        eprintln!(
            "figure: simulated 20 % loss per segment (heartbeats retransmitted as by TCP), {nodes} nodes, 180 s: {} false offline marks",
            report.false_offline
        );
        assert_eq!(report.false_offline, 0);
        assert_eq!(phase(&report, "start").leaders, vec!["n0000".to_owned()]);
    }
}

/// The same lossy, jittery network as above (5 % loss, 100 ± 50 ms) in 3 nodes, the shape of
/// `tests/faults.rs` (`a_lossy_jittery_network_marks_nobody_offline`): only one member can vouch
/// for a member whose own connection stalled.
#[test]
fn a_lossy_jittery_network_of_three_has_no_false_offline_marks() {
    let mut scenario = Scenario::new("lossy-3", 3, secs(600), 21);
    scenario.net.loss = 0.05;
    scenario.net.latency = Duration::from_millis(100);
    scenario.net.jitter = Duration::from_millis(50);
    scenario.assert_no_false_offline = true;
    let report = run(scenario);
    assert_eq!(report.false_offline, 0);
    assert_eq!(phase(&report, "start").leaders, vec!["n0000".to_owned()]);
}

/// Local health awareness (`behaviours/src/health.rs`): in a lossy, jittery network (5 % loss,
/// 100 ± 50 ms) one node after another is paused — starved or stopped — for 1.5 to 2.4 s,
/// every 10 s. Running again, a paused node reads its timer before the heartbeats that waited
/// for it; without the awareness it then marked members offline for silence it never had the
/// chance to hear. With it, no paused node marks anyone (the others may mark the paused node
/// itself: its silence is real, and the checker excuses it).
#[test]
fn paused_nodes_mark_nobody_offline_when_they_run_again() {
    let scenario = |nodes: usize, aware: bool| {
        let mut scenario = Scenario::new("paused", nodes, secs(300), 31);
        scenario.net.loss = 0.05;
        scenario.net.latency = Duration::from_millis(100);
        scenario.net.jitter = Duration::from_millis(50);
        scenario.assert_no_false_offline = true;
        scenario.local_health = aware;
        scenario.faults = (1..29u64)
            .map(|k| {
                let fault = Fault::Pause {
                    node: k as usize % nodes,
                    length: Duration::from_millis(1500 + (k * 337) % 900),
                };
                (secs(10 * k), fault)
            })
            .collect();
        scenario
    };
    for nodes in [3, 5] {
        let report = run(scenario(nodes, true));
        eprintln!(
            "figure: simulated pauses of 1.5–2.4 s every 10 s, {nodes} nodes, 5 % loss, 100 ± 50 ms, 300 s: {} false offline marks",
            report.false_offline
        );
        assert_eq!(report.false_offline, 0);
        match sim::run(scenario(nodes, false)) {
            Err(SimError::Violation(violation)) => {
                assert_eq!(violation.invariant, Invariant::FalseOffline, "{violation}");
            }
            other => panic!(
                "without local health awareness a paused node should mark members offline: {other:?}"
            ),
        }
    }
}

// ---- the ring of observers (networks of more than five members) ----

/// Five members in a row on the ring vanish at once, so the first of them loses every one of
/// its four observers: nobody watches it until the next member's observer times out the other
/// four and the ring closes over them (one more interval of grace). Every node still agrees
/// on the survivors within the offline bound plus that interval.
#[test]
fn a_run_of_silent_members_longer_than_the_observers_is_still_found_in_50_nodes() {
    let config = Config::for_size(50);
    let mut scenario = Scenario::new("ring-run", 50, secs(60), 41);
    scenario.faults = (17..22)
        .map(|node| {
            let crash = Fault::Crash {
                target: Target::Node(node),
                loud: false,
            };
            (secs(20), crash)
        })
        .collect();
    let report = run(scenario);
    let last = report.phases.last().expect("phases");
    let took = last.converged_after.expect("the survivors never agreed");
    eprintln!(
        "figure: simulated 5 adjacent silent members in 50 nodes, all offline everywhere after {took:?}"
    );
    assert!(
        took <= config.offline_after + config.heartbeat_interval + secs(1),
        "took {took:?}"
    );
    assert_eq!(last.up, 45);
    assert_eq!(report.false_offline, 0);
}

/// A killed member (its host refuses connections) in a partial mesh: only its ring neighbours
/// and the leader are connected to it and hear the refusal; the rest learn it from their
/// verdict. All 29 survivors agree within a round trip and a gossip hop, not the silence
/// bound (a random fault schedule found the missing verdict: nodes not connected to it kept
/// it alive for good).
#[test]
fn a_loud_crash_in_a_partial_mesh_is_seen_by_members_not_connected_to_it() {
    let mut scenario = Scenario::new("ring-loud", 30, secs(40), 45);
    let crash = Fault::Crash {
        target: Target::Node(17),
        loud: true,
    };
    scenario.faults = vec![(secs(20), crash)];
    let report = run(scenario);
    let last = report.phases.last().expect("phases");
    let took = last.converged_after.expect("the survivors never agreed");
    eprintln!("figure: simulated loud crash of a member of 30, offline everywhere after {took:?}");
    assert!(took < secs(1), "took {took:?}");
    assert_eq!(last.up, 29);
    assert!(
        last.connections.0 < 12.0,
        "a partial mesh: {:?}",
        last.connections
    );
}

/// The ring under loss: 50 nodes, 5 % loss with 100 ± 50 ms for ten simulated minutes, and
/// 20 % loss for three: a member's four observers and the indirect probes among them keep
/// every live member alive; no verdict is ever published about one.
#[test]
fn a_lossy_network_of_50_on_a_ring_has_no_false_offline_marks() {
    let mut jittery = Scenario::new("ring-lossy", 50, secs(600), 43);
    jittery.net.loss = 0.05;
    jittery.net.latency = Duration::from_millis(100);
    jittery.net.jitter = Duration::from_millis(50);
    jittery.faults = Vec::new();
    jittery.assert_no_false_offline = true;
    assert_eq!(run(jittery).false_offline, 0);
    let mut heavy = Scenario::new("ring-lossy-20", 50, secs(180), 44);
    heavy.net.loss = 0.2;
    heavy.faults = Vec::new();
    heavy.assert_no_false_offline = true;
    assert_eq!(run(heavy).false_offline, 0);
}

/// The partition trap of the ring: ten nodes cut off from 190 have observers on their side
/// for almost none of the others. Each loses its watched members within one bound and probes
/// everyone: the minority agrees on itself within the settle bound (a leader among its own,
/// hosting nobody: no majority) instead of one ring step per bound, and the heal is as fast as
/// in five nodes.
#[test]
fn a_minority_cut_off_from_a_large_ring_sees_it_within_the_bound_and_heals() {
    let mut scenario = Scenario::new("ring-partition", 200, secs(160), 45);
    scenario.faults = vec![
        (secs(30), Fault::Partition { minority: 10 }),
        (secs(90), Fault::Heal),
    ];
    let settle = scenario.settle_bound();
    let report = run(scenario);
    let split = phase(&report, "partition");
    assert_eq!(split.components, 2);
    let took = split.converged_after.expect("the sides never agreed");
    eprintln!("figure: simulated 10|190 partition, both sides agreed after {took:?}");
    assert!(took <= settle, "split took {took:?}");
    let healed = phase(&report, "heal");
    let took = healed
        .converged_after
        .expect("no convergence after the heal");
    eprintln!("figure: simulated heal of a 10|190 partition: {took:?}");
    assert!(took <= secs(6), "heal took {took:?}");
    assert_eq!(healed.leaders, vec!["n0000".to_owned()]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random fault schedules on a ring of 20 nodes (crashes of any node, partitions, loss):
    /// every invariant holds at every step, and the end converges.
    #[test]
    fn random_fault_schedules_on_a_ring_keep_the_invariants(
        seed in any::<u64>(),
        schedule in proptest::collection::vec((5u64..150, ring_fault()), 1..8),
    ) {
        random_schedule_keeps_the_invariants("random-ring", 20, seed, schedule)?;
    }
}

fn ring_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0usize..20, any::<bool>()).prop_map(|(node, loud)| Fault::Crash {
            target: Target::Node(node),
            loud
        }),
        fault(),
        (1usize..10).prop_map(|minority| Fault::Partition { minority }),
    ]
}
