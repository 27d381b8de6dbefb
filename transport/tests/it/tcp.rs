//! Two or more real transports over loopback: ordering, the Request Pipeline, Request
//! Batch, deadlines, reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use synod_transport::{InProcessNetwork, NodeId, RequestError, TcpTransport, Transport};

use crate::support::{PATIENCE, config, start, wait_for};

/// Node 1 listens; node 2 (higher id) dials it.
fn pair() -> (TcpTransport, TcpTransport) {
    let a = start(config(1));
    let b = start(config(2));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    (a, b)
}

#[test]
fn one_way_messages_arrive_in_order_both_ways() {
    let (a, b) = pair();
    for i in 0u32..2000 {
        b.send(NodeId::new(1), Bytes::copy_from_slice(&i.to_le_bytes()))
            .unwrap();
    }
    for i in 0u32..2000 {
        let got = a.recv(PATIENCE).expect("message");
        assert_eq!(got.from(), NodeId::new(2));
        assert!(!got.is_request());
        assert_eq!(&got.payload()[..], &i.to_le_bytes());
    }
    // The same connection carries node 1's messages back.
    assert!(a.is_connected(NodeId::new(2)));
    a.send(NodeId::new(2), Bytes::from_static(b"back")).unwrap();
    assert_eq!(&b.recv(PATIENCE).unwrap().payload()[..], b"back");
    assert_eq!(a.stats().connections_established, 1);
    assert_eq!(b.stats().connections_established, 1);
}

