//! Flow offload: established connections a worker has allowed are installed in a
//! fast path outside it (the AF_XDP port's XDP program), which forwards and counts
//! their packets without the worker seeing them. This module holds the seam
//! ([`FlowOffload`]) and the worker's bookkeeping ([`Offloader`]): which connection
//! of which slot is installed, and how much of what the offload counted is already
//! in the flow entry.
//!
//! # Keeping flow records exact
//! The offload counts packets, bytes and the latest time per direction, cumulative
//! since the connection was installed. The worker merges the difference from what it
//! merged before into the flow entry ([`merge_delta`], [`FlowEntry::add_offloaded`])
//! before anything reads the entry: at every export interval, before an expiry
//! decision (idle time is measured from the later of the two last-seen times), before
//! an offloaded entry that looks least recently used is evicted, and whenever a
//! packet of the connection reaches the worker (a handshake/teardown segment, or any
//! packet once its entry went stale after a policy change); an idle worker also
//! merges a few connections per wake-up, round robin, so live counters follow. A
//! connection that ends leaves the offload *before* its final record is written, and
//! the counters its removal returns are merged too (the table's [`EntryHook::end`],
//! the worker's `before_end`): packets forwarded between the last merge and the
//! removal are in the final record and in every worker counter (rx, forwarded,
//! outcomes, replies) alike. So records count every packet, in the interval they were
//! merged in.
//!
//! # Several workers, one offload
//! Workers share the offload, and with asymmetric receive-side scaling (a
//! connection's two directions received on queues of different workers) two flow
//! tables hold the same connection. The first worker to install it owns it: an
//! install never replaces another worker's entries ([`Install::HeldElsewhere`]:
//! nothing installed, counted in [`OffloadStats::held_elsewhere`], asked again at
//! most every [`INSTALL_RETRY_NS`]), and a worker reads, merges and removes only what
//! it installed, so every packet the offload forwards is merged once, by the owner.
//! Each worker's entries go stale when *that* worker picks a new policy generation
//! up ([`FlowOffload::publish_generation`]; the XDP program keeps a generation per
//! worker), so workers never overwrite each other's generation.
//!
//! Syscalls (one map operation per direction) happen at install, merge and removal,
//! never per forwarded packet; nothing here allocates after construction. An install
//! the offload refuses (its map full) is not asked for again for the same connection
//! before [`INSTALL_RETRY_NS`] (100 ms): its packets keep going through the worker,
//! without a failing syscall in every batch.

use crate::flow::{ConnState, EntryHook, FlowEntry, FlowTable, KeyClass, Slot};
use crate::program::{FlowKey, Verdict, proto};

use super::stats::{WorkerStats, vidx};

/// What an offload counted for one direction of a connection since it was installed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadCounters {
    /// Packets forwarded.
    pub packets: u64,
    /// Their bytes (wire length).
    pub bytes: u64,
    /// The latest one's time, on the port's clock (0: none yet).
    pub last_ns: u64,
}

/// What [`FlowOffload::install`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// Both directions are installed.
    Done,
    /// Not installed: the offload is full, or cannot take the key.
    Refused,
    /// Not installed: a direction is installed already by another worker (its
    /// flow table holds the same connection: the two directions are received on
    /// queues of different workers). That worker owns it and merges its counters.
    HeldElsewhere,
}

/// A fast path for established connections (see the module docs). Directions are
/// `[initiator's, responder's]`, both derived from the initiator's key. Several
/// workers may share one offload: each installs, reads and removes only the
/// connections it installed itself.
pub trait FlowOffload: Send + std::fmt::Debug {
    /// Installs both directions of the connection whose initiator's key is `key`,
    /// for policy generation `generation`, with zero counters. With `replace` (this
    /// worker installed them before, for an older generation) its entries are
    /// replaced; otherwise an entry there already (another worker's) is left alone
    /// and the install is [`Install::HeldElsewhere`]. Never leaves one direction
    /// installed alone.
    fn install(&mut self, key: &FlowKey, generation: u32, replace: bool) -> Install;
    /// The counters of both directions (`None`: not installed).
    fn read(&mut self, key: &FlowKey) -> [Option<OffloadCounters>; 2];
    /// Removes both directions; returns their last counters.
    fn remove(&mut self, key: &FlowKey) -> [Option<OffloadCounters>; 2];
    /// The worker runs policy generation `generation` now: the entries it installed
    /// for another one are stale (their packets come to the worker again); other
    /// workers' entries are not affected.
    fn publish_generation(&mut self, generation: u32);
}

