//! Validation of defaulted resources, per CALICO_SEMANTICS §1–2 and the checks Calico's
//! libcalico-go validator (validator/v3/validator.go), its CRD schemas (MaxItems,
//! MaxLength, CEL rules in api/pkg/apis/projectcalico/v3) and the Kubernetes API server
//! (NetworkPolicy, Namespace) apply.
//!
//! [`validate`] returns every problem of one resource as a [`FieldError`]: a field path
//! relative to the resource (`spec.ingress[0].destination.ports[1]`, in the same notation
//! as decoding errors) and a reason that names the offending value and what would be
//! accepted. It never stops at the first problem and never panics.
//!
//! Deliberate differences from Calico (also listed in the README):
//! - `stagedAction: Learn` and `Ignore` (listed by the CRD enum, without OSS semantics)
//!   are rejected.
//! - A WorkloadEndpoint may omit `interfaceName` (tiergate endpoints are often written by
//!   hand for `eval`; Calico's own WEPs always carry one).
//! - `global()` is rejected in every selector except an EntityRule `namespaceSelector`
//!   (Calico's CEL rules check policy selectors, service-account and namespace selectors
//!   and entity `selector`; `notSelector` and `serviceAccounts.selector` are unchecked
//!   there, but `global()` has no meaning in them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::defaults::DEFAULT_TIER;
use super::types::{
    EndpointPort, EntityRule, HttpMatch, IcmpFields, IntOrString, K8sPeer, K8sPolicySpec, K8sPort,
    Kind, LabelSelector, LabelSelectorOperator, Net, ObjectMeta, PolicySpec, PolicyType, Port,
    Resource, Rule, RuleAction, StagedAction, TierDefaultAction,
};

/// Most ingress (or egress) rules in one policy or profile.
pub const MAX_RULES: usize = 1024;
/// Most entries in `nets` (or `notNets`) of one entity rule.
pub const MAX_NETS: usize = 256;
/// Most entries in `ports` (or `notPorts`) of one entity rule.
pub const MAX_PORTS: usize = 50;
/// Longest selector, in bytes.
pub const MAX_SELECTOR_LEN: usize = 1024;
/// Longest resource name (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest tier or namespace name (DNS-1123 label).
pub const MAX_LABEL_NAME_LEN: usize = 63;
/// Most HTTP methods (or paths) in one rule.
pub const MAX_HTTP_MATCHES: usize = 20;
/// Longest HTTP path.
pub const MAX_HTTP_PATH_LEN: usize = 1024;
/// Largest total size of an object's annotations, in bytes.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 << 10;

/// The label Calico gives network sets and pods for their namespace; users may not set
/// it on network sets.
pub use crate::selector::NAMESPACE_LABEL;

/// The built-in tiers: name, order, default action (libcalico-go/lib/names/policy.go).
pub const BUILTIN_TIERS: [(&str, f64, TierDefaultAction); 3] = [
    ("kube-admin", 1_000.0, TierDefaultAction::Pass),
    (DEFAULT_TIER, 1_000_000.0, TierDefaultAction::Deny),
    ("kube-baseline", 10_000_000.0, TierDefaultAction::Pass),
];

/// One problem with one field of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldError {
    /// Path of the field, relative to the resource.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

/// Checks a (defaulted) resource; returns every problem found, in field order.
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut v = Validator::default();
    let kind = resource.kind();
    v.metadata(kind, resource.metadata());
    match resource {
        Resource::NetworkPolicy(o)
        | Resource::GlobalNetworkPolicy(o)
        | Resource::StagedNetworkPolicy(o)
        | Resource::StagedGlobalNetworkPolicy(o) => v.calico_policy(kind, &o.spec),
        Resource::KubernetesNetworkPolicy(o) | Resource::StagedKubernetesNetworkPolicy(o) => {
            v.k8s_policy(kind, &o.spec)
        }
        Resource::Tier(o) => v.tier(&o.metadata.name, o.spec.order, o.spec.default_action),
        Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => {
            if o.metadata.labels.contains_key(NAMESPACE_LABEL) {
                v.err(
                    format!("metadata.labels.{NAMESPACE_LABEL}"),
                    format!(
                        "{NAMESPACE_LABEL} is not a valid label name: Calico sets it from the namespace"
                    ),
                );
            }
        }
        Resource::HostEndpoint(o) => v.host_endpoint(&o.spec),
        Resource::WorkloadEndpoint(o) => v.workload_endpoint(&o.spec),
        Resource::Profile(o) => {
            v.rules("spec.ingress", &o.spec.ingress, RuleContext::profile());
            v.rules("spec.egress", &o.spec.egress, RuleContext::profile());
            v.labels("spec.labelsToApply", &o.spec.labels_to_apply);
        }
        Resource::Namespace(_) => {}
    }
    v.errors
}

/// Parses a selector as validation does: length limit, then the grammar.
pub fn check_selector(text: &str) -> Result<(), String> {
    if text.len() > MAX_SELECTOR_LEN {
        return Err(format!(
            "selector is {} bytes long: the limit is {MAX_SELECTOR_LEN}",
            text.len()
        ));
    }
    parse_selector(text)
}