#[test]
fn pipelined_requests_complete_with_their_own_responses_under_load() {
    let server = TcpTransport::bind_with_handler(
        config(1).in_flight_max(64).build().unwrap(),
        "127.0.0.1:0",
        |req| {
            // The response is the request reversed, so a mix-up is visible.
            let mut v = req.payload().to_vec();
            v.reverse();
            Some(Bytes::from(v))
        },
    )
    .unwrap();
    let client = Arc::new(start(config(2).in_flight_max(64)));
    client.add_peer(NodeId::new(1), server.local_addr());
    let threads = 4;
    let per_thread = 500u32;
    let checked = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let client = Arc::clone(&client);
            let checked = Arc::clone(&checked);
            std::thread::spawn(move || {
                let mut window = std::collections::VecDeque::new();
                for i in 0..per_thread {
                    let body = format!("t{t}-r{i}-payload");
                    let handle = client
                        .request(NodeId::new(1), Bytes::from(body.clone()), PATIENCE)
                        .expect("queued");
                    window.push_back((body, handle));
                    if window.len() == 16 {
                        let (body, handle) = window.pop_front().unwrap();
                        let got = handle.wait().expect("response");
                        assert_eq!(
                            got.iter().rev().copied().collect::<Vec<u8>>(),
                            body.as_bytes()
                        );
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for (body, handle) in window {
                    let got = handle.wait().expect("response");
                    assert_eq!(
                        got.iter().rev().copied().collect::<Vec<u8>>(),
                        body.as_bytes()
                    );
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let total = checked.load(Ordering::Relaxed);
    assert_eq!(total, (threads * per_thread) as usize);
    assert_eq!(client.in_flight(NodeId::new(1)), 0);
    let stats = client.stats();
    println!(
        "pipeline: {total} requests from {threads} threads, all matched; {} frames carried {} messages",
        stats.batches_sent, stats.messages_sent
    );
}

#[test]
fn requests_through_recv_and_respond() {
    let (a, b) = pair();
    let server = std::thread::spawn(move || {
        for _ in 0..100 {
            let req = a.recv(PATIENCE).expect("request");
            assert!(req.is_request());
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(req.payload());
            a.respond(&req, Bytes::from(reply)).unwrap();
        }
        a
    });
    let handles: Vec<_> = (0..100)
        .map(|i| {
            (
                i,
                b.request(NodeId::new(1), Bytes::from(format!("{i}")), PATIENCE)
                    .unwrap(),
            )
        })
        .collect();
    for (i, h) in handles {
        assert_eq!(h.wait().unwrap(), Bytes::from(format!("re:{i}")));
    }
    let _a = server.join().unwrap();
}

#[test]
fn a_request_past_its_deadline_fails_with_timeout_and_frees_its_slot() {
    let (a, b) = pair();
    let handle = b
        .request(
            NodeId::new(1),
            Bytes::from_static(b"ignored"),
            Duration::from_millis(50),
        )
        .unwrap();
    // Node 1 receives the request and never answers.
    assert!(a.recv(PATIENCE).unwrap().is_request());
    match handle.wait() {
        Err(RequestError::Timeout { peer, .. }) => assert_eq!(peer, NodeId::new(1)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(b.in_flight(NodeId::new(1)), 0);
    // A response arriving after the deadline is counted and dropped.
    a.respond(&a_request(&a, &b), Bytes::new()).unwrap();
}

/// Sends one more request from `b` and returns it as `a` received it, having let it time
/// out at `b`.
fn a_request(a: &TcpTransport, b: &TcpTransport) -> synod_transport::Incoming {
    let handle = b
        .request(NodeId::new(1), Bytes::new(), Duration::from_millis(1))
        .unwrap();
    let req = a.recv(PATIENCE).unwrap();
    assert!(matches!(handle.wait(), Err(RequestError::Timeout { .. })));
    req
}

#[test]
fn in_flight_window_is_bounded_and_fail_fast_says_so() {
    let a = start(config(1));
    let b = start(
        config(2)
            .in_flight_max(3)
            .overflow(synod_transport::Overflow::FailFast),
    );
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let held: Vec<_> = (0..3)
        .map(|_| b.request(NodeId::new(1), Bytes::new(), PATIENCE).unwrap())
        .collect();
    assert!(matches!(
        b.request(NodeId::new(1), Bytes::new(), PATIENCE),
        Err(RequestError::InFlightFull { max: 3, .. })
    ));
    drop(held);
    assert_eq!(b.in_flight(NodeId::new(1)), 0);
    assert!(b.request(NodeId::new(1), Bytes::new(), PATIENCE).is_ok());
}

#[test]
fn batching_combines_messages_and_responses_into_fewer_frames() {
    let server = TcpTransport::bind_with_handler(
        config(1).batch_delay_us_max(2000).build().unwrap(),
        "127.0.0.1:0",
        |req| Some(req.payload().clone()),
    )
    .unwrap();
    let client = start(config(2).batch_delay_us_max(2000));
    client.add_peer(NodeId::new(1), server.local_addr());
    assert!(client.wait_connected(NodeId::new(1), PATIENCE));
    let handles: Vec<_> = (0..500u32)
        .map(|i| {
            client
                .request(
                    NodeId::new(1),
                    Bytes::copy_from_slice(&i.to_le_bytes()),
                    PATIENCE,
                )
                .unwrap()
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(&h.wait().unwrap()[..], &(i as u32).to_le_bytes());
    }
    let (c, s) = (client.stats(), server.stats());
    println!(
        "batch: requests {} in {} frames; responses {} in {} frames",
        c.messages_sent, c.batches_sent, s.messages_sent, s.batches_sent
    );
    assert_eq!(c.messages_sent, 500);
    assert!(c.batches_sent < c.messages_sent, "requests were batched");
    assert!(s.batches_sent < s.messages_sent, "responses were batched");
}

#[test]
fn a_lost_connection_fails_pending_requests_at_once_and_the_dialer_reconnects() {
    let a = start(config(1));
    let addr = a.local_addr();
    let b = start(config(2).backoff_initial_ms(5).backoff_max_ms(50));
    b.add_peer(NodeId::new(1), addr);
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let pending: Vec<_> = (0..10)
        .map(|_| {
            b.request(NodeId::new(1), Bytes::new(), PATIENCE * 10)
                .unwrap()
        })
        .collect();
    assert!(wait_for(|| a.stats().messages_received == 10));
    a.shutdown();
    for handle in pending {
        match handle.wait() {
            Err(RequestError::ConnectionLost { peer, .. }) => assert_eq!(peer, NodeId::new(1)),
            other => panic!("expected a lost connection, got {other:?}"),
        }
    }
    // Node 1 comes back on the same address; node 2 reconnects by itself.
    let a = TcpTransport::bind(config(1).build().unwrap(), addr).expect("rebind");
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let h = b
        .request(NodeId::new(1), Bytes::from_static(b"again"), PATIENCE)
        .unwrap();
    let req = a.recv(PATIENCE).unwrap();
    a.respond(&req, Bytes::from_static(b"ok")).unwrap();
    assert_eq!(&h.wait().unwrap()[..], b"ok");
}

#[test]
fn a_node_that_dials_refuses_to_be_dialed_by_the_same_peer() {
    // Node 2 knows node 1's address and dials it; node 1 dialing node 2 would make a second
    // connection, so node 2 refuses it.
    let a = start(config(1));
    let b = start(config(2));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let mut raw = std::net::TcpStream::connect(b.local_addr()).unwrap();
    use std::io::Write;
    raw.write_all(&crate::support::hello(crate::support::CLUSTER, 1, 2))
        .unwrap();
    let answer = crate::support::read_frame(&mut raw).unwrap();
    assert_eq!(answer.kind, synod_transport::frame::FrameKind::Reject);
    let reason: synod_transport::handshake::RejectReason =
        postcard::from_bytes(&answer.payload).unwrap();
    assert_eq!(
        reason,
        synod_transport::handshake::RejectReason::WrongDirection
    );
}

/// Node code written against the `Transport` trait: answers every "ping" with "pong".
fn pong_step(node: &mut impl Transport) -> usize {
    let mut answered = 0;
    while let Some(incoming) = node.try_recv() {
        if &incoming.payload()[..] == b"ping" {
            node.send(incoming.from(), Bytes::from_static(b"pong"))
                .unwrap();
            answered += 1;
        }
    }
    answered
}

#[test]
fn the_same_node_code_runs_in_process_and_over_tcp() {
    // In process.
    let net = InProcessNetwork::new(64);
    let mut a = net.endpoint(NodeId::new(1));
    let mut b = net.endpoint(NodeId::new(2));
    Transport::send(&mut b, NodeId::new(1), Bytes::from_static(b"ping")).unwrap();
    assert_eq!(pong_step(&mut a), 1);
    assert_eq!(&Transport::try_recv(&mut b).unwrap().payload()[..], b"pong");

    // Over TCP: the node code is unchanged; only the driver waits for arrivals.
    let (mut a, mut b) = pair();
    Transport::send(&mut b, NodeId::new(1), Bytes::from_static(b"ping")).unwrap();
    assert!(wait_for(|| pong_step(&mut a) == 1));
    let mut got = None;
    assert!(wait_for(|| {
        got = Transport::try_recv(&mut b);
        got.is_some()
    }));
    assert_eq!(&got.unwrap().payload()[..], b"pong");
    assert_eq!(Transport::local_id(&a), NodeId::new(1));
}

#[test]
fn requests_reach_the_receiver_in_the_order_sent() {
    let (a, b) = pair();
    let handles: Vec<_> = (0u32..300)
        .map(|i| {
            b.request(
                NodeId::new(1),
                Bytes::copy_from_slice(&i.to_le_bytes()),
                PATIENCE,
            )
            .unwrap()
        })
        .collect();
    let mut correlations = Vec::new();
    for i in 0u32..300 {
        let req = a.recv(PATIENCE).unwrap();
        assert_eq!(
            &req.payload()[..],
            &i.to_le_bytes(),
            "request {i} out of order"
        );
        correlations.push(req.correlation().unwrap());
        a.respond(&req, req.payload().clone()).unwrap();
    }
    assert!(correlations.windows(2).all(|w| w[0] < w[1]));
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(&h.wait().unwrap()[..], &(i as u32).to_le_bytes());
    }
}

#[test]
fn pipelined_responses_complete_in_the_order_sent() {
    let server =
        TcpTransport::bind_with_handler(config(1).build().unwrap(), "127.0.0.1:0", |req| {
            Some(req.payload().clone())
        })
        .unwrap();
    let client = start(config(2));
    client.add_peer(NodeId::new(1), server.local_addr());
    let handles: Vec<_> = (0u32..200)
        .map(|i| {
            client
                .request(
                    NodeId::new(1),
                    Bytes::copy_from_slice(&i.to_le_bytes()),
                    PATIENCE,
                )
                .unwrap()
        })
        .collect();
    let last = handles.last().unwrap();
    assert!(wait_for(|| last.is_ready()));
    // One connection, answered in order: once the last response is in, so are all others.
    assert!(
        handles
            .iter()
            .all(synod_transport::ResponseHandle::is_ready)
    );
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(&h.wait().unwrap()[..], &(i as u32).to_le_bytes());
    }
}

#[test]
fn only_a_request_can_be_responded_to() {
    let (a, b) = pair();
    b.send(NodeId::new(1), Bytes::from_static(b"one-way"))
        .unwrap();
    let message = a.recv(PATIENCE).unwrap();
    assert_eq!(
        a.respond(&message, Bytes::new()),
        Err(synod_transport::SendError::NotARequest)
    );
}

/// A quorum write: the coordinator sends to three replicas and waits, in a Request Waiting
/// List, for two acknowledgements; a replica that is down costs nothing until too many are.
#[test]
fn a_waiting_list_completes_a_quorum_write_and_expires_one_that_cannot_complete() {
    use std::time::Instant;
    use synod_transport::{Progress, Quorum, WaitingList};

    let ack = |req: &synod_transport::Incoming| Some(req.payload().clone());
    let r1 =
        TcpTransport::bind_with_handler(config(1).build().unwrap(), "127.0.0.1:0", ack).unwrap();
    let r2 =
        TcpTransport::bind_with_handler(config(2).build().unwrap(), "127.0.0.1:0", ack).unwrap();
    // Replica 3 is down: its address refuses connections.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let coordinator = start(config(9).backoff_initial_ms(5).backoff_max_ms(20));
    coordinator.add_peer(NodeId::new(1), r1.local_addr());
    coordinator.add_peer(NodeId::new(2), r2.local_addr());
    coordinator.add_peer(NodeId::new(3), down);

    let start_time = Instant::now();
    let now_ms = || start_time.elapsed().as_millis() as u64;
    let mut waiting = WaitingList::new(16);
    let write = |key: &'static str, replicas: &[u64], waiting: &mut WaitingList<_, _, _>| {
        waiting
            .insert(key, Quorum::majority(3), now_ms() + 2_000)
            .unwrap();
        replicas
            .iter()
            .filter_map(|&r| {
                coordinator
                    .request(NodeId::new(r), Bytes::from_static(b"put"), PATIENCE)
                    .ok()
                    .map(|h| (r, h))
            })
            .collect::<Vec<_>>()
    };

    // Two of three replicas answer: the write completes.
    let mut handles = write("x=1", &[1, 2, 3], &mut waiting);
    let mut outcome = None;
    while outcome.is_none() {
        let (r, h) = handles.remove(0);
        if let Ok(reply) = h.wait()
            && let Progress::Completed(acks) = waiting.on_response(&"x=1", NodeId::new(r), reply)
        {
            outcome = Some(acks.len());
        }
        assert!(
            !handles.is_empty() || outcome.is_some(),
            "ran out of replicas"
        );
    }
    assert_eq!(outcome, Some(2));

    // Only one replica is asked: the write cannot reach a quorum and expires.
    let handles = write("y=2", &[1], &mut waiting);
    for (r, h) in handles {
        let reply = h.wait().unwrap();
        assert_eq!(
            waiting.on_response(&"y=2", NodeId::new(r), reply),
            Progress::Pending
        );
    }
    let deadline = waiting.next_deadline().unwrap();
    let expired = waiting.expire(deadline);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, "y=2");
    assert!(waiting.is_empty());
}

#[test]
fn a_request_batch_is_one_frame_and_completes_in_order_with_its_own_responses() {
    let server =
        TcpTransport::bind_with_handler(config(1).build().unwrap(), "127.0.0.1:0", |req| {
            let mut v = req.payload().to_vec();
            v.reverse();
            Some(Bytes::from(v))
        })
        .unwrap();
    let client = start(config(2));
    client.add_peer(NodeId::new(1), server.local_addr());
    assert!(client.wait_connected(NodeId::new(1), PATIENCE));
    let mut handles = Vec::new();
    let payloads = (0u32..64).map(|i| Bytes::from(format!("batch-{i}")));
    client
        .request_batch(NodeId::new(1), payloads, PATIENCE, &mut handles)
        .unwrap();
    assert_eq!(handles.len(), 64);
    // Correlation ids are distinct and increase in submission order.
    assert!(
        handles
            .windows(2)
            .all(|w| w[0].correlation() < w[1].correlation())
    );
    for (i, handle) in handles.into_iter().enumerate() {
        let got = handle.wait().unwrap();
        let want: Vec<u8> = format!("batch-{i}").bytes().rev().collect();
        assert_eq!(got[..], want[..]);
    }
    let stats = client.stats();
    assert_eq!(stats.messages_sent, 64);
    assert_eq!(
        stats.batches_sent, 1,
        "an idle channel writes the whole batch as one frame"
    );
    // An empty batch sends nothing and succeeds.
    let mut none = Vec::new();
    client
        .request_batch(NodeId::new(1), std::iter::empty(), PATIENCE, &mut none)
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(client.stats().messages_sent, 64);
}

#[test]
fn a_handler_is_told_which_message_of_a_read_is_the_last() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let server = TcpTransport::bind_with_handler(
        config(1).build().unwrap(),
        "127.0.0.1:0",
        move |incoming| {
            recorded
                .lock()
                .push((incoming.payload().clone(), incoming.more_follow()));
            None
        },
    )
    .unwrap();
    let client = start(config(2));
    client.add_peer(NodeId::new(1), server.local_addr());
    assert!(client.wait_connected(NodeId::new(1), PATIENCE));
    // Five messages queued at once on an idle channel go out as one frame, read whole.
    let payloads = (0u8..5).map(|i| Bytes::copy_from_slice(&[i]));
    assert_eq!(client.send_batch(NodeId::new(1), payloads).unwrap(), 5);
    assert!(wait_for(|| seen.lock().len() >= 5), "{:?}", seen.lock());
    assert_eq!(client.stats().batches_sent, 1, "sent as one frame");
    let seen = seen.lock();
    let more: Vec<bool> = seen.iter().map(|(_, more)| *more).collect();
    assert_eq!(more, [true, true, true, true, false]);
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, (p, _))| p[..] == [i as u8])
    );
    // A message taken from an inbound queue has none after it.
    assert!(!synod_transport::Incoming::message(NodeId::new(2), Bytes::new()).more_follow());
}

