//! `tiergate replay` and `tiergate impact`: a capture through the data plane against a
//! policy set, with flow logs (enforced and pending traces) and the staged-policy
//! impact report.
//!
//! With no `-f`, the embedded seed examples are used; with no `--pcap`, the embedded
//! seed capture (see `control::replay::scenario`). `--pcap -` reads a capture (pcap or
//! pcapng) from stdin; `--flowlog -`, `--allowed-out -` and `--denied-out -` write to
//! stdout, and then the summary goes to stderr (so does everything but the document
//! with `-o json|yaml`). Output files are checked before the replay starts (never the
//! same file as an input or as each other) and written through temporary files that
//! are renamed into place only when complete. Progress goes to stderr once a run takes
//! longer than a second, naming its phase. Exit codes: 0 replayed, 1 invalid policy
//! set, 2 usage error, unreadable input or unwritable output.
//!
//! Sizes are checked before anything is allocated (`--flow-capacity` against its range
//! and, for all workers, against the available memory). A capture cut inside a frame
//! is replayed up to the cut, and a recorded-pace replay shortens gaps longer than
//! `--max-gap`: both are warned about on stderr and counted in the summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::classifier::{BuildConfig, Classifier, IdentityClassifier};
use dataplane::linear::LinearClassifier;
use dataplane::pipeline::{FrameVerdict, Pace, ReplaySource};
use pcap::capture::{CaptureCut, CaptureFormat, CaptureReader, CaptureWriter, Frames};
use serde::Serialize;

use super::out::{self, is_dash};
use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Global, Output, structured};
use crate::eval::Cluster;
use crate::flowlog::write_jsonl;
use crate::impact::ImpactReport;
use crate::lower;
use crate::model;
use crate::policy;
use crate::replay::{self, Replay, ReplayConfig, Summary, scenario};
use crate::{err, errln};

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
    /// The compiled decision trees behind the address → identity stage (the data
    /// plane's fast path).
    Tree,
    /// The decision trees built per endpoint program over the addresses themselves
    /// (no identity stage; slow to build on large clusters; for cross-checking).
    EndpointTrees,
    /// The linear reference (slow; for cross-checking the tree).
    Linear,
}

/// Arguments shared by `replay` and `impact`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Policy set: a YAML/JSON file, a directory, or `-` (stdin); repeatable.
    /// Default: the embedded seed examples (examples/seed).
    #[arg(
        short = 'f',
        long = "filename",
        alias = "policies",
        value_name = "FILE|DIR|-"
    )]
    pub policies: Vec<PathBuf>,
    /// Accept a policy set of zero resources read from `-f` (by default an error).
    #[arg(long)]
    pub allow_empty: bool,
    /// Capture to replay (pcap or pcapng, Ethernet; `-` = stdin). Default: the
    /// embedded seed capture.
    #[arg(long, value_name = "FILE|-")]
    pub pcap: Option<PathBuf>,
    /// Worker threads (each pinned to a core).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Replay as fast as possible, or at the capture's recorded pace.
    #[arg(long, value_enum, default_value_t = PaceArg::Max)]
    pub pace: PaceArg,
    /// Write the frames the enforced view forwards to this pcap (`-` = stdout).
    #[arg(long, value_name = "FILE|-")]
    pub allowed_out: Option<PathBuf>,
    /// Write the frames the enforced view drops to this pcap (`-` = stdout).
    #[arg(long, value_name = "FILE|-")]
    pub denied_out: Option<PathBuf>,
    /// Write flow logs (JSON lines) to this file (`-` = stdout).
    #[arg(long, value_name = "FILE|-")]
    pub flowlog: Option<PathBuf>,
    /// Flow-log aggregation interval in seconds of capture time (1-86400).
    #[arg(long, default_value_t = crate::flowlog::DEFAULT_INTERVAL_SECS, value_parser = super::values::interval())]
    pub interval: u64,
    /// Flow-table capacity per worker, in connections (1-16777216) [default: 65536].
    #[arg(long, value_name = "N", value_parser = super::values::flow_capacity)]
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

/// Largest `--flow-capacity` (connections per worker).
pub use super::values::MAX_FLOW_CAPACITY;
/// Largest `--interval` (s).
pub use super::values::MAX_INTERVAL_SECS;
/// Largest `--top`.
pub const MAX_TOP: u64 = 1000;
/// Default `--max-gap` (s).
pub const DEFAULT_MAX_GAP_SECS: f64 = 10.0;
/// Largest `--max-gap` (s).
pub const MAX_GAP_SECS: f64 = 86_400.0;

