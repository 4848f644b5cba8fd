//! The types every layer after the store shares, between `store` and `eval`/`lower`:
//! a policy store normalised into what Calico's calculation graph sees ([`Cluster`]:
//! felix's `model.Policy`, endpoints with their labels and profiles, network sets,
//! profiles), the constants (default tier and namespace, profile prefixes, labels), the
//! building blocks of both evaluators (tier and policy ordering, endpoint labels with
//! profile inheritance, policy applies-to selectors, EntityRule selector scoping,
//! [`rendered_for_version`]), a flow and the shape of its evaluation ([`flow`]), and the
//! ends of a flow as reports name them ([`meta`]).
//!
//! Everything is a direct transcription of the rules in CALICO_SEMANTICS (section
//! numbers in the comments); nothing is indexed or cached.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

use crate::k8s::{self, K8sFlavour};
use crate::model::{
    EndpointPort, EntityRule, Kind, Object, ObjectMeta, PolicySpec, PolicyType, Port, Resource,
    ResourceKey, Rule, StagedAction, TierDefaultAction, WorkloadEndpointSpec,
};
use crate::selector::{Expr, LabelChain, Selector};

pub mod flow;
pub mod meta;
mod update;

pub use flow::{
    Evaluation, Flow, L4, MixedFamilies, NO_MATCH_NAME, Outcome, PolicyHit, ReporterOutcome,
    Verdict,
};
pub use meta::{EndpointMeta, EndpointType, Reporter, VerdictName};

// One set of constants: each is defined once, in the lowest layer that needs it, and
// every layer from here on names it through this module.
pub use crate::k8s::{K8S_POLICY_ORDER, K8S_POLICY_TIER, ORCHESTRATOR_LABEL};
pub use crate::model::defaults::{DEFAULT_NAMESPACE, DEFAULT_TIER, TIER_LABEL};
pub use crate::selector::{NAMESPACE_KEY_PREFIX, NAMESPACE_LABEL, SERVICE_ACCOUNT_KEY_PREFIX};

/// The tier name hits of profiles carry (§5).
pub const PROFILE_TIER: &str = "__PROFILE__";
/// Label with a workload's service account (§1).
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
/// The name label the `kns.`/`ksa.` profiles add (`pcns.projectcalico.org/name`, ...).
pub const NAME_LABEL: &str = "projectcalico.org/name";
/// Prefix of the implicit per-namespace profile.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Prefix of the implicit per-service-account profile.
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";
/// Orchestrator of Kubernetes pods (and of workload endpoints that name none).
pub const K8S_ORCHESTRATOR: &str = "k8s";

/// The built-in tiers that always exist (§1, libcalico-go/lib/names/policy.go): name,
/// order, default action. A Tier resource of the same name replaces one.
pub const BUILTIN_TIERS: [(&str, f64, TierDefaultAction); 3] = [
    ("kube-admin", 1_000.0, TierDefaultAction::Pass),
    (DEFAULT_TIER, 1_000_000.0, TierDefaultAction::Deny),
    ("kube-baseline", 10_000_000.0, TierDefaultAction::Pass),
];

/// Why a resource set cannot be evaluated: a selector that does not parse or a
/// Kubernetes policy that cannot be converted. Validation (`model::validate`) rejects
/// all of these earlier; the evaluator checks again so that it never panics on input
/// that skipped validation.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{resource}: {field}: {reason}")]
pub struct ClusterError {
    /// The resource.
    pub resource: ResourceKey,
    /// Field path inside it (`spec.ingress[0].source.selector`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// A selector of an EntityRule that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorProblem {
    /// Field path inside the EntityRule (`selector`, `serviceAccounts.selector`, ...).
    pub field: String,
    /// The selector text.
    pub text: String,
    /// Parser message.
    pub reason: String,
}

impl SelectorProblem {
    fn into_error(self, resource: &ResourceKey, prefix: &str) -> ClusterError {
        ClusterError {
            resource: resource.clone(),
            field: format!("{prefix}{}", self.field),
            reason: format!("invalid selector {:?}: {}", self.text, self.reason),
        }
    }
}

// ---------------------------------------------------------------------------------
// Tiers

/// A tier as evaluation sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TierInfo {
    /// Name.
    pub name: String,
    /// Order; `None` sorts last.
    pub order: Option<f64>,
    /// Applied when no policy of the tier decided.
    pub default_action: TierDefaultAction,
    /// Whether the tier exists (a Tier resource or a built-in). Policies may name a
    /// tier that does not exist; felix still evaluates them, after every valid tier,
    /// with an end-of-tier drop.
    pub known: bool,
}

/// Calico's tier order (§3.1, felix/calc/policy_sorter.go `TierLess`): known tiers
/// first, then `order` ascending with `None` last, ties broken by name.
pub fn compare_tiers(a: &TierInfo, b: &TierInfo) -> Ordering {
    b.known
        .cmp(&a.known)
        .then_with(|| match (a.order, b.order) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => float_order(x, y),
        })
        .then_with(|| a.name.cmp(&b.name))
}

