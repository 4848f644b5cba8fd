//! `tiergate replay` and `tiergate impact`: a capture through the data plane against a
//! policy set, with flow logs (enforced and pending traces) and the staged-policy
//! impact report.
//!
//! With no `--policies`, the embedded seed examples are used; with no `--pcap`, the
//! embedded seed capture (see `control::replay::scenario`). Progress goes to stderr
//! once a run takes longer than a second. Exit codes: 0 replayed, 1 invalid policy
//! set, 2 usage error or unreadable input (policies, capture, output files).
//!
//! Sizes are checked before anything is allocated (`--flow-capacity` against its range
//! and, for all workers, against the available memory). A capture cut inside a frame
//! is replayed up to the cut, and a recorded-pace replay shortens gaps longer than
//! `--max-gap`: both are warned about on stderr and counted in the summary.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataplane::classifier::{BuildConfig, Classifier};
use dataplane::linear::LinearClassifier;
use dataplane::pipeline::{FrameVerdict, Pace, ReplaySource};
use pcap::capture::{CaptureFormat, CaptureReader, CaptureWriter, Frames};
use serde::Serialize;

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Global, Output, print_structured};
use crate::eval::Cluster;
use crate::flowlog::write_jsonl;
use crate::impact::ImpactReport;
use crate::lower;
use crate::model;
use crate::replay::{self, Replay, ReplayConfig, Summary, scenario};
use crate::store::Store;
use dataplane::flow::FlowTable;

/// Replay pace, as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PaceArg {
    /// As fast as the workers go.
    Max,
    /// At the capture's recorded timing.
    Recorded,
}

/// Which classifier runs the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifierArg {
    /// The compiled decision trees (the data plane's fast path).
    Tree,
    /// The linear reference (slow; for cross-checking the tree).
    Linear,
}

/// Arguments shared by `replay` and `impact`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Policy set: a YAML/JSON file, a directory, or `-` (stdin); repeatable.
    /// Default: the embedded seed examples (examples/seed).
    #[arg(long = "policies", short = 'f', value_name = "FILE|DIR|-")]
    pub policies: Vec<PathBuf>,
    /// Accept a policy set of zero resources read from `-f` (by default an error).
    #[arg(long)]
    pub allow_empty: bool,
    /// Capture to replay (pcap or pcapng, Ethernet). Default: the embedded seed capture.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Worker threads (each pinned to a core).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Replay as fast as possible, or at the capture's recorded pace.
    #[arg(long, value_enum, default_value_t = PaceArg::Max)]
    pub pace: PaceArg,
    /// Write the frames the enforced view forwards to this pcap.
    #[arg(long, value_name = "FILE")]
    pub allowed_out: Option<PathBuf>,
    /// Write the frames the enforced view drops to this pcap.
    #[arg(long, value_name = "FILE")]
    pub denied_out: Option<PathBuf>,
    /// Write flow logs (JSON lines) to this file (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub flowlog: Option<PathBuf>,
    /// Flow-log aggregation interval in seconds of capture time (1-86400).
    #[arg(long, default_value_t = crate::flowlog::DEFAULT_INTERVAL_SECS, value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_SECS))]
    pub interval: u64,
    /// Flow-table capacity per worker, in connections (1-16777216) [default: 65536].
    #[arg(long, value_name = "N", value_parser = flow_capacity)]
    pub flow_capacity: Option<usize>,
    /// Length of the peer and port lists in the impact report (0-1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=MAX_TOP))]
    pub top: u64,
    /// With `--pace recorded`, the longest wait between two frames, in seconds
    /// (0.001-86400): longer gaps in capture time are shortened to it and counted.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_GAP_SECS, value_parser = max_gap)]
    pub max_gap: f64,
    /// Classifier: the compiled decision trees, or the linear reference.
    #[arg(long, value_enum, default_value_t = ClassifierArg::Tree)]
    pub classifier: ClassifierArg,
}

