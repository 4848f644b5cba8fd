//! The `tiergate` command line: global options, the subcommand list, exit codes.
//!
//! Each subcommand lives in its own module (`check.rs`, ...) with an `Args` struct and a
//! `run(&Args, &Global) -> ExitCode`; adding one is a variant in [`Command`] and an arm
//! in [`run`].
//!
//! Exit codes (documented in the README):
//! - 0: success (for `check`: the policy set is valid),
//! - 1: the input is invalid (every problem is printed on stderr),
//! - 2: usage error or unreadable input (missing file, permission denied).

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod check;
pub mod eval;
pub mod generate;
pub mod replay;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The input (policy set) is invalid.
pub const EXIT_INVALID: u8 = 1;
/// Usage error or unreadable input.
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
    /// Write a synthetic capture (random mix, seed scenario, or ClassBench trace).
    Gen(generate::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Check(args) => check::run(args, &cli.global),
        Command::Eval(args) => eval::run(args, &cli.global),
        Command::Replay(args) => replay::run(args, &cli.global),
        Command::Impact(args) => replay::run_impact(args, &cli.global),
        Command::Gen(args) => generate::run(args, &cli.global),
    }
}

/// Prints `value` on stdout as JSON or YAML (for `-o json|yaml`).
pub fn print_structured<T: serde::Serialize>(value: &T, output: Output) {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string()),
        Output::Yaml | Output::Table => serde_saphyr::to_string(value).map_err(|e| e.to_string()),
    };
    match text {
        Ok(t) => println!("{}", t.trim_end()),
        Err(e) => eprintln!("tiergate: cannot print output: {e}"),
    }
}
