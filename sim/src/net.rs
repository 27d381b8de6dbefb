//! The simulated network: per-link delays, loss, duplication and reordering; partitions of
//! the usual shapes; clogged links.
//!
//! Every ordered pair of nodes `(from, to)` is a link with its own [`LinkConfig`] (one
//! for all by default; `SimConfigBuilder::link_between` sets a link's own). A
//! message is dropped if its link is cut when it is sent or when it would arrive (a
//! partition also kills messages in flight), is lost with the link's loss probability, and
//! may be delivered twice. Links are FIFO unless reordering is on (the second copy of a
//! duplicated message gets its own delay and may arrive out of order). A clogged link holds
//! its messages until the clog ends, then delivers them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::node::{NodeId, node_at, slot_of};
use crate::rng::{Probability, SimRng};
use crate::time::{SimTime, duration_micros};

/// How long a message takes on a link: uniform in `[min, max]`, and with probability
/// `tail` an extra delay uniform in `[0, tail_max]` (a slow path: retransmission, a GC
/// pause in a router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayDistribution {
    min_us: u64,
    max_us: u64,
    tail: Probability,
    tail_max_us: u64,
}

impl DelayDistribution {
    /// Uniform between `min` and `max` (swapped if given the wrong way round), no tail.
    #[must_use]
    pub fn uniform(min: Duration, max: Duration) -> Self {
        let (a, b) = (duration_micros(min), duration_micros(max));
        DelayDistribution {
            min_us: a.min(b),
            max_us: a.max(b),
            tail: Probability::NEVER,
            tail_max_us: 0,
        }
    }

    /// The same distribution with a slow tail: with probability `p`, up to `max` extra.
    #[must_use]
    pub fn with_tail(mut self, p: Probability, max: Duration) -> Self {
        self.tail = p;
        self.tail_max_us = duration_micros(max);
        self
    }

    /// The longest bound this distribution was given (its maximum or its tail), in
    /// microseconds, for validation.
    pub(crate) fn bound_us(&self) -> u64 {
        self.max_us.max(self.tail_max_us)
    }

    /// The smallest delay.
    #[must_use]
    pub fn min(&self) -> Duration {
        Duration::from_micros(self.min_us)
    }

    /// The largest delay without the tail.
    #[must_use]
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// Draws a delay in microseconds.
    pub(crate) fn sample_us(&self, rng: &mut SimRng) -> u64 {
        let mut d = rng.between(self.min_us, self.max_us);
        if rng.chance(self.tail) {
            d += rng.between(0, self.tail_max_us);
        }
        d
    }
}

/// One link's behaviour when no fault is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    delay: DelayDistribution,
    loss: Probability,
    duplicate: Probability,
}

impl LinkConfig {
    /// A link with the given delays that neither loses nor duplicates.
    #[must_use]
    pub fn new(delay: DelayDistribution) -> Self {
        LinkConfig {
            delay,
            loss: Probability::NEVER,
            duplicate: Probability::NEVER,
        }
    }

    /// The same link losing each message with probability `p`.
    #[must_use]
    pub fn with_loss(mut self, p: Probability) -> Self {
        self.loss = p;
        self
    }

    /// The same link delivering each message twice with probability `p`.
    #[must_use]
    pub fn with_duplication(mut self, p: Probability) -> Self {
        self.duplicate = p;
        self
    }

    /// The delay distribution.
    #[must_use]
    pub fn delay(&self) -> DelayDistribution {
        self.delay
    }

    /// The loss probability.
    #[must_use]
    pub fn loss(&self) -> Probability {
        self.loss
    }

    /// The duplication probability.
    #[must_use]
    pub fn duplication(&self) -> Probability {
        self.duplicate
    }
}

impl Default for LinkConfig {
    /// 100 to 1,000 microseconds, a 1% tail of up to 10 ms, no loss or duplication.
    fn default() -> Self {
        LinkConfig::new(
            DelayDistribution::uniform(Duration::from_micros(100), Duration::from_micros(1_000))
                .with_tail(Probability::from_percent(1), Duration::from_millis(10)),
        )
    }
}

