//! The handshake that opens every connection: who is talking, in which cluster.
//!
//! The dialer sends a *hello* frame; the acceptor answers with a *welcome* frame or a
//! *reject* frame and closes. Both sides check what they receive, so a mismatch is refused
//! with a clear [`HandshakeError`] on both ends, never turned into silently misrouted
//! messages. Payloads are postcard-encoded:
//!
//! - hello: `protocol` (varint `u16`, currently 1), `cluster` (varint `u64`), `from` and
//!   `to` (varint `u64`: the dialer and the node it means to reach);
//! - welcome: `cluster`, `node` (the acceptor);
//! - reject: a [`RejectReason`] (varint variant index, then its fields).
//!
//! # Proving the cluster's secret
//!
//! Without a [`PeerAuthenticator`] the handshake only names the cluster and the nodes: it
//! guards against misconfiguration (a node of another cluster, an address reused), not
//! against an attacker, who needs only the cluster id to speak as a member. With one (the
//! same on every member, keyed by the cluster's secret), the handshake goes on until each
//! side has proved it holds the secret, and no message is read from a connection before
//! both have:
//!
//! 1. the dialer sends a hello with `protocol` [`PROTOCOL_AUTHENTICATED`], then an auth
//!    frame [`AuthStep::Challenge`] with a fresh challenge of its own;
//! 2. the acceptor checks the hello as before, draws a fresh challenge, and sends the
//!    welcome, then [`AuthStep::Answer`]: its challenge and its proof over the
//!    [`Transcript`] (cluster, both ids, both challenges) for [`Side::Acceptor`];
//! 3. the dialer checks that proof and sends [`AuthStep::Proof`], its own proof over the
//!    same transcript for [`Side::Dialer`];
//! 4. the acceptor checks it and sends [`AuthStep::Accepted`], or a reject with
//!    [`RejectReason::AuthenticationFailed`] and closes.
//!
//! Both challenges go into both proofs, so a recorded handshake replayed later fails: the
//! side that did not record it draws a new challenge, which the recorded proof does not
//! cover. The side is part of what is proved, so a proof cannot be reflected back to the
//! node that made it. A node with an authenticator refuses a plain hello
//! ([`RejectReason::AuthenticationRequired`]), and one without refuses an authenticated
//! hello ([`RejectReason::AuthenticationNotConfigured`]), so a half-configured cluster says
//! what is wrong instead of timing out. This authenticates each connection when it opens;
//! it does not encrypt or protect the messages that follow from someone on the path
//! between the nodes (that is TLS's job).
//!
//! The logic here does no I/O; [`TcpTransport`](crate::TcpTransport) performs the exchange.
//! (The proof steps are [`acceptor_answer`], [`dialer_proof`] and [`check_dialer_proof`],
//! read from auth frames with [`decode_auth`].)
//! What each side makes of the frame it receives is public ([`decode_hello`] and
//! [`check_hello`] for the acceptor, [`decode_answer`] for the dialer), so that the exact
//! code a connection runs on a peer's bytes can be fuzzed and tested without a socket:
//!
//! ```
//! use synod_transport::frame::{FrameDecoder, FrameKind, encode_frame};
//! use synod_transport::handshake::{self, HANDSHAKE_BYTES_MAX};
//! use synod_transport::{ClusterId, NodeId};
//!
//! // Bytes from a dialer that are not a hello are refused, whatever they hold.
//! let mut wire = Vec::new();
//! encode_frame(FrameKind::KeepAlive, &[], HANDSHAKE_BYTES_MAX, &mut wire)?;
//! let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
//! decoder.extend(&wire);
//! let frame = decoder.next_frame()?.expect("a whole frame");
//! assert!(handshake::decode_hello(&frame).is_err());
//! assert!(handshake::decode_answer(&frame, ClusterId(1), NodeId::new(2)).is_err());
//! # Ok::<(), synod_transport::frame::FrameError>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, FrameKind, encode_frame};
use crate::ids::{ClusterId, NodeId};

