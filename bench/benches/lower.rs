//! Criterion: lowering a policy store to rule programs (`control::lower`), and lowering
//! plus compiling the decision trees — the work of one policy generation.
//!
//! Synthetic clusters: pods spread over 21 namespaces with `app` (8 values) and `shard`
//! (13 values) labels and one named port each; namespaced policies (half of them staged)
//! select an `app` and allow or deny from another `app` minus a `shard`.
//! - `typical`: numeric ports only;
//! - `named`: every rule also uses `ports: [80, http]` and `notPorts: [http]` or
//!   `[22]`, so each rule resolves named ports over every pod.

use std::collections::BTreeMap;

use control::eval::Cluster;
use control::lower::lower;
use control::model::{
    EndpointPort, Net, Object, ObjectMeta, PolicySpec, Protocol, Resource, Rule,
    WorkloadEndpointSpec,
};
use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::classifier::{BuildConfig, Classifier};

const APPS: [&str; 8] = ["web", "db", "api", "cache", "queue", "auth", "log", "mon"];

fn cluster(pods: usize, policies: usize, named: bool) -> Cluster {
    let mut rs = Vec::new();
    for i in 0..pods {
        let labels = BTreeMap::from([
            ("app".to_string(), APPS[i % APPS.len()].to_string()),
            ("shard".to_string(), format!("s{}", i % 13)),
        ]);
        let addr = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
        rs.push(Resource::WorkloadEndpoint(Object {
            metadata: ObjectMeta {
                name: format!("pod{i}"),
                namespace: Some(format!("ns{}", i % 21)),
                labels,
                ..ObjectMeta::default()
            },
            spec: WorkloadEndpointSpec {
                orchestrator: "k8s".into(),
                ip_networks: vec![Net::parse(&addr).expect("address")],
                ports: vec![EndpointPort {
                    name: "http".into(),
                    protocol: Protocol(6),
                    port: 8000 + (i % 7) as u16,
                    host_port: None,
                    host_ip: None,
                }],
                ..WorkloadEndpointSpec::default()
            },
        }));
    }
    for j in 0..policies {
        let rule = |k: usize| -> Rule {
            let destination = if named {
                serde_json::json!({"ports": [80, "http"], "notPorts": [if k.is_multiple_of(2) { "http" } else { "22" }]})
            } else {
                serde_json::json!({"ports": [80 + k as u16, "8000:8010"]})
            };
            serde_json::from_value(serde_json::json!({
                "action": if k.is_multiple_of(3) { "Deny" } else { "Allow" },
                "protocol": "TCP",
                "source": {
                    "selector": format!("app == '{}'", APPS[(j + k) % 8]),
                    "notSelector": format!("shard == 's{}'", k % 13),
                },
                "destination": destination,
            }))
            .expect("rule")
        };
        let spec = PolicySpec {
            order: Some(j as f64),
            selector: Some(format!("app == '{}'", APPS[j % 8])),
            ingress: (0..4).map(rule).collect(),
            egress: (0..2).map(rule).collect(),
            ..PolicySpec::default()
        };
        let metadata = ObjectMeta {
            name: format!("p{j}"),
            namespace: Some(format!("ns{}", j % 21)),
            ..ObjectMeta::default()
        };
        rs.push(if j.is_multiple_of(2) {
            Resource::NetworkPolicy(Object { metadata, spec })
        } else {
            Resource::StagedNetworkPolicy(Object { metadata, spec })
        });
    }
    Cluster::from_resources(&rs).expect("cluster")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("lower");
    g.sample_size(10);
    for (name, pods, policies, named) in [
        ("typical_1000pods_50pol", 1000, 50, false),
        ("typical_5000pods_200pol", 5000, 200, false),
        ("named_1000pods_50pol", 1000, 50, true),
        ("named_5000pods_200pol", 5000, 200, true),
    ] {
        let cl = cluster(pods, policies, named);
        let l = lower(&cl).expect("lowers");
        let rules = l.set.rules().count();
        eprintln!(
            "{name}: {} programs, {rules} rules, {} endpoint bindings",
            l.set.programs.len(),
            l.set.endpoints.len()
        );
        g.bench_function(format!("{name}/lower"), |b| {
            b.iter(|| lower(&cl).expect("lowers"))
        });
        g.bench_function(format!("{name}/lower+build"), |b| {
            b.iter(|| {
                let l = lower(&cl).expect("lowers");
                Classifier::build(&l.set, &BuildConfig::default()).expect("builds")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
