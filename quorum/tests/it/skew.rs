//! Last-write-wins under clock skew loses a write; version vectors keep it. And a clock far
//! ahead cannot take a key for good: its timestamps are refused.
//!
//! The story, on three replicas `n1..n3`. Node `n1`'s clock runs 400 ms fast (within the
//! coordinators' default drift bound of 500 ms, so its timestamps are accepted); `n2`'s
//! is right. Real time is in seconds.
//!
//! 1. At 100.0 a client writes `"draft"` through `n1`, stamped 100.4 by `n1`'s fast clock,
//!    at consistency ALL. Acknowledged.
//! 2. At 100.2 another client reads the key (it sees `"draft"`) and writes `"final"`
//!    through `n2`, stamped 100.2. Acknowledged at QUORUM: the client is told it worked.
//! 3. At 101.5 a third client writes `"other"` through `n3` (its clock is right too, so
//!    101.5) without reading first: a blind write, concurrent with nothing it knows of.
//!
//! With last-write-wins, step 2's write is gone: every read returns `"draft"` (100.4 >
//! 100.2) until step 3 overwrites it, even though `"final"` was acknowledged and written
//! *after* its client had seen `"draft"`. Wall-clock timestamps cannot tell "later" from
//! "stamped by a faster clock". (A hybrid clock that the client's read had advanced past
//! 100.4 would have stamped step 2 correctly; but two truly concurrent writes still lose
//! one of them silently.)
//!
//! With version vectors, step 2 carries the context of its read and replaces `"draft"`
//! whatever the clocks say, and the blind write of step 3 is kept beside it as a sibling:
//! the read returns both, and nothing acknowledged is lost.

use std::time::Duration;

use synod_clocks::{HybridTimestamp, VersionVector, WallTime};
use synod_quorum::{
    CLOCK_DRIFT_MAX_LIMIT_MS, Consistency, CoordinatorConfig, Incarnation, LastWriteWins,
    Placement, ReadRepair, RequestId, StoreConfigError, StoreError, VersionVectors,
};

use crate::coordinator::{Cluster, Lww, StoreEffect, n};

/// A timestamp from a node's wall clock, `millis` after the epoch.
fn stamp(millis: u64, node: u64) -> HybridTimestamp {
    HybridTimestamp::new(WallTime::from_nanos(millis * 1_000_000), 0, n(node))
}

