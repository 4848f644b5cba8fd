use super::*;
use crate::model::{load_str, parse_str};

fn load(text: &str) -> Vec<Loaded> {
    load_str(text, "s.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn messages(e: StoreErrors) -> Vec<String> {
    e.0.iter().map(ToString::to_string).collect()
}

const TIER: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
";

fn gnp(name: &str, tier: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {{tier: {tier}, selector: all()}}\n"
    )
}

fn key(kind: Kind, ns: Option<&str>, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: ns.map(str::to_string),
        name: name.to_string(),
    }
}

#[test]
fn a_new_store_has_the_builtin_tiers() {
    let s = Store::new();
    assert_eq!(s.generation(), 0);
    assert!(s.is_empty());
    assert_eq!(s.len(), 3);
    let tiers: Vec<(&str, Option<f64>, TierDefaultAction)> = s
        .tiers_in_order()
        .iter()
        .map(|t| (t.name, t.order, t.default_action))
        .collect();
    assert_eq!(
        tiers,
        vec![
            ("kube-admin", Some(1000.0), TierDefaultAction::Pass),
            ("default", Some(1_000_000.0), TierDefaultAction::Deny),
            ("kube-baseline", Some(10_000_000.0), TierDefaultAction::Pass),
        ]
    );
    assert!(s.counts().is_empty());
}

#[test]
fn apply_creates_updates_and_counts_generations() {
    let mut s = Store::new();
    let sum = s.apply(load(&gnp("a", "default"))).unwrap();
    assert_eq!(
        sum,
        ApplySummary {
            created: 1,
            updated: 0,
            unchanged: 0,
            generation: 1
        }
    );
    let sum = s.apply(load(&gnp("a", "default"))).unwrap();
    assert_eq!((sum.unchanged, sum.generation), (1, 1));
    let sum = s
        .apply(load(&gnp("a", "default").replace("all()", "has(x)")))
        .unwrap();
    assert_eq!((sum.updated, sum.generation), (1, 2));
    let stored = s.entry(&key(Kind::GlobalNetworkPolicy, None, "a")).unwrap();
    assert_eq!(stored.origin.as_ref().unwrap().to_string(), "s.yaml:1");
}

#[test]
fn policies_need_an_existing_tier() {
    let mut s = Store::new();
    let e = s.apply(load(&gnp("a", "security"))).unwrap_err();
    assert_eq!(
        messages(e),
        vec![
            "s.yaml:1: spec.tier: tier \"security\" does not exist: apply a Tier named \"security\" first (or in the same apply)"
        ]
    );
    assert_eq!((s.generation(), s.len()), (0, 3), "nothing applied");
    // The tier may come in the same apply, even after the policy.
    let text = format!("{}---\n{TIER}", gnp("a", "security"));
    assert_eq!(s.apply(load(&text)).unwrap().created, 2);
    assert_eq!(s.tier("security").unwrap().order, Some(100.0));
}

#[test]
fn apply_is_all_or_nothing() {
    let mut s = Store::new();
    // parse_str skips validation, so the store must catch the bad name itself.
    let mut items = parse_str(&format!("{TIER}---\n{}", gnp("Bad", "security")), "s.yaml").unwrap();
    items.extend(load(&gnp("ok", "default")));
    let e = s.apply(items).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(
        e.0[0]
            .to_string()
            .starts_with("s.yaml:2: metadata.name: invalid name \"Bad\""),
        "{e}"
    );
    assert_eq!((s.generation(), s.len()), (0, 3));
}

#[test]
fn duplicates_in_one_apply_are_refused() {
    let mut s = Store::new();
    let mut items = load(&gnp("a", "default"));
    items.extend(load(&gnp("a", "default")));
    assert_eq!(
        messages(s.apply(items).unwrap_err()),
        vec!["s.yaml:1: metadata.name: GlobalNetworkPolicy a is applied twice (first at s.yaml:1)"]
    );
}

#[test]
fn staged_and_enforced_policies_coexist() {
    let mut s = Store::new();
    let text = format!(
        "{}---\n{}",
        gnp("a", "default"),
        gnp("a", "default").replace("GlobalNetworkPolicy", "StagedGlobalNetworkPolicy")
    );
    s.apply(load(&text)).unwrap();
    let kinds: Vec<Kind> = s.calico_policies().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        vec![Kind::GlobalNetworkPolicy, Kind::StagedGlobalNetworkPolicy]
    );
}

#[test]
fn delete_rules() {
    let mut s = Store::new();
    let text = format!(
        "{TIER}---\n{}---\n{}",
        gnp("a", "security"),
        gnp("b", "default")
    );
    s.apply(load(&text)).unwrap();
    let g = s.generation();
    let tier = key(Kind::Tier, None, "security");
    let a = key(Kind::GlobalNetworkPolicy, None, "a");
    assert_eq!(
        messages(s.delete(std::slice::from_ref(&tier)).unwrap_err()),
        vec![
            "Tier security: cannot delete a non-empty tier: 1 policies are in it (first: GlobalNetworkPolicy a)"
        ]
    );
    assert_eq!(
        messages(
            s.delete(&[
                key(Kind::Tier, None, "default"),
                key(Kind::NetworkPolicy, Some("ns"), "zz"),
                a.clone(),
            ])
            .unwrap_err()
        ),
        vec![
            "NetworkPolicy ns/zz: not found",
            "Tier default: cannot delete the built-in tier \"default\"",
            "Tier default: cannot delete a non-empty tier: 1 policies are in it (first: GlobalNetworkPolicy b)",
        ]
    );
    assert_eq!(s.generation(), g, "failed deletes change nothing");
    assert!(s.get(&a).is_some());
    // The tier goes together with its policies.
    assert_eq!(s.delete(&[tier.clone(), a.clone()]).unwrap(), 2);
    assert_eq!(s.generation(), g + 1);
    assert!(s.get(&a).is_none() && s.tier("security").is_none());
}

