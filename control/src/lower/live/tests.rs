//! The live generation against a fresh full build and the reference evaluator, after
//! random sequences of endpoint changes.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::eval;
use crate::lower::lower;
use crate::lower::proptests::store_and_flows;
use dataplane::program::FlowKey;

/// Addresses new endpoints get: inside the generator's endpoint and network-set
/// ranges, outside them, and one an endpoint already has.
/// Some lie inside the generator's rule CIDRs (`10.0.0.0/29`, `10.0.0.4/30`,
/// `192.168.0.0/16`), where they are in an exemplar's zone or a spare's.
const NEW_V4: [&str; 9] = [
    "10.0.0.20",
    "10.0.0.21",
    "10.0.2.50",
    "192.168.0.9",
    "10.0.0.8",
    "172.16.0.5",
    "10.0.0.3",
    "10.0.0.6",
    "10.0.0.0",
];
const NEW_V6: [&str; 4] = ["fd00::20", "fd01::5", "fd00::4", "fd02::5"];

/// Addresses a build gives its spare endpoints outside every named prefix (unbound
/// again at once): flows to and from them must classify as from an address no
/// endpoint has. Spares inside rule CIDRs are elsewhere: [`spare_hosts`].
const SPARE: [&str; 4] = ["240.0.0.1", "240.0.0.2", "100::1", "100::2"];

/// The host addresses a build of `c` gives its spares.
fn spare_hosts(c: &Cluster) -> Vec<IpNet> {
    spare_endpoints(c)
        .into_iter()
        .flat_map(|e| e.nets)
        .collect()
}

fn host(a: &str) -> IpNet {
    let ip: std::net::IpAddr = a.parse().expect("address");
    IpNet::from(ip)
}

/// `ep` renamed and moved to `addr` (same family as its first prefix).
fn moved(ep: &Endpoint, n: usize, pick: usize) -> Option<Endpoint> {
    let first = ep.nets.first()?;
    let addr = match first {
        IpNet::V4(_) => NEW_V4[pick % NEW_V4.len()],
        IpNet::V6(_) => NEW_V6[pick % NEW_V6.len()],
    };
    let mut e = ep.clone();
    e.key.name = format!("{}-new{n}", e.key.name);
    e.nets = vec![host(addr)];
    Some(e)
}

/// Every flow: the generated ones, and each added address to and from their ends.
fn flows_with(flows: &[FlowKey], added: &[IpNet]) -> Vec<FlowKey> {
    let mut out = flows.to_vec();
    for a in added {
        for k in flows.iter().take(12) {
            let (six, bits) = (matches!(a, IpNet::V6(_)), addr_bits(a));
            if six != matches!(k.family, dataplane::program::Family::V6) {
                continue;
            }
            out.push(FlowKey { src: bits, ..*k });
            out.push(FlowKey { dst: bits, ..*k });
        }
    }
    out
}

fn check(live: &Live, flows: &[FlowKey]) -> Result<(), TestCaseError> {
    let fresh = lower(live.cluster()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let built = IdentityClassifier::build(&fresh.set, &BuildConfig::default())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for k in flows {
        let flow = Flow::from_key(k);
        let want = eval::evaluate(live.cluster(), &flow);
        let got = live
            .evaluation(&flow)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got, &want, "live vs eval, flow {}", flow);
        let full = fresh
            .evaluation(&built, &flow)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&full, &want, "fresh build vs eval, flow {}", flow);
    }
    Ok(())
}

