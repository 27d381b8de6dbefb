//! The `synod` command-line program: see `synod --help`.

use std::process::ExitCode;

/// The allocator of every node process: a SET's key, value, log entry and messages are
/// allocated on one thread (the client loop, a transport reader) and freed on another
/// (the worker), which glibc's malloc does at about a fifth of a node's CPU per SET, and
/// mimalloc at a fraction of that (BENCHMARKS.md, Consistent Core).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    synod_examples::cli::main()
}
