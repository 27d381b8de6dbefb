//! `synod sim`: seeded, deterministic simulations of a reference system under faults.
//!
//! One run puts a whole cluster in one thread under `synod-sim`: virtual time, a network
//! that loses, duplicates, reorders, clogs and partitions, disks that lose or tear unsynced
//! writes at a crash, clocks that drift and jump, processes that crash, restart and pause.
//! Everything random is drawn from the seed, so a seed names a run exactly: the same seed
//! prints the same trace hash, and a failure found once is found again by its replay
//! command.
//!
//! A run has two phases. In the safety phase (`--events` events) the nemesis injects
//! faults and an invariant is checked after every event. Then every fault is healed and
//! some client operation must succeed within two seconds of virtual time (liveness).
//! Finally the clients' history is checked for linearizability. The report shows:
//!
//! - **faults**: the fault kinds this seed enabled and their intensities (swarm testing:
//!   each seed enables a random subset, unless `--faults` names the kinds);
//! - **schedule**: every fault the nemesis applied, in order, with its virtual time and
//!   details, from `synod-sim`'s fault log ([`synod_sim::RunReport::faults`]): partitions
//!   with their shape and cut links and their healing, clogged links and for how long,
//!   lossy, duplicating and reordering periods, clock jumps and drift changes, pauses and
//!   resumes, crashes with their crash mode and what the disk lost, tore or flipped, and
//!   restarts, then the healing of everything that starts the liveness phase;
//! - **coverage**: how often each fault fired;
//! - **history** and **verdict**: the operations and what the checker concluded;
//! - **trace hash**: a digest of every event, to compare two runs of one seed.
//!
//! With `--history FILE` a run of one seed also writes its history for a checker Synod did
//! not write ([`crate::history_file`]). With `--html FILE` it is also drawn as one
//! self-contained page ([`synod_sim::timeline`], written by [`crate::page_file`]): each
//! system's node says only what its roles and message kinds are called
//! (`synod_sim::timeline::Describe`).
//!
//! Exit codes: 0 when every run passed, [`EXIT_VIOLATION`] for a violation (the history is
//! not linearizable, the invariant broke, or there was no progress after healing),
//! [`EXIT_GAVE_UP`] when the checker stopped at its effort bound without deciding, and 2
//! for bad arguments.
//!
//! Systems (see [`SYSTEMS`]):
//!
//! - `register` ([`register`]): the ABD register of `synod-quorum`, one per key, as one
//!   state machine on the node contract, run by `synod-sim`'s generic adapter with a store
//!   that lays its writes out on the simulated disk;
//! - `raft-kv` ([`raft_kv`]): the Consistent Core node ([`crate::consistent_core::node`]),
//!   Raft from `synod-consensus` and the key-value store, the same code `synod node` runs
//!   as a process, on the same write-ahead log store (`WalLogStore`) on the simulated disk,
//!   with the simulator in place of the sockets, threads and clock;
//! - `lease` ([`leases`]): the same node with lock holders and keys with an expiry in
//!   place of the key-value clients, checked by simulated time: one lock holder at a time,
//!   no stale fenced write applied, every lease and key ended neither before its TTL nor
//!   after its leader's bound (figures in place of a history);
//! - `leaderless` ([`leaderless`]): the leaderless store's node ([`crate::leaderless`]), each
//!   of its levels checked against its promise in one run;
//! - `membership` ([`membership`]): `synod-membership`'s members (SWIM with Lifeguard), on
//!   2 to 512 nodes and with no clients: it checks that no start reuses a generation and
//!   that every view agrees after the heal, and prints how fast crashes were detected and
//!   views converged instead of a history;
//! - `twopc` ([`twopc`]): a bank on `synod-partitioning`'s two-phase commit, a coordinator
//!   and 2 to 7 participants: no transaction with both outcomes, every audit sees the
//!   total, prepared participants hold their locks, nothing in doubt after the heal; it
//!   prints the transactions committed and aborted instead of a history;
//! - `partitions` ([`partitions`]): `synod-partitioning`'s fixed partitions, their table
//!   changed as nodes leave and join, written to by clients whose tables are stale: every
//!   write is taken by its key's owner (the others redirect);
//! - `ranges` ([`ranges`]): `synod-partitioning`'s key ranges split, merged and moved while
//!   clients with stale caches write and scan in pages: every write is taken by its range's
//!   owner, and no scan misses an acknowledged key or repeats one.
//!
//! Each system's invariant: for `register`, replicas holding one tag for a key hold one
//! value; for `raft-kv`, no node stopped and Raft's safety properties hold (`synod-consensus`'s
//! `invariants::SafetyChecker`). Both systems'
//! clients are [`KvClients`]; each system's node says through [`KvService`] how an
//! operation becomes its request and what an answer means.
//!
//! # Replaying from the test suite
//!
//! `tests/it/sim_cli.rs` runs the binary on a handful of seeds, and `tests/it/core_sim.rs`
//! runs the `raft-kv` cluster through [`raft_kv::simulation`] (with its own timing and
//! clients) on 2,000 seeds. For a long hunt, run the release binary on a large range
//! (`cargo run --release -p synod-examples --bin synod -- sim raft-kv --seeds 0..10000`); a
//! failing seed prints the command that replays it.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use synod_sim::timeline::Timeline;
use synod_sim::{
    Counter, Coverage, DelayDistribution, FaultKind, FaultLog, FaultProfile, History, KvInput,
    KvModel, KvOutput, Linearizability, LinkConfig, NemesisConfig, Probability, RunReport,
    SimConfig, SimTime, Verdict, View,
};

