//! Raft's safety properties, checked over a whole cluster after every event.
//!
//! A test harness or a simulator that drives several [`Node`]s can hand them to a
//! [`SafetyChecker`] after each event it processes (a message delivered, a tick, a sync
//! acknowledged, a crash, a restart). The checker looks at what every node shows through
//! its public accessors (term, role, commit and applied index, snapshot, log, and how often
//! the log was cut) and returns a [`Violation`] naming the broken property, the nodes, the
//! index and the term, instead of panicking. It does no I/O and draws no randomness, so a
//! deterministic simulation replays exactly the same with or without it.
//!
//! # The properties
//!
//! Figure 3 of the Raft paper (Ongaro and Ousterhout, *In Search of an Understandable
//! Consensus Algorithm*, 2014) lists five properties that Raft guarantees at all times. The
//! checker checks each, plus a sixth about the node's own progress markers:
//!
//! - **Election Safety**: at most one leader can be elected in a given term. The checker
//!   remembers which node it saw lead each term, for the whole run, and reports a second
//!   one ([`Violation::TwoLeaders`]). This is what a vote that was granted but not made
//!   durable before a crash breaks: the restarted node votes again in the same term.
//! - **Leader Append-Only**: a leader never overwrites or deletes entries in its log; it
//!   only appends. While a node stays leader of one term its log must not be cut and its
//!   last index must not go down ([`Violation::LeaderCutItsLog`]).
//! - **Log Matching**: if two logs contain an entry with the same index and term, the logs
//!   are identical in all entries up through that index. Each entry that appears in a log
//!   (appended, or rewritten after a cut, or found at a restart) is compared with every other
//!   node that holds the same index and term: same payload, and the same term just before
//!   it. By induction over the indexes, that makes the whole prefixes equal. The check
//!   covers what the nodes hold at the time: an entry that has left every log (truncated,
//!   compacted, or on a crashed node) is not compared with one that arrives later
//!   ([`Violation::LogsDiverge`]).
//! - **Leader Completeness**: if an entry is committed in a given term, it is present in the
//!   logs of the leaders of all higher terms. An entry is *committed in* the term of the
//!   first node seen with a commit index covering it: the leader that committed it. When a
//!   node is first seen leading a term, it must hold every entry committed in a lower term
//!   (above its own snapshot); and when an entry becomes committed, every node already
//!   leading a higher term must hold it ([`Violation::LeaderLacksCommitted`]). Terms are
//!   not ordered in real time: the leader of an old term can win late, thanks to delayed
//!   votes, and rightly lack entries a later term committed. This is what committing an
//!   entry of an earlier term by counting its replicas breaks (the paper's Figure 8).
//! - **State Machine Safety**: if a node has applied an entry at an index, no other node
//!   ever applies a different entry at that index. The checker keeps, for each committed
//!   index, the committed entry's term and a 64-bit digest of its payload. Every node that
//!   later commits that index, applies it, or takes a snapshot ending there must show the
//!   same entry ([`Violation::CommittedEntryDiffers`], which also catches a committed entry
//!   that changes in a log), and no node may apply past its commit index
//!   ([`Violation::AppliedAboveCommit`]).
//! - **Monotonic indexes**: while a node is up, its term, commit index and applied index
//!   never go back, and its applied index never falls below its snapshot (what its state
//!   machine restored). A restart is allowed to go back, within what was durable: Raft does
//!   not store the commit index, so a restarted node starts again from its snapshot, for
//!   commit and applied alike ([`Violation::TermWentBack`], [`Violation::CommitWentBack`],
//!   [`Violation::AppliedWentBack`], [`Violation::AppliedBelowSnapshot`]).
//!
//! # Driving it
//!
//! After every event, pass [`SafetyChecker::check`] every node that is up, as an iterator
//! the checker can clone (it walks the nodes more than once, and so allocates nothing): a
//! slice's or a map's iterator, or a range of ids mapped to the nodes that are up. A node
//! that is missing from a call is taken as crashed: when it is next passed, it is a new
//! incarnation whose volatile state (role, commit and applied index, a term not yet
//! durable) started again, and its whole log is read once. A driver that crashes and
//! restarts a node between two checks says so with [`SafetyChecker::crashed`]. The
//! crate's stepped test cluster (`tests/it/stepped.rs`) and the Consistent Core's
//! simulation (`synod-examples`' `simulate::raft_kv`) are two drivers to read.
//!
//! The checker reads only what changed. A node that shows the same term, role, commit and
//! applied index, last index, snapshot and count of cuts as at the last check (most nodes
//! after most events) costs a comparison. Otherwise it reads the entries past the last
//! index it saw (or, when [`Node::truncations`] moved, past [`Node::truncated_after`]), and
//! those between the commit and applied indexes it saw and the current ones. A node's
//! whole log is read only when it starts and when its log was cut more than once between
//! two checks; when a node is first seen leading a term, the checker reads the term of each
//! committed index it remembers in that node's log. Payloads are compared as they are,
//! and remembered only as 64-bit FNV-1a digests.
//!
//! After a violation the checker keeps going, but what it says next is best effort: a
//! driver normally stops at the first.
//!
//! # Memory
//!
//! The checker keeps, per node, a fixed-size summary; per term, the leader it saw (16 bytes
//! and a map node: a run has as many terms as elections); and per committed index it saw,
//! 40 bytes and a map node (the index, the entry's term, its payload's digest and the term
//! it was committed in). Only indexes a node showed committed are kept, never the indexes
//! between them, so a commit index or snapshot far past the rest (a forged message)
//! costs one entry. Committed
//! indexes are forgotten once every node the checker knows, up or down, has compacted them
//! into its snapshot: no node can commit, apply or lead without them again. So the
//! committed indexes held span from the lowest snapshot in the cluster to the highest commit
//! index, which is the part of the log the most lagging node still keeps: bounded when the
//! nodes compact, as large as the logs themselves when they never do.
//! [`SafetyChecker::retained_indexes`] reports it. Forgetting an index once every node has
//! *applied* it would not do: a restarted node applies again everything above its
//! snapshot, and that must still be checked.
//!
//! # What it does not check
//!
//! - Anything a client sees: that is linearizability, which `synod-sim` checks on the
//!   history of a run.
//! - Liveness: a cluster that elects nobody passes.
//! - Votes and messages: the checker sees their consequences (two leaders in a term, a
//!   leader missing a committed entry), not the votes themselves.
//! - The log's prefix beyond what the nodes hold at the time (see Log Matching), and the
//!   commit term of an entry more exactly than "the term of the first node seen to commit
//!   it", which is never lower than the true one, so it can miss a late leader but never
//!   accuse one wrongly.
//!
//! # Example
//!
//! Two nodes that each think they are alone (a broken membership) both win term 1; the
//! checker names the property and the nodes:
//!
//! ```
//! use synod_consensus::invariants::{Invariant, SafetyChecker, Violation};
//! use synod_consensus::{Config, MemLogStore, Membership, Node, NodeId, Role, Term};
//!
//! let mut checker = SafetyChecker::new();
//! let mut nodes = Vec::new();
//! for id in [1, 2].map(NodeId::new) {
//!     let config = Config::builder(id).election_timeout_ticks(10..11).build()?;
//!     let store = MemLogStore::new(Membership::new([id], [])?);
//!     let mut node = Node::new(config, store);
//!     while node.role() != Role::Leader {
//!         node.tick();
//!         while node.has_ready() {
//!             if let Some((token, _write)) = node.ready().persist {
//!                 // A real driver would apply the write to its store and sync it here.
//!                 node.persisted(token);
//!             }
//!         }
//!     }
//!     nodes.push(node);
//! }
//! // One at a time, each is fine.
//! checker.check([&nodes[0]])?;
//! // Together, they break Election Safety.
//! let violation = checker.check(&nodes).unwrap_err();
//! assert_eq!(violation.invariant(), Invariant::ElectionSafety);
//! assert_eq!(
//!     violation,
//!     Violation::TwoLeaders { term: Term::new(1), first: NodeId::new(1), second: NodeId::new(2) }
//! );
//! assert_eq!(violation.to_string(), "election safety: n1 and n2 both led g1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::raft::{Node, Role};
use crate::types::{Entry, LogIndex, NodeId, Payload, Term};

