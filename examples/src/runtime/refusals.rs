//! The log of refused connections and credentials, held to a rate: a peer refused at the
//! handshake (no secret, a certificate of another authority or of another node) and a
//! client's wrong password are each worth a line, but a flood of them must not become a
//! flood of lines (nor a disk filled, nor the log made unreadable).
//!
//! [`RefusalLog`] writes at most `lines_max` lines per interval; the refusals past that are
//! counted, and the next line written says how many were not (`... [and 1234 more refusals
//! not logged since the last line]`). A burst followed by silence is not left untold: once
//! the interval of the refusals held is over, the last of them is written with the count of
//! the others ([`RefusalLog::flush_at`]), by a thread of the process's log that waits for
//! that moment ([`RefusalLog::log`]). One log serves a whole process ([`REFUSALS`]), so the
//! limit holds whatever mix of refusals arrives. Time comes in as a value, so the limit is
//! tested without waiting.
// tidy: driver: writes its lines to standard error, from a thread of its own when a line is due.

use std::io::Write;
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Refusal lines a node writes per [`REFUSAL_LOG_INTERVAL`] at most.
pub const REFUSAL_LINES_PER_INTERVAL_MAX: u32 = 10;
/// The interval [`REFUSAL_LINES_PER_INTERVAL_MAX`] counts over.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The process's refusal log, writing to standard error.
pub static REFUSALS: RefusalLog =
    RefusalLog::new(REFUSAL_LINES_PER_INTERVAL_MAX, REFUSAL_LOG_INTERVAL);

/// A log of refusals that writes at most a number of lines per interval and counts the rest.
#[derive(Debug)]
pub struct RefusalLog {
    lines_max: u32,
    interval: Duration,
    state: Mutex<State>,
    /// The thread that writes the held refusals' line once their interval is over (started
    /// by the first [`RefusalLog::log`] that holds one; `None` if it could not be).
    flusher: OnceLock<Option<Thread>>,
}

#[derive(Debug)]
struct State {
    /// When the current interval began (`None` before the first line).
    since: Option<Instant>,
    /// Lines written in it.
    written: u32,
    /// Refusals not written since the last line that was.
    held: u64,
    /// The line of the last refusal held (written, with the count of the others, if no
    /// refusal comes to carry the count once the interval is over).
    last_held: String,
}

impl RefusalLog {
    /// A log writing at most `lines_max` lines per `interval`.
    #[must_use]
    pub const fn new(lines_max: u32, interval: Duration) -> RefusalLog {
        RefusalLog {
            lines_max,
            interval,
            state: parking_lot::const_mutex(State {
                since: None,
                written: 0,
                held: 0,
                last_held: String::new(),
            }),
            flusher: OnceLock::new(),
        }
    }

    /// Decides on one refusal at `now`, whose line is `line`: `Some(held)` to write its
    /// line, saying that `held` refusals before it were not written; `None` to count it and
    /// write nothing.
    pub fn admit(&self, now: Instant, line: &str) -> Option<u64> {
        let mut state = self.state.lock();
        let fresh = state
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= self.interval);
        if fresh {
            state.since = Some(now);
            state.written = 0;
        }
        if state.written >= self.lines_max {
            state.held += 1;
            state.last_held.clear();
            state.last_held.push_str(line);
            return None;
        }
        state.written += 1;
        state.last_held.clear();
        Some(std::mem::take(&mut state.held))
    }

    /// Writes `line` (one line, without its newline) to `out` unless past the limit at
    /// `now`; returns whether it did.
    pub fn write_at(&self, now: Instant, out: &mut dyn Write, line: &str) -> bool {
        let Some(held) = self.admit(now, line) else {
            return false;
        };
        write_line(out, line, held);
        true
    }

    /// When the refusals held since the last line written are to be told of (the end of
    /// the interval they were held in); `None` while none is held.
    #[must_use]
    pub fn due(&self) -> Option<Instant> {
        let state = self.state.lock();
        let since = state.since.filter(|_| state.held > 0)?;
        Some(since + self.interval)
    }

    /// Once the interval of the refusals held is over at `now` ([`RefusalLog::due`]),
    /// writes the last of them with the count of the others, as the line a refusal coming
    /// then would have carried the count in; returns whether it wrote. The line counts
    /// against a new interval.
    pub fn flush_at(&self, now: Instant, out: &mut dyn Write) -> bool {
        let (line, held) = {
            let mut state = self.state.lock();
            let due = state
                .since
                .filter(|_| state.held > 0)
                .map(|s| s + self.interval);
            if due.is_none_or(|due| now < due) {
                return false;
            }
            state.since = Some(now);
            state.written = 1;
            let held = std::mem::take(&mut state.held);
            (std::mem::take(&mut state.last_held), held - 1)
        };
        write_line(out, &line, held);
        true
    }

    /// Writes `line` to standard error unless past the limit now. A line held is written
    /// (or counted) once its interval is over, even if no other refusal comes: a thread of
    /// the log waits for that moment.
    pub fn log(&'static self, line: &str) {
        if !self.write_at(Instant::now(), &mut std::io::stderr().lock(), line) {
            self.wake_flusher();
        }
    }

    /// Wakes the thread that writes the held refusals' line when due, starting it the first
    /// time.
    fn wake_flusher(&'static self) {
        let flusher = self.flusher.get_or_init(|| {
            std::thread::Builder::new()
                .name("synod-refusals".into())
                .spawn(move || {
                    loop {
                        match self.due() {
                            // Woken by the next refusal held.
                            None => std::thread::park(),
                            Some(due) => {
                                let now = Instant::now();
                                if due <= now {
                                    self.flush_at(now, &mut std::io::stderr().lock());
                                } else {
                                    std::thread::park_timeout(due - now);
                                }
                            }
                        }
                    }
                })
                .ok()
                .map(|handle| handle.thread().clone())
        });
        if let Some(thread) = flusher {
            thread.unpark();
        }
    }
}