use crate::history_file::{HistoryFile, HistoryWriter};
use crate::page_file::PageFile;

pub mod clients;
pub mod leaderless;
pub mod leases;
pub mod membership;
pub mod partitions;
pub mod raft_kv;
pub mod ranges;
pub mod register;
pub mod twopc;
pub mod watchers;

pub use clients::{Answer, KvClients, KvService, LeaderHint};

/// Exit code of a run that found a violation.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code of bad arguments (the same as the argument parser's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a run whose checker gave up without deciding: not a pass, not a violation.
pub const EXIT_GAVE_UP: u8 = 4;

/// Safety-phase events per run unless `--events` says otherwise.
pub const EVENTS_DEFAULT: u64 = 10_000;
/// The most safety-phase events a run may ask for (a few minutes of wall time).
pub const EVENTS_MAX: u64 = 1_000_000_000;
/// The most trace lines `--trace` may ask for.
pub const TRACE_LINES_MAX: usize = 100_000;
/// The most seeds one `--seeds` range may hold.
pub const SEEDS_MAX: u64 = 100_000_000;

/// Virtual time the safety phase may last at most; `--events` normally ends it long before.
const SAFETY_TIME_MAX: Duration = Duration::from_secs(24 * 3600);

/// The text of `synod sim --help`.
pub const HELP: &str = "\
Run seeded, deterministic simulations of a reference system under faults.

One run puts the whole cluster in one thread: virtual time, a network that loses, \
duplicates, reorders and partitions, disks that tear or lose unsynced writes, clocks that \
drift and jump, processes that crash, restart and pause. The seed decides everything: the \
same seed gives the same run and the same trace hash.

A run injects faults for --events events, checking an invariant after each, then heals \
every fault and requires progress; finally the client history is checked for \
linearizability. It prints the faults enabled, the schedule of every fault applied with \
its virtual time (partitions and the nodes they cut, clogs, loss, duplication, reordering, \
clock jumps and drift, pauses, crashes with what the disk lost, restarts), how often each \
fault fired, the verdict and the trace hash.

Systems:
  register   the ABD quorum register of synod-quorum (no leader)
  raft-kv    the Consistent Core node: Raft (synod-consensus) and its key-value store
  lease      the Consistent Core's leases: lock holders that pause past their lease and write fenced, and keys with an expiry; checked for one holder at a time, no stale fenced write applied, and every lease and key ended neither before its TTL nor after its leader's bound
  leaderless the leaderless store: ABD and CAS checked linearizable, QUORUM with version vectors checked to lose no acknowledged write and read nothing stale, replicas checked to converge after the heal; stale reads at ONE counted
  membership SWIM members with Lifeguard (synod-membership), 2 to 512 nodes, no clients: it checks that no start reuses a generation and that all views agree after the heal, and prints crash detection and convergence in protocol periods
  twopc      a bank on two-phase commit (synod-partitioning), 3 to 8 nodes (node 1 coordinates): it checks that no transaction both commits and aborts, that every audit sees the bank's total, that a prepared participant holds its locks, and that nothing is left in doubt after the heal; it prints the transactions committed and aborted
  partitions fixed partitions (synod-partitioning), 3 to 8 nodes, their table changed as nodes leave and join, written to by clients with stale tables: it checks that every write is taken by its key's owner (the others redirect to it)
  ranges     key ranges (synod-partitioning), 3 to 8 nodes, split, merged and moved while clients with stale caches write and scan in pages: it checks that every write is taken by its range's owner and that no scan misses an acknowledged key or repeats one

With --seed, --history FILE also writes the history the checker decided, for a checker \
Synod did not write: Jepsen's EDN history (FILE.edn: one :invoke and one :ok, :fail or \
:info event per operation, keys as [key value] tuples, as Knossos and Elle read it) or \
porcupine's operations (FILE.json: ClientId, Input, Call, Output, Return), or the format \
--history-format names. Times are in nanoseconds of virtual time.

With --seed, --html FILE draws the run as one self-contained page (open it in a browser; \
it fetches nothing): a lane per node with its role and term over time, crashes, restarts \
and pauses, partitions, loss and other faults as shaded regions, messages as arrows \
(filterable by kind), client operations as bars coloured by outcome, commits and \
snapshots, a latency plot, and the verdict; on a violation it opens on the operations the \
checker blames. The same seed draws the same page, byte for byte.

