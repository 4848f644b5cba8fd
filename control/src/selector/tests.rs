//! Table tests: valid selectors with their canonical text, invalid selectors with the error
//! position and kind, and evaluation against label maps (every operator, present and missing
//! labels). Several rows are Calico's own test vectors (libcalico-go/lib/selector).

use std::collections::BTreeMap;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn canonical(text: &str) -> String {
    match Selector::parse(text) {
        Ok(s) => s.canonical().to_owned(),
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

/// (input, canonical text)
const VALID: &[(&str, &str)] = &[
    // Empty and blank selectors are all().
    ("", "all()"),
    (" ", "all()"),
    ("\t \t", "all()"),
    ("all()", "all()"),
    (" all( ) ", "all()"),
    ("all(\t)", "all()"),
    (" (all() )", "all()"),
    ("((( all() )))", "all()"),
    ("global()", "global()"),
    ("global( )", "global()"),
    // has()
    ("has(a)", "has(a)"),
    ("has( a )", "has(a)"),
    ("has(\tk8s-app\t)", "has(k8s-app)"),
    (
        "has(projectcalico.org/namespace)",
        "has(projectcalico.org/namespace)",
    ),
    ("has(calico/k8s_NS-.1/role)", "has(calico/k8s_NS-.1/role)"),
    // == and quoting
    (r#"a == "b""#, r#"a == "b""#),
    (r#"a=="b""#, r#"a == "b""#),
    ("a\t==\t'b'", r#"a == "b""#),
    ("a == ''", r#"a == """#),
    (r#"a == '"'"#, r#"a == '"'"#),
    (r#"a == "'""#, r#"a == "'""#),
    (r#"a == "it's""#, r#"a == "it's""#),
    (r#"a == 'say "hi"'"#, r#"a == 'say "hi"'"#),
    (r#"a == "x y	z""#, "a == \"x y\tz\""),
    (r#"a == "é""#, r#"a == "é""#),
    (r#"a == "&& || ! ()""#, r#"a == "&& || ! ()""#),
    (r#"A-1_b.c/d == "v""#, r#"A-1_b.c/d == "v""#),
    (r#"-a == "x""#, r#"-a == "x""#),
    (r#"/ == "x""#, r#"/ == "x""#),
    // !=
    (r#"a != "b""#, r#"a != "b""#),
    (r#"a!='"'"#, r#"a != '"'"#),
    // contains / starts with / ends with, all spellings
    (r#"a contains "b""#, r#"a contains "b""#),
    (r#"a contains"b""#, r#"a contains "b""#),
    (r#"a contains ''"#, r#"a contains """#),
    (r#"a contains '"'"#, r#"a contains '"'"#),
    (
        r#"contains contains "contains""#,
        r#"contains contains "contains""#,
    ),
    (r#"a starts with "x""#, r#"a starts with "x""#),
    (r#"a startswith "x""#, r#"a starts with "x""#),
    ("a starts  \t with \"x\"", r#"a starts with "x""#),
    (r#"a starts with"x""#, r#"a starts with "x""#),
    (r#"a startswith '"'"#, r#"a starts with '"'"#),
    (
        r#"startswith starts with "v""#,
        r#"startswith starts with "v""#,
    ),
    (r#"a ends with "x""#, r#"a ends with "x""#),
    (r#"a endswith 'x'"#, r#"a ends with "x""#),
    (r#"a endswith"x""#, r#"a ends with "x""#),
    (r#"a endswith "'""#, r#"a ends with "'""#),
    (r#"endswith ends with "v""#, r#"endswith ends with "v""#),
    // in / not in: sorted, deduplicated, empty, trailing comma
    (r#"a in {"x"}"#, r#"a in {"x"}"#),
    ("a in {}", "a in {}"),
    ("a in { \t }", "a in {}"),
    (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
    (
        r#"a in {"z","z","x","y","x","a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
    ),
    (r#"a in {"x",}"#, r#"a in {"x"}"#),
    (r#"a in{'x'}"#, r#"a in {"x"}"#),
    (r#"a in {"a", "_", "B"}"#, r#"a in {"B", "_", "a"}"#),
    (r#"a in {"'", '"', "c"}"#, r#"a in {'"', "'", "c"}"#),
    (r#"a in {""}"#, r#"a in {""}"#),
    (r#"a not in {"x"}"#, r#"a not in {"x"}"#),
    (r#"a notin {"x"}"#, r#"a not in {"x"}"#),
    ("a not\tin {}", "a not in {}"),
    (r#"a notin{"b","a",}"#, r#"a not in {"a", "b"}"#),
    // Operator words and function names are labels where a label is expected.
    (r#"in in {"in"}"#, r#"in in {"in"}"#),
    (r#"not not in {"x"}"#, r#"not not in {"x"}"#),
    (r#"has == "x""#, r#"has == "x""#),
    (r#"all != "x""#, r#"all != "x""#),
    (r#"global contains "()""#, r#"global contains "()""#),
    (r#"allx == "1""#, r#"allx == "1""#),
    (r#"hasa == "1""#, r#"hasa == "1""#),
    // Negation: glued, binds to one term, even runs cancel.
    ("!has(a)", "!has(a)"),
    ("! has(a)", "!has(a)"),
    ("!\thas(a)", "!has(a)"),
    ("!!has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("! !! has(a)", "!has(a)"),
    (r#"!a == "x""#, r#"!a == "x""#),
    (r#"!(a == "x")"#, r#"!a == "x""#),
    ("!(has(a))", "!has(a)"),
    ("!(!has(a))", "has(a)"),
    ("!all()", "!all()"),
    (r#"!a in {"a"}"#, r#"!a in {"a"}"#),
    // && and || groups are always parenthesised; && binds tighter than ||.
    (r#"a == "b" && c == "d""#, r#"(a == "b" && c == "d")"#),
    (
        r#"a == "b"&&c == "d"&&has(e)"#,
        r#"(a == "b" && c == "d" && has(e))"#,
    ),
    (r#"a == "b" || c == "d""#, r#"(a == "b" || c == "d")"#),
    (r#"a == "b"||c == "d""#, r#"(a == "b" || c == "d")"#),
    ("has(a)||has(b)||has(c)", "(has(a) || has(b) || has(c))"),
    (
        r#"a == "b" || c == "d" && has(e)"#,
        r#"(a == "b" || (c == "d" && has(e)))"#,
    ),
    (
        r#"a == "b" && c == "d" || has(e)"#,
        r#"((a == "b" && c == "d") || has(e))"#,
    ),
    (
        r#"(a == "b" || c == "d") && has(e)"#,
        r#"((a == "b" || c == "d") && has(e))"#,
    ),
    (
        "(has(a) && has(b)) && has(c)",
        "((has(a) && has(b)) && has(c))",
    ),
    (
        "has(a) && (has(b) && has(c))",
        "(has(a) && (has(b) && has(c)))",
    ),
    (
        "(has(a) && has(b) && has(c))",
        "(has(a) && has(b) && has(c))",
    ),
    ("!has(a) && has(b)", "(!has(a) && has(b))"),
    ("!(has(a) && has(b))", "!(has(a) && has(b))"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
    (
        r#"a == "b" && !(c == "d" || e == "f")"#,
        r#"(a == "b" && !(c == "d" || e == "f"))"#,
    ),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        r#"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#,
    ),
    (
        r#"a in {"x"} && b not in {"y"}"#,
        r#"(a in {"x"} && b not in {"y"})"#,
    ),
    (r#"a == "b" && all()"#, r#"(a == "b" && all())"#),
    (r#"a == "b" || global()"#, r#"(a == "b" || global())"#),
    (
        "projectcalico.org/orchestrator == 'k8s' && app in {\"web\"}",
        r#"(projectcalico.org/orchestrator == "k8s" && app in {"web"})"#,
    ),
    (
        r#"calico/k8s_ns == "kube-system" && k8s-app == "kube-dns""#,
        r#"(calico/k8s_ns == "kube-system" && k8s-app == "kube-dns")"#,
    ),
    (
        "a  not  in  {}  &&  ! has( foo )  ||  b  in  {'c'} ",
        r#"((a not in {} && !has(foo)) || b in {"c"})"#,
    ),
];

#[test]
fn valid_selectors_have_calico_canonical_text() {
    for (input, expected) in VALID {
        let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(sel.canonical(), *expected, "canonical text of {input:?}");
        assert_eq!(sel.source(), *input);
        // The canonical text is a fixed point and names the same selector.
        let again =
            Selector::parse(expected).unwrap_or_else(|e| panic!("canonical {expected:?}: {e}"));
        assert_eq!(again.expr(), sel.expr(), "re-parse of {expected:?}");
        assert_eq!(again.canonical(), *expected);
        assert_eq!(again.id(), sel.id());
    }
}

#[test]
fn longest_label_key_is_accepted() {
    let key = "k".repeat(MAX_LABEL_LENGTH);
    let text = format!("{key} == \"v\"");
    assert_eq!(canonical(&text), text);
    assert_eq!(canonical(&format!("has({key})")), format!("has({key})"));
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    let text = format!(
        "{}all(){}",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert_eq!(canonical(&text), "all()");
    let text = format!(
        "{}has(a) && has(b){}",
        "!(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert_eq!(
        canonical(&text),
        "(has(a) && has(b))",
        "256 negations cancel"
    );
}

fn end() -> Found {
    Found::End
}
fn lbl(k: &str) -> Found {
    Found::Label(k.to_owned())
}
fn txt(t: &str) -> Found {
    Found::Text(t.to_owned())
}
fn string(s: &str) -> Found {
    Found::Str(s.to_owned())
}

/// (input, 0-based character position, error)
fn invalid_cases() -> Vec<(String, usize, ErrorKind)> {
    use ErrorKind::*;
    let long = "k".repeat(MAX_LABEL_LENGTH + 1);
    let deep = format!(
        "{}all(){}",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    let cases: Vec<(&str, usize, ErrorKind)> = vec![
        // Missing or wrong values.
        (
            "a == ",
            5,
            ExpectedValue {
                op: "==",
                found: end(),
            },
        ),
        (
            "a ==",
            4,
            ExpectedValue {
                op: "==",
                found: end(),
            },
        ),
        (
            "a==",
            3,
            ExpectedValue {
                op: "==",
                found: end(),
            },
        ),
        (
            "a contains",
            10,
            ExpectedValue {
                op: "contains",
                found: end(),
            },
        ),
        // Label compared with a label.
        (
            "b == b",
            5,
            ExpectedValue {
                op: "==",
                found: lbl("b"),
            },
        ),
        (
            "b != b",
            5,
            ExpectedValue {
                op: "!=",
                found: lbl("b"),
            },
        ),
        (
            "b contains b",
            11,
            ExpectedValue {
                op: "contains",
                found: lbl("b"),
            },
        ),
        (
            "b starts with b",
            14,
            ExpectedValue {
                op: "starts with",
                found: lbl("b"),
            },
        ),
        (
            "b ends with b",
            12,
            ExpectedValue {
                op: "ends with",
                found: lbl("b"),
            },
        ),
        (
            r#"a == b == "c""#,
            5,
            ExpectedValue {
                op: "==",
                found: lbl("b"),
            },
        ),
        (
            "foo != ||",
            7,
            ExpectedValue {
                op: "!=",
                found: txt("||"),
            },
        ),
        (
            r#"a == {"x"}"#,
            5,
            ExpectedValue {
                op: "==",
                found: txt("{"),
            },
        ),
        // Literal on the left.
        (
            "'b1' == b",
            0,
            LiteralOnLeft {
                value: "b1".to_owned(),
            },
        ),
        (
            r#""x""#,
            0,
            LiteralOnLeft {
                value: "x".to_owned(),
            },
        ),
        (
            r#"has(a) && "x" == a"#,
            10,
            LiteralOnLeft {
                value: "x".to_owned(),
            },
        ),
        // Bare labels and unknown operator words.
        ("b", 1, ExpectedOperator { found: end() }),
        ("a ", 2, ExpectedOperator { found: end() }),
        ("!a", 2, ExpectedOperator { found: end() }),
        (r#"a && b == "c""#, 2, ExpectedOperator { found: txt("&&") }),
        ("(a)", 2, ExpectedOperator { found: txt(")") }),
        ("a b", 2, ExpectedOperator { found: txt("b") }),
        ("a b c", 2, ExpectedOperator { found: txt("b") }),
        (
            r#"label inf "value""#,
            6,
            ExpectedOperator { found: txt("inf") },
        ),
        (
            r#"label starts foo "value""#,
            6,
            ExpectedOperator {
                found: txt("starts"),
            },
        ),
        (
            r#"label ends withs "value""#,
            6,
            ExpectedOperator { found: txt("ends") },
        ),
        (
            r#"label squiggles "value""#,
            6,
            ExpectedOperator {
                found: txt("squiggles"),
            },
        ),
        (
            r#"a containsx "b""#,
            2,
            ExpectedOperator {
                found: txt("containsx"),
            },
        ),
        (r#"a in_ {"b"}"#, 2, ExpectedOperator { found: txt("in_") }),
        ("a not", 2, ExpectedOperator { found: txt("not") }),
        (
            "a starts",
            2,
            ExpectedOperator {
                found: txt("starts"),
            },
        ),
        (r#"a "x""#, 2, ExpectedOperator { found: string("x") }),
        ("has (a)", 4, ExpectedOperator { found: txt("(") }),
        ("all ()", 4, ExpectedOperator { found: txt("(") }),
        ("a has(b)", 2, ExpectedOperator { found: txt("has") }),
        // Set literals.
        (
            r#"foo in """#,
            7,
            ExpectedSet {
                op: "in",
                found: string(""),
            },
        ),
        (
            r#"foo not in "bar""#,
            11,
            ExpectedSet {
                op: "not in",
                found: string("bar"),
            },
        ),
        (
            "a in",
            4,
            ExpectedSet {
                op: "in",
                found: end(),
            },
        ),
        (
            "a in b",
            5,
            ExpectedSet {
                op: "in",
                found: lbl("b"),
            },
        ),
        (
            r#"foo in {"", ||"#,
            12,
            ExpectedSetItem { found: txt("||") },
        ),
        ("a in {,}", 6, ExpectedSetItem { found: txt(",") }),
        (r#"a in {"x",,}"#, 10, ExpectedSetItem { found: txt(",") }),
        ("a in {", 6, ExpectedSetItem { found: end() }),
        ("a in {x}", 6, ExpectedSetItem { found: lbl("x") }),
        (
            r#"a in {"x" "y"}"#,
            10,
            ExpectedSetSeparator { found: string("y") },
        ),
        (r#"a in {"x""#, 9, ExpectedSetSeparator { found: end() }),
        (r#"a in {"x"; "y"}"#, 9, UnexpectedChar { found: ';' }),
        // Unterminated strings.
        (r#""FOO"#, 0, UnterminatedString { quote: '"' }),
        (r#""FOO'"#, 0, UnterminatedString { quote: '"' }),
        ("'FOO", 0, UnterminatedString { quote: '\'' }),
        (r#"a == "b"#, 5, UnterminatedString { quote: '"' }),
        // The leftmost problem is reported: here the text after the string 'it'.
        (r#"a == 'it's'"#, 9, TrailingInput { found: lbl("s") }),
        // Parentheses.
        ("(", 1, ExpectedTerm { found: end() }),
        (
            r#"(a == "foo""#,
            11,
            UnclosedParen {
                open: 0,
                found: end(),
            },
        ),
        (
            r#"a == "x" && (b == "y" || c == "z""#,
            33,
            UnclosedParen {
                open: 12,
                found: end(),
            },
        ),
        (
            r#"a == "x" || ((b == "y")"#,
            23,
            UnclosedParen {
                open: 12,
                found: end(),
            },
        ),
        (
            r#"(has(a) has(b))"#,
            8,
            UnclosedParen {
                open: 0,
                found: txt("has(b)"),
            },
        ),
        (")", 0, ExpectedTerm { found: txt(")") }),
        ("()", 1, ExpectedTerm { found: txt(")") }),
        (r#"a == "b")"#, 8, TrailingInput { found: txt(")") }),
        (r#"a == "b" ()"#, 9, TrailingInput { found: txt("(") }),
        // Boolean operators in the wrong place.
        ("!", 1, ExpectedTerm { found: end() }),
        ("has(foo) &&", 11, ExpectedTerm { found: end() }),
        ("has(foo) ||", 11, ExpectedTerm { found: end() }),
        (
            r#"a == "b" && || c == "d""#,
            12,
            ExpectedTerm { found: txt("||") },
        ),
        (r#"&& a == "b""#, 0, ExpectedTerm { found: txt("&&") }),
        (r#"== "b""#, 0, ExpectedTerm { found: txt("==") }),
        (r#"{"a"}"#, 0, ExpectedTerm { found: txt("{") }),
        (r#"a == "b" !"#, 9, TrailingInput { found: txt("!") }),
        (r#"a == "b" c == "d""#, 9, TrailingInput { found: lbl("c") }),
        (r#"a in {"x"} b"#, 11, TrailingInput { found: lbl("b") }),
        ("has(a)b", 6, TrailingInput { found: lbl("b") }),
        (
            "all() all()",
            6,
            TrailingInput {
                found: txt("all()"),
            },
        ),
        // Half operators.
        (
            r#"foo == "bar" &"#,
            13,
            IncompleteOperator {
                found: '&',
                expected: "&&",
            },
        ),
        (
            r#"foo == "bar" |"#,
            13,
            IncompleteOperator {
                found: '|',
                expected: "||",
            },
        ),
        (
            r#"a == "b" & has(foo)"#,
            9,
            IncompleteOperator {
                found: '&',
                expected: "&&",
            },
        ),
        (
            r#"label = "value""#,
            6,
            IncompleteOperator {
                found: '=',
                expected: "==",
            },
        ),
        (
            r#"a === "b""#,
            4,
            IncompleteOperator {
                found: '=',
                expected: "==",
            },
        ),
        (
            r#"a !== "b""#,
            4,
            IncompleteOperator {
                found: '=',
                expected: "==",
            },
        ),
        (
            r#"a =! "b""#,
            2,
            IncompleteOperator {
                found: '=',
                expected: "==",
            },
        ),
        (
            r#"a == "b" &&& c == "d""#,
            11,
            IncompleteOperator {
                found: '&',
                expected: "&&",
            },
        ),
        // has(), all(), global()
        ("has()", 4, ExpectedHasKey { found: txt(")") }),
        ("has( )", 5, ExpectedHasKey { found: txt(")") }),
        ("has(", 4, ExpectedHasKey { found: end() }),
        ("has('a')", 4, ExpectedHasKey { found: txt("'") }),
        ("has(foo", 7, UnclosedCall { function: "has" }),
        ("has( foo ", 9, UnclosedCall { function: "has" }),
        ("has(a b)", 6, UnclosedCall { function: "has" }),
        (r#"a == "b" && has(c"#, 17, UnclosedCall { function: "has" }),
        ("all(", 4, UnclosedCall { function: "all" }),
        ("all(x)", 4, UnclosedCall { function: "all" }),
        ("global(", 7, UnclosedCall { function: "global" }),
        // Characters outside the language (only space and tab are whitespace).
        ("%", 0, UnexpectedChar { found: '%' }),
        (r#"a == "b" && %"#, 12, UnexpectedChar { found: '%' }),
        (r#"a == "b" || %"#, 12, UnexpectedChar { found: '%' }),
        ("a == \"b\"\n", 8, UnexpectedChar { found: '\n' }),
        (
            "a == \"b\" &&\nc == \"d\"",
            11,
            UnexpectedChar { found: '\n' },
        ),
        ("\r\nhas(a)", 0, UnexpectedChar { found: '\r' }),
        ("\u{a0}a == \"b\"", 0, UnexpectedChar { found: '\u{a0}' }),
        (r#"é == "x""#, 0, UnexpectedChar { found: 'é' }),
        (r#"a == "é" && ü"#, 12, UnexpectedChar { found: 'ü' }),
        ("has(é)", 4, ExpectedHasKey { found: txt("é") }),
        (r#"a:b == "c""#, 1, ExpectedOperator { found: txt(":") }),
    ];
    let mut out: Vec<(String, usize, ErrorKind)> = cases
        .into_iter()
        .map(|(s, p, k)| (s.to_owned(), p, k))
        .collect();
    out.push((
        format!("{long} == \"v\""),
        0,
        LabelTooLong {
            len: MAX_LABEL_LENGTH + 1,
        },
    ));
    out.push((
        format!("has({long})"),
        4,
        LabelTooLong {
            len: MAX_LABEL_LENGTH + 1,
        },
    ));
    out.push((
        format!("has(a) && {long} == \"v\""),
        10,
        LabelTooLong {
            len: MAX_LABEL_LENGTH + 1,
        },
    ));
    out.push((deep, MAX_NESTING, TooDeep { limit: MAX_NESTING }));
    out
}

#[test]
fn invalid_selectors_report_position_and_expectation() {
    for (input, position, kind) in invalid_cases() {
        match Selector::parse(&input) {
            Ok(s) => panic!("{input:?} should be rejected, parsed as {s}"),
            Err(e) => {
                assert_eq!(e.kind, kind, "error kind for {input:?} ({e})");
                assert_eq!(e.position, position, "error position for {input:?} ({e})");
                assert_eq!(e.selector, input);
            }
        }
    }
}

#[test]
fn error_messages_name_selector_position_and_expectation() {
    let e = Selector::parse("a == ").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"selector "a == ": at position 5: expected a quoted string after "==", found end of selector"#
    );
    let e = Selector::parse("b == b").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"selector "b == b": at position 5: expected a quoted string after "==", found label "b" (a label can only be compared with a quoted string)"#
    );
    let e = Selector::parse("label inf 'x'").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"selector "label inf 'x'": at position 6: expected an operator after a label (==, !=, contains, starts with, ends with, in, not in), found "inf""#
    );
    let e = Selector::parse("(has(a) || has(b)").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"selector "(has(a) || has(b)": at position 17: expected ")" to close the "(" at position 0, found end of selector"#
    );
}

#[test]
fn positions_are_characters_and_offsets_are_bytes() {
    let e = Selector::parse(r#"a == "é" && ü"#).unwrap_err();
    assert_eq!((e.position, e.offset), (12, 13));
    let e = Selector::parse(r#"a == "日本" ||"#).unwrap_err();
    assert_eq!((e.position, e.offset), (12, 16));
    assert_eq!(e.kind, ErrorKind::ExpectedTerm { found: Found::End });
}

/// (selector, labels, expected match)
type EvalCase = (&'static str, &'static [(&'static str, &'static str)], bool);

const EVAL: &[EvalCase] = &[
    // Missing label: ==, contains, starts with, ends with, in are false; != and not in true.
    (r#"a == "x""#, &[], false),
    (r#"a == "x""#, &[("b", "x")], false),
    (r#"a == """#, &[], false),
    (r#"a != "x""#, &[], true),
    (r#"a != "x""#, &[("b", "x")], true),
    (r#"a != """#, &[], true),
    (r#"a contains "x""#, &[], false),
    (r#"a contains """#, &[], false),
    (r#"a starts with """#, &[], false),
    (r#"a ends with """#, &[], false),
    (r#"a starts with "x""#, &[("b", "x")], false),
    (r#"a ends with "x""#, &[("b", "x")], false),
    (r#"a in {"x"}"#, &[], false),
    ("a in {}", &[], false),
    (r#"a not in {"x"}"#, &[], true),
    ("a not in {}", &[], true),
    ("has(a)", &[], false),
    ("!has(a)", &[], true),
    (r#"!a == "x""#, &[], true),
    (r#"!a != "x""#, &[], false),
    (r#"!a in {"x"}"#, &[], true),
    (r#"!a not in {"x"}"#, &[], false),
    (r#"!a contains "x""#, &[], true),
    // Present label.
    (r#"a == "x""#, &[("a", "x")], true),
    (r#"a == "x""#, &[("a", "X")], false),
    (r#"a == "x""#, &[("a", "x ")], false),
    (r#"a == """#, &[("a", "")], true),
    (r#"a != "x""#, &[("a", "x")], false),
    (r#"a != "x""#, &[("a", "y")], true),
    (r#"a != """#, &[("a", "")], false),
    (r#"a contains "b""#, &[("a", "abc")], true),
    (r#"a contains "b""#, &[("a", "ac")], false),
    (r#"a contains "abc""#, &[("a", "ab")], false),
    (r#"a contains """#, &[("a", "")], true),
    (r#"a contains "é""#, &[("a", "café")], true),
    (r#"a starts with "ab""#, &[("a", "abc")], true),
    (r#"a starts with "ab""#, &[("a", "cab")], false),
    (r#"a starts with "ab""#, &[("a", "a")], false),
    (r#"a starts with """#, &[("a", "q")], true),
    (r#"a starts with "caf""#, &[("a", "café")], true),
    (r#"a ends with "bc""#, &[("a", "abc")], true),
    (r#"a ends with "bc""#, &[("a", "bca")], false),
    (r#"a ends with "é""#, &[("a", "café")], true),
    (r#"a in {"x", "y"}"#, &[("a", "y")], true),
    (r#"a in {"x", "y"}"#, &[("a", "z")], false),
    ("a in {}", &[("a", "x")], false),
    (r#"a in {""}"#, &[("a", "")], true),
    (r#"a not in {"x", "y"}"#, &[("a", "y")], false),
    (r#"a not in {"x", "y"}"#, &[("a", "z")], true),
    ("a not in {}", &[("a", "x")], true),
    (r#"a in {"'", '"', "c"}"#, &[("a", "'")], true),
    (r#"a in {"'", '"', "c"}"#, &[("a", "\"")], true),
    (r#"a not in {"'", '"', "c"}"#, &[("a", "e")], true),
    (r#"a not in {"'", '"', "c"}"#, &[("a", "c")], false),
    ("has(a)", &[("a", "")], true),
    ("!has(a)", &[("a", "b")], false),
    ("!!has(a)", &[], false),
    ("!!has(a)", &[("a", "")], true),
    (r#"a == 'say "hi"'"#, &[("a", "say \"hi\"")], true),
    (r#"A == "x""#, &[("a", "x")], false),
    (
        r#"contains contains "contains""#,
        &[("contains", "xcontainsy")],
        true,
    ),
    (
        r#"projectcalico.org/namespace == "ns1""#,
        &[("projectcalico.org/namespace", "ns1")],
        true,
    ),
    // all() and global() are true.
    ("", &[], true),
    ("", &[("a", "b")], true),
    ("all()", &[], true),
    ("global()", &[("a", "b")], true),
    ("!all()", &[], false),
    ("!global()", &[], false),
    // Precedence: ! binds one term, && over ||.
    ("has(a) || has(b) && has(c)", &[("a", "1")], true),
    ("has(a) || has(b) && has(c)", &[("b", "1")], false),
    (
        "has(a) || has(b) && has(c)",
        &[("b", "1"), ("c", "1")],
        true,
    ),
    ("(has(a) || has(b)) && has(c)", &[("a", "1")], false),
    (
        "(has(a) || has(b)) && has(c)",
        &[("a", "1"), ("c", "1")],
        true,
    ),
    ("!has(a) && has(b)", &[("b", "1")], true),
    ("!has(a) && has(b)", &[("a", "1"), ("b", "1")], false),
    ("!(has(a) && has(b))", &[("a", "1"), ("b", "1")], false),
    ("!(has(a) && has(b))", &[("a", "1")], true),
    (r#"!a == "x" && b == "y""#, &[("b", "y")], true),
    (r#"!(a == "x" && b == "y")"#, &[("b", "y")], true),
    (
        r#"!(a == "x" && b == "y")"#,
        &[("a", "x"), ("b", "y")],
        false,
    ),
    (r#"a == "b" || c == "d""#, &[("c", "d")], true),
    (r#"a == "b" || c == "d""#, &[("a", "c"), ("c", "e")], false),
    (
        r#"a != "a1" || b != "b1""#,
        &[("a", "a1"), ("b", "b1")],
        false,
    ),
    (
        r#"! a == "a1" || ! b == "b1""#,
        &[("a", "a1"), ("b", "b1")],
        false,
    ),
    (r#"! a == "a1" || ! b == "b1""#, &[("a", "a1")], true),
    ("!(!has(a) || has(b))", &[("a", "a")], true),
];

#[test]
fn evaluation_table() {
    for (text, pairs, expected) in EVAL {
        let sel = Selector::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let map = labels(pairs);
        assert_eq!(sel.matches(&map), *expected, "{text:?} against {pairs:?}");
        // The canonical text and the naive interpreter agree.
        let canon = Selector::parse(sel.canonical()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            canon.matches(&map),
            *expected,
            "canonical {} against {pairs:?}",
            sel.canonical()
        );
        assert_eq!(
            super::naive::eval(text, &map),
            Some(*expected),
            "naive {text:?} against {pairs:?}"
        );
    }
}

#[test]
fn label_chain_prefers_endpoint_then_profiles_in_order() {
    let endpoint = labels(&[("a", "1")]);
    let first = labels(&[("a", "2"), ("b", "2")]);
    let second = labels(&[("b", "3"), ("c", "3")]);
    let chain = LabelChain::new(&endpoint)
        .with_profile(&first)
        .with_profile(&second);
    let cases = [
        (r#"a == "1""#, true),
        (r#"a == "2""#, false),
        (r#"b == "2""#, true),
        (r#"b == "3""#, false),
        (r#"c == "3""#, true),
        ("has(d)", false),
        (r#"a != "2" && b in {"2"} && c starts with "3""#, true),
    ];
    for (text, expected) in cases {
        assert_eq!(
            Selector::parse(text).unwrap().matches(&chain),
            expected,
            "{text}"
        );
    }
    let mut alone = LabelChain::new(&endpoint);
    assert_eq!(alone.get("b"), None);
    alone.push_profile(&second);
    assert_eq!(alone.get("b"), Some("3"));
}

#[test]
fn selector_ids_match_calico() {
    // Vectors from libcalico-go/lib/selector/parser/parser_test.go.
    let vectors = [
        ("", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (" all() ", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (" (all() )", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (
            "! (has( b)||! has(a ))",
            "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q",
        ),
        (
            r#"! (a == "b"&&! c != "d")"#,
            "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w",
        ),
    ];
    for (text, id) in vectors {
        let sel = Selector::parse(text).unwrap();
        assert_eq!(sel.id(), id, "{text:?}");
        assert_eq!(sel.id().len(), 2 + 38);
    }
    assert_ne!(
        Selector::parse("has(a)").unwrap().id(),
        Selector::parse("has(b)").unwrap().id()
    );
}

#[test]
fn equality_ignores_spelling() {
    let a = Selector::parse("a=='x'").unwrap();
    let b = Selector::parse(r#"a == "x""#).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.id(), b.id());
    assert_ne!(a.source(), b.source());
    assert_ne!(a, Selector::parse(r#"a == "y""#).unwrap());
    assert_eq!("has(a)".parse::<Selector>().unwrap().to_string(), "has(a)");
    assert!("has(".parse::<Selector>().is_err());
}

#[test]
fn key_prefix_rewrites_every_key() {
    // Calico's PrefixVisitor test vectors.
    let cases = [
        ("k == 'v'", r#"visited/k == "v""#),
        ("k != 'v'", r#"visited/k != "v""#),
        ("k contains 'v'", r#"visited/k contains "v""#),
        ("k starts with 'v'", r#"visited/k starts with "v""#),
        ("k ends with 'v'", r#"visited/k ends with "v""#),
        (
            "k == 'v' && x == 'y'",
            r#"(visited/k == "v" && visited/x == "y")"#,
        ),
        (
            "k == 'v' || has(x)",
            r#"(visited/k == "v" || has(visited/x))"#,
        ),
        ("!(k == 'v')", r#"!visited/k == "v""#),
        ("k in {'v'}", r#"visited/k in {"v"}"#),
        ("k not in {'v'}", r#"visited/k not in {"v"}"#),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            r#"!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})"#,
        ),
    ];
    for (input, expected) in cases {
        let sel = Selector::parse(input).unwrap().with_key_prefix("visited/");
        assert_eq!(sel.canonical(), expected, "{input}");
        assert_eq!(sel.source(), expected);
    }
}

#[test]
fn namespace_selector_scope_follows_entity_rule_rewrite() {
    let cases = [
        ("all()", "has(projectcalico.org/namespace)"),
        ("", "has(projectcalico.org/namespace)"),
        ("global()", "!has(projectcalico.org/namespace)"),
        ("!global()", "has(projectcalico.org/namespace)"),
        ("!all()", "!has(projectcalico.org/namespace)"),
        ("name == 'prod'", r#"pcns.name == "prod""#),
        (
            "name == 'prod' && all()",
            r#"(pcns.name == "prod" && has(projectcalico.org/namespace))"#,
        ),
        (
            "has(env) || global()",
            "(has(pcns.env) || !has(projectcalico.org/namespace))",
        ),
        // A value spelled like a function is data, not syntax.
        (r#"a == "all()""#, r#"pcns.a == "all()""#),
    ];
    for (input, expected) in cases {
        let scoped = Selector::parse(input).unwrap().namespace_selector_scope();
        assert_eq!(scoped.canonical(), expected, "{input}");
        assert_eq!(
            Selector::parse(expected).unwrap(),
            scoped,
            "{expected} re-parses"
        );
    }
    let ns_labels = labels(&[("pcns.env", "x"), (NAMESPACE_LABEL, "ns1")]);
    let hep_labels = labels(&[("role", "host")]);
    let global = Selector::parse("global()")
        .unwrap()
        .namespace_selector_scope();
    assert!(!global.matches(&ns_labels));
    assert!(global.matches(&hep_labels));
    let all = Selector::parse("all()").unwrap().namespace_selector_scope();
    assert!(all.matches(&ns_labels));
    assert!(!all.matches(&hep_labels));
}

#[test]
fn service_account_scope_and_conjunction() {
    let sa = Selector::parse("role == 'db'")
        .unwrap()
        .service_account_selector_scope();
    assert_eq!(sa.canonical(), r#"pcsa.role == "db""#);
    let own = Selector::parse("app == 'x' && tier == 'y'").unwrap();
    let ns = Selector::parse("projectcalico.org/namespace == 'ns1'").unwrap();
    let both = own.and(&ns);
    // Same as Calico's text composition "(<a>) && (<b>)".
    assert_eq!(
        both,
        Selector::parse(&format!("({own}) && ({ns})")).unwrap()
    );
    assert_eq!(
        both.canonical(),
        r#"((app == "x" && tier == "y") && projectcalico.org/namespace == "ns1")"#
    );
    let m = labels(&[("app", "x"), ("tier", "y"), (NAMESPACE_LABEL, "ns1")]);
    assert!(both.matches(&m));
    assert!(!both.matches(&labels(&[
        ("app", "x"),
        ("tier", "y"),
        (NAMESPACE_LABEL, "ns2")
    ])));
}

#[test]
fn global_detection_and_label_keys() {
    let cases = [
        ("global()", true),
        ("has(a) && !global()", true),
        ("has(a) || (b == 'c' && global())", true),
        ("all()", false),
        ("global == 'x'", false),
        ("a == 'global()'", false),
    ];
    for (text, expected) in cases {
        assert_eq!(
            Selector::parse(text).unwrap().expr().contains_global(),
            expected,
            "{text}"
        );
    }
    let sel = Selector::parse("a == 'x' && (has(b) || !c in {'d'}) && a != 'y' && all()").unwrap();
    assert_eq!(
        sel.expr().label_keys().into_iter().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[test]
fn replacement_under_negation_cancels() {
    let sel = Selector::parse("!all() && !global()").unwrap();
    let has = Expr::Has("x".to_owned());
    let replaced = sel.replace_all_and_global(&has, &has.clone().negate());
    assert_eq!(replaced.canonical(), "(!has(x) && has(x))");
}
