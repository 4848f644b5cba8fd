//! `tiergate state check DIR` and `tiergate state repair DIR`: inspect and repair a
//! `--state-dir` (see [`crate::state`]).
//!
//! `check` reads every generation without taking the directory's lock (a daemon may be
//! running on it) and says which one the next start restores. Exit codes: 0 the next
//! start can use the directory, 1 its newest generation is unusable, 2 the directory
//! cannot be read.
//!
//! `repair` takes the lock (so it refuses while a daemon runs on the directory: exit 2),
//! removes the remains of interrupted commits and moves every unusable generation newer
//! than the newest valid one to `DIR/corrupt/`. When no generation is valid it changes
//! nothing (exit 1) unless `--allow-empty`, and then the next start seeds generation 1
//! from `-f`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_INVALID, EXIT_OK, Global, Output, print_structured};
use crate::state;
use crate::{errln, outln};

/// Arguments of `tiergate state`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// The `state` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StateCommand {
    /// Check every generation in a state directory and say which one the next start
    /// restores.
    Check {
        /// The state directory (`tiergate run --state-dir`).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Move unusable newest generations aside (to DIR/corrupt/) so the newest valid one
    /// is restored; remove interrupted commits. Refuses while a daemon holds DIR.
    Repair {
        /// The state directory (`tiergate run --state-dir`).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// When no generation is valid, move them all aside (the next start then seeds
        /// generation 1 from -f) instead of refusing.
        #[arg(long)]
        allow_empty: bool,
    },
}

/// Runs `tiergate state`.
pub fn run(args: &Args, global: &Global) -> ExitCode {
    match &args.command {
        StateCommand::Check { dir } => match state::check(dir) {
            Ok(report) => {
                match global.output {
                    Output::Table => outln!("{}", report.to_string().trim_end()),
                    o => print_structured(&report, o),
                }
                ExitCode::from(if report.ok() { EXIT_OK } else { EXIT_INVALID })
            }
            Err(e) => {
                errln!("tiergate state check: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        StateCommand::Repair { dir, allow_empty } => match state::repair(dir, *allow_empty) {
            Ok(report) => {
                match global.output {
                    Output::Table => outln!("{}", report.to_string().trim_end()),
                    o => print_structured(&report, o),
                }
                ExitCode::from(EXIT_OK)
            }
            Err(e) => {
                errln!("tiergate state repair: {e}");
                ExitCode::from(e.exit_code())
            }
        },
    }
}
