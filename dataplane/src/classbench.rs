//! ClassBench filter sets as [`Program`]s, and trace headers as [`FlowKey`]s.
//!
//! A set becomes one tier with default Deny in which every filter is its own policy
//! (`PolicyId` = filter index) holding one Allow rule (rule index 0), so the first hit
//! of a trace names the first matching filter. Every `staged_every`-th filter (index
//! `i % staged_every == staged_every - 1`, as `rte_acl_bench -s`) is staged: the
//! pending view then sees all filters, the enforced view all but those — the two
//! categories `rte_acl_bench` classifies with `-c 2`.

use ipnet::{IpNet, Ipv4Net};
use pcap::classbench::{Filter, Header};

use crate::program::{
    Action, Family, FlowKey, Match, Policy, PolicyId, PortRange, Program, Rule, Tier, TierDefault,
    TierId,
};

/// The Match of one filter (5-tuple; the flags field is ignored).
pub fn match_of(f: &Filter) -> Match {
    // A length over 32 cannot come from the parser; it matches nothing rather than panic.
    let net = |(a, len): (u32, u8)| {
        (len > 0).then(|| {
            Ipv4Net::new(a.into(), len)
                .map(|n| vec![IpNet::V4(n.trunc())].into())
                .unwrap_or_default()
        })
    };
    let ports = |(lo, hi): (u16, u16)| ((lo, hi) != (0, 65535)).then(|| vec![PortRange { lo, hi }]);
    Match {
        family: Some(Family::V4),
        protocol: (f.proto.1 != 0).then_some(f.proto.0 & f.proto.1),
        src_nets: net(f.src),
        dst_nets: net(f.dst),
        src_ports: ports(f.sport),
        dst_ports: ports(f.dport),
        ..Match::default()
    }
}

/// The program of a filter set; `staged_every = 0` stages nothing.
pub fn program_of(filters: &[Filter], staged_every: usize) -> Program {
    let policies = filters
        .iter()
        .enumerate()
        .map(|(i, f)| Policy {
            id: PolicyId(i as u32),
            staged: staged_every != 0 && i % staged_every == staged_every - 1,
            rules: vec![Rule {
                index: 0,
                action: Action::Allow,
                matches: match_of(f),
            }],
        })
        .collect();
    Program {
        tiers: vec![Tier {
            id: TierId(0),
            default_action: TierDefault::Deny,
            policies,
        }],
        profiles: Vec::new(),
    }
}

