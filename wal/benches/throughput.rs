//! Headline benchmark: the log against the disk it sits on, baselines measured in the same run.
//!
//! Prints one `ratio <name> <value>` line per figure:
//!
//! - `wal.append_1w_4k_vs_fdatasync`: synced 4 KiB appends per second with one writer,
//!   over raw `pwrite` + `fdatasync` of 4 KiB into a pre-written file.
//! - `wal.group_64w_128b_vs_ceiling`, `wal.group_64w_4k_vs_ceiling`: 64 writer threads
//!   appending with group commit, over the ceiling 64 x the raw `pwrite` + `fdatasync` rate
//!   at the size of a 64-record batch. Beside each, the cost of the wake-ups alone: one
//!   `notify_all` to 64 threads waiting at a gate (a `std` condition variable, as the log's),
//!   in microseconds per round and of CPU per thread woken, and what the log spends per
//!   append beyond one wake-up; and how many segment roll-overs took a spare prepared ahead
//!   and how many pre-wrote their segment while the writers waited, and the longest time
//!   from the end of one sync to the start of the next (a roll-over that pre-writes its
//!   segment shows there). The syncs of spares being pre-written (`*.spare.tmp`) are not
//!   counted among the log's syncs.
//! - `wal.recovery_scan_vs_crc`: bytes per second of the recovery scan (`synod_wal::check`,
//!   the scan `Wal::open` runs, without the syncs and the copy of the last, unproven
//!   batch that open adds) over crc32fast bytes per second on the same bytes in memory.
//!   The scan reads whole segment files, the pre-written zeros after the last record
//!   included, so the figure counts every byte of the files and the baseline checksums all
//!   of them. The log has the same shape in quick and full mode: four full segments and,
//!   after the restart the bench makes, a fifth holding the last batch (the copy open
//!   makes of records no later record proves synced) and zeros.
//!
//! A filter argument (`cargo bench -p synod-wal --bench throughput -- group`) runs only the
//! figures whose name contains it.
//!
//! `SYNOD_BENCH_QUICK=1` runs fewer, shorter repetitions (under 30 s). Files go to a
//! temporary directory under Cargo's target directory, on the same file system as the
//! workspace (not a tmpfs), or under `SYNOD_BENCH_DIR` if it is set: pointed at a tmpfs
//! (`/dev/shm`), a sync costs nothing and what the group figures measure is the log's own
//! CPU and hand-offs. With `SYNOD_BENCH_SYNC_US=N` as well, every data sync of the log and
//! of the raw baseline sleeps N microseconds after the real one: a disk whose sync takes N
//! us, the same for both, which no other program on the machine slows (a shared disk's
//! syncs swing by 50x from run to run; the cores stay shared).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use synod_wal::format::record_bytes;
use synod_wal::{FileStorage, Storage, StorageFile, SyncPolicy, Wal, WalConfig};

/// Real files, counting the data syncs made on them: how many records share a sync is
/// the figure behind group commit's rate, and it does not move with the machine's load.
/// It also times them: how long a sync takes, and how long from the end of one to the
/// start of the next (the group-commit thread's turn-around: publishing, waking, taking
/// and writing the next batch).
#[derive(Debug)]
struct CountingStorage {
    files: FileStorage,
    syncs: Arc<SyncCounts>,
}

#[derive(Debug, Default)]
struct SyncCounts {
    syncs: AtomicU64,
    /// Nanoseconds inside syncs, and between the end of one and the start of the next.
    in_sync_ns: AtomicU64,
    between_ns: AtomicU64,
    /// The longest time between the end of one sync and the start of the next.
    between_max_ns: AtomicU64,
    /// When the last sync ended, in nanoseconds since `epoch` (0: none yet).
    last_end_ns: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// Segments the log took over from a ready spare, and segments it had to pre-write
    /// itself (a roll-over with no spare ready, which every writer waits for).
    from_spare: AtomicU64,
    inline: AtomicU64,
}

