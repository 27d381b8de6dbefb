//! Misbehaving peers: one that stops reading, one that stops answering, one whose
//! connection resets mid-frame, one announcing a huge frame, one that truncates a frame.

use std::io::{Read, Write};

use bytes::Bytes;
use synod_transport::frame::{
    FrameDecoder, FrameError, FrameKind, MAGIC, MessageKind, VERSION, decode_envelopes,
};
use synod_transport::{Disconnect, NodeId, Overflow, RequestError, SendError};

use crate::support::{PATIENCE, config, message, raw_acceptor, raw_dial, start, wait_for};

#[test]
fn a_peer_that_stops_reading_never_grows_the_queue_past_its_bound() {
    let (addr, raw) = raw_acceptor(1);
    let bound = 256 << 10;
    let b = start(
        config(2)
            .outbound_bytes_max(bound)
            .overflow(Overflow::FailFast)
            .keepalive_timeout_ms(60_000)
            .keepalive_interval_ms(1000),
    );
    b.add_peer(NodeId::new(1), addr);
    let _peer = raw.join().unwrap(); // welcomed, and never read from again
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let payload = Bytes::from(vec![0xAB; 16 << 10]);
    let mut sent = 0usize;
    let mut max_seen = 0;
    let full = wait_for(|| {
        let result = b.send(NodeId::new(1), payload.clone());
        max_seen = max_seen.max(b.outbound_queued_bytes(NodeId::new(1)));
        match result {
            Ok(()) => {
                sent += 1;
                false
            }
            Err(SendError::QueueFull { peer }) => {
                assert_eq!(peer, NodeId::new(1));
                true
            }
            Err(other) => panic!("unexpected {other}"),
        }
    });
    assert!(full, "the queue never filled");
    assert!(max_seen <= bound, "queued {max_seen} bytes, bound {bound}");
    println!(
        "stopped reader: {sent} messages of 16 KiB accepted (socket buffers plus queue), then QueueFull; queued bytes peaked at {max_seen} <= {bound}"
    );
}

#[test]
fn writes_cut_short_by_a_full_socket_buffer_are_finished_whole_and_in_order() {
    // A fail-fast sender writes on its own thread while the channel is idle; when the
    // peer stops reading, a write is cut short by the full socket buffer and handed to the
    // writer thread. Every message the transport accepted must still arrive, whole and in
    // order, once the peer reads again.
    let (addr, raw) = raw_acceptor(1);
    let b = start(
        config(2)
            .outbound_bytes_max(1 << 20)
            .overflow(Overflow::FailFast)
            .batch_delay_us_max(0)
            .keepalive_timeout_ms(60_000)
            .keepalive_interval_ms(30_000),
    );
    b.add_peer(NodeId::new(1), addr);
    let mut peer = raw.join().unwrap();
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    // Each message carries its number, and is long enough to be cut mid-write.
    let accepted = fill_queue(&b, NodeId::new(1), 0);
    let handed_over = b.stats().writes_handed_over;
    assert!(
        handed_over > 0,
        "no write was cut short: the test did not exercise the hand-over"
    );
    // The peer reads again: every accepted message, in order, nothing torn.
    read_batch(&mut peer, 0, accepted);
    println!(
        "stalled reader: {accepted} messages of 48 KiB accepted, {handed_over} writes cut short and finished by the writer thread, all received whole and in order"
    );
}

#[test]
fn a_peer_that_stops_answering_is_detected_by_the_keepalive_bound() {
    let (addr, raw) = raw_acceptor(1);
    let b = start(
        config(2)
            .keepalive_interval_ms(50)
            .keepalive_timeout_ms(300),
    );
    b.add_peer(NodeId::new(1), addr);
    let _silent = raw.join().unwrap(); // welcomed, then says nothing, ever
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    // The request's own deadline is far away: it fails because the keep-alive bound
    // passed, not because of its deadline.
    let handle = b
        .request(NodeId::new(1), Bytes::from_static(b"hello?"), PATIENCE * 10)
        .unwrap();
    match handle.wait() {
        Err(RequestError::ConnectionLost { reason, .. }) => {
            assert_eq!(reason, Disconnect::KeepAliveTimeout { silent_ms: 300 });
        }
        other => panic!("expected a keep-alive timeout, got {other:?}"),
    }
}

#[test]
fn a_dropped_connection_fails_pending_requests_promptly() {
    let (addr, raw) = raw_acceptor(1);
    let b = start(config(2).backoff_initial_ms(1000).backoff_max_ms(1000));
    b.add_peer(NodeId::new(1), addr);
    let peer = raw.join().unwrap();
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            b.request(NodeId::new(1), Bytes::new(), PATIENCE * 10)
                .unwrap()
        })
        .collect();
    assert!(wait_for(|| b.stats().messages_sent == 5));
    drop(peer);
    for h in handles {
        match h.wait() {
            Err(RequestError::ConnectionLost { reason, .. }) => {
                assert!(
                    matches!(reason, Disconnect::PeerClosed | Disconnect::Io { .. }),
                    "{reason}"
                );
            }
            other => panic!("expected a lost connection, got {other:?}"),
        }
    }
}

