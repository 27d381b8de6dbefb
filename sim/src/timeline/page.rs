//! The page writer: a [`Timeline`] as one self-contained HTML page.
//!
//! The page is the run's data as JSON inside a `<script type="application/json">`, and a
//! script of ours (`page.js`, with `page.css`) that draws it as SVG when the page opens and
//! again at each zoom or pan. Nothing is fetched. Every number is an integer (microseconds,
//! node numbers, indexes), and everything is written in the order it was recorded, so the
//! same timeline gives the same bytes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::{Delivery, OpOutcome, Timeline};
use crate::check::Verdict;
use crate::time::SimTime;

/// The most client operations the page draws one by one; past it, a uniform sample (the
/// culprit of a violation and the operations involved always kept), and the latency plot's
/// worst case per slice still covers every operation.
pub const OPERATIONS_DRAWN_MAX: usize = 20_000;

/// The slices of the run's time the latency plot takes the worst latency of.
pub const LATENCY_SLICES: usize = 600;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

impl Timeline {
    /// Writes the page to `out` and returns its size in bytes.
    ///
    /// # Errors
    ///
    /// The error of the first write to `out` that failed.
    pub fn write_html(&self, out: &mut dyn Write) -> io::Result<u64> {
        let page = self.to_html();
        out.write_all(page.as_bytes())?;
        out.flush()?;
        Ok(page.len() as u64)
    }

    /// The page as a string.
    #[must_use]
    pub fn to_html(&self) -> String {
        let data = self.data_json();
        let mut page = String::with_capacity(data.len() + STYLE.len() + SCRIPT.len() + 4096);
        page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(page, "<title>{}</title>", html_escape(&self.title));
        page.push_str("<style>\n");
        page.push_str(STYLE);
        page.push_str("</style>\n</head>\n<body>\n");
        let _ = writeln!(
            page,
            "<header><h1>{}</h1><p class=\"sub\">{}</p></header>",
            html_escape(&self.title),
            html_escape(&self.subtitle)
        );
        page.push_str(
            "<div id=\"verdict\"></div>\n<div id=\"controls\"></div>\n<div id=\"chart\"></div>\n\
             <div id=\"tip\" hidden></div>\n<div id=\"legend\"></div>\n\
             <h2>Faults</h2>\n<ol id=\"faults\"></ol>\n",
        );
        page.push_str("<script type=\"application/json\" id=\"data\">");
        page.push_str(&data);
        page.push_str("</script>\n<script>\n");
        page.push_str(SCRIPT);
        page.push_str("</script>\n</body>\n</html>\n");
        page
    }

    /// The operations drawn one by one: all of them, or a uniform sample with the culprit
    /// and the operations involved; and the sampling stride.
    fn drawn_operations(&self) -> (Vec<usize>, usize) {
        let total = self.operations.len();
        let mut always: BTreeSet<usize> = BTreeSet::new();
        if let Some(c) = &self.culprit {
            always.insert(c.operation);
            always.extend(c.involved.iter().copied());
        }
        if total <= OPERATIONS_DRAWN_MAX {
            return ((0..total).collect(), 1);
        }
        let room = OPERATIONS_DRAWN_MAX.saturating_sub(always.len()).max(1);
        let stride = total.div_ceil(room);
        let drawn = (0..total)
            .filter(|i| i % stride == 0 || always.contains(i))
            .collect();
        (drawn, stride)
    }

