//! `cargo fuzz run yaml_load`: the resource loader must never panic on any bytes, as
//! YAML or as JSON, and whatever it accepts must hold the model's invariants: it
//! re-validates clean and defaulting is idempotent. The store takes it all or nothing,
//! on an empty store and on one already holding a resource of every kind (the seeds),
//! so the input also replaces and conflicts with stored resources: an accepted apply
//! stores exactly the input and leaves every other resource as it was, applying it
//! again changes nothing, deleting its keys (and some stored ones) is all-or-nothing too,
//! and a refused apply or delete leaves the store byte-for-byte as it was. The same
//! documents given as YAML and as JSON load alike.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use control::model::{Format, Loaded, ResourceKey, defaults, load_text, validate};
use control::store::Store;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A store holding every seed (a resource of every kind).
fn seeded() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut items = Vec::new();
        for (text, format) in [
            (include_str!("../seeds/yaml_load/gnp.json"), Format::Json),
            (include_str!("../seeds/yaml_load/k8s.yaml"), Format::Yaml),
            (
                include_str!("../seeds/yaml_load/namespaced.yaml"),
                Format::Yaml,
            ),
            (
                include_str!("../seeds/yaml_load/tier_and_staged.yaml"),
                Format::Yaml,
            ),
        ] {
            items.extend(load_text(text, "seed", format).expect("the seeds load"));
        }
        let mut store = Store::new();
        store.apply(items).expect("the seeds apply");
        store
    })
}

/// Everything a store holds, for "unchanged" checks.
fn image(s: &Store) -> String {
    format!("{s:?}")
}

fn check_store(store: &mut Store, loaded: &[Loaded], pick: u8) {
    let before = image(store);
    let generation = store.generation();
    let len = store.len();
    let keys: BTreeSet<ResourceKey> = loaded.iter().map(|l| l.resource.key()).collect();
    let old: Vec<(ResourceKey, control::store::Stored)> = store
        .entries()
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let summary = match store.apply(loaded.to_vec()) {
        Ok(s) => s,
        Err(_) => {
            assert_eq!(image(store), before, "a refused apply changed the store");
            return;
        }
    };
    assert_eq!(
        summary.created + summary.updated + summary.unchanged,
        loaded.len()
    );
    assert_eq!(store.len(), len + summary.created);
    let changed = u64::from(summary.created + summary.updated > 0);
    assert_eq!(store.generation(), generation + changed);
    for l in loaded {
        assert_eq!(store.get(&l.resource.key()), Some(&l.resource));
    }
    for (k, s) in &old {
        if !keys.contains(k) {
            assert_eq!(store.entry(k), Some(s), "{k} changed");
        }
    }

    // The same apply again: nothing changes.
    let after = image(store);
    let again = store.apply(loaded.to_vec()).expect("the same apply again");
    assert_eq!(
        (again.created, again.updated, again.unchanged),
        (0, 0, loaded.len())
    );
    assert_eq!(image(store), after);

    // Delete the applied keys and a few stored ones: all of them go, or nothing does.
    let mut doomed: Vec<ResourceKey> = keys.iter().cloned().collect();
    doomed.extend(
        old.iter()
            .enumerate()
            .filter(|(i, _)| pick & (1 << (i % 8)) != 0)
            .map(|(_, (k, _))| k.clone()),
    );
    let unique: BTreeSet<&ResourceKey> = doomed.iter().collect();
    let generation = store.generation();
    match store.delete(&doomed) {
        Ok(n) => {
            assert_eq!(n, unique.len());
            assert!(unique.iter().all(|k| store.get(k).is_none()));
            assert_eq!(store.generation(), generation + u64::from(n > 0));
        }
        Err(_) => assert_eq!(image(store), after, "a refused delete changed the store"),
    }
}

/// The YAML stream's documents as JSON values, the way the loader reads them (YAML 1.2
/// core schema); `None` when they cannot all be read.
fn yaml_documents(text: &str) -> Option<Vec<Value>> {
    let mut opts = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_nodes: 1_000_000,
        },
        strict_booleans: true,
    };
    opts.alias_limits.max_total_replayed_events = 100_000;
    serde_saphyr::from_multiple_with_options::<Value>(text, opts).ok()
}

fn resources(loaded: &[Loaded]) -> Vec<&control::model::Resource> {
    loaded.iter().map(|l| &l.resource).collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Non-UTF-8 goes through the byte reader, which must reject it cleanly.
        assert!(control::model::load_reader(data, "fuzz").is_err());
        return;
    };
    let pick = data.first().copied().unwrap_or(0);
    let mut as_yaml = None;
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
        check_store(&mut Store::new(), &loaded, pick);
        check_store(&mut seeded().clone(), &loaded, pick);
        if format == Format::Yaml {
            as_yaml = Some(loaded);
        }
    }

    // The same documents as a JSON stream load alike.
    if let Some(docs) = yaml_documents(text) {
        let json: Vec<String> = docs
            .iter()
            .map(|d| serde_json::to_string(d).expect("a JSON value prints"))
            .collect();
        let as_json = load_text(&json.join("\n"), "fuzz", Format::Json);
        match (&as_yaml, &as_json) {
            (Some(y), Ok(j)) => assert_eq!(resources(y), resources(j)),
            (Some(_), Err(e)) => panic!("loads as YAML, not as JSON: {e:?}\n{json:?}"),
            (None, Ok(_)) => panic!("loads as JSON, not as YAML: {json:?}"),
            (None, Err(_)) => {}
        }
    }
});
