//! A worked example: a three-node Raft cluster, on its production log store, under
//! synod-sim's deterministic simulation, checked for State Machine Safety.
//!
//! ```text
//! cargo run -p synod-consensus --features wal --example simulated_cluster -- 200
//! ```
//!
//! runs 200 seeds (20 by default; `--broken` runs a deliberately broken Raft, see the end
//! of this comment) and prints, for each, how many entries the cluster committed under
//! crashes (in every crash mode the simulated disk has), pauses, partitions, lost,
//! duplicated and reordered messages and clock jumps. It is the whole recipe for putting a
//! consensus node under the simulator:
//!
//! 1. **The state machine.** [`Node`] follows the node contract (`synod_node::Protocol`):
//!    inputs in with the time, effects out through `poll`, every change to its log handed
//!    out as a [`RaftWrite`] to persist and acknowledged by token. So synod-sim's one
//!    generic adapter, [`ProtocolNode`], drives it: nothing here delivers a message, runs
//!    a timer or orders a sync.
//! 2. **The store** ([`ProtocolStore`]): the two things only the node's author knows. How
//!    the node is built from what survived on its disk ([`WalLogStore::open_with`] on the
//!    simulated disk's `synod_wal::Storage`, whose recovery cuts torn tails and reconciles
//!    a snapshot a crash interrupted, then [`Node::new`]); and how a write reaches the disk
//!    ([`WalLogStore::apply`], then [`WalLogStore::flush`] so the simulator's asynchronous
//!    sync covers it). The production store runs unchanged: the simulated disk is where its
//!    crash handling meets every crash the run makes. (This example never compacts its
//!    log; the Consistent Core's simulation, `synod sim raft-kv`, does, on the same store.)
//! 3. **The clients** ([`Workload`]): propose unique values at random nodes. A proposal's
//!    reply only says where the entry was appended, not that it was committed, so its
//!    outcome is recorded as unknown; what is checked is what the nodes apply.
//! 4. **The check:** every entry any node applies (handed up as [`Apply::Entry`]) goes into
//!    one ledger shared by the stores. Two nodes applying different entries at one index is
//!    a violation of Raft's State Machine Safety (each node applies each index once per
//!    incarnation, so a difference is a committed entry that was lost or replaced).
//!
//! The example's tests run the same cluster over a few seeds and show that the ledger
//! flags an index applied two ways. `--broken` runs a deliberately broken Raft (one that
//! grants votes before they are durable, behind the crate's `broken` feature): it breaks
//! safety only when a crash loses a vote already granted and the voter then votes again in
//! that term, so it takes the crate's crash-storm tests many seeds to catch, and this
//! short run may show none.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use synod_consensus::{
    Apply, Broken, Config, Entry, LogIndex, LogStore, Membership, Node, Payload, RaftWrite,
    Request, RequestError, Response, Term, WalLogStore, WalStoreOptions,
};
use synod_sim::{
    Boot, ClientId, Completion, Disk, DiskStorage, FaultKind, Invocation, NemesisConfig, NodeId,
    ProtocolNode, ProtocolStore, SimConfig, SimRng, Simulation, Workload,
};

/// Nodes in the cluster.
const NODES: usize = 3;
/// Simulated time each seed runs its faults for.
const RUN: Duration = Duration::from_secs(2);

/// What the nodes applied, by log index: the first entry applied there (its term and
/// data), and the violations seen.
#[derive(Debug, Default)]
struct Ledger {
    applied: BTreeMap<LogIndex, (Term, Bytes)>,
    /// Entries applied, over all nodes and incarnations.
    applications: u64,
    violations: Vec<String>,
}

impl Ledger {
    fn record(&mut self, node: NodeId, entry: &Entry) {
        self.applications += 1;
        let data = match &entry.payload {
            Payload::Command(data) => data.clone(),
            // The leader's no-op and membership entries are told apart by term and index.
            Payload::Noop | Payload::Membership(_) => Bytes::new(),
        };
        match self.applied.get(&entry.index) {
            None => {
                self.applied.insert(entry.index, (entry.term, data));
            }
            Some((term, first)) if (*term, first) != (entry.term, &data) => {
                self.violations.push(format!(
                    "node {node} applied {:?} at index {} in term {}, but {:?} of term {term} was applied there before",
                    data, entry.index, entry.term, first
                ));
            }
            Some(_) => {}
        }
    }
}

/// A node's store on its simulated disk: the production `WalLogStore`, and the ledger its
/// applied entries go to.
struct RaftStore {
    id: NodeId,
    broken: Broken,
    log: Option<WalLogStore<DiskStorage>>,
    ledger: Arc<Mutex<Ledger>>,
}

