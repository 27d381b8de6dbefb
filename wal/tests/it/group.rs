//! Group commit, made deterministic by a storage whose data syncs stop, once armed, until
//! the test lets them go: which writers one sync serves, and that every waiting writer is
//! served by the sync that covers its record, never left waiting for one that does not come.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use synod_wal::testing::{FaultyFile, FaultyStorage};
use synod_wal::{LogIndex, Storage, StorageFile, SyncPolicy, Wal, WalConfig};

use crate::util::payload;

/// The log's side of the gate: where to say a data sync was reached, and where to wait.
type Armed = (Sender<()>, Arc<Mutex<Receiver<()>>>);

/// A storage whose data syncs, while armed, each report that they were reached and wait for
/// the test to release them one by one.
#[derive(Debug, Clone)]
struct SyncGated {
    disk: FaultyStorage,
    gate: Arc<Mutex<Option<Armed>>>,
    /// The same for data writes, armed on its own ([`SyncGated::arm_writes`]).
    writes: Arc<Mutex<Option<Armed>>>,
}

#[derive(Debug)]
struct SyncGatedFile {
    file: FaultyFile,
    gate: Arc<Mutex<Option<Armed>>>,
    writes: Arc<Mutex<Option<Armed>>>,
}

/// The test's side of the gate.
struct Syncs {
    reached: Receiver<()>,
    release: Sender<()>,
}

impl SyncGated {
    fn new(seed: u64) -> SyncGated {
        SyncGated {
            disk: FaultyStorage::new(seed),
            gate: Arc::new(Mutex::new(None)),
            writes: Arc::new(Mutex::new(None)),
        }
    }

    /// Arms the gate on data writes: each reports that it was reached and waits.
    fn arm_writes(&self) -> Syncs {
        let (reached_tx, reached) = channel();
        let (release, release_rx) = channel();
        *self.writes.lock() = Some((reached_tx, Arc::new(Mutex::new(release_rx))));
        Syncs { reached, release }
    }

    fn disarm_writes(&self) {
        *self.writes.lock() = None;
    }

    fn arm(&self) -> Syncs {
        let (reached_tx, reached) = channel();
        let (release, release_rx) = channel();
        *self.gate.lock() = Some((reached_tx, Arc::new(Mutex::new(release_rx))));
        Syncs { reached, release }
    }

    fn disarm(&self) {
        *self.gate.lock() = None;
    }
}

impl Storage for SyncGated {
    type File = SyncGatedFile;
    fn list(&self) -> io::Result<Vec<String>> {
        self.disk.list()
    }
    fn open(&self, name: &str) -> io::Result<SyncGatedFile> {
        Ok(SyncGatedFile {
            file: self.disk.open(name)?,
            gate: Arc::clone(&self.gate),
            writes: Arc::clone(&self.writes),
        })
    }
    fn create(&self, name: &str) -> io::Result<SyncGatedFile> {
        Ok(SyncGatedFile {
            file: self.disk.create(name)?,
            gate: Arc::clone(&self.gate),
            writes: Arc::clone(&self.writes),
        })
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.disk.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.disk.sync_dir()
    }
}

impl StorageFile for SyncGatedFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let armed = self.writes.lock().clone();
        if let Some((reached, release)) = armed {
            reached.send(()).expect("the test waits for the write");
            release.lock().recv().expect("the test releases the write");
        }
        self.file.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        let armed = self.gate.lock().clone();
        if let Some((reached, release)) = armed {
            reached.send(()).expect("the test waits for the sync");
            release.lock().recv().expect("the test releases the sync");
        }
        self.file.sync_data()
    }
}

/// A bound on waits that only a bug makes long (a hang becomes a failure).
const WAIT: Duration = Duration::from_secs(60);

fn group_log(disk: &SyncGated) -> Wal<SyncGated> {
    group_log_with(disk, 100, 1 << 20, 64 << 20, 1 << 20)
}

/// A group-commit log on `disk` with no spare segments (so that the group-commit thread
/// does no I/O of its own), records of at most 1 KiB, and the delay, segment size, pending
/// bound and full batch given.
fn group_log_with(
    disk: &SyncGated,
    batch_delay_us_max: u64,
    segment_bytes_max: u64,
    pending_bytes_max: usize,
    batch_bytes_max: usize,
) -> Wal<SyncGated> {
    let config = WalConfig::builder()
        .segment_bytes_max(segment_bytes_max)
        .record_bytes_max(1024)
        .pending_bytes_max(pending_bytes_max)
        .spare_segments_max(0)
        .sync_policy(SyncPolicy::Group {
            batch_delay_us_max,
            batch_bytes_max,
        })
        .build()
        .expect("valid config");
    Wal::open(disk.clone(), config).expect("opens").0
}

/// A group-commit log on `disk` whose delay is the longest allowed (10 s, so that nothing
/// in a test waits it out), with no spare segments (so that the group-commit thread does
/// no I/O of its own), a sync beginning at `batch_bytes_max` bytes pending.
fn held_group_log(disk: &SyncGated, batch_bytes_max: usize) -> Wal<SyncGated> {
    group_log_with(disk, 10_000_000, 1 << 20, 64 << 20, batch_bytes_max)
}

