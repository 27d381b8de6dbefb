//! Members over real sockets: each a `TcpMember` (the `transport` feature) on its own
//! thread with its own synod-transport on loopback, one stopped dead mid-run; and one
//! member driven twice by `net::drive`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use synod_membership::net::{GenerationFile, Host, TcpMember, drive};
use synod_membership::{
    Member, MemberConfig, MemberRequest, MemberResponse, MemberState, MemberWrite, ViewChange,
};
use synod_node::{NodeId, Time};
use synod_transport::{ClusterId, Config, TcpTransport};

const PERIOD_MS: u64 = 200;

/// Polls `done` every 50 ms until it holds; false if it did not by `deadline`.
fn eventually(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn members_on_real_sockets_hold_a_killed_member_dead_and_agree_on_one_coordinator() {
    let count: u64 = std::env::var("SYNOD_MEMBERSHIP_TCP_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let dir = std::env::temp_dir().join(format!("synod-membership-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ids: Vec<NodeId> = (1..=count).map(NodeId::new).collect();
    let transports: Vec<TcpTransport> = ids
        .iter()
        .map(|&id| {
            let config = Config::builder(ClusterId(16), id).build().expect("config");
            TcpTransport::bind(config, "127.0.0.1:0").expect("bind")
        })
        .collect();
    for (i, t) in transports.iter().enumerate() {
        for (j, other) in transports.iter().enumerate() {
            if i != j {
                t.add_peer(ids[j], other.local_addr());
            }
        }
    }
    let (events, heard) = mpsc::channel();
    let mut members: Vec<Option<TcpMember>> = Vec::new();
    for (&id, transport) in ids.iter().zip(transports) {
        let file = GenerationFile::new(dir.join(format!("generation-{id}")));
        let config = MemberConfig::builder(id, id.get())
            .seeds([ids[0], ids[1]])
            .probe(PERIOD_MS, PERIOD_MS / 2)
            .gossip(PERIOD_MS / 5, 3)
            .push_pull_interval_ms(10 * PERIOD_MS)
            .key_values(PERIOD_MS, 50 * PERIOD_MS)
            .build()
            .expect("member config");
        let member = Member::start(config, file.last().expect("generation file"));
        let events = events.clone();
        let apply = move |change: ViewChange| {
            if let ViewChange::Member(e) = change
                && e.state == Some(MemberState::Dead)
            {
                let _ = events.send((id, e.id, Instant::now()));
            }
        };
        members.push(Some(
            TcpMember::spawn(member, transport, file, apply).expect("spawn"),
        ));
    }
    let view = |m: &TcpMember| m.with(|m: &Member| m.live_members()).unwrap_or_default();
    let joined = eventually(Instant::now() + Duration::from_secs(120), || {
        members.iter().flatten().all(|m| view(m) == ids)
    });
    assert!(joined, "the views never held every member");

    // Key-values over the wire: member 3 publishes one, every member comes to hold it.
    let three = members[2].as_ref().expect("running");
    let set = MemberRequest::Set {
        key: "shard".into(),
        value: b"7".to_vec(),
    };
    assert!(matches!(
        three.request(set),
        Some(MemberResponse::Written { version: 1 })
    ));
    let spread = eventually(Instant::now() + Duration::from_secs(120), || {
        members.iter().flatten().all(|m| {
            m.with(|m: &Member| m.get(NodeId::new(3), "shard").map(<[u8]>::to_vec))
                .flatten()
                .as_deref()
                == Some(b"7".as_slice())
        })
    });
    assert!(spread, "the key never reached every member");

    // Member 5 dies without a word: its thread stops and its sockets close.
    let victim = NodeId::new(5);
    while heard.try_recv().is_ok() {}
    let killed_at = Instant::now();
    members[4].take().expect("running").stop().expect("stopped");
    let survivors: Vec<NodeId> = ids.iter().copied().filter(|&i| i != victim).collect();
    let dead_everywhere = eventually(Instant::now() + Duration::from_secs(120), || {
        members.iter().flatten().all(|m| {
            m.with(move |m: &Member| m.state_of(victim))
                .flatten()
                .is_some_and(|s| s == MemberState::Dead)
        })
    });
    assert!(dead_everywhere, "not every survivor holds {victim} dead");
    let mut periods: Vec<f64> = heard
        .try_iter()
        .filter(|&(_, dead, _)| dead == victim)
        .map(|(_, _, at)| (at - killed_at).as_secs_f64() * 1_000.0 / PERIOD_MS as f64)
        .collect();
    periods.sort_by(f64::total_cmp);
    println!(
        "{count} members on loopback: {victim} held dead by every survivor after {:.1} \
         periods (first {:.1})",
        periods.last().copied().unwrap_or(f64::NAN),
        periods.first().copied().unwrap_or(f64::NAN)
    );

    // The emergent leader: once the views agree again, one coordinator, named by every
    // survivor, and alive.
    let one = eventually(Instant::now() + Duration::from_secs(120), || {
        let coordinators: Vec<NodeId> = members
            .iter()
            .flatten()
            .filter_map(|m| m.with(|m: &Member| (m.live_members(), m.coordinator())))
            .filter(|(live, _)| *live == survivors)
            .map(|(_, c)| c)
            .collect();
        coordinators.len() == survivors.len()
            && coordinators.windows(2).all(|w| w[0] == w[1])
            && coordinators[0] != victim
    });
    assert!(one, "the survivors never agreed on one live coordinator");
    for member in members.into_iter().flatten() {
        member.stop().expect("stopped");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host that records the time of each turn and stops the driver after `turns` of them.
struct Turns<'a> {
    stop: &'a AtomicBool,
    turns: usize,
    seen: Vec<Time>,
}

impl Host for Turns<'_> {
    fn persist(&mut self, _: MemberWrite) -> std::io::Result<()> {
        Ok(())
    }

    fn apply(&mut self, _: ViewChange) {}

    fn each_turn(&mut self, _: &mut Member, now: Time) {
        self.seen.push(now);
        if self.seen.len() >= self.turns {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A member driven, stopped and driven again sees its time go on, never back (each call
/// of `drive` used to start its clock at 0).
#[test]
fn a_member_driven_again_never_sees_time_go_backwards() {
    let id = NodeId::new(1);
    let config = Config::builder(ClusterId(17), id).build().expect("config");
    let transport = TcpTransport::bind(config, "127.0.0.1:0").expect("bind");
    let mut member = Member::start(MemberConfig::builder(id, 1).build().expect("config"), 0);
    let stop = AtomicBool::new(false);
    let mut first = Turns {
        stop: &stop,
        turns: 3,
        seen: Vec::new(),
    };
    drive(&mut member, &transport, &stop, &mut first).expect("drive");
    stop.store(false, Ordering::Relaxed);
    let mut second = Turns {
        stop: &stop,
        turns: 1,
        seen: Vec::new(),
    };
    drive(&mut member, &transport, &stop, &mut second).expect("drive");
    let last = *first.seen.last().expect("turns");
    let again = second.seen[0];
    assert!(
        again >= last,
        "driven again at {again:?}, after {last:?} in the first call"
    );
}