Examples:
  synod sim register --seed 7
  synod sim register --seeds 0..100 --nodes 5
  synod sim register --seed 7 --faults crash,partition,loss
  synod sim raft-kv --seeds 0..20
  synod sim raft-kv --seed 7 --history run.edn
  synod sim raft-kv --seed 7 --html run.html
  synod sim lease --seeds 0..20
  synod sim membership --nodes 16 --seed 7
  synod sim twopc --seeds 0..20 --nodes 4
  synod sim ranges --seeds 0..20

Exit status: 0 pass, 1 violation, 2 bad arguments (or a passing run whose --history could \
not be written), 4 the checker gave up undecided.";

/// A system `synod sim` can run: its name on the command line, what it runs, and the
/// function that runs one seed. Every simulated system is one entry of [`SYSTEMS`]; the
/// command line, `--help` and [`crate::systems`] read them from there.
#[derive(Clone, Copy)]
pub struct System {
    name: &'static str,
    /// The smallest and largest cluster it runs on; `None`: 3 or 5 nodes (a majority).
    nodes: Option<(usize, usize)>,
    describe: fn(nodes: usize) -> String,
    /// Runs one seed; `record`: also draw the run ([`RunSummary::timeline`]).
    run: fn(seed: u64, config: SimConfig, record: bool) -> RunSummary,
}

impl System {
    /// The ABD quorum register of `synod-quorum`: linearizable reads and writes, no leader.
    pub const REGISTER: System = System {
        name: "register",
        nodes: None,
        describe: |nodes| {
            format!(
                "ABD registers (synod-quorum), {nodes} nodes, {} clients, {} keys",
                register::CLIENTS,
                register::KEYS
            )
        },
        run: register::run,
    };

    /// The Consistent Core node: Raft from `synod-consensus` and its key-value store.
    pub const RAFT_KV: System = System {
        name: "raft-kv",
        nodes: None,
        describe: |nodes| {
            format!(
                "Consistent Core (Raft and a key-value store), {nodes} nodes, {} clients, {} keys",
                register::CLIENTS,
                raft_kv::KEYS
            )
        },
        run: raft_kv::run,
    };

    /// The leaderless store: every level of it at once, each checked against its promise.
    pub const LEADERLESS: System = System {
        name: "leaderless",
        nodes: None,
        describe: |nodes| {
            format!(
                "the leaderless store (version vectors), {nodes} nodes, {} clients, {} keys in each of ABD, CAS, QUORUM",
                leaderless::CLIENTS,
                leaderless::KEYS
            )
        },
        run: leaderless::run,
    };

    /// The Consistent Core's leases: lock holders that pause past their lease and write
    /// fenced, keys with an expiry, each checked by simulated time.
    pub const LEASE: System = System {
        name: "lease",
        nodes: None,
        describe: |nodes| {
            format!(
                "Consistent Core leases, {nodes} nodes, {} clients: lock holders (lease, lock, keep-alive, fenced writes, pauses past the TTL) and keys set with an expiry",
                register::CLIENTS,
            )
        },
        run: leases::run,
    };

    /// The members of `synod-membership`: SWIM with Lifeguard, gossip, the emergent leader.
    pub const MEMBERSHIP: System = System {
        name: "membership",
        nodes: Some(membership::NODES),
        describe: |nodes| {
            format!(
                "SWIM members with Lifeguard (synod-membership), {nodes} members, protocol period {} ms",
                membership::PERIOD_MS
            )
        },
        run: membership::run,
    };

    /// A bank on two-phase commit (`synod-partitioning`): a coordinator and participants.
    pub const TWOPC: System = System {
        name: "twopc",
        nodes: Some(twopc::NODES),
        describe: |nodes| {
            format!(
                "a bank on two-phase commit (synod-partitioning): a coordinator and {} participants, {} clients, {} accounts",
                nodes - 1,
                register::CLIENTS,
                twopc::ACCOUNTS
            )
        },
        run: twopc::run,
    };

    /// Fixed partitions (`synod-partitioning`) under clients with stale tables.
    pub const PARTITIONS: System = System {
        name: "partitions",
        nodes: Some(twopc::NODES),
        describe: |nodes| {
            format!(
                "fixed partitions (synod-partitioning): {} partitions of {} replicas on {nodes} nodes, the table changed every {} ms, {} clients with stale tables",
                partitions::PARTITIONS,
                partitions::REPLICATION,
                partitions::CHANGE_MS,
                register::CLIENTS
            )
        },
        run: partitions::run,
    };

    /// Key ranges (`synod-partitioning`) split and moved under clients with stale caches.
    pub const RANGES: System = System {
        name: "ranges",
        nodes: Some(twopc::NODES),
        describe: |nodes| {
            format!(
                "key ranges (synod-partitioning) on {nodes} nodes, split, merged or moved every {} ms, {} clients writing and scanning in pages of {} with stale caches",
                ranges::CHANGE_MS,
                register::CLIENTS,
                ranges::PAGE
            )
        },
        run: ranges::run,
    };

