//! Fuzz target: replies as the Consistent Core's client library reads them
//! (`resp::Value::parse` under `resp::client::reply_limits`, after every read).
//!
//! The first byte chooses the chunk size; the rest is what the server sent. Checks: nothing
//! panics; a reply never takes more bytes than were received; a stream read chunk by chunk
//! gives the same replies as read whole, and is refused one way if refused the other; a
//! reply re-encodes to bytes that parse to the same reply. Run from `examples/fuzz` with
//! `cargo fuzz run resp_reply`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_examples::resp::client::reply_limits;
use synod_examples::resp::{RespError, Value};

fn read(stream: &[u8], chunk: usize) -> (Vec<Value>, Option<RespError>) {
    let limits = reply_limits();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match Value::parse(&buf, &limits) {
                Ok(Some((value, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    buf.drain(..used);
                    replies.push(value);
                }
                Ok(None) => break,
                Err(e) => return (replies, Some(e)),
            }
        }
    }
    (replies, None)
}

/// Whether `value` survives encoding unchanged (newlines in simple strings and errors
/// become spaces).
fn encodes_exactly(value: &Value) -> bool {
    match value {
        Value::Simple(s) | Value::Error(s) => !s.contains(['\r', '\n']),
        Value::Array(items) => items.iter().all(encodes_exactly),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let (replies, error) = read(stream, usize::from(control).max(1));
    let (whole, whole_error) = read(stream, stream.len().max(1));
    assert_eq!(replies, whole);
    assert_eq!(
        error.is_some(),
        whole_error.is_some(),
        "{error:?} {whole_error:?}"
    );
    for value in replies {
        let mut wire = Vec::new();
        value.encode(&mut wire);
        let (back, used) = Value::parse(&wire, &reply_limits())
            .expect("an encoded reply parses")
            .expect("whole");
        assert_eq!(used, wire.len());
        if encodes_exactly(&value) {
            assert_eq!(back, value);
        }
    }
});