impl SyncCounts {
    fn now_ns(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn synced(&self, sync: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let start = self.now_ns();
        let last = self.last_end_ns.load(Ordering::Relaxed);
        if last != 0 {
            let between = start.saturating_sub(last);
            self.between_ns.fetch_add(between, Ordering::Relaxed);
            self.between_max_ns.fetch_max(between, Ordering::Relaxed);
        }
        let result = sync();
        let end = self.now_ns();
        self.in_sync_ns
            .fetch_add(end.saturating_sub(start), Ordering::Relaxed);
        self.last_end_ns.store(end, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        result
    }
}

#[derive(Debug)]
struct CountingFile {
    file: <FileStorage as Storage>::File,
    syncs: Arc<SyncCounts>,
    /// Whether its syncs are counted: not those of a spare segment being pre-written
    /// (`*.spare.tmp`), off the commit path, which would otherwise dilute the records a
    /// sync carries. Their modelled time is spent all the same.
    counted: bool,
}

impl Storage for CountingStorage {
    type File = CountingFile;
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.files.list()
    }
    fn open(&self, name: &str) -> std::io::Result<CountingFile> {
        let file = self.files.open(name)?;
        Ok(CountingFile {
            file,
            syncs: Arc::clone(&self.syncs),
            counted: !name.ends_with(".spare.tmp"),
        })
    }
    fn create(&self, name: &str) -> std::io::Result<CountingFile> {
        let file = self.files.create(name)?;
        Ok(CountingFile {
            file,
            syncs: Arc::clone(&self.syncs),
            counted: !name.ends_with(".spare.tmp"),
        })
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.files.rename(from, to)?;
        if to.ends_with(".wal") {
            let taken = if from.ends_with(".spare") {
                &self.syncs.from_spare
            } else {
                &self.syncs.inline
            };
            taken.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.files.remove(name)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.files.sync_dir()
    }
}

impl StorageFile for CountingFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.file.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let sync = || {
            self.file.sync_data()?;
            modelled_sync();
            Ok(())
        };
        if self.counted {
            self.syncs.synced(sync)
        } else {
            sync()
        }
    }
}

/// The modelled disk's sync time (`SYNOD_BENCH_SYNC_US`), if one is set.
fn sync_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SYNOD_BENCH_SYNC_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_micros)
    })
}

/// Waits as long as the modelled disk's sync takes, after a real sync.
fn modelled_sync() {
    if let Some(delay) = sync_delay() {
        std::thread::sleep(delay);
    }
}

/// CPU time this process has used (all its threads, user and system), in seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms); 0 where that file cannot be read.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu_seconds(&stat).map(|(_, seconds)| seconds))
        .unwrap_or(0.0)
}

/// The command name (with its opening parenthesis) and the CPU seconds (user and system,
/// clock ticks of 10 ms) of a `/proc/.../stat` line.
fn stat_cpu_seconds(stat: &str) -> Option<(&str, f64)> {
    // The fields after the command name, which is in parentheses and may hold spaces.
    let (head, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((head, (ticks(11) + ticks(12)) / 100.0))
}

/// CPU seconds the group-commit thread (named `synod-wal-group-commit`, `synod-wal-group`
/// in `/proc`, which keeps 15 characters) has used, from `/proc/self/task/*/stat`; 0 if
/// none runs or `/proc` cannot be read. With two or more logs open, their sum.
fn group_commit_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        match stat_cpu_seconds(&stat) {
            Some((head, seconds)) if head.ends_with("(synod-wal-group") => total += seconds,
            _ => {}
        }
    }
    total
}

struct Plan {
    reps: usize,
    /// How long one repetition of a rate measurement runs.
    rep: Duration,
    segment_bytes: u64,
    recovery_bytes: u64,
}

