//! Determinism: the same seed gives the same run, verified by the trace hash.

use std::time::Duration;

use synod_sim::seeds::SeedRunner;
use synod_sim::{
    Context, NemesisConfig, NoClients, Node, NodeId, RequestId, SimConfig, Simulation, TimerId,
};

use crate::register::run;
use crate::register_impl::Variant;

#[test]
fn same_seed_same_trace_on_a_sample_of_seeds() {
    let runner = SeedRunner::new(
        "synod-sim",
        "determinism::same_seed_same_trace_on_a_sample_of_seeds",
    );
    let mut hashes = Vec::new();
    let seeds = runner.run(100, |seed| {
        let a = run(Variant::Correct, seed);
        let b = run(Variant::Correct, seed);
        hashes.push(a.trace_hash);
        if a.trace_hash != b.trace_hash || a.events != b.events || a.history != b.history {
            return Err(format!(
                "nondeterminism: trace hashes {:#x} and {:#x}",
                a.trace_hash, b.trace_hash
            ));
        }
        Ok(())
    });
    hashes.sort_unstable();
    hashes.dedup();
    println!(
        "determinism: {seeds} seeds run twice, {} distinct traces",
        hashes.len()
    );
    assert_eq!(
        hashes.len() as u64,
        seeds,
        "different seeds give different runs"
    );
}

/// Nodes that ping each other every millisecond with a counter they never look at; node 0
/// adds `tweak` to the payload of its `nth` ping only.
struct Pinger {
    sent: u64,
    nth: u64,
    tweak: u64,
}

impl Node for Pinger {
    type Message = u64;
    type Request = ();
    type Response = ();

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_message(&mut self, _: &mut Context<'_, Self>, _: NodeId, _: u64) {}

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        self.sent += 1;
        let extra = if ctx.id() == NodeId::new(1) && self.sent == self.nth {
            self.tweak
        } else {
            0
        };
        let to = NodeId::new(ctx.id().get() % ctx.nodes() as u64 + 1);
        ctx.send(to, self.sent + extra);
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_request(&mut self, _: &mut Context<'_, Self>, _: RequestId, _: ()) {}
}

fn ping_run(seed: u64, nth: u64, tweak: u64) -> (u64, u64) {
    let config = SimConfig::builder(3)
        .clients(0)
        .safety_time(Duration::from_millis(100))
        .nemesis(NemesisConfig::disabled())
        .build()
        .expect("valid");
    let report = Simulation::new(
        config,
        seed,
        move |_| Pinger {
            sent: 0,
            nth,
            tweak,
        },
        NoClients,
    )
    .run();
    (report.trace_hash, report.events)
}

#[test]
fn changing_one_delivered_message_changes_the_trace_hash() {
    for seed in 0..5 {
        let (base, events) = ping_run(seed, 50, 0);
        assert_eq!(ping_run(seed, 50, 0), (base, events));
        // One message's payload differs: the same events happen, but the hash differs.
        for (nth, tweak) in [(1, 1), (50, 1), (50, 1 << 40), (90, 7)] {
            let (hash, same_events) = ping_run(seed, nth, tweak);
            assert_eq!(same_events, events, "the payload does not change the run");
            assert_ne!(
                hash, base,
                "seed {seed}: ping {nth} + {tweak} left the hash unchanged"
            );
        }
    }
}
