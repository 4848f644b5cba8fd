//! `tiergate gen`: reproducible synthetic captures that `replay` reads back.

use serde_json::Value;
use tests::{temp_dir, tiergate};

fn ok(args: &[&str]) -> std::process::Output {
    let out = tiergate().args(args).output().expect("run tiergate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "tiergate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn same_seed_same_bytes_and_replay_reads_every_frame() {
    let dir = temp_dir("gen-seeded");
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    for p in [&a, &b] {
        ok(&[
            "gen",
            "-w",
            p.to_str().unwrap(),
            "--seed",
            "7",
            "--flows",
            "50",
            "--packets",
            "2000",
        ]);
    }
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    let out = ok(&[
        "gen",
        "-w",
        b.to_str().unwrap(),
        "--seed",
        "8",
        "--flows",
        "50",
        "--packets",
        "2000",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 flows"));
    assert_ne!(
        bytes,
        std::fs::read(&b).unwrap(),
        "another seed, other bytes"
    );

    let out = ok(&["replay", "--pcap", a.to_str().unwrap(), "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let frames = pcap::capture::Frames::read(&a).unwrap().len() as u64;
    assert_eq!(v["summary"]["packets"]["total"], frames);
}

#[test]
fn seed_scenario_file_replays_like_the_embedded_default() {
    let dir = temp_dir("gen-seed");
    let p = dir.join("seed.pcapng");
    ok(&[
        "gen",
        "-w",
        p.to_str().unwrap(),
        "--scenario",
        "seed",
        "--format",
        "pcapng",
    ]);
    let summary = |args: &[&str]| -> Value {
        let mut all = vec!["replay", "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_slice::<Value>(&ok(&all).stdout).unwrap()["summary"].clone()
    };
    let from_file = summary(&["--pcap", p.to_str().unwrap()]);
    let embedded = summary(&[]);
    assert_eq!(from_file["packets"], embedded["packets"]);
    assert!(embedded["connections"]["total"].is_u64(), "{embedded}");
    assert_eq!(from_file["connections"], embedded["connections"]);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = temp_dir("gen-bad");
    let p = dir.join("x.pcap");
    for bad in [
        vec!["--size", "12"],
        vec!["--ipv6-share", "1.5"],
        vec!["--flows", "0"],
        vec!["--classbench-trace", "/nonexistent/trace"],
    ] {
        let mut args = vec!["gen", "-w", p.to_str().unwrap()];
        args.extend(bad.iter().copied());
        let out = tiergate().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
    let out = tiergate()
        .args(["gen", "-w", "/nonexistent-dir/x.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/x.pcap"));
}