/// The handshake protocol version carried in a hello: the open handshake.
pub const PROTOCOL: u16 = 1;
/// The version carried in a hello followed by the challenge and response of a
/// [`PeerAuthenticator`].
pub const PROTOCOL_AUTHENTICATED: u16 = 2;
/// Bytes of a challenge ([`Challenge`]).
pub const CHALLENGE_BYTES: usize = 32;
/// Bytes of a proof ([`Proof`]).
pub const PROOF_BYTES: usize = 32;
/// Handshake payloads are tiny; anything longer is refused.
pub const HANDSHAKE_BYTES_MAX: usize = 256;

/// The dialer's opening frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The handshake protocol version, [`PROTOCOL`].
    pub protocol: u16,
    /// The dialer's cluster.
    pub cluster: ClusterId,
    /// The dialer.
    pub from: NodeId,
    /// The node the dialer means to reach.
    pub to: NodeId,
}

/// The acceptor's answer when it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The acceptor's cluster.
    pub cluster: ClusterId,
    /// The acceptor.
    pub node: NodeId,
}

/// Why an acceptor refused a connection; sent to the dialer in a reject frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// The two nodes belong to different clusters.
    WrongCluster {
        /// The acceptor's cluster.
        expected: ClusterId,
        /// The dialer's cluster.
        got: ClusterId,
    },
    /// The dialer meant to reach another node (an address now used by someone else).
    WrongNode {
        /// The acceptor.
        expected: NodeId,
        /// The node the dialer meant to reach.
        got: NodeId,
    },
    /// The dialer claims the acceptor's own id.
    SameNode,
    /// The acceptor dials this node itself (it has the higher id and knows the address):
    /// accepting would make a second connection between the pair.
    WrongDirection,
    /// The acceptor is at its `connections_max`.
    ConnectionLimit {
        /// The limit in force.
        max: usize,
    },
    /// The dialer speaks a handshake protocol the acceptor does not.
    UnsupportedProtocol {
        /// The version the dialer sent.
        got: u16,
    },
    /// The acceptor requires peers to prove they hold the cluster's secret, and the dialer
    /// sent the open hello.
    AuthenticationRequired,
    /// The dialer asked to prove a secret, and the acceptor has none configured.
    AuthenticationNotConfigured,
    /// The dialer's proof is wrong: it does not hold the cluster's secret (or replayed an
    /// old handshake).
    AuthenticationFailed,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::WrongCluster { expected, got } => write!(
                f,
                "wrong cluster id: the acceptor is in {expected}, the dialer in {got}"
            ),
            RejectReason::WrongNode { expected, got } => write!(
                f,
                "wrong node id: the acceptor is {expected}, the dialer meant {got}"
            ),
            RejectReason::SameNode => write!(f, "the dialer claims the acceptor's own node id"),
            RejectReason::WrongDirection => write!(
                f,
                "wrong direction: the acceptor has the higher id and dials this node itself"
            ),
            RejectReason::ConnectionLimit { max } => {
                write!(f, "connection limit of {max} reached")
            }
            RejectReason::UnsupportedProtocol { got } => write!(
                f,
                "unsupported handshake protocol {got} (the acceptor speaks {PROTOCOL} and {PROTOCOL_AUTHENTICATED})"
            ),
            RejectReason::AuthenticationRequired => write!(
                f,
                "the acceptor requires peers to prove the cluster's secret, and the dialer has none configured"
            ),
            RejectReason::AuthenticationNotConfigured => write!(
                f,
                "the dialer proves a cluster secret, and the acceptor has none configured"
            ),
            RejectReason::AuthenticationFailed => write!(
                f,
                "the dialer's proof is wrong: it does not hold the cluster's secret"
            ),
        }
    }
}