/// The property a [`Violation`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// At most one leader per term (Figure 3: Election Safety).
    ElectionSafety,
    /// A leader never overwrites or deletes its own entries (Figure 3: Leader
    /// Append-Only).
    LeaderAppendOnly,
    /// Same index and term, same entry and same prefix (Figure 3: Log Matching).
    LogMatching,
    /// A committed entry is in the log of every leader of a higher term (Figure 3: Leader
    /// Completeness).
    LeaderCompleteness,
    /// No two nodes commit or apply different entries at one index (Figure 3: State
    /// Machine Safety).
    StateMachineSafety,
    /// A node's term, commit index and applied index never go back while it is up.
    MonotonicIndexes,
}

impl Invariant {
    /// The property's name, in lower case: "election safety", "log matching", ...
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Invariant::ElectionSafety => "election safety",
            Invariant::LeaderAppendOnly => "leader append-only",
            Invariant::LogMatching => "log matching",
            Invariant::LeaderCompleteness => "leader completeness",
            Invariant::StateMachineSafety => "state-machine safety",
            Invariant::MonotonicIndexes => "monotonic indexes",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a node showed an entry that differs from the one committed at its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// In its log, at or below its commit index.
    Committed,
    /// Handed out for its state machine to apply.
    Applied,
    /// As the last entry of its snapshot.
    Snapshot,
}

/// How two entries with the same index and term differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Divergence {
    /// Their payloads differ.
    Payload,
    /// The entries before them have different terms (the prefixes differ).
    PreviousTerm {
        /// The term before the entry in the first node's log.
        first: Term,
        /// The term before the entry in the second node's log.
        second: Term,
    },
}

/// A broken safety property: which one ([`Violation::invariant`]), on which nodes, at
/// which index and term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// Two nodes led the same term (Election Safety).
    TwoLeaders {
        /// The term.
        term: Term,
        /// The node seen leading it first.
        first: NodeId,
        /// The other node leading it.
        second: NodeId,
    },
    /// A leader cut entries off its own log during its term (Leader Append-Only).
    LeaderCutItsLog {
        /// The leader.
        node: NodeId,
        /// Its term.
        term: Term,
        /// Its last index at the previous check.
        last_before: LogIndex,
        /// Its last index now.
        last_now: LogIndex,
    },
    /// Two logs hold entries with the same index and term that differ, or whose prefixes
    /// differ (Log Matching).
    LogsDiverge {
        /// The index.
        index: LogIndex,
        /// The term both entries carry.
        term: Term,
        /// The node whose new entry was being checked.
        first: NodeId,
        /// The node that already held the other.
        second: NodeId,
        /// How they differ.
        how: Divergence,
    },
    /// A leader lacks an entry committed in a lower term (Leader Completeness).
    LeaderLacksCommitted {
        /// The leader.
        leader: NodeId,
        /// Its term.
        term: Term,
        /// The committed entry's index.
        index: LogIndex,
        /// The committed entry's term.
        entry_term: Term,
        /// The term it was committed in.
        committed_in: Term,
        /// The term of what the leader holds at that index, if anything.
        found: Option<Term>,
    },
    /// A node committed, applied or snapshotted a different entry at an index than the
    /// one committed there (State Machine Safety).
    CommittedEntryDiffers {
        /// The node.
        node: NodeId,
        /// The index.
        index: LogIndex,
        /// Where the node showed its entry.
        stage: Stage,
        /// The term of the entry committed at `index`.
        committed_term: Term,
        /// The term of the node's entry (equal to `committed_term` when only the payloads
        /// differ).
        found_term: Term,
    },
    /// A node applied past its commit index (State Machine Safety).
    AppliedAboveCommit {
        /// The node.
        node: NodeId,
        /// Its applied index.
        applied: LogIndex,
        /// Its commit index.
        commit: LogIndex,
    },
    /// A node's term went back while it was up (Monotonic indexes).
    TermWentBack {
        /// The node.
        node: NodeId,
        /// The term at the previous check.
        from: Term,
        /// The term now.
        to: Term,
    },
    /// A node's commit index went back while it was up (Monotonic indexes).
    CommitWentBack {
        /// The node.
        node: NodeId,
        /// The commit index at the previous check.
        from: LogIndex,
        /// The commit index now.
        to: LogIndex,
    },
    /// A node's applied index went back while it was up (Monotonic indexes).
    AppliedWentBack {
        /// The node.
        node: NodeId,
        /// The applied index at the previous check.
        from: LogIndex,
        /// The applied index now.
        to: LogIndex,
    },
    /// A node's applied index is below its snapshot: its state machine holds more than it
    /// says it applied (Monotonic indexes).
    AppliedBelowSnapshot {
        /// The node.
        node: NodeId,
        /// Its applied index.
        applied: LogIndex,
        /// Its snapshot's index.
        snapshot: LogIndex,
    },
}

