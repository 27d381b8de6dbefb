//! A few dozen members as separate processes on loopback TCP: how long a real cluster takes
//! to agree on its view, and to detect a member killed with `SIGKILL`.
//!
//! The parent starts this same program once per member (`processes child`), each a
//! `Member` driven over synod-transport as in the `loopback` example. Each child binds a
//! port and prints it; the parent hands every child the whole list, then reads what the
//! children print: how many members each holds live, and each death it learns of. It
//! prints how long until every member held every member live (from the moment they were
//! told to go), kills one member, and prints how long each survivor took to declare it dead
//! and until every survivor's view was whole again, in protocol periods. Closing a
//! child's standard input stops it.
//!
//! Run with `cargo run -p synod-membership --example processes -- 24` (the member count;
//! 24 if none is given, 2 to 64).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use synod_membership::{Member, MemberConfig, MemberState, ViewChange};
use synod_node::NodeId;
use synod_transport::{ClusterId, Config, TcpTransport};

use support::SYNC_BYTES_MAX;

const PROBE_MS: u64 = 200;
const MEMBERS_MAX: u64 = 64;
/// How long the parent waits for any one stage before giving up.
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("child") => child(args.get(1).ok_or("child needs its id")?.parse()?),
        count => {
            let members: u64 = count.map_or(Ok(24), str::parse)?;
            if !(2..=MEMBERS_MAX).contains(&members) {
                return Err(format!("2 to {MEMBERS_MAX} members, not {members}").into());
            }
            parent(members)
        }
    }
}

// ---- a member's process -----------------------------------------------------------------

/// Binds, prints its address, reads `peer <id> <address>` lines until `go`, then runs its
/// member until its standard input closes, printing `live <n>` when the number of members
/// it holds live changes and `dead <id>` when it declares a member dead.
fn child(id: u64) -> Result<(), Error> {
    let id = NodeId::new(id);
    let transport = TcpTransport::bind(Config::builder(ClusterId(7), id).build()?, "127.0.0.1:0")?;
    let mut out = std::io::stdout();
    writeln!(out, "addr {}", transport.local_addr())?;
    out.flush()?;
    let mut lines = std::io::stdin().lock().lines();
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
    // The parent closing standard input (or dying) stops this member.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    drop(lines);
    thread::spawn(move || {
        for _ in std::io::stdin().lines() {}
        flag.store(true, Ordering::Relaxed);
    });
    let config = MemberConfig::builder(id, id.get())
        .seeds(seeds)
        .probe(PROBE_MS, PROBE_MS / 2)
        .gossip(PROBE_MS / 5, 3)
        .push_pull_interval_ms(10 * PROBE_MS)
        .message_bytes_max(1_400, SYNC_BYTES_MAX)
        .build()?;
    let mut member = Member::start(config, 0);
    let mut live = 0;
    // Lines to the parent; a parent gone is seen as standard input closing.
    let apply = |change| {
        if let ViewChange::Member(event) = change
            && event.state == Some(MemberState::Dead)
        {
            let _ = writeln!(std::io::stdout(), "dead {}", event.id.get());
        }
    };
    let each_turn = |member: &Member| {
        let count = member.live_members().len();
        if count != live {
            live = count;
            let _ = writeln!(std::io::stdout(), "live {live}");
        }
        let _ = std::io::stdout().flush();
    };
    support::drive(&mut member, &transport, &stop, apply, each_turn);
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
    /// The members it declared dead, and when the parent read it first.
    deaths: BTreeMap<u64, Instant>,
}

/// What a child printed, with when the parent read it.
type Line = (u64, String, Instant);

fn parent(members: u64) -> Result<(), Error> {
    let exe = std::env::current_exe()?;
    let (lines, read) = mpsc::channel::<Line>();
    let mut processes = BTreeMap::new();
    for id in 1..=members {
        let mut child = Command::new(&exe)
            .args(["child", &id.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let lines = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send((id, line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        processes.insert(
            id,
            Process {
                child,
                stdin,
                addr: None,
                live: 0,
                deaths: BTreeMap::new(),
            },
        );
    }
    drop(lines);
    let result = run(members, &mut processes, &read);
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
    processes: &mut BTreeMap<u64, Process>,
    read: &mpsc::Receiver<Line>,
    done: impl Fn(&BTreeMap<u64, Process>) -> bool,
) -> Result<Instant, Error> {
    let started = Instant::now();
    while !done(processes) {
        let left = STAGE_TIMEOUT.saturating_sub(started.elapsed());
        let (id, line, at) = read.recv_timeout(left).map_err(|_| "timed out")?;
        let process = processes.get_mut(&id).ok_or("a line from no member")?;
        if let Some(addr) = line.strip_prefix("addr ") {
            process.addr = Some(addr.to_owned());
        } else if let Some(live) = line.strip_prefix("live ") {
            process.live = live.parse()?;
        } else if let Some(dead) = line.strip_prefix("dead ") {
            process.deaths.entry(dead.parse()?).or_insert(at);
        }
        if done(processes) {
            return Ok(at);
        }
    }
    Ok(Instant::now())
}

fn periods(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0 / PROBE_MS as f64
}

fn run(
    members: u64,
    processes: &mut BTreeMap<u64, Process>,
    read: &mpsc::Receiver<Line>,
) -> Result<(), Error> {
    until(processes, read, |ps| ps.values().all(|p| p.addr.is_some()))?;
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
    let whole = until(processes, read, |ps| ps.values().all(|p| p.live == n))?;
    println!(
        "{members} member processes: every view whole {:.2} s after the start ({:.1} protocol periods of {PROBE_MS} ms)",
        whole.duration_since(go).as_secs_f64(),
        periods(whole.duration_since(go))
    );

    // Let the cluster settle, then kill one member.
    thread::sleep(Duration::from_millis(20 * PROBE_MS));
    let victim = members / 2 + 1;
    let mut process = processes.remove(&victim).ok_or("no victim")?;
    process.child.kill()?;
    let killed = Instant::now();
    let _ = process.child.wait();
    let survivors = n - 1;
    let healed = until(processes, read, |ps| {
        ps.values()
            .all(|p| p.deaths.contains_key(&victim) && p.live == survivors)
    })?;
    let mut after: Vec<f64> = processes
        .values()
        .filter_map(|p| p.deaths.get(&victim))
        .map(|&at| periods(at.saturating_duration_since(killed)))
        .collect();
    after.sort_by(f64::total_cmp);
    let mean = after.iter().sum::<f64>() / after.len() as f64;
    let p99 = after[((after.len() as f64 * 0.99).ceil() as usize).clamp(1, after.len()) - 1];
    println!(
        "killed member {victim}: declared dead by every survivor after {:.1} periods (first {:.1}, mean {mean:.1}, p99 {p99:.1})",
        after.last().copied().unwrap_or(f64::NAN),
        after.first().copied().unwrap_or(f64::NAN),
    );
    println!(
        "every survivor's view whole again (without member {victim}) {:.1} periods after the kill",
        periods(healed.saturating_duration_since(killed))
    );
    Ok(())
}
