//! The node contract: [`synod_node::Protocol`] for [`Node`], on top of the raft-rs-style
//! calls (`tick`, `step`, `ready`, `persisted`). Ticks run from the time handed in, client
//! requests are one enum answered by one reply, and a [`Ready`](super::Ready) is handed
//! out as effects in its order.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use bytes::Bytes;
use synod_node::{Effect, EffectOf, Input, InputOf, Protocol, RequestId, Time};

use super::{CompactError, Node, ProposeError, ReadError, ReadState, TransferError};
use crate::membership::Membership;
use crate::message::{Message, ReadId};
use crate::storage::{RaftWrite, Snapshot};
use crate::types::{Entry, LogIndex, NodeId};

/// What a client (the application above the node) asks of a Raft node through
/// [`Input::Request`]. Each is answered by one [`Effect::Reply`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// [`Node::propose`]: answered with [`Response::Proposed`] and the entry's index at
    /// once (the entry is applied once committed, as an [`Apply::Entry`]).
    Propose(Bytes),
    /// [`Node::propose_membership`]: answered as a proposal.
    ProposeMembership(Membership),
    /// [`Node::read_index`]: answered with [`Response::Read`] once the read index is
    /// confirmed (or known not to be), never before the entries up to that index that this
    /// node has committed are handed out to be applied. The id must not
    /// repeat, even across restarts.
    ReadIndex(ReadId),
    /// [`Node::transfer_leadership`] to the node: answered with
    /// [`Response::TransferStarted`] at once.
    TransferLeadership(NodeId),
    /// [`Node::compact`]: a snapshot at `index` (at most the applied index) with the state
    /// machine's serialized state `data`. Answered with [`Response::Compacted`] at once; the
    /// snapshot goes to the store in the next persist effect.
    Compact {
        /// The last index the snapshot covers.
        index: LogIndex,
        /// The state machine's state at `index`.
        data: Bytes,
    },
}

/// The successful answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// The proposal was appended at this index (on the leader; it is not committed yet).
    Proposed(LogIndex),
    /// The read's answer: serve it once the state machine has applied `index`; an index of
    /// `None` means leadership could not be confirmed (retry, perhaps at another node).
    Read(ReadState),
    /// The leader has begun handing over.
    TransferStarted,
    /// The snapshot was taken and the log below it dropped.
    Compacted,
}

/// Why a [`Request`] was refused: the error of the call it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestError {
    /// A proposal (or membership proposal) was refused.
    Propose(ProposeError),
    /// A read index was refused.
    Read(ReadError),
    /// A leadership transfer was refused.
    Transfer(TransferError),
    /// A compaction was refused.
    Compact(CompactError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Propose(e) => e.fmt(f),
            RequestError::Read(e) => e.fmt(f),
            RequestError::Transfer(e) => e.fmt(f),
            RequestError::Compact(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Propose(e) => Some(e),
            RequestError::Read(e) => Some(e),
            RequestError::Transfer(e) => Some(e),
            RequestError::Compact(e) => Some(e),
        }
    }
}

/// What a Raft node hands to the state machine above it, as [`Effect::Apply`], in this
/// order within one drain: the snapshot to restore first, then committed entries in log
/// order (continuing exactly where the previous ones, or the snapshot, left off), then
/// confirmed reads, so that a read is never handed out before the entries this node
/// could apply before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Load this snapshot into the state machine (one received from the leader, or the
    /// recovered log's at start), replacing its state.
    Snapshot(Snapshot),
    /// Apply this committed entry.
    Entry(Entry),
    /// A read started with [`Node::read_index`] (not through [`Request::ReadIndex`], whose
    /// answer is a reply) was answered: serve it once `index` is applied.
    Read(ReadState),
}

/// Raft's logical clock, run from the time handed in with each input: every tick that has
/// passed since the last input is run before the input is looked at, however few wake-ups
/// arrived.
#[derive(Debug, Default)]
pub(super) struct TickClock {
    /// Whole ticks that had passed at the latest time handed in, counted from the epoch of
    /// the driver's clock; `None` before the first input, whose time is where the count
    /// starts (so a node built at any time starts its timers from then).
    passed: Option<u64>,
    /// The length of one tick, in nanoseconds (at least 1).
    tick_ns: u64,
}

