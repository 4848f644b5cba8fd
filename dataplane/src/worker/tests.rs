use super::batch::{Parsed, PktMeta, packet_key};
use super::*;
use crate::flow::{ConnKey, Dir, EndReason, FlowRecord};
use crate::packet::tcp_flags::*;
use crate::packet::testpkt::{tcp4_flags, udp4};
use crate::packet::{Disposition, UnparsedPolicy, parse_common};
use crate::program::{Decision, EndpointId, Hit, TraceId, Verdict, Verdicts};
use pcap::capture::{FrameRef, Frames};

/// Test policy: the endpoint at `10.0.0.2` has an ingress program that allows
/// destination ports in `allow` (enforced) and in `pending_allow` (pending view).
/// Every other destination is not local (no verdict: allowed).
#[derive(Debug, Clone)]
pub(crate) struct PortPolicy {
    pub allow: Vec<u16>,
    pub pending_allow: Vec<u16>,
}

pub(crate) const SERVER: [u8; 4] = [10, 0, 0, 2];
pub(crate) const CLIENT: [u8; 4] = [10, 0, 0, 1];

impl Classify for PortPolicy {
    fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            let local = k.dst == u128::from(u32::from_be_bytes(SERVER));
            let d = |allow: bool| Decision {
                verdict: if allow { Verdict::Allow } else { Verdict::Deny },
                trace: TraceId(u32::from(allow)),
            };
            *o = FlowVerdicts {
                egress: None,
                ingress: local.then(|| {
                    (
                        EndpointId(2),
                        Verdicts {
                            enforced: d(self.allow.contains(&k.dport)),
                            pending: d(self.pending_allow.contains(&k.dport)),
                        },
                    )
                }),
            };
        }
    }
    fn trace(&self, _id: TraceId) -> &[Hit] {
        &[]
    }
}

pub(crate) fn slot(
    allow: &[u16],
    pending: &[u16],
    generation: u32,
) -> Arc<ClassifierSlot<PortPolicy>> {
    Arc::new(ClassifierSlot::new(Published {
        generation,
        classifier: PortPolicy {
            allow: allow.to_vec(),
            pending_allow: pending.to_vec(),
        },
    }))
}

fn frames(list: &[Vec<u8>]) -> Arc<Frames> {
    let mut f = Frames::new();
    for (i, d) in list.iter().enumerate() {
        f.push(FrameRef {
            ts_ns: 1_000_000_000 + i as u64 * 1_000_000,
            orig_len: d.len() as u32,
            data: d,
        });
    }
    Arc::new(f)
}

fn handshake(sport: u16, dport: u16) -> Vec<Vec<u8>> {
    vec![
        tcp4_flags(CLIENT, SERVER, sport, dport, SYN, b""),
        tcp4_flags(SERVER, CLIENT, dport, sport, SYN | ACK, b""),
        tcp4_flags(CLIENT, SERVER, sport, dport, ACK, b""),
        tcp4_flags(CLIENT, SERVER, sport, dport, ACK, b"GET /"),
        tcp4_flags(SERVER, CLIENT, dport, sport, ACK, b"200 OK"),
        tcp4_flags(CLIENT, SERVER, sport, dport, FIN | ACK, b""),
        tcp4_flags(SERVER, CLIENT, dport, sport, FIN | ACK, b""),
    ]
}

fn run(
    slot: Arc<ClassifierSlot<PortPolicy>>,
    cfg: WorkerConfig,
    port: &mut MemPort,
) -> (WorkerReport, Vec<FlowRecord>) {
    let (tx, rx) = crossbeam::channel::bounded(10_000);
    let w = Worker::new(cfg, slot, RecordOut::channel(tx));
    let rep = w.run(port, &|| true);
    (rep, rx.try_iter().collect())
}

fn verdicts(port: &MemPort) -> Vec<bool> {
    let mut v = port.verdicts.clone().expect("recording");
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|x| x.1).collect()
}

