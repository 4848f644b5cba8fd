//! Every validation rule, with the exact error a user sees (`FILE:DOC: FIELD: REASON`).

use crate::model::load::load_str;

/// Loads `text` and returns its rendered errors (empty when valid).
fn errors(text: &str) -> Vec<String> {
    match load_str(text, "t.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn obj(kind: &str, meta: &str, spec: &str) -> String {
    let api = match kind {
        "Namespace" => "v1",
        "K8sNetworkPolicy" => "networking.k8s.io/v1",
        _ => "projectcalico.org/v3",
    };
    let kind = kind.strip_prefix("K8s").unwrap_or(kind);
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {meta}\nspec: {spec}\n")
}

fn np(spec: &str) -> String {
    obj("NetworkPolicy", "{name: p, namespace: ns}", spec)
}

fn gnp(spec: &str) -> String {
    obj("GlobalNetworkPolicy", "{name: p}", spec)
}

fn knp(spec: &str) -> String {
    obj("K8sNetworkPolicy", "{name: p, namespace: ns}", spec)
}

/// Asserts `text` yields exactly the errors `want` (each prefixed by `t.yaml:1: `).
#[track_caller]
fn check(text: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|w| format!("t.yaml:1: {w}")).collect();
    assert_eq!(errors(text), want, "input:\n{text}");
}

#[track_caller]
fn valid(text: &str) {
    check(text, &[]);
}

const NP_NAME: &str = "expected lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form), or a knp.default./ossg.default. prefix (regex ^(L(\\.L)?|(knp|ossg)\\.default\\.L(\\.L)*)$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)";
const GNP_NAME: &str = "expected lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form) (regex ^(L\\.)?L$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)";
const LABEL_NAME: &str =
    "expected lower-case alphanumerics and '-', starting and ending with an alphanumeric";

// ---------------------------------------------------------------------------------
// Names, namespaces, labels

#[test]
fn policy_names() {
    for name in [
        "allow-tcp-6379",
        "internal-access.allow-tcp-6379",
        "knp.default.web.a.b",
        "ossg.default.x",
        "0a",
    ] {
        valid(&obj(
            "NetworkPolicy",
            &format!("{{name: {name}, namespace: ns}}"),
            "{}",
        ));
    }
    for name in ["a.b.c", "Upper", "-a", "a-", "a_b", "knp.other.x"] {
        check(
            &obj(
                "NetworkPolicy",
                &format!("{{name: {name}, namespace: ns}}"),
                "{}",
            ),
            &[&format!("metadata.name: invalid name {name:?}: {NP_NAME}")],
        );
    }
    valid(&obj("GlobalNetworkPolicy", "{name: tier1.gnp}", "{}"));
    check(
        &obj("GlobalNetworkPolicy", "{name: knp.default.x}", "{}"),
        &[&format!(
            "metadata.name: invalid name \"knp.default.x\": {GNP_NAME}"
        )],
    );
    let long = "a".repeat(254);
    check(
        &obj("StagedNetworkPolicy", &format!("{{name: {long}}}"), "{}"),
        &["metadata.name: name is 254 characters long: the limit is 253"],
    );
    check(
        &obj("GlobalNetworkPolicy", "{labels: {a: b}}", "{}"),
        &["metadata.name: missing: every resource needs a name"],
    );
}

#[test]
fn other_names() {
    check(
        &obj("Tier", "{name: a.b}", "{}"),
        &[&format!(
            "metadata.name: invalid name \"a.b\": {LABEL_NAME} (regex ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$)"
        )],
    );
    check(
        &obj("Tier", &format!("{{name: {}}}", "t".repeat(64)), "{}"),
        &["metadata.name: name is 64 characters long: the limit is 63"],
    );
    valid(&obj("Profile", "{name: kns.prod}", "{}"));
    check(
        &obj("Profile", "{name: kns..prod}", "{}"),
        &[
            "metadata.name: invalid name \"kns..prod\": expected lower-case alphanumerics, '-' and '.', each '.'-separated part starting and ending with an alphanumeric (DNS-1123 subdomain)",
        ],
    );
    check(
        &obj("Namespace", "{name: Prod}", "{}"),
        &[&format!(
            "metadata.name: invalid name \"Prod\": {LABEL_NAME} (regex ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$)"
        )],
    );
}

