//! Seeded pseudo-random numbers: splitmix64 to expand a seed, xoshiro256** for the stream.
//!
//! The one seeded generator of the workspace. A state machine draws its randomness (election
//! timeouts, gossip targets, probe order) from an [`Rng`] seeded by its configuration, and the
//! simulator draws every fault from one seeded from the run's seed, so that the same seed
//! replays the same run. The generator is small, fast and not cryptographic; it is written
//! here because the workspace takes no dependency on `rand`.

/// One step of splitmix64: advances `state` and returns the next output.
///
/// Used to expand a single `u64` seed into the larger xoshiro state, and to derive
/// independent seeds from one base seed.
#[must_use]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A probability in parts per million: `Probability::from_ppm(1_000_000)` is certainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Probability(u32);

impl Probability {
    /// Never.
    pub const NEVER: Probability = Probability(0);
    /// Always.
    pub const ALWAYS: Probability = Probability(1_000_000);

    /// A probability of `ppm` in a million, capped at certainty.
    #[must_use]
    pub const fn from_ppm(ppm: u32) -> Self {
        if ppm > 1_000_000 {
            Probability(1_000_000)
        } else {
            Probability(ppm)
        }
    }

    /// A probability of `percent` in a hundred, capped at certainty.
    #[must_use]
    pub const fn from_percent(percent: u32) -> Self {
        Self::from_ppm(percent.saturating_mul(10_000))
    }

    /// Parts per million.
    #[must_use]
    pub const fn as_ppm(self) -> u32 {
        self.0
    }
}

/// A seeded xoshiro256** generator.
///
/// ```
/// use synod_node::Rng;
/// let mut a = Rng::new(7);
/// let mut b = Rng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let roll = a.below(6);
/// assert!(roll < 6);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // splitmix64 never yields four zeros in a row, but keep the invariant explicit:
        // xoshiro's all-zero state is a fixed point.
        debug_assert!(s.iter().any(|&w| w != 0));
        Rng { s }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number in `0..n`, or 0 when `n` is 0.
    ///
    /// Uses the multiply-shift reduction; its bias is below 2^-32 for the small ranges a
    /// simulation draws from, which is irrelevant here.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi` (returns `lo` when `hi <= lo`).
    #[inline]
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: Probability) -> bool {
        match p.0 {
            0 => false,
            1_000_000 => true,
            ppm => self.below(1_000_000) < u64::from(ppm),
        }
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// An independent generator seeded from this one's stream.
    #[must_use]
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let mut c = Rng::new(2);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn below_and_between_stay_in_range_and_cover_it() {
        let mut r = Rng::new(3);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let x = r.below(6) as usize;
            seen[x] = true;
            let y = r.between(10, 12);
            assert!((10..=12).contains(&y));
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
        assert_eq!(r.between(5, 5), 5);
        let _ = r.between(0, u64::MAX);
    }

    #[test]
    fn chance_matches_its_probability_roughly() {
        let mut r = Rng::new(4);
        let hits = (0..100_000)
            .filter(|_| r.chance(Probability::from_percent(10)))
            .count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert!(!r.chance(Probability::NEVER));
        assert!(r.chance(Probability::ALWAYS));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(5);
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
