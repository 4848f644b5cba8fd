//! One test per lowering rule: the exact IR a Calico construct lowers to, and the
//! names the results map back to. Each scenario is also checked end to end against
//! `eval` (the three-way property on hand-picked flows).

use std::net::IpAddr;

use dataplane::linear::LinearClassifier;
use dataplane::program::{
    Action, EndpointId, Family, FlowKey, Hit, HitAction, IcmpMatch, Match, PolicyId, PortRange,
    Program, Rule, proto,
};

use super::proptests::check;
use super::*;
use crate::eval;
use crate::model::{self, Resource};
use crate::store::Store;

// ---------------------------------------------------------------------------------
// Helpers

/// Loads, defaults and validates YAML as `tiergate` does.
fn resources(yaml: &str) -> Vec<Resource> {
    let loaded = model::load_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e:?}"));
    let mut store = Store::new();
    store.apply(loaded).unwrap_or_else(|e| panic!("{e:?}"));
    store.resources().cloned().collect()
}

fn lowered(yaml: &str) -> (Cluster, Lowered) {
    let c = Cluster::from_resources(&resources(yaml)).expect("cluster");
    let l = lower(&c).expect("lower");
    (c, l)
}

fn nets(s: &[&str]) -> Nets {
    s.iter().map(|n| n.parse().expect("prefix")).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn tcp(src: &str, dst: &str, dport: u16) -> FlowKey {
    FlowKey::new(ip(src), ip(dst), proto::TCP, 40000, dport).expect("flow")
}

/// The program bound to an address in a direction.
fn program<'a>(l: &'a Lowered, addr: &str, ingress: bool) -> &'a Program {
    let a = ip(addr);
    let b = l
        .set
        .endpoints
        .iter()
        .filter(|b| b.net.contains(&a))
        .max_by_key(|b| b.net.prefix_len())
        .unwrap_or_else(|| panic!("no endpoint at {addr}"));
    let id = if ingress { b.ingress } else { b.egress }.expect("program");
    &l.set.programs[id.0 as usize]
}

/// The rules of the only policy applying to `addr` in a direction.
fn rules<'a>(l: &'a Lowered, addr: &str, ingress: bool) -> &'a [Rule] {
    let p = program(l, addr, ingress);
    assert_eq!(p.tiers.len(), 1, "one tier");
    assert_eq!(p.tiers[0].policies.len(), 1, "one policy");
    &p.tiers[0].policies[0].rules
}

/// Asserts eval ≡ linear over the lowered store on every flow.
#[track_caller]
fn agree(yaml: &str, flows: &[FlowKey]) {
    if let Err(e) = check(&resources(yaml), flows) {
        panic!("{e}");
    }
}

/// Every TCP/UDP/ICMP flow between the given addresses on the given ports.
fn grid(addrs: &[&str], ports: &[u16]) -> Vec<FlowKey> {
    let mut out = Vec::new();
    for s in addrs {
        for d in addrs {
            let (s, d) = (ip(s), ip(d));
            if s.is_ipv4() != d.is_ipv4() {
                continue;
            }
            for p in ports {
                for pr in [proto::TCP, proto::UDP, proto::SCTP] {
                    out.extend(FlowKey::new(s, d, pr, 40000, *p));
                }
            }
            let icmp = if s.is_ipv4() {
                proto::ICMP
            } else {
                proto::ICMPV6
            };
            out.extend(FlowKey::new(s, d, icmp, 8, 0));
            out.extend(FlowKey::new(s, d, 47, 0, 0));
        }
    }
    out
}

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ns1, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns2, labels: {team: b}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns1, labels: {app: web}, generateName: web-}
spec:
  orchestrator: k8s
  serviceAccountName: web-sa
  ipNetworks: [10.0.0.1/32]
  ports: [{name: http, protocol: TCP, port: 8080}, {name: dns, protocol: UDP, port: 53}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: db, namespace: ns1, labels: {app: db}}
spec:
  orchestrator: k8s
  ipNetworks: [10.0.0.2/32]
  ports: [{name: http, protocol: TCP, port: 9090}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web, namespace: ns2, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.1.1/32, "fd00::1/128"]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: gw-eth0, labels: {app: gw}}
spec: {node: gw, interfaceName: eth0, expectedIPs: [192.168.0.1], profiles: [edge]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: office, namespace: ns1, labels: {app: web}}
spec: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {app: web}}
spec: {nets: [203.0.113.0/24]}
"#;

