//! The contract: inputs in with the time, effects out through one `poll`, persistence
//! acknowledged by token.

use std::fmt;

use crate::id::{NodeId, RequestId};
use crate::time::Time;

/// Names one [`Effect::Persist`] so that its completion can be acknowledged with
/// [`Input::Persisted`].
///
/// A state machine numbers its persist effects with increasing tokens, starting again after
/// a restart (a token means nothing across incarnations). Acknowledging a token
/// acknowledges it and every earlier token: a driver that has written several persist
/// effects and synced them with one `fsync` hands back only the last token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

impl PersistToken {
    /// The token after this one.
    #[must_use]
    pub const fn next(self) -> PersistToken {
        PersistToken(self.0 + 1)
    }
}

impl fmt::Display for PersistToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Everything that can happen to a state machine, handed to [`Protocol::handle`] with the
/// time it happened.
///
/// The enum is closed on purpose: a driver that handles these four inputs and the five
/// [`Effect`]s can run any Synod state machine. What differs between protocols is the type
/// of their messages `M` and client requests `Q`, and the state machine's own methods for
/// things that are not inputs (reading its state, building it from what a restart
/// recovered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<M, Q> {
    /// A message from another node arrived. `from` is the sender as the driver knows it
    /// (the transport's authenticated peer), not a claim inside the message.
    Message {
        /// The node that sent it.
        from: NodeId,
        /// The message.
        message: M,
    },
    /// A client asked for something. The state machine answers with exactly one
    /// [`Effect::Reply`] carrying the same `id`, unless it crashes first.
    Request {
        /// The driver's name for the request, handed back with the reply.
        id: RequestId,
        /// The request.
        request: Q,
    },
    /// Every [`Effect::Persist`] up to and including this token is durable.
    Persisted(PersistToken),
    /// The time asked for by the latest [`Effect::WakeAt`] has come. A driver may deliver it
    /// late (a paused process, a busy queue), never early; the state machine reads the
    /// actual time from `now`, never assumes it was woken on time.
    Wake,
}

/// What a state machine wants done, drained by the driver with [`Protocol::poll`] and
/// carried out in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<M, R, W, A> {
    /// Send `message` to `to`. Delivery is not guaranteed: messages may be lost,
    /// duplicated, delayed and reordered, and the protocol copes.
    Send {
        /// The destination node (never the sender itself).
        to: NodeId,
        /// The message.
        message: M,
    },
    /// Answer the client request `id`.
    Reply {
        /// The id from the [`Input::Request`] being answered.
        id: RequestId,
        /// The answer.
        response: R,
    },
    /// Make `write` durable, in order after every earlier persist effect, then hand
    /// [`Input::Persisted`] with `token` (or a later token) back. The driver may batch many
    /// writes into one sync. Nothing that depends on this write (a vote, an
    /// acknowledgement, a reply) is emitted before that acknowledgement arrives.
    ///
    /// A write that cannot be made durable (a failed `fsync`) ends the node's incarnation:
    /// the driver stops the state machine and restarts it from what the disk holds, never
    /// retries the sync and carries on.
    Persist {
        /// Acknowledged by [`Input::Persisted`].
        token: PersistToken,
        /// What to write, in the protocol's own terms (log entries, a term and vote, an
        /// acceptor's promise); the driver's store knows how to lay it out on disk.
        write: W,
    },
    /// Hand something to the application above the protocol: committed log entries for a
    /// replicated log, a new membership view for a failure detector. Protocols that have
    /// nothing to hand up use [`std::convert::Infallible`].
    Apply(A),
    /// Deliver [`Input::Wake`] at or after this time. It replaces any earlier request: a
    /// state machine has at most one wake-up pending, the earliest thing it is waiting for.
    WakeAt(Time),
}

/// The input type of protocol `P`.
pub type InputOf<P> = Input<<P as Protocol>::Message, <P as Protocol>::Request>;

/// The effect type of protocol `P`.
pub type EffectOf<P> = Effect<
    <P as Protocol>::Message,
    <P as Protocol>::Response,
    <P as Protocol>::Write,
    <P as Protocol>::Apply,
>;

/// A protocol state machine: inputs in with the current time, effects out.
///
/// The calls, in order:
///
/// 1. **Build** the state machine from its configuration and whatever its store recovered
///    (each protocol has its own constructor for this: it is not part of the trait).
/// 2. **Handle** inputs one at a time with [`Protocol::handle`], each with the time the
///    driver read just before: messages, client requests, persistence acknowledgements,
///    wake-ups.
/// 3. **Drain** the effects with [`Protocol::poll`] until it returns `None`, carrying out
///    each one. A driver may handle several inputs before draining (a batch of messages,
///    then one drain), which is how one `fsync` comes to cover many writes.
///
/// A state machine does no I/O: it does not read a clock, sleep, spawn threads, open
/// sockets or files, or draw OS randomness; randomness comes from a seed in its
/// configuration ([`crate::Rng`]). Nothing a peer or a client sends can make `handle` panic:
/// bad input is counted or answered with an error.
pub trait Protocol {
    /// What nodes of this protocol send each other.
    type Message;
    /// What a client asks.
    type Request;
    /// What the state machine answers a client.
    type Response;
    /// What a [`Effect::Persist`] asks the driver to make durable.
    type Write;
    /// What an [`Effect::Apply`] hands to the application.
    type Apply;

    /// This node's identity.
    fn id(&self) -> NodeId;

    /// Handles one input that happened at `now`.
    fn handle(&mut self, now: Time, input: InputOf<Self>);

    /// The next effect to carry out, or `None` when there is nothing more to do until the
    /// next input.
    fn poll(&mut self) -> Option<EffectOf<Self>>;
}
