//! `bench socket`: the control socket of a running `tiergate run`, measured from
//! outside as an operator's tools see it.
//!
//! The harness writes `--policies` one-rule GlobalNetworkPolicies over `--endpoints`
//! workload endpoints (one List, the `-f` file) and a capture of `--flows` UDP flows
//! (each from a policy's source network to an endpoint the policy selects, on the
//! policy's port: half are allowed, half denied), starts
//! `tiergate run --pcap CAPTURE --loop --pcap-rate PPS -f FILE --socket S --interval 1`
//! itself, and then, on the socket:
//!
//! 1. once the flow ring holds `--ring-records` records (one per flow and second),
//!    request rates over one connection and over `--connections` concurrent
//!    connections, `--seconds` each, alternating, for `health`, `get gnp` and
//!    `flows` without and with filters;
//! 2. `--changes` one-rule changes (one policy's port each), then `--replacements`
//!    whole replacements (every policy's port), each a request of its own; for each,
//!    the daemon's reply `timings` and the client's wall time from request to reply.
//!
//! The rate clients send a request line and read the reply line without parsing it
//! (a check that it is `"ok":true`), so the rates are the daemon's and the socket's,
//! not a JSON parser's on the client side.
//!
//! `--pod-churn PODS` measures pod churn instead: the `-f` file is `bench scale`'s
//! synthetic cluster (PODS workload endpoints, `--churn-policies` policies, seed 0),
//! and `--churn` workload endpoints, each a copy of one of the cluster's (its labels,
//! namespace and ports: a label set that exists) at a new address, are applied and
//! then deleted, one request each; the daemon's `timings`, the path its engine took
//! and the client's wall time per change. `--classifier` is passed to the daemon.
//! `--churn-warmup N` applies and deletes N pods first and reports them on a line of
//! their own, apart from the `--churn` measured ones.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::server::client::Client;
use control::server::proto::{Op, SourceText};
use pcap::capture::CaptureFormat;
use pcap::synth::{TraceTuple, tuples_to_frames};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct SocketArgs {
    /// The `tiergate` binary (default: next to this `bench` binary).
    #[arg(long, value_name = "PATH")]
    tiergate: Option<PathBuf>,
    /// One-rule GlobalNetworkPolicies applied.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Workload endpoints the policies select.
    #[arg(long, default_value_t = 20)]
    endpoints: usize,
    /// One-rule changes measured.
    #[arg(long, default_value_t = 30)]
    changes: usize,
    /// Whole replacements measured.
    #[arg(long, default_value_t = 5)]
    replacements: usize,
    /// Distinct flows in the capture (each a flow record per interval).
    #[arg(long, default_value_t = 10_000)]
    flows: usize,
    /// Flow records the ring must hold before the rates are measured (it keeps
    /// 100 000; waited for at most 60 s).
    #[arg(long, default_value_t = 100_000)]
    ring_records: u64,
    /// Frames per second the daemon's worker is fed.
    #[arg(long, default_value_t = 20_000)]
    pcap_rate: u64,
    /// Concurrent connections of the multi-connection rate runs.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds per rate run.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds of (one connection, N connections) per request kind.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Skip the apply measurements.
    #[arg(long)]
    rates_only: bool,
    /// Skip the rate measurements.
    #[arg(long)]
    applies_only: bool,
    /// Working directory (capture, socket); default a fresh one under the temp dir.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Pass `--state-dir DIR/state` to the daemon (commits are then persisted).
    #[arg(long)]
    state_dir: bool,
    /// The daemon's `--classifier` (`identity` or `tree`; default: the daemon's).
    #[arg(long, value_name = "KIND")]
    classifier: Option<String>,
    /// The daemon's `--change-nice` (a nice value or `off`; default: the daemon's).
    #[arg(long, value_name = "N|off", allow_hyphen_values = true)]
    change_nice: Option<String>,
    /// Measure pod churn on `bench scale`'s cluster of this many pods instead (see
    /// the module doc).
    #[arg(long, value_name = "PODS")]
    pod_churn: Option<usize>,
    /// Policies of the pod-churn cluster.
    #[arg(long, default_value_t = 200)]
    churn_policies: usize,
    /// Pods applied (and then deleted) in the pod-churn measurement.
    #[arg(long, default_value_t = 200)]
    churn: usize,
    /// Pods applied and deleted before the pod-churn measurement, reported on a line
    /// of their own (the daemon's first changes after it starts run on cold caches
    /// while its worker threads start).
    #[arg(long, default_value_t = 0)]
    churn_warmup: usize,
}

