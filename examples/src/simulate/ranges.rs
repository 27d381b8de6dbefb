//! The `ranges` system under `synod-sim`: clients with stale range caches write and scan
//! `synod-partitioning`'s key ranges while ranges split, merge and move between pages.
//!
//! The table ([`RangeTable`]) lives in the run's directory, which stands in for the
//! Consistent Core a real cluster keeps it in, as does each node's store of the keys it
//! serves: every node reads the current table, so no node is ever behind. Node 1 is the
//! control plane: every [`CHANGE_MS`] it splits a range at a key inside it and gives the
//! right half to another node, merges a range with its right neighbour, or moves a range,
//! each bumping the generations it changes, and moves the keys with it. The clients are
//! what is stale: each starts with the one range of version 1 and learns ranges from
//! redirects ([`RangeCache::learn`]), fetching the whole table only where its cache has a
//! gap. A client writes keys to the owner of its cached range, and scans every key in pages
//! of at most [`PAGE`] keys, each page asked of the range that holds its first key
//! ([`RangeTable::scan`]); a node answers a request routed with a stale range, or to a node
//! that does not serve it, with the current range.
//!
//! The checkers: after every event, each write a node took was taken by the owner of the
//! key's range; each finished scan saw its keys in strictly increasing order (none repeated)
//! and every key whose write was acknowledged before the scan began (none missed). The
//! progress condition: requests succeed after the faults heal. The broken variant
//! ([`Variant`], with the `broken` feature) serves a page up to the scan's end rather than
//! stopping at the end of its range, from the node's own keys: once a range past it has
//! split off and moved away, the page skips the keys that moved, and the scan checker
//! catches it (`tests/it/sim_routing.rs`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::rc::Rc;
use std::time::Duration;

use synod_partitioning::{
    Generation, KeyRange, RangeCache, RangeId, RangeRedirect, RangeTable, ScanPage, ScanRequest,
};
use synod_sim::{
    ClientId, Completion, Context, Invocation, Node, NodeId, RequestId, SimConfig, SimRng,
    Simulation, TimerId, Workload,
};

use super::{RunSummary, progress_after_healing};

/// Keys the clients write, `0..KEYS` (as 8 big-endian bytes, so that their order is the
/// numbers').
pub const KEYS: u64 = 512;
/// The most keys one page of a scan returns.
pub const PAGE: usize = 16;
/// The most ranges the control plane splits the key space into.
pub const RANGES_LIMIT: usize = 12;
/// How often the control plane (node 1) changes the table, in milliseconds.
pub const CHANGE_MS: u64 = 10;

/// Which node runs, correct or deliberately broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A page stops at the end of the range that holds its first key.
    Correct,
    /// A page runs to the scan's end over the node's own keys, past its range.
    #[cfg(feature = "broken")]
    ScanPastRangeEnd,
}

/// What a client asks a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// Write `key`, routed to `range` at `generation`.
    Put {
        /// The key.
        key: u64,
        /// The range the client's cache has for the key.
        range: RangeId,
        /// That range's generation in the cache.
        generation: Generation,
    },
    /// One page of a scan.
    Scan(ScanRequest),
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// The write was taken.
    Written,
    /// A page of the scan.
    Page(ScanPage<()>),
    /// Routed with a stale range, or to a node that does not serve it: the current range.
    Redirect(RangeRedirect),
}

/// An operation as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeOp {
    /// A write of this key.
    Put(u64),
    /// A page of a scan, from this key.
    Page(u64),
}

fn bytes(key: u64) -> Vec<u8> {
    key.to_be_bytes().to_vec()
}

/// The number of a key's bytes: the empty key (where the first range starts) is 0, and
/// a key of another length (none is written) past every number.
fn number(key: &[u8]) -> u64 {
    if key.is_empty() {
        return 0;
    }
    key.try_into().map_or(u64::MAX, u64::from_be_bytes)
}

