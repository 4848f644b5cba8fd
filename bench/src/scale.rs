//! `bench scale`: cluster-scale policy generations on synthetic clusters.
//!
//! Clusters: `--pods` workload endpoints over namespaces with `app`, `shard` (and, for
//! `--seed` other than 0, `tier`) labels and one named port `http` each, and
//! `--policies` namespaced policies, half of them staged, each selecting an `app` and
//! allowing or denying from another `app` minus a `shard` (`notSelector`), with named
//! ports (`ports: [80, http]`, `notPorts: [http]` or `[22]`). `--seed 0` is exactly
//! the lowering bench's cluster (`bench/benches/lower.rs`); other seeds draw label
//! values, namespaces and rule peers from skewed random distributions (a few apps
//! hold most pods), so the tuning cluster is not the only one measured. `--nets` adds
//! rules naming CIDRs that contain pods (a peer `app` inside `10.0.32.0/19`, egress to
//! `0.0.0.0/0` less `10.0.0.0/8`, a `Deny` from `10.0.0.0/8` less a `notSelector`), so
//! pods sit in rule CIDRs and in two zones.
//!
//! Modes (one line per measurement, CPU and wall time in ms):
//! - `generation`: store → lowered set → identity classifier, from scratch, with
//!   memory of the published classifier and of the kept control state; with
//!   `--trees` also the per-endpoint trees of [`Classifier`] for comparison;
//! - `lookups`: the same keys through the identity classifier and the per-endpoint
//!   trees, alternating runs, with a verdict comparison;
//! - `churn`: pods added and removed through [`control::lower::Live`] (existing label
//!   set, new label set, and pods of a peer class no endpoint has: policies reading
//!   them, `canary == 'cK'` or a named port `p16`, are added first), one policy
//!   changed, p50/p99/max per kind, with each
//!   generation checked against a fresh full build on sampled keys; and pods at
//!   `--rate`/s while a thread classifies keys on the published generation. Changes
//!   go through [`control::lower::Live::update`] (the caller's store changed in
//!   place outside the timer); a policy change alternates with a full rebuild (`Live::set_cluster`);
//! - `pods`: steps 1 and 2 (known behaviour only) of `churn`: pods with an existing
//!   label set added and removed, and pods with a new label set no selector reads
//!   differently added, through [`control::lower::Live::update`];
//! - `pods-store`: the whole path a daemon takes for a pod change (existing label
//!   set, added then removed): a copy of the [`control::store::Store`] changed
//!   (`apply` / `delete`), [`control::store::Store::changed_keys`],
//!   [`Cluster::update`], [`control::lower::Live::update`], publish to the worker
//!   slot, the old store dropped (the store holds every key as `-f` file keys, as
//!   a daemon started with `-f` keeps them); CPU p50/p99 per step and CPU and wall p50/p99 of
//!   the whole, with the kept cluster checked against a fresh normalisation of the
//!   store at the end;
//! - `policies`: the control socket bench's store (`--policies` one-rule global
//!   policies over `--pods` endpoints), one policy's port changed per run,
//!   alternating `Live::update` and a full rebuild;
//! - `policy`: the cluster's policy changes alone, back to back through
//!   `Live::update` (no rebuild in between, so tree parts accumulate), after 100
//!   replicas joined on the endpoint fast path; CPU and wall p50/p99/max, how many
//!   took the incremental path, every 10th generation checked against a fresh build.
//!
//! `--nice N` runs every timed change at nice value N on its thread (the guard taken
//! just before the timer starts, dropped after), as `tiergate run --change-nice` does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use control::eval::Cluster;
use control::lower::{Applied, Live, lower};
use control::model::{
    EndpointPort, Net, Object, ObjectMeta, PolicySpec, Protocol, Resource, Rule,
    WorkloadEndpointSpec,
};
use dataplane::classifier::{BuildConfig, Classifier, IdentityClassifier};
use dataplane::program::{Classify, FlowKey, FlowVerdicts, proto};
use dataplane::worker::{ClassifierSlot, Published};

use crate::cputime;

const APPS: [&str; 8] = ["web", "db", "api", "cache", "queue", "auth", "log", "mon"];

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// generation, lookups, churn, pods, pods-store, policy or policies.
    #[arg(long, default_value = "generation")]
    mode: String,
    /// Workload endpoints.
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    /// Policies (half staged).
    #[arg(long, default_value_t = 200)]
    policies: usize,
    /// 0 = the lowering bench's cluster; other values draw skewed random clusters.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Repetitions (generation), changes per kind (churn).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Rules naming CIDRs that contain the pods: per policy an ingress rule from its
    /// peer `app` inside `10.0.32.0/19` (port 9090), an egress rule to `0.0.0.0/0`
    /// less `10.0.0.0/8`, and for every fourth a `Deny` from `10.0.0.0/8` less a
    /// `notSelector`.
    #[arg(long)]
    nets: bool,
    /// generation: also build the per-endpoint trees (`Classifier`).
    #[arg(long)]
    trees: bool,
    /// lookups: seconds per timed run.
    #[arg(long, default_value_t = 1.0)]
    duration: f64,
    /// churn: pods added or removed per second while traffic is classified.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// lookups: memory budget (MB) of the per-endpoint trees built for the comparison
    /// only (the identity classifier keeps the default budget). The default budget
    /// (256 MB) is too small for those trees on some clusters (`--seed 7`).
    #[arg(long, default_value_t = 2048)]
    trees_budget_mb: usize,
    /// lookups: `binth` of the per-endpoint comparison trees (1, the default build,
    /// resolves every leaf; larger values leave short lists, smaller trees).
    #[arg(long, default_value_t = 1)]
    trees_binth: usize,
    /// The nice value (-20..=19) each timed change runs at on its thread, as
    /// `tiergate run --change-nice` does (default: the thread's own). Below 0 needs
    /// CAP_SYS_NICE.
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: Option<i32>,
}

/// `--nice`, set once by [`main`].
static NICE: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();

/// A timed change starts: the thread at `--nice` until the guard is dropped.
fn changing() -> Option<control::sys::Nice> {
    let n = (*NICE.get()?)?;
    match control::sys::Nice::set(n) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("--nice {n}: {e}");
            std::process::exit(2);
        }
    }
}

/// A small deterministic generator (64-bit LCG, high bits).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Skewed: small values much more likely (min of two uniform draws, twice).
    pub fn skewed(&mut self, n: usize) -> usize {
        let a = self.below(n).min(self.below(n));
        a.min(self.below(n))
    }
}

/// The shape of pod `i` of a cluster: (namespace, labels, http port).
pub struct Shape {
    seed: u64,
    namespaces: usize,
    nets: bool,
}

impl Shape {
    pub fn new(seed: u64) -> Shape {
        let namespaces = if seed == 0 {
            21
        } else {
            5 + Rng::new(seed).below(40)
        };
        Shape {
            seed,
            namespaces,
            nets: false,
        }
    }

    /// With rules naming CIDRs that contain the pods (see `--nets`).
    pub fn with_nets(self, nets: bool) -> Shape {
        Shape { nets, ..self }
    }