impl ProtocolStore for RaftStore {
    type Protocol = Node;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Node> {
        let voters = (1..=boot.nodes as u64).map(NodeId::new);
        let membership = Membership::new(voters, []).map_err(io::Error::other)?;
        let (log, recovered) = WalLogStore::open_with(
            boot.disk.storage_in("entries"),
            boot.disk.storage_in("meta"),
            membership,
            // The same seed writes the same bytes, so a run can be replayed.
            WalStoreOptions::default().segment_time_fixed(true),
        )
        .map_err(io::Error::other)?;
        self.log = Some(log);
        let config = Config::builder(boot.id)
            // 10 ms ticks: elections after 100 to 200 ms of silence.
            .tick_interval_us(10_000)
            .seed(boot.rng.next_u64())
            .broken(self.broken)
            .build()
            .map_err(io::Error::other)?;
        Ok(Node::new(config, recovered))
    }

    fn write(&mut self, _disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        let log = self
            .log
            .as_mut()
            .ok_or_else(|| io::Error::other("no log"))?;
        log.apply(write);
        log.flush().map_err(io::Error::other)
    }

    fn apply(&mut self, apply: Apply) {
        if let Apply::Entry(entry) = apply {
            self.ledger
                .lock()
                .expect("no panic while held")
                .record(self.id, &entry);
        }
    }
}

/// Clients proposing unique values at random nodes.
struct Proposals(u64);

impl Workload<ProtocolNode<RaftStore>> for Proposals {
    type Input = u64;
    type Output = ();

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, u64>> {
        self.0 += 1;
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        let value = Bytes::from(self.0.to_le_bytes().to_vec());
        Some(Invocation {
            node,
            request: Request::Propose(value),
            input: self.0,
        })
    }

    fn complete(
        &mut self,
        _: ClientId,
        _: &u64,
        response: &Result<Response, RequestError>,
    ) -> Completion<()> {
        match response {
            // Appended, not yet committed: whether it takes effect is for the ledger to see.
            Ok(_) => Completion::Unknown,
            // Refused before it reached a log (not the leader, back-pressure).
            Err(_) => Completion::Fail,
        }
    }
}

/// What one seed's run did.
struct Outcome {
    /// Indexes committed (applied by some node).
    committed: usize,
    applications: u64,
    violations: Vec<String>,
}

/// Runs the cluster for one seed, with Raft broken as `broken` says (nothing, normally).
fn run(seed: u64, broken: Broken) -> Outcome {
    let nemesis = NemesisConfig::builder()
        .kinds(&[
            FaultKind::Crash,
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::Loss,
            FaultKind::Duplicate,
            FaultKind::Reorder,
            FaultKind::ClockJump,
        ])
        .crashed_nodes_max(1)
        .build();
    let config = SimConfig::builder(NODES)
        .clients(4)
        .safety_time(RUN)
        .nemesis(nemesis)
        .build()
        .expect("a valid simulation");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stores = Arc::clone(&ledger);
    let factory = move |id: NodeId| {
        ProtocolNode::new(RaftStore {
            id,
            broken,
            log: None,
            ledger: Arc::clone(&stores),
        })
    };
    let _report = Simulation::new(config, seed, factory, Proposals(0)).run();
    let ledger = std::mem::take(&mut *ledger.lock().expect("no panic while held"));
    Outcome {
        committed: ledger.applied.len(),
        applications: ledger.applications,
        violations: ledger.violations,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = args.iter().find_map(|s| s.parse().ok()).unwrap_or(20);
    // `--broken`: grant votes before they are durable, to watch the check catch it.
    let broken = Broken {
        skip_vote_persistence: args.iter().any(|a| a == "--broken"),
        ..Broken::default()
    };
    let mut failed = 0;
    for seed in 0..seeds {
        let outcome = run(seed, broken);
        println!(
            "seed {seed:>4}: {:>5} entries committed, {:>6} applications, {}",
            outcome.committed,
            outcome.applications,
            if outcome.violations.is_empty() {
                "safe".to_string()
            } else {
                format!("VIOLATION: {}", outcome.violations[0])
            }
        );
        failed += usize::from(!outcome.violations.is_empty());
    }
    println!("{seeds} seeds, {failed} with a violation");
    if failed > 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_commits_and_no_two_nodes_apply_different_entries_at_one_index() {
        for seed in 0..2 {
            let outcome = run(seed, Broken::default());
            assert_eq!(outcome.violations, Vec::<String>::new(), "seed {seed}");
            assert!(
                outcome.committed > 20,
                "seed {seed}: only {} entries committed",
                outcome.committed
            );
        }
    }

    #[test]
    fn the_ledger_flags_a_different_entry_applied_at_an_index() {
        let entry = |term, data: &'static [u8]| Entry {
            term: Term::new(term),
            index: LogIndex(7),
            payload: Payload::Command(Bytes::from_static(data)),
        };
        let mut ledger = Ledger::default();
        let (a, b) = (NodeId::new(1), NodeId::new(2));
        ledger.record(a, &entry(3, b"x"));
        ledger.record(b, &entry(3, b"x"));
        assert!(
            ledger.violations.is_empty(),
            "the same entry twice is no violation"
        );
        ledger.record(b, &entry(4, b"x"));
        ledger.record(b, &entry(3, b"y"));
        assert_eq!(ledger.violations.len(), 2, "{:?}", ledger.violations);
    }
}