/// The shapes of partition the nemesis draws (after Jepsen's nemeses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PartitionShape {
    /// The nodes split into two random halves that cannot talk to each other.
    Halves,
    /// One random node is cut off from all others.
    IsolateOne,
    /// A random group cannot send to the rest, but still hears from it.
    OneWay,
    /// Two halves that share one bridge node, which talks to both; the halves cannot talk.
    Bridge,
    /// The nodes in a random ring, each talking only to its nearest neighbours so that each
    /// sees a majority but no two nodes see the same majority.
    ///
    /// On 2 or 3 nodes every node's ring neighbours already make up the whole cluster, so
    /// the shape cuts no link (see [`PartitionShape::cuts_links`]); the nemesis then
    /// applies, counts and logs nothing.
    MajoritiesRing,
}

impl PartitionShape {
    /// Every shape.
    pub const ALL: [PartitionShape; 5] = [
        PartitionShape::Halves,
        PartitionShape::IsolateOne,
        PartitionShape::OneWay,
        PartitionShape::Bridge,
        PartitionShape::MajoritiesRing,
    ];

    /// Whether a partition of this shape among `nodes` nodes cuts at least one link.
    ///
    /// Every shape needs 2 nodes; a bridge needs 3 (two halves and the bridge), and a
    /// majorities ring needs 4 (on 3, each node's two ring neighbours are all the others).
    /// When the nemesis draws a shape that cuts nothing, it does nothing: no partition
    /// starts, and neither the coverage counter of the shape nor the fault log records one.
    ///
    /// ```
    /// use synod_sim::PartitionShape;
    /// assert!(PartitionShape::Halves.cuts_links(2));
    /// assert!(!PartitionShape::MajoritiesRing.cuts_links(3));
    /// assert!(PartitionShape::MajoritiesRing.cuts_links(4));
    /// ```
    #[must_use]
    pub const fn cuts_links(self, nodes: usize) -> bool {
        let least = match self {
            PartitionShape::Halves | PartitionShape::IsolateOne | PartitionShape::OneWay => 2,
            PartitionShape::Bridge => 3,
            PartitionShape::MajoritiesRing => 4,
        };
        nodes >= least
    }
}

impl fmt::Display for PartitionShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PartitionShape::Halves => "halves",
            PartitionShape::IsolateOne => "isolate-one",
            PartitionShape::OneWay => "one-way",
            PartitionShape::Bridge => "bridge",
            PartitionShape::MajoritiesRing => "majorities-ring",
        };
        f.write_str(name)
    }
}

/// Which ordered links are cut: one bit per link, `from * n + to`, so that a cut among the
/// most nodes a simulation may have stays small enough to copy into each fault-log entry
/// (32 KiB at 512 nodes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cut {
    n: usize,
    bits: Vec<u64>,
}

impl Cut {
    /// No link cut among `n` nodes.
    #[must_use]
    pub fn none(n: usize) -> Self {
        Cut {
            n,
            bits: vec![0; (n * n).div_ceil(64)],
        }
    }

    /// The bit of the link from `from` to `to`, if both are among the cut's nodes.
    fn bit(&self, from: NodeId, to: NodeId) -> Option<(usize, u64)> {
        let (a, b) = (slot_of(from), slot_of(to));
        (a < self.n && b < self.n).then(|| {
            let i = a * self.n + b;
            (i / 64, 1 << (i % 64))
        })
    }

    /// Whether messages from `from` to `to` are dropped.
    #[must_use]
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.bit(from, to)
            .is_some_and(|(word, mask)| self.bits[word] & mask != 0)
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        if from != to
            && let Some((word, mask)) = self.bit(from, to)
        {
            self.bits[word] |= mask;
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: NodeId, b: NodeId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts every link between groups: nodes talk only within their own group (and a node
    /// in no group talks to nobody).
    #[must_use]
    pub fn groups(n: usize, groups: &[&[NodeId]]) -> Self {
        let group_of = |x: NodeId| groups.iter().position(|g| g.contains(&x));
        let mut c = Cut::none(n);
        for a in 0..n as u32 {
            for b in 0..n as u32 {
                let (a, b) = (node_at(a as usize), node_at(b as usize));
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    c.cut_one_way(a, b);
                }
            }
        }
        c
    }

    /// The number of nodes this cut is for.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.n
    }

