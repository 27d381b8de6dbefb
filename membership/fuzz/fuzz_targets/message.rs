//! Fuzz target: the membership message decoder, and a member fed what it decodes.
//!
//! Checks: nothing panics; a decoded message re-encodes to bytes that decode to the same
//! message; a member that takes any decoded message, from any sender, at any time, and then
//! wakes, sends nothing over its configured limits. Run from `membership/fuzz` with
//! `cargo fuzz run message` (needs cargo-fuzz and a nightly toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_membership::{Body, Member, MemberConfig, Message};
use synod_node::{Effect, Input, NodeId, PersistToken, Protocol, Time};

const MESSAGE_BYTES: usize = 512;
const SYNC_BYTES: usize = 2_048;

fuzz_target!(|data: &[u8]| {
    // The first byte names the sender and the second the time, so that the same message is
    // tried from members known and unknown, early and late.
    let [from, at, bytes @ ..] = data else {
        return;
    };
    let Ok(message) = Message::decode(bytes, SYNC_BYTES) else {
        return;
    };
    let again = message.encode();
    assert_eq!(Message::decode(&again, SYNC_BYTES).as_ref(), Ok(&message));

    let config = MemberConfig::builder(NodeId::new(1), 7)
        .seeds([NodeId::new(2)])
        .limits(16, 16, 4)
        .message_bytes_max(MESSAGE_BYTES, SYNC_BYTES)
        .build()
        .expect("valid");
    let mut member = Member::start(config, 0);
    while member.poll().is_some() {}
    member.handle(Time::ZERO, Input::Persisted(PersistToken(1)));
    let from = NodeId::new(u64::from(*from % 8) + 1);
    let now = Time::from_millis(u64::from(*at) * 50);
    member.handle(now, Input::Message { from, message });
    member.handle(now + std::time::Duration::from_secs(60), Input::Wake);
    while let Some(effect) = member.poll() {
        if let Effect::Send { to, message } = effect {
            assert_ne!(to, NodeId::new(1));
            let limit = if matches!(
                message.body,
                Body::Sync { .. } | Body::KvSyn { .. } | Body::KvAck { .. } | Body::KvDelta { .. }
            ) {
                SYNC_BYTES
            } else {
                MESSAGE_BYTES
            };
            assert!(message.encode().len() <= limit);
        }
    }
});
