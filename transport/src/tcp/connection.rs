//! A connection's threads: the acceptor and the handshake of an accepted socket, the dialer
//! with its back-off, and each connection's writer and reader loops.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::Backoff;
use crate::error::Disconnect;
use bytes::Bytes;

use crate::frame::{
    FRAME_BYTES_MAX_LIMIT, Frame, FrameDecoder, FrameError, FrameKind, MessageKind, walk_envelopes,
};
use crate::handshake::{
    self, AuthStep, HANDSHAKE_BYTES_MAX, HandshakeError, Hello, PROTOCOL, PROTOCOL_AUTHENTICATED,
    RejectReason, Welcome,
};
use crate::ids::{CorrelationId, NodeId};
use crate::received::{Entry, Received, payload_of, slice};
use crate::stream::{Stream, write_all};
use crate::transport::Incoming;

use super::channel::{Channel, Origin};
use super::outbox::Queued;
use super::shared::{Handling, Shared, bump};
use super::{ConnectionEvent, INLINE_WRITE_WAIT, READ_CHUNK_BYTES, Replies};

impl Channel {
    /// The writer loop of connection `connection`: batches queued messages into frames and
    /// sends keep-alives on a quiet connection. Returns when the connection is gone.
    pub(super) fn write_loop(&self, sh: &Shared, connection: u64, stream: &dyn Stream) {
        let c = &sh.config;
        let batch_delay = Duration::from_micros(c.batch_delay_us_max);
        loop {
            let mut st = self.state.lock();
            // Wait for work: queued messages, or a keep-alive falling due.
            let keepalive = loop {
                if st.conn.as_ref().map(|c| c.id) != Some(connection) {
                    return;
                }
                let due = st.last_write + c.keepalive_interval();
                if !st.writing {
                    if st.unfinished.is_some() {
                        break false;
                    }
                    if !st.outbox.is_empty() {
                        // Request Batch: wait a little for company unless the batch is full.
                        let started = st.batch_started.unwrap_or_else(Instant::now);
                        if st.outbox.envelope_bytes >= c.batch_bytes_max
                            || batch_delay.is_zero()
                            || Instant::now() >= started + batch_delay
                        {
                            break false;
                        }
                        self.work.wait_until(&mut st, started + batch_delay);
                        continue;
                    }
                    if Instant::now() >= due {
                        break true;
                    }
                }
                self.work.wait_until(&mut st, due);
            };
            // A write a sender began comes first, and alone: the outbox after it.
            if let Some(rest) = st.unfinished.take() {
                st.writing = true;
                drop(st);
                let result = write_fully(stream, &rest.buf, rest.written, c.keepalive_timeout());
                self.after_write(sh, rest.connection, rest.messages, rest.buf, result);
                continue;
            }
            // Everything queued goes in one write: the whole outbox, or a keep-alive.
            let (mut buf, taken) = if keepalive {
                let mut buf = std::mem::take(&mut st.spare);
                buf.clear();
                (buf, None)
            } else {
                Self::take_outbox(&mut st)
            };
            st.writing = true;
            drop(st);
            // Room was freed in the queue.
            self.space.notify_all();
            let messages = Self::finish_taken(sh, &mut buf, taken);
            let result = write_fully(stream, &buf, 0, c.keepalive_timeout());
            self.after_write(sh, connection, messages, buf, result);
        }
    }

