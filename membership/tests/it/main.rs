//! The integration tests of synod-membership: `Member` clusters under synod-sim.

mod cluster;
mod kv;
mod member;
mod sim;
mod swarm;
mod tcp;
mod watch;