    /// Whether any link is cut.
    #[must_use]
    pub fn any(&self) -> bool {
        self.bits.iter().any(|&w| w != 0)
    }

    /// A random partition of `shape` among `n` nodes.
    pub fn draw(shape: PartitionShape, n: usize, rng: &mut SimRng) -> Self {
        let mut ids: Vec<NodeId> = (0..n).map(node_at).collect();
        rng.shuffle(&mut ids);
        let mut c = Cut::none(n);
        if n < 2 {
            return c;
        }
        match shape {
            PartitionShape::Halves => {
                let k = n / 2;
                for &a in &ids[..k] {
                    for &b in &ids[k..] {
                        c.cut_both(a, b);
                    }
                }
            }
            PartitionShape::IsolateOne => {
                for &b in &ids[1..] {
                    c.cut_both(ids[0], b);
                }
            }
            PartitionShape::OneWay => {
                let k = 1 + rng.below(n as u64 - 1) as usize;
                for &a in &ids[..k] {
                    for &b in &ids[k..] {
                        c.cut_one_way(a, b);
                    }
                }
            }
            PartitionShape::Bridge => {
                // ids[..k] and ids[k+1..] are the halves; ids[k] bridges them.
                let k = (n - 1) / 2;
                for &a in &ids[..k] {
                    for &b in &ids[k + 1..] {
                        c.cut_both(a, b);
                    }
                }
            }
            PartitionShape::MajoritiesRing => {
                // Each node sees itself and `reach` neighbours on each side of the ring:
                // 2 * reach + 1 >= majority.
                let majority = n / 2 + 1;
                let reach = majority / 2;
                for i in 0..n {
                    for j in 0..n {
                        let d = i.abs_diff(j);
                        let ring = d.min(n - d);
                        if ring > reach {
                            c.cut_one_way(ids[i], ids[j]);
                        }
                    }
                }
            }
        }
        c
    }
}

impl fmt::Display for Cut {
    /// The cut links in order of their sending node: `n1<->n2` when both directions are
    /// cut, `n3->n1` when only one is; `no link cut` when none is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for a in 0..self.n as u32 {
            for b in 0..self.n as u32 {
                let (a, b) = (node_at(a as usize), node_at(b as usize));
                if !self.is_cut(a, b) {
                    continue;
                }
                let both = self.is_cut(b, a);
                if both && b < a {
                    continue; // shown as b<->a
                }
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                if both {
                    write!(f, "{a}<->{b}")?;
                } else {
                    write!(f, "{a}->{b}")?;
                }
            }
        }
        if first {
            f.write_str("no link cut")?;
        }
        Ok(())
    }
}

/// Per-link state: the clog, and the last delivery time for FIFO order. Kept for every
/// ordered pair (16 bytes each, 4 MiB at 512 nodes); a link's configuration is the
/// network's, or its own override.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    pub(crate) clogged_until: SimTime,
    pub(crate) last_delivery: SimTime,
}

/// The whole network: links, the current cut, and the nemesis's global knobs.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) n: usize,
    /// How every link behaves, except those in `overrides`.
    config: LinkConfig,
    /// The links given a configuration of their own, by `(from, to)` slot.
    overrides: BTreeMap<(usize, usize), LinkConfig>,
    pub(crate) links: Vec<Link>,
    pub(crate) cut: Cut,
    /// Extra loss applied to every link by the nemesis.
    pub(crate) extra_loss: Probability,
    /// Extra duplication applied to every link by the nemesis.
    pub(crate) extra_duplicate: Probability,
    /// When set, links are not FIFO and each message gets up to this much extra delay.
    pub(crate) reorder_extra_us: Option<u64>,
}

/// What the network decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Cut,
    Lost,
    Deliver {
        at: SimTime,
        duplicate_at: Option<SimTime>,
        reordered: bool,
    },
}

impl Network {
    /// A network of `n` nodes whose links behave as `config`, except those in `overrides`
    /// (`from`, `to`, config), whose nodes are in range.
    pub(crate) fn new(
        n: usize,
        config: LinkConfig,
        overrides: &[(NodeId, NodeId, LinkConfig)],
    ) -> Self {
        let link = Link {
            clogged_until: SimTime::ZERO,
            last_delivery: SimTime::ZERO,
        };
        let overrides = overrides
            .iter()
            .map(|&(from, to, config)| ((slot_of(from), slot_of(to)), config))
            .collect();
        Network {
            n,
            config,
            overrides,
            links: vec![link; n * n],
            cut: Cut::none(n),
            extra_loss: Probability::NEVER,
            extra_duplicate: Probability::NEVER,
            reorder_extra_us: None,
        }
    }

