use std::fs;

use super::*;
use crate::model::Kind;

const TIER: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  order: 100
";

const GNP: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: security.deny-db
spec:
  tier: security
  order: 10
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
";

const NP_NO_NAMESPACE: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
";

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tiergate-policy-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn load_text_builds_store_counts_and_cluster() {
    let set = load_text(&format!("{TIER}---\n{GNP}"), "<socket>", Format::Yaml).unwrap();
    assert_eq!(set.counts.get(&Kind::Tier), Some(&1));
    assert_eq!(set.counts.get(&Kind::GlobalNetworkPolicy), Some(&1));
    assert!(set.store.tier("security").is_some());
    assert!(set.notes.is_empty());
}

#[test]
fn load_paths_reads_files_and_keeps_notes() {
    let d = tempdir("paths");
    fs::write(d.join("a.yaml"), TIER).unwrap();
    fs::write(d.join("b.yaml"), format!("{GNP}---\n{NP_NO_NAMESPACE}")).unwrap();
    let set = load_paths(&[&d], false).unwrap();
    assert_eq!(set.counts.values().sum::<usize>(), 3);
    assert_eq!(set.notes.len(), 1, "{:?}", set.notes);
    assert!(set.notes[0].contains("b.yaml: note: 1 namespaced resource"));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn apply_is_all_or_nothing_on_a_non_empty_store() {
    let mut set = load_text(TIER, "<seed>", Format::Yaml).unwrap();
    let generation = set.store.generation();
    // One good policy and one naming a tier nobody defines: nothing is applied.
    let bad = GNP
        .replace("security.deny-db", "missing.x")
        .replace("tier: security", "tier: missing");
    let read = read_text(&format!("{GNP}---\n{bad}"), "<socket>", Format::Yaml).unwrap();
    let e = apply(&mut set.store, read.items).unwrap_err();
    assert!(matches!(e, PolicyError::Rejected { .. }), "{e:?}");
    assert_eq!(e.exit_code(), EXIT_INVALID);
    let lines = e.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("<socket>:2: "), "{}", lines[0]);
    assert!(lines[0].contains("missing"), "{}", lines[0]);
    assert_eq!(set.store.generation(), generation);
    assert_eq!(set.store.counts().get(&Kind::GlobalNetworkPolicy), None);

    // The good one alone goes in, on top of what the store held.
    let read = read_text(GNP, "<socket>", Format::Yaml).unwrap();
    apply(&mut set.store, read.items).unwrap();
    assert_eq!(set.store.counts().get(&Kind::GlobalNetworkPolicy), Some(&1));
    assert_eq!(set.store.counts().get(&Kind::Tier), Some(&1));
    assert!(cluster(&set.store).is_ok());
}