/// `x` before `y` as Go's `<` on float64 orders them, equal when `==`. Validation
/// rejects NaN; here it sorts like +∞ so the order stays total.
fn float_order(x: f64, y: f64) -> Ordering {
    let norm = |v: f64| if v.is_nan() { f64::INFINITY } else { v };
    let (x, y) = (norm(x), norm(y));
    if x == y {
        Ordering::Equal
    } else if x < y {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

// ---------------------------------------------------------------------------------
// Policies

/// The kind name felix keys policies by (`model.PolicyKey.Kind`), used in the
/// tie-break of [`compare_policies`].
pub fn policy_kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::KubernetesNetworkPolicy => "KubernetesNetworkPolicy",
        k => k.as_str(),
    }
}

/// A policy of any kind, as felix's calculation graph sees it: Kubernetes policies
/// already converted (§3.8), defaults applied, the applies-to selector built (§1), and
/// every rule's peer selectors scoped (§2). `stagedAction: Delete` objects never become
/// a `Policy` (§5).
#[derive(Clone, Debug)]
pub struct Policy {
    /// Kind, namespace (namespaced kinds), name.
    pub key: ResourceKey,
    /// Tier name.
    pub tier: String,
    /// Order; `None` = +∞.
    pub order: Option<f64>,
    /// The endpoints the policy applies to: the selector with the namespace,
    /// service-account and (global kinds) namespace-selector terms ANDed in.
    pub applies_to: Selector,
    /// Whether it governs ingress.
    pub ingress_type: bool,
    /// Whether it governs egress.
    pub egress_type: bool,
    /// Ingress rules in order.
    pub ingress: Vec<PolicyRule>,
    /// Egress rules in order.
    pub egress: Vec<PolicyRule>,
    /// `doNotTrack` or `preDNAT`: evaluated by felix in the raw/mangle tables of host
    /// endpoints only, never in the normal filter chains this evaluator models.
    pub untracked_or_pre_dnat: bool,
}

impl Policy {
    /// Whether this is a staged kind (never enforced; §5).
    pub fn is_staged(&self) -> bool {
        self.key.kind.is_staged()
    }

    /// The rules for a direction.
    pub fn rules(&self, direction: PolicyType) -> &[PolicyRule] {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }

    /// Whether the policy governs a direction (its `types`).
    pub fn governs(&self, direction: PolicyType) -> bool {
        match direction {
            PolicyType::Ingress => self.ingress_type,
            PolicyType::Egress => self.egress_type,
        }
    }
}

/// Calico's policy order inside a tier (§3.2, felix/calc/policy_sorter.go `PolKVLess`):
/// `order` ascending with `None` = +∞; ties broken by the string
/// `name/namespace/kind` (felix kind names, empty namespace for global kinds).
pub fn compare_policies(a: &Policy, b: &Policy) -> Ordering {
    let order = |p: &Policy| p.order.unwrap_or(f64::INFINITY);
    let tie = |p: &Policy| {
        format!(
            "{}/{}/{}",
            p.key.name,
            p.key.namespace.as_deref().unwrap_or(""),
            policy_kind_name(p.key.kind)
        )
    };
    float_order(order(a), order(b)).then_with(|| tie(a).cmp(&tie(b)))
}

/// One rule with its peer criteria resolved to selectors.
#[derive(Clone, Debug)]
pub struct PolicyRule {
    /// The rule as written (after Kubernetes conversion).
    pub rule: Rule,
    /// Source criteria.
    pub source: PeerMatch,
    /// Destination criteria.
    pub destination: PeerMatch,
}

/// The criteria of one EntityRule with its selectors scoped as felix receives them
/// (§2, UP/rules.go `GetEntityRuleSelector`).
#[derive(Clone, Debug, Default)]
pub struct PeerMatch {
    /// Address in one of these (empty = any).
    pub nets: Vec<IpNet>,
    /// Address in none of these.
    pub not_nets: Vec<IpNet>,
    /// The peer must be an endpoint or network set matching this: the `selector`,
    /// service-account criteria and namespace scoping combined. `None` = any address,
    /// Calico or not.
    pub selector: Option<Selector>,
    /// The peer must not be an endpoint or network set matching this (not
    /// namespace-scoped).
    pub not_selector: Option<Selector>,
    /// Port in one of these (empty = any).
    pub ports: Vec<Port>,
    /// Port in none of these.
    pub not_ports: Vec<Port>,
    /// A `services` criterion: Kubernetes Services are not modelled, so the rule never
    /// matches.
    pub services: bool,
}

