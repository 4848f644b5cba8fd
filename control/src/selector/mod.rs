//! The Calico selector language (CALICO_SEMANTICS §4): parse, evaluate, canonical print,
//! selector IDs, and the rewrites policy scoping needs (§1–2).
//!
//! Promises:
//! - [`Selector::parse`] accepts exactly the selectors Calico's parser accepts (with one bound:
//!   at most [`MAX_NESTING`] levels of parentheses) and never panics; a rejected selector gets a
//!   [`ParseError`] naming the text, the character position and what would have been accepted.
//! - [`Expr`]'s `Display` is Calico's canonical text and [`Selector::id`] Calico's selector ID,
//!   and parsing the canonical text gives back the same [`Expr`].
//! - [`Expr::matches`] is Calico's evaluation, including missing-label semantics: `==`,
//!   `contains`, `starts with`, `ends with` and `in` are false when the label is absent, `!=`
//!   and `not in` are true, `has` tests presence, `all()` and `global()` are true.
//!
//! Where tiergate differs from Calico on purpose:
//! - `!` applied to a negation cancels even across parentheses: `!(!has(a))` parses to
//!   `has(a)` (Calico keeps both negations and prints `!!has(a)`, which it then re-parses as
//!   `has(a)`, so its canonical text is not a fixed point there). Matching is the same; the
//!   canonical text and ID of such selectors differ.
//! - Parentheses may nest at most [`MAX_NESTING`] deep (Calico: unbounded).
//! - The `all()`/`global()` rewrite of namespace selectors works on the expression, so a label
//!   *value* spelled `"all()"` is left alone (Calico rewrites the text and would change it).
//!
//! The AST is shared with `eval` and `lower`, which build scoped selectors with
//! [`Selector::and`], [`Selector::with_key_prefix`] and
//! [`Selector::namespace_selector_scope`].

mod error;
mod lexer;
mod parser;
mod print;

#[cfg(test)]
mod naive;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

pub use error::{ErrorKind, Found, ParseError};
pub use lexer::{MAX_LABEL_LENGTH, is_valid_label_key};
pub use parser::MAX_NESTING;

/// Label set on every namespaced endpoint and network set: its namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// Prefix of namespace labels inherited through the `kns.<ns>` profile.
pub const NAMESPACE_KEY_PREFIX: &str = "pcns.";
/// Prefix of service-account labels inherited through the `ksa.<ns>.<sa>` profile.
pub const SERVICE_ACCOUNT_KEY_PREFIX: &str = "pcsa.";

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

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

/// Label inheritance (CALICO_SEMANTICS §1): a key is looked up in the endpoint's own labels
/// first, then in each profile's labels in profile order; the first hit wins.
#[derive(Clone, Default)]
pub struct LabelChain<'a> {
    layers: Vec<&'a dyn Labels>,
}

impl fmt::Debug for LabelChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelChain")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl<'a> LabelChain<'a> {
    /// A chain that starts with the endpoint's own labels.
    pub fn new(endpoint: &'a dyn Labels) -> Self {
        LabelChain {
            layers: vec![endpoint],
        }
    }

    /// Adds the next profile's labels (lower priority than everything already in the chain).
    #[must_use]
    pub fn with_profile(mut self, profile: &'a dyn Labels) -> Self {
        self.layers.push(profile);
        self
    }

    /// Adds the next profile's labels in place.
    pub fn push_profile(&mut self, profile: &'a dyn Labels) {
        self.layers.push(profile);
    }
}

impl Labels for LabelChain<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.layers.iter().find_map(|layer| layer.get(key))
    }
}

