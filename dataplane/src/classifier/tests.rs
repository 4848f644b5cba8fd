//! The compiled classifier against the linear reference: random programs, packets
//! biased to rule boundaries, both verdicts and both traces compared.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::*;
use crate::fixtures::{key, net, npm, policy, program, rule, tcp, tier};
use crate::linear::{LinearClassifier, evaluate};
use crate::program::{
    Action, EndpointBinding, IcmpMatch, Match, Outcome, Policy, PolicyId, PortRange, Rule, Tier,
    TierDefault, proto,
};

const V4_BASES: [u32; 4] = [0x0a00_0000, 0x0a01_0200, 0xc0a8_0100, 0xffff_ff00];
const V6_BASES: [u128; 3] = [0x2001_0db8 << 96, (0x2001_0db8 << 96) | (1 << 64), 0];
const PORTS: [u16; 10] = [0, 1, 22, 53, 79, 80, 443, 1024, 65534, 65535];
const PROTOS: [u8; 6] = [
    proto::TCP,
    proto::UDP,
    proto::ICMP,
    proto::ICMPV6,
    proto::SCTP,
    50,
];
const ICMP_TYPES: [u8; 4] = [0, 3, 8, 128];

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        3 => (0..V4_BASES.len(), 0u32..256, prop::sample::select(vec![0u8, 8, 16, 24, 25, 30, 31, 32]))
            .prop_map(|(b, low, len)| IpNet::V4(Ipv4Net::new((V4_BASES[b] | low).into(), len).expect("len"))),
        1 => (0..V6_BASES.len(), 0u128..256, prop::sample::select(vec![0u8, 32, 64, 96, 120, 127, 128]))
            .prop_map(|(b, low, len)| IpNet::V6(Ipv6Net::new((V6_BASES[b] | low).into(), len).expect("len"))),
    ]
}

fn arb_range() -> impl Strategy<Value = PortRange> {
    (
        prop::sample::select(PORTS.to_vec()),
        prop::sample::select(PORTS.to_vec()),
        0u8..4,
    )
        .prop_map(|(a, b, mode)| match mode {
            0 => PortRange::single(a),
            1 => PortRange { lo: b, hi: a }, // sometimes degenerate
            _ => PortRange {
                lo: a.min(b),
                hi: a.max(b),
            },
        })
}

fn arb_icmp() -> impl Strategy<Value = IcmpMatch> {
    (
        prop::sample::select(ICMP_TYPES.to_vec()),
        prop::option::of(0u8..3),
    )
        .prop_map(|(icmp_type, code)| IcmpMatch { icmp_type, code })
}

fn sometimes<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.25, s)
}

fn arb_nets() -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(arb_net(), 0..3)
}

fn arb_match() -> impl Strategy<Value = Match> {
    let nets = (
        sometimes(arb_nets()),
        sometimes(arb_nets()),
        sometimes(arb_nets()),
        sometimes(arb_nets()),
    );
    let ports = (
        sometimes(prop::collection::vec(arb_range(), 0..3)),
        sometimes(prop::collection::vec(arb_range(), 1..3)),
        sometimes(prop::collection::vec(arb_range(), 0..3)),
        sometimes(prop::collection::vec(arb_range(), 1..3)),
    );
    let misc = (
        sometimes(prop::sample::select(vec![Family::V4, Family::V6])),
        sometimes(prop::sample::select(PROTOS.to_vec())),
        sometimes(prop::sample::select(PROTOS.to_vec())),
        prop::option::weighted(0.1, arb_icmp()),
        prop::option::weighted(0.1, arb_icmp()),
    );
    (nets, ports, misc).prop_map(
        |(
            (sn, nsn, dn, ndn),
            (sp, nsp, dp, ndp),
            (family, protocol, not_protocol, icmp, not_icmp),
        )| {
            Match {
                family,
                protocol,
                not_protocol,
                src_nets: sn.map(Into::into),
                not_src_nets: nsn.unwrap_or_default().into(),
                dst_nets: dn.map(Into::into),
                not_dst_nets: ndn.unwrap_or_default().into(),
                src_ports: sp,
                not_src_ports: nsp.unwrap_or_default(),
                dst_ports: dp,
                not_dst_ports: ndp.unwrap_or_default(),
                icmp,
                not_icmp,
            }
        },
    )
}

fn arb_action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![Action::Allow, Action::Deny, Action::Pass, Action::Log])
}

fn arb_rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec((arb_action(), arb_match()), 0..4).prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (action, matches))| Rule {
                index: i as u32,
                action,
                matches,
            })
            .collect()
    })
}

pub(super) fn arb_program() -> impl Strategy<Value = Program> {
    let policy = (any::<bool>(), arb_rules());
    let tier = (any::<bool>(), prop::collection::vec(policy, 0..4));
    let tiers = prop::collection::vec(tier, 0..4);
    let profiles = prop::collection::vec(arb_rules(), 0..3);
    (tiers, profiles).prop_map(|(tiers, profiles)| {
        let mut next = 0u32;
        let mut id = || {
            next += 1;
            PolicyId(next)
        };
        Program {
            tiers: tiers
                .into_iter()
                .enumerate()
                .map(|(t, (pass, pols))| Tier {
                    id: crate::program::TierId(t as u32),
                    default_action: if pass {
                        TierDefault::Pass
                    } else {
                        TierDefault::Deny
                    },
                    policies: pols
                        .into_iter()
                        .map(|(staged, rules)| Policy {
                            id: id(),
                            staged,
                            rules,
                        })
                        .collect(),
                })
                .collect(),
            profiles: profiles
                .into_iter()
                .map(|rules| Policy {
                    id: id(),
                    staged: false,
                    rules,
                })
                .collect(),
        }
    })
}