    pub(crate) fn link_mut(&mut self, from: NodeId, to: NodeId) -> &mut Link {
        &mut self.links[slot_of(from) * self.n + slot_of(to)]
    }

    /// How the link from `from` to `to` behaves.
    fn config_of(&self, from: NodeId, to: NodeId) -> LinkConfig {
        self.overrides
            .get(&(slot_of(from), slot_of(to)))
            .copied()
            .unwrap_or(self.config)
    }

    /// Decides the fate of a message sent now from `from` to `to`.
    pub(crate) fn route(
        &mut self,
        now: SimTime,
        from: NodeId,
        to: NodeId,
        rng: &mut SimRng,
    ) -> Fate {
        if self.cut.is_cut(from, to) {
            return Fate::Cut;
        }
        let extra_loss = self.extra_loss;
        let extra_dup = self.extra_duplicate;
        let reorder = self.reorder_extra_us;
        let config = self.config_of(from, to);
        let link = self.link_mut(from, to);
        if rng.chance(config.loss) || rng.chance(extra_loss) {
            return Fate::Lost;
        }
        let sample = |rng: &mut SimRng| {
            let mut d = config.delay.sample_us(rng);
            if let Some(extra) = reorder {
                d += rng.between(0, extra);
            }
            let mut at = SimTime::from_micros(now.as_micros().saturating_add(d));
            if link.clogged_until > now {
                at = SimTime::from_micros(link.clogged_until.as_micros().saturating_add(d));
            }
            at
        };
        let mut at = sample(rng);
        let duplicate = rng.chance(config.duplicate) || rng.chance(extra_dup);
        let duplicate_at = duplicate.then(|| sample(rng));
        let mut reordered = false;
        if reorder.is_none() {
            at = at.max(link.last_delivery);
        } else if at < link.last_delivery {
            reordered = true;
        }
        link.last_delivery = link.last_delivery.max(at);
        Fate::Deliver {
            at,
            duplicate_at,
            reordered,
        }
    }

