//! [`Wal`]: the shared log handle (appends, durability, reads, truncation, purges).
//!
//! One mutex guards the in-memory state (segments, their record offsets, the pending
//! records, the written and durable marks). File I/O never happens under it: whoever
//! writes or syncs marks the log `busy`, releases the lock, does the I/O, and takes the lock
//! again to publish the result. Only one thread is ever busy, so segment files are written by
//! one thread at a time, while appenders keep queueing records and readers keep reading.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::config::{RecoveryMode, SyncPolicy, WalConfig};
use crate::error::{Corruption, CorruptionKind};
use crate::format::{
    self, CORRUPT_SUFFIX, FLAG_BASE, FLAG_CUT, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
    SPARE_SUFFIX, SegmentHeader, TMP_SUFFIX,
};
use crate::scan::{self, Tail};
use crate::storage::{Storage, StorageFile, read_full_at, write_all_at};
use crate::{LogIndex, WalError};

/// Zeros written at a time when pre-writing a segment file.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// A segment as the log keeps it in memory: 4 bytes per record (its offset).
#[derive(Debug)]
struct Segment<F> {
    name: String,
    first: LogIndex,
    created_ms: u64,
    flags: u32,
    tag: u32,
    file: Arc<F>,
    offsets: Vec<u32>,
    /// Where the next record goes (just past the last record).
    end: u64,
}

impl<F> Segment<F> {
    fn next(&self) -> u64 {
        self.first.get() + self.offsets.len() as u64
    }
}

#[derive(Debug)]
struct State<F> {
    segments: VecDeque<Segment<F>>,
    /// The index the next appended record gets.
    next: u64,
    /// Records below this are in segment files.
    written: u64,
    /// Records below this are durable.
    durable: u64,
    /// Records `written..next`, not yet in a file.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// A thread is writing, syncing or maintaining segments with the lock released.
    busy: bool,
    /// A truncation or a purge past the end is under way (with `busy`): it will reset
    /// `next`, so appends wait for it rather than take an index it is about to reuse.
    cutting: bool,
    /// The truncations so far, for writers waiting on records they appended.
    cuts: Cuts,
    /// Set by a failed write or sync; the log refuses writes from then on.
    poisoned: Option<String>,
    shutdown: bool,
    /// A caller asked the group-commit thread to sync now.
    sync_requested: bool,
    /// A caller that does not come back with the writers of the last sync asked for it
    /// ([`Wal::sync`], [`Wal::wait_durable`], [`Wal::close`], a submitter waiting for room
    /// under `pending_bytes_max`): the group-commit thread begins it as soon as the log is
    /// free, without waiting for anyone to gather.
    sync_urgent: bool,
    /// Syncing writes begun so far ([`Inner::flush`] with `sync`): the records pending when
    /// the next one begins are all durable when it ends. A writer waiting under
    /// [`SyncPolicy::Group`] waits for the one that covers its record (see [`Gates`]).
    syncs_begun: u64,
    /// While a syncing write runs: the index it makes everything below durable.
    syncing_to: Option<u64>,
    /// Threads waiting in [`Inner::lock_idle`] for the log to be idle (a truncation, a
    /// purge, [`Wal::flush`]): the group-commit thread, which could otherwise begin one
    /// sync after another without ever letting go, begins none while one waits.
    idle_waiters: usize,
    /// Writers waiting for the sync under way, and for the one after it (or the next to
    /// begin, when none is under way); and how many waited for the last sync that ended.
    /// The group-commit thread lets the writers a sync woke queue their next records
    /// before it begins the next one (see [`Inner::group_commit`]). Counts only steer
    /// when a sync begins: a writer counted twice or not at all costs a little speed,
    /// never a wake-up.
    waiting_running: usize,
    waiting_next: usize,
    covered_last: usize,
    /// The writers the last sync to end covered (sync number `returning_sync`) that have
    /// not left the log yet: woken, or about to be, and still running towards their return.
    /// The group-commit thread gathers the next batch only while some are: once all have
    /// left, a writer that has not queued again is busy elsewhere, or gone, and nothing
    /// tells how long it will be, so the writers waiting begin their sync at once.
    returning: usize,
    returning_sync: u64,
}

impl<F> State<F> {
    fn new() -> State<F> {
        State {
            segments: VecDeque::new(),
            next: 0,
            written: 0,
            durable: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            busy: false,
            cutting: false,
            cuts: Cuts::default(),
            poisoned: None,
            shutdown: false,
            sync_requested: false,
            sync_urgent: false,
            syncs_begun: 0,
            syncing_to: None,
            idle_waiters: 0,
            waiting_running: 0,
            waiting_next: 0,
            covered_last: 0,
            returning: 0,
            returning_sync: 0,
        }
    }

    /// A thread waits, under [`SyncPolicy::Group`], for record `index` (already queued) to
    /// become durable: asks for a sync (`urgent`, or one that may wait for the writers of
    /// the last sync to gather) and counts itself among the writers of the sync that covers
    /// the record, unless it is counted there already (`counted`: the sync it was counted
    /// for on an earlier turn, before an alert woke it). Returns that sync's number, and
    /// whether to wake the group-commit thread.
    fn wait_for_sync(&mut self, index: u64, urgent: bool, counted: Option<u64>) -> (u64, bool) {
        let mut wake = !self.sync_requested || (urgent && !self.sync_urgent);
        self.sync_requested = true;
        self.sync_urgent |= urgent;
        // The sync under way covers the record if it began after the record was queued;
        // otherwise the next one does.
        let running = matches!(self.syncing_to, Some(to) if index < to);
        let sync = if running {
            self.syncs_begun
        } else {
            self.syncs_begun + 1
        };
        if counted == Some(sync) {
            // Counted once, its count moved with the sync (begun, or not yet).
            return (sync, wake);
        }
        if let Some(old) = counted {
            wake |= self.leave(old);
        }
        if running {
            self.waiting_running += 1;
        } else {
            self.waiting_next += 1;
            // The last of the writers the last sync woke.
            wake |= self.waiting_next == self.covered_last;
        }
        (sync, wake)
    }

    /// A thread counted among the writers of sync number `sync` (by
    /// [`State::wait_for_sync`]) stops waiting for it: it leaves the log, or its record now
    /// waits for another sync. Uncounts it from that sync, whether it has not begun, is
    /// under way or has ended. Returns whether to wake the group-commit thread: the last of
    /// the writers the last sync covered to leave does, if a sync waits for them to gather
    /// (those who have not queued again are not coming back at once, see `returning`).
    fn leave(&mut self, sync: u64) -> bool {
        if sync > self.syncs_begun {
            // Not begun: a writer whose record a truncation removed, say.
            self.waiting_next = self.waiting_next.saturating_sub(1);
            return false;
        }
        if sync == self.syncs_begun && self.syncing_to.is_some() {
            self.waiting_running = self.waiting_running.saturating_sub(1);
            return false;
        }
        if sync != self.returning_sync || self.returning == 0 {
            return false;
        }
        self.returning -= 1;
        self.returning == 0
            && self.sync_requested
            && !self.busy
            && self.waiting_next < self.covered_last
    }

    /// Whether every writer the last sync woke is waiting again or has left the log.
    fn gathered(&self) -> bool {
        self.waiting_next >= self.covered_last || self.returning == 0
    }

    /// Whether a sync asked for should begin now (the log being free), `past_grace` saying
    /// whether the delay since the last sync's end has passed (see [`Inner::group_commit`]).
    fn sync_due(&self, past_grace: bool) -> bool {
        self.sync_requested && (self.sync_urgent || past_grace || self.gathered())
    }

    /// A syncing write begins, of the records up to `to`: returns its number.
    fn begin_sync(&mut self, to: u64) -> u64 {
        self.syncs_begun += 1;
        self.syncing_to = Some(to);
        self.waiting_running = std::mem::take(&mut self.waiting_next);
        self.syncs_begun
    }

    /// The syncing write under way ended: its writers are to be woken and counted back.
    fn end_sync(&mut self) {
        self.syncing_to = None;
        self.covered_last = std::mem::take(&mut self.waiting_running);
        self.returning = self.covered_last;
        self.returning_sync = self.syncs_begun;
    }
}

type Listener = Box<dyn Fn(LogIndex) + Send + Sync>;

struct Inner<S: Storage> {
    storage: S,
    config: WalConfig,
    state: Mutex<State<S::File>>,
    /// Signalled when `durable`, `busy` or `poisoned` change.
    changed: Condvar,
    /// Where writers wait for the sync that covers their records under [`SyncPolicy::Group`].
    gates: Gates,
    /// Wakes the group-commit thread.
    flusher_wake: Condvar,
    next_generation: AtomicU64,
    spares: Mutex<Vec<String>>,
    /// Signalled (with `spares` held) when a segment is created, which may have taken the
    /// spare, and when the log closes: wakes the thread that prepares spares.
    spare_wanted: Condvar,
    /// Set when the last handle is dropped: the spare-preparing thread stops.
    closing: AtomicBool,
    /// Encoding buffer, used only by the busy thread.
    scratch: Mutex<Vec<u8>>,
    /// The durable-index listener, the last index it was told and the truncation epoch of
    /// that news, so that it hears increasing indexes even when two syncs finish close
    /// together, and hears again of indexes a truncation took back and new records reached.
    listener: Mutex<(Option<Listener>, u64, u64)>,
}

impl<S: Storage> fmt::Debug for Inner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("storage", &self.storage)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared<S: Storage> {
    inner: Arc<Inner<S>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The thread that prepares spare segments (see [`Inner::prepare_spares`]).
    preparer: Mutex<Option<JoinHandle<()>>>,
}

impl<S: Storage> Drop for Shared<S> {
    fn drop(&mut self) {
        self.inner.state.lock().shutdown = true;
        self.inner.flusher_wake.notify_all();
        {
            // Under the lock it checks before it waits: the wake-up is not lost.
            let _spares = self.inner.spares.lock();
            self.inner.closing.store(true, Ordering::Release);
            self.inner.spare_wanted.notify_all();
        }
        // A panicked thread has nothing left to clean up.
        if let Some(handle) = self.flusher.lock().take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.preparer.lock().take() {
            let _ = handle.join();
        }
    }
}

