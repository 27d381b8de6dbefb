//! The demo's workload: client threads doing GET, SET and CAS over RESP, each operation
//! recorded with its invocation and completion time; the history built from those records
//! for synod-sim's linearizability checker; the read-back of acknowledged writes.
// tidy: driver: client threads over TCP, timed with the system clock.
//!
//! Every key is a register holding a decimal `u64`. Every SET writes a value no other
//! write uses (the client's number in the high bits, a counter in the low ones), so a
//! value read names the write that produced it. Each client has a session, so a write
//! retried after a dropped connection is applied once. An operation whose reply never
//! came (the call gave up, or the node answered an error) is recorded as unknown: it may
//! or may not have taken effect, and the checker allows both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use synod_node::Rng;
use synod_sim::{ClientId, History, KvInput, KvOutput, SimTime};

use crate::consistent_core::client::Client;
use crate::resp::Value;

/// Keys the workload touches.
pub(crate) const KEYS: u64 = 32;

/// How long one call may take, retries on other nodes included, before it is unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The seed of the workload's choices; client `c` draws from `Rng::new(WORKLOAD_SEED ^ c)`.
const WORKLOAD_SEED: u64 = 0x5eed;

/// One operation as a client saw it.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// Which client.
    pub(crate) client: u32,
    /// What it asked.
    pub(crate) input: KvInput,
    /// When it asked, since the demo began.
    pub(crate) invoked: Duration,
    /// The reply and when it came; `None` if it never came.
    pub(crate) reply: Option<(KvOutput, Duration)>,
}

/// Counters the progress display reads while the clients run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Operations answered.
    pub(crate) ok: AtomicU64,
    /// Operations without an answer.
    pub(crate) unknown: AtomicU64,
}

/// The RESP name of a key.
pub(crate) fn key_name(key: u64) -> String {
    format!("demo:{key}")
}

fn parse_value(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn connect(addrs: &[String], client: u32) -> Client {
    // Each client starts on a different node; followers forward to the leader.
    let mut rotated = addrs.to_vec();
    rotated.rotate_left(client as usize % addrs.len().max(1));
    Client::new(&rotated).with_timeout(CALL_TIMEOUT)
}

/// Runs one client until `stop`; returns what it did.
pub(crate) fn run_client(
    client: u32,
    addrs: &[String],
    start: Instant,
    stop: &AtomicBool,
    counters: &Counters,
) -> Vec<Record> {
    // The workload's choices: one seeded generator per client, each with its own stream.
    let mut rng = Rng::new(WORKLOAD_SEED ^ u64::from(client));
    let mut records = Vec::new();
    let mut known: BTreeMap<u64, u64> = BTreeMap::new();
    let mut seq: u64 = 0;
    let mut conn: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let session = match conn.as_mut() {
            Some(c) => c,
            None => {
                let mut c = connect(addrs, client);
                if c.register().is_err() {
                    // No cluster to talk to right now (an election): try again shortly.
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                conn.insert(c)
            }
        };
        let key = rng.below(KEYS);
        let roll = rng.below(10);
        seq += 1;
        let fresh = (u64::from(client) + 1) << 40 | seq;
        let input = match (roll, known.get(&key)) {
            (0..=4, _) => KvInput::Read { key },
            (5..=7, _) | (_, None) => KvInput::Write { key, value: fresh },
            (_, Some(&expect)) => KvInput::Cas {
                key,
                expect: Some(expect),
                new: fresh,
            },
        };
        let name = key_name(key);
        let invoked = start.elapsed();
        let reply = match input {
            KvInput::Read { .. } => session.call(&[b"GET", name.as_bytes()]),
            KvInput::Write { value, .. } => {
                session.call(&[b"SET", name.as_bytes(), value.to_string().as_bytes()])
            }
            KvInput::Cas { expect, new, .. } => session.call(&[
                b"CAS",
                name.as_bytes(),
                expect.unwrap_or_default().to_string().as_bytes(),
                new.to_string().as_bytes(),
            ]),
        };
        let completed = start.elapsed();
        let output = match (input, reply) {
            (KvInput::Read { .. }, Ok(Value::Nil)) => Some(KvOutput::Read(None)),
            // A value that is not a number no write wrote: u64::MAX makes the checker say so.
            (KvInput::Read { .. }, Ok(Value::Bulk(b))) => {
                Some(KvOutput::Read(Some(parse_value(&b).unwrap_or(u64::MAX))))
            }
            (KvInput::Write { .. }, Ok(Value::Simple(ok))) if ok == "OK" => Some(KvOutput::Written),
            (KvInput::Cas { .. }, Ok(Value::Int(n))) if n == 0 || n == 1 => {
                Some(KvOutput::Cas(n == 1))
            }
            _ => None,
        };
        match output {
            Some(out) => {
                match (input, out) {
                    (_, KvOutput::Read(Some(v))) | (KvInput::Write { value: v, .. }, _) => {
                        known.insert(key, v);
                    }
                    (KvInput::Cas { new, .. }, KvOutput::Cas(true)) => {
                        known.insert(key, new);
                    }
                    _ => {}
                }
                counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                // The session's next number is uncertain after an unanswered write: start
                // a new session rather than reuse it for a different command.
                conn = None;
                counters.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        records.push(Record {
            client,
            input,
            invoked,
            reply: output.map(|o| (o, completed)),
        });
    }
    records
}

/// Starts `clients` client threads; [`Running::finish`] stops them and collects their
/// records.
#[derive(Debug)]
pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<std::thread::JoinHandle<Vec<Record>>>,
}

impl Running {
    /// Starts the clients against `addrs`; times are measured from `start`.
    pub(crate) fn start(clients: u32, addrs: &[String], start: Instant) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let threads = (0..clients)
            .map(|client| {
                let (stop, counters, addrs) =
                    (Arc::clone(&stop), Arc::clone(&counters), addrs.to_vec());
                std::thread::spawn(move || run_client(client, &addrs, start, &stop, &counters))
            })
            .collect();
        Running {
            stop,
            counters,
            threads,
        }
    }

    /// The live counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Stops the clients (each finishes its operation in flight) and returns every record.
    pub(crate) fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for thread in self.threads {
            // A client thread that panicked loses its records; the run then fails below
            // only if that hides a problem, so report it.
            match thread.join() {
                Ok(records) => all.extend(records),
                Err(_) => eprintln!("synod demo: a client thread panicked"),
            }
        }
        all
    }
}

