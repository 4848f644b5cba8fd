//! One batch through a worker, phase by phase: [`Worker::process`] calls parse, flow
//! lookup, classify, settle, transmit and housekeeping in turn, each over the whole
//! batch. The per-packet facts the phases hand each other ([`PktMeta`], the outcome
//! codes, the classifier jobs and the packets deferred until their entry's verdict
//! is known) live in the worker's scratch arrays, sized once at construction: no
//! phase allocates, locks, formats or panics.

use crate::flow::{ConnKey, Dir, EndReason, Placement, Slot};
use crate::packet::{Disposition, Fragment, ParseError, ParsedPacket, parse_common, parse_full};
use crate::port::{Port, RxFrame};
use crate::program::{Classify, FlowKey, FlowVerdicts, Verdict};

use super::stats::{Count, vidx};
use super::{DeniedResponder, Worker};

#[inline]
pub(super) fn set_code(codes: &mut [u8], i: usize, enforced: Verdict, pending: Verdict) {
    if let Some(c) = codes.get_mut(i) {
        *c = outcome_code(enforced, pending);
    }
}

/// Notes that the connection in `slot` saw a packet this batch (offload only; the
/// list never grows past its capacity).
#[inline]
fn touch_offload(o: &Option<super::offload::Offloader>, touched: &mut Vec<Slot>, slot: Slot) {
    if o.is_some() && touched.len() < touched.capacity() {
        touched.push(slot);
    }
}

/// Why a packet waits for the classifier.
#[derive(Clone, Copy, Debug)]
pub(super) enum JobKind {
    /// First packet of a new connection in `slot` (already started).
    New,
    /// Cached verdicts are from an older generation.
    Reevaluate,
    /// A responder packet of a denied flow: a new connection attempt from that side.
    Reverse,
    /// No slot could be claimed: classify, decide, forget.
    Uncached,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Job {
    kind: JobKind,
    slot: Slot,
    /// Index of the packet in the batch that caused the job.
    pkt: u16,
}

/// A packet whose decision waits for its entry's verdict.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deferred {
    pkt: u16,
    slot: Slot,
    dir: Dir,
    /// An ICMP error whose related connection was awaiting its verdict.
    related: bool,
}

/// How a frame of the batch was parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// It was not: its disposition is already in its outcome code.
    No,
    /// By [`parse_common`]: a plain TCP/UDP packet (`L4::Ports`, no fragment); its
    /// flow key is rebuilt from the connection key when needed ([`packet_key`]).
    Fast,
    /// By [`parse_full`]; the packet is kept in `Worker::parsed`.
    Full,
}

/// Per-packet facts kept between the phases of a batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct PktMeta {
    pub(super) ck: ConnKey,
    pub(super) place: Placement,
    /// Wire length as the parser reports it.
    pub(super) wire_len: u32,
    pub(super) tcp_flags: u8,
    pub(super) dir_b: bool,
    pub(super) parsed: Parsed,
}

impl PktMeta {
    pub(super) const EMPTY: PktMeta = PktMeta {
        ck: ConnKey::EMPTY,
        place: Placement {
            b1: 0,
            b2: 0,
            tag: 0,
        },
        wire_len: 0,
        tcp_flags: 0,
        dir_b: false,
        parsed: Parsed::No,
    };

    #[inline]
    fn dir(&self) -> Dir {
        if self.dir_b { Dir::BtoA } else { Dir::AtoB }
    }
}

/// The classification key of packet `i` of the batch. A fast-parsed packet is a plain
/// TCP/UDP packet, whose canonical key holds its addresses and ports: oriented by
/// its direction, they are its flow key (a test checks this against the parser).
#[inline]
pub(super) fn packet_key(
    m: &PktMeta,
    f: &RxFrame,
    parsed: &[Result<ParsedPacket, ParseError>],
    i: usize,
) -> Option<FlowKey> {
    match m.parsed {
        Parsed::No => None,
        Parsed::Fast => {
            let ck = &m.ck;
            let (src, sport, dst, dport) = if m.dir_b {
                (ck.b, ck.pb(), ck.a, ck.pa())
            } else {
                (ck.a, ck.pa(), ck.b, ck.pb())
            };
            Some(FlowKey {
                src,
                dst,
                sport,
                dport,
                proto: ck.proto(),
                family: ck.family(),
                ifindex: f.ifindex,
            })
        }
        Parsed::Full => match parsed.get(i) {
            Some(Ok(p)) => Some(p.key),
            _ => None,
        },
    }
}

