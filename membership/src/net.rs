//! A [`Member`] over real TCP: synod-transport carries its messages, a thread reads the
//! clock and drives it (the `transport` feature, off by default).
//!
//! The member stays I/O-free; this module is the driver a user would otherwise write:
//! [`drive`] is the loop (clock, wake-ups, messages in and out, the generation made
//! durable before the member uses it), [`TcpMember`] runs it on a thread of its own and
//! takes [`MemberRequest`]s from any thread, and [`GenerationFile`] keeps the generation
//! on disk across restarts.
//!
//! ```
//! use synod_membership::net::{GenerationFile, TcpMember};
//! use synod_membership::{Member, MemberConfig, MemberRequest, MemberResponse};
//! use synod_node::NodeId;
//! use synod_transport::{ClusterId, Config, TcpTransport};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("synod-net-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let (one, two) = (NodeId::new(1), NodeId::new(2));
//! let mut members = Vec::new();
//! let mut transports = Vec::new();
//! for id in [one, two] {
//!     let config = Config::builder(ClusterId(7), id).build()?;
//!     transports.push(TcpTransport::bind(config, "127.0.0.1:0")?);
//! }
//! transports[0].add_peer(two, transports[1].local_addr());
//! transports[1].add_peer(one, transports[0].local_addr());
//! for (id, transport) in [one, two].into_iter().zip(transports) {
//!     // The generation this start takes is one more than the last one made durable.
//!     let file = GenerationFile::new(dir.join(format!("generation-{id}")));
//!     let config = MemberConfig::builder(id, id.get())
//!         .seeds([one])
//!         .probe(100, 50)
//!         .key_values(100, 60_000)
//!         .build()?;
//!     let member = Member::start(config, file.last()?);
//!     members.push(TcpMember::spawn(member, transport, file, |_change| {})?);
//! }
//! // Member 2 publishes a key; member 1 comes to hold it.
//! let set = MemberRequest::Set {
//!     key: "role".into(),
//!     value: b"cache".to_vec(),
//! };
//! assert!(matches!(members[1].request(set), Some(MemberResponse::Written { .. })));
//! let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
//! let role = move |m: &Member| m.get(two, "role").map(<[u8]>::to_vec);
//! while members[0].with(role).flatten().as_deref() != Some(b"cache".as_slice()) {
//!     assert!(std::time::Instant::now() < deadline, "not spread in 30 s");
//!     std::thread::sleep(std::time::Duration::from_millis(20));
//! }
//! for member in members {
//!     member.stop()?;
//! }
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

// tidy: driver: the `transport` feature's driver reads the clock, runs the member on a thread and writes the generation file.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_node::{Effect, Input, Protocol, RequestId, Time};
use synod_transport::TcpTransport;

use crate::{Member, MemberRequest, MemberResponse, MemberWrite, Message, ViewChange};

/// The longest the driver waits for a message before it looks at its wake-up, its stop
/// flag and its requests again.
const TURN_MAX: Duration = Duration::from_millis(20);

/// The most requests queued for a [`TcpMember`] at once; a caller beyond it waits.
pub const REQUESTS_QUEUED_MAX: usize = 64;

/// The generation of a member's last start, in a file of its own: 8 bytes, little-endian,
/// replaced whole (written beside it, synced, renamed over it, the directory synced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationFile {
    path: PathBuf,
}

