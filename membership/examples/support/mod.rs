//! The driver loop the examples share: what a user writes around a `Member` to run it over
//! synod-transport on a real clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_membership::{Member, Message, ViewChange};
use synod_node::{Effect, Input, Protocol, Time};
use synod_transport::TcpTransport;

/// The largest message a member takes from the wire (its push-pull syncs included).
pub const SYNC_BYTES_MAX: usize = 65_536;

/// Runs `member` over `transport` until `stop` is set: reads the monotonic clock (from
/// `epoch`), hands the member what arrived and its wake-ups, and carries out what it asks.
/// Messages are encoded and sent, messages received are checked with `Message::decode`
/// (garbage is dropped), the generation is "made durable" at once (a real member writes it
/// to a file and syncs before acknowledging), each view change goes to `apply`, and
/// `each_turn` sees the member once per turn of the loop.
pub fn drive(
    member: &mut Member,
    transport: &TcpTransport,
    stop: &AtomicBool,
    epoch: Instant,
    mut apply: impl FnMut(ViewChange),
    mut each_turn: impl FnMut(&Member),
) {
    let now = || Time::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut wake: Option<Time> = None;
    while !stop.load(Ordering::Relaxed) {
        while let Some(effect) = member.poll() {
            match effect {
                Effect::Send { to, message } => {
                    // A full queue or a peer that is down loses the message: SWIM copes.
                    let _ = transport.send(to, Bytes::from(message.encode()));
                }
                Effect::Persist { token, .. } => member.handle(now(), Input::Persisted(token)),
                Effect::WakeAt(at) => wake = Some(at),
                Effect::Apply(change) => apply(change),
                Effect::Reply { .. } => {}
            }
        }
        each_turn(member);
        let wait = wake.map_or(Duration::from_millis(50), |at| {
            at.saturating_duration_since(now())
        });
        // Bytes that are not a message (another version, garbage) are dropped.
        if let Some(incoming) = transport.recv(wait.min(Duration::from_millis(50)))
            && let Ok(message) = Message::decode(incoming.payload(), SYNC_BYTES_MAX)
        {
            let from = incoming.from();
            member.handle(now(), Input::Message { from, message });
        }
        if wake.is_some_and(|at| now() >= at) {
            wake = None;
            member.handle(now(), Input::Wake);
        }
    }
}