    /// Removes every fault: cuts, clogs, extra loss, duplication and reordering.
    pub(crate) fn heal(&mut self, now: SimTime) {
        self.cut = Cut::none(self.n);
        self.extra_loss = Probability::NEVER;
        self.extra_duplicate = Probability::NEVER;
        self.reorder_extra_us = None;
        for link in &mut self.links {
            link.clogged_until = link.clogged_until.min(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reachable(c: &Cut, n: usize, a: usize) -> usize {
        (0..n)
            .filter(|&b| !c.is_cut(node_at(a), node_at(b)))
            .count()
    }

    #[test]
    fn shapes_have_their_defining_property() {
        let mut rng = SimRng::new(9);
        for n in 2..9 {
            for _ in 0..20 {
                let halves = Cut::draw(PartitionShape::Halves, n, &mut rng);
                let sizes: Vec<usize> = (0..n).map(|a| reachable(&halves, n, a)).collect();
                assert!(
                    sizes.iter().all(|&s| s == n / 2 || s == n - n / 2),
                    "{sizes:?}"
                );

                let iso = Cut::draw(PartitionShape::IsolateOne, n, &mut rng);
                let alone = (0..n).filter(|&a| reachable(&iso, n, a) == 1).count();
                assert_eq!(alone, if n == 2 { 2 } else { 1 });

                let one_way = Cut::draw(PartitionShape::OneWay, n, &mut rng);
                assert!(one_way.any());
                for a in 0..n as u32 {
                    for b in 0..n as u32 {
                        let (a, b) = (node_at(a as usize), node_at(b as usize));
                        assert!(!(one_way.is_cut(a, b) && one_way.is_cut(b, a)));
                    }
                }

                let ring = Cut::draw(PartitionShape::MajoritiesRing, n, &mut rng);
                for a in 0..n {
                    assert!(reachable(&ring, n, a) > n / 2, "n={n}");
                }
                assert_eq!(ring.any(), n >= 4, "n={n}");

                let bridge = Cut::draw(PartitionShape::Bridge, n, &mut rng);
                let full = (0..n).filter(|&a| reachable(&bridge, n, a) == n).count();
                assert!(full >= 1);
                if n >= 3 {
                    assert!(bridge.any());
                }
            }
        }
    }

    #[test]
    fn cuts_links_says_whether_a_draw_cuts_anything() {
        let mut rng = SimRng::new(3);
        for n in 0..9 {
            for shape in PartitionShape::ALL {
                for _ in 0..20 {
                    let cut = Cut::draw(shape, n, &mut rng);
                    assert_eq!(cut.any(), shape.cuts_links(n), "{shape} on {n} nodes");
                }
            }
        }
    }

    #[test]
    fn groups_cut_between_groups_only() {
        let ids: Vec<NodeId> = (1..=4).map(NodeId::new).collect();
        let c = Cut::groups(4, &[&ids[..2], &ids[2..3]]);
        assert!(!c.is_cut(ids[0], ids[1]));
        assert!(c.is_cut(ids[1], ids[2]));
        assert!(c.is_cut(ids[3], ids[0]) && c.is_cut(ids[0], ids[3]));
    }

    #[test]
    fn fifo_links_keep_order_and_clogs_hold_messages() {
        let mut net = Network::new(2, LinkConfig::default(), &[]);
        let mut rng = SimRng::new(1);
        let (a, b) = (NodeId::new(1), NodeId::new(2));
        let mut last = SimTime::ZERO;
        for t in 0..1000 {
            match net.route(SimTime::from_micros(t), a, b, &mut rng) {
                Fate::Deliver { at, reordered, .. } => {
                    assert!(at >= last && !reordered);
                    last = at;
                }
                other => panic!("{other:?}"),
            }
        }
        net.link_mut(a, b).clogged_until = SimTime::from_micros(1_000_000);
        let Fate::Deliver { at, .. } = net.route(SimTime::from_micros(2_000), a, b, &mut rng)
        else {
            panic!("clogged message lost")
        };
        assert!(at >= SimTime::from_micros(1_000_000));
        net.cut.cut_one_way(a, b);
        assert_eq!(
            net.route(SimTime::from_micros(3_000), a, b, &mut rng),
            Fate::Cut
        );
        net.heal(SimTime::from_micros(3_000));
        assert!(matches!(
            net.route(SimTime::from_micros(3_000), a, b, &mut rng),
            Fate::Deliver { .. }
        ));
    }

    #[test]
    fn a_cut_among_the_most_nodes_is_one_bit_a_link() {
        let n = crate::NODES_MAX;
        let ids: Vec<NodeId> = (0..n).map(node_at).collect();
        let (left, right) = ids.split_at(n / 2);
        let mut c = Cut::groups(n, &[left, right]);
        assert_eq!(c.bits.len() * 64, n * n);
        for (i, &a) in ids.iter().enumerate() {
            for (j, &b) in ids.iter().enumerate() {
                assert_eq!(c.is_cut(a, b), (i < n / 2) != (j < n / 2), "{a} -> {b}");
            }
        }
        // Nodes outside the cut's range are never cut, and never panic.
        assert!(!c.is_cut(node_at(n), ids[0]) && !c.is_cut(ids[0], node_at(n)));
        c.cut_one_way(ids[0], node_at(n + 1));
        c.cut_one_way(ids[0], ids[1]);
        assert!(c.is_cut(ids[0], ids[1]) && !c.is_cut(ids[1], ids[0]));
    }

    #[test]
    fn a_link_override_applies_to_its_own_link_only() {
        let (a, b, c) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
        let lossy = LinkConfig::default().with_loss(Probability::ALWAYS);
        let mut net = Network::new(3, LinkConfig::default(), &[(a, b, lossy)]);
        let mut rng = SimRng::new(7);
        let now = SimTime::ZERO;
        assert_eq!(net.route(now, a, b, &mut rng), Fate::Lost);
        for (from, to) in [(b, a), (a, c), (c, b)] {
            assert!(matches!(
                net.route(now, from, to, &mut rng),
                Fate::Deliver { .. }
            ));
        }
    }
}
