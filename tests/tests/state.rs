//! `--state-dir` from the outside (no root needed): `tiergate run` seeds and restores a
//! state directory (it then stops at the missing interfaces, after the state step), and
//! `tiergate state check|repair` on damaged, truncated and partly written generations.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tests::{temp_dir, tiergate};

const SET_A: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block}
spec:
  tier: security
  selector: all()
  ingress:
  - action: Deny
    source: {nets: [192.0.2.0/24]}
";

const SET_B: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-web}
spec:
  selector: all()
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80]}
";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tiergate run` on two interfaces that do not exist: it opens (and seeds or restores)
/// the state directory, then fails on the interfaces with exit 2.
fn run_once(state: &Path, policy: Option<&Path>) -> Output {
    let mut cmd = tiergate();
    cmd.args(["run", "--iface", "tgst-none0", "--iface", "tgst-none1"])
        .arg("--state-dir")
        .arg(state);
    if let Some(p) = policy {
        cmd.arg("-f").arg(p);
    }
    cmd.output().unwrap()
}

fn state(args: &[&str], dir: &Path) -> Output {
    tiergate()
        .arg("state")
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

/// The body of a generation file (everything after the header line).
fn body(file: &Path) -> Vec<u8> {
    let bytes = fs::read(file).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    bytes[nl + 1..].to_vec()
}

fn check_stdin(input: &[u8]) -> Output {
    let mut child = tiergate()
        .args(["check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A state directory seeded from SET_A by a run, then holding SET_A (gen 1) only.
fn seeded(tag: &str) -> (PathBuf, PathBuf) {
    let d = temp_dir(&format!("state-{tag}"));
    fs::write(d.join("a.yaml"), SET_A).unwrap();
    let st = d.join("state");
    let out = run_once(&st, Some(&d.join("a.yaml")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("was empty: seeded generation 1 (2 resources) from -f"),
        "{err}"
    );
    assert!(err.contains("tgst-none0") || err.contains("CAP_"), "{err}");
    (d, st)
}

#[test]
fn an_empty_state_dir_is_seeded_from_f_and_then_wins_over_f() {
    let (d, st) = seeded("seed");
    // What was kept is the -f set, readable by `check` as it stands.
    let out = check_stdin(&body(&st.join("gen-1.json")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "valid: 2 resources (1 GlobalNetworkPolicy, 1 Tier)\n"
    );
    // A restart with another -f restores the state and says the state wins.
    fs::write(d.join("b.yaml"), SET_B).unwrap();
    let out = run_once(&st, Some(&d.join("b.yaml")));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("restored generation 1 (2 resources) from --state-dir"),
        "{err}"
    );
    assert!(err.contains("the state wins over -f"), "{err}");
    // Nothing new was written: restoring is not a change.
    assert!(!st.join("gen-2.json").exists());
    let out = state(&["check"], &st);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("gen-1.json: valid, 2 resources"), "{s}");
    assert!(s.contains("the next start restores generation 1"), "{s}");
    // Without -f it restores too.
    let out = run_once(&st, None);
    let err = text(&out.stderr);
    assert!(err.contains("restored generation 1"), "{err}");
    assert!(!err.contains("wins over -f"), "{err}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_truncated_newest_generation_stops_the_start_and_repair_restores_the_previous() {
    let (d, st) = seeded("trunc");
    // A second generation, as a daemon's apply would write it: copy gen 1's layout with
    // a new body (SET_A + SET_B) through the library's own encoder.
    let store = control::policy::load_text(
        &format!("{SET_A}---\n{SET_B}"),
        "ab.yaml",
        control::model::Format::Yaml,
    )
    .unwrap()
    .store;
    fs::write(st.join("gen-2.json"), control::state::encode(&store, 2)).unwrap();
    let out = state(&["check"], &st);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("restores generation 2"));
    // Truncate it.
    let g2 = st.join("gen-2.json");
    let bytes = fs::read(&g2).unwrap();
    fs::write(&g2, &bytes[..bytes.len() / 2]).unwrap();
    let out = run_once(&st, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&g2.display().to_string()), "{err}");
    assert!(err.contains("truncated or partly written"), "{err}");
    assert!(err.contains("Nothing was restored"), "{err}");
    assert!(err.contains("tiergate state repair"), "{err}");
    let out = state(&["check"], &st);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("UNUSABLE"),
        "{}",
        text(&out.stdout)
    );
    let out = tiergate()
        .args(["-o", "json", "state", "check"])
        .arg(&st)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["restores"], serde_json::Value::Null);
    assert_eq!(v["generations"][0]["generation"], 2);
    assert!(v["generations"][0]["problem"].is_string());
    assert!(v["generations"][1]["problem"].is_null());
    // Repair moves it aside; the next start restores generation 1.
    let out = state(&["repair"], &st);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("moved"), "{s}");
    assert!(s.contains("restores generation 1"), "{s}");
    assert!(st.join("corrupt/gen-2.json").exists());
    let out = run_once(&st, None);
    assert!(
        text(&out.stderr).contains("restored generation 1 (2 resources)"),
        "{}",
        text(&out.stderr)
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_partly_written_commit_is_ignored_and_removed() {
    let (d, st) = seeded("partial");
    // An interrupted commit leaves only a temporary file.
    let tmp = st.join(".gen-2.json.tmp");
    fs::write(&tmp, b"{\"format\":\"tiergate-state\",\"vers").unwrap();
    let out = state(&["check"], &st);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.contains("an interrupted commit"), "{s}");
    assert!(s.contains("restores generation 1"), "{s}");
    let out = run_once(&st, None);
    assert!(text(&out.stderr).contains("restored generation 1"));
    assert!(!tmp.exists(), "the start removes the interrupted commit");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_damaged_only_generation_needs_allow_empty_to_repair() {
    let (d, st) = seeded("damaged");
    let g1 = st.join("gen-1.json");
    let mut bytes = fs::read(&g1).unwrap();
    let i = bytes.len() - 30;
    bytes[i] ^= 0x01;
    fs::write(&g1, &bytes).unwrap();
    let out = run_once(&st, None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(err.contains("no older valid one"), "{err}");
    let out = state(&["repair"], &st);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--allow-empty"));
    assert!(g1.exists(), "a refused repair changes nothing");
    let out = tiergate()
        .args(["state", "repair", "--allow-empty"])
        .arg(&st)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("seeds generation 1 from -f"));
    fs::write(d.join("b.yaml"), SET_B).unwrap();
    let out = run_once(&st, Some(&d.join("b.yaml")));
    assert!(
        text(&out.stderr).contains("seeded generation 1 (1 resources) from -f"),
        "{}",
        text(&out.stderr)
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_held_state_dir_is_refused_with_exit_2() {
    let (d, st) = seeded("held");
    // Hold the lock as a running daemon would.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(st.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let out = run_once(&st, None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("is in use by another tiergate"), "{err}");
    assert!(!err.contains("restored"), "{err}");
    let out = state(&["repair"], &st);
    assert_eq!(out.status.code(), Some(2));
    // `check` reads without the lock.
    assert_eq!(state(&["check"], &st).status.code(), Some(0));
    drop(lock);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn check_of_a_missing_directory_exits_2() {
    let d = temp_dir("state-missing");
    let out = state(&["check"], &d.join("nope"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"));
    fs::remove_dir_all(&d).unwrap();
}