    /// The reader loop of connection `connection`: decodes frames, completes requests with
    /// their responses and delivers everything else. Returns why the connection ended.
    pub(super) fn read_loop(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        connection: u64,
        stream: &dyn Stream,
        mut decoder: FrameDecoder,
        accepted: bool,
    ) -> Disconnect {
        let c = &sh.config;
        // Wake at least every keep-alive interval to check the silence and idle bounds.
        if let Err(err) = stream
            .socket()
            .set_read_timeout(Some(c.keepalive_interval()))
        {
            return Disconnect::io(&err);
        }
        let mut last_received = Instant::now();
        // Reused for every read: the messages of its frames.
        let mut batch = ReadBatch::default();
        loop {
            // Every whole frame buffered (after a read, or right after the handshake) is
            // handled as one batch, so that responses to all of it leave together.
            let failure = loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Err(reason) = self.on_frame(sh, frame, &mut batch) {
                            break Some(reason);
                        }
                    }
                    Ok(None) => break None,
                    Err(err) => break Some(Disconnect::Protocol(err)),
                }
            };
            // Frames before a bad one were whole and valid: they are handled.
            if !batch.is_empty() {
                self.on_envelopes(sh, connection, &mut batch);
            }
            if let Some(reason) = failure {
                return reason;
            }
            if let (true, Some(idle_ms)) = (accepted, c.idle_timeout_ms) {
                let last = self.last_activity_ms.load(Ordering::Relaxed);
                if sh.millis().saturating_sub(last) >= idle_ms {
                    return Disconnect::IdleTimeout { idle_ms };
                }
            }
            // Straight into the decoder's buffer: at least half of READ_CHUNK_BYTES at a
            // time (growing it to READ_CHUNK_BYTES of room when it has less), and as much
            // more as its room holds.
            let read = |room: &mut [u8]| stream.read(room);
            match decoder.read_from(READ_CHUNK_BYTES / 2, READ_CHUNK_BYTES, read) {
                Ok(0) if decoder.is_mid_frame() => {
                    return Disconnect::TruncatedFrame {
                        bytes: decoder.buffered_bytes(),
                    };
                }
                Ok(0) => return Disconnect::PeerClosed,
                Ok(_) => last_received = Instant::now(),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if last_received.elapsed() >= c.keepalive_timeout() {
                        return Disconnect::KeepAliveTimeout {
                            silent_ms: c.keepalive_timeout_ms,
                        };
                    }
                }
                Err(err)
                    if decoder.is_mid_frame() && err.kind() == io::ErrorKind::ConnectionReset =>
                {
                    return Disconnect::TruncatedFrame {
                        bytes: decoder.buffered_bytes(),
                    };
                }
                Err(err) => return Disconnect::io(&err),
            }
        }
    }

    /// Checks one frame and adds its messages to `batch`.
    pub(super) fn on_frame(
        &self,
        sh: &Shared,
        frame: Frame,
        batch: &mut ReadBatch,
    ) -> Result<(), Disconnect> {
        match frame.kind {
            FrameKind::KeepAlive => Ok(()),
            FrameKind::Messages => {
                let (mark, responses) = (batch.staged.mark(), batch.responses.len());
                let node = sh.config.node;
                let payload = &frame.payload;
                let walked = walk_envelopes(payload, |e| {
                    if e.from != self.peer || e.to != node {
                        return Err(FrameError::BadEnvelope);
                    }
                    match e.kind {
                        MessageKind::Response => batch
                            .responses
                            .push((e.correlation, payload_of(payload, e.start..e.end))),
                        kind => {
                            let correlation =
                                (kind == MessageKind::Request).then_some(e.correlation);
                            // Frames are at most FRAME_BYTES_MAX_LIMIT (64 MiB) long.
                            let entry = Entry::new(correlation, e.start, e.end).ok_or(
                                FrameError::TooLarge {
                                    len: payload.len() as u64,
                                    max: FRAME_BYTES_MAX_LIMIT,
                                },
                            )?;
                            batch.staged.push_entry(entry);
                        }
                    }
                    Ok(())
                });
                let n = match walked {
                    Ok(n) => n,
                    Err(err) => {
                        // A bad frame's messages are not handled; those before it are.
                        batch.staged.discard_from(mark);
                        batch.responses.truncate(responses);
                        return Err(Disconnect::Protocol(err));
                    }
                };
                bump(&sh.counters.messages_received, n as u64);
                self.last_activity_ms.store(sh.millis(), Ordering::Relaxed);
                batch.staged.end_run(self.peer, &frame.payload, mark);
                Ok(())
            }
            // Handshake frames after the handshake: the peer is confused.
            _ => Err(Disconnect::Protocol(FrameError::BadHandshake)),
        }
    }

    /// Handles the messages of the frames of one read: responses complete their requests;
    /// requests and messages go to the handler (whose responses leave together, as one
    /// batch) or to the inbound queue (all under one lock, each frame's as one run, waking
    /// receivers once). Empties `batch`.
    pub(super) fn on_envelopes(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        connection: u64,
        batch: &mut ReadBatch,
    ) {
        if !batch.responses.is_empty() {
            // Responses first take their requests out of the pending map, all under one
            // lock; the waiters are woken after it is released.
            let mut completed = Vec::with_capacity(batch.responses.len());
            let mut st = self.state.lock();
            for (correlation, payload) in batch.responses.drain(..) {
                match st.pending.remove(&correlation) {
                    Some(completer) => completed.push((completer, payload)),
                    None => bump(&sh.counters.late_responses, 1),
                }
            }
            drop(st);
            if !completed.is_empty() {
                for (completer, payload) in completed {
                    completer.complete(Ok(payload));
                }
                self.space.notify_all();
            }
        }
        if !batch.staged.is_empty() {
            match &sh.handler {
                None => self.queue_inbound(sh, connection, &mut batch.staged),
                Some(Handling::Each(handler)) => self.handle(sh, handler, &batch.staged),
                Some(Handling::Batch(handler)) => {
                    let mut replies = Replies::default();
                    handler(&batch.staged, &mut replies);
                    self.reply(sh, replies.take());
                }
            }
            batch.staged.clear();
        }
    }

    /// Queues the requests and one-way messages of `staged` for `recv`, all under one lock,
    /// and wakes receivers once. Into an empty queue with room for all of them, `staged`
    /// and the queue trade places; otherwise they are copied, each frame's as a run.
    fn queue_inbound(&self, sh: &Shared, connection: u64, staged: &mut Received) {
        let mut inbound = sh.inbound.lock();
        if inbound.is_empty() && staged.len() <= sh.config.inbound_messages_max {
            std::mem::swap(&mut *inbound, staged);
        } else {
            for (from, frame, entries) in staged.runs() {
                if !sh.deliver(&mut inbound, self, connection, from, frame, entries) {
                    break;
                }
            }
        }
        drop(inbound);
        sh.inbound_changed.notify_all();
    }

    /// Hands the requests and one-way messages of `staged` to `handler`, one by one, and
    /// sends the responses it gives together.
    fn handle(&self, sh: &Shared, handler: &super::Handler, staged: &Received) {
        let mut replies = Vec::new();
        // The handler learns which message is the read's last (`Incoming::more_follow`).
        let mut left = staged.len();
        for (from, frame, entries) in staged.runs() {
            for &entry in entries {
                left = left.saturating_sub(1);
                let incoming = Incoming::new(from, slice(frame, entry), entry.correlation())
                    .with_more(left > 0);
                let reply = handler(&incoming);
                if let (Some(correlation), Some(reply)) = (incoming.correlation(), reply) {
                    replies.push((correlation, reply));
                }
            }
        }
        self.reply(sh, replies);
    }

    /// Sends responses to this channel's peer, together.
    fn reply(&self, sh: &Shared, replies: Vec<(CorrelationId, Bytes)>) {
        let mut queued = Vec::with_capacity(replies.len());
        for (correlation, reply) in replies {
            match self.encode(sh, MessageKind::Response, correlation, reply) {
                Ok(reply) => queued.push(reply),
                // A reply too large to send: the requester times out.
                Err(_) => bump(&sh.counters.messages_dropped, 1),
            }
        }
        if !queued.is_empty() {
            self.send_many(sh, queued);
        }
    }

    /// Queues several messages and gets them written together.
    pub(super) fn send_many(&self, sh: &Shared, messages: Vec<Queued>) {
        let mut st = self.state.lock();
        let mut wake = false;
        for queued in messages {
            match self.admit(sh, st, queued.envelope_bytes(), false) {
                Ok(admitted) => st = admitted,
                // The connection is gone or closing: the requester learns it from there.
                Err(_) => return,
            }
            wake |= self.enqueue(sh, &mut st, queued);
        }
        self.flush(sh, st, Origin::Formed, wake);
    }
}

