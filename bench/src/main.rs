//! The `bench` harness: one line per measured run (see BENCHMARKS.md).

use clap::{Parser, Subcommand};

mod classify;
mod cputime;
mod replay;
mod scale;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "tiergate benchmark harness (results: BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Worker-pipeline throughput on 64-byte frames (flow-table hits, all-miss new
    /// flows, 1→N worker scaling), each next to a parse-only pass.
    Replay(replay::Args),
    /// Classifier lookups on a ClassBench filter set and trace (both verdicts), with
    /// build time, memory and depth; the compiled tree, the full `Classify` path, a
    /// recompile and the linear reference.
    Classify(classify::ClassifyArgs),
    /// Cluster-scale policy: whole generations, identity vs per-endpoint tree
    /// lookups, pod and policy churn (see BENCHMARKS.md "Cluster scale").
    Scale(scale::ScaleArgs),
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Replay(a) => replay::main(&a),
        Cmd::Scale(a) => {
            if let Err(e) = scale::main(&a) {
                eprintln!("bench: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Classify(a) => {
            if let Err(e) = classify::main(&a) {
                eprintln!("bench: {e}");
                std::process::exit(1);
            }
        }
    }
}