/// Offload counters of one direction as merged into the entry so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// What the offload counted that is not in the entry yet, given what was merged
/// (`seen`) and what it reports now (`now`), and the new `seen`. Counters only grow
/// while a connection stays installed; smaller ones mean it was installed again
/// (from zero), and then all of them are new.
pub(crate) fn merge_delta(seen: Seen, now: &OffloadCounters) -> (Seen, Seen) {
    let fresh = now.packets < seen.packets || now.bytes < seen.bytes;
    let delta = if fresh {
        Seen {
            packets: now.packets,
            bytes: now.bytes,
        }
    } else {
        Seen {
            packets: now.packets - seen.packets,
            bytes: now.bytes - seen.bytes,
        }
    };
    (
        delta,
        Seen {
            packets: now.packets,
            bytes: now.bytes,
        },
    )
}

/// Whether a connection may be offloaded: allowed, and established (TCP after the
/// handshake, UDP once its first packet was decided), with ports.
pub(crate) fn offloadable(e: &FlowEntry) -> bool {
    if e.applied() != Verdict::Allow || e.awaiting_verdict() {
        return false;
    }
    let k = e.key();
    if k.class() != KeyClass::Ports {
        return false;
    }
    match k.proto() {
        proto::TCP => e.state() == ConnState::Established,
        proto::UDP => e.state() == ConnState::Open,
        _ => false,
    }
}

/// After the offload refused a connection's install (its map full), the connection is
/// not offered again before this much time has passed: a refused install costs a
/// syscall, and every batch with one of the connection's packets would retry it.
pub(crate) const INSTALL_RETRY_NS: u64 = 100_000_000;

/// The installation of one slot's connection.
#[derive(Clone, Copy, Debug, Default)]
struct OffSlot {
    key: Option<FlowKey>,
    generation: u32,
    seen: [Seen; 2],
    /// Time of the install or of the latest merge: no offloaded packet not yet merged
    /// is older.
    since_ns: u64,
    /// After a refused install: no new attempt before this time (0: none refused).
    retry_at_ns: u64,
}

/// Counters of the offload, per worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Packets the offload forwarded (merged so far; also in rx, forwarded and the
    /// outcome counters).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Connections installed (re-installs after a policy change included).
    pub installs: u64,
    /// Installs the offload refused (e.g. its map was full).
    pub install_failures: u64,
    /// Installs not made because another worker holds the connection (its two
    /// directions are received by different workers; that worker counts it).
    pub held_elsewhere: u64,
    /// Connections removed (closed, expired, evicted, no longer allowed).
    pub removals: u64,
}

/// A worker's side of the offload: the offload itself and, per flow-table slot,
/// what is installed there.
#[derive(Debug)]
pub(crate) struct Offloader {
    imp: Box<dyn FlowOffload>,
    slots: Vec<OffSlot>,
    pub(crate) stats: OffloadStats,
    /// Counters to add to the worker's (rx, forwarded, outcomes, replies): written
    /// here, taken by the worker (`take_counts`).
    pending_counts: WorkerStats,
    /// Next slot [`Offloader::sync_some`] looks at.
    cursor: usize,
}

impl Offloader {
    pub(crate) fn new(imp: Box<dyn FlowOffload>, capacity: usize) -> Self {
        Offloader {
            imp,
            slots: vec![OffSlot::default(); capacity],
            stats: OffloadStats::default(),
            pending_counts: WorkerStats::default(),
            cursor: 0,
        }
    }

    /// Merges the counters of up to `syncs` installed connections, looking at up to
    /// `scan` slots from where the previous call stopped (round robin). An idle
    /// worker calls it, so live counters and last-seen times follow what the offload
    /// forwards between export intervals.
    pub(crate) fn sync_some(
        &mut self,
        table: &mut FlowTable,
        now_ns: u64,
        syncs: usize,
        scan: usize,
    ) {
        let n = self.slots.len();
        let mut done = 0;
        for _ in 0..scan.min(n) {
            let s = self.cursor;
            self.cursor = (s + 1) % n;
            let installed = self.slots.get(s).is_some_and(|o| o.key.is_some());
            if !installed {
                continue;
            }
            if let Some(e) = table.entry_mut(s as Slot)
                && e.is_offloaded()
            {
                self.sync_slot(s as Slot, e, now_ns);
                // Its LRU stamp follows its packets, so an eviction choice need not
                // sync it (`FlowTable::claim_hooked`).
                let last = e.last_ns();
                table.touch(s as Slot, last);
                done += 1;
                if done >= syncs {
                    break;
                }
            }
        }
    }

