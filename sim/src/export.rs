//! Writing a key-value history in formats other checkers read, so that a run can be
//! checked by a tool Synod did not write.
//!
//! Two formats, both of the histories [`crate::KvModel`] checks (reads, writes and
//! compare-and-sets of `u64` keys and values), with times in nanoseconds since the run
//! began:
//!
//! - **Jepsen's history** ([`HistoryFormat::Jepsen`]), as Knossos and Elle read it: one EDN
//!   map per line, an `:invoke` event at each call and an `:ok`, `:fail` or `:info` event
//!   at each completion, in time order. At equal times calls come before completions, so
//!   that operations that touch stay concurrent as [`crate::Linearizability`] treats them,
//!   except for a completion at the instant its own client calls again, which comes first
//!   (a process has one operation open at a time; this orders it before the other calls
//!   of that instant too, which is stricter than Synod's checker, never looser).
//!   Keys are independent registers written as jepsen.independent's `[key value]` tuples,
//!   under the cas-register model's functions:
//!
//!   ```text
//!   {:index 0, :time 113562000, :type :invoke, :process 4, :f :write, :value [3 29]}
//!   {:index 1, :time 114001000, :type :invoke, :process 1, :f :read, :value [3 nil]}
//!   {:index 2, :time 117868000, :type :ok, :process 1, :f :read, :value [3 63]}
//!   {:index 3, :time 118000000, :type :invoke, :process 2, :f :cas, :value [3 [63 64]]}
//!   ```
//!
//!   An operation whose outcome is unknown completes with `:info` after every other event
//!   (it may take effect at any time after its call), and its client goes on as a new
//!   process (its number plus the number of clients), as Jepsen does when a client
//!   crashes: a process never has two operations open. A compare-and-set that did not
//!   apply completes with `:fail`, Jepsen's convention, which says less than the
//!   history holds (that the key held another value at the time).
//! - **porcupine's operations** ([`HistoryFormat::Porcupine`]): a JSON array with one
//!   object per operation and porcupine's field names, `ClientId`, `Input`, `Call`,
//!   `Output` and `Return`, so it decodes into a `[]porcupine.Operation`:
//!
//!   ```text
//!   [
//!   {"ClientId": 4, "Input": {"op": "write", "key": 3, "value": 29}, "Call": 113562000, "Output": null, "Return": 9223372036854775807},
//!   {"ClientId": 1, "Input": {"op": "read", "key": 3}, "Call": 114001000, "Output": {"value": 63}, "Return": 117868000}
//!   ]
//!   ```
//!
//!   Inputs are `{"op": "read", "key": K}`, `{"op": "write", "key": K, "value": V}` and
//!   `{"op": "cas", "key": K, "expect": E, "new": N}` (`null`: absent); outputs
//!   `{"value": V}` (`null`: absent), `{}` for a write, `{"ok": B}` for a compare-and-set.
//!   An operation whose outcome is unknown has the output `null` and returns at the end
//!   of time (`i64::MAX`); a model's step must then accept any output. Failed operations
//!   are left out: they certainly had no effect, and porcupine has no way to say so.
//!
//! Both are written as [`crate::Linearizability`] sees the history: a porcupine model that
//! partitions by key, or Jepsen's independent checker over cas-register, decides the same.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::check::{KvInput, KvOutput};
use crate::history::{History, Operation, Outcome};
use crate::time::SimTime;

/// A history format another checker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HistoryFormat {
    /// Jepsen's EDN history, one operation event per line (Knossos, Elle).
    Jepsen,
    /// porcupine's operations with call and return times, as JSON.
    Porcupine,
}

impl HistoryFormat {
    /// Every format, in the order their names are listed.
    pub const ALL: [HistoryFormat; 2] = [HistoryFormat::Jepsen, HistoryFormat::Porcupine];

