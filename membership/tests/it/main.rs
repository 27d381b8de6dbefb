//! The integration tests of synod-membership: `Member` clusters under synod-sim.

mod cluster;
mod member;
mod sim;
mod swarm;
mod watch;