#[test]
fn invalid_text_lists_file_doc_field_reason() {
    let bad = GNP.replace("action: Deny", "action: Drop");
    let e = load_text(&format!("{TIER}---\n{bad}"), "in.yaml", Format::Yaml).unwrap_err();
    assert!(matches!(e, PolicyError::Invalid(_)), "{e:?}");
    assert_eq!(e.exit_code(), EXIT_INVALID);
    let p = &e.problems()[0];
    assert_eq!(p.source, "in.yaml");
    assert_eq!(p.document, Some(2));
    assert_eq!(p.field.as_deref(), Some("spec.ingress[0].action"));
    assert!(
        p.message.starts_with("in.yaml:2: spec.ingress[0].action: "),
        "{}",
        p.message
    );
    assert_eq!(e.to_string(), p.message);
    // The source error is kept.
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn missing_path_is_unreadable_exit_2() {
    let d = tempdir("missing");
    let e = load_paths(&[d.join("nope.yaml")], false).unwrap_err();
    assert!(matches!(e, PolicyError::Unreadable(_)), "{e:?}");
    assert!(e.is_unreadable());
    assert_eq!(e.exit_code(), EXIT_UNREADABLE);
    assert!(e.lines()[0].contains("nope.yaml"), "{:?}", e.lines());
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn empty_set_is_an_error_unless_allowed() {
    let d = tempdir("empty");
    let e = load_paths(&[&d], false).unwrap_err();
    assert!(matches!(e, PolicyError::Empty(_)), "{e:?}");
    assert_eq!(e.exit_code(), EXIT_INVALID);
    assert!(e.to_string().contains("no resources found"), "{e}");
    assert!(e.to_string().contains("--allow-empty"), "{e}");
    let set = load_paths(&[&d], true).unwrap();
    assert!(set.counts.is_empty());
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn rejected_keeps_notes() {
    let read = Read {
        notes: vec!["f: note".to_string()],
        ..read_text(GNP, "f", Format::Yaml).unwrap()
    };
    let e = build(read).unwrap_err();
    assert_eq!(e.notes(), ["f: note".to_string()]);
}

#[test]
fn delete_is_all_or_nothing() {
    let mut set = load_text(&format!("{TIER}---\n{GNP}"), "<seed>", Format::Yaml).unwrap();
    let gnp = set
        .store
        .resources()
        .find(|r| r.kind() == Kind::GlobalNetworkPolicy)
        .unwrap()
        .key();
    let tier = set
        .store
        .resources()
        .find(|r| r.kind() == Kind::Tier && r.key().name == "security")
        .unwrap()
        .key();
    let missing = ResourceKey {
        name: "nope".to_string(),
        ..gnp.clone()
    };
    // One key that exists and one that does not: nothing is deleted.
    let e = delete(&mut set.store, &[gnp.clone(), missing]).unwrap_err();
    assert!(matches!(e, PolicyError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(set.store.counts().get(&Kind::GlobalNetworkPolicy), Some(&1));
    // Both the policy and its tier go together.
    delete(&mut set.store, &[gnp, tier]).unwrap();
    assert!(set.store.counts().is_empty());
}

/// `check_paths` (resources dropped once validated) and the full path it stands for
/// (`read_paths` then `store`) agree on every set: verdict, problems, counts and notes.
#[test]
fn check_paths_agrees_with_reading_and_storing() {
    let full = |paths: &[std::path::PathBuf], allow_empty: bool| {
        read_paths(paths, allow_empty)
            .and_then(store)
            .map(|s| (s.counts, s.notes))
            .map_err(|e| (e.problems(), e.notes().to_vec(), e.exit_code()))
    };
    let checked = |paths: &[std::path::PathBuf], allow_empty: bool| {
        check_paths(paths, allow_empty)
            .map(|c| (c.counts, c.notes))
            .map_err(|e| (e.problems(), e.notes().to_vec(), e.exit_code()))
    };
    let d = tempdir("check-paths");
    let sets: &[(&str, String)] = &[
        ("valid", format!("{TIER}---\n{GNP}---\n{NP_NO_NAMESPACE}")),
        ("missing-tier", format!("{GNP}---\n{NP_NO_NAMESPACE}")),
        ("twice", format!("{TIER}---\n{TIER}")),
        ("invalid", format!("{GNP}---\nkind: Tier\n---\n{TIER}---\na: [")),
        ("empty", "# nothing\n".to_string()),
        (
            "builtin-tier",
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {order: 1000000, defaultAction: Deny}\n".to_string(),
        ),
        (
            "k8s",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k}\nspec: {podSelector: {}}\n".to_string(),
        ),
    ];
    let mut all = Vec::new();
    for (name, text) in sets {
        let path = d.join(format!("{name}.yaml"));
        fs::write(&path, text).expect("write");
        for allow_empty in [false, true] {
            let paths = [path.clone()];
            assert_eq!(
                checked(&paths, allow_empty),
                full(&paths, allow_empty),
                "{name}"
            );
        }
        all.push(path);
    }
    // Several files as one set, a directory, a missing path, every example.
    assert_eq!(checked(&all, false), full(&all, false));
    let dir = std::slice::from_ref(&d);
    assert_eq!(checked(dir, false), full(dir, false));
    let missing = [d.join("missing.yaml")];
    assert_eq!(checked(&missing, false), full(&missing, false));
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in fs::read_dir(&examples).expect("examples") {
        let paths = [entry.expect("entry").path()];
        assert_eq!(
            checked(&paths, false),
            full(&paths, false),
            "{}",
            paths[0].display()
        );
    }
    let _ = fs::remove_dir_all(&d);
}