impl Violation {
    /// The property this violation breaks.
    #[must_use]
    pub fn invariant(&self) -> Invariant {
        match self {
            Violation::TwoLeaders { .. } => Invariant::ElectionSafety,
            Violation::LeaderCutItsLog { .. } => Invariant::LeaderAppendOnly,
            Violation::LogsDiverge { .. } => Invariant::LogMatching,
            Violation::LeaderLacksCommitted { .. } => Invariant::LeaderCompleteness,
            Violation::CommittedEntryDiffers { .. } | Violation::AppliedAboveCommit { .. } => {
                Invariant::StateMachineSafety
            }
            Violation::TermWentBack { .. }
            | Violation::CommitWentBack { .. }
            | Violation::AppliedWentBack { .. }
            | Violation::AppliedBelowSnapshot { .. } => Invariant::MonotonicIndexes,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.invariant())?;
        match self {
            Violation::TwoLeaders {
                term,
                first,
                second,
            } => write!(f, "{first} and {second} both led {term}"),
            Violation::LeaderCutItsLog {
                node,
                term,
                last_before,
                last_now,
            } => write!(
                f,
                "{node}, leading {term}, cut its log (last index {last_before}, now {last_now})"
            ),
            Violation::LogsDiverge {
                index,
                term,
                first,
                second,
                how: Divergence::Payload,
            } => write!(
                f,
                "{first} and {second} hold different entries at {index} in {term}"
            ),
            Violation::LogsDiverge {
                index,
                term,
                first: a,
                second: b,
                how: Divergence::PreviousTerm { first, second },
            } => write!(
                f,
                "{a} and {b} agree on {index} in {term} but not before it ({first} on {a}, {second} on {b})"
            ),
            Violation::LeaderLacksCommitted {
                leader,
                term,
                index,
                entry_term,
                committed_in,
                found,
            } => {
                write!(
                    f,
                    "{leader} leads {term} without entry {index} of {entry_term} committed in {committed_in} ("
                )?;
                match found {
                    Some(t) => write!(f, "it holds one of {t} there)"),
                    None => write!(f, "it holds nothing there)"),
                }
            }
            Violation::CommittedEntryDiffers {
                node,
                index,
                stage,
                committed_term,
                found_term,
            } => {
                let what = match stage {
                    Stage::Committed => "committed",
                    Stage::Applied => "applied",
                    Stage::Snapshot => "took a snapshot ending with",
                };
                write!(f, "{node} {what} an entry of {found_term} at {index} ")?;
                if found_term == committed_term {
                    write!(f, "whose payload differs from the one committed there")
                } else {
                    write!(f, "where one of {committed_term} was committed")
                }
            }
            Violation::AppliedAboveCommit {
                node,
                applied,
                commit,
            } => write!(
                f,
                "{node} applied up to {applied} above its commit index {commit}"
            ),
            Violation::TermWentBack { node, from, to } => {
                write!(f, "{node}'s term went back from {from} to {to}")
            }
            Violation::CommitWentBack { node, from, to } => {
                write!(f, "{node}'s commit index went back from {from} to {to}")
            }
            Violation::AppliedWentBack { node, from, to } => {
                write!(f, "{node}'s applied index went back from {from} to {to}")
            }
            Violation::AppliedBelowSnapshot {
                node,
                applied,
                snapshot,
            } => write!(
                f,
                "{node}'s applied index {applied} is below its snapshot at {snapshot}"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// Checks Raft's safety properties over a cluster after every event. See the [module
/// documentation](self) for what each property means, how to drive the checker and what it
/// remembers.
#[derive(Debug, Default)]
pub struct SafetyChecker {
    /// The node seen leading each term (Election Safety, for the whole run).
    leaders: BTreeMap<Term, NodeId>,
    /// Every node seen, and what it showed at its last check (a few nodes: a vector).
    nodes: Vec<Seen>,
    /// The committed entries not yet compacted everywhere.
    committed: CommittedLog,
    /// How many times [`SafetyChecker::check`] ran.
    checks: u64,
    /// Reused buffers for entries read from logs, so that a check allocates nothing once
    /// warm.
    entries: Vec<Entry>,
    other: Vec<Entry>,
}

impl SafetyChecker {
    /// A checker that has seen nothing yet.
    #[must_use]
    pub fn new() -> SafetyChecker {
        SafetyChecker::default()
    }

    /// Checks every property over `nodes`, the nodes that are up now, after an event; a
    /// known node missing from `nodes` is taken as crashed. Returns the first violation
    /// found.
    ///
    /// # Errors
    ///
    /// The [`Violation`] found, if any.
    pub fn check<'n, I>(&mut self, nodes: I) -> Result<(), Violation>
    where
        I: IntoIterator<Item = &'n Node>,
        I::IntoIter: Clone,
    {
        self.check_views(nodes.into_iter())
    }

    /// Tells the checker that node `id` crashed: the next time it is passed to
    /// [`SafetyChecker::check`], it is a new incarnation whose volatile state started
    /// again. Needed only when a node crashes and restarts between two checks; a node
    /// missing from a check is taken as crashed anyway.
    pub fn crashed(&mut self, id: NodeId) {
        if let Some(seen) = self.nodes.iter_mut().find(|seen| seen.id == id) {
            seen.up = false;
        }
    }

    /// How many checks ran.
    #[must_use]
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// How many committed indexes the checker remembers (see the module documentation's
    /// "Memory"): from the lowest snapshot among the nodes to the highest commit index.
    #[must_use]
    pub fn retained_indexes(&self) -> usize {
        self.committed.len()
    }

    /// How many terms the checker has seen a leader for.
    #[must_use]
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }

    fn check_views<'n, V, I>(&mut self, nodes: I) -> Result<(), Violation>
    where
        V: NodeView + 'n,
        I: Iterator<Item = &'n V> + Clone,
    {
        self.checks += 1;
        let mut first = None;
        let mut changed = false;
        for node in nodes.clone() {
            let id = node.id();
            let now = State::of(node);
            let at = self.nodes.iter().position(|seen| seen.id == id);
            let before = match at {
                // Nothing changed on this node since the last check (most nodes after most
                // events): nothing new to check on its side.
                Some(at) if self.nodes[at].up && self.nodes[at].state == now => {
                    self.nodes[at].checked_at = self.checks;
                    continue;
                }
                Some(at) if self.nodes[at].up => Some(self.nodes[at].state),
                _ => None,
            };
            changed = true;
            let result = self.observe(node, &now, before.as_ref(), nodes.clone());
            let seen = Seen {
                id,
                up: true,
                checked_at: self.checks,
                state: now,
            };
            match at {
                Some(at) => self.nodes[at] = seen,
                None => self.nodes.push(seen),
            }
            if let Err(v) = result {
                first.get_or_insert(v);
            }
        }
        for seen in &mut self.nodes {
            if seen.up && seen.checked_at != self.checks {
                seen.up = false;
                changed = true;
            }
        }
        if changed && let Some(floor) = self.nodes.iter().map(|seen| seen.state.snapshot.0).min() {
            self.committed.forget_below(floor);
        }
        first.map_or(Ok(()), Err)
    }

    /// Checks one node against what it showed before (`None`: it has just started, or is
    /// seen for the first time) and against the others.
    fn observe<'n, V, I>(
        &mut self,
        node: &V,
        now: &State,
        before: Option<&State>,
        nodes: I,
    ) -> Result<(), Violation>
    where
        V: NodeView + 'n,
        I: Iterator<Item = &'n V> + Clone,
    {
        let id = node.id();
        let State {
            term,
            leading: _,
            commit,
            applied,
            last,
            snapshot: (snapshot, snapshot_term),
            truncations,
        } = *now;
        let first_index = snapshot.next();
        // A node that starts shows its snapshot as its commit and applied index; what is
        // above it is new.
        let start = State {
            term: Term::ZERO,
            leading: false,
            commit: snapshot,
            applied: snapshot,
            last: snapshot,
            snapshot: (LogIndex::ZERO, Term::ZERO),
            truncations,
        };
        let fresh = before.is_none();
        let before = before.copied().unwrap_or(start);

        // Monotonic indexes, within one incarnation.
        if !fresh {
            if term < before.term {
                return Err(Violation::TermWentBack {
                    node: id,
                    from: before.term,
                    to: term,
                });
            }
            if commit < before.commit {
                return Err(Violation::CommitWentBack {
                    node: id,
                    from: before.commit,
                    to: commit,
                });
            }
            if applied < before.applied {
                return Err(Violation::AppliedWentBack {
                    node: id,
                    from: before.applied,
                    to: applied,
                });
            }
        }
        if applied < snapshot {
            return Err(Violation::AppliedBelowSnapshot {
                node: id,
                applied,
                snapshot,
            });
        }
        if applied > commit {
            return Err(Violation::AppliedAboveCommit {
                node: id,
                applied,
                commit,
            });
        }

        // Election Safety and Leader Append-Only.
        let mut new_leader = false;
        if now.leading {
            match self.leaders.entry(term) {
                MapEntry::Vacant(v) => {
                    v.insert(id);
                    new_leader = true;
                }
                MapEntry::Occupied(o) if *o.get() != id => {
                    return Err(Violation::TwoLeaders {
                        term,
                        first: *o.get(),
                        second: id,
                    });
                }
                MapEntry::Occupied(_) => {}
            }
            if before.leading
                && before.term == term
                && (truncations != before.truncations || last < before.last)
            {
                return Err(Violation::LeaderCutItsLog {
                    node: id,
                    term,
                    last_before: before.last,
                    last_now: last,
                });
            }
        }

        // A new snapshot must end with the committed entry. One that covers indexes
        // committed since the last check (a leader that commits, applies and compacts in
        // one event) records its last entry, whose payload it no longer holds.
        if (snapshot, snapshot_term) != before.snapshot && snapshot > LogIndex::ZERO {
            if snapshot > before.commit && snapshot <= commit {
                self.committed.record_or_compare(
                    id,
                    snapshot,
                    snapshot_term,
                    None,
                    term,
                    Stage::Snapshot,
                )?;
            } else {
                self.committed
                    .compare(id, snapshot, snapshot_term, None, Stage::Snapshot)?;
            }
        }

        // Log Matching for the entries that are new in this log since the last check.
        let from = if fresh || truncations == before.truncations {
            before.last.next()
        } else if truncations == before.truncations + 1
            && let Some(after) = node.truncations().1
        {
            after.min(before.last).next()
        } else {
            first_index
        };
        let from = from.max(first_index);
        if from <= last {
            let mut entries = std::mem::take(&mut self.entries);
            entries.clear();
            node.entries(from, last, &mut entries);
            let result = entries.iter().try_for_each(|entry| {
                self.match_logs(node, entry, nodes.clone())?;
                if entry.index <= before.commit {
                    // An entry this node had already committed was rewritten.
                    self.committed.compare(
                        id,
                        entry.index,
                        entry.term,
                        Some(digest(&entry.payload)),
                        Stage::Committed,
                    )?;
                }
                Ok(())
            });
            self.entries = entries;
            result?;
        }

        // State Machine Safety for what became committed or applied since the last check.
        let commit_from = before.commit.max(snapshot).next();
        let apply_from = before.applied.max(snapshot).next();
        let lo = commit_from.min(apply_from);
        let hi = commit.max(applied).min(last);
        if lo <= hi {
            let leads_higher = commit_from <= commit
                && nodes
                    .clone()
                    .any(|other| other.is_leader() && other.term() > term);
            let mut entries = std::mem::take(&mut self.entries);
            entries.clear();
            node.entries(lo, hi, &mut entries);
            let result = entries.iter().try_for_each(|entry| {
                let index = entry.index;
                let payload = digest(&entry.payload);
                if index >= commit_from && index <= commit {
                    let recorded = self.committed.record_or_compare(
                        id,
                        index,
                        entry.term,
                        Some(payload),
                        term,
                        Stage::Committed,
                    )?;
                    if recorded && leads_higher {
                        complete_in_higher_leaders(index, entry.term, term, nodes.clone())?;
                    }
                } else if index >= apply_from && index <= applied {
                    self.committed
                        .compare(id, index, entry.term, Some(payload), Stage::Applied)?;
                }
                Ok(())
            });
            self.entries = entries;
            result?;
        }

        // Leader Completeness for a node seen leading its term for the first time.
        if new_leader {
            self.committed.complete_in(node, id, term)?;
        }
        Ok(())
    }

    /// Compares `entry`, new in `node`'s log, with every other node holding an entry of the
    /// same index and term.
    fn match_logs<'n, V, I>(&mut self, node: &V, entry: &Entry, nodes: I) -> Result<(), Violation>
    where
        V: NodeView + 'n,
        I: Iterator<Item = &'n V>,
    {
        let id = node.id();
        for other in nodes {
            if other.id() == id || other.term_at(entry.index) != Some(entry.term) {
                continue;
            }
            self.other.clear();
            other.entries(entry.index, entry.index, &mut self.other);
            // Nothing comes back for the last entry of the other's snapshot: its term
            // matches, and its payload is gone.
            if self
                .other
                .first()
                .is_some_and(|theirs| theirs.payload != entry.payload)
            {
                return Err(Violation::LogsDiverge {
                    index: entry.index,
                    term: entry.term,
                    first: id,
                    second: other.id(),
                    how: Divergence::Payload,
                });
            }
            let before = entry.index.prev();
            if entry.index > LogIndex(1)
                && let (Some(mine), Some(theirs)) = (node.term_at(before), other.term_at(before))
                && mine != theirs
            {
                return Err(Violation::LogsDiverge {
                    index: entry.index,
                    term: entry.term,
                    first: id,
                    second: other.id(),
                    how: Divergence::PreviousTerm {
                        first: mine,
                        second: theirs,
                    },
                });
            }
        }
        Ok(())
    }
}

/// Leader Completeness for an entry just committed in `committed_in`: every node leading
/// a higher term must hold it.
fn complete_in_higher_leaders<'n, V, I>(
    index: LogIndex,
    entry_term: Term,
    committed_in: Term,
    nodes: I,
) -> Result<(), Violation>
where
    V: NodeView + 'n,
    I: Iterator<Item = &'n V>,
{
    for leader in nodes {
        if !leader.is_leader() || leader.term() <= committed_in || index < leader.snapshot().0 {
            continue;
        }
        let found = leader.term_at(index);
        if found != Some(entry_term) {
            return Err(Violation::LeaderLacksCommitted {
                leader: leader.id(),
                term: leader.term(),
                index,
                entry_term,
                committed_in,
                found,
            });
        }
    }
    Ok(())
}

/// A node as the checker last saw it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    id: NodeId,
    /// Up at its last check, and not reported crashed since.
    up: bool,
    /// The check that saw it last.
    checked_at: u64,
    /// What it showed then. The snapshot is kept while the node is down, for forgetting
    /// what every node has compacted.
    state: State,
}