#[test]
fn allowed_connection_and_its_replies_pass() {
    for batch in [1, 3, 64] {
        let mut port = MemPort::all(frames(&handshake(40000, 80))).recording();
        let cfg = WorkerConfig {
            batch,
            ..Default::default()
        };
        let (rep, recs) = run(slot(&[80], &[80], 1), cfg, &mut port);
        assert_eq!(verdicts(&port), vec![true; 7], "batch {batch}");
        let s = rep.stats;
        assert_eq!(s.classified, 1, "one classification per connection");
        assert_eq!(s.replies.packets, 3);
        assert_eq!(s.outcome(Verdict::Allow, Verdict::Allow).packets, 7);
        assert_eq!(s.forwarded.packets, 7);
        assert_eq!(recs.len(), 1);
        let r = recs[0];
        assert_eq!((r.packets_fwd, r.packets_rev), (4, 3));
        assert_eq!(r.key.dport, 80);
        assert_eq!(r.state, crate::flow::ConnState::FinsSeen);
        assert_eq!(r.end, Some(EndReason::Drained));
        assert!(r.started);
    }
}

#[test]
fn denied_flow_drops_and_responder_is_not_a_reply() {
    let list = vec![
        tcp4_flags(CLIENT, SERVER, 40001, 22, SYN, b""),
        // The server answers anyway: not a reply of an allowed connection.
        tcp4_flags(SERVER, CLIENT, 22, 40001, SYN | ACK, b""),
        tcp4_flags(CLIENT, SERVER, 40001, 22, SYN, b""),
    ];
    let mut port = MemPort::all(frames(&list)).recording();
    let (rep, _) = run(slot(&[80], &[], 1), WorkerConfig::default(), &mut port);
    // The client's packets are denied by the server's ingress policy; the server's
    // packet is a new connection to a non-local address (no policy): allowed, and
    // from then on the entry is the server's connection, so the client's retry is
    // its reply.
    assert_eq!(verdicts(&port), vec![false, true, true]);
    assert_eq!(rep.stats.reverse_attempts, 1);
    assert_eq!(rep.stats.outcome(Verdict::Deny, Verdict::Deny).packets, 1);
}

#[test]
fn joined_responder_packets_stay_with_the_denied_connection() {
    for batch in [1, 2, 64] {
        let mut port = MemPort::all(frames(&handshake(40003, 6379))).recording();
        let cfg = WorkerConfig {
            batch,
            denied_responder: DeniedResponder::JoinConnection,
            ..Default::default()
        };
        let (rep, recs) = run(slot(&[], &[6379], 1), cfg, &mut port);
        // Every packet of the connection, both directions, is denied now and
        // allowed in the pending view; nothing is reclassified or passed as a reply.
        assert_eq!(verdicts(&port), vec![false; 7], "batch {batch}");
        let s = rep.stats;
        assert_eq!(s.reverse_attempts, 0);
        assert_eq!(s.replies.packets, 0);
        assert_eq!(s.classified, 1);
        assert_eq!(s.outcome(Verdict::Deny, Verdict::Allow).packets, 7);
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].packets_fwd, recs[0].packets_rev), (4, 3));
        assert_eq!(recs[0].applied, Verdict::Deny);
    }
}

#[test]
fn pending_outcome_is_tracked_next_to_enforced() {
    let mut port = MemPort::all(frames(&handshake(40002, 6379))).recording();
    let (rep, recs) = run(slot(&[], &[6379], 1), WorkerConfig::default(), &mut port);
    // Enforced: deny (SYN dropped, SYN-ACK is a reverse attempt to a non-local
    // address and is allowed, so the rest flows as the server's connection).
    let s = rep.stats;
    assert_eq!(s.outcome(Verdict::Deny, Verdict::Allow).packets, 1);
    assert!(
        recs.iter()
            .any(|r| r.key.dport == 6379 && r.applied == Verdict::Deny)
    );
}