impl TickClock {
    /// How many ticks to run at `now`: those passed since the last call, at most
    /// `catch_up_max`. Time never runs backwards: an earlier `now` runs none.
    ///
    /// The bound is for a process that was paused or starved for long: `catch_up_max`
    /// ticks (twice the longest election timeout) expire every timer and lease the node
    /// holds, without a burst of heartbeats and elections for every tick missed. The ticks
    /// past it are dropped, never owed, so the count stays behind real time after a long
    /// pause and advances at the real rate from there.
    fn due(&mut self, now: Time, tick_us: u64, catch_up_max: u64) -> u64 {
        self.tick_ns = tick_us.saturating_mul(1_000).max(1);
        let passed = now.as_nanos() / self.tick_ns;
        let Some(before) = self.passed else {
            self.passed = Some(passed);
            return 0;
        };
        self.passed = Some(before.max(passed));
        passed.saturating_sub(before).min(catch_up_max)
    }

    /// When the next tick is due, once the clock has started.
    fn next(&self) -> Option<Time> {
        self.passed
            .map(|p| Time::from_nanos(p.saturating_add(1).saturating_mul(self.tick_ns)))
    }
}

/// The contract's state: effects not yet polled, and which reads requests asked for.
#[derive(Debug, Default)]
pub(super) struct Contract {
    effects: VecDeque<EffectOf<Node>>,
    /// Reads asked for by [`Request::ReadIndex`], to answer with a reply. At most
    /// `read_pending_max` on a leader, as many as are forwarded on a follower: the node
    /// answers every read it takes, and the answer removes it.
    reads: BTreeMap<ReadId, RequestId>,
    /// The wake-up last asked for.
    wake: Option<Time>,
}

impl Node {
    /// Runs the ticks that are due at `now` (see [`Protocol::handle`]): one per
    /// [`Config::tick_interval_us`](crate::Config::tick_interval_us) passed since the
    /// previous call, at most twice the longest election timeout at once (a paused
    /// process expires its timers and leases, without a burst of elections and heartbeats
    /// for every tick it missed). The first call starts the count and runs none. A driver
    /// that calls [`Node::tick`] itself does not call this.
    pub fn advance(&mut self, now: Time) {
        let catch_up_max = self.config.election_timeout_ticks.end.saturating_mul(2);
        for _ in 0..self
            .clock
            .due(now, self.config.tick_interval_us, catch_up_max)
        {
            self.tick();
        }
    }

    /// When the next tick is due, once [`Node::advance`] has started the count: the time a
    /// driver that runs the node by [`Node::advance`] and [`Node::ready`] (rather than
    /// [`Protocol::poll`], which asks with [`Effect::WakeAt`]) should next hand it the time.
    #[must_use]
    pub fn next_tick(&self) -> Option<Time> {
        self.clock.next()
    }

    fn request(&mut self, id: RequestId, request: Request) {
        let response = match request {
            Request::Propose(data) => self
                .propose(data)
                .map(Response::Proposed)
                .map_err(RequestError::Propose),
            Request::ProposeMembership(next) => self
                .propose_membership(next)
                .map(Response::Proposed)
                .map_err(RequestError::Propose),
            Request::ReadIndex(read) => {
                if self.contract.reads.contains_key(&read) {
                    Err(RequestError::Read(ReadError::IdInUse(read)))
                } else {
                    match self.read_index(read) {
                        Ok(()) => {
                            self.contract.reads.insert(read, id);
                            return;
                        }
                        Err(e) => Err(RequestError::Read(e)),
                    }
                }
            }
            Request::TransferLeadership(to) => self
                .transfer_leadership(to)
                .map(|()| Response::TransferStarted)
                .map_err(RequestError::Transfer),
            Request::Compact { index, data } => self
                .compact(index, data)
                .map(|()| Response::Compacted)
                .map_err(RequestError::Compact),
        };
        self.contract
            .effects
            .push_back(Effect::Reply { id, response });
    }

