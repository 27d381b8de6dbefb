//! RESP, the Redis serialization protocol: the client protocol of the Consistent Core.
//!
//! Speaking RESP means `redis-cli`, `redis-benchmark` and any language's Redis client
//! work against the cluster unchanged. This module is the codec alone, with no I/O:
//! [`parse_command`] takes bytes received so far and returns a whole command (an array of
//! bulk strings, as clients send, or an inline command line, as a person types into
//! `telnet`), `None` if more bytes are needed, or a [`RespError`] for a stream that
//! cannot be a command. Every length is checked against [`Limits`] before anything is
//! buffered for it, so a hostile client cannot make the server hold more than
//! `request_bytes_max` bytes.
//!
//! [`Value`] and [`Value::encode`] write replies (RESP2: simple strings, errors,
//! integers, bulk strings, nil, arrays).
//!
//! ```
//! use synod_examples::consistent_core::resp::{parse_command, Limits};
//!
//! let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n";
//! let (args, used) = parse_command(wire, &Limits::default())?.expect("a whole command");
//! assert_eq!(args, [b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
//! let (args, _) = parse_command(&wire[used..], &Limits::default())?.expect("inline");
//! assert_eq!(args, [b"PING".to_vec()]);
//! # Ok::<(), synod_examples::consistent_core::resp::RespError>(())
//! ```

use std::fmt;

/// A parsed command and the bytes it took, or `None` if incomplete.
pub type Parsed = Option<(Vec<Vec<u8>>, usize)>;

/// Bounds on what one command may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one command.
    pub args_max: usize,
    /// Largest bulk string.
    pub bulk_bytes_max: usize,
    /// Largest whole command, and longest inline line.
    pub request_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            args_max: 4096,
            bulk_bytes_max: 1 << 20,
            request_bytes_max: 4 << 20,
        }
    }
}

/// Why a byte stream is not a RESP command. The connection cannot be resynchronised
/// after one of these: the server replies with the error and closes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    /// A length or count that is not a decimal number, or a missing `\r\n`.
    Malformed(&'static str),
    /// More arguments than `args_max`.
    TooManyArgs {
        /// What the client announced.
        count: u64,
        /// The limit.
        args_max: usize,
    },
    /// A bulk string longer than `bulk_bytes_max`, or a command (or inline line) longer
    /// than `request_bytes_max`.
    TooLarge {
        /// The size announced or seen.
        bytes: u64,
        /// The limit.
        bytes_max: usize,
    },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Malformed(what) => write!(f, "Protocol error: {what}"),
            RespError::TooManyArgs { count, args_max } => write!(
                f,
                "Protocol error: {count} arguments, more than the limit of {args_max}"
            ),
            RespError::TooLarge { bytes, bytes_max } => write!(
                f,
                "Protocol error: {bytes} bytes, more than the limit of {bytes_max}"
            ),
        }
    }
}

impl std::error::Error for RespError {}

/// Finds the `\r\n` ending the line at `from`: the line's end, or `None` if not yet
/// received.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn parse_decimal(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses one command from the front of `buf`: `Ok(Some((args, bytes used)))`,
/// `Ok(None)` if `buf` holds only part of one, or an error if it cannot be one.
///
/// # Errors
///
/// A [`RespError`] for malformed or oversize input.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Parsed, RespError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn too_large(bytes: usize, bytes_max: usize) -> RespError {
    RespError::TooLarge {
        bytes: bytes as u64,
        bytes_max,
    }
}

