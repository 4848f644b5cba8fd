//! `tiergate check`: exit codes, output shapes, and bad input from the outside.

use std::io::Write;
use std::process::{Output, Stdio};

use tests::{temp_dir, tiergate};

const TIER: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
";

const STAGED: &str = "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: security.block-ssh}
spec:
  tier: security
  selector: app == 'web'
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [22]}
";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = tiergate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn valid_set_exits_0_with_a_summary() {
    let d = temp_dir("check-valid");
    std::fs::write(d.join("tier.yaml"), TIER).unwrap();
    std::fs::create_dir(d.join("policies")).unwrap();
    std::fs::write(d.join("policies/ssh.yml"), STAGED).unwrap();
    let out = tiergate().arg("check").arg("-f").arg(&d).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "valid: 2 resources (1 StagedGlobalNetworkPolicy, 1 Tier)\n"
    );
    assert_eq!(text(&out.stderr), "");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn invalid_set_exits_1_with_every_error() {
    let bad = format!(
        "{STAGED}---\napiVersion: projectcalico.org/v3\nkind: Widget\nmetadata: {{name: w}}\n---\n{}",
        STAGED.replace(
            "    destination: {ports: [22]}",
            "    destination: {ports: [22]}\n    source: {nets: [10.0.0.0/40]}"
        )
    );
    let out = run_stdin(&["check", "-f", "-"], &bad);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("<stdin>:2: kind: unknown kind \"Widget\""),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "<stdin>:3: spec.ingress[0].source.nets[0]: invalid CIDR \"10.0.0.0/40\": expected an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64, or a bare address"
    );
    assert_eq!(lines[2], "invalid: 2 errors");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn a_policy_in_a_missing_tier_is_invalid() {
    let out = run_stdin(&["check", "-f", "-"], STAGED);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "<stdin>:1: spec.tier: tier \"security\" does not exist: apply a Tier named \"security\" first (or in the same apply)\ninvalid: 1 error\n"
    );
}

#[test]
fn unreadable_input_exits_2() {
    let out = tiergate()
        .args(["check", "-f", "/nonexistent/tiergate.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("/nonexistent/tiergate.yaml: cannot read: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["check"][..],
        &["check", "-f", "x", "-o", "xml"],
        &["frobnicate"],
    ] {
        let out = tiergate().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn json_and_yaml_reports() {
    let input = format!("{TIER}---\n{STAGED}");
    let out = run_stdin(&["-o", "json", "check", "-f", "-"], &input);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "valid": true,
            "resources": 2,
            "kinds": {"StagedGlobalNetworkPolicy": 1, "Tier": 1},
            "errors": [],
        })
    );
    let out = run_stdin(&["check", "-o", "json", "-f", "-"], "kind: Tier\n");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["errors"][0],
        serde_json::json!({
            "source": "<stdin>",
            "document": 1,
            "field": "apiVersion",
            "reason": "missing field `apiVersion`: every resource needs apiVersion and kind",
            "message": "<stdin>:1: apiVersion: missing field `apiVersion`: every resource needs apiVersion and kind",
        })
    );
    let out = run_stdin(&["check", "-o", "yaml", "-f", "-"], &input);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("valid: true\nresources: 2\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn garbage_input_never_crashes() {
    for input in [
        "\u{0}\u{1}\u{2}",
        "{{{{{{{{",
        "- - - - -\n  - : :",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: !!binary aGVsbG8=\n",
        "&a [*a]",
        "%YAML 9.9\n---\nx",
    ] {
        let out = run_stdin(&["check", "-f", "-"], input);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{input:?}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
    }
}
