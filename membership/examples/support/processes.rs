//! Members as separate processes on loopback TCP, one killed with `SIGKILL`: the run the
//! `processes` example prints and the crate's process test checks (it includes this file).
//!
//! The parent starts one process per member, with a command the caller builds (the example
//! starts itself as `processes child <id>`, the test its own binary with the id in the
//! environment); each runs [`child`]: binds a port and prints it, reads the others'
//! addresses, then runs a `Member` over synod-transport with `net::drive`, printing how
//! many members it holds live, each death it learns of and its coordinator, until its
//! standard input closes. What a member prints for the parent follows [`PREFIX`] on its
//! line, so that other output on the same stream (a test harness's) is ignored.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use synod_membership::net::{self, Host};
use synod_membership::{Member, MemberConfig, MemberState, MemberWrite, ViewChange};
use synod_node::{NodeId, Time};
use synod_transport::{ClusterId, Config, TcpTransport};

/// The protocol period of the member processes.
pub const PROBE_MS: u64 = 200;
/// What every line a member prints for the parent starts with.
pub const PREFIX: &str = "member: ";
/// How long the parent waits for any one stage before giving up.
const STAGE_TIMEOUT: Duration = Duration::from_secs(120);

pub type Error = Box<dyn std::error::Error>;

// ---- a member's process -----------------------------------------------------------------

/// Prints the member's news for the parent: `live <n>` when the number of members it holds
/// live changes, `dead <id>` when it declares a member dead, `coordinator <id>` when its
/// coordinator changes. The generation is kept in memory (each process starts once).
struct Lines {
    live: usize,
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{PREFIX}{line}");
    let _ = out.flush();
}

impl Host for Lines {
    fn persist(&mut self, _write: MemberWrite) -> io::Result<()> {
        Ok(())
    }

    fn apply(&mut self, change: ViewChange) {
        match change {
            ViewChange::Member(event) if event.state == Some(MemberState::Dead) => {
                say(format_args!("dead {}", event.id.get()));
            }
            ViewChange::Coordinator { id, .. } => say(format_args!("coordinator {}", id.get())),
            _ => {}
        }
    }

    fn each_turn(&mut self, member: &mut Member, _now: Time) {
        let count = member.live_members().len();
        if count != self.live {
            self.live = count;
            say(format_args!("live {count}"));
        }
    }
}

/// Member `id`'s process: binds, prints its address, reads `peer <id> <address>` lines
/// until `go`, then runs its member until its standard input closes.
pub fn child(id: u64) -> Result<(), Error> {
    let id = NodeId::new(id);
    let transport = TcpTransport::bind(Config::builder(ClusterId(7), id).build()?, "127.0.0.1:0")?;
    say(format_args!("addr {}", transport.local_addr()));
    let mut lines = io::stdin().lock().lines();
    let mut seeds = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["peer", peer, addr] => {
                let peer = NodeId::new(peer.parse()?);
                transport.add_peer(peer, addr.parse()?);
                if seeds.len() < 2 {
                    seeds.push(peer);
                }
            }
            ["go"] => break,
            _ => return Err(format!("unexpected line {line:?}").into()),
        }
    }
    drop(lines);
    // A parent gone (or done) is seen as standard input closing.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    thread::spawn(move || {
        for _ in io::stdin().lines() {}
        flag.store(true, Ordering::Relaxed);
    });
    let config = MemberConfig::builder(id, id.get())
        .seeds(seeds)
        .probe(PROBE_MS, PROBE_MS / 2)
        .gossip(PROBE_MS / 5, 3)
        .push_pull_interval_ms(10 * PROBE_MS)
        .build()?;
    let mut member = Member::start(config, 0);
    net::drive(&mut member, &transport, &stop, &mut Lines { live: 0 })?;
    transport.shutdown();
    Ok(())
}

// ---- the parent ---------------------------------------------------------------------------

/// A started member process.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: Option<String>,
    live: usize,
    coordinator: Option<u64>,
    /// The members it declared dead, and when the parent read it first.
    deaths: BTreeMap<u64, Instant>,
}

/// What a child printed, with when the parent read it.
type Line = (u64, String, Instant);

/// What a run measured, in protocol periods.
#[derive(Debug)]
pub struct Report {
    pub members: u64,
    /// From the `go` until every view held every member.
    pub whole: f64,
    pub victim: u64,
    /// From the kill until each survivor declared the victim dead: first, mean, p99, last.
    pub dead_first: f64,
    pub dead_mean: f64,
    pub dead_p99: f64,
    pub dead_last: f64,
    /// From the kill until every survivor's view was whole again without the victim.
    pub healed: f64,
    /// The coordinator every survivor named once the views were whole again.
    pub coordinator: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Report {
            members, victim, ..
        } = self;
        writeln!(
            f,
            "{members} member processes: every view whole {:.1} periods of {PROBE_MS} ms after the start",
            self.whole
        )?;
        writeln!(
            f,
            "killed member {victim} (SIGKILL): declared dead by every survivor after {:.1} periods \
             (first {:.1}, mean {:.1}, p99 {:.1})",
            self.dead_last, self.dead_first, self.dead_mean, self.dead_p99
        )?;
        write!(
            f,
            "every survivor's view whole again {:.1} periods after the kill, all naming member {} \
             as the coordinator",
            self.healed, self.coordinator
        )
    }
}