    /// Turns the next [`Ready`](super::Ready) into effects, in its order, and asks to be
    /// woken for the next tick.
    fn drain_ready(&mut self) {
        if self.has_ready() {
            let ready = self.ready();
            let effects = &mut self.contract.effects;
            if let Some((token, write)) = ready.persist {
                effects.push_back(Effect::Persist { token, write });
            }
            for message in ready.messages {
                effects.push_back(Effect::Send {
                    to: message.to,
                    message,
                });
            }
            if let Some(snapshot) = ready.snapshot {
                effects.push_back(Effect::Apply(Apply::Snapshot(snapshot)));
            }
            for entry in ready.committed {
                effects.push_back(Effect::Apply(Apply::Entry(entry)));
            }
            for read in ready.reads {
                match self.contract.reads.remove(&read.id) {
                    Some(id) => effects.push_back(Effect::Reply {
                        id,
                        response: Ok(Response::Read(read)),
                    }),
                    None => effects.push_back(Effect::Apply(Apply::Read(read))),
                }
            }
        }
        // Before any input the clock has not started: ask to be woken at once, so that a
        // node nothing reaches still starts its clock (and its election timer) when it
        // starts, not at its first message.
        let wake = self.clock.next().unwrap_or(Time::ZERO);
        if self.contract.wake != Some(wake) {
            self.contract.wake = Some(wake);
            self.contract.effects.push_back(Effect::WakeAt(wake));
        }
    }
}

/// A Raft node on the node contract.
///
/// - [`Input::Message`] steps the message ([`Node::step`]) if its `from` field is the
///   sender the driver authenticated; one that claims another sender is dropped.
/// - [`Input::Request`] takes a [`Request`], answered by one [`Effect::Reply`] with a
///   `Result`.
/// - [`Input::Persisted`] is [`Node::persisted`].
/// - [`Input::Wake`] does nothing but run the ticks due; every input first runs the ticks
///   due at its time ([`Node::advance`]).
///
/// [`Protocol::poll`] hands out what [`Node::ready`] would, as effects in its order:
/// [`Effect::Persist`] (the [`RaftWrite`] and its token), then [`Effect::Send`] for each
/// message, then [`Effect::Apply`] (the snapshot to restore, committed entries, confirmed
/// reads; a read's reply comes after the entries handed out with it), then
/// [`Effect::WakeAt`] with the next tick's time when it changed. Replies to requests that
/// are answered at once come before the effects of the next drain.
///
/// A node just built (or recovered) asks, at its first poll, for a wake-up at
/// [`Time::ZERO`], that is at once: its clock starts at the first time handed in, so a
/// driver that only hands inputs in when asked still starts its election timer when it
/// starts, even if no message ever reaches it.
impl Protocol for Node {
    type Message = Message;
    type Request = Request;
    type Response = Result<Response, RequestError>;
    type Write = RaftWrite;
    type Apply = Apply;

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        self.advance(now);
        match input {
            Input::Message { from, message } => {
                if message.from == from {
                    self.step(message);
                }
            }
            Input::Request { id, request } => self.request(id, request),
            Input::Persisted(token) => self.persisted(token),
            Input::Wake => {}
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        if self.contract.effects.is_empty() {
            self.drain_ready();
        }
        self.contract.effects.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_run_from_the_time_handed_in_not_from_wake_ups() {
        let mut clock = TickClock::default();
        let tick_us = 50_000;
        let due = |clock: &mut TickClock, ms: u64| clock.due(Time::from_millis(ms), tick_us, 40);
        // The first time handed in starts the count: a node built late runs no ticks for
        // the time before it existed.
        assert_eq!(due(&mut clock, 1_000), 0);
        assert_eq!(clock.next(), Some(Time::from_millis(1_050)));
        assert_eq!(due(&mut clock, 1_049), 0);
        assert_eq!(due(&mut clock, 1_120), 2);
        // Wake-ups lost or late lose no time.
        assert_eq!(due(&mut clock, 1_400), 6);
        assert_eq!(due(&mut clock, 1_410), 0);
        // Time handed in out of order never runs backwards, nor twice.
        assert_eq!(due(&mut clock, 1_300), 0);
        assert_eq!(due(&mut clock, 1_450), 1);
        // After a long pause: enough ticks to expire every timer and lease, not a burst.
        assert_eq!(due(&mut clock, 60_000), 40);
        assert_eq!(due(&mut clock, 60_050), 1);
        assert_eq!(clock.next(), Some(Time::from_millis(60_100)));
    }
}
