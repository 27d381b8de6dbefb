//! Redis's glob-style key patterns, as `KEYS` and `SCAN ... MATCH` take them.
//!
//! `*` matches any run of bytes (the empty one too), `?` any one byte, `[abc]` one of the
//! bytes listed, `[a-z]` one in the range, `[^abc]` one not listed, and `\x` the byte `x`
//! itself. A `[` without its `]` matches itself. Matching costs at most the product of the
//! pattern's and the key's lengths (one `*` is backtracked to at a time), however the
//! pattern is written.
//!
//! ```
//! use synod_examples::consistent_core::pattern::Pattern;
//!
//! let p = Pattern::new(b"user:[0-9]*:na?e");
//! assert!(p.matches(b"user:42:name"));
//! assert!(!p.matches(b"user:x:name"));
//! assert_eq!(p.literal_prefix(), b"user:");
//! ```

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Token::Byte(x) => *x == b,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
            }
        }
    }
}

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
    prefix: Vec<u8>,
}

impl Pattern {
    /// Compiles `pattern` (any bytes: there is no invalid pattern).
    #[must_use]
    pub fn new(pattern: &[u8]) -> Pattern {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            let b = pattern[i];
            i += 1;
            match b {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                b'?' => tokens.push(Token::Any),
                b'\\' if i < pattern.len() => {
                    tokens.push(Token::Byte(pattern[i]));
                    i += 1;
                }
                b'[' => match class(&pattern[i..]) {
                    Some((token, used)) => {
                        tokens.push(token);
                        i += used;
                    }
                    None => tokens.push(Token::Byte(b'[')),
                },
                _ => tokens.push(Token::Byte(b)),
            }
        }
        let prefix = tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect();
        Pattern { tokens, prefix }
    }

    /// The bytes every matching key starts with (a scan can start there).
    #[must_use]
    pub fn literal_prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Whether `key` matches.
    #[must_use]
    pub fn matches(&self, key: &[u8]) -> bool {
        let tokens = &self.tokens;
        let (mut p, mut k) = (0, 0);
        // The last `*` seen and the key position it is tried to cover up to.
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, k));
                    p += 1;
                }
                Some(t) if t.matches(key[k]) => {
                    p += 1;
                    k += 1;
                }
                _ => match star {
                    Some((sp, sk)) => {
                        star = Some((sp, sk + 1));
                        p = sp + 1;
                        k = sk + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|t| *t == Token::Star)
    }
}

/// A class after its `[`: the token and the bytes it took (its `]` included), or `None`
/// if it has no closing `]`.
fn class(rest: &[u8]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = rest.first() == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let mut b = *rest.get(i)?;
        i += 1;
        match b {
            b']' => return Some((Token::Class { negated, ranges }, i)),
            b'\\' => {
                b = *rest.get(i)?;
                i += 1;
            }
            _ => {}
        }
        if rest.get(i) == Some(&b'-') && rest.get(i + 1).is_some_and(|&c| c != b']') {
            let hi = rest[i + 1];
            i += 2;
            ranges.push((b.min(hi), b.max(hi)));
        } else {
            ranges.push((b, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_redis_documents() {
        let cases: [(&str, &str, bool); 16] = [
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "hllo", true),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hallo", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("[abc", "[abc", true),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                Pattern::new(pattern.as_bytes()).matches(key.as_bytes()),
                expected,
                "{pattern} ~ {key}"
            );
        }
    }

    #[test]
    fn a_pattern_built_to_backtrack_is_still_quick() {
        let pattern = Pattern::new(
            &b"a*"
                .repeat(50)
                .into_iter()
                .chain(*b"b")
                .collect::<Vec<_>>(),
        );
        assert!(!pattern.matches(&[b'a'; 5000]));
    }
}