/// What opening a log found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Records in the log after recovery.
    pub records: u64,
    /// The first index (equal to `next_index` when the log is empty).
    pub first_index: LogIndex,
    /// The index the next append gets.
    pub next_index: LogIndex,
    /// Where a torn tail was cut off (segment, offset), if one was.
    pub torn_tail: Option<(String, u64)>,
    /// Damage found ([`RecoveryMode::SkipAndReport`] only; the other modes fail instead).
    pub corruption: Option<Corruption>,
    /// Segments set aside as `*.corrupt` past the damage.
    pub set_aside: Vec<String>,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {} records in {} segments, indexes [{}, {})",
            self.records, self.segments, self.first_index, self.next_index
        )?;
        if let Some((segment, offset)) = &self.torn_tail {
            write!(f, "; torn tail cut at {segment} offset {offset}")?;
        }
        if let Some(c) = &self.corruption {
            write!(f, "; corruption skipped: {c}")?;
        }
        if !self.set_aside.is_empty() {
            write!(f, "; set aside: {}", self.set_aside.join(", "))?;
        }
        Ok(())
    }
}

/// A durable, segmented write-ahead log. Cheap to clone; clones share one log.
///
/// See the [crate documentation](crate) for a tour. All methods take `&self` and may be
/// called from many threads at once.
pub struct Wal<S: Storage> {
    shared: Arc<Shared<S>>,
}

impl<S: Storage> Clone for Wal<S> {
    fn clone(&self) -> Self {
        Wal {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Storage> fmt::Debug for Wal<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.inner.fmt(f)
    }
}

fn io<T>(op: &'static str, name: &str, r: std::io::Result<T>) -> Result<T, WalError> {
    r.map_err(|e| WalError::io(op, name, e))
}

impl<S: Storage> Wal<S> {
    /// Opens the log in `storage`, creating it if the directory holds no segment, and
    /// recovers it as [`WalConfig::recovery_mode`] says.
    ///
    /// Under [`SyncPolicy::Group`] this starts the group-commit thread and, with spare
    /// segments allowed ([`crate::WalConfigBuilder::spare_segments_max`] above 0), the thread that
    /// pre-writes them; under the other policies the log never starts a thread.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] for damage the recovery mode does not accept, naming segment and
    /// offset; [`WalError::Io`] when storage fails.
    pub fn open(storage: S, config: WalConfig) -> Result<(Wal<S>, RecoveryReport), WalError> {
        let scan = scan::scan(&storage, config.record_bytes_max)?;
        let mode = config.recovery_mode;
        if mode != RecoveryMode::SkipAndReport
            && let Some(c) = &scan.corruption
        {
            return Err(WalError::Corrupt(c.clone()));
        }
        if mode == RecoveryMode::Strict
            && let Some((_, segment, offset)) = &scan.tail
        {
            return Err(WalError::Corrupt(Corruption {
                segment: segment.clone(),
                offset: *offset,
                index: None,
                kind: CorruptionKind::TornTail,
            }));
        }
        // Tidy the directory: leftovers of interrupted preparations, segments made obsolete
        // by a base segment, and (when salvaging) segments past the damage.
        let mut dir_changed = false;
        for name in &scan.tmp {
            io("remove", name, storage.remove(name))?;
            dir_changed = true;
        }
        for name in &scan.obsolete {
            io("remove", name, storage.remove(name))?;
            dir_changed = true;
        }
        let mut set_aside = Vec::new();
        for name in &scan.past_cut {
            let to = format!("{name}{CORRUPT_SUFFIX}");
            io("rename", name, storage.rename(name, &to))?;
            set_aside.push(to);
            dir_changed = true;
        }
        let mut spares = scan.spares.clone();
        while spares.len() > config.spare_segments_max {
            let name = spares.pop().expect("non-empty");
            io("remove", &name, storage.remove(&name))?;
            dir_changed = true;
        }
        if dir_changed {
            io("sync directory", "", storage.sync_dir())?;
        }
        let inner = Arc::new(Inner {
            storage,
            config,
            state: Mutex::new(State::new()),
            changed: Condvar::new(),
            gates: Gates::default(),
            flusher_wake: Condvar::new(),
            // A header or spare name may claim generation u64::MAX: wrap, as the counter would.
            next_generation: AtomicU64::new(scan.max_generation.wrapping_add(1)),
            spares: Mutex::new(spares),
            spare_wanted: Condvar::new(),
            closing: AtomicBool::new(false),
            scratch: Mutex::new(Vec::new()),
            listener: Mutex::new((None, 0, 0)),
        });
        let mut segments = VecDeque::new();
        for s in &scan.segments {
            let file = io("open", &s.name, inner.storage.open(&s.name))?;
            segments.push_back(Segment {
                name: s.name.clone(),
                first: s.header.first,
                created_ms: s.header.created_ms,
                flags: s.header.flags,
                tag: format::tag_of(s.header.generation),
                file: Arc::new(file),
                offsets: s.offsets.clone(),
                end: s.end,
            });
        }
        // What was read may be in the page cache only (a restart without a crash): make it
        // durable before reporting it durable or building on it. A sync alone is not enough:
        // after a failed fsync, Linux file systems keep the unwritten pages readable but mark
        // them clean, so no later sync writes them. The records no later record proves
        // synced are therefore copied into a new segment, synced before it takes over their
        // indexes. They are never written again in place: some of them had been synced, and
        // a crash during a rewrite could tear or flip the only copy.
        let mut copied = false;
        if let (Some(last), Some(scanned)) = (segments.back_mut(), scan.segments.last()) {
            io("sync", &last.name, last.file.sync_data())?;
            if let Some(from) = first_unproven(scanned) {
                let records = read_from(&*last.file, scanned, from)?;
                let seg = if from == last.first {
                    // Every record of the segment: the copy replaces it under its name.
                    let seg = inner.create_segment(from, last.flags, Some(&last.name), &records)?;
                    segments.pop_back();
                    seg
                } else {
                    // The segment's range now ends where the copy starts.
                    let keep = usize::try_from(from.get() - last.first.get())
                        .expect("segment offsets fit in memory");
                    last.end = u64::from(last.offsets[keep]);
                    last.offsets.truncate(keep);
                    last.offsets.shrink_to_fit();
                    inner.create_segment(from, 0, None, &records)?
                };
                segments.push_back(seg);
                copied = true;
            }
        }
        // A new segment for the appends after a torn tail or damage, unless the copy is one.
        let needs_new_segment = !copied
            && (segments.is_empty()
                || scan.corruption.is_some()
                || matches!(scan.tail, Some((Tail::Torn | Tail::StaleRecords, _, _))));
        if needs_new_segment {
            let first = match segments.back() {
                Some(last) => LogIndex::new(last.next()),
                None => scan
                    .past_cut
                    .first()
                    .and_then(|n| format::parse_segment_name(n))
                    .unwrap_or(inner.config.first_index),
            };
            // A last segment without a whole record (its only record torn) starts where the
            // new one does, under the same name: the new one replaces it, keeping its flags.
            // Listing both would leave a stale entry that a purge or truncation takes for an
            // empty segment and discards, with the live file of that name.
            let replace = segments
                .back()
                .filter(|last| last.next() == last.first.get())
                .map(|last| (last.name.clone(), last.flags));
            let flags = match &replace {
                Some((_, flags)) => *flags,
                None if segments.is_empty() => FLAG_BASE,
                None => 0,
            };
            let seg = inner.create_segment(
                first,
                flags,
                replace.as_ref().map(|(n, _)| n.as_str()),
                &[],
            )?;
            if replace.is_some() {
                segments.pop_back();
            }
            segments.push_back(seg);
        } else {
            io("sync directory", "", inner.storage.sync_dir())?;
        }
        let first = segments.front().expect("at least one segment").first;
        let next = segments.back().expect("at least one segment").next();
        let segment_count = segments.len();
        {
            let mut st = inner.state.lock();
            st.segments = segments;
            st.next = next;
            st.written = next;
            st.durable = next;
        }
        let report = RecoveryReport {
            segments: segment_count,
            records: next - first.get(),
            first_index: first,
            next_index: LogIndex::new(next),
            torn_tail: scan.tail.as_ref().map(|(_, s, o)| (s.clone(), *o)),
            corruption: scan.corruption.clone(),
            set_aside,
        };
        let flusher = match inner.config.sync_policy {
            SyncPolicy::Group {
                batch_delay_us_max,
                batch_bytes_max,
            } => {
                let inner = Arc::clone(&inner);
                let handle = std::thread::Builder::new()
                    .name("synod-wal-group-commit".into())
                    .spawn(move || {
                        inner.group_commit(
                            Duration::from_micros(batch_delay_us_max),
                            batch_bytes_max,
                        );
                    })
                    .map_err(|e| WalError::io("spawn the group-commit thread", "", e))?;
                Some(handle)
            }
            SyncPolicy::Always | SyncPolicy::Manual => None,
        };
        let wal = Wal {
            shared: Arc::new(Shared {
                inner: Arc::clone(&inner),
                flusher: Mutex::new(flusher),
                preparer: Mutex::new(None),
            }),
        };
        if matches!(inner.config.sync_policy, SyncPolicy::Group { .. })
            && inner.config.spare_segments_max > 0
        {
            // Dropping `wal` on failure stops the group-commit thread.
            let handle = std::thread::Builder::new()
                .name("synod-wal-spares".into())
                .spawn(move || inner.prepare_spares())
                .map_err(|e| WalError::io("spawn the spare-preparing thread", "", e))?;
            *wal.shared.preparer.lock() = Some(handle);
        }
        Ok((wal, report))
    }

    fn inner(&self) -> &Inner<S> {
        &self.shared.inner
    }

