//! The Single-Socket Channel to one peer: its queue, its requests in flight and its current
//! connection; how a sender admits, queues and (when the connection is idle) writes a
//! message itself; and what happens when a connection is installed or lost.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::completion::{Completer, completion};
use crate::config::Overflow;
use crate::error::{BatchSendError, Disconnect, RequestError, SendError};
use crate::frame::{
    ENVELOPE_OVERHEAD_BYTES_MAX, Envelope, FrameKind, HEADER_BYTES, MessageKind, VARINT_BYTES_MAX,
    begin_frame, finish_frame, put_envelope_head, put_payload,
};
use crate::ids::{CorrelationId, NodeId};
use crate::stream::Stream;

use super::connection::write_some;
use super::outbox::{Outbox, Queued, SPARE_BATCHES_MAX, Taken, Unfinished};
use super::response::ResponseHandle;
use super::shared::{IdMap, Shared, bump};
use super::{ConnectionEvent, INLINE_WRITE_WAIT};

/// A connection being served.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) id: u64,
    pub(super) stream: Arc<dyn Stream>,
    pub(super) remote: Option<SocketAddr>,
    pub(super) accepted: bool,
}

/// The rest of a write a sender began on its own thread.

#[derive(Debug)]
pub(super) struct ChannelState {
    pub(super) conn: Option<Live>,
    pub(super) last_error: Option<Disconnect>,
    pub(super) outbox: Outbox,
    /// The buffer the next taker swaps with the outbox's (empty; absent while a write is
    /// under way).
    pub(super) spare: Vec<u8>,
    /// Envelope bytes of the write under way: they count against `outbound_bytes_max`
    /// until written, so that queue and write together stay within it.
    pub(super) writing_bytes: usize,
    /// When the oldest queued message was queued (for `batch_delay_us_max`).
    pub(super) batch_started: Option<Instant>,
    /// Someone (the writer thread or a sender writing inline) is writing to the socket.
    pub(super) writing: bool,
    /// A write a sender began on its own thread and could not finish within
    /// [`INLINE_WRITE_WAIT`]: the writer thread writes the rest before anything else.
    pub(super) unfinished: Option<Unfinished>,
    pub(super) last_write: Instant,
    pub(super) pending: IdMap<CorrelationId, Completer<Result<Bytes, RequestError>>>,
    pub(super) closed: bool,
    /// Accepted connections about to be installed (the channel must not be forgotten).
    pub(super) attaching: usize,
}

/// The Single-Socket Channel to one peer: its outbound queue, its requests in flight, and
/// its current connection, if any.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) peer: NodeId,
    /// The address this node dials; `None` if the peer dials this node.
    pub(super) dial: Option<SocketAddr>,
    pub(super) next_correlation: AtomicU64,
    pub(super) last_activity_ms: AtomicU64,
    pub(super) state: Mutex<ChannelState>,
    /// The writer thread waits here: for messages, a keep-alive, or its connection's end.
    pub(super) work: Condvar,
    /// Senders wait here for room in the queue or the in-flight window; also waiters for a
    /// connection and the dialer between attempts.
    pub(super) space: Condvar,
}