/// The live store is `next` but for the order of its endpoints (the fast path
/// swap-removes and appends them), and the live generation classifies `flows` as
/// `eval` does on `next` itself.
fn same_store(live: &Live, next: &Cluster, flows: &[FlowKey]) -> Result<(), TestCaseError> {
    let (mut mine, mut want) = (live.cluster().clone(), next.clone());
    for c in [&mut mine, &mut want] {
        c.endpoints.sort_by(|a, b| a.key.cmp(&b.key));
    }
    prop_assert_eq!(format!("{mine:?}"), format!("{want:?}"));
    for k in flows {
        let flow = Flow::from_key(k);
        let got = live
            .evaluation(&flow)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            got,
            eval::evaluate(next, &flow),
            "live vs eval of next, flow {}",
            flow
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn live_changes_classify_as_a_fresh_build_and_eval(
        (resources, flows) in store_and_flows(24),
        ops in prop::collection::vec((0u8..4, any::<Index>(), any::<Index>(), 0usize..8), 1..8),
    ) {
        let cluster = Cluster::from_resources(&resources).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut live = Live::new(cluster, BuildConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut added: Vec<IpNet> = Vec::new();
        for (n, (kind, i, j, pick)) in ops.into_iter().enumerate() {
            let eps = &live.cluster().endpoints;
            if eps.is_empty() {
                break;
            }
            let (a, b) = (eps[i.index(eps.len())].clone(), eps[j.index(eps.len())].clone());
            let r = match kind {
                // A copy of an endpoint (its label set exists) at a new address.
                0 => match moved(&a, n, pick) {
                    Some(e) => {
                        added.extend(e.nets.iter().copied());
                        live.add_endpoint(e)
                    }
                    None => continue,
                },
                // The same with another endpoint's labels (often a new label set).
                1 => match moved(&a, n, pick) {
                    Some(mut e) => {
                        e.labels = b.labels.clone();
                        added.extend(e.nets.iter().copied());
                        live.add_endpoint(e)
                    }
                    None => continue,
                },
                2 => live.remove_endpoint(&a.key),
                _ => {
                    let mut e = (*a).clone();
                    e.labels = b.labels.clone();
                    live.replace_endpoint(e)
                }
            };
            r.map_err(|e| TestCaseError::fail(e.to_string()))?;
            check(&live, &flows_with(&flows, &added))?;
        }
    }
}

/// The fast path is taken where it should be, and the result is still exact.
#[test]
fn replicas_come_and_go_on_the_fast_path() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api'}
    destination: {ports: [http]}
  - action: Deny
    source: {nets: [10.9.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
"#;
    let mut live = live_of(yaml);
    let web1 = live
        .cluster()
        .endpoints
        .iter()
        .find(|e| e.key.name == "web-1")
        .map(|e| (**e).clone())
        .unwrap();
    let api1 = live
        .cluster()
        .endpoints
        .iter()
        .find(|e| e.key.name == "api-1")
        .map(|e| (**e).clone())
        .unwrap();
    let web2 = copy_at(&web1, "web-2", "10.0.0.3");
    assert_eq!(live.add_endpoint(web2.clone()).unwrap(), Applied::Fast);
    let api2 = copy_at(&api1, "api-2", "10.0.0.4");
    assert_eq!(live.add_endpoint(api2.clone()).unwrap(), Applied::Fast);
    // A label set never seen, that no selector reads differently: still fast.
    let mut api4 = api1.clone();
    api4.key.name = "api-4".into();
    api4.labels.insert("version".into(), "v2".into());
    api4.nets = vec![host("10.0.0.6")];
    assert_eq!(live.add_endpoint(api4).unwrap(), Applied::Fast);
    // Inside the rule's CIDR: another identity, which the trees read as the CIDR's
    // (a free id of its identity's block), and the rules reading `api` built again.
    let api3 = copy_at(&api1, "api-3", "10.9.0.1");
    assert_eq!(live.add_endpoint(api3).unwrap(), Applied::Fast);
    // A new behaviour that no rule reads as a peer: its own programs are lowered,
    // the trees kept.
    let mut db = api1.clone();
    db.key.name = "db".into();
    db.labels.insert("app".into(), "db".into());
    db.nets = vec![host("10.0.0.5")];
    assert_eq!(live.add_endpoint(db.clone()).unwrap(), Applied::Fast);
    // The same inside the rule's CIDR: classified as the CIDR's addresses are.
    let mut db2 = db.clone();
    db2.key.name = "db-2".into();
    db2.labels.insert("shard".into(), "2".into());
    db2.nets = vec![host("10.9.0.2")];
    assert_eq!(live.add_endpoint(db2).unwrap(), Applied::Fast);
    // A new behaviour (another port list) defining a port a rule names: a peer class
    // of its own (an identity of its own, the programs of the rules naming the port
    // built again as a part).
    let mut web3 = web1.clone();
    web3.key.name = "web-3".into();
    web3.ports[0].port = 9090;
    web3.nets = vec![host("10.0.0.7")];
    let identities = live.classifier().stats().identities;
    assert_eq!(live.add_endpoint(web3).unwrap(), Applied::Fast);
    assert_eq!(live.classifier().stats().identities, identities + 1);
    let flows: Vec<FlowKey> = [
        "10.0.0.2", "10.0.0.4", "10.9.0.1", "10.9.0.2", "10.0.0.5", "10.0.0.6",
    ]
    .iter()
    .flat_map(|s| {
        ["10.0.0.1", "10.0.0.3", "10.0.0.5", "10.0.0.7"]
            .iter()
            .flat_map(move |d| {
                [8080, 9090].map(|port| {
                    FlowKey::new(s.parse().unwrap(), d.parse().unwrap(), 6, 1234, port).unwrap()
                })
            })
    })
    .collect();
    check(&live, &flows).unwrap();
    assert_eq!(live.remove_endpoint(&web2.key).unwrap(), Applied::Fast);
    assert_eq!(live.remove_endpoint(&api2.key).unwrap(), Applied::Fast);
    check(&live, &flows).unwrap();
    assert!(matches!(
        live.remove_endpoint(&web2.key),
        Err(LiveError::UnknownEndpoint(_))
    ));
}

/// The store key of a resource, as [`Cluster::from_resources`] spells it.
fn store_key(r: &crate::model::Resource) -> ResourceKey {
    let mut k = r.key();
    if k.kind.is_namespaced() && k.namespace.as_deref().is_none_or(str::is_empty) {
        k.namespace = Some("default".to_string());
    }
    k
}

/// One change to a resource list; returns the keys it touched.
fn change(
    resources: &mut Vec<crate::model::Resource>,
    (kind, i, j, pick): (u8, Index, Index, usize),
    n: usize,
    extra: &[crate::model::Resource],
) -> Vec<ResourceKey> {
    use crate::model::{Net, Resource};
    let workloads: Vec<usize> = (0..resources.len())
        .filter(|&x| matches!(resources[x], Resource::WorkloadEndpoint(_)))
        .collect();
    let wl = |ix: &Index| (!workloads.is_empty()).then(|| workloads[ix.index(workloads.len())]);
    let new_addr = |v6: bool| {
        let a = if v6 {
            NEW_V6[pick % NEW_V6.len()]
        } else {
            NEW_V4[pick % NEW_V4.len()]
        };
        Net::parse(a).expect("address")
    };
    match kind {
        // A copy of a workload at a new address, with its labels or another's.
        0 | 1 => {
            let (Some(a), Some(b)) = (wl(&i), wl(&j)) else {
                return Vec::new();
            };
            let labels = resources[b].metadata().labels.clone();
            let Resource::WorkloadEndpoint(mut o) = resources[a].clone() else {
                return Vec::new();
            };
            let Some(first) = o.spec.ip_networks.first() else {
                return Vec::new();
            };
            let v6 = matches!(first.0, IpNet::V6(_));
            o.metadata.name = format!("{}-new{n}", o.metadata.name);
            o.spec.ip_networks = vec![new_addr(v6)];
            if kind == 1 {
                o.metadata.labels = labels;
            }
            let r = Resource::WorkloadEndpoint(o);
            let k = store_key(&r);
            resources.push(r);
            vec![k]
        }
        // A resource deleted (any kind).
        2 => {
            if resources.is_empty() {
                return Vec::new();
            }
            let r = resources.remove(i.index(resources.len()));
            vec![store_key(&r)]
        }
        // A workload relabelled with another's labels.
        3 => {
            let (Some(a), Some(b)) = (wl(&i), wl(&j)) else {
                return Vec::new();
            };
            let labels = resources[b].metadata().labels.clone();
            if let Resource::WorkloadEndpoint(o) = &mut resources[a] {
                o.metadata.labels = labels;
            }
            vec![store_key(&resources[a])]
        }
        // A workload moved to another address.
        4 => {
            let Some(a) = wl(&i) else { return Vec::new() };
            if let Resource::WorkloadEndpoint(o) = &mut resources[a] {
                let v6 = o
                    .spec
                    .ip_networks
                    .first()
                    .is_some_and(|f| matches!(f.0, IpNet::V6(_)));
                o.spec.ip_networks = vec![new_addr(v6)];
            }
            vec![store_key(&resources[a])]
        }
        // A copy of a workload at a new address with a label set of its own (a new
        // behaviour, which a rule may or may not read as a peer).
        6 => {
            let Some(a) = wl(&i) else { return Vec::new() };
            let Resource::WorkloadEndpoint(mut o) = resources[a].clone() else {
                return Vec::new();
            };
            let Some(first) = o.spec.ip_networks.first() else {
                return Vec::new();
            };
            let v6 = matches!(first.0, IpNet::V6(_));
            o.metadata.name = format!("{}-own{n}", o.metadata.name);
            o.spec.ip_networks = vec![new_addr(v6)];
            o.metadata.labels = [("fresh".to_string(), format!("f{n}"))].into();
            let r = Resource::WorkloadEndpoint(o);
            let k = store_key(&r);
            resources.push(r);
            vec![k]
        }
        // A copy of a workload at a new address with a label set never seen that
        // rules read (a new `app` value: `has(app)`, `app != 'db'` and the like pick
        // it), and, with an odd `pick`, another workload's named ports.
        7 => {
            let (Some(a), Some(b)) = (wl(&i), wl(&j)) else {
                return Vec::new();
            };
            let ports = match &resources[b] {
                Resource::WorkloadEndpoint(o) => o.spec.ports.clone(),
                _ => Vec::new(),
            };
            let Resource::WorkloadEndpoint(mut o) = resources[a].clone() else {
                return Vec::new();
            };
            let Some(first) = o.spec.ip_networks.first() else {
                return Vec::new();
            };
            let v6 = matches!(first.0, IpNet::V6(_));
            o.metadata.name = format!("{}-peer{n}", o.metadata.name);
            o.spec.ip_networks = vec![new_addr(v6)];
            o.metadata.labels.insert("app".into(), format!("x{n}"));
            if pick % 2 == 1 {
                o.spec.ports = ports;
            }
            let r = Resource::WorkloadEndpoint(o);
            let k = store_key(&r);
            resources.push(r);
            vec![k]
        }
        // A copy of a workload at a new address with a label set drawn from the
        // selectors' vocabulary and values no endpoint has (new `app` and `env`
        // values that `has(app)`, `app != 'db'`, `env starts with 'pr'` and the like
        // pick), and its ports, none, or a named port with a number no endpoint has:
        // often a peer class no endpoint and no spare has.
        8 => {
            let Some(a) = wl(&i) else { return Vec::new() };
            let Resource::WorkloadEndpoint(mut o) = resources[a].clone() else {
                return Vec::new();
            };
            let Some(first) = o.spec.ip_networks.first() else {
                return Vec::new();
            };
            let v6 = matches!(first.0, IpNet::V6(_));
            let h = pick * 31 + n * 17 + j.index(97);
            let app = ["web", "db", "api", "", "new"][h % 5];
            let role = ["fe", "be", ""][h / 5 % 3];
            let env = ["prod", "dev", "pre", ""][h / 15 % 4];
            let mut labels = std::collections::BTreeMap::new();
            for (k, v) in [("app", app), ("role", role), ("env", env)] {
                match v {
                    "" => {}
                    "new" | "pre" => {
                        labels.insert(k.to_string(), format!("{v}{n}"));
                    }
                    v => {
                        labels.insert(k.to_string(), v.to_string());
                    }
                }
            }
            o.metadata.name = format!("{}-class{n}", o.metadata.name);
            o.metadata.labels = labels;
            o.spec.ip_networks = vec![new_addr(v6)];
            match h / 60 % 3 {
                0 => {}
                1 => o.spec.ports.clear(),
                _ => {
                    o.spec.ports = vec![crate::model::EndpointPort {
                        name: ["http", "dns", "metrics"][h % 3].to_string(),
                        protocol: crate::model::Protocol(6),
                        port: 7000 + n as u16,
                        host_port: None,
                        host_ip: None,
                    }];
                }
            }
            let r = Resource::WorkloadEndpoint(o);
            let k = store_key(&r);
            resources.push(r);
            vec![k]
        }
        // A policy or network set added or replaced.
        _ => {
            if extra.is_empty() {
                return Vec::new();
            }
            let r = extra[j.index(extra.len())].clone();
            let k = store_key(&r);
            resources.push(r);
            vec![k]
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random store changes through [`Live::update`] (endpoints added, removed,
    /// relabelled, moved; any resource deleted; policies and network sets added or
    /// replaced; one to three per update) classify as a fresh build and `eval` do.
    #[test]
    fn updates_classify_as_a_fresh_build_and_eval(
        (resources, flows) in store_and_flows(24),
        extra in prop::collection::vec(
            prop_oneof![3 => crate::lower::proptests::policy(), 1 => crate::lower::proptests::network_set(7)],
            0..4,
        ),
        steps in prop::collection::vec(
            prop::collection::vec((0u8..7, any::<Index>(), any::<Index>(), 0usize..8), 1..4),
            1..6,
        ),
    ) {
        let mut resources = resources;
        let cluster = Cluster::from_resources(&resources).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut live = Live::new(cluster, BuildConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut added: Vec<IpNet> = Vec::new();
        let mut n = 0;
        for step in steps {
            let mut changed = Vec::new();
            for op in step {
                n += 1;
                changed.extend(change(&mut resources, op, n, &extra));
            }
            for r in &resources {
                if let crate::model::Resource::WorkloadEndpoint(o) = r {
                    added.extend(o.spec.ip_networks.iter().map(|n| n.0.trunc()));
                }
            }
            added.sort();
            added.dedup();
            let next = match Cluster::from_resources(&resources) {
                Ok(c) => c,
                // A change the store refuses never reaches the live generation.
                Err(_) => return Ok(()),
            };
            live.update(&next, &changed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let flows = flows_with(&flows, &added);
            same_store(&live, &next, &flows)?;
            check(&live, &flows)?;
        }
    }
}

/// [`Live::update`] takes the fast path for a replica added, moved and removed, and
/// rebuilds for a policy change.
#[test]
fn update_takes_the_fast_path_for_replicas() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api'}
    destination: {ports: [http]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
"#;
    let (mut resources, mut live) = resources_and_live(yaml);
    let api = resources
        .iter()
        .position(|r| r.metadata().name == "api-1")
        .unwrap();
    let crate::model::Resource::WorkloadEndpoint(mut o) = resources[api].clone() else {
        panic!("a workload");
    };
    o.metadata.name = "api-2".into();
    o.spec.ip_networks = vec![crate::model::Net::parse("10.0.0.3/32").unwrap()];
    let api2 = crate::model::Resource::WorkloadEndpoint(o);
    let key = store_key(&api2);
    resources.push(api2);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(
        live.update(&next, std::slice::from_ref(&key)).unwrap(),
        Applied::Fast
    );
    let flows: Vec<FlowKey> = ["10.0.0.2", "10.0.0.3", "10.0.0.9"]
        .iter()
        .map(|s| {
            FlowKey::new(
                s.parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                6,
                1234,
                8080,
            )
            .unwrap()
        })
        .collect();
    same_store(&live, &next, &flows).unwrap();
    check(&live, &flows).unwrap();
    // Moved.
    if let Some(crate::model::Resource::WorkloadEndpoint(o)) = resources.last_mut() {
        o.spec.ip_networks = vec![crate::model::Net::parse("10.0.0.9/32").unwrap()];
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(
        live.update(&next, std::slice::from_ref(&key)).unwrap(),
        Applied::Fast
    );
    same_store(&live, &next, &flows).unwrap();
    check(&live, &flows).unwrap();
    // Removed.
    resources.pop();
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Fast);
    same_store(&live, &next, &flows).unwrap();
    check(&live, &flows).unwrap();
    // The policy's rule flipped to Deny: only its programs are lowered again.
    let (p, pkey) = policy_p(&resources);
    if let crate::model::Resource::NetworkPolicy(o) = &mut resources[p] {
        o.spec.ingress[0].action = crate::model::RuleAction::Deny;
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(
        live.update(&next, std::slice::from_ref(&pkey)).unwrap(),
        Applied::Incremental
    );
    same_store(&live, &next, &flows).unwrap();
    check(&live, &flows).unwrap();
    // A replica added after it takes the fast path with the new programs.
    resources.push(api2_at(&resources, "10.0.0.7/32"));
    let next = Cluster::from_resources(&resources).unwrap();
    let k7 = store_key(resources.last().unwrap());
    assert_eq!(live.update(&next, &[k7]).unwrap(), Applied::Fast);
    let flows7: Vec<FlowKey> = ["10.0.0.2", "10.0.0.7"]
        .iter()
        .map(|s| {
            FlowKey::new(
                s.parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                6,
                1234,
                8080,
            )
            .unwrap()
        })
        .collect();
    same_store(&live, &next, &flows7).unwrap();
    check(&live, &flows7).unwrap();
    // A peer selector naming a list no rule had, made of whole identities (the web
    // pod, the api replicas): still incremental.
    if let crate::model::Resource::NetworkPolicy(o) = &mut resources[p] {
        o.spec.ingress[0].source.selector = Some("app in {'web', 'api'}".into());
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(
        live.update(&next, std::slice::from_ref(&pkey)).unwrap(),
        Applied::Incremental
    );
    same_store(&live, &next, &flows7).unwrap();
    check(&live, &flows7).unwrap();
    // One api replica's address alone splits their identity: rebuilt.
    if let crate::model::Resource::NetworkPolicy(o) = &mut resources[p] {
        o.spec.ingress[0].source.selector = None;
        o.spec.ingress[0].source.nets = vec![crate::model::Net::parse("10.0.0.2/32").unwrap()];
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(
        live.update(&next, std::slice::from_ref(&pkey)).unwrap(),
        Applied::Rebuilt
    );
    same_store(&live, &next, &flows7).unwrap();
    check(&live, &flows7).unwrap();
    // The policy deleted: incremental again.
    resources.remove(p);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[pkey]).unwrap(), Applied::Incremental);
    same_store(&live, &next, &flows7).unwrap();
    check(&live, &flows7).unwrap();
}

/// A copy of workload `api-1` named `api-<addr>` at `addr`.
fn api2_at(resources: &[crate::model::Resource], addr: &str) -> crate::model::Resource {
    let api = resources
        .iter()
        .find(|r| r.metadata().name == "api-1")
        .unwrap();
    let crate::model::Resource::WorkloadEndpoint(mut o) = api.clone() else {
        panic!("a workload");
    };
    o.metadata.name = format!("api-{}", addr.replace(['.', '/'], "-"));
    o.spec.ip_networks = vec![crate::model::Net::parse(addr).unwrap()];
    crate::model::Resource::WorkloadEndpoint(o)
}

/// The store with every endpoint address a host address of one endpoint (the shape
/// the incremental policy path takes).
fn one_host_per_endpoint(resources: Vec<crate::model::Resource>) -> Vec<crate::model::Resource> {
    use crate::model::Resource;
    let mut seen = std::collections::HashSet::new();
    resources
        .into_iter()
        .filter(|r| match r {
            Resource::WorkloadEndpoint(o) => o
                .spec
                .ip_networks
                .iter()
                .all(|n| is_host(&n.0) && seen.insert(n.0.trunc())),
            Resource::HostEndpoint(_) => false,
            _ => true,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Policies added, replaced and deleted, mixed with replicas added and pods
    /// relabelled, on stores where the incremental policy path applies: the live
    /// generation classifies as a fresh build and `eval` do after every update.
    #[test]
    fn policy_updates_classify_as_a_fresh_build_and_eval(
        (resources, flows) in store_and_flows(24),
        extra in prop::collection::vec(crate::lower::proptests::policy(), 1..4),
        steps in prop::collection::vec(
            prop::collection::vec(
                (prop_oneof![Just(0u8), Just(2), Just(3), Just(5), Just(5), Just(6)], any::<Index>(), any::<Index>(), 0usize..8),
                1..3,
            ),
            1..6,
        ),
    ) {
        let mut resources = one_host_per_endpoint(resources);
        let Ok(cluster) = Cluster::from_resources(&resources) else { return Ok(()) };
        let mut live = Live::new(cluster, BuildConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut n = 0;
        for step in steps {
            let mut changed = Vec::new();
            for op in step {
                n += 1;
                changed.extend(change(&mut resources, op, n, &extra));
            }
            let added: Vec<IpNet> = NEW_V4.iter().chain(&NEW_V6).map(|a| host(a)).collect();
            let Ok(next) = Cluster::from_resources(&resources) else { return Ok(()) };
            live.update(&next, &changed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let flows = flows_with(&flows, &added);
            same_store(&live, &next, &flows)?;
            check(&live, &flows)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Pods with label sets never seen (some read by peer selectors, `notSelector`s
    /// and named ports, some not), replicas, removals and policy changes through
    /// [`Live::update`]: the live generation classifies as a fresh build and `eval` do
    /// after every update, also for flows to and from the spare endpoints' addresses.
    #[test]
    fn new_peer_classes_classify_as_a_fresh_build_and_eval(
        (resources, flows) in store_and_flows(24),
        extra in prop::collection::vec(crate::lower::proptests::policy(), 1..3),
        steps in prop::collection::vec(
            prop::collection::vec(
                (prop_oneof![Just(0u8), Just(2), Just(5), Just(6), Just(6), Just(7), Just(7), Just(7), Just(8), Just(8), Just(8)], any::<Index>(), any::<Index>(), 0usize..8),
                1..3,
            ),
            1..6,
        ),
    ) {
        let mut resources = one_host_per_endpoint(resources);
        let Ok(cluster) = Cluster::from_resources(&resources) else { return Ok(()) };
        let mut live = Live::new(cluster, BuildConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut added: Vec<IpNet> = NEW_V4.iter().chain(&NEW_V6).chain(&SPARE).map(|a| host(a)).collect();
        added.extend(spare_hosts(live.cluster()));
        let mut n = 0;
        for step in steps {
            let mut changed = Vec::new();
            for op in step {
                n += 1;
                changed.extend(change(&mut resources, op, n, &extra));
            }
            let Ok(next) = Cluster::from_resources(&resources) else { return Ok(()) };
            added.extend(spare_hosts(&next));
            added.sort();
            added.dedup();
            live.update(&next, &changed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let flows = flows_with(&flows, &added);
            same_store(&live, &next, &flows)?;
            check(&live, &flows)?;
        }
    }
}

proptest! {
    /// [`Named::zone`] (one lookup per named length) finds exactly the named
    /// prefixes a scan of all of them finds, shortest first, for hosts of both
    /// families inside and outside them.
    #[test]
    fn a_zone_is_every_named_prefix_containing_the_host(
        prefixes in prop::collection::vec((any::<bool>(), 0u32..64, 0u8..=32), 0..24),
        hosts in prop::collection::vec((any::<bool>(), 0u32..64, any::<u32>()), 1..24),
    ) {
        // Addresses share their top bits so prefixes nest, overlap and miss.
        let at = |six: bool, top: u32, low: u32| -> std::net::IpAddr {
            let v4 = 0x0a00_0000 | top << 18 | (low & 0x3ffff);
            if six {
                std::net::IpAddr::V6((u128::from(v4) << 96 | u128::from(low)).into())
            } else {
                std::net::IpAddr::V4(v4.into())
            }
        };
        let all: HashSet<IpNet> = prefixes
            .iter()
            .map(|&(six, top, len)| {
                let len = if six { len * 4 } else { len };
                IpNet::new(at(six, top, 0), len).unwrap().trunc()
            })
            .collect();
        let named = Named::from_prefixes(all);
        for (six, top, low) in hosts {
            let h = IpNet::from(at(six, top, low));
            prop_assert_eq!(named.zone(&h), named.zone_by_scan(&h), "host {}", h);
        }
    }
}

/// Every TCP flow between `addrs` to the ports 80, 8080 and 9090.
fn tcp_flows(addrs: &[&str]) -> Vec<FlowKey> {
    let mut out = Vec::new();
    for s in addrs {
        for d in addrs {
            for port in [80, 8080, 9090] {
                if let Some(k) =
                    FlowKey::new(s.parse().unwrap(), d.parse().unwrap(), 6, 40000, port)
                {
                    out.push(k);
                }
            }
        }
    }
    out
}

/// The cluster the scale bench builds, in small: every rule reads `app == ...` peers
/// minus a `shard` (`notSelector`) and names the port `http` without a peer
/// selector, so a pod with a new `app` value is read as a peer through `http` only.
const READ_BY_NAMED_PORT: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api', notSelector: shard == 's1'}
    destination: {ports: [80, http], notPorts: [http]}
  - action: Deny
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [http]}
  egress:
  - action: Allow
    protocol: TCP
    destination: {ports: [http]}
  - action: Deny
    source: {nets: [10.9.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web, shard: s1}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: ns, labels: {app: api, shard: s2}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32], ports: [{name: http, protocol: TCP, port: 9090}]}
"#;

fn live_of(yaml: &str) -> Live {
    resources_and_live(yaml).1
}

/// The resources of `yaml` and the live generation built from them.
fn resources_and_live(yaml: &str) -> (Vec<crate::model::Resource>, Live) {
    let read = crate::policy::read_text(yaml, "test", crate::model::Format::Yaml).expect("reads");
    let resources = read.items.iter().map(|l| l.resource.clone()).collect();
    let cluster = crate::policy::build(read).expect("builds").cluster;
    (
        resources,
        Live::new(cluster, BuildConfig::default()).expect("builds"),
    )
}

/// `ep` renamed `name` and moved to the host address `addr`.
fn copy_at(ep: &Endpoint, name: &str, addr: &str) -> Endpoint {
    let mut e = ep.clone();
    e.key.name = name.into();
    e.nets = vec![host(addr)];
    e
}

fn endpoint(live: &Live, name: &str) -> Endpoint {
    live.cluster()
        .endpoints
        .iter()
        .find(|e| e.key.name == name)
        .map(|e| (**e).clone())
        .expect("endpoint")
}

/// A pod with a new `app` value that rules read only through the named port `http`
/// (and whose `shard` a `notSelector` names, behind a peer selector that does not
/// pick it) is a peer class no endpoint has: it takes the identity of the build's
/// spare for its namespace and ports, on the fast path. One with a port number no
/// endpoint has gets an identity of its own, and so does one inside a rule CIDR.
/// Each generation
/// classifies as a fresh build and `eval` do.
#[test]
fn a_new_peer_class_takes_a_spare_identity() {
    let mut live = live_of(READ_BY_NAMED_PORT);
    let addrs = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "10.9.0.5",
        "240.0.0.1",
        "240.0.0.2",
    ];
    let mut new = copy_at(&endpoint(&live, "web-1"), "new-1", "10.0.0.3");
    new.labels.insert("app".into(), "new".into());
    assert_eq!(live.add_endpoint(new.clone()).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // Its replica joins it.
    let replica = copy_at(&new, "new-2", "10.0.0.4");
    assert_eq!(live.add_endpoint(replica).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // `http` on a port no endpoint defines: no spare has it.
    let mut other_port = copy_at(&new, "new-3", "10.0.0.5");
    other_port.labels.insert("app".into(), "newer".into());
    other_port.ports[0].port = 7070;
    let identities = live.classifier().stats().identities;
    assert_eq!(live.add_endpoint(other_port).unwrap(), Applied::Fast);
    assert_eq!(live.classifier().stats().identities, identities + 1);
    check(&live, &tcp_flows(&["10.0.0.1", "10.0.0.5", "240.0.0.1"])).unwrap();
    // Inside a rule CIDR: an identity of its own there too.
    let mut inside = copy_at(&new, "new-4", "10.9.0.5");
    inside.labels.insert("app".into(), "newest".into());
    assert_eq!(live.add_endpoint(inside).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
}

/// The same with dual-stack pods: the spare of the pods' shape has an address in
/// each family, and a new peer class with both takes both identities (IPv6 flows to
/// and from the spares' addresses included).
#[test]
fn a_dual_stack_pod_takes_the_spare_identity_of_each_family() {
    let yaml = READ_BY_NAMED_PORT
        .replace("[10.0.0.1/32]", "[10.0.0.1/32, 'fd00::1/128']")
        .replace("[10.0.0.2/32]", "[10.0.0.2/32, 'fd00::2/128']");
    let mut live = live_of(&yaml);
    let mut new = endpoint(&live, "web-1");
    new.key.name = "new-1".into();
    new.nets = vec![host("10.0.0.3"), host("fd00::3")];
    new.labels.insert("app".into(), "new".into());
    assert_eq!(live.add_endpoint(new).unwrap(), Applied::Fast);
    let mut flows = tcp_flows(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "240.0.0.1", "240.0.0.2"]);
    flows.extend(tcp_flows(&[
        "fd00::1", "fd00::2", "fd00::3", "100::1", "100::2",
    ]));
    check(&live, &flows).unwrap();
    // An IPv6-only pod of that peer class: its address is in the lists the spare's
    // IPv6 address was in (a peer class does not depend on the families a pod has).
    let mut six = copy_at(&endpoint(&live, "web-1"), "new-6", "fd00::6");
    six.labels.insert("app".into(), "six".into());
    assert_eq!(live.add_endpoint(six).unwrap(), Applied::Fast);
    flows.extend(tcp_flows(&["fd00::1", "fd00::6", "100::1"]));
    check(&live, &flows).unwrap();
}

/// Spares take addresses no rule, network set or endpoint prefix contains: with an
/// endpoint at the first candidate they take the next one (and a new peer class is
/// still fast and exact); with a rule naming the whole reserved range they count
/// down from the top of the address space, stepping below that prefix
/// (`239.255.255.255`), and the same pod is still fast and exact.
#[test]
fn spares_keep_out_of_every_named_and_bound_address() {
    let at_first = format!(
        "{READ_BY_NAMED_PORT}---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: odd-1, namespace: ns, labels: {{app: odd}}}}
spec: {{orchestrator: k8s, ipNetworks: [240.0.0.1/32]}}
"
    );
    let named = READ_BY_NAMED_PORT.replace("nets: [10.9.0.0/16]", "nets: [240.0.0.0/4]");
    let addrs = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "240.0.0.1",
        "240.0.0.2",
        "240.0.0.3",
        "239.255.255.255",
        "239.255.255.254",
    ];
    for (yaml, spare) in [
        (at_first.as_str(), "240.0.0.2"),
        (named.as_str(), "239.255.255.255"),
    ] {
        let mut live = live_of(yaml);
        assert!(spare_hosts(live.cluster()).contains(&host(spare)));
        check(&live, &tcp_flows(&addrs)).unwrap();
        let mut new = copy_at(&endpoint(&live, "web-1"), "new-1", "10.0.0.3");
        new.labels.insert("app".into(), "new".into());
        assert_eq!(live.add_endpoint(new).unwrap(), Applied::Fast);
        check(&live, &tcp_flows(&addrs)).unwrap();
    }
}

/// Rules naming CIDRs that contain the pods (`0.0.0.0/0` less `10.0.0.0/8` for
/// egress, `10.0.0.0/8` with a `notSelector`, a peer selector intersected with
/// `10.0.0.0/24`): pods in `10.0.0.0/24` and in the rest of `10.0.0.0/8` are in two
/// zones. Replicas join an exemplar of their zone, new peer classes a spare of their
/// zone, all on the fast path; a pod in a zone no pod of its shape is in (no exemplar,
/// no spare) is a rebuild. Each generation classifies as a fresh build and `eval`.
#[test]
fn pods_inside_rule_cidrs_take_the_fast_path() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: ns}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api', nets: [10.0.0.0/24]}
    destination: {ports: [80]}
  - action: Deny
    source: {nets: [10.0.0.0/8], notSelector: app == 'web'}
  - action: Allow
    protocol: TCP
    destination: {ports: [http]}
  - action: Deny
    source: {nets: [10.0.0.0/24], notSelector: app == 'api'}
  egress:
  - action: Allow
    destination: {nets: [0.0.0.0/0], notNets: [10.0.0.0/8]}
  - action: Allow
    protocol: TCP
    destination: {selector: app == 'api', ports: [http]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-2, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.1.2/32], ports: [{name: http, protocol: TCP, port: 8080}]}
"#;
    let mut live = live_of(yaml);
    let spares = spare_hosts(live.cluster());
    // A spare in each zone the pods' shape is in, inside the zone's innermost prefix.
    assert!(
        spares
            .iter()
            .any(|h| "10.0.0.0/24".parse::<IpNet>().unwrap().contains(h))
    );
    assert!(spares.iter().any(|h| {
        "10.0.0.0/8".parse::<IpNet>().unwrap().contains(h)
            && !"10.0.0.0/24".parse::<IpNet>().unwrap().contains(h)
    }));
    let mut addrs: Vec<String> = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.1.2",
        "10.0.0.3",
        "10.0.2.3",
        "10.0.0.4",
        "10.0.5.5",
        "192.168.1.1",
        "8.8.8.8",
        "10.0.0.7",
        "10.0.7.7",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    addrs.extend(spares.iter().map(|h| h.addr().to_string()));
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let flows = tcp_flows(&addrs);
    check(&live, &flows).unwrap();
    let pod = |name: &str, addr: &str, app: &str| {
        let mut e = endpoint(&live, "api-1");
        e.key.name = name.into();
        e.nets = vec![host(addr)];
        e.labels.insert("app".into(), app.into());
        e
    };
    let steps = [
        // Replicas, in the zone of each exemplar.
        (pod("api-3", "10.0.0.3", "api"), Applied::Fast),
        (pod("api-4", "10.0.2.3", "api"), Applied::Fast),
        // A new behaviour with two IPv4 addresses in two zones that a list (the
        // `Deny` from `10.0.0.0/24` less `api`) tells apart: the spares of the two
        // zones have two identities, one per family cannot hold both, so each host
        // gets an identity of its own in its zone. (Its replicas below join it per
        // zone.)
        (
            Endpoint {
                nets: vec![host("10.0.0.7"), host("10.0.7.7")],
                ..pod("multi-1", "10.0.0.7", "multi")
            },
            Applied::Fast,
        ),
        // New `app` values (read through `http` and the `notSelector`): the behaviour
        // of `multi-1`, each joining its exemplar in its zone.
        (pod("cache-1", "10.0.0.4", "cache"), Applied::Fast),
        (pod("queue-1", "10.0.5.5", "queue"), Applied::Fast),
        // Outside `10.0.0.0/8`: no pod of this shape is there, so an identity of its
        // own in that zone.
        (pod("ext-1", "192.168.1.1", "ext"), Applied::Fast),
        // Without named ports: the spare of its shape without them.
        (
            Endpoint {
                ports: Vec::new(),
                ..pod("noports-1", "10.0.0.5", "noports")
            },
            Applied::Fast,
        ),
    ];
    for (e, want) in steps {
        let name = e.key.name.clone();
        assert_eq!(live.add_endpoint(e).unwrap(), want, "{name}");
        check(&live, &flows).unwrap();
    }
    // A policy change stays incremental: the CIDR lists' known forms hold the
    // spares' identities, which no address reaches once they are unbound.
    let mut next = live.cluster().clone();
    let p = &mut next.policies[0];
    p.ingress[0].rule.action = crate::model::RuleAction::Deny;
    let key = p.key.clone();
    assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Incremental);
    check(&live, &flows).unwrap();
    // And removals.
    for name in ["api-3", "cache-1", "api-4"] {
        let key = endpoint(&live, name).key;
        assert_eq!(live.remove_endpoint(&key).unwrap(), Applied::Fast, "{name}");
        check(&live, &flows).unwrap();
    }
}

/// A pod whose new label set changes which policies apply to it but not how rules
/// read it as a peer joins the identity of an endpoint with that peer reading, with
/// programs of its own; one that a peer selector reads as no endpoint is read (a
/// new peer class with labels no spare has) is refused.
#[test]
fn a_new_label_set_read_as_an_existing_peer_joins_its_identity() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-app, namespace: ns}
spec:
  selector: role == 'a'
  ingress:
  - action: Allow
    source: {selector: has(app)}
  - action: Deny
    source: {selector: app == 'db'}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-only, namespace: ns}
spec:
  selector: role == 'b'
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [9090]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a-1, namespace: ns, labels: {app: x, role: a}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: y-1, namespace: ns, labels: {app: y}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
"#;
    let mut live = live_of(yaml);
    let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
    let mut b = copy_at(&endpoint(&live, "y-1"), "b-1", "10.0.0.3");
    b.labels.insert("app".into(), "z".into());
    b.labels.insert("role".into(), "b".into());
    assert_eq!(live.add_endpoint(b.clone()).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // `app == 'db'` reads it as no endpoint (and no spare: spares carry no `app`): an
    // identity of its own.
    let mut db = copy_at(&b, "db-1", "10.0.0.4");
    db.labels.insert("app".into(), "db".into());
    let identities = live.classifier().stats().identities;
    assert_eq!(live.add_endpoint(db).unwrap(), Applied::Fast);
    assert_eq!(live.classifier().stats().identities, identities + 1);
    check(&live, &tcp_flows(&addrs)).unwrap();
}

const CANARY: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: canary-in, namespace: ns}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: has(canary)}
    destination: {ports: [8080]}
  - action: Deny
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api, namespace: ns}
spec:
  selector: app == 'api'
  ingress:
  - action: Deny
    source: {selector: app == 'db'}
  egress:
  - action: Allow
    protocol: TCP
    destination: {ports: [http]}
  - action: Deny
    destination: {nets: [10.9.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32], ports: [{name: http, protocol: TCP, port: 9090}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: db-1, namespace: ns, labels: {app: db}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.3/32]}
"#;

/// The first pod a peer selector picks (`has(canary)`: no endpoint and no spare is
/// read that way) gets an identity of its own, and only the programs of the policy
/// reading it get new trees (one part, not a rebuild); its replica joins it; a pod
/// with a named-port number no endpoint has takes the same path (the policies naming
/// the port on a side without a selector read it too), and so does one inside a rule
/// CIDR. Each generation classifies as a fresh build and `eval` do.
#[test]
fn a_genuinely_new_peer_class_gets_an_identity_of_its_own() {
    let mut live = live_of(CANARY);
    let addrs = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "10.0.0.5",
        "10.0.0.6",
        "10.9.0.5",
        "240.0.0.1",
    ];
    let stats = |live: &Live| {
        let s = live.classifier().stats();
        (s.identities, s.parts)
    };
    let (ids, parts) = stats(&live);
    let mut canary = copy_at(&endpoint(&live, "web-1"), "canary-1", "10.0.0.4");
    canary.labels.insert("canary".into(), "true".into());
    canary.ports.clear();
    assert_eq!(live.add_endpoint(canary.clone()).unwrap(), Applied::Fast);
    assert_eq!(
        stats(&live),
        (ids + 1, parts + 1),
        "a new identity, one new part"
    );
    check(&live, &tcp_flows(&addrs)).unwrap();
    // Its replica joins its identity and programs: no new part.
    let replica = copy_at(&canary, "canary-2", "10.0.0.5");
    assert_eq!(live.add_endpoint(replica).unwrap(), Applied::Fast);
    assert_eq!(stats(&live), (ids + 1, parts + 1));
    check(&live, &tcp_flows(&addrs)).unwrap();
    // `http` on a number no endpoint defines, read by `api`'s egress rule.
    let mut port = copy_at(&canary, "canary-3", "10.0.0.6");
    port.ports = endpoint(&live, "web-1").ports;
    port.ports[0].port = 7070;
    assert_eq!(live.add_endpoint(port).unwrap(), Applied::Fast);
    // Its trees and the part before's still bound programs built as one part, in
    // place of the last (`IdentityClassifier::with_programs_merged`).
    assert_eq!(stats(&live), (ids + 2, parts + 1));
    check(&live, &tcp_flows(&addrs)).unwrap();
    // The first one leaves; the others classify as before.
    let key = canary.key.clone();
    assert_eq!(live.remove_endpoint(&key).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // Inside a rule CIDR, where no host of its class is: an identity of its own
    // that the kept trees read as the CIDR's (a free id of its block).
    let inside = copy_at(&canary, "canary-4", "10.9.0.5");
    assert_eq!(live.add_endpoint(inside).unwrap(), Applied::Fast);
    assert_eq!(stats(&live).0, ids + 3);
    check(&live, &tcp_flows(&addrs)).unwrap();
}

/// A policy that applies to no pod at the build is lowered first when a pod it
/// applies to arrives, over the store as it is then: without the build's spares. Its
/// rule reading that pod's peer class (here a `notSelector` in its namespace, which
/// every pod there but the `role` ones matches) then holds no spare's identity, so
/// the pod, whose peer class is its namespace's spare's, must not take that identity:
/// it gets one of its own, with the policy's lists fresh, on the fast path (without
/// that, the live generation missed the `Deny` for its flows). Its replica joins it,
/// and a pod of the same peer class that the policy does not apply to takes its
/// identity.
#[test]
fn a_policy_lowered_first_for_a_new_pod_reads_it() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: ns}
spec:
  selector: app == 'db'
  egress:
  - action: Deny
    source: {notSelector: has(role)}
  - action: Allow
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web, role: fe}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}
"#;
    let mut live = live_of(yaml);
    let mut addrs = vec!["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    let spares: Vec<String> = spare_hosts(live.cluster())
        .iter()
        .map(|h| h.addr().to_string())
        .collect();
    addrs.extend(spares.iter().map(String::as_str));
    let identities = live.classifier().stats().identities;
    let mut db = copy_at(&endpoint(&live, "web-1"), "db-1", "10.0.0.3");
    db.labels.insert("app".into(), "db".into());
    db.labels.remove("role");
    assert_eq!(live.add_endpoint(db.clone()).unwrap(), Applied::Fast);
    assert_eq!(
        live.classifier().stats().identities,
        identities + 1,
        "an identity of its own"
    );
    check(&live, &tcp_flows(&addrs)).unwrap();
    let replica = copy_at(&db, "db-2", "10.0.0.4");
    assert_eq!(live.add_endpoint(replica).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // The policy applies to no `cache` pod, which its rule reads as it reads `db`.
    let mut cache = copy_at(&db, "cache-1", "10.0.0.5");
    cache.labels.insert("app".into(), "cache".into());
    assert_eq!(live.add_endpoint(cache).unwrap(), Applied::Fast);
    assert_eq!(live.classifier().stats().identities, identities + 1);
    check(&live, &tcp_flows(&addrs)).unwrap();
}

/// A stream of pods, each of a peer class of its own (`canary == 'cK'`, one rule per
/// K), each added and removed: every add re-lowers the policy reading it and rebinds
/// the `web` programs, so the part the add before built holds no bound program any
/// more and is built again with this add's programs instead of a part being added
/// (`IdentityClassifier::with_programs_merged`): the parts stay at two, no compaction
/// starts, and each generation classifies as a fresh build and `eval` do. Without
/// merging, each add is one more part.
#[test]
fn new_peer_classes_one_after_another_keep_one_part() {
    let yaml = canary_rules(12);
    for merge in [true, false] {
        no_merge(!merge);
        let mut live = live_of(&yaml);
        let parts = live.classifier().stats().parts;
        let mut most = parts;
        let mut flows = Vec::new();
        for (s, d) in [
            ("10.0.0.7", "10.0.0.1"),
            ("10.0.0.2", "10.0.0.1"),
            ("10.0.0.1", "10.0.0.7"),
        ] {
            for port in [8000, 8003, 8011, 8080, 9090] {
                flows.push(
                    FlowKey::new(s.parse().unwrap(), d.parse().unwrap(), 6, 1234, port).unwrap(),
                );
            }
        }
        for k in 0..12u16 {
            let mut pod = endpoint(&live, "db-1");
            pod.key.name = format!("canary-{k}");
            let at = format!("10.0.1.{k}");
            pod.nets = vec![host(&at)];
            pod.labels
                .retain(|l, _| l.starts_with("projectcalico.org/"));
            pod.labels.insert("canary".into(), format!("c{k}"));
            let key = pod.key.clone();
            assert_eq!(live.add_endpoint(pod).unwrap(), Applied::Fast, "add {k}");
            let now = live.classifier().stats().parts;
            let mut flows = flows.clone();
            for port in [8000 + k, 8001 + k, 8080] {
                flows.push(
                    FlowKey::new(
                        at.parse().unwrap(),
                        "10.0.0.1".parse().unwrap(),
                        6,
                        1234,
                        port,
                    )
                    .unwrap(),
                );
            }
            most = most.max(now);
            if merge {
                assert!(now <= parts + 1, "add {k}: {now} parts (from {parts})");
                assert!(live.compaction.is_none(), "add {k}: a compaction started");
            }
            check(&live, &flows).unwrap();
            assert_eq!(live.remove_endpoint(&key).unwrap(), Applied::Fast);
            check(&live, &flows).unwrap();
        }
        if !merge {
            assert!(most >= parts + 4, "without merging: at most {most} parts");
        }
    }
}

/// `CANARY` with a policy `many` allowing TCP 8000 + K to `web` from `canary ==
/// 'cK'`, K < n: each pod `canary: cK` is a peer class of its own.
fn canary_rules(n: u16) -> String {
    let rules: String = (0..n)
        .map(|k| {
            format!(
                "  - action: Allow\n    protocol: TCP\n    source: {{selector: canary == 'c{k}'}}\n    destination: {{ports: [{}]}}\n",
                8000 + k
            )
        })
        .collect();
    format!(
        "{CANARY}---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: many, namespace: ns}}\nspec:\n  selector: app == 'web'\n  ingress:\n{rules}"
    )
}

/// A compaction that finishes while pods of new peer classes came and went: the
/// keys of pods added and removed since are in neither store and skipped, and the
/// one still there (a new peer class among several changes, which the endpoint path
/// refuses to take at once) is caught up on its own, so the adopted generation is
/// the build plus that pod's part, not a rebuild (before, such a catch-up was a
/// full rebuild each time and never caught up). It classifies as a fresh build and
/// `eval` do.
#[test]
fn a_catch_up_takes_new_peer_classes_one_at_a_time() {
    no_merge(true);
    let mut live = live_of(&canary_rules(16));
    let pod = |live: &Live, k: u16| {
        let mut e = endpoint(live, "db-1");
        e.key.name = format!("canary-{k}");
        e.nets = vec![host(&format!("10.0.1.{k}"))];
        e.labels.retain(|l, _| l.starts_with("projectcalico.org/"));
        e.labels.insert("canary".into(), format!("c{k}"));
        e
    };
    let addrs: Vec<String> = (0..16).map(|k| format!("10.0.1.{k}")).collect();
    let mut all: Vec<&str> = addrs.iter().map(String::as_str).collect();
    all.extend(["10.0.0.1", "10.0.0.2"]);
    let flows = tcp_flows(&all);
    hold(true);
    let mut k = 0;
    while live.compaction.is_none() {
        let e = pod(&live, k);
        let key = e.key.clone();
        assert_eq!(live.add_endpoint(e).unwrap(), Applied::Fast);
        assert_eq!(live.remove_endpoint(&key).unwrap(), Applied::Fast);
        k += 1;
        assert!(k <= COMPACT_AT as u16, "no compaction started");
    }
    // While it builds: one pod comes and goes, another stays.
    let e = pod(&live, k);
    let key = e.key.clone();
    assert_eq!(live.add_endpoint(e).unwrap(), Applied::Fast);
    assert_eq!(live.remove_endpoint(&key).unwrap(), Applied::Fast);
    assert_eq!(live.add_endpoint(pod(&live, k + 1)).unwrap(), Applied::Fast);
    finish(&live);
    hold(false);
    // A replica of web-1: the finished compaction is handed a catch-up with the keys
    // since and this one, then adopted.
    let replica = copy_at(&endpoint(&live, "web-1"), "web-2", "10.0.2.1");
    assert_eq!(live.add_endpoint(replica).unwrap(), Applied::Fast);
    live.settle();
    assert!(live.compaction.is_none());
    assert_eq!(
        live.classifier().stats().parts,
        2,
        "the build and the staying pod's part (1: a rebuild)"
    );
    check(&live, &flows).unwrap();
}

/// `n` policies applying to `web`, each allowing TCP 8080 from `has(wide)`.
fn wide_readers(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: wide-{i}, namespace: ns}}\nspec:\n  selector: app == 'web'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{selector: has(wide)}}\n    destination: {{ports: [8080]}}\n"
            )
        })
        .collect()
}

