//! The `tiergate` command. Argument parsing and subcommands live in `control::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    control::cli::run(control::cli::Cli::parse())
}
