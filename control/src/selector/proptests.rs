//! Property tests.
//!
//! Random selectors are generated as a small test-local tree (`Gen`) whose meaning is known,
//! rendered to text with randomly chosen spellings (quote style, `startswith` / `starts with`,
//! `notin`, blanks, redundant parentheses, precedence instead of parentheses, `!!`), then:
//! - parsed and evaluated by the real parser and `Expr::matches`,
//! - evaluated from the text by the naive interpreter (`naive.rs`),
//! - evaluated directly from the tree,
//!
//! and all three must agree on random label maps. Canonical text must re-parse to the same
//! expression and print identically; arbitrary text must never panic the parser.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::naive;
use super::*;

/// Keys include operator words and function names, which are labels in key position.
const KEYS: &[&str] = &[
    "a", "b", "k8s-app", "x.y/z_1", "contains", "in", "not", "has", "all", "starts",
];
/// Values include both quote characters, blanks, non-ASCII, prefixes and suffixes of each other.
const VALUES: &[&str] = &["", "a", "b", "ab", "ba", "abc", "x'y", "q\"r", "é", " s p "];

#[derive(Clone, Copy, Debug)]
enum CmpOp {
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Clone, Debug)]
enum Gen {
    All,
    Global,
    Has(&'static str),
    Cmp(CmpOp, &'static str, &'static str),
    Set {
        negated: bool,
        key: &'static str,
        items: Vec<&'static str>,
    },
    Not(Box<Gen>),
    And(Vec<Gen>),
    Or(Vec<Gen>),
}

impl Gen {
    /// The intended meaning, straight from the tree.
    fn truth(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &str| labels.get(k).map(String::as_str);
        match self {
            Gen::All | Gen::Global => true,
            Gen::Has(k) => get(k).is_some(),
            Gen::Cmp(op, k, v) => match (op, get(k)) {
                (CmpOp::Ne, None) => true,
                (_, None) => false,
                (CmpOp::Eq, Some(x)) => x == *v,
                (CmpOp::Ne, Some(x)) => x != *v,
                (CmpOp::Contains, Some(x)) => x.contains(v),
                (CmpOp::StartsWith, Some(x)) => x.starts_with(v),
                (CmpOp::EndsWith, Some(x)) => x.ends_with(v),
            },
            Gen::Set {
                negated,
                key,
                items,
            } => {
                let member = get(key).is_some_and(|x| items.contains(&x));
                member != *negated
            }
            Gen::Not(g) => !g.truth(labels),
            Gen::And(gs) => gs.iter().all(|g| g.truth(labels)),
            Gen::Or(gs) => gs.iter().any(|g| g.truth(labels)),
        }
    }
}

fn gen_leaf() -> impl Strategy<Value = Gen> {
    let key = prop::sample::select(KEYS);
    let value = prop::sample::select(VALUES);
    let op = prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Contains),
        Just(CmpOp::StartsWith),
        Just(CmpOp::EndsWith)
    ];
    prop_oneof![
        1 => Just(Gen::All),
        1 => Just(Gen::Global),
        3 => key.clone().prop_map(Gen::Has),
        8 => (op, key.clone(), value.clone()).prop_map(|(op, k, v)| Gen::Cmp(op, k, v)),
        4 => (any::<bool>(), key, prop::collection::vec(value, 0..4))
            .prop_map(|(negated, key, items)| Gen::Set { negated, key, items }),
    ]
}

fn gen_tree() -> impl Strategy<Value = Gen> {
    gen_leaf().prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            1 => inner.clone().prop_map(|g| Gen::Not(Box::new(g))),
            2 => prop::collection::vec(inner.clone(), 2..4).prop_map(Gen::And),
            2 => prop::collection::vec(inner, 2..4).prop_map(Gen::Or),
        ]
    })
}

fn gen_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(str::to_owned),
        prop::sample::select(VALUES).prop_map(str::to_owned),
        0..6,
    )
}

/// Deterministic spelling choices for rendering.
struct Style(u64);

impl Style {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'s>(&mut self, options: &[&'s str]) -> &'s str {
        let n = options.len() as u64;
        options[(self.next() % n) as usize]
    }

    fn chance(&mut self, in_four: u64) -> bool {
        self.next() % 4 < in_four
    }

    /// Blanks that may be empty.
    fn blank(&mut self) -> &'static str {
        self.pick(&["", "", " ", " ", "\t", "  "])
    }

    /// Blanks that must separate two words.
    fn gap(&mut self) -> &'static str {
        self.pick(&[" ", " ", "\t", " \t "])
    }
}