    pub(crate) fn publish_generation(&mut self, generation: u32) {
        self.imp.publish_generation(generation);
    }

    /// Counters merged since the last call, as the worker counts its own packets.
    pub(crate) fn take_counts(&mut self) -> WorkerStats {
        std::mem::take(&mut self.pending_counts)
    }

    fn merge(&mut self, slot: Slot, e: &mut FlowEntry, now: [Option<OffloadCounters>; 2]) {
        let Some(o) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let init = e.initiator_dir();
        let pending = vidx(e.pending());
        for (d, c) in now.iter().enumerate() {
            let (Some(c), Some(seen)) = (c, o.seen.get_mut(d)) else {
                continue;
            };
            let (delta, next) = merge_delta(*seen, c);
            *seen = next;
            if delta.packets == 0 {
                continue;
            }
            let dir = if d == 0 { init } else { init.flip() };
            e.add_offloaded(dir, delta.packets, delta.bytes, c.last_ns, o.since_ns);
            let w = &mut self.pending_counts;
            for cnt in [&mut w.rx, &mut w.forwarded, &mut w.outcome[0][pending]] {
                cnt.packets += delta.packets;
                cnt.bytes += delta.bytes;
            }
            if d == 1 {
                w.replies.packets += delta.packets;
                w.replies.bytes += delta.bytes;
            }
            self.stats.packets += delta.packets;
            self.stats.bytes += delta.bytes;
        }
    }

    /// Merges what the offload counted for `slot`'s connection into `e` (no-op when
    /// nothing is installed there).
    pub(crate) fn sync_slot(&mut self, slot: Slot, e: &mut FlowEntry, now_ns: u64) {
        let Some(key) = self.slots.get(slot as usize).and_then(|o| o.key) else {
            return;
        };
        let c = self.imp.read(&key);
        self.merge(slot, e, c);
        if let Some(o) = self.slots.get_mut(slot as usize) {
            o.since_ns = o.since_ns.max(now_ns);
        }
    }

    /// Removes `slot`'s connection from the offload, merges its last counters into
    /// `e` (packets forwarded since the last merge included: they count in the
    /// entry's record and in every worker counter, as merged packets always do) and
    /// clears the entry's mark.
    fn remove_slot(&mut self, slot: Slot, e: &mut FlowEntry) {
        let Some(key) = self.slots.get(slot as usize).and_then(|o| o.key) else {
            return;
        };
        let c = self.imp.remove(&key);
        self.stats.removals += 1;
        self.merge(slot, e, c);
        e.set_offloaded(false);
        if let Some(o) = self.slots.get_mut(slot as usize) {
            *o = OffSlot::default();
        }
    }

    /// A packet of `slot`'s connection reached the worker, or the worker is about to
    /// end or restart the entry: merges the offload's counters first.
    pub(crate) fn before_use(&mut self, slot: Slot, e: &mut FlowEntry, now_ns: u64) {
        if e.is_offloaded() {
            self.sync_slot(slot, e, now_ns);
        }
    }

    /// The worker ends or restarts `slot`'s entry (its final record is written
    /// next): the connection leaves the offload, its last counters merged into `e`.
    pub(crate) fn before_end(&mut self, slot: Slot, e: &mut FlowEntry) {
        if e.is_offloaded() {
            EntryHook::end(self, slot, e);
        }
    }

