//! `synod demo --html FILE`: the demo's real run drawn as synod-sim's timeline page, from
//! what the demo records: the client operations, the kill and the restart, and the leaders
//! its polls of the nodes saw.
//!
//! A real run shows less than a simulated one: the demo does not see the messages between
//! the nodes, nor a node's role between two polls. A node that a poll found leading is a
//! leader from that poll on, until a poll saw another leader or none; the other nodes that
//! are up are followers while some node leads, and show no role (`none`) while no poll
//! found a leader.

use std::time::Duration;

use synod_sim::timeline::{NodeEventKind, RegionKind, Timeline};
use synod_sim::{Culprit, History, KvInput, KvOutput, NodeId, SimTime, Verdict};

/// What the demo saw happen to the cluster, in time since the demo began.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Each change of leadership a poll saw: the leader and its term, or none.
    pub(super) leaders: Vec<(Duration, Option<(usize, u64)>)>,
    /// The node killed, and when.
    pub(super) killed: Option<(usize, Duration)>,
    /// When it restarted.
    pub(super) restarted: Option<Duration>,
}

fn at(d: Duration) -> SimTime {
    SimTime::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn node(id: usize) -> NodeId {
    NodeId::new(id as u64)
}

/// The page's timeline of a demo run of `nodes` nodes that ended at `end`.
pub(super) fn timeline(
    nodes: usize,
    end: Duration,
    seen: &Seen,
    history: &History<KvInput, KvOutput>,
    verdict: &Verdict,
    culprit: Option<&Culprit>,
) -> Timeline {
    let mut timeline = Timeline::new(nodes);
    let down = |id: usize, t: Duration| {
        seen.killed.is_some_and(|(k, killed)| {
            k == id && killed <= t && seen.restarted.is_none_or(|r| t < r)
        })
    };
    // The roles at each moment something changed: a leadership change, the kill, the restart.
    let mut moments: Vec<Duration> = seen.leaders.iter().map(|(t, _)| *t).collect();
    moments.extend(seen.killed.map(|(_, t)| t));
    moments.extend(seen.restarted);
    moments.sort();
    moments.dedup();
    for t in moments {
        let leader = seen
            .leaders
            .iter()
            .take_while(|(seen_at, _)| *seen_at <= t)
            .last()
            .and_then(|(_, l)| *l);
        for id in 1..=nodes {
            let (role, term) = match leader {
                _ if down(id, t) => ("down", 0),
                Some((l, term)) if l == id => ("leader", term),
                Some((_, term)) => ("follower", term),
                None => ("none", 0),
            };
            timeline.push_role(node(id), at(t), role, term);
        }
    }
    if let Some((id, killed)) = seen.killed {
        let text = format!("SIGKILL node {id}, the leader");
        timeline.push_fault_line(at(killed), &text);
        timeline.push_node_event(node(id), at(killed), NodeEventKind::Crash, &text);
        let back = seen.restarted.unwrap_or(end);
        timeline.push_region(RegionKind::Down, at(killed), at(back), &[node(id)], &text);
        if let Some(restarted) = seen.restarted {
            let text = format!("restart node {id} on its data directory");
            timeline.push_fault_line(at(restarted), &text);
            timeline.push_node_event(node(id), at(restarted), NodeEventKind::Restart, &text);
        }
    }
    timeline.push_history(history);
    timeline.extend_to(at(end));
    timeline.set_verdict(verdict, culprit);
    timeline
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_sim::ClientId;

    #[test]
    fn the_kill_restart_and_leaders_seen_become_lanes() {
        let ms = Duration::from_millis;
        let seen = Seen {
            leaders: vec![
                (ms(10), Some((1, 2))),
                (ms(300), None),
                (ms(450), Some((2, 3))),
            ],
            killed: Some((1, ms(300))),
            restarted: Some(ms(600)),
        };
        let mut history = History::new();
        let op = history.invoke(ClientId::new(0), KvInput::Read { key: 1 }, at(ms(20)));
        history
            .ok(op, KvOutput::Read(None), at(ms(25)))
            .expect("completes once");
        let page = timeline(3, ms(1000), &seen, &history, &Verdict::Pass, None).to_html();
        for text in [
            "SIGKILL node 1, the leader",
            "restart node 1 on its data directory",
            "\"roleNames\":[\"leader\",\"follower\",\"down\",\"none\"]",
            "Read { key: 1 } -\\u003e Read(None)",
        ] {
            assert!(page.contains(text), "{text}");
        }
    }
}
