//! `cargo fuzz run flow_table`: the flow table with connection tracking, driven by a
//! random packet sequence the way a worker drives it (lookup; on a hit, restart an
//! expired or reopened connection or account the packet; on a miss, claim a slot,
//! evicting the idlest settled candidate), with sweeps, interval exports, batches whose
//! verdicts arrive late, removals and a final drain — against the slow twins:
//! [`ModelTable`] for where every key lives and which one an insert evicts, and a
//! plain per-connection record (below) for the TCP state machine, counters, expiry and
//! every final or interval record the table emits.
#![no_main]

use std::collections::HashMap;

use dataplane::flow::model::ModelTable;
use dataplane::flow::{
    ConnKey, ConnState, Dir, EndReason, FlowRecord, FlowTable, FlowTableConfig, KeyClass,
    TimeoutTable, Timeouts, WAYS,
};
use dataplane::packet::{ConnClass, ConnTuple, tcp_flags};
use dataplane::program::{Family, FlowKey, FlowVerdicts, proto};
use libfuzzer_sys::fuzz_target;

/// Input bytes, read front to back; zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }
}

/// Connections in play: a few of every kind of key, both families.
const POOL: u8 = 36;

/// The tuple and classification key of a packet of pool connection `c`, sent by its
/// first end (`reverse == false`) or by the other.
fn packet(c: u8, reverse: bool) -> (ConnTuple, FlowKey) {
    let family = if c >= 24 { Family::V6 } else { Family::V4 };
    let base: u128 = if family == Family::V6 {
        0xfd00_0000_0000_0000_0000_0000_0000_0000
    } else {
        0x0a00_0000
    };
    // Pairs of connections share addresses so buckets collide and ends compare.
    let x = base + u128::from(c / 12);
    let y = base + 0x100 + u128::from(c % 3);
    let (src, dst) = if reverse { (y, x) } else { (x, y) };
    let port = 1000 + u16::from(c);
    let (p, class, sport, dport, ksport, kdport) = match c % 6 {
        0 => (proto::TCP, ConnClass::Ports, port, 80, port, 80),
        1 => (proto::UDP, ConnClass::Ports, port, 53, port, 53),
        2 => (proto::SCTP, ConnClass::Ports, port, 9, port, 9),
        // Echo request / reply: the id and the request type travel in the tuple; the
        // classification key carries the message's type and code.
        3 => (
            proto::ICMP,
            ConnClass::Query { reply: reverse },
            u16::from(c),
            8,
            if reverse { 0 } else { 8 },
            0,
        ),
        // Destination unreachable: one-way, never paired with the other direction.
        4 => (proto::ICMP, ConnClass::OneWay, 3, 1, 3, 1),
        _ => (112, ConnClass::Generic, 0, 0, 0, 0),
    };
    let (sport, dport, ksport, kdport) = if reverse && class == ConnClass::Ports {
        (dport, sport, kdport, ksport)
    } else {
        (sport, dport, ksport, kdport)
    };
    let t = ConnTuple {
        src,
        dst,
        sport,
        dport,
        proto: p,
        family,
        class,
    };
    let k = FlowKey {
        src,
        dst,
        sport: ksport,
        dport: kdport,
        proto: p,
        family,
        ifindex: u16::from(c % 4),
    };
    (t, k)
}

/// One connection as a plain record: the twin of a flow entry.
#[derive(Clone, Debug)]
struct Conn {
    initiator: FlowKey,
    initiator_dir: Dir,
    tcp: bool,
    state: ConnState,
    fin: [bool; 2],
    packets: [u64; 2],
    bytes: [u64; 2],
    first_ns: u64,
    interval_first_ns: u64,
    last_ns: u64,
    active: bool,
    started: bool,
}

