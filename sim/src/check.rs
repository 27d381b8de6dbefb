//! History checkers: linearizability against a sequential model, and a hook for
//! invariants over completed operations (such as a bank's constant total).
//!
//! # Linearizability
//!
//! A history is linearizable if every operation can be given a single instant between its
//! invocation and its completion such that, taken in that order, the operations are legal
//! for the sequential [`Model`]. [`Linearizability`] decides this with a depth-first search
//! in the line of Wing and Gong's, with Lowe's memoization of (operations linearized, model
//! state) as in porcupine, that linearizes operations just in time as Lowe's and Knossos's
//! checkers do: the completed operations are taken in order of return, and the search
//! places operations only until the earliest returning one not yet placed is. Operations
//! with an unknown outcome are tried after the completed ones, and only where they can
//! matter: when they change the state, when the operation placed next needs that change,
//! and once for each class of identical ones. A configuration that one seen before can do
//! all of (the same completed operations placed and the same state, with a subset of the
//! unknown ones) is not explored. A history where no read saw an unknown write costs about
//! one step per operation, however many writes ended unknown.
//!
//! - **Per-key decomposition**: a model that maps each input to a partition (for a
//!   key-value store, its key) is checked one partition at a time. Linearizability is
//!   local (Herlihy and Wing), so this is exact *only* for models whose partitions are
//!   independent objects: every operation touches exactly one partition, and whether a step
//!   is legal depends on that partition's state alone. A model with operations spanning
//!   keys (a multi-key transaction, a scan, a bank transfer) must use a single partition
//!   (`type Partition = ()`); splitting it would accept non-linearizable histories.
//! - **Unknown operations** (no reply) may have taken effect at any time after their
//!   invocation, or never: the search may place them anywhere after their call, with an
//!   unknown output, or leave them out. Unanswered operations the model says are
//!   read-only constrain nothing and are left out from the start; unknown operations with
//!   equal inputs ([`Model::Input`] is `Eq`) are interchangeable.
//! - **Failed operations** ([`Outcome::Fail`]) are left out: the checker takes a failure
//!   as proof that the operation had no effect, now or later. That is only true if the
//!   protocol guarantees it (a request refused before it was proposed, "not the leader"
//!   from a node that never appended it). An error after which the operation might still
//!   take effect (a timeout, a leader that lost its term with the entry in its log) must be
//!   recorded as unknown instead: a workload returns [`crate::Completion::Unknown`] for it.
//!   Recording such an error as a failure makes the checker report a violation when a
//!   correct protocol applies the operation after all.
//! - **Real-time order** is strict: an operation precedes another only if it returned
//!   *before* the other was invoked. Operations that touch (one returns at the instant the
//!   other is invoked) are treated as concurrent, which can only accept more histories,
//!   never reject a linearizable one.
//! - **Bounded effort and memory**: the search stops after [`Linearizability::steps_max`]
//!   steps per partition, or once its memo of configurations already seen holds more than
//!   [`Linearizability::memo_bytes_max`] bytes (64 MiB by default), and reports [`Verdict::GaveUp`]
//!   rather than hanging or exhausting memory. Giving up is never a pass
//!   ([`Verdict::is_pass`] is false, and [`crate::RunReport::check`] returns it as an
//!   error); a violation found in another partition is still reported as a violation.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;

use crate::history::{History, Outcome};
use crate::linearize::{Bound, Limits, Search, search};

/// A sequential specification that [`Linearizability`] checks histories against.
pub trait Model {
    /// An operation's input. Unknown operations with equal inputs are interchangeable, so
    /// the checker tells them apart only by when they were invoked.
    type Input: fmt::Debug + Eq + Hash;
    /// An operation's output.
    type Output: fmt::Debug;
    /// The model's state; small and cheap to clone and hash, since the search memoizes it.
    type State: Clone + Eq + Hash;
    /// The independent part of the state an input touches (a key), or `()`.
    ///
    /// The checker decides each partition on its own, which is exact only if partitions
    /// are independent: every operation touches exactly one, and [`Model::step`] of an
    /// operation depends only on its partition's state. If any operation spans several
    /// (a transaction, a scan), use `()`.
    type Partition: Ord + Clone + fmt::Debug;

