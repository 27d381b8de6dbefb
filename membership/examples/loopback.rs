//! Eight members on loopback TCP, one thread each: the driver a user writes around a
//! `Member`, with synod-transport carrying its messages.
//!
//! Each thread reads its monotonic clock, hands the member what arrived and its wake-ups,
//! and carries out what it asks: messages are encoded and sent, messages received are
//! checked with `Message::decode` (garbage is dropped), the generation is "made durable" at
//! once (a real member writes it to a file and syncs before acknowledging), and view
//! changes are printed (the loop is the library's `net::drive`, behind the `transport`
//! feature, wrapped in `support::drive` with the `processes` example). After a few
//! seconds one member stops; the example prints how long the others took to declare it
//! dead, and their views.
//!
//! Run with `cargo run -p synod-membership --example loopback`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use synod_membership::{Member, MemberConfig, MemberState, ViewChange};
use synod_node::{NodeId, Protocol};
use synod_transport::{ClusterId, Config, TcpTransport};

use support::SYNC_BYTES_MAX;

const MEMBERS: u64 = 8;
const PROBE_MS: u64 = 200;

/// Runs one member until `stop` is set; returns the members it believes live.
fn run(
    mut member: Member,
    transport: TcpTransport,
    stop: Arc<AtomicBool>,
    changes: mpsc::Sender<(NodeId, ViewChange)>,
) -> Vec<NodeId> {
    let id = member.id();
    let apply = |change| {
        let _ = changes.send((id, change));
    };
    support::drive(&mut member, &transport, &stop, apply, |_| {});
    transport.shutdown();
    member.live_members()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let epoch = Instant::now();
    let ids: Vec<NodeId> = (1..=MEMBERS).map(NodeId::new).collect();
    let mut transports = Vec::new();
    for &id in &ids {
        let config = Config::builder(ClusterId(7), id).build()?;
        transports.push(TcpTransport::bind(config, "127.0.0.1:0")?);
    }
    let addresses: Vec<_> = transports.iter().map(TcpTransport::local_addr).collect();
    for (i, transport) in transports.iter().enumerate() {
        for (j, &addr) in addresses.iter().enumerate() {
            if i != j {
                transport.add_peer(ids[j], addr);
            }
        }
    }
    let (changes, events) = mpsc::channel();
    let mut running = BTreeMap::new();
    for (&id, transport) in ids.iter().zip(transports) {
        let config = MemberConfig::builder(id, id.get())
            .seeds([ids[0], ids[1]])
            .probe(PROBE_MS, PROBE_MS / 2)
            .gossip(PROBE_MS / 5, 3)
            .push_pull_interval_ms(10 * PROBE_MS)
            .message_bytes_max(1_400, SYNC_BYTES_MAX)
            .build()?;
        let member = Member::start(config, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, changes) = (stop.clone(), changes.clone());
        let thread = thread::spawn(move || run(member, transport, flag, changes));
        running.insert(id, (stop, thread));
    }
    drop(changes);

    thread::sleep(Duration::from_secs(3));
    let victim = ids[4];
    let stopped_at = Instant::now();
    let (stop, thread) = running.remove(&victim).expect("running");
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    println!("stopped {victim} at {:.2} s", epoch.elapsed().as_secs_f64());

    // Wait until every other member declares it dead, or 20 s.
    let mut declared = BTreeMap::new();
    while declared.len() < running.len() && stopped_at.elapsed() < Duration::from_secs(20) {
        if let Ok((by, change)) = events.recv_timeout(Duration::from_millis(100)) {
            match change {
                ViewChange::Member(event)
                    if event.id == victim && event.state == Some(MemberState::Dead) =>
                {
                    declared.entry(by).or_insert_with(|| stopped_at.elapsed());
                }
                ViewChange::Coordinator { id, .. } => println!("{by} follows {id}"),
                _ => {}
            }
        }
    }
    for (by, after) in &declared {
        println!(
            "{by} declared {victim} dead after {:.2} s ({:.1} protocol periods)",
            after.as_secs_f64(),
            after.as_secs_f64() * 1_000.0 / PROBE_MS as f64
        );
    }
    for (id, (stop, thread)) in running {
        stop.store(true, Ordering::Relaxed);
        let view = thread.join().map_err(|_| "member thread panicked")?;
        println!("{id} sees {view:?}");
    }
    Ok(())
}
