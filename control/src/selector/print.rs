//! Canonical selector text and selector IDs, identical to Calico's `Selector.String()` and
//! `UniqueID()`.
//!
//! Canonical form: every `&&`/`||` group in parentheses (`(a == "x" && has(b))`), `!` glued
//! to its operand (`!has(a)`, `!(a == "x" || all())`), one space around operators, values in
//! double quotes unless they contain `"` (then single quotes), set items sorted byte-wise and
//! deduplicated, `{"a", "b"}`.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use sha2::{Digest as _, Sha224};

use super::Expr;

fn quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    // A value holding both quote characters cannot be written in the language; such values
    // only arise from hand-built expressions and print (like Calico) single-quoted.
    let quote = if value.contains('"') { '\'' } else { '"' };
    f.write_char(quote)?;
    f.write_str(value)?;
    f.write_char(quote)
}

fn comparison(f: &mut fmt::Formatter<'_>, key: &str, op: &str, value: &str) -> fmt::Result {
    f.write_str(key)?;
    f.write_str(op)?;
    quoted(f, value)
}

fn set(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    op: &str,
    items: &std::collections::BTreeSet<String>,
) -> fmt::Result {
    write!(f, "{key} {op} {{")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        quoted(f, item)?;
    }
    f.write_char('}')
}

fn group(f: &mut fmt::Formatter<'_>, operands: &[Expr], op: &str) -> fmt::Result {
    f.write_char('(')?;
    for (i, e) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(op)?;
        }
        fmt::Display::fmt(e, f)?;
    }
    f.write_char(')')
}

impl fmt::Display for Expr {
    /// Calico's canonical text of this expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => comparison(f, k, " == ", v),
            Expr::Ne(k, v) => comparison(f, k, " != ", v),
            Expr::Contains(k, v) => comparison(f, k, " contains ", v),
            Expr::StartsWith(k, v) => comparison(f, k, " starts with ", v),
            Expr::EndsWith(k, v) => comparison(f, k, " ends with ", v),
            Expr::In(k, items) => set(f, k, "in", items),
            Expr::NotIn(k, items) => set(f, k, "not in", items),
            Expr::Not(e) => {
                f.write_char('!')?;
                fmt::Display::fmt(e, f)
            }
            Expr::And(es) => group(f, es, " && "),
            Expr::Or(es) => group(f, es, " || "),
        }
    }
}

/// Selector ID of a canonical selector text: `s:` + unpadded base64url of SHA-224 over
/// `s:` + canonical (Calico `hash.MakeUniqueID("s", canonical)`).
pub(super) fn selector_id(canonical: &str) -> String {
    let mut hasher = Sha224::new();
    hasher.update(b"s:");
    hasher.update(canonical.as_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(2 + 38);
    id.push_str("s:");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(digest, &mut id);
    id
}