    pub fn pod(&self, i: usize, rng: &mut Rng) -> Resource {
        let (ns, app, shard, port, tier) = if self.seed == 0 {
            (i % 21, i % 8, i % 13, 8000 + (i % 7) as u16, None)
        } else {
            (
                rng.skewed(self.namespaces),
                rng.skewed(APPS.len()),
                rng.below(13),
                8000 + rng.below(7) as u16,
                Some(rng.skewed(3)),
            )
        };
        let mut labels = BTreeMap::from([
            ("app".to_string(), APPS[app].to_string()),
            ("shard".to_string(), format!("s{shard}")),
        ]);
        if let Some(t) = tier {
            labels.insert("tier".to_string(), format!("t{t}"));
        }
        pod(
            &format!("pod{i}"),
            &format!("ns{ns}"),
            labels,
            addr(i),
            port,
        )
    }

    pub fn policy(&self, j: usize, rng: &mut Rng) -> Resource {
        let random = self.seed != 0;
        let mut pick = |n: usize, fixed: usize| if random { rng.skewed(n) } else { fixed };
        let sel = pick(8, j % 8);
        let ns = pick(self.namespaces, j % 21);
        let peers: Vec<(usize, usize)> = (0..6).map(|k| (pick(8, (j + k) % 8), k % 13)).collect();
        let rule = |k: usize| -> Rule {
            let destination = serde_json::json!({"ports": [80, "http"], "notPorts": [if k.is_multiple_of(2) { "http" } else { "22" }]});
            serde_json::from_value(serde_json::json!({
                "action": if k.is_multiple_of(3) { "Deny" } else { "Allow" },
                "protocol": "TCP",
                "source": {
                    "selector": format!("app == '{}'", APPS[peers[k].0]),
                    "notSelector": format!("shard == 's{}'", peers[k].1),
                },
                "destination": destination,
            }))
            .expect("rule")
        };
        let mut spec = PolicySpec {
            order: Some(j as f64),
            selector: Some(format!("app == '{}'", APPS[sel])),
            ingress: (0..4).map(rule).collect(),
            egress: (0..2).map(rule).collect(),
            ..PolicySpec::default()
        };
        if self.nets {
            let r = |v: serde_json::Value| -> Rule { serde_json::from_value(v).expect("rule") };
            // A peer selector intersected with a CIDR holding an eighth of the pods'
            // first 64K addresses, and egress to everything outside the pods' /8.
            spec.ingress.push(r(serde_json::json!({
                "action": "Allow", "protocol": "TCP",
                "source": {"selector": format!("app == '{}'", APPS[peers[4].0]), "nets": ["10.0.32.0/19"]},
                "destination": {"ports": [9090]},
            })));
            if j.is_multiple_of(4) {
                spec.ingress.push(r(serde_json::json!({
                    "action": "Deny",
                    "source": {"nets": ["10.0.0.0/8"], "notSelector": format!("app == '{}'", APPS[peers[5].0])},
                })));
            }
            spec.egress.push(r(serde_json::json!({
                "action": "Allow",
                "destination": {"nets": ["0.0.0.0/0"], "notNets": ["10.0.0.0/8"]},
            })));
        }
        let metadata = ObjectMeta {
            name: format!("p{j}"),
            namespace: Some(format!("ns{ns}")),
            ..ObjectMeta::default()
        };
        if j.is_multiple_of(2) {
            Resource::NetworkPolicy(Object { metadata, spec })
        } else {
            Resource::StagedNetworkPolicy(Object { metadata, spec })
        }
    }

    pub fn resources(&self, pods: usize, policies: usize) -> Vec<Resource> {
        let mut rng = Rng::new(self.seed);
        let mut rs: Vec<Resource> = (0..pods).map(|i| self.pod(i, &mut rng)).collect();
        rs.extend((0..policies).map(|j| self.policy(j, &mut rng)));
        rs
    }
}

pub fn addr(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

pub fn pod(
    name: &str,
    ns: &str,
    labels: BTreeMap<String, String>,
    addr: String,
    port: u16,
) -> Resource {
    Resource::WorkloadEndpoint(Object {
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: Some(ns.to_string()),
            labels,
            ..ObjectMeta::default()
        },
        spec: WorkloadEndpointSpec {
            orchestrator: "k8s".into(),
            ip_networks: vec![Net::parse(&addr).expect("address")],
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol(6),
                port,
                host_port: None,
                host_ip: None,
            }],
            ..WorkloadEndpointSpec::default()
        },
    })
}

/// Resident set size of this process, bytes (0 if unknown).
pub fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Keys between pods of the cluster (both directions of TCP to 80 and to a pod's
/// http port, and some from outside).
pub fn keys(pods: usize, n: usize, seed: u64) -> Vec<FlowKey> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let a = |i: usize| u128::from(0x0a00_0000u32 + i as u32);
    (0..n)
        .map(|_| {
            let src = if rng.below(10) == 0 {
                0xc0a8_0000 + rng.below(256) as u128
            } else {
                a(rng.below(pods))
            };
            FlowKey {
                src,
                dst: a(rng.below(pods)),
                sport: 40000 + rng.below(1000) as u16,
                dport: [80, 22, 8000, 8003, 8006, 443][rng.below(6)],
                proto: proto::TCP,
                family: dataplane::program::Family::V4,
                ifindex: 0,
            }
        })
        .collect()
}

pub fn main(a: &ScaleArgs) -> Result<(), String> {
    let _ = NICE.set(a.nice);
    if a.mode == "policies" {
        return policies_mode(a);
    }
    let shape = Shape::new(a.seed).with_nets(a.nets);
    let t = Instant::now();
    let rs = shape.resources(a.pods, a.policies);
    let cluster = Cluster::from_resources(&rs).map_err(|e| e.to_string())?;
    let nets = if a.nets { " nets" } else { "" };
    let name = format!(
        "pods={} policies={} seed={}{nets}",
        a.pods, a.policies, a.seed
    );
    eprintln!("{name}: cluster in {:.0} ms", ms(t.elapsed()));
    match a.mode.as_str() {
        "generation" => generation(a, &name, &cluster),
        "lookups" => lookups(a, &name, &cluster),
        "churn" => churn(a, &name, cluster, &shape, false),
        "pods" => churn(a, &name, cluster, &shape, true),
        "pods-store" => pods_store(a, &name, &rs),
        "policy" => policy_only(a, &name, cluster),
        m => Err(format!(
            "--mode {m}: expected generation, lookups, churn, pods, pods-store, policy or policies"
        )),
    }
}

fn generation(a: &ScaleArgs, name: &str, cluster: &Cluster) -> Result<(), String> {
    let cfg = BuildConfig::default();
    for _ in 0..a.repeat {
        let rss0 = rss();
        let (c0, w0) = (cputime::thread_cpu(), Instant::now());
        let l = lower(cluster).map_err(|e| e.to_string())?;
        let c1 = cputime::thread_cpu();
        let ic = IdentityClassifier::build(&l.set, &cfg).map_err(|e| e.to_string())?;
        let (c2, w2) = (cputime::thread_cpu(), Instant::now());
        let s = ic.stats();
        println!(
            "generation {name} lower_ms={:.0} identity_build_ms={:.0} total_ms={:.0} wall_ms={:.0} programs={} bindings={} classes={} identities={} lists={} classifier_bytes={} stage_bytes={} tree_bytes={} rss_growth_mb={:.0}",
            ms(c1 - c0),
            ms(c2 - c1),
            ms(c2 - c0),
            ms(w2 - w0),
            l.set.programs.len(),
            l.set.endpoints.len(),
            s.classes,
            s.identities,
            s.lists,
            s.stage_bytes + s.tree_bytes,
            s.stage_bytes,
            s.tree_bytes,
            rss().saturating_sub(rss0) as f64 / 1e6,
        );
        if a.trees {
            let (c3, w3) = (cputime::thread_cpu(), Instant::now());
            let tc = Classifier::build(&l.set, &cfg).map_err(|e| e.to_string())?;
            println!(
                "generation-trees {name} build_ms={:.0} wall_ms={:.0} bytes={}",
                ms(cputime::thread_cpu() - c3),
                ms(w3.elapsed()),
                tc.stats().bytes
            );
        }
        drop(ic);
    }
    Ok(())
}

