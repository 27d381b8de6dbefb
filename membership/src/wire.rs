//! What members send each other, and its byte encoding.
//!
//! # Format, version 6
//!
//! Version 2 added the group fields to [`Update`] (`group`, `group_size`, `merged_from`);
//! version 3 the key-value exchange ([`Body::KvSyn`], [`Body::KvAck`], [`Body::KvDelta`]);
//! version 4 the fields of a reset in parts ([`Digest::reset_from`], [`Delta::top`]);
//! version 5 the owner's deletion floor ([`Message::kv_floor`], [`Digest::floor`]);
//! version 6 the push-pull's offer of a hash of the view ([`Body::SyncOffer`]) before the
//! view itself. A member of one version takes no message of another
//! ([`DecodeError::Version`]), so old and new members tell each other apart instead of
//! misreading each other: a cluster is upgraded by starting the new members as a cluster of
//! their own, not mixed in.
//!
//! A message on the wire is one byte, [`WIRE_VERSION`], followed by the [`Message`] in
//! postcard's format (varint integers, length-prefixed sequences, enum variants by index).
//! It is at most the configured `message_bytes_max` (probes and acknowledgements, with the
//! gossip they carry) or `sync_bytes_max` (a push-pull sync); a driver hands the member
//! only what [`Message::decode`] accepts, and a message that is too long, of another
//! version, or malformed is an error, never a panic.

use std::fmt;

use serde::{Deserialize, Serialize};
use synod_node::NodeId;

use crate::kv::{Delta, Digest};

/// The version byte every encoded message starts with.
pub const WIRE_VERSION: u8 = 6;

/// The furthest a member's generation can move ahead between two things another member
/// hears of it: a generation rises by one per start (or renewal, see
/// [`MemberStats::renewals`](crate::MemberStats::renewals)), so this is 2^32 starts in a
/// row that no member heard of. A claim further ahead of what a member knows (the member
/// itself included) is damage or a lie, and is ignored: otherwise a claim at `u64::MAX`,
/// which no larger generation can beat, would keep its member dead for ever. What a member
/// says of itself in its own messages is believed however far ahead it is, and replaces
/// whatever was held: a renewal past a lie may have taken it further than this from a
/// start that another member still holds.
pub const GENERATION_STEP_MAX: u64 = 1 << 32;

/// Whether `claimed` is further ahead of `known` than any run of starts could take a
/// generation ([`GENERATION_STEP_MAX`]).
pub(crate) fn beyond_reach(known: u64, claimed: u64) -> bool {
    claimed > known.saturating_add(GENERATION_STEP_MAX)
}

/// What a member believes of another: alive, suspected, or dead. Ordered by how much each
/// overrides the others at the same incarnation (`Alive < Suspect < Dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes, as far as this member knows.
    Alive,
    /// Missed a probe; declared dead unless it refutes before the suspicion times out.
    Suspect,
    /// Declared dead (a tombstone until it is forgotten).
    Dead,
}

/// One member's state as gossiped: who, which start of it (`generation`), which version of
/// its liveness (`incarnation`), and what is believed of it.
///
/// Between two updates about the same member the one with the larger
/// `(generation, incarnation, state)` wins: a restarted member (a new generation) replaces
/// everything said about its earlier starts, and within one start only the member itself
/// raises its incarnation, which is how it refutes a suspicion. A generation more than
/// [`GENERATION_STEP_MAX`] ahead of the one known is ignored instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Update {
    /// The member the update is about.
    pub id: NodeId,
    /// Its start: raised, and made durable, every time it starts.
    pub generation: u64,
    /// Its liveness version within that start.
    pub incarnation: u64,
    /// What is believed.
    pub state: MemberState,
    /// The member's join stamp, which it sets once per start: one more than the largest it
    /// knew of then, so that a smaller stamp joined earlier; 0 until it has set it. The
    /// oldest live member, by `(joined, id)`, coordinates (the emergent leader).
    pub joined: u64,
    /// Who said so: the member itself for `Alive`, the suspecting member for `Suspect`
    /// (counted as an independent confirmation), the declaring member for `Dead`.
    pub by: NodeId,
    /// The coordinator of the group the member is in: itself while it coordinates, and
    /// before it has a join stamp (when it is in no group yet).
    pub group: NodeId,
    /// How many members the member counted in its group (itself included) when it said
    /// this. What a coordinator says of its own group decides which group wins a merge.
    pub group_size: u32,
    /// The group the member was in before that group merged into `group`; `None` if its
    /// group has not merged since it joined it.
    pub merged_from: Option<NodeId>,
}