/// The refusals of the new-peer-class path, each a rebuild that classifies as a
/// fresh build and `eval` do: a class more than `NEW_CLASS_POLICIES` policies read
/// (at the limit it takes the path), a class a profile's rules read, and several
/// endpoint changes at once among which an add is a new peer class (refused before
/// anything is changed; one at a time they take the path).
#[test]
fn new_peer_class_refusals_rebuild() {
    let pod = |live: &Live, name: &str, at: &str, label: (&str, &str)| {
        let mut e = endpoint(live, "db-1");
        e.key.name = name.into();
        e.nets = vec![host(at)];
        e.labels.retain(|l, _| l.starts_with("projectcalico.org/"));
        e.labels.insert(label.0.into(), label.1.into());
        e
    };
    let flows = tcp_flows(&["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"]);
    for (n, want) in [
        (NEW_CLASS_POLICIES, Applied::Fast),
        (NEW_CLASS_POLICIES + 1, Applied::Rebuilt),
    ] {
        let mut live = live_of(&format!("{CANARY}{}", wide_readers(n)));
        let e = pod(&live, "wide-1", "10.0.1.1", ("wide", "x"));
        assert_eq!(live.add_endpoint(e).unwrap(), want, "{n} policies read it");
        check(&live, &flows).unwrap();
    }
    let profile = "---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: edge}\nspec:\n  ingress:\n  - action: Allow\n    source: {selector: has(prof)}\n";
    let mut live = live_of(&format!("{CANARY}{profile}"));
    let e = pod(&live, "prof-1", "10.0.1.1", ("prof", "x"));
    assert_eq!(
        live.add_endpoint(e).unwrap(),
        Applied::Rebuilt,
        "a profile reads it"
    );
    check(&live, &flows).unwrap();
    // Two new peer classes in one change, then each alone.
    let yaml = format!("{CANARY}{}", wide_readers(1)).replace("has(wide)", "wide == 'a'")
        + &wide_readers(1)
            .replace("wide-0", "wide-b")
            .replace("has(wide)", "wide == 'b'");
    for together in [true, false] {
        let mut live = live_of(&yaml);
        let a = pod(&live, "wide-a", "10.0.1.1", ("wide", "a"));
        let b = pod(&live, "wide-b", "10.0.1.2", ("wide", "b"));
        let mut next = live.cluster().clone();
        next.endpoints.push(Arc::new(a.clone()));
        next.endpoints.push(Arc::new(b.clone()));
        next.endpoints
            .sort_by(|x, y| endpoint_rank(&x.key).cmp(&endpoint_rank(&y.key)));
        if together {
            let classes = live.classifier().stats().identities;
            let keys = [a.key.clone(), b.key.clone()];
            assert_eq!(live.update(&next, &keys).unwrap(), Applied::Rebuilt);
            assert!(live.classifier().stats().identities > classes);
        } else {
            assert_eq!(live.add_endpoint(a).unwrap(), Applied::Fast);
            assert_eq!(live.add_endpoint(b).unwrap(), Applied::Fast);
        }
        same_store(&live, &next, &flows).unwrap();
        check(&live, &flows).unwrap();
    }
}