#[test]
fn same_new_flow_twice_in_a_batch_is_classified_once() {
    let list = vec![
        udp4(CLIENT, SERVER, 5000, 53, b"q1"),
        udp4(CLIENT, SERVER, 5000, 53, b"q2"),
        udp4(SERVER, CLIENT, 53, 5000, b"a1"),
    ];
    let mut port = MemPort::all(frames(&list)).recording();
    let (rep, recs) = run(slot(&[53], &[53], 1), WorkerConfig::default(), &mut port);
    assert_eq!(verdicts(&port), vec![true; 3]);
    assert_eq!(rep.stats.classified, 1);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].packets_fwd, recs[0].packets_rev), (2, 1));
}

/// A port that publishes a new classifier after `at` frames were delivered.
struct SwapPort<F: FnMut()> {
    inner: MemPort,
    delivered: usize,
    at: usize,
    swap: Option<F>,
}

impl<F: FnMut()> Port for SwapPort<F> {
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx {
        if self.delivered >= self.at
            && let Some(mut f) = self.swap.take()
        {
            f();
        }
        let r = self.inner.rx_batch(out);
        if let Rx::Frames(n) = r {
            self.delivered += n;
        }
        r
    }
    fn data(&self, f: &RxFrame) -> &[u8] {
        self.inner.data(f)
    }
    fn tx_batch(&mut self, f: &[RxFrame]) {
        self.inner.tx_batch(f)
    }
    fn drop_batch(&mut self, f: &[RxFrame]) {
        self.inner.drop_batch(f)
    }
}

fn swap_run(
    reevaluate_enforced: bool,
) -> (
    Vec<bool>,
    WorkerReport,
    Vec<FlowRecord>,
    Arc<ClassifierSlot<PortPolicy>>,
) {
    let mut list = handshake(40003, 80);
    list.push(tcp4_flags(CLIENT, SERVER, 40004, 80, SYN, b""));
    let s = slot(&[80], &[80], 1);
    let s2 = Arc::clone(&s);
    let mut port = SwapPort {
        inner: MemPort::all(frames(&list)).recording(),
        delivered: 0,
        at: 3,
        swap: Some(move || {
            s2.publish(Published {
                generation: 2,
                classifier: PortPolicy {
                    allow: vec![],
                    pending_allow: vec![],
                },
            })
        }),
    };
    let cfg = WorkerConfig {
        batch: 1,
        reevaluate_enforced,
        ..Default::default()
    };
    let (tx, rx) = crossbeam::channel::bounded(100);
    let rep = Worker::new(cfg, Arc::clone(&s), RecordOut::channel(tx)).run(&mut port, &|| true);
    (verdicts(&port.inner), rep, rx.try_iter().collect(), s)
}

#[test]
fn policy_change_keeps_existing_connections_and_reevaluates_pending() {
    let (v, rep, recs, s) = swap_run(false);
    // Handshake done under generation 1; the rest of the connection survives
    // the deny-all generation 2; a new connection does not.
    assert_eq!(v, vec![true, true, true, true, true, true, true, false]);
    assert_eq!(rep.stats.generation_swaps, 1);
    assert_eq!(rep.stats.reevaluated, 1);
    let kept = recs.iter().find(|r| r.key.sport == 40003).expect("record");
    assert_eq!(kept.applied, Verdict::Allow);
    assert_eq!(kept.applied_generation, 1);
    assert_eq!(kept.generation, 2);
    assert_eq!(
        kept.verdicts.pending(),
        Verdict::Deny,
        "pending re-evaluated"
    );
    // Packets after the swap count as (allow, deny).
    assert_eq!(rep.stats.outcome(Verdict::Allow, Verdict::Deny).packets, 4);
    // The worker moved on and no longer holds generation 1: reclaim frees it.
    assert_eq!(s.reclaim(), 0);
}

