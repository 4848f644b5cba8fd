//! Worked scenarios for every rule of CALICO_SEMANTICS §3 and §5 (and the §2 matching
//! rules they rely on). Each test states the Calico rule it checks; expected traces
//! are written out by hand as Calico hit strings.

use std::net::IpAddr;

use dataplane::program::View;

use super::*;
use crate::eval::cluster::{TierInfo, compare_tiers};
use crate::model::{Kind, Resource};

// ---------------------------------------------------------------------------------
// Helpers

/// Loads multi-document YAML with the model loader (defaulting and validation
/// included), as the CLI does.
pub(crate) fn resources(yaml: &str) -> Vec<Resource> {
    match crate::model::load_str(yaml, "test.yaml") {
        Ok(loaded) => loaded.into_iter().map(|l| l.resource).collect(),
        Err(e) => panic!("invalid test input:\n{e}"),
    }
}

/// Decodes YAML without defaulting or validation: the evaluator applies Calico's
/// defaults itself and reports bad selectors on its own.
fn raw_resources(yaml: &str) -> Vec<Resource> {
    match crate::model::parse_str(yaml, "test.yaml") {
        Ok(loaded) => loaded.into_iter().map(|l| l.resource).collect(),
        Err(e) => panic!("undecodable test input:\n{e}"),
    }
}

pub(crate) fn cluster(yaml: &str) -> Cluster {
    Cluster::from_resources(&resources(yaml)).expect("cluster")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub(crate) fn tcp(src: &str, dst: &str, dport: u16) -> Flow {
    Flow::new(ip(src), ip(dst), 6, 40000, dport).expect("flow")
}

/// `(enforced action, enforced hits, pending action, pending hits)` of one reporter.
pub(crate) type Views = (
    &'static str,
    Vec<&'static str>,
    &'static str,
    Vec<&'static str>,
);

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

pub(crate) fn views_of(r: &ReporterOutcome) -> (String, Vec<String>, String, Vec<String>) {
    (
        word(r.enforced.verdict).to_string(),
        r.enforced.hit_strings(),
        word(r.pending.verdict).to_string(),
        r.pending.hit_strings(),
    )
}

fn owned(v: Views) -> (String, Vec<String>, String, Vec<String>) {
    (
        v.0.to_string(),
        v.1.into_iter().map(str::to_string).collect(),
        v.2.to_string(),
        v.3.into_iter().map(str::to_string).collect(),
    )
}

/// Asserts the verdicts of one reporter.
#[track_caller]
pub(crate) fn assert_reporter(e: &Evaluation, r: Reporter, endpoint: &str, want: Views) {
    let got = e
        .reporter(r)
        .unwrap_or_else(|| panic!("no {r:?} reporter in {e:#?}"));
    assert_eq!(got.endpoint_name, endpoint, "{r:?} endpoint");
    assert_eq!(views_of(got), owned(want), "{r:?} reporter of {}", e.flow);
}

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ns1, labels: {env: prod, team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns2, labels: {env: dev}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client, namespace: ns1, labels: {app: client}}
spec: {orchestrator: k8s, serviceAccountName: client-sa, ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web, namespace: ns1, labels: {app: web}}
spec:
  orchestrator: k8s
  serviceAccountName: web-sa
  ipNetworks: [10.0.0.2/32]
  ports: [{name: http, protocol: TCP, port: 8080}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web, namespace: ns2, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.1.2/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client, namespace: ns2, labels: {app: client}}
spec: {orchestrator: k8s, ipNetworks: [10.0.1.1/32]}
"#;

fn with_pods(policies: &str) -> Cluster {
    cluster(&format!("{PODS}\n---\n{policies}"))
}

const PROFILE_ALLOW_NS1: &str = "0|__PROFILE__|pro:kns.ns1|allow|0";

// ---------------------------------------------------------------------------------
// §3.1–3.2: ordering

fn tier(name: &str, order: Option<f64>, known: bool) -> TierInfo {
    TierInfo {
        name: name.into(),
        order,
        default_action: crate::model::TierDefaultAction::Deny,
        known,
    }
}

#[test]
fn tier_order_known_first_then_order_nil_last_then_name() {
    let mut tiers = [
        tier("zz-unknown", Some(1.0), false),
        tier("b-nil", None, true),
        tier("a-nil", None, true),
        tier("c", Some(100.0), true),
        tier("b", Some(100.0), true),
        tier("first", Some(-5.0), true),
    ];
    tiers.sort_by(compare_tiers);
    let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["first", "b", "c", "a-nil", "b-nil", "zz-unknown"]);
}

#[test]
fn policy_order_nil_last_and_name_namespace_kind_tie_break() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec: {selector: "app == 'web'", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns1}
spec: {selector: "app == 'web'", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: p, namespace: ns1}
spec: {selector: "app == 'web'", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-late, namespace: ns1}
spec: {order: 500, selector: "app == 'web'", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: z-early, namespace: ns1}
spec: {order: 5, selector: "app == 'web'", ingress: [{action: Allow}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: ns1}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{}]}
"#,
    );
    let web = c.endpoint_at(ip("10.0.0.2")).unwrap();
    let tiers = c.tiers_for(web, PolicyType::Ingress);
    assert_eq!(tiers.len(), 1);
    let order: Vec<String> = tiers[0]
        .policies
        .iter()
        .map(|p| format!("{}", p.key))
        .collect();
    // 5 < 500 < 1000 (the k8s policy) < nil; among the nil orders:
    // "p//GlobalNetworkPolicy" < "p/ns1/NetworkPolicy" < "p/ns1/StagedNetworkPolicy".
    assert_eq!(
        order,
        [
            "NetworkPolicy ns1/z-early",
            "NetworkPolicy ns1/a-late",
            "NetworkPolicy (networking.k8s.io/v1) ns1/p",
            "GlobalNetworkPolicy p",
            "NetworkPolicy ns1/p",
            "StagedNetworkPolicy ns1/p",
        ]
    );
}