#[test]
fn a_one_way_batch_arrives_whole_and_in_order_written_as_few_frames() {
    let (a, b) = pair();
    let payloads = (0u32..300).map(|i| Bytes::copy_from_slice(&i.to_le_bytes()));
    assert_eq!(b.send_batch(NodeId::new(1), payloads).unwrap(), 300);
    // Interleaved with single sends, order still holds.
    b.send(NodeId::new(1), Bytes::from_static(b"after"))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 301 {
        let n = a.recv_batch(&mut got, 1000, PATIENCE);
        assert!(n > 0, "only {} of 301 messages arrived", got.len());
    }
    for (i, m) in got[..300].iter().enumerate() {
        assert_eq!(m.from(), NodeId::new(2));
        assert!(!m.is_request());
        assert_eq!(&m.payload()[..], &(i as u32).to_le_bytes());
    }
    assert_eq!(&got[300].payload()[..], b"after");
    let stats = b.stats();
    assert_eq!(stats.messages_sent, 301);
    assert!(
        stats.batches_sent <= 3,
        "300 small messages queued at once share frames: {} frames",
        stats.batches_sent
    );
    // An empty batch sends nothing and succeeds.
    assert_eq!(
        b.send_batch(NodeId::new(1), std::iter::empty::<Bytes>())
            .unwrap(),
        0
    );
    assert_eq!(b.stats().messages_sent, 301);
}