    /// Appends one record. Under [`SyncPolicy::Always`] and [`SyncPolicy::Group`] it returns
    /// once the record is durable; under [`SyncPolicy::Manual`] once it is queued (call
    /// [`Wal::sync`]). Returns the record's index.
    ///
    /// # Errors
    ///
    /// [`WalError::RecordTooLarge`]; [`WalError::Poisoned`] after an earlier failure; the
    /// I/O error of a failed write or sync (the record is then not durable, and the log
    /// poisoned).
    pub fn append(&self, payload: impl Into<Bytes>) -> Result<LogIndex, WalError> {
        self.append_batch(std::iter::once(payload))
    }

    /// Appends records as one batch with consecutive indexes, all or none accepted; waits
    /// like [`Wal::append`]. Returns the index of the last record (the last index of the log
    /// if the batch is empty).
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; a too-large record rejects the whole batch.
    pub fn append_batch<I>(&self, payloads: I) -> Result<LogIndex, WalError>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        let (st, last, epoch) = self.submit_locked(payloads)?;
        if self.inner().config.sync_policy != SyncPolicy::Manual {
            // Under the same lock as the queueing: a writer takes the state's lock once
            // before it waits, not twice.
            self.wait_locked(st, last, Waiter::Writer { epoch })?;
        }
        Ok(last)
    }

    /// Appends one record without waiting for it to become durable, and returns its index.
    /// Learn when it is durable from [`Wal::durable_index`], [`Wal::wait_durable`] or a
    /// [`Wal::set_durable_listener`] callback. Under [`SyncPolicy::Group`] the group-commit
    /// thread makes it durable within `batch_delay_us_max`; under the other policies the
    /// next sync does (any blocking append, [`Wal::sync`] or [`Wal::wait_durable`]).
    ///
    /// # Errors
    ///
    /// As [`Wal::append`].
    pub fn submit(&self, payload: impl Into<Bytes>) -> Result<LogIndex, WalError> {
        self.submit_batch(std::iter::once(payload))
    }

