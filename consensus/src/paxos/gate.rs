//! What the Paxos nodes share: their configuration, the errors a client request can get,
//! and the gate that holds every outgoing effect until the writes issued before it are
//! durable.

use std::time::Duration;

use synod_node::{Effect, NodeId, PersistToken, Rng, Time};

use super::PaxosError;

/// The retry timeout a [`NodeConfig`] starts with, in milliseconds.
pub const RETRY_TIMEOUT_MS_DEFAULT: u64 = 100;

/// How many client requests a [`NodeConfig`] lets wait at once by default.
pub const REQUESTS_MAX_DEFAULT: usize = 1024;

/// The configuration of a Paxos node ([`super::PaxosNode`], [`super::MultiPaxosNode`],
/// [`super::CasRegisterNode`]), validated when it is built.
///
/// A stalled round (messages lost, a competing proposer) is retried with a higher ballot
/// after a delay drawn uniformly from `retry_timeout_ms..2 * retry_timeout_ms` with a
/// generator seeded from `seed`, so that duelling proposers drift apart and one of them
/// finishes.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    id: NodeId,
    nodes: Vec<NodeId>,
    retry_timeout_ms: u64,
    seed: u64,
    requests_max: usize,
}

impl NodeConfig {
    /// Node `id` of the cluster `nodes` (each node is an acceptor), with the default
    /// retry timeout and request limit and seed 0.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Acceptors`] if `nodes` is empty or has duplicates;
    /// [`PaxosError::NotMember`] if `id` is not one of them.
    pub fn new(
        id: NodeId,
        nodes: impl IntoIterator<Item = NodeId>,
    ) -> Result<NodeConfig, PaxosError> {
        let mut nodes: Vec<NodeId> = nodes.into_iter().collect();
        nodes.sort_unstable();
        let count = nodes.len();
        nodes.dedup();
        if count == 0 || nodes.len() != count {
            return Err(PaxosError::Acceptors);
        }
        if !nodes.contains(&id) {
            return Err(PaxosError::NotMember(id));
        }
        Ok(NodeConfig {
            id,
            nodes,
            retry_timeout_ms: RETRY_TIMEOUT_MS_DEFAULT,
            seed: 0,
            requests_max: REQUESTS_MAX_DEFAULT,
        })
    }

    /// Sets the least delay before a stalled round is retried (at least 1 ms).
    #[must_use]
    pub fn retry_timeout_ms(mut self, ms: u64) -> NodeConfig {
        self.retry_timeout_ms = ms.max(1);
        self
    }

    /// Sets the seed of the node's retry delays.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> NodeConfig {
        self.seed = seed;
        self
    }

    /// Sets how many client requests may wait at once (at least 1); one more is answered
    /// [`RequestError::Busy`].
    #[must_use]
    pub fn requests_max(mut self, requests_max: usize) -> NodeConfig {
        self.requests_max = requests_max.max(1);
        self
    }

    /// This node.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Every node of the cluster, this one included, in order.
    #[must_use]
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Whether `node` is a member of the cluster other than this node.
    pub(crate) fn is_peer(&self, node: NodeId) -> bool {
        node != self.id && self.nodes.binary_search(&node).is_ok()
    }

    /// How many client requests may wait at once.
    #[must_use]
    pub fn requests_limit(&self) -> usize {
        self.requests_max
    }

    /// The generator the node draws its retry delays from.
    pub(crate) fn rng(&self) -> Rng {
        Rng::new(self.seed)
    }

    /// When a round started at `now` is retried if it has not finished.
    pub(crate) fn retry_deadline(&self, now: Time, rng: &mut Rng) -> Time {
        let ms = self.retry_timeout_ms + rng.below(self.retry_timeout_ms);
        now.saturating_add(Duration::from_millis(ms))
    }
}

/// Why a Paxos node could not carry out a client request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestError {
    /// `requests_max` requests are already waiting; nothing was done.
    Busy,
    /// The node's round was pre-empted after it proposed the request's write: the write
    /// may or may not take effect (a later round may finish it), like a timeout.
    Unknown,
    /// The register holds as many keys as it may and this one is new; nothing was done.
    KeysFull,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Busy => write!(f, "too many requests waiting"),
            RequestError::Unknown => write!(f, "pre-empted: the write may or may not take effect"),
            RequestError::KeysFull => write!(f, "no room for another key"),
        }
    }
}

impl std::error::Error for RequestError {}

/// The outgoing side of a node: effects in the order they were made, with every effect
/// made after a persist held back until that persist is acknowledged.
///
/// An acceptor's promise or acceptance reports state that must be durable first, and a
/// proposer's prepare must not leave before its own acceptor's promise of that ballot is
/// durable, or a restarted node could use the ballot again for another value. Holding
/// *every* effect behind *every* earlier write is the simple rule that covers both: a
/// driver may send whatever [`Gate::poll`] hands it at once. Messages to the node itself
/// pass through the gate too and come back out of [`Gate::next_local`]. This is
/// synod-node's [`synod_node::Gate`] (messages to itself looping back), with the Paxos
/// nodes' rule for wake-ups.
#[derive(Clone, Debug)]
pub(crate) struct Gate<M, R, W, A> {
    inner: synod_node::Gate<M, R, W, A>,
    wake: Option<Time>,
}

impl<M, R, W, A> Gate<M, R, W, A> {
    pub(crate) fn new(me: NodeId) -> Gate<M, R, W, A> {
        Gate {
            inner: synod_node::Gate::looping_back(me),
            wake: None,
        }
    }

    /// Asks for `write` to be made durable; everything emitted from now on waits for it.
    pub(crate) fn persist(&mut self, write: W) {
        self.inner.persist(write);
    }

    pub(crate) fn send(&mut self, to: NodeId, message: M) {
        self.inner.send(to, message);
    }

    pub(crate) fn reply(&mut self, id: synod_node::RequestId, response: R) {
        self.inner.reply(id, response);
    }

    pub(crate) fn apply(&mut self, apply: A) {
        self.inner.apply(apply);
    }

    /// Asks to be woken at `at` unless an earlier wake-up that has not passed is pending.
    pub(crate) fn wake_at(&mut self, now: Time, at: Time) {
        if self.wake.is_some_and(|w| w > now && w <= at) {
            return;
        }
        self.wake = Some(at);
        self.inner.push(Effect::WakeAt(at));
    }

    /// Every persist up to `token` is durable: releases what waited for them. A token
    /// this node never issued counts as the last one it did.
    pub(crate) fn persisted(&mut self, token: PersistToken) {
        self.inner.persisted(token);
    }

    /// The next message this node sent itself, once released.
    pub(crate) fn next_local(&mut self) -> Option<M> {
        self.inner.next_local()
    }

    /// Whether a message this node sent itself waits in [`Gate::next_local`].
    pub(crate) fn has_local(&self) -> bool {
        self.inner.has_local()
    }

    pub(crate) fn poll(&mut self) -> Option<Effect<M, R, W, A>> {
        self.inner.poll()
    }
}