/// Largest `--flow-capacity` (connections per worker): 2 GiB of flow table.
pub const MAX_FLOW_CAPACITY: usize = 1 << 24;
/// Largest `--interval` (s).
pub const MAX_INTERVAL_SECS: u64 = 86_400;
/// Largest `--top`.
pub const MAX_TOP: u64 = 1000;
/// Default `--max-gap` (s).
pub const DEFAULT_MAX_GAP_SECS: f64 = 10.0;
/// Largest `--max-gap` (s).
pub const MAX_GAP_SECS: f64 = 86_400.0;

fn flow_capacity(s: &str) -> Result<usize, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX_FLOW_CAPACITY as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "expected a number of connections per worker from 1 to {MAX_FLOW_CAPACITY}"
        )),
    }
}

fn max_gap(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.001..=MAX_GAP_SECS).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a number of seconds from 0.001 to {MAX_GAP_SECS}"
        )),
    }
}

/// Refuses flow tables that together need more memory than the machine has
/// available (they are allocated and written before the replay starts).
fn check_flow_memory(args: &Args, workers: usize, capacity: usize) -> Result<(), String> {
    let per = FlowTable::memory_for(capacity).unwrap_or(usize::MAX);
    let total = per.saturating_mul(workers);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    if let Some(avail) = crate::sys::available_memory()
        && total as u64 > avail
    {
        return Err(format!(
            "--flow-capacity {capacity} with --workers {}: the flow tables need {:.1} GiB ({workers} x {capacity} connections x {} B), more than the {:.1} GiB of memory available; lower --flow-capacity or --workers",
            args.workers,
            gib(total as u64),
            per / capacity.max(1),
            gib(avail)
        ));
    }
    Ok(())
}

/// The JSON/YAML document of `tiergate replay -o json`.
#[derive(Debug, Serialize)]
struct ReplayDocument<'a> {
    policies: String,
    capture: String,
    summary: &'a Summary,
    impact: &'a ImpactReport,
}

/// Loads the policy set named by `--policies`, or the embedded seed.
fn load(args: &Args) -> Result<(Cluster, String), u8> {
    if !args.policies.is_empty() {
        let names = args
            .policies
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return super::eval::load_policy_set(&args.policies, args.allow_empty).map(|c| (c, names));
    }
    let mut loaded = Vec::new();
    for (name, text) in scenario::SEED_POLICY_FILES {
        match model::load_str(text, name) {
            Ok(l) => loaded.extend(l),
            Err(e) => {
                for err in e.errors() {
                    eprintln!("{err}");
                }
                return Err(EXIT_INVALID);
            }
        }
    }
    let mut store = Store::new();
    if let Err(e) = store.apply(loaded) {
        for err in &e.0 {
            eprintln!("{err}");
        }
        return Err(EXIT_INVALID);
    }
    Cluster::from_resources(store.resources())
        .map(|c| (c, "embedded seed examples (examples/seed)".to_string()))
        .map_err(|e| {
            eprintln!("{e}");
            EXIT_INVALID
        })
}

fn config(args: &Args, progress: Arc<AtomicU64>) -> ReplayConfig {
    let mut cfg = ReplayConfig::default();
    cfg.pipeline.workers = usize::from(args.workers);
    cfg.pipeline.pace = match args.pace {
        PaceArg::Max => Pace::Max,
        PaceArg::Recorded => Pace::Recorded,
    };
    cfg.pipeline.max_gap_ns = (args.max_gap * 1e9) as u64;
    cfg.pipeline.frame_verdicts = args.allowed_out.is_some() || args.denied_out.is_some();
    cfg.pipeline.progress = Some(progress);
    cfg.pipeline.worker.export_interval_ns = Some(args.interval.saturating_mul(1_000_000_000));
    if let Some(n) = args.flow_capacity {
        cfg.pipeline.worker.flow.capacity = n;
    }
    cfg.interval_secs = args.interval;
    cfg.top_n = args.top as usize;
    cfg
}

