//! Input from the network never panics a node: random bytes through the decoder, and
//! well-formed messages with extreme or contradictory fields through `step`.

use bytes::Bytes;
use synod_consensus::{
    AppendResult, Entry, LogIndex, Message, MessageBody, NodeId, Payload, ReadId, SplitMix64, Term,
};

use crate::harness::Cluster;

fn pick(rng: &mut SplitMix64) -> u64 {
    match rng.range(0, 6) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX - 1,
        4 => rng.range(0, 10),
        _ => rng.next_u64(),
    }
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = SplitMix64::new(7);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let len = rng.range(0, 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if !bytes.is_empty() && rng.range(0, 2) == 0 {
            bytes[0] = synod_consensus::WIRE_VERSION;
        }
        if Message::decode(&bytes).is_ok() {
            decoded += 1;
        }
    }
    // Round trip of a real message.
    let msg = Message {
        from: NodeId::new(1),
        to: NodeId::new(2),
        term: Term::new(3),
        body: MessageBody::ReadIndex { id: ReadId(9) },
    };
    assert_eq!(Message::decode(&msg.encode()), Ok(msg));
    assert!(Message::decode(&[]).is_err());
    assert!(Message::decode(&[99, 0]).is_err());
    println!("decoder: 20000 random inputs, {decoded} decoded, 0 panics");
}

#[test]
fn hostile_messages_never_panic_a_node() {
    let mut rng = SplitMix64::new(11);
    let mut c = Cluster::new(3, |b| b);
    c.elect(NodeId::new(1));
    c.propose(NodeId::new(1), "x");
    c.deliver_all();
    for _ in 0..20_000 {
        let to = NodeId::new(rng.range(1, 4));
        let from = NodeId::new(rng.range(1, 5));
        let term = Term::new(pick(&mut rng));
        let index = LogIndex(pick(&mut rng));
        let body = match rng.range(0, 10) {
            0 => MessageBody::PreVote {
                last_index: index,
                last_term: Term::new(pick(&mut rng)),
            },
            1 => MessageBody::Vote {
                last_index: index,
                last_term: Term::new(pick(&mut rng)),
                transfer: rng.range(0, 2) == 0,
            },
            2 => {
                let entries = (0..rng.range(0, 3))
                    .map(|i| Entry {
                        term: Term::new(pick(&mut rng)),
                        index: LogIndex(index.0.wrapping_add(1 + i)),
                        payload: Payload::Command(Bytes::from_static(b"z")),
                    })
                    .collect();
                MessageBody::Append {
                    prev_index: index,
                    prev_term: Term::new(pick(&mut rng)),
                    entries,
                    commit: LogIndex(pick(&mut rng)),
                }
            }
            3 => MessageBody::AppendResponse {
                result: if rng.range(0, 2) == 0 {
                    AppendResult::Accepted { match_index: index }
                } else {
                    AppendResult::Rejected {
                        rejected_prev: index,
                        hint_index: LogIndex(pick(&mut rng)),
                        hint_term: Term::new(pick(&mut rng)),
                    }
                },
            },
            4 => MessageBody::Heartbeat {
                commit: index,
                round: pick(&mut rng),
            },
            5 => MessageBody::HeartbeatResponse {
                round: pick(&mut rng),
                last_index: index,
            },
            6 => MessageBody::ReadIndexResponse {
                id: ReadId(pick(&mut rng)),
                index: Some(index),
            },
            7 => MessageBody::SnapshotResponse {
                index,
                next_offset: pick(&mut rng),
                done: rng.range(0, 2) == 0,
            },
            8 => MessageBody::VoteResponse {
                granted: rng.range(0, 2) == 0,
            },
            _ => MessageBody::TimeoutNow,
        };
        c.deliver(Message {
            from,
            to,
            term,
            body,
        });
        c.drop_all();
        for _ in 0..rng.range(0, 2) {
            c.tick_all();
            c.drop_all();
        }
    }
    println!("hostile messages: 20000 stepped, 0 panics");
}