/// The daemon under test; SIGTERM and wait when dropped.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM (the daemon removes its socket); SIGKILL if that cannot be sent.
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn endpoint_ip(i: usize) -> [u8; 4] {
    [172, 16, ((i + 1) >> 8) as u8, ((i + 1) & 255) as u8]
}

fn source_net(j: usize) -> [u8; 3] {
    [10, ((j >> 8) & 255) as u8, (j & 255) as u8]
}

/// The port policy `j` allows or denies in variant `v` (0 = the initial set).
fn port(j: usize, v: usize) -> u16 {
    (1000 + (j + 7919 * v) % 50_000) as u16
}

/// Namespace, endpoints and policies as one `v1` List; `port_of(j)` is policy j's port.
fn list(policies: usize, endpoints: usize, port_of: impl Fn(usize) -> u16) -> Value {
    let mut items =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}})];
    for i in 0..endpoints {
        let [a, b, c, d] = endpoint_ip(i);
        items.push(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": format!("w{i}"), "namespace": "b", "labels": {"app": format!("a{}", i % 5)}},
            "spec": {"orchestrator": "k8s", "ipNetworks": [format!("{a}.{b}.{c}.{d}/32")]},
        }));
    }
    for j in 0..policies {
        items.push(policy(j, port_of(j)));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn policy(j: usize, port: u16) -> Value {
    let [a, b, c] = source_net(j);
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": format!("p{j}")},
        "spec": {
            "order": j, "selector": format!("app == 'a{}'", j % 5), "types": ["Ingress"],
            "ingress": [{
                "action": if j % 2 == 1 { "Allow" } else { "Deny" }, "protocol": "UDP",
                "source": {"nets": [format!("{a}.{b}.{c}.0/24")]},
                "destination": {"ports": [port]},
            }],
        },
    })
}

/// Flow `f`: from policy j's source network to an endpoint j selects, on j's port.
fn tuples(flows: usize, policies: usize, endpoints: usize) -> Vec<TraceTuple> {
    let per_app = endpoints.div_ceil(5).max(1);
    (0..flows)
        .map(|f| {
            let j = f % policies.max(1);
            let app = j % 5;
            let i = (app + 5 * ((f / policies.max(1)) % per_app)).min(endpoints.saturating_sub(1));
            let [a, b, c] = source_net(j);
            TraceTuple {
                src: u32::from_be_bytes([a, b, c, 1 + (f % 200) as u8]),
                dst: u32::from_be_bytes(endpoint_ip(i)),
                sport: 10_000 + (f % 50_000) as u16,
                dport: port(j, 0),
                proto: 17,
            }
        })
        .collect()
}

fn q(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p * v.len() as f64) as usize).min(v.len().saturating_sub(1));
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn median(xs: &[f64]) -> f64 {
    q(xs, 0.5)
}

/// p50, p99 and max of `xs` (NaN when empty).
struct Dist {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Dist {
    fn of(xs: &[f64]) -> Dist {
        Dist {
            p50: q(xs, 0.5),
            p99: q(xs, 0.99),
            max: xs.iter().copied().fold(f64::NAN, f64::max),
        }
    }
}

/// One reply timing (`timings[key]`, ms) of every sample.
fn timing(xs: &[Sample], key: &str) -> Vec<f64> {
    xs.iter()
        .map(|s| s.timings[key].as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// The client's wall time of every sample.
fn wall(xs: &[Sample]) -> Vec<f64> {
    xs.iter().map(|s| s.wall_ms).collect()
}

/// How many samples took each engine path.
fn paths(xs: &[Sample]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for s in xs {
        *m.entry(s.path.as_str()).or_default() += 1;
    }
    m
}

fn tiergate_path(a: &SocketArgs) -> Result<PathBuf, String> {
    if let Some(p) = &a.tiergate {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let p = exe.with_file_name("tiergate");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} does not exist: build it (`cargo build --release -p control --bin tiergate`) or give --tiergate",
            p.display()
        ))
    }
}