/// After an incremental policy change the spares' identities are no longer known to
/// be in the lists that change resolved: a new peer class that took a spare before
/// the change gets an identity of its own after it, while a
/// replica of a pod that joined a spare still joins its identity.
#[test]
fn spares_are_dropped_after_an_incremental_policy_change() {
    let read = crate::policy::read_text(READ_BY_NAMED_PORT, "test", crate::model::Format::Yaml)
        .expect("reads");
    let mut resources: Vec<crate::model::Resource> =
        read.items.iter().map(|l| l.resource.clone()).collect();
    let cluster = crate::policy::build(read).expect("builds").cluster;
    let mut live = Live::new(cluster, BuildConfig::default()).expect("builds");
    let addrs = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "10.0.0.5",
        "240.0.0.1",
    ];
    let with = |resources: &mut Vec<crate::model::Resource>,
                name: &str,
                addr: &str,
                app: &str,
                port: u16| {
        let crate::model::Resource::WorkloadEndpoint(mut o) = resources[resources
            .iter()
            .position(|r| r.metadata().name == "web-1")
            .unwrap()]
        .clone() else {
            panic!("a workload");
        };
        o.metadata.name = name.into();
        o.metadata.labels.insert("app".into(), app.into());
        o.spec.ip_networks = vec![crate::model::Net::parse(addr).unwrap()];
        o.spec.ports[0].port = port;
        let r = crate::model::Resource::WorkloadEndpoint(o);
        let k = store_key(&r);
        resources.push(r);
        k
    };
    let k = with(&mut resources, "new-1", "10.0.0.3/32", "new", 8080);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[k]).unwrap(), Applied::Fast);
    // An incremental policy change: the egress rule naming `http` now denies.
    let (p, pkey) = policy_p(&resources);
    if let crate::model::Resource::NetworkPolicy(o) = &mut resources[p] {
        o.spec.egress[0].action = crate::model::RuleAction::Deny;
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[pkey]).unwrap(), Applied::Incremental);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // A replica of the pod on the spare: its bound identity stays an exemplar.
    let k = with(&mut resources, "new-2", "10.0.0.4/32", "new", 8080);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[k]).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // A new peer class on the other port's spare: that spare is dropped now, so it
    // gets an identity of its own.
    let k = with(&mut resources, "new-3", "10.0.0.5/32", "newer", 9090);
    let next = Cluster::from_resources(&resources).unwrap();
    let identities = live.classifier().stats().identities;
    assert_eq!(live.update(&next, &[k]).unwrap(), Applied::Fast);
    assert_eq!(live.classifier().stats().identities, identities + 1);
    check(&live, &tcp_flows(&addrs)).unwrap();
}

