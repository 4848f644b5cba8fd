//! The Calico selector language (CALICO_SEMANTICS §4): parse, evaluate, canonical print.
//!
//! The AST below is the contract used by `eval` and `lower` (which rewrite selectors,
//! e.g. prefixing keys with `pcns.` for namespace selectors).

use std::collections::{BTreeMap, BTreeSet};

/// A label source: the endpoint's own labels, then inherited profile labels.
pub trait Labels {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

/// A parsed selector expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    /// `all()`: true.
    All,
    /// `global()`: true (its meaning comes from the namespace rewrite in `eval`).
    Global,
    /// `has(k)`.
    Has(String),
    /// `k == "v"`; false when `k` is absent.
    Eq(String, String),
    /// `k != "v"`; true when `k` is absent.
    Ne(String, String),
    /// `k contains "v"`.
    Contains(String, String),
    /// `k starts with "v"`.
    StartsWith(String, String),
    /// `k ends with "v"`.
    EndsWith(String, String),
    /// `k in {"a", "b"}`; false when `k` is absent.
    In(String, BTreeSet<String>),
    /// `k not in {...}`; true when `k` is absent.
    NotIn(String, BTreeSet<String>),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b && ...` (two or more operands).
    And(Vec<Expr>),
    /// `a || b || ...` (two or more operands).
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates the expression against a label source.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(k) => labels.get(k).is_some(),
            Expr::Eq(k, v) => labels.get(k) == Some(v.as_str()),
            Expr::Ne(k, v) => labels.get(k) != Some(v.as_str()),
            Expr::Contains(k, v) => labels.get(k).is_some_and(|x| x.contains(v.as_str())),
            Expr::StartsWith(k, v) => labels.get(k).is_some_and(|x| x.starts_with(v.as_str())),
            Expr::EndsWith(k, v) => labels.get(k).is_some_and(|x| x.ends_with(v.as_str())),
            Expr::In(k, set) => labels.get(k).is_some_and(|x| set.contains(x)),
            Expr::NotIn(k, set) => !labels.get(k).is_some_and(|x| set.contains(x)),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }
}