fn max_gap(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.001..=MAX_GAP_SECS).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a number of seconds from 0.001 to {MAX_GAP_SECS}"
        )),
    }
}

/// The JSON/YAML document of `tiergate replay -o json`.
#[derive(Debug, Serialize)]
struct ReplayDocument<'a> {
    policies: String,
    capture: String,
    summary: &'a Summary,
    impact: &'a ImpactReport,
}

/// What a run is doing, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Reading and validating the policy set.
    LoadingPolicies,
    /// Reading the capture into memory (`--pcap -`, a FIFO).
    ReadingCapture,
    /// Lowering the set and compiling its rule programs.
    Compiling {
        /// Rule programs (one per endpoint and direction); `None` while lowering.
        programs: Option<usize>,
    },
    /// The pipeline runs: flow tables are allocated and workers start until the first
    /// frame is dispatched; then frames flow.
    Replaying {
        /// When the pipeline started.
        since: Instant,
        /// Workers.
        workers: usize,
        /// With `--pace recorded`: the longest wait between two frames (`--max-gap`,
        /// seconds); longer gaps in capture time are shortened to it.
        max_gap: Option<f64>,
    },
    /// Writing flow logs and split captures.
    Writing,
}

/// The progress line for `phase`, `elapsed` into the run, with `frames` dispatched.
pub fn progress_line(cmd: &str, phase: Phase, frames: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    match phase {
        Phase::LoadingPolicies => format!("{cmd}: loading policies ({secs:.0} s)"),
        Phase::ReadingCapture => format!("{cmd}: reading the capture ({secs:.0} s)"),
        Phase::Compiling { programs: None } => {
            format!("{cmd}: lowering the policy set to rule programs ({secs:.0} s)")
        }
        Phase::Compiling { programs: Some(n) } => {
            format!("{cmd}: compiling {n} rule programs ({secs:.0} s)")
        }
        Phase::Replaying { workers, .. } if frames == 0 => format!(
            "{cmd}: allocating flow tables, starting {workers} worker{} ({secs:.0} s)",
            if workers == 1 { "" } else { "s" }
        ),
        Phase::Replaying { since, max_gap, .. } => {
            let t = since.elapsed().as_secs_f64().max(1e-3);
            let pace = match max_gap {
                Some(g) => format!(", recorded pace, gaps over {g} s shortened to {g} s"),
                None => String::new(),
            };
            format!(
                "{cmd}: replaying: {frames} frames in {t:.0} s ({:.2} Mpps{pace})",
                frames as f64 / t / 1e6
            )
        }
        Phase::Writing => format!("{cmd}: writing outputs ({secs:.0} s)"),
    }
}

/// The progress printer: one line on stderr per second once a run lasts a second.
struct Progress {
    phase: Arc<Mutex<Phase>>,
    frames: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    printer: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(cmd: &'static str) -> Progress {
        let phase = Arc::new(Mutex::new(Phase::LoadingPolicies));
        let frames = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (p, f, d) = (Arc::clone(&phase), Arc::clone(&frames), Arc::clone(&done));
        let printer = std::thread::spawn(move || {
            let start = Instant::now();
            let mut printed = false;
            let mut next = Duration::from_secs(1);
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let t = start.elapsed();
                if t >= next {
                    let phase = *p.lock().unwrap_or_else(|e| e.into_inner());
                    errln!(
                        "{}",
                        progress_line(cmd, phase, f.load(Ordering::Relaxed), t)
                    );
                    printed = true;
                    next = Duration::from_secs(t.as_secs() + 1);
                }
            }
            if printed {
                errln!("{cmd}: done");
            }
        });
        Progress {
            phase,
            frames,
            done,
            printer: Some(printer),
        }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(p) = self.printer.take() {
            let _ = p.join();
        }
    }
}

/// Loads the policy set named by `-f`, or the embedded seed.
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
    let mut read = policy::Read::default();
    for (name, text) in scenario::SEED_POLICY_FILES {
        match policy::read_text(text, name, model::Format::Yaml) {
            Ok(r) => read.items.extend(r.items),
            Err(e) => return Err(super::eval::print_error(&e)),
        }
    }
    policy::build(read)
        .map(|set| {
            (
                set.cluster,
                "embedded seed examples (examples/seed)".to_string(),
            )
        })
        .map_err(|e| super::eval::print_error(&e))
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

/// A finished replay and what it was run on.
struct Executed {
    replay: Replay,
    /// Description of the policy set.
    policies: String,
    /// Description of the capture.
    capture: String,
    /// The frames, when they were in memory (the embedded capture, stdin).
    frames: Option<Arc<Frames>>,
}

