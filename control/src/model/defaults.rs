//! Calico defaulting, applied to every loaded resource before validation
//! (as libcalico-go's clients do: `defaults.Default`, then `validator.Validate`).
//!
//! Promises, per CALICO_SEMANTICS §1 and §3.3 (api/pkg/defaults/networkpolicy.go):
//! - Calico policy kinds: empty `tier` becomes `default`; empty `types` is inferred from
//!   the rules (no egress rules ⇒ `[Ingress]`, even with no ingress rules; only egress ⇒
//!   `[Egress]`; both ⇒ `[Ingress, Egress]`); the label `projectcalico.org/tier=<tier>` is
//!   stamped. A `stagedAction: Delete` policy keeps `types` empty (libcalico-go clears it
//!   after defaulting so the empty-spec check can hold).
//! - Staged kinds: absent `stagedAction` becomes `Set` (the CRD default).
//! - `networking.k8s.io/v1` NetworkPolicy: absent `policyTypes` becomes `[Ingress]`, plus
//!   `Egress` when there are egress rules (the Kubernetes API server's defaulting).
//!   StagedKubernetesNetworkPolicy is a CRD that nothing defaults: its absent
//!   `policyTypes` stays absent, and the k8s→Calico conversion later treats it as
//!   `[Ingress]` even when egress rules exist (conversion.go `K8sNetworkPolicyToCalico`).
//! - Namespaced kinds without a namespace get `default` (as kubectl/calicoctl do).
//! - Tiers: absent `defaultAction` becomes `Deny` (the CRD default).
//! - `order` is never defaulted: `None` means "after every ordered policy/tier".
//!
//! Defaulting is idempotent.

use super::types::{
    K8sPolicySpec, Object, PolicySpec, PolicyType, Resource, StagedAction, TierDefaultAction,
};

/// The tier a policy belongs to when `tier` is empty.
pub const DEFAULT_TIER: &str = "default";
/// The namespace of namespaced resources that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The label Calico stamps on policies with their tier's name.
pub const TIER_LABEL: &str = "projectcalico.org/tier";

/// Applies Calico defaulting to `resource` in place.
pub fn apply(resource: &mut Resource) {
    let kind = resource.kind();
    match resource {
        Resource::NetworkPolicy(o)
        | Resource::GlobalNetworkPolicy(o)
        | Resource::StagedNetworkPolicy(o)
        | Resource::StagedGlobalNetworkPolicy(o) => {
            calico_policy(o, kind.is_staged());
        }
        Resource::KubernetesNetworkPolicy(o) => k8s_policy_types(&mut o.spec),
        Resource::StagedKubernetesNetworkPolicy(o) => {
            o.spec.staged_action.get_or_insert(StagedAction::Set);
        }
        Resource::Tier(o) => {
            o.spec.default_action.get_or_insert(TierDefaultAction::Deny);
        }
        _ => {}
    }
    if kind.is_namespaced() {
        let meta = match resource {
            Resource::NetworkPolicy(o) | Resource::StagedNetworkPolicy(o) => &mut o.metadata,
            Resource::KubernetesNetworkPolicy(o) | Resource::StagedKubernetesNetworkPolicy(o) => {
                &mut o.metadata
            }
            Resource::NetworkSet(o) => &mut o.metadata,
            Resource::WorkloadEndpoint(o) => &mut o.metadata,
            _ => return,
        };
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
        }
    }
}

fn calico_policy(o: &mut Object<PolicySpec>, staged: bool) {
    let spec = &mut o.spec;
    if spec.tier.as_deref().is_none_or(str::is_empty) {
        spec.tier = Some(DEFAULT_TIER.to_string());
    }
    if staged {
        spec.staged_action.get_or_insert(StagedAction::Set);
    }
    if spec.staged_action == Some(StagedAction::Delete) {
        spec.types = None;
    } else if spec.types.as_ref().is_none_or(Vec::is_empty) {
        spec.types = Some(inferred_types(
            !spec.ingress.is_empty(),
            !spec.egress.is_empty(),
        ));
    }
    let tier = spec.tier.clone().unwrap_or_default();
    o.metadata.labels.insert(TIER_LABEL.to_string(), tier);
}

fn k8s_policy_types(spec: &mut K8sPolicySpec) {
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec![PolicyType::Ingress];
        if !spec.egress.is_empty() {
            types.push(PolicyType::Egress);
        }
        spec.policy_types = Some(types);
    }
}

/// The `types` Calico infers for a policy that names none.
pub fn inferred_types(has_ingress: bool, has_egress: bool) -> Vec<PolicyType> {
    match (has_ingress, has_egress) {
        (_, false) => vec![PolicyType::Ingress],
        (false, true) => vec![PolicyType::Egress],
        (true, true) => vec![PolicyType::Ingress, PolicyType::Egress],
    }
}

