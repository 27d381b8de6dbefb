//! The RESP codec: commands parsed from a client's bytes, replies encoded and parsed.
//!
//! This module is the codec alone, with no I/O:
//! [`parse_command`] takes bytes received so far and returns a whole command (an array of
//! bulk strings, as clients send, or an inline command line, as a person types into
//! `telnet`), `None` if more bytes are needed, or a [`RespError`] for a stream that
//! cannot be a command. Every length is checked against [`Limits`] before anything is
//! buffered for it, so a hostile client cannot make the server hold more than
//! `request_bytes_max` bytes. A server reading a connection uses a [`CommandParser`],
//! which remembers how far it got, so that a command arriving in many small reads is
//! scanned once rather than once per read.
//!
//! [`Value`] and [`Value::encode`] write replies: RESP2's simple strings, errors,
//! integers, bulk strings, nil and arrays, and the RESP3 types the servers reply with
//! after `HELLO 3` (null, booleans, maps and push frames). [`Value::into_resp2`] and
//! [`Value::into_resp3`] turn a reply into what a connection of either protocol reads.
//!
//! ```
//! use synod_examples::resp::{parse_command, Limits};
//!
//! let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n";
//! let (args, used) = parse_command(wire, &Limits::default())?.expect("a whole command");
//! assert_eq!(args, [b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
//! let (args, _) = parse_command(&wire[used..], &Limits::default())?.expect("inline");
//! assert_eq!(args, [b"PING".to_vec()]);
//! # Ok::<(), synod_examples::resp::RespError>(())
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
/// It starts from the beginning every time: to parse a stream as it arrives, use a
/// [`CommandParser`].
///
/// # Errors
///
/// A [`RespError`] for malformed or oversize input.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Parsed, RespError> {
    CommandParser::default().parse(buf, limits)
}

/// Parses the commands of one connection as its bytes arrive, resuming where the last
/// call stopped: a command that arrives a few bytes per read costs its length to parse,
/// not its length once per read (quadratic for one slow client of a 4 MiB command).
///
/// Between calls, the caller may only append to the buffer, until a command is returned;
/// then it removes that command's bytes from the front before the next call. After an
/// error the connection cannot be resynchronised.
///
/// ```
/// use synod_examples::resp::{CommandParser, Limits};
///
/// let mut parser = CommandParser::default();
/// let mut buf = b"SET k ".to_vec();
/// assert_eq!(parser.parse(&buf, &Limits::default())?, None);
/// buf.extend_from_slice(b"v\r\n");
/// let (args, used) = parser.parse(&buf, &Limits::default())?.expect("whole");
/// assert_eq!((args.len(), used), (3, buf.len()));
/// # Ok::<(), synod_examples::resp::RespError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandParser {
    progress: Progress,
    /// Bytes looked at, for the tests that check the parser never goes back over them.
    #[cfg(test)]
    examined: usize,
}

/// How far into the command at the front of the buffer a [`CommandParser`] got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Progress {
    /// Nothing parsed yet.
    #[default]
    Start,
    /// An inline command whose first `scanned` bytes hold no newline.
    Inline { scanned: usize },
    /// An array of `count` bulk strings, the first of which lie at `spans`; the next one's
    /// header starts at `at`.
    Array {
        count: usize,
        spans: Vec<std::ops::Range<usize>>,
        at: usize,
    },
}

impl CommandParser {
    /// Parses the command at the front of `buf`, carrying on from the last call:
    /// `Ok(Some((args, bytes used)))`, `Ok(None)` if `buf` holds only part of it, or an
    /// error if it cannot be one.
    ///
    /// # Errors
    ///
    /// A [`RespError`] for malformed or oversize input.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Parsed, RespError> {
        let mut examined = 0;
        let parsed = resume(&mut self.progress, buf, limits, &mut examined);
        #[cfg(test)]
        {
            self.examined += examined;
        }
        if !matches!(parsed, Ok(None)) {
            self.progress = Progress::Start;
        }
        parsed
    }
}

/// The longest length line (`*N` or `$N`) before its `\r\n`.
const HEADER_BYTES_MAX: usize = 32;

/// Carries on parsing the command at the front of `buf` from `progress`; adds the bytes
/// it looks at to `examined`.
fn resume(
    progress: &mut Progress,
    buf: &[u8],
    limits: &Limits,
    examined: &mut usize,
) -> Result<Parsed, RespError> {
    if *progress == Progress::Start {
        match buf.first() {
            None => return Ok(None),
            Some(b'*') => {
                let Some(end) = header_end(buf, 0, examined)? else {
                    return Ok(None);
                };
                let count = parse_decimal(&buf[1..end])
                    .ok_or(RespError::Malformed("invalid multibulk length"))?;
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
                *progress = Progress::Array {
                    count: count as usize,
                    spans: Vec::new(),
                    at: end + 2,
                };
            }
            Some(_) => *progress = Progress::Inline { scanned: 0 },
        }
    }
    match progress {
        Progress::Start => Ok(None),
        Progress::Inline { scanned } => inline(buf, scanned, limits, examined),
        Progress::Array { count, spans, at } => array(buf, *count, spans, at, limits, examined),
    }
}