/// Starts the daemon with `set` (a JSON document) as its `-f` file.
fn start(a: &SocketArgs, bin: &Path, dir: &Path, set: &str) -> Result<(Daemon, PathBuf), String> {
    let policy = dir.join("policies.json");
    std::fs::write(&policy, set).map_err(|e| format!("{}: {e}", policy.display()))?;
    let pcap = dir.join("flows.pcap");
    tuples_to_frames(
        &tuples(a.flows, a.policies, a.endpoints),
        1_000_000_000,
        1000,
    )
    .write(&pcap, CaptureFormat::Pcap)
    .map_err(|e| format!("{}: {e}", pcap.display()))?;
    let socket = dir.join("tiergate.sock");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--pcap")
        .arg(&pcap)
        .arg("--loop")
        .args(["--pcap-rate", &a.pcap_rate.to_string()])
        .arg("-f")
        .arg(&policy)
        .arg("--socket")
        .arg(&socket)
        .args(["--interval", "1"]);
    if let Some(c) = &a.classifier {
        cmd.args(["--classifier", c]);
    }
    if let Some(n) = &a.change_nice {
        cmd.args(["--change-nice", n]);
    }
    if a.state_dir {
        let sd = dir.join("state");
        let _ = std::fs::remove_dir_all(&sd);
        cmd.arg("--state-dir").arg(sd);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut d = Daemon { child };
    let t0 = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        if let Ok(Some(st)) = d.child.try_wait() {
            return Err(format!(
                "tiergate run exited ({st}) before its socket appeared"
            ));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("the control socket did not appear within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((d, socket))
}

/// Daemon timings, the engine's path and client wall time (ms) of one apply.
struct Sample {
    timings: Value,
    path: String,
    wall_ms: f64,
}

fn apply(c: &mut Client, text: String) -> Result<Sample, String> {
    let t0 = Instant::now();
    let r = c
        .call(Op::Apply {
            text: None,
            source: None,
            files: vec![SourceText {
                source: "bench".into(),
                text,
                json: true,
            }],
        })
        .map_err(|e| format!("apply: {e}"))?;
    sample(&r, t0, "apply")
}

/// The sample of a change's reply `r` to a request sent at `t0`; an error if it
/// changed nothing.
fn sample(r: &Value, t0: Instant, what: &str) -> Result<Sample, String> {
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    if r["changed"] != json!(true) {
        return Err(format!("{what} changed nothing: {r}"));
    }
    Ok(Sample {
        timings: r["timings"].clone(),
        path: r["path"].as_str().unwrap_or("?").to_string(),
        wall_ms,
    })
}

fn report(what: &str, n_policies: usize, xs: &[Sample]) {
    let total = Dist::of(&timing(xs, "total_ms"));
    let cpu = Dist::of(&timing(xs, "cpu_ms"));
    let wall = Dist::of(&wall(xs));
    println!(
        "socket apply {what}: policies {n_policies} n {} daemon total p50 {:.1} p99 {:.1} max {:.1} ms | cpu p50 {:.1} p99 {:.1} ms | client wall p50 {:.1} p99 {:.1} ms | median validate {:.1} lower {:.1} compile {:.1} persist {:.1} pickup {:.2} ms | paths {:?}",
        xs.len(),
        total.p50,
        total.p99,
        total.max,
        cpu.p50,
        cpu.p99,
        wall.p50,
        wall.p99,
        median(&timing(xs, "validate_ms")),
        median(&timing(xs, "lower_ms")),
        median(&timing(xs, "compile_ms")),
        median(&timing(xs, "persist_ms")),
        median(&timing(xs, "pickup_ms")),
        paths(xs),
    );
}

/// Requests per second of `req` over `conns` connections for `secs`, and the mean
/// reply size.
fn rate(socket: &Path, req: &Value, conns: usize, secs: f64) -> Result<(f64, f64), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let results: Vec<Result<(u64, u64), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(|| -> Result<(u64, u64), String> {
                    let w = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
                    let mut r = BufReader::with_capacity(
                        1 << 20,
                        w.try_clone().map_err(|e| e.to_string())?,
                    );
                    let mut w = w;
                    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
                    line.push(b'\n');
                    let mut buf = Vec::with_capacity(1 << 20);
                    let (mut n, mut bytes) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        w.write_all(&line).map_err(|e| format!("send: {e}"))?;
                        buf.clear();
                        r.read_until(b'\n', &mut buf)
                            .map_err(|e| format!("receive: {e}"))?;
                        let head = &buf[..buf.len().min(64)];
                        if !head.windows(9).any(|x| x == b"\"ok\":true") {
                            return Err(format!(
                                "refused: {}",
                                String::from_utf8_lossy(&buf[..buf.len().min(300)])
                            ));
                        }
                        n += 1;
                        bytes += buf.len() as u64;
                    }
                    Ok((n, bytes))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
            })
            .collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let (mut n, mut bytes) = (0, 0);
    for r in results {
        let (a, b) = r?;
        n += a;
        bytes += b;
    }
    Ok((n as f64 / elapsed, bytes as f64 / (n.max(1) as f64)))
}

fn held(c: &mut Client) -> u64 {
    c.call(Op::Stats)
        .ok()
        .and_then(|v| v["flow_records_held"].as_u64())
        .unwrap_or(0)
}

/// The request rates, once the ring holds `--ring-records` records.
fn rates(a: &SocketArgs, socket: &Path, c: &mut Client) -> Result<(), String> {
    let t0 = Instant::now();
    while held(c) < a.ring_records && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let records = held(c);
    let req = |op: Value| -> Value {
        let mut r = json!({"v": 1, "id": 1});
        if let (Value::Object(r), Value::Object(op)) = (&mut r, op) {
            r.extend(op);
        }
        r
    };
    let kinds: Vec<(&str, Value)> = vec![
        ("health", req(json!({"op": "health"}))),
        ("get gnp (all)", req(json!({"op": "get", "kind": "gnp"}))),
        (
            "get gnp NAME",
            req(json!({"op": "get", "kind": "gnp", "name": "p1"})),
        ),
        ("flows (newest 1000)", req(json!({"op": "flows"}))),
        ("flows --limit 20", req(json!({"op": "flows", "limit": 20}))),
        (
            "flows --action deny --limit 20",
            req(json!({"op": "flows", "filter": {"action": "deny"}, "limit": 20})),
        ),
        (
            "flows --policy p7 --limit 20",
            req(json!({"op": "flows", "filter": {"policy": "p7"}, "limit": 20})),
        ),
        (
            "flows --port P --limit 20",
            req(json!({"op": "flows", "filter": {"port": port(1, 0)}, "limit": 20})),
        ),
        (
            "flows --ip (none match)",
            req(json!({"op": "flows", "filter": {"ip": "192.0.2.1"}})),
        ),
    ];
    println!(
        "socket rates: {records} flow records held, {} policies; {} s per run, {} rounds alternating 1 / {} connections",
        a.policies, a.seconds, a.rounds, a.connections
    );
    for (name, r) in &kinds {
        let mut single = Vec::new();
        let mut multi = Vec::new();
        let mut size = 0.0;
        for _ in 0..a.rounds.max(1) {
            let (x, s) = rate(socket, r, 1, a.seconds)?;
            single.push(x);
            size = s;
            multi.push(rate(socket, r, a.connections, a.seconds)?.0);
        }
        let show = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "socket rate {name}: 1 connection {} req/s | {} connections {} req/s | reply {:.0} bytes",
            show(&single),
            a.connections,
            show(&multi),
            size
        );
    }
    Ok(())
}