    /// Which partition `input` touches.
    fn partition(&self, input: &Self::Input) -> Self::Partition;

    /// The initial state of every partition.
    fn init(&self) -> Self::State;

    /// Whether `input` never changes the state (a read). An unanswered read-only
    /// operation constrains nothing, so the checker leaves it out. The default is `false`.
    fn is_read_only(&self, input: &Self::Input) -> bool {
        let _ = input;
        false
    }

    /// The state after applying `input` in `state`, if returning `output` is legal there;
    /// `output` is `None` for an operation whose reply never came (any output is then
    /// acceptable). Returns `None` if the step is illegal.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// An operation on a key-value store of `u64` keys and values, each key a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Read `key`.
    Read {
        /// The key.
        key: u64,
    },
    /// Set `key` to `value`.
    Write {
        /// The key.
        key: u64,
        /// The new value.
        value: u64,
    },
    /// Set `key` to `new` if it currently holds `expect` (`None`: absent).
    Cas {
        /// The key.
        key: u64,
        /// The value required.
        expect: Option<u64>,
        /// The new value.
        new: u64,
    },
}

/// The result of a [`KvInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value read (`None`: absent).
    Read(Option<u64>),
    /// The write was applied.
    Written,
    /// Whether the compare-and-set applied.
    Cas(bool),
}