/// The end of the length line at `at` (the index of its `\r`), `None` if it has not all
/// arrived; it looks no further than a length line can be long.
fn header_end(buf: &[u8], at: usize, examined: &mut usize) -> Result<Option<usize>, RespError> {
    let window = &buf[..buf.len().min(at + HEADER_BYTES_MAX + 2)];
    *examined += window.len() - at;
    match line_end(window, at) {
        Some(end) => Ok(Some(end)),
        None if buf.len() - at > HEADER_BYTES_MAX => {
            Err(RespError::Malformed("length line too long"))
        }
        None => Ok(None),
    }
}

/// Reads an array's bulk strings, from the one whose header starts at `at`; `spans` are
/// where the earlier ones lie (copied out only once the command is whole).
fn array(
    buf: &[u8],
    count: usize,
    spans: &mut Vec<std::ops::Range<usize>>,
    at: &mut usize,
    limits: &Limits,
    examined: &mut usize,
) -> Result<Parsed, RespError> {
    while spans.len() < count {
        if *at > limits.request_bytes_max {
            return Err(too_large(*at, limits.request_bytes_max));
        }
        let Some(&first) = buf.get(*at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(RespError::Malformed("expected '$'"));
        }
        let Some(end) = header_end(buf, *at, examined)? else {
            return Ok(None);
        };
        let len =
            parse_decimal(&buf[*at + 1..end]).ok_or(RespError::Malformed("invalid bulk length"))?;
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
        *at = start + len + 2;
    }
    let args = spans
        .iter()
        .map(|span| buf[span.clone()].to_vec())
        .collect();
    Ok(Some((args, *at)))
}

/// Looks for an inline command's newline past the `scanned` bytes known to hold none.
fn inline(
    buf: &[u8],
    scanned: &mut usize,
    limits: &Limits,
    examined: &mut usize,
) -> Result<Parsed, RespError> {
    let from = (*scanned).min(buf.len());
    let Some(p) = buf[from..].iter().position(|&b| b == b'\n') else {
        *examined += buf.len() - from;
        *scanned = buf.len();
        if buf.len() > limits.request_bytes_max {
            return Err(too_large(buf.len(), limits.request_bytes_max));
        }
        return Ok(None);
    };
    *examined += p + 1;
    inline_command(buf, from + p, limits)
}

fn too_large(bytes: usize, bytes_max: usize) -> RespError {
    RespError::TooLarge {
        bytes: bytes as u64,
        bytes_max,
    }
}