fn parse_selector(text: &str) -> Result<(), String> {
    crate::selector::Selector::parse(text)
        .map(drop)
        .map_err(|e| format!("invalid {e}"))
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

/// Where a selector sits, for the `global()` rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SelectorPlace {
    /// Anywhere `global()` is forbidden.
    Plain,
    /// An EntityRule `namespaceSelector`: `global()` allowed, but only alone.
    EntityNamespace,
}

/// What kind of rule list is being checked.
#[derive(Clone, Copy)]
struct RuleContext {
    /// Policies restrict `services` and `http`; profiles do not.
    policy: bool,
    /// Global policies need a namespace on `services`.
    global: bool,
    /// Egress (true) or ingress (false) rules.
    egress: bool,
}

impl RuleContext {
    fn profile() -> RuleContext {
        RuleContext {
            policy: false,
            global: false,
            egress: false,
        }
    }
}

impl Validator {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    // -----------------------------------------------------------------------------
    // Metadata

    fn metadata(&mut self, kind: Kind, m: &ObjectMeta) {
        self.name(kind, &m.name);
        match (&m.namespace, kind.is_namespaced()) {
            (Some(ns), true) => {
                if let Err(r) = check_dns_label(ns) {
                    self.err(
                        "metadata.namespace",
                        format!("invalid namespace {ns:?}: {r}"),
                    );
                }
            }
            (Some(ns), false) if !ns.is_empty() => self.err(
                "metadata.namespace",
                format!(
                    "{} is cluster-scoped: remove the namespace {ns:?}",
                    kind.as_str()
                ),
            ),
            _ => {}
        }
        self.labels("metadata.labels", &m.labels);
        self.annotations("metadata.annotations", &m.annotations);
    }

