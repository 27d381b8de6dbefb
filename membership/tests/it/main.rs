//! The integration tests of synod-membership: `Member` clusters under synod-sim.

mod cluster;
mod kv;
mod member;
#[path = "../../examples/support/processes.rs"]
mod member_processes;
mod processes;
mod review7;
mod sim;
mod swarm;
mod tcp;
mod watch;