/// A handshake that failed, on either side.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// This side (the acceptor) refused the dialer, and told it why.
    Refused(RejectReason),
    /// The other side (the acceptor) refused this dialer, for the reason given.
    RejectedByPeer(RejectReason),
    /// The acceptor answered but is not who this dialer expected.
    UnexpectedPeer {
        /// The cluster and node this side expected.
        expected: (ClusterId, NodeId),
        /// The cluster and node that answered.
        got: (ClusterId, NodeId),
    },
    /// The bytes received are not a handshake.
    Malformed(FrameError),
    /// The peer did not complete the handshake in time or closed the connection.
    Incomplete,
    /// The acceptor's proof is wrong: it does not hold the cluster's secret (or replayed an
    /// old handshake). This side (the dialer) closed the connection.
    PeerNotAuthenticated,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Refused(reason) => write!(f, "handshake refused: {reason}"),
            HandshakeError::RejectedByPeer(reason) => {
                write!(f, "handshake rejected by the peer: {reason}")
            }
            HandshakeError::UnexpectedPeer { expected, got } => write!(
                f,
                "handshake answered by {} in {}, expected {} in {}",
                got.1, got.0, expected.1, expected.0
            ),
            HandshakeError::Malformed(err) => write!(f, "malformed handshake: {err}"),
            HandshakeError::Incomplete => {
                write!(f, "handshake not completed: the peer closed or timed out")
            }
            HandshakeError::PeerNotAuthenticated => write!(
                f,
                "handshake refused: the acceptor's proof is wrong, it does not hold the cluster's secret"
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Encodes a handshake frame (hello, welcome or reject) into `out`.
pub(crate) fn encode<T: Serialize>(kind: FrameKind, value: &T, out: &mut Vec<u8>) {
    let payload = postcard::to_allocvec(value).expect("handshake values serialize");
    encode_frame(kind, &payload, HANDSHAKE_BYTES_MAX, out).expect("handshake payloads are small");
}

/// Decodes a handshake payload.
fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, HandshakeError> {
    postcard::from_bytes(payload).map_err(|_| malformed())
}

fn malformed() -> HandshakeError {
    HandshakeError::Malformed(FrameError::BadHandshake)
}

/// The acceptor's reading of the first frame a dialer sends (read with a
/// [`FrameDecoder`](crate::frame::FrameDecoder) limited to [`HANDSHAKE_BYTES_MAX`]): the
/// hello it carries. Whether to accept that hello is [`check_hello`]'s decision.
///
/// # Errors
///
/// [`HandshakeError::Malformed`] for a frame of another kind, a payload over
/// [`HANDSHAKE_BYTES_MAX`], or one that does not decode as a [`Hello`].
pub fn decode_hello(frame: &Frame) -> Result<Hello, HandshakeError> {
    if frame.kind != FrameKind::Hello || frame.payload.len() > HANDSHAKE_BYTES_MAX {
        return Err(malformed());
    }
    decode(&frame.payload)
}

/// The dialer's reading of the acceptor's answer to a hello sent to node `peer` of
/// `cluster`: the welcome, if the acceptor is that node.
///
/// # Errors
///
/// [`HandshakeError::RejectedByPeer`] for a reject frame, with its reason;
/// [`HandshakeError::UnexpectedPeer`] for a welcome from another cluster or node;
/// [`HandshakeError::Malformed`] for a frame of another kind, or a payload that does not
/// decode.
pub fn decode_answer(
    frame: &Frame,
    cluster: ClusterId,
    peer: NodeId,
) -> Result<Welcome, HandshakeError> {
    if frame.payload.len() > HANDSHAKE_BYTES_MAX {
        return Err(malformed());
    }
    match frame.kind {
        FrameKind::Welcome => {
            let welcome: Welcome = decode(&frame.payload)?;
            if welcome.cluster != cluster || welcome.node != peer {
                return Err(HandshakeError::UnexpectedPeer {
                    expected: (cluster, peer),
                    got: (welcome.cluster, welcome.node),
                });
            }
            Ok(welcome)
        }
        FrameKind::Reject => Err(HandshakeError::RejectedByPeer(decode(&frame.payload)?)),
        _ => Err(malformed()),
    }
}

/// The acceptor's decision on a hello from a peer: this node is `node` of `cluster`;
/// `dials` says whether it dials `hello.from` itself; `at_limit` gives the connection limit
/// when it is reached.
///
/// # Errors
///
/// The [`RejectReason`] to send back.
pub fn check_hello(
    hello: &Hello,
    cluster: ClusterId,
    node: NodeId,
    dials: bool,
    at_limit: Option<usize>,
) -> Result<(), RejectReason> {
    if hello.protocol != PROTOCOL && hello.protocol != PROTOCOL_AUTHENTICATED {
        return Err(RejectReason::UnsupportedProtocol {
            got: hello.protocol,
        });
    }
    if hello.cluster != cluster {
        return Err(RejectReason::WrongCluster {
            expected: cluster,
            got: hello.cluster,
        });
    }
    if hello.to != node {
        return Err(RejectReason::WrongNode {
            expected: node,
            got: hello.to,
        });
    }
    if hello.from == node {
        return Err(RejectReason::SameNode);
    }
    if dials {
        return Err(RejectReason::WrongDirection);
    }
    if let Some(max) = at_limit {
        return Err(RejectReason::ConnectionLimit { max });
    }
    Ok(())
}

/// Whether a hello asks for the handshake this acceptor runs: `authenticates` says whether
/// it has a [`PeerAuthenticator`]. Called after [`check_hello`] accepted the hello.
///
/// # Errors
///
/// [`RejectReason::AuthenticationRequired`] for an open hello to an acceptor that requires
/// proof, [`RejectReason::AuthenticationNotConfigured`] for the converse.
pub fn check_mode(hello: &Hello, authenticates: bool) -> Result<(), RejectReason> {
    match (hello.protocol == PROTOCOL_AUTHENTICATED, authenticates) {
        (false, true) => Err(RejectReason::AuthenticationRequired),
        (true, false) => Err(RejectReason::AuthenticationNotConfigured),
        _ => Ok(()),
    }
}

/// A challenge: bytes one side draws fresh for each handshake, which the other side's proof
/// must cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge(pub [u8; CHALLENGE_BYTES]);

/// A proof: what a [`PeerAuthenticator`] computes over a [`Transcript`] with the cluster's
/// secret (a keyed MAC, such as HMAC-SHA256).
///
/// Two proofs compare equal in time that does not depend on where they differ (every byte
/// is looked at, with no early exit), so `==` on a proof tells an attacker nothing about how
/// much of a guess was right.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct Proof(pub [u8; PROOF_BYTES]);

impl PartialEq for Proof {
    fn eq(&self, other: &Self) -> bool {
        let differ = self
            .0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Kept opaque so the compiler cannot turn the fold back into a comparison that stops
        // at the first difference.
        std::hint::black_box(differ) == 0
    }
}

impl Eq for Proof {}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof(..)")
    }
}

