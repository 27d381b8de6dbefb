//! The `synod` command-line program: see `synod --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    synod_examples::cli::main()
}
