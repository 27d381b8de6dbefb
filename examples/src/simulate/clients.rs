//! The clients of every `synod sim` system: reads and writes (and, where the system has
//! them, compare-and-sets) of random keys with unique values, recorded for the
//! linearizability checker.
//!
//! [`KvClients`] is the workload; what differs between systems is only how an operation
//! becomes the system's request and what its answer means, which the system's node says by
//! implementing [`KvService`]. Written values are unique across the run (each write or
//! compare-and-set takes the next number), which is what lets the checker tell every write
//! apart.

use synod_sim::{ClientId, Completion, Invocation, KvInput, KvOutput, NodeId, SimRng, Workload};

/// A simulated node that serves [`KvClients`]: the requests for a read and a write, and
/// what its answers mean to a client.
pub trait KvService: synod_sim::Node {
    /// The request that reads `key`.
    fn read(key: u64) -> Self::Request;
    /// The request that writes `value` to `key`.
    fn write(key: u64, value: u64) -> Self::Request;
    /// What `response` means: how the operation completes, and what it says of the leader.
    fn answer(response: &Self::Response) -> Answer;
}

/// What a response means to the client that gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// How the operation completes in the history.
    pub completion: Completion<KvOutput>,
    /// What the response says of the leader, for clients that follow it.
    pub leader: LeaderHint,
}

impl Answer {
    /// An answer that says nothing of the leader.
    #[must_use]
    pub fn new(completion: Completion<KvOutput>) -> Self {
        Answer {
            completion,
            leader: LeaderHint::Same,
        }
    }
}

/// What a response says of the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderHint {
    /// Nothing: keep sending where the client sent.
    Same,
    /// The node that answered does not know a leader, or the client's guess is stale:
    /// pick a node at random next time.
    Unknown,
    /// This node leads, as far as the one that answered knows.
    Is(NodeId),
}

/// The request that reads a key in some way (for example a lease read).
pub type ReadRequest<R> = fn(u64) -> R;
/// The request that sets a key to `new` if it holds `expect` (`None`: absent).
pub type CasRequest<R> = fn(key: u64, expect: Option<u64>, new: u64) -> R;

/// Clients reading and writing random keys of a [`KvService`] with unique values.
///
/// By default each request goes to a random node, and an operation is a read or a write
/// with equal odds. [`KvClients::following_the_leader`] sends to the leader the last answer
/// named instead, [`KvClients::with_reads`] chooses among several kinds of read, and
/// [`KvClients::with_cas`] adds compare-and-sets (then reads, writes and compare-and-sets
/// each take a third).
#[derive(Debug)]
pub struct KvClients<N: KvService> {
    keys: u64,
    follow_leader: bool,
    reads_to: Option<NodeId>,
    reads: Vec<ReadRequest<N::Request>>,
    cas: Option<CasRequest<N::Request>>,
    last_value: u64,
    leader: Option<NodeId>,
}

impl<N: KvService> KvClients<N> {
    /// Clients of keys `0..keys`, each request to a random node, reads and writes only.
    ///
    /// # Panics
    ///
    /// If `keys` is zero.
    #[must_use]
    pub fn new(keys: u64) -> Self {
        assert!(keys > 0, "clients need at least one key");
        KvClients {
            keys,
            follow_leader: false,
            reads_to: None,
            reads: vec![N::read],
            cas: None,
            last_value: 0,
            leader: None,
        }
    }

    /// Sends each request to the leader the last answer named, or to a random node when no
    /// answer named one (or the last one said the guess was stale).
    #[must_use]
    pub fn following_the_leader(mut self) -> Self {
        self.follow_leader = true;
        self
    }

    /// Sends every read to `node`, and every write and compare-and-set to another node,
    /// chosen at random (for scenarios that cut `node` off and look at what it still reads).
    #[must_use]
    pub fn reading_from(mut self, node: NodeId) -> Self {
        self.reads_to = Some(node);
        self
    }

    /// Each read is one of `reads`, chosen at random (in place of [`KvService::read`]).
    ///
    /// # Panics
    ///
    /// If `reads` is empty.
    #[must_use]
    pub fn with_reads(mut self, reads: &[ReadRequest<N::Request>]) -> Self {
        assert!(!reads.is_empty(), "clients need a way to read");
        self.reads = reads.to_vec();
        self
    }

    /// Also issues compare-and-sets, built by `cas`, expecting absence or one of the few
    /// values written last.
    #[must_use]
    pub fn with_cas(mut self, cas: CasRequest<N::Request>) -> Self {
        self.cas = Some(cas);
        self
    }

    fn next_value(&mut self) -> u64 {
        self.last_value += 1;
        self.last_value
    }
}