/// The inline command whose line ends with the newline at `end`.
fn inline_command(buf: &[u8], end: usize, limits: &Limits) -> Result<Parsed, RespError> {
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

/// A reply: RESP2's types, and the RESP3 types Synod replies with.
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
    /// RESP3's `_`: null.
    Null,
    /// RESP3's `#t` / `#f`.
    Boolean(bool),
    /// RESP3's `%N` followed by N keys and values.
    Map(Vec<(Value, Value)>),
    /// RESP3's `>N`: a frame the server sends unasked (a message to a subscriber).
    Push(Vec<Value>),
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
            Value::Array(items) | Value::Push(items) => {
                let kind = if matches!(self, Value::Push(_)) {
                    b'>'
                } else {
                    b'*'
                };
                line(out, kind, &items.len().to_string());
                for item in items {
                    item.encode(out);
                }
            }
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Map(pairs) => {
                line(out, b'%', &pairs.len().to_string());
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }

    /// The number of bytes [`Value::encode`] appends, counted without encoding: what a
    /// value waiting to be written will take in a connection's output.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        // A type byte, the line, and its CRLF.
        let line = |text: usize| 1 + text + 2;
        let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
        match self {
            Value::Simple(s) | Value::Error(s) => line(s.len()),
            Value::Int(n) => line(usize::from(*n < 0) + digits(n.unsigned_abs())),
            Value::Bulk(b) => line(digits(b.len() as u64)) + b.len() + 2,
            Value::Nil => 5,
            Value::Array(items) | Value::Push(items) => {
                line(digits(items.len() as u64))
                    + items.iter().map(Value::encoded_len).sum::<usize>()
            }
            Value::Null => 3,
            Value::Boolean(_) => 4,
            Value::Map(pairs) => {
                line(digits(pairs.len() as u64))
                    + pairs
                        .iter()
                        .map(|(k, v)| k.encoded_len() + v.encoded_len())
                        .sum::<usize>()
            }
        }
    }

    /// The reply as a RESP2 connection reads it: null as nil, a boolean as 1 or 0, a map
    /// as a flat array of keys and values, a push frame as an array (what a RESP2
    /// subscriber reads).
    #[must_use]
    pub fn into_resp2(self) -> Value {
        match self {
            Value::Null => Value::Nil,
            Value::Boolean(b) => Value::Int(i64::from(b)),
            Value::Map(pairs) => Value::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.into_resp2(), v.into_resp2()])
                    .collect(),
            ),
            Value::Array(items) | Value::Push(items) => {
                Value::Array(items.into_iter().map(Value::into_resp2).collect())
            }
            other => other,
        }
    }

    /// The reply as a RESP3 connection reads it: nil as null (push frames, maps and
    /// booleans stay as they are).
    #[must_use]
    pub fn into_resp3(self) -> Value {
        match self {
            Value::Nil => Value::Null,
            Value::Array(items) => Value::Array(items.into_iter().map(Value::into_resp3).collect()),
            Value::Push(items) => Value::Push(items.into_iter().map(Value::into_resp3).collect()),
            Value::Map(pairs) => Value::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_resp3(), v.into_resp3()))
                    .collect(),
            ),
            other => other,
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
        b'_' if text.is_empty() => Ok(Some((Value::Null, next))),
        b'#' if text == b"t" || text == b"f" => Ok(Some((Value::Boolean(text == b"t"), next))),
        b'*' | b'>' | b'%' => {
            let count = number()?;
            if count < 0 && kind == b'*' {
                return Ok(Some((Value::Nil, next)));
            }
            // A map's count is of pairs: twice as many values.
            let per = if kind == b'%' { 2 } else { 1 };
            let values = u64::try_from(count)
                .map_err(|_| RespError::Malformed("negative count"))?
                .saturating_mul(per);
            if values > limits.args_max as u64 {
                return Err(RespError::TooManyArgs {
                    count: values,
                    args_max: limits.args_max,
                });
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..values {
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
            let value = match kind {
                b'>' => Value::Push(items),
                b'%' => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                }
                _ => Value::Array(items),
            };
            Ok(Some((value, at)))
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
    fn encoded_len_counts_what_encode_writes_at_the_edges_of_each_length() {
        let mut values: Vec<Value> = [0, 9, 10, 99, 100, -1, -10, i64::MAX, i64::MIN]
            .into_iter()
            .map(Value::Int)
            .collect();
        for len in [0, 9, 10, 100] {
            values.push(Value::Bulk(vec![b'x'; len]));
            values.push(Value::Simple("s\r\n".repeat(len)));
            values.push(Value::Array(vec![Value::Nil; len]));
        }
        values.push(Value::Map(vec![(Value::Null, Value::Boolean(true)); 10]));
        for value in values {
            let mut wire = Vec::new();
            value.encode(&mut wire);
            assert_eq!(value.encoded_len(), wire.len(), "{value:?}");
        }
    }

    #[test]
    fn resp3_replies_encode_parse_back_and_turn_into_resp2() {
        let reply = Value::Push(vec![
            Value::Bulk(b"message".to_vec()),
            Value::Map(vec![
                (Value::Simple("proto".into()), Value::Int(3)),
                (Value::Bulk(b"ok".to_vec()), Value::Boolean(true)),
            ]),
            Value::Null,
            Value::Boolean(false),
        ]);
        let mut wire = Vec::new();
        reply.encode(&mut wire);
        assert_eq!(
            wire,
            b">4\r\n$7\r\nmessage\r\n%2\r\n+proto\r\n:3\r\n$2\r\nok\r\n#t\r\n_\r\n#f\r\n"
        );
        for cut in 0..wire.len() {
            assert_eq!(Value::parse(&wire[..cut], &Limits::default()), Ok(None));
        }
        assert_eq!(
            Value::parse(&wire, &Limits::default()),
            Ok(Some((reply.clone(), wire.len())))
        );
        assert_eq!(
            reply.clone().into_resp2(),
            Value::Array(vec![
                Value::Bulk(b"message".to_vec()),
                Value::Array(vec![
                    Value::Simple("proto".into()),
                    Value::Int(3),
                    Value::Bulk(b"ok".to_vec()),
                    Value::Int(1),
                ]),
                Value::Nil,
                Value::Int(0),
            ])
        );
        assert_eq!(
            Value::Array(vec![Value::Nil]).into_resp3(),
            Value::Array(vec![Value::Null])
        );
        // A map's count is of pairs, checked against the limit as values.
        let limits = Limits {
            args_max: 3,
            ..Limits::default()
        };
        assert!(Value::parse(b"%2\r\n", &limits).is_err());
        assert!(Value::parse(b">-1\r\n", &limits).is_err());
        assert!(Value::parse(b"_x\r\n", &limits).is_err());
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

    /// Feeds `wire` to one parser `step` bytes at a time, as a slow client's reads arrive;
    /// returns the commands parsed and the bytes the parser looked at.
    fn trickle(wire: &[u8], step: usize) -> (Vec<Vec<Vec<u8>>>, usize) {
        let mut parser = CommandParser::default();
        let mut buf = Vec::new();
        let mut commands = Vec::new();
        for chunk in wire.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some((args, used)) = parser.parse(&buf, &Limits::default()).expect("valid") {
                buf.drain(..used);
                commands.push(args);
            }
        }
        assert!(buf.is_empty());
        (commands, parser.examined)
    }

    #[test]
    fn a_command_arriving_a_byte_at_a_time_is_scanned_once_not_once_per_read() {
        // One inline line of 256 KiB, and an array of 4,096 arguments.
        let mut line = vec![b'a'; 256 << 10];
        line.extend_from_slice(b" b\r\n");
        let (commands, examined) = trickle(&line, 1);
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].len(), 2);
        assert!(
            examined <= 2 * line.len(),
            "{examined} bytes looked at for a line of {}",
            line.len()
        );
        let args: Vec<&[u8]> = (0..4096).map(|_| &b"xy"[..]).collect();
        let array = encode_command(&args);
        let (commands, examined) = trickle(&array, 1);
        assert_eq!(
            commands,
            [args.iter().map(|a| a.to_vec()).collect::<Vec<_>>()]
        );
        // Each read looks at most at one length line.
        assert!(
            examined <= (HEADER_BYTES_MAX + 2) * array.len(),
            "{examined} bytes looked at for an array of {}",
            array.len()
        );
    }

    #[test]
    fn a_stream_split_anywhere_parses_to_the_same_commands() {
        let mut wire = Vec::new();
        wire.extend_from_slice(b"PING\r\n");
        wire.extend(encode_command(&[b"SET", b"key", b"va\r\nlue"]));
        wire.extend_from_slice(b"*-1\r\n  get   k \r\n");
        wire.extend(encode_command(&[b"MGET", b"a", b"", b"ccc"]));
        wire.extend_from_slice(b"\n");
        let (whole, _) = trickle(&wire, wire.len());
        assert_eq!(whole.len(), 6);
        for step in 1..wire.len() {
            assert_eq!(trickle(&wire, step).0, whole, "{step}");
        }
    }

    #[test]
    fn random_bytes_and_mutated_commands_never_panic_and_stay_in_bounds() {
        let limits = Limits {
            args_max: 8,
            bulk_bytes_max: 64,
            request_bytes_max: 256,
        };
        let mut rng = synod_node::Rng::new(7);
        let base = encode_command(&[b"MGET", b"a", b"bb", b"ccc"]);
        for _ in 0..20_000 {
            let mut input = base.clone();
            let edits = rng.below(4);
            for _ in 0..edits {
                let at = rng.below(input.len() as u64) as usize;
                input[at] = rng.next_u64() as u8;
            }
            if rng.below(3) == 0 {
                let n = rng.below(300) as usize;
                input = (0..n).map(|_| rng.next_u64() as u8).collect();
            }
            let whole = parse_command(&input, &limits);
            if let Ok(Some((args, used))) = &whole {
                assert!(*used <= input.len());
                assert!(args.len() <= limits.args_max);
                assert!(args.iter().all(|a| a.len() <= limits.request_bytes_max));
            }
            // The same bytes in random reads: the same first command, or the same kind of
            // error (an oversize line is refused as soon as it is too long, at whatever
            // length the read that showed it brought).
            let mut parser = CommandParser::default();
            let mut first = Ok(None);
            let mut fed = 0;
            while fed < input.len() && first == Ok(None) {
                fed = (fed + 1 + rng.below(8) as usize).min(input.len());
                first = parser.parse(&input[..fed], &limits);
            }
            match (&first, &whole) {
                (Err(a), Err(b)) => assert_eq!(
                    std::mem::discriminant(a),
                    std::mem::discriminant(b),
                    "{input:?}"
                ),
                _ => assert_eq!(first, whole, "{input:?}"),
            }
            let _ = Value::parse(&input, &limits);
        }
    }
}