/// What every node and the checker share: the table, each node's keys, and each write a
/// node took since the checker last looked.
#[derive(Debug)]
pub struct Directory {
    /// The current table.
    pub table: RangeTable,
    stores: BTreeMap<NodeId, BTreeMap<Vec<u8>, ()>>,
    nodes: u64,
    taken: Vec<(NodeId, u64)>,
    /// Splits, merges and moves done.
    pub changes: [u64; 3],
    /// Redirects answered.
    pub redirects: u64,
    /// Scans finished and checked.
    pub scans: u64,
    /// Keys the finished scans returned.
    pub scanned: u64,
    /// What the scan checker found wrong, first first.
    pub scan_errors: Vec<String>,
}

impl Directory {
    fn new(nodes: usize) -> Directory {
        Directory {
            table: RangeTable::new(NodeId::new(1)),
            stores: BTreeMap::new(),
            nodes: nodes as u64,
            taken: Vec::new(),
            changes: [0; 3],
            redirects: 0,
            scans: 0,
            scanned: 0,
            scan_errors: Vec::new(),
        }
    }

    /// Moves the keys of `range` from wherever they are to its owner's store.
    fn gather(&mut self, range: &KeyRange) {
        let upper = range
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded::<&[u8]>);
        let mut moved = Vec::new();
        for (node, store) in &mut self.stores {
            if *node == range.owner {
                continue;
            }
            let keys: Vec<Vec<u8>> = store
                .range::<[u8], _>((Bound::Included(range.start.as_slice()), upper))
                .map(|(k, ())| k.clone())
                .collect();
            for key in keys {
                store.remove(&key);
                moved.push(key);
            }
        }
        let store = self.stores.entry(range.owner).or_default();
        store.extend(moved.into_iter().map(|k| (k, ())));
    }

    /// The control plane's next change, chosen by `rng`: split a range and give its right
    /// half to another node, merge a range with its right neighbour, or move a range.
    fn change(&mut self, rng: &mut SimRng) {
        let ranges: Vec<KeyRange> = self.table.ranges().cloned().collect();
        let range = rng.pick(&ranges).expect("one range at least").clone();
        let other = NodeId::new(1 + rng.below(self.nodes));
        let choice = rng.below(3);
        if choice == 0 && ranges.len() < RANGES_LIMIT {
            let (lo, hi) = (
                number(&range.start),
                range.end.as_deref().map_or(KEYS, number),
            );
            if hi > lo + 1 {
                let at = lo + 1 + rng.below(hi - lo - 1);
                if let Ok(right) = self.table.split(range.id, &bytes(at)) {
                    self.table.move_range(right, other).expect("just split");
                    self.changes[0] += 1;
                    let right = self.table.get(right).expect("just split").clone();
                    self.gather(&right);
                }
            }
        } else if choice == 1 && self.table.merge(range.id).is_ok() {
            self.changes[1] += 1;
            let merged = self.table.get(range.id).expect("kept its id").clone();
            self.gather(&merged);
        } else if self.table.move_range(range.id, other).is_ok() {
            self.changes[2] += 1;
            let moved = self.table.get(range.id).expect("kept its id").clone();
            self.gather(&moved);
        }
    }

    /// The range a request to `me` for `key` at `range` and `generation` may use, or the
    /// redirect to the current one.
    fn route(
        &mut self,
        me: NodeId,
        key: &[u8],
        range: RangeId,
        generation: Generation,
    ) -> Result<(), Answer> {
        if let Ok(range) = self.table.check(key, range, generation)
            && range.owner == me
        {
            return Ok(());
        }
        // A stale range, or a node behind (never here: every node reads the current
        // table), or a node that does not serve the range: the range that holds the key.
        let miss = RangeRedirect {
            current: self.table.locate(key).clone(),
        };
        self.redirects += 1;
        Err(Answer::Redirect(miss))
    }

    fn serve(&mut self, me: NodeId, request: Request, variant: Variant) -> Answer {
        match request {
            Request::Put {
                key,
                range,
                generation,
            } => {
                if let Err(answer) = self.route(me, &bytes(key), range, generation) {
                    return answer;
                }
                self.stores.entry(me).or_default().insert(bytes(key), ());
                self.taken.push((me, key));
                Answer::Written
            }
            Request::Scan(scan) => {
                if let Err(answer) = self.route(me, &scan.from, scan.range, scan.generation) {
                    return answer;
                }
                let store = self.stores.entry(me).or_default();
                let page = match variant {
                    Variant::Correct => self.table.scan(store, &scan, PAGE),
                    #[cfg(feature = "broken")]
                    Variant::ScanPastRangeEnd => Ok(page_past_range_end(store, &scan)),
                };
                match page {
                    Ok(page) => Answer::Page(page),
                    Err(_) => Answer::Redirect(RangeRedirect {
                        current: self.table.locate(&scan.from).clone(),
                    }),
                }
            }
        }
    }

    /// The write checker: every write taken since the last look was taken by the owner of
    /// its key's range.
    fn check(&mut self) -> Result<(), String> {
        for (node, key) in self.taken.drain(..) {
            let range = self.table.locate(&bytes(key));
            if range.owner != node {
                return Err(format!(
                    "{node} took a write of key {key}, in {} owned by {}",
                    range.id, range.owner
                ));
            }
        }
        match self.scan_errors.first() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// The broken page: up to the scan's end over `store`, past the range's end.
#[cfg(feature = "broken")]
fn page_past_range_end(store: &BTreeMap<Vec<u8>, ()>, scan: &ScanRequest) -> ScanPage<()> {
    let upper = scan
        .end
        .as_deref()
        .map_or(Bound::Unbounded, Bound::Excluded::<&[u8]>);
    let mut keys = store.range::<[u8], _>((Bound::Included(scan.from.as_slice()), upper));
    let entries: Vec<(Vec<u8>, ())> = keys
        .by_ref()
        .take(PAGE)
        .map(|(k, ())| (k.clone(), ()))
        .collect();
    let next = keys.next().map(|(k, ())| k.clone());
    ScanPage { entries, next }
}

/// One node: it answers writes and pages from the directory; node 1 also changes the table
/// every [`CHANGE_MS`].
#[derive(Debug)]
pub struct RangeNode {
    directory: Rc<RefCell<Directory>>,
    variant: Variant,
}

impl Node for RangeNode {
    type Message = ();
    type Request = Request;
    type Response = Answer;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if ctx.id() == NodeId::new(1) {
            ctx.set_timer(Duration::from_millis(CHANGE_MS), TimerId(1));
        }
    }

    fn on_message(&mut self, _: &mut Context<'_, Self>, _: NodeId, (): ()) {}

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        self.directory.borrow_mut().change(ctx.rng());
        ctx.set_timer(Duration::from_millis(CHANGE_MS), TimerId(1));
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        let me = ctx.id();
        let answer = self.directory.borrow_mut().serve(me, request, self.variant);
        ctx.reply(id, answer);
    }
}