    /// The name on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        self.name
    }

    fn describe(self, nodes: usize) -> String {
        (self.describe)(nodes)
    }

    /// Checks that this system runs on `nodes` nodes.
    ///
    /// # Errors
    ///
    /// [`ArgError::Nodes`] or [`ArgError::NodesBetween`].
    pub fn check_nodes(self, nodes: usize) -> Result<usize, ArgError> {
        match self.nodes {
            None => check_nodes(nodes),
            Some((min, max)) if (min..=max).contains(&nodes) => Ok(nodes),
            Some((min, max)) => Err(ArgError::NodesBetween(nodes, min, max)),
        }
    }

    /// The system named `name`, if there is one.
    #[must_use]
    pub fn find(name: &str) -> Option<System> {
        SYSTEMS.iter().copied().find(|s| s.name == name)
    }

    /// The parser of a simulation's name on the command line: it accepts the names in
    /// [`SYSTEMS`] and lists them in `--help` and in the error for any other.
    #[must_use]
    pub fn parser() -> impl clap::builder::TypedValueParser<Value = System> {
        use clap::builder::TypedValueParser as _;
        clap::builder::PossibleValuesParser::new(SYSTEMS.iter().map(|s| s.name)).map(|name| {
            // The possible-values parser let only a listed name through.
            System::find(&name).unwrap_or(System::RAFT_KV)
        })
    }
}

/// Every system `synod sim` can run. Adding a simulated system is adding it here.
pub const SYSTEMS: &[System] = &[
    System::REGISTER,
    System::RAFT_KV,
    System::LEASE,
    System::LEADERLESS,
    System::MEMBERSHIP,
    System::TWOPC,
    System::PARTITIONS,
    System::RANGES,
];

impl PartialEq for System {
    fn eq(&self, other: &System) -> bool {
        self.name == other.name
    }
}

impl Eq for System {}

impl fmt::Debug for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "System({})", self.name)
    }
}

/// A bad argument, as the user should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgError {
    /// `--seeds` is not `A..B` or `A..=B` with numbers.
    MalformedRange(String),
    /// `--seeds` holds no seed, or too many.
    RangeSize(String),
    /// `--events` is zero or above [`EVENTS_MAX`].
    Events(u64),
    /// `--nodes` is neither 3 nor 5.
    Nodes(usize),
    /// `--nodes` is not between the two counts (inclusive) the system runs on.
    NodesBetween(usize, usize, usize),
    /// `--faults` names an unknown kind, or mixes `swarm`/`all`/`none` with kinds.
    Faults(String),
    /// `--trace` is above [`TRACE_LINES_MAX`].
    TraceLines(usize),
    /// A count that is not a number.
    NotANumber(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::MalformedRange(s) => write!(
                f,
                "`{s}` is not a seed range: write A..B (B excluded) or A..=B, for example 0..100"
            ),
            ArgError::RangeSize(s) => write!(
                f,
                "the seed range `{s}` must hold between 1 and {SEEDS_MAX} seeds"
            ),
            ArgError::Events(n) => write!(
                f,
                "{n} events: a run needs between 1 and {EVENTS_MAX} events"
            ),
            ArgError::Nodes(n) => write!(f, "{n} nodes: the cluster has 3 or 5 nodes"),
            ArgError::NodesBetween(n, min, max) => {
                write!(f, "{n} nodes: this cluster has {min} to {max} nodes")
            }
            ArgError::Faults(why) => write!(f, "{why}"),
            ArgError::TraceLines(n) => {
                write!(f, "{n} trace lines: at most {TRACE_LINES_MAX} can be kept")
            }
            ArgError::NotANumber(s) => write!(f, "`{s}` is not a whole number"),
        }
    }
}

impl std::error::Error for ArgError {}

/// A half-open range of seeds, non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    start: u64,
    end: u64,
}

impl SeedRange {
    /// Parses `A..B` (B excluded) or `A..=B`.
    ///
    /// # Errors
    ///
    /// [`ArgError::MalformedRange`] if the text is not such a range of decimal numbers,
    /// [`ArgError::RangeSize`] if it is empty or holds more than [`SEEDS_MAX`] seeds.
    pub fn parse(text: &str) -> Result<Self, ArgError> {
        let malformed = || ArgError::MalformedRange(text.to_owned());
        let (a, b, inclusive) = match text.split_once("..") {
            Some((a, b)) => match b.strip_prefix('=') {
                Some(b) => (a, b, true),
                None => (a, b, false),
            },
            None => return Err(malformed()),
        };
        let seed = |s: &str| number::<u64>(s).map_err(|_| malformed());
        let (start, last) = (seed(a)?, seed(b)?);
        let end = if inclusive {
            last.checked_add(1).ok_or_else(malformed)?
        } else {
            last
        };
        if end <= start || end - start > SEEDS_MAX {
            return Err(ArgError::RangeSize(text.to_owned()));
        }
        Ok(SeedRange { start, end })
    }

    /// The seeds, in order.
    pub fn seeds(self) -> impl Iterator<Item = u64> {
        self.start..self.end
    }