/// The key of a trace header.
pub fn key_of(h: &Header) -> FlowKey {
    FlowKey {
        src: h.src.into(),
        dst: h.dst.into(),
        sport: h.sport,
        dport: h.dport,
        proto: h.proto,
        family: Family::V4,
        ifindex: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::classifier::{BuildConfig, Classifier, Kernel};
    use crate::linear::evaluate;
    use crate::program::{HitAction, PolicySet, ProgramId, Verdicts, View};

    /// The filter a view's trace names: its first hit, an Allow of that filter.
    fn named(trace: &[crate::program::Hit]) -> Option<u32> {
        trace
            .first()
            .filter(|h| h.action == HitAction::Allow && h.rule_index == 0)
            .map(|h| h.policy.0)
    }

    /// Checks every line of `set`'s trace in the tree (and every `linear_every`-th line
    /// in the linear reference): pending = the `.firstmatch` filter, enforced = the
    /// first matching non-staged filter (brute force over the parsed filters). The 1K
    /// sets are the repository's fixtures; the 10K sets are in `shared/data`.
    fn check(set: &str, linear_every: usize) {
        let dir = if set.ends_with("_1k") {
            pcap::shared::fixtures("classbench")
        } else {
            let Some(dir) = pcap::shared::data_dir(
                Path::new(env!("CARGO_MANIFEST_DIR")),
                "classbench",
                "ClassBench 10K trace tests",
            ) else {
                return;
            };
            dir
        };
        let filters = pcap::classbench::read_filters(&dir.join(set)).expect("filters");
        let trace = pcap::classbench::read_trace(&dir.join(format!("{set}_trace"))).expect("trace");
        let first =
            pcap::classbench::read_first_match(&dir.join(format!("{set}_trace.firstmatch")))
                .expect("oracle");
        assert_eq!(first.len(), trace.len());
        let program = program_of(&filters, 10);
        let ps = PolicySet {
            programs: vec![program.clone()],
            endpoints: vec![],
        };
        let mut c = Classifier::build(&ps, &BuildConfig::default()).expect("builds");
        let keys: Vec<FlowKey> = trace.iter().map(key_of).collect();
        let d = crate::program::Decision {
            verdict: crate::program::Verdict::Deny,
            trace: crate::program::TraceId(0),
        };
        let enforced: Vec<Option<u32>> = trace
            .iter()
            .map(|h| {
                filters
                    .iter()
                    .enumerate()
                    .position(|(j, f)| j % 10 != 9 && f.matches(h))
                    .map(|j| j as u32)
            })
            .collect();
        // Every line in every walk kernel this CPU runs.
        for kernel in Kernel::available() {
            c.set_kernel(kernel);
            let mut out = vec![
                Verdicts {
                    enforced: d,
                    pending: d
                };
                keys.len()
            ];
            c.classify_program(ProgramId(0), &keys, &mut out);
            for (i, v) in out.iter().enumerate() {
                let line = i + 1;
                let kernel = kernel.name();
                use crate::program::Classify;
                assert_eq!(
                    named(c.trace(v.pending.trace)),
                    Some(first[i]),
                    "{set}_trace:{line} pending ({kernel})"
                );
                assert_eq!(
                    named(c.trace(v.enforced.trace)),
                    enforced[i],
                    "{set}_trace:{line} enforced ({kernel})"
                );
            }
        }
        for (i, k) in keys.iter().enumerate() {
            let (enforced, line) = (enforced[i], i + 1);
            if i % linear_every == 0 {
                assert_eq!(
                    named(&evaluate(&program, k, View::Pending).trace),
                    Some(first[i]),
                    "{set}_trace:{line} linear pending"
                );
                assert_eq!(
                    named(&evaluate(&program, k, View::Enforced).trace),
                    enforced,
                    "{set}_trace:{line} linear enforced"
                );
            }
        }
    }

    #[test]
    fn acl1_1k_trace() {
        check("acl1_1k", 1);
    }

    #[test]
    fn fw1_1k_trace() {
        check("fw1_1k", 1);
    }

    #[test]
    #[cfg_attr(
        not(tiergate_shared),
        ignore = "needs shared/ data: set TIERGATE_SHARED_DIR"
    )]
    fn acl1_10k_trace() {
        check("acl1_10k", 50);
    }

    #[test]
    #[cfg_attr(
        not(tiergate_shared),
        ignore = "needs shared/ data: set TIERGATE_SHARED_DIR"
    )]
    fn fw1_10k_trace() {
        check("fw1_10k", 50);
    }

    /// Every line of the 10K traces in the linear reference too (minutes).
    #[test]
    #[ignore = "long: linear reference over the full 10K traces"]
    fn ten_k_traces_linear_every_line() {
        check("acl1_10k", 1);
        check("fw1_10k", 1);
    }

    #[test]
    fn staged_every_tenth_filter_and_one_policy_per_filter() {
        let f = pcap::classbench::parse_filters(
            &"@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n".repeat(20),
            Path::new("x"),
        )
        .expect("parses");
        let p = program_of(&f, 10);
        let staged: Vec<usize> = p.tiers[0]
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.staged)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(staged, vec![9, 19]);
        let m = &p.tiers[0].policies[0].rules[0].matches;
        assert_eq!(m.protocol, Some(6));
        assert_eq!(m.src_ports, None, "0 : 65535 is no criterion");
        assert_eq!(m.dst_ports, Some(vec![PortRange::single(80)]));
        assert_eq!(m.dst_nets, None, "/0 is no criterion");
    }
}
