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
use crate::cluster::{Reporter, VerdictName};

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

/// The human-friendly table: one row per reporter and view, hits on continuation
/// lines, then the combined verdicts.
///
/// ```text
/// flow 10.0.1.10:49152 -> 10.0.1.20:6379 TCP
///
/// REPORTER  ENDPOINT          DIRECTION  VIEW      ACTION  POLICIES
/// src       default/frontend  egress     enforced  allow   0|__PROFILE__|pro:kns.default|allow|0
///                                        pending   allow   0|__PROFILE__|pro:kns.default|allow|0
/// dst       default/database  ingress    enforced  deny    0|default|np:default/database-allow-backend|deny|-1
///                                        pending   allow   0|default|sgnp:default.allow-tcp-6379|allow|0
///
/// final: enforced deny, pending allow (the staged policies change this flow)
/// ```
pub fn to_table(e: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "flow {}\n", e.flow);
    if e.reporters.is_empty() {
        let _ = writeln!(out, "neither end is a known endpoint: no policy applies\n");
    } else {
        let ep_width = e
            .reporters
            .iter()
            .map(|r| r.endpoint_name.len())
            .max()
            .unwrap_or(0)
            .max("ENDPOINT".len());
        let _ = writeln!(
            out,
            "REPORTER  {:<ep_width$}  DIRECTION  VIEW      ACTION  POLICIES",
            "ENDPOINT"
        );
        let indent = " ".repeat(10 + ep_width + 2 + 11 + 10 + 8);
        for r in &e.reporters {
            let (end, dir) = match r.reporter {
                Reporter::Src => ("src", "egress"),
                Reporter::Dst => ("dst", "ingress"),
            };
            for (i, (view, o)) in [("enforced", &r.enforced), ("pending", &r.pending)]
                .into_iter()
                .enumerate()
            {
                let (end, name, dir) = if i == 0 {
                    (end, r.endpoint_name.as_str(), dir)
                } else {
                    ("", "", "")
                };
                let hits = o.hit_strings();
                let first = hits.first().map_or("-", String::as_str);
                let _ = writeln!(
                    out,
                    "{end:<8}  {name:<ep_width$}  {dir:<9}  {view:<8}  {:<6}  {first}",
                    verdict_word(o.verdict)
                );
                for h in hits.iter().skip(1) {
                    let _ = writeln!(out, "{indent}{h}");
                }
            }
        }
        out.push('\n');
    }
    let (enforced, pending) = (e.enforced(), e.pending());
    let _ = writeln!(
        out,
        "final: enforced {}, pending {}{}",
        verdict_word(enforced),
        verdict_word(pending),
        if enforced == pending {
            ""
        } else {
            " (the staged policies change this flow)"
        }
    );
    out
}