impl Update {
    /// The order in which updates about one member override each other.
    #[must_use]
    pub fn precedence(&self) -> (u64, u64, MemberState) {
        (self.generation, self.incarnation, self.state)
    }
}

/// A hash of a whole view: one update per member, the holder's own included, in order of
/// id (`updates` must be sorted by id). Two members that hold the same view hash it the same.
/// What a member says of its own group's size is left out: a member counts its group
/// afresh as members come and go, without a new incarnation, so others hold the count it
/// last gossiped, and the count spreads by gossip, not by push-pull. So is who said an
/// update, and whatever of a suspicion is not in the update.
#[must_use]
pub(crate) fn view_hash(updates: &[Update]) -> u64 {
    // FNV-1a over the fields, then a final mix: the same on every platform.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut word = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for u in updates {
        word(u.id.get());
        word(u.generation);
        word(u.incarnation);
        word(u.state as u64);
        word(u.joined);
        word(u.group.get());
        word(u.merged_from.map_or(0, |g| g.get().wrapping_add(1)));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// What a message is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Body {
    /// A probe: answer with an [`Body::Ack`] of the same `seq`.
    Ping {
        /// The prober's probe number.
        seq: u64,
    },
    /// The answer to a [`Body::Ping`].
    Ack {
        /// The probe number answered.
        seq: u64,
    },
    /// Probe `target` for me and tell me if it answers: the indirect probe.
    PingReq {
        /// The asking member's probe number.
        seq: u64,
        /// The member to probe.
        target: NodeId,
    },
    /// `target` answered the probe asked for with a [`Body::PingReq`].
    IndirectAck {
        /// The asking member's probe number.
        seq: u64,
        /// The member that answered.
        target: NodeId,
    },
    /// `target` did not answer the relayed probe in time (Lifeguard): the relay is alive
    /// and answering, so the asker's own messages are getting through.
    Nack {
        /// The asking member's probe number.
        seq: u64,
        /// The member that did not answer.
        target: NodeId,
    },
    /// Gossip only: the updates are the news, nothing is answered.
    Gossip,
    /// A push-pull sync: the updates are (a part of) the sender's whole view; with `reply`
    /// the receiver answers with its own.
    Sync {
        /// Whether to answer with a sync of one's own.
        reply: bool,
    },
    /// A push-pull with a member believed alive starts with this: a hash of the sender's
    /// whole view: every member it holds, itself included, with their generations,
    /// incarnations, states, join stamps and groups. A receiver whose own view hashes the same has
    /// nothing to exchange and answers nothing; one whose view differs answers with a
    /// [`Body::Sync`] asking for the sender's view in return, so that two members whose
    /// views agree, as at rest, pay a few bytes per push-pull rather than two views.
    SyncOffer {
        /// The hash of the sender's view.
        hash: u64,
    },
    /// The key-value exchange's first step: what the sender holds of the owners in
    /// `lo..=hi` (an owner in the range that is not named, it holds nothing of). Answered
    /// with a [`Body::KvAck`].
    KvSyn {
        /// The first owner the digest covers.
        lo: NodeId,
        /// The last owner the digest covers.
        hi: NodeId,
        /// One digest per owner held in the range, by owner.
        digests: Vec<Digest>,
    },
    /// The answer to a [`Body::KvSyn`]: what the asker lacks, and what the answering
    /// member holds of the owners the asker holds newer, to be answered with a
    /// [`Body::KvDelta`].
    KvAck {
        /// What the asker lacks.
        deltas: Vec<Delta>,
        /// The answering member's digests of states the asker holds newer.
        wants: Vec<Digest>,
    },
    /// The last step: what the answering member lacks.
    KvDelta {
        /// What the receiver lacks.
        deltas: Vec<Delta>,
    },
}

/// A message between members: the sender's own start and incarnation, what the message is
/// for, and gossip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The sender's generation (its start).
    pub generation: u64,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's join stamp ([`Update::joined`]).
    pub joined: u64,
    /// The sender's group ([`Update::group`]).
    pub group: NodeId,
    /// The size of the sender's group as it counts it ([`Update::group_size`]).
    pub group_size: u32,
    /// The group the sender's group merged from ([`Update::merged_from`]).
    pub merged_from: Option<NodeId>,
    /// The sender's deletion floor: the newest version at which it deleted one of its own
    /// key-values in this generation ([`Digest::floor`]), so that every member it talks to
    /// learns it first-hand, whoever it takes key-values from.
    pub kv_floor: u64,
    /// What the message is for.
    pub body: Body,
    /// Piggybacked gossip, or the view for a [`Body::Sync`].
    pub updates: Vec<Update>,
}