fn quote(style: &mut Style, v: &str) -> String {
    let q = if v.contains('"') {
        '\''
    } else if v.contains('\'') || !style.chance(2) {
        '"'
    } else {
        '\''
    };
    format!("{q}{v}{q}")
}

/// Binding strength of the context a rendered node sits in.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Ctx {
    Top,
    OrOperand,
    AndOperand,
    NotOperand,
}

fn render(g: &Gen, style: &mut Style, ctx: Ctx) -> String {
    let needs_parens = match g {
        Gen::Or(_) => ctx > Ctx::OrOperand,
        Gen::And(_) => ctx > Ctx::AndOperand,
        _ => false,
    };
    let body = match g {
        Gen::All => format!("all({})", style.blank()),
        Gen::Global => format!("global({})", style.blank()),
        Gen::Has(k) => format!("has({}{k}{})", style.blank(), style.blank()),
        Gen::Cmp(op, k, v) => {
            let value = quote(style, v);
            let (sep, op_text) = match op {
                CmpOp::Eq => (style.blank(), "==".to_owned()),
                CmpOp::Ne => (style.blank(), "!=".to_owned()),
                CmpOp::Contains => (style.gap(), "contains".to_owned()),
                CmpOp::StartsWith => (style.gap(), format!("starts{}with", style.blank())),
                CmpOp::EndsWith => (style.gap(), format!("ends{}with", style.blank())),
            };
            format!("{k}{sep}{op_text}{}{value}", style.blank())
        }
        Gen::Set {
            negated,
            key,
            items,
        } => {
            let op = if *negated {
                format!("not{}in", style.blank())
            } else {
                "in".to_owned()
            };
            let mut body: Vec<String> = items.iter().map(|v| quote(style, v)).collect();
            if style.chance(1)
                && let Some(first) = body.first().cloned()
            {
                body.push(first);
            }
            let trailing = if !body.is_empty() && style.chance(1) {
                ","
            } else {
                ""
            };
            let sep = format!("{},{}", style.blank(), style.blank());
            format!(
                "{key}{}{op}{}{{{}{}{trailing}}}",
                style.gap(),
                style.blank(),
                body.join(&sep),
                style.blank()
            )
        }
        Gen::Not(inner) => format!(
            "!{}{}",
            style.blank(),
            render(inner, style, Ctx::NotOperand)
        ),
        Gen::And(gs) | Gen::Or(gs) => {
            let (op, child_ctx) = if matches!(g, Gen::And(_)) {
                ("&&", Ctx::AndOperand)
            } else {
                ("||", Ctx::OrOperand)
            };
            let parts: Vec<String> = gs.iter().map(|c| render(c, style, child_ctx)).collect();
            let sep = format!("{}{op}{}", style.blank(), style.blank());
            parts.join(&sep)
        }
    };
    if needs_parens || style.next().is_multiple_of(8) {
        format!("({}{body}{})", style.blank(), style.blank())
    } else {
        body
    }
}

fn render_top(g: &Gen, seed: u64) -> String {
    let mut style = Style(seed);
    format!(
        "{}{}{}",
        style.blank(),
        render(g, &mut style, Ctx::Top),
        style.blank()
    )
}

