//! State Watch in the Consistent Core: the node's applied changes fed to a replica's
//! `synod_membership::watch::WatchHub`.
//!
//! Every replica applies the same entries in the same order, so every replica's store
//! reaches the same revisions with the same changes (see [`super::kv`]'s revisions), and a
//! watcher that stopped after revision `r` on one node resumes from `r + 1` on any other.
//! The node hands what it applied out as [`WatchFeed`]s ([`CoreNode::take_watch_feed`]);
//! [`feed`] gives them to a hub: each revision's changes as the hub's events, and a
//! snapshot installed from the leader as a jump, which cancels (with the compacted
//! revision) the watchers that needed the revisions it skipped.
//!
//! [`CoreNode::take_watch_feed`]: super::node::CoreNode::take_watch_feed

use synod_membership::watch::{Event, FeedError, WatchHub};

use super::kv::KeyChange;
use super::node::WatchFeed;

/// A key change as the hub's event at `revision`.
#[must_use]
pub fn event(revision: u64, change: &KeyChange) -> Event {
    Event {
        revision,
        key: change.key.clone().into(),
        value: change.value.clone().map(Into::into),
        create_revision: change.revisions.create,
        version: change.revisions.version,
    }
}

/// Feeds `hub` what the node applied, in order. The first revision fed after the hub was
/// made at the store's revision is the next one; an error means the feed skipped one,
/// which the node never does.
pub fn feed(hub: &mut WatchHub, items: Vec<WatchFeed>) -> Result<(), FeedError> {
    for item in items {
        match item {
            WatchFeed::Changes { revision, changes } => {
                let events = changes.iter().map(|c| event(revision, c)).collect();
                hub.apply(revision, events)?;
            }
            WatchFeed::Jump { revision } => hub.reset(revision),
        }
    }
    Ok(())
}
