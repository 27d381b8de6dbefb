//! The faults of a run: the nemesis's policy (what it injects, when, and the bounds it keeps
//! to), faults scheduled by hand ([`Action`]), and the healing that starts the liveness phase.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::{Event, NodeState, Phase, Simulation, TRACE_CRASH, TRACE_NEMESIS, Workload};
use crate::clock::ClockModel;
use crate::disk::CrashMode;
use crate::fault_log::{Fault, FaultSource};
use crate::nemesis::{Counter, FaultKind, MID_WRITE_OPS_MAX};
use crate::net::{Cut, PartitionShape};
use crate::node::{Node, NodeId, node_at, slot_of};
use crate::rng::Probability;

/// A fault scheduled by hand with [`Simulation::schedule`], for scenario tests ("isolate
/// node 2 at 100 ms, heal at 300 ms"). Scheduled actions run in the safety phase, alongside
/// the nemesis (disable it with [`NemesisConfig::disabled`](crate::NemesisConfig::disabled) for a pure script); healing at
/// the start of the liveness phase undoes them like any other fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Replace the network's cut links with these.
    Partition(Cut),
    /// Reconnect every link (cuts only; clogs, loss and the rest stay).
    HealPartition,
    /// Hold messages on the link from `from` to `to` for `duration`.
    Clog {
        /// The sending node.
        from: NodeId,
        /// The receiving node.
        to: NodeId,
        /// How long the clog lasts.
        duration: Duration,
    },
    /// Crash a node, treating its unsynced writes as `CrashMode` says. It stays down until
    /// an [`Action::Restart`] or the liveness phase.
    Crash(NodeId, CrashMode),
    /// Restart a crashed node.
    Restart(NodeId),
    /// Pause a node until an [`Action::Resume`] or the liveness phase.
    Pause(NodeId),
    /// Resume a paused node.
    Resume(NodeId),
    /// Step a node's wall clock by this many microseconds (negative: back).
    ClockJump(NodeId, i64),
    /// Set a node's clock drift, in parts per million.
    ClockDrift(NodeId, i32),
    /// The node's next sync fails, as a failed `fsync` can: the writes it covered are
    /// dropped from the page cache and are not durable. If it is a [`crate::Context::sync`]
    /// completing, the node gets [`Node::on_sync_failed`] instead of [`Node::on_synced`];
    /// if it is a synchronous sync through [`crate::Disk::storage`] (`sync_data`,
    /// `sync_dir`), that call returns an `io::Error`.
    FailNextSync(NodeId),
    /// The node's disk is full from now on: its files may hold no more bytes than they
    /// hold now, and a write or length change that would grow them fails with
    /// `io::ErrorKind::StorageFull` (`ENOSPC`) and changes nothing. It lasts until
    /// [`Action::FreeDisk`] or the liveness phase, across restarts.
    FillDisk(NodeId),
    /// Ends [`Action::FillDisk`].
    FreeDisk(NodeId),
}