#[test]
fn last_write_wins_under_skew_loses_an_acknowledged_write() {
    let lww = LastWriteWins::<HybridTimestamp, &'static str>::new();
    let mut c = Cluster::new(&[1, 2, 3], lww, ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();

    // 1. n1's clock is 400 ms fast.
    c.now = WallTime::from_secs(100);
    c.ahead.insert(n(1), Duration::from_millis(400));
    let draft = (stamp(100_400, 1), Some("draft"));
    c.write_acked(
        1,
        RequestId::new(1),
        "doc",
        draft,
        Consistency::All,
        &placement,
    );

    // 2. Read, then write "final" through n2: acknowledged.
    c.read(2, RequestId::new(2), "doc", Consistency::Quorum, &placement)
        .unwrap();
    c.now = WallTime::from_secs(100).saturating_add(Duration::from_millis(200));
    c.settle();
    let StoreEffect::ReadDone {
        result: Ok(Some((_, Some(seen)))),
        ..
    } = c.take_done()
    else {
        panic!("read failed");
    };
    assert_eq!(seen, "draft");
    c.write(
        2,
        RequestId::new(3),
        "doc",
        (stamp(100_200, 2), Some("final")),
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.settle();
    assert!(
        matches!(c.take_done(), StoreEffect::WriteDone { result: Ok(_), .. }),
        "the client is told its write succeeded"
    );

    // Every read now returns the older value: "final" is lost.
    c.read(3, RequestId::new(4), "doc", Consistency::All, &placement)
        .unwrap();
    c.settle();
    let StoreEffect::ReadDone {
        result: Ok(Some((_, Some(value)))),
        ..
    } = c.take_done()
    else {
        panic!("read failed");
    };
    assert_eq!(
        value, "draft",
        "last-write-wins kept the write stamped by the fast clock"
    );
    for id in 1..=3 {
        assert_eq!(
            c.node(id).local_state(&"doc").unwrap().unwrap().1,
            Some("draft")
        );
    }
}

#[test]
fn version_vectors_keep_the_causally_later_write_and_the_concurrent_one_as_siblings() {
    let vv = VersionVectors::<&'static str>::new();
    let mut c = Cluster::new(&[1, 2, 3], vv, ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();

    // 1. A blind write of "draft" through n1 (no clocks involved at all).
    c.write_acked(
        1,
        RequestId::new(1),
        "doc",
        (VersionVector::new(), "draft"),
        Consistency::All,
        &placement,
    );

    // 2. Read, then write "final" through n2 with the context of that read.
    c.read(2, RequestId::new(2), "doc", Consistency::Quorum, &placement)
        .unwrap();
    c.settle();
    let StoreEffect::ReadDone {
        result: Ok(seen), ..
    } = c.take_done()
    else {
        panic!("read failed");
    };
    assert_eq!(seen.values().collect::<Vec<_>>(), [&"draft"]);
    c.write_acked(
        2,
        RequestId::new(3),
        "doc",
        (seen.context().clone(), "final"),
        Consistency::Quorum,
        &placement,
    );

    // 3. A blind write through n3, concurrent with "final".
    c.write_acked(
        3,
        RequestId::new(4),
        "doc",
        (VersionVector::new(), "other"),
        Consistency::Quorum,
        &placement,
    );

    // The read returns both acknowledged values as siblings; "draft" is replaced.
    c.read(1, RequestId::new(5), "doc", Consistency::All, &placement)
        .unwrap();
    c.settle();
    let StoreEffect::ReadDone {
        result: Ok(siblings),
        ..
    } = c.take_done()
    else {
        panic!("read failed");
    };
    let mut values: Vec<&str> = siblings.values().copied().collect();
    values.sort_unstable();
    assert_eq!(values, ["final", "other"]);

    // The caller resolves and writes back with the read's context: one value again.
    c.write_acked(
        1,
        RequestId::new(6),
        "doc",
        (siblings.context().clone(), "final+other"),
        Consistency::All,
        &placement,
    );
    for id in 1..=3 {
        let state = c.node(id).local_state(&"doc").unwrap();
        assert_eq!(
            state.values().collect::<Vec<_>>(),
            [&"final+other"],
            "replica n{id}"
        );
    }
}

/// A key in unresolved conflict holds at most `SIBLINGS_MAX` siblings: one more blind write
/// is refused with an error that says how to resolve it, and a write with the context of a
/// read of those siblings resolves them.
#[test]
fn a_key_in_conflict_refuses_blind_writes_past_the_sibling_limit() {
    use synod_clocks::dvv::SIBLINGS_MAX;
    use synod_quorum::{ResolveError, Resolver};

    let vv = VersionVectors::<u32>::new();
    let mut state = Default::default();
    for i in 0..SIBLINGS_MAX {
        let value = u32::try_from(i).expect("small");
        state = vv
            .coordinate(n(1), Some(&mut state), (VersionVector::new(), value))
            .expect("room");
    }
    let err = vv
        .coordinate(n(1), Some(&mut state), (VersionVector::new(), 999))
        .expect_err("one blind write too many");
    assert_eq!(
        err,
        ResolveError::TooManySiblings {
            siblings_max: SIBLINGS_MAX
        }
    );
    assert!(err.to_string().contains("read them"), "{err}");

    // A write that read everything resolves the conflict.
    let context = state.context().clone();
    let resolved = vv
        .coordinate(n(1), Some(&mut state), (context, 7))
        .expect("a resolution");
    assert_eq!(resolved.values().copied().collect::<Vec<_>>(), vec![7]);
}

/// A write stamped an hour ahead, by a client's clock or a coordinator's, would win its key
/// against every write of the next hour. It is refused: by the coordinator a client hands
/// it to, by the replicas a coordinator sends it to, and as a read answer. A later write is
/// what reads return.
#[test]
fn a_clock_far_ahead_cannot_take_a_key() {
    let mut c = Cluster::new(&[1, 2, 3], Lww::new(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    let hour = Duration::from_secs(3600);

    // A client whose clock is an hour fast stamps its own write: its coordinator refuses it.
    let future = (c.now.saturating_add(hour), Some("future"));
    let err = c
        .write(
            2,
            RequestId::new(1),
            "k",
            future,
            Consistency::Quorum,
            &placement,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TimestampTooFarAhead {
                clock_drift_max_ms: 500,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("3600000 ms ahead"), "{err}");
    c.collect();
    assert!(
        c.in_flight.is_empty() && c.done.is_empty(),
        "nothing may be sent"
    );
    assert_eq!(c.node(2).local_state(&"k"), None, "nothing may be applied");
    assert_eq!(c.node(2).stats().timestamps_refused, 1);

    // n1's own clock jumps an hour ahead, and stamps a write it coordinates: n2 and n3
    // refuse it, so it fails, held by n1 alone.
    c.ahead.insert(n(1), hour);
    let future = (c.clock(1), Some("future"));
    c.write(
        1,
        RequestId::new(2),
        "k",
        future,
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.settle();
    let StoreEffect::WriteDone {
        result: Err(err), ..
    } = c.take_done()
    else {
        panic!("the replicas refused the write, and it succeeded");
    };
    assert!(matches!(err, StoreError::QuorumUnreachable { .. }), "{err}");
    for id in [2, 3] {
        assert_eq!(c.node(id).local_state(&"k"), None, "n{id} took the write");
        assert_eq!(
            c.node(id).stats().timestamps_refused,
            u64::from(id == 2) + 1
        );
    }

    // A second later, a write stamped by a right clock is acknowledged, and reads return it:
    // n1's answer is refused (n1 counts as a failed replica) and never repaired onto others.
    c.now = c.now.saturating_add(Duration::from_secs(1));
    let later = (c.clock(2), Some("later"));
    c.write_acked(
        2,
        RequestId::new(3),
        "k",
        later,
        Consistency::Quorum,
        &placement,
    );
    c.read(3, RequestId::new(4), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.settle();
    assert_eq!(
        c.take_read_ok(),
        Some(later),
        "the far-future write won the key"
    );
    // At ALL the refused replica cannot make up the level: the read fails and says why.
    c.read(2, RequestId::new(5), "k", Consistency::All, &placement)
        .unwrap();
    c.settle();
    let err = c.take_read_err();
    assert!(err.to_string().contains("1 rejected"), "{err}");
    for id in [2, 3] {
        assert_eq!(c.node(id).local_state(&"k"), Some(&Some(later)), "n{id}");
    }
}

#[test]
fn the_drift_bound_is_validated() {
    let config = || CoordinatorConfig::new(n(1), Incarnation::new(1));
    assert!(config().clock_drift_max_ms(1).is_ok());
    assert!(
        config()
            .clock_drift_max_ms(CLOCK_DRIFT_MAX_LIMIT_MS)
            .is_ok()
    );
    assert_eq!(
        config().clock_drift_max_ms(0).unwrap_err(),
        StoreConfigError::ZeroLimit
    );
    let err = config()
        .clock_drift_max_ms(CLOCK_DRIFT_MAX_LIMIT_MS + 1)
        .unwrap_err();
    assert!(matches!(err, StoreConfigError::ClockDriftTooLarge { .. }));
    assert!(err.to_string().contains("one day"), "{err}");
}