// Per-packet outcome codes, decided by the parse, lookup and settle phases and acted
// on by transmit:
// `2 * vidx(enforced) + vidx(pending)` for a packet with verdicts, or one of these.
/// Not parsed, passed without policy ([`UnparsedPolicy`]).
pub(super) const OUT_PASS: u8 = 4;
/// No verdict: not parsed and dropped (or, defensively, left undecided).
pub(super) const OUT_NONE: u8 = 5;
/// Codes that forward the frame: enforced allow, or passed unparsed.
pub(super) const OUT_FORWARD: u32 = 0b1_0011;

#[inline]
pub(super) const fn outcome_code(enforced: Verdict, pending: Verdict) -> u8 {
    (2 * vidx(enforced) + vidx(pending)) as u8
}

impl<C: Classify> Worker<C> {
    /// Classifies one key outside the batch call (rare paths only).
    fn classify_one(&mut self, key: FlowKey) -> FlowVerdicts {
        let mut out = [FlowVerdicts::default()];
        self.current
            .classifier
            .classify(std::slice::from_ref(&key), &mut out);
        self.stats.classified += 1;
        self.stats.classify_calls += 1;
        out[0]
    }

    /// Packet `i` came from the responder of a denied flow in `slot` and was
    /// classified as its own connection attempt (`fv`). If allowed, the responder's
    /// connection replaces the denied flow in the entry (the denied flow's record
    /// ends); either way the packet gets `fv`'s verdicts.
    fn reverse_attempt(&mut self, i: usize, slot: Slot, fv: &FlowVerdicts, generation: u32) {
        self.stats.reverse_attempts += 1;
        let (Some(&meta), Some(&f)) = (self.meta.get(i), self.frames.get(i)) else {
            return;
        };
        let now = f.ts_ns;
        let len = f.wire_len;
        if let Some(e) = self.table.entry_mut(slot) {
            e.clear_awaiting();
        }
        if fv.enforced() == Verdict::Allow
            && let Some(key) = packet_key(&meta, &f, &self.parsed, i)
            && let Some(e) = self.table.entry_mut(slot)
        {
            let dir = meta.dir();
            // The entry's connection ends here: its offloaded packets into its record,
            // and out of the offload (as for a reopened connection below).
            if let Some(o) = &mut self.offload {
                o.before_end(slot, e);
            }
            self.records.emit(e.record(Some(EndReason::Replaced)));
            e.start(&meta.ck, dir, &key, meta.tcp_flags, now);
            e.set_verdicts(fv, generation, true);
            e.on_packet(dir, meta.tcp_flags, len, now);
            self.table.touch(slot, now);
        }
        set_code(&mut self.codes, i, fv.enforced(), fv.pending());
    }

    /// Processes one received batch of `n` frames (`n` ≤ the configured batch): the
    /// phases below, in order, each over the whole batch before the next starts, so
    /// the batch's cache misses overlap and the classifier is called once per batch.
    pub(super) fn process<P: Port>(&mut self, port: &mut P, n: usize) {
        let generation = self.current.generation;
        let n = n.min(self.frames.len());
        self.keys.clear();
        self.jobs.clear();
        self.deferred.clear();
        self.stats.batches += 1;
        let batch_now = self.parse(port, n);
        self.lookup(n, generation);
        let m = self.classify();
        self.settle(m, generation);
        self.transmit(port, n);
        self.offload_settle(generation, batch_now);
        self.housekeeping(batch_now);
    }

    /// Offload (when the worker has one): the allowed connections that saw packets
    /// in this batch are installed (once established, for the current generation)
    /// or removed (closing, no longer allowed).
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    fn offload_settle(&mut self, generation: u32, now: u64) {
        let Some(o) = &mut self.offload else {
            return;
        };
        for &s in &self.touched {
            if let Some(e) = self.table.entry_mut(s) {
                o.settle(s, e, generation, now);
            }
        }
        self.touched.clear();
    }