/// Which side of a handshake a proof is made by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node that dialed.
    Dialer,
    /// The node that accepted.
    Acceptor,
}

/// What both proofs of one handshake cover: the cluster, both nodes and both challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The cluster both nodes are in.
    pub cluster: ClusterId,
    /// The node that dialed.
    pub dialer: NodeId,
    /// The node that accepted.
    pub acceptor: NodeId,
    /// The dialer's challenge.
    pub dialer_challenge: Challenge,
    /// The acceptor's challenge.
    pub acceptor_challenge: Challenge,
}

impl Transcript {
    /// The bytes `side`'s proof is computed over: a fixed label and version, the side, the
    /// cluster id and both node ids (8 bytes each, big-endian), then the dialer's and the
    /// acceptor's challenge. Every field has a fixed length, so two transcripts give the
    /// same bytes only if they are the same.
    #[must_use]
    pub fn bytes(&self, side: Side) -> Vec<u8> {
        let mut out = Vec::with_capacity(TRANSCRIPT_LABEL.len() + 1 + 24 + 2 * CHALLENGE_BYTES);
        out.extend_from_slice(TRANSCRIPT_LABEL);
        out.push(match side {
            Side::Dialer => b'D',
            Side::Acceptor => b'A',
        });
        out.extend_from_slice(&self.cluster.0.to_be_bytes());
        out.extend_from_slice(&self.dialer.get().to_be_bytes());
        out.extend_from_slice(&self.acceptor.get().to_be_bytes());
        out.extend_from_slice(&self.dialer_challenge.0);
        out.extend_from_slice(&self.acceptor_challenge.0);
        out
    }
}

