//! `tiergate replay` / `tiergate impact` end to end: the embedded default (seed
//! capture against the seed examples), flow-log goldens, split captures, a staged
//! Delete that changes nothing, and bad input.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tests::{temp_dir, tiergate};

fn seed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str]) -> Output {
    tiergate().args(args).output().expect("run tiergate")
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "tiergate {args:?} failed: {}",
        text(&out.stderr)
    );
    out
}

/// Flow-log records of a replay (`--flowlog` to a file), parsed.
fn flow_logs(name: &str, extra: &[&str]) -> Vec<Value> {
    let dir = temp_dir(&format!("flowlog-{name}"));
    let path = dir.join("flows.jsonl");
    let mut args = vec!["replay", "--flowlog", path.to_str().unwrap(), "-o", "json"];
    args.extend_from_slice(extra);
    ok(&args);
    std::fs::read_to_string(&path)
        .expect("flow log written")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// The one record matching reporter, source, destination and port.
fn record<'a>(logs: &'a [Value], reporter: &str, src: &str, dst: &str, port: u64) -> &'a Value {
    let found: Vec<&Value> = logs
        .iter()
        .filter(|l| {
            l["reporter"] == reporter
                && l["source_name"] == src
                && l["dest_name"] == dst
                && l["dest_port"] == port
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {reporter} record {src} -> {dst}:{port}, got {found:#?}"
    );
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn default_replay_shows_staged_allow_to_the_database_while_enforced_is_unaffected() {
    let logs = flow_logs("staged-allow", &[]);
    let r = record(&logs, "dst", "frontend", "database", 6379);
    assert_eq!(
        r["action"], "deny",
        "enforced: the database accepts only the backend"
    );
    assert_eq!(r["pending_action"], "allow");
    assert_eq!(
        strings(&r["policies"]["enforced"]),
        ["0|default|np:default/database-allow-backend|deny|-1"]
    );
    assert_eq!(
        strings(&r["policies"]["pending"]),
        ["0|default|sgnp:default.allow-tcp-6379|allow|0"]
    );
    assert_eq!(r["num_connections_started"], 3);
    assert_eq!(
        r["num_connections_completed"], 3,
        "closed by FINs before the capture ends"
    );
    assert_eq!(r["num_connections_live"], 0);
    assert_eq!(r["source_type"], "wep");
    assert_eq!(r["dest_namespace"], "default");
}

#[test]
fn other_traffic_to_the_database_is_pending_deny_end_of_tier() {
    let logs = flow_logs("end-of-tier", &[]);
    let r = record(&logs, "dst", "frontend", "database", 5432);
    assert_eq!(
        (r["action"].as_str(), r["pending_action"].as_str()),
        (Some("deny"), Some("deny"))
    );
    let pending = strings(&r["policies"]["pending"]);
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0].ends_with("|deny|-1"),
        "end-of-tier deny: {pending:?}"
    );
}

#[test]
fn replies_of_allowed_connections_pass() {
    let logs = flow_logs("replies", &[]);
    // backend → database:5432: two connections of 20 packets each, both directions.
    let r = record(&logs, "dst", "backend", "database", 5432);
    assert_eq!(
        (r["action"].as_str(), r["pending_action"].as_str()),
        (Some("allow"), Some("allow"))
    );
    let inbound = r["packets_in"].as_u64().unwrap();
    let outbound = r["packets_out"].as_u64().unwrap();
    assert_eq!(
        inbound + outbound,
        40,
        "every packet of both connections is counted"
    );
    assert!(outbound > 0, "replies from the database passed");
    let src = record(&logs, "src", "backend", "database", 5432);
    assert_eq!(
        src["policies"]["enforced"][0],
        "0|__PROFILE__|pro:kns.default|allow|0"
    );
}

#[test]
fn staged_kubernetes_policy_would_newly_deny_the_except_range() {
    let out = ok(&["impact", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("impact JSON");
    let sknp = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "default|sknp:default/test-network-policy")
        .expect("the staged k8s policy is in the report");
    assert_eq!(
        sknp["newly_denied"]["connections"], 2,
        "172.17.1.5 → db and db → 10.0.0.7:443"
    );
    let sgnp = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "default|sgnp:default.allow-tcp-6379")
        .expect("the staged global policy is in the report");
    assert_eq!(sgnp["newly_allowed"]["connections"], 3);
    assert_eq!(sgnp["top_ports"][0]["item"], "tcp/6379");
}

fn summary(args: &[&str]) -> Value {
    let mut all = vec!["replay", "-o", "json"];
    all.extend_from_slice(args);
    let out = ok(&all);
    let v: Value = serde_json::from_slice(&out.stdout).expect("replay JSON");
    // Comparisons of missing keys would pass (null == null): the keys must exist.
    assert!(v["summary"]["packets"]["total"].is_u64(), "{v}");
    assert!(v["summary"]["connections"]["total"].is_u64(), "{v}");
    v["summary"].clone()
}