#[test]
fn tiers_walked_in_order_policies_in_unknown_tier_last() {
    // Each tier passes; the trace shows the order in which tiers were visited.
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t-b}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t-a}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t-nil}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: in-missing}
spec: {tier: missing, order: 1, ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: in-nil}
spec: {tier: t-nil, ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: in-b}
spec: {tier: t-b, ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: in-a}
spec: {tier: t-a, ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: in-default}
spec: {ingress: [{action: Pass}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let hits = vec![
        "0|t-a|gnp:in-a|pass|0",
        "1|t-b|gnp:in-b|pass|0",
        "2|default|gnp:in-default|pass|0",
        "3|t-nil|gnp:in-nil|pass|0",
        "4|missing|gnp:in-missing|pass|0",
        "5|__PROFILE__|pro:kns.ns1|allow|0",
    ];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hits.clone(), "allow", hits),
    );
}

// ---------------------------------------------------------------------------------
// §3.3: applies-to

#[test]
fn namespaced_policy_applies_only_in_its_namespace() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-web, namespace: ns1}
spec: {selector: "app == 'web'", ingress: [{action: Deny}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let deny = vec!["0|default|np:ns1/deny-web|deny|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("deny", deny.clone(), "deny", deny),
    );
    // The same labels in ns2: the policy does not apply, the namespace profile allows.
    let e = evaluate(&c, &tcp("10.0.1.1", "10.0.1.2", 80));
    let allow = vec!["0|__PROFILE__|pro:kns.ns2|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns2/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

#[test]
fn types_select_direction_and_are_inferred() {
    // Explicit types: [Egress] only ⇒ no effect on ingress.
    // Inferred: only ingress rules ⇒ [Ingress]; no rules at all ⇒ [Ingress].
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: egress-only}
spec: {order: 1, selector: "app == 'web'", types: [Egress], ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: no-rules}
spec: {order: 2, selector: "app == 'web'"}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let eot = vec!["0|default|gnp:no-rules|deny|-1"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("deny", eot.clone(), "deny", eot),
    );
    // web's egress: egress-only applies and has no egress rules ⇒ end of tier.
    let e = evaluate(&c, &tcp("10.0.0.2", "10.0.0.1", 80));
    let eot = vec!["0|default|gnp:egress-only|deny|-1"];
    assert_reporter(
        &e,
        Reporter::Src,
        "ns1/web",
        ("deny", eot.clone(), "deny", eot),
    );
}

#[test]
fn gnp_namespace_selector_uses_namespace_labels() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prod-only}
spec: {namespaceSelector: "env == 'prod'", ingress: [{action: Deny}]}
"#,
    );
    let deny = vec!["0|default|gnp:prod-only|deny|0"];
    let e = evaluate(&c, &tcp("10.0.1.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("deny", deny.clone(), "deny", deny),
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.1.2", 80));
    let allow = vec!["0|__PROFILE__|pro:kns.ns2|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns2/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

#[test]
fn service_account_selector_on_policy() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: by-sa, namespace: ns1}
spec: {serviceAccountSelector: "projectcalico.org/name == 'web-sa'", ingress: [{action: Deny}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let deny = vec!["0|default|np:ns1/by-sa|deny|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("deny", deny.clone(), "deny", deny),
    );
    // client runs as client-sa: not selected.
    let e = evaluate(&c, &tcp("10.0.0.2", "10.0.0.1", 80));
    let allow = vec![PROFILE_ALLOW_NS1];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/client",
        ("allow", allow.clone(), "allow", allow),
    );
}

// ---------------------------------------------------------------------------------
// §3.4: actions, tier defaults

#[test]
fn pass_into_a_later_tier() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass-web}
spec:
  tier: security
  selector: "app == 'web'"
  ingress:
  - {action: Deny, source: {nets: [192.0.2.0/24]}}
  - {action: Pass}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-client, namespace: ns1}
spec:
  selector: "app == 'web'"
  ingress: [{action: Allow, source: {selector: "app == 'client'"}}]
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let hits = vec![
        "0|security|gnp:security.pass-web|pass|1",
        "1|default|np:ns1/allow-client|allow|0",
    ];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hits.clone(), "allow", hits),
    );
}

#[test]
fn pass_out_of_the_last_tier_goes_to_profiles() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pass-all}
spec: {ingress: [{action: Pass}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let hits = vec![
        "0|default|gnp:pass-all|pass|0",
        "1|__PROFILE__|pro:kns.ns1|allow|0",
    ];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hits.clone(), "allow", hits),
    );
}