    fn name(&mut self, kind: Kind, name: &str) {
        const F: &str = "metadata.name";
        if name.is_empty() {
            self.err(F, "missing: every resource needs a name");
            return;
        }
        let max = match kind {
            Kind::Tier | Kind::Namespace => MAX_LABEL_NAME_LEN,
            _ => MAX_NAME_LEN,
        };
        if name.len() > max {
            self.err(
                F,
                format!("name is {} characters long: the limit is {max}", name.len()),
            );
            return;
        }
        let ok = match kind {
            Kind::NetworkPolicy | Kind::StagedNetworkPolicy => is_network_policy_name(name),
            Kind::GlobalNetworkPolicy | Kind::StagedGlobalNetworkPolicy => {
                is_global_policy_name(name)
            }
            Kind::Tier | Kind::Namespace => is_dns_label(name),
            _ => is_dns_subdomain(name),
        };
        if !ok {
            let expected = match kind {
                Kind::NetworkPolicy | Kind::StagedNetworkPolicy => {
                    "lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form), or a knp.default./ossg.default. prefix (regex ^(L(\\.L)?|(knp|ossg)\\.default\\.L(\\.L)*)$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                }
                Kind::GlobalNetworkPolicy | Kind::StagedGlobalNetworkPolicy => {
                    "lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form) (regex ^(L\\.)?L$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                }
                Kind::Tier | Kind::Namespace => {
                    "lower-case alphanumerics and '-', starting and ending with an alphanumeric (regex ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$)"
                }
                _ => {
                    "lower-case alphanumerics, '-' and '.', each '.'-separated part starting and ending with an alphanumeric (DNS-1123 subdomain)"
                }
            };
            self.err(F, format!("invalid name {name:?}: expected {expected}"));
        }
    }

    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (k, val) in labels {
            if let Err(r) = check_qualified_name(k) {
                self.err(
                    format!("{field}.{k}"),
                    format!("invalid label key {k:?}: {r}"),
                );
            }
            if let Err(r) = check_label_value(val) {
                self.err(
                    format!("{field}.{k}"),
                    format!("invalid label value {val:?}: {r}"),
                );
            }
        }
    }

    fn annotations(&mut self, field: &str, annotations: &BTreeMap<String, String>) {
        let mut total = 0usize;
        for (k, val) in annotations {
            if let Err(r) = check_qualified_name(&k.to_ascii_lowercase()) {
                self.err(
                    format!("{field}.{k}"),
                    format!("invalid annotation key {k:?}: {r}"),
                );
            }
            total += k.len() + val.len();
        }
        if total > MAX_ANNOTATIONS_BYTES {
            self.err(
                field,
                format!("annotations total {total} bytes: the limit is {MAX_ANNOTATIONS_BYTES}"),
            );
        }
    }

    fn selector(&mut self, field: &str, text: &str, place: SelectorPlace) {
        if text.len() > MAX_SELECTOR_LEN {
            self.err(
                field,
                format!(
                    "selector is {} bytes long: the limit is {MAX_SELECTOR_LEN}",
                    text.len()
                ),
            );
            return;
        }
        if text.contains("global(") {
            match place {
                SelectorPlace::Plain => {
                    self.err(
                        field,
                        format!(
                            "invalid selector {text:?}: global() can only be used in a rule's source/destination namespaceSelector"
                        ),
                    );
                    return;
                }
                SelectorPlace::EntityNamespace => {
                    let squeezed: String =
                        text.chars().filter(|c| *c != ' ' && *c != '\t').collect();
                    if squeezed != "global()" {
                        self.err(
                            field,
                            format!(
                                "invalid selector {text:?}: global() cannot be combined with other selectors"
                            ),
                        );
                        return;
                    }
                }
            }
        }
        if let Err(r) = parse_selector(text) {
            self.err(field, r);
        }
    }

    // -----------------------------------------------------------------------------
    // Calico policies

    fn calico_policy(&mut self, kind: Kind, spec: &PolicySpec) {
        let global = matches!(
            kind,
            Kind::GlobalNetworkPolicy | Kind::StagedGlobalNetworkPolicy
        );
        self.staged_action(kind, spec.staged_action);
        if let Some(tier) = spec.tier.as_deref()
            && let Err(r) = check_dns_label(tier)
        {
            self.err("spec.tier", format!("invalid tier name {tier:?}: {r}"));
        }
        if !global {
            for (set, field) in [
                (spec.namespace_selector.is_some(), "namespaceSelector"),
                (spec.do_not_track, "doNotTrack"),
                (spec.pre_dnat, "preDNAT"),
                (spec.apply_on_forward, "applyOnForward"),
            ] {
                if set {
                    self.err(
                        format!("spec.{field}"),
                        format!(
                            "not allowed in a {}: only GlobalNetworkPolicy and StagedGlobalNetworkPolicy have {field}",
                            kind.as_str()
                        ),
                    );
                }
            }
        }
        if spec.staged_action == Some(StagedAction::Delete) {
            let set = nonempty_policy_fields(spec);
            if !set.is_empty() {
                self.err(
                    "spec",
                    format!(
                        "stagedAction Delete requires an empty spec (only tier may be set), found {}",
                        set.join(", ")
                    ),
                );
            }
            return;
        }

        if let Some(sel) = &spec.selector {
            self.selector("spec.selector", sel, SelectorPlace::Plain);
        }
        if let Some(sel) = &spec.service_account_selector {
            self.selector("spec.serviceAccountSelector", sel, SelectorPlace::Plain);
        }
        if global && let Some(sel) = &spec.namespace_selector {
            self.selector("spec.namespaceSelector", sel, SelectorPlace::Plain);
        }
        self.types("spec.types", spec.types.as_deref());
        let mut hints = BTreeSet::new();
        for (i, h) in spec.performance_hints.iter().enumerate() {
            if h != "AssumeNeededOnEveryNode" {
                self.err(
                    format!("spec.performanceHints[{i}]"),
                    format!("unknown performance hint {h:?}: expected AssumeNeededOnEveryNode"),
                );
            } else if !hints.insert(h) {
                self.err(
                    format!("spec.performanceHints[{i}]"),
                    format!("performance hint {h:?} is listed more than once"),
                );
            }
        }
        if global {
            if spec.pre_dnat && spec.do_not_track {
                self.err("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
            }
            if spec.pre_dnat && !spec.egress.is_empty() {
                self.err("spec.egress", "preDNAT policy cannot have any egress rules");
            }
            if spec.pre_dnat
                && spec
                    .types
                    .as_ref()
                    .is_some_and(|t| t.contains(&PolicyType::Egress))
            {
                self.err("spec.types", "preDNAT policy cannot have 'Egress' type");
            }
            if (spec.pre_dnat || spec.do_not_track) && !spec.apply_on_forward {
                self.err(
                    "spec.applyOnForward",
                    "applyOnForward must be true if either preDNAT or doNotTrack is true",
                );
            }
        }
        for (field, rules, egress) in [
            ("spec.ingress", &spec.ingress, false),
            ("spec.egress", &spec.egress, true),
        ] {
            self.rules(
                field,
                rules,
                RuleContext {
                    policy: true,
                    global,
                    egress,
                },
            );
        }
    }

    fn staged_action(&mut self, kind: Kind, action: Option<StagedAction>) {
        let Some(action) = action else { return };
        if !kind.is_staged() {
            self.err(
                "spec.stagedAction",
                format!(
                    "not allowed in a {}: only staged kinds have stagedAction",
                    kind.as_str()
                ),
            );
            return;
        }
        if matches!(action, StagedAction::Learn | StagedAction::Ignore) {
            self.err(
                "spec.stagedAction",
                format!(
                    "stagedAction {action:?} is not supported (it has no open-source Calico semantics): expected Set or Delete"
                ),
            );
        }
    }

    fn types(&mut self, field: &str, types: Option<&[PolicyType]>) {
        let Some(types) = types else { return };
        if types.is_empty() || types.len() > 2 {
            self.err(
                field,
                format!(
                    "{} types given: expected 1 or 2 of Ingress, Egress",
                    types.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for t in types {
            if !seen.insert(t) {
                self.err(field, format!("'{t:?}' type specified more than once"));
            }
        }
    }

    fn rules(&mut self, field: &str, rules: &[Rule], ctx: RuleContext) {
        if rules.len() > MAX_RULES {
            self.err(
                field,
                format!("{} rules: the limit is {MAX_RULES}", rules.len()),
            );
            return;
        }
        for (i, r) in rules.iter().enumerate() {
            self.rule(&format!("{field}[{i}]"), r, ctx);
        }
    }

    fn rule(&mut self, f: &str, r: &Rule, ctx: RuleContext) {
        if let Some(v) = r.ip_version
            && v != 4
            && v != 6
        {
            self.err(
                format!("{f}.ipVersion"),
                format!("invalid IP version {v}: expected 4 or 6"),
            );
        }
        // Ports need a protocol that has them; without a protocol only named ports
        // are allowed (they carry their own protocol).
        for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
            for (list, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
                if ports.is_empty() {
                    continue;
                }
                let pf = format!("{f}.{side}.{list}");
                match r.protocol {
                    None if ports.iter().any(|p| !matches!(p, Port::Named(_))) => self.err(
                        pf,
                        "rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
                    ),
                    Some(p) if !p.supports_ports() => self.err(
                        pf,
                        format!(
                            "rules that specify ports must set protocol to TCP or UDP or SCTP (protocol is {p})"
                        ),
                    ),
                    _ => {}
                }
            }
        }
        for (name, proto) in [("protocol", r.protocol), ("notProtocol", r.not_protocol)] {
            let Some(p) = proto else { continue };
            let want = match p.0 {
                1 => 4,
                58 => 6,
                _ => continue,
            };
            if let Some(v) = r.ip_version
                && v != want
            {
                self.err(
                    format!("{f}.{name}"),
                    format!("protocol {p} requires ipVersion {want}, rule has ipVersion {v}"),
                );
            }
        }
        if r.icmp.is_some() && !r.protocol.is_some_and(|p| p.0 == 1 || p.0 == 58) {
            self.err(
                format!("{f}.icmp"),
                "ICMP fields require protocol to be ICMP or ICMPv6",
            );
        }
        for (name, icmp) in [("icmp", &r.icmp), ("notICMP", &r.not_icmp)] {
            if let Some(icmp) = icmp {
                self.icmp(&format!("{f}.{name}"), icmp);
            }
        }
        self.rule_nets(f, r);
        self.entity(&format!("{f}.source"), &r.source);
        self.entity(&format!("{f}.destination"), &r.destination);
        if r.destination.services.is_some()
            && (!r.destination.ports.is_empty() || !r.destination.not_ports.is_empty())
        {
            self.err(
                format!("{f}.destination"),
                "ports and notPorts cannot be specified with services",
            );
        }
        if let Some(http) = &r.http {
            self.http(&format!("{f}.http"), http, r);
        }
        if let Some(m) = &r.metadata {
            self.annotations(&format!("{f}.metadata.annotations"), &m.annotations);
        }
        if ctx.policy {
            if ctx.egress {
                if r.source.services.is_some() {
                    self.err(
                        format!("{f}.source.services"),
                        "not allowed in egress rule source: services may only be a destination of egress rules",
                    );
                }
                if r.http.is_some() {
                    self.err(format!("{f}.http"), "not allowed in egress rules");
                }
            } else if r.destination.services.is_some() {
                self.err(
                    format!("{f}.destination.services"),
                    "not allowed in ingress rule destination: services may only be a source of ingress rules",
                );
            }
            let peer = if ctx.egress {
                ("destination", &r.destination)
            } else {
                ("source", &r.source)
            };
            if ctx.global
                && let Some(s) = &peer.1.services
                && s.namespace.as_deref().is_none_or(str::is_empty)
            {
                self.err(
                    format!("{f}.{}.services.namespace", peer.0),
                    "must specify a namespace: a global policy has none to default to",
                );
            }
        }
    }

    fn icmp(&mut self, f: &str, icmp: &IcmpFields) {
        if let Some(t) = icmp.icmp_type
            && t > 254
        {
            self.err(
                format!("{f}.type"),
                format!("invalid ICMP type {t}: expected 0-254"),
            );
        }
        if icmp.code.is_some() && icmp.icmp_type.is_none() {
            self.err(
                format!("{f}.code"),
                "ICMP code specified without an ICMP type",
            );
        }
    }

    fn rule_nets(&mut self, f: &str, r: &Rule) {
        let mut seen_v4 = false;
        let mut seen_v6 = false;
        for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
            for (list, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
                let lf = format!("{f}.{side}.{list}");
                if nets.len() > MAX_NETS {
                    self.err(
                        &lf,
                        format!("{} entries: the limit is {MAX_NETS}", nets.len()),
                    );
                    continue;
                }
                let (mut v4, mut v6) = (false, false);
                for (i, n) in nets.iter().enumerate() {
                    if let Err(r) = check_masked(n) {
                        self.err(format!("{lf}[{i}]"), r);
                    }
                    if list == "notNets" && n.0.prefix_len() == 0 {
                        self.err(
                            format!("{lf}[{i}]"),
                            format!(
                                "catch-all CIDR {n} in negation creates logical contradiction (matches no traffic)"
                            ),
                        );
                    }
                    match n.0 {
                        ipnet::IpNet::V4(_) => v4 = true,
                        ipnet::IpNet::V6(_) => v6 = true,
                    }
                }
                if let Some(ver) = r.ip_version
                    && ((v4 && ver != 4) || (v6 && ver != 6))
                {
                    self.err(
                        &lf,
                        format!("rule IP version {ver} doesn't match CIDR version"),
                    );
                }
                if (v4 && seen_v6) || (v6 && seen_v4) || (v4 && v6) {
                    self.err(&lf, "rule contains both IPv4 and IPv6 CIDRs");
                }
                seen_v4 |= v4;
                seen_v6 |= v6;
            }
        }
    }

    fn entity(&mut self, f: &str, e: &EntityRule) {
        if let Some(s) = &e.selector {
            self.selector(&format!("{f}.selector"), s, SelectorPlace::Plain);
        }
        if let Some(s) = &e.not_selector {
            self.selector(&format!("{f}.notSelector"), s, SelectorPlace::Plain);
        }
        if let Some(s) = &e.namespace_selector {
            self.selector(
                &format!("{f}.namespaceSelector"),
                s,
                SelectorPlace::EntityNamespace,
            );
        }
        for (list, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
            if ports.len() > MAX_PORTS {
                self.err(
                    format!("{f}.{list}"),
                    format!("{} entries: the limit is {MAX_PORTS}", ports.len()),
                );
                continue;
            }
            for (i, p) in ports.iter().enumerate() {
                if let Err(r) = check_rule_port(p) {
                    self.err(format!("{f}.{list}[{i}]"), r);
                }
            }
        }
        if let Some(sa) = &e.service_accounts {
            for (i, n) in sa.names.iter().enumerate() {
                if let Err(r) = check_dns_subdomain(n) {
                    self.err(
                        format!("{f}.serviceAccounts.names[{i}]"),
                        format!("invalid service account name {n:?}: {r}"),
                    );
                }
            }
            if let Some(s) = &sa.selector {
                self.selector(
                    &format!("{f}.serviceAccounts.selector"),
                    s,
                    SelectorPlace::Plain,
                );
            }
        }
        if let Some(svc) = &e.services {
            let sf = format!("{f}.services");
            if svc.name.is_empty() {
                self.err(format!("{sf}.name"), "services must specify a service name");
            } else if let Err(r) = check_dns_subdomain(&svc.name) {
                self.err(
                    format!("{sf}.name"),
                    format!("invalid service name {:?}: {r}", svc.name),
                );
            }
            if let Some(ns) = svc.namespace.as_deref().filter(|n| !n.is_empty())
                && let Err(r) = check_dns_subdomain(ns)
            {
                self.err(
                    format!("{sf}.namespace"),
                    format!("invalid namespace {ns:?}: {r}"),
                );
            }
            let conflicts: Vec<&str> = [
                (
                    e.namespace_selector
                        .as_deref()
                        .is_some_and(|s| !s.is_empty()),
                    "namespaceSelector",
                ),
                (e.service_accounts.is_some(), "serviceAccounts"),
                (
                    e.selector.as_deref().is_some_and(|s| !s.is_empty()),
                    "selector",
                ),
                (
                    e.not_selector.as_deref().is_some_and(|s| !s.is_empty()),
                    "notSelector",
                ),
                (!e.nets.is_empty(), "nets"),
                (!e.not_nets.is_empty(), "notNets"),
            ]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect();
            if !conflicts.is_empty() {
                self.err(
                    sf,
                    format!(
                        "services cannot be combined with {} in the same rule",
                        conflicts.join(", ")
                    ),
                );
            }
        }
    }

    fn http(&mut self, f: &str, h: &HttpMatch, r: &Rule) {
        if r.action != RuleAction::Allow {
            self.err(f, "HTTP match is only valid on Allow rules");
        }
        if r.protocol.is_some_and(|p| p.0 != 6) {
            self.err(f, "rules with HTTP match must have protocol TCP or unset");
        }
        if h.methods.len() > MAX_HTTP_MATCHES {
            self.err(
                format!("{f}.methods"),
                format!(
                    "{} methods: the limit is {MAX_HTTP_MATCHES}",
                    h.methods.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, m) in h.methods.iter().enumerate() {
            if !seen.insert(m) {
                self.err(
                    format!("{f}.methods[{i}]"),
                    format!("method {m:?} is listed more than once"),
                );
            }
        }
        if h.paths.len() > MAX_HTTP_MATCHES {
            self.err(
                format!("{f}.paths"),
                format!("{} paths: the limit is {MAX_HTTP_MATCHES}", h.paths.len()),
            );
        }
        for (i, p) in h.paths.iter().enumerate() {
            let pf = format!("{f}.paths[{i}]");
            let v = match (p.exact.as_deref(), p.prefix.as_deref()) {
                (Some(e), Some(pre)) if !e.is_empty() && !pre.is_empty() => {
                    self.err(pf, "invalid path match: both exact and prefix are set");
                    continue;
                }
                (Some(e), _) if !e.is_empty() => e,
                (_, Some(pre)) if !pre.is_empty() => pre,
                _ => {
                    self.err(pf, "invalid path match: either exact or prefix must be set");
                    continue;
                }
            };
            if v.len() > MAX_HTTP_PATH_LEN {
                self.err(
                    pf,
                    format!(
                        "path is {} bytes long: the limit is {MAX_HTTP_PATH_LEN}",
                        v.len()
                    ),
                );
            } else if !v.starts_with('/') || v.contains(['?', ' ', '#']) {
                self.err(
                    pf,
                    format!(
                        "invalid path {v:?}: must start with '/' and contain no '?', '#' or space"
                    ),
                );
            }
        }
    }

    // -----------------------------------------------------------------------------
    // Kubernetes policies

    fn k8s_policy(&mut self, kind: Kind, spec: &K8sPolicySpec) {
        self.staged_action(kind, spec.staged_action);
        if spec.staged_action == Some(StagedAction::Delete) {
            let mut set = Vec::new();
            if spec.pod_selector != LabelSelector::default() {
                set.push("podSelector");
            }
            if !spec.ingress.is_empty() {
                set.push("ingress");
            }
            if !spec.egress.is_empty() {
                set.push("egress");
            }
            if spec.policy_types.as_ref().is_some_and(|t| !t.is_empty()) {
                set.push("policyTypes");
            }
            if !set.is_empty() {
                self.err(
                    "spec",
                    format!(
                        "stagedAction Delete requires an empty spec, found {}",
                        set.join(", ")
                    ),
                );
            }
            return;
        }
        self.label_selector("spec.podSelector", &spec.pod_selector);
        self.types("spec.policyTypes", spec.policy_types.as_deref());
        for (i, r) in spec.ingress.iter().enumerate() {
            let f = format!("spec.ingress[{i}]");
            self.k8s_ports(&f, &r.ports);
            self.k8s_peers(&format!("{f}.from"), &r.from);
        }
        for (i, r) in spec.egress.iter().enumerate() {
            let f = format!("spec.egress[{i}]");
            self.k8s_ports(&f, &r.ports);
            self.k8s_peers(&format!("{f}.to"), &r.to);
        }
    }

    fn k8s_ports(&mut self, f: &str, ports: &[K8sPort]) {
        for (i, p) in ports.iter().enumerate() {
            let pf = format!("{f}.ports[{i}]");
            if let Some(proto) = &p.protocol
                && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
            {
                self.err(
                    format!("{pf}.protocol"),
                    format!("unsupported protocol {proto:?}: expected TCP, UDP or SCTP"),
                );
            }
            let numeric = match &p.port {
                None => None,
                Some(IntOrString::Int(n)) => {
                    if !(1..=65535).contains(n) {
                        self.err(
                            format!("{pf}.port"),
                            format!("invalid port {n}: expected 1-65535"),
                        );
                    }
                    Some(*n)
                }
                Some(IntOrString::String(s)) => {
                    if let Err(r) = check_port_name(s) {
                        self.err(format!("{pf}.port"), r);
                    }
                    None
                }
            };
            if let Some(end) = p.end_port {
                match (&p.port, numeric) {
                    (None, _) => self.err(
                        format!("{pf}.endPort"),
                        "endPort may not be specified when port is not specified",
                    ),
                    (Some(_), None) => self.err(
                        format!("{pf}.endPort"),
                        "endPort may not be specified when port is a named port",
                    ),
                    (Some(_), Some(start)) => {
                        if end < start {
                            self.err(
                                format!("{pf}.endPort"),
                                format!(
                                    "endPort {end} must be greater than or equal to port {start}"
                                ),
                            );
                        } else if end > 65535 {
                            self.err(
                                format!("{pf}.endPort"),
                                format!("invalid endPort {end}: expected at most 65535"),
                            );
                        }
                    }
                }
            }
        }
    }

    fn k8s_peers(&mut self, f: &str, peers: &[K8sPeer]) {
        for (i, p) in peers.iter().enumerate() {
            let pf = format!("{f}[{i}]");
            let n = usize::from(p.pod_selector.is_some())
                + usize::from(p.namespace_selector.is_some())
                + usize::from(p.ip_block.is_some());
            if n == 0 {
                self.err(
                    &pf,
                    "must specify at least one of podSelector, namespaceSelector, ipBlock",
                );
            }
            if let Some(s) = &p.pod_selector {
                self.label_selector(&format!("{pf}.podSelector"), s);
            }
            if let Some(s) = &p.namespace_selector {
                self.label_selector(&format!("{pf}.namespaceSelector"), s);
            }
            if let Some(b) = &p.ip_block {
                if n > 1 {
                    self.err(
                        format!("{pf}.ipBlock"),
                        "ipBlock may not be combined with podSelector or namespaceSelector",
                    );
                }
                for (j, ex) in b.except.iter().enumerate() {
                    let inside = match (b.cidr.0, ex.0) {
                        (ipnet::IpNet::V4(c), ipnet::IpNet::V4(e)) => {
                            c.contains(&e.network()) && c.prefix_len() < e.prefix_len()
                        }
                        (ipnet::IpNet::V6(c), ipnet::IpNet::V6(e)) => {
                            c.contains(&e.network()) && c.prefix_len() < e.prefix_len()
                        }
                        _ => false,
                    };
                    if !inside {
                        self.err(
                            format!("{pf}.ipBlock.except[{j}]"),
                            format!("except {ex} must be a strict subset of cidr {}", b.cidr),
                        );
                    }
                }
            }
        }
    }

    fn label_selector(&mut self, f: &str, s: &LabelSelector) {
        self.labels(&format!("{f}.matchLabels"), &s.match_labels);
        for (i, e) in s.match_expressions.iter().enumerate() {
            let ef = format!("{f}.matchExpressions[{i}]");
            if let Err(r) = check_qualified_name(&e.key) {
                self.err(
                    format!("{ef}.key"),
                    format!("invalid label key {:?}: {r}", e.key),
                );
            }
            match e.operator {
                LabelSelectorOperator::In | LabelSelectorOperator::NotIn => {
                    if e.values.is_empty() {
                        self.err(
                            format!("{ef}.values"),
                            format!("must be specified when operator is {:?}", e.operator),
                        );
                    }
                }
                LabelSelectorOperator::Exists | LabelSelectorOperator::DoesNotExist => {
                    if !e.values.is_empty() {
                        self.err(
                            format!("{ef}.values"),
                            format!("may not be specified when operator is {:?}", e.operator),
                        );
                    }
                }
            }
            for (j, v) in e.values.iter().enumerate() {
                if let Err(r) = check_label_value(v) {
                    self.err(
                        format!("{ef}.values[{j}]"),
                        format!("invalid label value {v:?}: {r}"),
                    );
                }
            }
        }
    }

    // -----------------------------------------------------------------------------
    // Tiers and endpoints

    fn tier(&mut self, name: &str, order: Option<f64>, action: Option<TierDefaultAction>) {
        let Some((_, want_order, want_action)) = BUILTIN_TIERS.iter().find(|t| t.0 == name) else {
            return;
        };
        if order != Some(*want_order) {
            self.err(
                "spec.order",
                format!("{name} tier order must be {want_order}"),
            );
        }
        if action.unwrap_or_default() != *want_action {
            self.err(
                "spec.defaultAction",
                format!("the {name:?} tier must have default action {want_action:?}"),
            );
        }
    }

    fn endpoint_ports(&mut self, ports: &[EndpointPort], workload: bool) {
        for (i, p) in ports.iter().enumerate() {
            let f = format!("spec.ports[{i}]");
            if p.name.is_empty() {
                if !workload || p.host_port.is_none_or(|h| h == 0) {
                    self.err(format!("{f}.name"), "missing: a named port needs a name");
                }
            } else if let Err(r) = check_port_name(&p.name) {
                self.err(format!("{f}.name"), r);
            }
            if !p.protocol.supports_ports() {
                self.err(
                    format!("{f}.protocol"),
                    format!(
                        "protocol {} does not support ports: expected TCP, UDP or SCTP",
                        p.protocol
                    ),
                );
            }
            if p.port == 0 {
                self.err(format!("{f}.port"), "invalid port 0: expected 1-65535");
            }
            if !workload {
                if p.host_port.is_some() {
                    self.err(
                        format!("{f}.hostPort"),
                        "not allowed on a HostEndpoint port",
                    );
                }
                if p.host_ip.is_some() {
                    self.err(format!("{f}.hostIP"), "not allowed on a HostEndpoint port");
                }
            } else if let Some(ip) = &p.host_ip
                && !ip.is_empty()
                && ip.parse::<IpAddr>().is_err()
            {
                self.err(format!("{f}.hostIP"), format!("invalid IP address {ip:?}"));
            }
        }
    }

    fn profiles(&mut self, profiles: &[String]) {
        for (i, p) in profiles.iter().enumerate() {
            if let Err(r) = check_dns_subdomain(p) {
                self.err(
                    format!("spec.profiles[{i}]"),
                    format!("invalid profile name {p:?}: {r}"),
                );
            }
        }
    }

    fn host_endpoint(&mut self, s: &super::types::HostEndpointSpec) {
        if s.node.is_empty() {
            self.err("spec.node", "node must be specified");
        } else if let Err(r) = check_dns_subdomain(&s.node) {
            self.err("spec.node", format!("invalid node name {:?}: {r}", s.node));
        }
        if s.interface_name.is_empty() && s.expected_ips.is_empty() {
            self.err(
                "spec",
                "at least one of interfaceName or expectedIPs must be specified",
            );
        }
        if !s.interface_name.is_empty()
            && s.interface_name != "*"
            && let Err(r) = check_interface_name(&s.interface_name)
        {
            self.err("spec.interfaceName", r);
        }
        self.profiles(&s.profiles);
        self.endpoint_ports(&s.ports, false);
    }

    fn workload_endpoint(&mut self, s: &super::types::WorkloadEndpointSpec) {
        for (field, v) in [
            ("orchestrator", &s.orchestrator),
            ("workload", &s.workload),
            ("node", &s.node),
            ("pod", &s.pod),
            ("endpoint", &s.endpoint),
            ("serviceAccountName", &s.service_account_name),
        ] {
            if !v.is_empty()
                && let Err(r) = check_dns_subdomain(v)
            {
                self.err(format!("spec.{field}"), format!("invalid name {v:?}: {r}"));
            }
        }
        for (i, n) in s.ip_networks.iter().enumerate() {
            if n.0.prefix_len() != n.0.max_prefix_len() {
                self.err(
                    format!("spec.ipNetworks[{i}]"),
                    format!(
                        "IP network {n} contains multiple addresses: expected a single address (/{})",
                        n.0.max_prefix_len()
                    ),
                );
            }
        }
        if !s.interface_name.is_empty()
            && let Err(r) = check_interface_name(&s.interface_name)
        {
            self.err("spec.interfaceName", r);
        }
        if !s.mac.is_empty() && !is_mac(&s.mac) {
            self.err(
                "spec.mac",
                format!(
                    "invalid MAC address {:?}: expected six hex pairs such as 0a:1b:2c:3d:4e:5f",
                    s.mac
                ),
            );
        }
        if !s.container_id.is_empty() && !is_container_id(&s.container_id) {
            self.err(
                "spec.containerID",
                format!(
                    "invalid container id {:?}: expected alphanumerics and '-', starting and ending with an alphanumeric",
                    s.container_id
                ),
            );
        }
        self.profiles(&s.profiles);
        self.endpoint_ports(&s.ports, true);
    }
}

/// The spec fields (other than tier and stagedAction) set on a policy.
fn nonempty_policy_fields(spec: &PolicySpec) -> Vec<&'static str> {
    [
        (spec.order.is_some(), "order"),
        (spec.selector.is_some(), "selector"),
        (spec.types.as_ref().is_some_and(|t| !t.is_empty()), "types"),
        (!spec.ingress.is_empty(), "ingress"),
        (!spec.egress.is_empty(), "egress"),
        (
            spec.service_account_selector.is_some(),
            "serviceAccountSelector",
        ),
        (!spec.performance_hints.is_empty(), "performanceHints"),
        (spec.namespace_selector.is_some(), "namespaceSelector"),
        (spec.do_not_track, "doNotTrack"),
        (spec.pre_dnat, "preDNAT"),
        (spec.apply_on_forward, "applyOnForward"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

// ---------------------------------------------------------------------------------
// Value checks (each returns the reason on failure)

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, no length limit (Calico's `nameLabelFmt`).
fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_NAME_LEN && is_label_part(s)
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && s.split('.').all(is_label_part)
}

fn is_network_policy_name(s: &str) -> bool {
    for prefix in ["knp.default.", "ossg.default."] {
        if let Some(rest) = s.strip_prefix(prefix)
            && rest.split('.').all(is_label_part)
        {
            return true;
        }
    }
    is_global_policy_name(s)
}

fn is_global_policy_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_label_part(p))
}

fn check_dns_label(s: &str) -> Result<(), String> {
    if s.len() > MAX_LABEL_NAME_LEN {
        return Err(format!(
            "{} characters long: the limit is {MAX_LABEL_NAME_LEN}",
            s.len()
        ));
    }
    if !is_label_part(s) {
        return Err(
            "expected lower-case alphanumerics and '-', starting and ending with an alphanumeric"
                .into(),
        );
    }
    Ok(())
}

fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} characters long: the limit is {MAX_NAME_LEN}",
            s.len()
        ));
    }
    if !is_dns_subdomain(s) {
        return Err("expected lower-case alphanumerics, '-' and '.' (DNS-1123 subdomain)".into());
    }
    Ok(())
}

