//! `tiergate gen -w FILE|-`: write a synthetic capture — a seeded random mix
//! (`pcap::synth::generate`), the embedded seed scenario, or one frame per line of a
//! ClassBench trace — for benchmarks, demos and CI fixtures.
//!
//! `-w -` writes the capture to stdout (the summary then goes to stderr); a file is
//! written through a temporary file and appears only once complete (see
//! [`super::out`]). Exit codes: 0 written, 2 usage error or unreadable/unwritable file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pcap::capture::{CaptureFormat, CaptureWriter, Frames};
use pcap::classbench;
use pcap::synth::{self, FrameSize, GenConfig, TraceTuple};
use serde::Serialize;

use super::out::{self, Dest, is_dash};
use super::{EXIT_OK, EXIT_USAGE, Global, Output, structured};
use crate::replay::scenario;
use crate::{errln, outln};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Traffic between the seed example's endpoints (what `tiergate replay` replays
    /// by default).
    Seed,
}

/// Capture file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// Classic libpcap (microsecond timestamps).
    Pcap,
    /// pcapng (nanosecond timestamps).
    Pcapng,
}

/// Arguments of `tiergate gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Output capture file (`-` = stdout).
    #[arg(short = 'w', long = "write", value_name = "FILE|-")]
    pub out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value_t = FormatArg::Pcap)]
    pub format: FormatArg,
    /// Write a fixed scenario instead of a random mix.
    #[arg(long, value_enum, conflicts_with = "classbench_trace")]
    pub scenario: Option<Scenario>,
    /// Write one minimum-size frame per header of this ClassBench trace (`-` = stdin).
    #[arg(long, value_name = "FILE|-")]
    pub classbench_trace: Option<PathBuf>,
    /// PRNG seed (same seed, same bytes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of flows.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub flows: u64,
    /// Approximate number of frames.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub packets: u64,
    /// Zipf exponent of flow popularity (0 = uniform, up to 10).
    #[arg(long, default_value_t = 1.0, value_parser = zipf)]
    pub zipf: f64,
    /// Share of IPv6 flows (0..1).
    #[arg(long, default_value_t = 0.2, value_parser = share)]
    pub ipv6_share: f64,
    /// Share of 802.1Q-tagged flows (0..1).
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub vlan_share: f64,
    /// Share of UDP flows (0..1).
    #[arg(long, default_value_t = 0.25, value_parser = share)]
    pub udp_share: f64,
    /// Share of ICMP echo flows (0..1).
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub icmp_share: f64,
    /// Share of frames replaced by malformed or non-IP frames (0..1).
    #[arg(long, default_value_t = 0.01, value_parser = share)]
    pub malformed_share: f64,
    /// TCP flows without handshake and teardown (mid-stream data only).
    #[arg(long)]
    pub no_handshakes: bool,
    /// Frame size: `min` (64 bytes on the wire), `imix` (7:4:1 of 64/576/1500), or a
    /// number of bytes.
    #[arg(long, default_value = "min", value_parser = frame_size)]
    pub size: FrameSize,
}

/// Largest `--zipf` exponent.
pub const MAX_ZIPF: f64 = 10.0;

fn zipf(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=MAX_ZIPF).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a Zipf exponent: expected a number from 0 (uniform) to {MAX_ZIPF}"
        )),
    }
}

/// Refuses a capture that would not fit the available memory (it is built in memory
/// before it is written): `--packets` frames of `--size`.
fn check_memory(args: &Args) -> Result<(), String> {
    // Average frame bytes (IMIX 7:4:1 of 64/576/1500) plus the per-frame index.
    let frame = match args.size {
        FrameSize::Min => 64,
        FrameSize::Imix => (7 * 64 + 4 * 576 + 1500) / 12,
        FrameSize::Fixed(b) => u64::from(b),
    } + 24;
    let need = args.packets.saturating_mul(frame);
    match crate::sys::available_memory() {
        Some(avail) if need > avail => Err(format!(
            "--packets {} of --size {} frames need about {:.1} GiB in memory, more than the {:.1} GiB available; lower --packets or --size",
            args.packets,
            match args.size {
                FrameSize::Min => "min".to_string(),
                FrameSize::Imix => "imix".to_string(),
                FrameSize::Fixed(b) => b.to_string(),
            },
            need as f64 / f64::from(1u32 << 30),
            avail as f64 / f64::from(1u32 << 30)
        )),
        _ => Ok(()),
    }
}

