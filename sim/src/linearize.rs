//! The search behind [`crate::Linearizability`], for one partition of a history.
//!
//! # What it decides
//!
//! The partition's operations are of two kinds. A *known* operation completed with an
//! output and a return time. An *unknown* one never answered: it may have taken effect at
//! any instant after its invocation, or never. The partition is linearizable if some
//! subset of the unknown operations, together with every known one, can be put in one
//! order that respects real time (an operation that returned before another was invoked
//! comes first) and is legal for the [`Model`].
//!
//! # How
//!
//! The search builds the order one operation at a time, depth first, from a
//! configuration: the set of operations placed so far and the model state they lead to.
//! It places operations *just in time*, in the manner of Lowe's just-in-time linearization
//! (also in Knossos): the known operations are taken in order of return, and the earliest
//! returning one not yet placed, `o`, must be placed before the search may move past its
//! return. Any operation invoked by then may be placed before it: the candidates are the
//! operations not yet placed whose call is not after `o`'s return. Known candidates are
//! tried first, unknown ones after them; the partition is linearizable once every known
//! operation is placed (the unknown operations left over never took effect).
//!
//! Unknown operations are where such a search blows up (each may or may not be placed,
//! anywhere after its call), so it places one only where it can matter. Each rule below
//! skips a configuration only when another, which the search explores, can do everything
//! it can:
//!
//! - **Only if it changes the state.** An unknown operation that would leave the state as
//!   it is (a write of the value already there, a compare-and-set that would not apply) is
//!   not placed: the configuration without it is the same, with one more operation still
//!   free to use.
//! - **Only if what follows needs it.** An unknown operation `p` is not followed by an
//!   operation `q` that would leave the same state without it (a write that overwrites
//!   it): placing `q` alone, which the search also tries, is the same with `p` still free.
//! - **Identical ones are one class.** Of unknown operations with equal inputs, invoked by
//!   now, the earliest invoked not yet placed stands for all of them: they are
//!   interchangeable.
//! - **Dominated configurations are not explored.** As in porcupine, a memo keeps every
//!   configuration seen, keyed by the known operations placed and the model state, so none
//!   is explored twice. It also skips a configuration whose unknown operations placed are
//!   a superset of those of one already seen with the same key: unknown operations
//!   constrain nothing, so the one that placed fewer can do everything this one can.
//!
//! Partitioning a history by key (porcupine's P-compositionality) happens in the caller.
//! The search counts its steps (operations tried, configurations left, memo entries
//! compared) and estimates its memo's size, and stops at either bound.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasherDefault;

use crate::check::Model;
use crate::history::{Operation, Outcome};
use crate::time::SimTime;
use crate::trace::TraceHasher;

/// What the search of one partition found.
pub(crate) enum Search {
    Linearizable,
    /// Not linearizable: `deepest` known operations at most could be placed in order of
    /// return, and `blocking` (a history index) is the one that could not follow them.
    Illegal {
        blocking: usize,
        deepest: usize,
    },
    GaveUp(Bound),
}

/// The bound a search gave up at.
pub(crate) enum Bound {
    Steps,
    Memo { bytes: u64, steps: u64 },
}

/// The search's bounds (see `Linearizability::steps_max` and `memo_bytes_max`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub steps_max: u64,
    pub memo_bytes_max: u64,
}

/// An operation that completed with an output.
struct Known {
    /// Its index in the history.
    op: usize,
    call: SimTime,
    ret: SimTime,
}

/// An operation whose outcome is unknown.
struct Unknown {
    /// Its index in the history.
    op: usize,
    call: SimTime,
    /// The unknown operation with an equal input invoked last before this one.
    twin: Option<usize>,
}

/// A set of indexes, one bit each.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset(&self, of: &Bits) -> bool {
        self.0.iter().zip(&of.0).all(|(a, b)| a & !b == 0)
    }

    /// Heap bytes, as the memo's size estimate counts them: the words plus 16 bytes of
    /// allocator overhead.
    fn heap_bytes(&self) -> u64 {
        self.0.len() as u64 * 8 + 16
    }
}

/// A doubly linked list of the indexes `0..len` not yet placed, in their order, from
/// which an index is lifted out and put back in last-out, first-in order (Knuth's
/// dancing links), so the search walks only the operations still free.
struct Links {
    /// Node `i + 1` holds index `i`; node 0 is the head.
    next: Vec<usize>,
    prev: Vec<usize>,
}

