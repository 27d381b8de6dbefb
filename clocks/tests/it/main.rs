//! Integration tests of synod-clocks: one binary, one module per clock.
//!
//! Seeded tests print their seed counts and figures with `--nocapture`. Set
//! `SYNOD_CLOCKS_SEEDS` to run more seeds than the CI default.

mod clock_bound;
mod dvv;
mod hlc;
mod lamport;
mod version_vector;

/// A small seeded PRNG (splitmix64): deterministic, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The number of seeds for seeded tests: `SYNOD_CLOCKS_SEEDS` or `default`.
pub fn seeds(default: u64) -> u64 {
    std::env::var("SYNOD_CLOCKS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
