//! Input validation of the `tiergate` binary: sizes and numbers out of range, special
//! files, empty policy sets, every problem of a document, cut captures, clock jumps in
//! captures. Each case ends in a clear message and exit code 0, 1 or 2 — never an
//! abort, a hang or a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use control::replay::scenario;
use pcap::capture::{CaptureFormat, Frames};
use serde_json::Value;
use tests::{temp_dir, tiergate};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `tiergate args`, killing it (and failing) if it takes longer than `limit`.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let mut child = tiergate()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tiergate");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tiergate {args:?} still running after {limit:?}; stderr: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> Output {
    run_within(args, Duration::from_secs(60))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Asserts the exit code, showing stderr when it differs.
fn code(out: &Output, want: i32) {
    assert_eq!(
        out.status.code(),
        Some(want),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

const NP: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: all()
  ingress:
  - action: Allow
";

#[test]
fn user_sizes_are_checked_against_their_range_before_anything_is_allocated() {
    for v in ["18446744073709551615", "1000000000", "0", "-1", "many"] {
        let out = run(&["replay", &format!("--flow-capacity={v}")]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("invalid value '{v}' for '--flow-capacity <N>'"))
                && err.contains("expected a number of connections per worker from 1 to 16777216"),
            "{err}"
        );
    }
    for (flag, v, range) in [
        ("--interval", "0", "1..=86400"),
        ("--interval", "86401", "1..=86400"),
        ("--top", "1001", "0..=1000"),
        ("--workers", "0", "1..=256"),
        ("--workers", "257", "1..=256"),
    ] {
        let out = run(&["replay", flag, v]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(flag) && err.contains(range),
            "{flag} {v}: {err}"
        );
    }
    for (flag, v) in [
        ("--flows", "0"),
        ("--flows", "10000001"),
        ("--packets", "100000001"),
    ] {
        let out = run(&["gen", "-w", "/dev/null", flag, v]);
        code(&out, 2);
        assert!(text(&out.stderr).contains(flag), "{}", text(&out.stderr));
    }
    // In range, but more frames than memory holds (the capture is built in memory).
    if control::sys::available_memory().is_some_and(|m| m < 100_000_000 * 9042) {
        let out = run(&[
            "gen",
            "-w",
            "/dev/null",
            "--packets",
            "100000000",
            "--size",
            "9018",
        ]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "--packets 100000000 of --size 9018 frames need about 842.1 GiB in memory"
            ) && err.contains("lower --packets or --size"),
            "{err}"
        );
    }
    // In range per worker, but more than the machine has for all of them.
    let need = 256u64 * (1 << 24) * 136;
    if control::sys::available_memory().is_some_and(|m| m < need) {
        let out = run(&["replay", "--flow-capacity", "16777216", "--workers", "256"]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "--flow-capacity 16777216 with --workers 256: the flow tables need 544.0 GiB"
            ) && err.contains("lower --flow-capacity or --workers"),
            "{err}"
        );
    }
}

/// The seed capture's first `n` frames, 1 ms apart, the clock jumping 136 years
/// before frame `jump_at`.
fn jumping_capture(dir: &Path, n: usize, jump_at: usize) -> PathBuf {
    let seed = scenario::seed_capture();
    let jump = 136 * 365 * 86_400 * 1_000_000_000u64;
    let mut f = Frames::new();
    for (i, mut frame) in seed.iter().take(n).enumerate() {
        frame.ts_ns = scenario::SEED_START_NS + i as u64 * 1_000_000;
        if i >= jump_at {
            frame.ts_ns += jump;
        }
        f.push(frame);
    }
    // pcapng: its timestamps reach past 2106.
    let p = dir.join("jump.pcapng");
    f.write(&p, CaptureFormat::PcapNg).expect("write capture");
    p
}

