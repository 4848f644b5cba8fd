//! Recursive-descent selector parser (CALICO_SEMANTICS §4).
//!
//! ```text
//! selector := ε | or
//! or       := and ('||' and)*
//! and      := unary ('&&' unary)*
//! unary    := '!'* term
//! term     := has(k) | all() | global() | '(' or ')'
//!           | k ('==' | '!=' | 'contains' | 'starts with' | 'ends with') string
//!           | k ('in' | 'not in') '{' (string (',' string)* ','?)? '}'
//! ```
//!
//! The AST has the shape Calico builds, so printing it gives Calico's canonical text:
//! parentheses leave no node, `a && b && c` is one `And` of three operands while
//! `(a && b) && c` nests, and an even run of `!` cancels out.

use std::collections::BTreeSet;

use super::Expr;
use super::error::{ErrorKind, Found, ParseError};
use super::lexer::{LexError, Lexer, Tok, Token};

/// Deepest accepted nesting of parentheses. Calico has no limit; ours keeps recursion (parse,
/// print, evaluate, drop) far from the stack limit on hostile input.
pub const MAX_NESTING: usize = 256;

/// Parses selector text into its expression. Empty or blank (spaces/tabs) text is `all()`.
pub(super) fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        lexer: Lexer::new(src),
        peeked: None,
        depth: 0,
    };
    parser
        .root()
        .map_err(|(kind, offset)| ParseError::new(src, offset, kind))
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    depth: usize,
}

type PResult<T> = Result<T, LexError>;

fn found(tok: &Token<'_>, src: &str) -> Found {
    match tok.tok {
        Tok::End => Found::End,
        Tok::Label(k) => Found::Label(k.to_owned()),
        Tok::Str(s) => Found::Str(s.to_owned()),
        _ => Found::Text(src[tok.start..tok.end].to_owned()),
    }
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> PResult<Token<'a>> {
        match self.peeked {
            Some(t) => Ok(t),
            None => {
                let t = self.lexer.next_token()?;
                self.peeked = Some(t);
                Ok(t)
            }
        }
    }

    fn bump(&mut self) -> PResult<Token<'a>> {
        let t = self.peek()?;
        self.peeked = None;
        Ok(t)
    }

    fn found(&self, tok: &Token<'_>) -> Found {
        found(tok, self.lexer.src())
    }

    fn root(&mut self) -> PResult<Expr> {
        if self.peek()?.tok == Tok::End {
            return Ok(Expr::All);
        }
        let expr = self.or()?;
        let next = self.bump()?;
        if next.tok != Tok::End {
            return Err((
                ErrorKind::TrailingInput {
                    found: self.found(&next),
                },
                next.start,
            ));
        }
        Ok(expr)
    }

    fn or(&mut self) -> PResult<Expr> {
        let first = self.and()?;
        if self.peek()?.tok != Tok::Or {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek()?.tok == Tok::Or {
            self.bump()?;
            operands.push(self.and()?);
        }
        Ok(Expr::Or(operands))
    }

    fn and(&mut self) -> PResult<Expr> {
        let first = self.unary()?;
        if self.peek()?.tok != Tok::And {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek()?.tok == Tok::And {
            self.bump()?;
            operands.push(self.unary()?);
        }
        Ok(Expr::And(operands))
    }

    fn unary(&mut self) -> PResult<Expr> {
        let mut negated = false;
        while self.peek()?.tok == Tok::Not {
            self.bump()?;
            negated = !negated;
        }
        let term = self.term()?;
        Ok(if negated { term.negate() } else { term })
    }

    fn term(&mut self) -> PResult<Expr> {
        let tok = self.bump()?;
        match tok.tok {
            Tok::Has(key) => Ok(Expr::Has(key.to_owned())),
            Tok::All => Ok(Expr::All),
            Tok::Global => Ok(Expr::Global),
            Tok::Label(key) => self.comparison(key),
            Tok::LParen => {
                if self.depth >= MAX_NESTING {
                    return Err((ErrorKind::TooDeep { limit: MAX_NESTING }, tok.start));
                }
                self.depth += 1;
                let inner = self.or()?;
                self.depth -= 1;
                let close = self.bump()?;
                if close.tok != Tok::RParen {
                    let open = self.lexer.src()[..tok.start].chars().count();
                    return Err((
                        ErrorKind::UnclosedParen {
                            open,
                            found: self.found(&close),
                        },
                        close.start,
                    ));
                }
                Ok(inner)
            }
            Tok::Str(value) => Err((
                ErrorKind::LiteralOnLeft {
                    value: value.to_owned(),
                },
                tok.start,
            )),
            _ => Err((
                ErrorKind::ExpectedTerm {
                    found: self.found(&tok),
                },
                tok.start,
            )),
        }
    }

    /// After a label: operator and value(s).
    fn comparison(&mut self, key: &str) -> PResult<Expr> {
        let op = self.bump()?;
        let key = key.to_owned();
        let make: fn(String, String) -> Expr = match op.tok {
            Tok::Eq => Expr::Eq,
            Tok::Ne => Expr::Ne,
            Tok::Contains => Expr::Contains,
            Tok::StartsWith => Expr::StartsWith,
            Tok::EndsWith => Expr::EndsWith,
            Tok::In | Tok::NotIn => {
                let set = self.set_literal(op.tok.operator_name())?;
                return Ok(if op.tok == Tok::In {
                    Expr::In(key, set)
                } else {
                    Expr::NotIn(key, set)
                });
            }
            _ => {
                return Err((
                    ErrorKind::ExpectedOperator {
                        found: self.found(&op),
                    },
                    op.start,
                ));
            }
        };
        let value = self.bump()?;
        match value.tok {
            Tok::Str(v) => Ok(make(key, v.to_owned())),
            _ => Err((
                ErrorKind::ExpectedValue {
                    op: op.tok.operator_name(),
                    found: self.found(&value),
                },
                value.start,
            )),
        }
    }

    /// `{ "a", "b", }` — possibly empty, trailing comma allowed.
    fn set_literal(&mut self, op: &'static str) -> PResult<BTreeSet<String>> {
        let open = self.bump()?;
        if open.tok != Tok::LBrace {
            return Err((
                ErrorKind::ExpectedSet {
                    op,
                    found: self.found(&open),
                },
                open.start,
            ));
        }
        let mut items = BTreeSet::new();
        loop {
            let item = self.bump()?;
            match item.tok {
                Tok::RBrace => return Ok(items),
                Tok::Str(v) => {
                    items.insert(v.to_owned());
                }
                _ => {
                    return Err((
                        ErrorKind::ExpectedSetItem {
                            found: self.found(&item),
                        },
                        item.start,
                    ));
                }
            }
            let sep = self.bump()?;
            match sep.tok {
                Tok::RBrace => return Ok(items),
                Tok::Comma => {}
                _ => {
                    return Err((
                        ErrorKind::ExpectedSetSeparator {
                            found: self.found(&sep),
                        },
                        sep.start,
                    ));
                }
            }
        }
    }
}