impl GenerationFile {
    /// The file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> GenerationFile {
        GenerationFile { path: path.into() }
    }

    /// Where the file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last generation made durable, 0 if the file does not exist.
    ///
    /// # Errors
    ///
    /// Reading fails, or the file is not 8 bytes (damage): `InvalidData`, since starting
    /// at 0 could reuse a generation.
    pub fn last(&self) -> io::Result<u64> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: {} bytes where a generation file holds 8",
                            self.path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                Ok(u64::from_le_bytes(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Makes `generation` durable.
    ///
    /// # Errors
    ///
    /// Any write, sync or rename fails.
    pub fn write(&self, generation: u64) -> io::Result<()> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&generation.to_le_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Why [`TcpMember::spawn`] refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// The transport carries smaller messages than the member's sync limit.
    PayloadTooSmall {
        /// The transport's largest payload.
        payload_bytes_max: usize,
        /// The member's largest message (`sync_bytes_max`).
        sync_bytes_max: usize,
    },
    /// The transport is another node's.
    NodeMismatch,
    /// The thread could not be started.
    Thread(io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::PayloadTooSmall {
                payload_bytes_max,
                sync_bytes_max,
            } => write!(
                f,
                "the transport carries payloads of at most {payload_bytes_max} bytes, under \
                 the member's sync_bytes_max of {sync_bytes_max}"
            ),
            SpawnError::NodeMismatch => f.write_str("the transport is bound for another node"),
            SpawnError::Thread(e) => write!(f, "starting the member's thread: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// What a driver does with a member's effects besides sending its messages: the narrow
/// edge [`drive`] needs from its caller.
pub trait Host {
    /// Makes `write` (the member's generation) durable before returning.
    ///
    /// # Errors
    ///
    /// The write or its sync failed: the driver stops, ending this start.
    fn persist(&mut self, write: MemberWrite) -> io::Result<()>;

    /// Takes a change of the member's view.
    fn apply(&mut self, change: ViewChange);

    /// Takes the member's answer to a request the host handed it.
    fn reply(&mut self, id: RequestId, response: MemberResponse) {
        let _ = (id, response);
    }

    /// Called once per turn of the loop, with the member and the time: where a host hands
    /// the member requests or looks at it.
    fn each_turn(&mut self, member: &mut Member, now: Time) {
        let _ = (member, now);
    }
}

/// Drives `member` over `transport` until `stop` is set (or a write of its generation
/// fails, which ends this start as the contract's rule 5 says).
///
/// Each turn: carries out the member's effects (messages encoded and sent, a lost message
/// left to the protocol; each `Persist` made durable by the host, then acknowledged; view
/// changes and replies to the host; the wake-up kept), calls [`Host::each_turn`], waits up
/// to the wake-up (at most 20 ms) for a message, hands the member what arrived (bytes that
/// are not a message of this version, or over the member's `sync_bytes_max`, are dropped)
/// and, when due, its wake-up. Time is the monotonic clock since the first call in this
/// process, so that a member driven again (after `stop`) never sees time go backwards, and
/// sees the time it was not driven as the pause it was.
///
/// # Errors
///
/// What [`Host::persist`] returned.
pub fn drive(
    member: &mut Member,
    transport: &TcpTransport,
    stop: &AtomicBool,
    host: &mut impl Host,
) -> io::Result<()> {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now = || Time::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let limit = member.config().sync_bytes_max();
    let mut wake: Option<Time> = None;
    while !stop.load(Ordering::Relaxed) {
        drain(member, transport, host, &mut wake, now)?;
        host.each_turn(member, now());
        drain(member, transport, host, &mut wake, now)?;
        let wait = wake.map_or(TURN_MAX, |at| at.saturating_duration_since(now()));
        if let Some(incoming) = transport.recv(wait.min(TURN_MAX))
            && let Ok(message) = Message::decode(incoming.payload(), limit)
        {
            let from = incoming.from();
            member.handle(now(), Input::Message { from, message });
        }
        if wake.is_some_and(|at| now() >= at) {
            wake = None;
            member.handle(now(), Input::Wake);
        }
    }
    Ok(())
}

/// Carries out the member's effects.
fn drain(
    member: &mut Member,
    transport: &TcpTransport,
    host: &mut impl Host,
    wake: &mut Option<Time>,
    now: impl Fn() -> Time,
) -> io::Result<()> {
    while let Some(effect) = member.poll() {
        match effect {
            Effect::Send { to, message } => {
                // A full queue or a peer that is down loses the message: SWIM copes.
                let _ = transport.send(to, Bytes::from(message.encode()));
            }
            Effect::Persist { token, write } => {
                host.persist(write)?;
                member.handle(now(), Input::Persisted(token));
            }
            Effect::WakeAt(at) => *wake = Some(at),
            Effect::Apply(change) => host.apply(change),
            Effect::Reply { id, response } => host.reply(id, response),
        }
    }
    Ok(())
}

type Pending = (MemberRequest, mpsc::Sender<MemberResponse>);
type Call = Box<dyn FnOnce(&Member) + Send>;

/// The host of a [`TcpMember`]'s thread.
struct Threaded<A> {
    generation: GenerationFile,
    apply: A,
    queued: mpsc::Receiver<Pending>,
    called: mpsc::Receiver<Call>,
    waiting: Vec<(RequestId, mpsc::Sender<MemberResponse>)>,
    next: u64,
}

impl<A: FnMut(ViewChange)> Host for Threaded<A> {
    fn persist(&mut self, write: MemberWrite) -> io::Result<()> {
        self.generation.write(write.generation)
    }

    fn apply(&mut self, change: ViewChange) {
        (self.apply)(change);
    }

    fn reply(&mut self, id: RequestId, response: MemberResponse) {
        if let Some(i) = self.waiting.iter().position(|(w, _)| *w == id) {
            let (_, answer) = self.waiting.swap_remove(i);
            let _ = answer.send(response);
        }
    }

    fn each_turn(&mut self, member: &mut Member, now: Time) {
        while let Ok((request, answer)) = self.queued.try_recv() {
            self.next += 1;
            let id = RequestId(self.next);
            self.waiting.push((id, answer));
            member.handle(now, Input::Request { id, request });
        }
        while let Ok(call) = self.called.try_recv() {
            call(member);
        }
    }
}

/// A [`Member`] running on a thread of its own over a [`TcpTransport`]: spawned with the
/// member, the transport and where its generation is kept, asked [`MemberRequest`]s from
/// any thread, and stopped to get the member back.
pub struct TcpMember {
    stop: Arc<AtomicBool>,
    requests: mpsc::SyncSender<Pending>,
    calls: mpsc::SyncSender<Call>,
    thread: Option<thread::JoinHandle<io::Result<Member>>>,
}

impl fmt::Debug for TcpMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpMember")
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl TcpMember {
    /// Runs `member` over `transport` on a new thread, its generations made durable in
    /// `generation`, every view change handed to `apply` on that thread.
    ///
    /// # Errors
    ///
    /// [`SpawnError`]: the transport is another node's or carries smaller payloads than the
    /// member's `sync_bytes_max`, or the thread cannot be started.
    pub fn spawn(
        mut member: Member,
        transport: TcpTransport,
        generation: GenerationFile,
        apply: impl FnMut(ViewChange) + Send + 'static,
    ) -> Result<TcpMember, SpawnError> {
        if transport.node() != member.id() {
            return Err(SpawnError::NodeMismatch);
        }
        let payload_bytes_max = transport.config().payload_bytes_max();
        let sync_bytes_max = member.config().sync_bytes_max();
        if payload_bytes_max < sync_bytes_max {
            return Err(SpawnError::PayloadTooSmall {
                payload_bytes_max,
                sync_bytes_max,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, queued) = mpsc::sync_channel::<Pending>(REQUESTS_QUEUED_MAX);
        let (calls, called) = mpsc::sync_channel::<Call>(REQUESTS_QUEUED_MAX);
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("member-{}", member.id()))
            .spawn(move || {
                let mut host = Threaded {
                    generation,
                    apply,
                    queued,
                    called,
                    waiting: Vec::new(),
                    next: 0,
                };
                let out = drive(&mut member, &transport, &flag, &mut host);
                transport.shutdown();
                out.map(|()| member)
            })
            .map_err(SpawnError::Thread)?;
        Ok(TcpMember {
            stop,
            requests,
            calls,
            thread: Some(thread),
        })
    }

    /// Hands `request` to the member and waits for its answer; `None` if the member has
    /// stopped.
    pub fn request(&self, request: MemberRequest) -> Option<MemberResponse> {
        let (answer, answered) = mpsc::channel();
        self.requests.send((request, answer)).ok()?;
        answered.recv().ok()
    }

    /// Calls `f` with the member on its thread, between two turns, and returns what it
    /// returned; `None` if the member has stopped.
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Member) -> R + Send + 'static,
    ) -> Option<R> {
        let (answer, answered) = mpsc::channel();
        let call: Call = Box::new(move |m: &Member| {
            let _ = answer.send(f(m));
        });
        self.calls.send(call).ok()?;
        answered.recv().ok()
    }

    /// Stops the member (it sends nothing more, as if its process had died; a member that
    /// should leave gracefully is sent [`MemberRequest::Leave`] first), shuts the
    /// transport down and returns the member.
    ///
    /// # Errors
    ///
    /// The write of a generation failed (the member stopped then), or the thread panicked
    /// (`Other`).
    pub fn stop(mut self) -> io::Result<Member> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Err(io::Error::other("the member was stopped already"));
        };
        thread
            .join()
            .map_err(|_| io::Error::other("the member's thread panicked"))?
    }
}

impl Drop for TcpMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