const END: usize = usize::MAX;

impl Links {
    fn new(len: usize) -> Self {
        let mut next: Vec<usize> = (1..=len + 1).collect();
        next[len] = END;
        Links {
            next,
            prev: (0..=len).map(|n| n.saturating_sub(1)).collect(),
        }
    }

    /// The first index after `after` (`None`: the first of all) still in the list.
    fn after(&self, after: Option<usize>) -> Option<usize> {
        let node = self.next[after.map_or(0, |i| i + 1)];
        (node != END).then(|| node - 1)
    }

    fn lift(&mut self, i: usize) {
        let node = i + 1;
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }

    /// Puts back the index lifted out last.
    fn restore(&mut self, i: usize) {
        let node = i + 1;
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != END {
            self.prev[n] = node;
        }
    }
}

/// An operation placed in the order.
#[derive(Clone, Copy)]
enum Placed {
    Known(usize),
    Unknown(usize),
}

/// One step down the search: what was placed, and what to restore when it is undone.
struct Frame<S> {
    placed: Placed,
    state_before: S,
    next_known_before: usize,
}

/// Where the search is in the candidates of the current configuration: the last one
/// tried, among the known or the unknown ones.
#[derive(Clone, Copy)]
enum Cursor {
    Known(Option<usize>),
    Unknown(Option<usize>),
}

/// The memo: for each (known operations placed, state), the sets of unknown operations
/// placed with which it was seen, none a subset of another.
type Memo<S> = HashMap<(Bits, S), Vec<Bits>, BuildHasherDefault<TraceHasher>>;