#[test]
fn policy_change_with_reevaluation_cuts_existing_connections() {
    let (v, rep, _, _) = swap_run(true);
    // The client's data is cut by the deny-all generation. The server's next
    // packet is then no reply (nothing is allowed) but a connection of its own to
    // the client, which has no policy: allowed, and the client's FIN rides on it.
    assert_eq!(v, vec![true, true, true, false, true, true, true, false]);
    assert_eq!(rep.stats.reverse_attempts, 1);
    assert_eq!(rep.stats.reevaluated, 1);
}

#[test]
fn icmp_error_related_to_an_allowed_flow_passes() {
    let q = udp4(CLIENT, SERVER, 5353, 9999, b"x");
    let mut err = Vec::new();
    etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4([10, 0, 0, 2], CLIENT, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, &q[14..14 + 28])
        .expect("write");
    let list = vec![q.clone(), err.clone()];
    let mut port = MemPort::all(frames(&list)).recording();
    let (rep, _) = run(
        slot(&[9999], &[9999], 1),
        WorkerConfig::default(),
        &mut port,
    );
    assert_eq!(verdicts(&port), vec![true, true]);
    assert_eq!(rep.stats.related.packets, 1);
    assert_eq!(rep.stats.classified, 1);
    // Without the flow, the error is just a packet to a non-local address.
    let mut port = MemPort::all(frames(&[err])).recording();
    let (rep, _) = run(slot(&[], &[], 1), WorkerConfig::default(), &mut port);
    assert_eq!(rep.stats.related.packets, 0);
    assert_eq!(rep.stats.classified, 1);
}

#[test]
fn unparsed_frames_follow_the_policy() {
    let mut arp = udp4(CLIENT, SERVER, 1, 2, b"");
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let list = vec![arp.clone(), arp[..10].to_vec()];
    let mut port = MemPort::all(frames(&list)).recording();
    let (rep, _) = run(slot(&[], &[], 1), WorkerConfig::default(), &mut port);
    assert_eq!(verdicts(&port), vec![false, false]);
    assert_eq!((rep.stats.parse.non_ip, rep.stats.parse.truncated), (1, 1));
    let cfg = WorkerConfig {
        unparsed: UnparsedPolicy {
            non_ip: Disposition::Pass,
            invalid: Disposition::Drop,
        },
        ..Default::default()
    };
    let mut port = MemPort::all(frames(&list)).recording();
    let (rep, _) = run(slot(&[], &[], 1), cfg, &mut port);
    assert_eq!(verdicts(&port), vec![true, false]);
    assert_eq!(rep.stats.unparsed_passed, 1);
}

