use super::*;
use crate::persist::NoPersist;

const POLICY: &str = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-7777
spec:
  order: 10
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: UDP
    destination:
      ports: [7777]
"#;

/// Each test that drives the daemon runs once per generation engine, as
/// `tree::NAME` and `identity::NAME`.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod tree {
            $(#[test]
            fn $name() {
                super::$name::<super::Trees>();
            })*
        }
        mod identity {
            $(#[test]
            fn $name() {
                super::$name::<super::Identity>();
            })*
        }
    };
}

both_engines!(
    apply_get_delete_round_trip_and_reapply_changes_nothing,
    a_bad_apply_changes_nothing_and_names_the_problem,
    a_failed_persist_keeps_the_old_generation,
    the_kept_cluster_follows_applies_deletes_and_failed_persists,
    a_reload_deletes_what_the_files_dropped_and_keeps_socket_applies,
    pod_churn_classifies_as_a_fresh_tree_build,
);

fn daemon<E: Engine>() -> Daemon<E> {
    Daemon::new(Store::new(), Box::new(NoPersist)).unwrap()
}

fn apply_get_delete_round_trip_and_reapply_changes_nothing<E: Engine>() {
    let d = daemon::<E>();
    let r = d.apply_text(POLICY, "p.yaml").unwrap();
    assert_eq!(r["created"], 1);
    assert_eq!(r["generation"], 2);
    let line = d.get(1, "gnp", None, None).unwrap();
    let reply: Reply = serde_json::from_str(&line).unwrap();
    let items = reply.result.unwrap()["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    // The document applies back to the identical resource: nothing changes.
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let again = d.apply_text(&list.to_string(), "get").unwrap();
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["unchanged"], 1);
    assert_eq!(d.view().generation, 2);
    let gone = d
        .delete(
            &[KeyRef {
                kind: "globalnetworkpolicy".into(),
                namespace: None,
                name: "deny-7777".into(),
            }],
            &[],
        )
        .unwrap();
    assert_eq!(gone["deleted"], 1);
    assert_eq!(d.view().generation, 3);
    let e = d.get(1, "gnp", Some("deny-7777"), None).unwrap_err();
    assert_eq!(e.code, "not_found");
}

fn a_bad_apply_changes_nothing_and_names_the_problem<E: Engine>() {
    let d = daemon::<E>();
    d.apply_text(POLICY, "p.yaml").unwrap();
    let bad = POLICY
        .replace("name: deny-7777", "name: other")
        .replace("all()", "app ==");
    let e = d
        .apply_text(&format!("{POLICY}\n---\n{bad}"), "bad.yaml")
        .unwrap_err();
    assert_eq!(e.code, "invalid");
    assert!(
        e.problems.iter().any(|p| p.starts_with("bad.yaml:2")),
        "{e:?}"
    );
    assert_eq!(d.view().generation, 2);
    assert_eq!(d.view().counts.values().sum::<usize>(), 1);
    let e = d
        .delete(
            &[KeyRef {
                kind: "tier".into(),
                namespace: None,
                name: "default".into(),
            }],
            &[],
        )
        .unwrap_err();
    assert!(e.message.contains("built-in"), "{e:?}");
    let e = d
        .delete(
            &[KeyRef {
                kind: "np".into(),
                namespace: None,
                name: "nope".into(),
            }],
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code, "not_found");
}

fn a_failed_persist_keeps_the_old_generation<E: Engine>() {
    struct Failing;
    impl Persist for Failing {
        fn commit(&mut self, _: &Store) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }
    let d = Daemon::<E>::new(Store::new(), Box::new(Failing)).unwrap();
    let e = d.apply_text(POLICY, "p.yaml").unwrap_err();
    assert_eq!(e.code, "persist");
    assert!(e.message.contains("disk full"));
    assert_eq!(d.view().generation, 1);
    assert_eq!(d.slot().generation(), 1);
    assert!(d.view().counts.is_empty());
}