/// The positive peer selector of an EntityRule (§2 "Selector scoping", UP/rules.go
/// `getEndpointSelector`), for a rule of a policy in `policy_namespace` (`None` for
/// global policies and profiles):
/// - `namespaceSelector` set: its keys get `pcns.`, `all()` → any namespaced endpoint,
///   `global()` → only non-namespaced ones;
/// - else, in a namespaced policy: `projectcalico.org/namespace == '<ns>'`;
/// - the namespace term is ANDed with the service-account and `selector` terms, and is
///   applied whenever any of them, `notSelector` or `namespaceSelector` is present.
///
/// Service accounts: `names` ⇒ `projectcalico.org/serviceaccount in {...}`, `selector`
/// keys get `pcsa.`; both ANDed.
pub fn peer_selector(
    er: &EntityRule,
    policy_namespace: Option<&str>,
) -> Result<Option<Selector>, SelectorProblem> {
    let parse = |field: &str, text: &str| {
        Selector::parse(text).map_err(|e| SelectorProblem {
            field: field.to_string(),
            text: text.to_string(),
            reason: e.to_string(),
        })
    };

    let ns_term: Option<Selector> = match er.namespace_selector.as_deref() {
        Some(text) if !text.is_empty() => {
            Some(parse("namespaceSelector", text)?.namespace_selector_scope())
        }
        _ => policy_namespace
            .map(|ns| Selector::from_expr(Expr::Eq(NAMESPACE_LABEL.into(), ns.into()))),
    };

    let sa_term: Option<Selector> = match &er.service_accounts {
        None => None,
        Some(sa) => {
            let sel = match sa.selector.as_deref() {
                Some(text) if !text.is_empty() => Some(
                    parse("serviceAccounts.selector", text)?
                        .with_key_prefix(SERVICE_ACCOUNT_KEY_PREFIX),
                ),
                _ => None,
            };
            let names = (!sa.names.is_empty()).then(|| {
                Selector::from_expr(Expr::In(
                    SERVICE_ACCOUNT_LABEL.into(),
                    sa.names.iter().cloned().collect(),
                ))
            });
            match (sel, names) {
                (Some(s), Some(n)) => Some(s.and(&n)),
                (s, n) => s.or(n),
            }
        }
    };

    let endpoint_term = match er.selector.as_deref() {
        Some(text) if !text.is_empty() => Some(parse("selector", text)?),
        _ => None,
    };
    let selector = match (sa_term, endpoint_term) {
        (Some(sa), Some(ep)) => Some(sa.and(&ep)),
        (sa, ep) => sa.or(ep),
    };

    let has_not_selector = er.not_selector.as_deref().is_some_and(|s| !s.is_empty());
    let has_ns_selector = er
        .namespace_selector
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    Ok(match ns_term {
        Some(ns) if selector.is_some() || has_not_selector || has_ns_selector => match selector {
            Some(s) => Some(ns.and(&s)),
            None => Some(ns),
        },
        _ => selector,
    })
}

impl PeerMatch {
    /// Resolves an EntityRule of a policy in `policy_namespace` (`None` = global).
    pub fn new(
        er: &EntityRule,
        policy_namespace: Option<&str>,
    ) -> Result<PeerMatch, SelectorProblem> {
        let not_selector = match er.not_selector.as_deref() {
            Some(text) if !text.is_empty() => {
                Some(Selector::parse(text).map_err(|e| SelectorProblem {
                    field: "notSelector".to_string(),
                    text: text.to_string(),
                    reason: e.to_string(),
                })?)
            }
            _ => None,
        };
        Ok(PeerMatch {
            // Calico masks host bits (UP/rules.go NormalizeIPNets); so does IpNet::contains.
            nets: er.nets.iter().map(|n| n.0.trunc()).collect(),
            not_nets: er.not_nets.iter().map(|n| n.0.trunc()).collect(),
            selector: peer_selector(er, policy_namespace)?,
            not_selector,
            ports: er.ports.clone(),
            not_ports: er.not_ports.clone(),
            services: er.services.is_some(),
        })
    }
}

fn policy_rules(
    rules: &[Rule],
    namespace: Option<&str>,
    key: &ResourceKey,
    field: &str,
) -> Result<Vec<PolicyRule>, ClusterError> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let peer = |side: &str, er: &EntityRule| {
            PeerMatch::new(er, namespace)
                .map_err(|p| p.into_error(key, &format!("spec.{field}[{i}].{side}.")))
        };
        out.push(PolicyRule {
            rule: rule.clone(),
            source: peer("source", &rule.source)?,
            destination: peer("destination", &rule.destination)?,
        });
    }
    Ok(out)
}

fn parse_field(key: &ResourceKey, field: &str, text: &str) -> Result<Selector, ClusterError> {
    Selector::parse(text).map_err(|e| {
        SelectorProblem {
            field: field.to_string(),
            text: text.to_string(),
            reason: e.to_string(),
        }
        .into_error(key, "")
    })
}