const ADDRS: [&str; 8] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "192.168.0.1",
    "198.51.100.9",
    "203.0.113.9",
    "8.8.8.8",
    "fd00::1",
];

fn with_pods(policies: &str) -> String {
    format!("{PODS}\n---\n{policies}")
}

/// A GNP selecting `app == 'db'` with one ingress rule.
fn db_ingress(rule: &str) -> String {
    with_pods(&format!(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: p}}
spec:
  selector: "app == 'db'"
  ingress: [{rule}]
"#
    ))
}

fn allow(index: u32, matches: Match) -> Rule {
    Rule {
        index,
        action: Action::Allow,
        matches,
    }
}

// ---------------------------------------------------------------------------------
// Selectors → prefixes

#[test]
fn selector_resolves_to_endpoints_and_network_sets() {
    let y = db_ingress("{action: Allow, source: {selector: \"app == 'web'\"}}");
    let (_, l) = lowered(&y);
    assert_eq!(
        rules(&l, "10.0.0.2", true),
        [allow(
            0,
            Match {
                src_nets: Some(nets(&[
                    "10.0.0.1/32",
                    "10.0.1.1/32",
                    "198.51.100.0/24",
                    "203.0.113.0/24",
                    "fd00::1/128"
                ])),
                ..Match::default()
            }
        )]
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn namespaced_policy_scopes_selectors_to_its_namespace() {
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns1}
spec:
  selector: "app == 'db'"
  ingress: [{action: Allow, source: {selector: "app == 'web'"}}]
"#,
    );
    let (_, l) = lowered(&y);
    // ns1's web pod and ns1's network set; not ns2's pod, not the global set.
    assert_eq!(
        rules(&l, "10.0.0.2", true)[0].matches.src_nets,
        Some(nets(&["10.0.0.1/32", "198.51.100.0/24"]))
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn not_selector_is_a_negated_set_and_not_namespace_scoped() {
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns1}
spec:
  selector: "app == 'db'"
  ingress: [{action: Allow, source: {notSelector: "app == 'web'"}}]
"#,
    );
    let (_, l) = lowered(&y);
    // "In my namespace, and not web anywhere": the namespace term is positive.
    let m = &rules(&l, "10.0.0.2", true)[0].matches;
    assert_eq!(m.src_nets, Some(nets(&["10.0.0.2/32"])));
    assert!(m.not_src_nets.is_empty(), "simplified away: {m:?}");
    agree(&y, &grid(&ADDRS, &[80]));

    // In a global policy, notSelector alone matches unknown addresses too.
    let y = db_ingress("{action: Allow, source: {notSelector: \"has(app)\"}}");
    let (_, l) = lowered(&y);
    let m = &rules(&l, "10.0.0.2", true)[0].matches;
    assert_eq!(m.src_nets, None);
    assert_eq!(
        m.not_src_nets,
        nets(&[
            "10.0.0.1/32",
            "10.0.0.2/32",
            "10.0.1.1/32",
            "192.168.0.1/32",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "fd00::1/128"
        ])
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn namespace_selectors_all_global_and_labels() {
    for (sel, want) in [
        ("team == 'b'", nets(&["10.0.1.1/32", "fd00::1/128"])),
        (
            "all()",
            nets(&[
                "10.0.0.1/32",
                "10.0.0.2/32",
                "10.0.1.1/32",
                "198.51.100.0/24",
                "fd00::1/128",
            ]),
        ),
        ("global()", nets(&["192.168.0.1/32", "203.0.113.0/24"])),
    ] {
        let y = db_ingress(&format!(
            "{{action: Allow, source: {{namespaceSelector: \"{sel}\"}}}}"
        ));
        let (_, l) = lowered(&y);
        assert_eq!(
            rules(&l, "10.0.0.2", true)[0].matches.src_nets,
            Some(want),
            "{sel}"
        );
        agree(&y, &grid(&ADDRS, &[80]));
    }
}

#[test]
fn service_accounts_select_pods_running_as_them() {
    let y = db_ingress(
        "{action: Allow, source: {serviceAccounts: {names: [web-sa, other]}, selector: \"has(app)\"}}",
    );
    let (_, l) = lowered(&y);
    assert_eq!(
        rules(&l, "10.0.0.2", true)[0].matches.src_nets,
        Some(nets(&["10.0.0.1/32"]))
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn nets_intersect_selectors_and_not_nets_unite_not_selectors() {
    let y = db_ingress(
        "{action: Allow, source: {nets: [10.0.0.0/8, 203.0.113.0/25], selector: \"app == 'web'\", notNets: [10.0.1.0/24], notSelector: \"app == 'gw'\"}}",
    );
    let (_, l) = lowered(&y);
    let m = &rules(&l, "10.0.0.2", true)[0].matches;
    // web ∩ (10/8 ∪ 203.0.113.0/25) = 10.0.0.1, 10.0.1.1, 203.0.113.0/25; minus 10.0.1.0/24.
    assert_eq!(m.src_nets, Some(nets(&["10.0.0.1/32", "203.0.113.0/25"])));
    // Exclusions that cannot overlap what remains are dropped.
    assert!(m.not_src_nets.is_empty(), "{m:?}");
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn a_selector_matching_nothing_drops_the_rule() {
    let y = db_ingress("{action: Allow, source: {selector: \"app == 'nope'\"}}");
    let (_, l) = lowered(&y);
    assert!(rules(&l, "10.0.0.2", true).is_empty());
    agree(&y, &grid(&ADDRS, &[80]));
}

// ---------------------------------------------------------------------------------
// Ports

#[test]
fn named_ports_split_the_rule_under_one_index() {
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: "app == 'gw'"
  egress:
  - {action: Deny, protocol: UDP}
  - {action: Allow, protocol: TCP, destination: {selector: "has(app)", ports: [443, http]}}
"#,
    );
    let (_, l) = lowered(&y);
    let r = rules(&l, "192.168.0.1", false);
    let tcp_to = |dst: Option<Nets>, ports: &[(u16, u16)]| {
        allow(
            1,
            Match {
                protocol: Some(proto::TCP),
                dst_nets: dst,
                dst_ports: Some(ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect()),
                ..Match::default()
            },
        )
    };
    let all = nets(&[
        "10.0.0.1/32",
        "10.0.0.2/32",
        "10.0.1.1/32",
        "192.168.0.1/32",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "fd00::1/128",
    ]);
    assert_eq!(
        r[1..],
        [
            tcp_to(Some(all), &[(443, 443)]),
            // http is 8080/TCP on web-1 and 9090/TCP on db.
            tcp_to(Some(nets(&["10.0.0.1/32"])), &[(8080, 8080)]),
            tcp_to(Some(nets(&["10.0.0.2/32"])), &[(9090, 9090)]),
        ]
    );
    agree(&y, &grid(&ADDRS, &[53, 443, 8080, 9090]));
}

#[test]
fn named_ports_of_other_protocols_or_unselected_endpoints_never_match() {
    // dns is UDP: a TCP rule cannot use it; db is not selected: its http is not used.
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: "app == 'gw'"
  egress:
  - {action: Allow, protocol: TCP, destination: {ports: [dns]}}
  - {action: Allow, protocol: TCP, destination: {selector: "app == 'web'", ports: [http]}}
"#,
    );
    let (_, l) = lowered(&y);
    let r = rules(&l, "192.168.0.1", false);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].index, 1);
    assert_eq!(r[0].matches.dst_nets, Some(nets(&["10.0.0.1/32"])));
    agree(&y, &grid(&ADDRS, &[53, 8080, 9090]));
}

#[test]
fn negated_named_ports_cut_the_address_space_into_regions() {
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: "app == 'gw'"
  egress:
  - {action: Allow, protocol: TCP, destination: {notPorts: [http, 22]}}
"#,
    );
    let (_, l) = lowered(&y);
    let r = rules(&l, "192.168.0.1", false);
    let tcp_not = |dst: Option<Nets>, not_dst: Nets, ports: &[u16]| {
        allow(
            0,
            Match {
                protocol: Some(proto::TCP),
                dst_nets: dst,
                not_dst_nets: not_dst,
                not_dst_ports: ports.iter().map(|p| PortRange::single(*p)).collect(),
                ..Match::default()
            },
        )
    };
    assert_eq!(
        r,
        [
            // Outside the endpoints with an http port: only 22 is excluded.
            tcp_not(None, nets(&["10.0.0.1/32", "10.0.0.2/32"]), &[22]),
            tcp_not(Some(nets(&["10.0.0.1/32"])), Nets::default(), &[22, 8080]),
            tcp_not(Some(nets(&["10.0.0.2/32"])), Nets::default(), &[22, 9090]),
        ]
    );
    agree(&y, &grid(&ADDRS, &[22, 80, 8080, 9090]));
}

