//! Two-phase commit under `synod-sim`: a coordinator (node 1) and participants (the
//! others), each run by the simulator's generic adapter, `ProtocolNode`, on a store that
//! appends every record to a checksummed log on the simulated disk.
//!
//! The checkers: no transaction both commits and aborts anywhere (atomicity, from the
//! outcomes every node hands up); every audit of the bank sees its total; every prepared
//! transaction a participant knows after a restart holds its locks; in-doubt transactions
//! resolve once faults heal. The coordinator is crashed just before and just after every
//! event of a run (alone, and with a prepared participant), the participants too, and
//! random runs draw every fault of the simulator. Each broken variant is caught.
//!
//! Seeds: `SYNOD_SEEDS=<n>` runs more (the CI default is below), `SYNOD_SEED=<s>` replays
//! one; a failure prints the replay command.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use synod_partitioning::{
    Coordinator, CoordinatorConfig, CoordinatorRecord, DeadlockPolicy, Op, Participant,
    ParticipantConfig, ParticipantRecord, TxnId, TxnNode, TxnOutcome, TxnRequest, TxnResponse,
    TxnWrite, participant_of,
};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    Action, Boot, ClientId, Completion, Counter, Coverage, CrashMode, DelayDistribution, Disk,
    Invocation, LinkConfig, NemesisConfig, NodeId, ProtocolNode, ProtocolStore, RunReport,
    SimConfig, SimRng, SimTime, Simulation, Workload,
};

const LOG: &str = "2pc.log";
const ACCOUNTS: u64 = 8;
const OPENING: i64 = 100;

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A record: length (u32 LE), checksum of the body (u64 LE), the body in postcard.
fn encode(write: &TxnWrite) -> Vec<u8> {
    let body = postcard::to_stdvec(write).expect("encodable");
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&fnv(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The valid records of a log and the length they take: the rest is a torn tail.
fn decode_all(log: &[u8]) -> (Vec<TxnWrite>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while log.len() >= at + 12 {
        let len = u32::from_le_bytes(log[at..at + 4].try_into().unwrap()) as usize;
        let sum = u64::from_le_bytes(log[at + 4..at + 12].try_into().unwrap());
        let Some(body) = log.get(at + 12..at + 12 + len) else {
            break;
        };
        if fnv(body) != sum {
            break;
        }
        let Ok(record) = postcard::from_bytes(body) else {
            break;
        };
        records.push(record);
        at += 12 + len;
    }
    (records, at)
}

/// What every node of a run shares with the test: the outcomes handed up.
#[derive(Debug, Default)]
struct Shared {
    outcomes: Vec<TxnOutcome>,
}

/// Which deliberately broken variant runs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Correct,
    SendBeforeDurable,
    AbortAfterYes,
}

#[derive(Clone, Copy, Debug)]
struct Setup {
    nodes: usize,
    /// Nodes `1..=coordinators` coordinate, the others are participants.
    coordinators: u64,
    variant: Variant,
    policy: DeadlockPolicy,
    /// Timeouts (the coordinator's prepare, the participants' lock wait) too long to ever
    /// fire in a run: only the deadlock policy can break a deadlock.
    patient: bool,
}

struct TxnStore {
    setup: Setup,
    shared: Rc<RefCell<Shared>>,
}

fn participants(setup: Setup) -> Vec<NodeId> {
    (setup.coordinators + 1..=setup.nodes as u64)
        .map(NodeId::new)
        .collect()
}

impl ProtocolStore for TxnStore {
    type Protocol = TxnNode;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<TxnNode> {
        let log = boot.disk.read(LOG).unwrap_or_default();
        let (records, valid) = decode_all(&log);
        boot.disk.set_len(LOG, valid as u64)?;
        Ok(if boot.id.get() <= self.setup.coordinators {
            let config = CoordinatorConfig::new(boot.id, participants(self.setup))
                .resend_ms(5)
                .prepare_timeout_ms(if self.setup.patient { 60_000 } else { 30 });
            let config = match self.setup.variant {
                Variant::SendBeforeDurable => config.broken_send_before_durable(),
                _ => config,
            };
            let records = records
                .into_iter()
                .filter_map(|r| match r {
                    TxnWrite::Coordinator(c) => Some(c),
                    TxnWrite::Participant(_) => None,
                })
                .collect::<Vec<CoordinatorRecord>>();
            TxnNode::Coordinator(Coordinator::restore(config, records))
        } else {
            let config = ParticipantConfig::new(boot.id)
                .policy(self.setup.policy)
                .query_after_ms(5)
                .lock_wait_ms(if self.setup.patient { 60_000 } else { 20 })
                .initial_value(OPENING);
            let config = match self.setup.variant {
                Variant::AbortAfterYes => config.broken_abort_after_yes(),
                _ => config,
            };
            let records = records
                .into_iter()
                .filter_map(|r| match r {
                    TxnWrite::Participant(p) => Some(p),
                    TxnWrite::Coordinator(_) => None,
                })
                .collect::<Vec<ParticipantRecord>>();
            TxnNode::Participant(Participant::restore(config, records, boot.now))
        })
    }

    fn write(&mut self, disk: &mut Disk, write: &TxnWrite) -> io::Result<()> {
        disk.append(LOG, &encode(write))
    }

    fn apply(&mut self, outcome: TxnOutcome) {
        self.shared.borrow_mut().outcomes.push(outcome);
    }
}

type SimTxn = ProtocolNode<TxnStore>;

/// What a client asked for, as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BankOp {
    Transfer(u64, u64, i64),
    Audit,
}