    /// Appends a batch without waiting for durability; returns the last index (the last
    /// index of the log if the batch is empty).
    ///
    /// # Errors
    ///
    /// As [`Wal::append_batch`].
    pub fn submit_batch<I>(&self, payloads: I) -> Result<LogIndex, WalError>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        self.submit_locked(payloads).map(|(_, last, _)| last)
    }

    /// Queues a batch; returns the state's lock, still held, the batch's last index and the
    /// truncation epoch it was queued in.
    #[allow(clippy::type_complexity)]
    fn submit_locked<I>(
        &self,
        payloads: I,
    ) -> Result<(MutexGuard<'_, State<S::File>>, LogIndex, u64), WalError>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        let inner = self.inner();
        let max = inner.config.record_bytes_max;
        let records: Vec<Bytes> = payloads.into_iter().map(Into::into).collect();
        let mut bytes = 0usize;
        for r in &records {
            if r.len() > max {
                return Err(WalError::RecordTooLarge {
                    bytes: r.len(),
                    max,
                });
            }
            bytes += format::record_bytes(r.len());
        }
        let mut st = inner.state.lock();
        loop {
            if let Some(cause) = &st.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if st.cutting {
                // The index this batch would get is about to be reset.
                inner.changed.wait(&mut st);
                continue;
            }
            if st.pending.is_empty() || st.pending_bytes + bytes <= inner.config.pending_bytes_max {
                break;
            }
            // Too much pending: make room before queueing more.
            match inner.config.sync_policy {
                SyncPolicy::Group { .. } => {
                    // Urgent: nobody else may come to share this sync, and the
                    // submitter can queue nothing until it ends.
                    st.sync_requested = true;
                    st.sync_urgent = true;
                    inner.flusher_wake.notify_one();
                    inner.changed.wait(&mut st);
                }
                SyncPolicy::Always | SyncPolicy::Manual if !st.busy => {
                    inner.flush(&mut st, inner.config.sync_policy == SyncPolicy::Always)?;
                }
                SyncPolicy::Always | SyncPolicy::Manual => inner.changed.wait(&mut st),
            }
        }
        let Some(next) = st
            .next
            .checked_add(records.len() as u64)
            .filter(|&n| n < u64::MAX)
        else {
            // Only a log opened (or purged) near u64::MAX gets here.
            return Err(WalError::OutOfRange {
                index: LogIndex::new(u64::MAX),
                first: st.segments.front().expect("at least one segment").first,
                next: LogIndex::new(st.next),
            });
        };
        let was_empty = st.pending.is_empty();
        st.next = next;
        st.pending.extend(records);
        st.pending_bytes += bytes;
        let last = LogIndex::new(st.next - 1);
        if let SyncPolicy::Group {
            batch_bytes_max, ..
        } = inner.config.sync_policy
            && (was_empty || st.pending_bytes >= batch_bytes_max)
        {
            inner.flusher_wake.notify_one();
        }
        let epoch = st.cuts.epoch;
        Ok((st, last, epoch))
    }

    /// Makes every record appended so far durable, and returns the durable index. If a
    /// truncation removes some of those records meanwhile, it makes durable what is left
    /// of them. Under [`SyncPolicy::Group`] the sync begins at once (after the one under
    /// way), without waiting for other writers to gather.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`], or the I/O error of the failed write or sync.
    pub fn sync(&self) -> Result<LogIndex, WalError> {
        // The last index read and the wait begun under one lock: a truncation between the
        // two would otherwise leave the wait on an index the log no longer has.
        let st = self.inner().state.lock();
        let last = LogIndex::new(st.next.saturating_sub(1));
        self.wait_locked(st, last, Waiter::Sync)
    }

    /// Writes every queued record to its segment without syncing it, and returns the last
    /// index written (the last index of the log).
    ///
    /// The records reach the storage (the page cache of real files) but are not durable, and
    /// [`Wal::durable_index`] does not move: a crash may lose or tear them. This is for a
    /// caller that makes the storage durable by other means, under [`SyncPolicy::Manual`]:
    /// a deterministic simulator whose disk sync comes later as an event of its own covers
    /// only what was written before it was asked for, and records still queued in memory
    /// would not be among them. Such a caller must not count on recovery to tell damage
    /// in those records from a torn tail: each record carries the last index the log itself
    /// knew durable when it was written, and recovery cuts a damaged record after that
    /// mark as a torn tail. A crash only damages what a sync did not cover, so this matters
    /// only for damage to synced data (a bit flipped on the medium).
    ///
    /// A roll-over to a new segment during the flush syncs the full segment and creates the
    /// next one durably, as an append's does.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`], or the I/O error of the failed write (which poisons the log).
    pub fn flush(&self) -> Result<LogIndex, WalError> {
        let inner = self.inner();
        let mut st = inner.lock_idle()?;
        inner.flush(&mut st, false)?;
        Ok(LogIndex::new(st.written.saturating_sub(1)))
    }

    /// Waits until every record up to `index` is durable. Under [`SyncPolicy::Always`] and
    /// [`SyncPolicy::Manual`] the calling thread does the sync if no other thread is doing
    /// one; under [`SyncPolicy::Group`] it asks the group-commit thread to sync now.
    ///
    /// # Errors
    ///
    /// [`WalError::OutOfRange`] if `index` has not been appended; [`WalError::Poisoned`] if
    /// the log failed before `index` became durable; the I/O error of a failed sync.
    pub fn wait_durable(&self, index: LogIndex) -> Result<(), WalError> {
        let inner = self.inner();
        let st = inner.state.lock();
        if index.get() >= st.next {
            return Err(inner.out_of_range(&st, index));
        }
        self.wait_locked(st, index, Waiter::Index).map(drop)
    }

    /// Waits, with the state's lock already held, until `index` is durable, as `waiter`
    /// says; returns the durable index it found.
    fn wait_locked(
        &self,
        mut st: MutexGuard<'_, State<S::File>>,
        mut index: LogIndex,
        waiter: Waiter,
    ) -> Result<LogIndex, WalError> {
        let inner = self.inner();
        // The sync this thread last waited for at a gate, if it did.
        let mut waited = None;
        let result = loop {
            if let Waiter::Writer { epoch } = waiter
                && st
                    .cuts
                    .floor_since(epoch)
                    .is_some_and(|floor| index.get() >= floor)
            {
                break Err(WalError::Truncated { index });
            }
            if index.get() >= st.next && waiter == Waiter::Sync {
                // A truncation removed records while this thread waited: what is left of
                // them is what must be durable now.
                match st.next.checked_sub(1) {
                    Some(last) => index = LogIndex::new(last),
                    None => break Ok(()),
                }
            }
            if index.get() < st.durable {
                break Ok(());
            }
            if let Some(cause) = &st.poisoned {
                break Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if index.get() >= st.next {
                // A truncation removed it while this thread waited.
                break Err(inner.out_of_range(&st, index));
            }
            match inner.config.sync_policy {
                SyncPolicy::Group { .. } => {
                    let urgent = !matches!(waiter, Waiter::Writer { .. });
                    let (sync, wake) = st.wait_for_sync(index.get(), urgent, waited);
                    if wake {
                        inner.flusher_wake.notify_one();
                    }
                    waited = Some(sync);
                    let alerts = inner.gates.alerts.load(Ordering::Acquire);
                    MutexGuard::unlocked(&mut st, || inner.gates.wait(sync, alerts));
                }
                SyncPolicy::Always | SyncPolicy::Manual if !st.busy => {
                    if let Err(e) = inner.flush(&mut st, true) {
                        break Err(e);
                    }
                }
                SyncPolicy::Always | SyncPolicy::Manual => inner.changed.wait(&mut st),
            }
        };
        if let Some(sync) = waited
            && st.leave(sync)
        {
            inner.flusher_wake.notify_one();
        }
        result.map(|()| LogIndex::new(st.durable.saturating_sub(1)))
    }

    /// Calls `listener` with the new durable index after every sync that moves it, from the
    /// thread that did the sync, with no lock on the log's state held (so the listener may
    /// read the log, but must not append, sync or set a listener: that would wait on
    /// itself). Indexes it hears only increase, except after a [`Wal::truncate_after`] or a
    /// purge past the end, which start it again from the records that become durable next;
    /// it may hear of an index after a waiter on that index has already returned. Replaces
    /// any earlier listener. A listener that panics poisons the log, as a failed sync
    /// does: later writes fail with [`WalError::Poisoned`] naming the panic, rather than
    /// wait for a group-commit thread the panic would have ended.
    pub fn set_durable_listener(&self, listener: impl Fn(LogIndex) + Send + Sync + 'static) {
        self.inner().listener.lock().0 = Some(Box::new(listener));
    }

    /// The highest index up to which every record is durable (0, or the index before the
    /// first, when none is). Never reports a record of a batch whose write or sync failed.
    #[must_use]
    pub fn durable_index(&self) -> LogIndex {
        LogIndex::new(self.inner().state.lock().durable.saturating_sub(1))
    }

    /// The index of the first record (equal to [`Wal::next_index`] when the log is empty).
    /// After a purge this may be below the purge mark: purges remove whole segments only.
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.inner()
            .state
            .lock()
            .segments
            .front()
            .expect("at least one segment")
            .first
    }

    /// The index of the last record, or the index before the first when the log is empty
    /// (0 for a new log).
    #[must_use]
    pub fn last_index(&self) -> LogIndex {
        LogIndex::new(self.inner().state.lock().next.saturating_sub(1))
    }

    /// The index the next appended record gets.
    #[must_use]
    pub fn next_index(&self) -> LogIndex {
        LogIndex::new(self.inner().state.lock().next)
    }

    /// Whether the log holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        let st = self.inner().state.lock();
        st.segments
            .front()
            .expect("at least one segment")
            .first
            .get()
            == st.next
    }

    /// The number of segment files in the log.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.inner().state.lock().segments.len()
    }

    /// Bytes of memory the in-memory index of record positions takes (allocated capacity,
    /// 4 bytes per record, at most 8 while a segment's vector grows).
    #[must_use]
    pub fn index_bytes(&self) -> usize {
        let st = self.inner().state.lock();
        st.segments
            .iter()
            .map(|s| s.offsets.capacity() * size_of::<u32>())
            .sum()
    }

    /// The storage the log lives in. A caller may keep files of its own there, under names
    /// the log never makes (it leaves such files alone): a snapshot beside a log, say.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.inner().storage
    }

    /// The error that poisoned the log, if one did.
    #[must_use]
    pub fn poisoned(&self) -> Option<String> {
        self.inner().state.lock().poisoned.clone()
    }

    /// Reads the record at `index`, verifying its checksum.
    ///
    /// # Errors
    ///
    /// [`WalError::OutOfRange`]; [`WalError::Corrupt`] if the stored record is damaged;
    /// [`WalError::Io`].
    pub fn read(&self, index: LogIndex) -> Result<Bytes, WalError> {
        let inner = self.inner();
        let (file, name, offset, len, tag) = {
            let st = inner.state.lock();
            let first = st
                .segments
                .front()
                .expect("at least one segment")
                .first
                .get();
            let i = index.get();
            if i < first || i >= st.next {
                return Err(inner.out_of_range(&st, index));
            }
            if i >= st.written {
                let at = usize::try_from(i - st.written).expect("pending fits in memory");
                return Ok(st.pending[at].clone());
            }
            let pos = st.segments.partition_point(|s| s.first.get() <= i) - 1;
            let seg = &st.segments[pos];
            let k = usize::try_from(i - seg.first.get()).expect("segment offsets fit in memory");
            let offset = u64::from(seg.offsets[k]);
            let end = seg.offsets.get(k + 1).map_or(seg.end, |&o| u64::from(o));
            let len = usize::try_from(end - offset).expect("a record fits in memory");
            (
                Arc::clone(&seg.file),
                seg.name.clone(),
                offset,
                len,
                seg.tag,
            )
        };
        read_record(&*file, &name, offset, len, index, tag)
    }

    /// Iterates over the records in `from..to` (indexes), reading each when it is reached.
    /// Indexes outside the log yield [`WalError::OutOfRange`].
    #[must_use]
    pub fn range(&self, from: LogIndex, to: LogIndex) -> Records<'_, S> {
        Records {
            wal: self,
            next: from.get(),
            end: to.get(),
        }
    }

    /// Removes every record after `last_kept`, so that the next append gets `last_kept + 1`:
    /// a consensus follower discarding a conflicting suffix. A cut of records already written
    /// is durable when it returns: no crash afterwards brings the removed records back, not
    /// even one in the middle of a later truncation. A crash during it leaves the log as it
    /// was (less records not yet durable) or as the cut leaves it: the durable records up to
    /// `last_kept` survive, and nothing comes back that was not in the log just before, in
    /// particular no record that an earlier cut removed. Such a cut makes the records up to
    /// `last_kept` durable as a side effect. A
    /// cut of records still queued (not yet written, under [`SyncPolicy::Manual`]) touches no
    /// file and makes nothing durable: a crash may lose records up to `last_kept` as it may
    /// any unsynced record, and can bring back none of the dropped ones, which never reached
    /// a file.
    ///
    /// Appends made while it runs wait for it and get indexes after the cut. A blocking
    /// append whose record it removes fails with [`WalError::Truncated`]; a
    /// [`Wal::wait_durable`] on a removed index fails with [`WalError::OutOfRange`] unless a
    /// new record has reached that index (it is about indexes, not records).
    ///
    /// # Errors
    ///
    /// [`WalError::OutOfRange`] if `last_kept` is below `first_index - 1` or after the last
    /// index; [`WalError::Poisoned`]; an I/O error (which poisons the log).
    pub fn truncate_after(&self, last_kept: LogIndex) -> Result<(), WalError> {
        let inner = self.inner();
        let mut st = inner.lock_idle()?;
        let Some(keep_next) = last_kept.get().checked_add(1) else {
            return Err(inner.out_of_range(&st, last_kept));
        };
        let first = st
            .segments
            .front()
            .expect("at least one segment")
            .first
            .get();
        if keep_next < first || keep_next > st.next {
            return Err(inner.out_of_range(&st, last_kept));
        }
        if keep_next == st.next {
            return Ok(());
        }
        if keep_next >= st.written {
            // Only queued records go: nothing on disk changes.
            let keep = usize::try_from(keep_next - st.written).expect("pending fits in memory");
            let dropped: Vec<Bytes> = st.pending.drain(keep..).collect();
            st.pending_bytes -= dropped
                .iter()
                .map(|r| format::record_bytes(r.len()))
                .sum::<usize>();
            st.next = keep_next;
            st.cuts.record(keep_next);
            inner.notify_changed(&mut st);
            return Ok(());
        }
        st.pending.clear();
        st.pending_bytes = 0;
        st.next = st.written;
        st.busy = true;
        st.cutting = true;
        // Work out the plan under the lock, do the I/O without it.
        let doomed: Vec<String> = st
            .segments
            .iter()
            .filter(|s| s.first.get() > keep_next)
            .map(|s| s.name.clone())
            .collect();
        let replace = st
            .segments
            .iter()
            .find(|s| s.first.get() == keep_next)
            .map(|s| (s.name.clone(), s.flags));
        let keeper = st
            .segments
            .iter()
            .rfind(|s| s.first.get() < keep_next)
            .map(|s| (Arc::clone(&s.file), s.name.clone()));
        let result = MutexGuard::unlocked(&mut st, || -> Result<Segment<S::File>, WalError> {
            // The cut is recorded first, by a cut segment at it, and only then do the
            // segments after it go: the segment before the cut may hold records an earlier
            // cut removed, past its range, and its range ends where the next segment starts.
            // Were that next segment removed first, a crash would leave it the last segment,
            // read to its end.
            let seg = match replace {
                // A segment starts exactly at the cut: replace it with an empty one.
                Some((name, flags)) => inner.create_segment(
                    LogIndex::new(keep_next),
                    flags | FLAG_CUT,
                    Some(&name),
                    &[],
                )?,
                // The cut is inside a segment: it becomes closed, its range ending at the cut
                // by the new segment's name, so its records up to the cut must be durable.
                None => {
                    let (file, name) = keeper.expect("a segment holds the cut");
                    io("sync", &name, file.sync_data())?;
                    inner.create_segment(LogIndex::new(keep_next), FLAG_CUT, None, &[])?
                }
            };
            // Newest first; until they are all gone the cut segment makes them obsolete.
            for name in doomed.iter().rev() {
                io("remove", name, inner.storage.remove(name))?;
            }
            if !doomed.is_empty() {
                io("sync directory", "", inner.storage.sync_dir())?;
            }
            Ok(seg)
        });
        inner.end_maintenance(&mut st);
        // Whatever happened, the records from the cut on are no longer the writers'.
        st.cuts.record(keep_next);
        let seg = match result {
            Ok(seg) => seg,
            Err(e) => return Err(inner.poison(&mut st, e)),
        };
        st.segments.retain(|s| s.first.get() < keep_next);
        if let Some(last) = st.segments.back_mut() {
            let keep = usize::try_from(keep_next - last.first.get()).expect("fits");
            last.offsets.truncate(keep);
            last.offsets.shrink_to_fit();
        }
        st.segments.push_back(seg);
        st.next = keep_next;
        st.written = keep_next;
        st.durable = keep_next;
        Ok(())
    }

    /// Low-Water Mark: discards the records below `mark` (everything covered by a snapshot
    /// at `mark - 1`, say), a whole segment at a time: a segment goes once all its records
    /// are below the mark, so [`Wal::first_index`] may stay below it. If `mark` is past the
    /// end of the log, the log becomes empty and the next append gets `mark`. Crash-safe: a
    /// crash part-way leaves a contiguous log. Returns the new first index.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`]; an I/O error (which poisons the log).
    pub fn purge_before(&self, mark: LogIndex) -> Result<LogIndex, WalError> {
        let inner = self.inner();
        let mut st = inner.lock_idle()?;
        let first = st.segments.front().expect("at least one segment").first;
        if mark <= first {
            return Ok(first);
        }
        let last_first = st.segments.back().expect("at least one segment").first;
        if mark.get() > st.next || (mark.get() == st.next && last_first < mark) {
            return inner.reset(st, mark);
        }
        let count = st
            .segments
            .iter()
            .skip(1)
            .take_while(|s| s.first <= mark)
            .count();
        if count == 0 {
            return Ok(first);
        }
        let names: Vec<String> = st
            .segments
            .iter()
            .take(count)
            .map(|s| s.name.clone())
            .collect();
        st.busy = true;
        let result = MutexGuard::unlocked(&mut st, || inner.discard_segments(&names));
        inner.end_maintenance(&mut st);
        if let Err(e) = result {
            return Err(inner.poison(&mut st, e));
        }
        st.segments.drain(..count);
        Ok(st.segments.front().expect("the last segment stays").first)
    }

    /// Low-Water Mark by age: discards the closed segments whose records are all older than
    /// `retention_ms` at `now_ms` (milliseconds of the configured [`crate::Clock`]). A segment's
    /// records are as old as the creation of the segment after it. The last segment is never
    /// discarded. Returns the new first index.
    ///
    /// # Errors
    ///
    /// As [`Wal::purge_before`].
    pub fn purge_older_than(&self, now_ms: u64, retention_ms: u64) -> Result<LogIndex, WalError> {
        let mark = {
            let st = self.inner().state.lock();
            let cutoff = now_ms.saturating_sub(retention_ms);
            st.segments
                .iter()
                .skip(1)
                .take_while(|s| s.created_ms <= cutoff)
                .last()
                .map(|s| s.first)
        };
        match mark {
            Some(mark) => self.purge_before(mark),
            None => Ok(self.first_index()),
        }
    }

    /// Makes everything appended durable and closes this handle (the log closes when its
    /// last clone is dropped). Dropping a handle without closing it is like a crash of the
    /// process: records not yet durable may be lost.
    ///
    /// # Errors
    ///
    /// As [`Wal::sync`].
    pub fn close(self) -> Result<(), WalError> {
        self.sync().map(drop)
    }
}

