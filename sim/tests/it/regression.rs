//! Regression seeds: seeds that once exposed a bug (in a register variant or in the
//! simulator), run on every CI build. One per line in `regression_seeds.txt`:
//! `<variant> <seed> <expectation>`, where the expectation is `pass` or `fail`.

use crate::register::{run, verdict};
use crate::register_impl::Variant;
use synod_sim::Verdict;

#[test]
fn regression_seeds_keep_their_outcome() {
    let text = include_str!("regression_seeds.txt");
    let mut ran = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [variant, seed, expect] = fields[..] else {
            panic!(
                "regression_seeds.txt:{}: expected `<variant> <seed> <pass|fail>`",
                n + 1
            );
        };
        let variant = match variant {
            "correct" => Variant::Correct,
            "no-write-back" => Variant::NoWriteBack,
            "ack-before-sync" => Variant::AckBeforeSync,
            "ack-on-earlier-sync" => Variant::AckOnEarlierSync,
            other => panic!("regression_seeds.txt:{}: unknown variant {other}", n + 1),
        };
        let seed: u64 = seed.parse().expect("a u64 seed");
        let result = verdict(&run(variant, seed));
        match expect {
            "pass" => assert_eq!(
                result,
                Verdict::Pass,
                "line {}: {variant:?} seed {seed}",
                n + 1
            ),
            // A catch is a violation; the checker giving up is neither pass nor catch.
            "fail" => assert!(
                matches!(result, Verdict::Violation(_)),
                "line {}: {variant:?} seed {seed}: {result}",
                n + 1
            ),
            other => panic!(
                "regression_seeds.txt:{}: unknown expectation {other}",
                n + 1
            ),
        }
        ran += 1;
    }
    println!("regression seeds: {ran} run");
    assert!(ran > 0);
}