/// What the checker reads of a node at every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    term: Term,
    /// Whether it leads (`term`).
    leading: bool,
    commit: LogIndex,
    applied: LogIndex,
    last: LogIndex,
    /// The snapshot's index and term.
    snapshot: (LogIndex, Term),
    /// [`Node::truncations`].
    truncations: u64,
}

impl State {
    fn of<V: NodeView>(node: &V) -> State {
        State {
            term: node.term(),
            leading: node.is_leader(),
            commit: node.commit(),
            applied: node.applied(),
            last: node.last_index(),
            snapshot: node.snapshot(),
            truncations: node.truncations().0,
        }
    }
}

/// A committed entry, as remembered.
#[derive(Clone, Copy, Debug)]
struct Committed {
    term: Term,
    /// The payload's digest; `None` while the entry was seen only as a snapshot's last.
    digest: Option<u64>,
    /// The term of the first node seen with a commit index covering it.
    committed_in: Term,
}

/// The committed entries seen, by index, none below `base` (forgotten: compacted
/// everywhere). A map, not a vector from `base`: what it holds is what the nodes showed,
/// so a snapshot or a commit index far past the others (a forged message, a corrupt store)
/// costs one entry, not one per index in between.
#[derive(Debug)]
struct CommittedLog {
    base: LogIndex,
    entries: BTreeMap<LogIndex, Committed>,
}