#[test]
fn builtin_tiers_may_be_reapplied_only_as_they_are() {
    let mut s = Store::new();
    s.apply(load(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {order: 1000000}\n",
    ))
    .unwrap();
    assert_eq!(
        s.tier("default").unwrap().default_action,
        TierDefaultAction::Deny
    );
    assert!(!s.is_empty());
}

#[test]
fn accessors_by_kind() {
    let mut s = Store::new();
    s.apply(load(
        "apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: a, namespace: prod}
spec: {nets: [10.0.0.0/8]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: b}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w, namespace: prod}
spec: {ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h}
spec: {node: n, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: p}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: prod}
spec: {podSelector: {}}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: k, namespace: prod}
spec: {podSelector: {}}
",
    ))
    .unwrap();
    assert_eq!(s.namespaces().count(), 1);
    assert_eq!(
        s.network_sets().map(|(k, _)| k).collect::<Vec<_>>(),
        vec![Kind::NetworkSet, Kind::GlobalNetworkSet]
    );
    assert_eq!(s.workload_endpoints().count(), 1);
    assert_eq!(s.host_endpoints().count(), 1);
    assert_eq!(s.profiles().count(), 1);
    assert_eq!(
        s.k8s_policies().map(|(k, _)| k).collect::<Vec<_>>(),
        vec![
            Kind::StagedKubernetesNetworkPolicy,
            Kind::KubernetesNetworkPolicy
        ]
    );
    assert_eq!(s.counts().values().sum::<usize>(), 8);
}

#[test]
fn tier_order_puts_unordered_tiers_last_and_breaks_ties_by_name() {
    let mut s = Store::new();
    s.apply(load(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: zz}\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: b}\nspec: {order: 1000}\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: aa}\n",
    ))
    .unwrap();
    let names: Vec<&str> = s.tiers_in_order().iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        vec!["b", "kube-admin", "default", "kube-baseline", "aa", "zz"]
    );
}

/// What the loader hands over (defaulted and validated) is stored exactly as a full
/// `apply` would store it, with the same refusals (a missing tier), by `apply_validated`.
#[test]
fn loaded_resources_store_the_same_without_the_second_validation() {
    let sets = [
        format!("{TIER}---\n{}", gnp("a", "security")),
        format!("{}---\n{}", gnp("a", "security"), gnp("b", "default")),
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [80]}\n---\napiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: s, namespace: x}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k}\nspec: {podSelector: {}}\n".to_string(),
    ];
    for text in &sets {
        let mut full = Store::new();
        let mut trusted = Store::new();
        let a = full.apply(load(text)).map_err(messages);
        let b = trusted.apply_validated(load(text)).map_err(messages);
        assert_eq!(a, b, "{text}");
        assert_eq!(full.objects, trusted.objects, "{text}");
    }
    // Every example policy set, too.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        let Ok(loaded) = crate::model::load_path(&path) else {
            continue;
        };
        let mut full = Store::new();
        let mut trusted = Store::new();
        let a = full.apply(loaded.clone()).map_err(messages);
        let b = trusted.apply_validated(loaded).map_err(messages);
        assert_eq!(a, b, "{}", path.display());
        assert_eq!(full.objects, trusted.objects, "{}", path.display());
    }
}

/// `check_apply` of the outlines of loaded resources finds what `apply_validated` of the
/// resources finds (keys applied twice in input order, missing tiers in key order), or
/// the counts of the store it would give, on a fresh store and on one holding a tier.
#[test]
fn check_apply_agrees_with_apply_validated() {
    let np = |name: &str, tier: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: n}}\nspec: {{tier: {tier}}}\n"
        )
    };
    let batches = [
        vec![format!(
            "{}---\n{}",
            gnp("b", "security"),
            gnp("a", "missing")
        )],
        vec![
            gnp("z", "security"),
            TIER.to_string(),
            np("x", "other"),
            np("y", "default"),
        ],
        vec![
            gnp("a", "default"),
            gnp("a", "default"),
            TIER.to_string(),
            gnp("a", "security"),
        ],
        vec![TIER.to_string(), gnp("a", "security"), TIER.to_string()],
    ];
    for base in ["", TIER] {
        for batch in &batches {
            let mut store = Store::new();
            if !base.is_empty() {
                store.apply(load(base)).expect("base");
            }
            let loaded: Vec<Loaded> = batch
                .iter()
                .enumerate()
                .flat_map(|(i, text)| load_str(text, &format!("b{i}.yaml")).expect("loads"))
                .collect();
            let outlines = loaded
                .iter()
                .map(|l| Outline::of(&l.resource, l.origin.clone()))
                .collect();
            let checked = store.check_apply(outlines).map_err(messages);
            let mut applied = store.clone();
            let result = applied
                .apply_validated(loaded)
                .map(|_| applied.counts())
                .map_err(messages);
            assert_eq!(checked, result, "{base} {batch:?}");
        }
    }
}

/// `Outline::key_and_tier` moves out what `Outline::of` copies.
#[test]
fn outline_key_and_tier_of_an_owned_resource() {
    let text = format!(
        "{TIER}---\n{}---\n{}---\napiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {{name: s, namespace: x}}\nspec: {{tier: security}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: k}}\nspec: {{podSelector: {{}}}}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {{name: n}}\n",
        gnp("a", "security"),
        gnp("b", "")
    );
    for l in load(&text) {
        let outline = Outline::of(&l.resource, l.origin.clone());
        assert_eq!(
            Outline::key_and_tier(l.resource),
            (outline.key, outline.tier)
        );
    }
}