/// Median lookups per second of thread CPU time over 9 slices.
fn rate(secs: f64, per_call: usize, mut f: impl FnMut()) -> f64 {
    let slice = Duration::from_secs_f64(secs / 9.0);
    let mut rates = Vec::with_capacity(9);
    for _ in 0..9 {
        let (c0, w0) = (cputime::thread_cpu(), Instant::now());
        let mut n = 0usize;
        while w0.elapsed() < slice {
            f();
            n += per_call;
        }
        rates.push(n as f64 / (cputime::thread_cpu() - c0).as_secs_f64().max(1e-9));
    }
    rates.sort_by(f64::total_cmp);
    rates[4]
}

fn lookups(a: &ScaleArgs, name: &str, cluster: &Cluster) -> Result<(), String> {
    let cfg = BuildConfig::default();
    let l = lower(cluster).map_err(|e| e.to_string())?;
    let ic = IdentityClassifier::build(&l.set, &cfg).map_err(|e| e.to_string())?;
    let tree_cfg = BuildConfig {
        memory_budget: a.trees_budget_mb << 20,
        binth: a.trees_binth,
        ..BuildConfig::default()
    };
    let keys = keys(a.pods, 1 << 16, a.seed);
    let batch = 64;
    let tc = match Classifier::build(&l.set, &tree_cfg) {
        Ok(tc) => tc,
        Err(e) => {
            // The per-endpoint trees of some clusters do not build (`--seed 7`):
            // the identity classifier's rate alone, to compare binaries.
            println!("lookups {name} trees_failed=\"{e}\"");
            let mut out = vec![FlowVerdicts::default(); batch];
            for round in 0..a.repeat {
                let mut i = 0;
                let ri = rate(a.duration, batch, || {
                    ic.classify(&keys[i..i + batch], &mut out);
                    std::hint::black_box(&out);
                    i = (i + batch) % keys.len();
                });
                println!("lookups {name} round={round} identity_mlps={:.2}", ri / 1e6);
            }
            return Ok(());
        }
    };
    let (is, ts) = (ic.stats(), tc.stats());
    println!(
        "lookups {name} identity_bytes={} trees_bytes={} trees_budget_mb={} trees_binth={}",
        is.stage_bytes + is.tree_bytes,
        ts.bytes,
        a.trees_budget_mb,
        a.trees_binth
    );
    let mut x = vec![FlowVerdicts::default(); keys.len()];
    let mut y = x.clone();
    ic.classify(&keys, &mut x);
    tc.classify(&keys, &mut y);
    let diffs = x
        .iter()
        .zip(&y)
        .filter(|(p, q)| {
            let v = |c: &dyn Classify,
                         s: Option<(
                    dataplane::program::EndpointId,
                    dataplane::program::Verdicts,
                )>| {
                    s.map(|(id, v)| {
                        (
                            id,
                            v.enforced.verdict,
                            c.trace(v.enforced.trace).to_vec(),
                            v.pending.verdict,
                            c.trace(v.pending.trace).to_vec(),
                        )
                    })
                };
            v(&ic, p.egress) != v(&tc, q.egress) || v(&ic, p.ingress) != v(&tc, q.ingress)
        })
        .count();
    println!("lookups {name} keys={} verdict_diffs={diffs}", keys.len());
    let mut out = vec![FlowVerdicts::default(); batch];
    for round in 0..a.repeat {
        let mut run = |c: &dyn Classify| {
            let mut i = 0;
            rate(a.duration, batch, || {
                let k = &keys[i..i + batch];
                c.classify(k, &mut out);
                std::hint::black_box(&out);
                i = (i + batch) % keys.len();
            })
        };
        let (ri, rt) = if round % 2 == 0 {
            let ri = run(&ic);
            (ri, run(&tc))
        } else {
            let rt = run(&tc);
            (run(&ic), rt)
        };
        println!(
            "lookups {name} round={round} identity_mlps={:.2} trees_mlps={:.2} ratio={:.2}",
            ri / 1e6,
            rt / 1e6,
            ri / rt
        );
    }
    Ok(())
}

/// `runs` one-policy changes (a random policy's first ingress rule's action flipped),
/// even ones through [`Live::update`], odd ones through [`Live::set_cluster`], each
/// timed to published and the incremental ones checked against a fresh build on
/// `check`. Times of each, and how many took the incremental path.
fn policy_changes(
    live: &mut Live,
    slot: &Slot,
    generation: &mut u32,
    runs: usize,
    seed: u64,
    check: &[FlowKey],
) -> Result<(Vec<Duration>, Vec<Duration>, usize), String> {
    let (mut ti, mut tf, mut inc) = (Vec::new(), Vec::new(), 0usize);
    let mut rng = Rng::new(seed ^ 0x90);
    for i in 0..runs {
        let mut c = live.cluster().clone();
        let j = rng.below(c.policies.len());
        let Some(r) = c.policies[j].ingress.first_mut() else {
            continue;
        };
        r.rule.action = if r.rule.action == control::model::RuleAction::Deny {
            control::model::RuleAction::Allow
        } else {
            control::model::RuleAction::Deny
        };
        let key = c.policies[j].key.clone();
        let _nice = changing();
        let w = Instant::now();
        if i % 2 == 0 {
            let applied = live.update(&c, &[key]).map_err(|e| e.to_string())?;
            publish(slot, live, generation);
            ti.push(w.elapsed());
            inc += usize::from(applied == Applied::Incremental);
            let fresh = lower(live.cluster()).map_err(|e| e.to_string())?;
            let built = IdentityClassifier::build(&fresh.set, &BuildConfig::default())
                .map_err(|e| e.to_string())?;
            let mut out = vec![FlowVerdicts::default(); check.len()];
            built.classify(check, &mut out);
            let want: Vec<String> = check
                .iter()
                .zip(&out)
                .map(|(k, v)| {
                    let flow = control::eval::Flow::from_key(k);
                    format!("{:?}", fresh.names.evaluation_of(&built, &flow, v))
                })
                .collect();
            if rendered(live.classifier(), live, check) != want {
                return Err("an incremental policy change differs from a fresh build".into());
            }
        } else {
            live.set_cluster(c).map_err(|e| e.to_string())?;
            publish(slot, live, generation);
            tf.push(w.elapsed());
        }
    }
    Ok((ti, tf, inc))
}

