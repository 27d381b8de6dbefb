//! The `twopc` system under `synod-sim`: a bank on two-phase commit. A coordinator (node 1)
//! and participants (the others) of `synod-partitioning`, each run by the simulator's
//! generic adapter, [`ProtocolNode`], on a store that appends every record to a checksummed
//! log on the simulated disk ([`TxnStore`]). Clients transfer money between accounts that
//! live on different participants, and audit every account in one transaction.
//!
//! The checkers: no transaction both commits and aborts anywhere (atomicity, from the
//! outcomes every node hands up, after every event); every audit sees the bank's total;
//! every prepared transaction a participant knows, after a restart too, holds its locks;
//! and once faults heal, no transaction is left in doubt (the progress condition). Besides
//! the random runs `synod sim twopc` makes, [`crash_sweep`] crashes chosen nodes just
//! before and just after every event of a run; the broken variants ([`Variant`]: a
//! coordinator that sends its decision before it is durable, a participant that aborts
//! after voting yes) are caught that way (`tests/it/sim_twopc.rs`).

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
use synod_sim::{
    Action, Boot, ClientId, Completion, CrashMode, DelayDistribution, Disk, Invocation, LinkConfig,
    NemesisConfig, NodeId, Outcome, ProtocolNode, ProtocolStore, RunReport, SimConfig,
    SimConfigBuilder, SimRng, SimTime, Simulation, Verdict, View, Workload,
};

use super::RunSummary;

/// The smallest and largest `--nodes` the bank runs on: a coordinator and 2 to 7
/// participants.
pub const NODES: (usize, usize) = (3, 8);
/// The accounts of the bank, spread over the participants.
pub const ACCOUNTS: u64 = 8;
/// Each account's opening balance.
pub const OPENING: i64 = 100;
/// The transactions each client of `synod sim twopc` asks for.
pub const PER_CLIENT: u32 = 25;

/// The file of a node's disk that holds its log.
const LOG: &str = "2pc.log";

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
pub struct Shared {
    /// Every outcome handed up, in order.
    pub outcomes: Vec<TxnOutcome>,
}

/// Which deliberately broken variant runs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The protocol as written.
    Correct,
    /// A coordinator that sends its decision before it is durable.
    #[cfg(feature = "broken")]
    SendBeforeDurable,
    /// A participant that aborts a transaction it voted yes on.
    #[cfg(feature = "broken")]
    AbortAfterYes,
}

/// How a run's nodes are set up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Nodes in all.
    pub nodes: usize,
    /// Nodes `1..=coordinators` coordinate, the others are participants.
    pub coordinators: u64,
    /// The variant the nodes run.
    pub variant: Variant,
    /// How the participants' lock managers avoid deadlock.
    pub policy: DeadlockPolicy,
    /// The nodes' timeouts.
    pub timeouts: Timeouts,
}

/// The timeouts a run's nodes use, in milliseconds. Each must be longer than the network
/// and the disk take to do what it waits for, tail included: a lock wait or a prepare
/// timeout shorter than that aborts every attempt of the oldest transaction too, so its
/// age never wins a conflict and the bank livelocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long the coordinator lets a transaction prepare before aborting it.
    pub prepare_timeout_ms: u64,
    /// How long a participant lets a prepare wait for locks before voting no.
    pub lock_wait_ms: u64,
    /// How often the coordinator resends an unanswered prepare or decision.
    pub resend_ms: u64,
    /// How often a prepared participant asks for the decision.
    pub query_after_ms: u64,
}