/// Kubernetes label/annotation key: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63
/// chars of `[A-Za-z0-9_.-]` starting and ending with an alphanumeric.
fn check_qualified_name(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns_subdomain(p))
    {
        return Err(
            "the prefix before '/' must be a DNS subdomain (lower-case alphanumerics, '-' and '.')"
                .into(),
        );
    }
    if name.is_empty() {
        return Err("the name part must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "the name part is {} characters long: the limit is 63",
            name.len()
        ));
    }
    if !is_k8s_name_chars(name) {
        return Err("the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric".into());
    }
    Ok(())
}

fn is_k8s_name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 {
        return Err(format!("{} characters long: the limit is 63", v.len()));
    }
    if !is_k8s_name_chars(v) {
        return Err(
            "expected alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                .into(),
        );
    }
    Ok(())
}

/// IANA service name, as Kubernetes `IsValidPortName`.
fn check_port_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = (1..=15).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {s:?}: expected an IANA service name (1-15 lower-case alphanumerics and '-', with a letter, no leading, trailing or double '-')"
        ))
    }
}

fn check_rule_port(p: &Port) -> Result<(), String> {
    match p {
        Port::Number(0) => Err("invalid port 0: port numbers must be 1-65535".into()),
        Port::Range(0, hi) => Err(format!(
            "invalid port range 0:{hi}: port numbers must be 1-65535"
        )),
        Port::Named(n) => check_port_name(n),
        _ => Ok(()),
    }
}

/// Rule nets must be written with the host bits cleared (Calico's `net` validator).
fn check_masked(n: &Net) -> Result<(), String> {
    let masked = n.0.trunc();
    if masked.addr() == n.0.addr() {
        Ok(())
    } else {
        Err(format!(
            "invalid CIDR {n}: host bits are set (expected the network address, {masked})"
        ))
    }
}

fn check_interface_name(s: &str) -> Result<(), String> {
    if (1..=15).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name {s:?}: expected 1-15 characters of [a-zA-Z0-9_.-] (or \"*\" on a HostEndpoint)"
        ))
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn is_container_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests;