/// A scan in progress: where its next page starts, the keys it has seen, and the keys
/// acknowledged before it began.
#[derive(Debug)]
struct Scan {
    from: Vec<u8>,
    seen: Vec<u64>,
    acknowledged: BTreeSet<u64>,
}

/// Clients that write random keys and scan every key, each with its own range cache.
#[derive(Debug)]
pub struct StaleClients {
    directory: Rc<RefCell<Directory>>,
    caches: BTreeMap<ClientId, RangeCache>,
    first: RangeCache,
    scans: BTreeMap<ClientId, Scan>,
    acknowledged: BTreeSet<u64>,
}

impl StaleClients {
    /// The cached range for `key`, the whole table fetched if the cache has a gap there.
    fn range_for(&mut self, client: ClientId, key: &[u8]) -> KeyRange {
        let cache = self
            .caches
            .entry(client)
            .or_insert_with(|| self.first.clone());
        if let Some(range) = cache.locate(key) {
            return range.clone();
        }
        *cache = RangeCache::from_table(&self.directory.borrow().table);
        cache.locate(key).expect("a table covers every key").clone()
    }

    /// Checks a finished scan.
    fn finish(&mut self, scan: &Scan) {
        let mut d = self.directory.borrow_mut();
        d.scans += 1;
        d.scanned += scan.seen.len() as u64;
        if let Some(w) = scan.seen.windows(2).find(|w| w[0] >= w[1]) {
            d.scan_errors
                .push(format!("a scan returned key {} after key {}", w[1], w[0]));
            return;
        }
        let seen: BTreeSet<u64> = scan.seen.iter().copied().collect();
        if let Some(missed) = scan.acknowledged.difference(&seen).next() {
            d.scan_errors.push(format!(
                "a scan missed key {missed}, acknowledged before it began ({} keys seen)",
                seen.len()
            ));
        }
    }
}

