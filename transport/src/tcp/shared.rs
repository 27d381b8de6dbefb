//! The state a transport's threads share: the table of channels, the queue of received
//! messages, the recent connection events, the counters and the threads to join.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::ids::NodeId;
use crate::received::{Entry, Received};
use crate::stream::StreamLayer;

use super::channel::Channel;
use super::{BatchHandler, ConnectionEvent, EVENTS_RECENT_MAX, Handler};

/// What a transport does with the requests and one-way messages it receives, when it does
/// not queue them for `recv`.
pub(super) enum Handling {
    /// Each to a [`Handler`], one by one.
    Each(Handler),
    /// Each read's together to a [`BatchHandler`].
    Batch(BatchHandler),
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connections_established: AtomicU64,
    pub(super) connections_refused: AtomicU64,
    pub(super) connections_lost: AtomicU64,
    pub(super) batches_sent: AtomicU64,
    pub(super) messages_sent: AtomicU64,
    pub(super) messages_received: AtomicU64,
    pub(super) late_responses: AtomicU64,
    pub(super) messages_dropped: AtomicU64,
    pub(super) writes_handed_over: AtomicU64,
}

/// A map keyed by a `u64` id. Ids are hashed by one multiplication rather than SipHash:
/// correlation ids are chosen by this side, and the node ids a peer can choose are at most
/// `connections_max` live entries, so flooding a bucket gains an attacker nothing.
pub(super) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads sequential ids over the high bits hashbrown uses.
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) local_addr: SocketAddr,
    pub(super) started: Instant,
    pub(super) closing: AtomicBool,
    pub(super) channels: Mutex<IdMap<NodeId, Arc<Channel>>>,
    pub(super) inbound: Mutex<Received>,
    pub(super) inbound_changed: Condvar,
    pub(super) sockets_accepted: AtomicUsize,
    pub(super) events: Mutex<VecDeque<ConnectionEvent>>,
    pub(super) counters: Counters,
    pub(super) handler: Option<Handling>,
    /// What every socket passes through before the handshake (TLS), if anything.
    pub(super) layer: Option<Arc<dyn StreamLayer>>,
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(super) next_connection: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.config.node)
            .field("local_addr", &self.local_addr)
            .field("handler", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(super) fn event(&self, event: ConnectionEvent) {
        let mut events = self.events.lock();
        if events.len() == EVENTS_RECENT_MAX {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Spawns a thread the transport joins at shutdown; `false` if none could be spawned
    /// (the connection it was for is then not served: its peer sees it close and retries).
    pub(super) fn spawn(self: &Arc<Self>, name: String, f: impl FnOnce() + Send + 'static) -> bool {
        let mut threads = self.threads.lock();
        threads.retain(|t| !t.is_finished());
        match std::thread::Builder::new().name(name).spawn(f) {
            Ok(handle) => {
                threads.push(handle);
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn channel(&self, peer: NodeId) -> Option<Arc<Channel>> {
        self.channels.lock().get(&peer).cloned()
    }

    /// The channel for an accepted connection from `peer`, marked as being attached so
    /// that it is not forgotten before [`Channel::install`] runs.
    pub(super) fn channel_for_accepted(&self, peer: NodeId) -> Arc<Channel> {
        let mut channels = self.channels.lock();
        let channel = Arc::clone(
            channels
                .entry(peer)
                .or_insert_with(|| Arc::new(Channel::new(peer, None))),
        );
        channel.state.lock().attaching += 1;
        channel
    }

    /// Forgets the channel of a peer that dials this node once its connection is gone, so
    /// that peers that come and go (clients with fresh ids) leave nothing behind.
    pub(super) fn forget_if_idle(&self, channel: &Channel) {
        if channel.dial.is_some() {
            return;
        }
        let mut channels = self.channels.lock();
        let Some(entry) = channels.get(&channel.peer) else {
            return;
        };
        if !std::ptr::eq(Arc::as_ptr(entry), channel) {
            return;
        }
        let idle = {
            let st = channel.state.lock();
            st.conn.is_none() && st.attaching == 0 && st.pending.is_empty()
        };
        if idle {
            channels.remove(&channel.peer);
        }
    }

    /// Queues the messages `entries` of `frame` (a messages frame's payload) from `from`
    /// for `recv`, waiting while the queue is full (so the reader stops reading and TCP
    /// pushes back on the peer). Gives up if the connection `connection` of `channel` is
    /// gone or the transport closes: returns `false`, and the rest are dropped.
    /// The caller holds the queue's lock (`inbound`) and wakes receivers when it lets go.
    pub(super) fn deliver(
        &self,
        inbound: &mut parking_lot::MutexGuard<'_, Received>,
        channel: &Channel,
        connection: u64,
        from: NodeId,
        frame: &bytes::Bytes,
        mut entries: &[Entry],
    ) -> bool {
        let max = self.config.inbound_messages_max;
        while !entries.is_empty() {
            while inbound.len() >= max {
                if self.is_closing() || !channel.is_current(connection) {
                    return false;
                }
                self.inbound_changed.notify_all();
                self.inbound_changed
                    .wait_for(inbound, self.config.keepalive_interval());
            }
            // As many as there is room for, in one go.
            let (now, later) = entries.split_at((max - inbound.len()).min(entries.len()));
            inbound.push_run(from, frame, now);
            entries = later;
        }
        true
    }
}
