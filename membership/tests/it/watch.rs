//! The watch hub against synod-sim's checker of the six watch guarantees: two replicas'
//! hubs fed the same revisions at their own pace (one also jumping ahead as a snapshot
//! install does), watchers with small buffers and a short history, polled at random,
//! moved from one hub to the other and resumed from where they stopped.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use synod_membership::watch::{
    Event, Filter, Notification, WatchConfig, WatchError, WatchHub, WatchId,
};
use synod_node::Time;
use synod_sim::{WatchChange, WatchChecker, WatchFilter};

const KEYS: [&str; 5] = ["a", "a/1", "a/2", "b", "b/1"];
const FILTERS: [(bool, &str); 4] = [(true, "a"), (false, "a/"), (false, ""), (true, "b/1")];

#[derive(Clone, Debug)]
enum Op {
    /// A new revision: these keys (indexes into KEYS), put (true) or deleted.
    Write(Vec<(usize, bool)>),
    /// Feed up to n more revisions to hub h.
    Feed(usize, usize),
    /// Hub h jumps to the newest revision (a snapshot installed).
    Jump(usize),
    /// A watcher on hub h, with this filter, from the newest revision minus back
    /// (zero: the next revision).
    Watch(usize, usize, u64),
    /// Poll watcher w (index into the live ones).
    Poll(usize),
    /// Watcher w disconnects and resumes on the other hub.
    Move(usize),
    /// Ask watcher w for progress.
    Progress(usize),
    /// Periodic progress, at this many milliseconds.
    Wake(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..KEYS.len(), any::<bool>()), 1..4).prop_map(Op::Write),
        3 => (0..2usize, 1..4usize).prop_map(|(h, n)| Op::Feed(h, n)),
        1 => Just(Op::Jump(1)),
        2 => (0..2usize, 0..FILTERS.len(), 0..6u64).prop_map(|(h, f, b)| Op::Watch(h, f, b)),
        4 => (0..8usize).prop_map(Op::Poll),
        1 => (0..8usize).prop_map(Op::Move),
        1 => (0..8usize).prop_map(Op::Progress),
        1 => (0..100_000u64).prop_map(Op::Wake),
    ]
}

struct Watcher {
    stream: u64,
    hub: usize,
    id: WatchId,
    filter: Filter,
}

struct Run {
    truth: Vec<Vec<Event>>,
    hubs: [WatchHub; 2],
    watchers: Vec<Watcher>,
    checker: WatchChecker,
    streams: u64,
}

fn config() -> WatchConfig {
    WatchConfig {
        buffered_events_max: 3,
        history_revisions_max: 6,
        ..WatchConfig::default()
    }
}

fn change(e: &Event) -> WatchChange {
    WatchChange {
        key: e.key.to_vec(),
        value: e.value.as_ref().map(|v| v.to_vec()),
    }
}

impl Run {
    fn new(broken: bool) -> Run {
        let hub = |broken| {
            if broken {
                WatchHub::broken_skipping_on_catch_up(config(), 0)
            } else {
                WatchHub::new(config(), 0)
            }
        };
        Run {
            truth: Vec::new(),
            hubs: [hub(broken), hub(broken)],
            watchers: Vec::new(),
            checker: WatchChecker::new(),
            streams: 0,
        }
    }