/// Interesting values of each field: the boundaries of every criterion, ±1.
fn boundaries(p: &Program) -> (Vec<u128>, Vec<u128>, Vec<u16>, Vec<u8>) {
    let (mut v4, mut v6, mut ports, mut protos) =
        (vec![0u128], vec![0u128], PORTS.to_vec(), PROTOS.to_vec());
    let rules = p
        .tiers
        .iter()
        .flat_map(|t| &t.policies)
        .chain(&p.profiles)
        .flat_map(|p| &p.rules);
    for r in rules {
        let m = &r.matches;
        let nets = m
            .src_nets
            .iter()
            .flat_map(|l| l.iter())
            .chain(m.dst_nets.iter().flat_map(|l| l.iter()));
        for n in nets
            .chain(m.not_src_nets.iter())
            .chain(m.not_dst_nets.iter())
        {
            let (lo, hi) = match n {
                IpNet::V4(n) => (
                    u32::from(n.network()) as u128,
                    u32::from(n.broadcast()) as u128,
                ),
                IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
            };
            let out = if n.addr().is_ipv4() { &mut v4 } else { &mut v6 };
            out.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
        }
        let rs = m
            .src_ports
            .iter()
            .flatten()
            .chain(m.dst_ports.iter().flatten());
        for pr in rs.chain(&m.not_src_ports).chain(&m.not_dst_ports) {
            ports.extend([pr.lo, pr.hi, pr.lo.wrapping_sub(1), pr.hi.wrapping_add(1)]);
        }
        for i in m.icmp.iter().chain(&m.not_icmp) {
            ports.extend([i.icmp_type.into(), i.code.unwrap_or(0).into(), 1]);
        }
        protos.extend(m.protocol.iter().chain(&m.not_protocol));
    }
    v4.iter_mut().for_each(|a| *a &= 0xffff_ffff);
    (v4, v6, ports, protos)
}

/// Packets built from the boundary values, chosen by `picks`.
pub(super) fn packets(p: &Program, picks: &[(u16, u16, u16, u16, u16, bool)]) -> Vec<FlowKey> {
    let (v4, v6, ports, protos) = boundaries(p);
    let pick = |v: &[u128], i: u16| v[i as usize % v.len()];
    picks
        .iter()
        .map(|&(a, b, c, d, e, six)| {
            let proto = protos[e as usize % protos.len()];
            let (family, src, dst) = if six {
                (Family::V6, pick(&v6, a), pick(&v6, b))
            } else {
                (Family::V4, pick(&v4, a), pick(&v4, b))
            };
            FlowKey {
                src,
                dst,
                sport: ports[c as usize % ports.len()],
                dport: ports[d as usize % ports.len()],
                proto,
                family,
                ifindex: 0,
            }
        })
        .collect()
}

/// Compares the tree's program-level verdicts with the linear evaluation.
/// (Also with partitioned trees.)
fn check_program(p: &Program, keys: &[FlowKey]) -> Result<(), TestCaseError> {
    check_program_with(p, keys, &BuildConfig::default())?;
    let partitioned = BuildConfig {
        single_tree_bytes_per_entry: 0,
        ..BuildConfig::default()
    };
    check_program_with(p, keys, &partitioned)
}

fn check_program_with(
    p: &Program,
    keys: &[FlowKey],
    cfg: &BuildConfig,
) -> Result<(), TestCaseError> {
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let mut c = Classifier::build(&set, cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    check_classifier(&mut c, p, keys, cfg)
}

/// Compares `c`'s verdicts for program 0 (`p`) with the linear evaluation, with every
/// walk kernel.
fn check_classifier(
    c: &mut Classifier,
    p: &Program,
    keys: &[FlowKey],
    cfg: &BuildConfig,
) -> Result<(), TestCaseError> {
    let want: Vec<[Outcome; 2]> = keys
        .iter()
        .map(|k| {
            [
                evaluate(p, k, View::Enforced),
                evaluate(p, k, View::Pending),
            ]
        })
        .collect();
    // The IPv4 keys alone too: blocks of IPv4 keys take the vector set-up paths
    // (one tree, or the partitions of `Classifier::run_block_v4`).
    let (v4_keys, v4_want): (Vec<FlowKey>, Vec<[Outcome; 2]>) = keys
        .iter()
        .zip(&want)
        .filter(|(k, _)| k.family == Family::V4)
        .map(|(k, w)| (*k, w.clone()))
        .unzip();
    // Every walk kernel this CPU runs gives the linear reference's results.
    for kernel in Kernel::available() {
        c.set_kernel(kernel);
        for (keys, want) in [(keys, &want), (&v4_keys[..], &v4_want)] {
            check_kernel(c, keys, want, cfg, kernel)?;
        }
    }
    Ok(())
}

/// Compares `c`'s verdicts for program 0 on `keys` (kernel `kernel`) with `want`.
fn check_kernel(
    c: &Classifier,
    keys: &[FlowKey],
    want: &[[Outcome; 2]],
    cfg: &BuildConfig,
    kernel: Kernel,
) -> Result<(), TestCaseError> {
    let mut out = vec![SENTINEL; keys.len()];
    c.classify_program(ProgramId(0), keys, &mut out);
    for ((k, v), w) in keys.iter().zip(&out).zip(want) {
        for ((view, d), want) in [(View::Enforced, v.enforced), (View::Pending, v.pending)]
            .into_iter()
            .zip(w)
        {
            prop_assert_eq!(
                (d.verdict, c.trace(d.trace)),
                (want.verdict, want.trace.as_slice()),
                "{:?} view, key {:?}, {:?}, kernel {}",
                view,
                k,
                cfg,
                kernel.name()
            );
        }
    }
    Ok(())
}

pub(super) fn arb_picks(n: usize) -> impl Strategy<Value = Vec<(u16, u16, u16, u16, u16, bool)>> {
    prop::collection::vec(
        (
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            prop::bool::weighted(0.3),
        ),
        n,
    )
}

/// `a`, `b` and `a` with one policy edited (`edit`: which policy; staged flipped,
/// removed, or its rules replaced by `b`'s first policy's), in an order that makes
/// each build after the first an incremental one on top of the others.
fn build_sequence(a: &Program, b: &Program, edit: (prop::sample::Index, u8)) -> Vec<Program> {
    let mut edited = a.clone();
    let at: Vec<(usize, usize)> = edited
        .tiers
        .iter()
        .enumerate()
        .flat_map(|(t, tier)| (0..tier.policies.len()).map(move |p| (t, p)))
        .collect();
    if !at.is_empty() {
        let (t, p) = at[edit.0.index(at.len())];
        let policies = &mut edited.tiers[t].policies;
        match edit.1 {
            0 => policies[p].staged = !policies[p].staged,
            1 => {
                policies.remove(p);
            }
            _ => {
                policies[p].rules = b
                    .tiers
                    .iter()
                    .flat_map(|t| &t.policies)
                    .next()
                    .map_or_else(Vec::new, |q| q.rules.clone());
            }
        }
    }
    vec![a.clone(), edited.clone(), b.clone(), a.clone(), edited]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every build of one `Compiler` — the first fresh, the others reusing what the
    /// earlier ones left — gives the linear reference's verdicts and traces for its
    /// own program, with single trees and with partitions.
    #[test]
    fn incremental_builds_agree_with_linear(
        a in arb_program(),
        b in arb_program(),
        edit in (any::<prop::sample::Index>(), 0u8..3),
        partitioned in any::<bool>(),
        picks in arb_picks(PACKETS / 2),
    ) {
        let cfg = BuildConfig {
            single_tree_bytes_per_entry: if partitioned {
                0
            } else {
                BuildConfig::default().single_tree_bytes_per_entry
            },
            ..BuildConfig::default()
        };
        let mut compiler = Compiler::new(cfg);
        for (i, p) in build_sequence(&a, &b, edit).iter().enumerate() {
            let set = PolicySet { programs: vec![p.clone()], endpoints: vec![] };
            let mut c = compiler.build(&set).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(c.stats().incremental, i > 0, "build {}", i);
            check_classifier(&mut c, p, &packets(p, &picks), &cfg)?;
        }
    }
}

/// Packets per program in the property test; cases × this ≥ 100k checks.
const PACKETS: usize = 64;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1600, ..ProptestConfig::default() })]

    #[test]
    fn tree_agrees_with_linear(p in arb_program(), picks in arb_picks(PACKETS)) {
        let keys = packets(&p, &picks);
        check_program(&p, &keys)?;
    }

    #[test]
    fn classify_agrees_with_linear_classifier(
        a in arb_program(),
        b in arb_program(),
        bind in prop::collection::vec((arb_net(), 0u8..3, 0u8..3), 0..6),
        picks in arb_picks(16),
    ) {
        let endpoints = distinct_bindings(bind);
        let set = PolicySet { programs: vec![a.clone(), b], endpoints };
        let cfg = BuildConfig {
            single_tree_bytes_per_entry: if picks[0].5 { 0 } else { 2048 },
            single_tree_bytes_factor: if picks[1].5 { 1 } else { 16 },
            build_threads: if picks[2].5 { 1 } else { 2 },
            split_dense_slack: match (picks[3].5, picks[4].5) {
                (true, _) => None,
                (false, true) => Some(i32::MAX),
                (false, false) => Some(0),
            },
            split_dense_from_bytes: 0,
            ..BuildConfig::default()
        };
        let mut c = Classifier::build(&set, &cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let l = LinearClassifier::new(set).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let keys = packets(&a, &picks);
        let mut want = vec![FlowVerdicts::default(); keys.len()];
        l.classify(&keys, &mut want);
        let resolve = |cl: &dyn Classify, side: Option<(EndpointId, Verdicts)>| {
            side.map(|(id, v)| (id, v.enforced.verdict, cl.trace(v.enforced.trace).to_vec(), v.pending.verdict, cl.trace(v.pending.trace).to_vec()))
        };
        for kernel in Kernel::available() {
            c.set_kernel(kernel);
            let mut got = vec![FlowVerdicts::default(); keys.len()];
            c.classify(&keys, &mut got);
            for (k, (g, w)) in keys.iter().zip(got.iter().zip(&want)) {
                prop_assert_eq!(resolve(&c, g.egress), resolve(&l, w.egress), "egress of {:?}, {}", k, kernel.name());
                prop_assert_eq!(resolve(&c, g.ingress), resolve(&l, w.ingress), "ingress of {:?}, {}", k, kernel.name());
            }
        }
    }
}

