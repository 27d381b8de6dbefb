//! A request in flight, as its caller holds it: waiting for the response with a deadline,
//! and giving up its place in the in-flight window when dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::completion::{Completion, WaitOutcome};
use crate::error::RequestError;
use crate::ids::CorrelationId;

use super::SPIN_BEFORE_SLEEP;
use super::channel::Channel;

/// A request in flight: wait on it for the response.
///
/// Dropping the handle abandons the request and frees its place in the in-flight window; a
/// response arriving later is counted in [`Stats::late_responses`](super::Stats::late_responses) and discarded.
#[derive(Debug)]
pub struct ResponseHandle {
    pub(super) channel: Arc<Channel>,
    pub(super) id: CorrelationId,
    pub(super) completion: Completion<Result<Bytes, RequestError>>,
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    pub(super) finished: bool,
    pub(super) spin: bool,
}

impl ResponseHandle {
    /// The request's correlation id.
    pub fn correlation(&self) -> CorrelationId {
        self.id
    }

    /// Blocks until the response arrives, the deadline passes or the connection is lost.
    ///
    /// # Errors
    ///
    /// [`RequestError::Timeout`] after the deadline; [`RequestError::ConnectionLost`] as soon
    /// as the connection drops, with reason [`Disconnect::Shutdown`](crate::Disconnect::Shutdown) when it drops because
    /// this transport shuts down while the request is in flight (see
    /// [`TcpTransport::shutdown`](super::TcpTransport::shutdown)); [`RequestError::Shutdown`] if the request was abandoned
    /// without an answer by a transport already shut down.
    pub fn wait(mut self) -> Result<Bytes, RequestError> {
        self.finished = true;
        // A response often arrives within tens of microseconds: look for it a little while
        // before sleeping, since waking a sleeping thread costs about as much again.
        let spin_until = Instant::now()
            + if self.spin {
                SPIN_BEFORE_SLEEP
            } else {
                Duration::ZERO
            };
        while !self.completion.is_ready() && Instant::now() < spin_until.min(self.deadline) {
            std::thread::yield_now();
        }
        match self.completion.wait_until(self.deadline) {
            WaitOutcome::Done(result) => result,
            WaitOutcome::Canceled => Err(RequestError::Shutdown),
            WaitOutcome::TimedOut => {
                self.forget();
                // The response may have raced the deadline; if so, take it.
                match self.completion.try_take() {
                    WaitOutcome::Done(result) => result,
                    _ => Err(RequestError::Timeout {
                        peer: self.channel.peer,
                        after: self.timeout,
                    }),
                }
            }
        }
    }

    /// Whether the outcome is already there (`wait` would not block).
    pub fn is_ready(&self) -> bool {
        self.completion.is_ready()
    }

    pub(super) fn forget(&self) {
        let removed = self.channel.state.lock().pending.remove(&self.id);
        if removed.is_some() {
            // Dropping the completer only marks our own completion canceled; wake senders
            // waiting for a place in the in-flight window.
            drop(removed);
            self.channel.space.notify_all();
        }
    }
}

impl Drop for ResponseHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.forget();
        }
    }
}
