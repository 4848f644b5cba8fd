//! `Cluster::update` (normalising only what changed) against `Cluster::from_resources`
//! of the whole store, after random sequences of applies and deletes.

use proptest::prelude::*;

use crate::cluster::Cluster;
use crate::model::{Kind, ResourceKey, load_str};
use crate::store::Store;

/// One resource of a small universe, as YAML: `(family, index, variant)`.
fn resource(family: u8, i: u8, v: u8) -> String {
    let ns = ["a", "b"][usize::from(i % 2)];
    let tier = ["default", "t0", "t1"][usize::from(v % 3)];
    let app = ["web", "db", "api"][usize::from(v % 3)];
    match family % 11 {
        0 => format!(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: t{}}}\nspec: {{order: {}}}\n",
            i % 2,
            u32::from(v) * 10
        ),
        1 => format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g{}}}\nspec:\n  tier: {tier}\n  order: {}\n  selector: app == '{app}'\n  ingress:\n  - action: Allow\n    source: {{selector: role == 'r{}', namespaceSelector: team == 'x'}}\n",
            i % 4,
            v % 5,
            v % 2
        ),
        2 => format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: n{}, namespace: {ns}}}\nspec:\n  selector: app == '{app}'\n  egress:\n  - action: Deny\n    protocol: TCP\n    destination: {{ports: [{}], nets: [10.{}.0.0/16]}}\n",
            i % 3,
            80 + u16::from(v),
            v
        ),
        3 if v.is_multiple_of(3) => format!(
            "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {{name: g{}}}\nspec: {{stagedAction: Delete}}\n",
            i % 2
        ),
        3 => format!(
            "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {{name: g{}}}\nspec:\n  selector: all()\n  ingress: [{{action: Deny}}]\n",
            i % 2
        ),
        4 => format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: k{}, namespace: {ns}}}\nspec: {{podSelector: {{matchLabels: {{app: {app}}}}}, ingress: [{{}}]}}\n",
            i % 2
        ),
        5 => format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: {}}}}}\n",
            ["x", "y"][usize::from(v % 2)]
        ),
        6 => format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: w{}, namespace: {ns}, labels: {{app: {app}}}}}\nspec: {{orchestrator: k8s, {}ipNetworks: [10.0.{i}.{v}/32], ports: [{{name: http, port: {}, protocol: TCP}}]}}\n",
            i % 4,
            if v.is_multiple_of(2) {
                "serviceAccountName: sa0, "
            } else {
                ""
            },
            8000 + u16::from(v)
        ),
        7 => format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h{}, labels: {{role: r{}}}}}\nspec: {{node: n1, expectedIPs: [192.168.0.{v}]}}\n",
            i % 2,
            v % 2
        ),
        8 => format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {{name: s{}, namespace: {ns}, labels: {{role: r{}}}}}\nspec: {{nets: [172.16.{v}.0/24]}}\n",
            i % 2,
            v % 2
        ),
        9 => format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: gs{}, labels: {{role: r{}}}}}\nspec: {{nets: [172.17.{v}.0/24]}}\n",
            i % 2,
            v % 2
        ),
        _ => format!(
            "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: {}}}\nspec:\n  labelsToApply: {{env: e{v}}}\n  ingress: [{{action: Allow, source: {{selector: app == '{app}'}}}}]\n",
            ["kns.a", "pr0"][usize::from(i % 2)]
        ),
    }
}

#[derive(Clone, Debug)]
enum Change {
    Apply(Vec<(u8, u8, u8)>),
    Delete(Vec<usize>),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => prop::collection::vec((0u8..11, 0u8..4, 0u8..6), 1..5).prop_map(Change::Apply),
        1 => prop::collection::vec(0usize..64, 1..3).prop_map(Change::Delete),
    ]
}

fn same(a: &Cluster, b: &Cluster) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn update_equals_a_fresh_cluster(changes in prop::collection::vec(change(), 1..12)) {
        let mut store = Store::new();
        let mut cluster = Cluster::from_resources(store.resources()).unwrap();
        for c in changes {
            let changed: Vec<ResourceKey> = match c {
                Change::Apply(items) => {
                    let text: Vec<String> =
                        items.iter().map(|(f, i, v)| resource(*f, *i, *v)).collect();
                    let loaded = match load_str(&text.join("---\n"), "p.yaml") {
                        Ok(l) => l,
                        // The same key twice in one apply: refused, nothing changes.
                        Err(e) if e.to_string().contains("defined twice") => continue,
                        Err(e) => panic!("{e}\n{}", text.join("---\n")),
                    };
                    // A twice-applied key or a missing tier: refused, nothing changes.
                    let before = store.clone();
                    match store.apply(loaded) {
                        Ok(_) => before.changed_keys(&store),
                        Err(_) => continue,
                    }
                }
                Change::Delete(picks) => {
                    let keys: Vec<ResourceKey> = store
                        .entries()
                        .filter(|(k, s)| s.origin.is_some() || k.kind != Kind::Tier)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if keys.is_empty() {
                        continue;
                    }
                    let doomed: Vec<ResourceKey> =
                        picks.iter().map(|p| keys[p % keys.len()].clone()).collect();
                    match store.delete(&doomed) {
                        Ok(_) => doomed,
                        Err(_) => continue,
                    }
                }
            };
            cluster.update(&store, &changed).unwrap();
            let fresh = Cluster::from_resources(store.resources()).unwrap();
            prop_assert!(same(&cluster, &fresh), "after {changed:?}:\nupdated {cluster:#?}\nfresh {fresh:#?}");
        }
    }
}