/// Whether two classifiers are the same, table for table (not only in their lookups).
fn identical(a: &Classifier, b: &Classifier) -> bool {
    a.slots[..] == b.slots[..]
        && a.starts == b.starts
        && a.items == b.items
        && a.decisions == b.decisions
        && a.verdicts == b.verdicts
        && a.pairs == b.pairs
        && a.traces == b.traces
        && format!("{:?}", a.roots) == format!("{:?}", b.roots)
        && a.stats.bytes == b.stats.bytes
        && a.stats.depth == b.stats.depth
        && a.stats.trees == b.stats.trees
}

/// Builds `set` with `cfg` on 1, 2 and 3 threads: the classifiers must be identical
/// (the attempts of an arrangement run at once, the choice must not depend on that).
fn check_threads(set: &PolicySet, cfg: &BuildConfig) -> Result<(), TestCaseError> {
    let build = |threads: usize| {
        let cfg = BuildConfig {
            build_threads: threads,
            ..*cfg
        };
        Classifier::build(set, &cfg).map_err(|e| TestCaseError::fail(e.to_string()))
    };
    let serial = build(1)?;
    for threads in [2, 3] {
        let parallel = build(threads)?;
        prop_assert!(
            identical(&serial, &parallel),
            "{threads} threads: {:?} against {:?}",
            parallel.stats(),
            serial.stats()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Serial and parallel builds give the same classifier, with one tree or
    /// partitions (also when later attempts are abandoned in small rooms).
    #[test]
    fn parallel_builds_equal_serial_builds(
        a in arb_program(),
        b in arb_program(),
        partitioned in any::<bool>(),
        factor in prop::sample::select(vec![0usize, 1, 16]),
    ) {
        let set = PolicySet { programs: vec![a, b], endpoints: vec![] };
        let cfg = BuildConfig {
            single_tree_bytes_per_entry: if partitioned { 0 } else { 6144 },
            single_tree_bytes_factor: factor,
            ..BuildConfig::default()
        };
        check_threads(&set, &cfg)?;
    }
}

/// On the crossing rules every stage of the choice runs (the small single tree
/// fails, plans and merges are built and dropped, the single tree comes back): the
/// chosen attempt's workspace, appended to the classifier, must agree with the linear
/// reference, and serial and parallel builds must be identical, for each factor
/// (single tree kept, or partitions kept after a dropped single tree).
#[test]
fn chosen_workspace_agrees_and_threads_do_not_matter() {
    let mut s = 11u64;
    let p = crossing_rules(&mut s);
    let keys = packets(&p, &edge_picks(&mut s));
    let set = PolicySet {
        programs: vec![p.clone(), p.clone()],
        endpoints: vec![],
    };
    for factor in [0, 1, 16] {
        for threads in [1, 2] {
            let cfg = BuildConfig {
                single_tree_bytes_factor: factor,
                build_threads: threads,
                ..BuildConfig::default()
            };
            check_program_with(&p, &keys, &cfg).expect("agrees");
        }
        let cfg = BuildConfig {
            single_tree_bytes_factor: factor,
            ..BuildConfig::default()
        };
        check_threads(&set, &cfg).expect("same classifier");
    }
}

/// The long run: `cargo test -p dataplane -- --ignored tree_agrees_long`.
#[test]
#[ignore = "long property run (minutes)"]
fn tree_agrees_long() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 100_000,
        ..ProptestConfig::default()
    });
    runner
        .run(&(arb_program(), arb_picks(PACKETS)), |(p, picks)| {
            check_program(&p, &packets(&p, &picks))
        })
        .expect("tree and linear agree");
}