/// Bank clients: transfers between random accounts (or, `hot`, back and forth between two
/// accounts on different participants, which deadlocks without avoidance), and audits of
/// every account. `per_client` requests each, then done.
struct Bank {
    setup: Setup,
    per_client: u32,
    sent: BTreeMap<ClientId, u32>,
    hot: bool,
    tally: Rc<RefCell<Tally>>,
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    audits_bad: Vec<String>,
    committed: u64,
    aborted: u64,
}

impl Workload<SimTxn> for Bank {
    type Input = BankOp;
    type Output = ();

    fn invoke(
        &mut self,
        client: ClientId,
        _: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<TxnRequest, BankOp>> {
        let sent = self.sent.entry(client).or_default();
        if *sent >= self.per_client {
            return None;
        }
        *sent += 1;
        let (ops, input) = if !self.hot && rng.below(4) == 0 {
            ((0..ACCOUNTS).map(Op::Read).collect(), BankOp::Audit)
        } else {
            let (a, b) = if self.hot {
                // Two accounts on the two participants, transferred both ways at once:
                // each transaction locks one on each participant, and two of them wait
                // for each other across the participants unless one is aborted.
                let (x, y) = hot_pair(self.setup);
                if rng.below(2) == 0 { (x, y) } else { (y, x) }
            } else {
                let a = rng.below(ACCOUNTS);
                (a, (a + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS)
            };
            let x = rng.below(10) as i64 + 1;
            (
                vec![Op::Add(a, -x), Op::Add(b, x)],
                BankOp::Transfer(a, b, x),
            )
        };
        Some(Invocation {
            node: NodeId::new(1 + rng.below(self.setup.coordinators)),
            request: TxnRequest { ops },
            input,
        })
    }

    fn complete(&mut self, _: ClientId, input: &BankOp, response: &TxnResponse) -> Completion<()> {
        match response {
            TxnResponse::Committed { reads } => {
                self.tally.borrow_mut().committed += 1;
                if *input == BankOp::Audit {
                    let total: i64 = reads.iter().map(|(_, v)| v).sum();
                    if reads.len() != ACCOUNTS as usize || total != ACCOUNTS as i64 * OPENING {
                        self.tally
                            .borrow_mut()
                            .audits_bad
                            .push(format!("audit read {reads:?}: total {total}"));
                    }
                }
                Completion::Ok(())
            }
            TxnResponse::Aborted | TxnResponse::Refused => {
                self.tally.borrow_mut().aborted += 1;
                Completion::Fail
            }
        }
    }
}

/// The first two accounts that live on different participants.
fn hot_pair(setup: Setup) -> (u64, u64) {
    let parts = participants(setup);
    (0..)
        .map(|k| (k, k + 1))
        .find(|&(a, b)| participant_of(a, &parts) != participant_of(b, &parts))
        .expect("two participants")
}

/// No transaction with both outcomes.
fn atomic(outcomes: &[TxnOutcome]) -> Result<(), String> {
    let mut seen: BTreeMap<TxnId, (bool, NodeId)> = BTreeMap::new();
    for o in outcomes {
        if let Some(&(other, node)) = seen.get(&o.txn)
            && other != o.committed
        {
            return Err(format!(
                "{} {} at {} but {} at {}",
                o.txn,
                if o.committed { "committed" } else { "aborted" },
                o.node,
                if other { "committed" } else { "aborted" },
                node
            ));
        }
        seen.entry(o.txn).or_insert((o.committed, o.node));
    }
    Ok(())
}

struct Run {
    report: RunReport<BankOp, ()>,
    shared: Rc<RefCell<Shared>>,
    tally: Rc<RefCell<Tally>>,
}

impl Run {
    fn verdict(&self) -> Result<(), String> {
        if let Some(failure) = &self.report.failure {
            return Err(format!("{failure:?}"));
        }
        atomic(&self.shared.borrow().outcomes)?;
        if let Some(bad) = self.tally.borrow().audits_bad.first() {
            return Err(bad.clone());
        }
        Ok(())
    }
}

/// Every node's in-doubt transactions (coordinator and participants), for the progress
/// condition: none once faults have healed and the clients are done.
fn settled(view: &synod_sim::View<'_, SimTxn, BankOp, ()>) -> bool {
    view.nodes().all(|(_, node)| match node.protocol() {
        Some(TxnNode::Coordinator(c)) => c.in_doubt().count() == 0 && c.preparing().count() == 0,
        Some(TxnNode::Participant(p)) => p.in_doubt().count() == 0,
        None => false,
    })
}

fn simulation(
    setup: Setup,
    seed: u64,
    config: SimConfig,
    bank: Bank,
    script: &[(SimTime, Action)],
) -> (Simulation<SimTxn, Bank>, Rc<RefCell<Shared>>) {
    let shared = Rc::new(RefCell::new(Shared::default()));
    let for_nodes = Rc::clone(&shared);
    let for_invariant = Rc::clone(&shared);
    let mut sim = Simulation::new(
        config,
        seed,
        move |_| {
            ProtocolNode::new(TxnStore {
                setup,
                shared: Rc::clone(&for_nodes),
            })
        },
        bank,
    )
    .invariant(move |view| {
        atomic(&for_invariant.borrow().outcomes)?;
        // A transaction a participant holds prepared holds its locks, across restarts.
        for (id, node) in view.nodes() {
            if let Some(TxnNode::Participant(p)) = node.protocol() {
                for txn in p.in_doubt() {
                    if p.locks_of(txn).is_empty() {
                        return Err(format!("{id} holds {txn} prepared without its locks"));
                    }
                }
            }
        }
        Ok(())
    })
    .progress(settled);
    for (at, action) in script {
        sim = sim.schedule(*at, action.clone());
    }
    (sim, shared)
}

fn bank(setup: Setup, per_client: u32, hot: bool) -> (Bank, Rc<RefCell<Tally>>) {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let b = Bank {
        setup,
        per_client,
        sent: BTreeMap::new(),
        hot,
        tally: Rc::clone(&tally),
    };
    (b, tally)
}

fn fast_links(config: synod_sim::SimConfigBuilder) -> synod_sim::SimConfigBuilder {
    config
        .link(LinkConfig::new(DelayDistribution::uniform(
            Duration::from_micros(100),
            Duration::from_micros(500),
        )))
        .sync_delay(DelayDistribution::uniform(
            Duration::from_micros(100),
            Duration::from_micros(800),
        ))
        .client_timeout(Duration::from_millis(200))
}

/// A run of one client's `per_client` transfers with `script`'s crashes and no nemesis.
fn scripted(setup: Setup, seed: u64, per_client: u32, script: &[(SimTime, Action)]) -> Run {
    let config = fast_links(SimConfig::builder(setup.nodes))
        .clients(2)
        .safety_time(Duration::from_millis(SWEEP_SAFETY_MS))
        .liveness_time_max(Duration::from_secs(2))
        .nemesis(NemesisConfig::disabled())
        .trace_lines_max(100_000)
        .build()
        .expect("valid config");
    let (bank, tally) = bank(setup, per_client, false);
    let (sim, shared) = simulation(setup, seed, config, bank, script);
    let report = sim.run();
    Run {
        report,
        shared,
        tally,
    }
}

/// How long the crash sweeps' safety phase lasts: their clients are done well before.
const SWEEP_SAFETY_MS: u64 = 40;

/// The times, in microseconds, of every event of the run of `seed` without faults that
/// involves one of `nodes` (a delivery to or from it, a sync, a timer, a request).
fn event_times(setup: Setup, seed: u64, nodes: &[u64]) -> Vec<u64> {
    let run = scripted(setup, seed, 3, &[]);
    let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
    let mut times: Vec<u64> = run
        .report
        .trace
        .iter()
        .filter(|line| {
            line.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| names.iter().any(|n| n == word))
        })
        .filter_map(|line| {
            let secs = line.split_whitespace().next()?.strip_suffix('s')?;
            let (whole, frac) = secs.split_once('.')?;
            Some(whole.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?)
        })
        .filter(|&t| t < SWEEP_SAFETY_MS * 1_000)
        .collect();
    times.dedup();
    times
}

/// Crash `nodes` together just before and just after every event that involves them in
/// the run of `seed` without faults (the same seed makes the same run up to the crash), and
/// restart them 8 ms later, one after the other: a crash at every step of every
/// transaction. Returns how many crash points there were and how many transactions
/// committed.
fn crash_sweep(setup: Setup, nodes: &[u64], seed: u64) -> Result<(u64, u64), String> {
    let (mut points, mut committed) = (0, 0);
    for event in event_times(setup, seed, nodes) {
        for at in [event, event + 1] {
            let mut script = Vec::new();
            for (i, &node) in nodes.iter().enumerate() {
                let node = NodeId::new(node);
                let back = SimTime::from_micros(at + 8_000 + 2_000 * i as u64);
                script.push((
                    SimTime::from_micros(at),
                    Action::Crash(node, CrashMode::DropUnsynced),
                ));
                script.push((back, Action::Restart(node)));
            }
            let run = scripted(setup, seed, 3, &script);
            run.verdict()
                .map_err(|e| format!("crash of {nodes:?} at {at}us: {e}"))?;
            points += 1;
            committed += run.tally.borrow().committed;
        }
    }
    Ok((points, committed))
}

const CORRECT: Setup = Setup {
    nodes: 3,
    coordinators: 1,
    variant: Variant::Correct,
    policy: DeadlockPolicy::WoundWait,
    patient: false,
};

#[test]
fn the_coordinator_crashed_at_every_step_leaves_no_mixed_outcome() {
    let runner = SeedRunner::new(
        "synod-partitioning",
        "sim_twopc::the_coordinator_crashed_at_every_step_leaves_no_mixed_outcome",
    );
    let (mut points, mut committed) = (0, 0);
    let seeds = runner.run(2, |seed| {
        for nodes in [&[1][..], &[1, 3]] {
            // Alone, then with a prepared participant crashed at the same moment.
            let (p, c) = crash_sweep(CORRECT, nodes, seed)?;
            points += p;
            committed += c;
        }
        Ok(())
    });
    println!(
        "coordinator crash sweep: {seeds} seeds, {points} crash points, {committed} transactions committed, 0 mixed, every in-doubt one resolved"
    );
    assert!(points > seeds * 100 && committed > 0);
}

#[test]
fn a_participant_crashed_at_every_step_leaves_no_mixed_outcome() {
    let runner = SeedRunner::new(
        "synod-partitioning",
        "sim_twopc::a_participant_crashed_at_every_step_leaves_no_mixed_outcome",
    );
    let mut points = 0;
    let seeds = runner.run(2, |seed| {
        for nodes in [&[2][..], &[2, 3]] {
            points += crash_sweep(CORRECT, nodes, seed)?.0;
        }
        Ok(())
    });
    println!("participant crash sweep: {seeds} seeds, {points} crash points, 0 mixed");
}

/// Random runs: every fault of the simulator, swarm-tested, on four nodes (a coordinator and
/// three participants), bank transfers and audits.
fn random_run(setup: Setup, seed: u64) -> Run {
    let config = fast_links(SimConfig::builder(setup.nodes))
        .clients(4)
        .safety_time(Duration::from_millis(150))
        .liveness_time_max(Duration::from_secs(3))
        .build()
        .expect("valid config");
    let (bank, tally) = bank(setup, 20, false);
    let (sim, shared) = simulation(setup, seed, config, bank, &[]);
    let report = sim.run();
    Run {
        report,
        shared,
        tally,
    }
}

const RANDOM: Setup = Setup {
    nodes: 4,
    coordinators: 1,
    variant: Variant::Correct,
    policy: DeadlockPolicy::WoundWait,
    patient: false,
};

#[test]
fn bank_transfers_keep_their_total_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-partitioning",
        "sim_twopc::bank_transfers_keep_their_total_under_every_fault",
    );
    let (mut committed, mut aborted, mut events) = (0, 0, 0);
    let mut coverage = Coverage::default();
    let seeds = runner.run(150, |seed| {
        // Wound-wait on even seeds, wait-die on odd ones.
        let policy = if seed % 2 == 0 {
            DeadlockPolicy::WoundWait
        } else {
            DeadlockPolicy::WaitDie
        };
        let run = random_run(Setup { policy, ..RANDOM }, seed);
        committed += run.tally.borrow().committed;
        aborted += run.tally.borrow().aborted;
        events += run.report.events;
        coverage.merge(&run.report.coverage);
        run.verdict()
    });
    println!(
        "2pc bank: {seeds} seeds, {events} events, {committed} committed, {aborted} aborted; 0 mixed outcomes, every audit saw the total"
    );
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(
            committed > seeds * 10,
            "the bank made progress: {committed}"
        );
        for counter in [
            Counter::Crash,
            Counter::Restart,
            Counter::DiskUnsyncedAtCrash,
        ] {
            assert!(coverage.get(counter) > 0, "{counter:?} never fired");
        }
    }
}