    fn data_json(&self) -> String {
        let mut j = String::with_capacity(1 << 16);
        j.push('{');
        let _ = write!(
            j,
            "\"nodes\":{},\"end\":{}",
            self.nodes,
            self.end.as_micros()
        );
        j.push_str(",\"roleNames\":");
        strings(&mut j, self.role_names.iter().map(String::as_str));
        let _ = write!(
            j,
            ",\"rolesTotal\":{},\"roleStride\":{},\"roles\":[",
            self.roles.seen, self.roles.stride
        );
        for (i, r) in self.roles.kept.iter().enumerate() {
            comma(&mut j, i);
            let _ = write!(
                j,
                "[{},{},{},{}]",
                r.node.get(),
                r.at.as_micros(),
                r.role,
                r.term
            );
        }
        j.push_str("],\"kinds\":");
        strings(&mut j, self.kinds.iter().map(String::as_str));
        j.push_str(",\"kindCounts\":[");
        for (i, c) in self.kind_counts.iter().enumerate() {
            comma(&mut j, i);
            let _ = write!(j, "{c}");
        }
        let _ = write!(
            j,
            "],\"messagesTotal\":{},\"messageStride\":{},\"messages\":[",
            self.messages.seen, self.messages.stride
        );
        for (i, m) in self.messages.kept.iter().enumerate() {
            comma(&mut j, i);
            // Arrival: a time, or -1 lost, -2 cut.
            let arrive = match m.delivery {
                Delivery::At(at) => i128::from(at.as_micros()),
                Delivery::Lost => -1,
                Delivery::Cut => -2,
            };
            let _ = write!(
                j,
                "[{},{},{},{arrive},{}]",
                m.from.get(),
                m.to.get(),
                m.sent.as_micros(),
                m.kind
            );
        }
        let _ = write!(j, "],\"marksTotal\":{},\"marks\":[", self.marks.seen);
        for (i, m) in self.marks.kept.iter().enumerate() {
            comma(&mut j, i);
            let _ = write!(
                j,
                "[{},{},{},{}]",
                m.node.get(),
                m.at.as_micros(),
                u8::from(m.snapshot),
                m.position
            );
        }
        j.push_str("],\"nodeEvents\":[");
        for (i, e) in self.node_events.iter().enumerate() {
            comma(&mut j, i);
            let _ = write!(j, "[{},{},", e.node.get(), e.at.as_micros());
            string(&mut j, e.kind.name());
            j.push(',');
            string(&mut j, &e.text);
            j.push(']');
        }
        j.push_str("],\"regions\":[");
        for (i, r) in self.regions.iter().enumerate() {
            comma(&mut j, i);
            j.push('[');
            string(&mut j, r.kind.name());
            let _ = write!(j, ",{},{},[", r.start.as_micros(), r.end.as_micros());
            for (k, n) in r.nodes.iter().enumerate() {
                comma(&mut j, k);
                let _ = write!(j, "{}", n.get());
            }
            j.push_str("],");
            string(&mut j, &r.text);
            j.push(']');
        }
        let _ = write!(
            j,
            "],\"faultsDropped\":{},\"faults\":[",
            self.faults_dropped
        );
        for (i, (at, text)) in self.faults.iter().enumerate() {
            comma(&mut j, i);
            let _ = write!(j, "[{},", at.as_micros());
            string(&mut j, text);
            j.push(']');
        }
        let (drawn, stride) = self.drawn_operations();
        let culprit = self.culprit.as_ref();
        let _ = write!(
            j,
            "],\"opsTotal\":{},\"opStride\":{stride},\"ops\":[",
            self.operations.len()
        );
        for (k, &i) in drawn.iter().enumerate() {
            let op = &self.operations[i];
            comma(&mut j, k);
            let end = op.completed.map_or(-1, |t| i128::from(t.as_micros()));
            let outcome = match op.outcome {
                OpOutcome::Ok => 0,
                OpOutcome::Fail => 1,
                OpOutcome::Unknown => 2,
            };
            // 2: the culprit, 1: involved, 0: neither.
            let blame = match culprit {
                Some(c) if c.operation == i => 2,
                Some(c) if c.involved.binary_search(&i).is_ok() => 1,
                _ => 0,
            };
            let _ = write!(
                j,
                "[{i},{},{},{end},{outcome},{blame},",
                op.client,
                op.invoked.as_micros()
            );
            string(&mut j, &op.text);
            j.push(']');
        }
        j.push_str("],\"latency\":");
        self.latency_slices(&mut j);
        j.push_str(",\"verdict\":");
        match &self.verdict {
            None => j.push_str("null"),
            Some(v) => {
                let (kind, text) = match v {
                    Verdict::Pass => ("pass", String::from("pass")),
                    Verdict::Violation(why) => ("violation", format!("VIOLATION: {why}")),
                    Verdict::GaveUp(why) => ("gave-up", format!("GAVE UP (undecided): {why}")),
                };
                j.push_str("{\"kind\":");
                string(&mut j, kind);
                j.push_str(",\"text\":");
                string(&mut j, &text);
                j.push('}');
            }
        }
        j.push_str(",\"focus\":");
        match self.focus() {
            Some((a, b)) => {
                let _ = write!(j, "[{},{}]", a.as_micros(), b.as_micros());
            }
            None => j.push_str("null"),
        }
        j.push('}');
        j
    }

    /// The worst latency of the operations invoked in each slice of the run, and how many
    /// were invoked there, by outcome: `[[worst, ok, fail, unknown], ...]`.
    fn latency_slices(&self, j: &mut String) {
        let end = self.end.as_micros().max(1);
        let mut slices = vec![[0u64; 4]; LATENCY_SLICES];
        for op in &self.operations {
            let at = op.invoked.as_micros().min(end);
            let slice =
                usize::try_from(u128::from(at) * (LATENCY_SLICES as u128 - 1) / u128::from(end))
                    .unwrap_or(LATENCY_SLICES - 1);
            let s = &mut slices[slice];
            match (op.outcome, op.completed) {
                (OpOutcome::Unknown, _) | (_, None) => s[3] += 1,
                (outcome, Some(done)) => {
                    s[0] = s[0].max(done.as_micros().saturating_sub(op.invoked.as_micros()));
                    s[if outcome == OpOutcome::Ok { 1 } else { 2 }] += 1;
                }
            }
        }
        j.push('[');
        for (i, s) in slices.iter().enumerate() {
            comma(j, i);
            let _ = write!(j, "[{},{},{},{}]", s[0], s[1], s[2], s[3]);
        }
        j.push(']');
    }