/// A flood of unique flows far larger than the table: the table never grows,
/// every flow beyond capacity evicts one (counted), nothing panics.
#[test]
fn flood_of_unique_flows_keeps_memory_flat() {
    let cap = 256;
    let n = 20_000u32;
    let mut list = Vec::new();
    for i in 0..n {
        let src = [10, 1, (i >> 8) as u8, i as u8];
        list.push(udp4(src, SERVER, 1024 + (i % 50_000) as u16, 53, b""));
    }
    let f = frames(&list);
    let cfg = WorkerConfig {
        flow: FlowTableConfig {
            capacity: cap,
            ..Default::default()
        },
        export_interval_ns: None,
        ..Default::default()
    };
    let (tx, rx) = crossbeam::channel::bounded(16);
    let mut w = Worker::new(cfg, slot(&[53], &[53], 1), RecordOut::channel(tx));
    let mem0 = w.flow_table().memory_bytes();
    let mut port = MemPort::all(f);
    let mut batches = 0;
    while let Rx::Frames(_) = w.poll(&mut port) {
        batches += 1;
        assert!(w.flow_table().len() <= cap);
        assert_eq!(w.flow_table().memory_bytes(), mem0);
        let _ = rx.try_iter().count();
    }
    assert!(batches > 0);
    let s = w.stats();
    assert_eq!(s.rx.packets, u64::from(n));
    assert_eq!(s.forwarded.packets, u64::from(n));
    assert_eq!(s.flows.inserts, u64::from(n));
    assert_eq!(
        s.flows.evictions + s.flows.expired,
        u64::from(n) - cap as u64
    );
    assert_eq!(w.flow_table().len(), cap);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// A fast-parsed packet keeps only its canonical key and direction; the flow
    /// key rebuilt from them equals the one the parser produced.
    #[test]
    fn fast_path_key_is_the_parsed_key(
        src in proptest::prelude::any::<[u8; 4]>(),
        dst in proptest::prelude::any::<[u8; 4]>(),
        sport in proptest::prelude::any::<u16>(),
        dport in proptest::prelude::any::<u16>(),
        tcp in proptest::prelude::any::<bool>(),
        ifindex in proptest::prelude::any::<u16>(),
    ) {
        let frame = if tcp {
            tcp4_flags(src, dst, sport, dport, SYN, b"")
        } else {
            // A minimum-size frame: shorter ones are left to the full parser.
            udp4(src, dst, sport, dport, &[0; 18])
        };
        let wire = frame.len() as u32;
        let p = parse_common(&frame, wire, ifindex).expect("plain TCP/UDP takes the fast path");
        let (ck, dir) = ConnKey::canonical(&p.conn());
        let m = PktMeta {
            ck,
            dir_b: dir == Dir::BtoA,
            parsed: Parsed::Fast,
            ..PktMeta::EMPTY
        };
        let f = RxFrame { ifindex, ..RxFrame::default() };
        proptest::prop_assert_eq!(packet_key(&m, &f, &[], 0), Some(p.key));
    }
}

