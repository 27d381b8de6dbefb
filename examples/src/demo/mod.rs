//! `synod demo`: a Consistent Core cluster on this machine, its leader killed under load,
//! and the recorded history checked.
// tidy: driver: runs processes and client threads, reads the system clock, prints progress.
//!
//! What it does, in order:
//!
//! 1. Starts 3 (or 5) `synod node` processes (this program, re-run with `node`) on free
//!    loopback ports, with their data in a fresh temporary directory, and waits for a
//!    leader.
//! 2. Runs `--clients` client threads for `--duration-s` seconds: GET, SET and CAS over
//!    RESP on 32 keys, each client with a session, every operation recorded with its
//!    invocation and completion time. A progress line is redrawn on a terminal; otherwise
//!    a plain line is printed every second.
//! 3. At 30% of the duration it SIGKILLs the leader and says which node and when; then
//!    shows the node the others elect and how long the cluster was without a leader.
//! 4. At 60% (or once a new leader is elected) it restarts the killed node on its data
//!    directory and shows it catch up: its applied index reaching the leader's commit
//!    index.
//! 5. After the workload, reads every key back, checks the history (the final reads
//!    included) with synod-sim's linearizability checker, where an operation whose reply
//!    never came is unknown (it may or may not have taken effect), counts acknowledged
//!    writes the final values do not account for, and prints a summary table. With
//!    `--history FILE` it writes the history it checked for other checkers
//!    ([`crate::history_file`]); with `--html FILE` it draws the run as synod-sim's
//!    timeline page (`page.rs`: the operations, the kill and restart, the leaders seen).
//!
//! It exits 0 only if every step worked, no acknowledged write was lost and the checker
//! passed; 1 otherwise; 2 for bad options.
//!
//! # Cleaning up
//!
//! The nodes and the directory are removed on every exit path, unless `--keep-data` keeps
//! the directory. Safe Rust without a new dependency cannot catch Ctrl-C, so:
//!
//! - On Ctrl-C the terminal sends SIGINT to the whole foreground process group, and the
//!   nodes are in the demo's group: they die with it.
//! - The files, and the nodes when the demo dies some other way (SIGKILL, say), are left
//!   to a watchdog: `/bin/sh` in a process group of its own, ignoring SIGINT and SIGHUP,
//!   reading a pipe from the demo. When the demo exits, however it exits, the pipe closes;
//!   unless the demo said it cleaned up itself, the watchdog SIGKILLs the nodes whose pids
//!   the demo keeps in the directory's `pids` file and removes the directory.
//! - Where `/bin/sh` cannot be started the demo says so and names the directory to remove
//!   by hand if it is interrupted.
//!
//! A node started by hand (`synod node`) is not watched: it runs until killed.

mod cluster;
pub mod leaderless;
mod page;
mod workload;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use synod_sim::{KvModel, Linearizability, Verdict};

use crate::history_file::{HistoryFile, HistoryWriter};
use crate::page_file::PageFile;

use cluster::{Cluster, NodeInfo};
use workload::{KEYS, Running};

/// Exit code when the demo ran and something failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad options.
pub const EXIT_USAGE: u8 = 2;

/// Most clients.
pub const CLIENTS_MAX: u32 = 256;
/// Shortest workload, in seconds: time for a kill, an election and a restart.
pub const DURATION_S_MIN: u64 = 3;
/// Longest workload, in seconds.
pub const DURATION_S_MAX: u64 = 3600;

/// How long the demo waits for a leader, an election or a catch-up before it fails.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// A bad option, with what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// `--nodes` is not 3 or 5.
    Nodes(u32),
    /// `--clients` is 0 or above [`CLIENTS_MAX`].
    Clients(u32),
    /// `--duration-s` is outside [`DURATION_S_MIN`]..=[`DURATION_S_MAX`].
    Duration(u64),
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::Nodes(n) => write!(
                f,
                "--nodes must be 3 or 5, not {n}: a Raft cluster of 3 survives one failed node, \
                 5 survive two (an even count tolerates no more failures than one node fewer)"
            ),
            OptionsError::Clients(n) => {
                write!(f, "--clients must be between 1 and {CLIENTS_MAX}, not {n}")
            }
            OptionsError::Duration(s) => write!(
                f,
                "--duration-s must be between {DURATION_S_MIN} (time to kill a leader, elect \
                 another and restart the first) and {DURATION_S_MAX}, not {s}"
            ),
        }
    }
}