#[test]
fn empty_program_denies_with_no_profile_hits() {
    let set = PolicySet {
        programs: vec![Program::default()],
        endpoints: vec![EndpointBinding {
            net: net("::/0"),
            endpoint: EndpointId(7),
            ingress: Some(ProgramId(0)),
            egress: None,
        }],
    };
    let c = Classifier::build(&set, &BuildConfig::default()).expect("builds");
    let k = tcp("2001:db8::1", "2001:db8::2", 80);
    let mut out = [FlowVerdicts::default()];
    c.classify(&[k], &mut out);
    let (id, v) = out[0].ingress.expect("bound");
    assert_eq!(id, EndpointId(7));
    assert_eq!(out[0].egress, None);
    assert_eq!(v.enforced.verdict, Verdict::Deny);
    assert_eq!(c.trace(v.enforced.trace), &[npm(0)]);
    assert_eq!(c.trace(v.pending.trace), &[npm(-1)]);
    // A v4 packet finds no v6 endpoint.
    c.classify(&[tcp("10.0.0.1", "10.0.0.2", 80)], &mut out);
    assert_eq!(out[0], FlowVerdicts::default());
}

#[test]
fn bad_bindings_are_rejected_with_the_prefix() {
    let mut set = PolicySet {
        programs: vec![Program::default()],
        endpoints: vec![EndpointBinding {
            net: net("10.0.0.0/8"),
            endpoint: EndpointId(1),
            ingress: Some(ProgramId(3)),
            egress: None,
        }],
    };
    let e = Classifier::build(&set, &BuildConfig::default()).expect_err("unknown program");
    assert!(
        e.to_string().contains("10.0.0.0/8") && e.to_string().contains("program 3"),
        "{e}"
    );
    set.endpoints[0].ingress = None;
    set.endpoints.push(set.endpoints[0].clone());
    let e = Classifier::build(&set, &BuildConfig::default()).expect_err("duplicate");
    assert_eq!(
        e,
        BuildError::DuplicateEndpoint {
            net: net("10.0.0.0/8")
        }
    );
}

fn tier_of(rules: Vec<Rule>) -> Program {
    program(
        vec![tier(
            1,
            TierDefault::Deny,
            rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| policy(i as u32, i % 10 == 9, vec![r]))
                .collect(),
        )],
        vec![],
    )
}

/// Deterministic pseudo-random numbers for the big inputs (no test-time randomness
/// needed to reproduce them).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn degenerate_and_extreme_matches() {
    let m = |f: &dyn Fn(&mut Match)| {
        let mut x = Match::default();
        f(&mut x);
        x
    };
    let rules = vec![
        rule(
            0,
            Action::Deny,
            m(&|x| x.dst_ports = Some(vec![PortRange { lo: 9, hi: 3 }])),
        ),
        rule(
            1,
            Action::Allow,
            m(&|x| x.src_nets = Some(vec![net("10.0.0.1/32"), net("2001:db8::1/128")].into())),
        ),
        rule(
            2,
            Action::Deny,
            m(&|x| x.not_dst_nets = vec![net("0.0.0.0/0"), net("::/0")].into()),
        ),
        rule(3, Action::Pass, m(&|x| x.src_nets = Some(vec![].into()))),
        rule(
            4,
            Action::Allow,
            m(&|x| x.dst_nets = Some(vec![net("0.0.0.0/0")].into())),
        ),
    ];
    let p = tier_of(rules);
    let keys = [
        tcp("10.0.0.1", "1.1.1.1", 5),
        tcp("10.0.0.2", "1.1.1.1", 5),
        tcp("2001:db8::1", "::1", 5),
        tcp("2001:db8::2", "::1", 5),
        key("255.255.255.255", "0.0.0.0", 0, 0, 0),
        key(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::",
            255,
            65535,
            65535,
        ),
    ];
    check_program(&p, &keys).expect("agree");
}

#[test]
fn overlapping_everything_builds_and_agrees() {
    // 2,000 rules that all overlap: wildcard addresses, random port ranges and protocols.
    let mut s = 1u64;
    let rules = (0..2000u32)
        .map(|i| {
            let a = lcg(&mut s) as u16;
            let b = lcg(&mut s) as u16;
            let mut x = Match {
                dst_ports: Some(vec![PortRange {
                    lo: a.min(b),
                    hi: a.max(b),
                }]),
                ..Match::default()
            };
            if i % 3 == 0 {
                x.not_src_ports = vec![PortRange::single(lcg(&mut s) as u16)];
            }
            if i % 7 == 0 {
                x.src_nets = Some(vec![net("0.0.0.0/0")].into());
            }
            let action = [Action::Allow, Action::Deny, Action::Pass, Action::Log][i as usize % 4];
            rule(i, action, x)
        })
        .collect();
    let p = tier_of(rules);
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let c = Classifier::build(&set, &BuildConfig::default()).expect("builds");
    assert!(c.stats().bytes <= BuildConfig::default().memory_budget);
    let keys: Vec<FlowKey> = (0..4000)
        .map(|_| {
            key(
                "10.0.0.1",
                "10.0.0.2",
                [proto::TCP, proto::UDP][lcg(&mut s) as usize % 2],
                lcg(&mut s) as u16,
                lcg(&mut s) as u16,
            )
        })
        .collect();
    check_program(&p, &keys).expect("agree");
}

/// Rules narrow in the source and wide in the destination, and the reverse (a
/// firewall's shape): two partitions of a few KB, while one tree replicates each kind
/// of rule across the other kind's cuts and needs several times more than the first
/// small attempt had. The builder must still try the single tree with a room of its
/// own (not a multiple of the small partitions), and both arrangements must agree
/// with the linear reference.
#[test]
fn crossing_rules_get_a_single_tree_with_its_own_room() {
    let mut s = 11u64;
    let p = crossing_rules(&mut s);
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let c = Classifier::build(&set, &BuildConfig::default()).expect("builds");
    // One v4 tree (and the empty v6 one), not partitions.
    assert_eq!(c.stats().trees, 2, "{:?}", c.stats());
    check_program(&p, &packets(&p, &edge_picks(&mut s))).expect("agree");
}

