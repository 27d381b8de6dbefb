//! The `partitions` system under `synod-sim`: clients with stale partition tables write to
//! `synod-partitioning`'s fixed partitions while the table changes under them.
//!
//! The table ([`PartitionTable`], [`PARTITIONS`] partitions of [`REPLICATION`] replicas)
//! lives in the run's directory, which stands in for the Consistent Core a real cluster
//! keeps it in: every node reads the current version from it, so no node is ever behind.
//! Node 1 is the control plane: every [`CHANGE_MS`] it takes a node out of the table, or
//! puts the one it took out back, each a new version. The clients are what is stale: each
//! starts with version 1 of the table and learns only from redirects. A write goes to the
//! owner of its key's partition in the client's table; the node admits it only if it owns
//! the partition in the current table ([`PartitionTable::admit`]), and otherwise answers
//! with a [`Redirect`] naming the current owner, which the client learns and writes to.
//!
//! The checker: after every event, each write a node took was taken by the owner of its
//! key's partition in the current table. The progress condition: writes succeed after the
//! faults heal. The broken variant ([`Variant`], with the `broken` feature) is a node that
//! admits a write when the asker's table says it owns the key, as a node that trusts the
//! routing it is sent: a client behind by one change makes it take a write it no longer
//! owns, and the checker catches it (`tests/it/sim_routing.rs`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use synod_partitioning::{NodeSpec, PartitionId, PartitionTable, Redirect, TableVersion};
use synod_sim::{
    ClientId, Completion, Context, Invocation, Node, NodeId, RequestId, SimConfig, SimRng,
    Simulation, TimerId, Workload,
};

use super::{RunSummary, progress_after_healing};

/// Partitions of the table.
pub const PARTITIONS: u32 = 64;
/// Replicas of each partition (the first owns it and takes its writes).
pub const REPLICATION: usize = 2;
/// Keys the clients write, `0..KEYS`.
pub const KEYS: u64 = 256;
/// How often the control plane (node 1) changes the table, in milliseconds.
pub const CHANGE_MS: u64 = 15;

/// Which node runs, correct or deliberately broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A node admits a write only if it owns the key's partition in the current table.
    Correct,
    /// A node admits a write if it owned the key's partition in the asker's version of the
    /// table: it trusts the routing it is sent.
    #[cfg(feature = "broken")]
    TrustsAskersTable,
}

/// A client's write: the key, and the version of the table it was routed with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Write {
    /// The key.
    pub key: u64,
    /// The version of the asker's table.
    pub version: TableVersion,
}

/// A node's answer to a write.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Taken, by the partition's owner.
    Written,
    /// Not taken: the partition is owned elsewhere (the current owner and version).
    Redirect(Redirect),
}

/// The key's bytes, as the table hashes them.
fn key_bytes(key: u64) -> [u8; 8] {
    key.to_be_bytes()
}

/// What every node and the checker share: the table's versions (the last is current),
/// the node the control plane took out, and each write a node took since the checker last
/// looked.
#[derive(Debug)]
pub struct Directory {
    /// Every version of the table, oldest first; the last is current.
    pub versions: Vec<PartitionTable>,
    out: Option<NodeId>,
    taken: Vec<(NodeId, u64)>,
    /// Writes taken in all.
    pub written: u64,
    /// Redirects answered in all.
    pub redirects: u64,
}

impl Directory {
    fn new(nodes: usize) -> Directory {
        let specs = (1..=nodes as u64).map(|n| (NodeId::new(n), NodeSpec::new()));
        let table = PartitionTable::new(PARTITIONS, REPLICATION, specs)
            .expect("2 to 8 nodes of one weight fit the table");
        Directory {
            versions: vec![table],
            out: None,
            taken: Vec::new(),
            written: 0,
            redirects: 0,
        }
    }

    /// The current table.
    #[must_use]
    pub fn current(&self) -> &PartitionTable {
        self.versions.last().expect("version 1 at least")
    }

    /// The control plane's next change: the node taken out goes back in, or a node (chosen
    /// by `rng`) goes out; each is the next version.
    fn change(&mut self, rng: &mut SimRng) {
        let table = self.versions.last().expect("version 1 at least");
        let next = match self.out.take() {
            Some(node) => table.join(node, NodeSpec::new()).map(|(t, _)| t),
            None => {
                let nodes: Vec<NodeId> = table.nodes().map(|(n, _)| n).collect();
                let node = *rng.pick(&nodes).expect("nodes");
                self.out = Some(node);
                table.leave(node).map(|(t, _)| t)
            }
        };
        match next {
            Ok(table) => self.versions.push(table),
            // Too few nodes would be left: this change is skipped.
            Err(_) => self.out = None,
        }
    }

