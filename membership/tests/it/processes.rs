//! Members as real processes: this test binary started once per member, each member over
//! synod-transport on loopback, one killed with `SIGKILL` (the run is the `processes`
//! example's, `examples/support/processes.rs`).

use std::process::Command;

use crate::member_processes;

/// The environment variable that makes [`member_process`] a member: its id.
const CHILD: &str = "SYNOD_MEMBERSHIP_CHILD";

#[test]
fn a_member_killed_with_sigkill_is_held_dead_by_every_survivor_and_one_coordinator_remains() {
    let members: u64 = std::env::var("SYNOD_MEMBERSHIP_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let exe = std::env::current_exe().expect("the test binary");
    // `run` fails unless every process starts and joins, every survivor holds the killed
    // member dead with its view whole again, and every survivor names one coordinator that
    // is not the killed member, each within two minutes.
    let report = member_processes::run(members, |id| {
        let mut command = Command::new(&exe);
        command
            .args(["--exact", "processes::member_process", "--ignored"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(CHILD, id.to_string());
        command
    })
    .unwrap_or_else(|e| panic!("{members} member processes: {e}"));
    println!("{report}");
}

/// One member's process, started by the test above (on its own, without the variable, it
/// has nothing to do).
#[test]
#[ignore = "a member's process, started by the process test"]
fn member_process() {
    let Ok(id) = std::env::var(CHILD) else {
        return;
    };
    let id: u64 = id.parse().expect("a member id");
    member_processes::child(id).expect("the member ran");
}