#[test]
fn log_records_nothing_and_continues() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: log-then-deny}
spec:
  selector: "app == 'web'"
  ingress:
  - {action: Log}
  - {action: Log, protocol: TCP}
  - {action: Deny, protocol: TCP, destination: {ports: [80]}}
  - {action: Allow}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let deny = vec!["0|default|gnp:log-then-deny|deny|2"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("deny", deny.clone(), "deny", deny),
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 443));
    let allow = vec!["0|default|gnp:log-then-deny|allow|3"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

#[test]
fn policy_without_matching_rule_falls_through_to_next_policy() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first}
spec: {order: 1, ingress: [{action: Deny, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: second}
spec: {order: 2, ingress: [{action: Allow, protocol: TCP}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let allow = vec!["0|default|gnp:second|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

#[test]
fn tier_default_pass_is_recorded_and_continues() {
    // kube-admin is a built-in tier with defaultAction Pass; a user tier too.
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 2000, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: admin-telnet}
spec: {tier: kube-admin, ingress: [{action: Deny, protocol: TCP, destination: {ports: [23]}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform-a}
spec: {tier: platform, order: 1, ingress: [{action: Deny, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform-b}
spec: {tier: platform, order: 2, ingress: [{action: Deny, protocol: SCTP}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    // Enforced: trigger = last enforced policy of the tier; pending: the first.
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "allow",
            vec![
                "0|kube-admin|gnp:admin-telnet|pass|-1",
                "1|platform|gnp:platform-b|pass|-1",
                "2|__PROFILE__|pro:kns.ns1|allow|0",
            ],
            "allow",
            vec![
                "0|kube-admin|gnp:admin-telnet|pass|-1",
                "1|platform|gnp:platform-a|pass|-1",
                "2|__PROFILE__|pro:kns.ns1|allow|0",
            ],
        ),
    );
}

#[test]
fn tier_default_deny_trigger_last_enforced_vs_first() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: one}
spec: {order: 1, selector: "app == 'web'", ingress: [{action: Allow, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: two}
spec: {order: 2, selector: "app == 'web'", ingress: [{action: Allow, protocol: UDP}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "deny",
            vec!["0|default|gnp:two|deny|-1"],
            "deny",
            vec!["0|default|gnp:one|deny|-1"],
        ),
    );
}

// ---------------------------------------------------------------------------------
// §5: staged policies

#[test]
fn staged_allow_over_a_deny() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-default-deny, namespace: ns1}
spec: {order: 100, selector: "app == 'web'", types: [Ingress]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: allow-client, namespace: ns1}
spec:
  order: 10
  selector: "app == 'web'"
  ingress: [{action: Allow, protocol: TCP, source: {selector: "app == 'client'"}, destination: {ports: [80]}}]
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "deny",
            vec!["0|default|np:ns1/web-default-deny|deny|-1"],
            "allow",
            vec!["0|default|snp:ns1/allow-client|allow|0"],
        ),
    );
    assert_eq!((e.enforced(), e.pending()), (Verdict::Deny, Verdict::Allow));
    // Other traffic: pending end of tier, attributed to the first policy (the staged one).
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 443));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "deny",
            vec!["0|default|np:ns1/web-default-deny|deny|-1"],
            "deny",
            vec!["0|default|snp:ns1/allow-client|deny|-1"],
        ),
    );
}

#[test]
fn staged_deny_over_an_allow() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-all-web}
spec: {order: 100, selector: "app == 'web'", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: block-port-80}
spec:
  order: 50
  selector: "app == 'web'"
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "allow",
            vec!["0|default|gnp:allow-all-web|allow|0"],
            "deny",
            vec!["0|default|sgnp:block-port-80|deny|0"],
        ),
    );
    // Port 443: the staged policy does not match, the enforced one allows in both views.
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 443));
    let allow = vec!["0|default|gnp:allow-all-web|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

#[test]
fn staged_only_tier_is_skipped_in_the_enforced_view() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: quarantine}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: q1}
spec: {tier: quarantine, order: 1, selector: "app == 'web'", ingress: [{action: Allow, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: q2}
spec: {tier: quarantine, order: 2, selector: "app == 'web'", ingress: [{action: Allow, protocol: SCTP}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "allow",
            vec![PROFILE_ALLOW_NS1],
            "deny",
            vec!["0|quarantine|sgnp:q1|deny|-1"],
        ),
    );
}

#[test]
fn mixed_tier_end_of_tier_is_not_suppressed() {
    // calico#13416: a tier mixing staged and enforced policies, with a staged policy
    // last in the order: the enforced view still ends with the end-of-tier deny,
    // attributed to the last *enforced* policy.
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: a-staged-first, namespace: ns1}
spec: {order: 5, selector: "app == 'web'", ingress: [{action: Allow, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: enforced, namespace: ns1}
spec: {order: 10, selector: "app == 'web'", ingress: [{action: Allow, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: z-staged-last, namespace: ns1}
spec: {order: 20, selector: "app == 'web'", ingress: [{action: Allow, protocol: SCTP}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "deny",
            vec!["0|default|np:ns1/enforced|deny|-1"],
            "deny",
            vec!["0|default|snp:ns1/a-staged-first|deny|-1"],
        ),
    );
}

#[test]
fn staged_never_hides_same_named_enforced_and_delete_is_ignored() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: ns1}
spec: {order: 10, selector: "app == 'web'", ingress: [{action: Allow, protocol: TCP}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web, namespace: ns1}
spec: {order: 5, selector: "app == 'web'", ingress: [{action: Deny, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: web-delete}
spec: {tier: default, stagedAction: Delete}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web, namespace: ns2}
spec: {stagedAction: Delete}
"#,
    );
    // The staged twin does not replace the enforced policy: TCP is still allowed in
    // the pending view by the enforced one, and the Delete-staged objects do nothing.
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let allow = vec!["0|default|np:ns1/web|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", allow.clone(), "allow", allow),
    );
    let udp = Flow::new(ip("10.0.0.1"), ip("10.0.0.2"), 17, 5000, 53).unwrap();
    let e = evaluate(&c, &udp);
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "deny",
            vec!["0|default|np:ns1/web|deny|-1"],
            "deny",
            vec!["0|default|snp:ns1/web|deny|0"],
        ),
    );
    assert_eq!(c.policies.len(), 2, "Delete-staged policies are absent");
}

