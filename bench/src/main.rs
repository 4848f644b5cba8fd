//! The `bench` harness: one line per measured run (see BENCHMARKS.md).

use clap::{Parser, Subcommand};

mod calico;
mod classify;
mod cputime;
mod replay;
mod scale;
mod socket;
mod suite;

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
    /// The control socket of a `tiergate run` it starts: apply latency (daemon
    /// timings and client wall time) and request rates (see BENCHMARKS.md "Control
    /// socket").
    Socket(socket::SocketArgs),
    /// First-match oracle of a ClassBench trace by brute force (one 0-based filter
    /// index per line, to `<TRACE>.firstmatch`).
    ClassbenchOracle(suite::OracleArgs),
    /// Every set of a directory: our lookups alternating with rte_acl's best
    /// two-category algorithm, correctness, bytes, build time and peak RSS; a table.
    ClassbenchSuite(suite::SuiteArgs),
    /// A Calico-shaped ClassBench set: a `scale` cluster lowered and its ingress
    /// programs flattened into first-match 5-tuple filters, with a trace and its
    /// first-match oracle (see BENCHMARKS.md "Calico-shaped sets").
    CalicoSets(calico::CalicoArgs),
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Replay(a) => replay::main(&a),
        Cmd::Scale(a) => exit_on(scale::main(&a)),
        Cmd::Socket(a) => exit_on(socket::main(&a)),
        Cmd::Classify(a) => exit_on(classify::main(&a)),
        Cmd::ClassbenchOracle(a) => exit_on(suite::oracle(&a)),
        Cmd::ClassbenchSuite(a) => exit_on(suite::suite(&a)),
        Cmd::CalicoSets(a) => exit_on(calico::main(&a)),
    }
}

fn exit_on(r: Result<(), String>) {
    if let Err(e) = r {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
