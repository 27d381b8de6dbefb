//! openraft 0.9 in the shape of its own cluster benchmark: three nodes in one process on a
//! multi-threaded tokio runtime, an in-memory log, a state machine that keeps nothing but
//! its applied position, a "network" that calls the target node's `Raft` handle directly,
//! and clients that are tasks each calling `client_write` in a loop. Written for this
//! bench (the log keeps its entries in a `BTreeMap` under a mutex, the state machine its
//! last applied id and membership, which a snapshot's metadata carries whole).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{
    LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot,
};
use openraft::{
    Entry, LogId, OptionalSend, RaftLogId, SnapshotMeta, StorageError, StoredMembership, Vote,
};

/// Locks a mutex, taking the data even if another task panicked holding it (a panic fails
/// the bench anyway).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A write: empty, as in openraft's benchmark (Synod's side writes 64 bytes).
#[derive(Debug, Clone)]
pub struct Write;

openraft::declare_raft_types!(
    /// The benchmark's type configuration.
    pub Bench:
        D = Write,
        R = (),
        Node = (),
);

type Id = u64;
type Raft = openraft::Raft<Bench>;

/// The in-memory log of one node.
#[derive(Default)]
struct LogInner {
    vote: Option<Vote<Id>>,
    entries: BTreeMap<u64, Entry<Bench>>,
    purged: Option<LogId<Id>>,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<LogInner>>);

impl RaftLogReader<Bench> for Log {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Bench>>, StorageError<Id>> {
        Ok(lock(&self.0)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<Bench> for Log {
    type LogReader = Log;

    async fn get_log_state(&mut self) -> Result<LogState<Bench>, StorageError<Id>> {
        let log = lock(&self.0);
        let last = log.entries.values().next_back().map(|e| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Log {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<Id>) -> Result<(), StorageError<Id>> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Id>>, StorageError<Id>> {
        Ok(lock(&self.0).vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Bench>,
    ) -> Result<(), StorageError<Id>>
    where
        I: IntoIterator<Item = Entry<Bench>> + Send,
    {
        lock(&self.0)
            .entries
            .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<Id>) -> Result<(), StorageError<Id>> {
        lock(&self.0).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<Id>) -> Result<(), StorageError<Id>> {
        let mut log = lock(&self.0);
        log.purged = Some(log_id);
        let kept = log.entries.split_off(&(log_id.index + 1));
        log.entries = kept;
        Ok(())
    }
}

/// What the state machine keeps: where it is, and the membership.
#[derive(Default)]
struct MachineInner {
    applied: Option<LogId<Id>>,
    membership: StoredMembership<Id, ()>,
    snapshot: Option<SnapshotMeta<Id, ()>>,
}

#[derive(Clone, Default)]
struct Machine(Arc<Mutex<MachineInner>>, Arc<AtomicU64>);

impl RaftSnapshotBuilder<Bench> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Bench>, StorageError<Id>> {
        let n = self.1.fetch_add(1, Ordering::Relaxed);
        let mut m = lock(&self.0);
        let meta = SnapshotMeta {
            last_log_id: m.applied,
            last_membership: m.membership.clone(),
            snapshot_id: format!("{n}"),
        };
        m.snapshot = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<Bench> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Id>>, StoredMembership<Id, ()>), StorageError<Id>> {
        let m = lock(&self.0);
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<Id>>
    where
        I: IntoIterator<Item = Entry<Bench>> + Send,
    {
        let mut m = lock(&self.0);
        let mut out = Vec::new();
        for e in entries {
            m.applied = Some(e.log_id);
            if let openraft::EntryPayload::Membership(mem) = e.payload {
                m.membership = StoredMembership::new(Some(e.log_id), mem);
            }
            out.push(());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Machine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Id>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Id, ()>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Id>> {
        let mut m = lock(&self.0);
        m.applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Bench>>, StorageError<Id>> {
        Ok(lock(&self.0).snapshot.clone().map(|meta| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        }))
    }
}

/// The "network": each node's `Raft` handle, called directly.
#[derive(Clone, Default)]
struct Router(Arc<Mutex<BTreeMap<Id, Raft>>>);

impl RaftNetworkFactory<Bench> for Router {
    type Network = Link;

    async fn new_client(&mut self, target: Id, _node: &()) -> Link {
        let raft = lock(&self.0).get(&target).expect("a member").clone();
        Link { target, raft }
    }
}

struct Link {
    target: Id,
    raft: Raft,
}

impl RaftNetwork<Bench> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Bench>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Id>, RPCError<Id, (), RaftError<Id>>> {
        self.raft
            .append_entries(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Bench>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Id>, RPCError<Id, (), RaftError<Id, InstallSnapshotError>>>
    {
        self.raft
            .install_snapshot(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Id>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Id>, RPCError<Id, (), RaftError<Id>>> {
        self.raft
            .vote(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }
}

/// A three-node openraft cluster with node 0 leading, on its own runtime.
pub struct Cluster {
    runtime: tokio::runtime::Runtime,
    nodes: Vec<Raft>,
}

impl Cluster {
    /// Starts the cluster and waits until every node applied the initial membership.
    /// `worker_threads` as openraft's benchmark sets it (32).
    pub fn new(worker_threads: usize) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let nodes = runtime.block_on(async {
            // openraft's benchmark settings: the defaults, with longer election timeouts.
            let config = openraft::Config {
                election_timeout_min: 200,
                election_timeout_max: 2000,
                purge_batch_size: 1024,
                ..Default::default()
            };
            let config = Arc::new(config.validate().expect("a valid openraft config"));
            let router = Router::default();
            let ids = [0u64, 1, 2];
            for id in ids {
                let raft = Raft::new(
                    id,
                    Arc::clone(&config),
                    router.clone(),
                    Log::default(),
                    Machine::default(),
                )
                .await
                .expect("an openraft node");
                lock(&router.0).insert(id, raft);
            }
            let rafts: Vec<Raft> = lock(&router.0).values().cloned().collect();
            rafts[0]
                .initialize(ids.into_iter().collect::<std::collections::BTreeSet<_>>())
                .await
                .expect("initialize");
            for raft in &rafts {
                raft.wait(Some(Duration::from_secs(10)))
                    .applied_index(Some(1), "the initial membership")
                    .await
                    .expect("every node applies the membership");
            }
            rafts
        });
        Cluster { runtime, nodes }
    }

    /// `clients` tasks each writing in a loop, one write outstanding each, for `duration`:
    /// committed writes per second.
    pub fn rate(&self, clients: u64, duration: Duration) -> f64 {
        self.runtime.block_on(async {
            let done = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let end = start + duration;
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let leader = self.nodes[0].clone();
                    let done = Arc::clone(&done);
                    tokio::spawn(async move {
                        let mut n = 0;
                        while Instant::now() < end {
                            leader.client_write(Write).await.expect("client_write");
                            n += 1;
                        }
                        done.fetch_add(n, Ordering::Relaxed);
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("a client task");
            }
            done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
        })
    }

    /// Stops the three nodes.
    pub fn shutdown(self) {
        let Cluster { runtime, nodes } = self;
        runtime.block_on(async move {
            for node in nodes {
                let _ = node.shutdown().await;
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
