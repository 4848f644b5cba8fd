//! Property tests of the staged-policy semantics (CALICO_SEMANTICS §5) on random policy
//! sets, checked against relations that follow from the definitions rather than
//! against the evaluator's own code:
//! - adding staged policies never changes the enforced view (verdict and trace);
//! - the pending view of a set is the enforced view of the same set with every staged
//!   policy promoted to its enforced twin — same verdict, same trace up to the kind
//!   names and the end-of-tier trigger (pending: first policy of the tier; enforced:
//!   last enforced one).

use std::collections::BTreeMap;

use dataplane::program::View;
use proptest::prelude::*;

use super::tests::{cluster, resources};
use super::*;
use crate::model::{
    EntityRule, Kind, Object, ObjectMeta, PolicySpec, Port, Protocol, Resource, Rule, RuleAction,
};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client, namespace: ns1, labels: {app: client}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web, namespace: ns1, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: db, namespace: ns1, labels: {app: db}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.3/32]}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t1}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t2}
spec: {order: 20, defaultAction: Pass}
"#;

const SELECTORS: [&str; 4] = ["", "app == 'web'", "app == 'client'", "app != 'db'"];
const TIERS: [&str; 3] = ["t1", "t2", "default"];
const ADDRS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.0.2.1"];

#[derive(Clone, Debug)]
struct GenRule {
    action: RuleAction,
    protocol: Option<u8>,
    port: Option<u16>,
    peer: Option<usize>,
}

#[derive(Clone, Debug)]
struct GenPolicy {
    staged: bool,
    tier: usize,
    order: Option<u8>,
    selector: usize,
    ingress: Vec<GenRule>,
    egress: Vec<GenRule>,
}

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        prop_oneof![
            Just(RuleAction::Allow),
            Just(RuleAction::Deny),
            Just(RuleAction::Pass),
            Just(RuleAction::Log)
        ],
        prop_oneof![Just(None), Just(Some(6u8)), Just(Some(17u8))],
        prop_oneof![Just(None), Just(Some(80u16)), Just(Some(443u16))],
        prop_oneof![Just(None), (1usize..4).prop_map(Some)],
    )
        .prop_map(|(action, protocol, port, peer)| GenRule {
            action,
            protocol,
            // Ports need a port protocol (validation).
            port: protocol.and(port),
            peer,
        })
}

fn gen_policy() -> impl Strategy<Value = GenPolicy> {
    (
        any::<bool>(),
        0usize..3,
        prop_oneof![Just(None), (0u8..3).prop_map(Some)],
        0usize..4,
        prop::collection::vec(gen_rule(), 0..3),
        prop::collection::vec(gen_rule(), 0..3),
    )
        .prop_map(
            |(staged, tier, order, selector, ingress, egress)| GenPolicy {
                staged,
                tier,
                order,
                selector,
                ingress,
                egress,
            },
        )
}

fn rule(r: &GenRule) -> Rule {
    Rule {
        action: r.action,
        ip_version: None,
        protocol: r.protocol.map(Protocol),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        source: EntityRule {
            selector: r.peer.map(|i| SELECTORS[i].to_string()),
            ..EntityRule::default()
        },
        destination: EntityRule {
            ports: r.port.map(Port::Number).into_iter().collect(),
            ..EntityRule::default()
        },
        http: None,
        metadata: None,
    }
}

/// The policies as resources; `promote` turns staged ones into their enforced twins.
fn policies(ps: &[GenPolicy], keep_staged: bool, promote: bool) -> Vec<Resource> {
    let mut out = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        if p.staged && !keep_staged {
            continue;
        }
        let spec = PolicySpec {
            tier: Some(TIERS[p.tier].to_string()),
            order: p.order.map(f64::from),
            selector: Some(SELECTORS[p.selector].to_string()),
            ingress: p.ingress.iter().map(rule).collect(),
            egress: p.egress.iter().map(rule).collect(),
            ..PolicySpec::default()
        };
        let o = Object {
            metadata: ObjectMeta {
                name: format!("p{i}"),
                ..ObjectMeta::default()
            },
            spec,
        };
        out.push(if p.staged && !promote {
            Resource::StagedGlobalNetworkPolicy(o)
        } else {
            Resource::GlobalNetworkPolicy(o)
        });
    }
    out
}