fn arb_packet() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let hosts = [CLIENT, SERVER, [10, 0, 0, 3]];
    (
        0usize..3,
        0usize..3,
        0usize..3,
        0usize..3,
        0u8..7,
        any::<bool>(),
    )
        .prop_map(move |(s, d, sp, dp, fl, udp)| {
            let ports = [80u16, 6379, 40000];
            let flags = [SYN, SYN | ACK, ACK, FIN | ACK, RST, ACK, ACK][usize::from(fl)];
            if udp {
                udp4(hosts[s], hosts[d], ports[sp], ports[dp], b"u")
            } else {
                tcp4_flags(hosts[s], hosts[d], ports[sp], ports[dp], flags, b"")
            }
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Batching is invisible: per-packet verdicts and outcome counters are the same
    /// whether packets are processed one by one (the obviously-sequential twin) or
    /// in batches where several packets of a flow wait for one classification.
    #[test]
    fn batching_is_invisible(
        pkts in proptest::collection::vec(arb_packet(), 1..120),
        batch in 2usize..70,
        cap in proptest::sample::select(vec![4usize, 1024]),
    ) {
        let f = frames(&pkts);
        let cfg = |batch| WorkerConfig {
            batch,
            flow: FlowTableConfig { capacity: cap, ..Default::default() },
            ..Default::default()
        };
        let mut one = MemPort::all(Arc::clone(&f)).recording();
        let (r1, rec1) = run(slot(&[80], &[80, 6379], 1), cfg(1), &mut one);
        let mut many = MemPort::all(f).recording();
        let (rn, recn) = run(slot(&[80], &[80, 6379], 1), cfg(batch), &mut many);
        let pressure = |s: &WorkerStats| s.flows.evictions + s.flows.insert_failures > 0;
        if !pressure(&r1.stats) && !pressure(&rn.stats) {
            proptest::prop_assert_eq!(verdicts(&one), verdicts(&many));
            proptest::prop_assert_eq!(r1.stats.outcome, rn.stats.outcome);
            proptest::prop_assert_eq!(r1.stats.replies, rn.stats.replies);
            // The same records; emission order within a batch may differ.
            let sorted = |v: &[FlowRecord]| {
                let mut d: Vec<String> = v.iter().map(|r| format!("{r:?}")).collect();
                d.sort();
                d
            };
            proptest::prop_assert_eq!(sorted(&rec1), sorted(&recn));
        } else {
            // Under eviction pressure the victims depend on batch composition
            // (entries awaiting their verdict are never evicted), so only the
            // accounting must hold.
            for r in [&r1, &rn] {
                let total: u64 = r.stats.outcome.iter().flatten().map(|c| c.packets).sum();
                proptest::prop_assert_eq!(total, r.stats.parse.parsed);
                proptest::prop_assert_eq!(r.stats.rx.packets, pkts.len() as u64);
            }
        }
    }
}

/// An offload that refuses every install and holds nothing.
#[derive(Debug)]
struct NoRoom;

impl FlowOffload for NoRoom {
    fn install(&mut self, _: &FlowKey, _: u32, _: bool) -> Install {
        Install::Refused
    }
    fn read(&mut self, _: &FlowKey) -> [Option<OffloadCounters>; 2] {
        [None, None]
    }
    fn remove(&mut self, _: &FlowKey) -> [Option<OffloadCounters>; 2] {
        [None, None]
    }
    fn publish_generation(&mut self, _: u32) {}
}

fn newer_or_same(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < 1 << 31
}

fn deny_all(generation: u32) -> Published<PortPolicy> {
    Published {
        generation,
        classifier: PortPolicy {
            allow: vec![],
            pending_allow: vec![],
        },
    }
}

/// A worker asleep waiting for frames has taken every generation published while it
/// sleeps (it runs the newest one before it processes anything when it wakes); an
/// awake worker has taken one only once it runs it; and with an offload (whose XDP
/// program forwards under the worker's last generation while it sleeps) sleeping
/// takes nothing.
#[test]
fn a_sleeping_worker_takes_every_generation_published_meanwhile() {
    let s = slot(&[80], &[80], 1);
    let (tx, _rx) = crossbeam::channel::bounded(100);
    let cfg = WorkerConfig {
        batch: 1,
        ..Default::default()
    };
    let mut w = Worker::new(cfg, Arc::clone(&s), RecordOut::channel(tx));
    s.publish(deny_all(2));
    assert_eq!(s.taken_by(2, newer_or_same), vec![false], "awake, on 1");
    w.asleep();
    assert_eq!(s.taken_by(2, newer_or_same), vec![true], "asleep");
    assert_eq!(s.running(), vec![1], "it still holds 1");
    s.publish(deny_all(3));
    assert_eq!(s.taken_by(3, newer_or_same), vec![true]);
    // It wakes with a SYN to port 80: classified under 3 (deny), not 1 (allow).
    let syn = tcp4_flags(CLIENT, SERVER, 40010, 80, SYN, b"");
    let mut port = MemPort::all(frames(std::slice::from_ref(&syn))).recording();
    assert!(matches!(w.poll(&mut port), Rx::Frames(1)));
    assert_eq!(verdicts(&port), vec![false]);
    assert_eq!(s.running(), vec![3]);
    // Awake again: the next generation waits for its next batch or idle.
    s.publish(deny_all(4));
    assert_eq!(s.taken_by(4, newer_or_same), vec![false]);
    w.idle(2_000_000_000);
    assert_eq!(s.taken_by(4, newer_or_same), vec![true]);

    // With an offload, asleep is not taken.
    let s = slot(&[80], &[80], 1);
    let (tx, _rx) = crossbeam::channel::bounded(100);
    let mut w =
        Worker::new(cfg, Arc::clone(&s), RecordOut::channel(tx)).with_offload(Box::new(NoRoom));
    s.publish(deny_all(2));
    w.asleep();
    assert_eq!(s.taken_by(2, newer_or_same), vec![false]);
    w.idle(2_000_000_000);
    assert_eq!(s.taken_by(2, newer_or_same), vec![true]);
}
