//! Last-write-wins under clock skew loses a write; version vectors keep it.
//!
//! The story, on three replicas `n1..n3`. Node `n1`'s clock runs one second fast; `n2`'s
//! is right. Real time is in seconds.
//!
//! 1. At 100.0 a client writes `"draft"` through `n1`, stamped 101.0 by `n1`'s fast clock,
//!    at consistency ALL. Acknowledged.
//! 2. At 100.5 another client reads the key (it sees `"draft"`) and writes `"final"`
//!    through `n2`, stamped 100.5. Acknowledged at QUORUM: the client is told it worked.
//! 3. At 101.5 a third client writes `"other"` through `n3` (its clock is right too, so
//!    101.5) without reading first: a blind write, concurrent with nothing it knows of.
//!
//! With last-write-wins, step 2's write is gone: every read returns `"draft"` (101.0 >
//! 100.5) until step 3 overwrites it, even though `"final"` was acknowledged and written
//! *after* its client had seen `"draft"`. Wall-clock timestamps cannot tell "later" from
//! "stamped by a faster clock". (A hybrid clock that the client's read had advanced past
//! 101.0 would have stamped step 2 correctly; but two truly concurrent writes still lose
//! one of them silently.)
//!
//! With version vectors, step 2 carries the context of its read and replaces `"draft"`
//! whatever the clocks say, and the blind write of step 3 is kept beside it as a sibling:
//! the read returns both, and nothing acknowledged is lost.

use synod_clocks::{HybridTimestamp, VersionVector, WallTime};
use synod_quorum::{
    Consistency, LastWriteWins, Placement, ReadRepair, RequestId, StoreEffect, VersionVectors,
};

use crate::coordinator::{Cluster, n};

/// A timestamp from a node's wall clock, `millis` after the epoch.
fn stamp(millis: u64, node: u64) -> HybridTimestamp {
    HybridTimestamp::new(WallTime::from_nanos(millis * 1_000_000), 0, n(node))
}

#[test]
fn last_write_wins_under_skew_loses_an_acknowledged_write() {
    let lww = LastWriteWins::<HybridTimestamp, &'static str>::new();
    let mut c = Cluster::new(&[1, 2, 3], lww, ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();

    // 1. n1's clock is one second fast.
    let draft = (stamp(101_000, 1), Some("draft"));
    c.node(1)
        .write(
            RequestId::new(1),
            "doc",
            draft,
            Consistency::All,
            &placement,
        )
        .unwrap();
    c.settle();
    assert!(matches!(
        c.take_done(),
        StoreEffect::WriteDone { result: Ok(_), .. }
    ));

    // 2. Read, then write "final" through n2: acknowledged.
    c.node(2)
        .read(RequestId::new(2), "doc", Consistency::Quorum, &placement)
        .unwrap();
    c.settle();
    let StoreEffect::ReadDone {
        result: Ok(Some((_, Some(seen)))),
        ..
    } = c.take_done()
    else {
        panic!("read failed");
    };
    assert_eq!(seen, "draft");
    c.node(2)
        .write(
            RequestId::new(3),
            "doc",
            (stamp(100_500, 2), Some("final")),
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
    c.node(3)
        .read(RequestId::new(4), "doc", Consistency::All, &placement)
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
    c.node(1)
        .write(
            RequestId::new(1),
            "doc",
            (VersionVector::new(), "draft"),
            Consistency::All,
            &placement,
        )
        .unwrap();
    c.settle();
    assert!(matches!(
        c.take_done(),
        StoreEffect::WriteDone { result: Ok(_), .. }
    ));

    // 2. Read, then write "final" through n2 with the context of that read.
    c.node(2)
        .read(RequestId::new(2), "doc", Consistency::Quorum, &placement)
        .unwrap();
    c.settle();
    let StoreEffect::ReadDone {
        result: Ok(seen), ..
    } = c.take_done()
    else {
        panic!("read failed");
    };
    assert_eq!(seen.values().collect::<Vec<_>>(), [&"draft"]);
    c.node(2)
        .write(
            RequestId::new(3),
            "doc",
            (seen.context().clone(), "final"),
            Consistency::Quorum,
            &placement,
        )
        .unwrap();
    c.settle();
    assert!(matches!(
        c.take_done(),
        StoreEffect::WriteDone { result: Ok(_), .. }
    ));

    // 3. A blind write through n3, concurrent with "final".
    c.node(3)
        .write(
            RequestId::new(4),
            "doc",
            (VersionVector::new(), "other"),
            Consistency::Quorum,
            &placement,
        )
        .unwrap();
    c.settle();
    assert!(matches!(
        c.take_done(),
        StoreEffect::WriteDone { result: Ok(_), .. }
    ));

    // The read returns both acknowledged values as siblings; "draft" is replaced.
    c.node(1)
        .read(RequestId::new(5), "doc", Consistency::All, &placement)
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
    c.node(1)
        .write(
            RequestId::new(6),
            "doc",
            (siblings.context().clone(), "final+other"),
            Consistency::All,
            &placement,
        )
        .unwrap();
    c.settle();
    assert!(matches!(
        c.take_done(),
        StoreEffect::WriteDone { result: Ok(_), .. }
    ));
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