#[test]
fn namespaces() {
    check(
        &obj("NetworkSet", "{name: s, namespace: my_ns}", "{}"),
        &[&format!(
            "metadata.namespace: invalid namespace \"my_ns\": {LABEL_NAME}"
        )],
    );
    check(
        &obj("GlobalNetworkPolicy", "{name: p, namespace: prod}", "{}"),
        &[
            "metadata.namespace: GlobalNetworkPolicy is cluster-scoped: remove the namespace \"prod\"",
        ],
    );
}

#[test]
fn labels_and_annotations() {
    valid(&obj(
        "Namespace",
        "{name: n, labels: {app.kubernetes.io/name: web, tier: '', A_b.c: X-1}}",
        "{}",
    ));
    check(
        &obj("Namespace", "{name: n, labels: {bad key: x}}", "{}"),
        &[
            "metadata.labels.bad key: invalid label key \"bad key\": the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
        ],
    );
    check(
        &obj("Namespace", "{name: n, labels: {Example.com/a: x}}", "{}"),
        &[
            "metadata.labels.Example.com/a: invalid label key \"Example.com/a\": the prefix before '/' must be a DNS subdomain (lower-case alphanumerics, '-' and '.')",
        ],
    );
    check(
        &obj("Namespace", "{name: n, labels: {a: -x}}", "{}"),
        &[
            "metadata.labels.a: invalid label value \"-x\": expected alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
        ],
    );
    let long = "v".repeat(64);
    check(
        &obj(
            "Namespace",
            &format!("{{name: n, labels: {{a: {long}}}}}"),
            "{}",
        ),
        &[&format!(
            "metadata.labels.a: invalid label value \"{long}\": 64 characters long: the limit is 63"
        )],
    );
    check(
        &obj("Namespace", "{name: n, annotations: {'a b': x}}", "{}"),
        &[
            "metadata.annotations.a b: invalid annotation key \"a b\": the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
        ],
    );
}

// ---------------------------------------------------------------------------------
// Rules: protocols, ports, ICMP, nets

#[test]
fn ports_need_a_port_protocol() {
    check(
        &np("{ingress: [{action: Allow, destination: {ports: [80]}}]}"),
        &[
            "spec.ingress[0].destination.ports: rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
        ],
    );
    check(
        &np("{ingress: [{action: Allow, source: {notPorts: ['1000:2000']}}]}"),
        &[
            "spec.ingress[0].source.notPorts: rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
        ],
    );
    // Named ports carry their own protocol.
    valid(&np(
        "{ingress: [{action: Allow, destination: {ports: [http]}}]}",
    ));
    check(
        &np("{egress: [{action: Allow, protocol: ICMP, destination: {ports: [http]}}]}"),
        &[
            "spec.egress[0].destination.ports: rules that specify ports must set protocol to TCP or UDP or SCTP (protocol is ICMP)",
        ],
    );
    check(
        &np("{egress: [{action: Allow, protocol: 47, source: {notPorts: [80]}}]}"),
        &[
            "spec.egress[0].source.notPorts: rules that specify ports must set protocol to TCP or UDP or SCTP (protocol is 47)",
        ],
    );
    valid(&np(
        "{egress: [{action: Allow, protocol: sctp, destination: {ports: [80, '1:65535']}}]}",
    ));
    valid(&np(
        "{egress: [{action: Allow, protocol: 17, destination: {notPorts: [53]}}]}",
    ));
}

#[test]
fn port_values() {
    check(
        &np(
            "{ingress: [{action: Allow, protocol: TCP, destination: {ports: [0, '0:10', Web_1, a--b]}}]}",
        ),
        &[
            "spec.ingress[0].destination.ports[0]: invalid port 0: port numbers must be 1-65535",
            "spec.ingress[0].destination.ports[1]: invalid port range 0:10: port numbers must be 1-65535",
            "spec.ingress[0].destination.ports[2]: invalid port name \"Web_1\": expected an IANA service name (1-15 lower-case alphanumerics and '-', with a letter, no leading, trailing or double '-')",
            "spec.ingress[0].destination.ports[3]: invalid port name \"a--b\": expected an IANA service name (1-15 lower-case alphanumerics and '-', with a letter, no leading, trailing or double '-')",
        ],
    );
    check(
        &np("{ingress: [{action: Allow, protocol: TCP, destination: {ports: ['80 : 90']}}]}"),
        &[
            "spec.ingress[0].destination.ports[0]: invalid port \"80 : 90\": expected a number 1-65535, a range \"min:max\" or a port name",
        ],
    );
}