/// Whether the live generation classifies flows to and from the endpoint `key` of
/// `store` (new), and between other pods, as a fresh build does.
fn same_as_fresh(
    live: &Live,
    store: &Cluster,
    key: &control::model::ResourceKey,
    base_keys: &[FlowKey],
    what: &str,
) -> Result<(), String> {
    let host = store
        .endpoints
        .iter()
        .find(|e| &e.key == key)
        .and_then(|e| e.nets.first())
        .map(|n| match n {
            ipnet::IpNet::V4(n) => u128::from(u32::from(n.addr())),
            ipnet::IpNet::V6(n) => u128::from(n.addr()),
        })
        .ok_or("the new pod has no address")?;
    let mut check = base_keys.to_vec();
    for k in &base_keys[..64.min(base_keys.len())] {
        for dport in [80, 8000, 8001, 8003, 8006, 8080, 22] {
            check.push(FlowKey {
                src: host,
                dport,
                ..*k
            });
            check.push(FlowKey {
                dst: host,
                dport,
                ..*k
            });
        }
    }
    if rendered(live.classifier(), live, &check) != fresh_rendering(live, &check)? {
        return Err(format!(
            "{what}: the live generation differs from a fresh build"
        ));
    }
    Ok(())
}

/// The evaluations of `keys` by a fresh build of the live store, rendered.
fn fresh_rendering(live: &Live, keys: &[FlowKey]) -> Result<Vec<String>, String> {
    let fresh = lower(live.cluster()).map_err(|e| e.to_string())?;
    let built = IdentityClassifier::build(&fresh.set, &BuildConfig::default())
        .map_err(|e| e.to_string())?;
    let mut out = vec![FlowVerdicts::default(); keys.len()];
    built.classify(keys, &mut out);
    Ok(keys
        .iter()
        .zip(&out)
        .map(|(k, v)| {
            let flow = control::eval::Flow::from_key(k);
            format!("{:?}", fresh.names.evaluation_of(&built, &flow, v))
        })
        .collect())
}

/// Copies of the first `n` endpoints of the live store, templates for pods added.
/// An error when the store has none (`--pods 0`).
fn first_endpoints(live: &Live, n: usize) -> Result<Vec<control::cluster::Endpoint>, String> {
    let out: Vec<_> = live
        .cluster()
        .endpoints
        .iter()
        .take(n)
        .map(|e| (**e).clone())
        .collect();
    if out.is_empty() {
        return Err("the cluster has no endpoint to copy (--pods 0)".into());
    }
    Ok(out)
}

/// `--mode policy`: see the module doc.
fn policy_only(a: &ScaleArgs, name: &str, cluster: Cluster) -> Result<(), String> {
    let cfg = BuildConfig::default();
    let t = Instant::now();
    let mut live = Live::new(cluster, cfg).map_err(|e| e.to_string())?;
    eprintln!("{name}: live generation in {:.0} ms", ms(t.elapsed()));
    let slot = Slot::new(Published {
        generation: 0,
        classifier: live.classifier().clone(),
    });
    let mut generation = 0u32;
    // Replicas joining on the fast path: the lists the build saw are not the store's
    // any more.
    let templates = first_endpoints(&live, 64)?;
    let mut fast = 0usize;
    for n in 0..100usize {
        let mut e = templates[n % templates.len()].clone();
        e.key.name = format!("replica-{n}");
        e.nets = vec![
            format!("10.202.{}.{}/32", n / 256, n % 256)
                .parse()
                .expect("address"),
        ];
        let key = e.key.clone();
        let mut c = live.cluster().clone();
        let rank = |k: &control::model::ResourceKey| {
            (k.kind != control::model::Kind::WorkloadEndpoint, k.clone())
        };
        let at = c.endpoints.partition_point(|x| rank(&x.key) < rank(&key));
        c.endpoints.insert(at, std::sync::Arc::new(e));
        fast += usize::from(live.update(&c, &[key]).map_err(|e| e.to_string())? == Applied::Fast);
    }
    eprintln!("{name}: 100 replicas added, {fast} on the fast path");
    let check = keys(a.pods, 512, a.seed ^ 0x77);
    let mut rng = Rng::new(a.seed ^ 0x90);
    let (mut wall, mut cpu, mut inc) = (Vec::new(), Vec::new(), 0usize);
    let mut max_parts = 0;
    for i in 0..a.repeat {
        let mut c = live.cluster().clone();
        let j = rng.below(c.policies.len());
        let Some(r) = c.policies[j].ingress.first_mut() else {
            continue;
        };
        r.rule.action = if r.rule.action == control::model::RuleAction::Deny {
            control::model::RuleAction::Allow
        } else {
            control::model::RuleAction::Deny
        };
        let key = c.policies[j].key.clone();
        let _nice = changing();
        let (w, t) = (Instant::now(), cputime::thread_cpu());
        let applied = live.update(&c, &[key]).map_err(|e| e.to_string())?;
        publish(&slot, &live, &mut generation);
        wall.push(w.elapsed());
        cpu.push(cputime::thread_cpu() - t);
        inc += usize::from(applied == Applied::Incremental);
        max_parts = max_parts.max(live.classifier().stats().parts);
        if i % 10 == 9
            && rendered(live.classifier(), &live, &check) != fresh_rendering(&live, &check)?
        {
            return Err(format!(
                "change {i}: the live generation differs from a fresh build"
            ));
        }
    }
    let n = wall.len();
    let (c50, c99, cmax) = percentiles(cpu);
    let (p50, p99, max) = percentiles(wall);
    println!(
        "policy {name} change=one-policy n={n} cpu_p50_ms={c50:.3} cpu_p99_ms={c99:.3} cpu_max_ms={cmax:.3} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} incremental={inc}/{n} max_parts={max_parts}"
    );
    let s = live.classifier().stats();
    println!(
        "policy {name} memory classifier_bytes={} parts={} list_bytes={} part_program_bytes={} memo_bytes={} rss_mb={:.0}",
        s.stage_bytes + s.tree_bytes,
        s.parts,
        s.list_bytes,
        s.part_program_bytes,
        live.memo_bytes(),
        rss() as f64 / 1e6
    );
    Ok(())
}