/// The final read of every key, after the workload stopped and every node caught up.
///
/// # Errors
///
/// The key whose read failed, and why.
pub(crate) fn read_back(
    addrs: &[String],
    start: Instant,
    client: u32,
) -> Result<Vec<Record>, String> {
    let mut conn = Client::new(addrs).with_timeout(Duration::from_secs(20));
    let mut records = Vec::new();
    for key in 0..KEYS {
        let name = key_name(key);
        let invoked = start.elapsed();
        let value = match conn.call(&[b"GET", name.as_bytes()]) {
            Ok(Value::Nil) => None,
            Ok(Value::Bulk(b)) => Some(parse_value(&b).unwrap_or(u64::MAX)),
            Ok(other) => return Err(format!("GET {name} answered {other:?}")),
            Err(e) => return Err(format!("GET {name}: {e}")),
        };
        records.push(Record {
            client,
            input: KvInput::Read { key },
            invoked,
            reply: Some((KvOutput::Read(value), start.elapsed())),
        });
    }
    Ok(records)
}

fn micros(d: Duration) -> SimTime {
    SimTime::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The records as a history in invocation order, unanswered operations unknown.
pub(crate) fn history(records: &[Record]) -> History<KvInput, KvOutput> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| r.invoked);
    let mut history = History::new();
    for r in sorted {
        let op = history.invoke(ClientId::new(r.client), r.input, micros(r.invoked));
        let done = match r.reply {
            Some((output, at)) => history.ok(op, output, micros(at)),
            None => history.unknown(op),
        };
        debug_assert!(done.is_ok(), "a fresh operation completes once");
    }
    history
}