/// The writer's kept cluster is the cluster of its store, and the view's documents
/// and counts (kept per change) are its store's (the slow twins).
fn kept_cluster_is_fresh<E: Engine>(d: &Daemon<E>) {
    let w = d.writer.lock().unwrap();
    let fresh = policy::cluster(&w.store).unwrap();
    assert_eq!(format!("{:?}", w.cluster), format!("{fresh:?}"));
    let view = d.view();
    assert_eq!(view.counts, w.store.counts());
    let docs: Vec<(ResourceKey, Arc<str>)> = w
        .store
        .entries()
        .map(|(k, s)| (k.clone(), doc_text(&s.resource)))
        .collect();
    let kept: Vec<(ResourceKey, Arc<str>)> = view
        .docs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(kept, docs);
}

fn the_kept_cluster_follows_applies_deletes_and_failed_persists<E: Engine>() {
    struct FailSecond(usize);
    impl Persist for FailSecond {
        fn commit(&mut self, _: &Store) -> std::io::Result<()> {
            self.0 += 1;
            if self.0 == 2 {
                return Err(std::io::Error::other("disk full"));
            }
            Ok(())
        }
    }
    let d = Daemon::<E>::new(Store::new(), Box::new(FailSecond(0))).unwrap();
    let pod = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: w, namespace: ns1, labels: {app: a}}\nspec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}\n";
    d.apply_text(&format!("{POLICY}\n---\n{pod}"), "p.yaml")
        .unwrap();
    kept_cluster_is_fresh(&d);
    // The second commit fails: the change is refused and the kept cluster is the
    // unchanged store's again.
    let e = d
        .apply_text(&POLICY.replace("7777", "7778"), "p.yaml")
        .unwrap_err();
    assert_eq!(e.code, "persist");
    kept_cluster_is_fresh(&d);
    assert!(format!("{:?}", d.writer.lock().unwrap().cluster).contains("7777"));
    // The engine was brought back too: a pod change after it (which the identity
    // engine takes on its fast path, keeping its trees) classifies as a fresh build.
    let pod2 = pod
        .replace("name: w,", "name: w2,")
        .replace("10.0.0.1/", "10.0.0.2/");
    d.apply_text(&pod2, "p.yaml").unwrap();
    let keys: Vec<dataplane::program::FlowKey> = [7777, 7778]
        .map(|port| {
            dataplane::program::FlowKey::new(
                "192.0.2.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
                17,
                40000,
                port,
            )
            .unwrap()
        })
        .to_vec();
    let store = d.writer.lock().unwrap().store.clone();
    let fresh = Daemon::<Trees>::new(store, Box::new(NoPersist)).unwrap();
    assert_eq!(classified(&d, &keys), classified(&fresh, &keys));
    d.apply_text(&POLICY.replace("7777", "7779"), "p.yaml")
        .unwrap();
    kept_cluster_is_fresh(&d);
    d.delete(
        &[KeyRef {
            kind: "wep".into(),
            namespace: Some("ns1".into()),
            name: "w".into(),
        }],
        &[],
    )
    .unwrap();
    kept_cluster_is_fresh(&d);
    let left: Vec<String> = d
        .writer
        .lock()
        .unwrap()
        .cluster
        .endpoints
        .iter()
        .map(|e| e.key.name.clone())
        .collect();
    assert_eq!(left, ["w2"]);
}

#[test]
fn kinds_parse_like_calicoctl() {
    assert_eq!(parse_kind("networkpolicies").unwrap(), Kind::NetworkPolicy);
    assert_eq!(
        parse_kind("GlobalNetworkPolicy").unwrap(),
        Kind::GlobalNetworkPolicy
    );
    assert_eq!(parse_kind("tiers").unwrap(), Kind::Tier);
    assert_eq!(parse_kind("knp").unwrap(), Kind::KubernetesNetworkPolicy);
    assert_eq!(
        parse_kind("globalnetworksets").unwrap(),
        Kind::GlobalNetworkSet
    );
    assert!(
        parse_kind("pods")
            .unwrap_err()
            .contains("unknown resource kind")
    );
}

