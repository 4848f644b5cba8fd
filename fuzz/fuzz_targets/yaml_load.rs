//! `cargo fuzz run yaml_load`: the resource loader must never panic on any bytes, as
//! YAML or as JSON, and whatever it accepts must hold the model's invariants: it
//! re-validates clean, defaulting is idempotent, and the store accepts it atomically.
#![no_main]

use control::model::{Format, defaults, load_text, validate};
use control::store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Non-UTF-8 goes through the byte reader, which must reject it cleanly.
        assert!(control::model::load_reader(data, "fuzz").is_err());
        return;
    };
    for format in [Format::Yaml, Format::Json] {
        let Ok(loaded) = load_text(text, "fuzz", format) else {
            continue;
        };
        for l in &loaded {
            assert!(validate::validate(&l.resource).is_empty(), "{l:?}");
            let mut again = l.resource.clone();
            defaults::apply(&mut again);
            assert_eq!(again, l.resource);
        }
        let mut store = Store::new();
        let before = store.len();
        match store.apply(loaded) {
            Ok(_) => {}
            Err(_) => assert_eq!(store.len(), before),
        }
    }
});
