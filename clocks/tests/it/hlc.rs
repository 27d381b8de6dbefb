//! Hybrid logical clocks: monotonicity under a misbehaving physical clock and across
//! restarts, send/receive order, offset rejection, overflow, and the byte encoding.

use std::time::Duration;

use proptest::prelude::*;
use synod_clocks::hlc::PHYSICAL_TICK;
use synod_clocks::{
    AtomicHybridClock, HybridClock, HybridClockConfig, HybridClockError, HybridTimestamp,
    ManualClock, NodeId, PhysicalClock, SystemClock, WallTime,
};

use crate::{Rng, chance, seeds};

const START: WallTime = WallTime::from_secs(1_700_000_000);

fn config(node: u64, offset_max_ms: u64) -> HybridClockConfig {
    HybridClockConfig::new(NodeId::new(node), Duration::from_millis(offset_max_ms)).unwrap()
}

/// Applies one random misbehaviour (or plain progress) to a physical clock.
fn disturb(rng: &mut Rng, clock: &ManualClock) -> &'static str {
    match rng.below(1000) {
        // Steps of up to a second, keeping the clock within a few seconds of true time.
        0..=2 if clock.offset_ns() > -1_000_000_000 => {
            clock.jump_back(Duration::from_millis(rng.below(1_000)));
            "jump back"
        }
        3..=5 if clock.offset_ns() < 1_000_000_000 => {
            clock.jump_forward(Duration::from_millis(rng.below(1_000)));
            "jump forward"
        }
        6..=7 => {
            if clock.is_frozen() {
                clock.unfreeze();
            } else {
                clock.freeze();
            }
            "freeze"
        }
        8 => {
            clock.set_drift_ppm(rng.below(401) as i32 - 200);
            "drift"
        }
        _ => {
            clock.advance(Duration::from_nanos(rng.below(20_000)));
            "advance"
        }
    }
}

#[test]
fn monotonic_over_a_million_events_with_jumps_freezes_and_restarts() {
    const EVENTS: u64 = 1_000_000;
    let mut rng = Rng::new(0x4C1C);
    let physical = ManualClock::new(START);
    let peer = ManualClock::new(START);
    let mut clock = HybridClock::new(physical.clone(), config(1, 500));
    let mut last = HybridTimestamp::ZERO;
    let (mut restarts, mut updates, mut rejected, mut carries) = (0, 0, 0, 0);
    let mut max_wall = WallTime::UNIX_EPOCH;
    for i in 0..EVENTS {
        if i % 100_000 == 0 && i > 0 {
            // Crash and restart from the persisted high-water mark.
            let high_water = clock.last();
            clock = HybridClock::resume(physical.clone(), config(1, 500), high_water);
            restarts += 1;
        }
        // A long freeze in every quarter of the run, long enough to overflow the counter.
        match i % 250_000 {
            0 => physical.freeze(),
            100_000 => physical.unfreeze(),
            1..=99_999 => physical.advance(Duration::from_nanos(rng.below(20_000))),
            _ => {
                disturb(&mut rng, &physical);
            }
        }
        peer.advance(Duration::from_nanos(rng.below(20_000)));
        max_wall = max_wall.max(physical.wall());
        let ts = if chance(&mut rng, 30) {
            // A message from a peer whose clock is within ±1 s of true time.
            peer.set_offset_ns(rng.below(2_000_000_000) as i64 - 1_000_000_000);
            let sent = HybridTimestamp::new(peer.wall(), rng.below(4) as u16, NodeId::new(2));
            let lead = sent.physical().duration_since(physical.wall());
            let too_far = lead.is_some_and(|lead| lead > Duration::from_millis(500));
            match clock.update(sent) {
                Ok(ts) => {
                    assert!(!too_far, "event {i}: accepted {sent}, {lead:?} ahead");
                    max_wall = max_wall.max(sent.physical());
                    assert!(ts > sent, "event {i}: receive {ts} not after send {sent}");
                    updates += 1;
                    ts
                }
                Err(HybridClockError::TooFarAhead { .. }) => {
                    assert!(too_far, "event {i}: rejected {sent}, only {lead:?} ahead");
                    rejected += 1;
                    assert_eq!(clock.last(), last, "a rejected update changed the clock");
                    continue;
                }
                Err(e) => panic!("event {i}: {e}"),
            }
        } else {
            clock.now()
        };
        assert!(ts > last, "event {i}: {ts} is not after {last}");
        // Close to physical time: ahead of every physical reading and received time only
        // by the ticks that logical overflows carried into (at most one per 65,536 events).
        let slack = PHYSICAL_TICK * (u32::try_from(i / 65_536).unwrap() + 1);
        assert!(
            ts.physical() <= max_wall.saturating_add(slack),
            "event {i}: {ts} ran ahead of {max_wall}"
        );
        if ts.physical() == last.physical().saturating_add(PHYSICAL_TICK)
            && ts.logical() == 0
            && last.logical() == u16::MAX
        {
            carries += 1;
        }
        last = ts;
    }
    println!(
        "hlc: {EVENTS} events, {updates} receives, {rejected} rejected as too far ahead, \
         {restarts} restarts, {carries} logical overflows carried, 0 regressions"
    );
    assert_eq!(restarts, 9);
    assert!(updates > 0 && rejected > 0 && carries > 0);
}