impl Channel {
    pub(super) fn new(peer: NodeId, dial: Option<SocketAddr>) -> Self {
        Channel {
            peer,
            dial,
            next_correlation: AtomicU64::new(1),
            last_activity_ms: AtomicU64::new(0),
            state: Mutex::new(ChannelState {
                conn: None,
                last_error: None,
                outbox: Outbox::default(),
                spare: Vec::new(),
                writing_bytes: 0,
                batch_started: None,
                writing: false,
                unfinished: None,
                last_write: Instant::now(),
                pending: IdMap::default(),
                closed: false,
                attaching: 0,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
        }
    }

    pub(super) fn is_current(&self, connection: u64) -> bool {
        self.state.lock().conn.as_ref().map(|c| c.id) == Some(connection)
    }

    /// Checks a message's size and prepares it for the queue.
    pub(super) fn encode(
        &self,
        sh: &Shared,
        kind: MessageKind,
        correlation: CorrelationId,
        payload: Bytes,
    ) -> Result<Queued, SendError> {
        let max = sh.config.payload_bytes_max();
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let envelope = Envelope {
            correlation,
            kind,
            from: sh.config.node,
            to: self.peer,
            payload,
        };
        let len = envelope.encoded_len();
        Ok(Queued { envelope, len })
    }

    /// Waits until the message may be queued (room in the queue and, for a request, in the
    /// in-flight window), honouring the overflow policy.
    pub(super) fn admit<'a>(
        &'a self,
        sh: &Shared,
        mut st: MutexGuard<'a, ChannelState>,
        bytes: usize,
        request: bool,
    ) -> Result<MutexGuard<'a, ChannelState>, RequestError> {
        let c = &sh.config;
        loop {
            if st.closed || sh.is_closing() {
                return Err(RequestError::Shutdown);
            }
            if st.conn.is_none() && self.dial.is_none() {
                return Err(SendError::NotConnected {
                    peer: self.peer,
                    last: st.last_error.clone(),
                }
                .into());
            }
            let window_full = request && st.pending.len() >= c.in_flight_max;
            let queue_full = st.outbox.messages >= c.outbound_messages_max
                || st.outbox.envelope_bytes + st.writing_bytes + bytes > c.outbound_bytes_max;
            if !window_full && !queue_full {
                return Ok(st);
            }
            if c.overflow == Overflow::FailFast {
                return Err(if window_full {
                    RequestError::InFlightFull {
                        peer: self.peer,
                        max: c.in_flight_max,
                    }
                } else {
                    SendError::QueueFull { peer: self.peer }.into()
                });
            }
            // Whatever this caller queued before must reach the writer before it waits.
            self.work.notify_all();
            self.space.wait(&mut st);
        }
    }

