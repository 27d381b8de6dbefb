//! `synod demo --system leaderless`: the leaderless store's lessons on real processes, in a
//! few seconds.
// tidy: driver: runs processes and client threads, reads the system clock, prints progress.
//!
//! Four `synod node --system leaderless` processes on loopback (64 partitions, 3 replicas
//! each), then, each step printed with what it shows:
//!
//! 1. 16 keys written at ALL (`v1`).
//! 2. **A partition**: node 3 cut off (SIGSTOP). Once node 1 holds it dead, the keys are
//!    written again at QUORUM through node 1 (`v2`, each with the context of its read,
//!    so it replaces `v1`): every write acknowledged, and the fallbacks hold hints for
//!    node 3.
//! 3. **The other side**: nodes 1, 2 and 4 cut off, node 3 back alone. Reads at ONE through
//!    node 3 answer from its own replica: **stale** (`v1`, though `v2` was acknowledged).
//!    Reads at QUORUM through it find no quorum and fail: never stale.
//! 4. **The heal**: every node back. Reads at QUORUM through node 3 answer `v2` (blocking read
//!    repair brings its replica up to date), and the **hints are delivered**: the fallbacks
//!    hold none.
//! 5. **A node joins**: a fifth node, on its first start, is admitted, takes its share of
//!    the partitions (the demo prints how many moved, against the fewest that give it a
//!    fair share), and the keys of its partitions are streamed to it; reads at QUORUM
//!    through it answer `v2`.
//!
//! It exits 0 only if each step showed what it should; 1 otherwise. The nodes and the
//! directory are cleaned up as the Core's demo's are ([`super`]). `--keep-data` applies;
//! `--nodes`, `--clients`, `--duration-s`, `--history` and `--html` are the Core's demo's
//! (its workload and its history) and do not: given other than their defaults, the demo
//! refuses to start and says so ([`refused_options`]).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::{EXIT_FAILED, EXIT_USAGE, Options, Output};
use crate::resp::Value;
use crate::resp::client::Connection;

/// The first members; a fifth node joins them.
const MEMBERS: usize = 4;
/// The keys written.
const KEYS: usize = 16;
/// The node cut off.
const CUT: usize = 3;
/// The node that joins.
const JOINER: usize = 5;
/// The partitions of the table (the store's default).
const PARTITIONS: u64 = 64;
/// How long a step may wait for what it waits for before the demo fails.
const WAIT_MAX: Duration = Duration::from_secs(30);

fn key(i: usize) -> String {
    format!("demo-{i}")
}

/// The options given that this demo does not take (each with why), as `synod demo`
/// parsed them: `--nodes`, `--clients` and `--duration-s` other than their defaults,
/// `--history` and `--html`.
#[must_use]
pub fn refused_options(options: &Options) -> Vec<String> {
    let mut refused = Vec::new();
    if options.nodes != 3 {
        refused.push(format!(
            "--nodes {}: this demo runs {MEMBERS} nodes and a fifth that joins",
            options.nodes
        ));
    }
    if options.clients != 8 {
        refused.push(format!(
            "--clients {}: this demo's steps use one client each",
            options.clients
        ));
    }
    if options.duration != Duration::from_secs(10) {
        refused.push(format!(
            "--duration-s {}: this demo runs its steps, not a timed workload",
            options.duration.as_secs()
        ));
    }
    if options.history.is_some() {
        refused.push("--history: this demo checks each step, it records no history".into());
    }
    if options.html.is_some() {
        refused.push("--html: this demo draws no page".into());
    }
    refused
}

/// Runs the demo (see the module documentation).
pub fn run(options: &Options) -> ExitCode {
    let refused = refused_options(options);
    if !refused.is_empty() {
        for why in &refused {
            eprintln!("synod demo --system leaderless: {why}");
        }
        eprintln!("synod demo --system leaderless takes only --keep-data");
        return ExitCode::from(EXIT_USAGE);
    }
    let start = Instant::now();
    let mut out = Output::new(start);
    let mut cluster = match Cluster::of_system("leaderless", JOINER, MEMBERS, options.keep_data) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod demo: cannot set up the cluster's directory and ports: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = steps(&mut cluster, &mut out);
    super::finish(&mut cluster, &mut out, &result)
}