#[test]
fn staged_pass_over_a_deny() {
    // A staged Pass moves only the pending view on to the next tier.
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: 1}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: a-pass-web}
spec: {tier: first, selector: "app == 'web'", ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-web}
spec: {tier: first, selector: "app == 'web'", ingress: [{action: Deny}]}
"#,
    );
    // Both orders nil: "a-pass-web//StagedGlobalNetworkPolicy" < "deny-web//GlobalNetworkPolicy".
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "deny",
            vec!["0|first|gnp:deny-web|deny|0"],
            "allow",
            vec![
                "0|first|sgnp:a-pass-web|pass|0",
                "1|__PROFILE__|pro:kns.ns1|allow|0",
            ],
        ),
    );
}

// ---------------------------------------------------------------------------------
// §3.5: profiles

#[test]
fn pod_without_policy_is_allowed_by_its_namespace_profile() {
    let c = with_pods("");
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let allow = vec![PROFILE_ALLOW_NS1];
    assert_reporter(
        &e,
        Reporter::Src,
        "ns1/client",
        ("allow", allow.clone(), "allow", allow.clone()),
    );
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

const HOSTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: bare, labels: {host: bare}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.0.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: profiled}
spec: {node: n2, interfaceName: eth0, expectedIPs: [192.168.0.2], profiles: [pass-ssh, no-match, open]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: closed}
spec: {node: n3, interfaceName: eth0, expectedIPs: [192.168.0.3], profiles: [no-match]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: pass-ssh}
spec:
  labelsToApply: {zone: dmz}
  ingress: [{action: Pass, protocol: TCP, destination: {ports: [22]}}]
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: no-match}
spec:
  ingress: [{action: Allow, protocol: UDP}]
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: open}
spec:
  ingress: [{action: Log}, {action: Allow}]
"#;

#[test]
fn host_endpoint_without_profiles_hits_the_no_profile_deny() {
    let c = cluster(HOSTS);
    let e = evaluate(&c, &tcp("10.9.9.9", "192.168.0.1", 22));
    assert_reporter(
        &e,
        Reporter::Dst,
        "bare",
        (
            "deny",
            vec!["0|__PROFILE__|pro:__NO_MATCH__|deny|0"],
            "deny",
            vec!["0|__PROFILE__|pro:__PROFILE__|deny|-1"],
        ),
    );
    assert!(e.reporter(Reporter::Src).is_none());
}

#[test]
fn explicit_profiles_in_order_pass_and_no_match() {
    let c = cluster(HOSTS);
    // Port 80: pass-ssh and no-match do not match, open allows (rule 1; rule 0 is Log).
    let e = evaluate(&c, &tcp("10.9.9.9", "192.168.0.2", 80));
    let allow = vec!["0|__PROFILE__|pro:open|allow|1"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "profiled",
        ("allow", allow.clone(), "allow", allow),
    );
    // Port 22: a profile Pass moves the data plane on to the next profile (no hit);
    // the pending checker denies.
    let e = evaluate(&c, &tcp("10.9.9.9", "192.168.0.2", 22));
    assert_reporter(
        &e,
        Reporter::Dst,
        "profiled",
        (
            "allow",
            vec!["0|__PROFILE__|pro:open|allow|1"],
            "deny",
            vec!["0|__PROFILE__|pro:pass-ssh|deny|0"],
        ),
    );
    // Profiles that all fail to match: the data plane's no-match hit; the pending
    // checker denies with no hit.
    let e = evaluate(&c, &tcp("10.9.9.9", "192.168.0.3", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "closed",
        (
            "deny",
            vec!["0|__PROFILE__|pro:__NO_MATCH__|deny|0"],
            "deny",
            vec![],
        ),
    );
}

#[test]
fn profile_labels_are_inherited_after_own_labels() {
    let c = cluster(&format!(
        "{HOSTS}\n---\n{}",
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: dmz}
spec: {selector: "zone == 'dmz'", ingress: [{action: Deny}]}
"#
    ));
    let e = evaluate(&c, &tcp("10.9.9.9", "192.168.0.2", 80));
    let deny = vec!["0|default|gnp:dmz|deny|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "profiled",
        ("deny", deny.clone(), "deny", deny),
    );
}

#[test]
fn pod_labels_cannot_spoof_profile_labels() {
    // pcns.* keys on a pod are dropped (only the kns. profile provides them).
    let c = cluster(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: sneaky, namespace: dev, labels: {pcns.env: prod}}
spec: {ipNetworks: [10.1.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prod}
spec: {namespaceSelector: "env == 'prod'", ingress: [{action: Deny}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.9.9.9", "10.1.0.1", 80));
    let allow = vec!["0|__PROFILE__|pro:kns.dev|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "dev/sneaky",
        ("allow", allow.clone(), "allow", allow),
    );
}

// ---------------------------------------------------------------------------------
// §2: rule matching

#[test]
fn namespaced_vs_global_peer_selectors() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np, namespace: ns1}
spec:
  order: 1
  selector: "app == 'web'"
  ingress: [{action: Allow, protocol: TCP, source: {selector: "app == 'client'"}, destination: {ports: [1]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gnp}
spec:
  order: 2
  selector: "app == 'web'"
  ingress: [{action: Allow, protocol: TCP, source: {selector: "app == 'client'"}, destination: {ports: [2]}}]
"#,
    );
    // Port 1 (NP): only the client in ns1 matches.
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 1));
    let hit = vec!["0|default|np:ns1/np|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hit.clone(), "allow", hit),
    );
    let e = evaluate(&c, &tcp("10.0.1.1", "10.0.0.2", 1));
    let eot = vec!["0|default|gnp:gnp|deny|-1"];
    let eot_p = vec!["0|default|np:ns1/np|deny|-1"];
    assert_reporter(&e, Reporter::Dst, "ns1/web", ("deny", eot, "deny", eot_p));
    // Port 2 (GNP): clients of every namespace match.
    let e = evaluate(&c, &tcp("10.0.1.1", "10.0.0.2", 2));
    let hit = vec!["0|default|gnp:gnp|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hit.clone(), "allow", hit),
    );
}