/// Prints `replay: N frames ...` on stderr every second while a run lasts.
fn spawn_progress(frames: Arc<AtomicU64>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut printed = false;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let t = start.elapsed();
            if t >= Duration::from_secs(1) && t.subsec_millis() < 100 {
                let n = frames.load(Ordering::Relaxed);
                eprintln!(
                    "replay: {n} frames in {:.0} s ({:.2} Mpps)",
                    t.as_secs_f64(),
                    n as f64 / t.as_secs_f64() / 1e6
                );
                printed = true;
            }
        }
        if printed {
            eprintln!("replay: done");
        }
    })
}

/// A finished replay and what it was run on.
struct Executed {
    replay: Replay,
    /// Description of the policy set.
    policies: String,
    /// Description of the capture.
    capture: String,
    /// The frames, when they were in memory (the embedded capture).
    frames: Option<Arc<Frames>>,
}

/// Loads, lowers, compiles and replays. Errors are printed; `Err` is the exit code.
fn execute(args: &Args) -> Result<Executed, u8> {
    let capacity = args
        .flow_capacity
        .unwrap_or(ReplayConfig::default().pipeline.worker.flow.capacity);
    if let Err(e) = check_flow_memory(args, usize::from(args.workers), capacity) {
        eprintln!("tiergate: {e}");
        return Err(EXIT_USAGE);
    }
    let (cluster, policies) = load(args)?;
    let lowered = lower::lower(&cluster).map_err(|e| {
        eprintln!("tiergate: cannot compile the policy set: {e}");
        EXIT_INVALID
    })?;
    let (source, capture, frames) = match &args.pcap {
        Some(p) => {
            // Open once up front so a bad path is a usage error naming the file.
            if let Err(e) = CaptureReader::open(p) {
                eprintln!("tiergate: {}: {e}", p.display());
                return Err(EXIT_USAGE);
            }
            (ReplaySource::File(p.clone()), p.display().to_string(), None)
        }
        None => {
            let f = Arc::new(scenario::seed_capture());
            (
                ReplaySource::Frames(Arc::clone(&f)),
                "embedded seed capture".to_string(),
                Some(f),
            )
        }
    };
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let printer = spawn_progress(Arc::clone(&progress), Arc::clone(&done));
    let cfg = config(args, progress);
    let result = match args.classifier {
        ClassifierArg::Tree => {
            let c = Classifier::build(&lowered.set, &BuildConfig::default()).map_err(|e| {
                eprintln!("tiergate: cannot compile the policy set: {e}");
                EXIT_INVALID
            });
            c.map(|c| replay::replay(&lowered, c, source, &cfg))
        }
        ClassifierArg::Linear => {
            let c = LinearClassifier::new(lowered.set.clone()).map_err(|e| {
                eprintln!("tiergate: cannot compile the policy set: {e}");
                EXIT_INVALID
            });
            c.map(|c| replay::replay(&lowered, c, source, &cfg))
        }
    };
    done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let r = result?.map_err(|e| {
        eprintln!("tiergate: replay of {capture} failed: {e}");
        EXIT_USAGE
    })?;
    Ok(Executed {
        replay: r,
        policies,
        capture,
        frames,
    })
}