#[test]
fn icmp_rules() {
    valid(&np(
        "{ingress: [{action: Allow, protocol: ICMP, ipVersion: 4, icmp: {type: 8, code: 0}}]}",
    ));
    valid(&np(
        "{ingress: [{action: Allow, protocol: ICMPv6, icmp: {type: 128}, notICMP: {type: 1}}]}",
    ));
    check(
        &np("{ingress: [{action: Allow, protocol: ICMP, ipVersion: 6}]}"),
        &["spec.ingress[0].protocol: protocol ICMP requires ipVersion 4, rule has ipVersion 6"],
    );
    check(
        &np("{ingress: [{action: Allow, protocol: 58, ipVersion: 4}]}"),
        &["spec.ingress[0].protocol: protocol ICMPv6 requires ipVersion 6, rule has ipVersion 4"],
    );
    check(
        &np("{ingress: [{action: Allow, notProtocol: icmp, ipVersion: 6}]}"),
        &["spec.ingress[0].notProtocol: protocol ICMP requires ipVersion 4, rule has ipVersion 6"],
    );
    check(
        &np("{ingress: [{action: Allow, protocol: ICMP, icmp: {type: 255}}]}"),
        &["spec.ingress[0].icmp.type: invalid ICMP type 255: expected 0-254"],
    );
    check(
        &np("{ingress: [{action: Allow, protocol: ICMP, notICMP: {code: 3}}]}"),
        &["spec.ingress[0].notICMP.code: ICMP code specified without an ICMP type"],
    );
    check(
        &np("{ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]}"),
        &["spec.ingress[0].icmp: ICMP fields require protocol to be ICMP or ICMPv6"],
    );
    check(
        &np("{ingress: [{action: Allow, icmp: {type: 8, code: 256}}]}"),
        &["spec.ingress[0].icmp.code: invalid ICMP code 256: expected 0-255"],
    );
    check(
        &np("{ingress: [{action: Allow, ipVersion: 5}]}"),
        &["spec.ingress[0].ipVersion: invalid IP version 5: expected 4 or 6"],
    );
}

#[test]
fn nets() {
    valid(&np(
        "{ingress: [{action: Allow, ipVersion: 6, source: {nets: ['fd00::/64', 'fd00::1']}}]}",
    ));
    check(
        &np("{ingress: [{action: Allow, ipVersion: 4, source: {nets: ['fd00::/64']}}]}"),
        &["spec.ingress[0].source.nets: rule IP version 4 doesn't match CIDR version"],
    );
    check(
        &np(
            "{ingress: [{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {notNets: ['fd00::/8']}}]}",
        ),
        &["spec.ingress[0].destination.notNets: rule contains both IPv4 and IPv6 CIDRs"],
    );
    check(
        &np("{ingress: [{action: Allow, source: {nets: [10.1.2.3/8]}}]}"),
        &[
            "spec.ingress[0].source.nets[0]: invalid CIDR 10.1.2.3/8: host bits are set (expected the network address, 10.0.0.0/8)",
        ],
    );
    check(
        &np("{ingress: [{action: Allow, source: {notNets: [0.0.0.0/0]}}]}"),
        &[
            "spec.ingress[0].source.notNets[0]: catch-all CIDR 0.0.0.0/0 in negation creates logical contradiction (matches no traffic)",
        ],
    );
    check(
        &np("{ingress: [{action: Allow, source: {nets: [not-a-cidr]}}]}"),
        &[
            "spec.ingress[0].source.nets[0]: invalid CIDR \"not-a-cidr\": expected an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64, or a bare address",
        ],
    );
}

#[test]
fn list_limits() {
    let rules = vec!["{action: Deny}"; 1025].join(", ");
    check(
        &np(&format!("{{egress: [{rules}]}}")),
        &["spec.egress: 1025 rules: the limit is 1024"],
    );
    let rules = vec!["{action: Deny}"; 1024].join(", ");
    valid(&np(&format!("{{egress: [{rules}]}}")));
    let nets: Vec<String> = (0..257)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    check(
        &np(&format!(
            "{{ingress: [{{action: Allow, source: {{nets: [{}]}}}}]}}",
            nets.join(", ")
        )),
        &["spec.ingress[0].source.nets: 257 entries: the limit is 256"],
    );
    let ports: Vec<String> = (1..=51).map(|p| p.to_string()).collect();
    check(
        &np(&format!(
            "{{ingress: [{{action: Allow, protocol: TCP, destination: {{notPorts: [{}]}}}}]}}",
            ports.join(", ")
        )),
        &["spec.ingress[0].destination.notPorts: 51 entries: the limit is 50"],
    );
    check(
        &obj(
            "Profile",
            "{name: p}",
            &format!("{{ingress: [{}]}}", vec!["{action: Allow}"; 1025].join(",")),
        ),
        &["spec.ingress: 1025 rules: the limit is 1024"],
    );
}

