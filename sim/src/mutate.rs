//! Damaged bytes for testing decoders: bit flips, truncations, splices, and length or count
//! fields set to zero or to huge values, drawn from a [`SimRng`].
//!
//! Whatever reads bytes from a disk or a network must turn any of these into an error or a
//! valid value: never a panic, never an allocation the input does not justify. Mutating a
//! valid encoding reaches deeper into a decoder than random bytes do, since most of the
//! input still parses. Synod's decoder tests draw a seed with proptest, damage a valid
//! encoding with [`mutate`], and check the decoder's answer; its cargo-fuzz targets do the
//! same with coverage feedback.
//!
//! ```
//! use synod_sim::SimRng;
//! use synod_sim::mutate::{Mutation, mutate};
//!
//! let valid = b"*1\r\n$4\r\nPING\r\n".to_vec();
//! let mut rng = SimRng::new(7);
//! let damaged = mutate(&valid, &mut rng);
//! assert_ne!(damaged, valid);
//!
//! let mut bytes = valid.clone();
//! Mutation::Truncate { len: 4 }.apply(&mut bytes);
//! assert_eq!(bytes, b"*1\r\n");
//! ```

use crate::SimRng;

/// Values a length or count field is set to: zero, and the largest a field of each common
/// encoding can hold (little-endian 32- and 64-bit integers, LEB128 varints as postcard
/// writes them, decimal text as RESP writes it).
pub const FIELD_VALUES: &[&[u8]] = &[
    &[0],
    &[0, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0xff; 8],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    b"0",
    b"-1",
    b"4294967296",
    b"99999999999999999999",
];

/// One change to a byte string. Positions past the end are taken modulo the length.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mutation {
    /// Flips bit `bit % 8` of the byte at `at`.
    FlipBit {
        /// The byte.
        at: usize,
        /// The bit.
        bit: u8,
    },
    /// Keeps only the first `len` bytes (a torn write, a closed connection).
    Truncate {
        /// The bytes kept.
        len: usize,
    },
    /// Inserts at `to` a copy of `len` bytes from `from` (a misdirected or repeated write).
    Splice {
        /// Where the copied bytes start.
        from: usize,
        /// How many are copied (fewer if the input ends first).
        len: usize,
        /// Where the copy goes.
        to: usize,
    },
    /// Writes `value` over the bytes at `at`, growing the input if it ends first: a
    /// length or count field set to one of [`FIELD_VALUES`].
    Overwrite {
        /// Where the field starts.
        at: usize,
        /// Its new bytes.
        value: Vec<u8>,
    },
}

impl Mutation {
    /// A mutation of an input of `len` bytes, drawn from `rng`.
    pub fn draw(len: usize, rng: &mut SimRng) -> Mutation {
        let len = len.max(1) as u64;
        let mut at = || rng.below(len) as usize;
        let (a, b) = (at(), at());
        match rng.below(4) {
            0 => Mutation::FlipBit {
                at: a,
                bit: rng.below(8) as u8,
            },
            1 => Mutation::Truncate { len: a },
            2 => Mutation::Splice {
                from: a,
                len: rng.between(1, 32) as usize,
                to: b,
            },
            _ => Mutation::Overwrite {
                at: a,
                value: rng.pick(FIELD_VALUES).expect("not empty").to_vec(),
            },
        }
    }

    /// Applies the mutation to `bytes` (an empty input stays empty, except for an
    /// overwrite).
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let n = bytes.len();
        match self {
            Mutation::FlipBit { at, bit } if n > 0 => bytes[at % n] ^= 1 << (bit % 8),
            Mutation::Truncate { len } => bytes.truncate(*len),
            Mutation::Splice { from, len, to } if n > 0 => {
                let from = from % n;
                let copy = bytes[from..(from + len).min(n)].to_vec();
                let to = to % (n + 1);
                bytes.splice(to..to, copy);
            }
            Mutation::Overwrite { at, value } => {
                let at = if n == 0 { 0 } else { at % n };
                let end = at + value.len();
                if end > n {
                    bytes.resize(end, 0);
                }
                bytes[at..end].copy_from_slice(value);
            }
            _ => {}
        }
    }
}

/// `bytes` with one to four mutations drawn from `rng` applied.
pub fn mutate(bytes: &[u8], rng: &mut SimRng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.between(1, 4) {
        Mutation::draw(out.len(), rng).apply(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mutation_does_what_it_says() {
        let base = b"abcdef".to_vec();
        let applied = |m: Mutation| {
            let mut b = base.clone();
            m.apply(&mut b);
            b
        };
        assert_eq!(applied(Mutation::FlipBit { at: 7, bit: 9 }), b"a`cdef");
        assert_eq!(applied(Mutation::Truncate { len: 2 }), b"ab");
        assert_eq!(applied(Mutation::Truncate { len: 99 }), b"abcdef");
        let splice = Mutation::Splice {
            from: 4,
            len: 9,
            to: 1,
        };
        assert_eq!(applied(splice), b"aefbcdef");
        let overwrite = Mutation::Overwrite {
            at: 4,
            value: vec![0xff; 4],
        };
        assert_eq!(applied(overwrite), b"abcd\xff\xff\xff\xff");
        let mut empty = Vec::new();
        Mutation::FlipBit { at: 3, bit: 1 }.apply(&mut empty);
        Mutation::Splice {
            from: 0,
            len: 4,
            to: 0,
        }
        .apply(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn mutations_are_drawn_from_the_seed_and_change_the_input() {
        let base = vec![0x55u8; 40];
        let draw = |seed| mutate(&base, &mut SimRng::new(seed));
        assert_eq!(draw(3), draw(3));
        let changed = (0..200).filter(|&s| draw(s) != base).count();
        // An overwrite can write the bytes that were there; nothing else leaves it unchanged.
        assert!(changed > 190, "{changed} of 200 changed");
    }
}