/// `--mode policies`: the control socket bench's store (`--policies` one-rule
/// GlobalNetworkPolicies `app == 'aK'` over `--pods` endpoints in five apps, source
/// a /24 each, one destination port), one policy's port changed per run,
/// alternating [`Live::update`] and [`Live::set_cluster`].
fn policies_mode(a: &ScaleArgs) -> Result<(), String> {
    let mut rs: Vec<Resource> = (0..a.pods)
        .map(|i| {
            pod(
                &format!("w{i}"),
                "b",
                BTreeMap::from([("app".to_string(), format!("a{}", i % 5))]),
                format!("10.0.0.{}", i + 1),
                8080,
            )
        })
        .collect();
    let gnp = |j: usize, port: u16| -> Result<Resource, String> {
        let (x, y, z) = (11 + j / 65536, (j / 256) % 256, j % 256);
        let spec: PolicySpec = serde_json::from_value(serde_json::json!({
            "order": j, "selector": format!("app == 'a{}'", j % 5), "types": ["Ingress"],
            "ingress": [{"action": "Allow", "protocol": "TCP",
                "source": {"nets": [format!("{x}.{y}.{z}.0/24")]},
                "destination": {"ports": [port]}}],
        }))
        .map_err(|e| e.to_string())?;
        Ok(Resource::GlobalNetworkPolicy(Object {
            metadata: ObjectMeta {
                name: format!("p{j}"),
                ..ObjectMeta::default()
            },
            spec,
        }))
    };
    for j in 0..a.policies {
        rs.push(gnp(j, 80)?);
    }
    let name = format!("shape=socket endpoints={} policies={}", a.pods, a.policies);
    let cluster = Cluster::from_resources(&rs).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut live = Live::new(cluster, BuildConfig::default()).map_err(|e| e.to_string())?;
    eprintln!("{name}: live generation in {:.0} ms", ms(t.elapsed()));
    let slot = Slot::new(Published {
        generation: 0,
        classifier: live.classifier().clone(),
    });
    let mut generation = 0;
    let mut rng = Rng::new(a.seed ^ 0x51);
    let (mut ti, mut tf, mut inc) = (Vec::new(), Vec::new(), 0usize);
    for i in 0..a.repeat.max(2) {
        let j = rng.below(a.policies);
        let port = 1000 + (i % 50000) as u16;
        let p = gnp(j, port)?;
        let key = p.key();
        let at = rs
            .iter()
            .position(|r| r.key() == key)
            .ok_or("policy not found")?;
        rs[at] = p;
        let next = Cluster::from_resources(&rs).map_err(|e| e.to_string())?;
        let _nice = changing();
        let w = Instant::now();
        if i % 2 == 0 {
            let applied = live.update(&next, &[key]).map_err(|e| e.to_string())?;
            publish(&slot, &live, &mut generation);
            ti.push(w.elapsed());
            inc += usize::from(applied == Applied::Incremental);
        } else {
            live.set_cluster(next).map_err(|e| e.to_string())?;
            publish(&slot, &live, &mut generation);
            tf.push(w.elapsed());
        }
    }
    let n = ti.len();
    for (what, t) in [("incremental", ti), ("full-rebuild", tf)] {
        let (p50, p99, max) = percentiles(t);
        println!(
            "policies {name} change=one-rule path={what} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} incremental={inc}/{n}"
        );
    }
    let keys: Vec<FlowKey> = (0..4096)
        .map(|i| FlowKey {
            src: u128::from(0x0b00_0000u32 + ((i as u32 * 2654435761) % (a.policies as u32 * 256))),
            dst: u128::from(0x0a00_0001u32 + (i as u32 % a.pods as u32)),
            sport: 40000,
            dport: 1000 + (i % 64) as u16,
            proto: proto::TCP,
            family: dataplane::program::Family::V4,
            ifindex: 0,
        })
        .collect();
    let fresh = lower(live.cluster()).map_err(|e| e.to_string())?;
    let built = IdentityClassifier::build(&fresh.set, &BuildConfig::default())
        .map_err(|e| e.to_string())?;
    let mut out = vec![FlowVerdicts::default(); keys.len()];
    built.classify(&keys, &mut out);
    let want: Vec<String> = keys
        .iter()
        .zip(&out)
        .map(|(k, v)| {
            format!(
                "{:?}",
                fresh
                    .names
                    .evaluation_of(&built, &control::eval::Flow::from_key(k), v)
            )
        })
        .collect();
    let diffs = rendered(live.classifier(), &live, &keys)
        .iter()
        .zip(&want)
        .filter(|(x, y)| x != y)
        .count();
    println!(
        "policies {name} verdict_diffs_vs_fresh_build={diffs}/{} classifier_bytes={} parts={} memo_bytes={}",
        keys.len(),
        live.classifier().stats().stage_bytes + live.classifier().stats().tree_bytes,
        live.classifier().stats().parts,
        live.memo_bytes()
    );
    Ok(())
}

/// p50, p99 and max of a sample, in ms.
fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.99), at(1.0))
}

type Slot = ClassifierSlot<Arc<IdentityClassifier>>;

/// Publishes the live generation (what every worker picks up at its next batch).
fn publish(slot: &Slot, live: &Live, generation: &mut u32) {
    *generation += 1;
    slot.publish(Published {
        generation: *generation,
        classifier: live.classifier().clone(),
    });
    slot.reclaim();
}

/// Verdicts of `keys` rendered as (endpoint, both verdicts, both traces) per side.
fn rendered(c: &IdentityClassifier, live: &Live, keys: &[FlowKey]) -> Vec<String> {
    let mut out = vec![FlowVerdicts::default(); keys.len()];
    c.classify(keys, &mut out);
    keys.iter()
        .zip(&out)
        .map(|(k, v)| {
            let flow = control::eval::Flow::from_key(k);
            format!("{:?}", live.names().evaluation_of(c, &flow, v))
        })
        .collect()
}

/// Pod adds of `churn` steps 2 and 2b, each timed from the store change to published.
#[derive(Default)]
struct Adds {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    fast: usize,
}

