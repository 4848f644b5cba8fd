//! The three-way property: for random policy stores and random flows,
//! `eval::evaluate` ≡ the linear classifier over the lowered Programs ≡ the compiled
//! decision-tree classifier over the same Programs — reporters, endpoints, both
//! verdicts and both traces as hit strings.
//!
//! The default run checks 1 600 stores × 64 flows (102 400 flows, each in three legs);
//! the ignored long run 20 000 × 64.
//!
//! Stores are drawn from a small vocabulary so that selectors, nets, named ports and
//! flows collide often: three namespaces, eight IPv4 and four IPv6 endpoint addresses
//! (some shared, some inside wider prefixes), labels from three keys, every policy
//! kind, tiers with both default actions and clashing orders, profiles, network sets,
//! and rules using every criterion with its negation. Flows are drawn mostly from
//! endpoint and network-set addresses and from the ports the rules name.

use std::collections::BTreeMap;
use std::net::IpAddr;

use dataplane::classifier::{BuildConfig, Classifier, IdentityClassifier};
use dataplane::linear::LinearClassifier;
use dataplane::program::{Classify, FlowKey, proto};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::lower;
use crate::eval::{self, Cluster, Flow};
use crate::model::{
    EndpointPort, EntityRule, HostEndpointSpec, HttpMatch, IcmpFields, IntOrString, IpBlock,
    K8sEgressRule, K8sIngressRule, K8sPeer, K8sPolicySpec, K8sPort, LabelSelector,
    LabelSelectorOperator, LabelSelectorRequirement, NamespaceSpec, Net, NetworkSetSpec, Object,
    ObjectMeta, PolicySpec, PolicyType, Port, ProfileSpec, Protocol, Resource, Rule, RuleAction,
    ServiceAccountMatch, ServiceMatch, StagedAction, TierDefaultAction, TierSpec,
    WorkloadEndpointSpec,
};

// ---------------------------------------------------------------------------------
// Vocabulary

const NAMESPACES: [&str; 3] = ["ns1", "ns2", "ns3"];
const SERVICE_ACCOUNTS: [&str; 2] = ["sa1", "sa2"];
const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const TIERS: [&str; 6] = ["default", "t1", "t2", "t3", "kube-admin", "missing"];

/// Endpoint addresses.
const V4_HOSTS: [&str; 8] = [
    "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8",
];
const V6_HOSTS: [&str; 4] = ["fd00::1", "fd00::2", "fd00::3", "fd00::4"];
/// Addresses that are no endpoint's (some in network sets).
const V4_OTHERS: [&str; 6] = [
    "10.0.0.9",
    "10.0.2.1",
    "192.168.0.7",
    "203.0.113.5",
    "8.8.8.8",
    "10.0.1.2",
];
const V6_OTHERS: [&str; 3] = ["fd00::9", "fd01::1", "2001:db8::1"];

const SET_NETS: [&str; 9] = [
    "10.0.0.0/29",
    "10.0.0.4/30",
    "10.0.0.5/32",
    "192.168.0.0/24",
    "203.0.113.0/24",
    "10.0.2.0/24",
    "fd00::/126",
    "fd01::/64",
    "0.0.0.0/0",
];
const RULE_NETS_V4: [&str; 7] = [
    "10.0.0.0/29",
    "10.0.0.2/32",
    "10.0.0.4/30",
    "192.168.0.0/16",
    "10.0.0.0/8",
    "203.0.113.5/32",
    "10.0.0.6/31",
];
const RULE_NETS_V6: [&str; 3] = ["fd00::/126", "fd00::2/128", "fd01::/16"];

const SELECTORS: [&str; 16] = [
    "all()",
    "has(app)",
    "!has(role)",
    "app == 'web'",
    "app != 'db'",
    "app in {'web', 'api'}",
    "app not in {'db'}",
    "role == 'fe'",
    "env == 'prod'",
    "env starts with 'pr'",
    "app contains 'e'",
    "has(projectcalico.org/namespace)",
    "projectcalico.org/namespace == 'ns1'",
    "pcns.team == 'a'",
    "zone == 'partner'",
    "has(zone)",
];
const NAMESPACE_SELECTORS: [&str; 7] = [
    "all()",
    "global()",
    "team == 'a'",
    "env == 'prod'",
    "has(team)",
    "projectcalico.org/name == 'ns2'",
    "!has(env)",
];

// ---------------------------------------------------------------------------------
// Strategies: building blocks

fn s(x: &str) -> String {
    x.to_string()
}

fn net(x: &str) -> Net {
    Net::parse(x).expect("vocabulary prefix")
}

fn meta(name: String, namespace: Option<&str>, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name,
        namespace: namespace.map(s),
        labels,
        ..ObjectMeta::default()
    }
}