impl std::error::Error for OptionsError {}

/// The demo's options, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    duration: Duration,
    clients: u32,
    nodes: usize,
    keep_data: bool,
    history: Option<HistoryFile>,
    html: Option<std::path::PathBuf>,
}

impl Options {
    /// Checks the options.
    ///
    /// # Errors
    ///
    /// An [`OptionsError`] saying which option is wrong and what it may be.
    pub fn new(
        duration_s: u64,
        clients: u32,
        nodes: u32,
        keep_data: bool,
    ) -> Result<Options, OptionsError> {
        if nodes != 3 && nodes != 5 {
            return Err(OptionsError::Nodes(nodes));
        }
        if clients == 0 || clients > CLIENTS_MAX {
            return Err(OptionsError::Clients(clients));
        }
        if !(DURATION_S_MIN..=DURATION_S_MAX).contains(&duration_s) {
            return Err(OptionsError::Duration(duration_s));
        }
        Ok(Options {
            duration: Duration::from_secs(duration_s),
            clients,
            nodes: nodes as usize,
            keep_data,
            history: None,
            html: None,
        })
    }

    /// Also write the checked history to `file`, for other checkers.
    #[must_use]
    pub fn with_history(mut self, file: HistoryFile) -> Options {
        self.history = Some(file);
        self
    }

    /// Also draw the run as a page ([`synod_sim::timeline`]) written to `path`.
    #[must_use]
    pub fn with_html(mut self, path: std::path::PathBuf) -> Options {
        self.html = Some(path);
        self
    }
}

