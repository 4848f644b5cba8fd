//! A reader for the plainest YAML documents, the shape nearly every policy file has:
//! block mappings and sequences indented with spaces, keys that are words, and values
//! that are words, integers, addresses, single- or double-quoted strings without
//! escapes, or one-line flow collections (`[a, b]`, `{name: x}`, nested) of those; a
//! document may also be one such flow collection on one line (a JSON object written
//! as a YAML document, keys quoted or not). It builds the same `Value` the full
//! parser (serde-saphyr) builds, without its event machinery, and gives up (`None`)
//! on anything else — anchors, tags, block scalars, flow collections over several
//! lines or with a trailing comma or an empty value, multi-line scalars, comments
//! after a value, tabs, duplicate keys, `true`/`null`/floats and every other scalar
//! whose type needs the YAML schema — so the caller then reads the document with the
//! full parser, which also reports any error. `tests::simple_yaml_*` check that every
//! document it reads gives what serde-saphyr gives.

use serde_json::{Map, Value};

/// Deepest nesting read here (the full parser allows more, and reports beyond it).
const MAX_DEPTH: usize = 32;

/// Longest key read here (serde-saphyr's simple-key lookahead is 1 024 characters).
const MAX_KEY: usize = 512;

/// Most nodes (scalars, keys included, and collections) of a document read here, and
/// most events (a node each, a collection's end, the stream's and document's start
/// and end): nine tenths of the full parser's limits (`MAX_DOCUMENT_NODES`,
/// `MAX_DOCUMENT_EVENTS`), so that a document it would refuse, however exactly it
/// counts, is always left to it. A `kind: List` file of thousands of policies is read
/// here (a policy of `bench/check/gen.py`'s shape is 54-56 nodes).
const MAX_NODES: usize = super::MAX_DOCUMENT_NODES / 10 * 9;
const MAX_EVENTS: usize = super::MAX_DOCUMENT_EVENTS / 10 * 9;

/// The value of the one document in `text` (after an optional first `---` line), or
/// `None` when the document is not of the plain shape (or holds nothing).
pub(super) fn parse(text: &str) -> Option<Value> {
    parse_counted(text).map(|(value, _)| value)
}

/// [`parse`], and the document's nodes and collections as counted while reading.
fn parse_counted(text: &str) -> Option<(Value, (usize, usize))> {
    if !printable(text) {
        return None;
    }
    let mut lines = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\r') {
            return None;
        }
        if i == 0 && line.starts_with("---") {
            if !line[3..].trim_matches(' ').is_empty() {
                return None;
            }
            continue;
        }
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let content = content.trim_end_matches(' ');
        lines.push((line.len() - line.trim_start_matches(' ').len(), content));
    }
    let &(first, content) = lines.first()?;
    // Every line holds at least one node.
    if lines.len() > MAX_NODES {
        return None;
    }
    let whole_flow = content.starts_with(['{', '[']);
    if whole_flow && lines.len() > 1 {
        return None;
    }
    let mut p = Parser {
        lines,
        pos: 0,
        nodes: 0,
        collections: 0,
    };
    let value = if whole_flow {
        p.pos = 1;
        p.flow_all(content, 0)?
    } else {
        p.block(first, 0)?
    };
    (p.pos == p.lines.len()).then_some((value, (p.nodes, p.collections)))
}

/// The nodes of `value` as YAML has them (every scalar, a mapping's keys included, and
/// every collection) and how many of them are collections: the slow twin of the
/// counts [`parse_counted`] keeps while reading.
#[cfg(test)]
fn count(value: &Value) -> (usize, usize) {
    match value {
        Value::Object(map) => map.values().fold((1, 1), |(n, c), v| {
            let (vn, vc) = count(v);
            (n + 1 + vn, c + vc)
        }),
        Value::Array(items) => items.iter().fold((1, 1), |(n, c), v| {
            let (vn, vc) = count(v);
            (n + vn, c + vc)
        }),
        _ => (1, 0),
    }
}

/// Checks that `text` reads here with the counts of the value read (a test hook).
#[cfg(test)]
pub(super) fn counts_agree(text: &str) -> Option<bool> {
    parse_counted(text).map(|(value, counted)| count(&value) == counted)
}

