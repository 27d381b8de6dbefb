//! The persistence gate: effects held until the writes issued before them are durable
//! (the contract's rule that nothing depending on a write leaves before it is durable).

use std::collections::VecDeque;

use crate::contract::{Effect, PersistToken};
use crate::id::{NodeId, RequestId};

/// A state machine's outgoing effects, each held back until every persist it waits for is
/// acknowledged, so that a driver may carry out whatever [`Gate::poll`] hands it at once.
///
/// [`Gate::persist`] issues a write that every effect emitted after it waits for (a vote,
/// a promise, a decision); [`Gate::persist_lazily`] issues one that nothing waits for (a
/// record whose loss only costs work after a restart). [`Gate::send`], [`Gate::reply`]
/// and [`Gate::apply`] emit in order behind the last gating persist; [`Gate::push`] emits
/// at once (a wake-up, which depends on no write). [`Gate::persisted`] releases what the
/// acknowledged token covers.
///
/// A gate built with [`Gate::looping_back`] keeps the messages its node sends itself,
/// once released, for [`Gate::next_local`] instead of handing them out (a Paxos node's
/// proposer talks to its own acceptor this way).
///
/// ```
/// use synod_node::{Effect, Gate, NodeId, PersistToken, RequestId};
///
/// let mut gate: Gate<&str, &str, u64, ()> = Gate::new();
/// gate.persist(7);
/// gate.reply(RequestId(1), "stored 7");
/// assert!(matches!(gate.poll(), Some(Effect::Persist { write: 7, .. })));
/// assert!(gate.poll().is_none(), "the reply waits for the write");
/// gate.persisted(PersistToken(1));
/// assert!(matches!(gate.poll(), Some(Effect::Reply { response: "stored 7", .. })));
/// ```
#[derive(Clone, Debug)]
pub struct Gate<M, R, W, A> {
    /// The node whose messages to itself loop back, if they do.
    me: Option<NodeId>,
    effects: VecDeque<Effect<M, R, W, A>>,
    /// The last persist issued.
    issued: PersistToken,
    /// The last persist that later effects wait for.
    gating: PersistToken,
    /// The last persist acknowledged.
    durable: PersistToken,
    held: VecDeque<(PersistToken, Effect<M, R, W, A>)>,
    local: VecDeque<M>,
}

impl<M, R, W, A> Default for Gate<M, R, W, A> {
    fn default() -> Self {
        Gate::new()
    }
}

impl<M, R, W, A> Gate<M, R, W, A> {
    /// An empty gate; messages to any node are handed out.
    #[must_use]
    pub fn new() -> Self {
        Gate {
            me: None,
            effects: VecDeque::new(),
            issued: PersistToken::default(),
            gating: PersistToken::default(),
            durable: PersistToken::default(),
            held: VecDeque::new(),
            local: VecDeque::new(),
        }
    }

    /// An empty gate for node `me`, whose messages to itself come back out of
    /// [`Gate::next_local`] once released.
    #[must_use]
    pub fn looping_back(me: NodeId) -> Self {
        Gate {
            me: Some(me),
            ..Gate::new()
        }
    }

    /// Asks for `write` to be made durable; every effect emitted from now on waits for it.
    /// Returns its token.
    pub fn persist(&mut self, write: W) -> PersistToken {
        let token = self.persist_lazily(write);
        self.gating = token;
        token
    }

    /// Asks for `write` to be made durable without holding later effects for it. Returns
    /// its token.
    pub fn persist_lazily(&mut self, write: W) -> PersistToken {
        self.issued = self.issued.next();
        self.effects.push_back(Effect::Persist {
            token: self.issued,
            write,
        });
        self.issued
    }

    /// Sends `message` to `to` once the persists issued so far are durable.
    pub fn send(&mut self, to: NodeId, message: M) {
        self.emit(Effect::Send { to, message });
    }

