//! Fuzz target: `Message::decode`, the decoder of every Raft message a node receives from a
//! peer (the Consistent Core hands each transport payload that is not a forwarded request
//! to it).
//!
//! Checks: nothing panics; a decoded message re-encodes to bytes that decode to the same
//! message. Run from `consensus/fuzz` with `cargo fuzz run message`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_consensus::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let _ = format!("{message:?}");
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    } else if let Err(e) = Message::decode(data) {
        let _ = e.to_string();
    }
});