// ---------------------------------------------------------------------------------
// Selectors

#[test]
fn selectors_must_parse() {
    valid(&np(
        "{selector: \"role == 'db' && has(tier)\", serviceAccountSelector: 'all()'}",
    ));
    let e = errors(&np("{selector: 'role == '}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.yaml:1: spec.selector: invalid selector \"role == \": at position 8: "),
        "{e:?}"
    );
    let e = errors(&np(
        "{ingress: [{action: Allow, source: {notSelector: 'a in {'}}]}",
    ));
    assert!(
        e.len() == 1
            && e[0].starts_with(
                "t.yaml:1: spec.ingress[0].source.notSelector: invalid selector \"a in {\": at position "
            ),
        "{e:?}"
    );
    let long = format!("a == '{}'", "x".repeat(1020));
    check(
        &np(&format!("{{selector: \"{long}\"}}")),
        &["spec.selector: selector is 1027 bytes long: the limit is 1024"],
    );
}

#[test]
fn global_only_in_entity_namespace_selector() {
    valid(&np(
        "{ingress: [{action: Allow, source: {namespaceSelector: ' global( ) '}}]}",
    ));
    valid(&gnp(
        "{ingress: [{action: Allow, source: {selector: 'role == \"x\"', namespaceSelector: global()}}]}",
    ));
    check(
        &np("{selector: global()}"),
        &[
            "spec.selector: invalid selector \"global()\": global() can only be used in a rule's source/destination namespaceSelector",
        ],
    );
    check(
        &gnp("{namespaceSelector: 'global() || all()'}"),
        &[
            "spec.namespaceSelector: invalid selector \"global() || all()\": global() can only be used in a rule's source/destination namespaceSelector",
        ],
    );
    check(
        &np("{serviceAccountSelector: global()}"),
        &[
            "spec.serviceAccountSelector: invalid selector \"global()\": global() can only be used in a rule's source/destination namespaceSelector",
        ],
    );
    check(
        &np("{egress: [{action: Allow, destination: {selector: global()}}]}"),
        &[
            "spec.egress[0].destination.selector: invalid selector \"global()\": global() can only be used in a rule's source/destination namespaceSelector",
        ],
    );
    check(
        &np(
            "{egress: [{action: Allow, destination: {namespaceSelector: 'global() && a == \"b\"'}}]}",
        ),
        &[
            "spec.egress[0].destination.namespaceSelector: invalid selector \"global() && a == \\\"b\\\"\": global() cannot be combined with other selectors",
        ],
    );
}

// ---------------------------------------------------------------------------------
// Services, HTTP

#[test]
fn services() {
    valid(&np(
        "{ingress: [{action: Allow, protocol: TCP, source: {services: {name: web}}, destination: {ports: [80]}}], egress: [{action: Allow, destination: {services: {name: db, namespace: data}}}]}",
    ));
    check(
        &np(
            "{egress: [{action: Allow, destination: {services: {name: db}, selector: 'a == \"b\"', nets: [10.0.0.0/8]}}]}",
        ),
        &[
            "spec.egress[0].destination.services: services cannot be combined with selector, nets in the same rule",
        ],
    );
    check(
        &np("{egress: [{action: Allow, destination: {services: {namespace: x}}}]}"),
        &["spec.egress[0].destination.services.name: services must specify a service name"],
    );
    check(
        &np("{egress: [{action: Allow, source: {services: {name: web}}}]}"),
        &[
            "spec.egress[0].source.services: not allowed in egress rule source: services may only be a destination of egress rules",
        ],
    );
    check(
        &np("{ingress: [{action: Allow, destination: {services: {name: web}}}]}"),
        &[
            "spec.ingress[0].destination.services: not allowed in ingress rule destination: services may only be a source of ingress rules",
        ],
    );
    check(
        &np(
            "{egress: [{action: Allow, protocol: TCP, destination: {services: {name: web}, ports: [80]}}]}",
        ),
        &["spec.egress[0].destination: ports and notPorts cannot be specified with services"],
    );
    check(
        &gnp("{egress: [{action: Allow, destination: {services: {name: web}}}]}"),
        &[
            "spec.egress[0].destination.services.namespace: must specify a namespace: a global policy has none to default to",
        ],
    );
}

