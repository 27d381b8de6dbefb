//! Timestamps of the steps on a request's path, for measuring where its time goes: off
//! unless the node starts with `SYNOD_TRACE_STEPS=PREFIX` in its environment, and then
//! written to `PREFIX.PID` (one line per step: nanoseconds on the system's monotonic clock,
//! which every process of the machine shares, and the step's name).
// tidy: driver: reads the monotonic clock and writes the trace file on a thread of its own.
//!
//! Off, [`mark`] costs one atomic load. On, it stores the time and the step in a buffer of
//! [`TRACE_MARKS_MAX`] entries (past it marks are dropped and counted at the file's end);
//! a thread of its own appends what was marked to the file every [`TRACE_FLUSH_PERIOD`].
//! The steps are those of one client's write on the Consistent Core (see BENCHMARKS.md,
//! where the breakdown is written down); a script pairs each request read on the leader
//! with the steps that follow it on every node, which is unambiguous with one client.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Marks kept; past it, marks are dropped (and counted).
pub const TRACE_MARKS_MAX: usize = 1 << 20;
/// How often the trace's thread appends what was marked to the file.
pub const TRACE_FLUSH_PERIOD: Duration = Duration::from_millis(200);
/// The environment variable that turns the trace on: the file's path without its `.PID`.
pub const TRACE_ENV: &str = "SYNOD_TRACE_STEPS";

/// A step on a request's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// The client loop read a client's bytes.
    RequestRead = 1,
    /// Events were queued to the worker thread (or taken up by the thread that had them).
    Queued,
    /// The worker thread took events up after waking.
    WorkerWoke,
    /// An append with entries was handed to the transport.
    AppendSent,
    /// A transport reader read an append with entries.
    AppendRead,
    /// The log's sync began.
    SyncBegan,
    /// The log's sync returned.
    Synced,
    /// An append's acknowledgement was handed to the transport.
    AckSent,
    /// A transport reader read an append's acknowledgement.
    AckRead,
    /// The node answered a client's request (its commit, for a write).
    Answered,
    /// The client loop took the answers delivered to it.
    AnswerTaken,
    /// The client loop wrote replies to a client.
    ReplyWritten,
}

impl Step {
    const ALL: [Step; 12] = [
        Step::RequestRead,
        Step::Queued,
        Step::WorkerWoke,
        Step::AppendSent,
        Step::AppendRead,
        Step::SyncBegan,
        Step::Synced,
        Step::AckSent,
        Step::AckRead,
        Step::Answered,
        Step::AnswerTaken,
        Step::ReplyWritten,
    ];

    /// The step's name in the file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Step::RequestRead => "request_read",
            Step::Queued => "queued",
            Step::WorkerWoke => "worker_woke",
            Step::AppendSent => "append_sent",
            Step::AppendRead => "append_read",
            Step::SyncBegan => "sync_began",
            Step::Synced => "synced",
            Step::AckSent => "ack_sent",
            Step::AckRead => "ack_read",
            Step::Answered => "answered",
            Step::AnswerTaken => "answer_taken",
            Step::ReplyWritten => "reply_written",
        }
    }

    fn from_code(code: u8) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u8 == code)
    }
}

/// The marks: each a time in its low 56 bits and a step in its top 8 (0: not written yet).
struct Recorder {
    marks: Box<[AtomicU64]>,
    next: AtomicUsize,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// The system's monotonic clock, in nanoseconds (the same in every process).
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Records that `step` happens now, if the trace is on.
#[inline]
pub fn mark(step: Step) {
    if let Some(recorder) = RECORDER.get() {
        let i = recorder.next.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = recorder.marks.get(i) {
            let time = monotonic_ns() & ((1 << 56) - 1);
            slot.store(time | (u64::from(step as u8) << 56), Ordering::Release);
        }
    }
}

/// Turns the trace on if [`TRACE_ENV`] names a file prefix (once per process): a file that
/// cannot be created is said on standard error, and the trace stays off.
pub fn init() {
    let Some(prefix) = std::env::var_os(TRACE_ENV) else {
        return;
    };
    let mut path = prefix;
    path.push(format!(".{}", std::process::id()));
    let file = match std::fs::File::create(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("synod node: {TRACE_ENV}: cannot create {path:?}: {e}; no trace");
            return;
        }
    };
    let recorder = Recorder {
        marks: (0..TRACE_MARKS_MAX).map(|_| AtomicU64::new(0)).collect(),
        next: AtomicUsize::new(0),
    };
    if RECORDER.set(recorder).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("synod-trace".into())
        .spawn(move || write_marks(file));
    if let Err(e) = spawned {
        eprintln!("synod node: {TRACE_ENV}: cannot start the trace's thread: {e}");
    }
}

/// The trace's thread: appends what was marked to `file` every [`TRACE_FLUSH_PERIOD`].
fn write_marks(file: std::fs::File) {
    let Some(recorder) = RECORDER.get() else {
        return;
    };
    let mut out = std::io::BufWriter::new(file);
    let mut written = 0;
    let mut dropped_said = 0;
    loop {
        std::thread::sleep(TRACE_FLUSH_PERIOD);
        let marked = recorder.next.load(Ordering::Relaxed);
        while written < marked.min(TRACE_MARKS_MAX) {
            let mark = recorder.marks[written].load(Ordering::Acquire);
            let Some(step) = u8::try_from(mark >> 56).ok().and_then(Step::from_code) else {
                // Reserved, not stored yet: taken at the next round.
                break;
            };
            let _ = writeln!(out, "{} {}", mark & ((1 << 56) - 1), step.name());
            written += 1;
        }
        let dropped = marked.saturating_sub(TRACE_MARKS_MAX);
        if dropped > dropped_said {
            let _ = writeln!(out, "# {dropped} marks dropped past {TRACE_MARKS_MAX}");
            dropped_said = dropped;
        }
        let _ = out.flush();
    }
}