/// The label every transcript starts with (names the protocol and its version).
const TRANSCRIPT_LABEL: &[u8] = b"synod peer handshake v2\0";

/// Proves that a peer holds the cluster's secret, and this node to the peer: the
/// transport's hook for peer authentication, given to it with
/// [`ConfigBuilder::authenticator`](crate::ConfigBuilder::authenticator). Every member of a
/// cluster must be given one keyed with the same secret.
///
/// This crate holds no cryptography: an implementation brings its own MAC (Synod's
/// `synod` program uses HMAC-SHA256 keyed by the file given to `--peer-secret-file`) and
/// its own source of randomness.
pub trait PeerAuthenticator: Send + Sync + 'static {
    /// A fresh challenge, drawn for each handshake from a source an attacker cannot
    /// predict (the operating system's random source): a challenge used twice lets a
    /// recorded handshake be replayed.
    fn challenge(&self) -> Challenge;

    /// The proof over `transcript` ([`Transcript::bytes`]) with the cluster's secret.
    fn prove(&self, transcript: &[u8]) -> Proof;

    /// Whether `proof` is the proof over `transcript` with the cluster's secret; compares in
    /// time that does not depend on where the proof differs.
    fn verify(&self, transcript: &[u8], proof: &Proof) -> bool;

    /// A connection was refused because a peer could not prove it holds the secret, or this
    /// node could not prove it to the peer (it is also listed in
    /// [`TcpTransport::recent_events`](crate::TcpTransport::recent_events)). The default
    /// does nothing; a program logs it here, with the remote address.
    fn refused(&self, remote: Option<std::net::SocketAddr>, peer: NodeId, why: &HandshakeError) {
        let _ = (remote, peer, why);
    }
}

/// The [`PeerAuthenticator`] of a transport configuration: compared by identity, shown
/// without its secret.
#[derive(Clone)]
pub struct Authenticator(pub std::sync::Arc<dyn PeerAuthenticator>);

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator(..)")
    }
}

impl PartialEq for Authenticator {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Authenticator {}

/// One step of the authenticated handshake, carried in an auth frame
/// ([`FrameKind::Auth`]); the module docs give the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthStep {
    /// The dialer's challenge, after its hello.
    Challenge(Challenge),
    /// The acceptor's challenge and its proof, after its welcome.
    Answer {
        /// The acceptor's challenge.
        challenge: Challenge,
        /// The acceptor's proof over the transcript.
        proof: Proof,
    },
    /// The dialer's proof over the transcript.
    Proof(Proof),
    /// The acceptor checked the dialer's proof: messages may flow.
    Accepted,
}

/// Reads an auth frame's step. A reject frame is the acceptor's refusal, with its reason.
///
/// # Errors
///
/// [`HandshakeError::RejectedByPeer`] for a reject frame; [`HandshakeError::Malformed`] for
/// a frame of another kind, or a payload that does not decode as an [`AuthStep`].
pub fn decode_auth(frame: &Frame) -> Result<AuthStep, HandshakeError> {
    if frame.payload.len() > HANDSHAKE_BYTES_MAX {
        return Err(malformed());
    }
    match frame.kind {
        FrameKind::Auth => decode(&frame.payload),
        FrameKind::Reject => Err(HandshakeError::RejectedByPeer(decode(&frame.payload)?)),
        _ => Err(malformed()),
    }
}