/// Searches the partition made of the history's operations `ops` (indexes into `all`),
/// none of which failed.
pub(crate) fn search<M: Model>(
    model: &M,
    all: &[Operation<M::Input, M::Output>],
    ops: &[usize],
    limits: Limits,
) -> Search {
    let mut known: Vec<Known> = Vec::new();
    let mut unknown: Vec<Unknown> = Vec::new();
    for &op in ops {
        let operation = &all[op];
        match (&operation.outcome, operation.completed_at) {
            (Outcome::Ok(_), Some(ret)) => known.push(Known {
                op,
                call: operation.invoked_at,
                ret,
            }),
            _ => unknown.push(Unknown {
                op,
                call: operation.invoked_at,
                twin: None,
            }),
        }
    }
    // Both lists in order of call; the known ones also in order of return.
    known.sort_by_key(|k| (k.call, k.op));
    unknown.sort_by_key(|u| (u.call, u.op));
    let mut by_return: Vec<usize> = (0..known.len()).collect();
    by_return.sort_by_key(|&k| (known[k].ret, known[k].call, known[k].op));
    let mut last_of_input: HashMap<&M::Input, usize, BuildHasherDefault<TraceHasher>> =
        HashMap::default();
    for u in 0..unknown.len() {
        unknown[u].twin = last_of_input.insert(&all[unknown[u].op].input, u);
    }
    let output = |k: usize| match &all[known[k].op].outcome {
        Outcome::Ok(output) => Some(output),
        _ => None,
    };

    let mut known_free = Links::new(known.len());
    let mut unknown_free = Links::new(unknown.len());
    let mut known_placed = Bits::new(known.len());
    let mut unknown_placed = Bits::new(unknown.len());
    let mut memo: Memo<M::State> = HashMap::default();
    // The memo's estimated size (see `Linearizability::memo_bytes_max`): the table's slots,
    // plus each key's and each set's bitset on the heap, plus each set's slot in its list.
    let slot_bytes = size_of::<((Bits, M::State), Vec<Bits>)>() as u64 + 1;
    let set_bytes = unknown_placed.heap_bytes() + size_of::<Bits>() as u64;
    let mut heap_bytes = 0u64;
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut state = model.init();
    // The first known operation, in order of return, not yet placed.
    let mut next_known = 0usize;
    let mut cursor = Cursor::Known(None);
    let mut steps = 0u64;
    let (mut deepest, mut blocking) = (0usize, by_return.first().map_or(0, |&k| known[k].op));
    memo.insert(
        (known_placed.clone(), state.clone()),
        vec![unknown_placed.clone()],
    );

    while next_known < known.len() {
        steps += 1;
        if steps > limits.steps_max {
            return Search::GaveUp(Bound::Steps);
        }
        let horizon = known[by_return[next_known]].ret;
        // The next candidate, and the state after it if placing it is legal and useful.
        let (placed, after) = match cursor {
            Cursor::Known(last) => match known_free.after(last) {
                Some(k) if known[k].call <= horizon => {
                    cursor = Cursor::Known(Some(k));
                    let input = &all[known[k].op].input;
                    let after = model.step(&state, input, output(k));
                    (Placed::Known(k), after)
                }
                _ => {
                    cursor = Cursor::Unknown(None);
                    continue;
                }
            },
            Cursor::Unknown(last) => match unknown_free.after(last) {
                Some(u) if unknown[u].call <= horizon => {
                    cursor = Cursor::Unknown(Some(u));
                    // An earlier identical operation, still free, stands for this one.
                    if unknown[u].twin.is_some_and(|t| !unknown_placed.get(t)) {
                        continue;
                    }
                    let input = &all[unknown[u].op].input;
                    let after = model.step(&state, input, None).filter(|s| *s != state);
                    (Placed::Unknown(u), after)
                }
                _ => {
                    // Every candidate was tried: undo the last step.
                    if next_known >= deepest {
                        deepest = next_known;
                        blocking = known[by_return[next_known]].op;
                    }
                    let Some(frame) = stack.pop() else {
                        return Search::Illegal { blocking, deepest };
                    };
                    state = frame.state_before;
                    next_known = frame.next_known_before;
                    cursor = match frame.placed {
                        Placed::Known(k) => {
                            known_placed.clear(k);
                            known_free.restore(k);
                            Cursor::Known(Some(k))
                        }
                        Placed::Unknown(u) => {
                            unknown_placed.clear(u);
                            unknown_free.restore(u);
                            Cursor::Unknown(Some(u))
                        }
                    };
                    continue;
                }
            },
        };
        let Some(after) = after else { continue };
        // After an unknown operation, an operation that leaves the same state without it
        // makes it useless here: placing that operation alone is tried from the
        // configuration before.
        if let Some(Frame {
            placed: Placed::Unknown(_),
            state_before,
            ..
        }) = stack.last()
        {
            let (input, output) = match placed {
                Placed::Known(k) => (&all[known[k].op].input, output(k)),
                Placed::Unknown(u) => (&all[unknown[u].op].input, None),
            };
            if model.step(state_before, input, output).as_ref() == Some(&after) {
                continue;
            }
        }
        match placed {
            Placed::Known(k) => known_placed.set(k),
            Placed::Unknown(u) => unknown_placed.set(u),
        }
        // Explore the new configuration unless one seen already can do all it can.
        let sets = match memo.entry((known_placed.clone(), after.clone())) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                heap_bytes = heap_bytes.saturating_add(known_placed.heap_bytes());
                entry.insert(Vec::new())
            }
        };
        steps = steps.saturating_add(sets.len() as u64);
        if sets.iter().any(|seen| seen.is_subset(&unknown_placed)) {
            match placed {
                Placed::Known(k) => known_placed.clear(k),
                Placed::Unknown(u) => unknown_placed.clear(u),
            }
            continue;
        }
        // Sets this one is a subset of can do no more than it: forget them.
        let before = sets.len();
        sets.retain(|seen| !unknown_placed.is_subset(seen));
        let removed = (before - sets.len()) as u64;
        sets.push(unknown_placed.clone());
        heap_bytes = heap_bytes
            .saturating_add(set_bytes)
            .saturating_sub(removed.saturating_mul(set_bytes));
        let bytes = (memo.capacity() as u64)
            .saturating_mul(slot_bytes)
            .saturating_add(heap_bytes);
        if bytes > limits.memo_bytes_max {
            return Search::GaveUp(Bound::Memo { bytes, steps });
        }
        stack.push(Frame {
            placed,
            state_before: std::mem::replace(&mut state, after),
            next_known_before: next_known,
        });
        match placed {
            Placed::Known(k) => {
                known_free.lift(k);
                while next_known < known.len() && known_placed.get(by_return[next_known]) {
                    next_known += 1;
                }
            }
            Placed::Unknown(u) => unknown_free.lift(u),
        }
        cursor = Cursor::Known(None);
    }
    Search::Linearizable
}
