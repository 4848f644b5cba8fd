//! The control socket end to end, without privilege: `tiergate run --pcap` feeds a
//! synthetic capture to a worker, and the client verbs (or raw socket requests)
//! change its policy live. Per-frame counters (`stats`) say what each flow sent and
//! what got through.
//!
//! Topology of the captures: client 10.77.0.1 → server 10.77.0.2, UDP. The base policy
//! lets the server take UDP 5353 and 7777; `deny-7777` (applied and deleted live)
//! denies 7777.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pcap::capture::CaptureFormat;
use pcap::synth::{TraceTuple, tuples_to_frames};
use serde_json::{Value, json};
use tests::{temp_dir, tiergate, tiergate_bin};

const CLIENT: u32 = u32::from_be_bytes([10, 77, 0, 1]);
const SERVER: u32 = u32::from_be_bytes([10, 77, 0, 2]);

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: wire
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client, namespace: wire, labels: {app: client}}
spec: {orchestrator: k8s, ipNetworks: [10.77.0.1/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: server, namespace: wire, labels: {app: server}}
spec: {orchestrator: k8s, ipNetworks: [10.77.0.2/32]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: wire}
spec:
  order: 100
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: UDP
    destination: {ports: [5353, 7777]}
"#;

const DENY_7777: &str = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-7777}
spec:
  order: 1
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: UDP
    destination: {ports: [7777]}
"#;

const STAGED_DENY_5353: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: staged-deny-5353}
spec:
  order: 1
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: UDP
    destination: {ports: [5353]}
"#;

fn udp(sport: u16, dport: u16) -> TraceTuple {
    TraceTuple {
        src: CLIENT,
        dst: SERVER,
        sport,
        dport,
        proto: 17,
    }
}

/// Each test runs once per generation engine of the daemon, as `tree::NAME` and
/// `identity::NAME`.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod tree {
            $(#[test]
            fn $name() {
                super::$name("tree");
            })*
        }
        mod identity {
            $(#[test]
            fn $name() {
                super::$name("identity");
            })*
        }
    };
}

both_engines!(
    apply_get_delete_round_trip,
    a_live_deny_stops_new_connections_within_a_second_and_flows_show_it,
    a_staged_policy_applied_live_changes_pending_only,
    a_hundred_applies_and_deletes_lose_nothing_both_generations_allow,
    bad_clients_are_refused_without_effect_on_forwarding,
    sighup_reloads_the_policy_files,
    stats_counts_the_flow_log_records_written,
    sighup_deletes_what_the_files_dropped_and_leaves_socket_applies_alone,
    sighup_after_a_restart_deletes_what_the_files_of_the_previous_run_held,
);