/// A parsed selector expression.
///
/// Parsed expressions never contain `Not(Not(_))` or `And`/`Or` with fewer than two operands;
/// hand-built ones should keep to that (use [`Expr::negate`]) so that their canonical text
/// re-parses to the same expression.
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

    /// `!self`, cancelling a double negation.
    #[must_use]
    pub fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    /// `(self && other)`: a two-operand `And`, the same expression Calico gets by parsing
    /// `(<self>) && (<other>)`.
    #[must_use]
    pub fn and(self, other: Expr) -> Expr {
        Expr::And(vec![self, other])
    }

    /// The label key a leaf tests, if any.
    fn key_mut(&mut self) -> Option<&mut String> {
        match self {
            Expr::Has(k)
            | Expr::Eq(k, _)
            | Expr::Ne(k, _)
            | Expr::Contains(k, _)
            | Expr::StartsWith(k, _)
            | Expr::EndsWith(k, _)
            | Expr::In(k, _)
            | Expr::NotIn(k, _) => Some(k),
            Expr::All | Expr::Global | Expr::Not(_) | Expr::And(_) | Expr::Or(_) => None,
        }
    }

    fn children_mut(&mut self) -> &mut [Expr] {
        match self {
            Expr::Not(e) => std::slice::from_mut(e.as_mut()),
            Expr::And(es) | Expr::Or(es) => es,
            _ => &mut [],
        }
    }

    /// The same expression with `prefix` put in front of every label key (Calico's
    /// `PrefixVisitor`), e.g. `pcns.` to turn a namespace selector into one over the
    /// namespace labels endpoints inherit.
    #[must_use]
    pub fn with_key_prefix(&self, prefix: &str) -> Expr {
        let mut out = self.clone();
        out.prefix_keys_in_place(prefix);
        out
    }

    fn prefix_keys_in_place(&mut self, prefix: &str) {
        if let Some(k) = self.key_mut() {
            k.insert_str(0, prefix);
        }
        for child in self.children_mut() {
            child.prefix_keys_in_place(prefix);
        }
    }

    /// The same expression with every `all()` replaced by `all` and every `global()` by
    /// `global`. A replacement under `!` that is itself a negation cancels (`!global()` with
    /// `global = !has(x)` gives `has(x)`), as it does when Calico re-parses its rewritten text.
    #[must_use]
    pub fn replace_all_and_global(&self, all: &Expr, global: &Expr) -> Expr {
        match self {
            Expr::All => all.clone(),
            Expr::Global => global.clone(),
            Expr::Not(e) => e.replace_all_and_global(all, global).negate(),
            Expr::And(es) => Expr::And(
                es.iter()
                    .map(|e| e.replace_all_and_global(all, global))
                    .collect(),
            ),
            Expr::Or(es) => Expr::Or(
                es.iter()
                    .map(|e| e.replace_all_and_global(all, global))
                    .collect(),
            ),
            leaf => leaf.clone(),
        }
    }

    /// Whether `global()` occurs anywhere (it is legal only in a rule's namespaceSelector).
    pub fn contains_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(e) => e.contains_global(),
            Expr::And(es) | Expr::Or(es) => es.iter().any(Expr::contains_global),
            _ => false,
        }
    }

    /// Every label key the expression looks at.
    pub fn label_keys(&self) -> BTreeSet<&str> {
        fn walk<'e>(e: &'e Expr, out: &mut BTreeSet<&'e str>) {
            match e {
                Expr::Has(k)
                | Expr::Eq(k, _)
                | Expr::Ne(k, _)
                | Expr::Contains(k, _)
                | Expr::StartsWith(k, _)
                | Expr::EndsWith(k, _)
                | Expr::In(k, _)
                | Expr::NotIn(k, _) => {
                    out.insert(k);
                }
                Expr::Not(inner) => walk(inner, out),
                Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| walk(e, out)),
                Expr::All | Expr::Global => {}
            }
        }
        let mut out = BTreeSet::new();
        walk(self, &mut out);
        out
    }
}

/// A selector: its expression plus the text it came from.
///
/// Equality and hashing use the expression only, so `a=='x'` equals `a == "x"`.
#[derive(Clone, Debug)]
pub struct Selector {
    expr: Expr,
    source: String,
    canonical: String,
}

impl Selector {
    /// Parses selector text (CALICO_SEMANTICS §4). Empty or blank text is `all()`.
    pub fn parse(text: &str) -> Result<Selector, ParseError> {
        let expr = parser::parse(text)?;
        let canonical = expr.to_string();
        Ok(Selector {
            expr,
            source: text.to_owned(),
            canonical,
        })
    }

    /// A selector for a built expression; its source text is the canonical text.
    pub fn from_expr(expr: Expr) -> Selector {
        let canonical = expr.to_string();
        Selector {
            expr,
            source: canonical.clone(),
            canonical,
        }
    }

    /// `all()`.
    pub fn all() -> Selector {
        Selector::from_expr(Expr::All)
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The parsed expression, by value.
    pub fn into_expr(self) -> Expr {
        self.expr
    }

    /// The text this selector was parsed from (the canonical text for built selectors).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the labels match.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        self.expr.matches(labels)
    }

    /// Calico's canonical text, e.g. `(a == "x" && !has(b))`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Calico's selector ID: `s:` + base64url(SHA-224(`s:` + canonical)), unpadded.
    pub fn id(&self) -> String {
        print::selector_id(&self.canonical)
    }

    /// Every label key prefixed with `prefix` (see [`Expr::with_key_prefix`]).
    #[must_use]
    pub fn with_key_prefix(&self, prefix: &str) -> Selector {
        Selector::from_expr(self.expr.with_key_prefix(prefix))
    }

    /// `all()` and `global()` replaced (see [`Expr::replace_all_and_global`]).
    #[must_use]
    pub fn replace_all_and_global(&self, all: &Expr, global: &Expr) -> Selector {
        Selector::from_expr(self.expr.replace_all_and_global(all, global))
    }

    /// `(self) && (other)`.
    #[must_use]
    pub fn and(&self, other: &Selector) -> Selector {
        Selector::from_expr(self.expr.clone().and(other.expr.clone()))
    }

    /// An EntityRule `namespaceSelector` turned into a selector over endpoint labels
    /// (CALICO_SEMANTICS §2): keys get the `pcns.` prefix, `all()` becomes
    /// `has(projectcalico.org/namespace)` (any namespaced endpoint) and `global()` becomes
    /// `!has(projectcalico.org/namespace)` (host endpoints and global network sets).
    #[must_use]
    pub fn namespace_selector_scope(&self) -> Selector {
        let namespaced = Expr::Has(NAMESPACE_LABEL.to_owned());
        let global = namespaced.clone().negate();
        Selector::from_expr(
            self.expr
                .with_key_prefix(NAMESPACE_KEY_PREFIX)
                .replace_all_and_global(&namespaced, &global),
        )
    }

    /// A service-account selector turned into a selector over endpoint labels: keys get the
    /// `pcsa.` prefix (CALICO_SEMANTICS §1–2).
    #[must_use]
    pub fn service_account_selector_scope(&self) -> Selector {
        self.with_key_prefix(SERVICE_ACCOUNT_KEY_PREFIX)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Selector {}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
    }
}

impl fmt::Display for Selector {
    /// The canonical text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}