    /// The name used on the command line: `jepsen` or `porcupine`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            HistoryFormat::Jepsen => "jepsen",
            HistoryFormat::Porcupine => "porcupine",
        }
    }

    /// What the format is, in a few words: `Jepsen's EDN history` or `porcupine's JSON
    /// operations`.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            HistoryFormat::Jepsen => "Jepsen's EDN history",
            HistoryFormat::Porcupine => "porcupine's JSON operations",
        }
    }

    /// The file extension of the format, without the dot: `edn` or `json`.
    #[must_use]
    pub const fn extension(self) -> &'static str {
        match self {
            HistoryFormat::Jepsen => "edn",
            HistoryFormat::Porcupine => "json",
        }
    }

    /// The format named `name` ([`HistoryFormat::name`]), if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<HistoryFormat> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format a file's extension names (`.edn` or `.json`, in any case), if any.
    #[must_use]
    pub fn from_path(path: &Path) -> Option<HistoryFormat> {
        let ext = path.extension()?.to_str()?;
        Self::ALL
            .into_iter()
            .find(|f| f.extension().eq_ignore_ascii_case(ext))
    }

    /// Writes `history` in this format to `out`.
    ///
    /// # Errors
    ///
    /// The error of the first write to `out` that failed.
    pub fn write(
        self,
        history: &History<KvInput, KvOutput>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        match self {
            HistoryFormat::Jepsen => write_jepsen(history, out),
            HistoryFormat::Porcupine => write_porcupine(history, out),
        }
    }
}

impl fmt::Display for HistoryFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Nanoseconds since the run began, as the formats' signed 64-bit times.
fn nanos(t: SimTime) -> i64 {
    i64::try_from(t.as_micros().saturating_mul(1_000)).unwrap_or(i64::MAX)
}

/// An optional value as EDN or JSON (`nil` or `null` when absent).
struct Opt(Option<u64>, &'static str);

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str(self.1),
        }
    }
}

const NIL: &str = "nil";
const NULL: &str = "null";

/// Jepsen's `:f` and invocation `:value` of `input`.
fn jepsen_invocation(input: &KvInput) -> (&'static str, String) {
    match *input {
        KvInput::Read { key } => ("read", format!("[{key} nil]")),
        KvInput::Write { key, value } => ("write", format!("[{key} {value}]")),
        KvInput::Cas { key, expect, new } => {
            ("cas", format!("[{key} [{} {new}]]", Opt(expect, NIL)))
        }
    }
}

/// An event of Jepsen's history: when, of which operation, and what.
struct JepsenEvent {
    time: SimTime,
    rank: Rank,
    op: usize,
}

/// The kinds of events, in their order at equal times: calls before completions, so that
/// operations that touch stay concurrent, except where a client calls again at the instant
/// its operation completed; unknown completions after everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    BeforeOwnCall,
    Call,
    Completion,
    Unknown,
}

fn write_jepsen(history: &History<KvInput, KvOutput>, out: &mut dyn Write) -> io::Result<()> {
    let ops = history.operations();
    let clients = ops.iter().map(|o| o.client.get() + 1).max().unwrap_or(0);
    let end = ops
        .iter()
        .flat_map(|o| [Some(o.invoked_at), o.completed_at])
        .flatten()
        .max()
        .unwrap_or(SimTime::ZERO);
    // Completions at the instant their own client calls again: that client's operations
    // are sequential, so they come before every call at that instant.
    let mut next_call: Vec<Option<SimTime>> = vec![None; ops.len()];
    let mut last_of_client: Vec<Option<usize>> = vec![None; clients as usize];
    for (op, operation) in ops.iter().enumerate() {
        let client = operation.client.get() as usize;
        if let Some(previous) = last_of_client[client].replace(op) {
            next_call[previous] = Some(operation.invoked_at);
        }
    }
    let mut events: Vec<JepsenEvent> = Vec::with_capacity(ops.len() * 2);
    for (op, operation) in ops.iter().enumerate() {
        events.push(JepsenEvent {
            time: operation.invoked_at,
            rank: Rank::Call,
            op,
        });
        // An unknown operation completes (as `:info`) after everything else.
        let rank = match operation.completed_at {
            None => Rank::Unknown,
            Some(at) if next_call[op] == Some(at) => Rank::BeforeOwnCall,
            Some(_) => Rank::Completion,
        };
        events.push(JepsenEvent {
            time: operation.completed_at.unwrap_or(end),
            rank,
            op,
        });
    }
    events.sort_by_key(|e| (e.rank == Rank::Unknown, e.time, e.rank, e.op));
    // Each client's process: its number, plus the number of clients after each of its
    // operations that ended unknown (that process never completes, as a crashed one).
    let process = process_numbers(ops, clients);
    let mut out = io::BufWriter::new(out);
    for (index, e) in events.iter().enumerate() {
        let operation = &ops[e.op];
        let (f, invoked) = jepsen_invocation(&operation.input);
        let (kind, value) = match e.rank {
            Rank::Call => ("invoke", invoked),
            _ => jepsen_completion(operation, invoked),
        };
        writeln!(
            out,
            "{{:index {index}, :time {}, :type :{kind}, :process {}, :f :{f}, :value {value}}}",
            nanos(e.time),
            process[e.op]
        )?;
    }
    out.flush()
}