/// Sends `commands` on one new connection to node `id`: the last reply.
fn call(cluster: &Cluster, id: usize, commands: &[&[&[u8]]]) -> std::io::Result<Value> {
    let mut conn = Connection::open(&cluster.client_addr(id).to_string())?;
    conn.set_read_timeout(Duration::from_secs(5))?;
    let mut last = Value::Nil;
    for command in commands {
        last = conn.roundtrip(command)?;
    }
    Ok(last)
}

/// Polls `done` every 20 ms until it holds or [`WAIT_MAX`] passes: how long it took.
fn wait(what: &str, mut done: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > WAIT_MAX {
            return Err(format!("{what}: not within {WAIT_MAX:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A number on INFO's line `name:N` of node `id`.
fn info_number(cluster: &Cluster, id: usize, name: &str) -> Option<u64> {
    let text = cluster.info_text(id)?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// What node `id` says of member `of` on INFO's `member:` line: its state and the
/// partitions it owns.
fn member(cluster: &Cluster, id: usize, of: usize) -> Option<(String, u64)> {
    let text = cluster.info_text(id)?;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("member:n{of} ")))?;
    let state = line.split("state=").nth(1)?.split_whitespace().next()?;
    let owned = line.split("owned=").nth(1)?.trim().parse().ok()?;
    Some((state.to_string(), owned))
}

/// Hints held for other replicas, summed over `nodes`.
fn hints(cluster: &Cluster, nodes: &[usize]) -> u64 {
    nodes
        .iter()
        .filter_map(|&id| info_number(cluster, id, "hints"))
        .sum()
}

/// Reads every key at `level` through node `id`, all at once: each key's value, or `None`
/// when the read failed.
fn read_all(cluster: &Cluster, id: usize, level: &str) -> Vec<Option<String>> {
    std::thread::scope(|s| {
        let reads: Vec<_> = (0..KEYS)
            .map(|i| {
                s.spawn(move || {
                    let k = key(i);
                    let get = [b"GET".as_slice(), k.as_bytes()];
                    match call(cluster, id, &[&[b"CONSISTENCY", level.as_bytes()], &get]) {
                        Ok(Value::Bulk(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
                        Ok(Value::Nil) => Some("(nil)".into()),
                        Ok(Value::Array(values)) => Some(format!("{} siblings", values.len())),
                        _ => None,
                    }
                })
            })
            .collect();
        reads.into_iter().map(|r| r.join().ok().flatten()).collect()
    })
}

/// Reads every key at QUORUM through node `id` until every read is answered.
fn read_all_answered(cluster: &Cluster, id: usize) -> Result<Vec<Option<String>>, String> {
    let mut last = Vec::new();
    wait(
        &format!("every key read at QUORUM through node {id}"),
        || {
            last = read_all(cluster, id, "QUORUM");
            last.iter().all(Option::is_some)
        },
    )?;
    Ok(last)
}

/// Counts of reads that answered `v1`, `v2`, something else, and none.
fn tally(reads: &[Option<String>]) -> (usize, usize, usize, usize) {
    let count = |f: &dyn Fn(&Option<String>) -> bool| reads.iter().filter(|r| f(r)).count();
    (
        count(&|r| r.as_deref() == Some("v1")),
        count(&|r| r.as_deref() == Some("v2")),
        count(&|r| r.as_ref().is_some_and(|v| v != "v1" && v != "v2")),
        count(&|r| r.is_none()),
    )
}

fn signal(cluster: &Cluster, ids: &[usize], name: &str) -> Result<(), String> {
    for &id in ids {
        if !cluster.signal(id, name) {
            return Err(format!("kill -{name} node {id} failed"));
        }
    }
    Ok(())
}

/// The steps; `Ok(passed)`, or an error that stopped them.
fn steps(cluster: &mut Cluster, out: &mut Output) -> Result<bool, String> {
    println!(
        "synod demo: the leaderless store, {MEMBERS} nodes on this machine ({PARTITIONS} \
         partitions of 3 replicas) and a fifth that joins"
    );
    println!("data directory {}", cluster.dir().display());
    let members: Vec<usize> = (1..=MEMBERS).collect();
    for &id in &members {
        cluster
            .start(id)
            .map_err(|e| format!("node {id} did not start: {e}"))?;
    }
    wait("every member alive in node 1's view", || {
        members
            .iter()
            .all(|&m| member(cluster, 1, m).is_some_and(|(s, _)| s == "alive"))
    })?;
    out.event(&format!(
        "nodes 1-{MEMBERS} up, each alive in node 1's view"
    ));
    let mut checks: Vec<(String, bool)> = Vec::new();

    // 1. v1 everywhere.
    for i in 0..KEYS {
        let k = key(i);
        let set = [b"SET".as_slice(), k.as_bytes(), b"v1"];
        wait(&format!("SET {} at ALL", key(i)), || {
            matches!(
                call(cluster, 1, &[&[b"CONSISTENCY", b"ALL"], &set]),
                Ok(Value::Simple(_))
            )
        })?;
    }
    out.event(&format!(
        "wrote {KEYS} keys at ALL through node 1: v1 on every replica"
    ));

    // 2. The partition: node 3 cut off; v2 at QUORUM, hinted.
    signal(cluster, &[CUT], "STOP")?;
    out.event(&format!("partition: node {CUT} cut off (SIGSTOP)"));
    let took = wait("node 1 holding node 3 dead", || {
        member(cluster, 1, CUT).is_some_and(|(s, _)| s == "dead")
    })?;
    out.event(&format!(
        "node 1 holds node {CUT} dead after {:.1} s",
        took.as_secs_f64()
    ));
    for i in 0..KEYS {
        let k = key(i);
        wait(&format!("SET {k} v2 at QUORUM"), || {
            let written = (|| {
                let mut conn = Connection::open(&cluster.client_addr(1).to_string())?;
                let Value::Array(items) = conn.roundtrip(&[b"GETCTX", k.as_bytes()])? else {
                    return Ok(false);
                };
                let Some(Value::Bulk(token)) = items.first() else {
                    return Ok(false);
                };
                let set = [b"SET".as_slice(), k.as_bytes(), b"v2", b"CONTEXT", token];
                Ok::<bool, std::io::Error>(matches!(conn.roundtrip(&set)?, Value::Simple(_)))
            })();
            written.unwrap_or(false)
        })?;
    }
    let others: Vec<usize> = members.iter().copied().filter(|&m| m != CUT).collect();
    let held = hints(cluster, &others);
    out.event(&format!(
        "wrote the {KEYS} keys again at QUORUM through node 1: v2, each acknowledged; the \
         fallbacks hold {held} hints for node {CUT}"
    ));
    checks.push((
        format!("hints held for node {CUT} while it is cut off"),
        held > 0,
    ));

    // 3. The other side: node 3 alone.
    signal(cluster, &others, "STOP")?;
    signal(cluster, &[CUT], "CONT")?;
    out.event(&format!(
        "the other side: nodes 1, 2, 4 cut off (SIGSTOP), node {CUT} back alone (SIGCONT)"
    ));
    let at_one = read_all(cluster, CUT, "ONE");
    let (stale, new, other, none) = tally(&at_one);
    let others_read: Vec<&str> = at_one
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|v| *v != "v1" && *v != "v2")
        .collect();
    out.event(&format!(
        "read at ONE through node {CUT}: {stale} STALE (v1, though v2 was acknowledged), \
         {new} v2, {none} unanswered (keys whose replicas are all cut off){}",
        if other > 0 {
            format!(", {other} other: {}", others_read.join(", "))
        } else {
            String::new()
        }
    ));
    checks.push(("a read at ONE is stale".into(), stale > 0));
    let (stale_q, new_q, other_q, none_q) = tally(&read_all(cluster, CUT, "QUORUM"));
    out.event(&format!(
        "read at QUORUM through node {CUT}: {none_q} refused (no quorum on this side), \
         {stale_q} stale"
    ));
    checks.push((
        "no read at QUORUM is stale".into(),
        stale_q == 0 && new_q + other_q + none_q == KEYS,
    ));

    // 4. The heal.
    signal(cluster, &others, "CONT")?;
    out.event("heal: nodes 1, 2, 4 back (SIGCONT)");
    let (stale_h, new_h, _, _) = tally(&read_all_answered(cluster, CUT)?);
    out.event(&format!(
        "read at QUORUM through node {CUT}: {new_h} of {KEYS} v2, {stale_h} stale"
    ));
    checks.push((
        "after the heal every read at QUORUM is v2".into(),
        new_h == KEYS,
    ));
    let delivered = wait("hints delivered", || hints(cluster, &members) == 0);
    let was_delivered = delivered.is_ok();
    match delivered {
        Ok(took) => out.event(&format!(
            "hints delivered after the heal: {held} -> 0 in {:.1} s",
            took.as_secs_f64()
        )),
        Err(e) => out.event(&e),
    }
    checks.push(("hints delivered after the heal".into(), was_delivered));

    // 5. A node joins.
    cluster
        .start(JOINER)
        .map_err(|e| format!("node {JOINER} did not start: {e}"))?;
    out.event(&format!(
        "node {JOINER} starts and asks the members to admit it"
    ));
    let took = wait(
        "node 5 admitted, owning partitions and holding keys",
        || {
            member(cluster, JOINER, JOINER).is_some_and(|(_, owned)| owned > 0)
                && info_number(cluster, JOINER, "keys").is_some_and(|k| k > 0)
        },
    )?;
    let owned = member(cluster, JOINER, JOINER).map_or(0, |(_, o)| o);
    let keys = info_number(cluster, JOINER, "keys").unwrap_or(0);
    let fair = PARTITIONS / JOINER as u64;
    out.event(&format!(
        "node {JOINER} joined in {:.1} s: it owns {owned} of {PARTITIONS} partitions (the \
         fewest for a fair share: {fair}), and the {keys} keys of its partitions were \
         streamed to it",
        took.as_secs_f64()
    ));
    let (_, new_j, _, _) = tally(&read_all_answered(cluster, JOINER)?);
    out.event(&format!(
        "read at QUORUM through node {JOINER}: {new_j} of {KEYS} v2"
    ));
    checks.push((
        format!("node {JOINER} joined with its share and serves every key"),
        owned > 0 && keys > 0 && new_j == KEYS,
    ));

    println!();
    let passed = checks.iter().all(|(_, ok)| *ok);
    for (what, ok) in &checks {
        println!("  {:<52} {}", what, if *ok { "yes" } else { "NO" });
    }
    println!(
        "\n{}: ONE answers from whatever replica it reaches, stale or not; QUORUM refuses \
         rather than answer stale; hints and read repair bring the cut-off replica back",
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_and_keep_data_are_taken_and_the_cores_options_refused() {
        let defaults = Options::new(10, 8, 3, true).expect("valid");
        assert!(refused_options(&defaults).is_empty());
        let other = Options::new(20, 4, 5, false)
            .expect("valid")
            .with_html("run.html".into());
        let refused = refused_options(&other);
        assert_eq!(refused.len(), 4, "{refused:?}");
        for flag in ["--nodes 5", "--clients 4", "--duration-s 20", "--html"] {
            assert!(
                refused.iter().any(|r| r.starts_with(flag)),
                "{flag}: {refused:?}"
            );
        }
    }
}