#[test]
fn negated_named_port_regions_group_equal_exclusions_and_handle_nesting() {
    // Three /32 pods share http = 8080: one region for all three. A wide endpoint
    // (unvalidated input) with http = 80 contains two of them: inside it, 80 is also
    // excluded, except where the /32's own exclusion applies as well.
    let y = r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a, namespace: ns}
spec: {ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: b, namespace: ns}
spec: {ipNetworks: [10.0.0.2/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: c, namespace: ns}
spec: {ipNetworks: [10.0.1.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: wide, namespace: ns}
spec: {ipNetworks: [10.0.0.0/30], ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client, namespace: ns}
spec: {ipNetworks: [10.9.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: "projectcalico.org/name == 'x' || all()"
  egress: [{action: Allow, protocol: TCP, destination: {notPorts: [http]}}]
"#;
    let loaded = model::parse_str(y, "test.yaml").expect("parse");
    let resources: Vec<Resource> = loaded.into_iter().map(|l| l.resource).collect();
    let c = Cluster::from_resources(&resources).expect("cluster");
    let l = lower(&c).expect("lower");
    let r = &program(&l, "10.9.0.1", false).tiers[0].policies[0].rules;
    type Region = (Option<Nets>, Nets, Vec<PortRange>);
    let summary: Vec<Region> = r
        .iter()
        .map(|r| {
            let m = &r.matches;
            (
                m.dst_nets.clone(),
                m.not_dst_nets.clone(),
                m.not_dst_ports.clone(),
            )
        })
        .collect();
    let ports = |p: &[u16]| p.iter().map(|p| PortRange::single(*p)).collect::<Vec<_>>();
    assert_eq!(
        summary,
        [
            (None, nets(&["10.0.0.0/30", "10.0.1.1/32"]), vec![]),
            // Only 80: the wide endpoint minus the two pods inside it.
            (
                Some(nets(&["10.0.0.0/30"])),
                nets(&["10.0.0.1/32", "10.0.0.2/32"]),
                ports(&[80])
            ),
            // Both: the two pods inside the wide endpoint.
            (
                Some(nets(&["10.0.0.1/32", "10.0.0.2/32"])),
                Nets::default(),
                ports(&[80, 8080])
            ),
            // Only 8080: the third pod.
            (
                Some(nets(&["10.0.1.1/32"])),
                Nets::default(),
                ports(&[8080])
            ),
        ]
    );
    let addrs = [
        "10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.9.0.1", "10.9.9.9",
    ];
    check(&resources, &grid(&addrs, &[80, 8080, 443])).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn negated_named_ports_only_cut_where_the_allowed_ports_meet_them() {
    // `ports: [80, http], notPorts: [http]`: port 80 is never an http port, so its
    // alternative needs no address regions; the http alternatives exclude exactly
    // what they allow and vanish.
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: "app == 'gw'"
  egress: [{action: Allow, protocol: TCP, destination: {ports: [80, http], notPorts: [http]}}]
"#,
    );
    let (_, l) = lowered(&y);
    assert_eq!(
        rules(&l, "192.168.0.1", false),
        [allow(
            0,
            Match {
                protocol: Some(proto::TCP),
                dst_ports: Some(vec![PortRange::single(80)]),
                ..Match::default()
            }
        )]
    );
    agree(&y, &grid(&ADDRS, &[80, 8080, 9090]));
}

#[test]
fn port_criteria_that_resolve_to_nothing_still_require_ports() {
    // No endpoint has a port called "nope": `notPorts: [nope]` excludes nothing, but
    // an ICMP packet has no port and must not match (as in eval).
    let y = db_ingress("{action: Allow, source: {notPorts: [nope]}, protocol: TCP}");
    let (_, l) = lowered(&y);
    let r = rules(&l, "10.0.0.2", true);
    assert!(r.iter().all(|r| r.matches.protocol == Some(proto::TCP)));
    agree(&y, &grid(&ADDRS, &[80]));
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: edge}
spec:
  egress: [{action: Allow, destination: {notPorts: [nope]}}]
"#,
    );
    let (_, l) = lowered(&y);
    let p = program(&l, "192.168.0.1", false);
    assert_eq!(
        p.profiles[0].rules[0].matches.dst_ports,
        Some(vec![PortRange { lo: 0, hi: 65535 }])
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

// ---------------------------------------------------------------------------------
// Protocols, ICMP, IP version, rules that never match

#[test]
fn protocol_icmp_and_ip_version_map_directly() {
    let y = db_ingress(
        "{action: Allow, ipVersion: 4, protocol: ICMP, icmp: {type: 8}, notICMP: {type: 8, code: 1}, source: {nets: [10.0.0.0/8]}}",
    );
    let (_, l) = lowered(&y);
    assert_eq!(
        rules(&l, "10.0.0.2", true),
        [allow(
            0,
            Match {
                family: Some(Family::V4),
                protocol: Some(proto::ICMP),
                icmp: Some(IcmpMatch {
                    icmp_type: 8,
                    code: None
                }),
                not_icmp: Some(IcmpMatch {
                    icmp_type: 8,
                    code: Some(1)
                }),
                src_nets: Some(nets(&["10.0.0.0/8"])),
                ..Match::default()
            }
        )]
    );
    let mut flows = grid(&ADDRS, &[80]);
    for (t, code) in [(8, 0), (8, 1), (0, 0)] {
        flows.extend(FlowKey::new(
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            proto::ICMP,
            t,
            code,
        ));
    }
    agree(&y, &flows);
}

#[test]
fn ip_version_drops_the_other_family_from_resolved_sets() {
    let y = db_ingress(
        "{action: Allow, ipVersion: 6, notProtocol: UDP, source: {selector: \"app == 'web'\"}}",
    );
    let (_, l) = lowered(&y);
    assert_eq!(
        rules(&l, "10.0.0.2", true),
        [allow(
            0,
            Match {
                family: Some(Family::V6),
                not_protocol: Some(proto::UDP),
                src_nets: Some(nets(&["fd00::1/128"])),
                ..Match::default()
            }
        )]
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn regression_not_icmp_never_matches_a_non_icmp_packet() {
    // A v6 packet with protocol 1 is not ICMP: the IR's notICMP never matches it, and
    // eval used to let it through (found by the three-way property test).
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: "app == 'web'"
  egress: [{action: Deny, protocol: ICMP, notICMP: {type: 3, code: 0}}]
"#,
    );
    let key = FlowKey::new(ip("fd00::1"), ip("fd00::9"), proto::ICMP, 0, 0).expect("flow");
    agree(&y, &[key]);
    let c = Cluster::from_resources(&resources(&y)).expect("cluster");
    let e = eval::evaluate(&c, &Flow::from_key(&key));
    assert_eq!(
        e.reporter(Reporter::Src).map(|r| r.enforced.hit_strings()),
        Some(vec!["0|default|gnp:p|deny|-1".to_string()])
    );
}

#[test]
fn services_and_log_rules_lower_to_nothing_http_is_ignored() {
    let y = db_ingress(
        "{action: Log}, {action: Allow, source: {services: {name: dns, namespace: kube-system}}}, {action: Allow, protocol: TCP, http: {methods: [GET]}}",
    );
    let (_, l) = lowered(&y);
    assert_eq!(
        rules(&l, "10.0.0.2", true),
        [allow(
            2,
            Match {
                protocol: Some(proto::TCP),
                ..Match::default()
            }
        )]
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

// ---------------------------------------------------------------------------------
// Programs: tiers, staged, profiles, dedup, endpoints

#[test]
fn programs_follow_eval_ordering_and_are_shared() {
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: security.block}
spec: {tier: security, order: 1, selector: "app == 'web'", ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec: {selector: "app == 'web'", ingress: [{action: Allow, protocol: TCP}]}
"#,
    );
    let (_, l) = lowered(&y);
    let p = program(&l, "10.0.0.1", true);
    assert_eq!(p.tiers.len(), 2);
    assert_eq!(l.names.tier(p.tiers[0].id), Some("security"));
    assert_eq!(p.tiers[0].default_action, TierDefault::Pass);
    assert!(p.tiers[0].policies[0].staged);
    assert_eq!(l.names.tier(p.tiers[1].id), Some("default"));
    // web pods in ns1 and ns2 have the same policies but different kns. profiles.
    let b = |a: &str| {
        l.set
            .endpoints
            .iter()
            .find(|b| b.net.contains(&ip(a)))
            .and_then(|b| b.ingress)
    };
    assert_ne!(b("10.0.0.1"), b("10.0.1.1"));
    // Both of ns2/web's addresses share its programs.
    assert_eq!(b("10.0.1.1"), b("fd00::1"));
    agree(&y, &grid(&ADDRS, &[80]));

    // Two pods in one namespace with the same policies share one program.
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-2, namespace: ns1, labels: {app: web}}
spec: {orchestrator: k8s, serviceAccountName: web-sa, ipNetworks: [10.0.0.3/32]}
"#,
    );
    let (_, l) = lowered(&y);
    let b = |a: &str| {
        l.set
            .endpoints
            .iter()
            .find(|b| b.net.contains(&ip(a)))
            .map(|b| (b.ingress, b.egress))
    };
    assert_eq!(b("10.0.0.1"), b("10.0.0.3"));
    // db has no service account: a different profile list, a different program.
    assert_ne!(b("10.0.0.1"), b("10.0.0.2"));
    // No policies: ingress and egress evaluate the same profiles, so one program
    // serves both directions; four profile lists, four programs.
    assert_eq!(
        b("10.0.0.2"),
        Some((Some(ProgramId(1)), Some(ProgramId(1))))
    );
    assert_eq!(l.set.programs.len(), 4);
}

#[test]
fn overlapping_endpoint_prefixes_belong_to_the_first_endpoint() {
    // eval takes the first endpoint (store order) with the address; the data plane
    // takes the longest prefix. Lowering binds each prefix so both agree.
    let y = r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a-wide, namespace: ns1}
spec: {ipNetworks: [10.0.0.0/30]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: b-narrow, namespace: ns1}
spec: {ipNetworks: [10.0.0.1/32, 10.0.0.8/32]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: host}
spec: {expectedIPs: [10.0.0.8, 10.0.0.9]}
"#;
    // Overlapping endpoint prefixes only pass validation as equal /32s; decode the
    // rest as written.
    let loaded = model::parse_str(y, "test.yaml").expect("parse");
    let c = Cluster::from_resources(loaded.iter().map(|l| &l.resource)).expect("cluster");
    let l = lower(&c).expect("lower");
    let owner = |a: &str| l.names.peer(ip(a)).name;
    assert_eq!(owner("10.0.0.1"), "a-wide");
    assert_eq!(owner("10.0.0.8"), "b-narrow");
    assert_eq!(owner("10.0.0.9"), "host");
    assert_eq!(
        c.endpoint_at(ip("10.0.0.1")).map(|e| e.key.name.as_str()),
        Some("a-wide")
    );
    let resources: Vec<Resource> = loaded.into_iter().map(|l| l.resource).collect();
    let flows = grid(
        &["10.0.0.0", "10.0.0.1", "10.0.0.3", "10.0.0.8", "10.0.0.9"],
        &[80],
    );
    check(&resources, &flows).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------
// Names

#[test]
fn hit_strings_render_through_eval() {
    let y = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: p, namespace: ns1}
spec: {selector: "app == 'db'", ingress: [{action: Deny}]}
"#,
    );
    let (_, l) = lowered(&y);
    let p = program(&l, "10.0.0.2", true);
    let pid = p.tiers[0].policies[0].id;
    let prof = p.profiles[0].id;
    let hits = [
        Hit {
            policy: pid,
            action: HitAction::Deny,
            rule_index: 0,
        },
        Hit {
            policy: prof,
            action: HitAction::Allow,
            rule_index: 0,
        },
        Hit {
            policy: PolicyId::NO_PROFILE_MATCH,
            action: HitAction::Deny,
            rule_index: 0,
        },
        Hit {
            policy: PolicyId::NO_PROFILE_MATCH,
            action: HitAction::Deny,
            rule_index: -1,
        },
    ];
    assert_eq!(
        l.names.hit_strings(&hits),
        [
            "0|default|snp:ns1/p|deny|0",
            "1|__PROFILE__|pro:kns.ns1|allow|0",
            "2|__PROFILE__|pro:__NO_MATCH__|deny|0",
            "3|__PROFILE__|pro:__PROFILE__|deny|-1",
        ]
    );
    agree(&y, &grid(&ADDRS, &[80]));
}

#[test]
fn missing_profiles_lower_to_empty_profiles() {
    // gw-eth0 names profile `edge`, which does not exist: no rules, but it is there
    // (pending: "profiles exist, none decided" ⇒ deny without a hit).
    let (_, l) = lowered(PODS);
    let p = program(&l, "192.168.0.1", true);
    assert_eq!(p.profiles.len(), 1);
    assert!(p.profiles[0].rules.is_empty());
    assert_eq!(
        l.names
            .policy(p.profiles[0].id)
            .map(|n| n.key.name.as_str()),
        Some("edge")
    );
    agree(PODS, &grid(&ADDRS, &[80]));
}

#[test]
fn endpoint_and_peer_names_for_flow_logs() {
    let (_, l) = lowered(PODS);
    let web = l.names.peer(ip("10.0.0.1"));
    assert_eq!(
        (web.kind, web.name.as_str(), web.namespace.as_str()),
        (EndpointType::Workload, "web-*", "ns1")
    );
    assert!(
        web.labels.contains(&"app=web".to_string()),
        "{:?}",
        web.labels
    );
    assert!(
        web.labels
            .contains(&"projectcalico.org/namespace=ns1".to_string())
    );
    let db = l.names.peer(ip("10.0.0.2"));
    assert_eq!(db.name, "db");
    let v6 = l.names.peer(ip("fd00::1"));
    assert_eq!((v6.name.as_str(), v6.namespace.as_str()), ("web", "ns2"));
    assert_eq!(l.names.peer(ip("fd00::2")).name, "pub");
    let gw = l.names.peer(ip("192.168.0.1"));
    assert_eq!(
        (gw.kind, gw.name.as_str(), gw.namespace.as_str()),
        (EndpointType::Host, "gw", "-")
    );
    let office = l.names.peer(ip("198.51.100.9"));
    assert_eq!(
        (office.kind, office.name.as_str(), office.namespace.as_str()),
        (EndpointType::NetworkSet, "office", "ns1")
    );
    let partners = l.names.peer(ip("203.0.113.9"));
    assert_eq!(
        (partners.name.as_str(), partners.namespace.as_str()),
        ("partners", "-")
    );
    assert_eq!(
        l.names.peer(ip("8.8.8.8")),
        EndpointMeta::network(ip("8.8.8.8"))
    );
    assert_eq!(l.names.peer(ip("10.9.9.9")).name, "pvt");
    let id = l
        .set
        .endpoints
        .iter()
        .find(|b| b.net.contains(&ip("10.0.0.1")))
        .map(|b| b.endpoint)
        .expect("bound");
    assert_eq!(
        l.names.endpoint(id).map(|e| e.display.as_str()),
        Some("ns1/web-1")
    );
    assert!(l.names.endpoint(EndpointId(999)).is_none());
}

#[test]
fn network_set_peers_use_the_longest_prefix() {
    let y = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: wide}
spec: {nets: [10.0.0.0/8]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: narrow, namespace: ns}
spec: {nets: [10.1.0.0/16]}
"#;
    let (_, l) = lowered(y);
    assert_eq!(l.names.peer(ip("10.1.2.3")).name, "narrow");
    assert_eq!(l.names.peer(ip("10.2.0.1")).name, "wide");
}