fn parse_array(buf: &[u8], limits: &Limits) -> Result<Parsed, RespError> {
    let header_max = 32;
    let Some(end) = line_end(buf, 0) else {
        if buf.len() > header_max {
            return Err(RespError::Malformed("array header too long"));
        }
        return Ok(None);
    };
    let count =
        parse_decimal(&buf[1..end]).ok_or(RespError::Malformed("invalid multibulk length"))?;
    if count < 0 {
        // A null array: nothing to do; consume it.
        return Ok(Some((Vec::new(), end + 2)));
    }
    let count = count as u64;
    if count > limits.args_max as u64 {
        return Err(RespError::TooManyArgs {
            count,
            args_max: limits.args_max,
        });
    }
    // Where each argument lies; copied out only once the command is whole, since a large
    // command is parsed again after every read until it is.
    let mut spans = Vec::with_capacity(count as usize);
    let mut at = end + 2;
    for _ in 0..count {
        if at > limits.request_bytes_max {
            return Err(too_large(at, limits.request_bytes_max));
        }
        let Some(&first) = buf.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(RespError::Malformed("expected '$'"));
        }
        let Some(end) = line_end(buf, at) else {
            if buf.len() - at > header_max {
                return Err(RespError::Malformed("bulk header too long"));
            }
            return Ok(None);
        };
        let len =
            parse_decimal(&buf[at + 1..end]).ok_or(RespError::Malformed("invalid bulk length"))?;
        if len < 0 {
            return Err(RespError::Malformed("invalid bulk length"));
        }
        let len = len as u64;
        if len > limits.bulk_bytes_max as u64 {
            return Err(RespError::TooLarge {
                bytes: len,
                bytes_max: limits.bulk_bytes_max,
            });
        }
        let len = len as usize;
        let start = end + 2;
        if start + len > limits.request_bytes_max {
            return Err(too_large(start + len, limits.request_bytes_max));
        }
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(RespError::Malformed("bulk string not followed by CRLF"));
        }
        spans.push(start..start + len);
        at = start + len + 2;
    }
    let args = spans.into_iter().map(|span| buf[span].to_vec()).collect();
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Parsed, RespError> {
    let end = match buf.iter().position(|&b| b == b'\n') {
        Some(end) => end,
        None if buf.len() > limits.request_bytes_max => {
            return Err(too_large(buf.len(), limits.request_bytes_max));
        }
        None => return Ok(None),
    };
    if end > limits.request_bytes_max {
        return Err(too_large(end, limits.request_bytes_max));
    }
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let words = || {
        line.split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
    };
    // Counted before anything is copied: a 4 MiB line of one-letter words would otherwise
    // become two million allocations (over 100 MiB) before being refused.
    let count = words().count();
    if count > limits.args_max {
        return Err(RespError::TooManyArgs {
            count: count as u64,
            args_max: limits.args_max,
        });
    }
    Ok(Some((words().map(<[u8]>::to_vec).collect(), end + 1)))
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the text after the `-` (a first word in capitals is the error kind).
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nabc`
    Bulk(Vec<u8>),
    /// `$-1`
    Nil,
    /// `*N` followed by the elements.
    Array(Vec<Value>),
}

impl Value {
    /// Appends the wire form to `out`. Newlines inside simple strings and errors become
    /// spaces, since they would end the line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(s) => line(out, b'+', s),
            Value::Error(s) => line(out, b'-', s),
            Value::Int(n) => line(out, b':', &n.to_string()),
            Value::Bulk(b) => {
                line(out, b'$', &b.len().to_string());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => {
                line(out, b'*', &items.len().to_string());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// Parses one reply from the front of `buf` (for clients): `Ok(Some((value, used)))`
    /// or `Ok(None)` if incomplete.
    ///
    /// # Errors
    ///
    /// A [`RespError`] if `buf` cannot start a reply.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, RespError> {
        // Checked whole before anything is copied: a client reading a large reply in
        // chunks calls this after every chunk, and copying what had arrived each time made
        // a 30 MiB reply take seconds.
        match parse_value(buf, 0, limits, 0, false)? {
            None => Ok(None),
            Some(_) => parse_value(buf, 0, limits, 0, true),
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Parses one reply at `at`; without `build`, only checks it and finds its end (the value
/// returned is then a placeholder).
fn parse_value(
    buf: &[u8],
    at: usize,
    limits: &Limits,
    depth: usize,
    build: bool,
) -> Result<Option<(Value, usize)>, RespError> {
    if depth > 8 {
        return Err(RespError::Malformed("nesting too deep"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1) else {
        if buf.len() - at > limits.request_bytes_max {
            return Err(too_large(buf.len() - at, limits.request_bytes_max));
        }
        return Ok(None);
    };
    let text = &buf[at + 1..end];
    let next = end + 2;
    let string = || String::from_utf8_lossy(text).into_owned();
    let number = || parse_decimal(text).ok_or(RespError::Malformed("invalid number"));
    match kind {
        b'+' => Ok(Some((Value::Simple(string()), next))),
        b'-' => Ok(Some((Value::Error(string()), next))),
        b':' => Ok(Some((Value::Int(number()?), next))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = len as u64;
            if len > limits.bulk_bytes_max as u64 {
                return Err(RespError::TooLarge {
                    bytes: len,
                    bytes_max: limits.bulk_bytes_max,
                });
            }
            let len = len as usize;
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            let value = if build {
                Value::Bulk(buf[next..next + len].to_vec())
            } else {
                Value::Nil
            };
            Ok(Some((value, next + len + 2)))
        }
        b'*' => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if count as u64 > limits.args_max as u64 {
                return Err(RespError::TooManyArgs {
                    count: count as u64,
                    args_max: limits.args_max,
                });
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..count {
                match parse_value(buf, at, limits, depth + 1, build)? {
                    Some((v, used)) => {
                        if build {
                            items.push(v);
                        }
                        at = used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), at)))
        }
        _ => Err(RespError::Malformed("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_command(args: &[&[u8]]) -> Vec<u8> {
        let value = Value::Array(args.iter().map(|a| Value::Bulk(a.to_vec())).collect());
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete_and_the_whole_parses() {
        let wire = encode_command(&[b"SET", b"key", b"va\r\nlue"]);
        for cut in 0..wire.len() {
            assert_eq!(
                parse_command(&wire[..cut], &Limits::default()),
                Ok(None),
                "{cut}"
            );
        }
        let (args, used) = parse_command(&wire, &Limits::default())
            .expect("valid")
            .expect("whole");
        assert_eq!(used, wire.len());
        assert_eq!(args[2], b"va\r\nlue");
    }

    #[test]
    fn bad_input_is_refused() {
        let limits = Limits {
            args_max: 4,
            bulk_bytes_max: 16,
            request_bytes_max: 64,
        };
        for (bad, what) in [
            (&b"*x\r\n"[..], "count"),
            (b"*2\r\n$3\r\nGET\r\n:1\r\n", "not a bulk"),
            (b"*1\r\n$3\r\nGETxx", "no crlf"),
            (b"*1\r\n$-5\r\n", "negative bulk"),
            (b"*99\r\n", "too many args"),
            (b"*1\r\n$17\r\n", "bulk too big"),
            (b"*1\r\n$99999999999999999999\r\n", "overflowing length"),
            (&[b'*'; 40][..], "endless header"),
        ] {
            assert!(parse_command(bad, &limits).is_err(), "{what}");
        }
        let long_line = vec![b'a'; 65];
        assert!(matches!(
            parse_command(&long_line, &limits),
            Err(RespError::TooLarge { .. })
        ));
    }

    #[test]
    fn inline_commands_split_on_whitespace() {
        let (args, used) = parse_command(b"  get   k \r\nrest", &Limits::default())
            .expect("valid")
            .expect("whole");
        assert_eq!(args, [b"get".to_vec(), b"k".to_vec()]);
        assert_eq!(used, 12);
    }

    #[test]
    fn replies_round_trip() {
        let value = Value::Array(vec![
            Value::Simple("OK".into()),
            Value::Error("ERR bad\nthing".into()),
            Value::Int(-7),
            Value::Bulk(b"x\r\ny".to_vec()),
            Value::Nil,
            Value::Array(vec![]),
        ]);
        let mut wire = Vec::new();
        value.encode(&mut wire);
        let (parsed, used) = Value::parse(&wire, &Limits::default())
            .expect("valid")
            .expect("whole");
        assert_eq!(used, wire.len());
        let Value::Array(items) = parsed else {
            panic!("an array")
        };
        assert_eq!(items[1], Value::Error("ERR bad thing".into()));
        assert_eq!(items[3], Value::Bulk(b"x\r\ny".to_vec()));
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_and_the_whole_parses() {
        let value = Value::Array(vec![
            Value::Bulk(b"a\r\nb".to_vec()),
            Value::Array(vec![Value::Int(3), Value::Nil, Value::Simple("OK".into())]),
            Value::Error("ERR x".into()),
            Value::Bulk(Vec::new()),
        ]);
        let mut wire = Vec::new();
        value.encode(&mut wire);
        for cut in 0..wire.len() {
            assert_eq!(
                Value::parse(&wire[..cut], &Limits::default()),
                Ok(None),
                "{cut}"
            );
        }
        wire.extend_from_slice(b"+next\r\n");
        let (parsed, used) = Value::parse(&wire, &Limits::default())
            .expect("valid")
            .expect("whole");
        assert_eq!(parsed, value);
        assert_eq!(&wire[used..], b"+next\r\n");
    }

    /// A small deterministic PRNG (splitmix64) for the fuzz-style test below.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn random_bytes_and_mutated_commands_never_panic_and_stay_in_bounds() {
        let limits = Limits {
            args_max: 8,
            bulk_bytes_max: 64,
            request_bytes_max: 256,
        };
        let mut state = 7;
        let base = encode_command(&[b"MGET", b"a", b"bb", b"ccc"]);
        for _ in 0..20_000 {
            let mut input = base.clone();
            let edits = splitmix(&mut state) % 4;
            for _ in 0..edits {
                let at = (splitmix(&mut state) as usize) % input.len();
                input[at] = splitmix(&mut state) as u8;
            }
            if splitmix(&mut state).is_multiple_of(3) {
                let n = (splitmix(&mut state) % 300) as usize;
                input = (0..n).map(|_| splitmix(&mut state) as u8).collect();
            }
            if let Ok(Some((args, used))) = parse_command(&input, &limits) {
                assert!(used <= input.len());
                assert!(args.len() <= limits.args_max);
                assert!(args.iter().all(|a| a.len() <= limits.request_bytes_max));
            }
            let _ = Value::parse(&input, &limits);
        }
    }
}