/// `single_tree_bytes_factor` caps the single tree tried after the partitions at a
/// multiple of their bytes: on the crossing rules (whose first, small single attempt
/// fails), 1x leaves the partitions (fewer bytes, more trees), no cap (0) and the
/// default give the single tree; every arrangement agrees with the linear reference.
#[test]
fn single_tree_bytes_factor_caps_the_single_tree() {
    let mut s = 11u64;
    let p = crossing_rules(&mut s);
    let keys = packets(&p, &edge_picks(&mut s));
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let stats = |f: usize| {
        let cfg = BuildConfig {
            single_tree_bytes_factor: f,
            ..BuildConfig::default()
        };
        check_program_with(&p, &keys, &cfg).expect("agree");
        *Classifier::build(&set, &cfg).expect("builds").stats()
    };
    let (uncapped, capped, default) = (stats(0), stats(1), stats(16));
    assert_eq!(uncapped.trees, 2, "{uncapped:?}");
    assert!(capped.trees > 2, "{capped:?}");
    assert!(capped.bytes < uncapped.bytes, "{capped:?} {uncapped:?}");
    assert_eq!(default.trees, 2, "{default:?}");
}

/// Dense nodes split into two levels of ranged nodes: on the crossing rules, never
/// splitting, splitting where no path gets deeper than the deepest (slack 0; the
/// default, -1, splits less) and splitting every dense node all agree with the
/// linear reference; splitting every one takes fewer bytes than none and at least
/// the same depth, slack 0 lies between them in bytes.
#[test]
fn split_dense_nodes_agree_and_save_bytes() {
    let mut s = 11u64;
    let p = crossing_rules(&mut s);
    let keys = packets(&p, &edge_picks(&mut s));
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let stats = |slack: Option<i32>| {
        let cfg = BuildConfig {
            split_dense_slack: slack,
            split_dense_from_bytes: 0,
            ..BuildConfig::default()
        };
        check_program_with(&p, &keys, &cfg).expect("agree");
        *Classifier::build(&set, &cfg).expect("builds").stats()
    };
    let (none, level, all) = (stats(None), stats(Some(0)), stats(Some(i32::MAX)));
    assert!(all.bytes < none.bytes, "{all:?} {none:?}");
    assert!(all.depth >= none.depth, "{all:?} {none:?}");
    assert!(
        level.bytes <= none.bytes && level.bytes >= all.bytes,
        "{level:?}"
    );
}

/// Addresses and ports at random (the crossing rules' edges are spread over them).
fn edge_picks(s: &mut u64) -> Vec<(u16, u16, u16, u16, u16, bool)> {
    (0..4000)
        .map(|_| {
            let mut r = || lcg(s) as u16;
            (r(), r(), r(), r(), r(), false)
        })
        .collect()
}

/// 400 rules, half on a source prefix, half on a destination prefix, each with a
/// destination port range: each kind replicates across the other kind's cuts.
fn crossing_rules(s: &mut u64) -> Program {
    crossing_rules_n(s, 400)
}

/// `n` crossing rules (see [`crossing_rules`]).
fn crossing_rules_n(s: &mut u64, n: u32) -> Program {
    let rules: Vec<Rule> = (0..n)
        .map(|i| {
            let a = lcg(s) as u32;
            let len = 16 + (lcg(s) % 9) as u8;
            let n = IpNet::V4(Ipv4Net::new(a.into(), len).expect("prefix length").trunc());
            let lo = lcg(s) as u16;
            let hi = lo.saturating_add((lcg(s) % 2000) as u16);
            let mut x = Match {
                dst_ports: Some(vec![PortRange { lo, hi }]),
                ..Match::default()
            };
            if i % 2 == 0 {
                x.src_nets = Some(vec![n].into());
            } else {
                x.dst_nets = Some(vec![n].into());
            }
            rule(i, [Action::Allow, Action::Deny][i as usize % 2], x)
        })
        .collect();
    tier_of(rules)
}

#[test]
fn small_budget_fails_with_a_clear_error() {
    let mut s = 7u64;
    let rules = (0..3000u32)
        .map(|i| {
            let x = Match {
                src_nets: Some(
                    vec![IpNet::V4(
                        Ipv4Net::new((lcg(&mut s) as u32).into(), 24).expect("len"),
                    )]
                    .into(),
                ),
                dst_ports: Some(vec![PortRange::single(lcg(&mut s) as u16)]),
                ..Match::default()
            };
            rule(i, Action::Allow, x)
        })
        .collect();
    let set = PolicySet {
        programs: vec![tier_of(rules)],
        endpoints: vec![],
    };
    let cfg = BuildConfig {
        memory_budget: 64 << 10,
        ..BuildConfig::default()
    };
    let e = Classifier::build(&set, &cfg).expect_err("64 KiB is too small");
    assert!(
        e.to_string().contains("memory budget of 65536 bytes"),
        "{e}"
    );
}

#[test]
fn hundred_thousand_rules_build_or_fail_cleanly() {
    let mut s = 3u64;
    let rules = (0..100_000u32)
        .map(|i| {
            let x = Match {
                src_nets: Some(
                    vec![IpNet::V4(
                        Ipv4Net::new((lcg(&mut s) as u32).into(), 16 + (i % 17) as u8)
                            .expect("len"),
                    )]
                    .into(),
                ),
                dst_nets: Some(
                    vec![IpNet::V4(
                        Ipv4Net::new((lcg(&mut s) as u32).into(), 8 + (i % 25) as u8).expect("len"),
                    )]
                    .into(),
                ),
                dst_ports: Some(vec![PortRange::single(lcg(&mut s) as u16)]),
                protocol: Some(proto::TCP),
                ..Match::default()
            };
            rule(i, Action::Allow, x)
        })
        .collect();
    let p = tier_of(rules);
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let cfg = BuildConfig::default();
    match Classifier::build(&set, &cfg) {
        Ok(c) => {
            assert!(c.stats().bytes <= cfg.memory_budget);
            let keys: Vec<FlowKey> = (0..2000)
                .map(|_| {
                    let (a, b) = (lcg(&mut s) as u32, lcg(&mut s) as u32);
                    key(
                        &std::net::Ipv4Addr::from(a).to_string(),
                        &std::net::Ipv4Addr::from(b).to_string(),
                        proto::TCP,
                        1,
                        lcg(&mut s) as u16,
                    )
                })
                .collect();
            let mut out = vec![SENTINEL; keys.len()];
            c.classify_program(ProgramId(0), &keys, &mut out);
            for (k, v) in keys.iter().zip(&out).step_by(20) {
                let want = evaluate(&p, k, View::Pending);
                assert_eq!(
                    (v.pending.verdict, c.trace(v.pending.trace)),
                    (want.verdict, want.trace.as_slice())
                );
            }
        }
        Err(e) => assert!(matches!(e, BuildError::OverBudget { .. }), "{e}"),
    }
}

