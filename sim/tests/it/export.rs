//! Histories written for other checkers: each format is read back, by a JSON parser for
//! porcupine's and by a small EDN reader for Jepsen's, into the history that was written.

use synod_sim::{
    ClientId, History, HistoryFormat, KvInput, KvModel, KvOutput, Linearizability, Outcome,
    SimTime, Verdict,
};

use crate::register;
use crate::register_impl::Variant;

type Kv = History<KvInput, KvOutput>;

fn t(us: u64) -> SimTime {
    SimTime::from_micros(us)
}

fn written(format: HistoryFormat, h: &Kv) -> String {
    let mut out = Vec::new();
    format.write(h, &mut out).expect("writing to memory");
    String::from_utf8(out).expect("the formats are text")
}

/// A history with every kind of operation and outcome, a client that goes on after an
/// operation with an unknown outcome, and operations that touch in time.
fn every_kind() -> Kv {
    let mut h = Kv::new();
    let c = ClientId::new;
    let w = h.invoke(c(0), KvInput::Write { key: 3, value: 29 }, t(10));
    h.ok(w, KvOutput::Written, t(20)).expect("valid");
    let r = h.invoke(c(1), KvInput::Read { key: 3 }, t(20)); // touches the write
    h.ok(r, KvOutput::Read(Some(29)), t(25)).expect("valid");
    let r = h.invoke(c(2), KvInput::Read { key: 4 }, t(21));
    h.ok(r, KvOutput::Read(None), t(22)).expect("valid");
    // Client 2 calls again at the instant its read returned.
    let f = h.invoke(c(2), KvInput::Write { key: 3, value: 32 }, t(22));
    h.fail(f, t(55)).expect("valid");
    let cas = KvInput::Cas {
        key: 3,
        expect: Some(29),
        new: 30,
    };
    let x = h.invoke(c(0), cas, t(30));
    h.ok(x, KvOutput::Cas(true), t(40)).expect("valid");
    let absent = KvInput::Cas {
        key: 4,
        expect: None,
        new: 31,
    };
    let x = h.invoke(c(1), absent, t(30));
    h.ok(x, KvOutput::Cas(false), t(41)).expect("valid");
    let u = h.invoke(c(0), KvInput::Write { key: 4, value: 33 }, t(60));
    h.unknown(u).expect("valid");
    let u = h.invoke(c(2), absent, t(61));
    h.unknown(u).expect("valid");
    // Client 0 goes on after its operation with an unknown outcome.
    let r = h.invoke(c(0), KvInput::Read { key: 3 }, t(70));
    h.ok(r, KvOutput::Read(Some(30)), t(80)).expect("valid");
    h
}

/// What Jepsen's format keeps: a compare-and-set that did not apply is a failure.
fn as_jepsen_keeps_it(h: &Kv) -> Kv {
    let mut out = Kv::new();
    for op in h.operations() {
        let id = out.invoke(op.client, op.input, op.invoked_at);
        match (&op.outcome, op.completed_at) {
            (Outcome::Ok(KvOutput::Cas(false)) | Outcome::Fail, Some(at)) => out.fail(id, at),
            (Outcome::Ok(output), Some(at)) => out.ok(id, *output, at),
            _ => out.unknown(id),
        }
        .expect("valid");
    }
    out
}

/// What porcupine's format keeps: everything but the failed operations.
fn as_porcupine_keeps_it(h: &Kv) -> Kv {
    let mut out = Kv::new();
    for op in h.operations() {
        if matches!(op.outcome, Outcome::Fail) {
            continue;
        }
        let id = out.invoke(op.client, op.input, op.invoked_at);
        match (&op.outcome, op.completed_at) {
            (Outcome::Ok(output), Some(at)) => out.ok(id, *output, at),
            _ => out.unknown(id),
        }
        .expect("valid");
    }
    out
}

// ---- porcupine's JSON, read with serde_json ----