/// The applies-to selector of a Calico policy spec (§1; UP/networkpolicyprocessor.go,
/// UP/globalnetworkpolicyprocessor.go):
/// - namespaced: `(<selector>) && projectcalico.org/namespace == '<ns>'`, then
///   `&& <serviceAccountSelector with pcsa. keys>`;
/// - global: `<selector>`, then `&& <namespaceSelector with pcns. keys>` with every
///   `all()` of the result so far meaning "any namespaced endpoint", then
///   `&& <serviceAccountSelector with pcsa. keys>` with its `all()` meaning "any
///   endpoint with a service account". Calico does these `all()` rewrites on the text of
///   the combined selector, so they reach the policy's own `selector` too.
pub fn applies_to_selector(
    key: &ResourceKey,
    spec: &PolicySpec,
    namespace: Option<&str>,
) -> Result<Selector, ClusterError> {
    let text = |s: &Option<String>| s.as_deref().filter(|t| !t.is_empty()).map(str::to_owned);
    let mut sel: Option<Expr> = match text(&spec.selector) {
        Some(t) => Some(parse_field(key, "spec.selector", &t)?.into_expr()),
        None => None,
    };
    let append = |sel: Option<Expr>, term: Expr| match sel {
        Some(s) => s.and(term),
        None => term,
    };
    if let Some(ns) = namespace {
        sel = Some(append(sel, Expr::Eq(NAMESPACE_LABEL.into(), ns.into())));
        if let Some(t) = text(&spec.service_account_selector) {
            let sa = parse_field(key, "spec.serviceAccountSelector", &t)?;
            sel = Some(append(
                sel,
                sa.expr().with_key_prefix(SERVICE_ACCOUNT_KEY_PREFIX),
            ));
        }
    } else {
        if let Some(t) = text(&spec.namespace_selector) {
            let ns = parse_field(key, "spec.namespaceSelector", &t)?;
            let namespaced = Expr::Has(NAMESPACE_LABEL.into());
            let combined = append(sel, ns.expr().with_key_prefix(NAMESPACE_KEY_PREFIX));
            sel = Some(combined.replace_all_and_global(&namespaced, &Expr::Global));
        }
        if let Some(t) = text(&spec.service_account_selector) {
            let sa = parse_field(key, "spec.serviceAccountSelector", &t)?;
            let with_sa = Expr::Has(SERVICE_ACCOUNT_LABEL.into());
            let combined = append(sel, sa.expr().with_key_prefix(SERVICE_ACCOUNT_KEY_PREFIX));
            sel = Some(combined.replace_all_and_global(&with_sa, &Expr::Global));
        }
    }
    Ok(Selector::from_expr(sel.unwrap_or(Expr::All)))
}

/// The `types` Calico infers when a policy names none (§3.3): no egress rules ⇒
/// Ingress (even without ingress rules); only egress ⇒ Egress; both ⇒ both.
pub fn effective_types(spec: &PolicySpec) -> (bool, bool) {
    match spec.types.as_deref() {
        Some(t) if !t.is_empty() => (
            t.contains(&PolicyType::Ingress),
            t.contains(&PolicyType::Egress),
        ),
        _ => match (spec.ingress.is_empty(), spec.egress.is_empty()) {
            (_, true) => (true, false),
            (true, false) => (false, true),
            (false, false) => (true, true),
        },
    }
}

fn calico_policy(
    kind: Kind,
    meta: &ObjectMeta,
    spec: &PolicySpec,
) -> Result<Option<Policy>, ClusterError> {
    // §5: a Delete-staged object never reaches the data plane.
    if kind.is_staged() && spec.staged_action == Some(StagedAction::Delete) {
        return Ok(None);
    }
    let namespace = kind.is_namespaced().then(|| namespace_of(meta).to_string());
    let key = ResourceKey {
        kind,
        namespace: namespace.clone(),
        name: meta.name.clone(),
    };
    let ns = namespace.as_deref();
    let applies_to = applies_to_selector(&key, spec, ns)?;
    let (ingress_type, egress_type) = effective_types(spec);
    Ok(Some(Policy {
        tier: spec
            .tier
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| DEFAULT_TIER.to_string()),
        order: spec.order,
        applies_to,
        ingress_type,
        egress_type,
        ingress: policy_rules(&spec.ingress, ns, &key, "ingress")?,
        egress: policy_rules(&spec.egress, ns, &key, "egress")?,
        untracked_or_pre_dnat: spec.do_not_track || spec.pre_dnat,
        key,
    }))
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

// ---------------------------------------------------------------------------------
// Endpoints, network sets, profiles

/// Whether an endpoint is a pod interface or a host interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointKind {
    /// WorkloadEndpoint.
    Workload,
    /// HostEndpoint.
    Host,
}

/// A workload or host endpoint: what policies apply to.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Workload or host.
    pub kind: EndpointKind,
    /// Resource key.
    pub key: ResourceKey,
    /// Its addresses: a workload's `ipNetworks`, a host endpoint's `expectedIPs`.
    pub nets: Vec<IpNet>,
    /// Own labels, implicit labels included (§1).
    pub labels: BTreeMap<String, String>,
    /// Profile names in order (labels are inherited from them in this order).
    pub profiles: Vec<String>,
    /// Named ports.
    pub ports: Vec<EndpointPort>,
    /// A workload's `metadata.generateName` (flow logs aggregate pods by it).
    pub generate_name: Option<String>,
    /// The node the endpoint is on (`spec.node`; empty if not given). Flow logs name a
    /// host endpoint by its node.
    pub node: String,
}

impl Endpoint {
    /// `<namespace>/<name>` for workload endpoints, `<name>` for host endpoints.
    pub fn display_name(&self) -> String {
        match &self.key.namespace {
            Some(ns) => format!("{ns}/{}", self.key.name),
            None => self.key.name.clone(),
        }
    }

    /// Whether `ip` is one of the endpoint's addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_name())
    }
}

/// A NetworkSet or GlobalNetworkSet: selectable by rule selectors, never an endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSet {
    /// Resource key.
    pub key: ResourceKey,
    /// Member prefixes.
    pub nets: Vec<IpNet>,
    /// Own labels (+ `projectcalico.org/namespace` for NetworkSets).
    pub labels: BTreeMap<String, String>,
    /// Profiles: a NetworkSet inherits its namespace's labels through `kns.<ns>`
    /// (UP/networksetprocessor.go), a GlobalNetworkSet has none.
    pub profiles: Vec<String>,
}