    /// What node `me` answers a write of `key` routed with table version `known`.
    fn admit(&mut self, me: NodeId, key: u64, known: TableVersion, variant: Variant) -> Answer {
        let table = self.current();
        let partition = table.partition_of(&key_bytes(key));
        let verdict = match variant {
            Variant::Correct => table.admit(me, partition),
            #[cfg(feature = "broken")]
            Variant::TrustsAskersTable => {
                let askers = self
                    .versions
                    .iter()
                    .find(|t| t.version() == known)
                    .unwrap_or(table);
                askers
                    .admit(me, partition)
                    .or_else(|_| table.admit(me, partition))
            }
        };
        let _ = known;
        match verdict {
            Ok(()) => {
                self.taken.push((me, key));
                self.written += 1;
                Answer::Written
            }
            Err(redirect) => {
                self.redirects += 1;
                Answer::Redirect(redirect)
            }
        }
    }

    /// The checker: every write taken since the last look was taken by its key's owner in
    /// the current table.
    fn check(&mut self) -> Result<(), String> {
        let table = self.versions.last().expect("version 1 at least");
        for (node, key) in self.taken.drain(..) {
            let partition = table.partition_of(&key_bytes(key));
            let owner = table.owner(partition);
            if node != owner {
                return Err(format!(
                    "{node} took a write of key {key} ({partition}), owned by {owner} in table \
                     version {}",
                    table.version()
                ));
            }
        }
        Ok(())
    }
}

/// One node: it answers writes from the directory's current table; node 1 also changes the
/// table every [`CHANGE_MS`].
#[derive(Debug)]
pub struct PartitionNode {
    directory: Rc<RefCell<Directory>>,
    variant: Variant,
}

impl Node for PartitionNode {
    type Message = ();
    type Request = Write;
    type Response = Answer;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if ctx.id() == NodeId::new(1) {
            ctx.set_timer(Duration::from_millis(CHANGE_MS), TimerId(1));
        }
    }

    fn on_message(&mut self, _: &mut Context<'_, Self>, _: NodeId, (): ()) {}

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        self.directory.borrow_mut().change(ctx.rng());
        ctx.set_timer(Duration::from_millis(CHANGE_MS), TimerId(1));
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, write: Write) {
        let me = ctx.id();
        let answer = self
            .directory
            .borrow_mut()
            .admit(me, write.key, write.version, self.variant);
        ctx.reply(id, answer);
    }
}

/// Clients that write random keys, each routing by its own table: version 1, and what the
/// redirects it got taught it, partition by partition.
#[derive(Debug)]
pub struct StaleClients {
    first: PartitionTable,
    learned: BTreeMap<(ClientId, PartitionId), (TableVersion, NodeId)>,
    /// Redirects the clients followed.
    pub redirects: u64,
}

impl StaleClients {
    fn route(&self, client: ClientId, key: u64) -> (NodeId, TableVersion) {
        let partition = self.first.partition_of(&key_bytes(key));
        match self.learned.get(&(client, partition)) {
            Some(&(version, owner)) => (owner, version),
            None => (self.first.owner(partition), self.first.version()),
        }
    }
}

impl Workload<PartitionNode> for StaleClients {
    type Input = Write;
    type Output = ();

    fn invoke(
        &mut self,
        client: ClientId,
        _: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Write, Write>> {
        let key = rng.below(KEYS);
        let (node, version) = self.route(client, key);
        let write = Write { key, version };
        Some(Invocation {
            node,
            request: write.clone(),
            input: write,
        })
    }

    fn complete(&mut self, client: ClientId, _: &Write, answer: &Answer) -> Completion<()> {
        match answer {
            Answer::Written => Completion::Ok(()),
            Answer::Redirect(r) => {
                self.redirects += 1;
                let known = self
                    .learned
                    .entry((client, r.partition))
                    .or_insert((TableVersion(0), r.owner));
                if known.0 <= r.version {
                    *known = (r.version, r.owner);
                }
                Completion::Fail
            }
        }
    }
}

/// Runs `seed` of the `partitions` system with `variant`'s nodes.
#[must_use]
pub fn simulate(seed: u64, config: SimConfig, variant: Variant) -> RunSummary {
    let directory = Rc::new(RefCell::new(Directory::new(config.nodes())));
    let first = directory.borrow().current().clone();
    let (for_nodes, for_check) = (Rc::clone(&directory), Rc::clone(&directory));
    let clients = StaleClients {
        first,
        learned: BTreeMap::new(),
        redirects: 0,
    };
    let report = Simulation::new(
        config,
        seed,
        move |_| PartitionNode {
            directory: Rc::clone(&for_nodes),
            variant,
        },
        clients,
    )
    .invariant(move |_| for_check.borrow_mut().check())
    .progress(progress_after_healing)
    .run();
    let d = directory.borrow();
    let figures = vec![
        format!(
            "{} writes taken, each by its key's owner; {} redirected to the current owner",
            d.written, d.redirects
        ),
        format!(
            "{} table versions ({} partitions, {} replicas each)",
            d.versions.len(),
            PARTITIONS,
            REPLICATION
        ),
    ];
    RunSummary::of_figures(
        report,
        figures,
        "every write taken by its key's owner in the current table, stale clients redirected, \
         writes succeeded after healing",
    )
}

/// Runs one seed of `synod sim partitions`. The run is not drawn: `record` is ignored.
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let _ = record;
    simulate(seed, config, Variant::Correct)
}