#[test]
fn not_selector_is_namespace_scoped_only_through_the_namespace_term() {
    // In a namespaced policy `notSelector: X` = "peer in my namespace and not X".
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: not-web, namespace: ns1}
spec:
  selector: "app == 'web'"
  ingress: [{action: Allow, source: {notSelector: "app == 'web'"}}]
"#,
    );
    // client in ns1: allowed. client in ns2: not in my namespace. Unknown address: no.
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(e.pending(), Verdict::Allow);
    let e = evaluate(&c, &tcp("10.0.1.1", "10.0.0.2", 80));
    assert_eq!(e.pending(), Verdict::Deny);
    let e = evaluate(&c, &tcp("8.8.8.8", "10.0.0.2", 80));
    assert_eq!(e.pending(), Verdict::Deny);
    // In a global policy it is not scoped: an unknown address matches `notSelector`.
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: not-web}
spec:
  selector: "app == 'web'"
  ingress: [{action: Allow, source: {notSelector: "app == 'web'"}}]
"#,
    );
    let e = evaluate(&c, &tcp("8.8.8.8", "10.0.0.2", 80));
    let allow = vec!["0|default|gnp:not-web|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", allow.clone(), "allow", allow),
    );
}

#[test]
fn entity_namespace_selector_pcns_all_and_global() {
    let c = cluster(&format!(
        "{PODS}\n---\n{HOSTS}\n---\n{}",
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {kind: partner}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ns-sel, namespace: ns2}
spec:
  selector: "app == 'web'"
  ingress:
  - {action: Allow, protocol: TCP, destination: {ports: [1]}, source: {namespaceSelector: "env == 'prod'"}}
  - {action: Allow, protocol: TCP, destination: {ports: [2]}, source: {namespaceSelector: "all()"}}
  - {action: Allow, protocol: TCP, destination: {ports: [3]}, source: {namespaceSelector: "global()"}}
"#
    ));
    // The destination's verdict (a host endpoint source denies its own egress).
    let allowed = |src: &str, port: u16| {
        let e = evaluate(&c, &tcp(src, "10.0.1.2", port));
        e.reporter(Reporter::Dst).map(|r| r.pending.verdict) == Some(Verdict::Allow)
    };
    // env == 'prod' is ns1: the ns1 client matches, the ns2 client does not.
    assert!(allowed("10.0.0.1", 1));
    assert!(!allowed("10.0.1.1", 1));
    // all(): any namespaced endpoint, but not host endpoints or global sets.
    assert!(allowed("10.0.0.1", 2) && allowed("10.0.1.1", 2));
    assert!(!allowed("192.168.0.1", 2) && !allowed("203.0.113.9", 2));
    // global(): only non-namespaced endpoints and sets.
    assert!(allowed("192.168.0.1", 3) && allowed("203.0.113.9", 3));
    assert!(!allowed("10.0.0.1", 3) && !allowed("8.8.8.8", 3));
}

#[test]
fn service_accounts_names_and_selector() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: sa}
spec:
  selector: "app == 'web'"
  ingress:
  - {action: Allow, protocol: TCP, destination: {ports: [1]}, source: {serviceAccounts: {names: [client-sa]}}}
  - {action: Allow, protocol: TCP, destination: {ports: [2]}, source: {serviceAccounts: {selector: "projectcalico.org/name == 'client-sa'"}}}
  - {action: Allow, protocol: TCP, destination: {ports: [3]}, source: {serviceAccounts: {names: [other]}}}
"#,
    );
    let allowed = |src: &str, port: u16| {
        evaluate(&c, &tcp(src, "10.0.0.2", port)).pending() == Verdict::Allow
    };
    assert!(allowed("10.0.0.1", 1) && allowed("10.0.0.1", 2) && !allowed("10.0.0.1", 3));
    // ns2/client has no service account.
    assert!(!allowed("10.0.1.1", 1) && !allowed("10.0.1.1", 2));
}

#[test]
fn named_ports_resolve_on_the_peer_endpoint() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: http}
spec:
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [http]}}]
  egress: [{action: Allow, protocol: TCP, destination: {selector: "app == 'web'", ports: [http, 9000]}}]
"#,
    );
    // ns1/web has http = TCP 8080; ns2/web has no named ports.
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 8080));
    let ing = vec!["0|default|gnp:http|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", ing.clone(), "allow", ing),
    );
    let egr = vec!["0|default|gnp:http|allow|0"];
    assert_reporter(
        &e,
        Reporter::Src,
        "ns1/client",
        ("allow", egr.clone(), "allow", egr),
    );
    // 80 is not http on ns1/web.
    assert_eq!(
        evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80)).pending(),
        Verdict::Deny
    );
    // ns2/web: 8080 is nothing there; 9000 matches numerically.
    assert_eq!(
        evaluate(&c, &tcp("10.0.0.1", "10.0.1.2", 8080)).pending(),
        Verdict::Deny
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.1.2", 9000));
    assert_eq!(
        e.reporter(Reporter::Src).map(|r| r.pending.hit_strings()),
        Some(vec!["0|default|gnp:http|allow|0".to_string()])
    );
    // UDP 8080 is not the TCP named port.
    let udp = Flow::new(ip("10.0.0.1"), ip("10.0.0.2"), 17, 1, 8080).unwrap();
    assert_eq!(evaluate(&c, &udp).pending(), Verdict::Deny);
}