/// Arms `disk`'s gate and appends record 1 on a thread of its own: returns once the sync
/// of that record has begun and is held, with the gate and the appending thread.
fn first_sync_held(
    disk: &SyncGated,
    wal: &Wal<SyncGated>,
) -> (
    Syncs,
    thread::JoinHandle<Result<LogIndex, synod_wal::WalError>>,
) {
    let syncs = disk.arm();
    let first = {
        let wal = wal.clone();
        thread::spawn(move || wal.append(payload(1, 100)))
    };
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the first sync starts");
    (syncs, first)
}

/// What [`writers_that_come_back`] gives: the writers, their reports, each one's word.
type ComingBack = (TwiceWriters, Receiver<String>, Vec<Sender<()>>);

/// The handles of writers that append twice.
type TwiceWriters = Vec<thread::JoinHandle<Result<(LogIndex, LogIndex), synod_wal::WalError>>>;

/// `n` writers that each append once, report their thread id, wait for the test's word,
/// and append again (writer `w` appends records `100 + w` and `200 + w`).
fn writers_that_come_back(wal: &Wal<SyncGated>, n: u64) -> ComingBack {
    let (returned_tx, returned) = channel::<String>();
    let mut go = Vec::new();
    let writers = (0..n)
        .map(|w| {
            let wal = wal.clone();
            let returned_tx = returned_tx.clone();
            let (go_tx, go_rx) = channel::<()>();
            go.push(go_tx);
            thread::spawn(move || {
                let a = wal.append(payload(100 + w, 100))?;
                returned_tx.send(current_tid()).expect("the test listens");
                go_rx.recv().expect("the test lets the writer go");
                let b = wal.append(payload(200 + w, 100))?;
                Ok::<_, synod_wal::WalError>((a, b))
            })
        })
        .collect();
    (writers, returned, go)
}

/// Holds the first sync (of record 1) while `n` [`writers_that_come_back`] queue behind it,
/// lets it and the second sync (of their `n` records, one sync) go, and returns once every
/// writer is back: the gate, the writers, their thread ids and each one's word.
fn writers_back_from_their_sync(
    disk: &SyncGated,
    wal: &Wal<SyncGated>,
    n: u64,
) -> (Syncs, TwiceWriters, Vec<String>, Vec<Sender<()>>) {
    let (syncs, first) = first_sync_held(disk, wal);
    let (writers, returned, go) = writers_that_come_back(wal, n);
    until("the writers' records are queued", || {
        wal.last_index() == LogIndex::new(n + 1)
    });
    syncs.release.send(()).expect("release the first sync");
    first.join().expect("no panic").expect("append");
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the second sync, of the writers' records, starts");
    syncs.release.send(()).expect("release the second sync");
    let tids = (0..n)
        .map(|_| returned.recv_timeout(WAIT).expect("every writer returns"))
        .collect();
    (syncs, writers, tids, go)
}

/// Polls until `what` holds, failing the test after [`WAIT`].
/// 32 writers of 100 bytes each (two full batches of [`held_group_log`]'s 16), queued
/// behind the first record's held sync: their threads, once every record is queued.
fn full_batch_behind_the_first(
    wal: &Wal<SyncGated>,
) -> Vec<thread::JoinHandle<Result<LogIndex, synod_wal::WalError>>> {
    let writers = (0..32u64)
        .map(|w| {
            let wal = wal.clone();
            thread::spawn(move || wal.append(payload(100 + w, 100)))
        })
        .collect();
    until("the batch is queued", || {
        wal.last_index() == LogIndex::new(33)
    });
    writers
}

fn until(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !holds() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// One sync covers every writer that queued a record while the sync before it ran: 32
/// writers who arrive during one sync are all answered by the next, which is one sync, and
/// none of them is answered by the sync that was running when it arrived.
#[test]
fn one_sync_serves_every_writer_that_queued_during_the_one_before() {
    let disk = SyncGated::new(20);
    let wal = group_log(&disk);
    let (syncs, first) = first_sync_held(&disk, &wal);
    // The first sync is held; 32 writers queue their records behind it.
    let (done_tx, done) = channel();
    let writers: Vec<_> = (0..32u64)
        .map(|w| {
            let wal = wal.clone();
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                let r = wal.append(payload(100 + w, 100));
                done_tx.send(()).expect("the test listens");
                r
            })
        })
        .collect();
    until("the 32 records are queued", || {
        wal.last_index() == LogIndex::new(33)
    });
    syncs.release.send(()).expect("release the first sync");
    assert_eq!(
        first.join().expect("no panic").expect("append"),
        LogIndex::new(1)
    );
    // The second sync, holding all 32 records, starts; none of its writers is answered
    // before it ends.
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the second sync starts");
    assert_eq!(wal.durable_index(), LogIndex::new(1));
    assert!(
        done.try_recv().is_err(),
        "a writer returned before the sync covering its record ended"
    );
    disk.disarm();
    syncs.release.send(()).expect("release the second sync");
    let mut indexes: Vec<u64> = writers
        .into_iter()
        .map(|w| w.join().expect("no panic").expect("append").get())
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (2..=33).collect::<Vec<_>>());
    assert_eq!(wal.durable_index(), LogIndex::new(33));
    // Exactly the two syncs: the second served all 32 writers.
    assert!(syncs.reached.try_recv().is_err(), "a third sync was needed");
}