/// The `:type` and `:value` of an operation's completion.
fn jepsen_completion(
    operation: &Operation<KvInput, KvOutput>,
    invoked: String,
) -> (&'static str, String) {
    match (&operation.outcome, operation.input) {
        (Outcome::Ok(KvOutput::Read(v)), KvInput::Read { key }) => {
            ("ok", format!("[{key} {}]", Opt(*v, NIL)))
        }
        (Outcome::Ok(KvOutput::Cas(false)) | Outcome::Fail, _) => ("fail", invoked),
        (Outcome::Ok(_), _) => ("ok", invoked),
        (Outcome::Unknown | Outcome::Pending, _) => ("info", invoked),
    }
}

/// The Jepsen process of each operation (see [`write_jepsen`]).
fn process_numbers(ops: &[Operation<KvInput, KvOutput>], clients: u32) -> Vec<u64> {
    let mut crashed = vec![0u64; clients as usize];
    ops.iter()
        .map(|o| {
            let c = o.client.get();
            let process = u64::from(c) + crashed[c as usize] * u64::from(clients);
            if matches!(o.outcome, Outcome::Unknown | Outcome::Pending) {
                crashed[c as usize] += 1;
            }
            process
        })
        .collect()
}

fn write_porcupine(history: &History<KvInput, KvOutput>, out: &mut dyn Write) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    out.write_all(b"[")?;
    let mut first = true;
    for operation in history.operations() {
        let (output, ret) = match (&operation.outcome, operation.completed_at) {
            (Outcome::Fail, _) => continue,
            (Outcome::Ok(output), Some(at)) => (porcupine_output(output), nanos(at)),
            _ => (NULL.to_owned(), i64::MAX),
        };
        let input = match operation.input {
            KvInput::Read { key } => format!(r#"{{"op": "read", "key": {key}}}"#),
            KvInput::Write { key, value } => {
                format!(r#"{{"op": "write", "key": {key}, "value": {value}}}"#)
            }
            KvInput::Cas { key, expect, new } => format!(
                r#"{{"op": "cas", "key": {key}, "expect": {}, "new": {new}}}"#,
                Opt(expect, NULL)
            ),
        };
        write!(
            out,
            "{}\n{{\"ClientId\": {}, \"Input\": {input}, \"Call\": {}, \"Output\": {output}, \"Return\": {ret}}}",
            if first { "" } else { "," },
            operation.client.get(),
            nanos(operation.invoked_at),
        )?;
        first = false;
    }
    out.write_all(b"\n]\n")?;
    out.flush()
}

fn porcupine_output(output: &KvOutput) -> String {
    match *output {
        KvOutput::Read(v) => format!(r#"{{"value": {}}}"#, Opt(v, NULL)),
        KvOutput::Written => "{}".to_owned(),
        KvOutput::Cas(ok) => format!(r#"{{"ok": {ok}}}"#),
    }
}
