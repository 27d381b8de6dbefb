//! The checkers against hand-built histories: each known-bad history must be rejected and
//! each known-good one accepted.

use synod_sim::{
    ClientId, History, HistoryChecker, KvInput, KvModel, KvOutput, Linearizability, OkInvariant,
    OpId, SimTime, Verdict,
};

type Kv = History<KvInput, KvOutput>;

fn t(us: u64) -> SimTime {
    SimTime::from_micros(us)
}

fn c(n: u32) -> ClientId {
    ClientId::new(n)
}

fn write(h: &mut Kv, client: u32, key: u64, value: u64, from: u64, to: Option<u64>) -> OpId {
    let op = h.invoke(c(client), KvInput::Write { key, value }, t(from));
    if let Some(to) = to {
        h.ok(op, KvOutput::Written, t(to))
            .expect("valid completion");
    }
    op
}

fn read(h: &mut Kv, client: u32, key: u64, value: Option<u64>, from: u64, to: u64) -> OpId {
    let op = h.invoke(c(client), KvInput::Read { key }, t(from));
    h.ok(op, KvOutput::Read(value), t(to))
        .expect("valid completion");
    op
}

fn check(h: &Kv) -> Verdict {
    Linearizability::new(KvModel).check(h)
}

fn assert_rejected(h: &Kv) {
    let v = check(h);
    assert!(
        matches!(v, Verdict::Violation(_)),
        "accepted a bad history: {v}\n{h}"
    );
}

fn assert_accepted(h: &Kv) {
    let v = check(h);
    assert_eq!(v, Verdict::Pass, "rejected a good history\n{h}");
}

#[test]
fn sequential_histories() {
    let mut good = Kv::new();
    write(&mut good, 0, 1, 10, 0, Some(5));
    read(&mut good, 1, 1, Some(10), 6, 8);
    write(&mut good, 0, 1, 11, 9, Some(12));
    read(&mut good, 1, 1, Some(11), 13, 14);
    assert_accepted(&good);

    let mut stale = Kv::new();
    write(&mut stale, 0, 1, 10, 0, Some(5));
    write(&mut stale, 0, 1, 11, 6, Some(7));
    read(&mut stale, 1, 1, Some(10), 8, 9);
    assert_rejected(&stale);

    let mut invented = Kv::new();
    read(&mut invented, 1, 1, Some(99), 0, 1);
    assert_rejected(&invented);

    let mut initial = Kv::new();
    read(&mut initial, 1, 1, None, 0, 1);
    assert_accepted(&initial);
}

#[test]
fn a_read_of_a_value_written_only_after_it_returned_is_rejected() {
    // The read returned at time 1; the write that produced its value began at time 2.
    let mut h = Kv::new();
    read(&mut h, 1, 0, Some(3), 0, 1);
    write(&mut h, 0, 0, 3, 2, Some(3));
    assert_rejected(&h);
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // A read overlapping a write may see the old or the new value.
    for seen in [None, Some(10)] {
        let mut h = Kv::new();
        write(&mut h, 0, 1, 10, 0, Some(10));
        read(&mut h, 1, 1, seen, 2, 8);
        assert_accepted(&h);
    }
    // But two sequential reads during one write cannot go new then old: the classic
    // violation that ABD's write-back prevents.
    let mut h = Kv::new();
    write(&mut h, 0, 1, 10, 0, Some(100));
    read(&mut h, 1, 1, Some(10), 10, 20);
    read(&mut h, 2, 1, None, 30, 40);
    assert_rejected(&h);
    // New then new, or old then new, are fine.
    let mut h = Kv::new();
    write(&mut h, 0, 1, 10, 0, Some(100));
    read(&mut h, 1, 1, None, 10, 20);
    read(&mut h, 2, 1, Some(10), 30, 40);
    assert_accepted(&h);
}