/// Transfers both ways between two accounts on two participants, from two coordinators:
/// two transactions each prepared on one participant wait for each other on the other.
/// The timeouts are too long to fire in a run, so only the deadlock policy breaks these
/// deadlocks (with wounding switched off, wound-wait stalls at the second seed; wait-die
/// without its deaths at grant time stalled at seed 2, and 300 seeds of each pass).
#[test]
fn a_deadlock_prone_workload_progresses_under_wound_wait_and_wait_die() {
    for policy in [DeadlockPolicy::WoundWait, DeadlockPolicy::WaitDie] {
        // Two coordinators: their prepares reach the two participants in either order.
        let setup = Setup {
            nodes: 4,
            coordinators: 2,
            variant: Variant::Correct,
            policy,
            patient: true,
        };
        for seed in 0..30 {
            let config = fast_links(SimConfig::builder(setup.nodes))
                .clients(6)
                .safety_time(Duration::from_millis(400))
                .client_timeout(Duration::from_secs(2))
                .nemesis(NemesisConfig::disabled())
                .build()
                .unwrap();
            let (bank, tally) = bank(setup, 10, true);
            let (sim, shared) = simulation(setup, seed, config, bank, &[]);
            let report = sim.run();
            assert!(
                report.failure.is_none(),
                "{policy:?} seed {seed}: {:?}",
                report.failure
            );
            atomic(&shared.borrow().outcomes).unwrap();
            let (committed, aborted) = (tally.borrow().committed, tally.borrow().aborted);
            // Every client's transfers commit, each after at most a few retries.
            assert_eq!((committed, aborted), (60, 0), "{policy:?} seed {seed}");
        }
    }
}

fn first_catch(
    setup: Setup,
    within: u64,
    run: impl Fn(Setup, u64) -> Result<(), String>,
) -> (u64, String) {
    for seed in 0..within {
        if let Err(e) = run(setup, seed) {
            return (seed, e);
        }
    }
    panic!("{:?} not caught within {within} seeds", setup.variant);
}

#[test]
fn a_coordinator_that_sends_before_its_decision_is_durable_is_caught() {
    let setup = Setup {
        variant: Variant::SendBeforeDurable,
        ..CORRECT
    };
    let (seed, why) = first_catch(setup, 5, |s, seed| {
        crash_sweep(s, &[1, 3], seed).map(|_| ())
    });
    println!("send-before-durable coordinator caught at seed {seed}: {why}");
}

#[test]
fn a_participant_that_aborts_after_voting_yes_is_caught() {
    let setup = Setup {
        variant: Variant::AbortAfterYes,
        ..CORRECT
    };
    let (seed, why) = first_catch(setup, 5, |s, seed| crash_sweep(s, &[3], seed).map(|_| ()));
    println!("abort-after-yes participant caught at seed {seed}: {why}");
}
