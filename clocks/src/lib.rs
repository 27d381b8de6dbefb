//! Clocks for distributed systems: Lamport, hybrid logical, clock-bound and generation
//! clocks, and (dotted) version vectors.
//!
//! Nodes of a distributed system cannot agree on "now": their clocks are set differently,
//! run at slightly different rates, and get stepped back and forth by NTP. This crate
//! gives the five standard answers from *Patterns of Distributed Systems* (Unmesh Joshi),
//! each as a small value type with a documented, tested contract:
//!
//! | Pattern | Types | Answers |
//! |---|---|---|
//! | [Lamport Clock](#lamport-clock) | [`LamportClock`], [`AtomicLamportClock`], [`LamportTimestamp`] | an order consistent with causality |
//! | [Hybrid Clock](#hybrid-clock) | [`HybridClock`], [`AtomicHybridClock`], [`HybridTimestamp`] | the same, close to wall-clock time, never going back |
//! | [Clock-Bound Wait](#clock-bound-wait) | [`IntervalClock`], [`TimeInterval`], [`clock_bound::UncertaintyWindow`] | an order consistent with *real* time |
//! | [Generation Clock](#generation-clock) | [`Generation`], [`GenerationStore`] | which leader is current |
//! | [Version Vector](#version-vector) | [`VersionVector`], [`Siblings`] (dotted version vectors) | happened-before versus concurrent |
//!
//! All of them read time through the [`PhysicalClock`] trait: [`SystemClock`] in a real
//! process, [`ManualClock`] in tests and in the simulator.
//!
//! # Time is a value
//!
//! Everything in this crate except the [`driver`] module is pure logic: it never reads
//! the operating system's clock, sleeps or touches files. Time arrives as a
//! [`WallTime`] or a monotonic [`Time`] (nanosecond newtypes; [`Time`] is `synod-node`'s,
//! the instant every state machine is handed) through a [`PhysicalClock`], and waits come
//! back as a [`Duration`](std::time::Duration) for the caller to arm a timer with. The
//! drivers are the exceptions, each in its own file:
//!
//! - [`SystemClock`] and [`CachedSystemClock`] read the system clocks;
//! - [`GenerationStore`] writes a generation durably (temporary file, fsync, atomic rename,
//!   directory fsync);
//! - [`driver::wait::commit_wait_blocking`] sleeps the calling thread for commit wait.
//!
//! A [`ManualClock`] is deterministic and cheap: the owner sets *true* time and gives each
//! clock an offset, a drift rate, jumps and freezes, then reads each node's skewed view.
//! `synod-sim` gives every simulated node one.
//!
//! ```
//! use std::time::Duration;
//! use synod_clocks::{ManualClock, PhysicalClock, WallTime};
//!
//! let node = ManualClock::new(WallTime::from_secs(1_000));
//! node.set_offset_ns(-3_000_000);     // 3 ms behind true time
//! node.set_drift_ppm(50);             // and running 50 ppm fast
//! node.advance(Duration::from_secs(100));
//! assert_eq!(node.true_time(), WallTime::from_secs(1_100));
//! assert_eq!(node.offset_ns(), -3_000_000 + 5_000_000);
//! ```
//!
//! # Lamport Clock
//!
//! **What.** A counter per node: tick it on each local event and stamp outgoing messages
//! with it; on receipt set it to `max(local, received) + 1`. If `a` happened before `b`
//! then `ts(a) < ts(b)`. **When.** You need an order of events that respects causality
//! and no relation to wall-clock time: ordering operations in a log, version numbers that
//! clients carry so that a later request is seen as later. **Who.** Automerge identifies
//! and orders operations by Lamport timestamps (counter, actor id); Paxos ballots and Raft
//! terms advance by the same max-plus-one rule; version vectors and hybrid clocks build on
//! it. [`AtomicLamportClock`] is the lock-free form for many threads.
//!
//! ```
//! use synod_clocks::LamportClock;
//!
//! # fn main() -> Result<(), synod_clocks::LamportOverflow> {
//! let (mut server, mut client) = (LamportClock::new(), LamportClock::new());
//! let reply = server.tick()?;           // the server's write returns its timestamp
//! let next = client.observe(reply)?;    // the client carries it forward
//! assert!(next > reply);
//! # Ok(())
//! # }
//! ```
//!
//! # Hybrid Clock
//!
//! **What.** A hybrid logical clock (Kulkarni et al., 2014): timestamps that are a
//! physical time plus a logical counter. They order causally like Lamport timestamps, never
//! go back even when the physical clock does, and stay close to physical time: never
//! behind the physical reading (rounded down to a tick), and ahead of the highest physical
//! time the clock has seen, its own or a peer's, only by the ticks that logical-counter
//! overflows carried into. So a hybrid clock runs ahead of its own physical clock by at most
//! the maximum offset (a peer's lead) or a backward step of the physical clock, until the
//! physical clock catches up. A received timestamp further ahead than a configured maximum offset is rejected
//! with [`HybridClockError::TooFarAhead`] instead of dragging the clock forward.
//! **When.** Versions and transaction timestamps that should mean roughly "when" (MVCC,
//! last-writer-wins, time-travel reads) in a system whose clocks are loosely
//! synchronised. **Who.** CockroachDB and YugabyteDB order transactions with hybrid logical
//! clocks, MongoDB's cluster time is one, and Eclipse Zenoh's `uhlc` stamps messages with
//! one.
//!
//! A [`HybridTimestamp`] packs physical time (nanoseconds, rounded down to a
//! [`hlc::PHYSICAL_TICK`] of 65.536 us) and a 16-bit counter into one `u64`, plus a
//! [`NodeId`] for a total order between nodes. When the counter would overflow (65,536
//! events within one tick, as when the physical clock is frozen) it carries into the
//! physical part: the clock runs one tick ahead and stays monotonic. To stay monotonic
//! across restarts, persist [`HybridClock::last`] (or a ceiling above it) and start with
//! [`HybridClock::resume`]. [`AtomicHybridClock`] is the lock-free form (one `AtomicU64`).
//!
//! ```
//! use std::time::Duration;
//! use synod_clocks::{HybridClock, HybridClockConfig, ManualClock, NodeId, WallTime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = HybridClockConfig::new(NodeId::new(1), Duration::from_millis(500))?;
//! let wall = ManualClock::new(WallTime::from_secs(1_700_000_000));
//! let mut a = HybridClock::new(wall.clone(), config);
//! let mut b = HybridClock::new(wall.clone(), HybridClockConfig::new(NodeId::new(2), Duration::from_millis(500))?);
//!
//! let sent = a.now();
//! wall.jump_back(Duration::from_millis(100)); // NTP steps the shared clock back
//! let received = b.update(sent)?;             // still after the send
//! assert!(received > sent);
//! let restarted = HybridClock::resume(wall, config, a.last()).now();
//! assert!(restarted > sent);                  // and after a restart
//! # Ok(())
//! # }
//! ```
//!
//! **Encoding.** [`HybridTimestamp::to_bytes`] is 16 bytes, the 64-bit time then the node
//! id, both big-endian, so byte order (`memcmp`, a key-value store's key order) is
//! timestamp order. Test vectors, for implementations in other languages:
//!
//! | physical (ns since epoch) | logical | node | bytes (hex) |
//! |---|---|---|---|
//! | 0 | 0 | 0 | `00000000000000000000000000000000` |
//! | 0 | 1 | 1 | `00000000000000010000000000000001` |
//! | 65,536 | 0 | 0 | `00000000000100000000000000000000` |
//! | 1,700,000,000,123,456,789 (stored as 1,700,000,000,123,404,288) | 7 | 3 | `17979cfe3d8500070000000000000003` |
//! | 18,446,744,073,709,486,080 | 65,535 | 2^64 - 1 | `ffffffffffffffffffffffffffffffff` |
//!
//! # Clock-Bound Wait
//!
//! **What.** A clock that knows its own error returns an interval `[earliest, latest]`
//! that contains true time. A transaction commits at `latest` and waits until `earliest`
//! has passed its timestamp before it is visible (*commit wait*), so any transaction that
//! starts later, on any node, gets a larger timestamp. The alternative, *read restart*,
//! lets reads that find a value inside their uncertainty window restart above it.
//! **When.** External consistency (linearizable transactions across shards) without a
//! central timestamp oracle, when clock error is small and bounded. **Who.** Google
//! Spanner (TrueTime and commit wait), CockroachDB and YugabyteDB (uncertainty intervals
//! and read restarts); AWS ClockBound exposes an EC2 instance's clock error bound for
//! exactly these uses.
//!
//! The error bound comes from an [`ErrorBoundSource`]: [`FixedErrorBound`] for a
//! configured bound, or your own implementation over the kernel's `adjtimex` `maxerror`
//! or the ClockBound daemon; the crate does not call `adjtimex` itself because that needs
//! `libc` and `unsafe` (see [`clock_bound`]). Nothing sleeps: [`IntervalClock::commit_wait`]
//! returns how long to wait.
//!
//! ```
//! use std::time::Duration;
//! use synod_clocks::{FixedErrorBound, IntervalClock, ManualClock, WallTime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wall = ManualClock::new(WallTime::from_secs(1_000));
//! let clock = IntervalClock::new(wall.clone(), FixedErrorBound::new(Duration::from_millis(4))?);
//! let commit_ts = clock.now()?.latest();
//! let wait = clock.commit_wait(commit_ts)?;   // about twice the bound
//! assert!(wait > Duration::from_millis(8));
//! wall.advance(wait);                         // a node arms a timer; the simulator advances
//! assert!(clock.now()?.is_after(commit_ts));  // now the commit may be acknowledged
//! # Ok(())
//! # }
//! ```
//!
//! # Generation Clock
//!
//! **What.** A number that increases with every change of leadership, persisted before
//! it is used. Every request carries the sender's generation; a lower one is rejected
//! ([`Incoming::Stale`]) and a higher one makes the receiver step down
//! ([`Incoming::Newer`]). **When.** Anything with a leader or lease holder that can be
//! replaced while the old one is still running: fencing zombies. **Who.** Raft's terms,
//! ZooKeeper's epochs (Zab), Kafka's controller and leader epochs, fencing tokens in lock
//! services. [`GenerationStore`] keeps one in a file so that a generation is never reused
//! after a crash; `synod-consensus` uses generations as Raft terms.
//!
//! ```
//! use synod_clocks::{Generation, GenerationStore, Incoming};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut term = GenerationStore::open(dir.path())?;
//! let mine = term.increment()?;                          // durable before use
//! assert_eq!(mine.classify(Generation::new(0)), Incoming::Stale);
//! assert_eq!(mine.classify(Generation::new(9)), Incoming::Newer);
//! term.store(Generation::new(9))?;                       // adopt it and step down
//! assert_eq!(GenerationStore::open(dir.path())?.current(), Generation::new(9));
//! # Ok(())
//! # }
//! ```
//!
//! # Version Vector
//!
//! **What.** One counter per node; comparing two vectors says whether one state includes
//! the other (before, after, equal) or neither does (concurrent: a conflict). Merge is the
//! element-wise maximum. [`Siblings`] is a *dotted version vector set*: each concurrent
//! value keeps the dot (node, counter) of the write that made it, so clients writing
//! through any server neither grow the vector nor overwrite each other. Vectors can be
//! [pruned](version_vector#pruning-policy) only safely (retired nodes, covered by a stable
//! vector). A set holds a bounded number of siblings: a write that would leave more than
//! [`dvv::SIBLINGS_MAX`] is refused until a client resolves the conflict (see
//! [the sibling limit](dvv#the-sibling-limit)). **When.** Leaderless replication that accepts concurrent writes and must keep
//! every unresolved one (Dynamo-style stores), and replicated state that must detect
//! conflicts. **Who.** Amazon Dynamo, Riak (dotted version vectors since 2.0), Voldemort,
//! and CRDT libraries such as the `crdts` crate.
//!
//! ```
//! use synod_clocks::{Causality, NodeId, Siblings, VersionVector};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut a = VersionVector::new();
//! a.increment(NodeId::new(1))?;
//! let mut b = VersionVector::new();
//! b.increment(NodeId::new(2))?;
//! assert_eq!(a.compare(&b), Causality::Concurrent);
//!
//! let mut key: Siblings<&str> = Siblings::new();
//! let seen = key.context().clone();
//! key.write(NodeId::new(1), &seen, "x")?;   // two clients with the same context
//! key.write(NodeId::new(1), &seen, "y")?;   // through the same server
//! assert_eq!(key.len(), 2);                 // both kept as siblings
//! # Ok(())
//! # }
//! ```
//!
//! # What it does not do
//!
//! It does not synchronise clocks (that is NTP's, chrony's or PTP's job), does not read the
//! kernel's error estimate itself (no `libc`), and does not decide what a protocol does
//! with a rejected timestamp or a stale generation: it reports, the caller chooses.
//!
//! # Formats
//!
//! Timestamps, generations, vectors and sibling sets implement serde. Decoding a
//! [`VersionVector`] or [`Siblings`] checks the representation (sorted, no duplicates, no
//! zero counters, dots inside the context) and the limits (at most
//! [`VersionVector::ENTRIES_MAX`] entries, at most [`dvv::SIBLINGS_MAX`] siblings per
//! node) and fails rather than building an invalid value. The
//! [`HybridTimestamp`] byte encoding and the generation file
//! ([`driver::generation_store`]) are documented as version 1.
//!
//! # Crate features
//!
//! None. The crate depends on `serde`, `parking_lot` (the [`ManualClock`]'s lock) and
//! `crc32fast` (the generation file's checksum).
//!
//! # Tests and benchmarks
//!
//! `cargo test -p synod-clocks` runs the unit, property and seeded simulation tests;
//! `SYNOD_CLOCKS_SEEDS=<n>` raises the number of seeds of the seeded ones (version-vector
//! histories, HLC message exchanges, clock-bound wait and read restarts, dotted version
//! vector sets with and without the sibling limit reached).
//! `cargo bench -p synod-clocks --bench clocks` prints
//! `ratio clocks.hlc_now_vs_systemtime` (`SYNOD_BENCH_QUICK=1` for a short run; with
//! `--features peers` also `ratio clocks.hlc_now_vs_uhlc`, against Zenoh's `uhlc` in the
//! same run) and `--bench micro` runs criterion micro-benchmarks.
//!
//! # Crate features
//!
//! - `peers` (off by default): the `uhlc` crate, a baseline for the benchmark only.
//!
//! # Status
//!
//! Not done yet: the clock-bound clock does not read the kernel's error bound itself
//! (`adjtimex` needs `libc` and `unsafe`, which the crate does not take on): plug one in
//! through [`ErrorBoundSource`].
//!
//! # Sibling crates
//!
//! `synod-consensus` uses [`Generation`]s as Raft terms; `synod-quorum` orders versions
//! with [`HybridTimestamp`]s and detects conflicts with [`VersionVector`]s and
//! [`Siblings`]; `synod-partitioning` uses hybrid timestamps for MVCC and clock-bound
//! wait; `synod-sim` gives each simulated node a [`ManualClock`].

pub mod clock_bound;
pub mod driver;
pub mod dvv;
mod error;
pub mod generation;
pub mod hlc;
pub mod lamport;
pub mod physical;
pub mod time;
pub mod version_vector;

pub use clock_bound::{ErrorBoundSource, FixedErrorBound, IntervalClock, TimeInterval};
pub use driver::generation_store::{GenerationStore, GenerationStoreError};
pub use driver::system::{CachedSystemClock, SystemClock};
pub use dvv::Siblings;
pub use error::{ConfigError, DecodeError};
pub use generation::{Generation, Incoming};
pub use hlc::{
    AtomicHybridClock, HybridClock, HybridClockConfig, HybridClockError, HybridTimestamp,
};
pub use lamport::{AtomicLamportClock, LamportClock, LamportOverflow, LamportTimestamp};
pub use physical::{ManualClock, PhysicalClock};
pub use time::{NodeId, Time, WallTime};
pub use version_vector::{Causality, CounterOverflow, Dot, VersionVector};