impl Default for CommittedLog {
    fn default() -> Self {
        CommittedLog {
            base: LogIndex(1),
            entries: BTreeMap::new(),
        }
    }
}

impl CommittedLog {
    fn get(&self, index: LogIndex) -> Option<Committed> {
        self.entries.get(&index).copied()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Compares what `node` shows at `index` (a term, and the payload's digest if known)
    /// with the entry committed there, if the checker remembers one.
    fn compare(
        &self,
        node: NodeId,
        index: LogIndex,
        term: Term,
        digest: Option<u64>,
        stage: Stage,
    ) -> Result<(), Violation> {
        match self.get(index) {
            Some(c)
                if c.term != term
                    || digest.is_some_and(|d| c.digest.is_some_and(|known| known != d)) =>
            {
                Err(Violation::CommittedEntryDiffers {
                    node,
                    index,
                    stage,
                    committed_term: c.term,
                    found_term: term,
                })
            }
            _ => Ok(()),
        }
    }

    /// Records the entry `node` shows committed at `index` (in `stage`), or compares it
    /// with the one recorded. Returns whether it was recorded just now.
    fn record_or_compare(
        &mut self,
        node: NodeId,
        index: LogIndex,
        term: Term,
        digest: Option<u64>,
        committed_in: Term,
        stage: Stage,
    ) -> Result<bool, Violation> {
        if self.get(index).is_some() {
            self.compare(node, index, term, digest, stage)?;
            if let Some(d) = digest
                && let Some(c) = self.entries.get_mut(&index)
            {
                c.digest.get_or_insert(d);
            }
            return Ok(false);
        }
        if index < self.base {
            return Ok(false); // forgotten: compacted everywhere
        }
        self.entries.insert(
            index,
            Committed {
                term,
                digest,
                committed_in,
            },
        );
        Ok(true)
    }

    /// Forgets every index below `floor`.
    fn forget_below(&mut self, floor: LogIndex) {
        if floor <= self.base {
            return;
        }
        self.base = floor;
        if self
            .entries
            .first_key_value()
            .is_some_and(|(first, _)| *first < floor)
        {
            self.entries = self.entries.split_off(&floor);
        }
    }

    /// Leader Completeness for `leader`, newly seen leading `term`: it holds every entry
    /// committed in a lower term, from its snapshot on.
    fn complete_in<V: NodeView>(
        &self,
        leader: &V,
        id: NodeId,
        term: Term,
    ) -> Result<(), Violation> {
        let from = leader.snapshot().0.max(self.base);
        for (&index, c) in self.entries.range(from..) {
            if c.committed_in >= term {
                continue;
            }
            let found = leader.term_at(index);
            if found != Some(c.term) {
                return Err(Violation::LeaderLacksCommitted {
                    leader: id,
                    term,
                    index,
                    entry_term: c.term,
                    committed_in: c.committed_in,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// A 64-bit FNV-1a digest of an entry's payload: what the checker remembers of a committed
/// entry instead of its bytes.
fn digest(payload: &Payload) -> u64 {
    let mut hasher = Fnv64(0xcbf2_9ce4_8422_2325);
    payload.hash(&mut hasher);
    hasher.finish()
}

struct Fnv64(u64);

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What the checker reads of a node: implemented by [`Node`], and by a fake in the unit
/// tests (which can show states a correct node never reaches).
trait NodeView {
    fn id(&self) -> NodeId;
    fn term(&self) -> Term;
    fn is_leader(&self) -> bool;
    fn commit(&self) -> LogIndex;
    fn applied(&self) -> LogIndex;
    /// The snapshot's index and term.
    fn snapshot(&self) -> (LogIndex, Term);
    fn last_index(&self) -> LogIndex;
    /// The term at `index`: the snapshot's at its index, `None` outside the log.
    fn term_at(&self, index: LogIndex) -> Option<Term>;
    /// Appends the entries `lo..=hi` held in the log to `out`.
    fn entries(&self, lo: LogIndex, hi: LogIndex, out: &mut Vec<Entry>);
    /// [`Node::truncations`] and [`Node::truncated_after`].
    fn truncations(&self) -> (u64, Option<LogIndex>);
}

impl NodeView for Node {
    fn id(&self) -> NodeId {
        Node::id(self)
    }
    fn term(&self) -> Term {
        Node::term(self)
    }
    fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }
    fn commit(&self) -> LogIndex {
        self.commit_index()
    }
    fn applied(&self) -> LogIndex {
        self.applied_index()
    }
    fn snapshot(&self) -> (LogIndex, Term) {
        let meta = &self.log().snapshot().meta;
        (meta.index, meta.term)
    }
    fn last_index(&self) -> LogIndex {
        Node::last_index(self)
    }
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log().term(index)
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, out: &mut Vec<Entry>) {
        self.log().entries(lo, hi, u64::MAX, out);
    }
    fn truncations(&self) -> (u64, Option<LogIndex>) {
        (Node::truncations(self), self.truncated_after())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A node's observable state, set by hand: states a correct node never shows.
    #[derive(Clone, Debug)]
    struct Fake {
        id: NodeId,
        term: Term,
        leader: bool,
        commit: LogIndex,
        applied: LogIndex,
        snapshot: (LogIndex, Term),
        /// The entries above the snapshot.
        log: Vec<Entry>,
        truncations: (u64, Option<LogIndex>),
    }

    fn g(t: u64) -> Term {
        Term::new(t)
    }

    fn i(i: u64) -> LogIndex {
        LogIndex(i)
    }

    /// Node `id` in term 1 holding `log`, entries of (term, payload) from index 1.
    fn fake(id: u64, log: &[(u64, &str)]) -> Fake {
        let mut node = Fake {
            id: NodeId::new(id),
            term: g(1),
            leader: false,
            commit: i(0),
            applied: i(0),
            snapshot: (i(0), g(0)),
            log: Vec::new(),
            truncations: (0, None),
        };
        for (term, data) in log {
            node.push(*term, data);
        }
        node.term = node.log.iter().map(|e| e.term).max().unwrap_or(g(1));
        node
    }

    impl Fake {
        fn push(&mut self, term: u64, data: &str) {
            let index = self.last_index().next();
            self.log.push(Entry {
                term: g(term),
                index,
                payload: Payload::Command(Bytes::copy_from_slice(data.as_bytes())),
            });
        }

        fn committed(mut self, index: u64) -> Fake {
            self.commit = i(index);
            self.applied = i(index);
            self
        }

        fn leading(mut self, term: u64) -> Fake {
            self.leader = true;
            self.term = g(term);
            self
        }

        /// Cuts the log after `index`, as a conflicting suffix is.
        fn cut_after(&mut self, index: u64) {
            self.log.retain(|e| e.index.0 <= index);
            self.truncations = (self.truncations.0 + 1, Some(i(index)));
        }

        /// Compacts up to `index` (applied).
        fn compact(&mut self, index: u64) {
            let term = self.term_at(i(index)).expect("held");
            self.log.retain(|e| e.index.0 > index);
            self.snapshot = (i(index), term);
        }
    }

    impl NodeView for Fake {
        fn id(&self) -> NodeId {
            self.id
        }
        fn term(&self) -> Term {
            self.term
        }
        fn is_leader(&self) -> bool {
            self.leader
        }
        fn commit(&self) -> LogIndex {
            self.commit
        }
        fn applied(&self) -> LogIndex {
            self.applied
        }
        fn snapshot(&self) -> (LogIndex, Term) {
            self.snapshot
        }
        fn last_index(&self) -> LogIndex {
            self.log.last().map_or(self.snapshot.0, |e| e.index)
        }
        fn term_at(&self, index: LogIndex) -> Option<Term> {
            if index == self.snapshot.0 {
                return Some(self.snapshot.1);
            }
            self.log.iter().find(|e| e.index == index).map(|e| e.term)
        }
        fn entries(&self, lo: LogIndex, hi: LogIndex, out: &mut Vec<Entry>) {
            out.extend(
                self.log
                    .iter()
                    .filter(|e| e.index >= lo && e.index <= hi)
                    .cloned(),
            );
        }
        fn truncations(&self) -> (u64, Option<LogIndex>) {
            self.truncations
        }
    }

    fn check(checker: &mut SafetyChecker, nodes: &[&Fake]) -> Result<(), Violation> {
        checker.check_views(nodes.iter().copied())
    }

    #[test]
    fn a_healthy_cluster_passes_and_forgets_what_every_node_compacted() {
        let mut c = SafetyChecker::new();
        let mut nodes: Vec<Fake> = (1..=3).map(|id| fake(id, &[])).collect();
        nodes[0] = nodes[0].clone().leading(1);
        for n in 1..=2_000u64 {
            let data = format!("v{n}");
            for node in &mut nodes {
                node.push(1, &data);
            }
            // Followers learn the commit one entry late; every node compacts every 100.
            for (k, node) in nodes.iter_mut().enumerate() {
                let commit = if k == 0 { n } else { n - 1 };
                node.commit = i(commit);
                node.applied = i(commit);
                if commit % 100 == 0 && commit > 0 {
                    node.compact(commit);
                }
            }
            let refs: Vec<&Fake> = nodes.iter().collect();
            assert_eq!(check(&mut c, &refs), Ok(()), "entry {n}");
        }
        assert!(c.retained_indexes() <= 101, "{}", c.retained_indexes());
        assert_eq!(c.terms_with_leader(), 1);
        assert_eq!(c.checks(), 2_000);
    }

    #[test]
    fn a_node_that_is_down_keeps_what_it_has_not_compacted() {
        let mut c = SafetyChecker::new();
        let mut a = fake(1, &[]).leading(1);
        let b = fake(2, &[]);
        check(&mut c, &[&a, &b]).unwrap();
        // `b` goes down with nothing compacted: everything committed since stays.
        for n in 1..=500u64 {
            a.push(1, &format!("v{n}"));
            a = a.committed(n);
            if n % 100 == 0 {
                a.compact(n);
            }
            check(&mut c, &[&a]).unwrap();
        }
        assert_eq!(c.retained_indexes(), 500);
    }

    #[test]
    fn two_leaders_of_one_term_are_caught_even_at_different_times() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[]).leading(2);
        let b = fake(2, &[]).leading(2);
        check(&mut c, &[&a]).unwrap();
        check(&mut c, &[]).unwrap(); // a crashed
        let v = check(&mut c, &[&b]).unwrap_err();
        assert_eq!(
            v,
            Violation::TwoLeaders {
                term: g(2),
                first: NodeId::new(1),
                second: NodeId::new(2)
            }
        );
        assert_eq!(v.invariant(), Invariant::ElectionSafety);
        // The same node leading its term again after a restart is no violation.
        let mut c = SafetyChecker::new();
        check(&mut c, &[&a]).unwrap();
        c.crashed(a.id);
        check(&mut c, &[&a]).unwrap();
    }

    #[test]
    fn a_leader_cutting_its_own_log_is_caught() {
        let mut c = SafetyChecker::new();
        let mut a = fake(1, &[(1, "x"), (2, "y")]).leading(2);
        check(&mut c, &[&a]).unwrap();
        a.cut_after(1);
        let v = check(&mut c, &[&a]).unwrap_err();
        assert_eq!(v.invariant(), Invariant::LeaderAppendOnly);
        assert!(v.to_string().contains("n1, leading g2, cut its log"), "{v}");
        // A follower may cut its log.
        let mut c = SafetyChecker::new();
        let mut b = fake(2, &[(1, "x"), (1, "y")]);
        check(&mut c, &[&b]).unwrap();
        b.cut_after(1);
        b.push(2, "z");
        b.term = g(2);
        check(&mut c, &[&b]).unwrap();
    }

    #[test]
    fn logs_with_different_entries_at_one_index_and_term_are_caught() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x"), (1, "y")]);
        let b = fake(2, &[(1, "x"), (1, "z")]);
        let v = check(&mut c, &[&a, &b]).unwrap_err();
        assert_eq!(
            v,
            Violation::LogsDiverge {
                index: i(2),
                term: g(1),
                first: NodeId::new(1),
                second: NodeId::new(2),
                how: Divergence::Payload
            }
        );
    }

    #[test]
    fn logs_agreeing_on_an_entry_but_not_before_it_are_caught() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x"), (2, "y")]);
        let b = fake(2, &[(2, "w"), (2, "y")]);
        let v = check(&mut c, &[&a, &b]).unwrap_err();
        assert_eq!(v.invariant(), Invariant::LogMatching);
        assert!(
            matches!(
                v,
                Violation::LogsDiverge {
                    how: Divergence::PreviousTerm { .. },
                    ..
                }
            ),
            "{v}"
        );
    }

    #[test]
    fn a_suffix_rewritten_after_a_cut_is_checked_again() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x"), (1, "y"), (1, "z")]);
        let mut b = fake(2, &[(1, "x"), (1, "y"), (1, "z")]);
        check(&mut c, &[&a, &b]).unwrap();
        // b cuts after 1 and gets a different entry of the same term at 2 (a second
        // leader of term 1 would send it).
        b.cut_after(1);
        b.push(1, "other");
        let v = check(&mut c, &[&a, &b]).unwrap_err();
        assert_eq!(v.invariant(), Invariant::LogMatching);
        // Cut twice between two checks, from below the last cut: the whole log is read.
        let mut c = SafetyChecker::new();
        let mut b = fake(2, &[(1, "x"), (1, "y"), (1, "z")]);
        check(&mut c, &[&a, &b]).unwrap();
        b.cut_after(0);
        b.push(1, "x2");
        b.cut_after(1);
        b.push(1, "y");
        b.push(1, "z");
        let v = check(&mut c, &[&a, &b]).unwrap_err();
        assert_eq!(v.invariant(), Invariant::LogMatching);
    }

    #[test]
    fn a_leader_without_an_entry_committed_in_a_lower_term_is_caught() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x"), (1, "y")]).leading(1).committed(2);
        check(&mut c, &[&a]).unwrap();
        let b = fake(2, &[(1, "x")]).leading(2);
        let v = check(&mut c, &[&a, &b]).unwrap_err();
        assert_eq!(
            v,
            Violation::LeaderLacksCommitted {
                leader: NodeId::new(2),
                term: g(2),
                index: i(2),
                entry_term: g(1),
                committed_in: g(1),
                found: None
            }
        );
    }

    #[test]
    fn a_leader_of_a_lower_term_than_the_commit_may_lack_the_entry() {
        // Delayed votes can elect the leader of term 2 after term 3 committed index 2.
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x"), (3, "y")]).leading(3).committed(2);
        check(&mut c, &[&a]).unwrap();
        let b = fake(2, &[(1, "x")]).leading(2);
        check(&mut c, &[&a, &b]).unwrap();
    }

    #[test]
    fn an_entry_committed_under_a_leader_of_a_higher_term_that_lacks_it_is_caught() {
        let mut c = SafetyChecker::new();
        let high = fake(2, &[(1, "x")]).leading(3);
        let low = fake(1, &[(1, "x"), (2, "y")]).leading(2);
        check(&mut c, &[&high, &low]).unwrap();
        let low = low.committed(2);
        let v = check(&mut c, &[&high, &low]).unwrap_err();
        assert_eq!(v.invariant(), Invariant::LeaderCompleteness);
        assert!(
            v.to_string().contains("n2 leads g3 without entry i2 of g2"),
            "{v}"
        );
    }

    #[test]
    fn a_different_entry_committed_at_one_index_is_caught() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x")]).committed(1);
        check(&mut c, &[&a]).unwrap();
        // With `a` down, nothing compares the logs: the committed entry does.
        let b = fake(2, &[(1, "other")]).committed(1);
        let v = check(&mut c, &[&b]).unwrap_err();
        assert_eq!(
            v,
            Violation::CommittedEntryDiffers {
                node: NodeId::new(2),
                index: i(1),
                stage: Stage::Committed,
                committed_term: g(1),
                found_term: g(1)
            }
        );
        assert!(v.to_string().contains("payload differs"), "{v}");
        let b = fake(2, &[(2, "other")]).committed(1);
        let mut c2 = SafetyChecker::new();
        check(&mut c2, &[&a]).unwrap();
        let v = check(&mut c2, &[&b]).unwrap_err();
        assert!(
            v.to_string().contains("where one of g1 was committed"),
            "{v}"
        );
    }