    /// The stretch of time the page opens on: around the culprit and the operations
    /// involved, if there is a culprit.
    fn focus(&self) -> Option<(SimTime, SimTime)> {
        let c = self.culprit.as_ref()?;
        let ops = std::iter::once(c.operation).chain(c.involved.iter().copied());
        let mut start = SimTime::MAX;
        let mut end = SimTime::ZERO;
        for i in ops {
            let op = self.operations.get(i)?;
            start = start.min(op.invoked);
            end = end.max(op.completed.unwrap_or(op.invoked));
        }
        let pad = (end.as_micros() - start.as_micros()).max(1_000) / 5;
        Some((
            SimTime::from_micros(start.as_micros().saturating_sub(pad)),
            SimTime::from_micros(end.as_micros().saturating_add(pad)),
        ))
    }
}

fn comma(j: &mut String, i: usize) {
    if i > 0 {
        j.push(',');
    }
}

fn strings<'a>(j: &mut String, items: impl Iterator<Item = &'a str>) {
    j.push('[');
    for (i, s) in items.enumerate() {
        comma(j, i);
        string(j, s);
    }
    j.push(']');
}

/// `s` as a JSON string that is also safe inside a `<script>` element: `<`, `>` and `&`
/// are escaped too, so no text can close the element.
fn string(j: &mut String, s: &str) {
    j.push('"');
    for c in s.chars() {
        match c {
            '"' => j.push_str("\\\""),
            '\\' => j.push_str("\\\\"),
            '\n' => j.push_str("\\n"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(j, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(j, "\\u{:04x}", u32::from(c));
            }
            c => j.push(c),
        }
    }
    j.push('"');
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Culprit;
    use crate::node::NodeId;
    use crate::timeline::{NodeEventKind, RegionKind};

    fn t(us: u64) -> SimTime {
        SimTime::from_micros(us)
    }

    fn sample() -> Timeline {
        let n = NodeId::new;
        let mut tl = Timeline::new(3);
        tl.set_title("a <run>", "seed 1 & more");
        tl.push_role(n(1), t(0), "follower", 1);
        tl.push_role(n(1), t(100), "leader", 2);
        tl.push_message(n(1), n(2), t(120), Delivery::At(t(900)), "append");
        tl.push_message(n(1), n(3), t(120), Delivery::Lost, "append");
        tl.push_mark(n(1), t(950), false, 4);
        tl.push_node_event(n(2), t(1000), NodeEventKind::Crash, "crash n2");
        tl.push_region(RegionKind::Down, t(1000), t(2000), &[n(2)], "crash n2");
        tl.push_fault_line(t(1000), "crash n2 </script>");
        tl.push_operation(0, t(10), Some(t(500)), OpOutcome::Ok, "w 1".into());
        tl.push_operation(1, t(600), None, OpOutcome::Unknown, "r".into());
        tl.set_verdict(
            &Verdict::Violation("bad".into()),
            Some(&Culprit {
                operation: 1,
                involved: vec![0],
            }),
        );
        tl
    }

    #[test]
    fn the_page_is_self_contained_and_its_text_cannot_escape_the_script() {
        let page = sample().to_html();
        assert!(page.contains("<title>a &lt;run&gt;</title>"));
        assert!(!page.contains("crash n2 </script>"), "closing tag escaped");
        assert!(page.contains("crash n2 \\u003c/script\\u003e"));
        for fetch in ["src=", "href=", "http:", "https:", "@import", "fetch("] {
            assert!(
                !page.contains(fetch),
                "the page must fetch nothing: {fetch}"
            );
        }
        assert_eq!(page.matches("<script").count(), 2);
    }

    #[test]
    fn the_same_timeline_gives_the_same_bytes() {
        assert_eq!(sample().to_html(), sample().to_html());
        let mut out = Vec::new();
        let bytes = sample().write_html(&mut out).expect("to memory");
        assert_eq!(bytes, out.len() as u64);
    }

    #[test]
    fn a_violation_opens_on_its_culprit_and_many_operations_are_sampled() {
        let tl = sample();
        let (start, end) = tl.focus().expect("a culprit");
        assert!(start <= t(10) && end >= t(600), "{start} {end}");
        let mut big = Timeline::new(1);
        for i in 0..(3 * OPERATIONS_DRAWN_MAX as u64) {
            big.push_operation(0, t(i), Some(t(i + 1)), OpOutcome::Ok, String::new());
        }
        let culprit = Culprit {
            operation: 7,
            involved: vec![5],
        };
        big.set_verdict(&Verdict::Violation(String::new()), Some(&culprit));
        let (drawn, stride) = big.drawn_operations();
        assert!(drawn.len() <= OPERATIONS_DRAWN_MAX, "{}", drawn.len());
        assert!(stride > 1);
        assert!(drawn.contains(&7) && drawn.contains(&5));
    }
}