    /// How many seeds.
    #[must_use]
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    /// Always false: a range holds at least one seed.
    #[must_use]
    pub fn is_empty(self) -> bool {
        false
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// The fault kinds on the command line, in `FaultKind::ALL` order.
const FAULT_NAMES: [(&str, FaultKind); 9] = [
    ("partition", FaultKind::Partition),
    ("clog", FaultKind::Clog),
    ("loss", FaultKind::Loss),
    ("duplicate", FaultKind::Duplicate),
    ("reorder", FaultKind::Reorder),
    ("crash", FaultKind::Crash),
    ("pause", FaultKind::Pause),
    ("clock-jump", FaultKind::ClockJump),
    ("clock-drift", FaultKind::ClockDrift),
];

/// Which faults the nemesis may inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultSelection {
    /// Swarm testing: each seed enables a random subset of every kind, with random
    /// intensities.
    Swarm,
    /// No faults at all.
    None,
    /// Exactly these kinds, all enabled in every run, at full intensity.
    Kinds(Vec<FaultKind>),
}

impl FaultSelection {
    /// Parses `swarm`, `all`, `none`, or a comma-separated list of kinds (`partition`,
    /// `clog`, `loss`, `duplicate`, `reorder`, `crash`, `pause`, `clock-jump`,
    /// `clock-drift`).
    ///
    /// # Errors
    ///
    /// [`ArgError::Faults`] for an unknown name or `swarm`, `all` or `none` inside a list.
    pub fn parse(text: &str) -> Result<Self, ArgError> {
        let known = || {
            let names: Vec<&str> = FAULT_NAMES.iter().map(|(n, _)| *n).collect();
            format!("swarm, all, none, or a list of {}", names.join(", "))
        };
        match text.trim() {
            "swarm" => return Ok(FaultSelection::Swarm),
            "none" => return Ok(FaultSelection::None),
            "all" => return Ok(FaultSelection::Kinds(FaultKind::ALL.to_vec())),
            _ => {}
        }
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim) {
            let Some((_, kind)) = FAULT_NAMES.iter().find(|(n, _)| *n == name) else {
                return Err(ArgError::Faults(format!(
                    "`{name}` is not a fault kind; --faults takes {}",
                    known()
                )));
            };
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        kinds.sort();
        Ok(FaultSelection::Kinds(kinds))
    }