#[test]
fn http() {
    valid(&np(
        "{ingress: [{action: Allow, protocol: TCP, http: {methods: [GET], paths: [{exact: /a}, {prefix: /b}]}}]}",
    ));
    check(
        &np("{ingress: [{action: Deny, protocol: UDP, http: {methods: [GET, GET]}}]}"),
        &[
            "spec.ingress[0].http: HTTP match is only valid on Allow rules",
            "spec.ingress[0].http: rules with HTTP match must have protocol TCP or unset",
            "spec.ingress[0].http.methods[1]: method \"GET\" is listed more than once",
        ],
    );
    check(
        &np(
            "{egress: [{action: Allow, http: {paths: [{exact: /a, prefix: /b}, {}, {exact: 'a?b'}]}}]}",
        ),
        &[
            "spec.egress[0].http.paths[0]: invalid path match: both exact and prefix are set",
            "spec.egress[0].http.paths[1]: invalid path match: either exact or prefix must be set",
            "spec.egress[0].http.paths[2]: invalid path \"a?b\": must start with '/' and contain no '?', '#' or space",
            "spec.egress[0].http: not allowed in egress rules",
        ],
    );
}

// ---------------------------------------------------------------------------------
// Policy-level rules

#[test]
fn types_and_hints() {
    check(
        &np("{types: [Ingress, Ingress]}"),
        &["spec.types: 'Ingress' type specified more than once"],
    );
    check(
        &np("{types: [Ingress, Egress, Egress]}"),
        &[
            "spec.types: 3 types given: expected 1 or 2 of Ingress, Egress",
            "spec.types: 'Egress' type specified more than once",
        ],
    );
    valid(&np("{performanceHints: [AssumeNeededOnEveryNode]}"));
    check(
        &np("{performanceHints: [AssumeNeededOnEveryNode, Fast, AssumeNeededOnEveryNode]}"),
        &[
            "spec.performanceHints[1]: unknown performance hint \"Fast\": expected AssumeNeededOnEveryNode",
            "spec.performanceHints[2]: performance hint \"AssumeNeededOnEveryNode\" is listed more than once",
        ],
    );
}

#[test]
fn global_only_fields() {
    check(
        &np("{namespaceSelector: all(), doNotTrack: true, preDNAT: true, applyOnForward: true}"),
        &[
            "spec.namespaceSelector: not allowed in a NetworkPolicy: only GlobalNetworkPolicy and StagedGlobalNetworkPolicy have namespaceSelector",
            "spec.doNotTrack: not allowed in a NetworkPolicy: only GlobalNetworkPolicy and StagedGlobalNetworkPolicy have doNotTrack",
            "spec.preDNAT: not allowed in a NetworkPolicy: only GlobalNetworkPolicy and StagedGlobalNetworkPolicy have preDNAT",
            "spec.applyOnForward: not allowed in a NetworkPolicy: only GlobalNetworkPolicy and StagedGlobalNetworkPolicy have applyOnForward",
        ],
    );
    valid(&gnp(
        "{preDNAT: true, applyOnForward: true, ingress: [{action: Deny}]}",
    ));
    valid(&gnp(
        "{doNotTrack: true, applyOnForward: true, egress: [{action: Allow}]}",
    ));
    check(
        &gnp("{preDNAT: true, doNotTrack: true, applyOnForward: true}"),
        &["spec.preDNAT: preDNAT and doNotTrack cannot both be true"],
    );
    check(
        &gnp("{preDNAT: true, egress: [{action: Allow}]}"),
        &[
            "spec.egress: preDNAT policy cannot have any egress rules",
            "spec.types: preDNAT policy cannot have 'Egress' type",
            "spec.applyOnForward: applyOnForward must be true if either preDNAT or doNotTrack is true",
        ],
    );
    check(
        &gnp("{preDNAT: true, applyOnForward: true, types: [Egress]}"),
        &["spec.types: preDNAT policy cannot have 'Egress' type"],
    );
    check(
        &gnp("{doNotTrack: true}"),
        &[
            "spec.applyOnForward: applyOnForward must be true if either preDNAT or doNotTrack is true",
        ],
    );
}