/// A writer that starts waiting for a record already inside a running sync is answered
/// by that sync, without asking for another: after the sync ends nothing more is pending,
/// so a writer waiting for a next sync would wait for a sync that never comes.
#[test]
fn a_wait_for_a_record_inside_the_running_sync_ends_with_it() {
    let disk = SyncGated::new(21);
    let wal = group_log(&disk);
    let syncs = disk.arm();
    let index = wal.submit(payload(1, 100)).expect("submit");
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the sync of the submitted record starts");
    let (done_tx, done) = channel();
    let (tid_tx, tid) = channel();
    let waiter = {
        let wal = wal.clone();
        thread::spawn(move || {
            tid_tx.send(current_tid()).expect("the test listens");
            let r = wal.wait_durable(index);
            done_tx.send(()).expect("the test listens");
            r
        })
    };
    // The waiter reaches its wait (it cannot return while the sync is held) and sleeps there.
    let tid = tid.recv_timeout(WAIT).expect("the waiter starts");
    until("the waiter sleeps", || thread_state(&tid) == Some('S'));
    assert!(done.try_recv().is_err(), "returned before the sync ended");
    disk.disarm();
    syncs.release.send(()).expect("release the sync");
    done.recv_timeout(WAIT)
        .expect("the waiter is answered by the sync that covered its record");
    waiter.join().expect("no panic").expect("durable");
    assert_eq!(wal.durable_index(), index);
}

/// The calling thread's id in /proc/self/task.
fn current_tid() -> String {
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    me.file_name()
        .and_then(|n| n.to_str())
        .expect("a thread id")
        .to_owned()
}