fn a_reload_deletes_what_the_files_dropped_and_keeps_socket_applies<E: Engine>() {
    let dir = std::env::temp_dir().join(format!(
        "tiergate-reload-{}-{}",
        E::NAME,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.yaml");
    let d = daemon::<E>();
    std::fs::write(&file, POLICY).unwrap();
    let r = d.reload(std::slice::from_ref(&file)).unwrap();
    assert_eq!(
        (r["created"].as_u64(), r["deleted"].as_u64()),
        (Some(1), Some(0))
    );
    // Through the socket: a policy of its own, under another key.
    d.apply_text(&POLICY.replace("deny-7777", "socket-own"), "s.yaml")
        .unwrap();
    // The files now hold another policy: deny-7777 goes, socket-own stays.
    std::fs::write(&file, POLICY.replace("deny-7777", "deny-8888")).unwrap();
    let r = d.reload(std::slice::from_ref(&file)).unwrap();
    assert_eq!(
        (r["created"].as_u64(), r["deleted"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(d.get(1, "gnp", Some("deny-7777"), None).is_err());
    assert!(d.get(1, "gnp", Some("deny-8888"), None).is_ok());
    assert!(d.get(1, "gnp", Some("socket-own"), None).is_ok());
    // A file set that does not load changes nothing (deletions included).
    std::fs::write(&file, POLICY.replace("all()", "app ==")).unwrap();
    let generation = d.view().generation;
    assert!(d.reload(std::slice::from_ref(&file)).is_err());
    assert_eq!(d.view().generation, generation);
    assert!(d.get(1, "gnp", Some("deny-8888"), None).is_ok());
    // Empty files: everything from them goes, in one generation.
    std::fs::write(&file, "").unwrap();
    let r = d.reload(std::slice::from_ref(&file)).unwrap();
    assert_eq!(r["deleted"], 1, "{r}");
    assert_eq!(d.view().generation, generation + 1);
    assert!(d.get(1, "gnp", Some("deny-8888"), None).is_err());
    assert!(d.get(1, "gnp", Some("socket-own"), None).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_flows_line_is_the_reply_the_envelope_would_write() {
    let e = |seq| {
        Arc::new(FlowEntry {
            seq,
            last_ns: 5,
            src_ip: "10.0.0.1".parse().unwrap(),
            src_port: 1,
            dst_ip: "fd00::2".parse().unwrap(),
            dst_port: 2,
            proto: "udp".into(),
            src_name: "a \"quoted\" name".into(),
            src_namespace: "-".into(),
            dst_name: "d".into(),
            dst_namespace: "ns".into(),
            action: "allow".into(),
            pending_action: "deny".into(),
            generation: 3,
            applied_generation: 2,
            ends: Vec::new(),
            packets_fwd: 1,
            bytes_fwd: 2,
            packets_rev: 3,
            bytes_rev: 4,
            end: Some("closed".into()),
        })
    };
    for items in [vec![], vec![e(1), e(2)]] {
        let refs: Vec<&FlowEntry> = items.iter().map(|e| &**e).collect();
        for more in [false, true] {
            let mut want = Reply::ok(7, json!({ "flows": refs }));
            want.more = more;
            let got = flows_line(7, &items, more);
            assert!(got.ends_with('\n') && got.lines().count() == 1, "{got}");
            let parsed: Value = serde_json::from_str(&got).unwrap();
            let expected: Value = serde_json::from_str(&want.line()).unwrap();
            assert_eq!(parsed, expected);
        }
    }
}

const CHURN_SET: &str = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-from-web}
spec:
  order: 10
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [5432]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: web-egress-80}
spec:
  order: 20
  selector: app == 'web'
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [80]}
"#;

fn pod(name: &str, app: &str, ip: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: {name}, namespace: ns1, labels: {{app: {app}}}}}\nspec: {{orchestrator: k8s, ipNetworks: [{ip}/32]}}\n"
    )
}

/// Per key: each end's endpoint, both verdicts and both traces, as the daemon's
/// current generation classifies and names it.
fn classified<E: Engine>(d: &Daemon<E>, keys: &[dataplane::program::FlowKey]) -> Vec<String> {
    use dataplane::program::{Classify, FlowVerdicts};
    let g = d.current().unwrap();
    assert_eq!(g.number, d.view().generation);
    let c = &g.published.classifier;
    let mut out = vec![FlowVerdicts::default(); keys.len()];
    c.classify(keys, &mut out);
    out.iter()
        .map(|v| {
            [v.egress, v.ingress]
                .iter()
                .map(|end| match end {
                    None => "-".to_string(),
                    Some((e, v)) => format!(
                        "{:?} {:?}/{:?} {:?} {:?}",
                        g.names.endpoint(*e).map(|n| &n.key),
                        v.enforced.verdict,
                        v.pending.verdict,
                        g.names.hit_strings(c.trace(v.enforced.trace)),
                        g.names.hit_strings(c.trace(v.pending.trace)),
                    ),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// Pods with label sets that exist, applied and deleted through the daemon: after
/// each change its generation classifies and names every sampled flow as a fresh tree
/// build of its store does, and the identity engine took its fast path.
fn pod_churn_classifies_as_a_fresh_tree_build<E: Engine>() {
    let d = daemon::<E>();
    let pods = [
        pod("web-1", "web", "10.0.0.1"),
        pod("web-2", "web", "10.0.0.2"),
        pod("db-1", "db", "10.0.1.1"),
        pod("db-2", "db", "10.0.1.2"),
    ];
    d.apply_text(
        &format!("{CHURN_SET}\n---\n{}", pods.join("---\n")),
        "set.yaml",
    )
    .unwrap();
    let addrs = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.1.1",
        "10.0.1.2",
        "10.0.1.3",
        "192.0.2.1",
    ];
    let keys: Vec<dataplane::program::FlowKey> = addrs
        .iter()
        .flat_map(|s| {
            addrs.iter().flat_map(move |t| {
                [80, 5432].map(|port| {
                    dataplane::program::FlowKey::new(
                        s.parse().unwrap(),
                        t.parse().unwrap(),
                        6,
                        40000,
                        port,
                    )
                    .unwrap()
                })
            })
        })
        .collect();
    let wep = |name: &str| KeyRef {
        kind: "wep".into(),
        namespace: Some("ns1".into()),
        name: name.into(),
    };
    let expected_path = if E::NAME == "identity" {
        "fast"
    } else {
        "compiled"
    };
    let mut denied_before = None;
    for step in 0..4 {
        let r = match step {
            0 => d.apply_text(&pod("web-3", "web", "10.0.0.3"), "p.yaml"),
            1 => d.apply_text(&pod("db-3", "db", "10.0.1.3"), "p.yaml"),
            2 => d.delete(&[wep("web-1")], &[]),
            _ => d.delete(&[wep("db-3")], &[]),
        }
        .unwrap();
        assert_eq!(r["changed"], true, "{r}");
        assert_eq!(r["classifier"], E::NAME, "{r}");
        assert_eq!(r["path"], expected_path, "step {step}: {r}");
        kept_cluster_is_fresh(&d);
        let store = d.writer.lock().unwrap().store.clone();
        let fresh = Daemon::<Trees>::new(store, Box::new(NoPersist)).unwrap();
        let (got, want) = (classified(&d, &keys), classified(&fresh, &keys));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "step {step}: {:?}", keys[i]);
        }
        // The changes are seen: the flows the new pod's address takes part in are
        // classified as its label set's, not as an outside address's.
        let denied = got.iter().filter(|s| s.contains("Deny")).count();
        if let Some(before) = denied_before {
            assert_ne!(denied, before, "step {step} changed no verdict");
        }
        denied_before = Some(denied);
    }
}