#[test]
fn staged_delete_changes_nothing() {
    let dir = temp_dir("staged-delete");
    for e in std::fs::read_dir(seed()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let base = summary(&["--policies", dir.to_str().unwrap()]);
    std::fs::write(
        dir.join("40-staged-delete.yaml"),
        "apiVersion: projectcalico.org/v3\n\
         kind: StagedNetworkPolicy\n\
         metadata:\n  name: database-allow-backend\n  namespace: default\n\
         spec:\n  stagedAction: Delete\n",
    )
    .unwrap();
    let with_delete = summary(&["--policies", dir.to_str().unwrap()]);
    assert_eq!(base["packets"], with_delete["packets"]);
    assert_eq!(base["connections"], with_delete["connections"]);
}

#[test]
fn default_replay_equals_replay_of_the_example_directory() {
    let embedded = summary(&[]);
    let from_dir = summary(&["-f", seed().to_str().unwrap()]);
    assert_eq!(embedded["packets"], from_dir["packets"]);
    assert_eq!(embedded["connections"], from_dir["connections"]);
    assert_eq!(embedded["packets"]["total"], embedded["packets"]["parsed"]);
    // The seed capture holds 14 conversations; responder packets of denied ones stay
    // with them (no phantom reverse connections).
    assert_eq!(embedded["connections"]["total"], 14);
    assert_eq!(embedded["connections"]["newly_denied"], 2);
    assert_eq!(embedded["connections"]["newly_allowed"], 3);
}

#[test]
fn split_captures_hold_every_frame_once() {
    let dir = temp_dir("split");
    let (a, d) = (dir.join("allowed.pcap"), dir.join("denied.pcap"));
    let out = ok(&[
        "replay",
        "-o",
        "json",
        "--allowed-out",
        a.to_str().unwrap(),
        "--denied-out",
        d.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |p: &Path| pcap::capture::Frames::read(p).expect("readable pcap").len() as u64;
    assert_eq!(
        count(&a),
        v["summary"]["packets"]["forwarded"]["packets"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        count(&d),
        v["summary"]["packets"]["dropped"]["packets"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        count(&a) + count(&d),
        v["summary"]["packets"]["total"].as_u64().unwrap()
    );
    assert!(count(&d) > 0, "the seed capture has denied traffic");
    // Replaying the allowed capture again: everything is still allowed.
    let again = summary(&["--pcap", a.to_str().unwrap()]);
    assert_eq!(again["packets"]["dropped"]["packets"], 0);
}

#[test]
fn table_output_names_inputs_and_reports_both_views() {
    let out = ok(&["replay"]);
    let t = text(&out.stdout);
    for needle in [
        "embedded seed capture",
        "embedded seed examples",
        "enforced",
        "pending",
        "impact of staged policies",
        "default|sknp:default/test-network-policy",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = temp_dir("bad-inputs");
    let missing = dir.join("nope.pcap");
    let out = run(&["replay", "--pcap", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nope.pcap"),
        "{}",
        text(&out.stderr)
    );

    let garbage = dir.join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture").unwrap();
    let out = run(&["replay", "--pcap", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("garbage.pcap"),
        "{}",
        text(&out.stderr)
    );

    let bad_policy = dir.join("bad.yaml");
    std::fs::write(
        &bad_policy,
        "apiVersion: projectcalico.org/v3\nkind: Nope\n",
    )
    .unwrap();
    let out = run(&["replay", "--policies", bad_policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.yaml:1"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["replay", "--workers", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tree_and_linear_classifiers_give_the_same_replay() {
    let tree = flow_logs("tree", &["--classifier", "tree"]);
    let linear = flow_logs("linear", &["--classifier", "linear"]);
    assert_eq!(tree, linear);
    assert_eq!(
        summary(&["--classifier", "tree"])["connections"],
        summary(&["--classifier", "linear"])["connections"]
    );
}

#[test]
fn every_vendored_capture_replays_with_matching_packet_counts() {
    let dir = pcap::shared::fixtures("pcap");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "tests/data/pcap: {files:?}");
    replays_with_matching_packet_counts(&files);
}

#[test]
#[cfg_attr(
    not(tiergate_shared),
    ignore = "needs shared/ data: set TIERGATE_SHARED_DIR"
)]
fn tcpreplay_capture_replays_with_matching_packet_counts() {
    let Some(dir) = pcap::shared::data_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        "pcap",
        "replay of the tcpreplay capture",
    ) else {
        return;
    };
    replays_with_matching_packet_counts(&[dir.join("tcpreplay_test.pcap")]);
}

fn replays_with_matching_packet_counts(files: &[PathBuf]) {
    for f in files {
        let frames = pcap::capture::Frames::read(f).expect("readable").len() as u64;
        let s = summary(&["--pcap", f.to_str().unwrap(), "--workers", "2"]);
        let p = &s["packets"];
        assert_eq!(p["total"], frames, "{}", f.display());
        let parts: u64 = ["parsed", "truncated", "malformed", "non_ip"]
            .iter()
            .map(|k| p[*k].as_u64().unwrap())
            .sum();
        assert_eq!(
            parts,
            frames,
            "{}: every frame has one outcome",
            f.display()
        );
        let moved =
            p["forwarded"]["packets"].as_u64().unwrap() + p["dropped"]["packets"].as_u64().unwrap();
        assert_eq!(
            moved,
            frames,
            "{}: every frame forwarded or dropped",
            f.display()
        );
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = tiergate()
        .args(["replay", "--flowlog", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close the reading end before the command has loaded its policies: its first
    // write meets a closed pipe, as with `tiergate replay --flowlog - | head -0`.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?} {stderr}",
        out.status
    );
}