fn labels(
    keys: &'static [(&'static str, &'static [&'static str])],
) -> BoxedStrategy<BTreeMap<String, String>> {
    let per_key: Vec<_> = keys
        .iter()
        .map(|(k, vals)| {
            option::weighted(0.5, select(vals.to_vec())).prop_map(move |v| v.map(|v| (s(k), s(v))))
        })
        .collect();
    per_key
        .prop_map(|kvs| kvs.into_iter().flatten().collect())
        .boxed()
}

fn endpoint_labels() -> BoxedStrategy<BTreeMap<String, String>> {
    labels(&[
        ("app", &["web", "db", "api"]),
        ("role", &["fe", "be"]),
        ("env", &["prod", "dev"]),
    ])
}

fn selector() -> BoxedStrategy<String> {
    let atom = || select(SELECTORS.to_vec()).prop_map(s);
    prop_oneof![
        5 => atom(),
        1 => (atom(), atom()).prop_map(|(a, b)| format!("{a} && {b}")),
        1 => (atom(), atom()).prop_map(|(a, b)| format!("{a} || {b}")),
        1 => atom().prop_map(|a| format!("!({a})")),
    ]
    .boxed()
}

fn protocol_name() -> impl Strategy<Value = Protocol> {
    select(vec![
        Protocol(proto::TCP),
        Protocol(proto::UDP),
        Protocol(proto::SCTP),
    ])
}

