//! `tiergate eval`: the stable `-o json` document on the bundled seed example, the
//! table, exit codes, and bad input from the outside.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use tests::{temp_dir, tiergate};

fn seed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn eval(args: &[&str]) -> Output {
    tiergate()
        .arg("eval")
        .arg("-f")
        .arg(seed())
        .args(args)
        .output()
        .expect("run tiergate")
}

fn eval_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = eval(&all);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

const KNS_DEFAULT: &str = "0|__PROFILE__|pro:kns.default|allow|0";

#[test]
fn seed_frontend_to_database_is_denied_now_and_allowed_when_staged_goes_live() {
    let v = eval_json(&[
        "--src",
        "10.0.1.10",
        "--dst",
        "10.0.1.20",
        "--proto",
        "tcp",
        "--dport",
        "6379",
    ]);
    assert_eq!(
        v,
        json!({
            "verdicts": [
                {"reporter": "src", "endpoint": "default/frontend",
                 "enforced": {"action": "allow", "policies": [KNS_DEFAULT]},
                 "pending": {"action": "allow", "policies": [KNS_DEFAULT]}},
                {"reporter": "dst", "endpoint": "default/database",
                 "enforced": {"action": "deny",
                              "policies": ["0|default|np:default/database-allow-backend|deny|-1"]},
                 "pending": {"action": "allow",
                             "policies": ["0|default|sgnp:default.allow-tcp-6379|allow|0"]}}
            ],
            "final": {"enforced": "deny", "pending": "allow"}
        })
    );
}

#[test]
fn seed_staged_kubernetes_policy_from_an_outside_address() {
    // 172.17.1.5 is in the ipBlock's except range: only the destination reports.
    let v = eval_json(&[
        "--src",
        "172.17.1.5",
        "--dst",
        "10.0.1.30",
        "--proto",
        "TCP",
        "--sport",
        "1234",
        "--dport",
        "6379",
    ]);
    assert_eq!(
        v,
        json!({
            "verdicts": [
                {"reporter": "dst", "endpoint": "default/db",
                 "enforced": {"action": "allow", "policies": [KNS_DEFAULT]},
                 "pending": {"action": "deny",
                             "policies": ["0|default|sknp:default/test-network-policy|deny|-1"]}}
            ],
            "final": {"enforced": "allow", "pending": "deny"}
        })
    );
}

#[test]
fn neither_end_known_gives_no_reporters() {
    let v = eval_json(&[
        "--src",
        "192.0.2.1",
        "--dst",
        "198.51.100.1",
        "--proto",
        "icmp",
        "--icmp-type",
        "8",
    ]);
    assert_eq!(
        v,
        json!({"verdicts": [], "final": {"enforced": "allow", "pending": "allow"}})
    );
}

#[test]
fn table_output() {
    let out = eval(&[
        "--src",
        "10.0.1.10",
        "--dst",
        "10.0.1.20",
        "--proto",
        "tcp",
        "--dport",
        "6379",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "\
flow 10.0.1.10:49152 -> 10.0.1.20:6379 TCP

REPORTER  ENDPOINT          DIRECTION  VIEW      ACTION  POLICIES
src       default/frontend  egress     enforced  allow   0|__PROFILE__|pro:kns.default|allow|0
                                       pending   allow   0|__PROFILE__|pro:kns.default|allow|0
dst       default/database  ingress    enforced  deny    0|default|np:default/database-allow-backend|deny|-1
                                       pending   allow   0|default|sgnp:default.allow-tcp-6379|allow|0

final: enforced deny, pending allow (the staged policies change this flow)
"
    );
}

#[test]
fn stdin_and_several_files_load_as_one_set() {
    let d = temp_dir("eval-stdin");
    let staged = "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: block-all-db}
spec:
  order: 1
  selector: role == 'db'
  ingress: [{action: Deny}]
";
    let mut child = tiergate()
        .args(["eval", "-f"])
        .arg(seed())
        .args(["-f", "-", "--src", "10.0.1.10", "--dst", "10.0.1.30"])
        .args(["--proto", "tcp", "--dport", "6379", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(staged.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["verdicts"][1]["pending"],
        json!({"action": "deny", "policies": ["0|default|sgnp:block-all-db|deny|0"]})
    );
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn usage_errors_exit_2() {
    for (args, want) in [
        (
            vec!["--src", "10.0.1.10", "--dst", "10.0.1.20", "--proto", "tcp"],
            "--dport is required for TCP",
        ),
        (
            vec![
                "--src",
                "10.0.1.10",
                "--dst",
                "fd00::1",
                "--proto",
                "tcp",
                "--dport",
                "1",
            ],
            "different address families",
        ),
        (
            vec![
                "--src",
                "10.0.1.10",
                "--dst",
                "10.0.1.20",
                "--proto",
                "gre",
                "--dport",
                "1",
            ],
            "invalid protocol \"gre\"",
        ),
        (
            vec![
                "--src",
                "10.0.1.10",
                "--dst",
                "10.0.1.20",
                "--proto",
                "icmp",
            ],
            "--icmp-type is required for ICMP",
        ),
        (
            vec![
                "--src",
                "nope",
                "--dst",
                "10.0.1.20",
                "--proto",
                "tcp",
                "--dport",
                "1",
            ],
            "invalid value 'nope'",
        ),
    ] {
        let out = eval(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
    let missing = tiergate()
        .args([
            "eval",
            "-f",
            "/nonexistent/tiergate-policies",
            "--src",
            "10.0.0.1",
        ])
        .args(["--dst", "10.0.0.2", "--proto", "udp", "--dport", "53"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
}

#[test]
fn invalid_policy_set_exits_1_naming_file_document_and_field() {
    let d = temp_dir("eval-invalid");
    std::fs::write(
        d.join("bad.yaml"),
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: bad}
spec:
  ingress: [{action: Allow, source: {selector: \"app = 'x'\"}}]
",
    )
    .expect("write");
    let out = tiergate()
        .arg("eval")
        .arg("-f")
        .arg(&d)
        .args([
            "--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--dport", "80",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yaml:1"), "{err}");
    assert!(err.contains("spec.ingress[0].source.selector"), "{err}");
    assert_eq!(text(&out.stdout), "");
    std::fs::remove_dir_all(&d).expect("cleanup");
}