/// Reads a whole capture that is not a regular file: stdin (`-`), a FIFO, a device;
/// like a file, up to where it is cut (and where that is).
fn read_capture(path: &Path) -> Result<(Frames, Option<CaptureCut>), String> {
    let bytes = out::read_all(path)?;
    let name = if is_dash(path) {
        PathBuf::from("<stdin>")
    } else {
        path.to_path_buf()
    };
    if bytes.is_empty() {
        return Err(format!(
            "{}: empty: no capture was written to it",
            name.display()
        ));
    }
    Frames::from_bytes_to_cut(name, bytes).map_err(|e| e.to_string())
}

/// Loads, lowers, compiles and replays. Errors are printed; `Err` is the exit code.
fn execute(args: &Args, progress: &Progress) -> Result<Executed, u8> {
    let capacity = args
        .flow_capacity
        .unwrap_or(ReplayConfig::default().pipeline.worker.flow.capacity);
    if let Err(e) = super::values::check_flow_memory(usize::from(args.workers), capacity) {
        errln!("tiergate: {e}");
        return Err(EXIT_USAGE);
    }
    let (cluster, policies) = load(args)?;
    // Where a capture read into memory is cut (the pipeline reports it for a file).
    let mut in_memory_cut = None;
    let (source, capture, frames) = match &args.pcap {
        // stdin, a FIFO (`--pcap <(zcat x.pcap.gz)`), a device: read into memory, as
        // it cannot be read twice (once to replay, once to split).
        Some(p) if is_dash(p) || !out::is_regular(p) => {
            progress.set(Phase::ReadingCapture);
            let (f, cut) = read_capture(p).map_err(|e| {
                errln!("tiergate: {e}");
                EXIT_USAGE
            })?;
            in_memory_cut = cut;
            let f = Arc::new(f);
            let name = if is_dash(p) {
                "<stdin>".to_string()
            } else {
                p.display().to_string()
            };
            (ReplaySource::Frames(Arc::clone(&f)), name, Some(f))
        }
        Some(p) => {
            // Open once up front so a bad path is a usage error naming the file.
            if let Err(e) = CaptureReader::open(p) {
                errln!("tiergate: {e}");
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
    progress.set(Phase::Compiling { programs: None });
    let lowered = lower::lower(&cluster).map_err(|e| {
        errln!("tiergate: cannot compile the policy set: {e}");
        EXIT_INVALID
    })?;
    progress.set(Phase::Compiling {
        programs: Some(lowered.set.programs.len()),
    });
    let cfg = config(args, Arc::clone(&progress.frames));
    let start = |progress: &Progress| {
        progress.set(Phase::Replaying {
            since: Instant::now(),
            workers: usize::from(args.workers),
            max_gap: (args.pace == PaceArg::Recorded).then_some(args.max_gap),
        });
    };
    let result = match args.classifier {
        ClassifierArg::Tree => {
            let c =
                IdentityClassifier::build(&lowered.set, &BuildConfig::default()).map_err(|e| {
                    errln!("tiergate: cannot compile the policy set: {e}");
                    EXIT_INVALID
                })?;
            start(progress);
            replay::replay(&lowered, c, source, &cfg)
        }
        ClassifierArg::EndpointTrees => {
            let c = Classifier::build(&lowered.set, &BuildConfig::default()).map_err(|e| {
                errln!("tiergate: cannot compile the policy set: {e}");
                EXIT_INVALID
            })?;
            start(progress);
            replay::replay(&lowered, c, source, &cfg)
        }
        ClassifierArg::Linear => {
            let c = LinearClassifier::new(lowered.set.clone()).map_err(|e| {
                errln!("tiergate: cannot compile the policy set: {e}");
                EXIT_INVALID
            })?;
            start(progress);
            replay::replay(&lowered, c, source, &cfg)
        }
    };
    let mut r = result.map_err(|e| {
        errln!("tiergate: replay of {capture} failed: {e}");
        EXIT_USAGE
    })?;
    if let Some(cut) = in_memory_cut {
        r.set_capture_cut(cut);
    }
    Ok(Executed {
        replay: r,
        policies,
        capture,
        frames,
    })
}

/// The output files of a run, created (as temporary files) before it starts.
struct Outputs {
    allowed: Option<out::Output>,
    denied: Option<out::Output>,
    flowlog: Option<out::Output>,
}

/// Checks the paths of a run before anything is read: one reader of stdin, one
/// writer of stdout, no output that is the same file as an input or another output;
/// then creates the outputs.
fn prepare(args: &Args, global: &Global) -> Result<Outputs, String> {
    let stdin_users: Vec<&str> = args
        .policies
        .iter()
        .filter(|p| is_dash(p))
        .map(|_| "-f -")
        .chain(
            args.pcap
                .as_deref()
                .filter(|p| is_dash(p))
                .map(|_| "--pcap -"),
        )
        .collect();
    if stdin_users.len() > 1 {
        return Err(format!(
            "{} both read stdin: give one of them as a file",
            stdin_users.join(" and ")
        ));
    }
    let outputs = [
        ("--allowed-out", args.allowed_out.as_deref()),
        ("--denied-out", args.denied_out.as_deref()),
        ("--flowlog", args.flowlog.as_deref()),
    ];
    out::one_writer_on_stdout(&outputs, global.output)?;
    let inputs: Vec<(&str, &Path)> = args
        .policies
        .iter()
        .map(|p| ("-f", p.as_path()))
        .chain(args.pcap.as_deref().map(|p| ("--pcap", p)))
        .collect();
    let outs: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|(f, p)| p.map(|p| (*f, p)))
        .collect();
    out::refuse_same_files(&inputs, &outs)?;
    let create = |p: Option<&Path>| {
        p.map(out::Output::create)
            .transpose()
            .map_err(|e| e.to_string())
    };
    Ok(Outputs {
        allowed: create(args.allowed_out.as_deref())?,
        denied: create(args.denied_out.as_deref())?,
        flowlog: create(args.flowlog.as_deref())?,
    })
}

/// Writes the forwarded and dropped frames to the requested captures; they are
/// committed by the caller.
fn write_split(
    args: &Args,
    r: &Replay,
    frames: Option<&Frames>,
    allowed: Option<out::Output>,
    denied: Option<out::Output>,
) -> Result<Vec<out::Output>, String> {
    let Some(verdicts) = r.run.frame_verdicts.as_ref() else {
        return Ok(Vec::new());
    };
    let open = |o: Option<out::Output>| -> Result<Option<CaptureWriter<out::Output>>, String> {
        o.map(|o| {
            let name = o.dest().to_string();
            CaptureWriter::new(o, name, CaptureFormat::Pcap)
                .map_err(|e| format!("cannot write to {e}"))
        })
        .transpose()
    };
    let mut allowed = open(allowed)?;
    let mut denied = open(denied)?;
    let mut put = |i: usize, f: pcap::capture::FrameRef<'_>| -> Result<(), String> {
        let w = match verdicts.get(i) {
            Some(FrameVerdict::Forwarded) => allowed.as_mut(),
            Some(FrameVerdict::Dropped) => denied.as_mut(),
            _ => None,
        };
        match w {
            Some(w) => w.write_frame(f).map_err(|e| format!("cannot write to {e}")),
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
            let mut reader = CaptureReader::open(path).map_err(|e| e.to_string())?;
            let mut i = 0;
            while let Some(f) = reader.next_frame() {
                put(i, f.map_err(|e| e.to_string())?)?;
                i += 1;
            }
        }
        (None, None) => {}
    }
    [allowed, denied]
        .into_iter()
        .flatten()
        .map(|w| w.into_inner().map_err(|e| format!("cannot write to {e}")))
        .collect()
}

/// Writes the flow logs; committed by the caller.
fn write_flowlog(mut o: out::Output, r: &Replay) -> Result<out::Output, String> {
    match write_jsonl(&mut o, &r.flow_logs) {
        Ok(()) => Ok(o),
        // Dropping `o` removes the temporary file: the destination stays as it was.
        Err(e) => Err(out::WriteError::new(o.dest().clone(), e).to_string()),
    }
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
    let cmd = if impact_only { "impact" } else { "replay" };
    let Outputs {
        allowed,
        denied,
        flowlog,
    } = match prepare(args, global) {
        Ok(o) => o,
        Err(e) => {
            errln!("tiergate {cmd}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // When stdout carries data (flow logs, a capture), the report goes to stderr.
    let data_on_stdout = [&args.allowed_out, &args.denied_out, &args.flowlog]
        .into_iter()
        .flatten()
        .any(|p| is_dash(p));
    let progress = Progress::start(cmd);
    let Executed {
        replay: r,
        policies,
        capture,
        frames,
    } = match execute(args, &progress) {
        Ok(x) => x,
        Err(code) => return ExitCode::from(code),
    };
    for w in warnings(&r.summary, &capture, args) {
        errln!("tiergate: warning: {w}");
    }
    progress.set(Phase::Writing);
    // Every output is written completely before any of them replaces its destination.
    let written = write_split(args, &r, frames.as_deref(), allowed, denied).and_then(|mut v| {
        if let Some(o) = flowlog {
            v.push(write_flowlog(o, &r)?);
        }
        out::commit_all(v).map_err(|e| e.to_string())
    });
    drop(progress);
    if let Err(e) = written {
        errln!("tiergate: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let text = match (global.output, impact_only) {
        (Output::Table, true) => impact_table(&r.impact),
        (Output::Table, false) => table(&r, &policies, &capture, args),
        (o, true) => structured(&r.impact, o),
        (o, false) => structured(
            &ReplayDocument {
                policies,
                capture,
                summary: &r.summary,
                impact: &r.impact,
            },
            o,
        ),
    };
    if data_on_stdout {
        err!("{}", with_newline(text));
    } else {
        crate::out!("{}", with_newline(text));
    }
    ExitCode::from(EXIT_OK)
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
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

/// The summary table of `replay` (ends with the impact report).
fn table(r: &Replay, policies: &str, capture: &str, args: &Args) -> String {
    let s = &r.summary;
    let p = &s.packets;
    let f = &s.connections;
    let mut out = String::new();
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
    out.push_str(&impact_table(&r.impact));
    match &args.flowlog {
        Some(path) if is_dash(path) => {
            let _ = writeln!(
                out,
                "\nflow logs: {} records written to stdout",
                r.flow_logs.len()
            );
        }
        Some(path) => {
            let _ = writeln!(
                out,
                "\nflow logs: {} records written to {}",
                r.flow_logs.len(),
                path.display()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nflow logs: {} records (write them with --flowlog FILE|-)",
                r.flow_logs.len()
            );
        }
    }
    out
}

/// The impact report as text.
fn impact_table(report: &ImpactReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "impact of staged policies: {} of {} connections would change",
        report.changed, report.connections
    );
    if report.policies.is_empty() {
        let _ = writeln!(out, "  (no staged policy evaluated any connection)");
        return out;
    }
    for p in &report.policies {
        let _ = writeln!(out, "  {}", p.policy);
        let _ = writeln!(
            out,
            "    evaluated {:>6} connections  newly denied {:>6} ({} packets, {} B)  newly allowed {:>6} ({} packets, {} B)",
            p.evaluated.connections,
            p.newly_denied.connections,
            p.newly_denied.packets,
            p.newly_denied.bytes,
            p.newly_allowed.connections,
            p.newly_allowed.packets,
            p.newly_allowed.bytes
        );
        if !p.top_peers.is_empty() {
            let peers: Vec<String> = p
                .top_peers
                .iter()
                .map(|r| format!("{} ({})", r.item, r.connections))
                .collect();
            let _ = writeln!(out, "    peers: {}", peers.join(", "));
        }
        if !p.top_ports.is_empty() {
            let ports: Vec<String> = p
                .top_ports
                .iter()
                .map(|r| format!("{} ({})", r.item, r.connections))
                .collect();
            let _ = writeln!(out, "    ports: {}", ports.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_names_the_phase_and_never_reports_zero_frames() {
        let t = Duration::from_secs(3);
        let line = |phase, frames| progress_line("replay", phase, frames, t);
        assert_eq!(
            line(Phase::LoadingPolicies, 0),
            "replay: loading policies (3 s)"
        );
        assert_eq!(
            line(Phase::ReadingCapture, 0),
            "replay: reading the capture (3 s)"
        );
        assert_eq!(
            line(Phase::Compiling { programs: None }, 0),
            "replay: lowering the policy set to rule programs (3 s)"
        );
        assert_eq!(
            line(Phase::Compiling { programs: Some(12) }, 0),
            "replay: compiling 12 rule programs (3 s)"
        );
        let since = Instant::now();
        assert_eq!(
            line(
                Phase::Replaying {
                    since,
                    workers: 2,
                    max_gap: None
                },
                0
            ),
            "replay: allocating flow tables, starting 2 workers (3 s)"
        );
        let replaying = line(
            Phase::Replaying {
                since,
                workers: 1,
                max_gap: None,
            },
            5000,
        );
        assert!(
            replaying.starts_with("replay: replaying: 5000 frames in "),
            "{replaying}"
        );
        assert!(replaying.ends_with(" Mpps)"), "{replaying}");
        let paced = line(
            Phase::Replaying {
                since,
                workers: 1,
                max_gap: Some(10.0),
            },
            5000,
        );
        assert!(
            paced.ends_with("Mpps, recorded pace, gaps over 10 s shortened to 10 s)"),
            "{paced}"
        );
        assert_eq!(line(Phase::Writing, 7), "replay: writing outputs (3 s)");
    }
}