#[test]
fn a_one_way_batch_with_a_payload_too_large_or_to_no_peer_sends_nothing() {
    let (_a, b) = pair();
    let max = b.config().payload_bytes_max();
    let payloads = vec![Bytes::from_static(b"fits"), Bytes::from(vec![0u8; max + 1])];
    assert!(matches!(
        b.send_batch(NodeId::new(1), payloads),
        Err(synod_transport::BatchSendError {
            queued: 0,
            error: synod_transport::SendError::TooLarge { .. }
        })
    ));
    assert!(matches!(
        b.send_batch(NodeId::new(9), [Bytes::from_static(b"x")]),
        Err(synod_transport::BatchSendError {
            queued: 0,
            error: synod_transport::SendError::NotConnected { .. }
        })
    ));
    assert_eq!(b.stats().messages_sent, 0);
}

/// Regression: a one-way batch that a full queue stopped part-way said only that the queue
/// was full, not how many of its messages had been queued (and were sent) before that, so
/// its caller could not tell which to send again. The error now counts them, and exactly
/// those arrive, in order.
#[test]
fn a_one_way_batch_stopped_by_a_full_queue_says_how_many_were_queued() {
    let a = start(config(1));
    let b = start(
        config(2)
            .overflow(synod_transport::Overflow::FailFast)
            .outbound_messages_max(10),
    );
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    // The whole batch is queued under one lock, so nothing is written before the queue
    // fills: it takes 10 of the 25 and refuses the 11th.
    let payloads = (0u32..25).map(|i| Bytes::copy_from_slice(&i.to_le_bytes()));
    let err = b.send_batch(NodeId::new(1), payloads).unwrap_err();
    assert_eq!(err.queued, 10, "{err}");
    assert!(
        matches!(err.error, synod_transport::SendError::QueueFull { .. }),
        "{err}"
    );
    let mut got = Vec::new();
    while got.len() < 10 {
        let n = a.recv_batch(&mut got, 100, PATIENCE);
        assert!(n > 0, "only {} of 10 messages arrived", got.len());
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m.payload()[..], &(i as u32).to_le_bytes());
    }
    // Nothing past the ten: the next message to arrive is one sent after the batch.
    b.send(NodeId::new(1), Bytes::from_static(b"after"))
        .unwrap();
    let next = a.recv(PATIENCE).expect("the message after the batch");
    assert_eq!(&next.payload()[..], b"after");
    assert_eq!(b.stats().messages_sent, 11);
}