#[test]
fn an_oversize_frame_closes_the_connection_without_allocating_it() {
    let a = start(config(1).frame_bytes_max(64 << 10));
    let mut raw = raw_dial(a.local_addr(), 2, 1);
    // Announce a frame of 3 GiB and send nothing more.
    let mut header = Vec::new();
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&[VERSION, 4, 0, 0]);
    header.extend_from_slice(&(3u32 << 30).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    raw.write_all(&header).unwrap();
    assert!(crate::support::closed_by_server(&mut raw));
    assert!(wait_for(|| a.recent_events().iter().any(|e| e.reason
        == Disconnect::Protocol(FrameError::TooLarge {
            len: 3 << 30,
            max: 64 << 10
        }))));
}

#[test]
fn a_truncated_frame_delivers_nothing() {
    let a = start(config(1));
    let mut raw = raw_dial(a.local_addr(), 2, 1);
    let whole = message(MessageKind::OneWay, 0, 2, 1, b"first");
    let cut = message(MessageKind::OneWay, 0, 2, 1, b"second, cut short");
    raw.write_all(&whole).unwrap();
    raw.write_all(&cut[..cut.len() - 3]).unwrap();
    drop(raw);
    assert!(wait_for(|| a
        .recent_events()
        .iter()
        .any(|e| matches!(e.reason, Disconnect::TruncatedFrame { .. }))));
    // The connection is gone and everything it delivered is queued: only the whole frame.
    assert_eq!(&a.try_recv().unwrap().payload()[..], b"first");
    assert!(a.try_recv().is_none());
}

#[test]
fn a_reset_mid_frame_delivers_nothing_and_closes_only_that_connection() {
    let a = start(config(1));
    let mut raw = raw_dial(a.local_addr(), 3, 1);
    // The welcome may arrive before node 1 has installed the connection.
    assert!(a.wait_connected(NodeId::new(3), PATIENCE));
    // Make the raw peer hold unread data, so that closing it sends a reset.
    a.send(NodeId::new(3), Bytes::from_static(b"unread"))
        .unwrap();
    assert!(wait_for(|| a.stats().messages_sent == 1));
    let cut = message(MessageKind::Request, 9, 3, 1, b"never whole");
    raw.write_all(&cut[..cut.len() / 2]).unwrap();
    drop(raw);
    assert!(wait_for(|| a.recent_events().iter().any(|e| e.peer
        == Some(NodeId::new(3))
        && matches!(
            e.reason,
            Disconnect::TruncatedFrame { .. } | Disconnect::Io { .. }
        ))));
    assert!(a.try_recv().is_none());
    // Another peer is served as before.
    let b = start(config(2));
    b.add_peer(NodeId::new(1), a.local_addr());
    let h = b
        .request(NodeId::new(1), Bytes::from_static(b"ok?"), PATIENCE)
        .unwrap();
    let req = a.recv(PATIENCE).unwrap();
    a.respond(&req, Bytes::from_static(b"ok")).unwrap();
    assert_eq!(&h.wait().unwrap()[..], b"ok");
}

#[test]
fn an_envelope_claiming_another_sender_closes_the_connection() {
    let a = start(config(1));
    let mut raw = raw_dial(a.local_addr(), 2, 1);
    raw.write_all(&message(MessageKind::OneWay, 0, 5, 1, b"spoofed"))
        .unwrap();
    assert!(crate::support::closed_by_server(&mut raw));
    assert!(a.try_recv().is_none());
}

#[test]
fn a_blocking_sender_waits_for_a_slow_reader_and_memory_stays_bounded() {
    let (addr, raw) = raw_acceptor(1);
    let bound = 64 << 10;
    let b = std::sync::Arc::new(start(
        config(2)
            .outbound_bytes_max(bound)
            .keepalive_timeout_ms(60_000)
            .keepalive_interval_ms(1000),
    ));
    b.add_peer(NodeId::new(1), addr);
    let mut peer = raw.join().unwrap();
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    // 64 MiB: far more than the queue and both sockets' buffers can hold.
    let messages = 8192;
    let sender = {
        let b = std::sync::Arc::clone(&b);
        std::thread::spawn(move || {
            let payload = Bytes::from(vec![0x5A; 8 << 10]);
            for _ in 0..messages {
                b.send(NodeId::new(1), payload.clone())
                    .expect("blocks, never fails");
            }
        })
    };
    // The peer is not reading: the queue fills up to its bound, and the sender waits.
    let mut max_seen = 0;
    assert!(wait_for(|| {
        let queued = b.outbound_queued_bytes(NodeId::new(1));
        max_seen = max_seen.max(queued);
        queued + (9 << 10) > bound
    }));
    assert!(!sender.is_finished(), "the sender cannot have sent 64 MiB");
    // The peer starts reading: the sender is released and finishes.
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            if total >= messages * (8 << 10) {
                break;
            }
        }
        total
    });
    sender.join().unwrap();
    let total = reader.join().unwrap();
    assert!(
        total >= messages * (8 << 10),
        "all payload bytes arrived ({total})"
    );
    assert!(max_seen <= bound, "queued {max_seen} bytes, bound {bound}");
    println!(
        "blocking sender: {messages} x 8 KiB through a paused reader; queue peaked at {max_seen} <= {bound}"
    );
}

