//! Selector tokenizer.
//!
//! Tokens are produced on demand so that the parser reports the leftmost problem in the text.
//! The token sequence (and so the accepted language) is the same as Calico's eager tokenizer:
//! operator keywords (`contains`, `starts with`, `ends with`, `in`, `not in`) are recognised only
//! directly after a label, where nothing else may appear; everywhere else a word is a label or one
//! of `has(`, `all(`, `global(` (written without a space before the parenthesis).

use super::error::{ErrorKind, Found};

/// Longest accepted label key, in bytes (Calico `MaxLabelLength`). Key characters are ASCII,
/// so this is also the length in characters.
pub const MAX_LABEL_LENGTH: usize = 512;

/// One token. String payloads borrow from the selector text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    Label(&'a str),
    /// A quoted string's contents (without the quotes).
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
    In,
    NotIn,
    Not,
    And,
    Or,
    LParen,
    RParen,
    Has(&'a str),
    All,
    Global,
    End,
}

impl Tok<'_> {
    /// The operator's canonical spelling, for error messages.
    pub(super) fn operator_name(self) -> &'static str {
        match self {
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Contains => "contains",
            Tok::StartsWith => "starts with",
            Tok::EndsWith => "ends with",
            Tok::In => "in",
            Tok::NotIn => "not in",
            _ => "",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Token<'a> {
    pub tok: Tok<'a>,
    /// Byte offset of the token's first character (the text length for `End`).
    pub start: usize,
    /// Byte offset just past the token.
    pub end: usize,
}

/// A lexical error: what went wrong and the byte offset it is reported at.
pub(super) type LexError = (ErrorKind, usize);

pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// Whether the previous token was a label, i.e. an operator keyword must come next.
    after_label: bool,
}

pub(super) fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Whether `key` is a valid label key: 1–512 characters from `[A-Za-z0-9_./-]`.
pub fn is_valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_LABEL_LENGTH && key.bytes().all(is_label_char)
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            after_label: false,
        }
    }

    pub(super) fn src(&self) -> &'a str {
        self.src
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_whitespace(&mut self) {
        // Only space and tab: Calico rejects newlines and other whitespace.
        while let Some(b' ' | b'\t') = self.src.as_bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// Describes the text at `at` for an error message: a word of label characters, or the
    /// single character there, or the end.
    fn found_at(&self, at: usize) -> Found {
        let rest = &self.src[at..];
        let word_len = rest.bytes().take_while(|&b| is_label_char(b)).count();
        if word_len > 0 {
            Found::Text(rest[..word_len].to_owned())
        } else {
            match rest.chars().next() {
                Some(c) => Found::Text(c.to_string()),
                None => Found::End,
            }
        }
    }

    /// Consumes a label key at the current position.
    fn label(&mut self) -> Result<&'a str, LexError> {
        let start = self.pos;
        let len = self
            .rest()
            .bytes()
            .take_while(|&b| is_label_char(b))
            .count();
        if len > MAX_LABEL_LENGTH {
            return Err((ErrorKind::LabelTooLong { len }, start));
        }
        self.pos += len;
        Ok(&self.src[start..self.pos])
    }

    /// If `word` is next and is not immediately followed by a label character, consumes it.
    fn eat_word(&mut self, word: &str) -> bool {
        let rest = self.rest();
        if rest.starts_with(word)
            && !rest
                .as_bytes()
                .get(word.len())
                .copied()
                .is_some_and(is_label_char)
        {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Consumes `first`, optional whitespace, then `second` as a word (`starts with`,
    /// `startswith`, `not in`, `notin`, ...). Only the second word needs a word boundary.
    fn eat_two_words(&mut self, first: &str, second: &str) -> bool {
        let saved = self.pos;
        if self.rest().starts_with(first) {
            self.pos += first.len();
            self.skip_whitespace();
            if self.eat_word(second) {
                return true;
            }
        }
        self.pos = saved;
        false
    }

    /// Consumes the `)` closing `function(`, allowing spaces before it.
    fn close_call(&mut self, function: &'static str) -> Result<(), LexError> {
        self.skip_whitespace();
        if self.rest().starts_with(')') {
            self.pos += 1;
            Ok(())
        } else {
            Err((ErrorKind::UnclosedCall { function }, self.pos))
        }
    }

    pub(super) fn next_token(&mut self) -> Result<Token<'a>, LexError> {
        self.skip_whitespace();
        let start = self.pos;
        let after_label = std::mem::replace(&mut self.after_label, false);
        let Some(&first) = self.src.as_bytes().get(start) else {
            return Ok(Token {
                tok: Tok::End,
                start,
                end: start,
            });
        };
        let second = self.src.as_bytes().get(start + 1).copied();
        let (tok, len) = match first {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b',' => (Tok::Comma, 1),
            b'"' | b'\'' => {
                let body = &self.src[start + 1..];
                match body.find(char::from(first)) {
                    Some(close) => (Tok::Str(&body[..close]), close + 2),
                    None => {
                        return Err((
                            ErrorKind::UnterminatedString {
                                quote: char::from(first),
                            },
                            start,
                        ));
                    }
                }
            }
            b'=' if second == Some(b'=') => (Tok::Eq, 2),
            b'!' if second == Some(b'=') => (Tok::Ne, 2),
            b'!' => (Tok::Not, 1),
            b'&' if second == Some(b'&') => (Tok::And, 2),
            b'|' if second == Some(b'|') => (Tok::Or, 2),
            b'=' | b'&' | b'|' => {
                let expected = match first {
                    b'=' => "==",
                    b'&' => "&&",
                    _ => "||",
                };
                return Err((
                    ErrorKind::IncompleteOperator {
                        found: char::from(first),
                        expected,
                    },
                    start,
                ));
            }
            _ if after_label => return self.operator_keyword(start),
            _ => return self.word(start),
        };
        self.pos = start + len;
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }

    /// After a label: one of the keyword operators must follow.
    fn operator_keyword(&mut self, start: usize) -> Result<Token<'a>, LexError> {
        let tok = if self.eat_word("contains") {
            Tok::Contains
        } else if self.eat_two_words("starts", "with") {
            Tok::StartsWith
        } else if self.eat_two_words("ends", "with") {
            Tok::EndsWith
        } else if self.eat_two_words("not", "in") {
            Tok::NotIn
        } else if self.eat_word("in") {
            Tok::In
        } else {
            return Err((
                ErrorKind::ExpectedOperator {
                    found: self.found_at(start),
                },
                start,
            ));
        };
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }

    /// Anywhere other than after a label: `has(k)`, `all()`, `global()` or a label.
    fn word(&mut self, start: usize) -> Result<Token<'a>, LexError> {
        let rest = self.rest();
        let tok = if rest.starts_with("has(") {
            self.pos += 4;
            self.skip_whitespace();
            let key_at = self.pos;
            let key = self.label()?;
            if key.is_empty() {
                return Err((
                    ErrorKind::ExpectedHasKey {
                        found: self.found_at(key_at),
                    },
                    key_at,
                ));
            }
            self.close_call("has")?;
            Tok::Has(key)
        } else if rest.starts_with("all(") {
            self.pos += 4;
            self.close_call("all")?;
            Tok::All
        } else if rest.starts_with("global(") {
            self.pos += 7;
            self.close_call("global")?;
            Tok::Global
        } else {
            let key = self.label()?;
            if key.is_empty() {
                let found = self.rest().chars().next().unwrap_or(' ');
                return Err((ErrorKind::UnexpectedChar { found }, start));
            }
            self.after_label = true;
            Tok::Label(key)
        };
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }
}