/// An empty batch queues and writes nothing: `Ok(0)`, and the next message is the next to
/// arrive. To a node that is not a peer it fails as a `send` would, having queued nothing.
#[test]
fn an_empty_one_way_batch_queues_nothing_and_says_so() {
    let (a, b) = pair();
    let sent_before = b.stats();
    let none: [&[u8]; 0] = [];
    assert_eq!(b.send_batch(NodeId::new(1), none).unwrap(), 0);
    assert_eq!(
        b.send_batch(NodeId::new(1), std::iter::empty::<Bytes>())
            .unwrap(),
        0
    );
    let sent_after = b.stats();
    assert_eq!(sent_after.messages_sent, sent_before.messages_sent);
    assert_eq!(sent_after.batches_sent, sent_before.batches_sent);
    b.send_batch(NodeId::new(1), [&b"one"[..]]).unwrap();
    assert_eq!(&a.recv(PATIENCE).expect("one").payload()[..], b"one");
    let err = b.send_batch(NodeId::new(9), none).unwrap_err();
    assert_eq!(err.queued, 0);
    assert!(
        matches!(err.error, synod_transport::SendError::NotConnected { .. }),
        "{err}"
    );
}

/// A small message received in a large frame is a copy of its own, so that keeping it does
/// not keep the whole frame alive; in a frame of at most `SHARED_FRAME_BYTES_MAX` (what a
/// sender's default batches fill) it shares the frame, as does a message that is most of
/// its frame.
#[test]
fn a_small_message_kept_from_a_large_frame_does_not_keep_the_frame() {
    let big_config = |id| config(id).frame_bytes_max(2 << 20).batch_bytes_max(2 << 20);
    let a = start(big_config(1));
    let b = start(big_config(2));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let large = synod_transport::SHARED_FRAME_BYTES_MAX * 14;
    for (big, shared) in [(large, false), (2 << 10, true)] {
        let small = [1u8; 64];
        let big_payload = vec![2u8; big];
        // One call, one frame: the small message, then the big one.
        let before = b.stats().batches_sent;
        b.send_batch(NodeId::new(1), [&small[..], &big_payload[..]])
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            assert!(a.recv_batch(&mut got, 2, PATIENCE) > 0, "both arrive");
        }
        assert_eq!(b.stats().batches_sent, before + 1, "in one frame");
        let (small_got, big_got) = (got[0].payload(), got[1].payload());
        assert_eq!(&small_got[..], &small[..]);
        assert_eq!(&big_got[..], &big_payload[..]);
        // Sharing the frame, the small message's bytes end just before the big one's
        // envelope head (a few bytes) in the same buffer.
        let small_end = small_got.as_ptr() as usize + small_got.len();
        let big_start = big_got.as_ptr() as usize;
        let in_the_frame = small_end <= big_start && big_start - small_end <= 16;
        assert_eq!(
            in_the_frame, shared,
            "a 64-byte message beside one of {big} bytes"
        );
    }
}

