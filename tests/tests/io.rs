//! How `tiergate` writes and reads: failed writes (full disk) exit 2 naming the
//! destination, outputs that are the same file as an input are refused, output files
//! appear complete or not at all, stdout carries only data when it carries data, `-`
//! is stdin/stdout, one flag vocabulary, and the progress line names its phase.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::{temp_dir, tiergate};

fn seed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs with stdout going to `/dev/full`.
fn to_full(args: &[&str]) -> Output {
    tiergate()
        .args(args)
        .stdout(Stdio::from(File::create("/dev/full").expect("/dev/full")))
        .output()
        .expect("run tiergate")
}

/// Runs with `input` on stdin, written after `delay`.
fn with_stdin(args: &[&str], input: &[u8], delay: Duration) -> Output {
    let mut child = tiergate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[track_caller]
fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"), "{what}");
}

/// A capture of the seed scenario.
fn seed_pcap(dir: &Path, name: &str, format: &str) -> PathBuf {
    let p = dir.join(name);
    let out = tiergate()
        .args(["gen", "--scenario", "seed", "--format", format, "-w", s(&p)])
        .output()
        .unwrap();
    assert_code(&out, 0, "gen");
    p
}

#[test]
fn a_full_stdout_is_exit_2_naming_stdout_for_every_command() {
    let seed = seed();
    let seed = s(&seed);
    let eval = [
        "eval",
        "-f",
        seed,
        "--src",
        "10.0.1.10",
        "--dst",
        "10.0.1.20",
        "--proto",
        "tcp",
        "--dport",
        "6379",
    ];
    let cases: Vec<Vec<&str>> = vec![
        vec!["check", "-f", seed],
        vec!["check", "-f", seed, "-o", "json"],
        eval.to_vec(),
        [&eval[..], &["-o", "yaml"]].concat(),
        vec!["replay"],
        vec!["replay", "-o", "json"],
        vec!["replay", "--flowlog", "-"],
        vec!["replay", "--allowed-out", "-"],
        vec!["impact"],
        vec!["impact", "-o", "json"],
        vec!["gen", "-w", "-", "--flows", "5", "--packets", "50"],
        vec!["gen", "--scenario", "seed", "-w", "/dev/null"],
    ];
    for args in cases {
        let out = to_full(&args);
        assert_code(&out, 2, &format!("{args:?} > /dev/full"));
        let err = text(&out.stderr);
        assert!(
            err.contains("tiergate: cannot write to stdout: No space left on device"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_full_output_file_is_exit_2_naming_the_file_and_the_os_error() {
    for args in [
        vec!["gen", "-w", "/dev/full"],
        vec![
            "gen",
            "--scenario",
            "seed",
            "--format",
            "pcapng",
            "-w",
            "/dev/full",
        ],
        vec!["replay", "--flowlog", "/dev/full"],
        vec!["replay", "--allowed-out", "/dev/full"],
        vec!["impact", "--denied-out", "/dev/full"],
    ] {
        let out = tiergate().args(&args).output().unwrap();
        assert_code(&out, 2, &format!("{args:?}"));
        let err = text(&out.stderr);
        assert!(
            err.contains("cannot write to /dev/full: No space left on device"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("not a valid"),
            "a write error, not a format error: {err}"
        );
    }
}

#[test]
fn a_full_stderr_is_exit_2_too() {
    // `check` of an invalid set writes its errors to stderr only.
    let dir = temp_dir("io-stderr-full");
    let bad = dir.join("bad.yaml");
    fs::write(&bad, "kind: Tier\n").unwrap();
    let out = tiergate()
        .args(["check", "-f", s(&bad)])
        .stderr(Stdio::from(File::create("/dev/full").unwrap()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
}

#[test]
fn an_output_that_is_the_same_file_as_an_input_is_refused_and_the_input_survives() {
    let dir = temp_dir("io-same-file");
    let pcap = seed_pcap(&dir, "s.pcap", "pcap");
    let original = fs::read(&pcap).unwrap();
    let link = dir.join("link.pcap");
    fs::hard_link(&pcap, &link).unwrap();
    let policies = dir.join("policies");
    fs::create_dir(&policies).unwrap();
    for e in fs::read_dir(seed()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    let policy_file = policies.join("20-enforced.yaml");
    let policy_bytes = fs::read(&policy_file).unwrap();
    let dotted = format!("{}/./s.pcap", s(&dir));
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["replay", "--pcap", s(&pcap), "--allowed-out", s(&pcap)],
            "--allowed-out",
            "--pcap",
        ),
        (
            vec!["replay", "--pcap", s(&pcap), "--flowlog", &dotted],
            "--flowlog",
            "--pcap",
        ),
        (
            vec!["impact", "--pcap", s(&pcap), "--denied-out", s(&link)],
            "--denied-out",
            "--pcap",
        ),
        (
            vec!["replay", "-f", s(&policies), "--flowlog", s(&policy_file)],
            "--flowlog",
            "-f",
        ),
        (
            vec![
                "replay",
                "-f",
                s(&policy_file),
                "--allowed-out",
                s(&policy_file),
            ],
            "--allowed-out",
            "-f",
        ),
        (
            vec!["gen", "--classbench-trace", s(&pcap), "-w", s(&link)],
            "-w",
            "--classbench-trace",
        ),
        // Refused before any interface is touched: no root or AF_XDP needed.
        (
            vec![
                "run",
                "--iface",
                "tg-none0",
                "--iface",
                "tg-none1",
                "-f",
                s(&policies),
                "--flowlog",
                s(&policy_file),
            ],
            "--flowlog",
            "-f",
        ),
    ];
    for (args, out_flag, in_flag) in cases {
        let out = tiergate().args(&args).output().unwrap();
        assert_code(&out, 2, &format!("{args:?}"));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{out_flag} "))
                && err.contains(&format!("the input {in_flag} "))
                && err.contains("same file"),
            "{args:?} names both: {err}"
        );
        assert_eq!(
            fs::read(&pcap).unwrap(),
            original,
            "{args:?}: capture intact"
        );
        assert_eq!(
            fs::read(&policy_file).unwrap(),
            policy_bytes,
            "{args:?}: policy intact"
        );
    }
    // Two outputs to one file.
    let a = dir.join("a.pcap");
    let out = tiergate()
        .args(["replay", "--allowed-out", s(&a), "--denied-out", s(&a)])
        .output()
        .unwrap();
    assert_code(&out, 2, "allowed-out = denied-out");
    assert!(text(&out.stderr).contains("the output --allowed-out"));
}

/// Files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_run_leaves_outputs_as_they_were() {
    let dir = temp_dir("io-atomic");
    let flows = dir.join("flows.jsonl");
    fs::write(&flows, "old\n").unwrap();
    let bad = dir.join("bad.yaml");
    fs::write(&bad, "kind: Tier\n").unwrap();
    // Invalid policy set: exit 1 after the outputs were opened.
    let out = tiergate()
        .args(["replay", "-f", s(&bad), "--flowlog", s(&flows)])
        .output()
        .unwrap();
    assert_code(&out, 1, "invalid set");
    assert_eq!(fs::read_to_string(&flows).unwrap(), "old\n");
    assert_eq!(
        listing(&dir),
        ["bad.yaml", "flows.jsonl"],
        "no temporary file left"
    );
    // One output fails (full disk, missing directory): the others are not replaced.
    let allowed = dir.join("allowed.pcap");
    fs::write(&allowed, "old capture").unwrap();
    for denied in ["/dev/full", "/nonexistent-dir/d.pcap"] {
        let out = tiergate()
            .args([
                "replay",
                "--allowed-out",
                s(&allowed),
                "--denied-out",
                denied,
                "--flowlog",
                s(&flows),
            ])
            .output()
            .unwrap();
        assert_code(&out, 2, denied);
        assert!(text(&out.stderr).contains(&format!("cannot write to {denied}")));
        assert_eq!(
            fs::read_to_string(&allowed).unwrap(),
            "old capture",
            "{denied}"
        );
        assert_eq!(fs::read_to_string(&flows).unwrap(), "old\n", "{denied}");
        assert_eq!(listing(&dir), ["allowed.pcap", "bad.yaml", "flows.jsonl"]);
    }
    fs::remove_file(&allowed).unwrap();
    // A later output that cannot be created: nothing is written at all.
    let fresh = dir.join("fresh.jsonl");
    let out = tiergate()
        .args([
            "replay",
            "--flowlog",
            s(&fresh),
            "--allowed-out",
            "/nonexistent-dir/a.pcap",
        ])
        .output()
        .unwrap();
    assert_code(&out, 2, "unwritable output");
    assert!(text(&out.stderr).contains("/nonexistent-dir/a.pcap"));
    assert_eq!(listing(&dir), ["bad.yaml", "flows.jsonl"]);
    // A good run replaces the file whole.
    let out = tiergate()
        .args(["replay", "--flowlog", s(&flows)])
        .output()
        .unwrap();
    assert_code(&out, 0, "replay");
    let logs = fs::read_to_string(&flows).unwrap();
    assert!(logs.starts_with('{'), "{logs}");
    assert_eq!(listing(&dir), ["bad.yaml", "flows.jsonl"]);
}

#[test]
fn when_stdout_carries_data_everything_else_goes_to_stderr() {
    for cmd in ["replay", "impact"] {
        let out = tiergate().args([cmd, "--flowlog", "-"]).output().unwrap();
        assert_code(&out, 0, cmd);
        let stdout = text(&out.stdout);
        assert!(stdout.lines().count() > 10, "{stdout}");
        for line in stdout.lines() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{cmd}: stdout line is not JSON ({e}): {line}"));
        }
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("impact of staged policies"),
            "{cmd}: {stderr}"
        );
    }
    // A capture on stdout: `replay --allowed-out -` and `gen -w -`.
    let out = tiergate()
        .args(["replay", "--allowed-out", "-"])
        .output()
        .unwrap();
    assert_code(&out, 0, "--allowed-out -");
    let frames = pcap::capture::Frames::from_bytes("<stdout>", out.stdout).expect("a pcap");
    assert!(!frames.is_empty());
    assert!(text(&out.stderr).contains("replay of embedded seed capture"));
    let out = tiergate()
        .args(["gen", "--scenario", "seed", "-w", "-"])
        .output()
        .unwrap();
    assert_code(&out, 0, "gen -w -");
    let frames = pcap::capture::Frames::from_bytes("<stdout>", out.stdout).expect("a pcap");
    assert_eq!(frames.len(), 144);
    assert!(
        text(&out.stderr).contains("wrote 144 frames"),
        "{}",
        text(&out.stderr)
    );
    // Two users of stdout are a usage error.
    let out = tiergate()
        .args(["replay", "--flowlog", "-", "-o", "json"])
        .output()
        .unwrap();
    assert_code(&out, 2, "--flowlog - with -o json");
    assert!(text(&out.stderr).contains("--flowlog - and -o json write to stdout"));
}

#[test]
fn dash_reads_a_capture_from_stdin_in_both_formats() {
    let dir = temp_dir("io-stdin");
    let summary = |out: &Output| -> Value {
        assert_code(out, 0, "replay");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["summary"].clone()
    };
    let embedded = summary(&tiergate().args(["replay", "-o", "json"]).output().unwrap());
    assert_eq!(embedded["connections"]["total"], 14);
    for format in ["pcap", "pcapng"] {
        let p = seed_pcap(&dir, &format!("seed.{format}"), format);
        let bytes = fs::read(&p).unwrap();
        let out = with_stdin(
            &["replay", "--pcap", "-", "-o", "json"],
            &bytes,
            Duration::ZERO,
        );
        let from_stdin = summary(&out);
        assert_eq!(from_stdin["packets"], embedded["packets"], "{format}");
        assert_eq!(
            from_stdin["connections"], embedded["connections"],
            "{format}"
        );
    }
    // Policies and capture cannot both come from stdin; garbage is a usage error.
    let out = with_stdin(&["replay", "-f", "-", "--pcap", "-"], b"", Duration::ZERO);
    assert_code(&out, 2, "two readers of stdin");
    let out = with_stdin(&["replay", "--pcap", "-"], b"not a capture", Duration::ZERO);
    assert_code(&out, 2, "garbage on stdin");
    assert!(
        text(&out.stderr).contains("<stdin>"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn one_flag_vocabulary_for_every_subcommand() {
    let help = |cmd: &str| {
        let out = tiergate().args([cmd, "--help"]).output().unwrap();
        assert_code(&out, 0, cmd);
        text(&out.stdout)
    };
    for cmd in ["check", "eval", "replay", "impact"] {
        let h = help(cmd);
        assert!(h.contains("-f, --filename <FILE|DIR|->"), "{cmd}: {h}");
        assert!(h.contains("-o, --output <OUTPUT>"), "{cmd}: {h}");
        assert!(
            !h.contains("--policies"),
            "{cmd}: the old spelling is hidden: {h}"
        );
    }
    let h = help("gen");
    assert!(h.contains("-w, --write <FILE|->"), "{h}");
    assert!(h.contains("-o, --output <OUTPUT>"), "{h}");
    // The old spelling still works, and means the same.
    let seed = seed();
    let doc = |flag: &str| {
        let out = tiergate()
            .args(["impact", flag, s(&seed), "-o", "json"])
            .output()
            .unwrap();
        assert_code(&out, 0, flag);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let f = doc("-f");
    assert_eq!(f["connections"], 14);
    assert_eq!(doc("--filename"), f);
    assert_eq!(doc("--policies"), f);
    // `-w -` is stdout, not a file named `-`.
    let dir = temp_dir("io-dash");
    let out = tiergate()
        .args(["gen", "--scenario", "seed", "-w", "-"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_code(&out, 0, "gen -w -");
    assert!(
        listing(&dir).is_empty(),
        "no file named '-': {:?}",
        listing(&dir)
    );
}

#[test]
fn impact_says_connections_in_every_format() {
    let json = tiergate().args(["impact", "-o", "json"]).output().unwrap();
    assert_code(&json, 0, "impact -o json");
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let p = &v["policies"][0];
    for part in ["evaluated", "newly_denied", "newly_allowed"] {
        assert!(p[part]["connections"].is_u64(), "{part}: {p}");
        assert!(p[part].get("flows").is_none(), "{part}: {p}");
    }
    assert!(p["top_peers"][0]["connections"].is_u64(), "{p}");
    let yaml = tiergate().args(["impact", "-o", "yaml"]).output().unwrap();
    assert_code(&yaml, 0, "impact -o yaml");
    let yaml = text(&yaml.stdout);
    assert!(
        yaml.contains("connections:") && !yaml.contains("flows:"),
        "{yaml}"
    );
    let table = tiergate().arg("impact").output().unwrap();
    assert!(text(&table.stdout).contains("connections"));
    let replay = tiergate().args(["replay", "-o", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert!(v["summary"]["connections"]["total"].is_u64(), "{v}");
    assert!(v["summary"].get("flows").is_none());
}

#[test]
fn progress_names_the_phase_while_nothing_is_replayed_yet() {
    let policies = fs::read(seed().join("20-enforced.yaml")).unwrap();
    let out = with_stdin(
        &["replay", "-f", "-"],
        &policies,
        Duration::from_millis(1600),
    );
    assert_code(&out, 0, "replay -f -");
    let err = text(&out.stderr);
    assert!(err.contains("replay: loading policies (1 s)"), "{err}");
    assert!(!err.contains("0 frames"), "{err}");

    let dir = temp_dir("io-progress");
    let pcap = fs::read(seed_pcap(&dir, "s.pcap", "pcap")).unwrap();
    let out = with_stdin(
        &["impact", "--pcap", "-"],
        &pcap,
        Duration::from_millis(1600),
    );
    assert_code(&out, 0, "impact --pcap -");
    let err = text(&out.stderr);
    assert!(err.contains("impact: reading the capture (1 s)"), "{err}");
    assert!(err.contains("impact: done"), "{err}");
}

/// Runs `tiergate args` with stdin closed; fails the test if it takes longer than
/// `limit` (then kills it).
fn run_within(args: &[&str], limit: Duration) -> Output {
    let mut child = tiergate()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tiergate {args:?} still running after {limit:?}: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `tiergate run` on two interfaces that do not exist: it fails before forwarding
/// anything (no such interface, or missing capabilities without root).
fn run_nowhere(extra: &[&str]) -> Output {
    let mut args = vec!["run", "--iface", "tg-nosuch0", "--iface", "tg-nosuch1"];
    args.extend_from_slice(extra);
    run_within(&args, Duration::from_secs(20))
}

#[test]
fn a_run_that_cannot_start_leaves_its_flow_log_as_it_was() {
    let d = temp_dir("run-flowlog");
    // An existing log keeps its records.
    let log = d.join("flows.jsonl");
    fs::write(&log, "{\"earlier\":1}\n").unwrap();
    let out = run_nowhere(&["--flowlog", s(&log)]);
    assert_code(&out, 2, "run with an existing flow log");
    assert_eq!(fs::read_to_string(&log).unwrap(), "{\"earlier\":1}\n");
    // A new one is not left behind.
    let new = d.join("new.jsonl");
    let out = run_nowhere(&["--flowlog", s(&new)]);
    assert_code(&out, 2, "run with a new flow log");
    assert!(!new.exists(), "{}", text(&out.stderr));
    // A FIFO that no process reads is an error naming it, not a hang.
    let fifo = d.join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let out = run_nowhere(&["--flowlog", s(&fifo)]);
    assert_code(&out, 2, "run with a FIFO nobody reads");
    assert!(
        text(&out.stderr).contains(&format!(
            "--flowlog: cannot write to {}: a FIFO that no process reads",
            fifo.display()
        )),
        "{}",
        text(&out.stderr)
    );
    // A directory is refused naming it.
    let out = run_nowhere(&["--flowlog", s(&d)]);
    assert_code(&out, 2, "run with a directory as flow log");
    assert!(
        text(&out.stderr).contains("is a directory"),
        "{}",
        text(&out.stderr)
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn run_and_replay_refuse_two_writers_of_stdout_alike() {
    for fmt in ["json", "yaml"] {
        let want = format!(
            "--flowlog - and -o {fmt} write to stdout, which can carry only one of them: send the other to a file"
        );
        let out = run_nowhere(&["--flowlog", "-", "-o", fmt]);
        assert_code(&out, 2, "run --flowlog - -o json");
        assert_eq!(text(&out.stderr), format!("tiergate run: {want}\n"));
        let out = run_within(
            &["replay", "--flowlog", "-", "-o", fmt],
            Duration::from_secs(60),
        );
        assert_code(&out, 2, "replay --flowlog - -o json");
        assert_eq!(text(&out.stderr), format!("tiergate replay: {want}\n"));
    }
}
