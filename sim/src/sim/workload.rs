//! What clients ask of a simulated cluster, and what the answers mean for the history.

use std::fmt;

use crate::node::{ClientId, Node, NodeId};
use crate::rng::SimRng;

/// One request a client sends, and how the history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation<R, I> {
    /// The node the request goes to. A node outside the cluster never receives it: the
    /// request counts as lost (`msg.lost`) and the operation ends unknown at the timeout.
    pub node: NodeId,
    /// The request itself.
    pub request: R,
    /// The operation, as the history records it.
    pub input: I,
}

/// How a response completes an operation in the history.
///
/// Which variant a response maps to is a claim about the protocol, and the checkers trust
/// it: see the crate documentation, "Checking histories".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion<O> {
    /// The operation succeeded with this output.
    Ok(O),
    /// The operation certainly had no effect and never will: only for errors the protocol
    /// guarantees are final (a request refused before it was proposed, "not the leader"
    /// from a node that never accepted it). The linearizability checker leaves it out.
    Fail,
    /// The answer does not say whether the operation took effect, or it may still take
    /// effect later (a timeout inside the cluster, a leader that lost its term with the
    /// entry in its log): recorded as unknown, exactly like a request that got no answer.
    Unknown,
}

/// The clients' behaviour: what they ask for, and what the answers mean.
///
/// Each client has at most one request outstanding. When a client is idle (at the start,
/// and a random think time after each answer or timeout) the simulator calls
/// [`Workload::invoke`]; when the answer arrives it calls [`Workload::complete`]. A request
/// with no answer within [`SimConfigBuilder::client_timeout`](crate::SimConfigBuilder::client_timeout) is recorded as unknown.
pub trait Workload<N: Node> {
    /// An operation's input, as recorded in the history.
    type Input: Clone + fmt::Debug;
    /// An operation's output, as recorded in the history.
    type Output: Clone + fmt::Debug;

    /// The next request of `client` in a cluster of `nodes` nodes, or `None` if this
    /// client is done.
    fn invoke(
        &mut self,
        client: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<N::Request, Self::Input>>;

    /// What `response` to the operation `input` means.
    fn complete(
        &mut self,
        client: ClientId,
        input: &Self::Input,
        response: &N::Response,
    ) -> Completion<Self::Output>;
}

/// A workload that sends nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClients;

impl<N: Node> Workload<N> for NoClients {
    type Input = ();
    type Output = ();

    fn invoke(
        &mut self,
        _: ClientId,
        _: usize,
        _: &mut SimRng,
    ) -> Option<Invocation<N::Request, ()>> {
        None
    }

    fn complete(&mut self, _: ClientId, _: &(), _: &N::Response) -> Completion<()> {
        Completion::Fail
    }
}
