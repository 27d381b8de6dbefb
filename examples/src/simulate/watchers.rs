//! Watchers in the `raft-kv` simulation: streams that follow keys through each node's
//! watch hub, disconnect, and resume on another node, every stream checked against the
//! six watch guarantees by `synod_sim::WatchChecker`.
//!
//! Each node keeps a `WatchHub` fed by its [`CoreNode`](crate::consistent_core::node::CoreNode)'s
//! applied changes (a restarted node's hub starts again from the store it recovers, so its
//! history begins at its snapshot). A fixed number of streams ([`WatchOptions::streams`])
//! live in a world shared by the nodes ([`Watchers`]). On each input a node takes, it
//! feeds its hub, polls a random half of the streams attached to it (one notification
//! each: slow consumers fall behind), and now and then takes a stream over from wherever
//! it is, crashed nodes included, and resumes it from one past the last revision it was
//! promised. A stream cancelled as compacted (its start, or the revision it needs next,
//! is older than the node's history) ends, and a new stream starts in its slot from the
//! node's next revision. Every replica's revisions are also checked to hold the same
//! changes. The first broken guarantee fails the run through its invariant.

use std::cell::RefCell;
use std::rc::Rc;

use synod_membership::watch::{Filter, Notification, WatchConfig, WatchError, WatchHub, WatchId};
use synod_node::Time;
use synod_sim::{NodeId, SimRng, WatchChange, WatchChecker, WatchCounts, WatchFilter};

use crate::consistent_core::node::WatchFeed;
use crate::consistent_core::watch::feed;

/// How the simulation's watchers behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Streams alive at once.
    pub streams: usize,
    /// Each node's hub limits: small buffers and histories make watchers fall behind and
    /// meet compaction.
    pub config: WatchConfig,
    /// One input in this many moves a stream to the node taking it.
    pub move_one_in: u64,
    /// The deliberately broken hub that skips a revision when a watcher catches up
    /// (`synod_membership::watch::WatchHub::broken_skipping_on_catch_up`).
    #[cfg(feature = "broken")]
    pub broken_skipping: bool,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            streams: 4,
            config: WatchConfig {
                buffered_events_max: 4,
                history_revisions_max: 24,
                progress_interval_ms: 50,
                ..WatchConfig::default()
            },
            move_one_in: 40,
            #[cfg(feature = "broken")]
            broken_skipping: false,
        }
    }
}

/// The filters streams take, in turn: every key, one key, a prefix of some.
const FILTERS: [(bool, &str); 3] = [(false, "k"), (true, "k1"), (false, "k2")];

#[derive(Debug)]
struct Slot {
    stream: u64,
    filter: Filter,
    /// The node, its incarnation and the watcher id there, while attached.
    attached: Option<(NodeId, u64, WatchId)>,
}

#[derive(Debug)]
struct World {
    options: WatchOptions,
    slots: Vec<Slot>,
    streams: u64,
    incarnations: u64,
    checker: WatchChecker,
    violation: Option<String>,
}

/// The world the simulation's watchers live in, shared by every node (like the
/// simulation's counts); cloning shares it.
#[derive(Clone, Debug)]
pub struct Watchers(Option<Rc<RefCell<World>>>);

impl Watchers {
    /// No watchers: the nodes keep no hub.
    #[must_use]
    pub fn off() -> Watchers {
        Watchers(None)
    }

    /// Watchers as `options` say.
    #[must_use]
    pub fn new(options: WatchOptions) -> Watchers {
        let mut world = World {
            options,
            slots: Vec::new(),
            streams: 0,
            incarnations: 0,
            checker: WatchChecker::new(),
            violation: None,
        };
        for i in 0..options.streams {
            let (exact, text) = FILTERS[i % FILTERS.len()];
            let filter = if exact {
                Filter::Key(text.into())
            } else {
                Filter::Prefix(text.into())
            };
            world.streams += 1;
            let stream = world.streams;
            world.checker.start(stream, checked(&filter), 1);
            world.slots.push(Slot {
                stream,
                filter,
                attached: None,
            });
        }
        Watchers(Some(Rc::new(RefCell::new(world))))
    }

    /// Whether watchers are on.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// What the checker counted.
    #[must_use]
    pub fn counts(&self) -> WatchCounts {
        self.0
            .as_ref()
            .map(|w| w.borrow().checker.counts())
            .unwrap_or_default()
    }

    /// The first broken guarantee, if any.
    #[must_use]
    pub fn violation(&self) -> Option<String> {
        self.0.as_ref().and_then(|w| w.borrow().violation.clone())
    }

    /// A node's part, built at each start (`None` when watchers are off).
    pub(super) fn node(&self, id: NodeId, seed: u64) -> Option<NodeWatch> {
        let world = self.0.clone()?;
        let (incarnation, options) = {
            let mut w = world.borrow_mut();
            w.incarnations += 1;
            (w.incarnations, w.options)
        };
        #[cfg(feature = "broken")]
        let hub = if options.broken_skipping {
            WatchHub::broken_skipping_on_catch_up(options.config, 0)
        } else {
            WatchHub::new(options.config, 0)
        };
        #[cfg(not(feature = "broken"))]
        let hub = WatchHub::new(options.config, 0);
        Some(NodeWatch {
            world,
            id,
            incarnation,
            hub,
            rng: SimRng::new(seed),
        })
    }
}