impl Conn {
    fn start(ck: &ConnKey, dir: Dir, key: &FlowKey, flags: u8, now: u64) -> Conn {
        let tcp = ck.proto() == proto::TCP && ck.class() == KeyClass::Ports;
        let state = if !tcp {
            ConnState::Open
        } else if flags & tcp_flags::RST != 0 {
            ConnState::Reset
        } else if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
            ConnState::SynSent
        } else {
            ConnState::Established // picked up mid-stream
        };
        Conn {
            initiator: *key,
            initiator_dir: dir,
            tcp,
            state,
            fin: [false; 2],
            packets: [0; 2],
            bytes: [0; 2],
            first_ns: now,
            interval_first_ns: now,
            last_ns: now,
            active: false,
            started: true,
        }
    }

    fn on_packet(&mut self, dir: Dir, flags: u8, len: u32, now: u64) {
        let side = usize::from(dir == Dir::BtoA);
        if !self.active {
            self.active = true;
            self.interval_first_ns = now;
        }
        self.packets[side] = (self.packets[side] + 1).min(u64::from(u32::MAX));
        self.bytes[side] = self.bytes[side].saturating_add(u64::from(len));
        self.last_ns = self.last_ns.max(now);
        if !self.tcp {
            return;
        }
        use tcp_flags::{ACK, FIN, RST, SYN};
        let from_initiator = dir == self.initiator_dir;
        if flags & RST != 0 {
            self.state = ConnState::Reset;
            return;
        }
        if self.state == ConnState::SynSent && !from_initiator && flags & (SYN | ACK) == SYN | ACK {
            self.state = ConnState::SynReceived;
        } else if self.state == ConnState::SynReceived
            && from_initiator
            && flags & (SYN | ACK) == ACK
        {
            self.state = ConnState::Established;
        }
        if flags & FIN != 0 {
            self.fin[side] = true;
            self.state = if self.fin == [true, true] {
                ConnState::FinsSeen
            } else {
                ConnState::FinWait
            };
        }
    }

    fn timeout(&self, t: &Timeouts) -> u64 {
        match self.state {
            ConnState::SynSent | ConnState::SynReceived => t.tcp_syn,
            ConnState::Established | ConnState::FinWait => t.tcp_established,
            ConnState::FinsSeen => t.tcp_fins_seen,
            ConnState::Reset => t.tcp_reset,
            ConnState::Open => match self.initiator.proto {
                proto::UDP => t.udp,
                proto::ICMP | proto::ICMPV6 => t.icmp,
                _ => t.generic,
            },
        }
    }

    fn expired(&self, now: u64, t: &Timeouts) -> bool {
        now.saturating_sub(self.last_ns) > self.timeout(t)
    }

    fn closed(&self) -> bool {
        matches!(self.state, ConnState::FinsSeen | ConnState::Reset)
    }

    fn reopens(&self, flags: u8) -> bool {
        use tcp_flags::{ACK, RST, SYN};
        self.closed() && flags & (SYN | ACK | RST) == SYN
    }

    fn end_reason(&self) -> EndReason {
        if self.closed() {
            EndReason::Closed
        } else {
            EndReason::Timeout
        }
    }

    /// What a record must say: (key, state, times, counters forward/reverse, started, end).
    fn expect(&self, end: Option<EndReason>) -> Summary {
        let (f, r) = match self.initiator_dir {
            Dir::AtoB => (0, 1),
            Dir::BtoA => (1, 0),
        };
        (
            self.initiator,
            self.state,
            [self.first_ns, self.interval_first_ns, self.last_ns],
            [
                self.packets[f],
                self.bytes[f],
                self.packets[r],
                self.bytes[r],
            ],
            self.started,
            end,
        )
    }

    fn reset_interval(&mut self) {
        self.packets = [0; 2];
        self.bytes = [0; 2];
        self.active = false;
        self.started = false;
    }
}

type Summary = (
    FlowKey,
    ConnState,
    [u64; 3],
    [u64; 4],
    bool,
    Option<EndReason>,
);

fn summary(r: &FlowRecord) -> Summary {
    (
        r.key,
        r.state,
        [r.first_ns, r.interval_first_ns, r.last_ns],
        [r.packets_fwd, r.bytes_fwd, r.packets_rev, r.bytes_rev],
        r.started,
        r.end,
    )
}

/// The table, its twins and the expected counters.
struct Harness {
    table: FlowTable,
    model: ModelTable,
    conns: HashMap<ConnKey, Conn>,
    timeouts: Timeouts,
    by_class: TimeoutTable,
    sweep_cursor: usize,
    /// Inserted in the current batch, verdict not yet known.
    awaiting: Vec<ConnKey>,
    inserts: u64,
    evictions: u64,
    expired: u64,
    insert_failures: u64,
}

impl Harness {
    fn key_at(&self, slot: usize) -> Option<(ConnKey, bool)> {
        self.model.buckets[slot / WAYS][slot % WAYS].map(|s| (s.key, s.awaiting))
    }

    fn set_model_awaiting(&mut self, k: &ConnKey) {
        let s = self.model.lookup(k).expect("in the model");
        if let Some(slot) = self.model.buckets[s / WAYS][s % WAYS].as_mut() {
            slot.awaiting = true;
        }
    }

    fn settle(&mut self, k: &ConnKey, hold: bool) {
        if hold {
            self.awaiting.push(*k);
            return;
        }
        let h = self.table.hash(k);
        let s = self.table.find(k, h).expect("just inserted");
        let e = self.table.entry_mut(s).expect("entry");
        e.set_verdicts(&FlowVerdicts::default(), 1, true);
        self.model.settle(k);
    }