/// Why bytes were not a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than the limit the caller gave.
    TooLong {
        /// The length received.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Empty, or another format version.
    Version(Option<u8>),
    /// Not a valid message, or bytes left over after one.
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLong { len, limit } => {
                write!(
                    f,
                    "membership message of {len} bytes is over the {limit} byte limit"
                )
            }
            DecodeError::Version(None) => f.write_str("empty membership message"),
            DecodeError::Version(Some(v)) => {
                write!(f, "membership message version {v}, expected {WIRE_VERSION}")
            }
            DecodeError::Malformed => f.write_str("malformed membership message"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// The message's bytes: the version byte, then the message in postcard's format.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // Serializing these plain types into a growing vector cannot fail.
        postcard::to_io(self, &mut out).expect("encoding to a vector");
        out
    }

    /// The message in `bytes`, which may be at most `limit` bytes long.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes over the limit, of another version, malformed or with
    /// bytes left over.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Message, DecodeError> {
        if bytes.len() > limit {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                limit,
            });
        }
        match bytes.first() {
            Some(&WIRE_VERSION) => {}
            other => return Err(DecodeError::Version(other.copied())),
        }
        match postcard::take_from_bytes::<Message>(&bytes[1..]) {
            Ok((message, [])) => Ok(message),
            _ => Err(DecodeError::Malformed),
        }
    }
}

/// The encoded size of one update (at most [`UPDATE_BYTES_MAX`]).
pub(crate) fn update_bytes(update: &Update) -> usize {
    let mut buf = [0u8; UPDATE_BYTES_MAX];
    postcard::to_slice(update, &mut buf).map_or(UPDATE_BYTES_MAX, |b| b.len())
}

/// An update's largest encoding: six varint `u64`s (10 bytes each), a state byte, a varint
/// `u32` (5 bytes) and an optional `u64` (a tag byte and 10).
pub(crate) const UPDATE_BYTES_MAX: usize = 77;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let id = NodeId::new(u64::MAX);
        Message {
            generation: 2,
            incarnation: 7,
            joined: 3,
            group: NodeId::new(3),
            group_size: 4,
            merged_from: None,
            kv_floor: 5,
            body: Body::PingReq {
                seq: 99,
                target: NodeId::new(u64::MAX),
            },
            updates: vec![Update {
                id,
                generation: u64::MAX,
                incarnation: u64::MAX,
                state: MemberState::Dead,
                joined: u64::MAX,
                by: NodeId::new(u64::MAX),
                group: NodeId::new(u64::MAX),
                group_size: u32::MAX,
                merged_from: Some(NodeId::new(u64::MAX)),
            }],
        }
    }

    #[test]
    fn round_trip_and_limits() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(Message::decode(&bytes, bytes.len()), Ok(m.clone()));
        assert_eq!(
            Message::decode(&bytes, bytes.len() - 1),
            Err(DecodeError::TooLong {
                len: bytes.len(),
                limit: bytes.len() - 1
            })
        );
        assert_eq!(Message::decode(&[], 10), Err(DecodeError::Version(None)));
        let mut other = bytes.clone();
        other[0] = WIRE_VERSION + 1;
        assert_eq!(
            Message::decode(&other, 1_000),
            Err(DecodeError::Version(Some(WIRE_VERSION + 1)))
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Message::decode(&longer, 1_000), Err(DecodeError::Malformed));
        assert_eq!(update_bytes(&m.updates[0]), UPDATE_BYTES_MAX);
    }

    #[test]
    fn a_zero_node_id_is_malformed() {
        let mut bytes = Message {
            generation: 1,
            incarnation: 0,
            joined: 1,
            group: NodeId::new(1),
            group_size: 1,
            merged_from: None,
            kv_floor: 0,
            body: Body::Nack {
                seq: 1,
                target: NodeId::new(1),
            },
            updates: Vec::new(),
        }
        .encode();
        // The target is the last byte before the empty update list.
        let at = bytes.len() - 2;
        assert_eq!(bytes[at], 1);
        bytes[at] = 0;
        assert_eq!(Message::decode(&bytes, 100), Err(DecodeError::Malformed));
    }
}