    /// Parse: every frame is parsed, its connection key and hash computed, and its
    /// flow-table bucket starts loading, so the batch's cache misses overlap. Plain
    /// TCP/UDP frames take the parser's fast path and leave nothing else behind;
    /// frames that do not parse get their [`UnparsedPolicy`] outcome here. Counts
    /// rx and parse outcomes; returns the batch's time (its latest frame time).
    ///
    /// [`UnparsedPolicy`]: crate::packet::UnparsedPolicy
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    fn parse<P: Port>(&mut self, port: &P, n: usize) -> u64 {
        let mut batch_now = self.last_ns;
        let mut rx_bytes = 0u64;
        let mut parsed_fast = 0u64;
        let frames = self.frames.get(..n).unwrap_or_default().iter();
        let metas = self.meta.iter_mut();
        let codes = self.codes.iter_mut();
        let slots = self.parsed.iter_mut();
        for (((f, m), code), slot) in frames.zip(metas).zip(codes).zip(slots) {
            rx_bytes += u64::from(f.wire_len);
            batch_now = batch_now.max(f.ts_ns);
            *code = OUT_NONE;
            let data = port.data(f);
            let (ck, dir) = if let Some(p) = parse_common(data, f.wire_len, f.ifindex) {
                parsed_fast += 1;
                m.parsed = Parsed::Fast;
                m.wire_len = p.wire_len;
                m.tcp_flags = p.tcp_flags;
                ConnKey::canonical(&p.conn())
            } else {
                *slot = parse_full(data, f.wire_len, f.ifindex);
                self.stats.parse.record(slot);
                match slot {
                    Ok(p) => {
                        if p.fragment != Fragment::None {
                            self.frags.resolve(p, f.ts_ns);
                        }
                        m.parsed = Parsed::Full;
                        m.wire_len = p.wire_len;
                        m.tcp_flags = p.tcp_flags;
                        ConnKey::canonical(&p.conn())
                    }
                    Err(e) => {
                        m.parsed = Parsed::No;
                        if self.cfg.unparsed.disposition(*e) == Disposition::Pass {
                            *code = OUT_PASS;
                            self.stats.unparsed_passed += 1;
                        }
                        continue;
                    }
                }
            };
            let place = self.table.placement(self.table.hash(&ck));
            if self.cfg.prefetch {
                self.table.prefetch_bucket(&place);
            }
            m.ck = ck;
            m.dir_b = dir == Dir::BtoA;
            m.place = place;
        }
        self.stats.parse.parsed += parsed_fast;
        self.stats.rx.packets += n as u64;
        self.stats.rx.bytes += rx_bytes;
        batch_now
    }