impl Workload<RangeNode> for StaleClients {
    type Input = RangeOp;
    type Output = ();

    fn invoke(
        &mut self,
        client: ClientId,
        _: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, RangeOp>> {
        if !self.scans.contains_key(&client) && rng.below(8) == 0 {
            let scan = Scan {
                from: Vec::new(),
                seen: Vec::new(),
                acknowledged: self.acknowledged.clone(),
            };
            self.scans.insert(client, scan);
        }
        if let Some(from) = self.scans.get(&client).map(|s| s.from.clone()) {
            let range = self.range_for(client, &from);
            return Some(Invocation {
                node: range.owner,
                request: Request::Scan(ScanRequest {
                    range: range.id,
                    generation: range.generation,
                    from: from.clone(),
                    end: None,
                }),
                input: RangeOp::Page(number(&from)),
            });
        }
        let key = rng.below(KEYS);
        let range = self.range_for(client, &bytes(key));
        Some(Invocation {
            node: range.owner,
            request: Request::Put {
                key,
                range: range.id,
                generation: range.generation,
            },
            input: RangeOp::Put(key),
        })
    }

    fn complete(&mut self, client: ClientId, input: &RangeOp, answer: &Answer) -> Completion<()> {
        match answer {
            Answer::Written => {
                if let RangeOp::Put(key) = input {
                    self.acknowledged.insert(*key);
                }
                Completion::Ok(())
            }
            Answer::Page(page) => {
                let Some(mut scan) = self.scans.remove(&client) else {
                    return Completion::Ok(());
                };
                scan.seen
                    .extend(page.entries.iter().map(|(k, ())| number(k)));
                match &page.next {
                    Some(next) => {
                        scan.from = next.clone();
                        self.scans.insert(client, scan);
                    }
                    None => self.finish(&scan),
                }
                Completion::Ok(())
            }
            Answer::Redirect(redirect) => {
                let cache = self
                    .caches
                    .entry(client)
                    .or_insert_with(|| self.first.clone());
                if !cache.learn(redirect.current.clone()) {
                    cache.clear();
                }
                Completion::Fail
            }
        }
    }
}

/// Runs `seed` of the `ranges` system with `variant`'s nodes.
#[must_use]
pub fn simulate(seed: u64, config: SimConfig, variant: Variant) -> RunSummary {
    let directory = Rc::new(RefCell::new(Directory::new(config.nodes())));
    let first = RangeCache::from_table(&directory.borrow().table);
    let (for_nodes, for_check) = (Rc::clone(&directory), Rc::clone(&directory));
    let clients = StaleClients {
        directory: Rc::clone(&directory),
        caches: BTreeMap::new(),
        first,
        scans: BTreeMap::new(),
        acknowledged: BTreeSet::new(),
    };
    let report = Simulation::new(
        config,
        seed,
        move |_| RangeNode {
            directory: Rc::clone(&for_nodes),
            variant,
        },
        clients,
    )
    .invariant(move |_| for_check.borrow_mut().check())
    .progress(progress_after_healing)
    .run();
    let d = directory.borrow();
    let figures = vec![
        format!(
            "{} splits, {} merges, {} moves; {} ranges at the end",
            d.changes[0],
            d.changes[1],
            d.changes[2],
            d.table.len()
        ),
        format!(
            "{} scans finished, {} keys returned, none missed or repeated",
            d.scans, d.scanned
        ),
        format!("{} requests redirected to the current range", d.redirects),
    ];
    RunSummary::of_figures(
        report,
        figures,
        "every write taken by its range's owner, every scan saw each acknowledged key once and \
         in order, requests succeeded after healing",
    )
}

/// Runs one seed of `synod sim ranges`. The run is not drawn: `record` is ignored.
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let _ = record;
    simulate(seed, config, Variant::Correct)
}