#[test]
fn network_sets_make_addresses_selectable() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {trust: partner}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: office, namespace: ns1, labels: {trust: office}}
spec: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: trusted, namespace: ns1}
spec:
  selector: "app == 'web'"
  ingress: [{action: Allow, source: {selector: "has(trust)"}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: partners}
spec:
  order: 1
  selector: "app == 'web'"
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [443]}, source: {selector: "trust == 'partner'"}}]
"#,
    );
    // The NP's selector is scoped to ns1: the namespaced set matches, the global does not.
    let e = evaluate(&c, &tcp("198.51.100.7", "10.0.0.2", 80));
    let hit = vec!["0|default|np:ns1/trusted|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hit.clone(), "allow", hit),
    );
    assert!(
        e.reporter(Reporter::Src).is_none(),
        "a network set is not an endpoint"
    );
    assert_eq!(
        evaluate(&c, &tcp("203.0.113.7", "10.0.0.2", 80)).pending(),
        Verdict::Deny
    );
    let e = evaluate(&c, &tcp("203.0.113.7", "10.0.0.2", 443));
    let hit = vec!["0|default|gnp:partners|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hit.clone(), "allow", hit),
    );
}

#[test]
fn negations_icmp_and_ip_version() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: m}
spec:
  selector: "app == 'web'"
  ingress:
  - {action: Deny, source: {notNets: [10.0.0.0/16]}}
  - {action: Allow, protocol: TCP, destination: {notPorts: ["1:1024"]}}
  - {action: Allow, notProtocol: TCP, protocol: UDP}
  - {action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}}
  - {action: Allow, protocol: ICMP, notICMP: {type: 3}}
  - {action: Allow, ipVersion: 6}
"#,
    );
    let idx = |f: Flow| {
        let e = evaluate(&c, &f);
        e.reporter(Reporter::Dst).map(|r| r.pending.hit_strings())
    };
    let hit = |s: &str| Some(vec![s.to_string()]);
    let eot = hit("0|default|gnp:m|deny|-1");
    // notNets: 10.0.1.1 is inside 10.0.0.0/16; an outside address is denied by rule 0.
    assert_eq!(
        idx(tcp("172.16.0.1", "10.0.0.2", 2000)),
        hit("0|default|gnp:m|deny|0")
    );
    // notPorts: 2000 is outside 1:1024, 80 is inside.
    assert_eq!(
        idx(tcp("10.0.1.1", "10.0.0.2", 2000)),
        hit("0|default|gnp:m|allow|1")
    );
    assert_eq!(idx(tcp("10.0.1.1", "10.0.0.2", 80)), eot);
    let udp = Flow::new(ip("10.0.1.1"), ip("10.0.0.2"), 17, 1, 53).unwrap();
    assert_eq!(idx(udp), hit("0|default|gnp:m|allow|2"));
    let ping = Flow::new(ip("10.0.1.1"), ip("10.0.0.2"), 1, 8, 0).unwrap();
    assert_eq!(idx(ping), hit("0|default|gnp:m|allow|3"));
    let unreachable = Flow::new(ip("10.0.1.1"), ip("10.0.0.2"), 1, 3, 1).unwrap();
    assert_eq!(idx(unreachable), eot);
    let redirect = Flow::new(ip("10.0.1.1"), ip("10.0.0.2"), 1, 5, 0).unwrap();
    assert_eq!(idx(redirect), hit("0|default|gnp:m|allow|4"));
    let gre = Flow::new(ip("10.0.1.1"), ip("10.0.0.2"), 47, 0, 0).unwrap();
    assert_eq!(idx(gre), eot);
}

#[test]
fn ip_version_and_other_family_nets() {
    let c = cluster(
        r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: dual, namespace: ns}
spec: {ipNetworks: [10.2.0.1/32, "fd00::1/128"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: v6}
spec:
  ingress:
  - {action: Allow, ipVersion: 6, protocol: TCP}
  - {action: Deny, source: {nets: ["fd00:1::/64"]}}
  - {action: Allow, source: {nets: [10.0.0.0/8]}}
"#,
    );
    let v6 = Flow::new(ip("fd00:9::1"), ip("fd00::1"), 6, 1, 80).unwrap();
    let e = evaluate(&c, &v6);
    let hit = vec!["0|default|gnp:v6|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns/dual",
        ("allow", hit.clone(), "allow", hit),
    );
    // v4 TCP: rule 0 is v6-only, rule 1's v6 nets never match a v4 address.
    let e = evaluate(&c, &tcp("10.9.0.1", "10.2.0.1", 80));
    let hit = vec!["0|default|gnp:v6|allow|2"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns/dual",
        ("allow", hit.clone(), "allow", hit),
    );
    assert!(Flow::new(ip("10.0.0.1"), ip("fd00::1"), 6, 1, 1).is_err());
}

#[test]
fn services_criteria_never_match() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: svc}
spec:
  selector: "app == 'web'"
  ingress: [{action: Allow, source: {services: {name: kube-dns, namespace: kube-system}}}]
"#,
    );
    assert_eq!(
        evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 53)).pending(),
        Verdict::Deny
    );
}

// ---------------------------------------------------------------------------------
// §3.7, §3.8: both ends, Kubernetes policies

#[test]
fn both_ends_must_allow() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-egress}
spec: {selector: "app == 'client'", types: [Egress]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Src,
        "ns1/client",
        (
            "deny",
            vec!["0|default|gnp:client-egress|deny|-1"],
            "deny",
            vec!["0|default|gnp:client-egress|deny|-1"],
        ),
    );
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "allow",
            vec![PROFILE_ALLOW_NS1],
            "allow",
            vec![PROFILE_ALLOW_NS1],
        ),
    );
    assert_eq!((e.enforced(), e.pending()), (Verdict::Deny, Verdict::Deny));
}

