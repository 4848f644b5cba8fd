//! Selector parse errors: where (position in the text) and what would have been accepted.

use std::fmt;

/// A selector that could not be parsed.
///
/// Displays as `selector "<text>": at position <n>: <what was expected>`, where `<n>` is the
/// 0-based character index of the problem (the text length when the selector ended too early).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("selector {selector:?}: at position {position}: {kind}")]
pub struct ParseError {
    /// The selector text as given.
    pub selector: String,
    /// 0-based character index of the problem.
    pub position: usize,
    /// Byte offset of the problem in `selector`.
    pub offset: usize,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl ParseError {
    pub(super) fn new(selector: &str, offset: usize, kind: ErrorKind) -> Self {
        let position = selector
            .get(..offset)
            .map_or(offset, |prefix| prefix.chars().count());
        ParseError {
            selector: selector.to_owned(),
            position,
            offset,
            kind,
        }
    }
}

/// What was found where something else was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The selector ended.
    End,
    /// A label key.
    Label(String),
    /// A quoted string (its contents).
    Str(String),
    /// Any other token or text, as written.
    Text(String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::End => f.write_str("end of selector"),
            Found::Label(k) => write!(f, "label {k:?}"),
            Found::Str(s) => write!(f, "quoted string {s:?}"),
            Found::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// The kinds of selector error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A string literal has no closing quote (selector strings have no escapes).
    #[error(
        "unterminated string: expected a closing {quote} (strings have no escapes; a string may contain the other quote)"
    )]
    UnterminatedString {
        /// The opening quote character.
        quote: char,
    },
    /// `=`, `&` or `|` on its own.
    #[error("found a single {found:?}; expected {expected:?}")]
    IncompleteOperator {
        /// The lone character.
        found: char,
        /// The operator it probably belongs to.
        expected: &'static str,
    },
    /// A character that starts no token (not a label character, quote, operator or bracket).
    #[error(
        "unexpected character {found:?}: label keys use only A-Z a-z 0-9 _ . / - and only space and tab separate tokens"
    )]
    UnexpectedChar {
        /// The character.
        found: char,
    },
    /// A label key longer than 512 characters.
    #[error("label key is {len} characters long; at most 512 are allowed")]
    LabelTooLong {
        /// Its length.
        len: usize,
    },
    /// A label not followed by an operator (a bare label, or an unknown operator word).
    #[error(
        "expected an operator after a label (==, !=, contains, starts with, ends with, in, not in), found {found}"
    )]
    ExpectedOperator {
        /// What followed the label.
        found: Found,
    },
    /// `has(` not followed by a label key.
    #[error("expected a label key inside \"has(...)\", found {found}")]
    ExpectedHasKey {
        /// What followed `has(`.
        found: Found,
    },
    /// `has(k`, `all(` or `global(` without the closing parenthesis.
    #[error("expected \")\" to close \"{function}(\"")]
    UnclosedCall {
        /// `has`, `all` or `global`.
        function: &'static str,
    },
    /// A comparison operator not followed by a quoted string (e.g. a label compared with a label).
    #[error(
        "expected a quoted string after {op:?}, found {found}{}",
        value_hint(found)
    )]
    ExpectedValue {
        /// The operator.
        op: &'static str,
        /// What followed it.
        found: Found,
    },
    /// `in` / `not in` not followed by `{`.
    #[error("expected a set literal such as {{\"a\", \"b\"}} after {op:?}, found {found}")]
    ExpectedSet {
        /// `in` or `not in`.
        op: &'static str,
        /// What followed it.
        found: Found,
    },
    /// Inside a set literal, after `{` or `,`: neither a string nor `}`.
    #[error("expected a quoted string or \"}}\" in the set literal, found {found}")]
    ExpectedSetItem {
        /// What was there.
        found: Found,
    },
    /// Inside a set literal, after an item: neither `,` nor `}`.
    #[error("expected \",\" or \"}}\" after a set item, found {found}")]
    ExpectedSetSeparator {
        /// What was there.
        found: Found,
    },
    /// A quoted string where a term must start (the literal must be on the right).
    #[error("a quoted string cannot start a term; put the label first (e.g. key == {value:?})")]
    LiteralOnLeft {
        /// The string's contents.
        value: String,
    },
    /// Something that cannot start a term.
    #[error(
        "expected a term (a label comparison, has(key), all(), global(), \"!\" or \"(\"), found {found}"
    )]
    ExpectedTerm {
        /// What was there.
        found: Found,
    },
    /// `(` without its `)`.
    #[error("expected \")\" to close the \"(\" at position {open}, found {found}")]
    UnclosedParen {
        /// Character position of the `(`.
        open: usize,
        /// What was there instead.
        found: Found,
    },
    /// Text after a complete selector.
    #[error("expected \"&&\", \"||\" or the end of the selector, found {found}")]
    TrailingInput {
        /// What was there.
        found: Found,
    },
    /// Parentheses nested too deeply.
    #[error("parentheses nested more than {limit} deep")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
}

fn value_hint(found: &Found) -> &'static str {
    match found {
        Found::Label(_) => " (a label can only be compared with a quoted string)",
        _ => "",
    }
}
