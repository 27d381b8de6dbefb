//! What the systems hosted on the contract ([`super::host`]) and served as RESP share, each
//! given the system's name: starting a node ([`start_resp_node`]), the reply to a call the
//! node left unanswered ([`outcome_reply`]), and the words `synod kv` turns into a command
//! ([`kv_command`]).
// tidy: driver: starts a node (binds its addresses, opens its data directory).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_node::Protocol;

use super::host::{self, CallError, Host, HostSpec, HostStore};
use super::{NodeOptions, StartError};
use crate::resp::{Commands, Outcome, Resp, Value};
use crate::systems::{Listening, NodeSettings};

/// Starts a node of the system called `system` in this process, its clients served as RESP
/// by the command table `commands` makes for the running node. Such a system keeps no log to
/// snapshot, so `--snapshot-entries` is refused.
///
/// # Errors
///
/// A [`StartError`] a person can act on.
pub fn start_resp_node<St, C>(
    system: &str,
    options: &NodeOptions,
    settings: &NodeSettings,
    spec: HostSpec<'_>,
    store: St,
    commands: impl FnOnce(Arc<Host<St>>) -> C,
) -> Result<Listening, StartError>
where
    St: HostStore,
    <St::Protocol as Protocol>::Message: Serialize + DeserializeOwned + Send,
    <St::Protocol as Protocol>::Request: Send,
    <St::Protocol as Protocol>::Response: Send,
    <St::Protocol as Protocol>::Write: Send,
    <St::Protocol as Protocol>::Apply: Send,
    C: Commands,
{
    if settings.snapshot_entries.is_some() {
        return Err(StartError::Usage(format!(
            "--snapshot-entries: the {system} store keeps no log to snapshot"
        )));
    }
    if settings.keys_max.is_some() && system != "leaderless" {
        return Err(StartError::Usage(format!(
            "--keys-max: only the leaderless store takes it, not the {system} store"
        )));
    }
    let started = host::start(options, spec, store, |host| Resp::new(commands(host)))?;
    Ok(Listening {
        peers: started.peers,
        clients: started.clients,
    })
}

/// The reply to a call's `outcome`: the node's answer as `done` shows it, or, when the node
/// gave none, `TRYAGAIN` (nothing was done) or, for a call that `writes` and was taken up,
/// `UNKNOWN` (it may or may not have taken effect).
pub fn outcome_reply<R>(outcome: Outcome<R>, writes: bool, done: impl FnOnce(R) -> Value) -> Value {
    match outcome {
        Outcome::Done(response) => done(response),
        Outcome::NotTaken => unanswered(writes, false, &CallError::NotTaken.to_string()),
        Outcome::Dropped => unanswered(writes, true, &CallError::Dropped.to_string()),
        Outcome::TimedOut => unanswered(writes, true, &CallError::TimedOut.to_string()),
    }
}

/// The reply to a call the node did not answer, for `why`: `taken` says whether it handed
/// the call to its state machine (then a write may have taken effect).
#[must_use]
pub fn unanswered(writes: bool, taken: bool, why: &str) -> Value {
    if writes && taken {
        Value::Error(format!("UNKNOWN {why}; the write may or may not be stored"))
    } else {
        Value::Error(format!("TRYAGAIN {why}"))
    }
}

/// The command `synod kv` sends for its words: `put K V` is `SET K V`, `get K` is `GET K`,
/// anything else is sent as it is.
///
/// # Errors
///
/// What to tell the user when there is no command, or `put` or `get` have the wrong
/// arguments.
pub fn kv_command(args: &[String]) -> Result<Vec<String>, String> {
    let Some((verb, rest)) = args.split_first() else {
        return Err("give a command: put K V, get K, or any RESP command".into());
    };
    match (verb.to_ascii_lowercase().as_str(), rest) {
        ("put", [key, value]) => Ok(vec!["SET".into(), key.clone(), value.clone()]),
        ("get", [key]) => Ok(vec!["GET".into(), key.clone()]),
        ("put" | "get", _) => Err(format!("wrong arguments for `{verb}`: put K V, get K")),
        _ => Ok(args.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_string()).collect()
    }

    #[test]
    fn a_write_taken_up_and_unanswered_is_unknown_and_anything_else_unanswered_is_tryagain() {
        let reply = |outcome, writes| outcome_reply(outcome, writes, |v: Value| v);
        let error = |v: Value| match v {
            Value::Error(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(error(reply(Outcome::Dropped, true)).starts_with("UNKNOWN"));
        assert!(error(reply(Outcome::TimedOut, true)).starts_with("UNKNOWN"));
        assert!(error(reply(Outcome::NotTaken, true)).starts_with("TRYAGAIN"));
        for outcome in [Outcome::Dropped, Outcome::TimedOut, Outcome::NotTaken] {
            assert!(error(reply(outcome, false)).starts_with("TRYAGAIN"));
        }
        assert_eq!(reply(Outcome::Done(Value::Nil), true), Value::Nil);
    }

    #[test]
    fn kv_words_become_a_command() {
        assert_eq!(
            kv_command(&words(&["PUT", "k", "v"])),
            Ok(words(&["SET", "k", "v"]))
        );
        assert_eq!(kv_command(&words(&["get", "k"])), Ok(words(&["GET", "k"])));
        assert_eq!(kv_command(&words(&["INFO"])), Ok(words(&["INFO"])));
        assert!(kv_command(&words(&["put", "k"])).is_err());
        assert!(kv_command(&words(&["get"])).is_err());
        assert!(kv_command(&[]).is_err());
    }
}