    /// The nemesis configuration this selection stands for, its clocks drifting at most
    /// [`raft_kv::CLOCK_DRIFT_PPM_MAX`] (the bound the raft-kv leaders' lease assumes).
    #[must_use]
    pub fn nemesis(&self) -> NemesisConfig {
        let nemesis = NemesisConfig::builder().drift_ppm_max(raft_kv::CLOCK_DRIFT_PPM_MAX);
        match self {
            FaultSelection::Swarm => nemesis.build(),
            FaultSelection::None => NemesisConfig::disabled(),
            FaultSelection::Kinds(kinds) => nemesis.swarm(false).kinds(kinds).build(),
        }
    }
}

impl fmt::Display for FaultSelection {
    /// The form [`FaultSelection::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultSelection::Swarm => f.write_str("swarm"),
            FaultSelection::None => f.write_str("none"),
            FaultSelection::Kinds(kinds) => {
                let names: Vec<&str> = kinds
                    .iter()
                    .filter_map(|k| FAULT_NAMES.iter().find(|(_, fk)| fk == k))
                    .map(|(n, _)| *n)
                    .collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// Checks a node count (3 or 5).
///
/// # Errors
///
/// [`ArgError::Nodes`] otherwise.
pub fn check_nodes(nodes: usize) -> Result<usize, ArgError> {
    match nodes {
        3 | 5 => Ok(nodes),
        _ => Err(ArgError::Nodes(nodes)),
    }
}

/// Checks an event count (1 to [`EVENTS_MAX`]).
///
/// # Errors
///
/// [`ArgError::Events`] otherwise.
pub fn check_events(events: u64) -> Result<u64, ArgError> {
    if (1..=EVENTS_MAX).contains(&events) {
        Ok(events)
    } else {
        Err(ArgError::Events(events))
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, ArgError> {
    text.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| ArgError::NotANumber(text.to_owned()))
}

/// Parses `--nodes`: a number, which [`Settings::new`] checks against the system (3 or 5
/// for most).
///
/// # Errors
///
/// [`ArgError::NotANumber`].
pub fn parse_nodes(text: &str) -> Result<usize, ArgError> {
    number(text)
}

/// Parses `--events` (1 to [`EVENTS_MAX`]; `_` separators allowed).
///
/// # Errors
///
/// [`ArgError::NotANumber`], or as [`check_events`].
pub fn parse_events(text: &str) -> Result<u64, ArgError> {
    check_events(number(text)?)
}

/// Parses `--trace` (0 to [`TRACE_LINES_MAX`]).
///
/// # Errors
///
/// [`ArgError::NotANumber`] or [`ArgError::TraceLines`].
pub fn parse_trace_lines(text: &str) -> Result<usize, ArgError> {
    let lines = number(text)?;
    if lines > TRACE_LINES_MAX {
        return Err(ArgError::TraceLines(lines));
    }
    Ok(lines)
}

/// Everything about a run except its seed, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    system: System,
    nodes: usize,
    events: u64,
    faults: FaultSelection,
    trace_lines: usize,
    history: Option<HistoryFile>,
    html: Option<std::path::PathBuf>,
}

impl Settings {
    /// Settings for `system` on `nodes` nodes, `events` safety-phase events, with `faults`.
    ///
    /// # Errors
    ///
    /// As [`System::check_nodes`] and [`check_events`].
    pub fn new(
        system: System,
        nodes: usize,
        events: u64,
        faults: FaultSelection,
    ) -> Result<Self, ArgError> {
        Ok(Settings {
            system,
            nodes: system.check_nodes(nodes)?,
            events: check_events(events)?,
            faults,
            trace_lines: 0,
            history: None,
            html: None,
        })
    }

    /// Also write the history of a run of one seed to `file`, for other checkers.
    #[must_use]
    pub fn with_history(mut self, file: HistoryFile) -> Self {
        self.history = Some(file);
        self
    }

    /// Also draw a run of one seed as a page ([`synod_sim::timeline`]) written to `path`.
    #[must_use]
    pub fn with_html(mut self, path: std::path::PathBuf) -> Self {
        self.html = Some(path);
        self
    }

    /// Also print the last `lines` events of each reported run.
    ///
    /// # Errors
    ///
    /// [`ArgError::TraceLines`] above [`TRACE_LINES_MAX`].
    pub fn with_trace_lines(mut self, lines: usize) -> Result<Self, ArgError> {
        if lines > TRACE_LINES_MAX {
            return Err(ArgError::TraceLines(lines));
        }
        self.trace_lines = lines;
        Ok(self)
    }

    /// The number of nodes.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The command that runs `seed` again with these settings.
    #[must_use]
    pub fn replay_command(&self, seed: u64) -> String {
        format!(
            "synod sim {} --seed {seed} --nodes {} --events {} --faults {}",
            self.system.name(),
            self.nodes,
            self.events,
            self.faults
        )
    }

    fn sim_config(&self) -> SimConfig {
        let link = DelayDistribution::uniform(Duration::from_micros(100), Duration::from_millis(2))
            .with_tail(Probability::from_percent(5), Duration::from_millis(20));
        SimConfig::builder(self.nodes)
            .clients(register::CLIENTS)
            .safety_time(SAFETY_TIME_MAX)
            .events_max(self.events)
            .liveness_time_max(Duration::from_secs(2))
            .client_timeout(Duration::from_millis(100))
            .link(LinkConfig::new(link))
            .nemesis(self.faults.nemesis())
            .trace_lines_max(self.trace_lines)
            .build()
            .expect("settings within synod-sim's limits: nodes and durations are fixed here")
    }
}

/// What one run found, for printing.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The seed.
    pub seed: u64,
    /// The digest of every event; equal for equal seeds and settings.
    pub trace_hash: u64,
    /// Events processed, both phases.
    pub events: u64,
    /// Virtual time at the end.
    pub end_time: SimTime,
    /// The fault kinds and intensities this seed enabled.
    pub profile: FaultProfile,
    /// How often each fault fired.
    pub coverage: Coverage,
    /// Every fault applied, with its virtual time and details.
    pub schedule: FaultLog,
    /// Client operations: invoked, ok, failed (certainly not applied), unknown.
    pub operations: [usize; 4],
    /// The verdict: the run's own failure (invariant, progress) or the checker's.
    pub verdict: Verdict,
    /// The last events as text, if asked for.
    pub trace: Vec<String>,
    /// The clients' history, as the checker decided it.
    pub history: History<KvInput, KvOutput>,
    /// The system's own figures, one per line (none for a store checked by its history).
    pub figures: Vec<String>,
    /// What a pass means for this system.
    pub passed: &'static str,
    /// The run drawn ([`synod_sim::timeline`]), if it was recorded.
    pub timeline: Option<Timeline>,
}

impl RunSummary {
    /// The summary of a key-value store's run: its verdict (the run's own failure, or what
    /// the linearizability checker says of its history) and, if the run was recorded, the
    /// run drawn, with the checker's culprit of a violation.
    #[must_use]
    pub fn judged(mut report: RunReport<KvInput, KvOutput>) -> Self {
        let checker = Linearizability::new(KvModel);
        let (verdict, culprit) = match &report.failure {
            Some(failure) => (Verdict::Violation(failure.to_string()), None),
            None => match checker.check_explained(&report.history) {
                (Verdict::Violation(why), culprit) => (
                    Verdict::Violation(format!("linearizability: {why}")),
                    culprit,
                ),
                (Verdict::GaveUp(why), _) => {
                    (Verdict::GaveUp(format!("linearizability: {why}")), None)
                }
                (Verdict::Pass, _) => (Verdict::Pass, None),
            },
        };
        let timeline = report
            .recording
            .is_some()
            .then(|| Timeline::of_run(&report, &verdict, culprit.as_ref()));
        let history = std::mem::take(&mut report.history);
        RunSummary {
            timeline,
            ..RunSummary::of_report(report, verdict, history)
        }
    }