/// A profile: an explicit Profile resource, or an implicit `kns.<ns>` / `ksa.<ns>.<sa>`.
#[derive(Clone, Debug)]
pub struct ProfileInfo {
    /// Name.
    pub name: String,
    /// Labels endpoints inherit (`labelsToApply`).
    pub labels: BTreeMap<String, String>,
    /// Ingress rules.
    pub ingress: Vec<PolicyRule>,
    /// Egress rules.
    pub egress: Vec<PolicyRule>,
}

impl ProfileInfo {
    /// The rules for a direction.
    pub fn rules(&self, direction: PolicyType) -> &[PolicyRule] {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

fn allow_all_rule() -> PolicyRule {
    PolicyRule {
        rule: Rule {
            action: crate::model::RuleAction::Allow,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            http: None,
            metadata: None,
        },
        source: PeerMatch::default(),
        destination: PeerMatch::default(),
    }
}

/// Labels of a workload endpoint (§1; UP/workloadendpointprocessor.go and
/// libcalico-go clientv3 `updateLabelsForStorage`): its labels without `pcns.`/`pcsa.`
/// keys (those only come from profiles), plus `projectcalico.org/namespace`,
/// `projectcalico.org/orchestrator` and, with a service account,
/// `projectcalico.org/serviceaccount`.
pub fn workload_labels(
    meta: &ObjectMeta,
    orchestrator: &str,
    service_account: &str,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = meta
        .labels
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(NAMESPACE_KEY_PREFIX) && !k.starts_with(SERVICE_ACCOUNT_KEY_PREFIX)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(NAMESPACE_LABEL.into(), namespace_of(meta).into());
    labels.insert(ORCHESTRATOR_LABEL.into(), orchestrator.into());
    if !service_account.is_empty() {
        labels.insert(SERVICE_ACCOUNT_LABEL.into(), service_account.into());
    }
    labels
}

/// The endpoint of a workload endpoint resource stored under `key`.
fn workload_endpoint(key: &ResourceKey, o: &Object<WorkloadEndpointSpec>) -> Endpoint {
    let ns = namespace_of(&o.metadata);
    let orchestrator = if o.spec.orchestrator.is_empty() {
        K8S_ORCHESTRATOR
    } else {
        o.spec.orchestrator.as_str()
    };
    let sa = o.spec.service_account_name.as_str();
    // Pods get kns.<ns> (and ksa.<ns>.<sa>) from the pod conversion
    // (CONV/workload_endpoint_default.go); an explicit list is used as is.
    let profiles = if !o.spec.profiles.is_empty() {
        o.spec.profiles.clone()
    } else if orchestrator == K8S_ORCHESTRATOR {
        let mut p = vec![namespace_profile_name(ns)];
        if !sa.is_empty() {
            p.push(service_account_profile_name(ns, sa));
        }
        p
    } else {
        Vec::new()
    };
    Endpoint {
        kind: EndpointKind::Workload,
        key: key.clone(),
        nets: o.spec.ip_networks.iter().map(|n| n.0).collect(),
        labels: workload_labels(&o.metadata, orchestrator, sa),
        profiles,
        ports: o.spec.ports.clone(),
        generate_name: o.metadata.generate_name.clone().filter(|g| !g.is_empty()),
        node: o.spec.node.clone(),
    }
}

/// The implicit namespace profile's name.
pub fn namespace_profile_name(namespace: &str) -> String {
    format!("{NAMESPACE_PROFILE_PREFIX}{namespace}")
}

/// The implicit service-account profile's name.
pub fn service_account_profile_name(namespace: &str, service_account: &str) -> String {
    format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{service_account}")
}

// ---------------------------------------------------------------------------------
// The cluster

/// Everything the evaluator looks at, normalised. Build it with
/// [`Cluster::from_resources`]; it is immutable afterwards.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Known tiers by name (Tier resources and the built-ins).
    pub tiers: BTreeMap<String, TierInfo>,
    /// Every policy (enforced and staged, Calico and Kubernetes), in key order.
    pub policies: Vec<Policy>,
    /// Workload endpoints, then host endpoints, each in key order. Each behind an
    /// [`Arc`]: a pod added or removed moves one pointer per endpoint after it, not
    /// the endpoints (at 20,000 pods that move was most of a pod change's time in
    /// the daemon), and a copy of the cluster shares them.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Network sets and global network sets, in key order.
    pub network_sets: Vec<NetworkSet>,
    /// Profiles by name (explicit ones replace implicit ones of the same name).
    pub profiles: BTreeMap<String, ProfileInfo>,
}

impl Cluster {
    /// Every rule of the cluster: the policies' (ingress, then egress, policy by
    /// policy), then the profiles'.
    pub fn every_rule(&self) -> impl Iterator<Item = &PolicyRule> {
        self.policies
            .iter()
            .flat_map(|p| p.ingress.iter().chain(&p.egress))
            .chain(
                self.profiles
                    .values()
                    .flat_map(|p| p.ingress.iter().chain(&p.egress)),
            )
    }