/// Expressions in parser shape, built directly (not through text).
fn expr_tree() -> impl Strategy<Value = Expr> {
    let key = prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_owned),
        "[A-Za-z0-9_./-]{1,12}",
    ];
    let value = prop_oneof![
        prop::sample::select(VALUES).prop_map(str::to_owned),
        "[^\"]{0,6}",
        "[^']{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key.clone().prop_map(Expr::Has),
        (key.clone(), value.clone()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
        (
            key.clone(),
            prop::collection::btree_set(value.clone(), 0..4)
        )
            .prop_map(|(k, s)| Expr::In(k, s)),
        (key, prop::collection::btree_set(value, 0..4)).prop_map(|(k, s)| Expr::NotIn(k, s)),
    ];
    leaf.prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Expr::negate),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_naive_interpreter_and_meaning_agree(
        g in gen_tree(),
        seed in any::<u64>(),
        label_maps in prop::collection::vec(gen_labels(), 1..6),
    ) {
        let text = render_top(&g, seed);
        let sel = Selector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for labels in &label_maps {
            let expected = g.truth(labels);
            prop_assert_eq!(sel.matches(labels), expected, "parser on {:?} with {:?}", text, labels);
            prop_assert_eq!(naive::eval(&text, labels), Some(expected), "naive on {:?} with {:?}", text, labels);
            prop_assert_eq!(naive::eval(sel.canonical(), labels), Some(expected), "naive on canonical {:?}", sel.canonical());
        }
    }

    #[test]
    fn canonical_text_reparses_to_the_same_selector(g in gen_tree(), seed in any::<u64>()) {
        let text = render_top(&g, seed);
        let sel = Selector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = Selector::parse(sel.canonical()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.expr(), sel.expr(), "{:?} -> {:?}", text, sel.canonical());
        prop_assert_eq!(again.canonical(), sel.canonical());
        prop_assert_eq!(again.id(), sel.id());
    }

    #[test]
    fn printed_expressions_reparse_exactly(e in expr_tree()) {
        let text = e.to_string();
        let parsed = Selector::parse(&text).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(parsed.expr(), &e, "{:?}", text);
        prop_assert_eq!(parsed.canonical(), text.as_str());
    }

    #[test]
    fn arbitrary_text_never_panics_and_round_trips_when_accepted(
        text in r#"[ \tab()!&|=,{}"'\-./_%\n]{0,40}|(has|all|global|in|not|contains|starts|with|ends|[ab]|[(){}!,"' \t]|==|!=|&&|\|\|)*"#
    ) {
        match Selector::parse(&text) {
            Ok(sel) => {
                let again = Selector::parse(sel.canonical()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again.expr(), sel.expr());
            }
            Err(e) => {
                prop_assert!(e.offset <= text.len());
                prop_assert_eq!(e.position, text[..e.offset].chars().count());
            }
        }
    }

    #[test]
    fn key_prefix_preserves_meaning_over_prefixed_labels(g in gen_tree(), seed in any::<u64>(), labels in gen_labels()) {
        let sel = Selector::parse(&render_top(&g, seed)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let prefixed: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (format!("pcns.{k}"), v.clone())).collect();
        prop_assert_eq!(sel.with_key_prefix("pcns.").matches(&prefixed), sel.matches(&labels));
    }

    #[test]
    fn label_chain_matches_like_the_merged_map(
        g in gen_tree(),
        seed in any::<u64>(),
        layers in prop::collection::vec(gen_labels(), 1..4),
    ) {
        let sel = Selector::parse(&render_top(&g, seed)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Merge with earlier layers winning.
        let mut merged = BTreeMap::new();
        for layer in layers.iter().rev() {
            merged.extend(layer.clone());
        }
        let mut chain = LabelChain::new(&layers[0]);
        for layer in &layers[1..] {
            chain.push_profile(layer);
        }
        prop_assert_eq!(sel.matches(&chain), sel.matches(&merged));
    }
}

#[test]
fn rendering_covers_the_spellings() {
    // Guard against the generator silently losing syntax variety.
    let g = Gen::And(vec![
        Gen::Cmp(CmpOp::StartsWith, "a", "x"),
        Gen::Set {
            negated: true,
            key: "b",
            items: vec!["y", "x"],
        },
        Gen::Or(vec![Gen::Has("in"), Gen::Not(Box::new(Gen::Global))]),
    ]);
    let texts: BTreeSet<String> = (0..200).map(|seed| render_top(&g, seed)).collect();
    let any = |needle: &str| texts.iter().any(|t| t.contains(needle));
    assert!(any("startswith") && any("starts with"));
    assert!(any("notin") && any("not in"));
    assert!(any("'x'") && any("\"x\""));
    assert!(any("\t"));
    assert!(any("((") || any("( ("), "redundant parentheses appear");
    assert!(
        texts.iter().any(|t| !t.contains("(has")),
        "precedence without parentheses appears"
    );
    for t in &texts {
        assert_eq!(
            Selector::parse(t).unwrap().canonical(),
            r#"(a starts with "x" && b not in {"x", "y"} && (has(in) || !global()))"#,
            "{t:?}"
        );
    }
}