/// The messages of the frames of one read, checked and not yet handled: the requests and
/// one-way messages as the inbound queue keeps them (each frame's payload once, a record
/// per message), the responses apart, each with its payload.
#[derive(Debug, Default)]
pub(super) struct ReadBatch {
    staged: Received,
    responses: Vec<(CorrelationId, Bytes)>,
}

impl ReadBatch {
    fn is_empty(&self) -> bool {
        self.staged.is_empty() && self.responses.is_empty()
    }
}

pub(super) fn accept_loop(sh: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if sh.is_closing() {
            return;
        }
        let Ok(stream) = stream else {
            // Accept errors (out of descriptors, a connection reset before accept) concern
            // one connection; keep serving the others.
            continue;
        };
        let remote = stream.peer_addr().ok();
        let accepted = sh.sockets_accepted.fetch_add(1, Ordering::AcqRel);
        let over = accepted >= sh.config.connections_max;
        if accepted >= sh.config.connections_max + REFUSALS_IN_FLIGHT_MAX {
            // Enough threads are already telling dialers that this node is full: a flood of
            // connections gets no thread each, only a close.
            let _ = stream.shutdown(Shutdown::Both);
            let full = RejectReason::ConnectionLimit {
                max: sh.config.connections_max,
            };
            refuse(
                sh,
                remote,
                None,
                Disconnect::Handshake(HandshakeError::Refused(full)),
            );
            continue;
        }
        let sh2 = Arc::clone(sh);
        let spawned = sh.spawn(format!("synod-conn-{}", sh.config.node.get()), move || {
            serve_accepted(&sh2, stream, remote, over);
        });
        if !spawned {
            sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pub(super) fn refuse(
    sh: &Shared,
    remote: Option<SocketAddr>,
    peer: Option<NodeId>,
    reason: Disconnect,
) {
    bump(&sh.counters.connections_refused, 1);
    sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
    sh.event(ConnectionEvent {
        peer,
        remote,
        accepted: true,
        reason,
    });
}

/// Refuses an accepted connection from `peer` for `reason`: tells the dialer why, closes,
/// and records it (an authentication failure is also reported to the authenticator).
fn reject(
    sh: &Shared,
    stream: &dyn Stream,
    remote: Option<SocketAddr>,
    peer: NodeId,
    reason: RejectReason,
) {
    let mut out = Vec::new();
    handshake::encode(FrameKind::Reject, &reason, &mut out);
    let _ = write_all(stream, &out);
    let _ = stream.socket().shutdown(Shutdown::Write);
    let error = HandshakeError::Refused(reason);
    if let Some(auth) = sh.config.peer_authenticator()
        && is_authentication(&error)
    {
        auth.refused(remote, peer, &error);
    }
    refuse(sh, remote, Some(peer), Disconnect::Handshake(error));
}

/// Whether a handshake failed because a side could not prove it holds the cluster's secret.
fn is_authentication(error: &HandshakeError) -> bool {
    match error {
        HandshakeError::PeerNotAuthenticated => true,
        HandshakeError::Refused(reason) | HandshakeError::RejectedByPeer(reason) => matches!(
            reason,
            RejectReason::AuthenticationRequired
                | RejectReason::AuthenticationNotConfigured
                | RejectReason::AuthenticationFailed
        ),
        _ => false,
    }
}

/// Connections over `connections_max` that may wait at once to be told so in a
/// [`RejectReason::ConnectionLimit`]; past that, accepted sockets are closed at once, with no
/// thread each.
pub(super) const REFUSALS_IN_FLIGHT_MAX: usize = 16;

/// Reads one handshake frame by `deadline`, leaving any bytes after it in the decoder. The
/// deadline bounds the whole handshake, not each read: a peer that sends a byte now and then
/// cannot hold a connection (and its slot under `connections_max`) past it.
pub(super) fn read_handshake_frame(
    stream: &dyn Stream,
    decoder: &mut FrameDecoder,
    deadline: Instant,
) -> Result<Frame, HandshakeError> {
    let mut chunk = [0; 512];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(err) => return Err(HandshakeError::Malformed(err)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.socket().set_read_timeout(Some(left)).is_err() {
            return Err(HandshakeError::Incomplete);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HandshakeError::Incomplete),
            Ok(n) => decoder.extend(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HandshakeError::Incomplete),
        }
    }
}

/// Handshake frames are small: before a peer is known, it cannot make this side buffer more.
/// After the handshake the limit is raised to `frame_bytes_max`.
pub(super) fn handshake_decoder() -> FrameDecoder {
    FrameDecoder::new(HANDSHAKE_BYTES_MAX)
}

pub(super) fn serve_accepted(
    sh: &Arc<Shared>,
    stream: TcpStream,
    remote: Option<SocketAddr>,
    over_limit: bool,
) {
    // The whole handshake, the layer's included, ends by this deadline.
    let deadline = Instant::now() + sh.config.connect_timeout();
    let timeout = Some(sh.config.connect_timeout());
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        refuse(sh, remote, None, Disconnect::PeerClosed);
        return;
    }
    let _ = stream.set_nodelay(true);
    let stream: Arc<dyn Stream> = match &sh.layer {
        None => Arc::new(stream),
        Some(layer) => match layer.accepted(stream, remote, deadline) {
            Ok(stream) => Arc::from(stream),
            Err(err) => {
                // The layer had the socket: dropping it closed the connection.
                refuse(sh, remote, None, Disconnect::layer(&err));
                return;
            }
        },
    };
    let mut decoder = handshake_decoder();
    let hello = read_handshake_frame(&*stream, &mut decoder, deadline)
        .and_then(|frame| handshake::decode_hello(&frame));
    let hello = match hello {
        Ok(hello) => hello,
        Err(err) => {
            let reason = match err {
                HandshakeError::Malformed(frame) => Disconnect::Protocol(frame),
                other => Disconnect::Handshake(other),
            };
            let _ = stream.socket().shutdown(Shutdown::Both);
            refuse(sh, remote, None, reason);
            return;
        }
    };
    // A layer that knows who the peer is (by its certificate) must agree with its hello.
    if let Err(err) = stream.check_peer(hello.from) {
        let _ = stream.socket().shutdown(Shutdown::Both);
        refuse(sh, remote, Some(hello.from), Disconnect::layer(&err));
        return;
    }
    let dials = sh.channel(hello.from).is_some_and(|c| c.dial.is_some());
    let at_limit = over_limit.then_some(sh.config.connections_max);
    let auth = sh.config.peer_authenticator();
    let checked =
        handshake::check_hello(&hello, sh.config.cluster, sh.config.node, dials, at_limit)
            .and_then(|()| handshake::check_mode(&hello, auth.is_some()));
    if let Err(reason) = checked {
        reject(sh, &*stream, remote, hello.from, reason);
        return;
    }
    // With an authenticator, the dialer's challenge follows its hello: answer it with this
    // side's challenge and proof.
    let mut transcript = None;
    let mut answer = None;
    if let Some(auth) = auth {
        let step = read_handshake_frame(&*stream, &mut decoder, deadline)
            .and_then(|frame| handshake::decode_auth(&frame));
        let Ok(AuthStep::Challenge(challenge)) = step else {
            reject(
                sh,
                &*stream,
                remote,
                hello.from,
                RejectReason::AuthenticationFailed,
            );
            return;
        };
        let (t, a) = handshake::acceptor_answer(
            auth,
            sh.config.cluster,
            hello.from,
            sh.config.node,
            challenge,
        );
        transcript = Some(t);
        answer = Some(a);
    }
    let mut out = Vec::new();
    let welcome = Welcome {
        cluster: sh.config.cluster,
        node: sh.config.node,
    };
    handshake::encode(FrameKind::Welcome, &welcome, &mut out);
    if let Some(answer) = answer {
        handshake::encode(FrameKind::Auth, &answer, &mut out);
    }
    if let Err(err) = write_all(&*stream, &out) {
        refuse(sh, remote, Some(hello.from), Disconnect::io(&err));
        return;
    }
    if let (Some(auth), Some(transcript)) = (auth, transcript) {
        // Nothing the dialer sends is read as a message before its proof holds.
        let proved = read_handshake_frame(&*stream, &mut decoder, deadline)
            .and_then(|frame| handshake::decode_auth(&frame))
            .map_err(|_| RejectReason::AuthenticationFailed)
            .and_then(|step| handshake::check_dialer_proof(auth, &transcript, step));
        if let Err(reason) = proved {
            reject(sh, &*stream, remote, hello.from, reason);
            return;
        }
        let mut out = Vec::new();
        handshake::encode(FrameKind::Auth, &AuthStep::Accepted, &mut out);
        if let Err(err) = write_all(&*stream, &out) {
            refuse(sh, remote, Some(hello.from), Disconnect::io(&err));
            return;
        }
    }
    let channel = sh.channel_for_accepted(hello.from);
    run_connection(sh, &channel, stream, decoder, true);
}