impl<N: Node, W: Workload<N>> Simulation<N, W> {
    /// Nodes crashed or paused, or armed to crash part-way through their writes.
    pub(super) fn down_nodes(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state != NodeState::Up || s.crash_armed_down_us.is_some())
            .count()
    }

    pub(super) fn random_up_node(&mut self) -> Option<NodeId> {
        let up: Vec<NodeId> = (0..self.config.nodes)
            .filter(|&i| {
                self.slots[i].state == NodeState::Up && self.slots[i].crash_armed_down_us.is_none()
            })
            .map(node_at)
            .collect();
        self.nemesis_rng.pick(&up).copied()
    }

    /// Crashes `id` if its disk halted part-way through its writes (a crash the nemesis
    /// armed), and schedules its restart.
    pub(super) fn crash_if_halted(&mut self, id: NodeId) {
        let slot = &mut self.slots[slot_of(id)];
        if slot.state == NodeState::Crashed || !slot.disk.is_halted() {
            return;
        }
        let down = match slot.crash_armed_down_us {
            Some(down) => down,
            // The node exited by itself (`Disk::exit`): a supervisor restarts it.
            None => self
                .nemesis_rng
                .between(1, self.profile.down_time_max_us.max(1)),
        };
        self.crash(id, FaultSource::Nemesis);
        let at = self.after(down);
        self.push(at, Event::Restart { node: id });
    }

    pub(super) fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let kinds = self.profile.kinds();
        let kind = self.nemesis_rng.pick(&kinds).copied();
        self.hasher.write_u8(TRACE_NEMESIS);
        kind.hash(&mut self.hasher);
        let n = self.config.nodes;
        let down_max = self
            .config
            .nemesis
            .crashed_nodes_max()
            .unwrap_or((n - 1) / 2);
        match kind {
            Some(FaultKind::Partition) => {
                if self.net.cut.any() {
                    self.net.cut = Cut::none(n);
                    self.coverage.bump(Counter::PartitionHealed);
                    self.log(FaultSource::Nemesis, Fault::PartitionHealed);
                } else if n >= 2 {
                    let shape = *self
                        .nemesis_rng
                        .pick(&PartitionShape::ALL)
                        .expect("non-empty");
                    let cut = Cut::draw(shape, n, &mut self.nemesis_rng);
                    // A shape that cuts no link on this many nodes (a majorities ring on
                    // 2 or 3, a bridge on 2) is no partition: the draw is kept (the run's
                    // random draws do not depend on it) but nothing is counted or logged.
                    if cut.any() {
                        self.net.cut = cut.clone();
                        self.coverage.bump(Counter::for_partition(shape));
                        self.log(
                            FaultSource::Nemesis,
                            Fault::PartitionStart {
                                shape: Some(shape),
                                cut,
                            },
                        );
                    }
                }
            }
            Some(FaultKind::Clog) if n >= 2 => {
                let a = self.nemesis_rng.below(n as u64) as u32;
                let b = (a + 1 + self.nemesis_rng.below(n as u64 - 1) as u32) % n as u32;
                let clog = self.nemesis_rng.between(1, self.profile.clog_time_max_us);
                let until = self.after(clog);
                let link = self.net.link_mut(node_at(a as usize), node_at(b as usize));
                link.clogged_until = link.clogged_until.max(until);
                self.coverage.bump(Counter::Clog);
                self.log(
                    FaultSource::Nemesis,
                    Fault::Clog {
                        from: node_at(a as usize),
                        to: node_at(b as usize),
                        duration: Duration::from_micros(clog),
                    },
                );
            }
            Some(FaultKind::Loss) => {
                if self.net.extra_loss == Probability::NEVER {
                    self.net.extra_loss = self.profile.loss;
                    self.coverage.bump(Counter::LossPeriod);
                    let probability = self.profile.loss;
                    self.log(FaultSource::Nemesis, Fault::LossStart { probability });
                } else {
                    self.net.extra_loss = Probability::NEVER;
                    self.log(FaultSource::Nemesis, Fault::LossEnd);
                }
            }
            Some(FaultKind::Duplicate) => {
                if self.net.extra_duplicate == Probability::NEVER {
                    self.net.extra_duplicate = self.profile.duplicate;
                    self.coverage.bump(Counter::DuplicatePeriod);
                    let probability = self.profile.duplicate;
                    self.log(FaultSource::Nemesis, Fault::DuplicateStart { probability });
                } else {
                    self.net.extra_duplicate = Probability::NEVER;
                    self.log(FaultSource::Nemesis, Fault::DuplicateEnd);
                }
            }
            Some(FaultKind::Reorder) => {
                if self.net.reorder_extra_us.is_none() {
                    let extra_us = self.profile.reorder_delay_us.max(1);
                    self.net.reorder_extra_us = Some(extra_us);
                    self.coverage.bump(Counter::ReorderPeriod);
                    self.log(
                        FaultSource::Nemesis,
                        Fault::ReorderStart {
                            extra_delay_max: Duration::from_micros(extra_us),
                        },
                    );
                } else {
                    self.net.reorder_extra_us = None;
                    self.log(FaultSource::Nemesis, Fault::ReorderEnd);
                }
            }
            Some(FaultKind::Crash)
                if self.down_nodes() < down_max
                    && self.profile.mid_write_crash_percent > 0
                    && self.nemesis_rng.below(100)
                        < u64::from(self.profile.mid_write_crash_percent) =>
            {
                // Part-way through the node's writes: its disk halts after a few more
                // storage operations, and the node crashes at the end of that event.
                if let Some(id) = self.random_up_node() {
                    let ops = self.nemesis_rng.below(MID_WRITE_OPS_MAX + 1);
                    let down = self.nemesis_rng.between(1, self.profile.down_time_max_us);
                    let slot = &mut self.slots[slot_of(id)];
                    slot.disk.halt_after(Some(ops));
                    slot.crash_armed_down_us = Some(down);
                    self.log(FaultSource::Nemesis, Fault::CrashArmed { node: id, ops });
                    // A halt after no operation has already happened.
                    self.crash_if_halted(id);
                }
            }
            Some(FaultKind::Crash) if self.down_nodes() < down_max => {
                // Half the time, aim at a node with unsynced writes: crashes matter most
                // then, and a random instant often misses the short window.
                let exposed: Vec<NodeId> = (0..n)
                    .filter(|&i| {
                        self.slots[i].state == NodeState::Up
                            && self.slots[i].crash_armed_down_us.is_none()
                            && self.slots[i].disk.unsynced_ops() > 0
                    })
                    .map(node_at)
                    .collect();
                let target = if !exposed.is_empty() && self.nemesis_rng.below(2) == 0 {
                    self.nemesis_rng.pick(&exposed).copied()
                } else {
                    self.random_up_node()
                };
                if let Some(id) = target {
                    self.crash(id, FaultSource::Nemesis);
                    let down = self.nemesis_rng.between(1, self.profile.down_time_max_us);
                    let at = self.after(down);
                    self.push(at, Event::Restart { node: id });
                }
            }
            Some(FaultKind::Pause) if self.down_nodes() < down_max => {
                if let Some(id) = self.random_up_node() {
                    self.slots[slot_of(id)].state = NodeState::Paused;
                    self.coverage.bump(Counter::Pause);
                    self.log(FaultSource::Nemesis, Fault::Pause { node: id });
                    let pause = self.nemesis_rng.between(1, self.profile.pause_time_max_us);
                    let at = self.after(pause);
                    self.push(at, Event::Resume { node: id });
                }
            }
            Some(FaultKind::ClockJump) => {
                let id = self.nemesis_rng.below(n as u64) as usize;
                let max = self.profile.clock_jump_max_us;
                let delta = self.nemesis_rng.between(0, 2 * max) as i64 - max as i64;
                self.slots[id].clock.jump(self.now, delta);
                self.coverage.bump(Counter::ClockJump);
                self.log(
                    FaultSource::Nemesis,
                    Fault::ClockJump {
                        node: node_at(id),
                        delta_us: delta,
                    },
                );
            }
            Some(FaultKind::ClockDrift) => {
                let id = self.nemesis_rng.below(n as u64) as usize;
                let max = u64::from(self.profile.drift_ppm_max);
                let drift = self.nemesis_rng.between(0, 2 * max) as i64 - max as i64;
                let ppm = i32::try_from(drift).unwrap_or(0);
                self.slots[id].clock.set_drift(self.now, ppm);
                self.coverage.bump(Counter::ClockDrift);
                self.log(
                    FaultSource::Nemesis,
                    Fault::ClockDrift {
                        node: node_at(id),
                        ppm,
                    },
                );
            }
            _ => {}
        }
        let next = self
            .nemesis_rng
            .between(1, 2 * self.profile.interval_mean_us);
        let at = self.after(next);
        self.push(at, Event::Nemesis);
    }

    pub(super) fn crash(&mut self, id: NodeId, source: FaultSource) {
        let mode = self
            .disk_rng
            .pick(&self.profile.crash_modes)
            .copied()
            .unwrap_or(CrashMode::DropUnsynced);
        self.crash_with(id, mode, source);
    }

    /// Appends to the fault log at the current time.
    pub(super) fn log(&mut self, source: FaultSource, fault: Fault) {
        self.faults.push(self.now, source, fault);
    }

    pub(super) fn restart(&mut self, id: NodeId, source: FaultSource) {
        self.coverage.bump(Counter::Restart);
        self.log(source, Fault::Restart { node: id });
        self.start_node(id);
    }

    pub(super) fn crash_with(&mut self, id: NodeId, mode: CrashMode, source: FaultSource) {
        let slot = &mut self.slots[slot_of(id)];
        // The crash lifts a halt armed on the disk.
        slot.crash_armed_down_us = None;
        slot.node = None;
        slot.state = NodeState::Crashed;
        slot.incarnation += 1;
        slot.parked.clear();
        let outcome = slot.disk.crash_outcome(mode);
        self.hasher.write_u8(TRACE_CRASH);
        id.hash(&mut self.hasher);
        mode.hash(&mut self.hasher);
        self.hasher.write_u8(
            u8::from(outcome.unsynced)
                | u8::from(outcome.torn) << 1
                | u8::from(outcome.bit_flipped) << 2,
        );
        self.coverage.bump(Counter::Crash);
        if outcome.unsynced {
            self.coverage.bump(Counter::DiskUnsyncedAtCrash);
        }
        if outcome.torn {
            self.coverage.bump(Counter::DiskTornWrite);
        }
        if outcome.bit_flipped {
            self.coverage.bump(Counter::DiskBitFlip);
        }
        self.log(
            source,
            Fault::Crash {
                node: id,
                mode,
                disk: outcome.report,
            },
        );
    }

    pub(super) fn resume(&mut self, id: NodeId, source: FaultSource) {
        let slot = &mut self.slots[slot_of(id)];
        if slot.state != NodeState::Paused {
            return;
        }
        slot.state = NodeState::Up;
        self.coverage.bump(Counter::Resume);
        let parked = std::mem::take(&mut self.slots[slot_of(id)].parked);
        self.faults
            .push(self.now, source, Fault::Resume { node: id });
        for event in parked {
            self.push(self.now, event);
        }
    }

    pub(super) fn scripted(&mut self, action: Action) {
        if self.phase != Phase::Safety {
            return;
        }
        const S: FaultSource = FaultSource::Scripted;
        let n = self.config.nodes;
        let valid = |id: NodeId| slot_of(id) < n;
        match action {
            Action::Partition(cut) => {
                if cut.nodes() == n {
                    self.net.cut = cut.clone();
                    self.log(S, Fault::PartitionStart { shape: None, cut });
                }
            }
            Action::HealPartition => {
                self.net.cut = Cut::none(n);
                self.log(S, Fault::PartitionHealed);
            }
            Action::Clog { from, to, duration } => {
                if valid(from) && valid(to) {
                    let until = self.now.saturating_add(duration);
                    let link = self.net.link_mut(from, to);
                    link.clogged_until = link.clogged_until.max(until);
                    self.coverage.bump(Counter::Clog);
                    self.log(S, Fault::Clog { from, to, duration });
                }
            }
            Action::Crash(id, mode) => {
                if valid(id) && self.slots[slot_of(id)].state != NodeState::Crashed {
                    self.crash_with(id, mode, S);
                }
            }
            Action::Restart(id) => {
                if valid(id) && self.slots[slot_of(id)].state == NodeState::Crashed {
                    self.restart(id, S);
                }
            }
            Action::Pause(id) => {
                if valid(id) && self.slots[slot_of(id)].state == NodeState::Up {
                    self.slots[slot_of(id)].state = NodeState::Paused;
                    self.coverage.bump(Counter::Pause);
                    self.log(S, Fault::Pause { node: id });
                }
            }
            Action::Resume(id) => {
                if valid(id) {
                    self.resume(id, S);
                }
            }
            Action::ClockJump(id, delta_us) => {
                if valid(id) {
                    self.slots[slot_of(id)].clock.jump(self.now, delta_us);
                    self.coverage.bump(Counter::ClockJump);
                    self.log(S, Fault::ClockJump { node: id, delta_us });
                }
            }
            Action::ClockDrift(id, ppm) => {
                if valid(id) {
                    self.slots[slot_of(id)].clock.set_drift(self.now, ppm);
                    self.coverage.bump(Counter::ClockDrift);
                    self.log(S, Fault::ClockDrift { node: id, ppm });
                }
            }
            Action::FailNextSync(id) => {
                if valid(id) {
                    self.slots[slot_of(id)].disk.fail_next_sync();
                    self.log(S, Fault::FailNextSync { node: id });
                }
            }
            Action::FillDisk(id) => {
                if valid(id) {
                    self.slots[slot_of(id)].disk.fill();
                    self.log(S, Fault::DiskFull { node: id });
                }
            }
            Action::FreeDisk(id) => {
                if valid(id) {
                    self.slots[slot_of(id)].disk.free();
                    self.log(S, Fault::DiskFreed { node: id });
                }
            }
        }
    }

    /// Ends every fault and starts the liveness phase.
    pub(super) fn heal(&mut self) {
        self.phase = Phase::Liveness;
        self.healed_at = Some(self.now);
        self.net.heal(self.now);
        self.log(FaultSource::Heal, Fault::AllHealed);
        for i in 0..self.config.nodes {
            let id = node_at(i);
            self.slots[i].crash_armed_down_us = None;
            self.slots[i].disk.halt_after(None);
            self.slots[i].disk.clear_failing_syncs();
            self.slots[i].disk.free();
            match self.slots[i].state {
                NodeState::Crashed => self.restart(id, FaultSource::Heal),
                NodeState::Paused => self.resume(id, FaultSource::Heal),
                NodeState::Up => {}
            }
        }
    }
}
