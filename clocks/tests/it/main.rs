//! Integration tests of synod-clocks: one binary, one module per clock.
//!
//! Seeded tests print their seed counts and figures with `--nocapture`. Set
//! `SYNOD_CLOCKS_SEEDS` to run more seeds than the CI default.

mod clock_bound;
mod dvv;
mod hlc;
mod lamport;
mod version_vector;

/// The one seeded generator of the project.
pub use synod_node::Rng;

/// True with probability `percent`/100, drawn from `rng`.
pub fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

/// The number of seeds for seeded tests: `SYNOD_CLOCKS_SEEDS` or `default`.
pub fn seeds(default: u64) -> u64 {
    std::env::var("SYNOD_CLOCKS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
