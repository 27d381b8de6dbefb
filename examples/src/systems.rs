//! The reference systems the `synod` program runs, registered in one table.
// tidy: driver: names the drivers that start each system's nodes and clients.
//!
//! Each of `synod demo`, `synod node`, `synod kv` and `synod sim` takes the system to run
//! with `--system NAME` (default [`DEFAULT`]), looks it up in [`SYSTEMS`] and runs what the
//! entry names for it. Adding a system is adding one [`System`] to [`SYSTEMS`]: the
//! command line accepts its name (and lists it in `--help`) from there, and a part the
//! system does not have yet (`None`) is refused with a message saying so.
//!
//! ```
//! use synod_examples::systems::{self, DEFAULT};
//!
//! let core = systems::find(DEFAULT)?;
//! assert!(core.node.is_some() && core.kv.is_some() && core.sim.is_some());
//! assert!(systems::find("no-such-system").is_err());
//! # Ok::<(), systems::UnknownSystem>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::runtime::{NodeOptions, StartError};

/// The system a subcommand runs unless told otherwise.
pub const DEFAULT: &str = "consistent-core";

/// A system's settings for `synod node` beyond the runtime's [`NodeOptions`]: the flags a
/// system may or may not use, each `None` unless given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeSettings {
    /// `--snapshot-entries`: entries applied between snapshots of the state.
    pub snapshot_entries: Option<u64>,
    /// `--keys-max`: the keys a leaderless node's quorum store holds at most.
    pub keys_max: Option<usize>,
}

/// Where a started node listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The address peers connect to.
    pub peers: SocketAddr,
    /// The address clients connect to.
    pub clients: SocketAddr,
}

/// Starts a node of a system in this process; it runs until the process exits.
pub type StartNode = fn(&NodeOptions, &NodeSettings) -> Result<Listening, StartError>;
/// Runs `synod kv`: the addresses (comma-separated), the read mode, the command.
pub type RunKv = fn(&str, &str, &[String]) -> ExitCode;
/// Runs `synod demo` with checked options.
pub type RunDemo = fn(&crate::demo::Options) -> ExitCode;

/// One reference system, and what the `synod` program runs for it.
#[derive(Clone, Copy, Debug)]
pub struct System {
    /// The name `--system` takes.
    pub name: &'static str,
    /// One line saying what it is, for `--help`.
    pub about: &'static str,
    /// `synod node`.
    pub node: Option<StartNode>,
    /// `synod kv`.
    pub kv: Option<RunKv>,
    /// `synod demo`.
    pub demo: Option<RunDemo>,
    /// `synod sim`: the simulation that runs the system's node.
    pub sim: Option<crate::simulate::System>,
}

/// Every system the `synod` program runs.
pub const SYSTEMS: &[System] = &[
    System {
        name: "consistent-core",
        about: "a Raft-replicated key-value store speaking RESP, like etcd (Consistent Core)",
        node: Some(crate::consistent_core::tool::start_node),
        kv: Some(crate::consistent_core::tool::run_kv),
        demo: Some(crate::demo::run),
        sim: Some(crate::simulate::System::RAFT_KV),
    },
    System {
        name: "register",
        about: "a leaderless key-value store of ABD registers on a majority, speaking RESP",
        node: Some(crate::register::node::start_node),
        kv: Some(crate::register::client::run_kv),
        demo: None,
        sim: Some(crate::simulate::System::REGISTER),
    },
    System {
        name: "leaderless",
        about: "a leaderless store like Cassandra: ONE/QUORUM/ALL, version vectors, hints, anti-entropy, ABD and Paxos CAS, speaking RESP",
        node: Some(crate::leaderless::node::start_node),
        kv: Some(crate::leaderless::node::run_kv),
        demo: Some(crate::demo::leaderless::run),
        sim: Some(crate::simulate::System::LEADERLESS),
    },
    System {
        name: "membership",
        about: "SWIM failure detection with Lifeguard, gossip and an emergent leader (simulated only)",
        node: None,
        kv: None,
        demo: None,
        sim: Some(crate::simulate::System::MEMBERSHIP),
    },
    System {
        name: "twopc",
        about: "a bank on two-phase commit over partitioned accounts, with wound-wait or wait-die (simulated only)",
        node: None,
        kv: None,
        demo: None,
        sim: Some(crate::simulate::System::TWOPC),
    },
];

/// A name that is no registered system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSystem(pub String);

impl fmt::Display for UnknownSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = SYSTEMS.iter().map(|s| s.name).collect();
        write!(
            f,
            "unknown system `{}`; the systems are: {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownSystem {}

/// The system named `name`.
///
/// # Errors
///
/// [`UnknownSystem`], whose message names the known ones.
pub fn find(name: &str) -> Result<&'static System, UnknownSystem> {
    SYSTEMS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| UnknownSystem(name.to_string()))
}

/// The parser of `--system`: a registered name (`--help` lists them with what they are).
#[must_use]
pub fn parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        SYSTEMS
            .iter()
            .map(|s| clap::builder::PossibleValue::new(s.name).help(s.about)),
    )
}

/// The list of systems, as `synod --help` ends.
#[must_use]
pub fn listing() -> String {
    let mut out = String::from("Systems (--system NAME; the first is the default):\n");
    for s in SYSTEMS {
        out.push_str(&format!("  {:<18}{}\n", s.name, s.about));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_first_system_and_names_are_unique() {
        assert_eq!(SYSTEMS.first().map(|s| s.name), Some(DEFAULT));
        for (i, a) in SYSTEMS.iter().enumerate() {
            assert!(
                SYSTEMS[i + 1..].iter().all(|b| b.name != a.name),
                "{} is registered twice",
                a.name
            );
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let e = find("etcd").expect_err("not a system");
        let text = e.to_string();
        assert!(text.contains("`etcd`"), "{text}");
        assert!(SYSTEMS.iter().all(|s| text.contains(s.name)), "{text}");
    }
}
