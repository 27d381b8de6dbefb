//! End-to-end tests of the `synod` program: each runs the built binary as a user would;
//! and the decoders of bytes from clients, peers and disk under random and damaged input.

// The counting allocator of synod-consensus' tests, shared rather than copied (this crate
// is not published, so the path outside it is never packaged).
#[path = "../../../consensus/tests/it/alloc.rs"]
mod alloc;
mod auth;
mod cli;
mod core_clients;
mod core_cluster;
mod core_limits;
mod core_lock;
mod core_netns;
mod core_redis;
mod core_sim;
mod core_watch;
mod decoders;
mod demo_cli;
mod leaderless_cluster;
mod leaderless_netns;
mod leaderless_sim;
mod register_cluster;
mod sim_cli;
mod sim_routing;
mod sim_twopc;
mod timeline_page;
mod tls_cluster;
mod wal_cli;