    /// Queues an admitted message and gets it written: by the caller itself when the channel
    /// is idle, otherwise by the writer thread, which batches whatever has queued up.
    pub(super) fn push<'a>(
        &'a self,
        sh: &Shared,
        mut st: MutexGuard<'a, ChannelState>,
        queued: Queued,
    ) {
        let origin = match queued.envelope.kind {
            MessageKind::Request => Origin::Request,
            MessageKind::Response => Origin::Formed,
            MessageKind::OneWay => Origin::OneWay,
        };
        let wake = self.enqueue(sh, &mut st, queued);
        self.flush(sh, st, origin, wake);
    }

    /// Appends a message to the queue; returns whether the writer thread has news: the
    /// queue was empty (the writer sleeps until a keep-alive falls due), or the batch has
    /// just become full (the writer may be waiting `batch_delay_us_max` for company). Any
    /// other message joins a batch the writer already knows about, so waking it again
    /// would only cost a context switch.
    pub(super) fn enqueue(&self, sh: &Shared, st: &mut ChannelState, queued: Queued) -> bool {
        let c = &sh.config;
        self.enqueue_with(sh, st, |outbox| {
            outbox.push(&queued, c.batch_bytes_max, c.frame_bytes_max);
        })
    }

    /// Adds to the queue with `push`; returns whether the writer thread has news, as
    /// [`enqueue`](Self::enqueue) says.
    fn enqueue_with(
        &self,
        sh: &Shared,
        st: &mut ChannelState,
        push: impl FnOnce(&mut Outbox),
    ) -> bool {
        let c = &sh.config;
        let was_empty = st.outbox.is_empty();
        let was_full = st.outbox.envelope_bytes >= c.batch_bytes_max;
        push(&mut st.outbox);
        if was_empty {
            st.batch_started = Some(Instant::now());
        }
        was_empty || (!was_full && st.outbox.envelope_bytes >= c.batch_bytes_max)
    }

    /// Writes the queue on the caller's thread if the channel is idle, else leaves it to
    /// the writer thread (waking it).
    ///
    /// Writing on the caller's thread saves a thread hand-off: it is what makes one request
    /// at a time cost little more than a raw round trip. Idle means nothing is being
    /// written and, for a request, no other request is in flight; for a batch the caller
    /// formed itself (the responses to one read, or [`TcpTransport::request_batch`])
    /// nothing more; for a one-way message, no request in flight and nothing written for
    /// `batch_delay_us_max`. Otherwise the writer thread
    /// takes the queue, waiting up to `batch_delay_us_max` for company (Request Batch), like
    /// Nagle's algorithm with a bound. A full socket buffer holds the caller at most
    /// [`INLINE_WRITE_WAIT`]: the writer thread writes whatever did not fit, so even an
    /// `Overflow::FailFast` caller is never held longer by a peer that stopped reading.
    pub(super) fn flush<'a>(
        &'a self,
        sh: &Shared,
        mut st: MutexGuard<'a, ChannelState>,
        origin: Origin,
        wake: bool,
    ) {
        let c = &sh.config;
        let idle = !st.writing
            && st.unfinished.is_none()
            && match origin {
                Origin::Request => st.pending.len() <= 1,
                Origin::Formed => true,
                Origin::OneWay => {
                    // Cheapest test first: with others already queued the channel is busy.
                    st.outbox.messages == 1
                        && st.pending.is_empty()
                        && st.last_write.elapsed() >= Duration::from_micros(c.batch_delay_us_max)
                }
            };
        let conn = match &st.conn {
            Some(conn) if idle => (conn.id, Arc::clone(&conn.stream)),
            _ => {
                drop(st);
                if wake {
                    self.work.notify_all();
                }
                return;
            }
        };
        st.writing = true;
        let (mut buf, taken) = Self::take_outbox(&mut st);
        drop(st);
        let messages = Self::finish_taken(sh, &mut buf, taken);
        // A slow reader must not hold the caller either: each write call waits at most
        // INLINE_WRITE_WAIT for room, and no new one starts after it has passed.
        let until = Instant::now() + INLINE_WRITE_WAIT;
        match write_some(&*conn.1, &buf, Some(until)) {
            Ok(written) if written < buf.len() => {
                // The socket buffer is full: the writer thread finishes this write.
                let mut st = self.state.lock();
                if st.conn.as_ref().is_some_and(|live| live.id == conn.0) {
                    st.writing = false;
                    st.unfinished = Some(Unfinished {
                        connection: conn.0,
                        buf,
                        written,
                        messages,
                    });
                    drop(st);
                    bump(&sh.counters.writes_handed_over, 1);
                    self.work.notify_all();
                } else {
                    // The connection was lost meanwhile: account for the write as failed.
                    drop(st);
                    let gone = Err(io::ErrorKind::ConnectionAborted.into());
                    self.after_write(sh, conn.0, messages, buf, gone);
                }
            }
            result => self.after_write(sh, conn.0, messages, buf, result.map(drop)),
        }
    }

    /// Takes the whole outbox (in the spare buffer's place) for a write.
    pub(super) fn take_outbox(st: &mut ChannelState) -> (Vec<u8>, Option<Taken>) {
        let mut buf = std::mem::take(&mut st.spare);
        buf.clear();
        let taken = st.outbox.take(&mut buf);
        st.batch_started = None;
        st.writing_bytes = taken.map_or(0, |t| t.envelope_bytes);
        (buf, taken)
    }

    /// Finishes the last frame of a taken outbox, or makes `buf` a keep-alive frame if
    /// nothing was taken, and counts the frames about to be written; returns how many
    /// messages they hold. Counting before the write means a response can never be seen
    /// before the request that caused it is counted.
    pub(super) fn finish_taken(sh: &Shared, buf: &mut Vec<u8>, taken: Option<Taken>) -> u64 {
        let max = sh.config.frame_bytes_max;
        let Some(taken) = taken else {
            let start = begin_frame(buf);
            finish_frame(buf, start, FrameKind::KeepAlive, max).expect("an empty frame fits");
            return 0;
        };
        finish_frame(buf, taken.open, FrameKind::Messages, max)
            .expect("a frame holds at most batch_bytes_max, or one message");
        bump(&sh.counters.batches_sent, taken.frames);
        bump(&sh.counters.messages_sent, taken.messages);
        taken.messages
    }

    /// Bookkeeping after a write by either the writer thread or an inline sender; `buf`
    /// becomes the spare buffer again.
    pub(super) fn after_write(
        &self,
        sh: &Shared,
        connection: u64,
        messages: u64,
        mut buf: Vec<u8>,
        result: io::Result<()>,
    ) {
        buf.clear();
        buf.shrink_to(SPARE_BATCHES_MAX * (sh.config.batch_bytes_max + HEADER_BYTES));
        let mut st = self.state.lock();
        st.spare = buf;
        st.writing = false;
        let freed = std::mem::take(&mut st.writing_bytes) > 0;
        st.last_write = Instant::now();
        let more = !st.outbox.is_empty();
        drop(st);
        if freed {
            // The bytes written no longer count against `outbound_bytes_max`.
            self.space.notify_all();
        }
        if more {
            // Messages queued while this write went on: the writer thread takes them.
            self.work.notify_all();
        }
        match result {
            Ok(()) => {
                if messages > 0 {
                    self.last_activity_ms.store(sh.millis(), Ordering::Relaxed);
                }
            }
            Err(err) => {
                let reason = if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    Disconnect::WriteStalled {
                        stalled_ms: sh.config.keepalive_timeout_ms,
                    }
                } else {
                    Disconnect::io(&err)
                };
                self.lost(sh, connection, reason);
            }
        }
    }

    pub(super) fn send(
        &self,
        sh: &Shared,
        kind: MessageKind,
        correlation: CorrelationId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let queued = self.encode(sh, kind, correlation, payload)?;
        let st = self.state.lock();
        let st = self
            .admit(sh, st, queued.envelope_bytes(), false)
            .map_err(|err| match err {
                RequestError::Send(err) => err,
                _ => SendError::Shutdown,
            })?;
        self.push(sh, st, queued);
        Ok(())
    }

    /// Queues one one-way message per payload, in order, under one lock, and gets them
    /// written together: by the caller when the channel is idle and the queue fills a frame
    /// (`batch_bytes_max`), otherwise by the writer thread. Returns how many were queued:
    /// all of them, unless an error stopped the batch, in which case the ones before it are
    /// queued and the error says how many they are.
    ///
    /// The envelopes are encoded before the lock is taken, each payload as the caller's
    /// iterator yields it (so the iterator never runs under the lock), into one buffer as
    /// large as the encoded batch; under the lock they are admitted as many at once as the
    /// queue has room for and copied in one piece per frame: not a check and an encoding
    /// per message under the lock. Every envelope of a batch has the same head, encoded
    /// once.
    pub(super) fn send_batch(
        &self,
        sh: &Shared,
        payloads: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) -> Result<usize, BatchSendError> {
        let c = &sh.config;
        let max = c.payload_bytes_max();
        let mut head = Vec::with_capacity(ENVELOPE_OVERHEAD_BYTES_MAX);
        put_envelope_head(
            &mut head,
            CorrelationId(0),
            MessageKind::OneWay,
            c.node,
            self.peer,
        );
        // A head of up to 8 bytes (ids below 2^14) is copied as 8 fixed bytes and the
        // buffer cut back: a copy the compiler inlines, not a call per message.
        let head8 = (head.len() <= 8).then(|| {
            let mut head8 = [0; 8];
            head8[..head.len()].copy_from_slice(&head);
            (head8, 8 - head.len())
        });
        let payloads = payloads.into_iter();
        let hint = payloads.size_hint().0.min(c.outbound_messages_max);
        let mut encoded = Vec::new();
        let mut ends = Vec::with_capacity(hint);
        for payload in payloads {
            let payload = payload.as_ref();
            // Sizes are checked before anything is queued: a payload too large sends
            // nothing.
            if payload.len() > max {
                return Err(SendError::TooLarge {
                    len: payload.len(),
                    max,
                }
                .into());
            }
            if encoded.is_empty() {
                // Room for as many more like the first as the iterator promises, up to
                // what the queue holds.
                let each = head.len() + VARINT_BYTES_MAX + payload.len();
                encoded.reserve(hint.saturating_mul(each).min(c.outbound_bytes_max));
            }
            match head8 {
                Some((head8, cut)) => {
                    encoded.extend_from_slice(&head8);
                    encoded.truncate(encoded.len() - cut);
                }
                None => encoded.extend_from_slice(&head),
            }
            put_payload(&mut encoded, payload);
            ends.push(encoded.len());
        }
        if ends.is_empty() {
            // Nothing to queue: no lock, no write, nobody woken.
            return Ok(0);
        }
        self.queue_encoded(sh, &encoded, &ends)
            .map(|()| ends.len())
            .map_err(|(queued, error)| BatchSendError { queued, error })
    }

    /// Queues the envelopes encoded back to back in `encoded` (envelope `k` ends at
    /// `ends[k]`) under one lock, admitting as many at once as the queue has room for, and
    /// gets them written as [`send_batch`](Self::send_batch) says. On an error, the
    /// envelopes before the one refused stay queued; returns how many those are.
    fn queue_encoded(
        &self,
        sh: &Shared,
        encoded: &[u8],
        ends: &[usize],
    ) -> Result<(), (usize, SendError)> {
        let c = &sh.config;
        let mut st = self.state.lock();
        let mut wake = false;
        let mut result = Ok(());
        let (mut k, mut from) = (0, 0);
        while k < ends.len() {
            // How many of the rest fit in the queue now (none when the channel is closed
            // or has no connection, for `admit` to say why).
            let mut j = k;
            let usable =
                !st.closed && !sh.is_closing() && (st.conn.is_some() || self.dial.is_some());
            if usable {
                let last = ends
                    .len()
                    .min(k + c.outbound_messages_max.saturating_sub(st.outbox.messages));
                let bytes_room = c
                    .outbound_bytes_max
                    .saturating_sub(st.outbox.envelope_bytes + st.writing_bytes);
                while j < last && ends[j] - from <= bytes_room {
                    j += 1;
                }
            }
            if j == k {
                // Full (or unusable): wait for room as `send` does, or fail.
                st = match self.admit(sh, st, ends[k] - from, false) {
                    Ok(admitted) => admitted,
                    Err(err) => {
                        let err = match err {
                            RequestError::Send(err) => err,
                            _ => SendError::Shutdown,
                        };
                        result = Err((k, err));
                        st = self.state.lock();
                        break;
                    }
                };
                continue;
            }
            wake |= self.enqueue_with(sh, &mut st, |outbox| {
                outbox.push_encoded(
                    encoded,
                    from,
                    &ends[k..j],
                    c.batch_bytes_max,
                    c.frame_bytes_max,
                );
            });
            from = ends[j - 1];
            k = j;
        }
        if st.outbox.is_empty() {
            return result;
        }
        // A batch that fills a frame is worth a write of its own; a smaller one joins the
        // writer thread's batching, as single sends do (measured: batches of 100 64-byte
        // messages written by the caller each cost more CPU per message than the writer
        // thread's fuller writes).
        let origin = if st.outbox.envelope_bytes >= c.batch_bytes_max {
            Origin::Formed
        } else {
            Origin::OneWay
        };
        self.flush(sh, st, origin, wake);
        result
    }

    pub(super) fn request(
        self: &Arc<Self>,
        sh: &Shared,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<ResponseHandle, RequestError> {
        let deadline = Instant::now() + timeout;
        let id = CorrelationId(self.next_correlation.fetch_add(1, Ordering::Relaxed));
        let queued = self.encode(sh, MessageKind::Request, id, payload)?;
        let (completer, completion) = completion();
        let st = self.state.lock();
        let mut st = self.admit(sh, st, queued.envelope_bytes(), true)?;
        st.pending.insert(id, completer);
        // Alone in flight, the response comes back in about one round trip: worth looking
        // for before sleeping. With others in flight, responses arrive in batches and the
        // waiter is better off asleep.
        let alone = st.pending.len() == 1;
        self.push(sh, st, queued);
        Ok(ResponseHandle {
            channel: Arc::clone(self),
            id,
            completion,
            deadline,
            timeout,
            finished: false,
            spin: alone,
        })
    }

    /// Sends one request per payload, all queued under one lock and written together: by
    /// the caller when the channel is idle, as one frame and one system call (up to
    /// `batch_bytes_max`). Pushes a handle per queued request onto `out`, in order.
    pub(super) fn request_batch(
        self: &Arc<Self>,
        sh: &Shared,
        payloads: impl IntoIterator<Item = Bytes>,
        timeout: Duration,
        out: &mut Vec<ResponseHandle>,
    ) -> Result<(), RequestError> {
        let deadline = Instant::now() + timeout;
        // Sizes are checked before anything is queued: a payload too large sends nothing.
        let batch = payloads
            .into_iter()
            .map(|payload| self.encode(sh, MessageKind::Request, CorrelationId(0), payload))
            .collect::<Result<Vec<Queued>, SendError>>()?;
        let mut st = self.state.lock();
        let mut wake = false;
        let mut result = Ok(());
        for mut queued in batch {
            let id = CorrelationId(self.next_correlation.fetch_add(1, Ordering::Relaxed));
            queued.envelope.correlation = id;
            queued.len = queued.envelope.encoded_len();
            st = match self.admit(sh, st, queued.envelope_bytes(), true) {
                Ok(admitted) => admitted,
                Err(err) => {
                    // The requests queued so far stay queued (their handles are in `out`).
                    result = Err(err);
                    st = self.state.lock();
                    break;
                }
            };
            let (completer, completion) = completion();
            st.pending.insert(id, completer);
            wake |= self.enqueue(sh, &mut st, queued);
            out.push(ResponseHandle {
                channel: Arc::clone(self),
                id,
                completion,
                deadline,
                timeout,
                finished: false,
                spin: true,
            });
        }
        if st.outbox.is_empty() {
            return result;
        }
        self.flush(sh, st, Origin::Formed, wake);
        result
    }

    /// Ends connection `connection` (if it is still the current one): closes the socket,
    /// fails every pending request and drops the queue, waking everyone who waits.
    pub(super) fn lost(&self, sh: &Shared, connection: u64, reason: Disconnect) {
        let mut st = self.state.lock();
        if st.conn.as_ref().map(|c| c.id) != Some(connection) {
            return;
        }
        let live = st.conn.take().expect("checked above");
        self.fail_all(sh, &mut st, &reason);
        drop(st);
        self.work.notify_all();
        self.space.notify_all();
        // Wake readers blocked on a full inbound queue so that they notice.
        sh.inbound_changed.notify_all();
        let _ = live.stream.socket().shutdown(Shutdown::Both);
        if live.accepted {
            sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
        }
        bump(&sh.counters.connections_lost, 1);
        sh.event(ConnectionEvent {
            peer: Some(self.peer),
            remote: live.remote,
            accepted: live.accepted,
            reason,
        });
        sh.forget_if_idle(self);
    }

    /// Fails pending requests and drops queued messages, recording `reason`.
    pub(super) fn fail_all(&self, sh: &Shared, st: &mut ChannelState, reason: &Disconnect) {
        st.last_error = Some(reason.clone());
        bump(&sh.counters.messages_dropped, st.outbox.messages as u64);
        st.outbox.clear();
        st.batch_started = None;
        // Half a frame must never reach the next connection.
        if let Some(rest) = st.unfinished.take() {
            bump(&sh.counters.messages_dropped, rest.messages);
            st.writing_bytes = 0;
        }
        for (_, completer) in st.pending.drain() {
            completer.complete(Err(RequestError::ConnectionLost {
                peer: self.peer,
                reason: reason.clone(),
            }));
        }
    }

    /// Makes `stream` this channel's connection, replacing any older one, and returns its id.
    /// `None` if the transport is closing: `close` marks each channel closed under its
    /// lock, so a connection is either installed before (and closed by `close`) or refused.
    pub(super) fn install(
        &self,
        sh: &Shared,
        stream: &Arc<dyn Stream>,
        accepted: bool,
    ) -> Option<u64> {
        let id = sh.next_connection.fetch_add(1, Ordering::Relaxed);
        let old = self.state.lock().conn.as_ref().map(|c| c.id);
        if let Some(old) = old {
            self.lost(sh, old, Disconnect::Replaced);
        }
        let mut st = self.state.lock();
        if accepted {
            st.attaching -= 1;
        }
        if st.closed || sh.is_closing() {
            drop(st);
            sh.forget_if_idle(self);
            return None;
        }
        st.conn = Some(Live {
            id,
            stream: Arc::clone(stream),
            remote: stream.socket().peer_addr().ok(),
            accepted,
        });
        st.last_error = None;
        st.last_write = Instant::now();
        drop(st);
        self.last_activity_ms.store(sh.millis(), Ordering::Relaxed);
        bump(&sh.counters.connections_established, 1);
        self.work.notify_all();
        self.space.notify_all();
        Some(id)
    }
}

/// Who queued a message, which decides whether the caller may write it itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// One request.
    Request,
    /// A batch the caller formed: the responses to one read, or a request batch.
    Formed,
    /// One one-way message.
    OneWay,
}