fn plan() -> Plan {
    if std::env::var("SYNOD_BENCH_QUICK").is_ok_and(|v| v == "1") {
        Plan {
            reps: 5,
            rep: Duration::from_millis(300),
            segment_bytes: 16 << 20,
            recovery_bytes: 64 << 20,
        }
    } else {
        Plan {
            reps: 7,
            rep: Duration::from_secs(2),
            segment_bytes: 256 << 20,
            recovery_bytes: 256 << 20,
        }
    }
}

/// Median, min and max of per-repetition rates.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn report(label: &str, unit: &str, v: &[f64]) -> f64 {
    let (median, min, max) = stats(v.to_vec());
    println!(
        "{label}: median {median:.0} {unit} (min {min:.0}, max {max:.0}, {} reps)",
        v.len()
    );
    median
}

/// A pre-written file (64 MiB of zeros, synced) for the raw baseline.
fn prewritten(dir: &Path) -> std::fs::File {
    let path = dir.join("raw.bin");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let total = 64usize << 20;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < total {
        let n = zeros.len().min(total - at);
        file.write_all_at(&zeros[..n], at as u64).unwrap();
        at += n;
    }
    file.sync_all().unwrap();
    file
}

/// Raw `pwrite` + `fdatasync` of `bytes` at a time into the pre-written file, written round
/// and round: writes per second over `duration`.
fn raw_fdatasync_rate(file: &std::fs::File, bytes: usize, duration: Duration) -> f64 {
    let slots = (64usize << 20) / bytes;
    let buf = vec![0x5au8; bytes];
    let start = Instant::now();
    let mut ops = 0usize;
    while ops < 3 || start.elapsed() < duration {
        file.write_all_at(&buf, ((ops % slots) * bytes) as u64)
            .unwrap();
        file.sync_data().unwrap();
        modelled_sync();
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn open_log(dir: &Path, policy: SyncPolicy, segment_bytes: u64) -> Wal<FileStorage> {
    let config = WalConfig::builder()
        .segment_bytes_max(segment_bytes)
        .record_bytes_max(64 * 1024)
        .sync_policy(policy)
        .build()
        .unwrap();
    Wal::open(FileStorage::new(dir).unwrap(), config).unwrap().0
}

/// One writer, synced 4 KiB appends: appends per second.
fn wal_single_rate(root: &Path, plan: &Plan) -> f64 {
    let dir = tempfile::tempdir_in(root).unwrap();
    let config = WalConfig::builder()
        .segment_bytes_max(plan.segment_bytes)
        .record_bytes_max(64 * 1024)
        .sync_policy(SyncPolicy::Always)
        .build()
        .unwrap();
    let storage = CountingStorage {
        files: FileStorage::new(dir.path()).unwrap(),
        syncs: Arc::default(),
    };
    let wal = Wal::open(storage, config).unwrap().0;
    let payload = bytes::Bytes::from(vec![0x5au8; 4096]);
    let start = Instant::now();
    let mut ops = 0usize;
    while ops < 3 || start.elapsed() < plan.rep {
        wal.append(payload.clone()).unwrap();
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// What one repetition of the group-commit figure measured.
struct GroupRun {
    appends_per_s: f64,
    appends: u64,
    syncs: u64,
    cpu_s: f64,
    /// Seconds inside syncs, and between the end of one and the start of the next.
    in_sync_s: f64,
    between_s: f64,
    /// CPU seconds of the group-commit thread.
    committer_cpu_s: f64,
    /// The longest time between two syncs, in seconds.
    between_max_s: f64,
    /// Roll-overs onto a ready spare, and onto a segment pre-written inline.
    from_spare: u64,
    inline: u64,
}

/// 64 writers, each appending and waiting for durability.
fn wal_group_rate(root: &Path, plan: &Plan, payload_bytes: usize) -> GroupRun {
    let writers = 64;
    let dir = tempfile::tempdir_in(root).unwrap();
    let policy = SyncPolicy::Group {
        batch_delay_us_max: 1000,
        batch_bytes_max: writers * record_bytes(payload_bytes),
    };
    let config = WalConfig::builder()
        .segment_bytes_max(plan.segment_bytes)
        .record_bytes_max(64 * 1024)
        .sync_policy(policy)
        .build()
        .unwrap();
    let syncs = Arc::new(SyncCounts::default());
    let storage = CountingStorage {
        files: FileStorage::new(dir.path()).unwrap(),
        syncs: Arc::clone(&syncs),
    };
    let wal = Wal::open(storage, config).unwrap().0;
    let barrier = Arc::new(Barrier::new(writers + 1));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            let barrier = Arc::clone(&barrier);
            let done = Arc::clone(&done);
            let deadline = Arc::clone(&deadline);
            std::thread::spawn(move || {
                let payload = bytes::Bytes::from(vec![0x5au8; payload_bytes]);
                barrier.wait();
                let end = deadline.lock().expect("set before the start");
                while Instant::now() < end {
                    wal.append(payload.clone()).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let syncs_before = syncs.syncs.load(Ordering::Relaxed);
    let from_spare_before = syncs.from_spare.load(Ordering::Relaxed);
    let inline_before = syncs.inline.load(Ordering::Relaxed);
    let in_sync_before = syncs.in_sync_ns.load(Ordering::Relaxed);
    let between_before = syncs.between_ns.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds();
    let committer_before = group_commit_cpu_seconds();
    let start = Instant::now();
    *deadline.lock() = Some(start + plan.rep);
    barrier.wait();
    for t in threads {
        t.join().unwrap();
    }
    let appends = done.load(Ordering::Relaxed);
    GroupRun {
        appends_per_s: appends as f64 / start.elapsed().as_secs_f64(),
        appends,
        syncs: syncs.syncs.load(Ordering::Relaxed) - syncs_before,
        cpu_s: cpu_seconds() - cpu_before,
        committer_cpu_s: group_commit_cpu_seconds() - committer_before,
        in_sync_s: (syncs.in_sync_ns.load(Ordering::Relaxed) - in_sync_before) as f64 / 1e9,
        between_s: (syncs.between_ns.load(Ordering::Relaxed) - between_before) as f64 / 1e9,
        between_max_s: syncs.between_max_ns.load(Ordering::Relaxed) as f64 / 1e9,
        from_spare: syncs.from_spare.load(Ordering::Relaxed) - from_spare_before,
        inline: syncs.inline.load(Ordering::Relaxed) - inline_before,
    }
}

/// What group commit's wake-ups cost alone: `waiters` threads wait at one gate, as the
/// writers a sync covers do (a `std` mutex and condition variable, as the log's gates are),
/// and one `notify_all` opens it; each woken thread counts itself in and waits at the gate
/// again, and the last one in tells the opener, who opens the next round. Runs for `rep`;
/// returns the rounds per second and the CPU seconds per thread woken (all threads, the
/// opener's included).
fn wake_baseline(waiters: u64, rep: Duration) -> (f64, f64) {
    use std::sync::{Condvar, Mutex};
    #[derive(Default)]
    struct Gate {
        /// The round now open (`u64::MAX` to stop), and how many are waiting for the next.
        state: Mutex<(u64, u64)>,
        opened: Condvar,
        all_in: Condvar,
    }
    let gate = Arc::new(Gate::default());
    let threads: Vec<_> = (0..waiters)
        .map(|_| {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let mut state = gate.state.lock().unwrap();
                loop {
                    let round = state.0;
                    state.1 += 1;
                    if state.1 == waiters {
                        gate.all_in.notify_one();
                    }
                    while state.0 == round {
                        state = gate.opened.wait(state).unwrap();
                    }
                    if state.0 == u64::MAX {
                        return;
                    }
                }
            })
        })
        .collect();
    let open = |round: u64| {
        let mut state = gate.state.lock().unwrap();
        while state.1 < waiters {
            state = gate.all_in.wait(state).unwrap();
        }
        *state = (round, 0);
        drop(state);
        gate.opened.notify_all();
    };
    // Everyone waits before the clock starts.
    open(1);
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < rep {
        rounds += 1;
        open(rounds + 1);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    open(u64::MAX);
    for t in threads {
        t.join().unwrap();
    }
    (
        rounds as f64 / elapsed,
        cpu / (rounds * waiters).max(1) as f64,
    )
}

/// Recovery: bytes per second of the recovery scan (`synod_wal::check`, the scan `Wal::open`
/// runs, without the syncs that open adds) over a log of 4 KiB records, and crc32fast bytes
/// per second over the same bytes in memory.
fn recovery_rates(root: &Path, plan: &Plan) -> (Vec<f64>, Vec<f64>) {
    let dir = tempfile::tempdir_in(root).unwrap();
    // Four segments' worth of records, in both modes.
    let segment = plan.recovery_bytes / 4;
    {
        let wal = open_log(dir.path(), SyncPolicy::Manual, segment);
        let payload = bytes::Bytes::from((0..4096u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        let count = plan.recovery_bytes / record_bytes(4096) as u64;
        for chunk in 0..count / 256 {
            let _ = chunk;
            wal.submit_batch(std::iter::repeat_n(payload.clone(), 256))
                .unwrap();
            wal.sync().unwrap();
        }
        wal.close().unwrap();
    }
    let report = synod_wal::check(dir.path()).unwrap();
    let mut scan = Vec::new();
    let mut crc = Vec::new();
    let config = WalConfig::builder()
        .segment_bytes_max(segment)
        .record_bytes_max(64 * 1024)
        .sync_policy(SyncPolicy::Manual)
        .build()
        .unwrap();
    // Open once, as a restart would: it syncs, and writes the unproven last batch again.
    let (wal, r) = Wal::open(FileStorage::new(dir.path()).unwrap(), config).unwrap();
    assert_eq!(r.records, report.records);
    drop(wal);
    // What the scan reads: every byte of every segment file. The same bytes in memory, for
    // the checksum baseline.
    let report = synod_wal::check(dir.path()).unwrap();
    let mut data = Vec::new();
    for s in &report.segments {
        data.extend_from_slice(&std::fs::read(dir.path().join(&s.name)).unwrap());
    }
    let used = data.len() as u64;
    println!(
        "recovery log: {} segments, {} records, {} MiB of records in {} MiB of files",
        report.segments.len(),
        report.records,
        report.bytes_used >> 20,
        used >> 20
    );
    for _ in 0..plan.reps {
        let start = Instant::now();
        let r = synod_wal::check(dir.path()).unwrap();
        scan.push(used as f64 / start.elapsed().as_secs_f64());
        assert_eq!(r.records, report.records);
        let start = Instant::now();
        let h = crc32fast::hash(&data);
        crc.push(data.len() as f64 / start.elapsed().as_secs_f64());
        std::hint::black_box(h);
    }
    (scan, crc)
}

fn main() {
    let plan = plan();
    // `cargo bench` passes `--bench`; any other argument selects figures by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let root = match std::env::var_os("SYNOD_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
    };
    println!(
        "synod-wal throughput benchmark; data in {}",
        root.path().display()
    );
    if let Some(delay) = sync_delay() {
        println!(
            "every data sync sleeps {} us after the real one (SYNOD_BENCH_SYNC_US)",
            delay.as_micros()
        );
    }
    let raw_file = prewritten(root.path());

    // Baseline and component repetitions alternate, so that both see the same machine.
    // One writer, 4 KiB.
    let (mut raw, mut wal) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        if !wanted("wal.append_1w_4k_vs_fdatasync") {
            break;
        }
        raw.push(raw_fdatasync_rate(&raw_file, 4096, plan.rep));
        wal.push(wal_single_rate(root.path(), &plan));
    }
    if !raw.is_empty() {
        let base = report("baseline pwrite+fdatasync 4 KiB", "writes/s", &raw);
        let got = report(
            "wal append 1 writer 4 KiB (SyncPolicy::Always)",
            "appends/s",
            &wal,
        );
        println!("ratio wal.append_1w_4k_vs_fdatasync {:.3}", got / base);
    }

    // 64 writers, group commit.
    for (name, payload) in [
        ("wal.group_64w_128b_vs_ceiling", 128usize),
        ("wal.group_64w_4k_vs_ceiling", 4096),
    ] {
        if !wanted(name) {
            continue;
        }
        let batch = 64 * record_bytes(payload);
        let (mut ceiling, mut wal) = (Vec::new(), Vec::new());
        let (mut appends, mut syncs, mut cpu_s) = (0u64, 0u64, 0.0);
        let (mut in_sync_s, mut between_s, mut committer_s) = (0.0, 0.0, 0.0);
        let (mut from_spare, mut inline) = (0u64, 0u64);
        let mut between_max = Vec::new();
        let (mut wake_rounds, mut wake_cpu) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            ceiling.push(64.0 * raw_fdatasync_rate(&raw_file, batch, plan.rep));
            let (rounds, cpu) = wake_baseline(64, plan.rep);
            wake_rounds.push(rounds);
            wake_cpu.push(cpu * 1e6);
            let run = wal_group_rate(root.path(), &plan, payload);
            wal.push(run.appends_per_s);
            appends += run.appends;
            syncs += run.syncs;
            cpu_s += run.cpu_s;
            in_sync_s += run.in_sync_s;
            between_s += run.between_s;
            committer_s += run.committer_cpu_s;
            from_spare += run.from_spare;
            between_max.push(run.between_max_s * 1e6);
            inline += run.inline;
        }
        let base = report(
            &format!("ceiling 64 x pwrite+fdatasync of {batch} B"),
            "appends/s",
            &ceiling,
        );
        let got = report(
            &format!("wal append 64 writers {payload} B (SyncPolicy::Group)"),
            "appends/s",
            &wal,
        );
        let per_append = cpu_s * 1e6 / appends.max(1) as f64;
        println!(
            "  records per sync {:.1}, CPU per append {per_append:.2} us (all repetitions)",
            appends as f64 / syncs.max(1) as f64,
        );
        println!(
            "  a sync takes {:.1} us on average; from the end of one to the start of the next, \
             {:.1} us; the group-commit thread's CPU per sync {:.1} us",
            in_sync_s * 1e6 / syncs.max(1) as f64,
            between_s * 1e6 / syncs.max(1) as f64,
            committer_s * 1e6 / syncs.max(1) as f64,
        );
        let (stall, stall_min, stall_max) = stats(between_max);
        println!(
            "  segment roll-overs: {from_spare} onto a spare prepared ahead, {inline} onto a \
             segment pre-written while the writers waited (all repetitions); the longest \
             time between two syncs, median of the repetitions {stall:.0} us (min \
             {stall_min:.0}, max {stall_max:.0})"
        );
        let rounds = stats(wake_rounds).0;
        let per_wake = stats(wake_cpu).0;
        println!(
            "  baseline beside it: one notify_all to 64 waiting threads, {:.1} us a round \
             ({rounds:.0} rounds/s), {per_wake:.2} us of CPU per thread woken; the log's own \
             CPU per append beyond one wake-up: {:.2} us",
            1e6 / rounds,
            per_append - per_wake
        );
        println!(
            "  64 appends per round of wake-ups alone would be {:.0} appends/s, {:.3} of the ceiling",
            64.0 * rounds,
            64.0 * rounds / base
        );
        println!("ratio {name} {:.3}", got / base);
    }

    // Recovery scan.
    if !wanted("wal.recovery_scan_vs_crc") {
        return;
    }
    let (scan, crc) = recovery_rates(root.path(), &plan);
    let base = report("baseline crc32fast over the log's bytes", "bytes/s", &crc);
    let got = report("wal recovery scan (check)", "bytes/s", &scan);
    println!("ratio wal.recovery_scan_vs_crc {:.3}", got / base);
}