fn build(ps: &[GenPolicy], keep_staged: bool, promote: bool) -> Cluster {
    let mut all = resources(BASE);
    all.extend(policies(ps, keep_staged, promote));
    Cluster::from_resources(&all).expect("cluster")
}

/// A trace with staged kinds written as their enforced twins and the end-of-tier
/// trigger left out.
fn normalised(o: &Outcome) -> (Verdict, Vec<(String, String, HitAction, i32)>) {
    let enforced_twin: BTreeMap<Kind, Kind> = [
        (Kind::StagedGlobalNetworkPolicy, Kind::GlobalNetworkPolicy),
        (Kind::StagedNetworkPolicy, Kind::NetworkPolicy),
    ]
    .into();
    let hits = o
        .hits
        .iter()
        .map(|h| {
            let kind = *enforced_twin.get(&h.kind).unwrap_or(&h.kind);
            let name = if h.rule_index == -1 && h.kind != Kind::Profile {
                String::new()
            } else {
                format!("{}:{}", kind.hit_short().unwrap_or("?"), h.name)
            };
            (h.tier.clone(), name, h.action, h.rule_index)
        })
        .collect();
    (o.verdict, hits)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn staged_policies_never_change_the_enforced_view(
        ps in prop::collection::vec(gen_policy(), 1..7),
        src in 0usize..4,
        dst in 0usize..4,
        proto in prop_oneof![Just(6u8), Just(17u8)],
        dport in prop_oneof![Just(80u16), Just(443u16), Just(22u16)],
    ) {
        let with = build(&ps, true, false);
        let without = build(&ps, false, false);
        let f = Flow::new(ADDRS[src].parse().unwrap(), ADDRS[dst].parse().unwrap(), proto, 40000, dport).unwrap();
        let (a, b) = (evaluate(&with, &f), evaluate(&without, &f));
        prop_assert_eq!(a.reporters.len(), b.reporters.len());
        for (x, y) in a.reporters.iter().zip(&b.reporters) {
            prop_assert_eq!(&x.enforced, &y.enforced);
        }
    }

    #[test]
    fn pending_is_the_enforced_view_with_staged_promoted(
        ps in prop::collection::vec(gen_policy(), 1..7),
        src in 0usize..4,
        dst in 0usize..4,
        proto in prop_oneof![Just(6u8), Just(17u8)],
        dport in prop_oneof![Just(80u16), Just(443u16), Just(22u16)],
    ) {
        let staged = build(&ps, true, false);
        let promoted = build(&ps, true, true);
        let f = Flow::new(ADDRS[src].parse().unwrap(), ADDRS[dst].parse().unwrap(), proto, 40000, dport).unwrap();
        for (r, ip, dir) in [
            (Reporter::Src, f.src, PolicyType::Egress),
            (Reporter::Dst, f.dst, PolicyType::Ingress),
        ] {
            let Some(ep) = staged.endpoint_at(ip) else { continue };
            let pending = evaluate_endpoint(&staged, ep, dir, &f, View::Pending);
            let ep2 = promoted.endpoint_at(ip).expect("same endpoints");
            let enforced = evaluate_endpoint(&promoted, ep2, dir, &f, View::Enforced);
            prop_assert_eq!(normalised(&pending), normalised(&enforced), "{:?} {}", r, f);
        }
    }
}

#[test]
fn the_base_set_loads() {
    let c = cluster(BASE);
    assert_eq!(c.endpoints.len(), 3);
    assert!(c.tiers.contains_key("t1") && c.tiers.contains_key("t2"));
}