/// A blocking sender's batch larger than the whole queue is queued as room frees up, as
/// many at a time as fit, and arrives whole and in order.
#[test]
fn a_one_way_batch_larger_than_the_queue_waits_for_room_and_arrives_in_order() {
    let a = start(config(1));
    let b = start(config(2).outbound_messages_max(16));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let payloads = (0u32..2000).map(|i| Bytes::copy_from_slice(&i.to_le_bytes()));
    assert_eq!(b.send_batch(NodeId::new(1), payloads).unwrap(), 2000);
    let mut got = Vec::new();
    while got.len() < 2000 {
        let n = a.recv_batch(&mut got, 4096, PATIENCE);
        assert!(n > 0, "only {} of 2000 messages arrived", got.len());
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m.payload()[..], &(i as u32).to_le_bytes());
    }
    assert_eq!(b.stats().messages_sent, 2000);
}

/// `recv_batch` into an empty vector with room takes the queue's buffer whole (and leaves
/// its own to the queue); into a vector that holds messages, or with a smaller `max`, it
/// moves them. Either way every message arrives once, in order, after those taken before.
#[test]
fn recv_batch_takes_messages_in_order_whether_it_trades_buffers_or_moves_them() {
    let (a, b) = pair();
    let mut next = 0u32;
    let mut send = |n: u32| {
        let payloads = (next..next + n).map(|i| Bytes::copy_from_slice(&i.to_le_bytes()));
        assert_eq!(b.send_batch(NodeId::new(1), payloads).unwrap(), n as usize);
        next += n;
    };
    let mut got: Vec<u32> = Vec::new();
    let mut take = |out: &mut Vec<synod_transport::Incoming>, max: usize, want: usize| {
        let mut moved = 0;
        while moved < want {
            let n = a.recv_batch(out, max, PATIENCE);
            assert!(n > 0, "only {moved} of {want} messages arrived");
            assert!(n <= max, "{n} messages taken with a max of {max}");
            moved += n;
        }
        got.extend(
            out.drain(..)
                .map(|m| u32::from_le_bytes(m.payload()[..].try_into().unwrap())),
        );
    };
    // Into empty vectors with room: the buffers are traded (each round, the vector the
    // queue handed out comes back as the next one's).
    let mut out = Vec::with_capacity(1024);
    for _ in 0..3 {
        send(200);
        take(&mut out, 1024, 200);
    }
    // A smaller max, then a vector already holding a message: moved.
    send(50);
    take(&mut out, 7, 50);
    send(30);
    let mut held = vec![synod_transport::Incoming::message(
        NodeId::new(9),
        Bytes::from_static(b"held"),
    )];
    while held.len() < 31 {
        assert!(a.recv_batch(&mut held, 1024, PATIENCE) > 0);
    }
    assert_eq!(&held[0].payload()[..], b"held");
    held.remove(0);
    take(&mut held, 1024, 0);
    assert_eq!(got, (0..next).collect::<Vec<u32>>());
}

/// The inbound queue holds at most `inbound_messages_max`: a reader with more stops and
/// waits for room (the peer is held back by TCP), and nothing is lost or reordered.
#[test]
fn a_full_inbound_queue_holds_the_reader_back_and_loses_nothing() {
    let a = start(config(1).inbound_messages_max(8));
    let b = start(config(2));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let payloads = (0u32..100).map(|i| Bytes::copy_from_slice(&i.to_le_bytes()));
    assert_eq!(b.send_batch(NodeId::new(1), payloads).unwrap(), 100);
    // The reader has decoded all of them (it counts before it queues)...
    let deadline = std::time::Instant::now() + PATIENCE;
    while a.stats().messages_received < 100 {
        assert!(std::time::Instant::now() < deadline, "not all decoded");
        std::thread::yield_now();
    }
    // ...but queued no more than 8.
    let mut got = Vec::with_capacity(1000);
    let first = a.recv_batch(&mut got, 1000, PATIENCE);
    assert!((1..=8).contains(&first), "{first} messages queued at once");
    while got.len() < 100 {
        assert!(
            a.recv_batch(&mut got, 1000, PATIENCE) > 0,
            "only {} arrived",
            got.len()
        );
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m.payload()[..], &(i as u32).to_le_bytes());
    }
}

#[test]
fn a_request_batch_with_a_payload_too_large_sends_nothing() {
    let (_a, b) = pair();
    let max = b.config().payload_bytes_max();
    let payloads = vec![Bytes::new(), Bytes::from(vec![0u8; max + 1])];
    let mut handles = Vec::new();
    assert!(matches!(
        b.request_batch(NodeId::new(1), payloads, PATIENCE, &mut handles),
        Err(RequestError::Send(
            synod_transport::SendError::TooLarge { .. }
        ))
    ));
    assert!(handles.is_empty());
    assert_eq!(b.in_flight(NodeId::new(1)), 0);
    assert_eq!(b.stats().messages_sent, 0);
}

#[test]
fn a_request_batch_beyond_the_window_fails_fast_after_sending_what_fits() {
    let a = start(config(1));
    let b = start(
        config(2)
            .in_flight_max(3)
            .overflow(synod_transport::Overflow::FailFast),
    );
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let mut handles = Vec::new();
    let payloads = (0u8..5).map(|i| Bytes::from(vec![i]));
    assert!(matches!(
        b.request_batch(NodeId::new(1), payloads, PATIENCE, &mut handles),
        Err(RequestError::InFlightFull { max: 3, .. })
    ));
    assert_eq!(handles.len(), 3, "the requests that fit were sent");
    assert_eq!(b.in_flight(NodeId::new(1)), 3);
    for i in 0u8..3 {
        let req = a.recv(PATIENCE).expect("request");
        assert_eq!(req.payload()[..], [i]);
        a.respond(&req, Bytes::from(vec![i + 100])).unwrap();
    }
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.wait().unwrap()[..], [i as u8 + 100]);
    }
    assert_eq!(b.in_flight(NodeId::new(1)), 0);
}