#[test]
fn neither_end_known_allows_with_no_reporters() {
    let c = with_pods("");
    let e = evaluate(&c, &tcp("8.8.8.8", "1.1.1.1", 53));
    assert!(e.reporters.is_empty());
    assert_eq!(
        (e.enforced(), e.pending()),
        (Verdict::Allow, Verdict::Allow)
    );
    assert_eq!(
        report::to_json(&e),
        r#"{"verdicts":[],"final":{"enforced":"allow","pending":"allow"}}"#
    );
}

#[test]
fn k8s_default_deny_for_selected_pods_only() {
    let c = with_pods(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let hit = vec!["0|default|knp:ns1/web-deny|allow|0"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("allow", hit.clone(), "allow", hit),
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 443));
    let eot = vec!["0|default|knp:ns1/web-deny|deny|-1"];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        ("deny", eot.clone(), "deny", eot),
    );
    // The client in ns2 is outside the policy's namespace: denied.
    assert_eq!(
        evaluate(&c, &tcp("10.0.1.1", "10.0.0.2", 80)).enforced(),
        Verdict::Deny
    );
    // Unselected pods (ns1/client, ns2/web) fall through to the kns. profile.
    let e = evaluate(&c, &tcp("10.0.0.2", "10.0.0.1", 443));
    let allow = vec![PROFILE_ALLOW_NS1];
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/client",
        ("allow", allow.clone(), "allow", allow),
    );
    assert_eq!(
        evaluate(&c, &tcp("10.0.0.1", "10.0.1.2", 443)).enforced(),
        Verdict::Allow
    );
}

#[test]
fn staged_k8s_policy_is_pending_only() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: web-deny, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: removed, namespace: ns1}
spec: {stagedAction: Delete}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 443));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "allow",
            vec![PROFILE_ALLOW_NS1],
            "deny",
            vec!["0|default|sknp:ns1/web-deny|deny|-1"],
        ),
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_reporter(
        &e,
        Reporter::Dst,
        "ns1/web",
        (
            "allow",
            vec![PROFILE_ALLOW_NS1],
            "allow",
            vec!["0|default|sknp:ns1/web-deny|allow|0"],
        ),
    );
}

// ---------------------------------------------------------------------------------
// Views used by the classifier property tests

#[test]
fn evaluate_endpoint_views_and_flow_keys_round_trip() {
    let c = with_pods("");
    let ep = c.endpoint_at(ip("10.0.0.2")).unwrap();
    let f = tcp("10.0.0.1", "10.0.0.2", 80);
    let o = evaluate_endpoint(&c, ep, PolicyType::Ingress, &f, View::Enforced);
    assert_eq!(o.hit_strings(), [PROFILE_ALLOW_NS1]);
    let key = f.key().unwrap();
    assert_eq!(Flow::from_key(&key), f);
    let ping = Flow::new(ip("10.0.0.1"), ip("10.0.0.2"), 1, 8, 0).unwrap();
    assert_eq!(Flow::from_key(&ping.key().unwrap()), ping);
}

#[test]
fn bad_selectors_are_errors_naming_the_field() {
    let r = raw_resources(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: bad, namespace: ns1}
spec:
  ingress: [{action: Allow, source: {selector: "app = 'x'"}}]
"#,
    );
    let err = Cluster::from_resources(&r).unwrap_err().to_string();
    assert!(
        err.starts_with("NetworkPolicy ns1/bad: spec.ingress[0].source.selector: invalid selector"),
        "{err}"
    );
}

#[test]
fn json_report_shape() {
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: block}
spec: {selector: "app == 'web'", ingress: [{action: Deny}]}
"#,
    );
    let e = evaluate(&c, &tcp("10.0.0.1", "10.0.0.2", 80));
    let v: serde_json::Value = serde_json::from_str(&report::to_json(&e)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "verdicts": [
                {"reporter": "src", "endpoint": "ns1/client",
                 "enforced": {"action": "allow", "policies": [PROFILE_ALLOW_NS1]},
                 "pending": {"action": "allow", "policies": [PROFILE_ALLOW_NS1]}},
                {"reporter": "dst", "endpoint": "ns1/web",
                 "enforced": {"action": "allow", "policies": [PROFILE_ALLOW_NS1]},
                 "pending": {"action": "deny", "policies": ["0|default|sgnp:block|deny|0"]}}
            ],
            "final": {"enforced": "allow", "pending": "deny"}
        })
    );
    let table = report::to_table(&e);
    let want = "\
flow 10.0.0.1:40000 -> 10.0.0.2:80 TCP

REPORTER  ENDPOINT    DIRECTION  VIEW      ACTION  POLICIES
src       ns1/client  egress     enforced  allow   0|__PROFILE__|pro:kns.ns1|allow|0
                                 pending   allow   0|__PROFILE__|pro:kns.ns1|allow|0
dst       ns1/web     ingress    enforced  allow   0|__PROFILE__|pro:kns.ns1|allow|0
                                 pending   deny    0|default|sgnp:block|deny|0

final: enforced allow, pending deny (the staged policies change this flow)
";
    assert_eq!(table, want, "\n{table}");
}

#[test]
fn table_lists_every_hit_and_marks_empty_traces() {
    let c = cluster(HOSTS);
    let e = evaluate(&c, &tcp("10.9.9.9", "192.168.0.3", 80));
    let want = "\
flow 10.9.9.9:40000 -> 192.168.0.3:80 TCP

REPORTER  ENDPOINT  DIRECTION  VIEW      ACTION  POLICIES
dst       closed    ingress    enforced  deny    0|__PROFILE__|pro:__NO_MATCH__|deny|0
                               pending   deny    -

final: enforced deny, pending deny
";
    assert_eq!(report::to_table(&e), want);
    let c = with_pods(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pass-all}
spec: {ingress: [{action: Pass}]}
"#,
    );
    let e = evaluate(&c, &tcp("8.8.8.8", "10.0.0.2", 80));
    let want = "\
flow 8.8.8.8:40000 -> 10.0.0.2:80 TCP