fn read_porcupine(text: &str) -> Kv {
    let ops: Vec<serde_json::Value> = serde_json::from_str(text).expect("a JSON array");
    let mut h = Kv::new();
    for op in ops {
        let number = |v: &serde_json::Value| v.as_u64().expect("a number");
        let optional = |v: &serde_json::Value| (!v.is_null()).then(|| number(v));
        let input = &op["Input"];
        let key = number(&input["key"]);
        let input = match input["op"].as_str().expect("an op") {
            "read" => KvInput::Read { key },
            "write" => KvInput::Write {
                key,
                value: number(&input["value"]),
            },
            "cas" => KvInput::Cas {
                key,
                expect: optional(&input["expect"]),
                new: number(&input["new"]),
            },
            other => panic!("unknown op {other}"),
        };
        let client = ClientId::new(u32::try_from(number(&op["ClientId"])).expect("u32"));
        let micros = |v: &serde_json::Value| {
            let nanos = v.as_i64().expect("a signed 64-bit time");
            assert_eq!(nanos % 1_000, 0, "whole microseconds");
            t(u64::try_from(nanos / 1_000).expect("not negative"))
        };
        let id = h.invoke(client, input, micros(&op["Call"]));
        let output = &op["Output"];
        if output.is_null() {
            assert_eq!(
                op["Return"].as_i64(),
                Some(i64::MAX),
                "unknown: returns at the end"
            );
            h.unknown(id).expect("valid");
            continue;
        }
        let output = match input {
            KvInput::Read { .. } => KvOutput::Read(optional(&output["value"])),
            KvInput::Write { .. } => {
                assert_eq!(output, &serde_json::json!({}));
                KvOutput::Written
            }
            KvInput::Cas { .. } => KvOutput::Cas(output["ok"].as_bool().expect("a boolean")),
        };
        h.ok(id, output, micros(&op["Return"])).expect("valid");
    }
    h
}

// ---- Jepsen's EDN, read with a reader of the forms the history uses ----

#[derive(Debug, Clone, PartialEq)]
enum Edn {
    Nil,
    Int(i64),
    Keyword(String),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
}

impl Edn {
    fn get(&self, key: &str) -> &Edn {
        let Edn::Map(entries) = self else {
            panic!("not a map: {self:?}")
        };
        entries
            .iter()
            .find(|(k, _)| *k == Edn::Keyword(key.to_owned()))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no :{key} in {self:?}"))
    }