#[test]
fn unknown_operations_may_or_may_not_have_happened() {
    // An unanswered write may be seen...
    let mut h = Kv::new();
    let w = write(&mut h, 0, 1, 10, 0, None);
    h.unknown(w).expect("pending");
    read(&mut h, 1, 1, Some(10), 50, 60);
    assert_accepted(&h);
    // ...or not...
    let mut h = Kv::new();
    let w = write(&mut h, 0, 1, 10, 0, None);
    h.unknown(w).expect("pending");
    read(&mut h, 1, 1, None, 50, 60);
    assert_accepted(&h);
    // ...but not before it was invoked...
    let mut h = Kv::new();
    read(&mut h, 1, 1, Some(10), 0, 5);
    let w = write(&mut h, 0, 1, 10, 10, None);
    h.unknown(w).expect("pending");
    assert_rejected(&h);
    // ...and once seen it cannot be unseen.
    let mut h = Kv::new();
    let w = write(&mut h, 0, 1, 10, 0, None);
    h.unknown(w).expect("pending");
    read(&mut h, 1, 1, Some(10), 50, 60);
    read(&mut h, 2, 1, None, 70, 80);
    assert_rejected(&h);
}

#[test]
fn an_unknown_write_is_kept_for_where_it_is_needed() {
    // The compare-and-set from absent failed, so some write came before it: either unknown
    // write will do. The final read of 1 needs the unknown write of 1 after the
    // acknowledged write of 2, so the compare-and-set must have followed the unknown write
    // of 2. A search that, having failed with the write of 1 placed first, skipped the
    // configurations that hold fewer unknown writes would miss this order.
    let history = |with_unknown_write_of_2: bool| {
        let mut h = Kv::new();
        let w1 = write(&mut h, 0, 0, 1, 0, None);
        h.unknown(w1).expect("pending");
        let cas = KvInput::Cas {
            key: 0,
            expect: None,
            new: 1,
        };
        let op = h.invoke(c(1), cas, t(0));
        h.ok(op, KvOutput::Cas(false), t(12)).expect("valid");
        if with_unknown_write_of_2 {
            let w2 = write(&mut h, 2, 0, 2, 0, None);
            h.unknown(w2).expect("pending");
        }
        write(&mut h, 3, 0, 2, 44, Some(45));
        read(&mut h, 4, 0, Some(1), 46, 47);
        h
    };
    assert_accepted(&history(true));
    // Without the unknown write of 2, no order works.
    assert_rejected(&history(false));
}

#[test]
fn failed_operations_never_happened() {
    let mut h = Kv::new();
    let w = write(&mut h, 0, 1, 10, 0, None);
    h.fail(w, t(5)).expect("pending");
    read(&mut h, 1, 1, Some(10), 50, 60);
    assert_rejected(&h);
}

#[test]
fn compare_and_set() {
    let cas = |h: &mut Kv, client, expect, new, applied, from, to| {
        let op = h.invoke(
            c(client),
            KvInput::Cas {
                key: 0,
                expect,
                new,
            },
            t(from),
        );
        h.ok(op, KvOutput::Cas(applied), t(to)).expect("valid");
    };
    let mut good = Kv::new();
    cas(&mut good, 0, None, 1, true, 0, 1);
    cas(&mut good, 1, None, 2, false, 2, 3);
    cas(&mut good, 0, Some(1), 3, true, 4, 5);
    read(&mut good, 1, 0, Some(3), 6, 7);
    assert_accepted(&good);

    // Two sequential CAS from the same expected value cannot both succeed.
    let mut bad = Kv::new();
    cas(&mut bad, 0, None, 1, true, 0, 1);
    cas(&mut bad, 1, None, 2, true, 2, 3);
    assert_rejected(&bad);
}

#[test]
fn keys_are_checked_independently_and_the_report_names_the_key() {
    let mut h = Kv::new();
    for key in 0..50 {
        write(&mut h, 0, key, key, key * 10, Some(key * 10 + 5));
        read(&mut h, 1, key, Some(key), key * 10 + 6, key * 10 + 7);
    }
    assert_accepted(&h);
    write(&mut h, 0, 7, 1000, 1000, Some(1001));
    read(&mut h, 1, 7, Some(7), 1002, 1003);
    match check(&h) {
        Verdict::Violation(why) => assert!(why.contains("partition 7"), "{why}"),
        v => panic!("expected a violation, got {v}"),
    }
}

