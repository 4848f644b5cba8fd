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
