//! Headline benchmark: committed writes per second of a three-node Raft cluster in one
//! process over in-memory logs, with 1, 64 and 4096 concurrent clients (each with one
//! write outstanding).
//!
//! Baseline, measured in the same run: the same workload over "naive replication", which
//! copies each write into two follower vectors and counts a majority of copies, with no
//! protocol at all. The ratio says what the Raft state machines cost over just moving the
//! entries.
//!
//! With `--features peers`, openraft 0.9 in the shape of its own cluster benchmark (three
//! nodes in one process on a tokio runtime of 32 worker threads, in-memory log, empty
//! writes, clients that are tasks each with one `client_write` outstanding) runs in the same
//! run, its repetitions alternating with Synod's, and `consensus.raft_<n>c_vs_openraft`
//! is Synod's committed writes per second over openraft's. The two are driven as each is
//! meant to be: Synod's nodes are I/O-free state machines that this bench steps from one
//! thread, where openraft's run as tasks on its runtime, so the ratio includes what
//! openraft's runtime costs; it is the comparison a user choosing between them makes.
//!
//! `SYNOD_BENCH_QUICK=1` runs fewer and shorter repetitions (under 30 seconds; with
//! `peers`, under a minute).

#[cfg(feature = "peers")]
#[path = "replicated_log/peer.rs"]
mod peer;

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_consensus::{
    Config, LogIndex, LogStore, MemLogStore, Membership, Message, MessageBody, Node, NodeId,
    Payload,
};

struct Cluster {
    nodes: Vec<Node>,
    /// Each node's "disk", that its writes are applied to and synced.
    disks: Vec<MemLogStore>,
    net: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
        let membership = Membership::new(ids.clone(), []).expect("valid membership");
        let disks = vec![MemLogStore::new(membership.clone()); ids.len()];
        let nodes = ids
            .iter()
            .map(|id| {
                let config = Config::builder(*id)
                    .in_flight_max(256)
                    .uncommitted_entries_max(1 << 20)
                    .apply_entries_max(1 << 16)
                    .build()
                    .expect("valid config");
                Node::new(config, MemLogStore::new(membership.clone()))
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            disks,
            net: VecDeque::new(),
        };
        let term = cluster.nodes[0].term();
        cluster.nodes[0].step(Message {
            from: NodeId::new(2),
            to: NodeId::new(1),
            term,
            body: MessageBody::TimeoutNow,
        });
        let mut sink = 0;
        cluster.run(&mut sink);
        assert_eq!(cluster.nodes[0].role(), synod_consensus::Role::Leader);
        cluster
    }

    /// Handles every node's ready and delivers messages until quiet; counts the commands
    /// the leader applied.
    fn run(&mut self, applied: &mut u64) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while self.nodes[i].has_ready() {
                    busy = true;
                    let ready = self.nodes[i].ready();
                    if let Some((token, write)) = ready.persist {
                        self.disks[i].apply(&write);
                        self.disks[i].sync();
                        self.nodes[i].persisted(token);
                    }
                    self.net.extend(ready.messages);
                    if i == 0 {
                        *applied += ready
                            .committed
                            .iter()
                            .filter(|e| matches!(e.payload, Payload::Command(_)))
                            .count() as u64;
                    }
                }
            }
            while let Some(msg) = self.net.pop_front() {
                busy = true;
                let to = (msg.to.get() - 1) as usize;
                self.nodes[to].step(msg);
            }
            if !busy {
                return;
            }
        }
    }
}

/// Raft: `clients` writes outstanding at all times, for `duration`. Returns writes/s.
fn raft(clients: u64, duration: Duration) -> f64 {
    let mut cluster = Cluster::new();
    let payload = Bytes::from_static(&[7u8; 64]);
    let mut outstanding = 0u64;
    let mut applied = 0u64;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        for _ in outstanding..clients {
            cluster.nodes[0]
                .propose(payload.clone())
                .expect("the leader accepts");
        }
        outstanding = clients;
        let before = applied;
        cluster.run(&mut applied);
        let completed = applied - before;
        outstanding -= completed.min(outstanding);
        done += completed;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Naive replication: the same writes copied into two follower logs, committed when two of
/// three copies exist.
fn naive(clients: u64, duration: Duration) -> f64 {
    let payload = Bytes::from_static(&[7u8; 64]);
    let mut leader: Vec<(u64, Bytes)> = Vec::new();
    let mut followers: [Vec<(u64, Bytes)>; 2] = [Vec::new(), Vec::new()];
    let mut commit = 0usize;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        let from = leader.len();
        for _ in 0..clients {
            leader.push((leader.len() as u64, payload.clone()));
        }
        for f in &mut followers {
            f.extend_from_slice(&leader[from..]);
        }
        let copies = [leader.len(), followers[0].len(), followers[1].len()];
        let mut sorted = copies;
        sorted.sort_unstable();
        let new_commit = sorted[1];
        done += (new_commit - commit) as u64;
        commit = new_commit;
        black_box(&leader[commit - 1]);
        if leader.len() > 1 << 20 {
            leader.clear();
            followers[0].clear();
            followers[1].clear();
            commit = 0;
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn summarize(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cpu}, {cores} cores")
}

fn main() {
    let quick = std::env::var_os("SYNOD_BENCH_QUICK").is_some();
    let (reps, duration) = if quick {
        (5, Duration::from_millis(300))
    } else {
        (7, Duration::from_secs(2))
    };
    println!("replicated_log: 3 nodes in one process, in-memory logs, 64-byte writes");
    println!("machine: {}", machine());
    for clients in [1u64, 64, 4096] {
        let mut base: Vec<f64> = (0..reps).map(|_| naive(clients, duration)).collect();
        #[cfg(feature = "peers")]
        let peer_cluster = peer::Cluster::new(32);
        #[cfg(feature = "peers")]
        let mut theirs = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..reps {
            ours.push(raft(clients, duration));
            #[cfg(feature = "peers")]
            theirs.push(peer_cluster.rate(clients, duration));
        }
        #[cfg(feature = "peers")]
        peer_cluster.shutdown();
        let (bm, blo, bhi) = summarize(&mut base);
        let (om, olo, ohi) = summarize(&mut ours);
        println!(
            "{clients:>5} clients: raft {om:>12.0} writes/s (min {olo:.0}, max {ohi:.0}); \
             naive copy {bm:>12.0} writes/s (min {blo:.0}, max {bhi:.0})"
        );
        println!(
            "ratio consensus.raft_{clients}c_vs_naive_copy {:.4}",
            om / bm
        );
        println!("value consensus.raft_{clients}c_writes_per_s {om:.0}");
        #[cfg(feature = "peers")]
        {
            let (pm, plo, phi) = summarize(&mut theirs);
            println!(
                "{clients:>5} clients: openraft {pm:>9.0} writes/s (min {plo:.0}, max {phi:.0}), \
                 the same run"
            );
            println!("ratio consensus.raft_{clients}c_vs_openraft {:.3}", om / pm);
        }
    }
    let _ = LogIndex::ZERO;
}