fn checked(filter: &Filter) -> WatchFilter {
    match filter {
        Filter::Key(k) => WatchFilter::Key(k.to_vec()),
        Filter::Prefix(p) => WatchFilter::Prefix(p.to_vec()),
    }
}

/// One node's hub and its part in the watchers' world.
#[derive(Debug)]
pub(super) struct NodeWatch {
    world: Rc<RefCell<World>>,
    id: NodeId,
    incarnation: u64,
    hub: WatchHub,
    rng: SimRng,
}

impl NodeWatch {
    /// Feeds the hub what the node applied, polls the streams attached here, and maybe
    /// takes one over.
    pub(super) fn step(&mut self, now: Time, items: Vec<WatchFeed>) {
        let shared = Rc::clone(&self.world);
        let mut world = shared.borrow_mut();
        if world.violation.is_some() {
            return;
        }
        if let Err(v) = self.run(&mut world, now, items) {
            world.violation = Some(format!("{}: {v}", self.id));
        }
    }

    fn run(&mut self, world: &mut World, now: Time, items: Vec<WatchFeed>) -> Result<(), String> {
        for item in &items {
            if let WatchFeed::Changes { revision, changes } = item {
                let changes = changes
                    .iter()
                    .map(|c| WatchChange {
                        key: c.key.clone(),
                        value: c.value.clone(),
                    })
                    .collect();
                world
                    .checker
                    .applied(self.id.get(), *revision, changes)
                    .map_err(|v| v.0)?;
            }
        }
        feed(&mut self.hub, items).map_err(|e| e.to_string())?;
        self.hub.wake(now);
        // Watchers of this hub that moved elsewhere are cancelled here.
        let here = (self.id, self.incarnation);
        let attached: Vec<WatchId> = world
            .slots
            .iter()
            .filter_map(|s| s.attached.filter(|a| (a.0, a.1) == here).map(|a| a.2))
            .collect();
        for id in self.hub.ready() {
            if !attached.contains(&id) {
                self.hub.cancel(id);
            }
        }
        for slot in 0..world.slots.len() {
            let Some((node, incarnation, id)) = world.slots[slot].attached else {
                continue;
            };
            if (node, incarnation) != here || self.rng.below(2) == 0 {
                continue;
            }
            if let Some(notification) = self.hub.poll(id) {
                self.deliver(world, slot, notification)?;
            }
        }
        // Now and then a stream moves here, from wherever it is (a crashed node's
        // included), or an unattached one attaches here.
        let move_one_in = world.options.move_one_in.max(1);
        if self.rng.below(move_one_in) == 0 || world.slots.iter().any(|s| s.attached.is_none()) {
            let slot = usize::try_from(self.rng.below(world.slots.len() as u64)).unwrap_or(0);
            if world.slots[slot].attached.map(|a| (a.0, a.1)) != Some(here) {
                self.attach(world, slot)?;
            }
        }
        Ok(())
    }

    /// Attaches slot `slot`'s stream here, resuming it from where it stopped.
    fn attach(&mut self, world: &mut World, slot: usize) -> Result<(), String> {
        let stream = world.slots[slot].stream;
        world.slots[slot].attached = None;
        let Some(from) = world.checker.resume_from(stream) else {
            return Ok(());
        };
        let filter = world.slots[slot].filter.clone();
        match self.hub.watch(stream, filter, Some(from)) {
            Ok(id) => {
                world.slots[slot].attached = Some((self.id, self.incarnation, id));
                Ok(())
            }
            Err(WatchError::Compacted { compacted, .. }) => {
                world
                    .checker
                    .compacted(stream, compacted)
                    .map_err(|v| v.0)?;
                self.replace(world, slot);
                Ok(())
            }
            Err(e) => Err(format!("stream {stream} refused: {e}")),
        }
    }

    /// Ends slot `slot`'s stream and starts a new one in it, from this node's next
    /// revision (attached at the next chance).
    fn replace(&mut self, world: &mut World, slot: usize) {
        world.streams += 1;
        let stream = world.streams;
        let filter = world.slots[slot].filter.clone();
        world
            .checker
            .start(stream, checked(&filter), self.hub.revision() + 1);
        world.slots[slot] = Slot {
            stream,
            filter,
            attached: None,
        };
    }

    fn deliver(
        &mut self,
        world: &mut World,
        slot: usize,
        notification: Notification,
    ) -> Result<(), String> {
        let stream = world.slots[slot].stream;
        match notification {
            Notification::Events(events) => {
                let batch: Vec<_> = events
                    .iter()
                    .map(|e| {
                        let change = WatchChange {
                            key: e.key.to_vec(),
                            value: e.value.as_ref().map(|v| v.to_vec()),
                        };
                        (e.revision, change)
                    })
                    .collect();
                world.checker.events(stream, &batch).map_err(|v| v.0)
            }
            Notification::Progress(revision) => {
                world.checker.progress(stream, revision).map_err(|v| v.0)
            }
            Notification::Cancelled(WatchError::Compacted { compacted, .. }) => {
                world
                    .checker
                    .compacted(stream, compacted)
                    .map_err(|v| v.0)?;
                self.replace(world, slot);
                Ok(())
            }
            Notification::Cancelled(e) => Err(format!("stream {stream} cancelled: {e}")),
        }
    }
}