#[test]
fn a_frozen_clock_overflows_the_counter_into_the_next_tick_and_catches_up() {
    let physical = ManualClock::new(START);
    let mut clock = HybridClock::new(physical.clone(), config(1, 500));
    physical.freeze();
    let first = clock.now();
    let mut last = first;
    for _ in 0..200_000 {
        let ts = clock.now();
        assert!(ts > last);
        last = ts;
    }
    // 200,001 timestamps in one frozen tick: three carries of 65,536.
    assert_eq!(
        last.physical(),
        first.physical().saturating_add(PHYSICAL_TICK * 3)
    );
    assert_eq!(last.logical() as u64, 200_000 - 3 * 65_536);
    // Once the physical clock passes the hybrid clock, the counter starts from zero again.
    physical.unfreeze();
    physical.advance(Duration::from_millis(1));
    let ts = clock.now();
    assert_eq!(ts.logical(), 0);
    assert_eq!(
        ts.physical().as_nanos(),
        physical.wall().as_nanos() & !0xFFFF
    );
}

#[test]
fn restart_without_the_high_water_mark_could_go_back_with_it_cannot() {
    let physical = ManualClock::new(START);
    let mut clock = HybridClock::new(physical.clone(), config(1, 500));
    physical.advance(Duration::from_secs(1));
    let before_crash = clock.now();
    physical.jump_back(Duration::from_secs(5)); // NTP steps the clock while we are down
    let fresh = HybridClock::new(physical.clone(), config(1, 500)).now();
    assert!(
        fresh < before_crash,
        "the failure mode the high-water mark prevents"
    );
    let mut resumed = HybridClock::resume(physical.clone(), config(1, 500), before_crash);
    assert!(resumed.now() > before_crash);
    let atomic = AtomicHybridClock::resume(physical, config(1, 500), before_crash);
    assert!(atomic.now() > before_crash);
}

#[test]
fn every_receive_orders_after_its_send_in_a_randomized_exchange() {
    const NODES: usize = 4;
    let runs = seeds(10);
    let mut messages = 0;
    for seed in 0..runs {
        let mut rng = Rng::new(seed);
        let physical: Vec<ManualClock> = (0..NODES)
            .map(|_| {
                let c = ManualClock::new(START);
                c.set_offset_ns(rng.below(200_000_000) as i64 - 100_000_000); // ±100 ms
                c.set_drift_ppm(rng.below(201) as i32 - 100);
                c
            })
            .collect();
        let mut clocks: Vec<_> = (0..NODES)
            .map(|n| HybridClock::new(physical[n].clone(), config(n as u64 + 1, 500)))
            .collect();
        let mut last: Vec<HybridTimestamp> = vec![HybridTimestamp::ZERO; NODES];
        // In flight: (deliver at step, destination, timestamp).
        let mut network: Vec<(u64, usize, HybridTimestamp)> = Vec::new();
        for step in 0..5_000u64 {
            let d = Duration::from_micros(rng.below(2_000));
            for c in &physical {
                c.advance(d);
            }
            let from = rng.below(NODES as u64) as usize;
            let sent = clocks[from].now();
            assert!(sent > last[from]);
            last[from] = sent;
            let to = rng.below(NODES as u64) as usize;
            network.push((step + rng.below(20), to, sent));
            // Deliver due messages in a random order.
            let mut i = 0;
            while i < network.len() {
                if network[i].0 <= step && chance(&mut rng, 50) {
                    let (_, to, sent) = network.swap_remove(i);
                    let received = clocks[to]
                        .update(sent)
                        .expect("skew is within the maximum offset");
                    assert!(
                        received > sent,
                        "seed {seed}: receive {received} not after send {sent}"
                    );
                    assert!(received > last[to]);
                    last[to] = received;
                    messages += 1;
                } else {
                    i += 1;
                }
            }
        }
    }
    println!("hlc: {runs} seeds, {messages} messages, every receive after its send");
}