/// The acceptor's answer to a dialer's challenge: its own fresh challenge, the transcript,
/// and the step to send (its challenge and its proof).
pub fn acceptor_answer(
    auth: &dyn PeerAuthenticator,
    cluster: ClusterId,
    dialer: NodeId,
    acceptor: NodeId,
    dialer_challenge: Challenge,
) -> (Transcript, AuthStep) {
    let transcript = Transcript {
        cluster,
        dialer,
        acceptor,
        dialer_challenge,
        acceptor_challenge: auth.challenge(),
    };
    let proof = auth.prove(&transcript.bytes(Side::Acceptor));
    (
        transcript,
        AuthStep::Answer {
            challenge: transcript.acceptor_challenge,
            proof,
        },
    )
}

/// The dialer's check of the acceptor's answer: the step to send (its own proof), if the
/// acceptor's proof holds.
///
/// # Errors
///
/// [`HandshakeError::PeerNotAuthenticated`] if the acceptor's proof is wrong;
/// [`HandshakeError::Malformed`] for a step other than an answer.
pub fn dialer_proof(
    auth: &dyn PeerAuthenticator,
    cluster: ClusterId,
    dialer: NodeId,
    acceptor: NodeId,
    dialer_challenge: Challenge,
    answer: AuthStep,
) -> Result<AuthStep, HandshakeError> {
    let AuthStep::Answer { challenge, proof } = answer else {
        return Err(malformed());
    };
    let transcript = Transcript {
        cluster,
        dialer,
        acceptor,
        dialer_challenge,
        acceptor_challenge: challenge,
    };
    if !auth.verify(&transcript.bytes(Side::Acceptor), &proof) {
        return Err(HandshakeError::PeerNotAuthenticated);
    }
    Ok(AuthStep::Proof(auth.prove(&transcript.bytes(Side::Dialer))))
}