/// Starts `members` member processes, each with the command `command(id)` builds, lets them
/// agree, kills one with `SIGKILL` and waits until every survivor holds it dead and names
/// one live coordinator. Stops every process before it returns.
///
/// # Errors
///
/// A stage not reached within two minutes, or a process that could not be started or
/// talked to.
pub fn run(members: u64, command: impl Fn(u64) -> Command) -> Result<Report, Error> {
    let (lines, read) = mpsc::channel::<Line>();
    let mut processes = BTreeMap::new();
    let mut started = Ok(());
    for id in 1..=members {
        let spawned = command(id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                started = Err(e.into());
                break;
            }
        };
        if let Some(stdout) = child.stdout.take() {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // A test harness may print its own words before ours on a line.
                    let Some(at) = line.find(PREFIX) else {
                        continue;
                    };
                    let line = &line[at + PREFIX.len()..];
                    if lines.send((id, line.to_owned(), Instant::now())).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        processes.insert(
            id,
            Process {
                child,
                stdin,
                addr: None,
                live: 0,
                coordinator: None,
                deaths: BTreeMap::new(),
            },
        );
    }
    drop(lines);
    let result = started.and_then(|()| stages(members, &mut processes, &read));
    for process in processes.values_mut() {
        process.stdin = None; // the child stops
    }
    for process in processes.values_mut() {
        let _ = process.child.wait();
    }
    result
}

/// Reads what the children print, into their `Process`, until `done` holds; returns when
/// the line that made it hold was read.
fn until(
    stage: &str,
    processes: &mut BTreeMap<u64, Process>,
    read: &mpsc::Receiver<Line>,
    done: impl Fn(&BTreeMap<u64, Process>) -> bool,
) -> Result<Instant, Error> {
    let started = Instant::now();
    while !done(processes) {
        let left = STAGE_TIMEOUT.saturating_sub(started.elapsed());
        let (id, line, at) = read.recv_timeout(left).map_err(|_| {
            let live: Vec<usize> = processes.values().map(|p| p.live).collect();
            let named: Vec<Option<u64>> = processes.values().map(|p| p.coordinator).collect();
            format!(
                "timed out waiting until {stage} (live counts {live:?}, coordinators {named:?})"
            )
        })?;
        let Some(process) = processes.get_mut(&id) else {
            continue; // the member killed
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["addr", addr] => process.addr = Some((*addr).to_owned()),
            ["live", live] => process.live = live.parse()?,
            ["coordinator", id] => process.coordinator = Some(id.parse()?),
            ["dead", dead] => {
                process.deaths.entry(dead.parse()?).or_insert(at);
            }
            _ => return Err(format!("member {id} printed {line:?}").into()),
        }
        if done(processes) {
            return Ok(at);
        }
    }
    Ok(Instant::now())
}

/// Whether every member names the same coordinator, and not `gone`.
fn one_coordinator(gone: Option<u64>) -> impl Fn(&BTreeMap<u64, Process>) -> bool {
    move |ps| {
        let first = ps.values().next().and_then(|p| p.coordinator);
        first.is_some_and(|c| Some(c) != gone) && ps.values().all(|p| p.coordinator == first)
    }
}

fn periods(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0 / PROBE_MS as f64
}

fn stages(
    members: u64,
    processes: &mut BTreeMap<u64, Process>,
    read: &mpsc::Receiver<Line>,
) -> Result<Report, Error> {
    until("every member printed its address", processes, read, |ps| {
        ps.values().all(|p| p.addr.is_some())
    })?;
    let addresses: Vec<(u64, String)> = processes
        .iter()
        .map(|(&id, p)| (id, p.addr.clone().unwrap_or_default()))
        .collect();
    for (&id, process) in processes.iter_mut() {
        let stdin = process.stdin.as_mut().ok_or("no stdin")?;
        for (peer, addr) in &addresses {
            if *peer != id {
                writeln!(stdin, "peer {peer} {addr}")?;
            }
        }
        writeln!(stdin, "go")?;
        stdin.flush()?;
    }
    let go = Instant::now();
    let n = members as usize;
    let whole = until("every view held every member", processes, read, |ps| {
        ps.values().all(|p| p.live == n)
    })?;
    // Once every member names one coordinator, kill another member.
    until(
        "every member named one coordinator",
        processes,
        read,
        one_coordinator(None),
    )?;
    let victim = members / 2 + 1;
    let mut process = processes.remove(&victim).ok_or("no victim")?;
    process.child.kill()?; // SIGKILL
    let killed = Instant::now();
    let _ = process.child.wait();
    let survivors = n - 1;
    let healed = until(
        "every survivor held the killed member dead",
        processes,
        read,
        |ps| {
            ps.values()
                .all(|p| p.deaths.contains_key(&victim) && p.live == survivors)
        },
    )?;
    // The emergent leader: one live coordinator, named by every survivor.
    until(
        "every survivor named one live coordinator",
        processes,
        read,
        one_coordinator(Some(victim)),
    )?;
    let coordinator = processes
        .values()
        .next()
        .and_then(|p| p.coordinator)
        .ok_or("no coordinator")?;
    let mut after: Vec<f64> = processes
        .values()
        .filter_map(|p| p.deaths.get(&victim))
        .map(|&at| periods(at.saturating_duration_since(killed)))
        .collect();
    after.sort_by(f64::total_cmp);
    let p99 = after[((after.len() as f64 * 0.99).ceil() as usize).clamp(1, after.len()) - 1];
    Ok(Report {
        members,
        whole: periods(whole.duration_since(go)),
        victim,
        dead_first: after[0],
        dead_mean: after.iter().sum::<f64>() / after.len() as f64,
        dead_p99: p99,
        dead_last: after[after.len() - 1],
        healed: periods(healed.saturating_duration_since(killed)),
        coordinator,
    })
}