    fn feed(&mut self, h: usize, n: usize) -> Result<(), String> {
        for _ in 0..n {
            let next = self.hubs[h].revision() + 1;
            let Some(events) = self.truth.get(next as usize - 1) else {
                return Ok(());
            };
            let changes = events.iter().map(change).collect();
            self.checker
                .applied(h as u64, next, changes)
                .map_err(|v| v.0)?;
            self.hubs[h]
                .apply(next, events.clone())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Starts (or resumes) stream `stream` on hub `h` from `start`.
    fn open(&mut self, stream: u64, h: usize, filter: Filter, start: u64) -> Result<(), String> {
        match self.hubs[h].watch(stream, filter.clone(), Some(start)) {
            Ok(id) => {
                self.watchers.push(Watcher {
                    stream,
                    hub: h,
                    id,
                    filter,
                });
                Ok(())
            }
            Err(WatchError::Compacted { compacted, .. }) => {
                if compacted < start {
                    return Err(format!("start {start} refused at compacted {compacted}"));
                }
                self.checker.compacted(stream, compacted).map_err(|v| v.0)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn poll(&mut self, w: usize) -> Result<bool, String> {
        let watcher = &self.watchers[w];
        let stream = watcher.stream;
        let Some(n) = self.hubs[watcher.hub].poll(watcher.id) else {
            return Ok(false);
        };
        match n {
            Notification::Events(events) => {
                let batch: Vec<_> = events.iter().map(|e| (e.revision, change(e))).collect();
                self.checker.events(stream, &batch).map_err(|v| v.0)?;
            }
            Notification::Progress(p) => self.checker.progress(stream, p).map_err(|v| v.0)?,
            Notification::Cancelled(WatchError::Compacted { compacted, .. }) => {
                self.checker.compacted(stream, compacted).map_err(|v| v.0)?;
                self.watchers.remove(w);
            }
            Notification::Cancelled(e) => return Err(e.to_string()),
        }
        Ok(true)
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        let live = self.watchers.len();
        match op {
            Op::Write(keys) => {
                let revision = self.truth.len() as u64 + 1;
                let events = keys
                    .iter()
                    .map(|&(k, put)| {
                        if put {
                            Event::put(revision, KEYS[k], format!("{revision}"), revision, 1)
                        } else {
                            Event::delete(revision, KEYS[k])
                        }
                    })
                    .collect();
                self.truth.push(events);
            }
            Op::Feed(h, n) => self.feed(*h, *n)?,
            Op::Jump(h) => {
                let to = self.truth.len() as u64;
                if to > self.hubs[*h].revision() + 1 {
                    for r in self.hubs[*h].revision() + 1..=to {
                        let changes = self.truth[r as usize - 1].iter().map(change).collect();
                        self.checker
                            .applied(*h as u64, r, changes)
                            .map_err(|v| v.0)?;
                    }
                    self.hubs[*h].reset(to);
                }
            }
            Op::Watch(h, f, back) => {
                let (exact, text) = FILTERS[*f];
                let filter = if exact {
                    Filter::Key(text.into())
                } else {
                    Filter::Prefix(text.into())
                };
                let checked = if exact {
                    WatchFilter::Key(text.into())
                } else {
                    WatchFilter::Prefix(text.into())
                };
                let start = (self.hubs[*h].revision() + 1).saturating_sub(*back).max(1);
                self.streams += 1;
                let stream = self.streams;
                self.checker.start(stream, checked, start);
                self.open(stream, *h, filter, start)?;
            }
            Op::Poll(w) if *w < live => {
                self.poll(*w)?;
            }
            Op::Move(w) if *w < live => {
                let old = self.watchers.remove(*w);
                self.hubs[old.hub].cancel(old.id);
                if let Some(from) = self.checker.resume_from(old.stream) {
                    self.open(old.stream, 1 - old.hub, old.filter, from)?;
                }
            }
            Op::Progress(w) if *w < live => {
                let watcher = &self.watchers[*w];
                self.hubs[watcher.hub].request_progress(watcher.id);
            }
            Op::Wake(ms) => {
                for hub in &mut self.hubs {
                    hub.wake(Time::from_millis(*ms));
                }
            }
            Op::Poll(_) | Op::Move(_) | Op::Progress(_) => {}
        }
        Ok(())
    }

    /// Feeds both hubs everything, drains every watcher, and checks none was left short.
    fn finish(&mut self) -> Result<(), String> {
        for h in 0..2 {
            self.feed(h, self.truth.len())?;
        }
        let mut w = 0;
        while w < self.watchers.len() {
            let before = self.watchers.len();
            while w < self.watchers.len() && self.watchers.len() == before && self.poll(w)? {}
            if self.watchers.len() == before {
                let watcher = &self.watchers[w];
                let revision = self.hubs[watcher.hub].revision();
                self.checker
                    .caught_up(watcher.stream, revision)
                    .map_err(|v| v.0)?;
                w += 1;
            }
        }
        Ok(())
    }
}

fn run(ops: &[Op], broken: bool) -> Result<(), String> {
    let mut run = Run::new(broken);
    for op in ops {
        run.step(op)?;
    }
    run.finish()
}

proptest! {
    #![proptest_config(Config { cases: 400, ..Config::default() })]

    #[test]
    fn every_stream_keeps_the_six_guarantees(ops in prop::collection::vec(op(), 1..120)) {
        prop_assert_eq!(run(&ops, false), Ok(()));
    }
}

#[test]
fn the_checker_catches_a_hub_that_skips_an_event_on_catch_up() {
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let found = runner.run(&prop::collection::vec(op(), 1..120), |ops| {
        prop_assert_eq!(run(&ops, true), Ok(()));
        Ok(())
    });
    let Err(failure) = found else {
        panic!("400 random runs of the skipping hub passed the checker");
    };
    println!("caught: {failure}");
}