    /// The summary of a run with no clients, judged by its invariant and progress
    /// condition alone, with the system's own `figures`; `passed` says what a pass means.
    fn of_figures<I: fmt::Debug, O: fmt::Debug>(
        report: RunReport<I, O>,
        figures: Vec<String>,
        passed: &'static str,
    ) -> Self {
        let verdict = match &report.failure {
            None => Verdict::Pass,
            Some(failure) => Verdict::Violation(failure.to_string()),
        };
        let timeline = report
            .recording
            .is_some()
            .then(|| Timeline::of_run(&report, &verdict, None));
        RunSummary {
            figures,
            passed,
            timeline,
            ..RunSummary::of_report(report, verdict, History::new())
        }
    }

    fn of_report<I, O>(
        report: RunReport<I, O>,
        verdict: Verdict,
        history: History<KvInput, KvOutput>,
    ) -> Self {
        let (ok, unknown) = (history.ok_count(), history.unknown_count());
        RunSummary {
            seed: report.seed,
            trace_hash: report.trace_hash,
            events: report.events,
            end_time: report.end_time,
            profile: report.profile,
            coverage: report.coverage,
            schedule: report.faults,
            operations: [history.len(), ok, history.len() - ok - unknown, unknown],
            verdict,
            trace: report.trace,
            history,
            figures: Vec::new(),
            passed: "linearizable, invariant held, progress after healing",
            timeline: None,
        }
    }

    /// The exit code this run alone would give.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Pass => 0,
            Verdict::Violation(_) => EXIT_VIOLATION,
            Verdict::GaveUp(_) => EXIT_GAVE_UP,
        }
    }

    /// One line: seed, verdict, size, trace hash.
    #[must_use]
    pub fn line(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Violation(_) => "VIOLATION",
            Verdict::GaveUp(_) => "GAVE UP",
        };
        let [ops, _, _, unknown] = self.operations;
        let work = if ops == 0 && !self.figures.is_empty() {
            String::new()
        } else {
            format!(" {ops:>6} ops ({unknown} unknown)")
        };
        format!(
            "seed {:<6} {verdict:<9} {:>8} events{work}  trace hash {:#018x}",
            self.seed, self.events, self.trace_hash
        )
    }
}

