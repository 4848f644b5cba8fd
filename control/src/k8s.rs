//! Kubernetes NetworkPolicy (and StagedKubernetesNetworkPolicy) → Calico policy, as
//! Calico converts them (CALICO_SEMANTICS §3.8; `libcalico-go/lib/backend/k8s/conversion/
//! conversion.go` `K8sNetworkPolicyToCalico`, `api/.../stagedkubernetesnetworkpolicy.go`
//! `ConvertStagedKubernetesPolicyToK8SEnforced`).
//!
//! The output is an ordinary Calico policy spec ([`PolicySpec`]) with the same name and
//! namespace, tier `default`, order 1000, and selectors written as the exact text Calico
//! produces (`projectcalico.org/orchestrator == 'k8s' && k == 'v' ...`), so that
//! everything downstream (`eval`, `lower`) handles k8s policies like any namespaced
//! Calico policy. The kind — `KubernetesNetworkPolicy` (`knp`) or
//! `StagedKubernetesNetworkPolicy` (`sknp`) — stays with the caller's resource key.
//!
//! `policyTypes` absent: for a `networking.k8s.io/v1` NetworkPolicy the Kubernetes API
//! server's defaulting applies first (Ingress, plus Egress when egress rules exist);
//! a StagedKubernetesNetworkPolicy is a Calico CRD without that defaulting, so Calico's
//! converter sees no types and uses `[Ingress]`. An explicit empty list is `[Ingress]`
//! for both.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::model::{
    EntityRule, IntOrString, K8sPeer, K8sPolicySpec, K8sPort, LabelSelector, LabelSelectorOperator,
    Net, PolicySpec, PolicyType, Port, Protocol, Rule, RuleAction,
};

/// Order Calico gives every converted Kubernetes policy.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

/// Tier of every converted Kubernetes policy: the default tier.
pub const K8S_POLICY_TIER: &str = crate::model::defaults::DEFAULT_TIER;

/// Label Calico sets on every pod's workload endpoint.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";

/// Which Kubernetes policy flavour is being converted (they differ only in `policyTypes`
/// defaulting, see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum K8sFlavour {
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// `projectcalico.org/v3` StagedKubernetesNetworkPolicy.
    Staged,
}

/// A Kubernetes policy that cannot be converted. Calico drops such a rule with a
/// warning; tiergate rejects the whole policy instead (bad input never half-applies).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConversionError {
    /// A port entry is not a valid Calico port (bad number, name with `endPort`,
    /// `endPort` below `port`).
    #[error("{direction}[{rule}].ports[{port}]: {reason}")]
    Port {
        /// `ingress` or `egress`.
        direction: &'static str,
        /// Rule index.
        rule: usize,
        /// Port index within the rule.
        port: usize,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A port's protocol is not one Kubernetes allows.
    #[error(
        "{direction}[{rule}].ports[{port}].protocol: invalid protocol {value:?}: expected TCP, UDP or SCTP"
    )]
    Protocol {
        /// `ingress` or `egress`.
        direction: &'static str,
        /// Rule index.
        rule: usize,
        /// Port index within the rule.
        port: usize,
        /// The value given.
        value: String,
    },
}

impl ConversionError {
    /// The field path inside the spec (`ingress[0].ports[1]`).
    pub fn field(&self) -> String {
        match self {
            ConversionError::Port {
                direction,
                rule,
                port,
                ..
            } => format!("{direction}[{rule}].ports[{port}]"),
            ConversionError::Protocol {
                direction,
                rule,
                port,
                ..
            } => format!("{direction}[{rule}].ports[{port}].protocol"),
        }
    }

    /// What is wrong and what would be accepted.
    pub fn reason(&self) -> String {
        match self {
            ConversionError::Port { reason, .. } => reason.clone(),
            ConversionError::Protocol { value, .. } => {
                format!("invalid protocol {value:?}: expected TCP, UDP or SCTP")
            }
        }
    }
}

/// Whether a label selector is for pods (gets the orchestrator term) or namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SelectorKind {
    Pod,
    Namespace,
}