/// Whether `text` holds only what YAML allows in a document besides tabs: line breaks
/// and printable characters (no C0/C1 controls, DEL, NEL, surrogates, U+FFFE/U+FFFF),
/// and no byte order mark inside.
fn printable(text: &str) -> bool {
    let ascii_ok = |b: u8| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\r' || b >= 0x80;
    text.bytes().all(ascii_ok)
        && (text.is_ascii()
            || text.chars().all(|c| {
                matches!(c, '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
                    && c != '\u{feff}'
            }))
}

struct Parser<'a> {
    /// Indent and content (without indentation and trailing spaces) of every line that
    /// is not blank or a comment.
    lines: Vec<(usize, &'a str)>,
    pos: usize,
    /// Nodes read so far (scalars, keys included, and collections) ...
    nodes: usize,
    /// ... and how many of them are collections.
    collections: usize,
}

fn is_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

impl<'a> Parser<'a> {
    /// Counts `n` nodes, `collections` of them collections; `None` past
    /// [`MAX_NODES`] or [`MAX_EVENTS`].
    fn count(&mut self, n: usize, collections: usize) -> Option<()> {
        self.nodes += n;
        self.collections += collections;
        (self.nodes <= MAX_NODES && self.nodes + self.collections + 4 <= MAX_EVENTS).then_some(())
    }

    /// The value after `key: ` or `- ` at nesting `depth`, counted: a flow collection
    /// or a scalar.
    fn scalar(&mut self, s: &str, depth: usize) -> Option<Value> {
        if s.starts_with(['[', '{']) {
            return self.flow_all(s, depth);
        }
        let value = scalar(s)?;
        self.count(1, 0)?;
        Some(value)
    }

    /// A flow collection making up all of `s` (spaces after it aside).
    fn flow_all(&mut self, s: &str, depth: usize) -> Option<Value> {
        let (value, rest) = self.flow(s, depth)?;
        rest.trim_start_matches(' ').is_empty().then_some(value)
    }

    /// The flow node at the start of `s` (a collection, a quoted or a plain scalar),
    /// counted, and what follows it.
    fn flow<'s>(&mut self, s: &'s str, depth: usize) -> Option<(Value, &'s str)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (close, is_map) = match s.as_bytes().first()? {
            b'{' => (b'}', true),
            b'[' => (b']', false),
            b'\'' | b'"' => {
                let (text, rest) = quoted(s)?;
                self.count(1, 0)?;
                return Some((Value::String(text), rest));
            }
            _ => {
                let end = s.find([',', ']', '}']).unwrap_or(s.len());
                let word = s[..end].trim_end_matches(' ');
                if word.is_empty() {
                    return None;
                }
                let value = plain(word, true)?;
                self.count(1, 0)?;
                return Some((value, &s[end..]));
            }
        };
        self.count(1, 1)?;
        let mut map = Map::new();
        let mut items = Vec::new();
        let mut rest = s[1..].trim_start_matches(' ');
        if rest.as_bytes().first() != Some(&close) {
            loop {
                if is_map {
                    let (key, after) = flow_key(rest)?;
                    self.count(1, 0)?;
                    let (value, after) = self.flow(after, depth + 1)?;
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                    rest = after;
                } else {
                    let (item, after) = self.flow(rest, depth + 1)?;
                    items.push(item);
                    rest = after;
                }
                rest = rest.trim_start_matches(' ');
                if rest.as_bytes().first() == Some(&close) {
                    break;
                }
                rest = rest.strip_prefix(',')?.trim_start_matches(' ');
                // A trailing comma, or an empty entry: left to the full parser.
                if rest.is_empty() || rest.starts_with([',', ']', '}']) {
                    return None;
                }
            }
        }
        let value = if is_map {
            Value::Object(map)
        } else {
            Value::Array(items)
        };
        Some((value, &rest[1..]))
    }

    fn block(&mut self, indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let &(at, content) = self.lines.get(self.pos)?;
        if at != indent {
            return None;
        }
        if is_item(content) {
            self.sequence(indent, depth)
        } else {
            self.mapping(indent, depth)
        }
    }

    fn mapping(&mut self, indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.count(1, 1)?;
        let mut map = Map::new();
        while let Some(&(at, content)) = self.lines.get(self.pos) {
            if at < indent {
                break;
            }
            if at > indent || is_item(content) {
                return None;
            }
            let (key, rest) = split_key(content)?;
            self.pos += 1;
            self.count(1, 0)?;
            let value = if rest.is_empty() {
                self.nested(indent, depth)?
            } else {
                self.scalar(rest, depth + 1)?
            };
            if map.insert(key.to_string(), value).is_some() {
                return None;
            }
        }
        Some(Value::Object(map))
    }

    /// The value of a key with nothing after its `:`: the block below it (deeper, or a
    /// sequence at the key's own indent), or null.
    fn nested(&mut self, indent: usize, depth: usize) -> Option<Value> {
        match self.lines.get(self.pos) {
            Some(&(at, _)) if at > indent => self.block(at, depth + 1),
            Some(&(at, content)) if at == indent && is_item(content) => {
                self.sequence(indent, depth + 1)
            }
            _ => {
                self.count(1, 0)?;
                Some(Value::Null)
            }
        }
    }

    fn sequence(&mut self, indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.count(1, 1)?;
        let mut items = Vec::new();
        while let Some(&(at, content)) = self.lines.get(self.pos) {
            if at < indent || (at == indent && !is_item(content)) {
                break;
            }
            if at > indent {
                return None;
            }
            let rest = content.strip_prefix("- ")?;
            let item = rest.trim_start_matches(' ');
            if item.is_empty() || is_item(item) {
                return None;
            }
            if split_key(item).is_some() {
                // `- key: value`: a mapping whose keys line up with this one.
                let inner = indent + (content.len() - item.len());
                self.lines[self.pos] = (inner, item);
                items.push(self.mapping(inner, depth + 1)?);
            } else {
                self.pos += 1;
                items.push(self.scalar(item, depth + 1)?);
            }
        }
        Some(Value::Array(items))
    }
}