    #[test]
    fn an_entry_changed_behind_the_nodes_back_is_caught_when_applied() {
        let mut c = SafetyChecker::new();
        let mut a = fake(1, &[(1, "x")]);
        a.commit = i(1);
        check(&mut c, &[&a]).unwrap();
        // The log changes without the node counting a cut (a broken store), then the
        // entry is applied.
        a.log[0].payload = Payload::Command(Bytes::from_static(b"other"));
        a.applied = i(1);
        let v = check(&mut c, &[&a]).unwrap_err();
        assert!(
            matches!(
                v,
                Violation::CommittedEntryDiffers {
                    stage: Stage::Applied,
                    ..
                }
            ),
            "{v}"
        );
    }

    #[test]
    fn a_snapshot_ending_with_an_uncommitted_entry_is_caught() {
        let mut c = SafetyChecker::new();
        let a = fake(1, &[(1, "x"), (1, "y")]).committed(2);
        check(&mut c, &[&a]).unwrap();
        let mut b = fake(2, &[(1, "x"), (2, "y")]);
        b.snapshot = (i(2), g(2));
        b.log.clear();
        let b = b.committed(2);
        let v = check(&mut c, &[&a, &b]).unwrap_err();
        assert!(
            matches!(
                v,
                Violation::CommittedEntryDiffers {
                    stage: Stage::Snapshot,
                    ..
                }
            ),
            "{v}"
        );
    }