/// Fired counters as `name=count`, a few per line.
fn coverage_lines(coverage: &Coverage) -> Vec<String> {
    let fired: Vec<String> = Counter::ALL
        .into_iter()
        .filter(|&c| coverage.get(c) > 0)
        .map(|c| format!("{}={}", c.name(), coverage.get(c)))
        .collect();
    if fired.is_empty() {
        return vec!["nothing fired".to_owned()];
    }
    fired.chunks(4).map(|c| c.join(" ")).collect()
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const INDENT: &str = "            ";
        writeln!(f, "seed        {}", self.seed)?;
        writeln!(f, "faults      {}", self.profile)?;
        writeln!(
            f,
            "schedule    {} fault events, in virtual time",
            self.schedule.len() as u64 + self.schedule.dropped()
        )?;
        if self.schedule.dropped() > 0 {
            writeln!(
                f,
                "  ({} earlier faults not kept; the last {} follow)",
                self.schedule.dropped(),
                self.schedule.len()
            )?;
        }
        if self.schedule.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for entry in self.schedule.entries() {
            writeln!(f, "  {entry}")?;
        }
        for (i, line) in coverage_lines(&self.coverage).iter().enumerate() {
            let head = if i == 0 { "coverage    " } else { INDENT };
            writeln!(f, "{head}{line}")?;
        }
        writeln!(
            f,
            "events      {} in {} of virtual time",
            self.events, self.end_time
        )?;
        let [ops, ok, failed, unknown] = self.operations;
        if ops > 0 || self.figures.is_empty() {
            writeln!(
                f,
                "history     {ops} operations: {ok} ok, {failed} failed, {unknown} unknown"
            )?;
        }
        for (i, line) in self.figures.iter().enumerate() {
            let head = if i == 0 { "figures     " } else { INDENT };
            writeln!(f, "{head}{line}")?;
        }
        match &self.verdict {
            Verdict::Pass => writeln!(f, "verdict     pass: {}", self.passed)?,
            Verdict::Violation(why) => writeln!(f, "verdict     VIOLATION: {why}")?,
            Verdict::GaveUp(why) => writeln!(f, "verdict     GAVE UP (undecided): {why}")?,
        }
        writeln!(f, "trace hash  {:#018x}", self.trace_hash)?;
        if !self.trace.is_empty() {
            writeln!(f, "last {} events:", self.trace.len())?;
            for line in &self.trace {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// The progress condition of every system: after healing, some operation invoked from
/// then on succeeds.
#[must_use]
pub fn progress_after_healing<N: synod_sim::Node, I, O>(view: &View<'_, N, I, O>) -> bool {
    view.healed_at()
        .is_some_and(|t| view.history().ok_invoked_since(t) > 0)
}

/// Runs `seed` once.
#[must_use]
pub fn run_seed(seed: u64, settings: &Settings) -> RunSummary {
    (settings.system.run)(seed, settings.sim_config(), false)
}

/// Runs `seed` once and draws it ([`RunSummary::timeline`], `None` for a system that draws
/// nothing).
#[must_use]
pub fn run_seed_drawn(seed: u64, settings: &Settings) -> RunSummary {
    let mut summary = (settings.system.run)(seed, settings.sim_config(), true);
    if let Some(timeline) = summary.timeline.as_mut() {
        timeline.set_title(
            &format!("synod sim {} --seed {seed}", settings.system.name()),
            &format!(
                "{}; {} safety-phase events, faults {}; {} events in {} of virtual time",
                settings.system.describe(settings.nodes),
                settings.events,
                settings.faults,
                summary.events,
                summary.end_time
            ),
        );
    }
    summary
}

/// Which seeds to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    /// One seed, reported in full.
    One(u64),
    /// A range, one line per seed, stopping at the first failure (reported in full).
    Range(SeedRange),
}

/// Runs `seed`, prints its report, writes its history to `history` if given, and returns
/// the exit code: the run's, or [`EXIT_USAGE`] for a passing run whose history could not be
/// written.
fn run_one(
    seed: u64,
    settings: &Settings,
    history: Option<(HistoryWriter, &HistoryFile)>,
    page: Option<PageFile>,
) -> ExitCode {
    let summary = if page.is_some() {
        run_seed_drawn(seed, settings)
    } else {
        run_seed(seed, settings)
    };
    crate::out!("{summary}");
    if !summary.verdict.is_pass() {
        crate::outln!("replay with: {}", settings.replay_command(seed));
    }
    let mut code = summary.exit_code();
    if let Some(page) = page {
        let written = match &summary.timeline {
            Some(timeline) => page.write(timeline).map_err(|e| e.to_string()),
            None => Err(format!(
                "--html: the {} simulation draws no page",
                settings.system.name()
            )),
        };
        match written {
            Ok(line) => crate::outln!("{line}"),
            Err(e) => {
                eprintln!("synod sim: {e}");
                if code == 0 {
                    code = EXIT_USAGE;
                }
            }
        }
    }
    if let Some((writer, file)) = history {
        match writer.write(&summary.history) {
            Ok(()) => crate::outln!(
                "history written to {file}: {} operations",
                summary.history.len()
            ),
            Err(e) => {
                eprintln!("synod sim: {e}");
                if code == 0 {
                    code = EXIT_USAGE;
                }
            }
        }
    }
    ExitCode::from(code)
}

/// Runs `seeds` with `settings`, prints the reports, and returns the exit code.
#[must_use]
pub fn run(seeds: Seeds, settings: &Settings) -> ExitCode {
    // The history file is created before anything runs, so that a path that cannot be
    // written fails at once.
    let history = match (seeds, &settings.history) {
        (_, None) => None,
        (Seeds::Range(_), Some(_)) => {
            eprintln!("synod sim: --history writes the history of one run: give --seed N");
            return ExitCode::from(EXIT_USAGE);
        }
        (Seeds::One(_), Some(file)) => match file.create() {
            Ok(writer) => Some((writer, file)),
            Err(e) => {
                eprintln!("synod sim: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let page = match (seeds, &settings.html) {
        (_, None) => None,
        (Seeds::Range(_), Some(_)) => {
            eprintln!("synod sim: --html draws one run: give --seed N");
            return ExitCode::from(EXIT_USAGE);
        }
        (Seeds::One(_), Some(path)) => match PageFile::create(path) {
            Ok(page) => Some(page),
            Err(e) => {
                eprintln!("synod sim: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    crate::outln!(
        "synod sim {}: {}",
        settings.system.name(),
        settings.system.describe(settings.nodes)
    );
    let range = match seeds {
        Seeds::One(seed) => return run_one(seed, settings, history, page),
        Seeds::Range(range) => range,
    };
    let mut coverage = Coverage::default();
    let (mut events, mut operations) = (0u64, 0usize);
    for seed in range.seeds() {
        let summary = run_seed(seed, settings);
        crate::outln!("{}", summary.line());
        if !summary.verdict.is_pass() {
            crate::outln!();
            crate::out!("{summary}");
            crate::outln!("replay with: {}", settings.replay_command(seed));
            return ExitCode::from(summary.exit_code());
        }
        coverage.merge(&summary.coverage);
        events += summary.events;
        operations += summary.operations[0];
    }
    let operations = if operations > 0 {
        format!(", {operations} operations")
    } else {
        String::new()
    };
    crate::outln!(
        "all {} seeds of {range} passed: {events} events{operations}",
        range.len()
    );
    for (i, line) in coverage_lines(&coverage).iter().enumerate() {
        let head = if i == 0 {
            "coverage    "
        } else {
            "            "
        };
        crate::outln!("{head}{line}");
    }
    ExitCode::SUCCESS
}