#[test]
fn a_request_batch_blocks_for_the_window_and_each_request_keeps_its_deadline() {
    // The server answers only payloads of 100 and more.
    let server =
        TcpTransport::bind_with_handler(config(1).build().unwrap(), "127.0.0.1:0", |req| {
            (req.payload()[0] >= 100).then(|| req.payload().clone())
        })
        .unwrap();
    let client = start(config(2).in_flight_max(4));
    client.add_peer(NodeId::new(1), server.local_addr());
    assert!(client.wait_connected(NodeId::new(1), PATIENCE));
    let mut handles = Vec::new();
    // Unanswered requests fail at their deadline and free the window.
    let payloads = (0u8..4).map(|i| Bytes::from(vec![i]));
    client
        .request_batch(
            NodeId::new(1),
            payloads,
            Duration::from_millis(20),
            &mut handles,
        )
        .unwrap();
    assert_eq!(client.in_flight(NodeId::new(1)), 4);
    for handle in handles.drain(..) {
        match handle.wait() {
            Err(RequestError::Timeout { peer, .. }) => assert_eq!(peer, NodeId::new(1)),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert_eq!(client.in_flight(NodeId::new(1)), 0);
    // A batch larger than the window goes through by waiting for responses.
    let payloads = (100u8..110).map(|i| Bytes::from(vec![i]));
    client
        .request_batch(NodeId::new(1), payloads, PATIENCE, &mut handles)
        .unwrap();
    assert_eq!(handles.len(), 10);
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.wait().unwrap()[..], [i as u8 + 100]);
    }
    assert_eq!(client.in_flight(NodeId::new(1)), 0);
}

#[test]
fn a_lost_connection_fails_every_request_of_a_batch_at_once() {
    let a = start(config(1));
    let b = start(config(2).backoff_initial_ms(5).backoff_max_ms(50));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let mut handles = Vec::new();
    b.request_batch(
        NodeId::new(1),
        (0..10).map(|_| Bytes::new()),
        PATIENCE * 10,
        &mut handles,
    )
    .unwrap();
    assert!(wait_for(|| a.stats().messages_received == 10));
    a.shutdown();
    for handle in handles {
        match handle.wait() {
            Err(RequestError::ConnectionLost { peer, .. }) => assert_eq!(peer, NodeId::new(1)),
            other => panic!("expected a lost connection, got {other:?}"),
        }
    }
}

/// review12 probe: a fail-fast batch stopped by the byte limit (not the message limit)
/// queues exactly the envelopes that fit, in order, and none after the first refused, even
/// one small enough to fit in what is left (it would overtake the refused one).
#[test]
fn a_fail_fast_batch_stopped_by_the_byte_limit_queues_exactly_those_before_the_refused_one() {
    let a = start(config(1));
    // A one-way envelope from 2 to 1 with a payload under 128 bytes takes 5 bytes more
    // than its payload: nine of 100 bytes take 945 of the 1000, a tenth of 120 does not fit,
    // and an eleventh of 10 would.
    let b = start(
        config(2)
            .overflow(synod_transport::Overflow::FailFast)
            .outbound_bytes_max(1000),
    );
    b.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    let mut payloads: Vec<Bytes> = (0u8..9).map(|i| Bytes::from(vec![i; 100])).collect();
    payloads.push(Bytes::from(vec![9; 120]));
    payloads.push(Bytes::from(vec![10; 10]));
    let err = b.send_batch(NodeId::new(1), payloads).unwrap_err();
    assert_eq!(err.queued, 9, "{err}");
    assert!(
        matches!(err.error, synod_transport::SendError::QueueFull { .. }),
        "{err}"
    );
    let mut got = Vec::new();
    while got.len() < 9 {
        let n = a.recv_batch(&mut got, 100, PATIENCE);
        assert!(n > 0, "only {} of 9 messages arrived", got.len());
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m.payload()[..], &vec![i as u8; 100][..]);
    }
    b.send(NodeId::new(1), Bytes::from_static(b"after"))
        .unwrap();
    let next = a.recv(PATIENCE).expect("the message after the batch");
    assert_eq!(&next.payload()[..], b"after");
    assert_eq!(b.stats().messages_sent, 10);
}

