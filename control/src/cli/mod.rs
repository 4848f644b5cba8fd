//! The `tiergate` command line: global options, the subcommand list, exit codes.
//!
//! Each subcommand lives in its own module (`check.rs`, ...) with an `Args` struct and a
//! `run(&Args, &Global) -> ExitCode`; adding one is a variant in [`Command`] and an arm
//! in [`run`].
//!
//! Exit codes (documented in the README):
//! - 0: success (for `check`: the policy set is valid),
//! - 1: the input is invalid (every problem is printed on stderr),
//! - 2: usage error, unreadable input (missing file, permission denied) or a failed
//!   write (full disk, closed stdout: see [`out`]).
//!
//! One vocabulary for every subcommand: `-f/--filename FILE|DIR|-` is the policy set,
//! `-o/--output table|json|yaml` the output format, `-` stdin or stdout wherever a path
//! is taken. Every write goes through [`out`] (the `out!`/`outln!`/`err!`/`errln!`
//! macros and [`out::Output`] for files); when stdout carries data (flow logs,
//! captures, `-o json|yaml`), everything else goes to stderr.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::outln;

pub mod check;
pub mod eval;
pub mod generate;
pub mod out;
pub mod replay;
pub mod run;
pub mod run_metrics;
pub mod run_state;
pub mod state;
pub mod values;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The input (policy set) is invalid.
pub const EXIT_INVALID: u8 = 1;
/// Usage error, unreadable input or a failed write.
pub const EXIT_USAGE: u8 = 2;

/// tiergate: a userspace data plane for Calico network policy with staged-policy preview.
#[derive(Debug, Parser)]
#[command(name = "tiergate", version, max_term_width = 100)]
pub struct Cli {
    /// Options every subcommand accepts.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The policy set a command reads (`check`, `eval`).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyFiles {
    /// A YAML/JSON file, a directory (every *.yaml, *.yml, *.json below it) or `-` for
    /// stdin. Repeat to read several as one set.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<std::path::PathBuf>,
    /// Accept a set of zero resources (by default an error: a wrong path must not pass
    /// as an empty policy set).
    #[arg(long)]
    pub allow_empty: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a policy set (files, directories or stdin) without applying it.
    Check(check::Args),
    /// Evaluate one flow against a policy set: enforced and pending verdicts and traces.
    Eval(eval::Args),
    /// Replay a capture against a policy set: verdicts, flow logs, staged-policy impact.
    ///
    /// Enforced and pending verdicts per packet and connection, flow logs with both
    /// traces, and the impact of the staged policies. With no arguments, replays the
    /// embedded seed capture against the embedded seed examples.
    Replay(replay::Args),
    /// Replay a capture and print only the staged-policy impact report.
    Impact(replay::Args),
    /// Run the data plane between two interfaces (AF_XDP): enforce the enforced
    /// verdict, track the pending one, write flow logs; counters on SIGUSR1 and at exit.
    Run(run::Args),
    /// Write a synthetic capture (random mix, seed scenario, or ClassBench trace).
    Gen(generate::Args),
    /// Check or repair a `run --state-dir` directory.
    State(state::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let code = match &cli.command {
        Command::Check(args) => check::run(args, &cli.global),
        Command::Eval(args) => eval::run(args, &cli.global),
        Command::Replay(args) => replay::run(args, &cli.global),
        Command::Impact(args) => replay::run_impact(args, &cli.global),
        Command::Gen(args) => generate::run(args, &cli.global),
        Command::Run(args) => run::run(args, &cli.global),
        Command::State(args) => state::run(args, &cli.global),
    };
    out::flush_stdout();
    code
}

/// `value` as JSON or YAML text (for `-o json|yaml`).
pub fn structured<T: serde::Serialize>(value: &T, output: Output) -> String {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string()),
        Output::Yaml | Output::Table => serde_saphyr::to_string(value).map_err(|e| e.to_string()),
    };
    // Every document printed is plain data (strings, numbers, maps with string keys):
    // serializing it cannot fail, but say so rather than print nothing if it does.
    text.map_or_else(
        |e| format!("tiergate: cannot serialize the output: {e}"),
        |t| t.trim_end().to_string(),
    )
}

/// Prints `value` on stdout as JSON or YAML (for `-o json|yaml`).
pub fn print_structured<T: serde::Serialize>(value: &T, output: Output) {
    outln!("{}", structured(value, output));
}