    /// Normalises a resource set (as loaded; defaulting is re-applied here and is
    /// idempotent). A later resource with the same key replaces an earlier one, as a
    /// later `apply` would.
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
    ) -> Result<Cluster, ClusterError> {
        let mut latest: BTreeMap<ResourceKey, &Resource> = BTreeMap::new();
        for r in resources {
            latest.insert(normalised_key(r), r);
        }

        let mut c = Cluster::default();
        for (name, order, action) in BUILTIN_TIERS {
            c.tiers
                .insert(name.to_string(), builtin_tier(name, order, action));
        }
        for (key, r) in &latest {
            if is_policy_kind(key.kind) {
                if let Some(p) = policy_of(key, r)? {
                    c.policies.push(p);
                }
            } else if let Resource::Tier(o) = r {
                c.tiers.insert(o.metadata.name.clone(), tier_of(o));
            }
        }
        c.set_members(latest.iter().map(|(k, r)| (k, *r)))?;
        Ok(c)
    }

    /// Rebuilds everything but the policies and tiers (endpoints, network sets,
    /// profiles) from `resources` (normalised keys, in key order; other kinds are
    /// skipped).
    fn set_members<'a>(
        &mut self,
        resources: impl IntoIterator<Item = (&'a ResourceKey, &'a Resource)>,
    ) -> Result<(), ClusterError> {
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut explicit_profiles: Vec<&Object<crate::model::ProfileSpec>> = Vec::new();
        let mut service_accounts: Vec<(String, String)> = Vec::new();
        let mut endpoints = Vec::new();
        let mut network_sets = Vec::new();

        for (key, r) in resources {
            match r {
                Resource::NetworkPolicy(_)
                | Resource::GlobalNetworkPolicy(_)
                | Resource::StagedNetworkPolicy(_)
                | Resource::StagedGlobalNetworkPolicy(_)
                | Resource::KubernetesNetworkPolicy(_)
                | Resource::StagedKubernetesNetworkPolicy(_)
                | Resource::Tier(_) => {}
                Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => {
                    let mut labels = o.metadata.labels.clone();
                    let mut profiles = Vec::new();
                    if let Some(ns) = &key.namespace {
                        labels.insert(NAMESPACE_LABEL.into(), ns.clone());
                        profiles.push(namespace_profile_name(ns));
                        namespaces.entry(ns.clone()).or_default();
                    }
                    network_sets.push(NetworkSet {
                        key: key.clone(),
                        nets: o.spec.nets.iter().map(|n| n.0.trunc()).collect(),
                        labels,
                        profiles,
                    });
                }
                Resource::WorkloadEndpoint(o) => {
                    let ns = namespace_of(&o.metadata).to_string();
                    let sa = o.spec.service_account_name.as_str();
                    namespaces.entry(ns.clone()).or_default();
                    if !sa.is_empty() {
                        service_accounts.push((ns, sa.to_string()));
                    }
                    endpoints.push(workload_endpoint(key, o));
                }
                Resource::HostEndpoint(o) => {
                    endpoints.push(Endpoint {
                        kind: EndpointKind::Host,
                        key: key.clone(),
                        nets: o
                            .spec
                            .expected_ips
                            .iter()
                            .map(|ip| IpNet::from(*ip))
                            .collect(),
                        labels: o.metadata.labels.clone(),
                        profiles: o.spec.profiles.clone(),
                        ports: o.spec.ports.clone(),
                        generate_name: None,
                        node: o.spec.node.clone(),
                    });
                }
                Resource::Profile(o) => explicit_profiles.push(o),
                Resource::Namespace(o) => {
                    namespaces.insert(o.metadata.name.clone(), o.metadata.labels.clone());
                }
            }
        }
        // Workloads before host endpoints; the key order gave key order within each.
        endpoints.sort_by_key(|e| e.kind);

        let mut profiles = BTreeMap::new();
        // Implicit profiles (CONV/conversion.go NamespaceToProfile, ServiceAccountToProfile).
        for (ns, ns_labels) in &namespaces {
            let mut labels: BTreeMap<String, String> = ns_labels
                .iter()
                .map(|(k, v)| (format!("{NAMESPACE_KEY_PREFIX}{k}"), v.clone()))
                .collect();
            labels.insert(format!("{NAMESPACE_KEY_PREFIX}{NAME_LABEL}"), ns.clone());
            let name = namespace_profile_name(ns);
            profiles.insert(
                name.clone(),
                ProfileInfo {
                    name,
                    labels,
                    ingress: vec![allow_all_rule()],
                    egress: vec![allow_all_rule()],
                },
            );
        }
        for (ns, sa) in service_accounts {
            let name = service_account_profile_name(&ns, &sa);
            profiles.insert(
                name.clone(),
                ProfileInfo {
                    name,
                    labels: [(format!("{SERVICE_ACCOUNT_KEY_PREFIX}{NAME_LABEL}"), sa)].into(),
                    ingress: Vec::new(),
                    egress: Vec::new(),
                },
            );
        }
        for o in explicit_profiles {
            let key = ResourceKey {
                kind: Kind::Profile,
                namespace: None,
                name: o.metadata.name.clone(),
            };
            profiles.insert(
                o.metadata.name.clone(),
                ProfileInfo {
                    name: o.metadata.name.clone(),
                    labels: o.spec.labels_to_apply.clone(),
                    // Profile rules are scoped like a global policy's (UP/profileprocessor.go).
                    ingress: policy_rules(&o.spec.ingress, None, &key, "ingress")?,
                    egress: policy_rules(&o.spec.egress, None, &key, "egress")?,
                },
            );
        }
        self.endpoints = endpoints.into_iter().map(Arc::new).collect();
        self.network_sets = network_sets;
        self.profiles = profiles;
        Ok(())
    }

    /// The tier named `name`: a known one, or an unknown one (sorted after every known
    /// tier, default action Deny as felix renders it).
    pub fn tier(&self, name: &str) -> TierInfo {
        self.tiers.get(name).cloned().unwrap_or_else(|| TierInfo {
            name: name.to_string(),
            order: None,
            default_action: TierDefaultAction::Deny,
            known: false,
        })
    }

    /// The profile named `name`, if it exists. A profile an endpoint names that does
    /// not exist contributes no labels and no rules.
    pub fn profile(&self, name: &str) -> Option<&ProfileInfo> {
        self.profiles.get(name)
    }

    /// Label lookup with profile inheritance (§1, felix/labelindex
    /// label_inheritance_index.go): own labels first, then each profile in order.
    pub fn labels_of<'a>(
        &'a self,
        own: &'a BTreeMap<String, String>,
        profiles: &[String],
    ) -> LabelChain<'a> {
        let mut chain = LabelChain::new(own);
        for name in profiles {
            if let Some(p) = self.profile(name) {
                chain.push_profile(&p.labels);
            }
        }
        chain
    }

    /// An endpoint's labels, inherited ones included.
    pub fn endpoint_labels<'a>(&'a self, ep: &'a Endpoint) -> LabelChain<'a> {
        self.labels_of(&ep.labels, &ep.profiles)
    }

    /// The endpoint a flow end belongs to: the first workload endpoint (key order) with
    /// the address in its `ipNetworks`, else the first host endpoint with it in its
    /// `expectedIPs`, else none.
    pub fn endpoint_at(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.contains(ip)).map(|e| &**e)
    }

    /// Whether `ip` belongs to a Calico endpoint or network set whose labels match
    /// `selector` — felix renders a rule selector as the IP set of everything it
    /// selects (§2: unknown addresses never match a selector).
    pub fn ip_matches_selector(&self, ip: IpAddr, selector: &Selector) -> bool {
        let endpoints = self
            .endpoints
            .iter()
            .filter(|e| e.contains(ip))
            .any(|e| selector.matches(&self.endpoint_labels(e)));
        let sets = self
            .network_sets
            .iter()
            .filter(|s| s.nets.iter().any(|n| n.contains(&ip)))
            .any(|s| selector.matches(&self.labels_of(&s.labels, &s.profiles)));
        endpoints || sets
    }

    /// Whether (`ip`, `proto`, `port`) is a named port called one of `names` of an
    /// endpoint that has the address and matches `selector` (felix named-port IP sets,
    /// felix/calc/rule_scanner.go: filtered by the rule's positive selector, `all()`
    /// when it has none).
    pub fn named_port_matches(
        &self,
        ip: IpAddr,
        proto: u8,
        port: u16,
        names: &[&str],
        selector: Option<&Selector>,
    ) -> bool {
        self.endpoints
            .iter()
            .filter(|e| e.contains(ip))
            .filter(|e| selector.is_none_or(|s| s.matches(&self.endpoint_labels(e))))
            .any(|e| {
                e.ports.iter().any(|np| {
                    names.contains(&np.name.as_str()) && np.protocol.0 == proto && np.port == port
                })
            })
    }

    /// Whether a policy applies to an endpoint in a direction (§3.3): its applies-to
    /// selector matches the endpoint's labels and the direction is in its types.
    /// `doNotTrack`/`preDNAT` policies never apply in the normal chains
    /// (felix/calc/event_sequencer.go `tierInfoToProtoTierInfo`).
    pub fn policy_applies(&self, policy: &Policy, ep: &Endpoint, direction: PolicyType) -> bool {
        Self::policy_applies_by(policy, direction, |s| s.matches(&self.endpoint_labels(ep)))
    }

    /// [`Cluster::policy_applies`] with the applies-to selector's result on the
    /// endpoint given by `selects` (a caller asking about many policies can ask each
    /// distinct selector once).
    pub fn policy_applies_by(
        policy: &Policy,
        direction: PolicyType,
        selects: impl FnOnce(&Selector) -> bool,
    ) -> bool {
        !policy.untracked_or_pre_dnat && policy.governs(direction) && selects(&policy.applies_to)
    }

    /// The tiers that apply to an endpoint-direction, in evaluation order, each with
    /// its applicable policies (enforced and staged) in evaluation order (§3.1–3.3).
    /// Tiers without an applicable policy are left out.
    pub fn tiers_for(&self, ep: &Endpoint, direction: PolicyType) -> Vec<AppliedTier<'_>> {
        self.tiers_where(|_, p| self.policy_applies(p, ep, direction))
    }

    /// [`Cluster::tiers_for`] with the policies for which `applies(index in
    /// [`Cluster::policies`], policy)` holds.
    pub fn tiers_where(
        &self,
        mut applies: impl FnMut(usize, &Policy) -> bool,
    ) -> Vec<AppliedTier<'_>> {
        let mut by_tier: BTreeMap<&str, Vec<&Policy>> = BTreeMap::new();
        for (i, p) in self.policies.iter().enumerate() {
            if applies(i, p) {
                by_tier.entry(p.tier.as_str()).or_default().push(p);
            }
        }
        let mut tiers: Vec<AppliedTier<'_>> = by_tier
            .into_iter()
            .map(|(name, mut policies)| {
                policies.sort_by(|a, b| compare_policies(a, b));
                AppliedTier {
                    tier: self.tier(name),
                    policies,
                }
            })
            .collect();
        tiers.sort_by(|a, b| compare_tiers(&a.tier, &b.tier));
        tiers
    }

    /// An endpoint's profiles in order, by name; `None` for a name that does not
    /// exist (it has no rules: felix's checker skips it, the data plane jumps to an
    /// empty chain).
    pub fn profiles_for<'a>(&'a self, ep: &'a Endpoint) -> Vec<(&'a str, Option<&'a ProfileInfo>)> {
        ep.profiles
            .iter()
            .map(|n| (n.as_str(), self.profile(n)))
            .collect()
    }
}

