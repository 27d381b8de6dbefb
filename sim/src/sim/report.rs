//! What a run reports, [`RunReport`], and what invariants and progress conditions see of it
//! while it runs, [`View`].

use std::fmt;
use std::hash::Hash;

use crate::check::{HistoryChecker, Verdict};

use crate::disk::Disk;
use crate::fault_log::FaultLog;
use crate::history::History;
use crate::nemesis::{Coverage, FaultProfile};
use crate::node::{Node, NodeId, node_at, slot_of};
use crate::time::SimTime;

use super::{NodeState, Slot};

/// The phase a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Faults on, invariants checked after every event.
    Safety,
    /// Faults healed, progress required within a bound.
    Liveness,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The invariant returned an error after an event.
    Invariant {
        /// The virtual time of the event.
        at: SimTime,
        /// The event's number in the run (from 1).
        event: u64,
        /// The invariant's message.
        message: String,
    },
    /// The progress condition did not hold within the bound after healing.
    NoProgress {
        /// When the faults were healed.
        healed_at: SimTime,
        /// The bound that passed.
        deadline: SimTime,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invariant { at, event, message } => {
                write!(f, "invariant violated at {at} (event {event}): {message}")
            }
            Failure::NoProgress {
                healed_at,
                deadline,
            } => write!(
                f,
                "no progress: faults healed at {healed_at}, progress condition still false at {deadline}"
            ),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport<I, O> {
    /// The run's seed.
    pub seed: u64,
    /// The digest of the run: every processed event with its time and payload, the clock
    /// readings and disk contents nodes were given, crashes and the nemesis's choices.
    /// Equal seeds give equal hashes.
    pub trace_hash: u64,
    /// How many events were processed.
    pub events: u64,
    /// The virtual time when the run ended.
    pub end_time: SimTime,
    /// When the liveness phase began, if it did.
    pub healed_at: Option<SimTime>,
    /// The faults enabled in this run.
    pub profile: FaultProfile,
    /// What fired.
    pub coverage: Coverage,
    /// Every fault applied, in order, with its virtual time and details: the run's fault
    /// schedule (bounded by [`SimConfigBuilder::fault_log_max`](crate::SimConfigBuilder::fault_log_max)). Not part of the trace
    /// hash.
    pub faults: FaultLog,
    /// The client operations.
    pub history: History<I, O>,
    /// Why the run failed, if it did.
    pub failure: Option<Failure>,
    /// The last processed events as text, if [`SimConfigBuilder::trace_lines_max`](crate::SimConfigBuilder::trace_lines_max) asked
    /// for them.
    pub trace: Vec<String>,
    /// What [`Simulation::record`](crate::Simulation::record) recorded, if the run was
    /// recorded: the start of its [`Timeline`](crate::timeline::Timeline::of_run).
    pub recording: Option<crate::timeline::Timeline>,
}

impl<I, O> RunReport<I, O> {
    /// The verdict on this run: a [`Verdict::Violation`] if the run failed (an invariant
    /// or the progress condition), otherwise what `checker` says of the history, with the
    /// checker's name in front of the reason. Unlike [`RunReport::check`], it keeps
    /// [`Verdict::GaveUp`] apart from a violation.
    pub fn verdict(&self, checker: &mut dyn HistoryChecker<I, O>) -> Verdict {
        if let Some(f) = &self.failure {
            return Verdict::Violation(f.to_string());
        }
        match checker.check_history(&self.history) {
            Verdict::Pass => Verdict::Pass,
            Verdict::Violation(why) => Verdict::Violation(format!("{}: {why}", checker.name())),
            Verdict::GaveUp(why) => Verdict::GaveUp(format!("{}: {why}", checker.name())),
        }
    }

    /// Ok if the run did not fail and `checker` passes its history; otherwise the reason.
    /// A checker that gave up is an error too (its text contains "gave up"); use
    /// [`RunReport::verdict`] to tell it from a violation.
    ///
    /// # Errors
    ///
    /// The run's [`Failure`], or the checker's verdict if it is not a pass.
    pub fn check(&self, checker: &mut dyn HistoryChecker<I, O>) -> Result<(), String> {
        if let Some(f) = &self.failure {
            return Err(f.to_string());
        }
        match checker.check_history(&self.history) {
            Verdict::Pass => Ok(()),
            v => Err(format!("{}: {v}", checker.name())),
        }
    }
}

/// What invariants and progress conditions can see: the nodes, the history, the time.
pub struct View<'a, N: Node, I, O> {
    pub(super) slots: &'a [Slot<N>],
    pub(super) history: &'a History<I, O>,
    pub(super) now: SimTime,
    pub(super) phase: Phase,
    pub(super) healed_at: Option<SimTime>,
}

impl<N: Node, I, O> fmt::Debug for View<'_, N, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("now", &self.now)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<'a, N: Node, I, O> View<'a, N, I, O> {
    /// Node `id`, or `None` if it is crashed (or out of range).
    #[must_use]
    pub fn node(&self, id: NodeId) -> Option<&'a N> {
        self.slots.get(slot_of(id)).and_then(|s| s.node.as_ref())
    }

    /// Every node that is not crashed, with its id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &'a N)> + 'a {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (node_at(i), n)))
    }

    /// Node `id`'s disk (crashed nodes keep theirs).
    #[must_use]
    pub fn disk(&self, id: NodeId) -> Option<&'a Disk> {
        self.slots.get(slot_of(id)).map(|s| &s.disk)
    }

    /// Whether node `id` is paused.
    #[must_use]
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.slots
            .get(slot_of(id))
            .is_some_and(|s| s.state == NodeState::Paused)
    }

    /// The history so far.
    #[must_use]
    pub fn history(&self) -> &'a History<I, O> {
        self.history
    }

    /// True virtual time.
    #[must_use]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the faults were healed (the liveness phase began), if they were.
    #[must_use]
    pub fn healed_at(&self) -> Option<SimTime> {
        self.healed_at
    }
}