#[test]
fn staged_actions() {
    check(
        &np("{stagedAction: Set}"),
        &["spec.stagedAction: not allowed in a NetworkPolicy: only staged kinds have stagedAction"],
    );
    check(
        &obj("StagedNetworkPolicy", "{name: p}", "{stagedAction: Learn}"),
        &[
            "spec.stagedAction: stagedAction Learn is not supported (it has no open-source Calico semantics): expected Set or Delete",
        ],
    );
    check(
        &obj(
            "StagedGlobalNetworkPolicy",
            "{name: p}",
            "{stagedAction: Ignore}",
        ),
        &[
            "spec.stagedAction: stagedAction Ignore is not supported (it has no open-source Calico semantics): expected Set or Delete",
        ],
    );
    valid(&obj(
        "StagedNetworkPolicy",
        "{name: p}",
        "{stagedAction: Delete, tier: default, types: [Egress]}",
    ));
    check(
        &obj(
            "StagedGlobalNetworkPolicy",
            "{name: p}",
            "{stagedAction: Delete, order: 1, selector: all(), ingress: [{action: Allow}], applyOnForward: true}",
        ),
        &[
            "spec: stagedAction Delete requires an empty spec (only tier may be set), found order, selector, ingress, applyOnForward",
        ],
    );
    check(
        &obj(
            "StagedKubernetesNetworkPolicy",
            "{name: p}",
            "{stagedAction: Delete, podSelector: {matchLabels: {a: b}}, policyTypes: [Ingress]}",
        ),
        &["spec: stagedAction Delete requires an empty spec, found podSelector, policyTypes"],
    );
    valid(&obj(
        "StagedKubernetesNetworkPolicy",
        "{name: p}",
        "{stagedAction: Delete}",
    ));
    check(
        &knp("{stagedAction: Set}"),
        &["spec.stagedAction: not allowed in a NetworkPolicy: only staged kinds have stagedAction"],
    );
    check(
        &np("{tier: Security}"),
        &[&format!(
            "spec.tier: invalid tier name \"Security\": {LABEL_NAME}"
        )],
    );
}

// ---------------------------------------------------------------------------------
// Kubernetes policies

#[test]
fn k8s_ports() {
    valid(&knp(
        "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: 53}, {port: http}, {port: 8000, endPort: 8080}]}]}",
    ));
    check(
        &knp("{ingress: [{ports: [{protocol: tcp, port: 0}, {port: Web}]}]}"),
        &[
            "spec.ingress[0].ports[0].protocol: unsupported protocol \"tcp\": expected TCP, UDP or SCTP",
            "spec.ingress[0].ports[0].port: invalid port 0: expected 1-65535",
            "spec.ingress[0].ports[1].port: invalid port name \"Web\": expected an IANA service name (1-15 lower-case alphanumerics and '-', with a letter, no leading, trailing or double '-')",
        ],
    );
    check(
        &knp(
            "{egress: [{ports: [{endPort: 90}, {port: http, endPort: 90}, {port: 100, endPort: 90}, {port: 100, endPort: 70000}]}]}",
        ),
        &[
            "spec.egress[0].ports[0].endPort: endPort may not be specified when port is not specified",
            "spec.egress[0].ports[1].endPort: endPort may not be specified when port is a named port",
            "spec.egress[0].ports[2].endPort: endPort 90 must be greater than or equal to port 100",
            "spec.egress[0].ports[3].endPort: invalid endPort 70000: expected at most 65535",
        ],
    );
}

#[test]
fn k8s_peers_and_ip_blocks() {
    valid(&knp(
        "{ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4/32]}}, {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}]}]}",
    ));
    check(
        &knp(
            "{ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16, 11.0.0.0/24, 'fd00::/64']}}]}]}",
        ),
        &[
            "spec.ingress[0].from[0].ipBlock.except[0]: except 10.0.0.0/16 must be a strict subset of cidr 10.0.0.0/16",
            "spec.ingress[0].from[0].ipBlock.except[1]: except 11.0.0.0/24 must be a strict subset of cidr 10.0.0.0/16",
            "spec.ingress[0].from[0].ipBlock.except[2]: except fd00::/64 must be a strict subset of cidr 10.0.0.0/16",
        ],
    );
    check(
        &knp("{ingress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]}"),
        &[
            "spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0.1\": expected a prefix such as 10.0.0.0/8 or fd00::/64",
        ],
    );
    check(
        &knp("{egress: [{to: [{}, {ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}"),
        &[
            "spec.egress[0].to[0]: must specify at least one of podSelector, namespaceSelector, ipBlock",
            "spec.egress[0].to[1].ipBlock: ipBlock may not be combined with podSelector or namespaceSelector",
        ],
    );
}