#[test]
fn an_unchanged_key_list_changes_nothing_and_a_deleted_tier_goes() {
    let mut store = Store::new();
    let loaded = load_str(
        &[resource(0, 0, 1), resource(1, 0, 1)].join("---\n"),
        "p.yaml",
    )
    .unwrap();
    let before = store.clone();
    store.apply(loaded).unwrap();
    let changed = before.changed_keys(&store);
    assert_eq!(changed.len(), 2);
    let mut c = Cluster::from_resources(Store::new().resources()).unwrap();
    c.update(&store, &changed).unwrap();
    assert!(c.tiers.contains_key("t0"));
    assert_eq!(c.policies.len(), 1);
    let before = format!("{c:?}");
    c.update(&store, &[]).unwrap();
    assert_eq!(format!("{c:?}"), before);
    store.delete(&changed).unwrap();
    c.update(&store, &changed).unwrap();
    assert!(!c.tiers.contains_key("t0"));
    assert!(c.policies.is_empty());
    assert!(same(
        &c,
        &Cluster::from_resources(store.resources()).unwrap()
    ));
}

/// A workload endpoint change takes the endpoint patch exactly when the implicit
/// profiles stay as they are, and the result is a fresh normalisation either way.
#[test]
fn workload_changes_patch_endpoints_only_when_the_profiles_stay() {
    let wep = |name: &str, ns: &str, sa: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}\nspec: {{orchestrator: k8s, {sa}ipNetworks: [10.0.0.1/32]}}\n"
        )
    };
    let key = |name: &str, ns: &str| ResourceKey {
        kind: Kind::WorkloadEndpoint,
        namespace: Some(ns.to_string()),
        name: name.to_string(),
    };
    let mut store = Store::new();
    let mut cluster = Cluster::from_resources(store.resources()).unwrap();
    // (change, whether the patch applies)
    let steps: Vec<(Result<String, Vec<ResourceKey>>, bool)> = vec![
        // A first endpoint in a namespace: a new `kns.a` profile.
        (Ok(wep("w0", "a", "")), false),
        // A second one: `kns.a` exists.
        (Ok(wep("w1", "a", "")), true),
        // Relabelled (replaced): still there.
        (Ok(wep("w1", "a", "").replace("app: web", "app: db")), true),
        // A service account nobody had: a new `ksa.a.sa0`.
        (Ok(wep("w2", "a", "serviceAccountName: sa0, ")), false),
        (Ok(wep("w3", "a", "serviceAccountName: sa0, ")), true),
        // One of two endpoints with sa0 goes: `ksa.a.sa0` stays.
        (Err(vec![key("w2", "a")]), true),
        // The last endpoint with sa0 goes: `ksa.a.sa0` goes.
        (Err(vec![key("w3", "a")]), false),
        // One of two endpoints of the namespace goes: `kns.a` stays.
        (Err(vec![key("w0", "a")]), true),
        // The last one: `kns.a` goes.
        (Err(vec![key("w1", "a")]), false),
        // With a Namespace resource, the namespace profile outlives its endpoints.
        (
            Ok("apiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {team: x}}\n".into()),
            false,
        ),
        (Ok(wep("w0", "b", "")), true),
        (Err(vec![key("w0", "b")]), true),
    ];
    for (i, (change, patched)) in steps.into_iter().enumerate() {
        let before = store.clone();
        match change {
            Ok(text) => {
                store.apply(load_str(&text, "p.yaml").unwrap()).unwrap();
            }
            Err(keys) => {
                store.delete(&keys).unwrap();
            }
        }
        let changed = before.changed_keys(&store);
        let mut keys: Vec<&ResourceKey> = changed.iter().collect();
        keys.sort();
        let all_workloads = keys.iter().all(|k| k.kind == Kind::WorkloadEndpoint);
        assert_eq!(
            all_workloads && cluster.workload_patch(&store, &keys).is_some(),
            patched,
            "step {i}: {changed:?}"
        );
        cluster.update(&store, &changed).unwrap();
        let fresh = Cluster::from_resources(store.resources()).unwrap();
        assert!(same(&cluster, &fresh), "step {i}: {changed:?}");
    }
}