    /// After a batch: installs `slot`'s connection when it may be offloaded and is
    /// not installed for `generation`; removes it when it may no longer be.
    pub(crate) fn settle(&mut self, slot: Slot, e: &mut FlowEntry, generation: u32, now_ns: u64) {
        let ok = offloadable(e);
        let installed = e.is_offloaded();
        if !ok {
            if installed {
                self.remove_slot(slot, e);
            }
            return;
        }
        let current = self
            .slots
            .get(slot as usize)
            .is_some_and(|o| o.key.is_some() && o.generation == generation);
        if installed && current {
            return;
        }
        if !installed
            && self
                .slots
                .get(slot as usize)
                .is_some_and(|o| now_ns < o.retry_at_ns)
        {
            return;
        }
        if installed {
            // Stale after a policy change: merge what the old entry counted, then
            // install it again from zero.
            self.sync_slot(slot, e, now_ns);
        }
        let key = e.initiator_key();
        // Replacing only this worker's own entries (a re-install after a policy
        // change); a new install leaves another worker's alone.
        let ours = self
            .slots
            .get(slot as usize)
            .is_some_and(|o| o.key == Some(key));
        let result = self.imp.install(&key, generation, installed && ours);
        if result == Install::Done {
            self.stats.installs += 1;
            if let Some(o) = self.slots.get_mut(slot as usize) {
                *o = OffSlot {
                    key: Some(key),
                    generation,
                    seen: [Seen::default(); 2],
                    since_ns: now_ns,
                    retry_at_ns: 0,
                };
            }
            e.set_offloaded(true);
        } else {
            match result {
                Install::HeldElsewhere => self.stats.held_elsewhere += 1,
                _ => self.stats.install_failures += 1,
            }
            if installed {
                self.remove_slot(slot, e);
            }
            e.set_offloaded(false);
            if let Some(o) = self.slots.get_mut(slot as usize) {
                o.retry_at_ns = now_ns.saturating_add(INSTALL_RETRY_NS);
            }
        }
    }
}

impl EntryHook for Offloader {
    fn sync(&mut self, slot: Slot, e: &mut FlowEntry, now: u64) {
        self.sync_slot(slot, e, now);
    }