/// A resource's key as the cluster keys it: a namespaced kind without a namespace is in
/// `default`.
fn normalised_key(r: &Resource) -> ResourceKey {
    let mut key = r.key();
    if key.kind.is_namespaced() {
        key.namespace = Some(namespace_of(r.metadata()).to_string());
    }
    key
}

/// Whether resources of `kind` become [`Policy`]s.
fn is_policy_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::NetworkPolicy
            | Kind::GlobalNetworkPolicy
            | Kind::StagedNetworkPolicy
            | Kind::StagedGlobalNetworkPolicy
            | Kind::KubernetesNetworkPolicy
            | Kind::StagedKubernetesNetworkPolicy
    )
}

/// The [`Policy`] of a policy resource stored under `key` (`None` for a
/// `stagedAction: Delete` object or a resource of another kind).
fn policy_of(key: &ResourceKey, r: &Resource) -> Result<Option<Policy>, ClusterError> {
    match r {
        Resource::NetworkPolicy(o)
        | Resource::GlobalNetworkPolicy(o)
        | Resource::StagedNetworkPolicy(o)
        | Resource::StagedGlobalNetworkPolicy(o) => calico_policy(key.kind, &o.metadata, &o.spec),
        Resource::KubernetesNetworkPolicy(o) | Resource::StagedKubernetesNetworkPolicy(o) => {
            let staged = key.kind == Kind::StagedKubernetesNetworkPolicy;
            if staged && o.spec.staged_action == Some(StagedAction::Delete) {
                return Ok(None);
            }
            let flavour = if staged {
                K8sFlavour::Staged
            } else {
                K8sFlavour::NetworkPolicy
            };
            let spec = k8s::to_calico(&o.spec, flavour).map_err(|e| ClusterError {
                resource: key.clone(),
                field: format!("spec.{}", e.field()),
                reason: e.reason(),
            })?;
            calico_policy(key.kind, &o.metadata, &spec)
        }
        _ => Ok(None),
    }
}