/// The protocol shares name parts of one whole (the rest is TCP): they may not sum to
/// more than 1.
fn check_shares(args: &Args) -> Result<(), String> {
    let sum = args.udp_share + args.icmp_share;
    if sum > 1.0 + 1e-9 {
        return Err(format!(
            "--udp-share {} and --icmp-share {} sum to {sum}: the protocol shares are parts of one whole (TCP takes the rest), so they must sum to at most 1",
            args.udp_share, args.icmp_share
        ));
    }
    Ok(())
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

fn frame_size(s: &str) -> Result<FrameSize, String> {
    match s {
        "min" => Ok(FrameSize::Min),
        "imix" => Ok(FrameSize::Imix),
        n => match n.parse::<u16>() {
            Ok(b) if (64..=9018).contains(&b) => Ok(FrameSize::Fixed(b)),
            _ => Err(format!(
                "{s:?} is not a frame size: expected min, imix or 64-9018 bytes"
            )),
        },
    }
}

/// What `gen` reports.
#[derive(Debug, Serialize)]
struct Written {
    file: String,
    frames: usize,
    wire_bytes: u64,
    flows: Option<usize>,
    malformed: Option<usize>,
}

/// Reads a ClassBench trace from `path` (`-` = stdin; a FIFO that no process writes
/// to reads as empty).
fn read_trace(path: &Path) -> Result<Vec<classbench::Header>, String> {
    if out::is_regular(path) {
        return classbench::read_trace(path).map_err(|e| e.to_string());
    }
    let bytes = out::read_all(path)?;
    let name = if is_dash(path) {
        Path::new("<stdin>")
    } else {
        path
    };
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", name.display()))?;
    classbench::parse_trace(&text, name).map_err(|e| e.to_string())
}

/// Runs `tiergate gen`.
pub fn run(args: &Args, global: &Global) -> ExitCode {
    if let Some(trace) = &args.classbench_trace
        && let Err(e) =
            out::refuse_same_files(&[("--classbench-trace", trace)], &[("-w", &args.out)])
    {
        errln!("tiergate gen: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(e) = check_shares(args).and_then(|()| {
        if args.classbench_trace.is_none() && args.scenario.is_none() {
            check_memory(args)
        } else {
            Ok(())
        }
    }) {
        errln!("tiergate gen: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let (frames, flows, malformed): (Frames, Option<usize>, Option<usize>) =
        if let Some(path) = &args.classbench_trace {
            let headers = match read_trace(path) {
                Ok(h) => h,
                Err(e) => {
                    errln!("tiergate: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let tuples: Vec<TraceTuple> = headers
                .iter()
                .map(|h| TraceTuple {
                    src: h.src,
                    dst: h.dst,
                    sport: h.sport,
                    dport: h.dport,
                    proto: h.proto,
                })
                .collect();
            (
                synth::tuples_to_frames(&tuples, scenario::SEED_START_NS, 1_000),
                None,
                None,
            )
        } else if args.scenario == Some(Scenario::Seed) {
            (
                scenario::seed_capture(),
                Some(scenario::seed_flows().len()),
                Some(0),
            )
        } else {
            let cfg = GenConfig {
                seed: args.seed,
                flows: args.flows as usize,
                packets: args.packets as usize,
                zipf_s: args.zipf,
                ipv6_share: args.ipv6_share,
                vlan_share: args.vlan_share,
                udp_share: args.udp_share,
                icmp_share: args.icmp_share,
                malformed_share: args.malformed_share,
                handshakes: !args.no_handshakes,
                size: args.size,
                ..GenConfig::default()
            };
            let g = synth::generate(&cfg);
            let (n, m) = (g.flows.len(), g.malformed);
            (g.frames, Some(n), Some(m))
        };
    let format = match args.format {
        FormatArg::Pcap => CaptureFormat::Pcap,
        FormatArg::Pcapng => CaptureFormat::PcapNg,
    };
    if let Err(e) = write(&frames, &args.out, format) {
        errln!("tiergate: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let dest = Dest::from_arg(&args.out);
    let w = Written {
        file: dest.to_string(),
        frames: frames.len(),
        wire_bytes: frames.wire_bytes(),
        flows,
        malformed,
    };
    let text = match global.output {
        Output::Table => {
            let mut t = format!(
                "wrote {} frames ({} bytes on the wire)",
                w.frames, w.wire_bytes
            );
            if let Some(f) = w.flows {
                t.push_str(&format!(", {f} flows"));
            }
            if let Some(m) = w.malformed.filter(|m| *m > 0) {
                t.push_str(&format!(", {m} malformed"));
            }
            t.push_str(&format!(" to {}", w.file));
            t
        }
        o => structured(&w, o),
    };
    // With the capture on stdout, the summary goes to stderr.
    if dest == Dest::Stdout {
        errln!("{text}");
    } else {
        outln!("{text}");
    }
    ExitCode::from(EXIT_OK)
}

/// Writes `frames` to `path` (`-` = stdout) through [`out::Output`]: complete, or not
/// at all.
fn write(frames: &Frames, path: &Path, format: CaptureFormat) -> Result<(), String> {
    let output = out::Output::create(path).map_err(|e| e.to_string())?;
    let dest = output.dest().to_string();
    let mut w =
        CaptureWriter::new(output, &dest, format).map_err(|e| format!("cannot write to {e}"))?;
    for f in frames.iter() {
        w.write_frame(f)
            .map_err(|e| format!("cannot write to {e}"))?;
    }
    let output = w.into_inner().map_err(|e| format!("cannot write to {e}"))?;
    output.commit().map_err(|e| e.to_string())
}