#[test]
fn k8s_label_selectors() {
    valid(&knp(
        "{podSelector: {matchExpressions: [{key: app, operator: In, values: [a, b]}, {key: x, operator: DoesNotExist}]}}",
    ));
    check(
        &knp(
            "{podSelector: {matchLabels: {'a b': c}, matchExpressions: [{key: app, operator: In}, {key: x, operator: Exists, values: [y]}, {key: z, operator: NotIn, values: ['-']}]}}",
        ),
        &[
            "spec.podSelector.matchLabels.a b: invalid label key \"a b\": the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
            "spec.podSelector.matchExpressions[0].values: must be specified when operator is In",
            "spec.podSelector.matchExpressions[1].values: may not be specified when operator is Exists",
            "spec.podSelector.matchExpressions[2].values[0]: invalid label value \"-\": expected alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
        ],
    );
    check(
        &knp("{podSelector: {matchExpressions: [{key: app, operator: Is, values: [a]}]}}"),
        &[
            "spec.podSelector.matchExpressions[0].operator: unknown variant `Is`, expected one of `In`, `NotIn`, `Exists`, `DoesNotExist`",
        ],
    );
    check(
        &knp("{policyTypes: [Egress, Egress]}"),
        &["spec.policyTypes: 'Egress' type specified more than once"],
    );
}

// ---------------------------------------------------------------------------------
// Tiers, sets, endpoints, profiles

#[test]
fn tiers() {
    valid(&obj(
        "Tier",
        "{name: security}",
        "{order: 100, defaultAction: Pass}",
    ));
    valid(&obj("Tier", "{name: default}", "{order: 1000000}"));
    valid(&obj(
        "Tier",
        "{name: kube-admin}",
        "{order: 1000, defaultAction: Pass}",
    ));
    check(
        &obj("Tier", "{name: default}", "{order: 5, defaultAction: Pass}"),
        &[
            "spec.order: default tier order must be 1000000",
            "spec.defaultAction: the \"default\" tier must have default action Deny",
        ],
    );
    check(
        &obj("Tier", "{name: kube-baseline}", "{order: 10000000}"),
        &["spec.defaultAction: the \"kube-baseline\" tier must have default action Pass"],
    );
    check(
        &obj("Tier", "{name: t}", "{defaultAction: Allow}"),
        &["spec.defaultAction: unknown variant `Allow`, expected `Deny` or `Pass`"],
    );
}

#[test]
fn network_sets() {
    valid(&obj(
        "GlobalNetworkSet",
        "{name: s, labels: {role: db}}",
        "{nets: [10.1.2.3/8, 'fd00::1']}",
    ));
    check(
        &obj(
            "NetworkSet",
            "{name: s, namespace: n, labels: {projectcalico.org/namespace: other}}",
            "{}",
        ),
        &[
            "metadata.labels.projectcalico.org/namespace: projectcalico.org/namespace is not a valid label name: Calico sets it from the namespace",
        ],
    );
}

#[test]
fn host_endpoints() {
    valid(&obj(
        "HostEndpoint",
        "{name: h}",
        "{node: node1, interfaceName: eth0, expectedIPs: [10.0.0.1], profiles: [p], ports: [{name: ssh, protocol: TCP, port: 22}]}",
    ));
    valid(&obj(
        "HostEndpoint",
        "{name: h}",
        "{node: node1, interfaceName: '*'}",
    ));
    check(
        &obj("HostEndpoint", "{name: h}", "{}"),
        &[
            "spec.node: node must be specified",
            "spec: at least one of interfaceName or expectedIPs must be specified",
        ],
    );
    check(
        &obj(
            "HostEndpoint",
            "{name: h}",
            "{node: n, interfaceName: a-very-long-interface, ports: [{name: ping, protocol: ICMP, port: 0, hostPort: 1}]}",
        ),
        &[
            "spec.interfaceName: invalid interface name \"a-very-long-interface\": expected 1-15 characters of [a-zA-Z0-9_.-] (or \"*\" on a HostEndpoint)",
            "spec.ports[0].protocol: protocol ICMP does not support ports: expected TCP, UDP or SCTP",
            "spec.ports[0].port: invalid port 0: expected 1-65535",
            "spec.ports[0].hostPort: not allowed on a HostEndpoint port",
        ],
    );
    check(
        &obj(
            "HostEndpoint",
            "{name: h}",
            "{node: n, expectedIPs: [10.0.0.0/8]}",
        ),
        &["spec.expectedIPs[0]: invalid IP address syntax"],
    );
}

