//! Printing to standard output without panicking when the reader goes away.
//!
//! `println!` panics if standard output is a pipe whose reader has exited (`synod wal dump
//! DIR | head`), because Rust ignores `SIGPIPE`. The [`outln!`](crate::outln) and
//! [`out!`](crate::out) macros write through [`write_or_exit`] instead, which ends the
//! process quietly with the conventional status of a process killed by `SIGPIPE`.

use std::fmt;
use std::io::{self, Write};

/// Exit status for a closed output pipe: 128 + SIGPIPE (13), what a shell reports for a
/// program the signal killed.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes `args` to standard output; exits with [`EXIT_BROKEN_PIPE`] if the reader has gone,
/// and reports any other error on standard error before exiting with status 2.
pub fn write_or_exit(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        eprintln!("synod: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}

/// `print!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_or_exit(format_args!($($arg)*)) };
}

/// `println!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_or_exit(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_or_exit(format_args!("{}\n", format_args!($($arg)*))) };
}
