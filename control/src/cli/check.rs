//! `tiergate check -f FILE|DIR|- [-f ...]`: load, default and validate a policy set as
//! one apply into an empty store (so a policy naming a tier that the set does not define
//! is an error), and report. Each resource is dropped once defaulted and validated; the
//! store's own checks (a key applied twice, a missing tier) run on what is kept of it
//! (`policy::check_paths`, tested against reading and storing the whole set), so a set
//! of 100 000 policies is checked without being held in memory.
//!
//! Valid: a one-line summary on stdout, exit 0 (notes about defaulting, such as
//! resources placed in namespace `default`, on stderr). Invalid: every error on stderr
//! as `FILE:DOC: FIELD: REASON`, then a count, exit 1; an empty set is invalid unless
//! `--allow-empty`. Unreadable input: exit 2.
//! With `-o json|yaml` a summary document also goes to stdout:
//! `{"valid": bool, "resources": N, "kinds": {"<Kind>": n}, "errors": [{"source",
//! "document", "field", "reason"}]}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Global, Output, PolicyFiles, print_structured};
use crate::model::Kind;
use crate::policy;
use crate::{errln, outln};

/// Arguments of `tiergate check`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The policy set.
    #[command(flatten)]
    pub policy: PolicyFiles,
}

/// The outcome of a check, as printed with `-o json|yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Whether the set is valid.
    pub valid: bool,
    /// Number of resources (0 when invalid).
    pub resources: usize,
    /// Resources per kind.
    pub kinds: BTreeMap<String, usize>,
    /// Every problem, in input order.
    pub errors: Vec<ReportError>,
    /// Whether some input could not be read at all.
    #[serde(skip)]
    pub io_error: bool,
    /// Notes for the user (valid input that was defaulted), printed on stderr.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// One problem, split into its parts: source, document, field, reason and the whole
/// line.
pub use crate::policy::Problem as ReportError;

/// Checks the set named by `files` (an empty set is invalid).
pub fn check(files: &[PathBuf]) -> Report {
    check_set(files, false)
}

/// Checks the set named by `files`; an empty set is valid only if `allow_empty`.
pub fn check_set(files: &[PathBuf], allow_empty: bool) -> Report {
    match policy::check_paths(files, allow_empty) {
        Ok(checked) => Report {
            valid: true,
            resources: checked.counts.values().sum(),
            kinds: checked
                .counts
                .iter()
                .map(|(k, n)| (kind_name(*k), *n))
                .collect(),
            errors: Vec::new(),
            io_error: false,
            notes: checked.notes,
        },
        Err(e) => Report {
            valid: false,
            resources: 0,
            kinds: BTreeMap::new(),
            io_error: e.is_unreadable(),
            notes: e.notes().to_vec(),
            errors: e.problems(),
        },
    }
}

fn kind_name(k: Kind) -> String {
    k.to_string()
}

/// Runs `tiergate check`.
pub fn run(args: &Args, global: &Global) -> ExitCode {
    let report = check_set(&args.policy.files, args.policy.allow_empty);
    for n in &report.notes {
        errln!("{n}");
    }
    for e in &report.errors {
        errln!("{}", e.message);
    }
    match global.output {
        Output::Table => {
            if report.valid {
                outln!("{}", summary(&report));
            } else {
                let n = report.errors.len();
                errln!("invalid: {n} error{}", if n == 1 { "" } else { "s" });
            }
        }
        out => print_structured(&report, out),
    }
    ExitCode::from(if report.valid {
        EXIT_OK
    } else if report.io_error {
        EXIT_USAGE
    } else {
        EXIT_INVALID
    })
}

/// `valid: 5 resources (2 GlobalNetworkPolicy, 3 Tier)`.
pub fn summary(report: &Report) -> String {
    let n = report.resources;
    let kinds: Vec<String> = report
        .kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let mut s = format!("valid: {n} resource{}", if n == 1 { "" } else { "s" });
    if !kinds.is_empty() {
        s.push_str(&format!(" ({})", kinds.join(", ")));
    }
    s
}