/// Reads and checks the record at `offset` of a segment file, `len` bytes at most (its
/// frame and padding), which must be record `index` of the segment tagged `tag`.
fn read_record<F: StorageFile>(
    file: &F,
    name: &str,
    offset: u64,
    len: usize,
    index: LogIndex,
    tag: u32,
) -> Result<Bytes, WalError> {
    let mut buf = vec![0u8; len];
    // The file may end inside the zero padding after its last record (a write torn after
    // the payload): the record is whole without it, and `check_record` refuses anything
    // shorter.
    let got = io("read", name, read_full_at(file, &mut buf, offset))?;
    buf.truncate(got);
    let corrupt = || {
        WalError::Corrupt(Corruption {
            segment: name.to_owned(),
            offset,
            index: Some(index),
            kind: CorruptionKind::BadRecord,
        })
    };
    let header = format::check_record(&buf).ok_or_else(corrupt)?;
    if header.index != index || header.tag != tag {
        return Err(corrupt());
    }
    let payload_len = header.len as usize;
    Ok(Bytes::from(buf).slice(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_len))
}

/// The first record of the last segment that no durable mark proves was synced, if any:
/// it and the records after it may sit in clean, never-written pages after a failed sync.
fn first_unproven(seg: &scan::ScannedSegment) -> Option<LogIndex> {
    let first = seg.header.first.get();
    let next = first + seg.offsets.len() as u64;
    let from = seg
        .proven
        .map_or(first, |p| p.get().saturating_add(1))
        .max(first);
    (from < next).then(|| LogIndex::new(from))
}

/// The payloads of the records `from..` of a scanned segment, read back and checked.
fn read_from<F: StorageFile>(
    file: &F,
    seg: &scan::ScannedSegment,
    from: LogIndex,
) -> Result<Vec<Bytes>, WalError> {
    let first = seg.header.first.get();
    let tag = format::tag_of(seg.header.generation);
    let skip = usize::try_from(from.get() - first).expect("segment offsets fit in memory");
    let mut records = Vec::with_capacity(seg.offsets.len().saturating_sub(skip));
    for (k, &offset) in seg.offsets.iter().enumerate().skip(skip) {
        let end = seg.offsets.get(k + 1).map_or(seg.end, |&o| u64::from(o));
        let len = usize::try_from(end - u64::from(offset)).expect("a record fits in memory");
        let index = LogIndex::new(first + k as u64);
        records.push(read_record(
            file,
            &seg.name,
            u64::from(offset),
            len,
            index,
            tag,
        )?);
    }
    Ok(records)
}

/// An iterator over records, from [`Wal::range`].
#[derive(Debug)]
pub struct Records<'a, S: Storage> {
    wal: &'a Wal<S>,
    next: u64,
    end: u64,
}

impl<S: Storage> Iterator for Records<'_, S> {
    type Item = Result<(LogIndex, Bytes), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let index = LogIndex::new(self.next);
        self.next += 1;
        let result = self.wal.read(index).map(|b| (index, b));
        if result.is_err() {
            // One error ends the iteration.
            self.next = self.end;
        }
        Some(result)
    }
}

impl<S: Storage> Inner<S> {
    fn out_of_range(&self, st: &State<S::File>, index: LogIndex) -> WalError {
        WalError::OutOfRange {
            index,
            first: st.segments.front().expect("at least one segment").first,
            next: LogIndex::new(st.next),
        }
    }

    /// Ends a truncation's or purge's I/O: the log is idle again. Wakes waiters, and the
    /// group-commit thread, which sleeps while another thread is busy and may have records
    /// to sync that arrived meanwhile.
    fn end_maintenance(&self, st: &mut State<S::File>) {
        st.busy = false;
        st.cutting = false;
        self.notify_changed(st);
        self.flusher_wake.notify_one();
    }

    fn poison(&self, st: &mut State<S::File>, e: WalError) -> WalError {
        if st.poisoned.is_none() {
            st.poisoned = Some(e.to_string());
        }
        self.notify_changed(st);
        e
    }

    /// Wakes every thread waiting for a change: those on `changed`, and every writer at a
    /// gate. Called with the state's lock held (`_st`), so that a writer who read the alert
    /// count under it before waiting cannot miss this alert.
    fn notify_changed(&self, _st: &mut State<S::File>) {
        self.changed.notify_all();
        self.gates.alert();
    }

    /// Locks the state once no other thread is busy with I/O, and nothing is poisoned.
    fn lock_idle(&self) -> Result<MutexGuard<'_, State<S::File>>, WalError> {
        let mut st = self.state.lock();
        let mut waited = false;
        let idle = loop {
            if let Some(cause) = &st.poisoned {
                break Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if !st.busy {
                break Ok(());
            }
            if !waited {
                st.idle_waiters += 1;
                waited = true;
            }
            self.changed.wait(&mut st);
        };
        if waited {
            st.idle_waiters -= 1;
            // The group-commit thread held back for this thread: it looks again once the
            // lock is free, by when this thread is busy or done.
            self.flusher_wake.notify_one();
        }
        idle.map(|()| st)
    }

    /// Writes the pending records (and syncs, if `sync`) in the calling thread, and wakes
    /// the writers the sync covered. The caller holds the lock and checked that no other
    /// thread is busy.
    fn flush(&self, st: &mut MutexGuard<'_, State<S::File>>, sync: bool) -> Result<(), WalError> {
        let owed = self.flush_deferring(st, sync, None)?;
        if let Some(owed) = owed {
            MutexGuard::unlocked(st, || self.announce(owed, false));
        }
        Ok(())
    }

