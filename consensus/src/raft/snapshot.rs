//! Snapshots: compaction of the log, and snapshots sent and received in chunks.

use bytes::Bytes;

use super::{CompactError, Node, Role};
use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::storage::{Snapshot, SnapshotMeta};
use crate::types::{LogIndex, NodeId};

/// A snapshot being received in chunks.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl Node {
    /// Takes a snapshot at `index` (at most the applied index) with the state machine's
    /// serialized state, and purges the log up to it (the Low-Water Mark moves).
    ///
    /// # Errors
    ///
    /// [`CompactError::NotApplied`] above the applied index,
    /// [`CompactError::AlreadyCompacted`] at or below the current snapshot.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) -> Result<(), CompactError> {
        if index > self.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied,
            });
        }
        let snapshot_index = self.log.snapshot().meta.index;
        if index <= snapshot_index {
            return Err(CompactError::AlreadyCompacted(index));
        }
        let term = self
            .term_of(index)
            .ok_or(CompactError::AlreadyCompacted(index))?;
        let membership = self.membership.at(index, &self.log.snapshot().meta);
        self.log.compact(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        });
        // Counted as a write, so that it is handed out to be persisted; a compaction a
        // crash loses only means replaying the log from the earlier snapshot.
        self.durability.wrote();
        self.membership.compacted_to(index);
        Ok(())
    }

    pub(super) fn start_snapshot(&mut self, peer: NodeId) {
        let index = self.log.snapshot().meta.index;
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.state = ProgressState::Snapshot {
                index,
                offset: 0,
                acked: true,
            };
            pr.in_flight.clear();
        }
        self.send_snapshot_chunk(peer);
    }

    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let snapshot = self.log.snapshot();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        let ProgressState::Snapshot { index, offset, .. } = pr.state else {
            return;
        };
        let (index, offset) = if index == snapshot.meta.index {
            (index, offset)
        } else {
            (snapshot.meta.index, 0)
        };
        pr.state = ProgressState::Snapshot {
            index,
            offset,
            acked: true,
        };
        let len = snapshot.data.len() as u64;
        let start = offset.min(len);
        let end = (start + self.config.snapshot_chunk_bytes_max).min(len);
        let (Ok(start_at), Ok(end_at)) = (usize::try_from(start), usize::try_from(end)) else {
            return;
        };
        let data = snapshot.data.slice(start_at..end_at);
        let meta = snapshot.meta.clone();
        self.send_now(
            peer,
            MessageBody::Snapshot {
                meta,
                offset: start,
                data,
                done: end == len,
            },
        );
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let ticks = self.ticks;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let ProgressState::Snapshot { index: sending, .. } = pr.state else {
            return;
        };
        if sending != index {
            return;
        }
        if done {
            pr.accept(index, ticks);
            pr.probe(index.next());
            if self.maybe_commit() {
                self.needs_broadcast = true;
            }
            self.send_append(from, false);
        } else {
            pr.state = ProgressState::Snapshot {
                index,
                offset: next_offset,
                acked: true,
            };
            self.send_snapshot_chunk(from);
        }
    }

    /// A chunk of the leader's snapshot: once all of it is in, it replaces the log it
    /// covers and goes to the state machine in the next ready.
    pub(super) fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) {
        let index = meta.index;
        if index <= self.commit {
            self.incoming_snapshot = None;
            self.send_snapshot_response(from, index, 0, true);
            return;
        }
        let Some(snapshot) = self.receive_chunk(from, meta, offset, data, done) else {
            return;
        };
        let next_offset = snapshot.data.len() as u64;
        self.install_received(&snapshot);
        self.restore = Some(snapshot);
        self.send_snapshot_response(from, index, next_offset, true);
    }

    /// Adds a chunk to the snapshot being received from `from`. Returns the whole snapshot
    /// once its last chunk is in; otherwise answers with the offset it wants next (from
    /// the start, for a chunk of a snapshot it has not seen begin), or drops what it
    /// received if the snapshot grows past `snapshot_bytes_max`.
    fn receive_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Option<Snapshot> {
        let index = meta.index;
        if self
            .incoming_snapshot
            .as_ref()
            .is_none_or(|s| s.meta != meta)
        {
            if offset != 0 {
                self.send_snapshot_response(from, index, 0, false);
                return None;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta,
                data: Vec::new(),
            });
        }
        let incoming = self
            .incoming_snapshot
            .as_mut()
            .expect("incoming snapshot set above");
        let have = incoming.data.len() as u64;
        if have.saturating_add(data.len() as u64) > self.config.snapshot_bytes_max {
            self.incoming_snapshot = None;
            return None;
        }
        if offset != have && !self.config.broken().snapshot_chunks_at_any_offset {
            self.send_snapshot_response(from, index, have, false);
            return None;
        }
        incoming.data.extend_from_slice(data);
        let next_offset = incoming.data.len() as u64;
        if !done {
            self.send_snapshot_response(from, index, next_offset, false);
            return None;
        }
        let incoming = self
            .incoming_snapshot
            .take()
            .expect("incoming snapshot set above");
        Some(Snapshot {
            meta: incoming.meta,
            data: Bytes::from(incoming.data),
        })
    }

    /// Puts a snapshot received from the leader in place of the log it covers.
    fn install_received(&mut self, snapshot: &Snapshot) {
        let index = snapshot.meta.index;
        if self.term_of(index) == Some(snapshot.meta.term) {
            // The log holds the snapshot's last entry, so it matches the leader's up to
            // there: keep what follows (figure 13, step 6). Those entries may already have
            // been acknowledged, with the acknowledgement still on its way to the leader,
            // which will count them; throwing them away would lose committed entries.
            self.log.compact(snapshot.clone());
            self.durability.wrote();
            self.commit = index;
            self.applied = index;
            self.durability.compacted_to(index);
            self.membership.compacted_to_snapshot(&snapshot.meta);
        } else {
            self.log.install_snapshot(snapshot.clone());
            self.durability.wrote();
            self.truncations += 1;
            self.truncated_after = Some(index);
            self.commit = index;
            self.applied = index;
            self.durability.replaced_by_snapshot(index);
            self.membership.replaced_by_snapshot(&snapshot.meta);
        }
    }

    /// Answers the leader's snapshot chunk; the answer leaves once the store is durable.
    fn send_snapshot_response(
        &mut self,
        to: NodeId,
        index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        self.send(
            to,
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            },
        );
    }
}