#[test]
fn timestamps_too_far_ahead_are_rejected_with_a_clear_error() {
    let local = ManualClock::new(START);
    let remote = ManualClock::new(START);
    remote.set_offset_ns(600_000_000); // 600 ms ahead, the bound is 500 ms
    let mut sender = HybridClock::new(remote.clone(), config(2, 500));
    let mut receiver = HybridClock::new(local.clone(), config(1, 500));
    let before = receiver.now();
    let sent = sender.now();
    let err = receiver.update(sent).unwrap_err();
    match &err {
        HybridClockError::TooFarAhead {
            received,
            local: at,
            offset_max,
        } => {
            assert_eq!(*received, sent);
            assert_eq!(*at, local.wall());
            assert_eq!(*offset_max, Duration::from_millis(500));
        }
        other => panic!("unexpected {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("ahead of the local clock") && text.contains("500ms"),
        "{text}"
    );
    assert_eq!(receiver.last(), before, "the clock is unchanged");
    // Once the skew is back within the bound, messages are accepted.
    remote.set_offset_ns(400_000_000);
    let mut sender = HybridClock::new(remote.clone(), config(2, 500));
    let sent = sender.now();
    assert!(receiver.update(sent).unwrap() > sent);
    // The atomic form rejects the same way.
    let atomic = AtomicHybridClock::new(local, config(1, 500));
    let far = HybridTimestamp::new(
        remote.wall().saturating_add(Duration::from_secs(1)),
        0,
        NodeId::new(2),
    );
    assert!(matches!(
        atomic.update(far),
        Err(HybridClockError::TooFarAhead { .. })
    ));
}

#[test]
fn atomic_clock_issues_distinct_increasing_timestamps_across_threads() {
    let clock = std::sync::Arc::new(AtomicHybridClock::new(SystemClock::new(), config(1, 500)));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let clock = std::sync::Arc::clone(&clock);
            std::thread::spawn(move || {
                let mut mine = Vec::with_capacity(50_000);
                for i in 0..50_000u64 {
                    if i % 7 == 0 {
                        let received =
                            HybridTimestamp::new(clock.physical_clock().wall(), 3, NodeId::new(9));
                        mine.push(clock.update(received).unwrap());
                    } else {
                        mine.push(clock.now());
                    }
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let mine = t.join().unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "a thread saw time go back"
        );
        all.extend(mine);
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a timestamp was issued twice");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn encoding_round_trips_and_preserves_order(
        a_time: u64,
        a_node: u64,
        // `b` is often at the same time as `a` or within a few counter steps of it, where
        // the logical counter, a carry into the physical part, or the node id decides.
        b_delta in prop_oneof![Just(0i64), -3i64..=3, any::<i64>()],
        b_node in prop_oneof![Just(None), any::<u64>().prop_map(Some)],
    ) {
        let b_time = a_time.wrapping_add_signed(b_delta);
        let a = HybridTimestamp::from_time(a_time, NodeId::try_new(a_node));
        let b = HybridTimestamp::from_time(b_time, NodeId::try_new(b_node.unwrap_or(a_node)));
        prop_assert_eq!(HybridTimestamp::from_bytes(a.to_bytes()), a);
        prop_assert_eq!(HybridTimestamp::decode(&a.to_bytes()).unwrap(), a);
        prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
        // Nearby times too, where the logical counter decides.
        let c = HybridTimestamp::from_time(a_time ^ 1, NodeId::try_new(a_node));
        prop_assert_eq!(a.cmp(&c), a.to_bytes().cmp(&c.to_bytes()));
        let bytes = postcard::to_allocvec(&a).unwrap();
        prop_assert_eq!(postcard::from_bytes::<HybridTimestamp>(&bytes).unwrap(), a);
    }

    #[test]
    fn parts_round_trip(physical: u64, logical: u16, node: u64) {
        let ts = HybridTimestamp::new(WallTime::from_nanos(physical), logical, NodeId::try_new(node));
        prop_assert_eq!(ts.physical().as_nanos(), physical & !0xFFFF);
        prop_assert_eq!(ts.logical(), logical);
        prop_assert_eq!(ts.node(), NodeId::try_new(node));
        prop_assert!(ts.physical() <= WallTime::from_nanos(physical));
    }
}
