//! The process faults of a run, with their virtual times, as seen from outside the nodes.
//!
//! `synod-sim` reports which faults it enabled ([`synod_sim::FaultProfile`]) and how often
//! each fired ([`synod_sim::Coverage`]), but not when. The one place a caller can watch a
//! run as it happens is the invariant hook, called after every event with a
//! [`View`] of the cluster; a crashed node is missing from it and a paused node says so.
//! [`ProcessLog`] compares those states from one event to the next and writes down every
//! change. Network and clock faults (partitions, clogs, loss, clock jumps...) cannot be
//! seen this way, so they appear only as counts.

use std::fmt;

use synod_sim::{Node, NodeId, SimTime, View};

/// The most transitions a log keeps; later ones are only counted. A run of a few million
/// events has a few hundred.
pub const PROCESS_LOG_ENTRIES_MAX: usize = 10_000;

/// What happened to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessChange {
    /// It crashed: its memory is gone and its disk lost unsynced writes.
    Crashed,
    /// It started again from what survived on its disk.
    Restarted,
    /// It stopped taking inputs (a long pause, like `SIGSTOP`).
    Paused,
    /// It resumed, and received the inputs held while it was paused.
    Resumed,
}

impl fmt::Display for ProcessChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessChange::Crashed => "crashed",
            ProcessChange::Restarted => "restarted",
            ProcessChange::Paused => "paused",
            ProcessChange::Resumed => "resumed",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Paused,
    Crashed,
}

/// The crashes, restarts, pauses and resumes of one run, in order, and when the faults were
/// healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessLog {
    states: Vec<State>,
    entries: Vec<(SimTime, NodeId, ProcessChange)>,
    not_kept: u64,
    healed_at: Option<SimTime>,
}

impl ProcessLog {
    /// A log for `nodes` nodes, all of them up (every node starts before the first event).
    #[must_use]
    pub fn new(nodes: usize) -> Self {
        ProcessLog {
            states: vec![State::Up; nodes],
            entries: Vec::new(),
            not_kept: 0,
            healed_at: None,
        }
    }

    /// Records what changed since the last call. Call it after every event (from
    /// [`synod_sim::Simulation::invariant`]).
    pub fn observe<N: Node, I, O>(&mut self, view: &View<'_, N, I, O>) {
        for (i, old) in self.states.iter_mut().enumerate() {
            let id = NodeId::new(i as u32);
            let new = if view.node(id).is_none() {
                State::Crashed
            } else if view.is_paused(id) {
                State::Paused
            } else {
                State::Up
            };
            if *old == new {
                continue;
            }
            let change = match (*old, new) {
                (_, State::Crashed) => ProcessChange::Crashed,
                (State::Crashed, _) => ProcessChange::Restarted,
                (State::Up, State::Paused) => ProcessChange::Paused,
                (State::Paused, State::Up) => ProcessChange::Resumed,
                (State::Up, State::Up) | (State::Paused, State::Paused) => continue,
            };
            *old = new;
            if self.entries.len() < PROCESS_LOG_ENTRIES_MAX {
                self.entries.push((view.now(), id, change));
            } else {
                self.not_kept += 1;
            }
        }
        self.healed_at = view.healed_at();
    }

    /// The changes kept, in the order they happened.
    #[must_use]
    pub fn entries(&self) -> &[(SimTime, NodeId, ProcessChange)] {
        &self.entries
    }

    /// When every fault was healed and the liveness phase began, if it did.
    #[must_use]
    pub fn healed_at(&self) -> Option<SimTime> {
        self.healed_at
    }
}

impl fmt::Display for ProcessLog {
    /// One line per change, the healing in its place among them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut healed_shown = self.healed_at.is_none();
        for &(at, node, change) in &self.entries {
            if !healed_shown && self.healed_at.is_some_and(|h| h <= at) {
                writeln!(f, "  {}  all faults healed", self.healed_at.unwrap_or(at))?;
                healed_shown = true;
            }
            writeln!(f, "  {at}  {node} {change}")?;
        }
        if self.not_kept > 0 {
            writeln!(f, "  ... and {} more changes", self.not_kept)?;
        }
        if let (false, Some(at)) = (healed_shown, self.healed_at) {
            writeln!(f, "  {at}  all faults healed")?;
        }
        Ok(())
    }
}