    /// Flow lookup: with the buckets arriving, the candidate entries start loading;
    /// then each parsed packet is looked up. A hit on a settled entry of the current
    /// generation is decided here (cached verdicts, conntrack, reply counting); an
    /// ICMP error quoting an allowed connection passes as related; everything else
    /// queues its key for the classifier (new, expired or reopened connection, stale
    /// generation, responder of a denied flow, or no room in the table) and, when its
    /// entry will hold the verdict, waits for it as deferred.
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    fn lookup(&mut self, n: usize, generation: u32) {
        if self.cfg.prefetch {
            for m in self.meta.get(..n).unwrap_or_default() {
                if m.parsed != Parsed::No {
                    self.table.prefetch_entry(&m.place);
                }
            }
        }

        let timeouts = *self.table.timeouts();
        let by_class = *self.table.timeout_table();
        let frames = self.frames.get(..n).unwrap_or_default();
        for (i, (m, f)) in self.meta.iter().zip(frames).enumerate() {
            let now = f.ts_ns;
            let len = m.wire_len;
            let pkt = i as u16;
            match m.parsed {
                Parsed::No => continue,
                Parsed::Fast => {}
                Parsed::Full => {
                    let related = match self.parsed.get(i) {
                        Some(Ok(p)) => p.related(),
                        _ => None,
                    };
                    if let Some(q) = related {
                        let (qk, qdir) = ConnKey::canonical(&q);
                        let h = self.table.hash(&qk);
                        let found = self.table.find(&qk, h);
                        if let Some(s) = found
                            && self.table.entry(s).is_some_and(|e| e.awaiting_verdict())
                        {
                            // Decided once the related connection's verdict is known.
                            self.deferred.push(Deferred {
                                pkt,
                                slot: s,
                                dir: qdir.flip(),
                                related: true,
                            });
                            continue;
                        }
                        if let Some(s) = found
                            && let Some(e) = self.table.entry_mut(s)
                            && e.applied() == Verdict::Allow
                            && !e.is_expired(now, &timeouts)
                        {
                            // The error travels towards the quoted packet's sender.
                            e.on_packet(qdir.flip(), 0, len, now);
                            let pending = e.pending();
                            self.table.touch(s, now);
                            set_code(&mut self.codes, i, Verdict::Allow, pending);
                            self.stats.related.add(len);
                            continue;
                        }
                    }
                }
            }

            let ck = &m.ck;
            let dir = m.dir();
            let flags = m.tcp_flags;
            match self.table.lookup_placed(ck, &m.place) {
                Some(s) => {
                    let Some(e) = self.table.entry_mut(s) else {
                        continue;
                    };
                    if e.awaiting_verdict() {
                        self.deferred.push(Deferred {
                            pkt,
                            slot: s,
                            dir,
                            related: false,
                        });
                        continue;
                    }
                    if let Some(o) = &mut self.offload {
                        // Counted outside until now: merged before any decision.
                        o.before_use(s, e, now);
                    }
                    let expired = e.is_expired_by(now, &by_class);
                    if expired || e.is_reopen(flags) {
                        let Some(key) = packet_key(m, f, &self.parsed, i) else {
                            continue;
                        };
                        let reason = if expired {
                            if e.state().is_closed() {
                                EndReason::Closed
                            } else {
                                EndReason::Timeout
                            }
                        } else {
                            EndReason::Replaced
                        };
                        if let Some(o) = &mut self.offload {
                            o.before_end(s, e);
                        }
                        self.records.emit(e.record(Some(reason)));
                        e.start(ck, dir, &key, flags, now);
                        self.table.touch(s, now);
                        self.keys.push(key);
                        self.jobs.push(Job {
                            kind: JobKind::New,
                            slot: s,
                            pkt,
                        });
                        self.deferred.push(Deferred {
                            pkt,
                            slot: s,
                            dir,
                            related: false,
                        });
                        continue;
                    }
                    if e.generation() != generation {
                        e.set_awaiting();
                        self.keys.push(e.initiator_key());
                        self.jobs.push(Job {
                            kind: JobKind::Reevaluate,
                            slot: s,
                            pkt,
                        });
                        self.deferred.push(Deferred {
                            pkt,
                            slot: s,
                            dir,
                            related: false,
                        });
                        continue;
                    }
                    let from_initiator = dir == e.initiator_dir();
                    if !from_initiator
                        && e.applied() == Verdict::Deny
                        && self.cfg.denied_responder == DeniedResponder::NewConnection
                    {
                        let Some(key) = packet_key(m, f, &self.parsed, i) else {
                            continue;
                        };
                        // Later packets of this flow in the batch wait for the outcome.
                        e.set_awaiting();
                        self.keys.push(key);
                        self.jobs.push(Job {
                            kind: JobKind::Reverse,
                            slot: s,
                            pkt,
                        });
                        continue;
                    }
                    e.on_packet(dir, flags, len, now);
                    let (enforced, pending) = (e.applied(), e.pending());
                    let offloaded = e.is_offloaded();
                    // Counted without a branch: replies come and go with traffic.
                    let reply = u64::from(!from_initiator & (enforced == Verdict::Allow));
                    self.stats.replies.packets += reply;
                    self.stats.replies.bytes += reply * u64::from(len);
                    self.table.touch(s, now);
                    set_code(&mut self.codes, i, enforced, pending);
                    if enforced == Verdict::Allow || offloaded {
                        touch_offload(&self.offload, &mut self.touched, s);
                    }
                }
                None => {
                    let Some(key) = packet_key(m, f, &self.parsed, i) else {
                        continue;
                    };
                    let records = &mut self.records;
                    let claimed =
                        self.table
                            .claim_hooked(&m.place, now, &mut self.offload, &mut |r| {
                                records.emit(r)
                            });
                    match claimed {
                        Some(s) => {
                            if let Some(e) = self.table.entry_mut(s) {
                                e.start(ck, dir, &key, flags, now);
                            }
                            self.keys.push(key);
                            self.jobs.push(Job {
                                kind: JobKind::New,
                                slot: s,
                                pkt,
                            });
                            self.deferred.push(Deferred {
                                pkt,
                                slot: s,
                                dir,
                                related: false,
                            });
                        }
                        None => {
                            self.keys.push(key);
                            self.jobs.push(Job {
                                kind: JobKind::Uncached,
                                slot: 0,
                                pkt,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Classify: one classifier call for every key queued by the lookup; returns how
    /// many verdicts it produced.
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    fn classify(&mut self) -> usize {
        let m = self.keys.len().min(self.out.len());
        if m > 0 {
            self.current
                .classifier
                .classify(&self.keys[..m], &mut self.out[..m]);
            self.stats.classified += m as u64;
            self.stats.classify_calls += 1;
        }
        m
    }

    /// Settle: entries take their verdicts (new connections apply them; re-evaluated
    /// ones keep an allowed enforced verdict unless configured otherwise; responder
    /// attempts may take the entry over; uncached packets are decided alone), then the
    /// packets that waited for their entry are decided in arrival order.
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    fn settle(&mut self, m: usize, generation: u32) {
        for j in 0..m {
            let (Some(&job), Some(&fv)) = (self.jobs.get(j), self.out.get(j)) else {
                continue;
            };
            let i = usize::from(job.pkt);
            match job.kind {
                JobKind::New => {
                    if let Some(e) = self.table.entry_mut(job.slot) {
                        e.set_verdicts(&fv, generation, true);
                    }
                }
                JobKind::Reevaluate => {
                    self.stats.reevaluated += 1;
                    let keep = !self.cfg.reevaluate_enforced;
                    if let Some(e) = self.table.entry_mut(job.slot) {
                        let apply = !keep || e.applied() == Verdict::Deny;
                        e.set_verdicts(&fv, generation, apply);
                    }
                }
                JobKind::Reverse => self.reverse_attempt(i, job.slot, &fv, generation),
                JobKind::Uncached => {
                    self.stats.uncached += 1;
                    set_code(&mut self.codes, i, fv.enforced(), fv.pending());
                }
            }
        }

        // Then the packets that waited for their entry, in arrival order.
        for d in 0..self.deferred.len() {
            let Some(&Deferred {
                pkt,
                slot,
                dir,
                related,
            }) = self.deferred.get(d)
            else {
                continue;
            };
            let i = usize::from(pkt);
            let (Some(&f), Some(&meta)) = (self.frames.get(i), self.meta.get(i)) else {
                continue;
            };
            let flags = meta.tcp_flags;
            let Some(e) = self.table.entry_mut(slot) else {
                continue;
            };
            if related {
                if e.applied() == Verdict::Allow {
                    e.on_packet(dir, 0, f.wire_len, f.ts_ns);
                    set_code(&mut self.codes, i, Verdict::Allow, e.pending());
                    self.stats.related.add(f.wire_len);
                    self.table.touch(slot, f.ts_ns);
                } else if let Some(key) = packet_key(&meta, &f, &self.parsed, i) {
                    // Related to a denied flow: judged on its own, without an entry
                    // (rare: the error raced its flow's first packet in one batch).
                    let fv = self.classify_one(key);
                    self.stats.uncached += 1;
                    set_code(&mut self.codes, i, fv.enforced(), fv.pending());
                }
                continue;
            }
            if e.is_reopen(flags)
                && let Some(key) = packet_key(&meta, &f, &self.parsed, i)
            {
                // A new SYN after the connection closed earlier in this batch: a new
                // connection, as it would have been one packet at a time (rare path).
                if let Some(o) = &mut self.offload {
                    o.before_end(slot, e);
                }
                self.records.emit(e.record(Some(EndReason::Replaced)));
                e.start(&meta.ck, dir, &key, flags, f.ts_ns);
                let fv = self.classify_one(key);
                if let Some(e) = self.table.entry_mut(slot) {
                    e.set_verdicts(&fv, generation, true);
                }
            }
            let Some(e) = self.table.entry_mut(slot) else {
                continue;
            };
            let from_initiator = dir == e.initiator_dir();
            if from_initiator
                || e.applied() == Verdict::Allow
                || self.cfg.denied_responder == DeniedResponder::JoinConnection
            {
                e.on_packet(dir, flags, f.wire_len, f.ts_ns);
                if !from_initiator && e.applied() == Verdict::Allow {
                    self.stats.replies.add(f.wire_len);
                }
                let offload = e.applied() == Verdict::Allow || e.is_offloaded();
                set_code(&mut self.codes, i, e.applied(), e.pending());
                self.table.touch(slot, f.ts_ns);
                if offload {
                    touch_offload(&self.offload, &mut self.touched, slot);
                }
            } else if let Some(key) = packet_key(&meta, &f, &self.parsed, i) {
                // The responder of a flow denied earlier in this batch: a new
                // connection attempt from its side, classified now (rare path).
                let fv = self.classify_one(key);
                self.reverse_attempt(i, slot, &fv, generation);
            }
        }
    }

    /// Transmit: forward or drop each frame by its outcome code, counting per outcome
    /// once per batch. Each frame is written to both lists and only the chosen one's
    /// length advances: verdicts vary from packet to packet, a branch on them would
    /// not be predicted.
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    fn transmit<P: Port>(&mut self, port: &mut P, n: usize) {
        let (mut ntx, mut ndrop) = (0usize, 0usize);
        let mut counts = [Count::default(); 6];
        let frames = self.frames.get(..n).unwrap_or_default();
        for (f, &code) in frames.iter().zip(&self.codes) {
            if let Some(c) = counts.get_mut(usize::from(code)) {
                c.add(f.wire_len);
            }
            let forward = ((OUT_FORWARD >> code) & 1) as usize;
            if let Some(t) = self.tx.get_mut(ntx) {
                *t = *f;
            }
            if let Some(d) = self.drop.get_mut(ndrop) {
                *d = *f;
            }
            ntx += forward;
            ndrop += 1 - forward;
        }
        let [aa, ad, da, dd, pass, none] = counts;
        for (o, c) in [(0, aa), (1, ad), (2, da), (3, dd)] {
            self.stats.outcome[o / 2][o % 2].merge(&c);
        }
        for c in [aa, ad, pass] {
            self.stats.forwarded.merge(&c);
        }
        for c in [da, dd, none] {
            self.stats.dropped.merge(&c);
        }
        if let Some(tx) = self.tx.get(..ntx)
            && !tx.is_empty()
        {
            port.tx_batch(tx);
        }
        if let Some(drop) = self.drop.get(..ndrop)
            && !drop.is_empty()
        {
            port.drop_batch(drop);
        }
    }

    /// Housekeeping at the batch boundary: advance the worker's clock, sweep a few
    /// buckets for expired entries, and export interval records when an export
    /// interval ended.
    // A frame of its own, so profiles attribute time per phase (one call per batch).
    #[inline(never)]
    pub(super) fn housekeeping(&mut self, batch_now: u64) {
        self.last_ns = batch_now;
        let records = &mut self.records;
        let sweep = self.cfg.sweep_buckets;
        self.table
            .sweep_hooked(batch_now, sweep, &mut self.offload, &mut |r| {
                records.emit(r)
            });
        if let Some(iv) = self.cfg.export_interval_ns
            && iv > 0
        {
            if self.next_export_ns == 0 {
                self.next_export_ns = (batch_now / iv + 1) * iv;
            } else if batch_now >= self.next_export_ns {
                let at = self.next_export_ns;
                self.table
                    .export_hooked(at, &mut self.offload, &mut |r| records.emit(r));
                self.next_export_ns = (batch_now / iv + 1) * iv;
            }
        }
        self.take_offload_counts();
    }
}
