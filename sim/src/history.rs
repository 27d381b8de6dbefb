//! A history of client operations: when each was invoked, and whether and when it
//! completed.
//!
//! The simulator records one for every run (see [`crate::Workload`]); tests can also build
//! histories by hand to test checkers. Outcomes follow Jepsen's: an operation is `Ok` with
//! its output, `Fail` when it certainly did not take effect, or `Unknown` when no answer
//! came (it may or may not have taken effect, at any time after its invocation).

use std::fmt;

use crate::node::ClientId;
use crate::time::SimTime;

/// An operation's index in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

impl OpId {
    /// The index in [`History::operations`].
    #[must_use]
    pub const fn index(self) -> usize {
        self.0
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome<O> {
    /// Not completed yet (only while a run is in progress).
    Pending,
    /// Completed with this output.
    Ok(O),
    /// Certainly had no effect.
    Fail,
    /// No answer: it may have taken effect.
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Operation<I, O> {
    /// Who invoked it.
    pub client: ClientId,
    /// What was asked.
    pub input: I,
    /// When it was invoked (true virtual time).
    pub invoked_at: SimTime,
    /// How it ended.
    pub outcome: Outcome<O>,
    /// When it ended: `Some` for `Ok` and `Fail`, `None` otherwise.
    pub completed_at: Option<SimTime>,
}

/// A history error: an operation completed twice, or before it was invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryError {
    /// No operation has this id.
    NoSuchOp(OpId),
    /// The operation already has an outcome.
    AlreadyCompleted(OpId),
    /// The completion time is before the invocation time.
    CompletedBeforeInvoked(OpId),
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::NoSuchOp(op) => write!(f, "no operation {}", op.0),
            HistoryError::AlreadyCompleted(op) => write!(f, "operation {} already completed", op.0),
            HistoryError::CompletedBeforeInvoked(op) => {
                write!(f, "operation {} completed before it was invoked", op.0)
            }
        }
    }
}

impl std::error::Error for HistoryError {}

/// A sequence of operations in invocation order.
///
/// ```
/// use synod_sim::{ClientId, History, SimTime};
/// let mut h: History<&str, u32> = History::new();
/// let op = h.invoke(ClientId::new(0), "read", SimTime::from_micros(10));
/// h.ok(op, 7, SimTime::from_micros(20))?;
/// assert_eq!(h.len(), 1);
/// # Ok::<(), synod_sim::HistoryError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        History::default()
    }

    /// Records an invocation.
    pub fn invoke(&mut self, client: ClientId, input: I, at: SimTime) -> OpId {
        self.ops.push(Operation {
            client,
            input,
            invoked_at: at,
            outcome: Outcome::Pending,
            completed_at: None,
        });
        OpId(self.ops.len() - 1)
    }

    fn pending(
        &mut self,
        op: OpId,
        at: Option<SimTime>,
    ) -> Result<&mut Operation<I, O>, HistoryError> {
        let entry = self.ops.get_mut(op.0).ok_or(HistoryError::NoSuchOp(op))?;
        if !matches!(entry.outcome, Outcome::Pending) {
            return Err(HistoryError::AlreadyCompleted(op));
        }
        if at.is_some_and(|at| at < entry.invoked_at) {
            return Err(HistoryError::CompletedBeforeInvoked(op));
        }
        Ok(entry)
    }

    /// Records a successful completion.
    ///
    /// # Errors
    ///
    /// If `op` does not exist, already completed, or `at` is before its invocation.
    pub fn ok(&mut self, op: OpId, output: O, at: SimTime) -> Result<(), HistoryError> {
        let entry = self.pending(op, Some(at))?;
        entry.outcome = Outcome::Ok(output);
        entry.completed_at = Some(at);
        Ok(())
    }

    /// Records that `op` certainly had no effect.
    ///
    /// # Errors
    ///
    /// As for [`History::ok`].
    pub fn fail(&mut self, op: OpId, at: SimTime) -> Result<(), HistoryError> {
        let entry = self.pending(op, Some(at))?;
        entry.outcome = Outcome::Fail;
        entry.completed_at = Some(at);
        Ok(())
    }

    /// Records that no answer to `op` will come.
    ///
    /// # Errors
    ///
    /// If `op` does not exist or already completed.
    pub fn unknown(&mut self, op: OpId) -> Result<(), HistoryError> {
        let entry = self.pending(op, None)?;
        entry.outcome = Outcome::Unknown;
        Ok(())
    }

    /// Marks every pending operation unknown (at the end of a run).
    pub fn close(&mut self) {
        for op in &mut self.ops {
            if matches!(op.outcome, Outcome::Pending) {
                op.outcome = Outcome::Unknown;
            }
        }
    }

    /// The operations, in invocation order.
    #[must_use]
    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// How many operations were invoked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was invoked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many operations completed `Ok`.
    #[must_use]
    pub fn ok_count(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .count()
    }

    /// How many operations ended `Unknown`.
    #[must_use]
    pub fn unknown_count(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Unknown))
            .count()
    }

    /// How many operations invoked at or after `t` completed `Ok`: the usual progress
    /// condition for a liveness phase that began at `t`.
    #[must_use]
    pub fn ok_invoked_since(&self, t: SimTime) -> usize {
        self.ops
            .iter()
            .filter(|o| o.invoked_at >= t && matches!(o.outcome, Outcome::Ok(_)))
            .count()
    }
}

impl<I: fmt::Debug, O: fmt::Debug> fmt::Display for History<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.ops.iter().enumerate() {
            let end = match op.completed_at {
                Some(t) => t.to_string(),
                None => "-".to_owned(),
            };
            writeln!(
                f,
                "#{i} {} {:?} [{} .. {end}] {:?}",
                op.client, op.input, op.invoked_at, op.outcome
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_checked() {
        let mut h: History<u8, u8> = History::new();
        let a = h.invoke(ClientId::new(0), 1, SimTime::from_micros(5));
        assert_eq!(
            h.ok(a, 1, SimTime::from_micros(4)),
            Err(HistoryError::CompletedBeforeInvoked(a))
        );
        h.ok(a, 1, SimTime::from_micros(6))
            .expect("first completion");
        assert_eq!(
            h.fail(a, SimTime::from_micros(7)),
            Err(HistoryError::AlreadyCompleted(a))
        );
        assert_eq!(h.unknown(OpId(9)), Err(HistoryError::NoSuchOp(OpId(9))));
        let b = h.invoke(ClientId::new(1), 2, SimTime::from_micros(8));
        h.close();
        assert_eq!(h.operations()[b.index()].outcome, Outcome::Unknown);
        assert_eq!((h.ok_count(), h.unknown_count()), (1, 1));
        assert_eq!(h.ok_invoked_since(SimTime::from_micros(6)), 0);
        assert!(h.to_string().contains("#1 c1 2"));
    }
}