#[test]
fn concurrent_unknown_writes_are_decided() {
    // Twelve concurrent writes that never returned, then reads: the search places the
    // unknown writes only where a read needs them.
    let mut h = Kv::new();
    for i in 0..12 {
        let w = write(&mut h, i, 0, u64::from(i), 0, None);
        h.unknown(w).expect("pending");
    }
    read(&mut h, 100, 0, Some(3), 10, 20);
    read(&mut h, 101, 0, Some(3), 30, 40);
    assert_accepted(&h);
    read(&mut h, 102, 0, Some(5), 50, 60);
    read(&mut h, 103, 0, Some(5), 70, 80);
    assert_accepted(&h);
    read(&mut h, 104, 0, Some(3), 90, 100); // 3 was overwritten by 5 and cannot come back
    assert_rejected(&h);
}

#[test]
fn the_memory_bound_gives_up_where_the_search_would_decide() {
    // Twelve concurrent writes that all completed, read one after another and then the
    // first again, which no order allows: the search decides it (a violation) but
    // memoizes tens of thousands of configurations (about 7 MB) on the way.
    let h = hard_history(12);
    // The default bounds decide it.
    assert!(matches!(check(&h), Verdict::Violation(_)));
    let bounded = Linearizability::new(KvModel).memo_bytes_max(1 << 20);
    let v = bounded.check(&h);
    match &v {
        Verdict::GaveUp(why) => assert!(why.contains("memo_bytes_max (1048576)"), "{why}"),
        v => panic!("expected the memory bound to stop the search, got {v}"),
    }
    assert!(!v.is_pass());
    // A bound only stops a search that needs more: a small history still passes.
    let mut small = Kv::new();
    write(&mut small, 0, 0, 1, 0, Some(5));
    read(&mut small, 1, 0, Some(1), 6, 8);
    assert_eq!(bounded.check(&small), Verdict::Pass);
}

fn hard_history(writes: u32) -> Kv {
    // Concurrent writes, then sequential reads seeing each value in turn and finally the
    // first one again, which no order allows; the search must try many orders to see it.
    let mut h = Kv::new();
    for i in 0..writes {
        write(&mut h, i, 0, u64::from(i), 0, Some(1_000_000));
    }
    for i in 0..writes {
        let at = 10 + 10 * u64::from(i);
        read(&mut h, 100 + i, 0, Some(u64::from(i)), at, at + 5);
    }
    read(&mut h, 999, 0, Some(0), 5_000, 5_005);
    h
}

#[test]
fn the_effort_bound_gives_up_instead_of_hanging() {
    let v = Linearizability::new(KvModel)
        .steps_max(50)
        .check(&hard_history(16));
    assert!(matches!(v, Verdict::GaveUp(_)), "{v}");
    assert!(matches!(check(&hard_history(6)), Verdict::Violation(_)));
}

#[test]
fn giving_up_on_one_key_does_not_hide_a_violation_on_another() {
    // Key 0 is too hard for a bound of 200 steps; key 1 holds a plain stale read.
    let mut h = hard_history(16);
    write(&mut h, 0, 1, 10, 0, Some(5));
    write(&mut h, 0, 1, 11, 6, Some(7));
    read(&mut h, 1, 1, Some(10), 8, 9);
    let bounded = Linearizability::new(KvModel).steps_max(200);
    match bounded.check(&h) {
        Verdict::Violation(why) => assert!(why.contains("partition 1"), "{why}"),
        v => panic!("expected the violation on key 1, got {v}"),
    }
    // Without the bad key, the verdict is that it gave up, which is not a pass.
    let v = bounded.check(&hard_history(16));
    assert!(matches!(v, Verdict::GaveUp(_)) && !v.is_pass(), "{v}");
}