impl Timeouts {
    /// For [`fast_links`] (links of at most 0.5 ms, syncs of at most 0.8 ms, no tail).
    pub const FAST: Timeouts = Timeouts {
        prepare_timeout_ms: 30,
        lock_wait_ms: 20,
        resend_ms: 5,
        query_after_ms: 5,
    };
    /// For `synod sim`'s links (0.1 to 2 ms, one message in 20 delayed 20 ms) and syncs
    /// (0.1 to 2 ms): a prepare that meets a delayed message on its way, and a lock wait
    /// behind a holder whose decision does, still end in time.
    pub const CLI: Timeouts = Timeouts {
        prepare_timeout_ms: 100,
        lock_wait_ms: 60,
        resend_ms: 10,
        query_after_ms: 10,
    };
    /// Too long to ever fire in a run: only the deadlock policy can break a deadlock.
    pub const PATIENT: Timeouts = Timeouts {
        prepare_timeout_ms: 60_000,
        lock_wait_ms: 60_000,
        resend_ms: 5,
        query_after_ms: 5,
    };
}

/// A node's store: every record appended to a checksummed log on its disk; the outcomes it
/// hands up go to the run's [`Shared`].
#[derive(Debug)]
pub struct TxnStore {
    setup: Setup,
    shared: Rc<RefCell<Shared>>,
}

/// The participants of `setup`: the nodes after the coordinators.
pub fn participants(setup: Setup) -> Vec<NodeId> {
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
                .resend_ms(self.setup.timeouts.resend_ms)
                .prepare_timeout_ms(self.setup.timeouts.prepare_timeout_ms);
            #[cfg(feature = "broken")]
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
                .query_after_ms(self.setup.timeouts.query_after_ms)
                .lock_wait_ms(self.setup.timeouts.lock_wait_ms)
                .initial_value(OPENING);
            #[cfg(feature = "broken")]
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

/// One simulated node of the bank.
pub type SimTxn = ProtocolNode<TxnStore>;

/// What a client asked for, as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankOp {
    /// Move an amount from one account to another.
    Transfer(u64, u64, i64),
    /// Read every account.
    Audit,
}