/// Serves an established connection: spawns its reader and runs its writer on this thread
/// until the connection is lost.
pub(super) fn run_connection(
    sh: &Arc<Shared>,
    channel: &Arc<Channel>,
    stream: Arc<dyn Stream>,
    mut decoder: FrameDecoder,
    accepted: bool,
) {
    decoder.set_frame_bytes_max(sh.config.frame_bytes_max);
    // One write call waits at most INLINE_WRITE_WAIT for room; the writer thread keeps
    // trying, and writes that make no progress for the keep-alive bound mean the peer
    // stopped reading.
    let socket = stream.socket();
    let _ = socket.set_write_timeout(Some(INLINE_WRITE_WAIT.min(sh.config.keepalive_timeout())));
    let _ = socket.set_nodelay(true);
    let Some(id) = channel.install(sh, &stream, accepted) else {
        if accepted {
            sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
        }
        return;
    };
    let (sh2, channel2, stream2) = (Arc::clone(sh), Arc::clone(channel), Arc::clone(&stream));
    let spawned = sh.spawn(
        format!("synod-read-{}-{}", sh.config.node.get(), channel.peer.get()),
        move || {
            let reason = channel2.read_loop(&sh2, id, &*stream2, decoder, accepted);
            channel2.lost(&sh2, id, reason);
        },
    );
    if !spawned {
        let err = io::Error::other("no thread for the connection's reader");
        channel.lost(sh, id, Disconnect::io(&err));
        return;
    }
    channel.write_loop(sh, id, &*stream);
}

