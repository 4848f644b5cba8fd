//! Generated traffic through the parser and the full pipeline: ground truth from the
//! generator against what the data plane counted.

use std::sync::Arc;

use dataplane::linear::LinearClassifier;
use dataplane::packet::{ParseCounters, parse};
use dataplane::pipeline::{Pipeline, PipelineConfig, ReplaySource};
use dataplane::program::{
    Action, EndpointBinding, EndpointId, Match, Policy, PolicyId, PolicySet, PortRange, Program,
    ProgramId, Rule, Tier, TierDefault, TierId, Verdict, proto,
};
use dataplane::worker::{ClassifierSlot, Published};
use pcap::synth::{GenConfig, GenProto, generate};

#[test]
fn generated_frames_parse_as_generated() {
    let g = generate(&GenConfig {
        flows: 300,
        packets: 6000,
        malformed_share: 0.02,
        ..Default::default()
    });
    let mut c = ParseCounters::default();
    for f in g.frames.iter() {
        c.record(&parse(f.data, f.orig_len, 0));
    }
    assert_eq!(c.total(), g.frames.len() as u64);
    assert_eq!(c.truncated + c.malformed + c.non_ip, g.malformed as u64);
    assert!(g.malformed > 0);
}

/// One endpoint (the first server, 10.2.0.1) whose ingress allows TCP 80 and, staged,
/// TCP 6379; everything else to it is denied at the end of the tier.
fn policy() -> PolicySet {
    let tcp_port = |p: u16| Match {
        protocol: Some(proto::TCP),
        dst_ports: Some(vec![PortRange::single(p)]),
        ..Default::default()
    };
    let program = Program {
        tiers: vec![Tier {
            id: TierId(0),
            default_action: TierDefault::Deny,
            policies: vec![
                Policy {
                    id: PolicyId(1),
                    staged: false,
                    rules: vec![Rule {
                        index: 0,
                        action: Action::Allow,
                        matches: tcp_port(80),
                    }],
                },
                Policy {
                    id: PolicyId(2),
                    staged: true,
                    rules: vec![Rule {
                        index: 0,
                        action: Action::Allow,
                        matches: tcp_port(6379),
                    }],
                },
            ],
        }],
        profiles: vec![],
    };
    PolicySet {
        programs: vec![program],
        endpoints: vec![EndpointBinding {
            net: "10.2.0.1/32".parse().expect("net"),
            endpoint: EndpointId(1),
            ingress: Some(ProgramId(0)),
            egress: None,
        }],
    }
}

#[test]
fn generated_replay_matches_ground_truth() {
    let g = generate(&GenConfig {
        flows: 400,
        packets: 8000,
        malformed_share: 0.0,
        ipv6_share: 0.0,
        servers: 4,
        ..Default::default()
    });
    let classifier = LinearClassifier::new(policy()).expect("policy");
    let slot = Arc::new(ClassifierSlot::new(Published {
        generation: 1,
        classifier,
    }));
    let cfg = PipelineConfig {
        workers: 2,
        pin: false,
        frame_verdicts: true,
        ..Default::default()
    };
    let frames = Arc::new(g.frames.clone());
    let r = Pipeline::run(ReplaySource::Frames(frames), slot, &cfg).expect("run");
    assert_eq!(r.totals.rx.packets, g.frames.len() as u64);
    assert_eq!(r.totals.parse.parsed, g.frames.len() as u64);
    // Every flow is classified once (the table is large, flows are unique), plus
    // once more for each answer from the server of a denied flow.
    assert_eq!(
        r.totals.classified,
        g.flows.len() as u64 + r.totals.reverse_attempts
    );
    assert_eq!(r.totals.flows.inserts, g.flows.len() as u64);
    // Expected outcome per flow from the generator's ground truth.
    let server = "10.2.0.1".parse::<std::net::IpAddr>().expect("ip");
    let mut want = [[0u64; 2]; 2];
    for f in &g.flows {
        let to_server = f.server == server;
        let tcp = f.proto == GenProto::Tcp;
        let enforced = !to_server || (tcp && f.dport == 80);
        let pending = !to_server || (tcp && (f.dport == 80 || f.dport == 6379));
        let e = usize::from(!enforced);
        let p = usize::from(!pending);
        want[e][p] += 1;
    }
    let flows_by = |e: Verdict, p: Verdict| {
        r.records
            .iter()
            .filter(|x| x.applied == e && x.verdicts.pending() == p)
            .count() as u64
    };
    // One record per denied flow (ended when its server's answer turned it around,
    // or at the end of the run), split by what the staged policy would do.
    assert_eq!(flows_by(Verdict::Deny, Verdict::Allow), want[1][0]);
    assert_eq!(flows_by(Verdict::Deny, Verdict::Deny), want[1][1]);
    assert!(want[1][0] > 0 && want[1][1] > 0 && want[0][0] > 0);
    let dropped = r
        .frame_verdicts
        .as_ref()
        .expect("verdicts")
        .iter()
        .filter(|v| **v == dataplane::pipeline::FrameVerdict::Dropped)
        .count() as u64;
    assert_eq!(dropped, r.totals.dropped.packets);
    assert!(
        dropped >= want[1][0] + want[1][1],
        "at least the first packet of each denied flow"
    );
}

/// A ClassBench trace becomes one frame per header line, and each frame parses back
/// to its line's 5-tuple (ICMP lines: the ports travel as the echo id).
#[test]
fn classbench_trace_to_frames_round_trips() {
    let path = pcap::shared::fixtures("classbench").join("acl1_1k_trace");
    let headers = pcap::classbench::read_trace(&path).expect("trace");
    let tuples: Vec<pcap::synth::TraceTuple> = headers.iter().map(Into::into).collect();
    assert_eq!(tuples.len(), 8780);
    let frames = pcap::synth::tuples_to_frames(&tuples, 0, 1);
    assert_eq!(frames.len(), tuples.len());
    for (t, f) in tuples.iter().zip(frames.iter()) {
        let p = parse(f.data, f.orig_len, 0).expect("every trace frame parses");
        assert_eq!(p.key.src, u128::from(t.src));
        assert_eq!(p.key.dst, u128::from(t.dst));
        assert_eq!(p.key.proto, t.proto);
        if proto::has_ports(t.proto) {
            assert_eq!((p.key.sport, p.key.dport), (t.sport, t.dport));
        }
    }
}