/// A pod relabelled after an incremental policy change: the change put the pod's
/// ingress program (only it has that one) in a part of its own. The relabel unbinds
/// the pod and adds it back with the same ingress program and a new egress one
/// (an egress policy no pod had now applies); the new egress program's trees merge into that
/// part, which must keep the ingress program the pod is bound to next (it was
/// dropped as bound by no host, and the pod's ingress lookups found no program:
/// `Deny` with no policy).
#[test]
fn a_relabel_keeps_its_program_through_a_merged_part() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ing}
spec:
  selector: has(app)
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: role == 'web'}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: eg}
spec:
  selector: app == 'db'
  types: [Egress]
  egress:
  - action: Deny
    destination: {selector: role == 'web'}
  - action: Allow
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w, namespace: ns, labels: {role: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
"#;
    let (mut resources, mut live) = resources_and_live(yaml);
    let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
    let at = |resources: &[crate::model::Resource], name: &str| {
        resources
            .iter()
            .position(|r| r.metadata().name == name)
            .expect("resource")
    };
    // The ingress policy now denies what it allowed.
    let i = at(&resources, "ing");
    let key = store_key(&resources[i]);
    if let crate::model::Resource::GlobalNetworkPolicy(o) = &mut resources[i] {
        o.spec.ingress[0].action = crate::model::RuleAction::Deny;
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Incremental);
    assert_eq!(live.classifier().stats().parts, 2);
    check(&live, &tcp_flows(&addrs)).unwrap();
    // `a` relabelled: still `has(app)` (the same ingress program), now under `eg`.
    let i = at(&resources, "a");
    let key = store_key(&resources[i]);
    if let crate::model::Resource::WorkloadEndpoint(o) = &mut resources[i] {
        o.metadata.labels.insert("app".into(), "db".into());
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Fast);
    assert_eq!(
        live.classifier().stats().parts,
        2,
        "merged into the last part"
    );
    check(&live, &tcp_flows(&addrs)).unwrap();
}