/// The acceptor's check of the dialer's proof.
///
/// # Errors
///
/// [`RejectReason::AuthenticationFailed`] (to send back) if the step is not a proof, or the
/// proof is wrong.
pub fn check_dialer_proof(
    auth: &dyn PeerAuthenticator,
    transcript: &Transcript,
    step: AuthStep,
) -> Result<(), RejectReason> {
    match step {
        AuthStep::Proof(proof) if auth.verify(&transcript.bytes(Side::Dialer), &proof) => Ok(()),
        _ => Err(RejectReason::AuthenticationFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol: PROTOCOL,
            cluster: ClusterId(7),
            from: NodeId::new(2),
            to: NodeId::new(1),
        }
    }

    #[test]
    fn acceptor_checks_each_field() {
        let (c, n) = (ClusterId(7), NodeId::new(1));
        assert_eq!(check_hello(&hello(), c, n, false, None), Ok(()));
        assert_eq!(
            check_hello(&hello(), ClusterId(8), n, false, None),
            Err(RejectReason::WrongCluster {
                expected: ClusterId(8),
                got: ClusterId(7)
            })
        );
        assert!(matches!(
            check_hello(&hello(), c, NodeId::new(3), false, None),
            Err(RejectReason::WrongNode { .. })
        ));
        assert_eq!(
            check_hello(&hello(), c, NodeId::new(2), false, None),
            Err(RejectReason::WrongNode {
                expected: NodeId::new(2),
                got: NodeId::new(1)
            })
        );
        let mut same = hello();
        same.from = NodeId::new(1);
        assert_eq!(
            check_hello(&same, c, n, false, None),
            Err(RejectReason::SameNode)
        );
        assert_eq!(
            check_hello(&hello(), c, n, true, None),
            Err(RejectReason::WrongDirection)
        );
        assert_eq!(
            check_hello(&hello(), c, n, false, Some(4)),
            Err(RejectReason::ConnectionLimit { max: 4 })
        );
        let mut old = hello();
        old.protocol = 9;
        assert!(matches!(
            check_hello(&old, c, n, false, None),
            Err(RejectReason::UnsupportedProtocol { got: 9 })
        ));
    }

    /// A toy keyed hash: the exchange's logic is what is tested.
    struct Keyed(u8, std::sync::atomic::AtomicU8);

    impl PeerAuthenticator for Keyed {
        fn challenge(&self) -> Challenge {
            let n = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Challenge([n; CHALLENGE_BYTES])
        }
        fn prove(&self, transcript: &[u8]) -> Proof {
            let mut out = [self.0; PROOF_BYTES];
            for (i, b) in transcript.iter().enumerate() {
                out[i % PROOF_BYTES] = out[i % PROOF_BYTES].rotate_left(3) ^ b;
            }
            Proof(out)
        }
        fn verify(&self, transcript: &[u8], proof: &Proof) -> bool {
            self.prove(transcript) == *proof
        }
    }

    #[test]
    fn each_side_proves_the_secret_and_a_proof_is_good_for_one_side_of_one_handshake() {
        let (c, d, a) = (ClusterId(7), NodeId::new(2), NodeId::new(1));
        let acceptor = Keyed(9, 0.into());
        let dialer = Keyed(9, 100.into());
        let challenge = dialer.challenge();
        let (transcript, answer) = acceptor_answer(&acceptor, c, d, a, challenge);
        let proof = dialer_proof(&dialer, c, d, a, challenge, answer).expect("same secret");
        assert_eq!(check_dialer_proof(&acceptor, &transcript, proof), Ok(()));
        // The acceptor's own proof reflected back is not a dialer's proof.
        let AuthStep::Answer { proof: mine, .. } = answer else {
            panic!("an answer")
        };
        assert_eq!(
            check_dialer_proof(&acceptor, &transcript, AuthStep::Proof(mine)),
            Err(RejectReason::AuthenticationFailed)
        );
        // The same proof against the next handshake's fresh challenge fails.
        let (next, _) = acceptor_answer(&acceptor, c, d, a, challenge);
        assert_ne!(next, transcript);
        assert_eq!(
            check_dialer_proof(&acceptor, &next, proof),
            Err(RejectReason::AuthenticationFailed)
        );
        // Another secret fails both ways.
        let stranger = Keyed(10, 200.into());
        assert_eq!(
            dialer_proof(&stranger, c, d, a, challenge, answer),
            Err(HandshakeError::PeerNotAuthenticated)
        );
        let forged = dialer_proof(&stranger, c, d, a, challenge, {
            let (_, a2) = acceptor_answer(&stranger, c, d, a, challenge);
            a2
        })
        .expect("the stranger trusts itself");
        let (t3, _) = acceptor_answer(&acceptor, c, d, a, challenge);
        assert!(check_dialer_proof(&acceptor, &t3, forged).is_err());
        // Modes must match.
        let mut h = hello();
        assert_eq!(
            check_mode(&h, true),
            Err(RejectReason::AuthenticationRequired)
        );
        h.protocol = PROTOCOL_AUTHENTICATED;
        assert_eq!(check_mode(&h, true), Ok(()));
        assert_eq!(
            check_mode(&h, false),
            Err(RejectReason::AuthenticationNotConfigured)
        );
    }

    #[test]
    fn proofs_are_equal_only_when_every_byte_is() {
        let proof = Proof([7; PROOF_BYTES]);
        assert_eq!(proof, Proof([7; PROOF_BYTES]));
        for at in [0, PROOF_BYTES / 2, PROOF_BYTES - 1] {
            let mut other = proof;
            other.0[at] ^= 1;
            assert_ne!(proof, other, "a difference at byte {at}");
        }
    }

    #[test]
    fn reasons_read_clearly() {
        let text = RejectReason::WrongCluster {
            expected: ClusterId(1),
            got: ClusterId(2),
        }
        .to_string();
        assert_eq!(
            text,
            "wrong cluster id: the acceptor is in cluster 1, the dialer in cluster 2"
        );
    }
}
