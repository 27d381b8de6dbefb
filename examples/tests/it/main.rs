//! End-to-end tests of the `synod` program: each runs the built binary as a user would.

mod cli;
mod core_cluster;
mod core_limits;
mod core_netns;
mod core_redis;
mod core_sim;
mod demo_cli;
mod sim_cli;
mod wal_cli;