REPORTER  ENDPOINT  DIRECTION  VIEW      ACTION  POLICIES
dst       ns1/web   ingress    enforced  allow   0|default|gnp:pass-all|pass|0
                                                 1|__PROFILE__|pro:kns.ns1|allow|0
                               pending   allow   0|default|gnp:pass-all|pass|0
                                                 1|__PROFILE__|pro:kns.ns1|allow|0

final: enforced allow, pending allow
";
    assert_eq!(report::to_table(&e), want);
    let e = evaluate(&c, &tcp("8.8.8.8", "1.1.1.1", 80));
    assert_eq!(
        report::to_table(&e),
        "flow 8.8.8.8:40000 -> 1.1.1.1:80 TCP\n\nneither end is a known endpoint: no policy applies\n\nfinal: enforced allow, pending allow\n"
    );
}

// ---------------------------------------------------------------------------------
// The scoping building blocks, pinned as canonical selector text

fn entity(yaml: &str) -> crate::model::EntityRule {
    serde_saphyr::from_str(yaml).expect("entity rule")
}

#[test]
fn peer_selector_scoping_as_felix_receives_it() {
    use crate::eval::cluster::peer_selector;
    let scoped = |er: &str, ns: Option<&str>| {
        peer_selector(&entity(er), ns)
            .expect("parses")
            .map(|s| s.canonical().to_string())
    };
    // No selector fields: no selector at all (any address), namespaced or not.
    assert_eq!(scoped("{nets: [10.0.0.0/8]}", Some("ns1")), None);
    // Namespaced policy: the namespace term is ANDed in front.
    assert_eq!(
        scoped("{selector: \"app == 'x'\"}", Some("ns1")),
        Some(r#"(projectcalico.org/namespace == "ns1" && app == "x")"#.into())
    );
    // Global policy: as written.
    assert_eq!(
        scoped("{selector: \"app == 'x'\"}", None),
        Some(r#"app == "x""#.into())
    );
    // notSelector alone still scopes a namespaced rule to its namespace.
    assert_eq!(
        scoped("{notSelector: \"app == 'x'\"}", Some("ns1")),
        Some(r#"projectcalico.org/namespace == "ns1""#.into())
    );
    assert_eq!(scoped("{notSelector: \"app == 'x'\"}", None), None);
    // namespaceSelector: pcns. keys; all() and global() rewritten.
    assert_eq!(
        scoped(
            "{namespaceSelector: \"env == 'prod'\", selector: \"app == 'x'\"}",
            Some("ns1")
        ),
        Some(r#"(pcns.env == "prod" && app == "x")"#.into())
    );
    assert_eq!(
        scoped("{namespaceSelector: all()}", None),
        Some("has(projectcalico.org/namespace)".into())
    );
    assert_eq!(
        scoped("{namespaceSelector: global()}", Some("ns1")),
        Some("!has(projectcalico.org/namespace)".into())
    );
    // Service accounts: names and pcsa.-prefixed selector, ANDed before the selector.
    assert_eq!(
        scoped(
            "{serviceAccounts: {names: [b, a], selector: \"team == 't'\"}, selector: \"app == 'x'\"}",
            Some("ns1")
        ),
        Some(
            r#"(projectcalico.org/namespace == "ns1" && ((pcsa.team == "t" && projectcalico.org/serviceaccount in {"a", "b"}) && app == "x"))"#
                .into()
        )
    );
}

#[test]
fn applies_to_selector_as_felix_receives_it() {
    use crate::eval::cluster::applies_to_selector;
    let sel = |kind: Kind, ns: Option<&str>, spec: &str| {
        let spec: crate::model::PolicySpec = serde_saphyr::from_str(spec).expect("spec");
        let key = crate::model::ResourceKey {
            kind,
            namespace: ns.map(str::to_string),
            name: "p".into(),
        };
        applies_to_selector(&key, &spec, ns)
            .expect("parses")
            .canonical()
            .to_string()
    };
    assert_eq!(
        sel(Kind::NetworkPolicy, Some("ns1"), "{}"),
        r#"projectcalico.org/namespace == "ns1""#
    );
    assert_eq!(
        sel(
            Kind::NetworkPolicy,
            Some("ns1"),
            "{selector: \"app == 'x'\", serviceAccountSelector: \"team == 't'\"}"
        ),
        r#"((app == "x" && projectcalico.org/namespace == "ns1") && pcsa.team == "t")"#
    );
    assert_eq!(sel(Kind::GlobalNetworkPolicy, None, "{}"), "all()");
    // Calico rewrites all() in the whole combined text, the policy's own selector too.
    assert_eq!(
        sel(
            Kind::GlobalNetworkPolicy,
            None,
            "{selector: all(), namespaceSelector: all()}"
        ),
        "(has(projectcalico.org/namespace) && has(projectcalico.org/namespace))"
    );
    assert_eq!(
        sel(
            Kind::StagedGlobalNetworkPolicy,
            None,
            "{selector: all(), serviceAccountSelector: \"team == 't'\"}"
        ),
        r#"(has(projectcalico.org/serviceaccount) && pcsa.team == "t")"#
    );
    assert_eq!(
        sel(
            Kind::GlobalNetworkPolicy,
            None,
            "{namespaceSelector: \"env == 'prod'\"}"
        ),
        r#"pcns.env == "prod""#
    );
}
