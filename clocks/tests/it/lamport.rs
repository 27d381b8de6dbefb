//! Lamport clocks: receive after send, and the atomic form under threads.

use std::sync::Arc;

use synod_clocks::{AtomicLamportClock, LamportClock, LamportTimestamp};

use crate::{Rng, chance};

#[test]
fn every_receive_orders_after_its_send() {
    let mut rng = Rng::new(7);
    let mut clocks: [LamportClock; 4] = Default::default();
    let mut network: Vec<(usize, LamportTimestamp)> = Vec::new();
    let mut delivered = 0;
    for _ in 0..20_000 {
        let n = rng.below(4) as usize;
        if chance(&mut rng, 50) {
            let sent = clocks[n].tick().unwrap();
            network.push((rng.below(4) as usize, sent));
        } else if !network.is_empty() {
            let (to, sent) = network.swap_remove(rng.below(network.len() as u64) as usize);
            let before = clocks[to].current();
            let received = clocks[to].observe(sent).unwrap();
            assert!(received > sent && received > before);
            delivered += 1;
        }
    }
    assert!(delivered > 1000);
}

#[test]
fn atomic_clock_never_issues_a_timestamp_twice() {
    let clock = Arc::new(AtomicLamportClock::new());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                (0..50_000u64)
                    .map(|i| {
                        if (i + t) % 5 == 0 {
                            clock.observe(LamportTimestamp::new(i)).unwrap()
                        } else {
                            clock.tick().unwrap()
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n);
    assert_eq!(clock.current(), *all.last().unwrap());
}