impl Adds {
    /// Times `live` taking the add of the endpoint `key` (in `store` already) to
    /// published; then, outside the timers, checks the generation against a fresh
    /// build on `check`'s keys if given (and names the kind in an error), and removes
    /// the endpoint again (`removed` from `store`, then through `live`).
    fn time(
        &mut self,
        live: &mut Live,
        store: &mut Cluster,
        (slot, generation): (&Slot, &mut u32),
        key: control::model::ResourceKey,
        check: Option<(&[FlowKey], &str)>,
        removed: &impl Fn(&mut Cluster, &control::model::ResourceKey),
    ) -> Result<(), String> {
        let _nice = changing();
        let (w, c) = (Instant::now(), cputime::thread_cpu());
        let r = live.update(store, std::slice::from_ref(&key));
        self.fast += usize::from(r.map_err(|e| e.to_string())? == Applied::Fast);
        publish(slot, live, generation);
        self.wall.push(w.elapsed());
        self.cpu.push(cputime::thread_cpu() - c);
        if let Some((keys, what)) = check {
            same_as_fresh(live, store, &key, keys, what)?;
        }
        removed(store, &key);
        live.update(store, &[key]).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Prints the kind's line: CPU and wall percentiles, adds on the fast path, and
    /// `extra`.
    fn report(self, name: &str, what: &str, extra: &str) {
        let n = self.wall.len();
        let fast = self.fast;
        let (c50, c99, _) = percentiles(self.cpu);
        let (p50, p99, max) = percentiles(self.wall);
        println!(
            "churn {name} change={what} n={n} cpu_p50_ms={c50:.3} cpu_p99_ms={c99:.3} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} fast_path={fast}/{n}{extra}"
        );
    }
}

/// The pod changes of `churn` step 1 (and `--mode pods`): `reps` pods with an
/// existing label set added, then removed, each through [`Live::update`] and timed
/// (thread CPU and wall) to published. Changing the caller's store (`add`, `remove`:
/// one endpoint inserted into or removed from `store`, in place) is outside the timer
/// and reported on its own.
#[allow(clippy::too_many_arguments)]
fn pod_changes<A, R>(
    live: &mut Live,
    store: &mut Cluster,
    slot: &Slot,
    generation: &mut u32,
    add: &A,
    remove: &R,
    next_addr: &mut usize,
    reps: usize,
    name: &str,
) -> Result<(), String>
where
    A: Fn(&mut Cluster, usize, &mut usize, Option<(&str, String)>) -> control::model::ResourceKey,
    R: Fn(&mut Cluster, &control::model::ResourceKey),
{
    let (mut add_t, mut rm_t, mut fast) = (Vec::new(), Vec::new(), 0usize);
    let (mut add_c, mut rm_c, mut next_c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..reps {
        let c = cputime::thread_cpu();
        let key = add(store, i, next_addr, None);
        next_c.push(cputime::thread_cpu() - c);
        let _nice = changing();
        let (w, c) = (Instant::now(), cputime::thread_cpu());
        let applied = live
            .update(store, std::slice::from_ref(&key))
            .map_err(|e| e.to_string())?;
        publish(slot, live, generation);
        add_t.push(w.elapsed());
        add_c.push(cputime::thread_cpu() - c);
        let c = cputime::thread_cpu();
        remove(store, &key);
        next_c.push(cputime::thread_cpu() - c);
        let _nice = changing();
        let (w, c) = (Instant::now(), cputime::thread_cpu());
        let applied2 = live
            .update(store, std::slice::from_ref(&key))
            .map_err(|e| e.to_string())?;
        publish(slot, live, generation);
        rm_t.push(w.elapsed());
        rm_c.push(cputime::thread_cpu() - c);
        fast += usize::from(applied == Applied::Fast) + usize::from(applied2 == Applied::Fast);
    }
    let (c50, c99, _) = percentiles(add_c);
    println!("churn {name} change=pod-add-existing-labels cpu_p50_ms={c50:.3} cpu_p99_ms={c99:.3}");
    let (c50, c99, _) = percentiles(rm_c);
    println!(
        "churn {name} change=pod-remove-existing-labels cpu_p50_ms={c50:.3} cpu_p99_ms={c99:.3}"
    );
    let (p50, p99, max) = percentiles(add_t);
    println!(
        "churn {name} change=pod-add-existing-labels n={reps} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3}"
    );
    let (p50, p99, max) = percentiles(rm_t);
    println!(
        "churn {name} change=pod-remove-existing-labels n={reps} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} fast_path={fast}/{}",
        2 * reps
    );
    let (c50, c99, _) = percentiles(next_c);
    println!(
        "churn {name} changing-the-callers-store (outside the timers) cpu_p50_ms={c50:.3} cpu_p99_ms={c99:.3}"
    );
    Ok(())
}

fn churn(
    a: &ScaleArgs,
    name: &str,
    cluster: Cluster,
    shape: &Shape,
    only_pods: bool,
) -> Result<(), String> {
    let cfg = BuildConfig::default();
    let t = Instant::now();
    // The store as the caller keeps it (in key order), changed in place.
    let mut store = cluster.clone();
    let mut live = Live::new(cluster, cfg).map_err(|e| e.to_string())?;
    eprintln!("{name}: live generation in {:.0} ms", ms(t.elapsed()));
    let slot = Slot::new(Published {
        generation: 0,
        classifier: live.classifier().clone(),
    });
    let mut generation = 0u32;
    let templates = first_endpoints(&live, 64)?;
    let mut next_addr = 0usize;
    let fresh_host = |n: &mut usize| -> ipnet::IpNet {
        *n += 1;
        format!("10.200.{}.{}/32", *n / 256, *n % 256)
            .parse()
            .expect("address")
    };
    // The next store with the pod added, changed in place (outside the timers, as the
    // caller does before it hands the change to `Live::update`).
    let rank = |k: &control::model::ResourceKey| {
        (k.kind != control::model::Kind::WorkloadEndpoint, k.clone())
    };
    let add_like = |c: &mut Cluster, i: usize, n: &mut usize, relabel: Option<(&str, String)>| {
        let mut e = templates[i % templates.len()].clone();
        e.key.name = format!("churn-{n}");
        e.nets = vec![fresh_host(n)];
        if let Some((k, v)) = relabel {
            e.labels.insert(k.into(), v);
        }
        let key = e.key.clone();
        let at = c.endpoints.partition_point(|x| rank(&x.key) < rank(&key));
        c.endpoints.insert(at, std::sync::Arc::new(e));
        key
    };
    let removed = |c: &mut Cluster, key: &control::model::ResourceKey| {
        let at = c.endpoints.partition_point(|x| rank(&x.key) < rank(key));
        if c.endpoints.get(at).is_some_and(|x| &x.key == key) {
            c.endpoints.remove(at);
        }
    };

    // 1. Pods with an existing label set: add, then remove, each timed to published.
    let reps = a.repeat.max(1);
    pod_changes(
        &mut live,
        &mut store,
        &slot,
        &mut generation,
        &add_like,
        &removed,
        &mut next_addr,
        reps,
        name,
    )?;

    // 2. Pods with a new label set: one no selector reads (a new `version` label:
    // the same behaviour as an existing pod), one with a new `app` value that every
    // `app` selector sees differently (a new behaviour; it defines the named port
    // `http` the rules name, so rules read it as a peer: it takes the identity of
    // the build's spare for its namespace and port, `Live`'s module doc), and the
    // same without named ports (a new behaviour no rule reads as a peer). Each
    // generation with a new behaviour is checked against a fresh build on flows to
    // and from the new pod and between existing pods (outside the timers).
    let kinds = [
        ("pod-add-new-labels-known-behaviour", "version", reps, true),
        ("pod-add-new-labels-new-behaviour", "app", reps, true),
        ("pod-add-new-behaviour-unread", "app", reps, false),
    ];
    let base_keys = keys(a.pods, 256, a.seed ^ 0x33);
    // `--mode pods`: the known behaviour only.
    for (what, label, n_runs, ports) in &kinds[..if only_pods { 1 } else { kinds.len() }] {
        let mut adds = Adds::default();
        for i in 0..*n_runs {
            let relabel = Some((*label, format!("new{i}")));
            let key = add_like(&mut store, i, &mut next_addr, relabel);
            if !ports && let Some(e) = store.endpoints.iter_mut().find(|e| e.key == key) {
                std::sync::Arc::make_mut(e).ports.clear();
            }
            let check = (*label == "app" && i < 10).then_some((&base_keys[..], *what));
            adds.time(
                &mut live,
                &mut store,
                (&slot, &mut generation),
                key,
                check,
                &removed,
            )?;
        }
        adds.report(name, what, "");
    }
    if only_pods {
        return Ok(());
    }

    // 2b. Pods of a peer class no endpoint and no spare has. Global policies (added
    // first through `Live::update`, outside the timers) apply to the namespace of the
    // first template pod and allow TCP 8080 from `L == 'cK'`, one rule per K < reps:
    // all in one policy (`pod-add-new-peer-class`, label `canary`), or one policy per
    // rule (`...-one-rule-policies`, label `canary1`). Pod K is that template with
    // only `L: cK` and the implicit labels and no named ports (the rules' `http`
    // lists would read it otherwise: every policy), so exactly rule K's side reads it,
    // as it reads no other endpoint. Each is added (timed), checked against a fresh
    // build (the first 10), and removed.
    let ns = templates[0].key.namespace.clone().unwrap_or_default();
    // `...-port-16-policies`: 16 policies allow TCP to the named port `p16` (no peer
    // selector), and pod K defines `p16` as 7000 + K, a number no pod has: each pod
    // is read by the 16 policies (the limit of the path), through a list only it is in.
    for (what, label, per_rule) in [
        ("pod-add-new-peer-class", "canary", false),
        ("pod-add-new-peer-class-one-rule-policies", "canary1", true),
        ("pod-add-new-peer-class-port-16-policies", "p16", true),
    ] {
        let by_port = label == "p16";
        let rule = |k: usize| -> Rule {
            serde_json::from_value(serde_json::json!({
                "action": "Allow", "protocol": "TCP",
                "source": {"selector": format!("{label} == 'c{k}'")},
                "destination": {"ports": [8080]},
            }))
            .expect("rule")
        };
        let policy = |name: String, ingress: Vec<Rule>| {
            Resource::GlobalNetworkPolicy(Object {
                metadata: ObjectMeta {
                    name,
                    ..ObjectMeta::default()
                },
                spec: PolicySpec {
                    order: Some(0.5),
                    selector: Some(format!("projectcalico.org/namespace == '{ns}'")),
                    ingress,
                    ..PolicySpec::default()
                },
            })
        };
        let port_rule = || -> Rule {
            serde_json::from_value(serde_json::json!({
                "action": "Allow", "protocol": "TCP",
                "destination": {"ports": ["p16"]},
            }))
            .expect("rule")
        };
        let rs: Vec<Resource> = if by_port {
            (0..16)
                .map(|k| policy(format!("{label}-{k}"), vec![port_rule()]))
                .collect()
        } else if per_rule {
            (0..reps)
                .map(|k| policy(format!("{label}-{k}"), vec![rule(k)]))
                .collect()
        } else {
            vec![policy(label.to_string(), (0..reps).map(rule).collect())]
        };
        let c = Cluster::from_resources(&rs).map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        for p in c.policies {
            keys.push(p.key.clone());
            let at = store.policies.partition_point(|x| x.key < p.key);
            store.policies.insert(at, p);
        }
        live.update(&store, &keys).map_err(|e| e.to_string())?;
        // The next endpoint change refreshes the indexes after a policy change: once,
        // outside the timers.
        let warm = add_like(&mut store, 0, &mut next_addr, None);
        live.update(&store, std::slice::from_ref(&warm))
            .map_err(|e| e.to_string())?;
        removed(&mut store, &warm);
        live.update(&store, &[warm]).map_err(|e| e.to_string())?;
        let mut adds = Adds::default();
        let parts = live.classifier().stats().parts;
        for k in 0..reps {
            let mut e = templates[0].clone();
            e.key.name = format!("{label}-{k}");
            e.nets = vec![fresh_host(&mut next_addr)];
            e.labels.retain(|l, _| l.starts_with("projectcalico.org/"));
            e.ports.clear();
            if by_port {
                e.ports.push(EndpointPort {
                    name: "p16".into(),
                    protocol: Protocol(6),
                    port: 7000 + k as u16,
                    host_port: None,
                    host_ip: None,
                });
            } else {
                e.labels.insert(label.into(), format!("c{k}"));
            }
            let key = e.key.clone();
            let at = store
                .endpoints
                .partition_point(|x| rank(&x.key) < rank(&key));
            store.endpoints.insert(at, Arc::new(e));
            let check = (k < 10).then_some((&base_keys[..], what));
            adds.time(
                &mut live,
                &mut store,
                (&slot, &mut generation),
                key,
                check,
                &removed,
            )?;
        }
        let after = live.classifier().stats();
        adds.report(
            name,
            what,
            &format!(
                " parts_before={parts} parts_after={} classifier_bytes={} part_program_bytes={} part_compiler_bytes={}",
                after.parts,
                after.stage_bytes + after.tree_bytes,
                after.part_program_bytes,
                after.part_compiler_bytes
            ),
        );
    }

    // 3. One policy changed (its first rule's action flipped): normalising the store
    // is outside the timer, lowering and compiling inside. Alternating: through
    // `Live::update` (the incremental path) and `Live::set_cluster` (a full rebuild).
    let check_keys = keys(a.pods, 512, a.seed ^ 0x77);
    let runs = reps.min(40);
    let (ti, tf, inc) =
        policy_changes(&mut live, &slot, &mut generation, runs, a.seed, &check_keys)?;
    let n_inc = ti.len();
    for (what, t) in [("incremental", ti), ("full-rebuild", tf)] {
        let n = t.len();
        let (p50, p99, max) = percentiles(t);
        println!(
            "churn {name} change=one-policy path={what} n={n} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} incremental={inc}/{n_inc}"
        );
    }
    println!(
        "churn {name} memory classifier_bytes={} parts={} list_bytes={} part_program_bytes={} memo_bytes={} rss_mb={:.0}",
        live.classifier().stats().stage_bytes + live.classifier().stats().tree_bytes,
        live.classifier().stats().parts,
        live.classifier().stats().list_bytes,
        live.classifier().stats().part_program_bytes,
        live.memo_bytes(),
        rss() as f64 / 1e6
    );

    // 4. Pods arriving and leaving at --rate per second while a thread classifies.
    let keys = Arc::new(keys(a.pods, 1 << 14, a.seed));
    let before = rendered(live.classifier(), &live, &keys[..2048]);
    let slot = Arc::new(slot);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (slot, stop, count, keys) = (slot.clone(), stop.clone(), count.clone(), keys.clone());
        std::thread::spawn(move || {
            let mut out = vec![FlowVerdicts::default(); 64];
            let mut i = 0;
            let mut n = 0u64;
            let c0 = cputime::thread_cpu();
            while !stop.load(Ordering::Relaxed) {
                let g = slot.load();
                g.classifier.classify(&keys[i..i + 64], &mut out);
                std::hint::black_box(&out);
                i = (i + 64) % keys.len();
                n += 64;
                if n.is_multiple_of(1 << 16) {
                    count.store(n, Ordering::Relaxed);
                }
            }
            (n, cputime::thread_cpu() - c0)
        })
    };
    let secs = a.duration.max(1.0);
    // Quiet phase, then churn phase, each `secs` long; lookups/s of traffic CPU time.
    let measure = |phase: &dyn Fn()| {
        let n0 = count.load(Ordering::Relaxed);
        let w = Instant::now();
        phase();
        (count.load(Ordering::Relaxed) - n0) as f64 / w.elapsed().as_secs_f64()
    };
    let quiet = measure(&|| std::thread::sleep(Duration::from_secs_f64(secs)));
    let period = Duration::from_secs_f64(1.0 / a.rate.max(1.0));
    let live_cell = std::cell::RefCell::new((
        live,
        generation,
        Vec::<control::model::ResourceKey>::new(),
        Vec::new(),
        0usize,
    ));
    let churned = measure(&|| {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut tick = Instant::now();
        let mut k = 0usize;
        while Instant::now() < end {
            let mut st = live_cell.borrow_mut();
            let (live, generation, keys_in, times, fast) = &mut *st;
            let _nice = changing();
            let w = Instant::now();
            let applied = if k.is_multiple_of(2) || keys_in.is_empty() {
                let mut e = templates[k % templates.len()].clone();
                let n = 100_000 + k;
                e.key.name = format!("churn-{n}");
                e.nets = vec![
                    format!("10.201.{}.{}/32", (n / 256) % 256, n % 256)
                        .parse()
                        .expect("address"),
                ];
                keys_in.push(e.key.clone());
                live.add_endpoint(e)
            } else {
                let key = keys_in.remove(0);
                live.remove_endpoint(&key)
            };
            if let Ok(Applied::Fast) = applied {
                *fast += 1;
            }
            publish(&slot, live, generation);
            times.push(w.elapsed());
            k += 1;
            drop(st);
            tick += period;
            if let Some(d) = tick.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    let (n, cpu) = traffic
        .join()
        .map_err(|_| "traffic thread panicked".to_string())?;
    let (live, _, _, times, fast) = live_cell.into_inner();
    let changes = times.len();
    let (p50, p99, max) = percentiles(times);
    let after = rendered(live.classifier(), &live, &keys[..2048]);
    let diffs = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    println!(
        "churn {name} traffic quiet_mlps={:.2} churn_mlps={:.2} ratio={:.2} traffic_cpu_mlps={:.2} changes={changes} fast_path={fast} change_p50_ms={p50:.3} change_p99_ms={p99:.3} change_max_ms={max:.3} verdict_diffs_on_unchanged_pods={diffs}/2048",
        quiet / 1e6,
        churned / 1e6,
        churned / quiet,
        n as f64 / cpu.as_secs_f64().max(1e-9) / 1e6,
    );
    let _ = shape;
    Ok(())
}

/// `--mode pods-store`: pod changes from the [`Store`](control::store::Store) to the
/// published generation, each step timed on its own (thread CPU) and the whole (CPU
/// and wall).
fn pods_store(a: &ScaleArgs, name: &str, rs: &[Resource]) -> Result<(), String> {
    use control::model::{Loaded, Origin};
    use control::store::Store;
    let origin = |document: usize| Origin {
        source: "scale".into(),
        document,
        item: None,
    };
    let t = Instant::now();
    let mut store = Store::new();
    store
        .apply(
            rs.iter()
                .enumerate()
                .map(|(i, r)| Loaded {
                    resource: r.clone(),
                    origin: origin(i + 1),
                })
                .collect(),
        )
        .map_err(|e| e.to_string())?;
    // As a daemon started with `-f` keeps them (copied with every store copy).
    let file_keys = store.entries().map(|(k, _)| k.clone()).collect();
    store.set_file_keys(file_keys);
    let mut cluster = Cluster::from_resources(store.resources()).map_err(|e| e.to_string())?;
    let mut live = Live::new(cluster.clone(), BuildConfig::default()).map_err(|e| e.to_string())?;
    eprintln!(
        "{name}: store and live generation in {:.0} ms",
        ms(t.elapsed())
    );
    let slot = Slot::new(Published {
        generation: 0,
        classifier: live.classifier().clone(),
    });
    let mut generation = 0u32;
    let templates: Vec<Resource> = rs
        .iter()
        .filter(|r| matches!(r, Resource::WorkloadEndpoint(_)))
        .take(64)
        .cloned()
        .collect();
    if templates.is_empty() {
        return Err("the cluster has no workload endpoint to copy (--pods 0)".into());
    }
    const STEPS: [&str; 6] = [
        "store-copy-and-change",
        "changed-keys",
        "cluster-update",
        "live-update",
        "publish",
        "old-store-dropped",
    ];
    // Per kind (add, remove): per-step CPU, whole CPU, whole wall.
    let mut steps = [[(); 6].map(|_| Vec::new()), [(); 6].map(|_| Vec::new())];
    let mut whole = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    let mut fast = 0usize;
    let reps = a.repeat.max(1);
    for i in 0..reps {
        let mut r = templates[i % templates.len()].clone();
        let Resource::WorkloadEndpoint(o) = &mut r else {
            unreachable!("templates are workload endpoints")
        };
        o.metadata.name = format!("churn-{i}");
        o.spec.ip_networks =
            vec![Net::parse(&format!("10.200.{}.{}", (i / 256) % 256, i % 256)).expect("address")];
        let key = r.key();
        for (kind, add) in [(0, true), (1, false)] {
            let _nice = changing();
            let (w, mut c) = (Instant::now(), cputime::thread_cpu());
            let c0 = c;
            let mut lap = |step: usize, c: &mut Duration| {
                let now = cputime::thread_cpu();
                steps[kind][step].push(now - *c);
                *c = now;
            };
            let mut next = store.clone();
            if add {
                next.apply(vec![Loaded {
                    resource: r.clone(),
                    origin: origin(0),
                }])
                .map_err(|e| e.to_string())?;
            } else {
                next.delete(std::slice::from_ref(&key))
                    .map_err(|e| e.to_string())?;
            }
            lap(0, &mut c);
            let keys = store.changed_keys(&next);
            lap(1, &mut c);
            cluster.update(&next, &keys).map_err(|e| e.to_string())?;
            lap(2, &mut c);
            let applied = live.update(&cluster, &keys).map_err(|e| e.to_string())?;
            fast += usize::from(applied == Applied::Fast);
            lap(3, &mut c);
            publish(&slot, &live, &mut generation);
            lap(4, &mut c);
            store = next;
            lap(5, &mut c);
            whole[kind].0.push(c - c0);
            whole[kind].1.push(w.elapsed());
        }
    }
    for (kind, what) in ["pod-add-existing-labels", "pod-remove-existing-labels"]
        .iter()
        .enumerate()
    {
        let (c50, c99, _) = percentiles(whole[kind].0.clone());
        let (p50, p99, max) = percentiles(whole[kind].1.clone());
        let per: Vec<String> = STEPS
            .iter()
            .zip(&steps[kind])
            .map(|(s, t)| {
                let (p50, p99, _) = percentiles(t.clone());
                format!("{s}={p50:.3}/{p99:.3}")
            })
            .collect();
        println!(
            "pods-store {name} change={what} n={reps} cpu_p50_ms={c50:.3} cpu_p99_ms={c99:.3} wall_p50_ms={p50:.3} wall_p99_ms={p99:.3} wall_max_ms={max:.3} fast_path={fast}/{} steps_cpu_p50/p99_ms: {}",
            2 * reps,
            per.join(" ")
        );
    }
    // The slow twin of the endpoint patch: the members rebuilt from the whole store
    // (what `Cluster::update` does for any other member change), for comparison.
    let rebuild_key = control::model::ResourceKey {
        kind: control::model::Kind::NetworkSet,
        namespace: Some("absent".into()),
        name: "absent".into(),
    };
    let mut full = Vec::new();
    for _ in 0..reps.min(20) {
        let c = cputime::thread_cpu();
        cluster
            .update(&store, std::slice::from_ref(&rebuild_key))
            .map_err(|e| e.to_string())?;
        full.push(cputime::thread_cpu() - c);
    }
    let (f50, f99, _) = percentiles(full);
    println!(
        "pods-store {name} cluster-update-rebuilding-all-members (the slow twin, for comparison) cpu_p50_ms={f50:.3} cpu_p99_ms={f99:.3}"
    );
    let fresh = Cluster::from_resources(store.resources()).map_err(|e| e.to_string())?;
    let same = format!("{fresh:?}") == format!("{cluster:?}");
    println!("pods-store {name} kept_cluster_equals_fresh_normalisation={same}");
    if !same {
        return Err("the kept cluster differs from a fresh normalisation".into());
    }
    Ok(())
}