/// An incremental change of a policy that reads no spare's class (its rules read
/// `app == 'db'` peers on port 22 only) keeps the spares: a pod of a new `app` with
/// `http` on 8080 still takes the identity of the spare of its shape (no identity
/// added), as before the change. A change of the policy naming `http` on a side
/// without a selector then drops the spares defining `http`: a pod with `http` on
/// 9090 gets an identity of its own. Each generation classifies as a fresh build and `eval` do.
#[test]
fn spares_no_changed_policy_reads_stay() {
    let yaml = format!(
        "{READ_BY_NAMED_PORT}---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: q, namespace: ns}}
spec:
  selector: app == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    source: {{selector: app == 'db'}}
    destination: {{ports: [22]}}
"
    );
    let read = crate::policy::read_text(&yaml, "test", crate::model::Format::Yaml).expect("reads");
    let mut resources: Vec<crate::model::Resource> =
        read.items.iter().map(|l| l.resource.clone()).collect();
    let cluster = crate::policy::build(read).expect("builds").cluster;
    let mut live = Live::new(cluster, BuildConfig::default()).expect("builds");
    let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "240.0.0.1"];
    let change = |resources: &mut Vec<crate::model::Resource>, live: &mut Live, name: &str| {
        let i = resources
            .iter()
            .position(|r| r.metadata().name == name)
            .unwrap();
        let key = store_key(&resources[i]);
        if let crate::model::Resource::NetworkPolicy(o) = &mut resources[i] {
            let rule = if name == "q" {
                &mut o.spec.ingress[0]
            } else {
                &mut o.spec.egress[0]
            };
            rule.action = crate::model::RuleAction::Deny;
        }
        let next = Cluster::from_resources(resources.iter()).unwrap();
        assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Incremental);
        check(live, &tcp_flows(&addrs)).unwrap();
    };
    // A pod like `web-1` with another name, address and `app`.
    let add = |resources: &mut Vec<crate::model::Resource>,
               live: &mut Live,
               name: &str,
               addr: &str,
               app: &str,
               port: u16| {
        let crate::model::Resource::WorkloadEndpoint(mut o) = resources[resources
            .iter()
            .position(|r| r.metadata().name == "web-1")
            .unwrap()]
        .clone() else {
            panic!("a workload");
        };
        o.metadata.name = name.into();
        o.metadata.labels.insert("app".into(), app.into());
        o.spec.ip_networks = vec![crate::model::Net::parse(addr).unwrap()];
        o.spec.ports[0].port = port;
        let r = crate::model::Resource::WorkloadEndpoint(o);
        let k = store_key(&r);
        resources.push(r);
        let next = Cluster::from_resources(resources.iter()).unwrap();
        assert_eq!(live.update(&next, &[k]).unwrap(), Applied::Fast);
        check(live, &tcp_flows(&addrs)).unwrap();
    };
    change(&mut resources, &mut live, "q");
    let identities = live.classifier().stats().identities;
    add(
        &mut resources,
        &mut live,
        "new-1",
        "10.0.0.3/32",
        "new",
        8080,
    );
    assert_eq!(
        live.classifier().stats().identities,
        identities,
        "the spare's identity, kept through a change that does not read it"
    );
    // `p` names `http` on a side without a selector: the spare with `http` on 9090
    // goes (the class with 8080 has a bound exemplar now, `new-1`).
    change(&mut resources, &mut live, "p");
    let identities = live.classifier().stats().identities;
    add(
        &mut resources,
        &mut live,
        "new-2",
        "10.0.0.4/32",
        "newer",
        9090,
    );
    assert_eq!(live.classifier().stats().identities, identities + 1);
}

/// A policy letting `app == 'api'` reach `app == 'web'` on TCP 8080, one web and one
/// api endpoint: the store's resources and its live generation.
fn web_and_api() -> (Vec<crate::model::Resource>, Live) {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: ns}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api'}
    destination: {ports: [8080]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web-1, namespace: ns, labels: {app: web}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: ns, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
"#;
    resources_and_live(yaml)
}

/// A replica that joined on the fast path carries a label no selector read; a policy
/// then reads it, and the peer list it lowers to is, address for address, a list the
/// build saw — which the classifier has since extended by the replica. The change
/// must not take that list's known form (it would select the replica): it is
/// rebuilt, and the replica is not selected.
#[test]
fn a_list_equal_to_a_known_one_is_read_as_its_addresses() {
    let (mut resources, mut live) = web_and_api();
    let mut api2 = api2_at(&resources, "10.0.0.3/32");
    if let crate::model::Resource::WorkloadEndpoint(o) = &mut api2 {
        o.metadata.labels.insert("version".into(), "v2".into());
    }
    let key = store_key(&api2);
    resources.push(api2);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Fast);
    let (p, pkey) = policy_p(&resources);
    if let crate::model::Resource::NetworkPolicy(o) = &mut resources[p] {
        o.spec.ingress[0].source.selector = Some("app == 'api' && version != 'v2'".into());
    }
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[pkey]).unwrap(), Applied::Rebuilt);
    let flows: Vec<FlowKey> = ["10.0.0.2", "10.0.0.3"]
        .iter()
        .map(|s| {
            FlowKey::new(
                s.parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                6,
                1234,
                8080,
            )
            .unwrap()
        })
        .collect();
    check(&live, &flows).unwrap();
}

