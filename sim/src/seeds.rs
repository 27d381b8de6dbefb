//! Choosing seeds, and printing how to replay a failing one.
//!
//! Simulation tests run many seeds and must say, when one fails, which seed it was and the
//! exact command that replays it. [`SeedRunner`] does both, reading these environment
//! variables:
//!
//! - `SYNOD_SEED=<u64>`: run only this seed (the replay variable).
//! - `SYNOD_SEEDS=<count>`: run this many seeds instead of the test's CI default.
//! - `SYNOD_SEED_BASE=<u64>`: start the seed range here (default 0), to explore new seeds
//!   without re-running old ones.
//!
//! ```
//! use synod_sim::seeds::SeedRunner;
//! let runner = SeedRunner::new("synod-sim", "doc::example");
//! assert!(runner.replay_command(42).starts_with("SYNOD_SEED=42 cargo test -p synod-sim"));
//! let ran = runner.run(3, |seed| if seed < 1_000 { Ok(()) } else { Err("too big".into()) });
//! assert!(ran >= 1);
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Runs a test body over a set of seeds and reports the first failure with its replay
/// command.
#[derive(Debug, Clone)]
pub struct SeedRunner {
    package: String,
    target: String,
    test: String,
}

/// The value of the environment variable `name` as a `u64` (decimal or `0x` hex), or
/// `None` if it is not set.
///
/// # Panics
///
/// If it is set but is not such a number: a mistyped `SYNOD_SEED` must not silently run
/// the default seeds instead of the one asked for.
fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var_os(name)?;
    match raw.to_str().and_then(parse_u64) {
        Some(n) => Some(n),
        None => panic!("{name}={raw:?} is not a u64 (decimal, or hex with 0x)"),
    }
}

/// A `u64` in decimal or in hex with `0x`, surrounding spaces allowed.
fn parse_u64(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

impl SeedRunner {
    /// A runner for the test `test` (its full path in its test target, for example
    /// `register::correct_register_is_linearizable`) of the package `package`, in the
    /// integration-test binary `it` (`tests/it/main.rs`, the layout Synod's crates use);
    /// name another target with [`SeedRunner::target`].
    #[must_use]
    pub fn new(package: &str, test: &str) -> Self {
        SeedRunner {
            package: package.to_owned(),
            target: "--test it".to_owned(),
            test: test.to_owned(),
        }
    }

    /// The cargo flags that select the test's target in the replay command: `"--lib"` for a
    /// unit test, `"--test NAME"` for the integration test `tests/NAME.rs`.
    ///
    /// ```
    /// use synod_sim::seeds::SeedRunner;
    /// let runner = SeedRunner::new("my-crate", "cluster::survives_crashes").target("--test cluster");
    /// assert_eq!(
    ///     runner.replay_command(7),
    ///     "SYNOD_SEED=7 cargo test -p my-crate --test cluster cluster::survives_crashes -- --exact --nocapture"
    /// );
    /// ```
    #[must_use]
    pub fn target(mut self, cargo_flags: &str) -> Self {
        cargo_flags.clone_into(&mut self.target);
        self
    }

    /// The seeds to run: `SYNOD_SEED` alone if set, otherwise `SYNOD_SEEDS` (or
    /// `default_count`) seeds from `SYNOD_SEED_BASE` (or 0).
    ///
    /// # Panics
    ///
    /// If one of these variables is set to something other than a `u64` (decimal, or hex
    /// with `0x`).
    #[must_use]
    pub fn seeds(&self, default_count: u64) -> Vec<u64> {
        if let Some(seed) = env_u64("SYNOD_SEED") {
            return vec![seed];
        }
        let count = env_u64("SYNOD_SEEDS").unwrap_or(default_count);
        let base = env_u64("SYNOD_SEED_BASE").unwrap_or(0);
        (0..count).map(|i| base.wrapping_add(i)).collect()
    }

    /// Whether a single seed was requested with `SYNOD_SEED`.
    ///
    /// # Panics
    ///
    /// As for [`SeedRunner::seeds`].
    #[must_use]
    pub fn replaying(&self) -> bool {
        env_u64("SYNOD_SEED").is_some()
    }

    /// The shell command that replays `seed`.
    #[must_use]
    pub fn replay_command(&self, seed: u64) -> String {
        format!(
            "SYNOD_SEED={seed} cargo test -p {} {} {} -- --exact --nocapture",
            self.package, self.target, self.test
        )
    }

    /// Runs `body` for each seed of [`SeedRunner::seeds`] and returns how many ran.
    ///
    /// # Panics
    ///
    /// On the first seed whose body returns an error or panics, with the seed, the error
    /// and the replay command in the message; and as for [`SeedRunner::seeds`].
    pub fn run(&self, default_count: u64, mut body: impl FnMut(u64) -> Result<(), String>) -> u64 {
        let seeds = self.seeds(default_count);
        for &seed in &seeds {
            match catch_unwind(AssertUnwindSafe(|| body(seed))) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => panic!(
                    "seed {seed} failed: {why}\nreplay with: {}",
                    self.replay_command(seed)
                ),
                Err(panic) => {
                    eprintln!(
                        "seed {seed} panicked\nreplay with: {}",
                        self.replay_command(seed)
                    );
                    resume_unwind(panic);
                }
            }
        }
        seeds.len() as u64
    }

    /// Runs `body` for each seed until one fails, and returns that seed with its error and
    /// how many seeds it took (for tests that must catch a deliberately broken system).
    ///
    /// # Panics
    ///
    /// As for [`SeedRunner::seeds`].
    pub fn find_failure(
        &self,
        default_count: u64,
        mut body: impl FnMut(u64) -> Result<(), String>,
    ) -> Option<(u64, String, u64)> {
        for (i, seed) in self.seeds(default_count).into_iter().enumerate() {
            if let Err(why) = body(seed) {
                return Some((seed, why, i as u64 + 1));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex_and_nothing_else() {
        assert_eq!(parse_u64("102"), Some(102));
        assert_eq!(parse_u64(" 0x66 "), Some(102));
        assert_eq!(parse_u64("0XFF"), Some(255));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "seed", "-1", "1e3", "0x", "0xg", "18446744073709551616"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_unset_variable_is_none() {
        assert_eq!(env_u64("SYNOD_SIM_TEST_SURELY_UNSET_VARIABLE"), None);
    }
}
