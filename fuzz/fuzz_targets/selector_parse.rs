//! Fuzzes the selector parser: no input may panic it, and every accepted selector's canonical
//! text must re-parse to the same expression and print identically.
//!
//! Run from the repository root (nightly toolchain, `cargo install cargo-fuzz`):
//!
//! ```text
//! cargo +nightly fuzz run selector_parse fuzz/corpus/selector_parse fuzz/seeds/selector_parse \
//!     -- -dict=fuzz/selector_parse.dict -max_total_time=60
//! ```
//!
//! libFuzzer adds new inputs to the first directory (`fuzz/corpus/`, gitignored), so the
//! committed seeds stay as they are; crashes land in `fuzz/artifacts/selector_parse/`.
//! The dictionary holds the language's operators and keywords.

#![no_main]

use std::collections::BTreeMap;

use control::selector::{LabelChain, MAX_LABEL_LENGTH, NAMESPACE_KEY_PREFIX, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Selectors come from YAML/JSON strings, so only UTF-8 text can reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = Selector::parse(text) else {
        return;
    };
    let canonical = selector.canonical();
    let reparsed = match Selector::parse(canonical) {
        Ok(s) => s,
        Err(e) => panic!("canonical text of {text:?} does not parse: {e}"),
    };
    assert_eq!(
        reparsed.expr(),
        selector.expr(),
        "{text:?} -> {canonical:?}"
    );
    assert_eq!(reparsed.canonical(), canonical);
    assert_eq!(reparsed.id(), selector.id());

    // Evaluation and the scoping rewrites must not panic either, and a rewritten selector's
    // canonical text parses back to it unless the `pcns.` prefix pushed a key over the limit.
    let endpoint: BTreeMap<String, String> = [("a", "b"), ("projectcalico.org/namespace", "ns1")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let profile: BTreeMap<String, String> = [("pcns.a".to_owned(), String::new())].into();
    let labels = LabelChain::new(&endpoint).with_profile(&profile);
    let _ = selector.matches(&labels);
    let scoped = selector.namespace_selector_scope();
    if selector
        .expr()
        .label_keys()
        .iter()
        .all(|k| k.len() + NAMESPACE_KEY_PREFIX.len() <= MAX_LABEL_LENGTH)
    {
        match Selector::parse(scoped.canonical()) {
            Ok(s) => assert_eq!(&s, &scoped, "{text:?}"),
            Err(e) => panic!("scoped form of {text:?} does not parse: {e}"),
        }
    }
    let _ = scoped.and(&selector).matches(&labels);
});