    fn int(&self) -> i64 {
        match self {
            Edn::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn keyword(&self) -> &str {
        match self {
            Edn::Keyword(k) => k,
            other => panic!("not a keyword: {other:?}"),
        }
    }

    fn optional(&self) -> Option<u64> {
        match self {
            Edn::Nil => None,
            other => Some(u64::try_from(other.int()).expect("not negative")),
        }
    }

    fn pair(&self) -> (&Edn, &Edn) {
        match self {
            Edn::Vector(v) if v.len() == 2 => (&v[0], &v[1]),
            other => panic!("not a pair: {other:?}"),
        }
    }
}

/// Reads one EDN form from the start of `text` (commas are whitespace in EDN).
fn edn(text: &mut &str) -> Edn {
    *text = text.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
    let closing = |text: &mut &str, close: char| {
        *text = text.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        text.strip_prefix(close).map(|rest| *text = rest).is_some()
    };
    if let Some(rest) = text.strip_prefix('{') {
        *text = rest;
        let mut entries = Vec::new();
        while !closing(text, '}') {
            let k = edn(text);
            entries.push((k, edn(text)));
        }
        return Edn::Map(entries);
    }
    if let Some(rest) = text.strip_prefix('[') {
        *text = rest;
        let mut items = Vec::new();
        while !closing(text, ']') {
            items.push(edn(text));
        }
        return Edn::Vector(items);
    }
    let end = text
        .find(|c: char| c.is_whitespace() || ",{}[]".contains(c))
        .unwrap_or(text.len());
    let (token, rest) = text.split_at(end);
    *text = rest;
    match token {
        "nil" => Edn::Nil,
        _ => match token.strip_prefix(':') {
            Some(k) => Edn::Keyword(k.to_owned()),
            None => Edn::Int(token.parse().unwrap_or_else(|_| panic!("token {token:?}"))),
        },
    }
}

fn read_jepsen(text: &str, clients: u32) -> Kv {
    let mut h = Kv::new();
    // The open operation of each process, and the index each event must carry.
    let mut open: std::collections::BTreeMap<i64, synod_sim::OpId> = Default::default();
    let mut last_time = i64::MIN;
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        let event = edn(&mut rest);
        assert!(rest.trim().is_empty(), "one map per line: {line}");
        assert_eq!(event.get("index").int(), index as i64);
        let time = event.get("time").int();
        assert!(time >= last_time, "events in time order: {line}");
        last_time = time;
        let process = event.get("process").int();
        let (key, value) = event.get("value").pair();
        let key = u64::try_from(key.int()).expect("a key");
        let input = match event.get("f").keyword() {
            "read" => KvInput::Read { key },
            "write" => KvInput::Write {
                key,
                value: value.optional().expect("a value"),
            },
            "cas" => {
                let (expect, new) = value.pair();
                KvInput::Cas {
                    key,
                    expect: expect.optional(),
                    new: new.optional().expect("a value"),
                }
            }
            other => panic!("unknown :f {other}"),
        };
        let at = t(u64::try_from(time / 1_000).expect("not negative"));
        let kind = event.get("type").keyword();
        if kind == "invoke" {
            let client = ClientId::new(u32::try_from(process % i64::from(clients)).expect("u32"));
            let id = h.invoke(client, input, at);
            assert!(
                open.insert(process, id).is_none(),
                "one open operation per process"
            );
            continue;
        }
        let id = open
            .remove(&process)
            .expect("a completion completes an invocation");
        assert_eq!(h.operations()[id.index()].input, input);
        match kind {
            "ok" => {
                let output = match input {
                    KvInput::Read { .. } => KvOutput::Read(value.optional()),
                    KvInput::Write { .. } => KvOutput::Written,
                    KvInput::Cas { .. } => KvOutput::Cas(true),
                };
                h.ok(id, output, at)
            }
            "fail" => h.fail(id, at),
            "info" => h.unknown(id),
            other => panic!("unknown :type {other}"),
        }
        .expect("valid");
    }
    assert!(open.is_empty(), "every invocation completes");
    h
}

fn clients(h: &Kv) -> u32 {
    h.operations()
        .iter()
        .map(|o| o.client.get() + 1)
        .max()
        .unwrap_or(0)
}

fn assert_round_trips(h: &Kv) {
    let json = written(HistoryFormat::Porcupine, h);
    assert_eq!(read_porcupine(&json), as_porcupine_keeps_it(h), "{json}");
    let edn = written(HistoryFormat::Jepsen, h);
    assert_eq!(
        read_jepsen(&edn, clients(h)),
        as_jepsen_keeps_it(h),
        "{edn}"
    );
    // What porcupine's format keeps, the checker decides alike (the failed operations it
    // leaves out are left out by the checker too).
    let check = |h: &Kv| Linearizability::new(KvModel).check(h);
    assert_eq!(
        std::mem::discriminant(&check(&read_porcupine(&json))),
        std::mem::discriminant(&check(h))
    );
}

#[test]
fn every_kind_of_operation_reads_back_from_both_formats() {
    let h = every_kind();
    assert_round_trips(&h);
    let edn = written(HistoryFormat::Jepsen, &h);
    // Client 0 had an operation end unknown: its next one is another process (0 + 3).
    assert!(
        edn.contains(":type :invoke, :process 3, :f :read, :value [3 nil]}"),
        "{edn}"
    );
    // The unknown operations complete last, as :info.
    let last: Vec<&str> = edn.lines().rev().take(2).collect();
    assert!(last.iter().all(|l| l.contains(":type :info")), "{edn}");
    let json = written(HistoryFormat::Porcupine, &h);
    assert!(json.contains(r#""Input": {"op": "cas", "key": 4, "expect": null, "new": 31}"#));
    assert!(json.contains(r#""Output": null, "Return": 9223372036854775807"#));
}

#[test]
fn simulated_runs_read_back_from_both_formats() {
    let mut unknown = 0;
    for seed in 0..5 {
        let report = register::run(Variant::Correct, seed);
        unknown += report.history.unknown_count();
        assert_round_trips(&report.history);
    }
    assert!(unknown > 0, "the runs had operations with unknown outcomes");
    // A run of the register without its write-back step, which the checker catches: it
    // catches it in the history read back too.
    let broken = register::run(Variant::NoWriteBack, 102);
    assert_round_trips(&broken.history);
    let json = written(HistoryFormat::Porcupine, &broken.history);
    let verdict = Linearizability::new(KvModel).check(&read_porcupine(&json));
    assert!(matches!(verdict, Verdict::Violation(_)), "{verdict}");
}

#[test]
fn formats_are_named_by_extension_or_name() {
    use std::path::Path;
    assert_eq!(
        HistoryFormat::from_path(Path::new("run.edn")),
        Some(HistoryFormat::Jepsen)
    );
    assert_eq!(
        HistoryFormat::from_path(Path::new("out/run.JSON")),
        Some(HistoryFormat::Porcupine)
    );
    assert_eq!(HistoryFormat::from_path(Path::new("run.txt")), None);
    assert_eq!(HistoryFormat::from_path(Path::new("run")), None);
    for f in HistoryFormat::ALL {
        assert_eq!(HistoryFormat::from_name(f.name()), Some(f));
    }
    assert_eq!(HistoryFormat::from_name("knossos"), None);
}