#[test]
fn a_clock_jump_in_the_capture_is_not_slept_through() {
    let d = temp_dir("iv-jump");
    let cap = jumping_capture(&d, 30, 15);
    let out = run_within(
        &[
            "replay",
            "--pcap",
            s(&cap),
            "--pace",
            "recorded",
            "--max-gap",
            "0.05",
            "-o",
            "json",
        ],
        Duration::from_secs(30),
    );
    code(&out, 0);
    assert!(
        text(&out.stderr).contains(
            "tiergate: warning: 1 gap in capture time longer than --max-gap 0.05 s was shortened to it"
        ),
        "{}",
        text(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["summary"]["gaps_capped"], 1);
    assert_eq!(doc["summary"]["packets"]["total"], 30);
    // The default cap (10 s) applies without the flag; the table says so too.
    let out = run_within(
        &["replay", "--pcap", s(&cap), "--pace", "recorded"],
        Duration::from_secs(40),
    );
    code(&out, 0);
    assert!(
        text(&out.stdout).contains(
            "warning: 1 gap in capture time longer than --max-gap 10 s was shortened to it"
        ),
        "{}",
        text(&out.stdout)
    );
    for bad in ["0", "nan", "inf", "-1", "86401"] {
        let out = run(&["replay", &format!("--max-gap={bad}")]);
        code(&out, 2);
        assert!(
            text(&out.stderr).contains("expected a number of seconds from 0.001 to 86400"),
            "{}",
            text(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fifos_and_other_special_files_are_refused_not_read() {
    let d = temp_dir("iv-fifo");
    std::fs::write(d.join("a.yaml"), NP).unwrap();
    let fifo = d.join("x.yaml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let want = format!(
        "{}: cannot read: a FIFO; only regular files (or symlinks to them), directories and - (stdin) are read",
        fifo.display()
    );
    for target in [&d, &fifo] {
        for sub in [&["check"][..], &["replay"][..], &["impact"][..]] {
            let mut args = sub.to_vec();
            args.extend(["-f", s(target)]);
            let out = run_within(&args, Duration::from_secs(10));
            code(&out, 2);
            assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
        }
    }
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink(d.join("missing.yaml"), d.join("dangling.yaml")).unwrap();
    let out = run_within(&["check", "-f", s(&d)], Duration::from_secs(10));
    code(&out, 2);
    assert!(
        text(&out.stderr).contains("dangling.yaml: cannot read: a symlink to"),
        "{}",
        text(&out.stderr)
    );
    let out = run_within(&["check", "-f", "/dev/zero"], Duration::from_secs(10));
    code(&out, 2);
    assert!(text(&out.stderr).contains("/dev/zero: cannot read: a character device"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_empty_policy_set_fails_unless_allowed() {
    let d = temp_dir("iv-empty");
    let empty_dir = d.join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let no_yaml = d.join("no-yaml");
    std::fs::create_dir(&no_yaml).unwrap();
    std::fs::write(no_yaml.join("README.md"), NP).unwrap();
    let empty_file = d.join("empty.yaml");
    std::fs::write(&empty_file, "# nothing yet\n").unwrap();
    for (p, read) in [
        (&empty_dir, "0 files read, 0 documents"),
        (&no_yaml, "0 files read, 0 documents"),
        (&empty_file, "1 file read, 0 documents"),
    ] {
        let want = format!(
            "{}: no resources found ({read} with a resource; a directory is searched for *.yaml, *.yml and *.json): check the -f path, or pass --allow-empty if an empty set is intended",
            p.display()
        );
        let out = run(&["check", "-f", s(p)]);
        code(&out, 1);
        assert_eq!(text(&out.stderr), format!("{want}\ninvalid: 1 error\n"));
        let eval = [
            "eval",
            "-f",
            s(p),
            "--src",
            "10.0.0.1",
            "--dst",
            "10.0.0.2",
            "--proto",
            "tcp",
            "--dport",
            "80",
        ];
        for args in [
            &eval[..],
            &["replay", "-f", s(p)][..],
            &["impact", "-f", s(p)][..],
        ] {
            let out = run(args);
            code(&out, 1);
            assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
        }
        let out = run(&["check", "-f", s(p), "--allow-empty"]);
        code(&out, 0);
        assert_eq!(text(&out.stdout), "valid: 0 resources\n");
        let mut allowed = eval.to_vec();
        allowed.push("--allow-empty");
        code(&run(&allowed), 0);
        code(&run(&["replay", "-f", s(p), "--allow-empty"]), 0);
        // `run` too: refused as empty, or loaded and then failing on the interfaces
        // (which do not exist) with --allow-empty.
        let out = run_flags(&["-f", s(p)]);
        code(&out, 1);
        assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
        let out = run_flags(&["-f", s(p), "--allow-empty"]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            !err.contains("no resources found") && err.contains("tiergate run: "),
            "{err}"
        );
    }
    // Without -f, replay and impact use the embedded seed set: no error.
    code(&run(&["impact"]), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn every_problem_of_every_document_is_reported() {
    let d = temp_dir("iv-every");
    let f = d.join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  ingress:
  - action: Allow
    source:
      nets: [10.0.0.0/33, nope, 10.1.0.0/16, 300.0.0.0/8]
    destination:
      nets: [fd00::/200]
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: Bad}
spec: {order: 1e400}
",
    )
    .unwrap();
    let out = run(&["check", "-f", s(&f)]);
    code(&out, 1);
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let fname = f.display().to_string();
    let cidr = |field: &str, v: &str| {
        format!(
            "{fname}:1: spec.ingress[0].{field}: invalid CIDR \"{v}\": expected an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64, or a bare address"
        )
    };
    for want in [
        cidr("source.nets[0]", "10.0.0.0/33"),
        cidr("source.nets[1]", "nope"),
        cidr("source.nets[3]", "300.0.0.0/8"),
        cidr("destination.nets[0]", "fd00::/200"),
        format!(
            "{fname}:2: spec.order: invalid order \".inf\" (infinity, or a number beyond about 1.8e308): expected a finite number such as 100 or 2.5"
        ),
    ] {
        assert!(lines.contains(&want.as_str()), "missing {want}\n{err}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{fname}:2: metadata.name: invalid name \"Bad\""))),
        "{err}"
    );
    assert_eq!(lines.last(), Some(&"invalid: 6 errors"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_cut_capture_is_replayed_up_to_the_cut_with_a_warning() {
    let d = temp_dir("iv-cut");
    let whole = d.join("whole.pcap");
    let seed = scenario::seed_capture();
    seed.write(&whole, CaptureFormat::Pcap).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    // Records of the first 10 frames: 24-byte file header, 16 bytes per record header.
    let end10: usize = 24
        + seed
            .iter()
            .take(10)
            .map(|f| 16 + f.data.len())
            .sum::<usize>();
    let cut = d.join("cut.pcap");
    std::fs::write(&cut, &bytes[..end10 + 20]).unwrap();
    let out = run(&["replay", "--pcap", s(&cut), "-o", "json"]);
    code(&out, 0);
    let warning = format!(
        "tiergate: warning: {}: the file ends in the middle of frame 11 (byte {end10} of {}); the 10 whole frames before it were replayed",
        cut.display(),
        end10 + 20
    );
    assert!(
        text(&out.stderr).contains(&warning),
        "{}",
        text(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["summary"]["packets"]["total"], 10);
    assert_eq!(
        doc["summary"]["capture_cut"],
        serde_json::json!({"offset": end10, "file_bytes": end10 + 20, "frame": 11})
    );
    let out = run(&["replay", "--pcap", s(&cut)]);
    code(&out, 0);
    assert!(
        text(&out.stdout).contains("warning: "),
        "{}",
        text(&out.stdout)
    );
    // The same bytes on stdin (read into memory) are replayed the same way, the size
    // being the number of bytes read.
    let mut child = tiergate()
        .args(["replay", "--pcap", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    let cut_bytes = bytes[..end10 + 20].to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write as _;
        sin.write_all(&cut_bytes).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    code(&out, 0);
    let warning = format!(
        "tiergate: warning: <stdin>: the file ends in the middle of frame 11 (byte {end10} of {}); the 10 whole frames before it were replayed",
        end10 + 20
    );
    assert!(
        text(&out.stderr).contains(&warning),
        "{}",
        text(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["summary"]["packets"]["total"], 10);
    assert_eq!(
        doc["summary"]["capture_cut"],
        serde_json::json!({"offset": end10, "file_bytes": end10 + 20, "frame": 11})
    );
    // A whole capture has no cut.
    let out = run(&["replay", "--pcap", s(&whole), "-o", "json"]);
    code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["summary"]["capture_cut"], Value::Null);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn numbers_out_of_range_get_specific_messages() {
    let d = temp_dir("iv-numbers");
    let out_pcap = d.join("x.pcap");
    for z in ["nan", "inf", "-1", "11"] {
        let out = run(&["gen", "-w", s(&out_pcap), &format!("--zipf={z}")]);
        code(&out, 2);
        assert!(
            text(&out.stderr).contains(&format!(
                "\"{z}\" is not a Zipf exponent: expected a number from 0 (uniform) to 10"
            )),
            "{}",
            text(&out.stderr)
        );
    }
    let out = run(&[
        "gen",
        "-w",
        s(&out_pcap),
        "--udp-share",
        "0.75",
        "--icmp-share",
        "0.5",
    ]);
    code(&out, 2);
    assert!(
        text(&out.stderr).contains(
            "--udp-share 0.75 and --icmp-share 0.5 sum to 1.25: the protocol shares are parts of one whole (TCP takes the rest), so they must sum to at most 1"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_pcap.exists(), "nothing is written on a usage error");
    let out = run(&[
        "eval",
        "-f",
        "-",
        "--src",
        "10.0.0.1",
        "--dst",
        "10.0.0.2",
        "--proto",
        "icmp",
        "--icmp-type",
        "300",
    ]);
    code(&out, 2);
    assert!(
        text(&out.stderr).contains("\"300\" is not an ICMP type: expected a number from 0 to 255"),
        "{}",
        text(&out.stderr)
    );
    let f = d.join("p.yaml");
    std::fs::write(
        &f,
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  order: .nan
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 300, code: 0}
",
    )
    .unwrap();
    let out = run(&["check", "-f", s(&f)]);
    code(&out, 1);
    let fname = f.display().to_string();
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{fname}:1: spec.order: invalid order \".nan\" (NaN): expected a finite number such as 100 or 2.5")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{fname}:1: spec.ingress[0].icmp.type: invalid ICMP type 300: expected 0-254"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn resources_placed_in_namespace_default_are_noted_once_per_file() {
    let d = temp_dir("iv-nsnote");
    let f = d.join("np.yaml");
    std::fs::write(
        &f,
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: c, namespace: prod}
",
    )
    .unwrap();
    let out = run(&["check", "-f", s(&f)]);
    code(&out, 0);
    assert_eq!(text(&out.stdout), "valid: 3 resources (3 NetworkPolicy)\n");
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: note: 2 namespaced resources without metadata.namespace placed in namespace default\n",
            f.display()
        )
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// `tiergate run` on two interfaces that do not exist, plus `extra`: a flag value out
/// of range is refused while the arguments are parsed, before the run looks for the
/// interfaces (and so without root).
fn run_flags(extra: &[&str]) -> Output {
    let mut args = vec!["run", "--iface", "tg-nosuch0", "--iface", "tg-nosuch1"];
    args.extend_from_slice(extra);
    run_within(&args, Duration::from_secs(20))
}

#[test]
fn run_refuses_durations_out_of_range_before_starting() {
    for v in ["1e20", "nan", "inf", "-1", "-0.5", "315360001", "soon"] {
        let out = run_flags(&[&format!("--duration={v}")]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("invalid value '{v}' for '--duration <SECONDS>'"))
                && err.contains("expected a number of seconds from 0 to 315360000"),
            "{v}: {err}"
        );
    }
    // In range: past parsing, the run fails on the missing interfaces instead.
    let out = run_flags(&["--duration", "0.5"]);
    code(&out, 2);
    assert!(
        !text(&out.stderr).contains("--duration"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_and_replay_take_the_same_interval_range() {
    for v in ["0", "86401", "18446744073709551615", "-1", "1.5"] {
        for cmd in ["run", "replay"] {
            let flag = format!("--interval={v}");
            let out = if cmd == "run" {
                run_flags(&[&flag])
            } else {
                run(&["replay", &flag])
            };
            code(&out, 2);
            let err = text(&out.stderr);
            assert!(
                err.contains(&format!("invalid value '{v}' for '--interval <INTERVAL>'")),
                "{cmd} --interval {v}: {err}"
            );
            if v.parse::<u64>().is_ok() {
                assert!(err.contains("1..=86400"), "{cmd} --interval {v}: {err}");
            }
        }
    }
}

#[test]
fn run_checks_flow_capacity_like_replay_before_starting() {
    for v in ["0", "16777217", "18446744073709551615", "-1", "many"] {
        let out = run_flags(&[&format!("--flow-capacity={v}")]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("invalid value '{v}' for '--flow-capacity <N>'"))
                && err.contains("expected a number of connections per worker from 1 to 16777216"),
            "{v}: {err}"
        );
    }
    // In range per worker, but more than the machine has for all of them: refused
    // before the interfaces are looked at.
    let need = 64u64 * (1 << 24) * 136;
    if control::sys::available_memory().is_some_and(|m| m < need) {
        let out = run_flags(&[
            "--flow-capacity",
            "16777216",
            "--queues",
            "64",
            "--workers",
            "64",
        ]);
        code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "--flow-capacity 16777216 with --workers 64: the flow tables need 136.0 GiB"
            ) && err.contains("lower --flow-capacity or --workers"),
            "{err}"
        );
    }
}

#[test]
fn run_on_a_capture_refuses_metrics_instead_of_ignoring_them() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pcap/tcpdump_afs.pcap");
    let out = run(&[
        "run",
        "--pcap",
        s(&cap),
        "--metrics",
        "127.0.0.1:0",
        "--duration",
        "1",
    ]);
    code(&out, 2);
    let err = text(&out.stderr);
    assert!(err.contains("--metrics needs --iface"), "{err}");
}

#[test]
fn run_on_a_capture_keeps_its_policy_and_an_existing_flow_log() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pcap/tcpdump_afs.pcap");
    let dir = temp_dir("run-pcap-outputs");
    let policy = dir.join("p.yaml");
    let yaml = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n";
    std::fs::write(&policy, yaml).unwrap();
    // The flow log is the policy file: refused before anything is written.
    let out = run(&[
        "run",
        "--pcap",
        s(&cap),
        "-f",
        s(&policy),
        "--flowlog",
        s(&policy),
        "--duration",
        "1",
    ]);
    code(&out, 2);
    assert!(
        text(&out.stderr).contains("--flowlog"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), yaml);
    // An existing flow log is appended to, not truncated.
    let log = dir.join("flows.jsonl");
    std::fs::write(&log, "earlier\n").unwrap();
    let sock = dir.join("s.sock");
    let out = run(&[
        "run",
        "--pcap",
        s(&cap),
        "-f",
        s(&policy),
        "--flowlog",
        s(&log),
        "--socket",
        s(&sock),
        "--duration",
        "0.5",
    ]);
    code(&out, 0);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .starts_with("earlier\n"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
