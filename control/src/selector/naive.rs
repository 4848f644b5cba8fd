//! A second, deliberately naive selector interpreter, used only to cross-check the real one.
//!
//! It shares no code with the lexer, parser or `Expr::matches`: it scans the text once,
//! evaluates each comparison to a boolean on the spot (labels found by a linear scan, string
//! tests by byte comparison), and combines the booleans with a shunting-yard pass over
//! `!`, `&&`, `||` and parentheses. It trusts the text to be valid and returns `None` when it
//! cannot make sense of it.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Item {
    Value(bool),
    Not,
    And,
    Or,
    Open,
    Close,
}

fn lookup<'l>(labels: &'l BTreeMap<String, String>, key: &str) -> Option<&'l str> {
    labels
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v.as_str())
}

struct Scan<'t> {
    text: &'t [u8],
    at: usize,
}

impl<'t> Scan<'t> {
    fn blanks(&mut self) {
        while self.at < self.text.len()
            && (self.text[self.at] == b' ' || self.text[self.at] == b'\t')
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.text[self.at..].starts_with(s.as_bytes()) {
            self.at += s.len();
            true
        } else {
            false
        }
    }

    fn key(&mut self) -> Option<String> {
        let start = self.at;
        while self.at < self.text.len()
            && (self.text[self.at].is_ascii_alphanumeric() || b"_./-".contains(&self.text[self.at]))
        {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        self.blanks();
        let quote = *self.text.get(self.at)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let start = self.at + 1;
        let len = self.text[start..].iter().position(|&b| b == quote)?;
        self.at = start + len + 1;
        Some(self.text[start..start + len].to_vec())
    }

    fn set(&mut self) -> Option<Vec<Vec<u8>>> {
        self.blanks();
        if !self.eat("{") {
            return None;
        }
        let mut items = Vec::new();
        loop {
            self.blanks();
            if self.eat("}") {
                return Some(items);
            }
            items.push(self.string()?);
            self.blanks();
            self.eat(",");
        }
    }

    /// `name(` ... `)` with only blanks (or, for has, a key) inside.
    fn call_body(&mut self) -> Option<Option<String>> {
        self.blanks();
        let key = self.key();
        self.blanks();
        self.eat(")").then_some(key)
    }

    /// One comparison, evaluated right away.
    fn comparison(&mut self, labels: &BTreeMap<String, String>) -> Option<bool> {
        let key = self.key()?;
        let value = lookup(labels, &key).map(str::as_bytes);
        self.blanks();
        if self.eat("==") {
            let v = self.string()?;
            return Some(value == Some(v.as_slice()));
        }
        if self.eat("!=") {
            let v = self.string()?;
            return Some(match value {
                None => true,
                Some(x) => x != v.as_slice(),
            });
        }
        if self.eat("contains") {
            let v = self.string()?;
            return Some(
                value
                    .is_some_and(|x| v.is_empty() || x.windows(v.len()).any(|w| w == v.as_slice())),
            );
        }
        if self.eat("starts") {
            self.blanks();
            self.eat("with").then_some(())?;
            let v = self.string()?;
            return Some(value.is_some_and(|x| x.len() >= v.len() && x[..v.len()] == v[..]));
        }
        if self.eat("ends") {
            self.blanks();
            self.eat("with").then_some(())?;
            let v = self.string()?;
            return Some(
                value.is_some_and(|x| x.len() >= v.len() && x[x.len() - v.len()..] == v[..]),
            );
        }
        let negated = if self.eat("not") {
            self.blanks();
            true
        } else {
            false
        };
        if self.eat("in") {
            let items = self.set()?;
            let member = value.is_some_and(|x| items.iter().any(|i| i.as_slice() == x));
            return Some(member != negated);
        }
        None
    }
}

fn items(text: &str, labels: &BTreeMap<String, String>) -> Option<Vec<Item>> {
    let mut scan = Scan {
        text: text.as_bytes(),
        at: 0,
    };
    let mut out = Vec::new();
    loop {
        scan.blanks();
        if scan.at == scan.text.len() {
            return Some(out);
        }
        let item = if scan.eat("&&") {
            Item::And
        } else if scan.eat("||") {
            Item::Or
        } else if scan.eat("(") {
            Item::Open
        } else if scan.eat(")") {
            Item::Close
        } else if scan.eat("!") {
            Item::Not
        } else if scan.eat("has(") {
            let key = scan.call_body()??;
            Item::Value(lookup(labels, &key).is_some())
        } else if scan.eat("all(") || scan.eat("global(") {
            match scan.call_body()? {
                None => Item::Value(true),
                Some(_) => return None,
            }
        } else {
            Item::Value(scan.comparison(labels)?)
        };
        out.push(item);
    }
}

fn precedence(op: Item) -> u8 {
    match op {
        Item::Not => 3,
        Item::And => 2,
        Item::Or => 1,
        _ => 0,
    }
}

/// Evaluates selector text against labels; `None` if the text makes no sense to it.
pub(super) fn eval(text: &str, labels: &BTreeMap<String, String>) -> Option<bool> {
    let input = items(text, labels)?;
    if input.is_empty() {
        return Some(true);
    }
    // Shunting-yard to postfix. `!` is a right-associative prefix operator, so it never pops
    // another `!`; the binary operators are left-associative.
    let mut postfix = Vec::new();
    let mut ops: Vec<Item> = Vec::new();
    for item in input {
        match item {
            Item::Value(_) => postfix.push(item),
            Item::Not | Item::Open => ops.push(item),
            Item::And | Item::Or => {
                while let Some(&top) = ops.last() {
                    if top != Item::Open && precedence(top) >= precedence(item) {
                        postfix.push(ops.pop()?);
                    } else {
                        break;
                    }
                }
                ops.push(item);
            }
            Item::Close => loop {
                match ops.pop()? {
                    Item::Open => break,
                    op => postfix.push(op),
                }
            },
        }
    }
    while let Some(op) = ops.pop() {
        if op == Item::Open {
            return None;
        }
        postfix.push(op);
    }
    let mut stack = Vec::new();
    for item in postfix {
        match item {
            Item::Value(b) => stack.push(b),
            Item::Not => {
                let b = stack.pop()?;
                stack.push(!b);
            }
            Item::And | Item::Or => {
                let right = stack.pop()?;
                let left = stack.pop()?;
                stack.push(if item == Item::And {
                    left && right
                } else {
                    left || right
                });
            }
            Item::Open | Item::Close => return None,
        }
    }
    match stack.as_slice() {
        [b] => Some(*b),
        _ => None,
    }
}