/// Runs the demo; see the module documentation. The nodes are this program run again
/// (`std::env::current_exe()`) with the `node` subcommand.
pub fn run(options: &Options) -> ExitCode {
    // Created first, so that a path that cannot be written fails before the cluster starts.
    let history = match options
        .history
        .as_ref()
        .map(HistoryFile::create)
        .transpose()
    {
        Ok(writer) => writer,
        Err(e) => {
            eprintln!("synod demo: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let page = match options.html.as_deref().map(PageFile::create).transpose() {
        Ok(page) => page,
        Err(e) => {
            eprintln!("synod demo: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let start = Instant::now();
    let mut out = Output::new(start);
    let mut cluster = match Cluster::new(options.nodes, options.keep_data) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod demo: cannot set up the cluster's directory and ports: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = Demo {
        options,
        cluster: &mut cluster,
        out: &mut out,
        start,
    }
    .run(history, page);
    finish(&mut cluster, &mut out, &result)
}

/// Ends a demo that ran with `result` (whether it passed, or what stopped it): says why it
/// failed with the nodes' last log lines, stops the nodes and removes the directory (unless
/// kept), and gives the exit code.
fn finish(cluster: &mut Cluster, out: &mut Output, result: &Result<bool, String>) -> ExitCode {
    if let Err(e) = result {
        out.clear();
        eprintln!("\nsynod demo: FAILED: {e}");
        eprintln!("last lines of the nodes' logs:\n{}", cluster.log_tails(8));
    }
    match cluster.shut_down() {
        Some(dir) => println!("data kept in {} (--keep-data)", dir.display()),
        None => println!("nodes stopped, data directory removed"),
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) | Err(_) => ExitCode::from(EXIT_FAILED),
    }
}

/// Prints events with their time since the start, and a progress display.
#[derive(Debug)]
struct Output {
    start: Instant,
    tty: bool,
    /// Whether the last thing printed is a progress line without a newline.
    bar_shown: bool,
    /// When the progress was last shown (workload time).
    last_shown: Option<Duration>,
}

impl Output {
    fn new(start: Instant) -> Output {
        Output {
            start,
            tty: std::io::stdout().is_terminal(),
            bar_shown: false,
            last_shown: None,
        }
    }

    fn clear(&mut self) {
        if self.bar_shown {
            print!("\r\x1b[2K");
            self.bar_shown = false;
        }
    }

    /// A line prefixed with the time since the start.
    fn event(&mut self, text: &str) {
        self.clear();
        println!("{:>7.2}s  {text}", self.start.elapsed().as_secs_f64());
    }

    /// The progress of the workload: a redrawn bar on a terminal, a line a second otherwise.
    fn progress(
        &mut self,
        elapsed: Duration,
        total: Duration,
        ok: u64,
        unknown: u64,
        leader: &str,
    ) {
        let rate = ok as f64 / elapsed.as_secs_f64().max(1e-3);
        // Redrawn ten times a second on a terminal; a plain line each second otherwise.
        let every = Duration::from_millis(if self.tty { 100 } else { 1000 });
        if self.last_shown.is_some_and(|t| elapsed < t + every) {
            return;
        }
        self.last_shown = Some(elapsed);
        if self.tty {
            const WIDTH: usize = 30;
            let done = ((elapsed.as_secs_f64() / total.as_secs_f64()) * WIDTH as f64) as usize;
            let done = done.min(WIDTH);
            print!(
                "\r\x1b[2K  [{}{}] {:>5.1}/{:.0} s  {ok:>8} ops  {rate:>7.0} ops/s  {unknown} unanswered  leader {leader}",
                "#".repeat(done),
                ".".repeat(WIDTH - done),
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
            );
            let _ = std::io::stdout().flush();
            self.bar_shown = true;
        } else if elapsed >= every {
            self.event(&format!(
                "workload {:.0}/{:.0} s: {ok} ops answered ({rate:.0}/s), {unknown} unanswered, leader {leader}",
                elapsed.as_secs_f64(),
                total.as_secs_f64()
            ));
        }
    }
}

/// One run of the demo.
struct Demo<'a> {
    options: &'a Options,
    cluster: &'a mut Cluster,
    out: &'a mut Output,
    start: Instant,
}

/// What happened to the leader, for the summary.
#[derive(Debug, Default)]
struct Failover {
    /// The node killed.
    killed: Option<usize>,
    /// The first leader after the kill, and when it was seen.
    elected: Option<(usize, Instant)>,
    /// When the killed node restarted, and the leader's commit index then.
    restarted: Option<(Instant, u64)>,
    /// The restarted node's applied index once it reached that commit index.
    caught_up: Option<u64>,
    /// What the page draws: the leaders seen, the kill and the restart.
    seen: page::Seen,
    /// Time no node said it leads, over the whole run.
    leaderless: Duration,
    /// How many times the cluster was without a leader.
    gaps: u32,
}

impl Demo<'_> {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Starts every node and waits for a leader; retries with new ports if a node exits
    /// at start (another program took a port it was given).
    fn start_cluster(&mut self) -> Result<(usize, NodeInfo), String> {
        for attempt in 1..=3 {
            for id in self.cluster.ids() {
                self.cluster
                    .start(id)
                    .map_err(|e| format!("cannot start node {id}: {e}"))?;
            }
            let deadline = Instant::now() + WAIT_MAX;
            loop {
                if let Some((id, status)) = self.cluster.exited() {
                    if attempt == 3 {
                        return Err(format!("node {id} exited at start ({status})"));
                    }
                    self.out.event(&format!(
                        "node {id} exited at start ({status}); trying again on other ports"
                    ));
                    for id in self.cluster.ids() {
                        self.cluster.kill(id);
                    }
                    self.cluster
                        .pick_ports()
                        .map_err(|e| format!("no free ports: {e}"))?;
                    break;
                }
                if let Some(leader) = self.cluster.leader() {
                    return Ok(leader);
                }
                if Instant::now() > deadline {
                    return Err(format!("no leader elected within {WAIT_MAX:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err("the cluster did not start".into())
    }

    fn run(
        mut self,
        history_file: Option<HistoryWriter>,
        page: Option<PageFile>,
    ) -> Result<bool, String> {
        let opts = self.options;
        println!(
            "synod demo: a {}-node Consistent Core cluster (Raft, durable logs) on this machine;\n\
             {} clients for {} s; the leader is killed with SIGKILL at {:.1} s and restarted later.",
            opts.nodes,
            opts.clients,
            opts.duration.as_secs(),
            opts.duration.as_secs_f64() * 0.3
        );
        println!("data directory {}", self.cluster.dir().display());
        let (leader, info) = self.start_cluster()?;
        let term = info.term;
        for id in self.cluster.ids() {
            println!(
                "  node {id}  pid {:>7}  peers {}  RESP clients {}",
                self.cluster.pid(id).unwrap_or(0),
                self.cluster.peer_addr(id),
                self.cluster.client_addr(id)
            );
        }
        self.out
            .event(&format!("node {leader} is the leader (term {term})"));
        self.out.event(&format!(
            "workload starts: GET, SET and CAS on {KEYS} keys, {} clients, each with a session",
            opts.clients
        ));

        let workload_start = Instant::now();
        let addrs = self.cluster.client_addrs();
        let running = Running::start(opts.clients, &addrs, self.start);
        let phases = self.drive(&running, workload_start, (leader, info));
        let workload_time = workload_start.elapsed();
        let records = running.finish();
        let failover = phases?;
        let ok = records.iter().filter(|r| r.reply.is_some()).count();
        self.out.event(&format!(
            "workload stopped: {} operations, {ok} answered",
            records.len()
        ));

        let converged = self.converge()?;
        self.out.event(&format!(
            "every node has applied index {converged}: the logs agree"
        ));
        let finals = workload::read_back(&addrs, self.start, opts.clients)
            .map_err(|e| format!("reading the keys back: {e}"))?;
        let (acked, lost) = workload::lost_writes(&records, &finals);
        let mut all = records.clone();
        all.extend(finals);
        let history = workload::history(&all);
        self.out.event(&format!(
            "checking {} operations ({} unanswered) for linearizability",
            history.len(),
            history.unknown_count()
        ));
        let check_start = Instant::now();
        let (verdict, culprit) = Linearizability::new(KvModel).check_explained(&history);
        let check_time = check_start.elapsed();
        if let (Some(writer), Some(file)) = (history_file, &opts.history) {
            writer.write(&history).map_err(|e| e.to_string())?;
            self.out.event(&format!(
                "history written to {file}: {} operations",
                history.len()
            ));
        }

        if let Some(page) = page {
            let mut timeline = page::timeline(
                opts.nodes,
                self.elapsed(),
                &failover.seen,
                &history,
                &verdict,
                culprit.as_ref(),
            );
            timeline.set_title(
                "synod demo",
                &format!(
                    "a {}-node Consistent Core on this machine, {} clients for {} s, its leader \
                     killed with SIGKILL and restarted; roles as the demo's polls saw them",
                    opts.nodes,
                    opts.clients,
                    opts.duration.as_secs()
                ),
            );
            let line = page.write(&timeline).map_err(|e| e.to_string())?;
            self.out.event(&line);
        }

        let mut latencies: Vec<Duration> = records
            .iter()
            .filter_map(|r| r.reply.map(|(_, at)| at.saturating_sub(r.invoked)))
            .collect();
        latencies.sort();
        let passed = lost.is_empty() && verdict.is_pass();
        println!();
        let rows = [
            (
                "operations",
                format!(
                    "{} ({ok} answered, {} unanswered: unknown to the checker)",
                    records.len(),
                    records.len() - ok
                ),
            ),
            (
                "throughput",
                format!(
                    "{:.0} ops/s over {:.1} s",
                    ok as f64 / workload_time.as_secs_f64(),
                    workload_time.as_secs_f64()
                ),
            ),
            (
                "latency p50 / p99",
                format!(
                    "{} / {} (answered operations)",
                    ms(workload::percentile(&latencies, 50)),
                    ms(workload::percentile(&latencies, 99))
                ),
            ),
            (
                "time without a leader",
                format!(
                    "{} (in {} period{}: from the SIGKILL, or a leader's step-down, to a new leader's INFO)",
                    ms(failover.leaderless),
                    failover.gaps,
                    if failover.gaps == 1 { "" } else { "s" }
                ),
            ),
            (
                "acknowledged writes lost",
                format!(
                    "{} (of {acked} acknowledged writes, checked against {KEYS} keys read back)",
                    lost.len()
                ),
            ),
            (
                "linearizability",
                format!(
                    "{} (synod-sim checker, {} operations, {})",
                    verdict_word(&verdict),
                    history.len(),
                    ms(check_time)
                ),
            ),
        ];
        for (name, value) in rows {
            println!("  {name:<26}{value}");
        }
        println!();
        for line in lost.iter().take(10) {
            println!("  lost: {line}");
        }
        if let Verdict::Violation(why) | Verdict::GaveUp(why) = &verdict {
            println!("  checker: {why}");
        }
        println!(
            "{}",
            if passed {
                "PASS: no acknowledged write lost, and the history is linearizable."
            } else {
                "FAIL"
            }
        );
        Ok(passed)
    }

    /// Shows progress while the workload runs; kills, watches, restarts. Returns when
    /// the duration has passed and every phase is done.
    fn drive(
        &mut self,
        running: &Running,
        workload_start: Instant,
        first_leader: (usize, NodeInfo),
    ) -> Result<Failover, String> {
        let total = self.options.duration;
        let kill_at = total.mul_f64(0.3);
        let restart_at = total.mul_f64(0.6);
        let mut f = Failover::default();
        f.seen
            .leaders
            .push((self.elapsed(), Some((first_leader.0, first_leader.1.term))));
        // Who leads, as of the last poll; and since when nobody has.
        let mut leader: Option<(usize, NodeInfo)> = Some(first_leader);
        let mut leaderless_since: Option<Instant> = None;
        let mut last_poll: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let elapsed = workload_start.elapsed();
            if let Some((id, status)) = self.cluster.exited() {
                return Err(format!("node {id} exited by itself ({status})"));
            }
            let c = running.counters();
            let label = leader
                .as_ref()
                .map_or_else(|| "none".to_string(), |(id, _)| format!("n{id}"));
            self.out.progress(
                elapsed.min(total),
                total,
                c.ok.load(Ordering::Relaxed),
                c.unknown.load(Ordering::Relaxed),
                &label,
            );
            if last_poll.is_some_and(|t| t.elapsed() < Duration::from_millis(20)) {
                continue;
            }
            let now = Instant::now();
            last_poll = Some(now);

            // Leadership as the nodes report it; every change is shown.
            let current = self.cluster.leader();
            let changed = match (&leader, &current) {
                (Some((a, x)), Some((b, y))) => a != b || x.term != y.term,
                (None, None) => false,
                _ => true,
            };
            if changed {
                let who = current.as_ref().map(|(id, info)| (*id, info.term));
                f.seen.leaders.push((now.duration_since(self.start), who));
                match (&current, leaderless_since.take()) {
                    (Some((id, info)), Some(since)) => {
                        let gap = now.duration_since(since);
                        f.leaderless += gap;
                        f.gaps += 1;
                        if f.killed.is_some() && f.elected.is_none() {
                            f.elected = Some((*id, now));
                        }
                        self.out.event(&format!(
                            "node {id} elected leader (term {}): {} without a leader",
                            info.term,
                            ms(gap)
                        ));
                    }
                    (Some((id, info)), None) => self
                        .out
                        .event(&format!("node {id} leads now (term {})", info.term)),
                    (None, _) => {
                        leaderless_since = Some(now);
                        if let Some((id, info)) = &leader {
                            self.out.event(&format!(
                                "no node says it leads (node {id} led in term {})",
                                info.term
                            ));
                        }
                    }
                }
            }
            leader = current;

            match (&f.killed, &f.restarted, &f.caught_up) {
                (None, ..) if elapsed >= kill_at => {
                    let Some((id, info)) = leader.take() else {
                        if elapsed > kill_at + WAIT_MAX {
                            return Err(format!("no node said it leads for {WAIT_MAX:?}"));
                        }
                        continue;
                    };
                    let pid = self.cluster.pid(id).unwrap_or(0);
                    self.cluster.kill(id);
                    let at = Instant::now();
                    f.killed = Some(id);
                    f.seen.killed = Some((id, at.duration_since(self.start)));
                    f.seen.leaders.push((at.duration_since(self.start), None));
                    leaderless_since = Some(at);
                    self.out.event(&format!(
                        "SIGKILL node {id}, the leader (pid {pid}, term {}, commit index {})",
                        info.term, info.commit
                    ));
                }
                (Some(id), None, _) if elapsed >= restart_at && f.elected.is_some() => {
                    let Some((_, info)) = &leader else { continue };
                    let id = *id;
                    self.cluster
                        .start(id)
                        .map_err(|e| format!("cannot restart node {id}: {e}"))?;
                    f.restarted = Some((Instant::now(), info.commit));
                    f.seen.restarted = Some(self.elapsed());
                    self.out.event(&format!(
                        "restart node {id} on its data directory (the leader's commit index: {})",
                        info.commit
                    ));
                }
                (Some(id), Some((restarted_at, target)), None) => {
                    let (id, restarted_at, target) = (*id, *restarted_at, *target);
                    let applied = self.cluster.info(id).map(|i| i.applied);
                    if let Some(applied) = applied.filter(|&a| a >= target) {
                        f.caught_up = Some(applied);
                        self.out.event(&format!(
                            "node {id} caught up: applied index {applied} reached the leader's {target} in {}",
                            ms(restarted_at.elapsed())
                        ));
                    } else if restarted_at.elapsed() > WAIT_MAX {
                        return Err(format!(
                            "node {id} did not catch up to index {target} within {WAIT_MAX:?} (at {applied:?})"
                        ));
                    }
                }
                (Some(_), Some(_), Some(_)) if elapsed >= total && leader.is_some() => {
                    return Ok(f);
                }
                _ => {}
            }
            if let Some(since) = leaderless_since
                && since.elapsed() > WAIT_MAX
            {
                return Err(format!("no leader for {WAIT_MAX:?}"));
            }
        }
    }

    /// Waits until every node has applied the leader's commit index; returns it.
    fn converge(&mut self) -> Result<u64, String> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let infos: Vec<_> = self
                .cluster
                .ids()
                .into_iter()
                .map(|id| self.cluster.info(id))
                .collect();
            let commit = infos
                .iter()
                .flatten()
                .filter(|i| i.leader)
                .map(|i| i.commit)
                .max();
            if let Some(commit) = commit
                && infos
                    .iter()
                    .all(|i| i.as_ref().is_some_and(|i| i.applied >= commit))
            {
                return Ok(commit);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the nodes did not converge within {WAIT_MAX:?}: {infos:?} (elapsed {:?})",
                    self.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn verdict_word(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Violation(_) => "VIOLATION",
        Verdict::GaveUp(_) => "gave up (undecided: not a pass)",
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_refuse_even_clusters_and_empty_workloads() {
        assert!(Options::new(10, 8, 3, false).is_ok());
        assert!(Options::new(10, 8, 5, true).is_ok());
        for nodes in [0, 1, 2, 4, 6, 7] {
            let e = Options::new(10, 8, nodes, false).expect_err("refused");
            assert_eq!(e, OptionsError::Nodes(nodes));
            assert!(e.to_string().contains("3 or 5"), "{e}");
        }
        assert_eq!(Options::new(10, 0, 3, false), Err(OptionsError::Clients(0)));
        assert_eq!(Options::new(1, 8, 3, false), Err(OptionsError::Duration(1)));
    }

    #[test]
    fn durations_print_in_readable_units() {
        assert_eq!(ms(Duration::from_micros(2_345)), "2.3 ms");
        assert_eq!(ms(Duration::from_millis(187)), "187 ms");
        assert_eq!(ms(Duration::from_millis(1_500)), "1.50 s");
    }
}