/// Writes as much of `buf` as the socket takes before one write waits
/// [`INLINE_WRITE_WAIT`] for room, or (with `until`) before that time; returns how many
/// bytes that was. Without `until`, a peer that reads slowly but steadily keeps the caller
/// here until the whole buffer is written.
pub(super) fn write_some(
    stream: &dyn Stream,
    buf: &[u8],
    until: Option<Instant>,
) -> io::Result<usize> {
    let mut written = 0;
    while written < buf.len() {
        match stream.write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                if until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Writes `buf` from byte `from` on, failing with `TimedOut` once no byte has been taken
/// for `stall`.
pub(super) fn write_fully(
    stream: &dyn Stream,
    buf: &[u8],
    from: usize,
    stall: Duration,
) -> io::Result<()> {
    let mut written = from;
    let mut progress = Instant::now();
    loop {
        let n = write_some(stream, &buf[written..], None)?;
        written += n;
        if written == buf.len() {
            return Ok(());
        }
        let now = Instant::now();
        if n > 0 {
            progress = now;
        } else if now >= progress + stall {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
}

/// Dials `addr` and performs the dialer's side of the handshake.
pub(super) fn dial(
    sh: &Shared,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(Arc<dyn Stream>, FrameDecoder), Disconnect> {
    let c = &sh.config;
    let stream =
        TcpStream::connect_timeout(&addr, c.connect_timeout()).map_err(|e| Disconnect::io(&e))?;
    // The handshake after the connect ends by this deadline, however slowly the peer answers.
    let deadline = Instant::now() + c.connect_timeout();
    stream
        .set_read_timeout(Some(c.connect_timeout()))
        .map_err(|e| Disconnect::io(&e))?;
    stream
        .set_write_timeout(Some(c.connect_timeout()))
        .map_err(|e| Disconnect::io(&e))?;
    let stream: Arc<dyn Stream> = match &sh.layer {
        None => Arc::new(stream),
        Some(layer) => Arc::from(
            layer
                .dialed(stream, peer, addr, deadline)
                .map_err(|e| Disconnect::layer(&e))?,
        ),
    };
    let auth = c.peer_authenticator();
    let hello = Hello {
        protocol: if auth.is_some() {
            PROTOCOL_AUTHENTICATED
        } else {
            PROTOCOL
        },
        cluster: c.cluster,
        from: c.node,
        to: peer,
    };
    let mut out = Vec::new();
    handshake::encode(FrameKind::Hello, &hello, &mut out);
    let challenge = auth.map(|auth| {
        let challenge = auth.challenge();
        handshake::encode(FrameKind::Auth, &AuthStep::Challenge(challenge), &mut out);
        challenge
    });
    write_all(&*stream, &out).map_err(|e| Disconnect::io(&e))?;
    let mut decoder = handshake_decoder();
    let answered = read_handshake_frame(&*stream, &mut decoder, deadline)
        .and_then(|frame| handshake::decode_answer(&frame, c.cluster, peer).map(|_| ()));
    let authenticated = match (auth, challenge) {
        (Some(auth), Some(challenge)) => answered.and_then(|()| {
            let step = read_handshake_frame(&*stream, &mut decoder, deadline)
                .and_then(|frame| handshake::decode_auth(&frame))?;
            let proof = handshake::dialer_proof(auth, c.cluster, c.node, peer, challenge, step)?;
            let mut out = Vec::new();
            handshake::encode(FrameKind::Auth, &proof, &mut out);
            write_all(&*stream, &out).map_err(|_| HandshakeError::Incomplete)?;
            match read_handshake_frame(&*stream, &mut decoder, deadline)
                .and_then(|frame| handshake::decode_auth(&frame))?
            {
                AuthStep::Accepted => Ok(()),
                _ => Err(HandshakeError::Malformed(FrameError::BadHandshake)),
            }
        }),
        _ => answered,
    };
    if let Err(error) = authenticated {
        if let Some(auth) = auth
            && is_authentication(&error)
        {
            auth.refused(Some(addr), peer, &error);
        }
        let _ = stream.socket().shutdown(Shutdown::Both);
        return Err(Disconnect::Handshake(error));
    }
    Ok((stream, decoder))
}

/// Keeps a dialed channel connected: dial, serve until lost, back off, dial again.
pub(super) fn dial_loop(sh: &Arc<Shared>, channel: &Arc<Channel>, addr: SocketAddr) {
    let c = &sh.config;
    let mut backoff = Backoff::new(
        c.backoff_initial_ms,
        c.backoff_max_ms,
        c.seed ^ channel.peer.get().rotate_left(17),
    );
    while !sh.is_closing() {
        match dial(sh, channel.peer, addr) {
            Ok((stream, decoder)) => {
                backoff.reset();
                run_connection(sh, channel, stream, decoder, false);
            }
            Err(reason) => {
                if matches!(reason, Disconnect::Handshake(_) | Disconnect::Layer { .. }) {
                    bump(&sh.counters.connections_refused, 1);
                }
                let mut st = channel.state.lock();
                // Messages queued while connecting cannot go anywhere: fail them now
                // rather than let them wait an unknown time.
                channel.fail_all(sh, &mut st, &reason);
                drop(st);
                channel.space.notify_all();
                sh.event(ConnectionEvent {
                    peer: Some(channel.peer),
                    remote: Some(addr),
                    accepted: false,
                    reason,
                });
            }
        }
        let until = Instant::now() + backoff.next_delay();
        let mut st = channel.state.lock();
        while !st.closed && !sh.is_closing() {
            if channel.space.wait_until(&mut st, until).timed_out() {
                break;
            }
        }
    }
}