#[test]
fn arena_offsets_are_capped_at_the_slot_format() {
    let mut arena = tree::Arena::default();
    arena.set_limit(usize::MAX);
    assert_eq!(arena.slot_limit, slot::MAX_SLOTS);
    arena.set_limit(1000);
    assert_eq!(arena.slot_limit, 1000);
}

#[test]
fn many_run_patterns_agree_on_every_kernel() {
    // Source prefixes of random lengths and destination port ranges: many nodes with
    // more runs than fit in a node word, with many distinct run-start patterns, so
    // the starts table is used heavily.
    let mut s = 7u64;
    let rules: Vec<Rule> = (0..600u32)
        .map(|i| {
            let a = lcg(&mut s) as u32;
            let len = 8 + (lcg(&mut s) % 17) as u8;
            let lo = lcg(&mut s) as u16;
            let hi = lo.saturating_add((lcg(&mut s) % 3000) as u16);
            let x = Match {
                src_nets: Some(
                    vec![IpNet::V4(
                        Ipv4Net::new(a.into(), len).expect("prefix length").trunc(),
                    )]
                    .into(),
                ),
                dst_ports: Some(vec![PortRange { lo, hi }]),
                ..Match::default()
            };
            rule(i, [Action::Allow, Action::Deny][i as usize % 2], x)
        })
        .collect();
    let p = tier_of(rules);
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let c = Classifier::build(&set, &BuildConfig::default()).expect("builds");
    let tabled = c
        .slots
        .iter()
        .filter(|&&n| n & (LEAF | slot::TABLED) == slot::TABLED)
        .count();
    assert!(
        c.starts.len() > 16 && tabled > 16,
        "{} / {tabled}",
        c.starts.len()
    );
    let picks: Vec<_> = (0..6000)
        .map(|_| {
            (
                lcg(&mut s) as u16,
                lcg(&mut s) as u16,
                lcg(&mut s) as u16,
                lcg(&mut s) as u16,
                lcg(&mut s) as u16,
                false,
            )
        })
        .collect();
    check_program(&p, &packets(&p, &picks)).expect("agree");
}

/// A compiler that had to partition a program tries one tree again once the program
/// at that index has fewer entries (and not while it has as many).
#[test]
fn compiler_retries_one_tree_for_a_smaller_program() {
    let mut s = 11u64;
    let mut rules = |n: u32| -> Vec<Rule> {
        (0..n)
            .map(|i| {
                // Half match a source, half a destination: a cross product for one
                // tree, two small trees partitioned by field.
                let n: Option<crate::program::Nets> = Some(
                    vec![IpNet::V4(
                        Ipv4Net::new((lcg(&mut s) as u32).into(), 16).expect("len"),
                    )]
                    .into(),
                );
                let x = if i % 2 == 0 {
                    Match {
                        src_nets: n,
                        ..Match::default()
                    }
                } else {
                    Match {
                        dst_nets: n,
                        ..Match::default()
                    }
                };
                rule(i, Action::Allow, x)
            })
            .collect()
    };
    let big = tier_of(rules(400));
    let small = tier_of(rules(3));
    let set = |p: &Program| PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    // Few bytes per entry for one tree: the big program does not fit in one.
    let cfg = BuildConfig {
        single_tree_bytes_per_entry: 64,
        ..BuildConfig::default()
    };
    let mut compiler = Compiler::new(cfg);
    let first = compiler.build(&set(&big)).expect("builds");
    assert!(first.stats().trees > 2, "partitioned: {:?}", first.stats());
    let again = compiler.build(&set(&big)).expect("builds");
    assert!(again.stats().incremental && again.stats().trees == first.stats().trees);
    let shrunk = compiler.build(&set(&small)).expect("builds");
    assert!(shrunk.stats().incremental);
    assert_eq!(
        shrunk.stats().trees,
        2,
        "one tree per family: {:?}",
        shrunk.stats()
    );
    for p in [&big, &small] {
        let mut c = compiler.build(&set(p)).expect("builds");
        let keys: Vec<FlowKey> = (0..500)
            .map(|_| {
                let a = lcg(&mut s) as u32;
                let b = lcg(&mut s) as u32;
                key(
                    &std::net::Ipv4Addr::from(a).to_string(),
                    &std::net::Ipv4Addr::from(b).to_string(),
                    6,
                    1,
                    80,
                )
            })
            .collect();
        check_classifier(&mut c, p, &keys, &cfg).expect("agrees with the linear reference");
    }
}

/// Extreme build settings build or fail with an error, never panic, and what builds
/// still agrees with the linear reference.
#[test]
fn extreme_build_settings_build_or_fail_cleanly() {
    let mut s = 5u64;
    let rules: Vec<Rule> = (0..60)
        .map(|i| {
            let x = Match {
                src_nets: Some(
                    vec![IpNet::V4(
                        Ipv4Net::new((lcg(&mut s) as u32).into(), 20).expect("len"),
                    )]
                    .into(),
                ),
                dst_ports: Some(vec![PortRange::single(lcg(&mut s) as u16)]),
                ..Match::default()
            };
            rule(i, Action::Allow, x)
        })
        .collect();
    let p = tier_of(rules);
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let keys: Vec<FlowKey> = (0..300)
        .map(|_| {
            let a = std::net::Ipv4Addr::from(lcg(&mut s) as u32).to_string();
            key(&a, "10.0.0.1", 6, 1, lcg(&mut s) as u16)
        })
        .collect();
    let d = BuildConfig::default();
    for cfg in [
        BuildConfig {
            binth: usize::MAX,
            ..d
        },
        BuildConfig { binth: 0, ..d },
        BuildConfig {
            spfac: f64::NAN,
            ..d
        },
        BuildConfig {
            spfac: f64::INFINITY,
            ..d
        },
        BuildConfig { spfac: -1.0, ..d },
        BuildConfig {
            max_cut_bits: 0,
            ..d
        },
        BuildConfig {
            max_cut_bits: u32::MAX,
            ..d
        },
        BuildConfig {
            single_tree_bytes_per_entry: usize::MAX,
            ..d
        },
        BuildConfig {
            memory_budget: 0,
            ..d
        },
        BuildConfig {
            memory_budget: usize::MAX,
            ..d
        },
    ] {
        match Classifier::build(&set, &cfg) {
            Ok(mut c) => check_classifier(&mut c, &p, &keys, &cfg).expect("agrees"),
            Err(e) => assert!(e.to_string().contains("budget"), "{cfg:?}: {e}"),
        }
    }
}

