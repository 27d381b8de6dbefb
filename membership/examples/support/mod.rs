//! What the examples share around `synod_membership::net::drive`, the driver loop that runs
//! a `Member` over synod-transport on a real clock.

use std::io;
use std::sync::atomic::AtomicBool;

use synod_membership::net::{self, Host};
use synod_membership::{Member, MemberWrite, ViewChange};
use synod_node::Time;
use synod_transport::TcpTransport;

/// The largest message a member takes from the wire (its push-pull syncs included).
pub const SYNC_BYTES_MAX: usize = 65_536;

/// A host that makes the generation "durable" at once (a real member writes it to a file
/// and syncs before acknowledging, as `net::GenerationFile` does), hands each view change
/// to `apply` and shows the member to `each_turn` once per turn of the loop.
struct Callbacks<A, T> {
    apply: A,
    each_turn: T,
}

impl<A: FnMut(ViewChange), T: FnMut(&Member)> Host for Callbacks<A, T> {
    fn persist(&mut self, _write: MemberWrite) -> io::Result<()> {
        Ok(())
    }

    fn apply(&mut self, change: ViewChange) {
        (self.apply)(change);
    }

    fn each_turn(&mut self, member: &mut Member, _now: Time) {
        (self.each_turn)(member);
    }
}

/// Runs `member` over `transport` until `stop` is set.
pub fn drive(
    member: &mut Member,
    transport: &TcpTransport,
    stop: &AtomicBool,
    apply: impl FnMut(ViewChange),
    each_turn: impl FnMut(&Member),
) {
    let mut host = Callbacks { apply, each_turn };
    // Persisting never fails here, so neither does the loop.
    let _ = net::drive(member, transport, stop, &mut host);
}
