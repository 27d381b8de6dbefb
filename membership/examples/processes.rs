//! A few dozen members as separate processes on loopback TCP: how long a real cluster takes
//! to agree on its view, and to detect a member killed with `SIGKILL`.
//!
//! The parent starts this same program once per member (`processes child`), each a
//! `Member` driven over synod-transport as in the `loopback` example. Each child binds a
//! port and prints it; the parent hands every child the whole list, then reads what the
//! children print: how many members each holds live, and each death it learns of. It
//! prints how long until every member held every member live (from the moment they were
//! told to go), kills one member, and prints how long each survivor took to declare it dead
//! and until every survivor's view was whole again, in protocol periods, and the one
//! coordinator every survivor names. Closing a child's standard input stops it. The run is
//! `support/processes.rs`, which the crate's process test runs too.
//!
//! Run with `cargo run -p synod-membership --example processes -- 24` (the member count;
//! 24 if none is given, 2 to 64).

#[path = "support/processes.rs"]
mod processes;

use processes::Error;

const MEMBERS_MAX: u64 = 64;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("child") => processes::child(args.get(1).ok_or("child needs its id")?.parse()?),
        count => {
            let members: u64 = count.map_or(Ok(24), str::parse)?;
            if !(2..=MEMBERS_MAX).contains(&members) {
                return Err(format!("2 to {MEMBERS_MAX} members, not {members}").into());
            }
            let exe = std::env::current_exe()?;
            let report = processes::run(members, |id| {
                let mut command = std::process::Command::new(&exe);
                command.args(["child", &id.to_string()]);
                command
            })?;
            println!("{report}");
            Ok(())
        }
    }
}
