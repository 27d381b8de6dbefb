//! The `synod` command-line program: see `synod --help`.

use std::process::ExitCode;

/// The allocator of every node process: a SET's key, value, log entry and messages are
/// allocated on one thread (the client loop, a transport reader) and freed on another
/// (the worker), where glibc's malloc and free took about a third of the leader's CPU
/// samples at 64 pipelining clients, and mimalloc a fraction of that (BENCHMARKS.md,
/// Consistent Core).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    synod_examples::cli::main()
}