impl<N: KvService> Workload<N> for KvClients<N> {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<N::Request, KvInput>> {
        let node = match self.leader {
            Some(leader) if self.follow_leader && leader.get() <= nodes as u64 => leader,
            _ => NodeId::new(rng.below(nodes as u64) + 1),
        };
        let key = rng.below(self.keys);
        let kinds = if self.cas.is_some() { 3 } else { 2 };
        let (request, input) = match (rng.below(kinds), self.cas) {
            (0, _) => {
                let read = match self.reads.as_slice() {
                    [only] => *only,
                    reads => reads[rng.below(reads.len() as u64) as usize],
                };
                (read(key), KvInput::Read { key })
            }
            (2, Some(cas)) => {
                let new = self.next_value();
                let expect = (rng.below(2) == 0).then(|| new.saturating_sub(rng.below(4) + 1));
                (cas(key, expect, new), KvInput::Cas { key, expect, new })
            }
            _ => {
                let value = self.next_value();
                (N::write(key, value), KvInput::Write { key, value })
            }
        };
        let node = match (self.reads_to, &input) {
            (Some(to), KvInput::Read { .. }) => to,
            (Some(to), _) if node == to => {
                let others = nodes as u64 - 1;
                let other = rng.below(others.max(1)) + 1;
                NodeId::new(if other >= to.get() { other + 1 } else { other })
            }
            _ => node,
        };
        Some(Invocation {
            node,
            request,
            input,
        })
    }

    fn complete(
        &mut self,
        _: ClientId,
        _: &KvInput,
        response: &N::Response,
    ) -> Completion<KvOutput> {
        let answer = N::answer(response);
        match answer.leader {
            LeaderHint::Same => {}
            LeaderHint::Unknown => self.leader = None,
            LeaderHint::Is(leader) => self.leader = Some(leader),
        }
        answer.completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::raft_kv::{RaftKvNode, Request, Response};

    fn invoke(
        clients: &mut KvClients<RaftKvNode>,
        rng: &mut SimRng,
    ) -> Invocation<Request, KvInput> {
        clients
            .invoke(ClientId::new(0), 3, rng)
            .expect("clients never finish")
    }

    #[test]
    fn written_values_are_unique_and_requests_match_the_recorded_inputs() {
        let mut clients = KvClients::<RaftKvNode>::new(2).with_cas(Request::cas);
        let mut rng = SimRng::new(7);
        let mut values = Vec::new();
        let mut kinds = [0; 3];
        for _ in 0..300 {
            let Invocation { request, input, .. } = invoke(&mut clients, &mut rng);
            match (request, input) {
                (Request::Read(k), KvInput::Read { key }) if k == key && key < 2 => kinds[0] += 1,
                (Request::Write(k, v), KvInput::Write { key, value }) if (k, v) == (key, value) => {
                    kinds[1] += 1;
                    values.push(value);
                }
                (
                    Request::Cas {
                        key: k,
                        expect: e,
                        new: n,
                    },
                    KvInput::Cas { key, expect, new },
                ) if (k, e, n) == (key, expect, new) && expect.is_none_or(|x| x < new) => {
                    kinds[2] += 1;
                    values.push(new);
                }
                other => panic!("request and recorded input disagree: {other:?}"),
            }
        }
        assert!(
            kinds.iter().all(|&n| n > 50),
            "each kind about a third: {kinds:?}"
        );
        let count = values.len();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), count, "a value written twice");
    }

    #[test]
    fn clients_reading_from_a_node_send_it_every_read_and_no_write() {
        let mut clients = KvClients::<RaftKvNode>::new(8).reading_from(NodeId::new(2));
        let mut rng = SimRng::new(3);
        let mut writes_to = Vec::new();
        for _ in 0..200 {
            let call = invoke(&mut clients, &mut rng);
            match call.input {
                KvInput::Read { .. } => assert_eq!(call.node, NodeId::new(2)),
                _ => writes_to.push(call.node),
            }
        }
        for node in [1, 3] {
            assert!(writes_to.contains(&NodeId::new(node)), "{writes_to:?}");
        }
        assert!(!writes_to.contains(&NodeId::new(2)), "{writes_to:?}");
    }

    #[test]
    fn clients_following_the_leader_go_where_the_last_answer_said() {
        let mut clients = KvClients::<RaftKvNode>::new(8).following_the_leader();
        let mut rng = SimRng::new(1);
        let client = ClientId::new(0);
        let read = KvInput::Read { key: 0 };
        let completion =
            clients.complete(client, &read, &Response::NotLeader(Some(NodeId::new(2))));
        assert_eq!(completion, Completion::Fail);
        assert!((0..20).all(|_| invoke(&mut clients, &mut rng).node == NodeId::new(2)));
        // A success keeps the leader; an uncertain answer forgets it.
        clients.complete(client, &read, &Response::Read(Some(4)));
        assert_eq!(invoke(&mut clients, &mut rng).node, NodeId::new(2));
        let unsure = Response::Unsure("lost track".to_owned());
        assert_eq!(
            clients.complete(client, &read, &unsure),
            Completion::Unknown
        );
        let nodes: Vec<NodeId> = (0..30)
            .map(|_| invoke(&mut clients, &mut rng).node)
            .collect();
        assert!(nodes.iter().any(|&n| n != NodeId::new(2)), "{nodes:?}");

        // Clients that do not follow the leader spread their requests whatever they hear.
        let mut spread = KvClients::<RaftKvNode>::new(8);
        spread.complete(client, &read, &Response::NotLeader(Some(NodeId::new(2))));
        let nodes: Vec<NodeId> = (0..30)
            .map(|_| invoke(&mut spread, &mut rng).node)
            .collect();
        assert!(nodes.iter().any(|&n| n != NodeId::new(2)), "{nodes:?}");
    }
}
