//! Fuzz target: client requests as a Consistent Core node reads them, in chunks of any size
//! (`resp::parse_command` after every read, consumed commands drained, as the server's
//! connection loop does), then run through the command table (`commands::execute`).
//!
//! The first byte chooses the chunk size and small limits (or the server's own); the rest
//! is the stream. Checks: nothing panics; a command never takes more bytes than were
//! received, nor holds more arguments or bytes than the limits; the commands read chunk by
//! chunk are exactly those read from the whole stream at once, and a stream refused one way
//! is refused the other way too. Run from `examples/fuzz`
//! with `cargo fuzz run resp_request`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_examples::consistent_core::commands::{ConnState, execute};
use synod_examples::resp::{Limits, RespError, parse_command};

type Commands = (Vec<Vec<Vec<u8>>>, Option<RespError>);

/// The commands in `stream` fed `chunk` bytes at a time, and the error that ended it.
fn read(stream: &[u8], chunk: usize, limits: &Limits) -> Commands {
    let mut buf = Vec::new();
    let mut commands = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse_command(&buf, limits) {
                Ok(Some((args, used))) => {
                    assert!(
                        used > 0 && used <= buf.len(),
                        "used {used} of {}",
                        buf.len()
                    );
                    assert!(args.len() <= limits.args_max);
                    let bytes: usize = args.iter().map(Vec::len).sum();
                    assert!(bytes <= limits.request_bytes_max);
                    buf.drain(..used);
                    if !args.is_empty() {
                        commands.push(args);
                    }
                }
                Ok(None) => break,
                Err(e) => return (commands, Some(e)),
            }
        }
    }
    (commands, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let limits = if control & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            args_max: 8,
            bulk_bytes_max: 64,
            request_bytes_max: 256,
        }
    };
    let chunk = usize::from(control >> 1).max(1);
    let (commands, error) = read(stream, chunk, &limits);
    let (whole, whole_error) = read(stream, stream.len().max(1), &limits);
    assert_eq!(commands, whole);
    assert_eq!(
        error.is_some(),
        whole_error.is_some(),
        "{error:?} {whole_error:?}"
    );
    let mut conn = ConnState::default();
    for args in &commands {
        let _ = execute(&mut conn, args);
    }
});
