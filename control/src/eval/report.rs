//! How `tiergate eval` prints an [`Evaluation`]: a stable JSON document for scripts and
//! a table for people.
//!
//! The JSON shape is a published interface (README):
//! ```json
//! {"verdicts": [{"reporter": "src"|"dst", "endpoint": "<ns>/<name>"|"<name>"|null,
//!                "enforced": {"action": "allow"|"deny", "policies": ["<hit>", ...]},
//!                "pending":  {"action": "allow"|"deny", "policies": [...]}}],
//!  "final": {"enforced": "allow"|"deny", "pending": "allow"|"deny"}}
//! ```
//! A reporter appears only when its end is an endpoint, so `endpoint` is a workload
//! endpoint's `<namespace>/<name>` or a host endpoint's `<name>`; `null` is reserved
//! and not produced today. `final` combines the reporters (every one must allow; with
//! none, both are `allow`).

use std::fmt::Write as _;

use serde::Serialize;

use super::{Evaluation, Outcome, ReporterOutcome};
use crate::flowlog::{Reporter, VerdictName};

/// The JSON document of one evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvalReport {
    /// One entry per reporter: source first, then destination.
    pub verdicts: Vec<ReporterReport>,
    /// Both reporters combined.
    #[serde(rename = "final")]
    pub combined: FinalReport,
}

/// One reporter in the JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReporterReport {
    /// `src` or `dst`.
    pub reporter: Reporter,
    /// The endpoint at that end.
    pub endpoint: Option<String>,
    /// What is enforced now.
    pub enforced: OutcomeReport,
    /// What would happen with the staged policies enforced.
    pub pending: OutcomeReport,
}

/// One view in the JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutcomeReport {
    /// `allow` or `deny`.
    pub action: VerdictName,
    /// Calico hit strings in trace order.
    pub policies: Vec<String>,
}

/// The combined verdicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FinalReport {
    /// Enforced.
    pub enforced: VerdictName,
    /// Pending.
    pub pending: VerdictName,
}

impl From<&Outcome> for OutcomeReport {
    fn from(o: &Outcome) -> Self {
        OutcomeReport {
            action: o.verdict.into(),
            policies: o.hit_strings(),
        }
    }
}

impl From<&ReporterOutcome> for ReporterReport {
    fn from(r: &ReporterOutcome) -> Self {
        ReporterReport {
            reporter: r.reporter,
            endpoint: Some(r.endpoint_name.clone()),
            enforced: (&r.enforced).into(),
            pending: (&r.pending).into(),
        }
    }
}

impl From<&Evaluation> for EvalReport {
    fn from(e: &Evaluation) -> Self {
        EvalReport {
            verdicts: e.reporters.iter().map(Into::into).collect(),
            combined: FinalReport {
                enforced: e.enforced().into(),
                pending: e.pending().into(),
            },
        }
    }
}

/// The JSON document as one line of text.
pub fn to_json(e: &Evaluation) -> String {
    // Serialising plain strings and enums cannot fail.
    serde_json::to_string(&EvalReport::from(e)).unwrap_or_default()
}

fn verdict_word(v: super::Verdict) -> &'static str {
    match v {
        super::Verdict::Allow => "allow",
        super::Verdict::Deny => "deny",
    }
}

/// The human-friendly table.
pub fn to_table(e: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "flow  {}", e.flow);
    if e.reporters.is_empty() {
        let _ = writeln!(
            out,
            "      neither end is a known endpoint: no policy applies"
        );
    }
    for r in &e.reporters {
        let (end, dir) = match r.reporter {
            Reporter::Src => ("src", "egress"),
            Reporter::Dst => ("dst", "ingress"),
        };
        let kind = match r.endpoint_kind {
            super::EndpointKind::Workload => "workload endpoint",
            super::EndpointKind::Host => "host endpoint",
        };
        let _ = writeln!(out, "\n{end}   {} ({kind}, {dir})", r.endpoint_name);
        for (view, o) in [("enforced", &r.enforced), ("pending", &r.pending)] {
            let _ = writeln!(out, "      {view:<9}{}", verdict_word(o.verdict));
            for h in o.hit_strings() {
                let _ = writeln!(out, "        {h}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nfinal enforced {}, pending {}",
        verdict_word(e.enforced()),
        verdict_word(e.pending())
    );
    out
}