pub fn main(a: &SocketArgs) -> Result<(), String> {
    let bin = tiergate_path(a)?;
    let dir = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tiergate-bench-socket-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let r = measure(a, &bin, &dir);
    // A directory of our own (not --dir) goes with the run, measured or not.
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

fn measure(a: &SocketArgs, bin: &Path, dir: &Path) -> Result<(), String> {
    if let Some(pods) = a.pod_churn {
        return pod_churn(a, bin, dir, pods);
    }
    let set = list(a.policies, a.endpoints, |j| port(j, 0)).to_string();
    let (daemon, socket) = start(a, bin, dir, &set)?;
    let mut c = Client::connect(&socket).map_err(|e| e.to_string())?;
    println!(
        "socket setup: tiergate {} policies {} endpoints {} flows {} pcap-rate {} state-dir {} classifier {}",
        bin.display(),
        a.policies,
        a.endpoints,
        a.flows,
        a.pcap_rate,
        a.state_dir,
        a.classifier.as_deref().unwrap_or("(default)")
    );
    if !a.applies_only {
        rates(a, &socket, &mut c)?;
    }
    if !a.rates_only {
        let mut one = Vec::new();
        for k in 0..a.changes {
            let j = (k * 37) % a.policies.max(1);
            one.push(apply(&mut c, policy(j, port(j, k + 1)).to_string())?);
        }
        report("one-rule change", a.policies, &one);
        let mut whole = Vec::new();
        for w in 0..a.replacements {
            let v = a.changes + 1 + w;
            whole.push(apply(
                &mut c,
                list(a.policies, a.endpoints, |j| port(j, v)).to_string(),
            )?);
        }
        report("whole replacement", a.policies, &whole);
    }
    drop(daemon);
    Ok(())
}

/// `--pod-churn`: pods with existing label sets applied and deleted through the socket.
fn pod_churn(a: &SocketArgs, bin: &Path, dir: &Path, pods: usize) -> Result<(), String> {
    use control::model::{Net, Resource};
    use control::server::daemon::document;
    use control::server::proto::KeyRef;
    let rs = crate::scale::Shape::new(0).resources(pods, a.churn_policies);
    let items: Vec<Value> = rs.iter().map(document).collect();
    let set = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let templates: Vec<Resource> = rs
        .iter()
        .filter(|r| matches!(r, Resource::WorkloadEndpoint(_)))
        .take(64)
        .cloned()
        .collect();
    if templates.is_empty() {
        return Err("the cluster has no workload endpoint".into());
    }
    let t0 = Instant::now();
    let (daemon, socket) = start(a, bin, dir, &set)?;
    let mut c = Client::connect(&socket).map_err(|e| e.to_string())?;
    println!(
        "socket pod-churn setup: tiergate {} pods {pods} policies {} classifier {} state-dir {}: socket up in {:.1} s",
        bin.display(),
        a.churn_policies,
        a.classifier.as_deref().unwrap_or("(default)"),
        a.state_dir,
        t0.elapsed().as_secs_f64()
    );
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for i in 0..a.churn_warmup.saturating_add(a.churn) {
        let mut r = templates[i % templates.len()].clone();
        let Resource::WorkloadEndpoint(o) = &mut r else {
            return Err("a template is not a workload endpoint".into());
        };
        o.metadata.name = format!("churn-{i}");
        o.spec.ip_networks = vec![
            Net::parse(&format!("10.200.{}.{}", (i / 256) % 256, i % 256))
                .map_err(|e| e.to_string())?,
        ];
        let key = r.key();
        let text = document(&r).to_string();
        samples[0].push(apply(&mut c, text)?);
        let w = Instant::now();
        let reply = c
            .call(Op::Delete {
                keys: vec![KeyRef {
                    kind: key.kind.as_str().into(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                }],
                text: None,
                source: None,
                files: Vec::new(),
            })
            .map_err(|e| format!("delete: {e}"))?;
        samples[1].push(sample(&reply, w, "a pod delete")?);
    }
    for (what, all) in ["pod-add-existing-labels", "pod-delete-existing-labels"]
        .iter()
        .zip(&samples)
    {
        let (warm, xs) = all.split_at(a.churn_warmup.min(all.len()));
        if !warm.is_empty() {
            let total = Dist::of(&timing(warm, "total_ms"));
            println!(
                "socket pod-churn {what} warm-up (not in the line below): n {} daemon total p50 {:.3} p99 {:.3} max {:.3} ms",
                warm.len(),
                total.p50,
                total.p99,
                total.max,
            );
        }
        let d = |k: &str| Dist::of(&timing(xs, k));
        let (total, cpu, engine, validate) = (
            d("total_ms"),
            d("cpu_ms"),
            d("compile_ms"),
            d("validate_ms"),
        );
        let (publish, pickup, wall) = (d("publish_ms"), d("pickup_ms"), Dist::of(&wall(xs)));
        println!(
            "socket pod-churn {what}: pods {pods} policies {} classifier {} n {} daemon total p50 {:.3} p99 {:.3} max {:.3} ms | cpu p50 {:.3} p99 {:.3} | engine p50 {:.3} p99 {:.3} | validate p50 {:.3} p99 {:.3} | lower p50 {:.3} | persist p50 {:.3} | publish p50 {:.3} p99 {:.3} | pickup p50 {:.3} p99 {:.3} | client wall p50 {:.3} p99 {:.3} ms | paths {:?}",
            a.churn_policies,
            a.classifier.as_deref().unwrap_or("(default)"),
            xs.len(),
            total.p50,
            total.p99,
            total.max,
            cpu.p50,
            cpu.p99,
            engine.p50,
            engine.p99,
            validate.p50,
            validate.p99,
            median(&timing(xs, "lower_ms")),
            median(&timing(xs, "persist_ms")),
            publish.p50,
            publish.p99,
            pickup.p50,
            pickup.p99,
            wall.p50,
            wall.p99,
            paths(xs)
        );
    }
    drop(daemon);
    Ok(())
}
