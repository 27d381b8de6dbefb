//! Determinism: the same seed gives the same run, verified by the trace hash.

use synod_sim::seeds::SeedRunner;

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