#[test]
fn workload_endpoints() {
    valid(&obj(
        "WorkloadEndpoint",
        "{name: node1-k8s-web-eth0, namespace: prod, labels: {app: web}}",
        "{node: node1, pod: web, ipNetworks: [10.0.0.5/32, 'fd00::5'], mac: '0a:1b:2c:3d:4e:5f', ports: [{name: http, protocol: TCP, port: 80}, {name: '', protocol: UDP, port: 53, hostPort: 53}]}",
    ));
    check(
        &obj(
            "WorkloadEndpoint",
            "{name: w}",
            "{ipNetworks: [10.0.0.0/24], mac: zz, ports: [{name: '', protocol: TCP, port: 80}], profiles: [Bad]}",
        ),
        &[
            "spec.ipNetworks[0]: IP network 10.0.0.0/24 contains multiple addresses: expected a single address (/32)",
            "spec.mac: invalid MAC address \"zz\": expected six hex pairs such as 0a:1b:2c:3d:4e:5f",
            "spec.profiles[0]: invalid profile name \"Bad\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
            "spec.ports[0].name: missing: a named port needs a name",
        ],
    );
}

#[test]
fn profiles() {
    valid(&obj(
        "Profile",
        "{name: kns.prod}",
        "{ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {pcns.a: b}}",
    ));
    check(
        &obj(
            "Profile",
            "{name: p}",
            "{ingress: [{action: Allow, destination: {ports: [80]}}], labelsToApply: {'x y': z}}",
        ),
        &[
            "spec.ingress[0].destination.ports: rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
            "spec.labelsToApply.x y: invalid label key \"x y\": the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
        ],
    );
}

#[test]
fn remaining_field_checks() {
    check(
        &np("{ingress: [{action: Allow, source: {notNets: ['::/0']}}]}"),
        &[
            "spec.ingress[0].source.notNets[0]: catch-all CIDR ::/0 in negation creates logical contradiction (matches no traffic)",
        ],
    );
    check(
        &np(
            "{egress: [{action: Allow, destination: {services: {name: Web, namespace: a_b}}, source: {serviceAccounts: {names: [Admin]}}}]}",
        ),
        &[
            "spec.egress[0].source.serviceAccounts.names[0]: invalid service account name \"Admin\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
            "spec.egress[0].destination.services.name: invalid service name \"Web\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
            "spec.egress[0].destination.services.namespace: invalid namespace \"a_b\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
        ],
    );
    let methods = vec!["M"; 21]
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{m}{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let long_path = format!("/{}", "p".repeat(1024));
    check(
        &np(&format!(
            "{{ingress: [{{action: Allow, http: {{methods: [{methods}], paths: [{{prefix: {long_path}}}]}}}}]}}"
        )),
        &[
            "spec.ingress[0].http.methods: 21 methods: the limit is 20",
            "spec.ingress[0].http.paths[0]: path is 1025 bytes long: the limit is 1024",
        ],
    );
    let big = "v".repeat(256 << 10);
    check(
        &obj(
            "Namespace",
            &format!("{{name: n, annotations: {{a: {big}}}}}"),
            "{}",
        ),
        &["metadata.annotations: annotations total 262145 bytes: the limit is 262144"],
    );
    check(
        &np("{ingress: [{action: Allow, metadata: {annotations: {'-x': y}}}]}"),
        &[
            "spec.ingress[0].metadata.annotations.-x: invalid annotation key \"-x\": the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
        ],
    );
    check(
        &obj(
            "HostEndpoint",
            "{name: h}",
            "{node: Node_1, interfaceName: eth0, profiles: [Bad], ports: [{name: x, protocol: TCP, port: 1, hostIP: 1.2.3.4}]}",
        ),
        &[
            "spec.node: invalid node name \"Node_1\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
            "spec.profiles[0]: invalid profile name \"Bad\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
            "spec.ports[0].hostIP: not allowed on a HostEndpoint port",
        ],
    );
    check(
        &obj(
            "WorkloadEndpoint",
            "{name: w}",
            "{containerID: -abc, interfaceName: 'cali 1', pod: Web, ports: [{name: p, protocol: UDP, port: 5, hostPort: 5, hostIP: nope}]}",
        ),
        &[
            "spec.pod: invalid name \"Web\": expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)",
            "spec.interfaceName: invalid interface name \"cali 1\": expected 1-15 characters of [a-zA-Z0-9_.-] (or \"*\" on a HostEndpoint)",
            "spec.containerID: invalid container id \"-abc\": expected alphanumerics and '-', starting and ending with an alphanumeric",
            "spec.ports[0].hostIP: invalid IP address \"nope\"",
        ],
    );
}