fn builtin_tier(name: &str, order: f64, action: TierDefaultAction) -> TierInfo {
    TierInfo {
        name: name.to_string(),
        order: Some(order),
        default_action: action,
        known: true,
    }
}

fn tier_of(o: &Object<crate::model::TierSpec>) -> TierInfo {
    TierInfo {
        name: o.metadata.name.clone(),
        order: o.spec.order,
        default_action: o.spec.default_action.unwrap_or_default(),
        known: true,
    }
}

/// One tier as it applies to one endpoint-direction.
#[derive(Clone, Debug)]
pub struct AppliedTier<'a> {
    /// The tier.
    pub tier: TierInfo,
    /// Its applicable policies in order, staged ones included.
    pub policies: Vec<&'a Policy>,
}

/// Whether felix renders the rule for IP version `v` at all (felix/rules/policy.go
/// `FilterRuleToIPVersion`): each of the rule's `nets` / `notNets` lists (source and
/// destination, including those a Kubernetes `ipBlock` becomes) is filtered to that
/// version, and a non-empty list left with no prefix — positive *or negated* — drops the
/// rule for that version; so does a negated catch-all (`0.0.0.0/0`, `::/0`). For
/// example `notNets: [fd00::/64]` makes a rule that never matches IPv4 traffic.
/// (Selector-derived address sets are not filtered this way.)
pub fn rendered_for_version(r: &PolicyRule, v: u8) -> bool {
    let of_version = |n: &IpNet| (v == 4) == matches!(n, IpNet::V4(_));
    [&r.source, &r.destination].into_iter().all(|side| {
        let keeps = |list: &[IpNet]| list.is_empty() || list.iter().any(of_version);
        let catch_all = side
            .not_nets
            .iter()
            .any(|n| of_version(n) && n.prefix_len() == 0);
        keeps(&side.nets) && keeps(&side.not_nets) && !catch_all
    })
}