    fn packet(&mut self, c: u8, reverse: bool, flags: u8, len: u32, now: u64, hold: bool) {
        let (tuple, key) = packet(c, reverse);
        let flags = if tuple.proto == proto::TCP { flags } else { 0 };
        let (ck, dir) = ConnKey::canonical(&tuple);
        let h = self.table.hash(&ck);
        let got = self.table.lookup(&ck, h);
        assert_eq!(got.map(|s| s as usize), self.model.lookup(&ck), "{ck:?}");
        match got {
            Some(s) => {
                let timeouts = self.timeouts;
                let by_class = self.by_class;
                let conn = self.conns.get_mut(&ck).expect("tracked");
                let e = self.table.entry_mut(s).expect("entry");
                assert_eq!(e.key(), ck);
                assert_eq!(e.state(), conn.state, "{ck:?}");
                assert_eq!(e.last_ns(), conn.last_ns);
                assert_eq!(e.initiator_key(), conn.initiator);
                if e.awaiting_verdict() {
                    return; // the worker defers it until the verdict is known
                }
                let expired = conn.expired(now, &timeouts);
                assert_eq!(e.is_expired(now, &timeouts), expired);
                assert_eq!(e.is_expired_by(now, &by_class), expired);
                let reopen = e.is_reopen(flags);
                assert_eq!(reopen, conn.reopens(flags), "{:?} {flags:#x}", conn.state);
                let restart = expired || reopen;
                if restart {
                    let reason = if expired {
                        conn.end_reason()
                    } else {
                        EndReason::Replaced
                    };
                    assert_eq!(summary(&e.record(Some(reason))), conn.expect(Some(reason)));
                    e.start(&ck, dir, &key, flags, now);
                    *conn = Conn::start(&ck, dir, &key, flags, now);
                }
                e.on_packet(dir, flags, len, now);
                conn.on_packet(dir, flags, len, now);
                self.table.touch(s, now);
                self.model.touch(&ck, now);
                if restart {
                    self.set_model_awaiting(&ck);
                    self.settle(&ck, hold);
                }
            }
            None => {
                let mut ended = Vec::new();
                let slot = self.table.claim(h, now, &mut |r| ended.push(r));
                let placed = self.model.insert(ck, now);
                assert_eq!(slot.map(|s| s as usize), placed.map(|p| p.0));
                let evicted = placed.and_then(|p| p.1);
                assert_eq!(ended.len(), usize::from(evicted.is_some()));
                if let Some(old) = evicted {
                    let conn = self.conns.remove(&old).expect("evicted key was tracked");
                    let reason = if conn.expired(now, &self.timeouts) {
                        self.expired += 1;
                        conn.end_reason()
                    } else {
                        self.evictions += 1;
                        EndReason::Evicted
                    };
                    assert_eq!(summary(&ended[0]), conn.expect(Some(reason)));
                }
                let Some(s) = slot else {
                    self.insert_failures += 1;
                    return;
                };
                self.inserts += 1;
                let e = self.table.entry_mut(s).expect("entry");
                e.start(&ck, dir, &key, flags, now);
                e.on_packet(dir, flags, len, now);
                self.table.touch(s, now);
                let mut conn = Conn::start(&ck, dir, &key, flags, now);
                conn.on_packet(dir, flags, len, now);
                self.conns.insert(ck, conn);
                self.settle(&ck, hold);
            }
        }
    }

    fn end_batch(&mut self) {
        for k in std::mem::take(&mut self.awaiting) {
            let h = self.table.hash(&k);
            if let Some(s) = self.table.find(&k, h) {
                let e = self.table.entry_mut(s).expect("entry");
                e.set_verdicts(&FlowVerdicts::default(), 1, true);
            }
            self.model.settle(&k);
        }
    }

    fn remove(&mut self, c: u8, reverse: bool) {
        let (ck, _) = ConnKey::canonical(&packet(c, reverse).0);
        if let Some(s) = self.table.find(&ck, self.table.hash(&ck)) {
            self.table.remove(s);
        }
        self.model.remove(&ck);
        self.conns.remove(&ck);
        self.awaiting.retain(|k| *k != ck);
    }