/// Converts a Kubernetes policy spec to the Calico policy spec Calico derives from it.
pub fn to_calico(spec: &K8sPolicySpec, flavour: K8sFlavour) -> Result<PolicySpec, ConversionError> {
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().enumerate() {
        ingress.extend(rule_to_calico(&r.from, &r.ports, true, i)?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().enumerate() {
        egress.extend(rule_to_calico(&r.to, &r.ports, false, i)?);
    }

    let declared: Vec<PolicyType> = match (&spec.policy_types, flavour) {
        (Some(t), _) => t.clone(),
        // The Kubernetes API server's SetDefaults_NetworkPolicySpec.
        (None, K8sFlavour::NetworkPolicy) => {
            let mut t = vec![PolicyType::Ingress];
            if !spec.egress.is_empty() {
                t.push(PolicyType::Egress);
            }
            t
        }
        (None, K8sFlavour::Staged) => Vec::new(),
    };
    let mut types = Vec::new();
    if declared.contains(&PolicyType::Ingress) {
        types.push(PolicyType::Ingress);
    }
    if declared.contains(&PolicyType::Egress) {
        types.push(PolicyType::Egress);
    }
    if types.is_empty() {
        // A cluster without policyTypes support: ingress only (conversion.go).
        types.push(PolicyType::Ingress);
    }

    Ok(PolicySpec {
        tier: Some(K8S_POLICY_TIER.to_string()),
        order: Some(K8S_POLICY_ORDER),
        selector: Some(selector_to_calico(
            Some(&spec.pod_selector),
            SelectorKind::Pod,
        )),
        types: Some(types),
        ingress,
        egress,
        ..PolicySpec::default()
    })
}

/// The Calico selector text for a Kubernetes label selector (conversion.go
/// `k8sSelectorToCalico`): pod selectors start with the orchestrator term; a present but
/// empty namespace selector is `all()`; an absent namespace selector is empty.
fn selector_to_calico(s: Option<&LabelSelector>, kind: SelectorKind) -> String {
    let mut terms: Vec<String> = Vec::new();
    if kind == SelectorKind::Pod {
        terms.push(format!("{ORCHESTRATOR_LABEL} == 'k8s'"));
    }
    let Some(s) = s else {
        return terms.join(" && ");
    };
    if kind == SelectorKind::Namespace
        && s.match_labels.is_empty()
        && s.match_expressions.is_empty()
    {
        return "all()".to_string();
    }
    // BTreeMap iterates in key order: Calico sorts the matchLabels keys.
    for (k, v) in &s.match_labels {
        terms.push(format!("{k} == '{v}'"));
    }
    for e in &s.match_expressions {
        let values = e.values.join("', '");
        terms.push(match e.operator {
            LabelSelectorOperator::In => format!("{} in {{ '{values}' }}", e.key),
            LabelSelectorOperator::NotIn => format!("{} not in {{ '{values}' }}", e.key),
            LabelSelectorOperator::Exists => format!("has({})", e.key),
            LabelSelectorOperator::DoesNotExist => format!("! has({})", e.key),
        });
    }
    terms.join(" && ")
}

/// The fields of an entity rule a peer sets.
#[derive(Default)]
struct PeerFields {
    selector: Option<String>,
    namespace_selector: Option<String>,
    nets: Vec<Net>,
    not_nets: Vec<Net>,
}

fn peer_to_calico(peer: Option<&K8sPeer>) -> PeerFields {
    let Some(peer) = peer else {
        return PeerFields::default();
    };
    if let Some(b) = &peer.ip_block {
        // Calico re-prints the parsed CIDR, which masks host bits.
        return PeerFields {
            nets: vec![Net(b.cidr.0.trunc())],
            not_nets: b.except.iter().map(|n| Net(n.0.trunc())).collect(),
            ..PeerFields::default()
        };
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    PeerFields {
        selector: non_empty(selector_to_calico(
            peer.pod_selector.as_ref(),
            SelectorKind::Pod,
        )),
        namespace_selector: non_empty(selector_to_calico(
            peer.namespace_selector.as_ref(),
            SelectorKind::Namespace,
        )),
        ..PeerFields::default()
    }
}

/// The Calico port for a Kubernetes port entry (conversion.go `k8sPortToCalico`):
/// `port` as its string form, `port:endPort` when `endPort` is set.
fn port_to_calico(p: &K8sPort) -> Result<Option<Port>, String> {
    let Some(port) = &p.port else {
        return Ok(None);
    };
    let text = match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let text = match p.end_port {
        Some(end) => format!("{text}:{end}"),
        None => text,
    };
    match Port::parse(&text) {
        Ok(Port::Named(n)) if p.end_port.is_some() => {
            Err(format!("invalid port {n:?}: endPort needs a numeric port"))
        }
        Ok(port) => Ok(Some(port)),
        Err(e) => Err(e),
    }
}

/// One Kubernetes rule → Calico Allow rules: one per (protocol × peer), protocols in
/// name order, peers in their order (conversion.go `k8sRuleToCalico`).
fn rule_to_calico(
    peers: &[K8sPeer],
    ports: &[K8sPort],
    ingress: bool,
    rule_index: usize,
) -> Result<Vec<Rule>, ConversionError> {
    let direction = if ingress { "ingress" } else { "egress" };

    // Protocol name ("" = any protocol) → ports (None = all ports of that protocol).
    let mut protocol_ports: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    if ports.is_empty() {
        protocol_ports.insert(String::new(), None);
    }
    for (pi, p) in ports.iter().enumerate() {
        // TCP is NetworkPolicyPort's implicit default; Calico makes it explicit.
        let protocol_text = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
        let protocol = match Protocol::parse(&protocol_text) {
            Some(pr) if matches!(pr.0, 6 | 17 | 132) => pr,
            _ => {
                return Err(ConversionError::Protocol {
                    direction,
                    rule: rule_index,
                    port: pi,
                    value: protocol_text,
                });
            }
        };
        let calico_port = port_to_calico(p).map_err(|reason| ConversionError::Port {
            direction,
            rule: rule_index,
            port: pi,
            reason,
        })?;
        let key = protocol.to_string();
        match calico_port {
            // No port: every port of the protocol, and it stays that way.
            None => {
                protocol_ports.insert(key, None);
            }
            Some(port) => match protocol_ports.get_mut(&key) {
                None => {
                    protocol_ports.insert(key, Some(vec![port]));
                }
                Some(Some(list)) => list.push(port),
                Some(None) => {}
            },
        }
    }

    let peers: Vec<Option<&K8sPeer>> = if peers.is_empty() {
        vec![None]
    } else {
        peers.iter().map(Some).collect()
    };

    let mut rules = Vec::new();
    // BTreeMap order is Calico's sort.Strings over the protocol names.
    for (protocol_name, ports) in &protocol_ports {
        let protocol = if protocol_name.is_empty() {
            None
        } else {
            Protocol::parse(protocol_name)
        };
        let ports = ports.clone().map(simplify_ports).unwrap_or_default();
        for peer in &peers {
            let f = peer_to_calico(*peer);
            let peer_rule = EntityRule {
                nets: f.nets,
                not_nets: f.not_nets,
                selector: f.selector,
                namespace_selector: f.namespace_selector,
                ..EntityRule::default()
            };
            let (source, destination) = if ingress {
                (
                    peer_rule,
                    EntityRule {
                        ports: ports.clone(),
                        ..EntityRule::default()
                    },
                )
            } else {
                (
                    EntityRule::default(),
                    EntityRule {
                        ports: ports.clone(),
                        ..peer_rule
                    },
                )
            };
            rules.push(Rule {
                action: RuleAction::Allow,
                ip_version: None,
                protocol,
                not_protocol: None,
                icmp: None,
                not_icmp: None,
                source,
                destination,
                http: None,
                metadata: None,
            });
        }
    }
    Ok(rules)
}

/// Merges ports into a minimal list of ranges, named ports first (conversion.go
/// `SimplifyPorts`): `[81:90, 4, 2, foo, 80:81, 3, 1, 9090, http]` →
/// `[foo, http, 1:4, 80:90, 9090]`. A list with at most one numeric port is returned
/// unchanged.
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    if ports.len() <= 1 {
        return ports;
    }
    let mut out = Vec::new();
    let mut numeric: Vec<u32> = Vec::new();
    for p in &ports {
        match p {
            Port::Named(_) => out.push(p.clone()),
            Port::Number(n) => numeric.push(u32::from(*n)),
            Port::Range(lo, hi) => numeric.extend(u32::from(*lo)..=u32::from(*hi)),
        }
    }
    if numeric.len() <= 1 {
        return ports;
    }
    numeric.sort_unstable();
    let mut i = 0;
    while i < numeric.len() {
        let first = numeric[i];
        let mut last = first;
        i += 1;
        while i < numeric.len() && numeric[i] <= last + 1 {
            last = numeric[i];
            i += 1;
        }
        // Ports came from u16 values, so the conversions cannot fail.
        let (lo, hi) = (
            u16::try_from(first).unwrap_or(u16::MAX),
            u16::try_from(last).unwrap_or(u16::MAX),
        );
        out.push(if lo == hi {
            Port::Number(lo)
        } else {
            Port::Range(lo, hi)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpBlock, K8sEgressRule, K8sIngressRule, LabelSelectorRequirement};

    fn labels(kv: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: vec![],
        }
    }

    fn tcp() -> Option<Protocol> {
        Some(Protocol(6))
    }

    fn port(p: &str) -> K8sPort {
        K8sPort {
            protocol: None,
            port: Some(match p.parse::<i64>() {
                Ok(n) => IntOrString::Int(n),
                Err(_) => IntOrString::String(p.to_string()),
            }),
            end_port: None,
        }
    }

    fn ports(list: &str) -> Vec<Port> {
        if list.is_empty() {
            return vec![];
        }
        list.split(',').map(|p| Port::parse(p).unwrap()).collect()
    }

    fn pod_peer(kv: &[(&str, &str)]) -> K8sPeer {
        K8sPeer {
            pod_selector: Some(labels(kv)),
            ..K8sPeer::default()
        }
    }

    fn ingress_spec(from: Vec<K8sPeer>, ports: Vec<K8sPort>) -> K8sPolicySpec {
        K8sPolicySpec {
            pod_selector: labels(&[("label", "value"), ("label2", "value2")]),
            ingress: vec![K8sIngressRule { ports, from }],
            policy_types: Some(vec![PolicyType::Ingress]),
            ..K8sPolicySpec::default()
        }
    }

    fn allow(protocol: Option<Protocol>, source: EntityRule, destination: EntityRule) -> Rule {
        Rule {
            action: RuleAction::Allow,
            ip_version: None,
            protocol,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source,
            destination,
            http: None,
            metadata: None,
        }
    }

    fn sel(s: &str) -> EntityRule {
        EntityRule {
            selector: Some(s.to_string()),
            ..EntityRule::default()
        }
    }

    fn dports(list: &str) -> EntityRule {
        EntityRule {
            ports: ports(list),
            ..EntityRule::default()
        }
    }

    // Modelled on conversion_test.go "should parse a basic k8s NetworkPolicy".
    #[test]
    fn basic_policy_sorted_labels_default_tcp_named_port() {
        let spec = ingress_spec(
            vec![pod_peer(&[("k2", "v2"), ("k", "v")])],
            vec![port("80"), port("foo")],
        );
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(p.order, Some(1000.0));
        assert_eq!(p.tier.as_deref(), Some("default"));
        assert_eq!(
            p.selector.as_deref(),
            Some(
                "projectcalico.org/orchestrator == 'k8s' && label == 'value' && label2 == 'value2'"
            )
        );
        assert_eq!(p.types, Some(vec![PolicyType::Ingress]));
        assert_eq!(
            p.ingress,
            vec![allow(
                tcp(),
                sel("projectcalico.org/orchestrator == 'k8s' && k == 'v' && k2 == 'v2'"),
                dports("80,foo"),
            )]
        );
        assert!(p.egress.is_empty());
    }

    #[test]
    fn no_ports_means_any_protocol() {
        let spec = ingress_spec(vec![pod_peer(&[("k", "v")])], vec![]);
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(
            p.ingress,
            vec![allow(
                None,
                sel("projectcalico.org/orchestrator == 'k8s' && k == 'v'"),
                EntityRule::default()
            )]
        );
    }

    #[test]
    fn blank_port_entry_is_all_tcp_and_sticks() {
        // [80, {}] and [{}, 80] both give "all TCP ports".
        for list in [
            vec![port("80"), K8sPort::default()],
            vec![K8sPort::default(), port("80")],
        ] {
            let spec = ingress_spec(vec![pod_peer(&[("k", "v")])], list);
            let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
            assert_eq!(
                p.ingress,
                vec![allow(
                    tcp(),
                    sel("projectcalico.org/orchestrator == 'k8s' && k == 'v'"),
                    EntityRule::default()
                )]
            );
        }
    }

    // conversion_test.go "should parse a k8s egress NetworkPolicy with blank ports".
    #[test]
    fn egress_rules_one_per_protocol_in_name_order() {
        let spec = K8sPolicySpec {
            pod_selector: labels(&[("label", "value")]),
            egress: vec![
                K8sEgressRule {
                    ports: vec![K8sPort::default(), port("80")],
                    to: vec![pod_peer(&[("k", "v")])],
                },
                K8sEgressRule {
                    ports: vec![K8sPort {
                        protocol: Some("UDP".into()),
                        ..port("53")
                    }],
                    to: vec![],
                },
            ],
            policy_types: Some(vec![PolicyType::Egress]),
            ..K8sPolicySpec::default()
        };
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(p.types, Some(vec![PolicyType::Egress]));
        assert_eq!(
            p.egress,
            vec![
                allow(
                    tcp(),
                    EntityRule::default(),
                    sel("projectcalico.org/orchestrator == 'k8s' && k == 'v'")
                ),
                allow(Some(Protocol(17)), EntityRule::default(), dports("53")),
            ]
        );
    }

    #[test]
    fn multiple_peers_and_protocols_cross_product() {
        let udp = |p: &str| K8sPort {
            protocol: Some("UDP".into()),
            ..port(p)
        };
        let sctp = |p: &str| K8sPort {
            protocol: Some("SCTP".into()),
            ..port(p)
        };
        let spec = ingress_spec(
            vec![pod_peer(&[("a", "1")]), pod_peer(&[("b", "2")])],
            vec![udp("53"), port("80"), sctp("9"), port("81"), udp("54")],
        );
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        let a = "projectcalico.org/orchestrator == 'k8s' && a == '1'";
        let b = "projectcalico.org/orchestrator == 'k8s' && b == '2'";
        assert_eq!(
            p.ingress,
            vec![
                allow(Some(Protocol(132)), sel(a), dports("9")),
                allow(Some(Protocol(132)), sel(b), dports("9")),
                allow(tcp(), sel(a), dports("80:81")),
                allow(tcp(), sel(b), dports("80:81")),
                allow(Some(Protocol(17)), sel(a), dports("53:54")),
                allow(Some(Protocol(17)), sel(b), dports("53:54")),
            ]
        );
    }

    #[test]
    fn end_port_is_a_range_and_named_end_port_is_rejected() {
        let spec = ingress_spec(
            vec![],
            vec![K8sPort {
                end_port: Some(2000),
                ..port("1000")
            }],
        );
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(
            p.ingress,
            vec![allow(tcp(), EntityRule::default(), dports("1000:2000"))]
        );

        let bad = ingress_spec(
            vec![],
            vec![K8sPort {
                end_port: Some(2000),
                ..port("http")
            }],
        );
        let e = to_calico(&bad, K8sFlavour::NetworkPolicy).unwrap_err();
        assert!(e.to_string().starts_with("ingress[0].ports[0]: "), "{e}");

        let backwards = ingress_spec(
            vec![],
            vec![K8sPort {
                end_port: Some(10),
                ..port("20")
            }],
        );
        assert!(to_calico(&backwards, K8sFlavour::NetworkPolicy).is_err());

        let bad_proto = ingress_spec(
            vec![],
            vec![K8sPort {
                protocol: Some("ICMP".into()),
                ..port("1")
            }],
        );
        let e = to_calico(&bad_proto, K8sFlavour::NetworkPolicy).unwrap_err();
        assert!(e.to_string().contains("protocol"), "{e}");
    }

    #[test]
    fn ip_block_gives_masked_nets_and_not_nets() {
        let spec = ingress_spec(
            vec![K8sPeer {
                ip_block: Some(IpBlock {
                    cidr: Net::parse("172.17.3.4/16").unwrap(),
                    except: vec![Net::parse("172.17.1.9/24").unwrap()],
                }),
                ..K8sPeer::default()
            }],
            vec![],
        );
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        let src = EntityRule {
            nets: vec![Net::parse("172.17.0.0/16").unwrap()],
            not_nets: vec![Net::parse("172.17.1.0/24").unwrap()],
            ..EntityRule::default()
        };
        assert_eq!(p.ingress, vec![allow(None, src, EntityRule::default())]);
    }

    #[test]
    fn namespace_selectors_empty_nil_and_labelled() {
        let peer = |ns: Option<LabelSelector>, pod: Option<LabelSelector>| K8sPeer {
            pod_selector: pod,
            namespace_selector: ns,
            ip_block: None,
        };
        let spec = ingress_spec(
            vec![
                peer(Some(LabelSelector::default()), None),
                peer(Some(labels(&[("project", "myproject")])), None),
                peer(None, Some(labels(&[("role", "frontend")]))),
                peer(Some(LabelSelector::default()), Some(labels(&[("x", "y")]))),
            ],
            vec![],
        );
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        let er = |s: &str, ns: Option<&str>| EntityRule {
            selector: Some(s.to_string()),
            namespace_selector: ns.map(str::to_string),
            ..EntityRule::default()
        };
        let k8s = "projectcalico.org/orchestrator == 'k8s'";
        assert_eq!(
            p.ingress,
            vec![
                allow(None, er(k8s, Some("all()")), EntityRule::default()),
                allow(
                    None,
                    er(k8s, Some("project == 'myproject'")),
                    EntityRule::default()
                ),
                allow(
                    None,
                    er(&format!("{k8s} && role == 'frontend'"), None),
                    EntityRule::default()
                ),
                allow(
                    None,
                    er(&format!("{k8s} && x == 'y'"), Some("all()")),
                    EntityRule::default()
                ),
            ]
        );
    }

    #[test]
    fn match_expressions_all_operators() {
        let req = |key: &str, operator, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let spec = K8sPolicySpec {
            pod_selector: LabelSelector {
                match_labels: [("app".to_string(), "db".to_string())].into(),
                match_expressions: vec![
                    req("tier", LabelSelectorOperator::In, &["a", "b"]),
                    req("env", LabelSelectorOperator::NotIn, &["prod"]),
                    req("k", LabelSelectorOperator::Exists, &[]),
                    req("gone", LabelSelectorOperator::DoesNotExist, &[]),
                ],
            },
            ..K8sPolicySpec::default()
        };
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(
            p.selector.as_deref(),
            Some(
                "projectcalico.org/orchestrator == 'k8s' && app == 'db' && tier in { 'a', 'b' } \
                 && env not in { 'prod' } && has(k) && ! has(gone)"
            )
        );
    }

    #[test]
    fn empty_pod_selector_and_no_rules_is_default_deny_ingress() {
        let spec = K8sPolicySpec::default();
        let p = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(
            p.selector.as_deref(),
            Some("projectcalico.org/orchestrator == 'k8s'")
        );
        assert_eq!(p.types, Some(vec![PolicyType::Ingress]));
        assert!(p.ingress.is_empty() && p.egress.is_empty());
    }

    #[test]
    fn policy_types_defaulting_differs_between_knp_and_sknp() {
        let spec = K8sPolicySpec {
            egress: vec![K8sEgressRule::default()],
            ..K8sPolicySpec::default()
        };
        let knp = to_calico(&spec, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(
            knp.types,
            Some(vec![PolicyType::Ingress, PolicyType::Egress])
        );
        let sknp = to_calico(&spec, K8sFlavour::Staged).unwrap();
        assert_eq!(sknp.types, Some(vec![PolicyType::Ingress]));
        // An empty egress rule allows everything.
        assert_eq!(
            knp.egress,
            vec![allow(None, EntityRule::default(), EntityRule::default())]
        );

        let explicit_empty = K8sPolicySpec {
            policy_types: Some(vec![]),
            ..spec
        };
        let p = to_calico(&explicit_empty, K8sFlavour::NetworkPolicy).unwrap();
        assert_eq!(p.types, Some(vec![PolicyType::Ingress]));

        let egress_only = K8sPolicySpec {
            policy_types: Some(vec![PolicyType::Egress]),
            ..K8sPolicySpec::default()
        };
        let p = to_calico(&egress_only, K8sFlavour::Staged).unwrap();
        assert_eq!(p.types, Some(vec![PolicyType::Egress]));
    }

    // conversion_test.go's SimplifyPorts table.
    #[test]
    fn simplify_ports_table() {
        let fmt = |v: &[Port]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        for (input, want) in [
            ("", ""),
            ("0", "0"),
            ("1", "1"),
            ("65535", "65535"),
            ("0:65535", "0:65535"),
            ("1,2", "1:2"),
            ("2,1", "1:2"),
            ("1,2,4", "1:2,4"),
            ("1,2,3,4,80:81,81:90,9090", "1:4,80:90,9090"),
            ("81:90,4,2,80:81,3,1,9090", "1:4,80:90,9090"),
            (
                "81:90,4,2,foo,80:81,3,1,9090,http",
                "foo,http,1:4,80:90,9090",
            ),
            ("foo", "foo"),
            ("foo,80", "foo,80"),
            ("80,80", "80"),
        ] {
            assert_eq!(fmt(&simplify_ports(ports(input))), want, "input {input}");
        }
    }
}