#[test]
fn a_run_whose_checker_gave_up_is_not_a_pass() {
    struct GivesUp;
    impl HistoryChecker<(), ()> for GivesUp {
        fn name(&self) -> &str {
            "gives-up"
        }
        fn check_history(&mut self, _: &History<(), ()>) -> Verdict {
            Verdict::GaveUp("bound reached".into())
        }
    }
    let config = synod_sim::SimConfig::builder(1)
        .nemesis(synod_sim::NemesisConfig::disabled())
        .build()
        .expect("valid");
    let report =
        synod_sim::Simulation::new(config, 1, |_| crate::faults::Quiet, synod_sim::NoClients).run();
    assert_eq!(
        report.verdict(&mut GivesUp),
        Verdict::GaveUp("gives-up: bound reached".into())
    );
    let err = report
        .check(&mut GivesUp)
        .expect_err("giving up is not a pass");
    assert!(err.contains("gave up"), "{err}");
}

#[test]
fn invariant_hook_checks_a_bank_total() {
    #[derive(Debug, Clone)]
    #[allow(dead_code)]
    enum Bank {
        Transfer { from: usize, to: usize, amount: i64 },
        ReadAll,
    }
    let total_is_100 = |input: &Bank, out: &Vec<i64>| match input {
        Bank::ReadAll => {
            let sum: i64 = out.iter().sum();
            if sum == 100 {
                Ok(())
            } else {
                Err(format!("balances {out:?} sum to {sum}, not 100"))
            }
        }
        Bank::Transfer { .. } => Ok(()),
    };
    let mut h: History<Bank, Vec<i64>> = History::new();
    let a = h.invoke(
        c(0),
        Bank::Transfer {
            from: 0,
            to: 1,
            amount: 10,
        },
        t(0),
    );
    h.ok(a, vec![], t(5)).expect("ok");
    let r = h.invoke(c(1), Bank::ReadAll, t(6));
    h.ok(r, vec![40, 60], t(7)).expect("ok");
    let mut checker = OkInvariant::new("bank total", total_is_100);
    assert_eq!(checker.check_history(&h), Verdict::Pass);
    assert_eq!(
        HistoryChecker::<Bank, Vec<i64>>::name(&checker),
        "bank total"
    );

    // A read that saw the debit but not the credit breaks the total.
    let r = h.invoke(c(1), Bank::ReadAll, t(8));
    h.ok(r, vec![40, 50], t(9)).expect("ok");
    let v = checker.check_history(&h);
    assert!(
        matches!(&v, Verdict::Violation(why) if why.contains("sum to 90")),
        "{v}"
    );
}

/// A row of a hand-written history: client, read or write, the value (read or written),
/// invocation, and completion (`U`: the outcome is unknown).
type Row = (u32, Kind, u64, u64, Option<u64>);

#[derive(Debug, Clone, Copy)]
enum Kind {
    R,
    W,
}

const U: Option<u64> = None;

fn history_of_rows(key: u64, rows: &[Row]) -> Kv {
    let mut h = Kv::new();
    for &(client, kind, value, from, to) in rows {
        match (kind, to) {
            (Kind::R, Some(to)) => {
                read(&mut h, client, key, Some(value), from, to);
            }
            (Kind::R, None) => {
                let op = h.invoke(c(client), KvInput::Read { key }, t(from));
                h.unknown(op).expect("pending");
            }
            (Kind::W, to) => {
                let op = write(&mut h, client, key, value, from, to);
                if to.is_none() {
                    h.unknown(op).expect("pending");
                }
            }
        }
    }
    h
}

