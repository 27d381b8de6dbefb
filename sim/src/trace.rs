//! The trace hash: a deterministic 64-bit digest of every event a run processes.
//!
//! Two runs with the same seed must produce the same trace hash; a difference means some
//! source of nondeterminism leaked in (a `HashMap` iteration, the OS clock, a thread). The
//! hasher is fixed and seedless, unlike `std`'s `RandomState`, so it can also hash user
//! messages through their `Hash` implementations.

use std::hash::Hasher;

/// A fast, fixed, seedless hasher (a multiply-rotate mix in the style of FxHash, with a
/// final avalanche). Not collision resistant against an adversary; it does not need to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHasher {
    state: u64,
}

const K: u64 = 0x517c_c1b7_2722_0a95;

impl TraceHasher {
    /// A hasher in its initial state.
    #[must_use]
    pub const fn new() -> Self {
        TraceHasher {
            state: 0x243f_6a88_85a3_08d3,
        }
    }

    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Default for TraceHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher for TraceHasher {
    fn finish(&self) -> u64 {
        let mut z = self.state;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    #[test]
    fn equal_inputs_equal_hashes_and_order_matters() {
        let h = |items: &[(u32, &str)]| {
            let mut hasher = TraceHasher::new();
            items.hash(&mut hasher);
            hasher.finish()
        };
        assert_eq!(h(&[(1, "a"), (2, "b")]), h(&[(1, "a"), (2, "b")]));
        assert_ne!(h(&[(1, "a"), (2, "b")]), h(&[(2, "b"), (1, "a")]));
        assert_ne!(h(&[(1, "ab")]), h(&[(1, "a")]));
    }
}