    /// A final record for every settled, expired connection in `buckets` buckets from
    /// the cursor, in slot order.
    fn sweep(&mut self, now: u64, buckets: usize) {
        let mut got = Vec::new();
        self.table
            .sweep(now, buckets, &mut |r| got.push(summary(&r)));
        let mut want = Vec::new();
        let n = self.model.buckets.len();
        for _ in 0..buckets.min(n) {
            let b = self.sweep_cursor;
            self.sweep_cursor = (b + 1) % n;
            for w in 0..WAYS {
                let Some((k, awaiting)) = self.key_at(b * WAYS + w) else {
                    continue;
                };
                let conn = &self.conns[&k];
                if !awaiting && conn.expired(now, &self.timeouts) {
                    want.push(conn.expect(Some(conn.end_reason())));
                    self.expired += 1;
                    self.model.remove(&k);
                    self.conns.remove(&k);
                }
            }
        }
        assert_eq!(got, want);
    }

    /// Interval records of every settled connection that did something, final records
    /// of the expired ones, in slot order.
    fn export(&mut self, now: u64) {
        let mut got = Vec::new();
        self.table
            .export_interval(now, &mut |r| got.push(summary(&r)));
        let mut want = Vec::new();
        for slot in 0..self.model.buckets.len() * WAYS {
            let Some((k, awaiting)) = self.key_at(slot) else {
                continue;
            };
            if awaiting {
                continue;
            }
            let timeouts = self.timeouts;
            let conn = self.conns.get_mut(&k).expect("tracked");
            if conn.expired(now, &timeouts) {
                want.push(conn.expect(Some(conn.end_reason())));
                self.expired += 1;
                self.model.remove(&k);
                self.conns.remove(&k);
            } else if conn.active || conn.started {
                want.push(conn.expect(None));
                conn.reset_interval();
            }
        }
        assert_eq!(got, want);
    }

    /// Every settled connection's final record; the table ends empty.
    fn drain(&mut self, now: u64) {
        let mut got = Vec::new();
        self.table.drain(now, &mut |r| got.push(summary(&r)));
        let mut want = Vec::new();
        for slot in 0..self.model.buckets.len() * WAYS {
            let Some((k, awaiting)) = self.key_at(slot) else {
                continue;
            };
            let conn = &self.conns[&k];
            if !awaiting {
                let reason = if conn.expired(now, &self.timeouts) {
                    conn.end_reason()
                } else {
                    EndReason::Drained
                };
                want.push(conn.expect(Some(reason)));
            }
        }
        assert_eq!(got, want);
        assert_eq!(self.table.len(), 0);
    }

    fn check_counts(&self) {
        assert_eq!(self.table.len(), self.model.len());
        assert_eq!(self.table.len(), self.conns.len());
        let s = self.table.stats();
        assert_eq!(
            (s.inserts, s.evictions, s.expired, s.insert_failures),
            (
                self.inserts,
                self.evictions,
                self.expired,
                self.insert_failures
            )
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let capacity = usize::from(b.u8() % 48) + 1;
    let seed = b.u64();
    // Short timeouts (0.1 s to 25.6 s) so that expiry is common.
    let mut t = || (u64::from(b.u8()) + 1) * 100_000_000;
    let timeouts = Timeouts {
        tcp_syn: t(),
        tcp_established: t(),
        tcp_fins_seen: t(),
        tcp_reset: t(),
        udp: t(),
        icmp: t(),
        generic: t(),
    };
    let table = FlowTable::new(FlowTableConfig {
        capacity,
        seed,
        timeouts,
    });
    let model = ModelTable::new(capacity, seed);
    assert_eq!(table.capacity(), model.buckets.len() * WAYS);
    let mut h = Harness {
        table,
        model,
        conns: HashMap::new(),
        timeouts,
        by_class: TimeoutTable::from(&timeouts),
        sweep_cursor: 0,
        awaiting: Vec::new(),
        inserts: 0,
        evictions: 0,
        expired: 0,
        insert_failures: 0,
    };
    let mut now: u64 = 1;
    for _ in 0..512 {
        if b.0.is_empty() {
            break;
        }
        let op = b.u8();
        // Time moves on by up to 65535 units of 1 µs, 1 ms or 1 s (never back).
        let unit = [0, 1_000, 1_000_000, 1_000_000_000][usize::from(op >> 6)];
        now = now.saturating_add(u64::from(b.u16()) * unit);
        match op % 16 {
            0..=10 => {
                let c = b.u8();
                let flags = b.u8();
                let len = u32::from(b.u16());
                h.packet(c % POOL, c & 0x80 != 0, flags, len, now, op & 0x20 != 0);
            }
            11 => h.end_batch(),
            12 => {
                let c = b.u8();
                h.remove(c % POOL, c & 0x80 != 0);
            }
            13 => {
                let n = usize::from(b.u8() % 8);
                h.sweep(now, n);
            }
            14 => h.export(now),
            _ => {
                h.end_batch();
                h.sweep(now, usize::MAX);
            }
        }
        h.check_counts();
    }
    h.drain(now);
});