    #[test]
    fn applying_past_the_commit_index_is_caught() {
        let mut c = SafetyChecker::new();
        let mut a = fake(1, &[(1, "x"), (1, "y")]).committed(1);
        a.applied = i(2);
        let v = check(&mut c, &[&a]).unwrap_err();
        assert_eq!(v.invariant(), Invariant::StateMachineSafety);
        assert!(matches!(v, Violation::AppliedAboveCommit { .. }), "{v}");
    }

    #[test]
    fn indexes_going_back_while_up_are_caught_but_not_across_a_restart() {
        let up = fake(1, &[(1, "x"), (1, "y")]).committed(2);
        let mut c = SafetyChecker::new();
        check(&mut c, &[&up]).unwrap();
        let mut back = up.clone();
        back.commit = i(1);
        back.applied = i(1);
        let v = check(&mut c, &[&back]).unwrap_err();
        assert!(matches!(v, Violation::CommitWentBack { .. }), "{v}");
        assert_eq!(v.invariant(), Invariant::MonotonicIndexes);

        let mut c = SafetyChecker::new();
        check(&mut c, &[&up]).unwrap();
        let mut back = up.clone();
        back.applied = i(1);
        let v = check(&mut c, &[&back]).unwrap_err();
        assert!(matches!(v, Violation::AppliedWentBack { .. }), "{v}");

        let mut c = SafetyChecker::new();
        check(&mut c, &[&up]).unwrap();
        let mut back = up.clone();
        back.term = g(0);
        let v = check(&mut c, &[&back]).unwrap_err();
        assert!(matches!(v, Violation::TermWentBack { .. }), "{v}");

        // A restart starts again from the snapshot (here none), whether the driver says so
        // or the node is missing from a check.
        let restarted = fake(1, &[(1, "x"), (1, "y")]);
        let mut c = SafetyChecker::new();
        check(&mut c, &[&up]).unwrap();
        c.crashed(up.id);
        check(&mut c, &[&restarted]).unwrap();
        check(&mut c, &[&up]).unwrap();
        check(&mut c, &[]).unwrap();
        check(&mut c, &[&restarted]).unwrap();
    }

    #[test]
    fn applied_below_the_snapshot_is_caught() {
        let mut c = SafetyChecker::new();
        let mut a = fake(1, &[(1, "x"), (1, "y")]).committed(2);
        a.compact(2);
        a.applied = i(1);
        let v = check(&mut c, &[&a]).unwrap_err();
        assert!(matches!(v, Violation::AppliedBelowSnapshot { .. }), "{v}");
    }

    #[test]
    fn a_committed_index_costs_40_bytes_and_its_map_node_as_documented() {
        assert_eq!(size_of::<(LogIndex, Committed)>(), 40);
    }

    #[test]
    fn digests_tell_payloads_apart() {
        let a = Payload::Command(Bytes::from_static(b"ab"));
        let b = Payload::Command(Bytes::from_static(b"ba"));
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&Payload::Noop), digest(&a));
        assert_eq!(digest(&a), digest(&a.clone()));
    }
}