fn port() -> BoxedStrategy<Port> {
    prop_oneof![
        3 => select(vec![53u16, 80, 443, 8080, 9090]).prop_map(Port::Number),
        1 => select(vec![(80u16, 90u16), (1000, 2000), (8000, 8100)]).prop_map(|(a, b)| Port::Range(a, b)),
        3 => select(PORT_NAMES.to_vec()).prop_map(|n| Port::Named(s(n))),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------
// Rules

/// Which address family a rule's nets use (Calico rejects mixed ones).
fn rule_nets(v6: bool) -> BoxedStrategy<Vec<Net>> {
    let pool: Vec<&str> = if v6 {
        RULE_NETS_V6.to_vec()
    } else {
        RULE_NETS_V4.to_vec()
    };
    prop_oneof![
        3 => Just(Vec::new()),
        1 => vec(select(pool), 1..3).prop_map(|v| v.into_iter().map(net).collect()),
    ]
    .boxed()
}

fn entity(v6: bool, with_ports: bool) -> BoxedStrategy<EntityRule> {
    let ports = move || {
        if with_ports {
            prop_oneof![1 => Just(Vec::new()), 1 => vec(port(), 1..3)].boxed()
        } else {
            Just(Vec::new()).boxed()
        }
    };
    let service_accounts = (
        vec(select(SERVICE_ACCOUNTS.to_vec()).prop_map(s), 0..2),
        option::of(
            select(vec![
                "projectcalico.org/name == 'sa1'",
                "all()",
                "has(projectcalico.org/name)",
            ])
            .prop_map(s),
        ),
    )
        .prop_map(|(names, selector)| ServiceAccountMatch { names, selector });
    let everything = (
        (rule_nets(v6), rule_nets(v6)),
        option::weighted(0.4, selector()),
        option::weighted(0.3, selector()),
        option::weighted(0.3, select(NAMESPACE_SELECTORS.to_vec()).prop_map(s)),
        option::weighted(0.2, service_accounts.clone()),
    )
        .prop_map(
            |((nets, not_nets), selector, not_selector, namespace_selector, service_accounts)| {
                EntityRule {
                    nets,
                    not_nets,
                    selector,
                    not_selector,
                    namespace_selector,
                    service_accounts,
                    ..EntityRule::default()
                }
            },
        );
    // Mostly one criterion per side, so that rules match often enough to matter.
    let peer = prop_oneof![
        4 => Just(EntityRule::default()),
        2 => rule_nets(v6).prop_map(|nets| EntityRule { nets, ..EntityRule::default() }),
        1 => rule_nets(v6).prop_map(|not_nets| EntityRule { not_nets, ..EntityRule::default() }),
        3 => selector().prop_map(|s| EntityRule { selector: Some(s), ..EntityRule::default() }),
        2 => selector().prop_map(|s| EntityRule { not_selector: Some(s), ..EntityRule::default() }),
        2 => (select(NAMESPACE_SELECTORS.to_vec()), option::of(selector())).prop_map(|(n, sel)| EntityRule {
            namespace_selector: Some(s(n)),
            selector: sel,
            ..EntityRule::default()
        }),
        1 => service_accounts.prop_map(|sa| EntityRule { service_accounts: Some(sa), ..EntityRule::default() }),
        3 => everything,
        // `services` excludes selectors, nets, service accounts and ports.
        1 => Just(EntityRule {
            services: Some(ServiceMatch {
                name: s("kube-dns"),
                namespace: Some(s("kube-system")),
            }),
            ..EntityRule::default()
        }),
    ];
    (peer, ports(), ports())
        .prop_map(|(e, ports, not_ports)| {
            if e.services.is_some() {
                return e;
            }
            EntityRule {
                ports,
                not_ports,
                ..e
            }
        })
        .boxed()
}

fn icmp_fields() -> impl Strategy<Value = IcmpFields> {
    (select(vec![0u8, 3, 8]), option::of(select(vec![0u8, 1]))).prop_map(|(t, c)| IcmpFields {
        icmp_type: Some(t),
        code: c,
    })
}

fn rule() -> BoxedStrategy<Rule> {
    let action = select(vec![
        RuleAction::Allow,
        RuleAction::Allow,
        RuleAction::Deny,
        RuleAction::Pass,
        RuleAction::Log,
    ]);
    // (ipVersion, protocol): consistent as Calico validates them.
    let l3l4 = prop_oneof![
        3 => Just((None, None)),
        4 => protocol_name().prop_map(|p| (None, Some(p))),
        1 => Just((Some(4u8), Some(Protocol(proto::ICMP)))),
        1 => Just((None, Some(Protocol(proto::ICMP)))),
        1 => Just((Some(6u8), Some(Protocol(proto::ICMPV6)))),
        1 => Just((None, Some(Protocol(47)))),
        1 => select(vec![4u8, 6]).prop_map(|v| (Some(v), None)),
    ];
    (
        action,
        l3l4,
        option::weighted(
            0.15,
            select(vec![
                Protocol(proto::TCP),
                Protocol(proto::UDP),
                Protocol(proto::ICMP),
            ]),
        ),
        (
            option::weighted(0.3, icmp_fields()),
            option::weighted(0.3, icmp_fields()),
        ),
        any::<bool>(),
        0..20u8,
    )
        .prop_flat_map(
            move |(action, (ip_version, protocol), not_protocol, (icmp, not_icmp), v6, http)| {
                let with_ports = protocol.is_some_and(|p| p.supports_ports());
                let is_icmp = protocol.is_some_and(|p| p.0 == proto::ICMP || p.0 == proto::ICMPV6);
                let v6 = match ip_version {
                    Some(v) => v == 6,
                    None => v6 && protocol.is_none_or(|p| p.0 != proto::ICMP),
                };
                (entity(v6, with_ports), entity(v6, with_ports)).prop_map(
                    move |(source, destination)| {
                        // ICMP protocols forbid their other-version `notProtocol`.
                        let not_protocol = not_protocol.filter(|p| {
                            !(p.0 == proto::ICMP && ip_version == Some(6)) && protocol != Some(*p)
                        });
                        Rule {
                            action,
                            ip_version,
                            protocol,
                            not_protocol,
                            icmp: icmp.filter(|_| is_icmp),
                            not_icmp: not_icmp.filter(|_| is_icmp),
                            source,
                            destination,
                            http: (http == 0
                                && action == RuleAction::Allow
                                && protocol.is_none_or(|p| p.0 == proto::TCP))
                            .then(|| HttpMatch {
                                methods: vec![s("GET")],
                                paths: Vec::new(),
                            }),
                            metadata: None,
                        }
                    },
                )
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------
// Policies

fn policy_spec(global: bool) -> BoxedStrategy<PolicySpec> {
    let types = prop_oneof![
        2 => Just(None),
        1 => Just(Some(vec![PolicyType::Ingress])),
        1 => Just(Some(vec![PolicyType::Egress])),
        1 => Just(Some(vec![PolicyType::Ingress, PolicyType::Egress])),
    ];
    (
        option::weighted(0.8, select(TIERS.to_vec()).prop_map(s)),
        option::weighted(0.7, select(vec![1.0, 5.0, 5.0, 100.0, 1000.0])),
        option::weighted(0.8, selector()),
        types,
        vec(rule(), 0..4),
        vec(rule(), 0..4),
        option::weighted(
            0.1,
            select(vec!["projectcalico.org/name == 'sa1'", "all()"]).prop_map(s),
        ),
        option::weighted(0.2, select(NAMESPACE_SELECTORS[2..].to_vec()).prop_map(s))
            .prop_map(move |n| n.filter(|_| global)),
        0..12u8,
    )
        .prop_map(
            |(tier, order, selector, types, ingress, egress, sa, ns, staged)| PolicySpec {
                tier,
                order,
                selector,
                types,
                ingress,
                egress,
                service_account_selector: sa,
                namespace_selector: ns,
                staged_action: match staged {
                    0 => Some(StagedAction::Delete),
                    1 => Some(StagedAction::Set),
                    _ => None,
                },
                ..PolicySpec::default()
            },
        )
        .boxed()
}

fn label_selector(namespace: bool) -> BoxedStrategy<LabelSelector> {
    let labels = if namespace {
        labels(&[("team", &["a", "b"]), ("env", &["prod", "dev"])])
    } else {
        labels(&[("app", &["web", "db"]), ("role", &["fe"])])
    };
    let key = if namespace { "team" } else { "app" };
    let expr = option::weighted(
        0.3,
        select(vec![
            LabelSelectorOperator::In,
            LabelSelectorOperator::NotIn,
            LabelSelectorOperator::Exists,
            LabelSelectorOperator::DoesNotExist,
        ])
        .prop_map(move |operator| LabelSelectorRequirement {
            key: s(key),
            operator,
            values: match operator {
                LabelSelectorOperator::In | LabelSelectorOperator::NotIn => {
                    vec![s(if namespace { "a" } else { "web" }), s("x")]
                }
                _ => Vec::new(),
            },
        }),
    );
    (labels, expr)
        .prop_map(|(match_labels, e)| LabelSelector {
            match_labels,
            match_expressions: e.into_iter().collect(),
        })
        .boxed()
}

fn k8s_peer() -> BoxedStrategy<K8sPeer> {
    prop_oneof![
        2 => (option::of(label_selector(false)), option::of(label_selector(true))).prop_map(|(pod_selector, namespace_selector)| K8sPeer {
            pod_selector,
            namespace_selector,
            ip_block: None,
        }),
        1 => (select(vec!["10.0.0.0/29", "10.0.0.0/8", "fd00::/64"]), any::<bool>()).prop_map(|(cidr, except)| K8sPeer {
            pod_selector: None,
            namespace_selector: None,
            ip_block: Some(IpBlock {
                cidr: net(cidr),
                except: if except && cidr.starts_with("10.") { vec![net("10.0.0.4/30")] } else { Vec::new() },
            }),
        }),
    ]
    .boxed()
}

fn k8s_port() -> BoxedStrategy<K8sPort> {
    (
        option::of(select(vec!["TCP", "UDP", "SCTP"]).prop_map(s)),
        prop_oneof![
            Just(None),
            select(vec![53i64, 80, 8080]).prop_map(|p| Some(IntOrString::Int(p))),
            select(PORT_NAMES.to_vec()).prop_map(|n| Some(IntOrString::String(s(n)))),
        ],
        option::weighted(0.2, select(vec![0i64, 10, 1000])),
    )
        .prop_map(|(protocol, port, end)| {
            let end_port = match (&port, end) {
                (Some(IntOrString::Int(p)), Some(d)) => Some(p + d),
                _ => None,
            };
            K8sPort {
                protocol,
                port,
                end_port,
            }
        })
        .boxed()
}

fn k8s_spec() -> BoxedStrategy<K8sPolicySpec> {
    let ingress = vec(
        (vec(k8s_port(), 0..2), vec(k8s_peer(), 0..2))
            .prop_map(|(ports, from)| K8sIngressRule { ports, from }),
        0..3,
    );
    let egress = vec(
        (vec(k8s_port(), 0..2), vec(k8s_peer(), 0..2))
            .prop_map(|(ports, to)| K8sEgressRule { ports, to }),
        0..3,
    );
    let types = prop_oneof![
        2 => Just(None),
        1 => Just(Some(vec![PolicyType::Ingress])),
        1 => Just(Some(vec![PolicyType::Egress])),
        1 => Just(Some(vec![PolicyType::Ingress, PolicyType::Egress])),
    ];
    (label_selector(false), ingress, egress, types)
        .prop_map(
            |(pod_selector, ingress, egress, policy_types)| K8sPolicySpec {
                pod_selector,
                ingress,
                egress,
                policy_types,
                staged_action: None,
            },
        )
        .boxed()
}

pub(crate) fn policy() -> BoxedStrategy<Resource> {
    let name = select(vec!["p1", "p2", "p3", "t1.p4"]).prop_map(s);
    let ns = select(NAMESPACES.to_vec());
    prop_oneof![
        2 => (name.clone(), ns.clone(), policy_spec(false)).prop_map(|(n, ns, spec)| Resource::NetworkPolicy(Object { metadata: meta(n, Some(ns), BTreeMap::new()), spec: PolicySpec { staged_action: None, ..spec } })),
        2 => (name.clone(), policy_spec(true)).prop_map(|(n, spec)| Resource::GlobalNetworkPolicy(Object { metadata: meta(n, None, BTreeMap::new()), spec: PolicySpec { staged_action: None, ..spec } })),
        2 => (name.clone(), ns.clone(), policy_spec(false)).prop_map(|(n, ns, spec)| Resource::StagedNetworkPolicy(Object { metadata: meta(n, Some(ns), BTreeMap::new()), spec })),
        2 => (name.clone(), policy_spec(true)).prop_map(|(n, spec)| Resource::StagedGlobalNetworkPolicy(Object { metadata: meta(n, None, BTreeMap::new()), spec })),
        1 => (name.clone(), ns.clone(), k8s_spec()).prop_map(|(n, ns, spec)| Resource::KubernetesNetworkPolicy(Object { metadata: meta(n, Some(ns), BTreeMap::new()), spec })),
        1 => (name, ns, k8s_spec(), 0..8u8).prop_map(|(n, ns, spec, d)| Resource::StagedKubernetesNetworkPolicy(Object {
            metadata: meta(n, Some(ns), BTreeMap::new()),
            spec: if d == 0 { K8sPolicySpec { staged_action: Some(StagedAction::Delete), ..K8sPolicySpec::default() } } else { spec },
        })),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------
// Endpoints, sets, tiers, profiles

fn endpoint_ports() -> BoxedStrategy<Vec<EndpointPort>> {
    vec(
        (
            select(PORT_NAMES.to_vec()),
            protocol_name(),
            select(vec![53u16, 80, 8080, 9090]),
        )
            .prop_map(|(name, protocol, port)| EndpointPort {
                name: s(name),
                protocol,
                port,
                host_port: None,
                host_ip: None,
            }),
        0..3,
    )
    .boxed()
}

fn workload(i: usize) -> BoxedStrategy<Resource> {
    let nets = prop_oneof![
        6 => select(V4_HOSTS.to_vec()).prop_map(|a| vec![net(a)]),
        1 => (select(V4_HOSTS.to_vec()), select(V6_HOSTS.to_vec())).prop_map(|(a, b)| vec![net(a), net(b)]),
        1 => select(V6_HOSTS.to_vec()).prop_map(|a| vec![net(a)]),
        1 => Just(vec![net("10.0.0.4/30")]),
        1 => Just(Vec::new()),
    ];
    (
        select(NAMESPACES.to_vec()),
        endpoint_labels(),
        option::weighted(0.6, select(SERVICE_ACCOUNTS.to_vec())),
        nets,
        endpoint_ports(),
        option::weighted(
            0.1,
            vec(
                select(vec!["prof-a", "prof-b", "prof-missing"]).prop_map(s),
                0..3,
            ),
        ),
        any::<bool>(),
    )
        .prop_map(
            move |(ns, labels, sa, ip_networks, ports, profiles, generated)| {
                let mut m = meta(format!("wep{i}"), Some(ns), labels);
                if generated {
                    m.generate_name = Some(s("wep-"));
                }
                Resource::WorkloadEndpoint(Object {
                    metadata: m,
                    spec: WorkloadEndpointSpec {
                        orchestrator: s("k8s"),
                        service_account_name: sa.map(s).unwrap_or_default(),
                        ip_networks,
                        ports,
                        profiles: profiles.unwrap_or_default(),
                        ..WorkloadEndpointSpec::default()
                    },
                })
            },
        )
        .boxed()
}

fn host_endpoint(i: usize) -> BoxedStrategy<Resource> {
    let ips = prop_oneof![
        2 => select(vec!["10.0.0.7", "10.0.2.1", "10.0.2.2", "10.0.0.1"]).prop_map(|a| vec![a.parse::<IpAddr>().expect("ip")]),
        1 => select(V6_HOSTS.to_vec()).prop_map(|a| vec![a.parse::<IpAddr>().expect("ip")]),
    ];
    (
        endpoint_labels(),
        ips,
        vec(
            select(vec!["prof-a", "prof-b", "prof-missing"]).prop_map(s),
            0..3,
        ),
        endpoint_ports(),
    )
        .prop_map(move |(labels, expected_ips, profiles, ports)| {
            Resource::HostEndpoint(Object {
                metadata: meta(format!("hep{i}"), None, labels),
                spec: HostEndpointSpec {
                    node: s("node1"),
                    interface_name: s("eth0"),
                    expected_ips,
                    profiles,
                    ports,
                },
            })
        })
        .boxed()
}

pub(crate) fn network_set(i: usize) -> BoxedStrategy<Resource> {
    let set_labels = labels(&[("zone", &["internal", "partner"]), ("app", &["web", "db"])]);
    (
        option::of(select(NAMESPACES.to_vec())),
        set_labels,
        vec(select(SET_NETS.to_vec()).prop_map(net), 1..3),
    )
        .prop_map(move |(ns, labels, nets)| {
            let spec = NetworkSetSpec { nets };
            match ns {
                Some(ns) => Resource::NetworkSet(Object {
                    metadata: meta(format!("set{i}"), Some(ns), labels),
                    spec,
                }),
                None => Resource::GlobalNetworkSet(Object {
                    metadata: meta(format!("gset{i}"), None, labels),
                    spec,
                }),
            }
        })
        .boxed()
}

fn tier(name: &'static str) -> BoxedStrategy<Resource> {
    (
        option::weighted(0.8, select(vec![10.0, 100.0, 100.0, 2_000_000.0])),
        select(vec![TierDefaultAction::Deny, TierDefaultAction::Pass]),
    )
        .prop_map(move |(order, default_action)| {
            Resource::Tier(Object {
                metadata: meta(s(name), None, BTreeMap::new()),
                spec: TierSpec {
                    order,
                    default_action: Some(default_action),
                },
            })
        })
        .boxed()
}

fn profile(name: &'static str) -> BoxedStrategy<Resource> {
    (
        vec(rule(), 0..3),
        vec(rule(), 0..3),
        labels(&[("role", &["fe", "be"]), ("zone", &["internal"])]),
    )
        .prop_map(move |(ingress, egress, labels_to_apply)| {
            Resource::Profile(Object {
                metadata: meta(s(name), None, BTreeMap::new()),
                spec: ProfileSpec {
                    ingress,
                    egress,
                    labels_to_apply,
                },
            })
        })
        .boxed()
}

fn namespace(name: &'static str) -> BoxedStrategy<Resource> {
    labels(&[("team", &["a", "b"]), ("env", &["prod", "dev"])])
        .prop_map(move |labels| {
            Resource::Namespace(Object {
                metadata: meta(s(name), None, labels),
                spec: NamespaceSpec::default(),
            })
        })
        .boxed()
}

fn indexed(
    n: std::ops::Range<usize>,
    f: fn(usize) -> BoxedStrategy<Resource>,
) -> BoxedStrategy<Vec<Resource>> {
    n.prop_flat_map(move |k| (0..k).map(f).collect::<Vec<_>>())
        .boxed()
}

fn optional(items: Vec<BoxedStrategy<Resource>>) -> BoxedStrategy<Vec<Resource>> {
    items
        .into_iter()
        .map(option::of)
        .collect::<Vec<_>>()
        .prop_map(|v| v.into_iter().flatten().collect())
        .boxed()
}

/// A random store.
pub(crate) fn store() -> BoxedStrategy<Vec<Resource>> {
    (
        optional(NAMESPACES.iter().map(|n| namespace(n)).collect()),
        optional(vec![tier("t1"), tier("t2"), tier("t3"), tier("default")]),
        optional(vec![profile("prof-a"), profile("prof-b")]),
        indexed(1..7, workload),
        indexed(0..3, host_endpoint),
        indexed(0..4, network_set),
        vec(policy(), 0..9),
    )
        .prop_map(|(a, b, c, d, e, f, g)| [a, b, c, d, e, f, g].into_iter().flatten().collect())
        .boxed()
}

// ---------------------------------------------------------------------------------
// Flows

/// The addresses flows are drawn from, per family: the store's endpoint addresses,
/// and others (network-set members, addresses that belong to nothing).
#[derive(Clone, Debug, Default)]
struct Pool {
    endpoints: [Vec<IpAddr>; 2],
    others: [Vec<IpAddr>; 2],
}

fn address_pool(resources: &[Resource]) -> Pool {
    let mut endpoints: Vec<IpAddr> = Vec::new();
    let mut others: Vec<IpAddr> = Vec::new();
    for r in resources {
        match r {
            Resource::WorkloadEndpoint(o) => endpoints.extend(
                // A wider prefix: its first and last address.
                o.spec
                    .ip_networks
                    .iter()
                    .flat_map(|n| [n.0.network(), n.0.broadcast()]),
            ),
            Resource::HostEndpoint(o) => endpoints.extend(o.spec.expected_ips.iter().copied()),
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => {
                others.extend(o.spec.nets.iter().map(|n| n.0.broadcast()));
            }
            _ => {}
        }
    }
    let parse = |a: &&str| a.parse::<IpAddr>().expect("ip");
    others.extend(V4_OTHERS.iter().chain(&V6_OTHERS).map(parse));
    let split = |mut v: Vec<IpAddr>| {
        v.sort();
        v.dedup();
        let (a, b): (Vec<IpAddr>, Vec<IpAddr>) = v.into_iter().partition(IpAddr::is_ipv4);
        [a, b]
    };
    Pool {
        endpoints: split(endpoints),
        others: split(others),
    }
}

fn pick(pool: &Pool, family: usize) -> BoxedStrategy<IpAddr> {
    let others = select(pool.others[family].clone());
    if pool.endpoints[family].is_empty() {
        others.boxed()
    } else {
        prop_oneof![3 => select(pool.endpoints[family].clone()), 1 => others].boxed()
    }
}

/// A random flow between addresses of the pool (as the data-plane key).
fn flow(pool: Pool) -> BoxedStrategy<FlowKey> {
    let ports = || {
        prop_oneof![
            4 => select(vec![53u16, 80, 85, 443, 1500, 8080, 8050, 9090]),
            1 => any::<u16>(),
        ]
    };
    (0..10u8, 0..5u8)
        .prop_flat_map(move |(p, family)| {
            let v6 = family == 0;
            let protocol = match p {
                0..=3 => proto::TCP,
                4 | 5 => proto::UDP,
                6 => proto::SCTP,
                7 => {
                    if v6 {
                        proto::ICMPV6
                    } else {
                        proto::ICMP
                    }
                }
                // The other family's ICMP number, and a protocol without ports.
                8 => {
                    if v6 {
                        proto::ICMP
                    } else {
                        proto::ICMPV6
                    }
                }
                _ => 47,
            };
            let l4 = if protocol == proto::ICMP || protocol == proto::ICMPV6 {
                (select(vec![0u16, 3, 8]), select(vec![0u16, 1])).boxed()
            } else {
                (ports(), ports()).boxed()
            };
            let f = usize::from(v6);
            (pick(&pool, f), pick(&pool, f), l4).prop_map(move |(src, dst, (sport, dport))| {
                FlowKey::new(src, dst, protocol, sport, dport).expect("same family")
            })
        })
        .boxed()
}

/// A random store with flows over its addresses.
pub(crate) fn store_and_flows(flows: usize) -> BoxedStrategy<(Vec<Resource>, Vec<FlowKey>)> {
    store()
        .prop_flat_map(move |r| {
            let pool = address_pool(&r);
            (Just(r), vec(flow(pool), flows))
        })
        .boxed()
}

// ---------------------------------------------------------------------------------
// The property

/// The store normalised, lowered, and both classifiers built over the lowered set.
struct Legs {
    cluster: Cluster,
    lowered: super::Lowered,
    classifiers: [(&'static str, Box<dyn Classify>); 3],
}

fn legs(resources: &[Resource]) -> Result<Legs, String> {
    let cluster = Cluster::from_resources(resources).map_err(|e| format!("cluster: {e}"))?;
    let lowered = lower(&cluster).map_err(|e| format!("lower: {e}"))?;
    let linear = LinearClassifier::new(lowered.set.clone()).map_err(|e| format!("linear: {e}"))?;
    let tree = Classifier::build(&lowered.set, &BuildConfig::default())
        .map_err(|e| format!("tree: {e}"))?;
    let identity = IdentityClassifier::build(&lowered.set, &BuildConfig::default())
        .map_err(|e| format!("identity: {e}"))?;
    Ok(Legs {
        cluster,
        lowered,
        classifiers: [
            ("linear", Box::new(linear)),
            ("tree", Box::new(tree)),
            ("ident", Box::new(identity)),
        ],
    })
}

impl Legs {
    /// Where a classifier disagrees with `eval` on the flow, if it does.
    fn mismatch(&self, key: &FlowKey) -> Result<Option<String>, String> {
        let flow = Flow::from_key(key);
        let want = eval::evaluate(&self.cluster, &flow);
        for (name, c) in &self.classifiers {
            let got = self
                .lowered
                .evaluation(c.as_ref(), &flow)
                .map_err(|e| e.to_string())?;
            if got != want {
                return Ok(Some(format!(
                    "flow {flow}\n  eval:   {}\n  {name:<7} {}",
                    eval::report::to_json(&want),
                    eval::report::to_json(&got)
                )));
            }
        }
        Ok(None)
    }
}

/// `eval` and a classifier over the lowered store disagree on this flow (`Ok(None)`:
/// they agree).
fn mismatch(resources: &[Resource], key: &FlowKey) -> Result<Option<String>, String> {
    legs(resources)?.mismatch(key)
}

/// Drops resources, then rules, while the flow still shows a mismatch: what is left
/// is the smallest store this greedy search finds (proptest's own shrinking does
/// poorly on whole stores).
fn minimize(mut resources: Vec<Resource>, key: &FlowKey) -> Vec<Resource> {
    let fails = |r: &[Resource]| matches!(mismatch(r, key), Ok(Some(_)));
    let mut i = 0;
    while i < resources.len() {
        let mut fewer = resources.clone();
        fewer.remove(i);
        if fails(&fewer) {
            resources = fewer;
        } else {
            i += 1;
        }
    }
    for i in 0..resources.len() {
        for dir in 0..2 {
            let mut j = 0;
            loop {
                let mut fewer = resources.clone();
                let rules = match &mut fewer[i] {
                    Resource::NetworkPolicy(o)
                    | Resource::GlobalNetworkPolicy(o)
                    | Resource::StagedNetworkPolicy(o)
                    | Resource::StagedGlobalNetworkPolicy(o) => {
                        if dir == 0 {
                            &mut o.spec.ingress
                        } else {
                            &mut o.spec.egress
                        }
                    }
                    Resource::Profile(o) => {
                        if dir == 0 {
                            &mut o.spec.ingress
                        } else {
                            &mut o.spec.egress
                        }
                    }
                    _ => break,
                };
                if j >= rules.len() {
                    break;
                }
                rules.remove(j);
                if fails(&fewer) {
                    resources = fewer;
                } else {
                    j += 1;
                }
            }
        }
    }
    resources
}

/// Checks every flow on one store; describes the first mismatch with a minimized store.
pub(crate) fn check(resources: &[Resource], flows: &[FlowKey]) -> Result<(), String> {
    let legs = legs(resources)?;
    for key in flows {
        if legs.mismatch(key)?.is_some() {
            let small = minimize(resources.to_vec(), key);
            let what = mismatch(&small, key)?.unwrap_or_default();
            return Err(format!("{what}\nminimized store:\n{small:#?}"));
        }
    }
    Ok(())
}

/// The generator reaches what the property is about: flows with reporters, hits of
/// every kind and action (rule hits and tier defaults), staged policies that change
/// the pending view, and rules split by named ports.
#[test]
fn generated_stores_exercise_every_construct() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |k: String| *seen.entry(k).or_default() += 1;
    let (mut flows_total, mut with_reporter) = (0, 0);
    for _ in 0..128 {
        let (resources, flows) = store_and_flows(32)
            .new_tree(&mut runner)
            .expect("generate")
            .current();
        let cluster = Cluster::from_resources(&resources).expect("cluster");
        let lowered = lower(&cluster).expect("lower");
        for p in &lowered.set.programs {
            for pol in p.tiers.iter().flat_map(|t| &t.policies).chain(&p.profiles) {
                if pol.rules.windows(2).any(|w| w[0].index == w[1].index) {
                    count("split rule".into());
                }
            }
        }
        for key in &flows {
            flows_total += 1;
            let e = eval::evaluate(&cluster, &Flow::from_key(key));
            if !e.reporters.is_empty() {
                with_reporter += 1;
            }
            for r in &e.reporters {
                if r.enforced != r.pending {
                    count("enforced != pending".into());
                }
                for h in r.enforced.hits.iter().chain(&r.pending.hits) {
                    let short = h.kind.hit_short().unwrap_or("?");
                    let at = if h.rule_index < 0 {
                        "end of tier"
                    } else {
                        "rule"
                    };
                    count(format!("{short} {} {at}", h.action));
                }
            }
        }
    }
    assert!(
        with_reporter * 2 > flows_total,
        "{with_reporter}/{flows_total}"
    );
    let mut want = vec![
        "split rule".to_string(),
        "enforced != pending".to_string(),
        "pro allow rule".to_string(),
        "pro deny rule".to_string(),
        "pro deny end of tier".to_string(),
    ];
    for kind in ["np", "gnp", "snp", "sgnp"] {
        for what in [
            "allow rule",
            "deny rule",
            "pass rule",
            "deny end of tier",
            "pass end of tier",
        ] {
            want.push(format!("{kind} {what}"));
        }
    }
    for kind in ["knp", "sknp"] {
        want.push(format!("{kind} allow rule"));
        want.push(format!("{kind} deny end of tier"));
    }
    let missing: Vec<&String> = want.iter().filter(|w| !seen.contains_key(*w)).collect();
    assert!(
        missing.is_empty(),
        "never generated: {missing:?}\nseen: {seen:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1600,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn eval_equals_linear_and_tree_over_lowered((resources, flows) in store_and_flows(64)) {
        if let Err(e) = check(&resources, &flows) {
            prop_assert!(false, "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    /// Lowering compares rules and rule lists by the address of their address lists
    /// (`rules::match_eq`); that is exact because every list is interned: equal lists
    /// are one allocation, so comparing by address agrees with comparing contents, and
    /// no two programs of a lowered set are equal (deduplication lost nothing).
    #[test]
    fn lowered_lists_are_interned(resources in store()) {
        let Ok(cluster) = Cluster::from_resources(&resources) else {
            return Ok(());
        };
        let lowered = lower(&cluster).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let set = &lowered.set;
        let rules: Vec<&dataplane::program::Rule> = set.rules().collect();
        let mut lists: Vec<&dataplane::program::Nets> = Vec::new();
        for r in &rules {
            let m = &r.matches;
            lists.extend(m.src_nets.iter().chain(m.dst_nets.iter()));
            lists.extend([&m.not_src_nets, &m.not_dst_nets]);
        }
        for a in &lists {
            for b in &lists {
                prop_assert_eq!(a == b, std::sync::Arc::ptr_eq(a, b), "{:?} {:?}", a, b);
            }
        }
        for a in &rules {
            for b in &rules {
                prop_assert_eq!(
                    super::rules::match_eq(&a.matches, &b.matches),
                    a.matches == b.matches
                );
            }
        }
        for (i, a) in set.programs.iter().enumerate() {
            for b in &set.programs[i + 1..] {
                prop_assert!(a != b, "two programs with the same content");
            }
        }
    }
}

/// The long run, 20 000 stores × 64 flows (about 2 minutes): `cargo test -p control --lib -- --ignored
/// eval_equals_linear_and_tree_over_lowered_long`.
#[test]
#[ignore = "long run"]
fn eval_equals_linear_and_tree_over_lowered_long() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 20_000,
        ..ProptestConfig::default()
    });
    runner
        .run(&store_and_flows(64), |(resources, flows)| {
            check(&resources, &flows).map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