    fn end(&mut self, slot: Slot, e: &mut FlowEntry) {
        self.remove_slot(slot, e);
        // The slot's next connection is a new one: it may be installed at once.
        if let Some(o) = self.slots.get_mut(slot as usize) {
            o.retry_at_ns = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;

    use super::*;
    use crate::flow::{ConnKey, Dir, FlowRecord, FlowTable, FlowTableConfig};
    use crate::packet::{ConnClass, ConnTuple};
    use crate::program::{Decision, EndpointId, Family, FlowVerdicts, TraceId, Verdicts};

    /// An offload in memory: per direction (0 = initiator's) the cumulative
    /// counters, as the XDP program keeps them.
    #[derive(Debug, Default)]
    struct Fake {
        dirs: HashMap<usize, OffloadCounters>,
        generation: u32,
        /// Refuse installs, as a full map does.
        full: bool,
        /// Installs asked for.
        attempts: u32,
        /// A packet (direction, length, time) forwarded between the worker's last
        /// read and the next removal: counted at that removal.
        late: Option<(usize, u64, u64)>,
    }

    #[derive(Clone, Debug, Default)]
    struct FakeOffload(Arc<Mutex<Fake>>);

    impl FlowOffload for FakeOffload {
        fn install(&mut self, _: &FlowKey, _: u32, _: bool) -> Install {
            let mut f = self.0.lock().unwrap();
            f.attempts += 1;
            if f.full {
                return Install::Refused;
            }
            f.dirs.insert(0, OffloadCounters::default());
            f.dirs.insert(1, OffloadCounters::default());
            Install::Done
        }
        fn read(&mut self, _: &FlowKey) -> [Option<OffloadCounters>; 2] {
            let f = self.0.lock().unwrap();
            [f.dirs.get(&0).copied(), f.dirs.get(&1).copied()]
        }
        fn remove(&mut self, _: &FlowKey) -> [Option<OffloadCounters>; 2] {
            let mut f = self.0.lock().unwrap();
            if let Some((d, len, now)) = f.late.take()
                && let Some(c) = f.dirs.get_mut(&d)
            {
                c.packets += 1;
                c.bytes += len;
                c.last_ns = now;
            }
            [f.dirs.remove(&0), f.dirs.remove(&1)]
        }
        fn publish_generation(&mut self, generation: u32) {
            self.0.lock().unwrap().generation = generation;
        }
    }

    impl FakeOffload {
        /// The XDP program forwards one packet of direction `d`, if installed.
        fn forward(&self, d: usize, len: u64, now: u64) -> bool {
            let mut f = self.0.lock().unwrap();
            match f.dirs.get_mut(&d) {
                Some(c) => {
                    c.packets += 1;
                    c.bytes += len;
                    c.last_ns = now;
                    true
                }
                None => false,
            }
        }

        /// The XDP program forwards one packet of direction `d` (if installed) in
        /// the instant before the worker removes the connection: the next removal
        /// finds it, no read before does.
        fn forward_late(&self, d: usize, len: u64, now: u64) -> bool {
            let mut f = self.0.lock().unwrap();
            let installed = f.dirs.contains_key(&d);
            if installed {
                f.late = Some((d, len, now));
            }
            installed
        }
    }

    fn allow() -> FlowVerdicts {
        let d = |v| Decision {
            verdict: v,
            trace: TraceId(1),
        };
        FlowVerdicts {
            egress: None,
            ingress: Some((
                EndpointId(7),
                Verdicts {
                    enforced: d(Verdict::Allow),
                    pending: d(Verdict::Deny),
                },
            )),
        }
    }

    /// The UDP connection the tests offload: 10.0.0.1:40000 -> 10.0.0.2:5353.
    fn udp_conn() -> ConnTuple {
        ConnTuple {
            src: 0x0a00_0001,
            dst: 0x0a00_0002,
            sport: 40000,
            dport: 5353,
            proto: proto::UDP,
            family: Family::V4,
            class: ConnClass::Ports,
        }
    }

    /// A table holding one allowed UDP connection, started at `now`.
    fn table_with_flow(now: u64) -> (FlowTable, Slot, Dir) {
        table_with(&udp_conn(), 3, now)
    }

    /// A table holding the allowed UDP connection of `t` (its initiator's first
    /// packet arrived on `ifindex` at `now`).
    fn table_with(t: &ConnTuple, ifindex: u16, now: u64) -> (FlowTable, Slot, Dir) {
        let (ck, dir) = ConnKey::canonical(t);
        let key = FlowKey {
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
            family: t.family,
            ifindex,
        };
        let mut table = FlowTable::new(FlowTableConfig {
            capacity: 64,
            ..FlowTableConfig::default()
        });
        let h = table.hash(&ck);
        let slot = table.claim(h, now, &mut |_| {}).unwrap();
        let e = table.entry_mut(slot).unwrap();
        e.start(&ck, dir, &key, 0, now);
        e.set_verdicts(&allow(), 1, true);
        e.on_packet(dir, 0, 60, now);
        (table, slot, dir)
    }

    /// A refused install is not asked for again before [`INSTALL_RETRY_NS`] (each ask
    /// is a syscall, and every batch with a packet of the connection would ask); a new
    /// connection in the slot is asked for at once.
    #[test]
    fn a_refused_install_waits_for_the_backoff_and_a_new_connection_does_not() {
        let t0 = 1_000_000_000;
        let (mut table, slot, _) = table_with_flow(t0);
        let fake = FakeOffload::default();
        fake.0.lock().unwrap().full = true;
        let mut off = Offloader::new(Box::new(fake.clone()), table.capacity());
        let attempts = || fake.0.lock().unwrap().attempts;
        let e = table.entry_mut(slot).unwrap();
        off.settle(slot, e, 1, t0);
        assert_eq!((attempts(), e.is_offloaded()), (1, false));
        for dt in [1, INSTALL_RETRY_NS / 2, INSTALL_RETRY_NS - 1] {
            off.settle(slot, e, 1, t0 + dt);
        }
        assert_eq!(attempts(), 1, "asked again within the backoff");
        off.settle(slot, e, 1, t0 + INSTALL_RETRY_NS);
        assert_eq!((attempts(), e.is_offloaded()), (2, false));
        // The map has room again: installed at the next retry.
        fake.0.lock().unwrap().full = false;
        off.settle(slot, e, 1, t0 + INSTALL_RETRY_NS + 1);
        assert_eq!(attempts(), 2);
        off.settle(slot, e, 1, t0 + 2 * INSTALL_RETRY_NS);
        assert_eq!((attempts(), e.is_offloaded()), (3, true));
        assert_eq!((off.stats.installs, off.stats.install_failures), (1, 2));
        // Refused, then the connection ends: the slot's next one is asked for at once.
        off.end(slot, e);
        fake.0.lock().unwrap().full = true;
        let t1 = t0 + 3 * INSTALL_RETRY_NS;
        off.settle(slot, e, 1, t1);
        assert_eq!(attempts(), 4);
        off.end(slot, e);
        off.settle(slot, e, 1, t1 + 1);
        assert_eq!(attempts(), 5);
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A packet from the initiator (or the responder), `len` bytes, `dt` ns after
        /// the previous event; forwarded by the offload when it holds the flow.
        Packet { from_init: bool, len: u16, dt: u32 },
        /// A packet that reaches the worker anyway (e.g. after a policy change).
        ToWorker { from_init: bool, len: u16, dt: u32 },
        /// An export interval ends.
        Export { dt: u32 },
        /// The connection leaves the offload (and, at the next packet, comes back);
        /// `late`: a packet the offload forwards just before (see `forward_late`).
        Remove { dt: u32, late: Option<(bool, u16)> },
        /// The worker is idle and merges a few connections.
        Idle { dt: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<bool>(), 42u16..1500, 0u32..2_000_000)
                .prop_map(|(from_init, len, dt)| Op::Packet { from_init, len, dt }),
            2 => (any::<bool>(), 42u16..1500, 0u32..2_000_000)
                .prop_map(|(from_init, len, dt)| Op::ToWorker { from_init, len, dt }),
            2 => (0u32..5_000_000).prop_map(|dt| Op::Export { dt }),
            1 => (0u32..2_000_000, proptest::option::of((any::<bool>(), 42u16..1500)))
                .prop_map(|(dt, late)| Op::Remove { dt, late }),
            2 => (0u32..2_000_000).prop_map(|dt| Op::Idle { dt }),
        ]
    }

    proptest! {
        /// The offload's bookkeeping against its slow twin: the same connection with
        /// every packet counted by the worker itself. Every interval record and the
        /// final one count the same packets and bytes, end at the same last packet,
        /// and start no later (the offload keeps no first time: the interval's
        /// start is bounded by the previous merge) and, when the interval has
        /// packets, no earlier than the interval.
        ///
        /// A packet the offload forwards between the worker's last read and the
        /// connection's removal (`late`, at a removal by the worker and at the final
        /// drain) is in the entry's record too, and every packet the offload
        /// forwarded is in the worker's rx, forwarded and outcome counters alike.
        #[test]
        fn offloaded_counters_merge_into_the_same_records_as_counting_every_packet(
            ops in proptest::collection::vec(op(), 1..80),
            final_late in proptest::option::of((any::<bool>(), 42u16..1500)),
        ) {
            let t0 = 1_000_000_000u64;
            let (mut fast, slot, init) = table_with_flow(t0);
            let (mut twin, tslot, _) = table_with_flow(t0);
            let fake = FakeOffload::default();
            let mut off = Offloader::new(Box::new(fake.clone()), fast.capacity());
            off.publish_generation(1);
            if let Some(e) = fast.entry_mut(slot) {
                off.settle(slot, e, 1, t0);
            }
            let (mut got, mut want) = (Vec::<FlowRecord>::new(), Vec::<FlowRecord>::new());
            let mut now = t0;
            let mut last_export = t0;
            let mut bounds = Vec::new();
            let mut offloaded_packets = 0u64;
            let mut counts = WorkerStats::default();
            for o in ops {
                match o {
                    Op::Packet { from_init, len, dt } | Op::ToWorker { from_init, len, dt } => {
                        now += u64::from(dt);
                        let dir = if from_init { init } else { init.flip() };
                        let d = usize::from(!from_init);
                        twin.entry_mut(tslot).unwrap().on_packet(dir, 0, u32::from(len), now);
                        let offloaded = matches!(o, Op::Packet { .. })
                            && fake.forward(d, u64::from(len), now);
                        offloaded_packets += u64::from(offloaded);
                        if !offloaded {
                            // The worker's lookup: merge first, then count.
                            let e = fast.entry_mut(slot).unwrap();
                            off.before_use(slot, e, now);
                            e.on_packet(dir, 0, u32::from(len), now);
                            off.settle(slot, e, 1, now);
                        }
                    }
                    Op::Export { dt } => {
                        now += u64::from(dt);
                        fast.export_hooked(now, &mut off, &mut |r| got.push(r));
                        twin.export_interval(now, &mut |r| want.push(r));
                        bounds.push(last_export);
                        last_export = now;
                    }
                    Op::Remove { dt, late } => {
                        now += u64::from(dt);
                        if let Some((from_init, len)) = late {
                            let d = usize::from(!from_init);
                            if fake.forward_late(d, u64::from(len), now) {
                                let dir = if from_init { init } else { init.flip() };
                                twin.entry_mut(tslot).unwrap().on_packet(dir, 0, u32::from(len), now);
                                offloaded_packets += 1;
                            }
                        }
                        let e = fast.entry_mut(slot).unwrap();
                        off.before_use(slot, e, now);
                        off.before_end(slot, e);
                        prop_assert!(!e.is_offloaded());
                    }
                    Op::Idle { dt } => {
                        now += u64::from(dt);
                        off.sync_some(&mut fast, now, 4, 64);
                    }
                }
                counts.merge(&off.take_counts());
            }
            if let Some((from_init, len)) = final_late {
                let d = usize::from(!from_init);
                if fake.forward_late(d, u64::from(len), now) {
                    let dir = if from_init { init } else { init.flip() };
                    twin.entry_mut(tslot).unwrap().on_packet(dir, 0, u32::from(len), now);
                    offloaded_packets += 1;
                }
            }
            fast.drain_hooked(now, &mut off, &mut |r| got.push(r));
            counts.merge(&off.take_counts());
            twin.drain(now, &mut |r| want.push(r));
            bounds.push(last_export);
            prop_assert_eq!(got.len(), want.len());
            for ((g, w), lo) in got.iter().zip(&want).zip(&bounds) {
                prop_assert_eq!(
                    (g.packets_fwd, g.bytes_fwd, g.packets_rev, g.bytes_rev),
                    (w.packets_fwd, w.bytes_fwd, w.packets_rev, w.bytes_rev)
                );
                prop_assert_eq!((g.last_ns, g.first_ns, g.state, g.end), (w.last_ns, w.first_ns, w.state, w.end));
                prop_assert!(g.interval_first_ns <= w.interval_first_ns);
                if w.packets_fwd + w.packets_rev > 0 {
                    prop_assert!(g.interval_first_ns >= (*lo).min(w.interval_first_ns));
                }
            }
            // Nothing left installed once the flow ended.
            prop_assert!(fake.0.lock().unwrap().dirs.is_empty());
            // Every offloaded packet in every counter once.
            let outcomes: u64 = counts.outcome.iter().flatten().map(|c| c.packets).sum();
            prop_assert_eq!(off.stats.packets, offloaded_packets);
            prop_assert_eq!(
                (counts.rx.packets, counts.forwarded.packets, outcomes),
                (offloaded_packets, offloaded_packets, offloaded_packets)
            );
            prop_assert_eq!((counts.rx.bytes, counts.forwarded.bytes), (off.stats.bytes, off.stats.bytes));
        }

        /// `merge_delta` against its definition: what is new is the difference from
        /// what was merged, or everything after a re-install (counters from zero).
        #[test]
        fn merge_delta_is_the_difference_or_everything_after_a_reinstall(
            sp in 0u64..1000, sb in 0u64..100_000, np in 0u64..1000, nb in 0u64..100_000,
        ) {
            let seen = Seen { packets: sp, bytes: sb };
            let now = OffloadCounters { packets: np, bytes: nb, last_ns: 5 };
            let (d, next) = merge_delta(seen, &now);
            prop_assert_eq!(next, Seen { packets: np, bytes: nb });
            if np >= sp && nb >= sb {
                prop_assert_eq!(d, Seen { packets: np - sp, bytes: nb - sb });
            } else {
                prop_assert_eq!(d, Seen { packets: np, bytes: nb });
            }
        }
    }

    #[test]
    fn only_established_allowed_connections_with_ports_are_offloadable() {
        let (mut t, slot, _) = table_with_flow(1);
        let e = t.entry_mut(slot).unwrap();
        assert!(offloadable(e));
        let mut deny = allow();
        if let Some((_, v)) = deny.ingress.as_mut() {
            v.enforced.verdict = Verdict::Deny;
        }
        e.set_verdicts(&deny, 2, true);
        assert!(!offloadable(e));
    }

    /// One direction's key in [`SharedMap`]: addresses, ports and the ingress
    /// interface (0 or 1; the reverse direction arrives on the other one).
    type DirKey = (u128, u128, u16, u16, u16);

    fn dir_keys(k: &FlowKey) -> [DirKey; 2] {
        [
            (k.src, k.dst, k.sport, k.dport, k.ifindex),
            (k.dst, k.src, k.dport, k.sport, k.ifindex ^ 1),
        ]
    }

    /// One offload map shared by several workers, as the XDP program's is: an
    /// install that is not a replacement leaves an existing entry alone.
    #[derive(Clone, Debug, Default)]
    struct SharedMap(Arc<Mutex<HashMap<DirKey, OffloadCounters>>>);

    impl FlowOffload for SharedMap {
        fn install(&mut self, key: &FlowKey, _: u32, replace: bool) -> Install {
            let mut m = self.0.lock().unwrap();
            let keys = dir_keys(key);
            if !replace && keys.iter().any(|k| m.contains_key(k)) {
                return Install::HeldElsewhere;
            }
            for k in keys {
                m.insert(k, OffloadCounters::default());
            }
            Install::Done
        }
        fn read(&mut self, key: &FlowKey) -> [Option<OffloadCounters>; 2] {
            let m = self.0.lock().unwrap();
            dir_keys(key).map(|k| m.get(&k).copied())
        }
        fn remove(&mut self, key: &FlowKey) -> [Option<OffloadCounters>; 2] {
            let mut m = self.0.lock().unwrap();
            dir_keys(key).map(|k| m.remove(&k))
        }
        fn publish_generation(&mut self, _: u32) {}
    }

    /// Asymmetric RSS: the initiator's packets reach worker A, the responder's
    /// worker B, so both tables hold the connection (B's from the responder's side).
    /// A installs it; B finds it held elsewhere and installs nothing, so what the
    /// offload forwards is merged once, by A, and the two workers' records together
    /// count every packet once.
    #[test]
    fn a_connection_two_workers_hold_is_installed_and_counted_by_one() {
        let t0 = 1_000_000_000;
        let fwd = udp_conn();
        let rev = ConnTuple {
            src: fwd.dst,
            dst: fwd.src,
            sport: fwd.dport,
            dport: fwd.sport,
            ..fwd
        };
        let (mut ta, sa, _) = table_with(&fwd, 0, t0);
        let (mut tb, sb, _) = table_with(&rev, 1, t0 + 1);
        let map = SharedMap::default();
        let mut a = Offloader::new(Box::new(map.clone()), ta.capacity());
        let mut b = Offloader::new(Box::new(map.clone()), tb.capacity());
        a.settle(sa, ta.entry_mut(sa).unwrap(), 1, t0);
        b.settle(sb, tb.entry_mut(sb).unwrap(), 1, t0 + 1);
        assert!(ta.entry(sa).unwrap().is_offloaded());
        assert!(!tb.entry(sb).unwrap().is_offloaded());
        assert_eq!(
            (a.stats.installs, b.stats.installs, b.stats.held_elsewhere),
            (1, 0, 1)
        );
        // Within B's backoff nothing is asked again; after it, still held elsewhere.
        b.settle(sb, tb.entry_mut(sb).unwrap(), 1, t0 + 2);
        b.settle(sb, tb.entry_mut(sb).unwrap(), 1, t0 + 1 + INSTALL_RETRY_NS);
        assert_eq!(b.stats.held_elsewhere, 2);
        // The XDP program forwards 5 packets each way.
        for k in dir_keys(&ta.entry(sa).unwrap().initiator_key()) {
            let mut m = map.0.lock().unwrap();
            let c = m.get_mut(&k).unwrap();
            c.packets += 5;
            c.bytes += 500;
            c.last_ns = t0 + 10;
        }
        let mut got = Vec::new();
        a.sync_some(&mut ta, t0 + 20, 8, 64);
        b.sync_some(&mut tb, t0 + 20, 8, 64);
        ta.drain_hooked(t0 + 30, &mut a, &mut |r| got.push(r));
        tb.drain_hooked(t0 + 30, &mut b, &mut |r| got.push(r));
        let total: u64 = got.iter().map(|r| r.packets_fwd + r.packets_rev).sum();
        // Each worker saw its first packet itself; the offload forwarded 10.
        assert_eq!(total, 2 + 10);
        assert_eq!((a.stats.packets, b.stats.packets), (10, 0));
        assert_eq!((a.stats.removals, b.stats.removals), (1, 0));
        assert!(map.0.lock().unwrap().is_empty());
    }
}