/// The over-budget error says what ran out, the limit and what to do, in words.
#[test]
fn over_budget_message_names_the_limit_and_the_remedy() {
    let e = BuildError::OverBudget {
        budget: 256 << 20,
        program: 3,
        family: Family::V6,
        what: "tree slots",
    };
    assert_eq!(
        e.to_string(),
        "the compiled classifier exceeds its memory budget of 268435456 bytes (tree slots) in rule program 3, V6 rules: simplify the policies of that endpoint (fewer rules, ports or CIDRs), or build with a larger BuildConfig::memory_budget"
    );
}

/// Host addresses for the identity classifier's bindings: inside the generator's
/// bases, so rule prefixes often contain them.
pub(super) fn arb_host() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        3 => (0..V4_BASES.len(), 0u32..256)
            .prop_map(|(b, low)| IpNet::V4(Ipv4Net::new((V4_BASES[b] | low).into(), 32).expect("len"))),
        1 => (0..V6_BASES.len(), 0u128..256)
            .prop_map(|(b, low)| IpNet::V6(Ipv6Net::new((V6_BASES[b] | low).into(), 128).expect("len"))),
    ]
}

/// Endpoint bindings of the distinct prefixes of `picks` (a prefix whose address is
/// seen again is left out), numbered in order: program 0 or 1, or none, each way.
pub(super) fn distinct_bindings(picks: Vec<(IpNet, u8, u8)>) -> Vec<EndpointBinding> {
    let mut seen = std::collections::HashSet::new();
    let pick = |x: u8| (x < 2).then_some(ProgramId(x.into()));
    picks
        .into_iter()
        .filter(|(n, _, _)| seen.insert(n.trunc()))
        .enumerate()
        .map(|(i, (net, e, ig))| EndpointBinding {
            net,
            endpoint: EndpointId(i as u32),
            ingress: pick(ig),
            egress: pick(e),
        })
        .collect()
}

/// `host` unbound and left out of every list (what
/// [`IdentityClassifier::without_host`] promises).
pub(super) fn remove_host(set: &mut PolicySet, host: IpNet) {
    set.endpoints.retain(|e| e.net != host);
    for p in &mut set.programs {
        let pols = p.tiers.iter_mut().flat_map(|t| &mut t.policies);
        for m in pols
            .chain(&mut p.profiles)
            .flat_map(|pol| &mut pol.rules)
            .map(|r| &mut r.matches)
        {
            for l in [
                m.src_nets.as_mut(),
                Some(&mut m.not_src_nets),
                m.dst_nets.as_mut(),
                Some(&mut m.not_dst_nets),
            ]
            .into_iter()
            .flatten()
            {
                *l = l.iter().copied().filter(|n| n.trunc() != host).collect();
            }
        }
    }
}