/// Acknowledged writes that the final reads (`finals`, one per key) do not account for.
///
/// An acknowledged write W to key k is lost if the final value of k is absent, is a value
/// no write wrote, or was written by a write X that was acknowledged before W was even
/// invoked (X precedes W in real time, so W must come after it in every order the
/// cluster could have applied them in). Returns (acknowledged writes, lost writes).
pub(crate) fn lost_writes(records: &[Record], finals: &[Record]) -> (usize, Vec<String>) {
    let final_of: BTreeMap<u64, Option<u64>> = finals
        .iter()
        .filter_map(|r| match (r.input, r.reply) {
            (KvInput::Read { key }, Some((KvOutput::Read(v), _))) => Some((key, v)),
            _ => None,
        })
        .collect();
    // Every write that may have taken effect: value -> (key, when its ack came, if it came).
    let mut writers: BTreeMap<u64, (u64, Option<Duration>)> = BTreeMap::new();
    let mut acked = Vec::new();
    for r in records {
        let (key, value) = match r.input {
            KvInput::Write { key, value } => (key, value),
            KvInput::Cas { key, new, .. } => (key, new),
            KvInput::Read { .. } => continue,
        };
        match r.reply {
            Some((KvOutput::Written | KvOutput::Cas(true), at)) => {
                writers.insert(value, (key, Some(at)));
                acked.push((key, value, r.invoked));
            }
            Some(_) => {}
            None => {
                writers.insert(value, (key, None));
            }
        }
    }
    let mut lost = Vec::new();
    for &(key, value, invoked) in &acked {
        let why = match final_of.get(&key) {
            None => Some("its key was not read back".to_string()),
            Some(None) => Some("its key is absent".to_string()),
            Some(Some(v)) => match writers.get(v) {
                Some(&(k, _)) if k != key => Some(format!("the key holds {v}, written to {k}")),
                None => Some(format!("the key holds {v}, which no write wrote")),
                Some(&(_, Some(at))) if at < invoked => Some(format!(
                    "the key holds {v}, acknowledged before this write began"
                )),
                Some(_) => None,
            },
        };
        if let Some(why) = why {
            lost.push(format!("{} = {value}: {why}", key_name(key)));
        }
    }
    (acked.len(), lost)
}

/// Latency percentile `p` (0 to 100) of the answered operations.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn write(key: u64, value: u64, from: u64, to: Option<u64>) -> Record {
        Record {
            client: 0,
            input: KvInput::Write { key, value },
            invoked: ms(from),
            reply: to.map(|t| (KvOutput::Written, ms(t))),
        }
    }

    fn read(key: u64, value: Option<u64>) -> Record {
        Record {
            client: 9,
            input: KvInput::Read { key },
            invoked: ms(100),
            reply: Some((KvOutput::Read(value), ms(101))),
        }
    }

    #[test]
    fn a_write_overwritten_by_a_later_or_concurrent_write_is_not_lost() {
        // 1 then 2 in sequence; 3 concurrent with 2; final 3 or 2 is fine.
        let records = [
            write(0, 1, 0, Some(10)),
            write(0, 2, 20, Some(30)),
            write(0, 3, 25, Some(40)),
        ];
        assert_eq!(lost_writes(&records, &[read(0, Some(3))]), (3, Vec::new()));
        assert_eq!(lost_writes(&records, &[read(0, Some(2))]), (3, Vec::new()));
        // An unknown write may be the last one applied.
        let with_unknown = [write(0, 1, 0, Some(10)), write(0, 4, 20, None)];
        assert_eq!(
            lost_writes(&with_unknown, &[read(0, Some(4))]),
            (1, Vec::new())
        );
    }

    #[test]
    fn a_lost_write_is_counted() {
        let records = [write(0, 1, 0, Some(10)), write(0, 2, 20, Some(30))];
        // The final value is the write that finished before 2 began: 2 was lost.
        let (acked, lost) = lost_writes(&records, &[read(0, Some(1))]);
        assert_eq!((acked, lost.len()), (2, 1));
        assert!(lost[0].starts_with("demo:0 = 2"), "{lost:?}");
        // Absent, or a value nobody wrote: both writes lost.
        assert_eq!(lost_writes(&records, &[read(0, None)]).1.len(), 2);
        assert_eq!(lost_writes(&records, &[read(0, Some(77))]).1.len(), 2);
        // A key never read back.
        assert_eq!(lost_writes(&records, &[]).1.len(), 2);
    }

    #[test]
    fn history_orders_by_invocation_and_marks_unanswered_unknown() {
        let records = [write(0, 2, 20, None), write(0, 1, 0, Some(10))];
        let h = history(&records);
        assert_eq!(h.len(), 2);
        assert_eq!(h.unknown_count(), 1);
        assert_eq!(h.operations()[0].input, KvInput::Write { key: 0, value: 1 });
    }

    #[test]
    fn percentiles_pick_from_the_sorted_latencies() {
        let lat: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&lat, 50), ms(51));
        assert_eq!(percentile(&lat, 99), ms(100));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }
}