    /// [`Inner::flush`], except that it leaves the wake-up of the writers its sync covered
    /// (and the listener's news) to the caller, returned as [`Owed`], and that it first
    /// delivers `earlier`, what the previous sync owed, once it has taken its batch and let
    /// go of the lock. This is how the group-commit thread begins a sync whose batch is
    /// already waiting (a full one) as soon as the one before ends: the writers of a sync
    /// are woken while the next one is written and synced, not before it begins (the woken
    /// writers would otherwise take the cores while the next batch waits to be written).
    fn flush_deferring(
        &self,
        st: &mut MutexGuard<'_, State<S::File>>,
        sync: bool,
        earlier: Option<Owed>,
    ) -> Result<Option<Owed>, WalError> {
        assert!(!st.busy, "flush while another thread is busy");
        let pay = |st: &mut MutexGuard<'_, State<S::File>>, earlier: Option<Owed>| {
            if let Some(earlier) = earlier {
                MutexGuard::unlocked(st, || self.announce(earlier, false));
            }
        };
        if let Some(cause) = &st.poisoned {
            let cause = cause.clone();
            pay(st, earlier);
            return Err(WalError::Poisoned { cause });
        }
        let batch: Vec<Bytes> = st.pending.iter().cloned().collect();
        if batch.is_empty() && (!sync || st.durable == st.written) {
            pay(st, earlier);
            return Ok(None);
        }
        let start = st.written;
        let durable_before = st.durable;
        let this_sync = if sync {
            st.begin_sync(start + batch.len() as u64)
        } else {
            st.syncs_begun
        };
        let active = st.segments.back().expect("at least one segment");
        let cursor = Cursor {
            file: Arc::clone(&active.file),
            name: active.name.clone(),
            tag: active.tag,
            end: active.end,
            offsets: Vec::new(),
            fresh: None,
        };
        st.busy = true;
        let result = MutexGuard::unlocked(st, || {
            if let Some(earlier) = &earlier {
                // The next batch waits to be written: one wake-up here, the rest relayed.
                // The listener hears of it only once this thread is no longer busy (below):
                // it may purge or flush, which waits for an idle log.
                self.gates.open(earlier.sync, true);
            }
            self.write_batch(&batch, start, durable_before, cursor, sync)
        });
        st.busy = false;
        if sync {
            st.end_sync();
        }
        let tell = |st: &mut MutexGuard<'_, State<S::File>>, earlier: Option<Owed>| {
            if let Some(earlier) = earlier {
                MutexGuard::unlocked(st, || self.tell_listener(&earlier));
            }
        };
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                let e = self.poison(st, e);
                tell(st, earlier);
                return Err(e);
            }
        };
        // Publish: the records are now in files; readers find them there.
        let mut done = done.into_iter();
        let head = done.next().expect("the active cursor");
        let active = st.segments.back_mut().expect("at least one segment");
        active.offsets.extend_from_slice(&head.offsets);
        active.end = head.end;
        for c in done {
            if let Some(last) = st.segments.back_mut() {
                last.offsets.shrink_to_fit();
            }
            let mut seg = c.fresh.expect("rolled segments are fresh");
            seg.offsets = c.offsets;
            seg.end = c.end;
            st.segments.push_back(seg);
        }
        st.pending.drain(..batch.len());
        st.pending_bytes -= batch
            .iter()
            .map(|r| format::record_bytes(r.len()))
            .sum::<usize>();
        st.written = start + batch.len() as u64;
        let moved = sync && st.durable != st.written;
        if sync {
            st.durable = st.written;
        }
        self.changed.notify_all();
        // The group-commit thread sleeps while another thread is busy writing: a writer
        // that asked for a sync meanwhile (`sync_requested`) waits for it to wake, whoever
        // wrote (a `Wal::flush` writes without syncing).
        self.flusher_wake.notify_one();
        if !sync {
            tell(st, earlier);
            return Ok(None);
        }
        // Writers that look from now on find their records durable; those already waiting
        // are woken by `announce`.
        self.gates.done.store(this_sync, Ordering::Release);
        let owed = Owed {
            sync: this_sync,
            durable: LogIndex::new(st.durable.saturating_sub(1)),
            epoch: st.cuts.epoch,
            moved,
        };
        tell(st, earlier);
        Ok(Some(owed))
    }

    /// Delivers what the end of a sync owes (called without the state's lock): wakes the
    /// writers it covered, not through the lock, and tells the listener. With `relay`, the
    /// calling thread wakes one of them, who wakes the rest (see [`Gates`]); without, it
    /// wakes them all itself, at once.
    fn announce(&self, owed: Owed, relay: bool) {
        self.gates.open(owed.sync, relay);
        self.tell_listener(&owed);
    }

    /// Tells the listener of a sync's end, unless it has heard of a later one (called
    /// without the state's lock, and not while this thread holds the log busy: the listener
    /// may purge or flush, which wait for an idle log).
    fn tell_listener(&self, owed: &Owed) {
        if !owed.moved {
            return;
        }
        let mut slot = self.listener.lock();
        // News from before a truncation the listener already heard past is stale.
        if owed.epoch > slot.2 || (owed.epoch == slot.2 && owed.durable.get() > slot.1) {
            slot.1 = owed.durable.get();
            slot.2 = owed.epoch;
            if let Some(listener) = &slot.0 {
                let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    listener(owed.durable);
                }));
                if let Err(panic) = told {
                    drop(slot);
                    // The listener missed news it cannot be told again, and it runs on the
                    // group-commit thread, which a panic would end with every writer left
                    // waiting: the log fails instead, loudly, as after a failed sync.
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    let mut st = self.state.lock();
                    if st.poisoned.is_none() {
                        st.poisoned = Some(format!("the durable listener panicked: {what}"));
                    }
                    self.notify_changed(&mut st);
                }
            }
        }
    }

    /// Encodes and writes `batch` (records `start..`) from the active segment on, rolling to
    /// new segments as they fill; syncs the last one if `sync`. Returns a cursor per segment
    /// written, the first being the active one.
    fn write_batch(
        &self,
        batch: &[Bytes],
        start: u64,
        durable_before: u64,
        mut cur: Cursor<S::File>,
        sync: bool,
    ) -> Result<Vec<Cursor<S::File>>, WalError> {
        let mut scratch = self.scratch.lock();
        let buf = &mut *scratch;
        buf.clear();
        let mut done = Vec::new();
        let mut buf_at = cur.end;
        // The last index known durable, carried in each record (see `format::encode_record`).
        let mut durable_last = durable_before.saturating_sub(1);
        let segment_bytes_max = self.config.segment_bytes_max;
        for (k, payload) in batch.iter().enumerate() {
            let index = start + k as u64;
            let need = format::record_bytes(payload.len()) as u64;
            if cur.end + need > segment_bytes_max {
                // Roll over: the full segment is written and synced before the next one
                // exists, so a closed segment always holds its whole range.
                io("write", &cur.name, write_all_at(&*cur.file, buf, buf_at))?;
                buf.clear();
                io("sync", &cur.name, cur.file.sync_data())?;
                durable_last = index - 1;
                let seg = self.create_segment(LogIndex::new(index), 0, None, &[])?;
                let next = Cursor {
                    file: Arc::clone(&seg.file),
                    name: seg.name.clone(),
                    tag: seg.tag,
                    end: seg.end,
                    offsets: Vec::new(),
                    fresh: Some(seg),
                };
                done.push(std::mem::replace(&mut cur, next));
                buf_at = cur.end;
            }
            let lag = u32::try_from(index - durable_last).unwrap_or(u32::MAX);
            cur.offsets
                .push(u32::try_from(cur.end).expect("segment_bytes_max fits in u32"));
            format::encode_record(buf, LogIndex::new(index), cur.tag, lag, payload);
            cur.end += need;
        }
        if !buf.is_empty() {
            io("write", &cur.name, write_all_at(&*cur.file, buf, buf_at))?;
        }
        if sync {
            io("sync", &cur.name, cur.file.sync_data())?;
        }
        done.push(cur);
        Ok(done)
    }

    /// Prepares a segment file and makes it part of the log durably: a spare (recycled or
    /// pre-written file) or a new pre-written one gets the header, is synced, renamed to
    /// its name (replacing `replace` if given) and the directory synced.
    fn create_segment(
        &self,
        first: LogIndex,
        flags: u32,
        replace: Option<&str>,
        records: &[Bytes],
    ) -> Result<Segment<S::File>, WalError> {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst);
        let header = SegmentHeader {
            first,
            generation,
            created_ms: self.config.clock.now_ms(),
            flags,
        };
        let name = format::segment_name(first);
        let spare = {
            let mut spares = self.spares.lock();
            // Whether or not this takes the spare, the preparer looks again (after a
            // failure it waits for this: the roll-over that could not use a spare).
            self.spare_wanted.notify_all();
            spares.pop()
        };
        let (file, from) = match spare {
            Some(spare) => {
                let file = io("open", &spare, self.storage.open(&spare))?;
                (file, spare)
            }
            None => {
                let tmp = format!("{:020}{TMP_SUFFIX}", first.get());
                let file = io("create", &tmp, self.storage.create(&tmp))?;
                io("pre-write", &tmp, self.zero_fill(&file))?;
                (file, tmp)
            }
        };
        io(
            "write header",
            &from,
            write_all_at(&file, &header.encode(), 0),
        )?;
        // Records copied in are durable once the segment is part of the log, so each
        // carries lag 0: it proves itself synced, and the next recovery leaves it alone.
        let tag = format::tag_of(generation);
        let mut offsets = Vec::with_capacity(records.len());
        let mut end = SEGMENT_HEADER_BYTES as u64;
        if !records.is_empty() {
            let mut buf = Vec::new();
            for (k, payload) in records.iter().enumerate() {
                // The copy of a record sits no later in its file than the record it copies.
                offsets.push(u32::try_from(end).expect("segment offsets fit in u32"));
                format::encode_record(
                    &mut buf,
                    LogIndex::new(first.get() + k as u64),
                    tag,
                    0,
                    payload,
                );
                end = SEGMENT_HEADER_BYTES as u64 + buf.len() as u64;
            }
            io(
                "write",
                &from,
                write_all_at(&file, &buf, SEGMENT_HEADER_BYTES as u64),
            )?;
        }
        io("sync", &from, file.sync_data())?;
        io(
            "rename",
            &from,
            self.storage.rename(&from, replace.unwrap_or(&name)),
        )?;
        io("sync directory", "", self.storage.sync_dir())?;
        Ok(Segment {
            name,
            first,
            created_ms: header.created_ms,
            flags,
            tag,
            file: Arc::new(file),
            offsets,
            end,
        })
    }

    /// The spare-preparing thread (under [`SyncPolicy::Group`] with spare segments): keeps
    /// one spare segment file ready, pre-written, so that a roll-over under load takes it
    /// instead of writing a whole segment of zeros while every writer waits. It prepares
    /// one whenever none is ready (at open, and after each roll-over that took one), off
    /// the commit path: the group-commit thread never waits for it. After a failure (a full
    /// disk) it waits for the next segment creation before it tries again, which reports
    /// the error if it recurs. Ends when the log closes or is poisoned.
    fn prepare_spares(&self) {
        let mut failed = false;
        loop {
            {
                let mut spares = self.spares.lock();
                loop {
                    if self.closing.load(Ordering::Acquire) {
                        return;
                    }
                    if spares.is_empty() && !failed {
                        break;
                    }
                    self.spare_wanted.wait(&mut spares);
                    failed = false;
                }
            }
            if self.state.lock().poisoned.is_some() {
                return;
            }
            failed = self.prepare_spare().is_err();
        }
    }

    /// Prepares one spare segment file: creates it under a temporary name (removed at open
    /// if left over), writes and syncs zeros over the segment's length a chunk at a time
    /// ([`ZERO_CHUNK_BYTES`], so that no more than a chunk is ever dirty, and a close waits
    /// for at most one chunk), renames it to its spare name and syncs the directory. Then
    /// it is a spare, unless purges filled the spares meanwhile (it is removed instead).
    /// The rename, the directory sync and the spare's listing happen under the spares'
    /// lock: a roll-over that finds no spare while they run waits for this one (a
    /// directory sync) rather than pre-write a segment of its own, and a file under a spare
    /// name is always one the log can take.
    fn prepare_spare(&self) -> std::io::Result<()> {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst);
        let spare = format!("{generation:020}{SPARE_SUFFIX}");
        let tmp = format!("{spare}{TMP_SUFFIX}");
        let file = self.storage.create(&tmp)?;
        let written = (|| {
            let len = self.config.segment_bytes_max;
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut at = 0u64;
            while at < len {
                if self.closing.load(Ordering::Acquire) {
                    return Err(std::io::Error::other("the log is closing"));
                }
                let n = usize::try_from((len - at).min(ZERO_CHUNK_BYTES as u64))
                    .expect("bounded by the chunk size");
                write_all_at(&file, &zeros[..n], at)?;
                file.sync_data()?;
                at += n as u64;
            }
            let mut spares = self.spares.lock();
            if spares.len() >= self.config.spare_segments_max {
                // Purges filled the spares meanwhile: this one is not wanted.
                return Err(std::io::Error::other("the spares are full"));
            }
            self.storage.rename(&tmp, &spare)?;
            self.storage.sync_dir()?;
            spares.push(spare);
            Ok(())
        })();
        if written.is_err() {
            // Best effort: open removes what is left.
            let _ = self.storage.remove(&tmp);
        }
        written
    }

    /// Writes zeros over the whole segment length of `file`.
    fn zero_fill(&self, file: &S::File) -> std::io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = 0u64;
        while at < self.config.segment_bytes_max {
            let n =
                usize::try_from((self.config.segment_bytes_max - at).min(ZERO_CHUNK_BYTES as u64))
                    .expect("bounded");
            write_all_at(file, &zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Removes segments oldest first (keeping up to `spare_segments_max` as spares for
    /// reuse), then syncs the directory.
    fn discard_segments(&self, names: &[String]) -> Result<(), WalError> {
        for name in names {
            let mut spares = self.spares.lock();
            if spares.len() < self.config.spare_segments_max {
                let generation = self.next_generation.fetch_add(1, Ordering::SeqCst);
                let spare = format!("{generation:020}{SPARE_SUFFIX}");
                io("rename", name, self.storage.rename(name, &spare))?;
                spares.push(spare);
            } else {
                io("remove", name, self.storage.remove(name))?;
            }
        }
        io("sync directory", "", self.storage.sync_dir())
    }

    /// Empties the log so that the next append gets `mark`: a base segment at `mark` first
    /// (which makes every earlier segment obsolete, even if a crash stops the removals),
    /// then the old segments go.
    fn reset(
        &self,
        mut st: MutexGuard<'_, State<S::File>>,
        mark: LogIndex,
    ) -> Result<LogIndex, WalError> {
        st.pending.clear();
        st.pending_bytes = 0;
        st.next = st.written;
        st.busy = true;
        st.cutting = true;
        let names: Vec<String> = st.segments.iter().map(|s| s.name.clone()).collect();
        let result = MutexGuard::unlocked(&mut st, || -> Result<Segment<S::File>, WalError> {
            let replace = names
                .iter()
                .find(|n| format::parse_segment_name(n) == Some(mark))
                .cloned();
            let seg = self.create_segment(mark, FLAG_BASE, replace.as_deref(), &[])?;
            let old: Vec<String> = names
                .into_iter()
                .filter(|n| Some(n) != replace.as_ref())
                .collect();
            self.discard_segments(&old)?;
            Ok(seg)
        });
        self.end_maintenance(&mut st);
        // Every record before the mark goes, synced or not: none is a writer's any more.
        st.cuts.record(0);
        let seg = match result {
            Ok(seg) => seg,
            Err(e) => return Err(self.poison(&mut st, e)),
        };
        st.segments.clear();
        st.segments.push_back(seg);
        st.next = mark.get();
        st.written = mark.get();
        st.durable = mark.get();
        Ok(mark)
    }

    /// The group-commit thread: waits for pending records, lets a batch gather for up to
    /// `delay` (or until `batch_bytes_max` bytes are pending, or a caller asks for a sync),
    /// then writes and syncs it.
    ///
    /// A blocking writer asking for a sync starts it only once every writer the last sync
    /// woke is waiting again (`waiting_next >= covered_last`) or has left the log without
    /// queueing again (`returning == 0`), or `delay` after the last sync ended. Writers
    /// that block on every record come back from a sync together, one wake-up and one
    /// append each, which on two cores takes about as long as the sync itself; a sync begun
    /// for the first of them would carry a few records and leave the rest to wait behind
    /// it, halving the rate (measured: 10 records a sync instead of 63 with 64 writers).
    /// But a writer that left and has not queued again is busy elsewhere or gone: waiting
    /// for it would hold the writers who did come back for the whole delay, with the log
    /// idle. An urgent request ([`Wal::sync`], [`Wal::wait_durable`], a submitter waiting
    /// for room) starts at once, as does a full batch (`batch_bytes_max`), and then the
    /// writers of the last sync are woken after its batch is taken (see
    /// [`Inner::flush_deferring`]).
    fn group_commit(&self, delay: Duration, batch_bytes_max: usize) {
        // What the last sync owes its writers, delivered once the next sync's batch is
        // taken, or before this thread waits for anything.
        let mut owed: Option<Owed> = None;
        // When the last sync ended: a writer waiting for the next one waits at most `delay`
        // from then for the others the last one woke.
        let mut last_end = Instant::now();
        let mut st = self.state.lock();
        loop {
            let can = !st.shutdown && st.poisoned.is_none() && !st.busy && st.idle_waiters == 0;
            let full = !st.pending.is_empty() && st.pending_bytes >= batch_bytes_max;
            let grace_end = last_end + delay;
            let requested = st.sync_due(Instant::now() >= grace_end);
            if can && (full || requested || (delay.is_zero() && !st.pending.is_empty())) {
                // A full batch, an urgent request, or writers waiting and all the others
                // back or gone: begin the next sync (and wake the last one's writers once
                // its batch is taken).
                if let Some(news) = owed.as_mut().filter(|o| o.moved) {
                    // The listener first, while the log is idle: it may purge or flush,
                    // which wait for an idle log, and so must not be told from inside the
                    // next sync. Then look again: the log may be busy by now.
                    let told = *news;
                    news.moved = false;
                    MutexGuard::unlocked(&mut st, || self.tell_listener(&told));
                    continue;
                }
                st.sync_requested = false;
                st.sync_urgent = false;
                // A failure poisons the log and wakes every waiter; nothing else to do here.
                owed = self
                    .flush_deferring(&mut st, true, owed.take())
                    .unwrap_or(None);
                last_end = Instant::now();
                continue;
            }
            if let Some(owed) = owed.take() {
                MutexGuard::unlocked(&mut st, || self.announce(owed, false));
                continue;
            }
            if st.shutdown {
                return;
            }
            if can && st.sync_requested {
                // Writers wait, but not yet all of those the last sync woke: 64 threads
                // that each block on every record take a while to come back, and a sync
                // begun at once would carry only the first few, leaving the rest to wait
                // for the one after it.
                self.flusher_wake.wait_until(&mut st, grace_end);
                continue;
            }
            if st.poisoned.is_some()
                || st.busy
                || st.idle_waiters > 0
                || (st.pending.is_empty() && !st.sync_requested)
            {
                self.flusher_wake.wait(&mut st);
                continue;
            }
            if !st.sync_requested && !delay.is_zero() {
                let deadline = Instant::now() + delay;
                while !st.shutdown && !st.sync_requested && st.pending_bytes < batch_bytes_max {
                    if self.flusher_wake.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                if st.shutdown || st.busy || st.idle_waiters > 0 {
                    continue;
                }
            }
            st.sync_requested = false;
            st.sync_urgent = false;
            // A failure poisons the log and wakes every waiter; nothing else to do here.
            owed = self.flush_deferring(&mut st, true, None).unwrap_or(None);
            last_end = Instant::now();
        }
    }
}

/// Who waits in [`Wal::wait_locked`]: what a truncation meanwhile means to it, and whether
/// its sync is urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// A blocking append of the record at the index, queued in truncation epoch `epoch`:
    /// fails with [`WalError::Truncated`] if a truncation since removed that record, even if
    /// another record has taken its index since. It comes back with the other writers its
    /// sync woke, so that sync may wait for them to gather.
    Writer { epoch: u64 },
    /// [`Wal::wait_durable`]: an index, not a record (a truncation that removes it fails the
    /// wait with [`WalError::OutOfRange`]). Urgent.
    Index,
    /// [`Wal::sync`]: everything in the log, which a truncation may shorten meanwhile.
    /// Urgent.
    Sync,
}

/// What the end of a sync owes: the wake-up of the writers it covered, and the listener's
/// news (see [`Inner::announce`]).
#[derive(Clone, Copy)]
struct Owed {
    sync: u64,
    durable: LogIndex,
    epoch: u64,
    moved: bool,
}

/// A segment being written by [`Inner::write_batch`].
struct Cursor<F> {
    file: Arc<F>,
    name: String,
    tag: u32,
    end: u64,
    offsets: Vec<u32>,
    /// The segment, when it was created during this batch.
    fresh: Option<Segment<F>>,
}

/// Where writers wait, under [`SyncPolicy::Group`], for the sync that covers their records.
///
/// Every writer a sync covers waits on one condition variable (the standard library's,
/// whose `notify_all` wakes every waiter with one system call; `parking_lot`'s hands them
/// over one after the other, each wake-up waiting for the one before it).
///
/// When the group-commit thread has the next batch to write already (a full one), it does
/// not wake them itself: it wakes one (`notify_one`), and the first writer to find the
/// sync finished wakes the rest (the relay, in [`Gates::wait`]). Waking 64 threads costs
/// the waker about 0.7 us each in the kernel (three quarters of the group-commit thread's
/// time in a profile with 64 writers, 60 to 80 us of its CPU per sync of 64 128-byte
/// records), which would hold up that write. Otherwise it has nothing to do but wait for
/// those writers to come back, and wakes them all itself at once: a relay would add one
/// thread's wake-up (a wait for a core, on a busy machine) before the others'.
///
/// Syncs alternate between two gates: the writers who queue a record while a sync runs
/// wait for the next sync, at the other gate, so the end of a sync wakes only the writers it
/// covered. A change every waiter must look at (a failure, a truncation) counts an alert and
/// opens both gates.
#[derive(Debug, Default)]
struct Gates {
    /// The number of the last sync finished (syncs are numbered from 1, see
    /// `State::syncs_begun`).
    done: AtomicU64,
    /// Alerts so far: a waiter that saw another count stops waiting and looks at the state.
    alerts: AtomicU64,
    gates: [Gate; 2],
}

#[derive(Debug, Default)]
struct Gate {
    /// The last sync of this gate whose waiters have all been woken (`notify_all`).
    lock: std::sync::Mutex<u64>,
    opened: std::sync::Condvar,
}

impl Gates {
    fn gate(&self, sync: u64) -> &Gate {
        &self.gates[usize::from(sync % 2 == 1)]
    }

    /// Waits until sync number `sync` has finished or an alert after `alerts` came. The
    /// caller read `alerts` under the state's lock and computed `sync` there.
    fn wait(&self, sync: u64, alerts: u64) {
        let parity = sync % 2;
        let gate = self.gate(sync);
        let mut woken = gate.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let done = self.done.load(Ordering::Acquire);
            // The relay: the last finished sync of this gate, if its waiters have not all
            // been woken yet, was opened by one `notify_one`; whoever finds it here (the one
            // woken, or a writer arriving first) wakes the rest. Any waiter does it, even one
            // waiting for a later sync of this gate, so that the wake-up is never lost.
            let last = if done % 2 == parity {
                done
            } else {
                done.saturating_sub(1)
            };
            let relay = last > *woken;
            if relay {
                *woken = last;
            }
            let finished = done >= sync || self.alerts.load(Ordering::Acquire) != alerts;
            if relay {
                // Not under the lock: every thread woken takes it on its way out.
                drop(woken);
                gate.opened.notify_all();
                if finished {
                    return;
                }
                woken = gate.lock.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            if finished {
                return;
            }
            woken = gate
                .opened
                .wait(woken)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Wakes the writers waiting for sync `sync` (already stored in `done`): all of them,
    /// or with `relay` one of them, who wakes the others (see [`Gates::wait`]).
    fn open(&self, sync: u64, relay: bool) {
        let gate = self.gate(sync);
        // Through the lock: a writer between its check and its wait holds it, so it either
        // sees `done` or is waiting when the call below wakes it (or the one who relays).
        let mut woken = gate.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if relay {
            drop(woken);
            gate.opened.notify_one();
        } else {
            // No waiter relays this one again.
            *woken = (*woken).max(sync);
            drop(woken);
            gate.opened.notify_all();
        }
    }

    /// Wakes every waiter at both gates, to look at the state again.
    fn alert(&self) {
        self.alerts.fetch_add(1, Ordering::AcqRel);
        for gate in &self.gates {
            drop(gate.lock.lock().unwrap_or_else(PoisonError::into_inner));
            gate.opened.notify_all();
        }
    }
}

/// The truncations a log has made, so that a writer waiting on its own record can tell
/// whether a truncation removed it (even if a later record has taken its index since).
///
/// `epoch` counts truncations. `floors` holds `(epoch, floor)` pairs, the index from which a
/// truncation removed records, kept as a stack of increasing epochs and strictly increasing
/// floors: a truncation makes every earlier one with a floor at or above its own redundant,
/// since a writer queued before either is affected by the later one's lower floor. So the
/// lowest floor of all truncations after a given epoch is the floor of the first entry
/// after it. The stack is bounded by merging its two oldest entries, which keeps the
/// older floor with the newer epoch: a floor only ever errs low, so a writer may be told
/// its record was truncated when it was not, never the reverse.
#[derive(Debug, Default)]
struct Cuts {
    epoch: u64,
    floors: VecDeque<(u64, u64)>,
}

impl Cuts {
    /// Entries kept before the oldest are merged.
    const FLOORS_MAX: usize = 64;

    /// Records a truncation that removed every record from `floor` on.
    fn record(&mut self, floor: u64) {
        self.epoch += 1;
        while self.floors.back().is_some_and(|&(_, f)| f >= floor) {
            self.floors.pop_back();
        }
        self.floors.push_back((self.epoch, floor));
        if self.floors.len() > Self::FLOORS_MAX {
            let (_, oldest) = self.floors.pop_front().expect("over the limit");
            self.floors.front_mut().expect("over the limit").1 = oldest;
        }
    }

    /// The lowest index removed by any truncation after `epoch`, if any.
    fn floor_since(&self, epoch: u64) -> Option<u64> {
        if epoch == self.epoch {
            return None;
        }
        let at = self.floors.partition_point(|&(e, _)| e <= epoch);
        self.floors.get(at).map(|&(_, floor)| floor)
    }
}

#[cfg(test)]
mod tests {
    use super::{Cuts, State};

    /// Three writers wait for the first sync (of records 1 to 3), which ends: `st` then.
    fn three_writers_synced() -> State<()> {
        let mut st = State::<()>::new();
        for index in 1..=3 {
            assert_eq!(st.wait_for_sync(index, false, None).0, 1);
        }
        // Nobody to gather before the first sync.
        assert!(st.sync_due(false));
        assert_eq!(st.begin_sync(4), 1);
        st.end_sync();
        st.sync_requested = false;
        st
    }

    /// The gathering rule of group commit (`Inner::group_commit`): the next sync waits for
    /// the writers the last one woke while some are still in the log, and for no one once
    /// they have all left (the integration tests cannot hold a woken writer inside the log,
    /// so the rule is checked here, on the state the log keeps).
    #[test]
    fn a_sync_waits_for_the_writers_still_in_the_log_and_no_others() {
        let mut st = three_writers_synced();
        // Two come back (each left the log, then queued a record and waits).
        assert!(!st.leave(1));
        let (sync, wake) = st.wait_for_sync(4, false, None);
        assert_eq!(sync, 2);
        assert!(wake, "the first request wakes the group-commit thread");
        assert!(!st.leave(1));
        assert!(!st.wait_for_sync(5, false, None).1);
        // The third is woken but still running towards its return: gather.
        assert!(!st.sync_due(false));
        assert!(st.sync_due(true), "the delay bounds the gathering");
        // It leaves without queueing again: nobody is left to wait for, and it says so.
        assert!(
            st.leave(1),
            "the last to leave wakes the group-commit thread"
        );
        assert!(st.sync_due(false));
        // As many waiting as the last sync covered also ends the gathering, the third
        // still in the log (a writer new to the log came instead).
        let mut st = three_writers_synced();
        for index in 4..=5 {
            assert!(!st.leave(1));
            st.wait_for_sync(index, false, None);
        }
        assert!(!st.sync_due(false));
        assert!(
            st.wait_for_sync(6, false, None).1,
            "the third waiting wakes the thread"
        );
        assert!(st.sync_due(false));
    }

    /// An explicit request (`Wal::sync`, `Wal::wait_durable`, room under
    /// `pending_bytes_max`) begins at once, even while writers of the last sync are still
    /// in the log; and a thread that waited for an older sync does not count as one of
    /// the last sync's writers leaving.
    #[test]
    fn an_urgent_request_does_not_wait_for_writers_to_gather() {
        let mut st = three_writers_synced();
        assert!(!st.leave(1));
        assert!(st.wait_for_sync(4, false, None).1);
        assert!(!st.sync_due(false));
        let (sync, wake) = st.wait_for_sync(5, true, None);
        assert_eq!(sync, 2);
        assert!(
            wake,
            "an urgent request wakes the thread even if one was made"
        );
        assert!(st.sync_due(false));
        // A leaver from sync 0 (never begun) changes nothing.
        let mut st = three_writers_synced();
        assert!(!st.leave(0));
        assert_eq!(st.returning, 3);
    }

    /// review20: a writer woken by an alert (a purge's or truncation's end) while it waits
    /// counts itself once, not again on each turn; and a writer that leaves before its sync
    /// ends (its record truncated away) is no longer counted among that sync's writers.
    /// Either way, once the writers a sync covered have all left, nobody is waited for.
    #[test]
    fn a_writer_is_counted_once_and_uncounted_when_it_leaves_early() {
        let mut st = State::<()>::new();
        // Writer A waits for sync 1, is alerted, and waits again.
        let (sync, _) = st.wait_for_sync(1, false, None);
        let (again, _) = st.wait_for_sync(1, false, Some(sync));
        assert_eq!((sync, again), (1, 1));
        // Writer B waits for sync 1 too, then leaves before it begins (truncated).
        let (b, _) = st.wait_for_sync(2, false, None);
        assert!(!st.leave(b));
        assert_eq!(st.begin_sync(2), 1);
        // A, alerted again during the sync, is still counted once.
        assert_eq!(st.wait_for_sync(1, false, Some(1)).0, 1);
        st.end_sync();
        st.sync_requested = false;
        assert_eq!((st.covered_last, st.returning), (1, 1), "only A");
        // A comes back alone: nobody else is in the log, so its sync is due.
        st.leave(1);
        st.wait_for_sync(2, false, None);
        assert!(st.sync_due(false));
        // A writer alerted while its sync runs and leaving then is uncounted from it.
        assert_eq!(st.begin_sync(3), 2);
        let (c, _) = st.wait_for_sync(2, false, None);
        assert_eq!(c, 2);
        assert!(!st.leave(c));
        st.end_sync();
        assert_eq!(st.covered_last, 1, "A only, C left");
    }

    #[test]
    fn cuts_give_the_lowest_floor_after_an_epoch() {
        let mut cuts = Cuts::default();
        assert_eq!(cuts.floor_since(0), None);
        cuts.record(50); // epoch 1
        cuts.record(80); // epoch 2
        cuts.record(60); // epoch 3: makes the cut at 80 redundant
        assert_eq!(cuts.floor_since(0), Some(50));
        assert_eq!(cuts.floor_since(1), Some(60));
        assert_eq!(cuts.floor_since(2), Some(60));
        assert_eq!(cuts.floor_since(3), None);
    }

    #[test]
    fn bounded_cuts_only_err_low() {
        let mut cuts = Cuts::default();
        for floor in 1..=1000u64 {
            cuts.record(floor * 10);
        }
        assert!(cuts.floors.len() <= Cuts::FLOORS_MAX);
        // The truth: after epoch e, the lowest floor is (e + 1) * 10.
        for epoch in 0..1000u64 {
            let floor = cuts.floor_since(epoch).expect("a later cut");
            assert!(floor <= (epoch + 1) * 10, "epoch {epoch}: {floor}");
        }
        assert_eq!(cuts.floor_since(999), Some(10_000));
    }
}