/// Bank clients: transfers between random accounts (or, `hot`, back and forth between two
/// accounts on different participants, which deadlocks without avoidance), and audits of
/// every account. `per_client` requests each, then done.
#[derive(Debug)]
pub struct Bank {
    setup: Setup,
    per_client: u32,
    sent: BTreeMap<ClientId, u32>,
    hot: bool,
    tally: Rc<RefCell<Tally>>,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Audits that did not see the total.
    pub audits_bad: Vec<String>,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted or refused.
    pub aborted: u64,
    /// Audits committed (each saw the total, or is in `audits_bad`).
    pub audits: u64,
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
                    self.tally.borrow_mut().audits += 1;
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
pub fn hot_pair(setup: Setup) -> (u64, u64) {
    let parts = participants(setup);
    (0..)
        .map(|k| (k, k + 1))
        .find(|&(a, b)| participant_of(a, &parts) != participant_of(b, &parts))
        .expect("two participants")
}

/// No transaction with both outcomes.
pub fn atomic(outcomes: &[TxnOutcome]) -> Result<(), String> {
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

/// A finished run: the simulator's report and what its nodes and clients saw.
#[derive(Debug)]
pub struct Run {
    /// The simulator's report.
    pub report: RunReport<BankOp, ()>,
    /// The outcomes the nodes handed up.
    pub shared: Rc<RefCell<Shared>>,
    /// What the clients saw.
    pub tally: Rc<RefCell<Tally>>,
}

impl Run {
    /// The first thing wrong with the run: its own failure (an invariant, no progress), a
    /// transaction with both outcomes, or an audit that missed the total.
    ///
    /// # Errors
    ///
    /// What was wrong.
    pub fn verdict(&self) -> Result<(), String> {
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
pub fn settled(view: &View<'_, SimTxn, BankOp, ()>) -> bool {
    view.nodes().all(|(_, node)| match node.protocol() {
        Some(TxnNode::Coordinator(c)) => c.in_doubt().count() == 0 && c.preparing().count() == 0,
        Some(TxnNode::Participant(p)) => p.in_doubt().count() == 0,
        None => false,
    })
}

/// The simulation of `setup` with `bank`'s clients and `script`'s actions, its invariant
/// (atomicity; a prepared transaction holds its locks) and progress condition
/// ([`settled`]), and the outcomes its nodes will hand up.
pub fn simulation(
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

/// Clients asking for `per_client` transactions each (`hot`: transfers both ways between
/// two accounts on different participants, which deadlock without avoidance), and what
/// they will see.
pub fn bank(setup: Setup, per_client: u32, hot: bool) -> (Bank, Rc<RefCell<Tally>>) {
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

/// Links of 0.1 to 0.5 ms, syncs of 0.1 to 0.8 ms, clients that wait 200 ms.
pub fn fast_links(config: SimConfigBuilder) -> SimConfigBuilder {
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
pub fn scripted(setup: Setup, seed: u64, per_client: u32, script: &[(SimTime, Action)]) -> Run {
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
pub fn event_times(setup: Setup, seed: u64, nodes: &[u64]) -> Vec<u64> {
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
pub fn crash_sweep(setup: Setup, nodes: &[u64], seed: u64) -> Result<(u64, u64), String> {
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

/// The correct protocol on three nodes: a coordinator and two participants.
pub const CORRECT: Setup = Setup {
    nodes: 3,
    coordinators: 1,
    variant: Variant::Correct,
    policy: DeadlockPolicy::WoundWait,
    timeouts: Timeouts::FAST,
};

/// Random runs: every fault of the simulator, swarm-tested, on four nodes (a coordinator and
/// three participants), bank transfers and audits.
pub fn random_run(setup: Setup, seed: u64) -> Run {
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

/// Runs one seed of `synod sim twopc`: a coordinator and `config.nodes() - 1` participants
/// under the run's faults, each client asking for [`PER_CLIENT`] transfers and audits
/// (wound-wait on even seeds, wait-die on odd ones). The run is not drawn: `record` is
/// ignored.
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let _ = record;
    let setup = Setup {
        nodes: config.nodes(),
        coordinators: 1,
        variant: Variant::Correct,
        policy: policy_of(seed),
        timeouts: Timeouts::CLI,
    };
    let (bank, tally) = bank(setup, PER_CLIENT, false);
    let (simulation, shared) = simulation(setup, seed, config, bank, &[]);
    let run = Run {
        report: simulation.run(),
        shared,
        tally,
    };
    let verdict = run.verdict();
    let tally = run.tally.take();
    let outcomes = run.shared.borrow().outcomes.len();
    let after_heal = committed_after_heal(&run.report);
    let figures = vec![
        format!(
            "{} transactions committed, {} aborted or refused ({:?})",
            tally.committed, tally.aborted, setup.policy
        ),
        format!("{after_heal} transactions committed after the heal"),
        format!(
            "{} audits, {} of them off the total of {}",
            tally.audits,
            tally.audits_bad.len(),
            ACCOUNTS as i64 * OPENING
        ),
        format!("{outcomes} outcomes handed up by the nodes"),
    ];
    let mut summary = RunSummary::of_figures(
        run.report,
        figures,
        "no transaction both committed and aborted, every audit saw the total, every prepared \
         transaction held its locks, none in doubt after healing",
    );
    // The run's own failure (the invariant, progress) is the verdict already; a bad audit
    // is known only once the clients are done.
    if let (Verdict::Pass, Err(why)) = (&summary.verdict, verdict) {
        summary.verdict = Verdict::Violation(why);
    }
    summary
}

/// How many client transactions committed after the run's faults healed (none if they
/// never did).
#[must_use]
pub fn committed_after_heal(report: &RunReport<BankOp, ()>) -> usize {
    let Some(healed) = report.healed_at else {
        return 0;
    };
    report
        .history
        .operations()
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok(())))
        .filter(|op| op.completed_at.is_some_and(|at| at > healed))
        .count()
}

/// The deadlock policy of a seed's participants: wound-wait on even seeds, wait-die on odd
/// ones.
#[must_use]
pub fn policy_of(seed: u64) -> DeadlockPolicy {
    if seed.is_multiple_of(2) {
        DeadlockPolicy::WoundWait
    } else {
        DeadlockPolicy::WaitDie
    }
}