/// `recv_into` hands over requests and one-way messages from several peers in the order
/// each peer sent them, whatever `max` splits the queue's runs at, mixed with `recv` and
/// `try_recv`, never more than `inbound_messages_max` at once; a request taken this way is
/// answered through `to_incoming`.
#[test]
fn recv_into_takes_every_message_of_several_peers_in_order_for_any_max() {
    let a = start(config(1).inbound_messages_max(8));
    let b = start(config(2));
    let c = start(config(3));
    for peer in [&b, &c] {
        peer.add_peer(NodeId::new(1), a.local_addr());
        assert!(peer.wait_connected(NodeId::new(1), PATIENCE));
    }
    let numbered =
        |range: std::ops::Range<u32>| range.map(|i| Bytes::from(i.to_le_bytes().to_vec()));
    assert_eq!(b.send_batch(NodeId::new(1), numbered(0..300)).unwrap(), 300);
    let answer = b
        .request(NodeId::new(1), Bytes::from_static(b"question"), PATIENCE)
        .unwrap();
    assert_eq!(
        b.send_batch(NodeId::new(1), numbered(300..400)).unwrap(),
        100
    );
    assert_eq!(c.send_batch(NodeId::new(1), numbered(0..250)).unwrap(), 250);

    let mut from_b = Vec::new();
    let mut from_c = Vec::new();
    let mut question = None;
    let mut received = synod_transport::Received::new();
    let maxes = [1, 7, 3, 1024, 2];
    let mut round = 0;
    while from_b.len() + from_c.len() + usize::from(question.is_some()) < 651 {
        let max = maxes[round % maxes.len()];
        round += 1;
        // Every few rounds, one message by `recv` or `try_recv` instead.
        let taken: Vec<synod_transport::Incoming> = match round % 4 {
            0 => a.recv(PATIENCE).into_iter().collect(),
            2 => a.try_recv().into_iter().collect(),
            _ => {
                received.clear();
                let n = a.recv_into(&mut received, max, PATIENCE);
                assert!(n > 0, "nothing arrived in round {round}");
                assert!(
                    n <= max && n <= 8,
                    "{n} taken with max {max} and a queue of 8"
                );
                assert_eq!(received.len(), n);
                received.iter().map(|m| m.to_incoming()).collect()
            }
        };
        for m in taken {
            if m.is_request() {
                assert!(question.is_none(), "the request came twice");
                assert_eq!(&m.payload()[..], b"question");
                // The messages b sent before it came before it.
                assert_eq!(from_b.len(), 300);
                question = Some(m);
                continue;
            }
            let n = u32::from_le_bytes(m.payload()[..].try_into().expect("4 bytes"));
            match m.from().get() {
                2 => from_b.push(n),
                3 => from_c.push(n),
                other => panic!("a message from node {other}"),
            }
        }
    }
    assert_eq!(from_b, (0..400).collect::<Vec<u32>>());
    assert_eq!(from_c, (0..250).collect::<Vec<u32>>());
    let question = question.expect("the request arrived");
    a.respond(&question, Bytes::from_static(b"answer")).unwrap();
    assert_eq!(&answer.wait().unwrap()[..], b"answer");
    assert!(a.try_recv().is_none());
}

/// A batch handler gets each read's requests and one-way messages together on the reader
/// thread, every call from one peer and in the order it sent them; its replies reach their
/// requesters, and a one-way message cannot be answered.
#[test]
fn a_batch_handler_takes_every_message_in_order_and_answers_requests() {
    type Seen = Arc<parking_lot::Mutex<Vec<(u64, u32)>>>;
    let seen: Seen = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let a = TcpTransport::bind_with_batch_handler(config(1).build().unwrap(), "127.0.0.1:0", {
        let (seen, refused) = (Arc::clone(&seen), Arc::clone(&refused));
        move |received, replies| {
            let first = received.iter().next().map(|m| m.from());
            let mut seen = seen.lock();
            for m in received {
                assert_eq!(Some(m.from()), first, "one peer per call");
                if m.is_request() {
                    let mut back = m.payload().to_vec();
                    back.reverse();
                    replies.respond(&m, Bytes::from(back)).unwrap();
                } else {
                    if replies.respond(&m, Bytes::new()).is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    let n = u32::from_le_bytes(m.payload().try_into().expect("4 bytes"));
                    seen.push((m.from().get(), n));
                }
            }
        }
    })
    .unwrap();
    let numbered = |range: std::ops::Range<u32>| range.map(u32::to_le_bytes);
    let senders: Vec<TcpTransport> = (2..=3).map(|n| start(config(n))).collect();
    let mut answers = Vec::new();
    for peer in &senders {
        peer.add_peer(NodeId::new(1), a.local_addr());
        assert!(peer.wait_connected(NodeId::new(1), PATIENCE));
        assert_eq!(
            peer.send_batch(NodeId::new(1), numbered(0..700)).unwrap(),
            700
        );
        answers.push(
            peer.request(NodeId::new(1), Bytes::from_static(b"abc"), PATIENCE)
                .unwrap(),
        );
        assert_eq!(
            peer.send_batch(NodeId::new(1), numbered(700..1000))
                .unwrap(),
            300
        );
    }
    for answer in answers {
        assert_eq!(&answer.wait().unwrap()[..], b"cba");
    }
    assert!(
        wait_for(|| seen.lock().len() == 2000),
        "{} of 2000 arrived",
        seen.lock().len()
    );
    for peer in [2, 3] {
        let got: Vec<u32> = seen
            .lock()
            .iter()
            .filter(|(p, _)| *p == peer)
            .map(|&(_, n)| n)
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<u32>>(), "node {peer}");
    }
    assert_eq!(refused.load(Ordering::Relaxed), 2000);
    assert!(a.try_recv().is_none(), "nothing is queued for recv");
}