/// Writes the forwarded and dropped frames to the requested captures.
fn write_split(args: &Args, r: &Replay, frames: Option<&Frames>) -> Result<(), String> {
    let Some(verdicts) = r.run.frame_verdicts.as_ref() else {
        return Ok(());
    };
    let open = |p: &Option<PathBuf>| -> Result<Option<CaptureWriter>, String> {
        p.as_ref()
            .map(|p| {
                CaptureWriter::create(p, CaptureFormat::Pcap)
                    .map_err(|e| format!("{}: {e}", p.display()))
            })
            .transpose()
    };
    let mut allowed = open(&args.allowed_out)?;
    let mut denied = open(&args.denied_out)?;
    let mut put = |i: usize, f: pcap::capture::FrameRef<'_>| -> Result<(), String> {
        let w = match verdicts.get(i) {
            Some(FrameVerdict::Forwarded) => allowed.as_mut(),
            Some(FrameVerdict::Dropped) => denied.as_mut(),
            _ => None,
        };
        match w {
            Some(w) => w.write_frame(f).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    };
    match (frames, &args.pcap) {
        (Some(frames), _) => {
            for (i, f) in frames.iter().enumerate() {
                put(i, f)?;
            }
        }
        (None, Some(path)) => {
            let mut reader =
                CaptureReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut i = 0;
            while let Some(f) = reader.next_frame() {
                let f = f.map_err(|e| format!("{}: {e}", path.display()))?;
                put(i, f)?;
                i += 1;
            }
        }
        (None, None) => {}
    }
    for w in [allowed, denied].into_iter().flatten() {
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn write_flowlog(path: &Path, r: &Replay) -> io::Result<()> {
    if path == Path::new("-") {
        return write_jsonl(io::stdout().lock(), &r.flow_logs);
    }
    write_jsonl(BufWriter::new(File::create(path)?), &r.flow_logs)
}

/// Runs `tiergate replay`.
pub fn run(args: &Args, global: &Global) -> ExitCode {
    run_as(args, global, false)
}

/// Runs `tiergate impact`: the same replay, printing only the impact report.
pub fn run_impact(args: &Args, global: &Global) -> ExitCode {
    run_as(args, global, true)
}

fn run_as(args: &Args, global: &Global, impact_only: bool) -> ExitCode {
    let Executed {
        replay: r,
        policies,
        capture,
        frames,
    } = match execute(args) {
        Ok(x) => x,
        Err(code) => return ExitCode::from(code),
    };
    for w in warnings(&r.summary, &capture, args) {
        eprintln!("tiergate: warning: {w}");
    }
    if let Err(e) = write_split(args, &r, frames.as_deref()) {
        eprintln!("tiergate: cannot write the split captures: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(p) = &args.flowlog
        && let Err(e) = write_flowlog(p, &r)
    {
        eprintln!("tiergate: cannot write flow logs to {}: {e}", p.display());
        return ExitCode::from(EXIT_USAGE);
    }
    match (global.output, impact_only) {
        (Output::Table, true) => print_impact(&r.impact),
        (Output::Table, false) => print_table(&r, &policies, &capture, args),
        (o, true) => print_structured(&r.impact, o),
        (o, false) => print_structured(
            &ReplayDocument {
                policies,
                capture,
                summary: &r.summary,
                impact: &r.impact,
            },
            o,
        ),
    }
    ExitCode::from(EXIT_OK)
}

/// What the summary should warn about: a capture cut short, shortened gaps.
fn warnings(s: &Summary, capture: &str, args: &Args) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(c) = &s.capture_cut {
        w.push(format!(
            "{capture}: the file ends in the middle of frame {} (byte {} of {}); the {} whole frame{} before it were replayed",
            c.frame,
            c.offset,
            c.file_bytes,
            c.frame - 1,
            if c.frame == 2 { "" } else { "s" }
        ));
    }
    if s.gaps_capped > 0 {
        w.push(format!(
            "{} gap{} in capture time longer than --max-gap {} s {} shortened to it",
            s.gaps_capped,
            if s.gaps_capped == 1 { "" } else { "s" },
            args.max_gap,
            if s.gaps_capped == 1 { "was" } else { "were" }
        ));
    }
    w
}

fn print_table(r: &Replay, policies: &str, capture: &str, args: &Args) {
    let s = &r.summary;
    let p = &s.packets;
    let f = &s.flows;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "replay of {capture}");
    let _ = writeln!(out, "  against {policies}");
    // A rate over a few milliseconds measures thread start-up, not the pipeline.
    let rate = if s.elapsed_ms >= 100.0 {
        format!("{:.2} Mpps", s.mpps)
    } else {
        "too short a run for a rate".to_string()
    };
    let _ = writeln!(
        out,
        "  {} frames in {:.1} ms with {} worker(s): {rate}",
        p.total, s.elapsed_ms, s.workers
    );
    let _ = writeln!(
        out,
        "\npackets    parsed {}  truncated {}  malformed {}  non-IP {}  (unparsed forwarded: {})",
        p.parsed, p.truncated, p.malformed, p.non_ip, p.unparsed_passed
    );
    let _ = writeln!(
        out,
        "           forwarded {} ({} B)  dropped {} ({} B)",
        p.forwarded.packets, p.forwarded.bytes, p.dropped.packets, p.dropped.bytes
    );
    let _ = writeln!(out, "\n           {:>10} {:>10}", "allow", "deny");
    let _ = writeln!(
        out,
        "enforced   {:>10} {:>10}   packets",
        p.enforced_allow.packets, p.enforced_deny.packets
    );
    let _ = writeln!(
        out,
        "pending    {:>10} {:>10}   packets",
        p.pending_allow.packets, p.pending_deny.packets
    );
    let _ = writeln!(
        out,
        "enforced   {:>10} {:>10}   connections",
        f.enforced_allow, f.enforced_deny
    );
    let _ = writeln!(
        out,
        "pending    {:>10} {:>10}   connections",
        f.pending_allow, f.pending_deny
    );
    let _ = writeln!(
        out,
        "\nconnections {}  (no local endpoint: {})  would be newly denied: {}  newly allowed: {}",
        f.total, f.unpoliced, f.newly_denied, f.newly_allowed
    );
    for w in warnings(s, capture, args) {
        let _ = writeln!(out, "warning: {w}");
    }
    if s.evictions > 0 || s.records_dropped > 0 {
        let _ = writeln!(
            out,
            "warning: {} flow-table evictions, {} flow records lost (flow logs incomplete)",
            s.evictions, s.records_dropped
        );
    }
    let _ = writeln!(out);
    drop(out);
    print_impact(&r.impact);
    if let Some(path) = &args.flowlog {
        if path != Path::new("-") {
            println!(
                "\nflow logs: {} records written to {}",
                r.flow_logs.len(),
                path.display()
            );
        }
    } else {
        println!(
            "\nflow logs: {} records (write them with --flowlog FILE)",
            r.flow_logs.len()
        );
    }
}

fn print_impact(report: &ImpactReport) {
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "impact of staged policies: {} of {} connections would change",
        report.changed, report.connections
    );
    if report.policies.is_empty() {
        let _ = writeln!(out, "  (no staged policy evaluated any connection)");
        return;
    }
    for p in &report.policies {
        let _ = writeln!(out, "  {}", p.policy);
        let _ = writeln!(
            out,
            "    evaluated {:>6} connections  newly denied {:>6} ({} packets, {} B)  newly allowed {:>6} ({} packets, {} B)",
            p.evaluated.flows,
            p.newly_denied.flows,
            p.newly_denied.packets,
            p.newly_denied.bytes,
            p.newly_allowed.flows,
            p.newly_allowed.packets,
            p.newly_allowed.bytes
        );
        if !p.top_peers.is_empty() {
            let peers: Vec<String> = p
                .top_peers
                .iter()
                .map(|r| format!("{} ({})", r.item, r.flows))
                .collect();
            let _ = writeln!(out, "    peers: {}", peers.join(", "));
        }
        if !p.top_ports.is_empty() {
            let ports: Vec<String> = p
                .top_ports
                .iter()
                .map(|r| format!("{} ({})", r.item, r.flows))
                .collect();
            let _ = writeln!(out, "    ports: {}", ports.join(", "));
        }
    }
}
