//! The log of refused connections and credentials, held to a rate: a peer refused at the
//! handshake (no secret, a certificate of another authority or of another node) and a
//! client's wrong password are each worth a line, but a flood of them must not become a
//! flood of lines (nor a disk filled, nor the log made unreadable).
//!
//! [`RefusalLog`] writes at most `lines_max` lines per interval; the refusals past that are
//! counted, and the next line written says how many were not (`... [and 1234 more refusals
//! not logged since the last line]`). One log serves a whole process ([`REFUSALS`]), so the
//! limit holds whatever mix of refusals arrives. Time comes in as a value, so the limit is
//! tested without waiting.
// tidy: driver: writes its lines to standard error.

use std::io::Write;
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
}

#[derive(Debug)]
struct State {
    /// When the current interval began (`None` before the first line).
    since: Option<Instant>,
    /// Lines written in it.
    written: u32,
    /// Refusals not written since the last line that was.
    held: u64,
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
            }),
        }
    }

    /// Decides on one refusal at `now`: `Some(held)` to write its line, saying that `held`
    /// refusals before it were not written; `None` to count it and write nothing.
    pub fn admit(&self, now: Instant) -> Option<u64> {
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
            return None;
        }
        state.written += 1;
        Some(std::mem::take(&mut state.held))
    }

    /// Writes `line` (one line, without its newline) to `out` unless past the limit at
    /// `now`; returns whether it did.
    pub fn write_at(&self, now: Instant, out: &mut dyn Write, line: &str) -> bool {
        let Some(held) = self.admit(now) else {
            return false;
        };
        let _ = if held == 0 {
            writeln!(out, "{line}")
        } else {
            writeln!(
                out,
                "{line} [and {held} more refusals not logged since the last line]"
            )
        };
        true
    }

    /// Writes `line` to standard error unless past the limit now.
    pub fn log(&self, line: &str) {
        self.write_at(Instant::now(), &mut std::io::stderr().lock(), line);
    }
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