/// Writes a refusal's line, with the count of those not written before it.
fn write_line(out: &mut dyn Write, line: &str, held: u64) {
    let _ = if held == 0 {
        writeln!(out, "{line}")
    } else {
        writeln!(
            out,
            "{line} [and {held} more refusals not logged since the last line]"
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_written_as_at_most_the_limit_per_interval_and_the_rest_counted() {
        let log = RefusalLog::new(5, Duration::from_secs(1));
        let start = Instant::now();
        let mut out = Vec::new();
        // 10,000 refusals over 3.5 s, then one more a second later.
        let flood = 10_000u32;
        for i in 0..flood {
            let at = start + Duration::from_micros(u64::from(i) * 350);
            log.write_at(at, &mut out, &format!("refused {i}"));
        }
        log.write_at(
            start + Duration::from_millis(4_600),
            &mut out,
            "refused last",
        );
        let text = String::from_utf8(out).expect("text");
        let lines: Vec<&str> = text.lines().collect();
        // Four intervals of the flood and one after it, five lines each at most.
        assert!(lines.len() <= 5 * 5, "{} lines", lines.len());
        assert!(lines.len() >= 5, "{} lines", lines.len());
        // Every refusal is either written or counted in a later line.
        let counted: u64 = lines
            .iter()
            .filter_map(|l| l.split("[and ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted + lines.len() as u64, u64::from(flood) + 1);
        assert!(lines.last().unwrap().starts_with("refused last [and "));
    }

    #[test]
    fn a_burst_then_silence_is_told_once_its_interval_is_over() {
        let log = RefusalLog::new(3, Duration::from_secs(1));
        let start = Instant::now();
        let mut out = Vec::new();
        for i in 0..100u64 {
            log.write_at(
                start + Duration::from_millis(i),
                &mut out,
                &format!("refused {i}"),
            );
        }
        assert_eq!(log.due(), Some(start + Duration::from_secs(1)));
        // Not before the interval is over.
        assert!(!log.flush_at(start + Duration::from_millis(999), &mut out));
        assert!(log.flush_at(start + Duration::from_secs(1), &mut out));
        let text = String::from_utf8(out).expect("text");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "refused 0",
                "refused 1",
                "refused 2",
                "refused 99 [and 96 more refusals not logged since the last line]"
            ]
        );
        // Nothing is held any more, and nothing more is written.
        assert_eq!(log.due(), None);
        let mut more = Vec::new();
        assert!(!log.flush_at(start + Duration::from_secs(5), &mut more));
        assert!(more.is_empty());
    }

    #[test]
    fn a_quiet_log_writes_every_line_as_it_is() {
        let log = RefusalLog::new(2, Duration::from_secs(1));
        let start = Instant::now();
        let mut out = Vec::new();
        for i in 0..4u64 {
            assert!(log.write_at(start + Duration::from_secs(i), &mut out, "refused"));
        }
        assert_eq!(String::from_utf8(out).unwrap(), "refused\n".repeat(4));
    }
}