#[test]
fn too_many_named_port_combinations_is_an_error() {
    let mut y = String::new();
    for i in 0..70 {
        y.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: w{i}, namespace: ns}}\nspec: {{ipNetworks: [10.0.{}.{}/32], ports: [{{name: http, protocol: TCP, port: {}}}]}}\n---\n",
            i / 200,
            i % 200 + 1,
            1000 + i
        ));
    }
    y.push_str(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: big}\nspec:\n  ingress: [{action: Allow, protocol: TCP, source: {ports: [http]}, destination: {ports: [http]}}]\n",
    );
    let c = Cluster::from_resources(&resources(&y)).expect("cluster");
    let err = lower(&c).unwrap_err();
    assert!(
        matches!(
            err,
            LowerError::RuleTooLarge {
                rule: 0,
                direction: "ingress",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("GlobalNetworkPolicy big: ingress rule 0 would lower to 4900"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------
// The bundled examples

#[test]
fn every_example_agrees_on_a_grid_of_flows() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("examples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    for dir in dirs {
        let c = crate::cli::eval::load_cluster(std::slice::from_ref(&dir))
            .unwrap_or_else(|code| panic!("{} does not load ({code})", dir.display()));
        let mut addrs: Vec<String> = Vec::new();
        for e in &c.endpoints {
            addrs.extend(e.nets.iter().map(|n| n.addr().to_string()));
        }
        for s in &c.network_sets {
            addrs.extend(s.nets.iter().map(|n| n.addr().to_string()));
        }
        addrs.push("8.8.8.8".into());
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let resources: Vec<Resource> = {
            let loaded = model::load_paths(std::slice::from_ref(&dir)).expect("load");
            let mut store = Store::new();
            store.apply(loaded).expect("apply");
            store.resources().cloned().collect()
        };
        let flows = grid(&addrs, &[53, 80, 443, 5432, 6379, 8080]);
        if let Err(e) = check(&resources, &flows) {
            panic!("{}: {e}", dir.display());
        }
    }
}

#[test]
fn evaluation_of_a_flow_between_unknown_addresses_has_no_reporters() {
    let (_, l) = lowered(PODS);
    let linear = LinearClassifier::new(l.set.clone()).expect("linear");
    let e = l
        .evaluation(&linear, &Flow::from_key(&tcp("8.8.8.8", "1.1.1.1", 53)))
        .expect("same family");
    assert!(e.reporters.is_empty());
}

/// felix renders a rule for an IP version only if each non-empty `nets`/`notNets` list
/// keeps a prefix of that version: `notNets: [fd00:ffff::/32]` never matches IPv4
/// traffic. (A rule mixing versions is rejected by validation, as Calico's validator
/// does, so that is the case users meet.)
#[test]
fn rules_are_rendered_only_for_the_versions_their_nets_name() {
    let yaml = format!(
        "{PODS}---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: only-v6}}
spec:
  selector: app == 'web'
  ingress:
  - action: Deny
    source: {{notNets: [\"fd00:ffff::/32\"]}}
  - action: Allow
"
    );
    let (_, l) = lowered(&yaml);
    let r = rules(&l, "10.0.1.1", true);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].matches.family, Some(Family::V6));
    assert_eq!(r[0].action, Action::Deny);
    assert_eq!((r[1].index, r[1].action), (1, Action::Allow));
    // IPv4 from anywhere: the first rule is not rendered for IPv4, so the Allow decides.
    let c = Cluster::from_resources(&resources(&yaml)).expect("cluster");
    let e = crate::eval::evaluate(
        &c,
        &crate::eval::Flow::new(ip("10.9.9.9"), ip("10.0.1.1"), proto::TCP, 40000, 80).unwrap(),
    );
    let dst = e
        .reporter(crate::flowlog::Reporter::Dst)
        .expect("dst reporter");
    assert_eq!(dst.enforced.verdict, crate::eval::Verdict::Allow);
    assert_eq!(
        dst.enforced.hit_strings(),
        ["0|default|gnp:only-v6|allow|1"]
    );
    agree(
        &yaml,
        &grid(&["10.9.9.9", "10.0.1.1", "fd00::1", "fd00:ffff::9"], &[80]),
    );
}

mod endpoint_names {
    use proptest::prelude::*;

    use super::super::{EndpointName, EndpointNames, NAMES_CHUNK};
    use crate::cluster::EndpointKind;
    use crate::flowlog::EndpointMeta;
    use crate::model::{Kind, ResourceKey};

    fn name(i: usize) -> EndpointName {
        EndpointName {
            key: ResourceKey {
                kind: Kind::WorkloadEndpoint,
                namespace: Some("ns".into()),
                name: format!("w{i}"),
            },
            kind: EndpointKind::Workload,
            display: format!("ns/w{i}"),
            meta: EndpointMeta::network("10.0.0.1".parse().unwrap()),
        }
    }

    proptest! {
        /// The chunked names read as a `Vec` of the same pushes and truncations does,
        /// and a clone taken before later changes still reads what it read then.
        #[test]
        fn agree_with_a_vec_and_clones_stay(
            steps in prop::collection::vec(
                (1usize..2 * NAMES_CHUNK, 0usize..3 * NAMES_CHUNK, any::<bool>()),
                1..6,
            ),
        ) {
            let mut names = EndpointNames::default();
            let mut twin: Vec<String> = Vec::new();
            let mut snaps = Vec::new();
            for (pushes, keep, snapshot) in steps {
                for _ in 0..pushes {
                    names.push(name(twin.len()));
                    twin.push(format!("w{}", twin.len()));
                }
                if snapshot {
                    snaps.push((names.clone(), twin.clone()));
                }
                names.truncate(keep);
                twin.truncate(keep);
                if snapshot {
                    snaps.push((names.clone(), twin.clone()));
                }
            }
            snaps.push((names, twin));
            for (n, t) in &snaps {
                prop_assert_eq!(n.len(), t.len());
                for (i, want) in t.iter().enumerate() {
                    prop_assert_eq!(n.get(i).map(|e| e.key.name.as_str()), Some(want.as_str()));
                }
                prop_assert!(n.get(t.len()).is_none());
            }
        }
    }
}