/// Sends numbered 48 KiB messages of batch `batch` to `peer` until the queue is full;
/// returns how many were accepted.
fn fill_queue(t: &synod_transport::TcpTransport, peer: NodeId, batch: u32) -> u32 {
    let mut accepted = 0u32;
    let full = wait_for(|| {
        let mut payload = vec![0x5A; 48 << 10];
        payload[..4].copy_from_slice(&batch.to_le_bytes());
        payload[4..8].copy_from_slice(&accepted.to_le_bytes());
        match t.send(peer, Bytes::from(payload)) {
            Ok(()) => {
                accepted += 1;
                false
            }
            Err(SendError::QueueFull { .. }) => true,
            Err(other) => panic!("unexpected {other}"),
        }
    });
    assert!(full, "the queue never filled");
    accepted
}

/// Reads `count` messages from a raw connection, which must be a well-formed stream from
/// its first byte: each message whole, of batch `batch`, numbered in order from 0.
fn read_batch(stream: &mut std::net::TcpStream, batch: u32, count: u32) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut decoder = FrameDecoder::new(64 << 20);
    let mut chunk = vec![0u8; 256 << 10];
    let mut next = 0u32;
    while next < count {
        match decoder.next_frame().expect("a well-formed stream") {
            Some(frame) if frame.kind == FrameKind::Messages => {
                for envelope in decode_envelopes(&frame.payload).expect("whole envelopes") {
                    let p = &envelope.payload;
                    assert_eq!(p.len(), 48 << 10, "message {next} torn");
                    let got = u32::from_le_bytes(p[..4].try_into().unwrap());
                    assert_eq!(got, batch, "a message of batch {got} on this connection");
                    let n = u32::from_le_bytes(p[4..8].try_into().unwrap());
                    assert_eq!(n, next, "messages out of order");
                    next += 1;
                }
            }
            Some(_) => {}
            None => {
                let read = stream.read(&mut chunk).expect("the rest of the stream");
                assert!(
                    read > 0,
                    "the stream ended after {next} of {count} messages"
                );
                decoder.extend(&chunk[..read]);
            }
        }
    }
}

#[test]
fn a_connection_replaced_while_a_write_was_cut_short_gets_only_whole_frames_and_frees_its_bytes() {
    // Node 1 (raw) dials the transport, which writes to it until its socket buffer and its
    // queue are full (writes cut short and handed to the writer thread); then node 1 dials
    // again. The old connection is replaced: the new one must start at a frame boundary
    // and carry nothing of the old one's half-written frames, the bytes counted against
    // the queue bound must all be freed, and the new connection must take a full queue.
    let bound = 1 << 20;
    let a = start(
        config(2)
            .outbound_bytes_max(bound)
            .overflow(Overflow::FailFast)
            .batch_delay_us_max(0)
            .keepalive_timeout_ms(60_000)
            .keepalive_interval_ms(30_000),
    );
    let mut rounds = Vec::new();
    let mut old = None;
    for batch in 0..3u32 {
        let mut peer = raw_dial(a.local_addr(), 1, 2);
        assert!(wait_for(
            || a.stats().connections_established == u64::from(batch) + 1
        ));
        // Whatever the replaced connection left counted is freed by the time the new one
        // is current and its writer idle.
        assert!(
            wait_for(|| a.outbound_queued_bytes(NodeId::new(1)) == 0),
            "{} bytes still counted after the connection was replaced",
            a.outbound_queued_bytes(NodeId::new(1))
        );
        drop(old.take());
        let handed_over = a.stats().writes_handed_over;
        let accepted = fill_queue(&a, NodeId::new(1), batch);
        rounds.push((accepted, a.stats().writes_handed_over - handed_over));
        if batch == 2 {
            read_batch(&mut peer, batch, accepted);
        }
        old = Some(peer);
    }
    let handed_over: u64 = rounds.iter().map(|r| r.1).sum();
    assert!(
        handed_over > 0,
        "no write was cut short: the test did not exercise the hand-over"
    );
    // Each connection took about as much as the first: nothing leaked from the bound.
    let first = rounds[0].0;
    for &(accepted, _) in &rounds[1..] {
        assert!(
            accepted + 2 >= first,
            "a new connection took {accepted} messages, the first {first}: {rounds:?}"
        );
    }
    println!(
        "connection replaced twice after writes cut short: (messages accepted, writes handed over) per connection {rounds:?}; the last read whole and in order"
    );
}
