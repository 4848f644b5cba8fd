//! The `bench` harness: one line per measured run (see BENCHMARKS.md).

use clap::{Parser, Subcommand};

mod replay;

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
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Replay(a) => replay::main(&a),
    }
}