#[test]
fn a_key_with_many_unknown_writes_from_a_simulated_run_is_decided() {
    // One key of a `synod sim raft-kv` run (3 nodes, leader changes, crashes): 41
    // operations, 20 of them writes whose outcome is unknown (the reads that got no answer
    // are left out; they constrain nothing). No read ever saw an unknown write's value,
    // but a search that linearizes each unknown write as soon as it may tries every subset
    // of the 14 invoked between the write of 144 and its last read, and gave up after
    // 2,000,000 steps.
    use Kind::{R, W};
    #[rustfmt::skip]
    let rows: [Row; 41] = [
        (4, W, 29, 113562, U), (1, W, 46, 517940, U), (2, W, 63, 891145, Some(901410)),
        (1, R, 63, 915071, Some(917868)), (5, R, 63, 917215, Some(923579)),
        (4, R, 63, 1228487, Some(1237827)), (0, W, 95, 1238844, U),
        (2, W, 96, 1244408, Some(1249481)), (1, W, 99, 1255269, Some(1258163)),
        (4, W, 100, 1256005, Some(1260400)), (4, W, 101, 1260523, Some(1263293)),
        (5, W, 106, 1266251, Some(1283398)), (1, R, 106, 1282738, Some(1296731)),
        (2, W, 109, 1318929, Some(1323844)), (4, R, 109, 1341544, Some(1348623)),
        (0, W, 129, 1580833, U), (2, W, 134, 1677758, U), (4, W, 144, 1749351, Some(1752741)),
        (5, W, 159, 2029358, U), (0, W, 161, 2052543, U), (3, W, 174, 2213197, U),
        (1, R, 144, 2317306, Some(2335248)), (5, W, 192, 2442199, U), (4, W, 204, 2718920, U),
        (5, W, 245, 3365077, U), (5, W, 264, 3708090, U), (1, W, 280, 3913109, U),
        (3, W, 281, 3913259, U), (2, W, 282, 3919813, U), (0, W, 306, 4215753, U),
        (3, W, 310, 4273045, U), (2, W, 327, 4425576, U), (5, W, 350, 4700408, U),
        (2, R, 144, 4756657, Some(4775040)), (0, W, 354, 4772222, Some(4782648)),
        (5, W, 358, 4800757, Some(4818939)), (1, W, 360, 4817088, Some(4826579)),
        (0, R, 360, 4820655, Some(4829014)), (5, R, 360, 4827513, Some(4840261)),
        (0, W, 363, 4829097, Some(4839996)), (1, W, 368, 4842031, U),
    ];
    let h = history_of_rows(3, &rows);
    assert_eq!(h.unknown_count(), 20);
    assert_eq!(check(&h), Verdict::Pass);
    // The same history with the last read seeing a value overwritten before it began.
    let mut bad = h.clone();
    read(&mut bad, 2, 3, Some(144), 4_850_000, 4_850_100);
    assert_rejected(&bad);
}

/// `writes` writes of distinct values whose outcome is unknown, all concurrent with reads
/// of 1 (written and acknowledged before), then `tail`.
fn unknown_writes_then(writes: u64, tail: &[Row]) -> Kv {
    let mut rows: Vec<Row> = vec![(0, Kind::W, 1, 0, Some(10))];
    for i in 0..writes {
        let at = 20 + 10 * i;
        rows.push((1 + (i % 4) as u32, Kind::W, 100 + i, at, U));
        rows.push((9, Kind::R, 1, at + 2, Some(at + 4)));
    }
    rows.extend_from_slice(tail);
    history_of_rows(0, &rows)
}

#[test]
fn unknown_writes_cost_the_search_only_where_a_read_saw_them() {
    // Forty writes with unknown outcomes, none of them seen: a search that may place any
    // of them anywhere has 2^40 subsets to rule out; the checker decides each history
    // below within 2.5% of its default step bound.
    let cheap = Linearizability::new(KvModel).steps_max(50_000);
    assert_eq!(cheap.check(&unknown_writes_then(40, &[])), Verdict::Pass);
    // A later read that sees one of them, then another read of a second one.
    let seen = [
        (9, Kind::R, 117, 1_000, Some(1_010)),
        (9, Kind::R, 133, 1_020, Some(1_030)),
    ];
    assert_eq!(cheap.check(&unknown_writes_then(40, &seen)), Verdict::Pass);
    // Once 133 was read, 117 cannot be read again: a violation, found as cheaply.
    let back = [
        (9, Kind::R, 117, 1_000, Some(1_010)),
        (9, Kind::R, 133, 1_020, Some(1_030)),
        (9, Kind::R, 117, 1_040, Some(1_050)),
    ];
    let v = cheap.check(&unknown_writes_then(40, &back));
    assert!(matches!(v, Verdict::Violation(_)), "{v}");
    // Nor can the value written before them all.
    let stale = [
        (9, Kind::R, 117, 1_000, Some(1_010)),
        (9, Kind::R, 1, 1_020, Some(1_030)),
    ];
    assert!(matches!(
        cheap.check(&unknown_writes_then(40, &stale)),
        Verdict::Violation(_)
    ));
}