/// The key-value register model: each key independent, initially absent.
///
/// ```
/// use synod_sim::{ClientId, History, KvInput, KvModel, KvOutput, Linearizability, SimTime, Verdict};
/// let t = SimTime::from_micros;
/// let mut h = History::new();
/// let w = h.invoke(ClientId::new(0), KvInput::Write { key: 1, value: 5 }, t(0));
/// h.ok(w, KvOutput::Written, t(10))?;
/// let r = h.invoke(ClientId::new(1), KvInput::Read { key: 1 }, t(20));
/// h.ok(r, KvOutput::Read(None), t(30))?; // a stale read after the write completed
/// assert!(matches!(Linearizability::new(KvModel).check(&h), Verdict::Violation(_)));
/// # Ok::<(), synod_sim::HistoryError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type Input = KvInput;
    type Output = KvOutput;
    type State = Option<u64>;
    type Partition = u64;

    fn partition(&self, input: &KvInput) -> u64 {
        match *input {
            KvInput::Read { key } | KvInput::Write { key, .. } | KvInput::Cas { key, .. } => key,
        }
    }

    fn init(&self) -> Option<u64> {
        None
    }

    fn is_read_only(&self, input: &KvInput) -> bool {
        matches!(input, KvInput::Read { .. })
    }

    fn step(
        &self,
        state: &Option<u64>,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Option<u64>> {
        match (*input, output) {
            (KvInput::Read { .. }, None) => Some(*state),
            (KvInput::Read { .. }, Some(KvOutput::Read(v))) => (v == state).then_some(*state),
            (KvInput::Write { value, .. }, None | Some(KvOutput::Written)) => Some(Some(value)),
            (KvInput::Cas { expect, new, .. }, None) => {
                Some(if *state == expect { Some(new) } else { *state })
            }
            (KvInput::Cas { expect, new, .. }, Some(KvOutput::Cas(applied))) => {
                match (*state == expect, *applied) {
                    (true, true) => Some(Some(new)),
                    (false, false) => Some(*state),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// What a checker concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The history satisfies the property.
    Pass,
    /// The history violates it; the text says where.
    Violation(String),
    /// The checker stopped at its effort bound without deciding.
    GaveUp(String),
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Pass`].
    #[must_use]
    pub fn is_pass(&self) -> bool {
        *self == Verdict::Pass
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Violation(why) => write!(f, "violation: {why}"),
            Verdict::GaveUp(why) => write!(f, "gave up: {why}"),
        }
    }
}

/// Something that checks a whole history after a run.
pub trait HistoryChecker<I, O> {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// Checks `history`.
    fn check_history(&mut self, history: &History<I, O>) -> Verdict;
}

/// The linearizability checker: a just-in-time, memoized search per partition, cheap on
/// operations with unknown outcomes, bounded (see the module documentation above and the
/// crate documentation, "Checking histories").
#[derive(Debug, Clone)]
pub struct Linearizability<M> {
    model: M,
    steps_max: u64,
    memo_bytes_max: u64,
}

/// The default search bound per partition.
pub const LINEARIZABILITY_STEPS_MAX: u64 = 2_000_000;

/// The default memory bound of the search's memo per partition, in bytes: 64 MiB.
///
/// Without it, a search near its step bound could memoize up to
/// [`LINEARIZABILITY_STEPS_MAX`] configurations, a few hundred MB for a partition of a
/// thousand operations.
pub const LINEARIZABILITY_MEMO_BYTES_MAX: u64 = 64 << 20;

impl<M: Model> Linearizability<M> {
    /// A checker for `model` with the default bounds ([`LINEARIZABILITY_STEPS_MAX`] steps
    /// and a memo of [`LINEARIZABILITY_MEMO_BYTES_MAX`] bytes per partition).
    #[must_use]
    pub fn new(model: M) -> Self {
        Linearizability {
            model,
            steps_max: LINEARIZABILITY_STEPS_MAX,
            memo_bytes_max: LINEARIZABILITY_MEMO_BYTES_MAX,
        }
    }

    /// The same checker giving up after `steps` search steps per partition.
    #[must_use]
    pub fn steps_max(mut self, steps: u64) -> Self {
        self.steps_max = steps.max(1);
        self
    }

    /// The same checker giving up on a partition once the memo of configurations it has
    /// seen holds more than `bytes` bytes.
    ///
    /// The size is an estimate, counted as the search goes: the memo table's slots (its
    /// capacity times the inline size of an entry, a bitset of the completed operations
    /// placed, a [`Model::State`] and a list of bitsets of the unknown operations placed,
    /// plus one control byte each), and on the heap each bitset (one `u64` per 64
    /// operations, plus 16 bytes of allocator overhead) and each list slot. Heap memory
    /// owned by a [`Model::State`] itself is not counted, so a model with a boxed or
    /// growing state should set a lower bound. The table grows by doubling, so while it
    /// grows it briefly holds its old slots as well.
    #[must_use]
    pub fn memo_bytes_max(mut self, bytes: u64) -> Self {
        self.memo_bytes_max = bytes;
        self
    }

    /// Checks `history`.
    pub fn check(&self, history: &History<M::Input, M::Output>) -> Verdict {
        self.check_explained(history).0
    }

    /// Checks `history`, and on a violation also names the operations behind it (for a
    /// picture of the run, such as [`crate::timeline`]'s page): the [`Culprit`].
    pub fn check_explained(
        &self,
        history: &History<M::Input, M::Output>,
    ) -> (Verdict, Option<Culprit>) {
        let mut parts: BTreeMap<M::Partition, Vec<usize>> = BTreeMap::new();
        for (i, op) in history.operations().iter().enumerate() {
            let unanswered = matches!(op.outcome, Outcome::Unknown | Outcome::Pending);
            if matches!(op.outcome, Outcome::Fail)
                || (unanswered && self.model.is_read_only(&op.input))
            {
                continue;
            }
            parts
                .entry(self.model.partition(&op.input))
                .or_default()
                .push(i);
        }
        // A partition the search gave up on must not hide a violation in another: check
        // them all, and report giving up only if no partition is a violation.
        let mut gave_up: Option<Verdict> = None;
        for (part, ops) in parts {
            let limits = Limits {
                steps_max: self.steps_max,
                memo_bytes_max: self.memo_bytes_max,
            };
            match search(&self.model, history.operations(), &ops, limits) {
                Search::Linearizable => {}
                Search::Illegal { blocking, deepest } => {
                    let op = &history.operations()[blocking];
                    let verdict = Verdict::Violation(format!(
                        "partition {part:?} ({} operations) is not linearizable: at most the \
                         first {deepest} operations to complete could be linearized; operation \
                         #{blocking} ({:?} -> {:?} by {} at {}) could not follow them",
                        ops.len(),
                        op.input,
                        op.outcome,
                        op.client,
                        op.invoked_at,
                    ));
                    let culprit = Culprit::around(history, blocking, &ops);
                    return (verdict, Some(culprit));
                }
                Search::GaveUp(bound) => {
                    gave_up.get_or_insert_with(|| {
                        Verdict::GaveUp(match bound {
                            Bound::Steps => format!(
                                "partition {part:?} ({} operations) not decided within {} steps",
                                ops.len(),
                                self.steps_max
                            ),
                            Bound::Memo { bytes, steps } => format!(
                                "partition {part:?} ({} operations) not decided: after {steps} \
                                 steps its memo held about {bytes} bytes, over memo_bytes_max \
                                 ({})",
                                ops.len(),
                                self.memo_bytes_max
                            ),
                        })
                    });
                }
            }
        }
        (gave_up.unwrap_or(Verdict::Pass), None)
    }
}

/// The operations behind a linearizability violation, as history indexes
/// ([`Linearizability::check_explained`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Culprit {
    /// The operation that could not follow any order of the operations before it.
    pub operation: usize,
    /// The operations of its partition (its key) that bear on it, in history order: those
    /// whose time overlaps the culprit's, and the last [`CULPRIT_BEFORE_MAX`] to complete
    /// before it was invoked (the writes it should have seen).
    pub involved: Vec<usize>,
}

/// How many operations completed before the culprit's invocation a [`Culprit`] names.
pub const CULPRIT_BEFORE_MAX: usize = 3;

impl Culprit {
    fn around<I, O>(history: &History<I, O>, operation: usize, partition: &[usize]) -> Culprit {
        let all = history.operations();
        let culprit = &all[operation];
        let end = |i: usize| all[i].completed_at.unwrap_or(crate::time::SimTime::MAX);
        let culprit_end = end(operation);
        let mut before: Vec<usize> = partition
            .iter()
            .copied()
            .filter(|&i| i != operation && end(i) < culprit.invoked_at)
            .collect();
        before.sort_by_key(|&i| (end(i), i));
        let first_kept = before.len().saturating_sub(CULPRIT_BEFORE_MAX);
        let mut involved: Vec<usize> = before[first_kept..].to_vec();
        involved.extend(partition.iter().copied().filter(|&i| {
            i != operation && end(i) >= culprit.invoked_at && all[i].invoked_at <= culprit_end
        }));
        involved.sort_unstable();
        involved.dedup();
        Culprit {
            operation,
            involved,
        }
    }
}

impl<M: Model> HistoryChecker<M::Input, M::Output> for Linearizability<M> {
    fn name(&self) -> &str {
        "linearizability"
    }

    fn check_history(&mut self, history: &History<M::Input, M::Output>) -> Verdict {
        self.check(history)
    }
}

/// The invariant hook: a predicate every successfully completed operation must satisfy,
/// given its input and output (for example, "every read of all accounts sums to the
/// bank's total").
///
/// ```
/// use synod_sim::{ClientId, History, HistoryChecker, OkInvariant, SimTime};
/// // Input: a read of all balances; output: the balances.
/// let mut h: History<(), Vec<i64>> = History::new();
/// let r = h.invoke(ClientId::new(0), (), SimTime::ZERO);
/// h.ok(r, vec![60, 41], SimTime::from_micros(5))?;
/// let mut total = OkInvariant::new("bank total", |_: &(), balances: &Vec<i64>| {
///     let sum: i64 = balances.iter().sum();
///     if sum == 100 { Ok(()) } else { Err(format!("total {sum}, expected 100")) }
/// });
/// assert!(!total.check_history(&h).is_pass());
/// # Ok::<(), synod_sim::HistoryError>(())
/// ```
pub struct OkInvariant<F> {
    name: String,
    predicate: F,
}

impl<F> fmt::Debug for OkInvariant<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OkInvariant")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F> OkInvariant<F> {
    /// An invariant called `name` checked by `predicate`.
    pub fn new(name: &str, predicate: F) -> Self {
        OkInvariant {
            name: name.to_owned(),
            predicate,
        }
    }
}

impl<I, O, F> HistoryChecker<I, O> for OkInvariant<F>
where
    F: FnMut(&I, &O) -> Result<(), String>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check_history(&mut self, history: &History<I, O>) -> Verdict {
        for (i, op) in history.operations().iter().enumerate() {
            if let Outcome::Ok(out) = &op.outcome
                && let Err(why) = (self.predicate)(&op.input, out)
            {
                return Verdict::Violation(format!(
                    "{}: operation #{i} by {} at {}: {why}",
                    self.name, op.client, op.invoked_at
                ));
            }
        }
        Verdict::Pass
    }
}
