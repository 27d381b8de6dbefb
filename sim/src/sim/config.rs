//! A run's configuration, [`SimConfig`], and its builder, validated once.

use std::fmt;
use std::time::Duration;

use crate::fault_log::FAULT_LOG_ENTRIES_DEFAULT;
use crate::nemesis::NemesisConfig;
use crate::net::{DelayDistribution, LinkConfig};
use crate::node::{NodeId, slot_of};
use crate::rng::Probability;
use crate::time::duration_micros;

/// An invalid [`SimConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The node count is 0 or above [`NODES_MAX`].
    Nodes(usize),
    /// The client count is above [`CLIENTS_MAX`].
    Clients(usize),
    /// A duration that must be positive is zero.
    ZeroDuration(&'static str),
    /// [`SimConfigBuilder::link_between`] names a node outside the cluster.
    LinkNode(NodeId),
    /// A duration (or delay bound) is above [`DURATION_MAX`].
    TooLong {
        /// The setting, as named by its builder method.
        what: &'static str,
        /// The value given.
        value: Duration,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Nodes(n) => write!(f, "node count {n} is not in 1..={NODES_MAX}"),
            ConfigError::Clients(n) => write!(f, "client count {n} is above {CLIENTS_MAX}"),
            ConfigError::ZeroDuration(what) => write!(f, "{what} must be positive"),
            ConfigError::LinkNode(id) => write!(f, "link_between names {id}, not in the cluster"),
            ConfigError::TooLong { what, value } => {
                write!(
                    f,
                    "{what} of {value:?} is above the limit of {DURATION_MAX:?}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The most nodes a simulation may have.
pub const NODES_MAX: usize = 512;
/// The most clients a simulation may have.
pub const CLIENTS_MAX: usize = 4096;
/// The longest duration any setting of a simulation may have (a million seconds of virtual
/// time, about 11.6 days): far beyond any useful run, and small enough that sums and
/// doublings of settings never overflow.
pub const DURATION_MAX: Duration = Duration::from_secs(1_000_000);

/// A simulation's configuration, validated once by [`SimConfigBuilder::build`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub(super) nodes: usize,
    pub(super) clients: usize,
    pub(super) safety_time_us: u64,
    pub(super) events_max: u64,
    pub(super) liveness_time_max_us: u64,
    pub(super) client_timeout_us: u64,
    pub(super) think_time_max_us: u64,
    pub(super) link: LinkConfig,
    pub(super) link_overrides: Vec<(NodeId, NodeId, LinkConfig)>,
    pub(super) client_link: LinkConfig,
    pub(super) sync_delay: DelayDistribution,
    pub(super) nemesis: NemesisConfig,
    pub(super) trace_lines_max: usize,
    pub(super) fault_log_max: usize,
}

impl SimConfig {
    /// A builder for `nodes` nodes, with defaults for everything else.
    #[must_use]
    pub fn builder(nodes: usize) -> SimConfigBuilder {
        SimConfigBuilder {
            config: SimConfig {
                nodes,
                clients: 3,
                safety_time_us: 1_000_000,
                events_max: u64::MAX,
                liveness_time_max_us: 2_000_000,
                client_timeout_us: 100_000,
                think_time_max_us: 1_000,
                link: LinkConfig::default(),
                link_overrides: Vec::new(),
                client_link: LinkConfig::default(),
                sync_delay: DelayDistribution::uniform(
                    Duration::from_micros(100),
                    Duration::from_millis(2),
                ),
                nemesis: NemesisConfig::default(),
                trace_lines_max: 0,
                fault_log_max: FAULT_LOG_ENTRIES_DEFAULT,
            },
        }
    }

    /// The number of nodes.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

/// Builds a [`SimConfig`].
#[derive(Debug, Clone)]
pub struct SimConfigBuilder {
    config: SimConfig,
}

impl SimConfigBuilder {
    /// The number of clients (default 3).
    #[must_use]
    pub fn clients(mut self, n: usize) -> Self {
        self.config.clients = n;
        self
    }

    /// How long the safety phase lasts in virtual time (default 1 s).
    #[must_use]
    pub fn safety_time(mut self, d: Duration) -> Self {
        self.config.safety_time_us = duration_micros(d);
        self
    }

    /// The most events the safety phase processes (default unlimited).
    #[must_use]
    pub fn events_max(mut self, n: u64) -> Self {
        self.config.events_max = n;
        self
    }

    /// How long after healing the progress condition may take (default 2 s).
    #[must_use]
    pub fn liveness_time_max(mut self, d: Duration) -> Self {
        self.config.liveness_time_max_us = duration_micros(d);
        self
    }

    /// How long a client waits for an answer before recording the operation as unknown
    /// (default 100 ms).
    #[must_use]
    pub fn client_timeout(mut self, d: Duration) -> Self {
        self.config.client_timeout_us = duration_micros(d);
        self
    }

    /// The longest pause of a client between operations (default 1 ms).
    #[must_use]
    pub fn think_time_max(mut self, d: Duration) -> Self {
        self.config.think_time_max_us = duration_micros(d);
        self
    }

    /// Every node-to-node link's behaviour without faults (default [`LinkConfig::default`]),
    /// except the links given their own with [`SimConfigBuilder::link_between`].
    #[must_use]
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.config.link = link;
        self
    }

    /// The link from `from` to `to` (one direction) behaves as `link` instead: a slow or
    /// lossy path, a remote data centre. A later call for the same link replaces an
    /// earlier one.
    #[must_use]
    pub fn link_between(mut self, from: NodeId, to: NodeId, link: LinkConfig) -> Self {
        self.config
            .link_overrides
            .retain(|&(f, t, _)| (f, t) != (from, to));
        self.config.link_overrides.push((from, to, link));
        self
    }

    /// The client-to-node links (default [`LinkConfig::default`]). Partitions do not
    /// apply to them; loss does.
    #[must_use]
    pub fn client_link(mut self, link: LinkConfig) -> Self {
        self.config.client_link = link;
        self
    }

    /// How long a disk sync takes (default 100 microseconds to 2 ms).
    #[must_use]
    pub fn sync_delay(mut self, delay: DelayDistribution) -> Self {
        self.config.sync_delay = delay;
        self
    }

    /// Links and disks of one data centre, as the project's simulations use them: node links
    /// of 0.1 to 3 ms with 2% of messages taking up to 30 ms more, client links of 10 to
    /// 200 microseconds, syncs of 0.1 to 5 ms. Sets [`link`](Self::link),
    /// [`client_link`](Self::client_link) and [`sync_delay`](Self::sync_delay).
    #[must_use]
    pub fn data_centre(self) -> Self {
        self.link(LinkConfig::new(
            DelayDistribution::uniform(Duration::from_micros(100), Duration::from_millis(3))
                .with_tail(Probability::from_percent(2), Duration::from_millis(30)),
        ))
        .client_link(LinkConfig::new(DelayDistribution::uniform(
            Duration::from_micros(10),
            Duration::from_micros(200),
        )))
        .sync_delay(DelayDistribution::uniform(
            Duration::from_micros(100),
            Duration::from_millis(5),
        ))
    }

    /// The nemesis (default [`NemesisConfig::default`]: every fault, swarm testing).
    #[must_use]
    pub fn nemesis(mut self, nemesis: NemesisConfig) -> Self {
        self.config.nemesis = nemesis;
        self
    }

    /// Keep the last `lines` processed events as text in the report (default 0: none).
    #[must_use]
    pub fn trace_lines_max(mut self, lines: usize) -> Self {
        self.config.trace_lines_max = lines;
        self
    }

    /// Keep at most `entries` faults in [`RunReport::faults`](crate::RunReport::faults) (default
    /// [`FAULT_LOG_ENTRIES_DEFAULT`], 4096; 0 keeps none). Past the cap the oldest entries
    /// are dropped and counted. An entry is a few dozen bytes, plus `nodes * nodes / 8`
    /// bytes for a partition's cut (one bit per link).
    #[must_use]
    pub fn fault_log_max(mut self, entries: usize) -> Self {
        self.config.fault_log_max = entries;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// If the node count is not in `1..=NODES_MAX`, a link given with
    /// [`SimConfigBuilder::link_between`] names a node outside the cluster, the client
    /// count is above `CLIENTS_MAX`, the safety time, liveness bound or client timeout is
    /// zero, or any duration (including delay bounds of the links and disks, and the nemesis's
    /// settings) is above [`DURATION_MAX`].
    pub fn build(self) -> Result<SimConfig, ConfigError> {
        let c = self.config;
        let limit = duration_micros(DURATION_MAX);
        let durations = [
            ("safety_time", c.safety_time_us),
            ("liveness_time_max", c.liveness_time_max_us),
            ("client_timeout", c.client_timeout_us),
            ("think_time_max", c.think_time_max_us),
            ("link delay", c.link.delay().bound_us()),
            ("client_link delay", c.client_link.delay().bound_us()),
            ("sync_delay", c.sync_delay.bound_us()),
        ];
        let overrides = c
            .link_overrides
            .iter()
            .map(|(_, _, link)| ("link_between delay", link.delay().bound_us()));
        for (what, us) in durations
            .into_iter()
            .chain(overrides)
            .chain(c.nemesis.durations_us())
        {
            if us > limit {
                return Err(ConfigError::TooLong {
                    what,
                    value: Duration::from_micros(us),
                });
            }
        }
        if c.nodes == 0 || c.nodes > NODES_MAX {
            return Err(ConfigError::Nodes(c.nodes));
        }
        if let Some(&(from, to, _)) = c
            .link_overrides
            .iter()
            .find(|(f, t, _)| slot_of(*f) >= c.nodes || slot_of(*t) >= c.nodes)
        {
            let outside = if slot_of(from) >= c.nodes { from } else { to };
            return Err(ConfigError::LinkNode(outside));
        }
        if c.clients > CLIENTS_MAX {
            return Err(ConfigError::Clients(c.clients));
        }
        if c.safety_time_us == 0 {
            return Err(ConfigError::ZeroDuration("safety_time"));
        }
        if c.liveness_time_max_us == 0 {
            return Err(ConfigError::ZeroDuration("liveness_time_max"));
        }
        if c.client_timeout_us == 0 {
            return Err(ConfigError::ZeroDuration("client_timeout"));
        }
        Ok(c)
    }
}