/// The state letter of thread `tid` of this process (`S` while it sleeps).
fn thread_state(tid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Review (review11), a lost wake-up of the group-commit thread (older than 54ba5b6, in the
/// same path): the thread sleeps on `flusher_wake` while another thread is busy
/// (`group_commit`), and the end of a [`Wal::flush`] (`Inner::flush`) woke only `changed`,
/// unlike the end of a truncation or purge
/// (`end_maintenance`, which also wakes `flusher_wake`). A writer who asked for a sync
/// (`sync_requested`, set once) while the flush wrote its record then waited for a sync
/// that nobody started: for ever, on an idle log. The end of every write now wakes it. Made deterministic with the durable
/// listener (which holds the group-commit thread while the flush starts) and a gate on
/// data writes (which holds the flush until the group-commit thread sleeps).
#[test]
fn a_writer_waiting_while_a_flush_writes_its_record_is_synced() {
    let disk = SyncGated::new(22);
    let wal = group_log(&disk);
    let (heard_tx, heard) = channel::<String>();
    let (go, go_rx) = channel::<()>();
    let (returning_tx, returning) = channel::<()>();
    let hold = Arc::new(Mutex::new((heard_tx, go_rx, returning_tx, true)));
    wal.set_durable_listener(move |_| {
        let mut hold = hold.lock();
        if !hold.3 {
            return;
        }
        hold.3 = false;
        // The group-commit thread's id, then wait for the test.
        hold.0.send(current_tid()).expect("the test listens");
        hold.1.recv().expect("the test lets the listener go");
        hold.2.send(()).expect("the test listens");
    });
    // The first record's sync ends in the listener, which holds the group-commit thread.
    wal.append(payload(1, 100)).expect("the first append");
    let tid = heard.recv_timeout(WAIT).expect("the listener is called");
    // A writer queues the second record and asks for a sync.
    let (done_tx, done) = channel();
    let writer = {
        let wal = wal.clone();
        thread::spawn(move || {
            let r = wal.append(payload(2, 100));
            done_tx.send(()).expect("the test listens");
            r
        })
    };
    until("the second record is queued", || {
        wal.last_index() == LogIndex::new(2)
    });
    // A flush writes it, and is held in its write.
    let writes = disk.arm_writes();
    let flusher = {
        let wal = wal.clone();
        thread::spawn(move || wal.flush())
    };
    writes
        .reached
        .recv_timeout(WAIT)
        .expect("the flush writes the second record");
    // The group-commit thread goes on, finds the log busy and sleeps.
    go.send(()).expect("the listener waits");
    returning.recv_timeout(WAIT).expect("the listener returns");
    until("the group-commit thread sleeps", || {
        thread_state(&tid) == Some('S')
    });
    disk.disarm_writes();
    writes.release.send(()).expect("release the write");
    assert_eq!(
        flusher.join().expect("no panic").expect("flush"),
        LogIndex::new(2)
    );
    done.recv_timeout(WAIT)
        .expect("the writer of the second record is answered: nothing syncs it");
    assert_eq!(
        writer.join().expect("no panic").expect("append"),
        LogIndex::new(2)
    );
    assert_eq!(wal.durable_index(), LogIndex::new(2));
}

/// When a sync ends with a full batch already queued, the group-commit thread writes that
/// batch at once and wakes one of the ended sync's writers, who wakes the others (the
/// relay): all 32 writers of the second sync return while the third sync, holding the
/// full batch queued meanwhile, is still held. Fails if the relay wakes only the one.
#[test]
fn a_sync_that_ends_with_a_full_batch_waiting_wakes_all_its_writers() {
    let disk = SyncGated::new(24);
    // 16 records of 100 bytes make a full batch.
    let wal = held_group_log(&disk, 16 * synod_wal::format::record_bytes(100));
    let (syncs, first) = first_sync_held(&disk, &wal);
    // 32 writers queue behind the first sync (a full batch and more).
    let spawn_wave = |base: u64, done_tx: Sender<()>| -> Vec<_> {
        (0..32u64)
            .map(|w| {
                let wal = wal.clone();
                let done_tx = done_tx.clone();
                thread::spawn(move || {
                    let r = wal.append(payload(base + w, 100));
                    done_tx.send(()).expect("the test listens");
                    r
                })
            })
            .collect()
    };
    let (first_done_tx, first_done) = channel();
    let first_wave = spawn_wave(100, first_done_tx);
    until("the first wave is queued", || {
        wal.last_index() == LogIndex::new(33)
    });
    syncs.release.send(()).expect("release the first sync");
    first.join().expect("no panic").expect("append");
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the second sync, of the first wave, starts");
    // A second wave queues a full batch while the second sync is held.
    let (second_done_tx, second_done) = channel();
    let second_wave = spawn_wave(200, second_done_tx);
    until("the second wave is queued", || {
        wal.last_index() == LogIndex::new(65)
    });
    syncs.release.send(()).expect("release the second sync");
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the third sync, of the second wave, starts at once");
    // The third sync is held: only the end of the second can have released these.
    for _ in 0..32 {
        first_done
            .recv_timeout(WAIT)
            .expect("every writer of the second sync returns");
    }
    assert!(
        second_done.try_recv().is_err(),
        "a writer of the held third sync returned"
    );
    disk.disarm();
    syncs.release.send(()).expect("release the third sync");
    for w in first_wave.into_iter().chain(second_wave) {
        w.join().expect("no panic").expect("append");
    }
    assert_eq!(wal.durable_index(), LogIndex::new(65));
}

/// A thread waiting for the log to be idle (here [`Wal::flush`]; truncations and purges
/// wait the same way) gets its turn when the sync under way ends, before the
/// group-commit thread begins the next one, even with a full batch waiting for it (which
/// it otherwise begins at once): syncs begun back to back would never leave the log idle.
#[test]
fn a_flush_waiting_for_an_idle_log_goes_before_the_next_sync() {
    let disk = SyncGated::new(25);
    let wal = held_group_log(&disk, 16 * synod_wal::format::record_bytes(100));
    let (syncs, first) = first_sync_held(&disk, &wal);
    // A full batch queues behind it.
    let writers = full_batch_behind_the_first(&wal);
    // A flush waits for the log to be idle.
    let (tid_tx, tid) = channel();
    let (flushed_tx, flushed) = channel();
    let flusher = {
        let wal = wal.clone();
        thread::spawn(move || {
            tid_tx.send(current_tid()).expect("the test listens");
            flushed_tx.send(wal.flush()).expect("the test listens");
        })
    };
    let tid = tid.recv_timeout(WAIT).expect("the flush starts");
    until("the flush waits", || thread_state(&tid) == Some('S'));
    syncs.release.send(()).expect("release the first sync");
    // The flush writes the batch (without a sync) before any second sync begins: a second
    // sync begun first would stop at the gate, busy, and the flush would wait for ever.
    // (Whether the second sync has begun by the time the flush's answer is read is a race,
    // not a check: it begins as soon as the flush is done.)
    let written = flushed
        .recv_timeout(WAIT)
        .expect("the flush gets its turn while the second sync is not begun")
        .expect("flush");
    assert_eq!(written, LogIndex::new(33));
    // Then the group-commit thread syncs what the flush wrote.
    syncs
        .reached
        .recv_timeout(WAIT)
        .expect("the second sync starts");
    disk.disarm();
    syncs.release.send(()).expect("release the second sync");
    flusher.join().expect("no panic");
    first.join().expect("no panic").expect("append");
    for w in writers {
        w.join().expect("no panic").expect("append");
    }
    assert_eq!(wal.durable_index(), LogIndex::new(33));
}

/// Regression (found by review18), a hang: the durable listener may do anything but
/// append, sync or set a listener ([`Wal::set_durable_listener`]), so a listener that
/// purges the log (a Low-Water Mark moved on durability news) or flushes it is allowed. A
/// sync that ended with a full batch already queued told the listener from inside the
/// next sync's write (`Inner::flush_deferring` delivered `earlier` after it set `busy`):
/// the listener's purge waited in `lock_idle` for the log to be idle, which it never was,
/// for the thread that made it busy was the one waiting, and every writer hung with it.
/// The writers are still woken there; the listener is told once `busy` is cleared.
/// Deterministic: the first sync is held until a full batch waits behind it.
#[test]
fn a_listener_that_purges_on_durable_news_does_not_hang_the_log() {
    let disk = SyncGated::new(26);
    // 16 records of 100 bytes make a full batch.
    let wal = held_group_log(&disk, 16 * synod_wal::format::record_bytes(100));
    // The listener purges below what it hears durable, through a handle of its own (taken
    // away at the end, so that the log is not kept alive by its own listener).
    let handle: Arc<Mutex<Option<Wal<SyncGated>>>> = Arc::new(Mutex::new(Some(wal.clone())));
    let (purged_tx, purged) = channel::<Result<LogIndex, synod_wal::WalError>>();
    let purged_tx = Mutex::new(purged_tx);
    {
        let handle = Arc::clone(&handle);
        wal.set_durable_listener(move |durable| {
            let Some(wal) = handle.lock().clone() else {
                return;
            };
            let r = wal.purge_before(durable);
            let _ = purged_tx.lock().send(r);
        });
    }
    let (syncs, first) = first_sync_held(&disk, &wal);
    // A full batch queues behind it.
    let writers = full_batch_behind_the_first(&wal);
    syncs.release.send(()).expect("release the first sync");
    // The end of the first sync reaches the listener, whose purge returns.
    purged
        .recv_timeout(WAIT)
        .expect("the listener's purge returns (it hangs waiting for an idle log)")
        .expect("purge");
    disk.disarm();
    // The second sync may have begun gated: let it go.
    let _ = syncs.release.send(());
    first.join().expect("no panic").expect("append");
    for w in writers {
        w.join().expect("no panic").expect("append");
    }
    assert_eq!(wal.durable_index(), LogIndex::new(33));
    handle.lock().take();
}

/// Review (review18), a stall: a writer waiting for its record asks for a sync, and before
/// 4b2df60 the group-commit thread began it at once. Then it began it only once as many
/// writers waited as the last sync covered (`waiting_next >= covered_last`) or
/// `batch_delay_us_max` after the last sync ended: a writer alone after a sync that covered
/// two (the other has finished, or is busy elsewhere) waited out the whole delay (up to
/// 10 s) with the log idle. So did a submitter held by `pending_bytes_max`, a `Wal::sync`,
/// a `Wal::wait_durable` and a `Wal::close`. Now the thread gathers only the writers the
/// last sync woke that are still in the log, and those explicit requests begin at once.
/// Deterministic: the lone writer and the group-commit thread both asleep with no sync
/// begun is the stall itself (before, the group-commit thread was woken by the writer's
/// request before the writer slept, and slept next in the held sync). Failed before.
#[test]
fn a_lone_writer_after_a_sync_of_two_is_synced_without_waiting_out_the_delay() {
    let (disk, wal, group_tid) = held_group_log_telling_its_tid(27, 1 << 20);
    // Two writers queue behind the first sync, are covered by the second, and return.
    let (syncs, writers, tids, go) = writers_back_from_their_sync(&disk, &wal, 2);
    let group_tid = group_tid.lock().clone().expect("the listener heard a sync");
    // One writer appends again and waits; the other stays away.
    go[0].send(()).expect("the writer waits");
    a_sync_begins_for(&wal, &syncs, &tids[0], &group_tid, 4);
    disk.disarm();
    syncs.release.send(()).expect("release the third sync");
    go[1].send(()).expect("the other writer waits");
    for w in writers {
        w.join().expect("no panic").expect("appends");
    }
    assert_eq!(wal.durable_index(), LogIndex::new(5));
}

/// The same stall for callers that ask for a sync outright (review18): after a sync that
/// covered two writers who both left, a lone `Wal::wait_durable` on a record submitted
/// meanwhile is synced at once, not after the 10 s delay. Failed before.
#[test]
fn a_wait_durable_after_a_sync_of_two_begins_at_once() {
    a_lone_caller_after_a_sync_of_two_is_synced_at_once(28, 1 << 20, 4, |wal| {
        let index = wal.submit(payload(300, 100))?;
        wal.wait_durable(index).map(|()| index)
    });
}

/// The same for a lone `Wal::sync`. Failed before.
#[test]
fn a_sync_after_a_sync_of_two_begins_at_once() {
    a_lone_caller_after_a_sync_of_two_is_synced_at_once(29, 1 << 20, 4, |wal| {
        wal.submit(payload(300, 100))?;
        wal.sync()
    });
}

/// The same for a lone `Wal::close`. Failed before.
#[test]
fn a_close_after_a_sync_of_two_syncs_at_once() {
    a_lone_caller_after_a_sync_of_two_is_synced_at_once(30, 1 << 20, 4, |wal| {
        let index = wal.submit(payload(300, 100))?;
        wal.clone().close().map(|()| index)
    });
}

/// The same for a submitter held by `pending_bytes_max` (1024 bytes here, below
/// `batch_bytes_max`, so no batch is ever full): two records of 600 bytes do not fit, so
/// the second waits for room, asking for a sync of the first. Failed before.
#[test]
fn a_submitter_waiting_for_room_after_a_sync_of_two_is_synced_at_once() {
    a_lone_caller_after_a_sync_of_two_is_synced_at_once(31, 1024, 5, |wal| {
        wal.submit(payload(300, 600))?;
        wal.submit(payload(301, 600))
    });
}

/// Two writers queue behind the first sync, are covered by the second and return, and the
/// group-commit thread is held in the durable listener once it hears of that sync; then
/// `lone`, on a thread of its own, submits record 4 and waits (for its durability, or for
/// room). Once it sleeps the group-commit thread goes on, and finds the request already
/// made (the case that stalled; a request made while the thread waited for the delay of
/// the record alone was seen at once). A sync must begin for it while the writers stay
/// away (see [`a_sync_begins_for`]); `lone` returns `returns`.
fn a_lone_caller_after_a_sync_of_two_is_synced_at_once(
    seed: u64,
    pending_bytes_max: usize,
    returns: u64,
    lone: fn(&Wal<SyncGated>) -> Result<LogIndex, synod_wal::WalError>,
) {
    let disk = SyncGated::new(seed);
    let wal = delayed_group_log(&disk, 1 << 20, pending_bytes_max);
    // The listener holds the group-commit thread once it hears of the writers' sync (to 3).
    let (held, go_on) = hold_the_listener_at(&wal, 3);
    let (syncs, writers, _, go) = writers_back_from_their_sync(&disk, &wal, 2);
    let group_tid = held.recv_timeout(WAIT).expect("the listener holds");
    let (tid_tx, tid) = channel();
    let caller = {
        let wal = wal.clone();
        thread::spawn(move || {
            tid_tx.send(current_tid()).expect("the test listens");
            lone(&wal)
        })
    };
    let tid = tid.recv_timeout(WAIT).expect("the caller starts");
    until("the caller waits", || {
        wal.last_index() == LogIndex::new(4) && thread_state(&tid) == Some('S')
    });
    go_on.send(()).expect("the listener waits");
    a_sync_begins_for(&wal, &syncs, &tid, &group_tid, 4);
    disk.disarm();
    syncs.release.send(()).expect("release the third sync");
    assert_eq!(
        caller.join().expect("no panic").expect("the caller"),
        LogIndex::new(returns)
    );
    for g in go {
        g.send(()).expect("the writer waits");
    }
    for w in writers {
        w.join().expect("no panic").expect("appends");
    }
    wal.sync().expect("sync");
    assert_eq!(wal.durable_index(), LogIndex::new(returns + 2));
}

/// A [`held_group_log`] of `segment_bytes_max` segments and `pending_bytes_max`.
fn delayed_group_log(
    disk: &SyncGated,
    segment_bytes_max: u64,
    pending_bytes_max: usize,
) -> Wal<SyncGated> {
    group_log_with(
        disk,
        10_000_000,
        segment_bytes_max,
        pending_bytes_max,
        1 << 20,
    )
}

/// Sets a durable listener that, when it hears of `index`, holds the group-commit thread:
/// it sends that thread's id to the receiver returned and waits for a word on the sender.
fn hold_the_listener_at(wal: &Wal<SyncGated>, index: u64) -> (Receiver<String>, Sender<()>) {
    let (held_tx, held) = channel::<String>();
    let (go_on, go_on_rx) = channel::<()>();
    let hold = Mutex::new((held_tx, go_on_rx));
    wal.set_durable_listener(move |durable| {
        if durable == LogIndex::new(index) {
            let hold = hold.lock();
            hold.0.send(current_tid()).expect("the test listens");
            hold.1.recv().expect("the test lets the listener go");
        }
    });
    (held, go_on)
}

/// A [`held_group_log`] whose durable listener records the group-commit thread's id.
fn held_group_log_telling_its_tid(
    seed: u64,
    batch_bytes_max: usize,
) -> (SyncGated, Wal<SyncGated>, Arc<Mutex<Option<String>>>) {
    let disk = SyncGated::new(seed);
    let wal = held_group_log(&disk, batch_bytes_max);
    let group_tid: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    {
        let group_tid = Arc::clone(&group_tid);
        wal.set_durable_listener(move |_| {
            group_tid.lock().get_or_insert_with(current_tid);
        });
    }
    (disk, wal, group_tid)
}

/// Waits until the log's last index is `last` and both the caller waiting for it (thread
/// `waiter`) and the group-commit thread (`group`) sleep, then checks that a sync began:
/// both asleep with none begun is the group-commit thread waiting out its delay.
fn a_sync_begins_for(wal: &Wal<SyncGated>, syncs: &Syncs, waiter: &str, group: &str, last: u64) {
    until("the lone caller's record is queued", || {
        wal.last_index() == LogIndex::new(last)
    });
    until("the lone caller and the group-commit thread sleep", || {
        thread_state(waiter) == Some('S') && thread_state(group) == Some('S')
    });
    assert!(
        syncs.reached.try_recv().is_ok(),
        "no sync began for the lone caller: the group-commit thread sleeps out the delay"
    );
}

/// A [`Wal::sync`] overtaken by a truncation: it waits for everything appended when it was
/// called, and a truncation then removes the records not yet written. It returned
/// `OutOfRange` (the index it waited for was past the log's new end, `wait_locked`); it now
/// makes durable what is left and returns that. Deterministic: the sync waits behind a held
/// first sync, the truncation waits for the log to be idle (which keeps the group-commit
/// thread from beginning the next sync), then the first sync is let go. Failed before.
#[test]
fn a_sync_that_a_truncation_overtakes_syncs_what_is_left() {
    let disk = SyncGated::new(32);
    let wal = held_group_log(&disk, 1 << 20);
    let (syncs, first) = first_sync_held(&disk, &wal);
    wal.submit(payload(2, 100)).expect("submit");
    wal.submit(payload(3, 100)).expect("submit");
    let (tid_tx, tid) = channel();
    let syncer = {
        let wal = wal.clone();
        thread::spawn(move || {
            tid_tx.send(current_tid()).expect("the test listens");
            wal.sync()
        })
    };
    let syncer_tid = tid.recv_timeout(WAIT).expect("the syncer starts");
    until("the syncer waits", || {
        thread_state(&syncer_tid) == Some('S')
    });
    let (tid_tx, tid) = channel();
    let truncating = {
        let wal = wal.clone();
        thread::spawn(move || {
            tid_tx.send(current_tid()).expect("the test listens");
            wal.truncate_after(LogIndex::new(1))
        })
    };
    let truncating_tid = tid.recv_timeout(WAIT).expect("the truncation starts");
    until("the truncation waits for an idle log", || {
        thread_state(&truncating_tid) == Some('S')
    });
    disk.disarm();
    syncs.release.send(()).expect("release the first sync");
    truncating
        .join()
        .expect("no panic")
        .expect("the truncation");
    assert_eq!(
        syncer.join().expect("no panic").expect("the sync"),
        LogIndex::new(1)
    );
    assert_eq!(
        first.join().expect("no panic").expect("append"),
        LogIndex::new(1)
    );
    assert_eq!(
        wal.append(payload(4, 100)).expect("append"),
        LogIndex::new(2)
    );
}

/// Review (review20), a stall: a writer waiting for the next sync is woken by every alert
/// (`Gates::alert`, from the end of a purge or truncation, `Inner::end_maintenance`) and
/// counts itself again when it goes back to wait (`Wal::wait_locked` calls
/// `State::wait_for_sync` on each turn of its loop, wal/src/wal.rs:768). The sync that
/// covers it then ends with `returning` (and `covered_last`) above the number of writers it
/// woke: when they have all left the log, `returning` is still above zero (`State::leave`,
/// wal/src/wal.rs:165), so the next writer's sync is not begun until `batch_delay_us_max`
/// after the last one (here 10 s), with the log idle. A lone writer whose record waited
/// through a purge (a Low-Water Mark moved while it waited) is the case here; its control
/// below, without the purge, passes. Deterministic: the durable listener holds the
/// group-commit thread while the writer waits for its second record and the test purges.
#[test]
fn a_lone_writer_after_a_purge_during_its_wait_is_synced_without_waiting_out_the_delay() {
    a_lone_writer_after_a_wait_is_synced_at_once(33, Meanwhile::Purge);
}

/// Review (review20), the same stall by another way, with no writer counted twice: a
/// writer counted for the next sync (`State::wait_for_sync`) whose record a truncation
/// removes leaves the log with `WalError::Truncated` before that sync begins, and its
/// `State::leave` does nothing (the sync it waited for has not ended: wal/src/wal.rs:166).
/// The sync still counts it among its writers (`covered_last`, `returning`), so once the
/// writer it did cover has left, `returning` is 1, and that writer's next record waits out
/// the delay.
#[test]
fn a_lone_writer_after_another_writers_record_was_truncated_is_synced_at_once() {
    a_lone_writer_after_a_wait_is_synced_at_once(36, Meanwhile::AWriterTruncated);
}

/// The control of the two tests above: the same writer and the same held listener, with
/// nothing happening meanwhile.
#[test]
fn a_lone_writer_after_a_wait_with_nothing_meanwhile_is_synced_at_once() {
    a_lone_writer_after_a_wait_is_synced_at_once(34, Meanwhile::Nothing);
}

/// What happens while the group-commit thread is held in
/// [`a_lone_writer_after_a_wait_is_synced_at_once`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meanwhile {
    Nothing,
    /// The writer waits for its second record and the test purges the first segment.
    Purge,
    /// Another writer appends and waits, the test truncates its record away (it fails
    /// with `Truncated`), then the writer appends its second record.
    AWriterTruncated,
}

/// A log of 4 KiB segments (two of them filled first, so that a purge has a segment to
/// discard) whose listener holds the group-commit thread when it hears of a lone writer's
/// first record; meanwhile the writer queues its second record and waits, and `meanwhile`
/// happens. Once the listener goes on, the second record is synced and the writer returns,
/// then appends a third alone: a sync must begin for it (see [`a_sync_begins_for`]).
fn a_lone_writer_after_a_wait_is_synced_at_once(seed: u64, meanwhile: Meanwhile) {
    let disk = SyncGated::new(seed);
    let wal = delayed_group_log(&disk, 4096, 4 << 20);
    let mut filled = 0;
    while wal.segment_count() < 2 {
        filled = wal.append(payload(filled + 1, 100)).expect("append").get();
    }
    let first_of_writer = filled + 1;
    let (held, go_on) = hold_the_listener_at(&wal, first_of_writer);
    let (tid_tx, tid) = channel();
    let (back_tx, back) = channel();
    let (go, go_rx) = channel::<()>();
    let writer = {
        let wal = wal.clone();
        thread::spawn(move || {
            tid_tx.send(current_tid()).expect("the test listens");
            let a = wal.append(payload(first_of_writer, 100))?;
            go_rx.recv().expect("the test lets the writer go");
            let b = wal.append(payload(first_of_writer + 1, 100))?;
            back_tx.send(()).expect("the test listens");
            go_rx.recv().expect("the test lets the writer go");
            let c = wal.append(payload(first_of_writer + 2, 100))?;
            Ok::<_, synod_wal::WalError>((a, b, c))
        })
    };
    let writer_tid = tid.recv_timeout(WAIT).expect("the writer starts");
    let group_tid = held.recv_timeout(WAIT).expect("the listener holds");
    if meanwhile == Meanwhile::AWriterTruncated {
        let (tid_tx, tid) = channel();
        let other = {
            let wal = wal.clone();
            thread::spawn(move || {
                tid_tx.send(current_tid()).expect("the test listens");
                wal.append(payload(900, 100))
            })
        };
        let other_tid = tid.recv_timeout(WAIT).expect("the other writer starts");
        until("the other writer waits for its record", || {
            wal.last_index() == LogIndex::new(first_of_writer + 1)
                && thread_state(&other_tid) == Some('S')
        });
        wal.truncate_after(LogIndex::new(first_of_writer))
            .expect("truncate");
        assert!(
            matches!(
                other.join().expect("no panic"),
                Err(synod_wal::WalError::Truncated { .. })
            ),
            "the other writer's record was truncated"
        );
    }
    go.send(()).expect("the writer waits");
    until("the writer waits for its second record", || {
        wal.last_index() == LogIndex::new(first_of_writer + 1)
            && thread_state(&writer_tid) == Some('S')
    });
    if meanwhile == Meanwhile::Purge {
        // The log is idle (the group-commit thread is in the listener): the purge goes
        // ahead and, ending, alerts every waiting writer.
        let first = wal.purge_before(LogIndex::new(filled)).expect("purge");
        assert!(first > LogIndex::new(1), "the purge discarded a segment");
        until("the writer waits again", || {
            thread_state(&writer_tid) == Some('S')
        });
    }
    go_on.send(()).expect("the listener waits");
    back.recv_timeout(WAIT)
        .expect("the writer's second record is synced");
    let syncs = disk.arm();
    go.send(()).expect("the writer waits");
    a_sync_begins_for(&wal, &syncs, &writer_tid, &group_tid, first_of_writer + 2);
    disk.disarm();
    syncs
        .release
        .send(())
        .expect("release the writer's third sync");
    let (a, b, c) = writer.join().expect("no panic").expect("appends");
    assert_eq!(
        (a.get(), b.get(), c.get()),
        (first_of_writer, first_of_writer + 1, first_of_writer + 2)
    );
    assert_eq!(wal.durable_index(), LogIndex::new(first_of_writer + 2));
}

/// Review (review20), a hang: the durable listener runs on the group-commit thread
/// (`Inner::announce`, `Inner::tell_listener`, wal/src/wal.rs:1449), and a listener that
/// panics unwinds it: the thread is gone, nothing poisons the log or tells anyone, and every
/// later blocking append (and `Wal::sync`, `Wal::wait_durable`, `Wal::close`) waits for ever
/// for a sync nobody begins. Under `SyncPolicy::Always` the same panic reaches the caller of
/// the append and the log goes on. Expected: the append returns (an error naming the
/// listener's panic, or its record made durable), never a silent hang. Deterministic: the
/// group-commit thread's task is seen gone and the next append asleep.
#[test]
fn a_listener_that_panics_does_not_leave_later_appends_waiting_for_ever() {
    let disk = SyncGated::new(35);
    let wal = held_group_log(&disk, 1 << 20);
    let (tid_tx, tid) = channel::<String>();
    let tid_tx = Mutex::new(Some(tid_tx));
    wal.set_durable_listener(move |_| {
        if let Some(tx) = tid_tx.lock().take() {
            tx.send(current_tid()).expect("the test listens");
            panic!("review20: a listener that panics once");
        }
    });
    wal.append(payload(1, 100)).expect("the first append");
    let group_tid = tid.recv_timeout(WAIT).expect("the listener is called");
    let (appender_tid_tx, appender_tid) = channel();
    let appender = {
        let wal = wal.clone();
        thread::spawn(move || {
            appender_tid_tx
                .send(current_tid())
                .expect("the test listens");
            wal.append(payload(2, 100))
        })
    };
    let appender_tid = appender_tid
        .recv_timeout(WAIT)
        .expect("the appender starts");
    until(
        "the append returns, or waits with the group-commit thread gone",
        || {
            appender.is_finished()
                || (thread_state(&group_tid).is_none()
                    && wal.last_index() == LogIndex::new(2)
                    && thread_state(&appender_tid) == Some('S'))
        },
    );
    assert!(
        appender.is_finished(),
        "the group-commit thread died in the listener and the append waits for a sync nobody begins"
    );
    let r = appender.join().expect("no panic");
    assert!(
        matches!(&r, Err(synod_wal::WalError::Poisoned { cause })
            if cause.contains("the durable listener panicked: review20")),
        "the append fails naming the listener's panic: {r:?}"
    );
}