/// The tier of a Calico policy spec: its `tier`, or `default` when empty.
pub fn tier_of(spec: &PolicySpec) -> &str {
    match spec.tier.as_deref() {
        None | Some("") => DEFAULT_TIER,
        Some(t) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::{ObjectMeta, Rule, RuleAction};

    fn rule() -> Rule {
        Rule {
            action: RuleAction::Allow,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: Default::default(),
            destination: Default::default(),
            http: None,
            metadata: None,
        }
    }

    fn np(ingress: usize, egress: usize) -> Resource {
        Resource::NetworkPolicy(Object {
            metadata: ObjectMeta {
                name: "p".into(),
                ..Default::default()
            },
            spec: PolicySpec {
                ingress: vec![rule(); ingress],
                egress: vec![rule(); egress],
                ..Default::default()
            },
        })
    }

    fn spec(r: &Resource) -> &PolicySpec {
        match r {
            Resource::NetworkPolicy(o)
            | Resource::GlobalNetworkPolicy(o)
            | Resource::StagedNetworkPolicy(o)
            | Resource::StagedGlobalNetworkPolicy(o) => &o.spec,
            _ => panic!("not a calico policy"),
        }
    }

    #[test]
    fn types_are_inferred_from_rules() {
        use PolicyType::*;
        for (i, e, want) in [
            (0, 0, vec![Ingress]),
            (2, 0, vec![Ingress]),
            (0, 1, vec![Egress]),
            (1, 1, vec![Ingress, Egress]),
        ] {
            let mut r = np(i, e);
            apply(&mut r);
            assert_eq!(
                spec(&r).types.as_deref(),
                Some(&want[..]),
                "{i} ingress, {e} egress"
            );
        }
    }

    #[test]
    fn explicit_types_are_kept() {
        let mut r = np(1, 0);
        if let Resource::NetworkPolicy(o) = &mut r {
            o.spec.types = Some(vec![PolicyType::Egress]);
        }
        apply(&mut r);
        assert_eq!(spec(&r).types.as_deref(), Some(&[PolicyType::Egress][..]));
    }

    #[test]
    fn tier_namespace_and_label_are_defaulted() {
        let mut r = np(0, 0);
        apply(&mut r);
        assert_eq!(spec(&r).tier.as_deref(), Some("default"));
        assert_eq!(r.metadata().namespace.as_deref(), Some("default"));
        assert_eq!(
            r.metadata().labels.get(TIER_LABEL).map(String::as_str),
            Some("default")
        );
        assert_eq!(spec(&r).order, None);
        assert_eq!(spec(&r).staged_action, None);
    }

    #[test]
    fn tier_label_follows_the_tier_and_overrides_a_wrong_one() {
        let mut r = np(0, 0);
        if let Resource::NetworkPolicy(o) = &mut r {
            o.spec.tier = Some("security".into());
            o.metadata.labels.insert(TIER_LABEL.into(), "other".into());
        }
        apply(&mut r);
        assert_eq!(
            r.metadata().labels.get(TIER_LABEL).map(String::as_str),
            Some("security")
        );
    }

    #[test]
    fn staged_delete_keeps_types_empty_and_staged_action_defaults_to_set() {
        let mut del = Resource::StagedNetworkPolicy(Object {
            metadata: ObjectMeta::default(),
            spec: PolicySpec {
                staged_action: Some(StagedAction::Delete),
                types: Some(vec![PolicyType::Ingress]),
                ..Default::default()
            },
        });
        apply(&mut del);
        assert_eq!(spec(&del).types, None);
        let mut set = Resource::StagedGlobalNetworkPolicy(Object {
            metadata: ObjectMeta::default(),
            spec: PolicySpec::default(),
        });
        apply(&mut set);
        assert_eq!(spec(&set).staged_action, Some(StagedAction::Set));
        assert_eq!(
            set.metadata().namespace,
            None,
            "global kinds get no namespace"
        );
    }

    #[test]
    fn k8s_policy_types_default() {
        let mut r = Resource::KubernetesNetworkPolicy(Object {
            metadata: ObjectMeta::default(),
            spec: K8sPolicySpec {
                egress: vec![Default::default()],
                ..Default::default()
            },
        });
        apply(&mut r);
        let Resource::KubernetesNetworkPolicy(o) = &r else {
            unreachable!()
        };
        assert_eq!(
            o.spec.policy_types.as_deref(),
            Some(&[PolicyType::Ingress, PolicyType::Egress][..])
        );
        // The staged kind is a CRD nothing defaults: policyTypes stays absent.
        let mut r = Resource::StagedKubernetesNetworkPolicy(Object {
            metadata: ObjectMeta::default(),
            spec: K8sPolicySpec {
                egress: vec![Default::default()],
                ..Default::default()
            },
        });
        apply(&mut r);
        let Resource::StagedKubernetesNetworkPolicy(o) = &r else {
            unreachable!()
        };
        assert_eq!(o.spec.policy_types, None);
        assert_eq!(o.spec.staged_action, Some(StagedAction::Set));
    }

    #[test]
    fn defaulting_is_idempotent() {
        let mut once = np(1, 1);
        apply(&mut once);
        let mut twice = once.clone();
        apply(&mut twice);
        assert_eq!(once, twice);
    }
}