/// Every list of `set` that contains `like`'s address also gets `host` (what
/// [`IdentityClassifier::with_host`] promises), and `host` is bound.
pub(super) fn add_like(set: &mut PolicySet, host: IpNet, like: IpNet, binding: EndpointBinding) {
    let a = like.addr();
    for p in &mut set.programs {
        let pols = p.tiers.iter_mut().flat_map(|t| &mut t.policies);
        for m in pols
            .chain(&mut p.profiles)
            .flat_map(|pol| &mut pol.rules)
            .map(|r| &mut r.matches)
        {
            for l in [
                m.src_nets.as_mut(),
                Some(&mut m.not_src_nets),
                m.dst_nets.as_mut(),
                Some(&mut m.not_dst_nets),
            ]
            .into_iter()
            .flatten()
            {
                if l.iter().any(|n| n.contains(&a)) {
                    *l = l.iter().copied().chain([host]).collect();
                }
            }
        }
    }
    set.endpoints.push(binding);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// The identity classifier against the linear reference on the same set, then
    /// after host bindings added (like an existing one) and removed: every verdict
    /// and trace agree, or the change is refused. The last `lag` generations are
    /// kept alive meanwhile (a worker still reading them: the next change cannot
    /// reuse their tables' buffers and copies) and still classify as their sets at
    /// the end; with `lag` 0 or 1 each change writes into the recycled buffers.
    #[test]
    fn identity_classifier_agrees_with_linear(
        a in arb_program(),
        b in arb_program(),
        hosts in prop::collection::vec((arb_host(), 0u8..3, 0u8..3), 0..6),
        adds in prop::collection::vec((arb_host(), any::<prop::sample::Index>(), any::<bool>()), 0..8),
        picks in arb_picks(24),
        lag in 0usize..3,
    ) {
        let endpoints = distinct_bindings(hosts);
        // Rules name the hosts too, as selectors lowered to addresses do.
        let mut a = a;
        if let Some(r) = a.tiers.iter_mut().flat_map(|t| &mut t.policies).flat_map(|p| &mut p.rules).next() {
            let nets: Vec<IpNet> = endpoints.iter().step_by(2).map(|e| e.net).collect();
            r.matches.src_nets = Some(nets.into());
        }
        let mut set = PolicySet { programs: vec![a.clone(), b], endpoints };
        let mut c = IdentityClassifier::build(&set, &BuildConfig::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut keys = packets(&a, &picks);
        let hosts_of = |s: &PolicySet| -> Vec<(Family, u128)> {
            s.endpoints.iter().map(|e| match e.net {
                IpNet::V4(n) => (Family::V4, u128::from(u32::from(n.addr()))),
                IpNet::V6(n) => (Family::V6, u128::from(n.addr())),
            }).collect()
        };
        let check = |c: &IdentityClassifier, set: &PolicySet, keys: &mut Vec<FlowKey>| -> Result<(), TestCaseError> {
            let hs = hosts_of(set);
            for (i, &(f, h)) in hs.iter().enumerate() {
                if let Some(&(g, o)) = hs.get((i + 1) % hs.len()) && f == g {
                    keys.push(FlowKey { src: h, dst: o, sport: 1, dport: 80, proto: proto::TCP, family: f, ifindex: 0 });
                }
            }
            let l = LinearClassifier::new(set.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want = vec![FlowVerdicts::default(); keys.len()];
            l.classify(keys, &mut want);
            let mut got = vec![FlowVerdicts::default(); keys.len()];
            c.classify(keys, &mut got);
            let resolve = |cl: &dyn Classify, side: Option<(EndpointId, Verdicts)>| {
                side.map(|(id, v)| (id, v.enforced.verdict, cl.trace(v.enforced.trace).to_vec(), v.pending.verdict, cl.trace(v.pending.trace).to_vec()))
            };
            for (k, (g, w)) in keys.iter().zip(got.iter().zip(&want)) {
                prop_assert_eq!(resolve(c, g.egress), resolve(&l, w.egress), "egress of {:?}", k);
                prop_assert_eq!(resolve(c, g.ingress), resolve(&l, w.ingress), "ingress of {:?}", k);
            }
            Ok(())
        };
        check(&c, &set, &mut keys)?;
        let mut readers = std::collections::VecDeque::new();
        for (host, which, remove) in adds {
            if set.endpoints.is_empty() {
                break;
            }
            readers.push_back((c.clone(), set.clone()));
            if readers.len() > lag {
                readers.pop_front();
            }
            let i = which.index(set.endpoints.len());
            if remove {
                let gone = set.endpoints[i].net;
                match c.without_host(gone) {
                    Ok(next) => {
                        // As a control plane would: no list names the host any more.
                        remove_host(&mut set, gone);
                        c = next;
                    }
                    Err(_) => continue,
                }
            } else {
                let like = set.endpoints[i].clone();
                let binding = EndpointBinding { net: host, endpoint: EndpointId(100 + set.endpoints.len() as u32), ..like.clone() };
                match c.with_host(host, binding.endpoint, binding.ingress, binding.egress, like.net) {
                    Ok(next) => {
                        add_like(&mut set, host, like.net, binding);
                        c = next;
                    }
                    Err(_) => continue,
                }
            }
            check(&c, &set, &mut keys)?;
        }
        for (r, rs) in &readers {
            check(r, rs, &mut keys)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Flattening with the boxes memoized across views and programs (one memo per
    /// family, as a build of several programs does) gives exactly the lists that
    /// computing every rule's boxes afresh gives.
    #[test]
    fn memoized_boxes_flatten_as_fresh_ones(
        a in arb_program(),
        b in arb_program(),
    ) {
        use flatten::BoxMemo;
        let parts = |l: Vec<flatten::Entry>| {
            l.into_iter().map(|e| (e.mbox, e.verdict, e.trace)).collect::<Vec<_>>()
        };
        for family in [Family::V4, Family::V6] {
            let kept = BoxMemo::new(true);
            for p in [&a, &b, &a] {
                for view in [View::Enforced, View::Pending] {
                    let memo = flatten::flatten(p, family, view, 1 << 16, &kept);
                    let fresh = flatten::flatten(p, family, view, 1 << 16, &BoxMemo::new(false));
                    match (memo, fresh) {
                        (Ok(m), Ok(f)) => prop_assert_eq!(parts(m), parts(f)),
                        (m, f) => prop_assert_eq!(m.is_ok(), f.is_ok()),
                    }
                }
            }
        }
    }
}

/// `single_tree_skip_factor`: on 2000 crossing rules in a 16 MiB budget, the first
/// small single tree fails projecting far more than the room a later single tree
/// would get, so the default skips that attempt (one attempt fewer) and keeps the
/// same partitions as always trying it (factor 0); both agree with the linear
/// reference.
#[test]
fn a_hopeless_single_tree_is_not_tried_again() {
    let mut s = 11u64;
    let p = crossing_rules_n(&mut s, 2000);
    let keys = packets(&p, &edge_picks(&mut s));
    let set = PolicySet {
        programs: vec![p.clone()],
        endpoints: vec![],
    };
    let stats = |f: f64| {
        let cfg = BuildConfig {
            memory_budget: 16 << 20,
            single_tree_skip_factor: f,
            ..BuildConfig::default()
        };
        check_program_with(&p, &keys, &cfg).expect("agree");
        *Classifier::build(&set, &cfg).expect("builds").stats()
    };
    let (always, default) = (
        stats(0.0),
        stats(BuildConfig::default().single_tree_skip_factor),
    );
    assert!(always.trees > 2, "partitioned: {always:?}");
    assert_eq!((default.trees, default.bytes), (always.trees, always.bytes));
    assert_eq!(
        default.attempts + 1,
        always.attempts,
        "{default:?} {always:?}"
    );
}

/// A failed partition tree settles a later plan only when that plan builds the same
/// group (the same signatures) in at most the room the tree overflowed; the groups
/// a plan does not build (mask 0) settle nothing.
#[test]
fn a_failed_group_settles_only_plans_with_it_in_no_more_room() {
    let failed = [(0b0101u16, 64 << 20), (0b0010, 8 << 20)];
    // The same group, in the same or a smaller room: settled.
    assert!(settles(&failed, &[0b0101, 0b1000], 64 << 20));
    assert!(settles(&failed, &[0b1000, 0b0101], 32 << 20));
    assert!(settles(&failed, &[0b0010], 8 << 20));
    // In a larger room it may fit: built.
    assert!(!settles(&failed, &[0b0101], (64 << 20) + 1));
    assert!(!settles(&failed, &[0b0010, 0b0101], 65 << 20));
    // A group with more or fewer signatures is another list: built.
    assert!(!settles(&failed, &[0b0111, 0b0100, 0b0001], 1 << 20));
    // Not built (mask 0), or nothing failed: built.
    assert!(!settles(&failed, &[0, 0], 1 << 20));
    assert!(!settles(&[], &[0b0101], 1 << 20));
    // The masks a plan builds: its groups' signatures that some entry has (here 0, 1
    // and 2; the plan groups them by bit 0), only the groups in `only`.
    let plan = plan_of(|s| s & 1);
    assert_eq!(group_masks(&plan, 0b0111, ALL_GROUPS), vec![0b0101, 0b0010]);
    assert_eq!(group_masks(&plan, 0b0111, 0b10), vec![0, 0b0010]);
}