/// `key: rest` or `key:` with a plain word key (letters first; digits, `_`, `-`, `.`,
/// `/` after): the key and what follows the `: ` (empty for `key:`).
fn split_key(content: &str) -> Option<(&str, &str)> {
    let end = content
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
        .unwrap_or(content.len());
    let key = &content[..end];
    if !word_key(key) {
        return None;
    }
    let rest = content[end..].strip_prefix(':')?;
    if rest.is_empty() {
        return Some((key, ""));
    }
    rest.starts_with(' ')
        .then(|| (key, rest.trim_start_matches(' ')))
}

/// Whether `key` is a plain word key: letters first; digits, `_`, `-`, `.`, `/` after;
/// not a reserved word; at most [`MAX_KEY`] long (the full parser looks at most 1 024
/// characters ahead for a key's `:`).
fn word_key(key: &str) -> bool {
    key.len() <= MAX_KEY
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !reserved(key)
}

/// Words whose type depends on the YAML schema or the reader (null, booleans of YAML 1.1
/// and 1.2, what a float parser might take): left to the full parser.
fn reserved(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "inf", "infinity", "nan",
    ];
    WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// A scalar value after `key: ` or `- `.
fn scalar(s: &str) -> Option<Value> {
    match s.as_bytes()[0] {
        b'\'' => single_quoted(s).map(Value::String),
        b'"' => double_quoted(s).map(Value::String),
        _ => plain(s, false),
    }
}

/// A flow mapping's key and what follows its `:`, spaces skipped: a plain word (as
/// [`split_key`] reads one) followed by `: `, or a quoted string followed by `:` (a
/// JSON-like key, whose value may follow without a space). An empty value (`,` or
/// `}` next) is left to the full parser.
fn flow_key(s: &str) -> Option<(String, &str)> {
    let (key, rest) = if s.starts_with(['\'', '"']) {
        let (key, rest) = quoted(s)?;
        (key, rest.strip_prefix(':')?)
    } else {
        let end = s.find(':')?;
        let key = &s[..end];
        if !word_key(key) {
            return None;
        }
        (key.to_string(), s[end + 1..].strip_prefix(' ')?)
    };
    if key.len() > MAX_KEY {
        return None;
    }
    let rest = rest.trim_start_matches(' ');
    (!rest.is_empty() && !rest.starts_with([',', '}', ']'])).then_some((key, rest))
}

/// A quoted scalar at the start of `s` (as [`single_quoted`] and [`double_quoted`]
/// read one) and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let quote = *s.as_bytes().first()?;
    // The closing quote: the first one not doubled (single quotes).
    let bytes = s.as_bytes();
    let mut i = 1;
    let end = loop {
        if *bytes.get(i)? == quote {
            if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            break i;
        }
        i += 1;
    };
    let text = &s[..=end];
    let value = if quote == b'\'' {
        single_quoted(text)?
    } else {
        double_quoted(text)?
    };
    Some((value, &s[end + 1..]))
}

/// A plain scalar: a word or address (string) or a decimal integer; `None` for anything
/// whose reading needs more than that.
fn plain(s: &str, flow: bool) -> Option<Value> {
    let first = s.chars().next()?;
    if "-?:,[]{}#&*!|>'\"%@`.~+".contains(first) && !is_int(s) {
        return None;
    }
    if s.contains(": ")
        || s.contains('#')
        || s.ends_with(':')
        || (flow && s.contains(['[', ']', '{', '}', ',']))
        || reserved(s)
    {
        return None;
    }
    if first.is_ascii_digit() || first == '-' {
        if is_int(s) {
            return s.parse::<i64>().ok().map(Value::from);
        }
        // An address or prefix (`10.0.0.0/24`); any other number-like word is left to
        // the full parser.
        return (s.contains('/') && !s.contains(':')).then(|| Value::String(s.to_string()));
    }
    if s.contains(':') {
        return None;
    }
    Some(Value::String(s.to_string()))
}

/// `0`, or an optional `-` and up to 18 digits without a leading zero.
fn is_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if s == "0" {
        return true;
    }
    !digits.is_empty()
        && digits.len() <= 18
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `'...'` (with `''` for a quote) making up all of `s`.
fn single_quoted(s: &str) -> Option<String> {
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    if inner.replace("''", "").contains('\'') {
        return None;
    }
    Some(inner.replace("''", "'"))
}

/// `"..."` without escapes making up all of `s`.
fn double_quoted(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains(['"', '\\']) {
        return None;
    }
    Some(inner.to_string())
}