    /// Answers request `id` once the persists issued so far are durable.
    pub fn reply(&mut self, id: RequestId, response: R) {
        self.emit(Effect::Reply { id, response });
    }

    /// Hands `apply` up once the persists issued so far are durable.
    pub fn apply(&mut self, apply: A) {
        self.emit(Effect::Apply(apply));
    }

    /// Hands `effect` out at once, ahead of anything held: for effects that depend on no
    /// write, such as a wake-up.
    pub fn push(&mut self, effect: Effect<M, R, W, A>) {
        self.effects.push_back(effect);
    }

    fn emit(&mut self, effect: Effect<M, R, W, A>) {
        if self.durable >= self.gating {
            self.release(effect);
        } else {
            self.held.push_back((self.gating, effect));
        }
    }

    fn release(&mut self, effect: Effect<M, R, W, A>) {
        match effect {
            Effect::Send { to, message } if Some(to) == self.me => self.local.push_back(message),
            effect => self.effects.push_back(effect),
        }
    }

    /// Every persist up to `token` is durable: releases what waited for them. A token
    /// never issued counts as the last one issued.
    pub fn persisted(&mut self, token: PersistToken) {
        self.durable = self.durable.max(token.min(self.issued));
        while let Some((needs, _)) = self.held.front()
            && *needs <= self.durable
        {
            if let Some((_, effect)) = self.held.pop_front() {
                self.release(effect);
            }
        }
    }

    /// The next effect to carry out.
    pub fn poll(&mut self) -> Option<Effect<M, R, W, A>> {
        self.effects.pop_front()
    }

    /// The next message this node sent itself, once released (only with
    /// [`Gate::looping_back`]).
    pub fn next_local(&mut self) -> Option<M> {
        self.local.pop_front()
    }

    /// Whether a message this node sent itself waits in [`Gate::next_local`].
    #[must_use]
    pub fn has_local(&self) -> bool {
        !self.local.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type G = Gate<u8, u8, u8, u8>;

    fn drain(gate: &mut G) -> Vec<Effect<u8, u8, u8, u8>> {
        std::iter::from_fn(|| gate.poll()).collect()
    }

    #[test]
    fn effects_wait_for_the_last_gating_persist_and_leave_in_order() {
        let mut gate = G::new();
        gate.send(NodeId::new(2), 1);
        let first = gate.persist(10);
        gate.send(NodeId::new(2), 2);
        let second = gate.persist(11);
        gate.reply(RequestId(5), 3);
        assert_eq!(
            drain(&mut gate).len(),
            3,
            "the first send and both persists"
        );
        gate.persisted(first);
        assert!(matches!(
            drain(&mut gate)[..],
            [Effect::Send { message: 2, .. }]
        ));
        gate.persisted(second);
        assert!(matches!(
            drain(&mut gate)[..],
            [Effect::Reply { response: 3, .. }]
        ));
    }

    #[test]
    fn a_lazy_persist_holds_nothing_and_a_token_never_issued_counts_as_the_last() {
        let mut gate = G::new();
        gate.persist_lazily(1);
        gate.apply(4);
        assert_eq!(drain(&mut gate).len(), 2);
        gate.persist(2);
        gate.apply(5);
        gate.persisted(PersistToken(99));
        gate.persist(3);
        gate.apply(6);
        let out = drain(&mut gate);
        assert!(
            matches!(
                out[..],
                [
                    Effect::Persist { .. },
                    Effect::Apply(5),
                    Effect::Persist { .. }
                ]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn messages_to_itself_loop_back_once_released() {
        let mut gate = G::looping_back(NodeId::new(1));
        let token = gate.persist(1);
        gate.send(NodeId::new(1), 7);
        gate.push(Effect::WakeAt(crate::Time::from_millis(3)));
        assert!(!gate.has_local());
        gate.persisted(token);
        assert_eq!(gate.next_local(), Some(7));
        assert_eq!(
            drain(&mut gate).len(),
            2,
            "the persist and the wake-up, not the message"
        );
    }
}