/// A running `tiergate run --pcap`; stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    /// `engine`: the `--classifier` the daemon runs.
    fn start(engine: &str, tag: &str, tuples: &[TraceTuple], extra: &[&str]) -> Daemon {
        let dir = temp_dir(&format!("socket-{tag}-{engine}"));
        let pcap = dir.join("in.pcap");
        tuples_to_frames(tuples, 1_000_000_000, 1000)
            .write(&pcap, CaptureFormat::Pcap)
            .expect("write capture");
        let policy = dir.join("base.yaml");
        std::fs::write(&policy, BASE).unwrap();
        let socket = dir.join("tiergate.sock");
        let child = Command::new(tiergate_bin())
            .arg("run")
            .arg("--pcap")
            .arg(&pcap)
            .arg("-f")
            .arg(&policy)
            .arg("--socket")
            .arg(&socket)
            .args(["--interval", "1"])
            .args(["--classifier", engine])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tiergate run");
        let d = Daemon { child, socket, dir };
        let t0 = Instant::now();
        while UnixStream::connect(&d.socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        tiergate()
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Per frame: [sent, forwarded].
    fn per_frame(&self) -> Vec<[u64; 2]> {
        let s = request(&self.socket, json!({"v":1,"id":1,"op":"stats"}));
        serde_json::from_value(s["result"]["counters"]["per_frame"].clone()).unwrap()
    }

    /// Per-frame counters once `settled` holds, or the last read after 3 s. A frame is
    /// counted as sent when the worker takes it and as forwarded when it leaves, so a
    /// read in the middle of a batch sees frames in flight; a lost frame stays unequal.
    fn per_frame_when(&self, settled: impl Fn(&[[u64; 2]]) -> bool) -> Vec<[u64; 2]> {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            let pf = self.per_frame();
            if settled(&pf) || Instant::now() > end {
                return pf;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn rx(&self) -> u64 {
        let s = request(&self.socket, json!({"v":1,"id":1,"op":"stats"}));
        s["result"]["counters"]["workers"][0]["rx"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request on a fresh connection, its (first) reply.
fn request(socket: &Path, req: Value) -> Value {
    let mut s = UnixStream::connect(socket).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn apply_get_delete_round_trip(engine: &str) {
    let d = Daemon::start(
        engine,
        "roundtrip",
        &[udp(1000, 5353)],
        &["--loop", "--pcap-rate", "1000"],
    );
    let deny = d.file("deny.yaml", DENY_7777);
    let o = d.cli(&["apply", "-f", deny.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 created"), "{}", text(&o));
    // get -o yaml | apply -f -: nothing changes.
    for kind in ["gnp", "np", "wep", "tier"] {
        let got = d.cli(&["get", kind, "-A", "-o", "yaml"]);
        assert!(got.status.success(), "{}", text(&got));
        let mut apply = tiergate()
            .args(["apply", "-f", "-", "--socket"])
            .arg(&d.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        apply.stdin.take().unwrap().write_all(&got.stdout).unwrap();
        let o = apply.wait_with_output().unwrap();
        assert!(o.status.success(), "{kind}: {}", text(&o));
        assert!(
            text(&o).contains("nothing changed (policy generation 2)"),
            "{kind}: {}",
            text(&o)
        );
    }
    let wide = d.cli(&["get", "np", "-n", "wire", "-o", "wide"]);
    assert!(text(&wide).contains("server-ingress"), "{}", text(&wide));
    let o = d.cli(&["delete", "gnp", "deny-7777"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.cli(&["get", "gnp", "deny-7777"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not found"));
    // A bad apply changes nothing and names the problem.
    let bad = d.file("bad.yaml", &DENY_7777.replace("all()", "app =="));
    let o = d.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("bad.yaml:1: spec.selector"),
        "{}",
        text(&o)
    );
    let h = request(&d.socket, json!({"v":1,"id":5,"op":"health"}));
    assert_eq!(h["id"], 5);
    assert_eq!(h["result"]["generation"], 3);
}

fn a_live_deny_stops_new_connections_within_a_second_and_flows_show_it(engine: &str) {
    // 8000 connections (one datagram each, distinct source ports) at 2000/s.
    let tuples: Vec<TraceTuple> = (0..8000).map(|i| udp(20000 + i as u16, 7777)).collect();
    let d = Daemon::start(engine, "deny", &tuples, &["--pcap-rate", "2000"]);
    // Enough frames sent before the apply (half a second at the paced rate; longer when
    // the machine is loaded).
    let started = Instant::now();
    let sent = |d: &Daemon| {
        let s = request(&d.socket, json!({"v":1,"id":1,"op":"stats"}));
        // No per-frame counters until the source has started.
        serde_json::from_value::<Vec<[u64; 2]>>(s["result"]["counters"]["per_frame"].clone())
            .map_or(0, |pf| pf.iter().filter(|f| f[0] > 0).count())
    };
    while sent(&d) < 900 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let deny = d.file("deny.yaml", DENY_7777);
    // Frames sent before the apply starts were all sent before the deny was published
    // (counted here, not after the reply: on a loaded machine the client's exit can
    // come well after the workers took the new generation).
    let sent_before_apply = d.per_frame().iter().filter(|f| f[0] > 0).count();
    let t0 = Instant::now();
    let o = d.cli(&["apply", "-f", deny.to_str().unwrap(), "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["workers"]["running_generation"], 1);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "apply took {:?}",
        t0.elapsed()
    );
    // Every frame sent once the apply returned is dropped.
    let sent_by_then = d.per_frame().iter().filter(|f| f[0] > 0).count();
    std::thread::sleep(Duration::from_millis(1000));
    let pf = d.per_frame();
    let before: Vec<&[u64; 2]> = pf[..sent_before_apply.saturating_sub(200)].iter().collect();
    assert!(
        before.len() > 500,
        "{} frames before the apply",
        before.len()
    );
    assert!(
        before.iter().all(|f| f[1] == 1),
        "frames before the deny were forwarded"
    );
    let after: Vec<&[u64; 2]> = pf[sent_by_then..].iter().filter(|f| f[0] > 0).collect();
    assert!(after.len() > 1000, "{} frames after the apply", after.len());
    assert!(
        after.iter().all(|f| f[1] == 0),
        "a frame got through after the deny"
    );
    // flows shows the denied connections, with the policy that denied them.
    let t = Instant::now();
    loop {
        let o = d.cli(&[
            "flows",
            "--action",
            "deny",
            "--policy",
            "deny-7777",
            "-o",
            "json",
        ]);
        let flows: Value = serde_json::from_slice(&o.stdout).unwrap();
        if flows.as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(flows[0]["dst_port"], 7777);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(6), "no denied flow shown");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn a_staged_policy_applied_live_changes_pending_only(engine: &str) {
    let d = Daemon::start(
        engine,
        "staged",
        &[udp(1000, 5353), udp(1001, 5353)],
        &["--loop", "--pcap-rate", "2000"],
    );
    let staged = d.file("staged.yaml", STAGED_DENY_5353);
    let o = d.cli(&["apply", "-f", staged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = Instant::now();
    loop {
        let o = d.cli(&["flows", "--pending-action", "deny", "-o", "json"]);
        let flows: Value = serde_json::from_slice(&o.stdout).unwrap();
        if let Some(f) = flows.as_array().and_then(|a| a.last()) {
            assert_eq!(f["action"], "allow");
            assert_eq!(f["dst_port"], 5353);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "no pending deny shown"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pf = d.per_frame_when(|pf| pf.iter().all(|f| f[0] > 0 && f[0] == f[1]));
    assert!(pf.iter().all(|f| f[0] > 0 && f[0] == f[1]), "{pf:?}");
    let o = d.cli(&["impact", "--live"]);
    assert!(text(&o).contains("staged-deny-5353"), "{}", text(&o));
}

fn a_hundred_applies_and_deletes_lose_nothing_both_generations_allow(engine: &str) {
    // Flow A (5353) is allowed by both generations, flow B (7777) by one; every
    // connection is re-decided at every change (--reevaluate).
    let d = Daemon::start(
        engine,
        "churn",
        &[udp(1000, 5353), udp(1001, 7777)],
        &["--loop", "--pcap-rate", "20000", "--reevaluate"],
    );
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..100 {
        for req in [
            json!({"v":1,"id":2*i,"op":"apply","text":DENY_7777}),
            json!({"v":1,"id":2*i+1,"op":"delete","keys":[{"kind":"gnp","name":"deny-7777"}]}),
        ] {
            writeln!(s, "{req}").unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], true, "{line}");
            assert_eq!(v["id"], req["id"]);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let pf = d.per_frame_when(|pf| pf[0][0] == pf[0][1]);
    assert!(pf[0][0] > 1000, "flow A sent only {}", pf[0][0]);
    assert_eq!(pf[0][0], pf[0][1], "flow A lost packets: {pf:?}");
    assert!(pf[1][1] < pf[1][0], "flow B was never denied: {pf:?}");
    let h = request(&d.socket, json!({"v":1,"id":1,"op":"health"}));
    assert_eq!(h["result"]["generation"], 201);
}

fn bad_clients_are_refused_without_effect_on_forwarding(engine: &str) {
    let d = Daemon::start(
        engine,
        "bad",
        &[udp(1000, 5353)],
        &["--loop", "--pcap-rate", "5000", "--socket-mode", "666"],
    );
    // Malformed: an error reply naming the problem; the connection stays usable.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for (bad, want) in [
        ("{not json", "not one JSON object"),
        (r#"{"v":1,"id":3,"op":"nope"}"#, "nope"),
        (r#"{"v":9,"id":4,"op":"stats"}"#, "version 9"),
        (
            r#"{"v":1,"id":5,"op":"apply","text":"kind: Tier"}"#,
            "apply refused",
        ),
    ] {
        writeln!(s, "{bad}").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line.contains(r#""ok":false"#) && line.contains(want),
            "{bad}: {line}"
        );
    }
    writeln!(s, r#"{{"v":1,"id":6,"op":"version"}}"#).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains(r#""ok":true"#), "{line}");
    // Oversize: refused and closed.
    let mut big = UnixStream::connect(&d.socket).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut refused = String::new();
    for _ in 0..20 {
        if big.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = big.read_to_string(&mut refused);
    assert!(refused.contains("too_large"), "{refused}");
    // Slow: one byte a second never completes a request in time.
    let mut slow = UnixStream::connect(&d.socket).unwrap();
    let t = Instant::now();
    let mut got = String::new();
    slow.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    for b in br#"{"v":1,"id":1,"op":"stats"}"#.iter().take(12) {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(n) = slow.read(&mut buf)
            && n > 0
        {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            break;
        }
    }
    assert!(got.contains("timeout"), "{got}");
    assert!(t.elapsed() < Duration::from_secs(9));
    // Another uid: refused by the peer-credential check (the socket is 0666 here).
    if tests_run_as_root() {
        use std::os::unix::process::CommandExt;
        // (Skipped where uid 65534 cannot execute the binary.)
        if let Ok(o) = Command::new(tiergate_bin())
            .args(["health", "--socket"])
            .arg(&d.socket)
            .uid(65534)
            .gid(65534)
            .output()
            && !text(&o).contains("ermission denied")
        {
            assert_eq!(o.status.code(), Some(2), "{}", text(&o));
            assert!(
                text(&o).contains("uid 65534 may not use this socket"),
                "{}",
                text(&o)
            );
        }
    }
    // Forwarding went on and lost nothing.
    let rx = d.rx();
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.rx() > rx);
    let pf = d.per_frame_when(|pf| pf[0][0] == pf[0][1]);
    assert_eq!(pf[0][0], pf[0][1], "flow A lost packets: {pf:?}");
}

/// A change runs at `--change-nice` (-10 by default) when the process may set it,
/// says so in its timings and in `health`, and at the thread's own priority with
/// `--change-nice off`; an out-of-range value is a usage error naming the flag.
#[test]
fn changes_run_at_the_change_nice_value() {
    let root = tests_run_as_root();
    for (extra, want) in [(None, -10), (Some("off"), 0), (Some("5"), 5)] {
        let mut args = vec!["--loop", "--pcap-rate", "1000"];
        if let Some(v) = extra {
            args.extend(["--change-nice", v]);
        }
        let d = Daemon::start("identity", "nice", &[udp(1000, 5353)], &args);
        let r = request(
            &d.socket,
            json!({"v":1,"id":2,"op":"apply","text":DENY_7777}),
        );
        assert_eq!(r["result"]["changed"], true, "{r}");
        let nice = &r["result"]["timings"]["nice"];
        let health = request(&d.socket, json!({"v":1,"id":3,"op":"health"}));
        let said = &health["result"]["change_nice"];
        match extra {
            Some("off") => {
                assert!(nice.is_null(), "{r}");
                assert!(said.is_null(), "{health}");
            }
            // Raising the nice value needs no privilege; lowering it needs root here.
            _ if want > 0 || root => {
                assert_eq!(nice, want, "{r}");
                assert_eq!(said, want, "{health}");
            }
            _ => {
                eprintln!(
                    "changes_run_at_the_change_nice_value: not root, so the default --change-nice -10 is refused; checked only that changes still apply"
                );
                assert!(nice.is_null(), "{r}");
            }
        }
    }
    let o = tiergate()
        .args(["run", "--pcap", "none.pcap", "--change-nice", "20"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--change-nice"), "{}", text(&o));
    assert!(text(&o).contains("-20 to 19"), "{}", text(&o));
}

fn tests_run_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sighup_reloads_the_policy_files(engine: &str) {
    let d = Daemon::start(
        engine,
        "hup",
        &[udp(1000, 7777)],
        &["--loop", "--pcap-rate", "1000"],
    );
    let policy = d.dir.join("base.yaml");
    let o = d.cli(&["get", "globalnetworkpolicy", "deny-7777"]);
    assert_ne!(o.status.code(), Some(0), "not there yet: {}", text(&o));
    let mut yaml = std::fs::read_to_string(&policy).unwrap();
    yaml.push_str("\n---\n");
    yaml.push_str(DENY_7777);
    std::fs::write(&policy, yaml).unwrap();
    let kill = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t0 = Instant::now();
    loop {
        let o = d.cli(&["get", "globalnetworkpolicy", "deny-7777", "-o", "yaml"]);
        if o.status.code() == Some(0) {
            assert!(text(&o).contains("deny-7777"), "{}", text(&o));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "SIGHUP did not load the edited file: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stats_counts_the_flow_log_records_written(engine: &str) {
    let out = temp_dir(&format!("socket-logcount-out-{engine}"));
    let log = out.join("flows.jsonl");
    let d = Daemon::start(
        engine,
        "logcount",
        &[udp(1000, 5353), udp(1001, 7777)],
        &[
            "--loop",
            "--pcap-rate",
            "1000",
            "--flowlog",
            log.to_str().unwrap(),
        ],
    );
    // Intervals of 1 s are written once over (plus a grace of 2 s): the count in
    // `stats` and the lines in the file agree once both are past the first interval.
    let t0 = Instant::now();
    loop {
        let s = request(&d.socket, json!({"v":1,"id":1,"op":"stats"}));
        // `unavailable` until the worker runs.
        if s["error"]["code"] == "unavailable" {
            assert!(t0.elapsed() < Duration::from_secs(10), "{s}");
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let counted = s["result"]["counters"]["flow_log_records"]
            .as_u64()
            .unwrap_or_else(|| panic!("no flow_log_records in stats: {s}"));
        let lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count() as u64;
        if counted > 0 && counted == lines {
            assert!(
                s["result"]["text"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("flow-log records {counted}")),
                "{s}"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "stats counts {counted} flow-log records, the file holds {lines}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&out);
}

fn hup(d: &Daemon) {
    let kill = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// Waits until `get KIND NAME` finds the resource (`present`) or not.
fn wait_get(d: &Daemon, kind: &str, name: &str, present: bool, what: &str) {
    let t0 = Instant::now();
    loop {
        let o = d.cli(&["get", kind, name]);
        if (o.status.code() == Some(0)) == present {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: get {kind} {name}: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sighup_deletes_what_the_files_dropped_and_leaves_socket_applies_alone(engine: &str) {
    let d = Daemon::start(
        engine,
        "hupdel",
        &[udp(1000, 7777)],
        &["--loop", "--pcap-rate", "1000"],
    );
    let policy = d.dir.join("base.yaml");
    // The files gain deny-7777; the socket applies a staged policy of its own.
    std::fs::write(&policy, format!("{BASE}\n---\n{DENY_7777}")).unwrap();
    hup(&d);
    wait_get(
        &d,
        "gnp",
        "deny-7777",
        true,
        "SIGHUP did not load the edited file",
    );
    let staged = d.file("staged.yaml", STAGED_DENY_5353);
    let o = d.cli(&["apply", "-f", staged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // A file set that no longer loads changes nothing, deletions included.
    std::fs::write(&policy, BASE.replace("app == 'server'", "app ==")).unwrap();
    hup(&d);
    std::thread::sleep(Duration::from_millis(500));
    for (kind, name) in [
        ("gnp", "deny-7777"),
        ("np", "server-ingress"),
        ("sgnp", "staged-deny-5353"),
    ] {
        let o = d.cli(&["get", kind, name, "-n", "wire"]);
        assert!(
            o.status.success(),
            "a refused reload changed {name}: {}",
            text(&o)
        );
    }

    // deny-7777 leaves the files: the reload deletes it, and only it.
    std::fs::write(&policy, BASE).unwrap();
    hup(&d);
    wait_get(
        &d,
        "gnp",
        "deny-7777",
        false,
        "SIGHUP kept what the files dropped",
    );
    let o = d.cli(&["get", "sgnp", "staged-deny-5353"]);
    assert!(o.status.success(), "the socket's policy went: {}", text(&o));
    let o = d.cli(&["get", "np", "server-ingress", "-n", "wire"]);
    assert!(o.status.success(), "{}", text(&o));
    // Forwarding follows: the 7777 frame gets through again.
    let h = request(&d.socket, json!({"v":1,"id":1,"op":"health"}));
    let gen_now = h["result"]["generation"].as_u64().unwrap();
    let before = d.per_frame()[0][1];
    let t0 = Instant::now();
    while d.per_frame()[0][1] <= before + 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "UDP 7777 not forwarded after the deny was deleted (generation {gen_now})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sighup_after_a_restart_deletes_what_the_files_of_the_previous_run_held(engine: &str) {
    let state = temp_dir(&format!("socket-hup-state-{engine}"));
    let sd = state.join("state");
    let extra = [
        "--loop",
        "--pcap-rate",
        "1000",
        "--state-dir",
        sd.to_str().unwrap(),
    ];
    {
        let d = Daemon::start(engine, "hupstate1", &[udp(1000, 7777)], &extra);
        std::fs::write(d.dir.join("base.yaml"), format!("{BASE}\n---\n{DENY_7777}")).unwrap();
        hup(&d);
        wait_get(
            &d,
            "gnp",
            "deny-7777",
            true,
            "SIGHUP did not load the edited file",
        );
        let staged = d.file("staged.yaml", STAGED_DENY_5353);
        let o = d.cli(&["apply", "-f", staged.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // The next run's -f holds BASE only; the state wins at start (deny-7777 restored),
    // and remembers that deny-7777 came from the files.
    let d = Daemon::start(engine, "hupstate2", &[udp(1000, 7777)], &extra);
    let o = d.cli(&["get", "gnp", "deny-7777"]);
    assert!(o.status.success(), "not restored: {}", text(&o));
    hup(&d);
    wait_get(
        &d,
        "gnp",
        "deny-7777",
        false,
        "the restarted daemon's SIGHUP kept what the files dropped",
    );
    let o = d.cli(&["get", "sgnp", "staged-deny-5353"]);
    assert!(o.status.success(), "the socket's policy went: {}", text(&o));
    drop(d);
    let _ = std::fs::remove_dir_all(&state);
}
