//! The `tiergate` command. Argument parsing and subcommands live in `control::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    control::sys::restore_default_sigpipe();
    control::cli::run(control::cli::Cli::parse())
}