/// Back-to-back policy changes start a compaction at [`COMPACT_AT`] parts; changes
/// made while it runs (a policy change and a replica on the endpoint fast path) are
/// replayed onto it when it is adopted, and no change waits for a full rebuild: the
/// parts fall back without any change reporting [`Applied::Rebuilt`].
#[test]
fn a_compaction_replays_the_changes_made_while_it_ran() {
    no_merge(true);
    let (mut resources, mut live) = web_and_api();
    let (p, pkey) = policy_p(&resources);
    let set_port = |resources: &mut Vec<crate::model::Resource>, port: u16| {
        if let crate::model::Resource::NetworkPolicy(o) = &mut resources[p] {
            o.spec.ingress[0].destination.ports =
                vec![crate::model::Port::parse(&port.to_string()).unwrap()];
        }
    };
    let flows = |ports: std::ops::Range<u16>| -> Vec<FlowKey> {
        ["10.0.0.2", "10.0.0.3", "10.0.0.9"]
            .iter()
            .flat_map(|s| {
                ports.clone().map(move |port| {
                    FlowKey::new(
                        s.parse().unwrap(),
                        "10.0.0.1".parse().unwrap(),
                        6,
                        1234,
                        port,
                    )
                    .unwrap()
                })
            })
            .collect()
    };
    let all = flows(8080..8110);
    let mut port = 8080;
    while live.compaction.is_none() {
        port += 1;
        set_port(&mut resources, port);
        let next = Cluster::from_resources(&resources).unwrap();
        assert_eq!(
            live.update(&next, std::slice::from_ref(&pkey)).unwrap(),
            Applied::Incremental
        );
        assert!(port <= 8080 + COMPACT_AT as u16, "no compaction started");
    }
    assert!(live.classifier().stats().parts >= COMPACT_AT);
    // While it runs: a policy change and a replica of api-1.
    port += 1;
    set_port(&mut resources, port);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_ne!(
        live.update(&next, std::slice::from_ref(&pkey)).unwrap(),
        Applied::Rebuilt
    );
    let api2 = api2_at(&resources, "10.0.0.3/32");
    let key = store_key(&api2);
    resources.push(api2);
    let next = Cluster::from_resources(&resources).unwrap();
    assert_eq!(live.update(&next, &[key]).unwrap(), Applied::Fast);
    if let Some(c) = &live.compaction {
        assert_eq!(c.since.len(), 2);
    }
    live.settle();
    assert!(live.compaction.is_none());
    assert!(
        live.classifier().stats().parts <= 2,
        "parts after adoption: {}",
        live.classifier().stats().parts
    );
    same_store(&live, &next, &all).unwrap();
    check(&live, &all).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Long runs of policy changes mixed with endpoint changes, so that compactions
    /// start, run beside later changes and are adopted at random points (`settle`),
    /// by the next change after they finished at random points (`finish`: adopted,
    /// brought up inline or handed a catch-up) or whenever they finish: after every
    /// update the live generation classifies as a fresh build and `eval` do.
    #[test]
    fn compactions_classify_as_a_fresh_build_and_eval(
        (resources, flows) in store_and_flows(24),
        extra in prop::collection::vec(crate::lower::proptests::policy(), 1..4),
        steps in prop::collection::vec(
            ((prop_oneof![Just(0u8), Just(3), Just(5), Just(5), Just(5), Just(6)], any::<Index>(), any::<Index>(), 0usize..8), 0u8..3),
            8..30,
        ),
        merge in any::<bool>(),
    ) {
        // Merging keeps the parts down: without it, compactions start sooner.
        no_merge(!merge);
        let mut resources = one_host_per_endpoint(resources);
        let Ok(cluster) = Cluster::from_resources(&resources) else { return Ok(()) };
        let mut live = Live::new(cluster, BuildConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let added: Vec<IpNet> = NEW_V4.iter().chain(&NEW_V6).map(|a| host(a)).collect();
        let flows = flows_with(&flows, &added);
        for (n, (op, pause)) in steps.into_iter().enumerate() {
            let changed = change(&mut resources, op, n, &extra);
            let Ok(next) = Cluster::from_resources(&resources) else { return Ok(()) };
            live.update(&next, &changed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match pause {
                1 => live.settle(),
                2 => finish(&live),
                _ => {}
            }
            same_store(&live, &next, &flows)?;
            check(&live, &flows)?;
        }
    }
}

/// The live generation classifies `flows` as a fresh [`Live::new`] of `next` does.
fn same_as_new(live: &Live, next: &Cluster, flows: &[FlowKey]) -> Result<(), TestCaseError> {
    let new = Live::new(next.clone(), BuildConfig::default())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for k in flows {
        let flow = Flow::from_key(k);
        let got = live
            .evaluation(&flow)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = new
            .evaluation(&flow)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, want, "live vs Live::new of next, flow {}", flow);
    }
    Ok(())
}

/// The position and store key of `web_and_api`'s policy `p`.
fn policy_p(resources: &[crate::model::Resource]) -> (usize, ResourceKey) {
    let p = resources
        .iter()
        .position(|r| r.metadata().name == "p")
        .expect("web_and_api has a policy p");
    (p, store_key(&resources[p]))
}

/// Waits for the running compaction's thread to finish.
fn finish(live: &Live) {
    if let Some(c) = &live.compaction {
        while !c.build.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Sets whether this thread's compactions count as running ([`Compaction::finished`]).
fn hold(on: bool) {
    HOLD.with(|h| h.set(on));
}

/// Sets whether this thread's changes always add a tree part (`NO_MERGE`).
fn no_merge(on: bool) {
    NO_MERGE.with(|h| h.set(on));
}

/// From `RAISE_AT` tree parts on, a change running at a raised priority gives the
/// running compaction's thread its own nice value (once); below that, or at the
/// thread's own priority, it does not. Needs root (CAP_SYS_NICE) to raise a priority.
#[test]
fn a_change_at_a_raised_priority_raises_a_compaction_from_raise_at_parts() {
    if crate::sys::euid() != 0 {
        // As the AF_XDP tests do: `.ci/run` (root) sets TIERGATE_REQUIRE_AFXDP=1, which
        // makes a skip a failure.
        assert!(
            std::env::var("TIERGATE_REQUIRE_AFXDP").as_deref() != Ok("1"),
            "not root, and TIERGATE_REQUIRE_AFXDP=1"
        );
        crate::errln!(
            "skipped a_change_at_a_raised_priority_raises_a_compaction_from_raise_at_parts: not root (raising a thread's priority needs CAP_SYS_NICE)"
        );
        return;
    }
    use crate::model::Resource;
    no_merge(true);
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(true));
    STALL.with(|s| *s.borrow_mut() = Some(Arc::clone(&stall)));
    let (mut resources, mut live) = web_and_api();
    let (p, pkey) = policy_p(&resources);
    let nice = |live: &Live| live.compaction.as_ref().and_then(|c| c.raised_to);
    let mut port = 8080u16;
    let mut change = |live: &mut Live, resources: &mut Vec<Resource>| {
        port += 1;
        if let Resource::NetworkPolicy(o) = &mut resources[p] {
            o.spec.ingress[0].destination.ports =
                vec![crate::model::Port::parse(&port.to_string()).unwrap()];
        }
        let next = Cluster::from_resources(&*resources).unwrap();
        assert_eq!(
            live.update(&next, std::slice::from_ref(&pkey)).unwrap(),
            Applied::Incremental
        );
    };
    // At the thread's own priority: parts pile up past RAISE_AT, nothing is raised.
    while live.classifier.stats().parts <= RAISE_AT {
        change(&mut live, &mut resources);
        assert!(live.compaction.is_some() || live.classifier.stats().parts < COMPACT_AT);
        assert_eq!(nice(&live), None);
    }
    // At a lower priority than the compaction's: it is left alone.
    {
        let _lowered = crate::sys::Nice::set(2).unwrap();
        change(&mut live, &mut resources);
        assert_eq!(nice(&live), None);
    }
    // At a raised priority: the next change raises the stalled compaction, once its
    // thread runs (a thread not yet scheduled has published no id to raise; another
    // test on the other core can hold it off that long).
    let started = std::time::Instant::now();
    while live
        .compaction
        .as_ref()
        .is_some_and(|c| c.tid.load(std::sync::atomic::Ordering::Relaxed) == 0)
        && started.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    {
        let _raised = crate::sys::Nice::set(-3).unwrap();
        change(&mut live, &mut resources);
        assert_eq!(nice(&live), Some(-3));
        let tid = live
            .compaction
            .as_ref()
            .unwrap()
            .tid
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_ne!(tid, 0);
        // What the kernel says of the compaction thread.
        assert_eq!(crate::sys::thread_nice(tid).unwrap(), -3);
    }
    stall.store(false, std::sync::atomic::Ordering::Release);
    STALL.with(|s| *s.borrow_mut() = None);
    finish(&live);
    no_merge(false);
}

/// A compaction that finishes with several policy keys changed since its copy is
/// handed a catch-up on its thread, this change's keys included, while the live
/// generation takes the change; a policy change and a replica made while the
/// catch-up runs are brought up inline by the next change that finds it finished
/// (a replica's removal), which is applied to it and adopts it. After every change
/// the live generation classifies as a fresh `Live::new` of the store, a fresh build
/// and `eval` do.
#[test]
fn a_finished_compaction_catches_up_on_its_thread() {
    use crate::model::Resource;
    no_merge(true);
    let (mut resources, mut live) = web_and_api();
    let (p, _) = policy_p(&resources);
    // A second policy, so that changes can touch two policy keys.
    let mut q = resources[p].clone();
    if let Resource::NetworkPolicy(o) = &mut q {
        o.metadata.name = "q".into();
        o.spec.selector = Some("app == 'api'".into());
    }
    resources.push(q);
    let q = resources.len() - 1;
    let (pkey, qkey) = (store_key(&resources[p]), store_key(&resources[q]));
    let set_port = |resources: &mut Vec<Resource>, at: usize, port: u16| {
        if let Resource::NetworkPolicy(o) = &mut resources[at] {
            o.spec.ingress[0].destination.ports =
                vec![crate::model::Port::parse(&port.to_string()).unwrap()];
        }
    };
    let mut flows = Vec::new();
    for (s, d) in [
        ("10.0.0.2", "10.0.0.1"),
        ("10.0.0.3", "10.0.0.1"),
        ("10.0.0.9", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.2"),
        ("10.0.0.3", "10.0.0.2"),
        ("10.0.0.1", "10.0.0.3"),
    ] {
        for port in 8079..8110 {
            flows
                .push(FlowKey::new(s.parse().unwrap(), d.parse().unwrap(), 6, 1234, port).unwrap());
        }
    }
    let mut next = Cluster::from_resources(&resources).unwrap();
    let mut port = 8080;
    let apply = |live: &mut Live,
                 resources: &mut Vec<Resource>,
                 next: &mut Cluster,
                 keys: &[ResourceKey]| {
        *next = Cluster::from_resources(&*resources).unwrap();
        let applied = live.update(next, keys).unwrap();
        same_store(live, next, &flows).unwrap();
        check(live, &flows).unwrap();
        same_as_new(live, next, &flows).unwrap();
        applied
    };
    apply(
        &mut live,
        &mut resources,
        &mut next,
        std::slice::from_ref(&qkey),
    );
    hold(true);
    while live.compaction.is_none() {
        port += 1;
        set_port(&mut resources, p, port);
        let keys = [pkey.clone()];
        assert_eq!(
            apply(&mut live, &mut resources, &mut next, &keys),
            Applied::Incremental
        );
        assert!(port <= 8080 + COMPACT_AT as u16, "no compaction started");
    }
    // While it builds: both policies and a replica change.
    for (at, key) in [(p, &pkey), (q, &qkey)] {
        port += 1;
        set_port(&mut resources, at, port);
        let keys = [key.clone()];
        assert_eq!(
            apply(&mut live, &mut resources, &mut next, &keys),
            Applied::Incremental
        );
    }
    let api2 = api2_at(&resources, "10.0.0.3/32");
    let a2key = store_key(&api2);
    resources.push(api2);
    let keys = [a2key.clone()];
    assert_eq!(
        apply(&mut live, &mut resources, &mut next, &keys),
        Applied::Fast
    );
    assert_eq!(live.compaction.as_ref().map(|c| c.since.len()), Some(3));
    // Finished with two policy keys behind: a catch-up on its thread, with this change.
    finish(&live);
    hold(false);
    port += 1;
    set_port(&mut resources, p, port);
    let keys = [pkey.clone()];
    assert_eq!(
        apply(&mut live, &mut resources, &mut next, &keys),
        Applied::Incremental
    );
    assert_eq!(
        live.compaction.as_ref().map(|c| c.since.len()),
        Some(0),
        "handed off"
    );
    // While it catches up: a policy change and a replica's move.
    hold(true);
    port += 1;
    set_port(&mut resources, q, port);
    let keys = [qkey.clone()];
    assert_eq!(
        apply(&mut live, &mut resources, &mut next, &keys),
        Applied::Incremental
    );
    let at = resources
        .iter()
        .position(|r| store_key(r) == a2key)
        .unwrap();
    resources[at] = {
        let mut moved = api2_at(&resources, "10.0.0.4/32");
        moved.metadata_mut().name = a2key.name.clone();
        moved
    };
    let keys = [a2key.clone()];
    assert_eq!(
        apply(&mut live, &mut resources, &mut next, &keys),
        Applied::Fast
    );
    assert_eq!(live.compaction.as_ref().map(|c| c.since.len()), Some(2));
    // Finished with one policy and one endpoint key behind: brought up inline with
    // this change (the replica removed) and adopted.
    finish(&live);
    hold(false);
    let parts = live.classifier().stats().parts;
    resources.remove(at);
    assert_eq!(
        apply(&mut live, &mut resources, &mut next, &keys),
        Applied::Fast
    );
    assert!(live.compaction.is_none(), "adopted");
    assert!(
        live.classifier().stats().parts < parts.min(4),
        "parts after adoption: {} (before: {parts})",
        live.classifier().stats().parts
    );
    // And the generation goes on taking changes.
    port += 1;
    set_port(&mut resources, p, port);
    let keys = [pkey.clone()];
    assert_eq!(
        apply(&mut live, &mut resources, &mut next, &keys),
        Applied::Incremental
    );
}

/// Pod addresses are reused: a pod removed on the fast path, then a pod at its
/// address. One with the removed pod's label set, or with a peer class of its own
/// that no list lowered while the address was the removed pod's names exactly,
/// takes the fast path; each generation classifies as a fresh build and `eval` do.
/// A list of the policies re-lowered for a new peer class that is, address for
/// address, one lowered for the removed pod (`app == 'db'` picked only `db-1` at
/// `10.0.0.3`; `has(canary)` picks only the canary there) is stale in the
/// classifier: the policy whose memo still names it (`app == 'db'`) is lowered
/// again too, the list's old form is forgotten, and the add stays on the fast path
/// (`Live::try_add_class` says why).
#[test]
fn a_pod_at_a_removed_pods_address() {
    let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "240.0.0.1"];
    let canary_at = |live: &Live, gone: &Endpoint| {
        let mut canary = endpoint(live, "web-1");
        canary.key.name = "canary-1".into();
        canary.nets = gone.nets.clone();
        canary.labels.insert("canary".into(), "true".into());
        canary.ports.clear();
        canary
    };
    // A new peer class at `web-1`'s address (its lists: the named-port list of
    // `api`'s egress rule with `api-1`, no list of `has(canary)`'s content).
    for victim in ["web-1", "api-1"] {
        let mut live = live_of(CANARY);
        let gone = endpoint(&live, victim);
        let canary = canary_at(&live, &gone);
        assert_eq!(live.remove_endpoint(&gone.key).unwrap(), Applied::Fast);
        let identities = live.classifier().stats().identities;
        assert_eq!(
            live.add_endpoint(canary).unwrap(),
            Applied::Fast,
            "{victim}"
        );
        assert_eq!(live.classifier().stats().identities, identities + 1);
        check(&live, &tcp_flows(&addrs)).unwrap();
    }
    // The removed pod's label set at its address, for each pod.
    for victim in ["web-1", "api-1", "db-1"] {
        let mut live = live_of(CANARY);
        let gone = endpoint(&live, victim);
        let mut again = gone.clone();
        again.key.name = format!("{victim}-again");
        assert_eq!(live.remove_endpoint(&gone.key).unwrap(), Applied::Fast);
        assert_eq!(live.add_endpoint(again).unwrap(), Applied::Fast, "{victim}");
        check(&live, &tcp_flows(&addrs)).unwrap();
    }
    // A pod of a new `app` at a removed pod's address takes the spare identity of
    // its shape, as it would at a new address.
    let mut live = live_of(READ_BY_NAMED_PORT);
    let gone = endpoint(&live, "api-1");
    let mut new = endpoint(&live, "web-1");
    new.key.name = "new-1".into();
    new.nets = gone.nets.clone();
    new.labels.insert("app".into(), "new".into());
    assert_eq!(live.remove_endpoint(&gone.key).unwrap(), Applied::Fast);
    let identities = live.classifier().stats().identities;
    assert_eq!(live.add_endpoint(new).unwrap(), Applied::Fast);
    assert_eq!(live.classifier().stats().identities, identities);
    check(&live, &tcp_flows(&["10.0.0.1", "10.0.0.2", "240.0.0.1"])).unwrap();
    // The colliding list: the fast path, the old form forgotten, and the generation
    // classifying as a fresh build's; so do the changes after it (the canary removed,
    // a `db` pod at the address again, which the lists lowered since read as `db`).
    let mut live = live_of(CANARY);
    let gone = endpoint(&live, "db-1");
    let canary = canary_at(&live, &gone);
    assert_eq!(live.remove_endpoint(&gone.key).unwrap(), Applied::Fast);
    let layers = live.classifier().stats().list_bytes;
    assert_eq!(live.add_endpoint(canary.clone()).unwrap(), Applied::Fast);
    assert!(live.classifier().stats().list_bytes > layers);
    check(&live, &tcp_flows(&addrs)).unwrap();
    assert_eq!(live.remove_endpoint(&canary.key).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    let mut again = gone.clone();
    again.key.name = "db-1-again".into();
    live.add_endpoint(again).unwrap();
    check(&live, &tcp_flows(&addrs)).unwrap();
    // With a second `db` pod the list `app == 'db'` lowered to names both: no
    // collision, the fast path.
    let yaml = format!(
        "{CANARY}---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: db-2, namespace: ns, labels: {{app: db}}}}
spec: {{orchestrator: k8s, ipNetworks: [10.0.0.5/32]}}
"
    );
    let mut live = live_of(&yaml);
    let gone = endpoint(&live, "db-1");
    let canary = canary_at(&live, &gone);
    assert_eq!(live.remove_endpoint(&gone.key).unwrap(), Applied::Fast);
    assert_eq!(live.add_endpoint(canary).unwrap(), Applied::Fast);
    check(
        &live,
        &tcp_flows(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5"]),
    )
    .unwrap();
}

/// A stale round (the colliding list of `a_pod_at_a_removed_pods_address`) keeps
/// the spares: the policies lowered again are lowered with the spares in the store,
/// whose hosts are ghosts in the classifier, so their lists hold the spares'
/// identities. Here `api`, lowered again because it still names the stale list,
/// also allows UDP from every namespace's pods without an `app` label, which only
/// the spares are; a pod without one in another namespace then still takes its
/// namespace's spare identity, and `api` allows it.
#[test]
fn a_stale_round_keeps_the_spares_its_policies_read() {
    let others: String = (0..40)
        .map(|i| {
            format!(
                "---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: o-{i}, namespace: o{i}, labels: {{app: other}}}}
spec: {{orchestrator: k8s, ipNetworks: [10.1.0.{i}/32]}}
"
            )
        })
        .collect();
    let addrs = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.1.0.1",
        "10.1.1.1",
        "240.0.0.1",
    ];
    // TCP, and UDP (what `api`'s rule from every namespace allows).
    let mut flows = tcp_flows(&addrs);
    for s in addrs {
        for d in addrs {
            flows.extend(FlowKey::new(
                s.parse().unwrap(),
                d.parse().unwrap(),
                17,
                40000,
                53,
            ));
        }
    }
    for every_namespace in [false, true] {
        let mut yaml = format!("{CANARY}{others}");
        if every_namespace {
            yaml = yaml.replace(
                "    source: {selector: app == 'db'}\n",
                "    source: {selector: app == 'db'}\n  - action: Allow\n    protocol: UDP\n    source: {namespaceSelector: all(), selector: '!has(app)'}\n",
            );
        }
        let mut live = live_of(&yaml);
        let spares = live.spares.len();
        assert!(spares >= 40, "{spares} spares");
        let gone = endpoint(&live, "db-1");
        let mut canary = endpoint(&live, "web-1");
        canary.key.name = "canary-1".into();
        canary.nets = gone.nets.clone();
        canary.labels.insert("canary".into(), "true".into());
        canary.ports.clear();
        assert_eq!(live.remove_endpoint(&gone.key).unwrap(), Applied::Fast);
        assert_eq!(
            live.add_endpoint(canary).unwrap(),
            Applied::Fast,
            "{every_namespace}"
        );
        check(&live, &flows).unwrap();
        assert_eq!(live.spares.len(), spares, "{every_namespace}");
        // A pod without `app` in `o1`: its namespace's spare identity.
        let mut new = endpoint(&live, "o-1");
        new.key.name = "new-1".into();
        new.nets = vec!["10.1.1.1/32".parse().unwrap()];
        new.labels.remove("app");
        let identities = live.classifier().stats().identities;
        assert_eq!(live.add_endpoint(new).unwrap(), Applied::Fast);
        assert_eq!(
            live.classifier().stats().identities,
            identities,
            "{every_namespace}"
        );
        check(&live, &flows).unwrap();
    }
}

const COVERED: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: cover, namespace: a}
spec: {nets: [10.0.0.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: client-out, namespace: a}
spec:
  selector: app == 'client'
  egress:
  - action: Allow
    protocol: TCP
    destination: {notSelector: app == 'web'}
  - action: Deny
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client-1, namespace: a, labels: {app: client}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-1, namespace: b, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.2/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api-2, namespace: b, labels: {app: api}}
spec: {orchestrator: k8s, ipNetworks: [10.0.0.3/32]}
"#;

/// A namespaced rule with only a `notSelector` selects its own namespace's
/// endpoints and network sets (the positive selector Calico adds). A network set
/// of that namespace covering pods of another puts their addresses in the rule's
/// list unless the `notSelector` matches the pod, so two such pods that differ only
/// in that `notSelector` are different peers, though the positive selector matches
/// neither pod itself: a pod added or relabelled into the excluded label set must
/// not take the identity of one outside it.
#[test]
fn a_not_selector_under_a_covering_network_set_splits_peers() {
    let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    let verdict = |live: &Live, dst: &str| {
        let flow = crate::cluster::Flow {
            src: "10.0.0.1".parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            l4: crate::cluster::L4::Ports { src: 1000, dst: 80 },
        };
        live.evaluation(&flow).unwrap().reporters[0]
            .enforced
            .verdict
    };
    // A `web` pod in `b`: out of the list, denied.
    let mut live = live_of(COVERED);
    assert_eq!(verdict(&live, "10.0.0.2"), crate::cluster::Verdict::Allow);
    let mut web = copy_at(&endpoint(&live, "api-1"), "web-1", "10.0.0.4");
    web.labels.insert("app".into(), "web".into());
    live.add_endpoint(web).unwrap();
    check(&live, &tcp_flows(&addrs)).unwrap();
    assert_eq!(verdict(&live, "10.0.0.4"), crate::cluster::Verdict::Deny);
    // A pod with a label set no selector tells from `api`'s: `api`'s identity, on
    // the fast path.
    let mut other = copy_at(&endpoint(&live, "api-1"), "other-1", "10.0.0.5");
    other.labels.insert("app".into(), "other".into());
    assert_eq!(live.add_endpoint(other).unwrap(), Applied::Fast);
    check(&live, &tcp_flows(&addrs)).unwrap();
    assert_eq!(verdict(&live, "10.0.0.5"), crate::cluster::Verdict::Allow);
    // `api-2` relabelled `web`, through an update of the store.
    let mut live = live_of(COVERED);
    let relabelled = COVERED.replace(
        "{name: api-2, namespace: b, labels: {app: api}}",
        "{name: api-2, namespace: b, labels: {app: web}}",
    );
    let read =
        crate::policy::read_text(&relabelled, "test", crate::model::Format::Yaml).expect("reads");
    let next = crate::policy::build(read).expect("builds").cluster;
    let key = endpoint(&live, "api-2").key;
    live.update(&next, &[key]).unwrap();
    check(&live, &tcp_flows(&addrs)).unwrap();
    assert_eq!(verdict(&live, "10.0.0.3"), crate::cluster::Verdict::Deny);
    assert_eq!(verdict(&live, "10.0.0.2"), crate::cluster::Verdict::Allow);
}
