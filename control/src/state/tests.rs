use std::path::PathBuf;

use proptest::prelude::*;

use super::*;
use crate::model::ResourceKey;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tiergate-state-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn resources(store: &Store) -> Vec<(ResourceKey, Resource, bool)> {
    store
        .entries()
        .map(|(k, s)| (k.clone(), s.resource.clone(), s.origin.is_some()))
        .collect()
}

fn store_of(yaml: &str) -> Store {
    policy::load_text(yaml, "test.yaml", Format::Yaml)
        .unwrap_or_else(|e| panic!("{}", e.lines().join("\n")))
        .store
}

const A: &str = r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block}
spec:
  tier: security
  selector: all()
  ingress:
  - action: Deny
    source: {nets: [192.0.2.0/24]}
"#;

const B: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: demo}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, "8000:8080"]}
"#;

fn three() -> [Store; 3] {
    let a = store_of(A);
    let b = store_of(B);
    let mut c = a.clone();
    c.apply(policy::read_text(B, "b.yaml", Format::Yaml).unwrap().items)
        .unwrap();
    [a, b, c]
}

fn gens_on_disk(dir: &Path) -> Vec<u64> {
    list(dir).unwrap().gens
}

#[test]
fn every_example_round_trips_through_a_generation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let set = policy::load_paths(&[&dir], false).unwrap();
        let bytes = encode(&set.store, 7);
        let g =
            decode(&bytes, 7, "gen-7.json").unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(
            resources(&g.store),
            resources(&set.store),
            "{}",
            dir.display()
        );
        assert_eq!(g.header.resources, set.counts.values().sum::<usize>());
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} examples");
}

#[test]
fn an_empty_directory_restores_nothing_then_commits_round_trip() {
    let t = TempDir::new("basic");
    let (mut sd, restored) = StateDir::open(&t.0).unwrap();
    assert!(restored.is_none());
    assert_eq!(sd.generation(), 0);
    let [a, b, c] = three();
    for (i, s) in [&a, &b, &c].into_iter().enumerate() {
        assert_eq!(sd.commit_store(s).unwrap(), i as u64 + 1);
    }
    // The newest two generations are kept.
    assert_eq!(gens_on_disk(&t.0), vec![3, 2]);
    drop(sd);
    let (sd, restored) = StateDir::open(&t.0).unwrap();
    assert_eq!(sd.generation(), 3);
    assert_eq!(resources(&restored.unwrap()), resources(&c));
    let mode = fs::metadata(&t.0).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_second_open_of_a_held_directory_is_refused_naming_it() {
    let t = TempDir::new("lock");
    let (_held, _) = StateDir::open(&t.0).unwrap();
    let e = StateDir::open(&t.0).unwrap_err();
    assert!(matches!(e, StateError::Locked { .. }), "{e}");
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains(&t.0.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // `repair` needs the lock too.
    assert!(matches!(
        repair(&t.0, false),
        Err(RepairError::State(StateError::Locked { .. }))
    ));
}

const STEPS: [Step; 6] = [
    Step::CreateTemp,
    Step::Write,
    Step::Fsync,
    Step::Rename,
    Step::FsyncDir,
    Step::Prune,
];

/// A crash at each step of a commit leaves the old generation (before the rename) or
/// the new one (after it) as what the next start restores, never a mix or nothing; and
/// the directory works on afterwards.
#[test]
fn a_crash_at_any_step_of_a_commit_leaves_the_old_or_the_new_generation() {
    let [a, b, c] = three();
    for step in STEPS {
        let t = TempDir::new("crash");
        let (mut sd, _) = StateDir::open(&t.0).unwrap();
        sd.commit_store(&a).unwrap();
        sd.commit_store(&b).unwrap();
        sd.inject = Some(Inject::Crash(step));
        let r = sd.commit_store(&c);
        // A crash at the prune is after the commit point: it reports success.
        assert_eq!(r.is_ok(), step == Step::Prune, "{step:?}");
        drop(sd);
        let (mut sd, restored) = StateDir::open(&t.0).unwrap_or_else(|e| panic!("{step:?}: {e}"));
        let restored = resources(&restored.unwrap());
        let expect = if matches!(
            step,
            Step::CreateTemp | Step::Write | Step::Fsync | Step::Rename
        ) {
            (2, resources(&b))
        } else {
            (3, resources(&c))
        };
        assert_eq!((sd.generation(), restored), expect, "{step:?}");
        // No temporary file survives the restart.
        assert!(list(&t.0).unwrap().temps.is_empty(), "{step:?}");
        // The next commit works, and pruning catches up.
        let n = sd.commit_store(&a).unwrap();
        assert_eq!(gens_on_disk(&t.0), vec![n, n - 1], "{step:?}");
        drop(sd);
        let (_, restored) = StateDir::open(&t.0).unwrap();
        assert_eq!(resources(&restored.unwrap()), resources(&a), "{step:?}");
    }
}

/// A failing step makes the commit fail with nothing of it kept (before the commit
/// point) and the daemon's directory usable at once.
#[test]
fn a_failure_at_any_step_keeps_nothing_of_the_failed_commit() {
    let [a, b, c] = three();
    for step in STEPS {
        let t = TempDir::new("fail");
        let (mut sd, _) = StateDir::open(&t.0).unwrap();
        sd.commit_store(&a).unwrap();
        sd.commit_store(&b).unwrap();
        sd.inject = Some(Inject::Fail(step));
        let r = sd.commit_store(&c);
        if step == Step::Prune {
            assert_eq!(r.unwrap(), 3);
            assert_eq!(gens_on_disk(&t.0), vec![3, 2, 1]);
        } else {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("injected failure"), "{step:?}: {e}");
            assert_eq!(sd.generation(), 2, "{step:?}");
            let l = list(&t.0).unwrap();
            assert_eq!(l.gens, vec![2, 1], "{step:?}");
            assert!(l.temps.is_empty(), "{step:?}");
        }
        sd.inject = None;
        let n = sd.commit_store(&c).unwrap();
        drop(sd);
        let (sd, restored) = StateDir::open(&t.0).unwrap();
        assert_eq!(sd.generation(), n);
        assert_eq!(resources(&restored.unwrap()), resources(&c), "{step:?}");
    }
}

/// Damage of every kind to the newest generation: the open fails naming the file and
/// the way out; `repair` moves it aside and the previous generation is restored.
#[test]
fn a_damaged_newest_generation_fails_the_open_and_repair_falls_back() {
    let [a, b, _] = three();
    type Damage = fn(&[u8]) -> Vec<u8>;
    let damages: [(&str, Damage, &str); 7] = [
        ("truncated", |x| x[..x.len() - 10].to_vec(), "truncated"),
        ("empty", |_| Vec::new(), "empty"),
        (
            "header only",
            |x| x[..x.iter().position(|&b| b == b'\n').unwrap() + 1].to_vec(),
            "truncated",
        ),
        ("no newline", |x| x[..20].to_vec(), "no header line"),
        (
            "flipped byte",
            |x| {
                let mut v = x.to_vec();
                let i = v.len() - 20;
                v[i] ^= 0x20;
                v
            },
            "SHA-256",
        ),
        (
            "garbage",
            |_| b"hello\nworld\n".to_vec(),
            "not a tiergate state header",
        ),
        (
            "other version",
            |x| {
                String::from_utf8_lossy(x)
                    .replacen("\"version\":1", "\"version\":9", 1)
                    .into_bytes()
            },
            "format version 9",
        ),
    ];
    for (what, damage, expect) in damages {
        let t = TempDir::new("corrupt");
        let (mut sd, _) = StateDir::open(&t.0).unwrap();
        sd.commit_store(&a).unwrap();
        sd.commit_store(&b).unwrap();
        drop(sd);
        let newest = t.0.join("gen-2.json");
        fs::write(&newest, damage(&fs::read(&newest).unwrap())).unwrap();
        let e = StateDir::open(&t.0).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 1, "{what}");
        assert!(msg.contains(&newest.display().to_string()), "{what}: {msg}");
        assert!(msg.contains(expect), "{what}: {msg}");
        assert!(msg.contains("tiergate state repair"), "{what}: {msg}");
        assert!(msg.contains("gen-1.json"), "{what}: {msg}");
        let report = check(&t.0).unwrap();
        assert!(!report.ok(), "{what}");
        assert_eq!(report.restores, None);
        let r = repair(&t.0, false).unwrap();
        assert_eq!(r.restores, Some(1), "{what}");
        assert_eq!(r.moved.len(), 1);
        assert_eq!(r.moved[0].to, t.0.join("corrupt/gen-2.json"));
        assert!(check(&t.0).unwrap().ok());
        let (mut sd, restored) = StateDir::open(&t.0).unwrap();
        assert_eq!(resources(&restored.unwrap()), resources(&a), "{what}");
        // The next commit is generation 2 again; a second repair would not overwrite
        // the first one's file in corrupt/.
        assert_eq!(sd.commit_store(&b).unwrap(), 2);
    }
}

#[test]
fn repair_with_nothing_valid_changes_nothing_unless_allowed() {
    let [a, ..] = three();
    let t = TempDir::new("nothing");
    let (mut sd, _) = StateDir::open(&t.0).unwrap();
    sd.commit_store(&a).unwrap();
    drop(sd);
    fs::write(t.0.join("gen-1.json"), b"").unwrap();
    fs::write(t.0.join(".gen-2.json.tmp"), b"partial").unwrap();
    let e = repair(&t.0, false).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("--allow-empty"), "{e}");
    assert_eq!(gens_on_disk(&t.0), vec![1]);
    assert_eq!(list(&t.0).unwrap().temps.len(), 1);
    let r = repair(&t.0, true).unwrap();
    assert_eq!(r.restores, None);
    assert_eq!(r.removed.len(), 1);
    let (_, restored) = StateDir::open(&t.0).unwrap();
    assert!(restored.is_none());
}

#[test]
fn an_older_damaged_generation_does_not_stop_the_open() {
    let [a, b, _] = three();
    let t = TempDir::new("older");
    let (mut sd, _) = StateDir::open(&t.0).unwrap();
    sd.commit_store(&a).unwrap();
    sd.commit_store(&b).unwrap();
    drop(sd);
    fs::write(t.0.join("gen-1.json"), b"junk").unwrap();
    let (_, restored) = StateDir::open(&t.0).unwrap();
    assert_eq!(resources(&restored.unwrap()), resources(&b));
    let report = check(&t.0).unwrap();
    assert!(report.ok());
    assert!(report.generations[1].problem.is_some());
}

#[test]
fn a_store_larger_than_a_restore_can_read_is_not_committed() {
    let [a, b, c] = three();
    let t = TempDir::new("large");
    let (mut sd, _) = StateDir::open(&t.0).unwrap();
    sd.max_resources = 2;
    sd.commit_store(&a).unwrap();
    let e = sd.commit_store(&c).unwrap_err();
    assert!(
        matches!(
            e,
            StateError::TooLarge {
                resources: 3,
                max: 2
            }
        ),
        "{e}"
    );
    assert_eq!(gens_on_disk(&t.0), vec![1]);
    assert_eq!(sd.commit_store(&b).unwrap(), 2);
}

#[test]
fn a_state_dir_that_is_a_file_is_refused() {
    let t = TempDir::new("file");
    fs::write(&t.0, b"x").unwrap();
    let e = StateDir::open(&t.0).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let _ = fs::remove_file(&t.0);
}

#[test]
fn generation_file_names() {
    assert_eq!(parse_gen("gen-12.json"), Some(12));
    for bad in [
        "gen-.json",
        "gen-01.json",
        "gen-1.yaml",
        "xgen-1.json",
        "gen-1a.json",
    ] {
        assert_eq!(parse_gen(bad), None, "{bad}");
    }
}

// ---------------------------------------------------------------------------------
// Random stores: commit then open round-trips.

const SELECTORS: [&str; 5] = ["all()", "app == 'web'", "has(db)", "role in {'a', 'b'}", ""];
const NETS: [&str; 4] = ["10.0.0.0/8", "192.0.2.1/32", "172.16.0.0/12", "0.0.0.0/0"];

#[derive(Clone, Debug)]
struct GenRule {
    action: &'static str,
    protocol: Option<&'static str>,
    ports: Vec<(u16, Option<u16>)>,
    nets: Vec<usize>,
    not_selector: Option<usize>,
}

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        prop::sample::select(vec!["Allow", "Deny", "Pass", "Log"]),
        prop::option::of(prop::sample::select(vec!["TCP", "UDP", "SCTP"])),
        prop::collection::vec((1u16..60000, prop::option::of(0u16..5000)), 0..3),
        prop::collection::vec(0..NETS.len(), 0..3),
        prop::option::of(0..SELECTORS.len() - 1),
    )
        .prop_map(|(action, protocol, ports, nets, not_selector)| GenRule {
            action,
            protocol,
            ports: if protocol.is_some() {
                ports
            } else {
                Vec::new()
            },
            nets,
            not_selector,
        })
}

fn rule_yaml(r: &GenRule) -> String {
    let mut s = format!("  - action: {}\n", r.action);
    if let Some(p) = r.protocol {
        s += &format!("    protocol: {p}\n");
    }
    if !r.nets.is_empty() || r.not_selector.is_some() {
        s += "    source:\n";
    }
    if !r.nets.is_empty() {
        let nets: Vec<&str> = r.nets.iter().map(|&i| NETS[i]).collect();
        s += &format!("      nets: [{}]\n", nets.join(", "));
    }
    if let Some(i) = r.not_selector {
        s += &format!("      notSelector: \"{}\"\n", SELECTORS[i]);
    }
    if !r.ports.is_empty() {
        s += "    destination:\n";
        let ports: Vec<String> = r
            .ports
            .iter()
            .map(|&(a, w)| match w {
                None => a.to_string(),
                Some(w) => format!("\"{a}:{}\"", a.saturating_add(w)),
            })
            .collect();
        s += &format!("      ports: [{}]\n", ports.join(", "));
    }
    s
}

/// (tier index, kind, order, selector, ingress, egress)
type GenPolicy = (usize, u8, Option<f64>, usize, Vec<GenRule>, Vec<GenRule>);

#[derive(Clone, Debug)]
struct GenSet {
    tiers: Vec<Option<f64>>,
    policies: Vec<GenPolicy>,
    sets: Vec<(Vec<usize>, bool)>,
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1000i32..1000).prop_map(f64::from),
        prop::num::f64::NORMAL.prop_filter("bounded", |x| x.abs() < 1e300),
        prop::num::f64::NORMAL.prop_map(|x| x.fract()),
    ]
}

fn gen_set() -> impl Strategy<Value = GenSet> {
    (
        prop::collection::vec(prop::option::of(finite()), 0..4),
        prop::collection::vec(
            (
                0usize..8,
                0u8..4,
                prop::option::of(finite()),
                0..SELECTORS.len(),
                prop::collection::vec(gen_rule(), 0..3),
                prop::collection::vec(gen_rule(), 0..3),
            ),
            0..6,
        ),
        prop::collection::vec(
            (prop::collection::vec(0..NETS.len(), 1..3), any::<bool>()),
            0..3,
        ),
    )
        .prop_map(|(tiers, policies, sets)| GenSet {
            tiers,
            policies,
            sets,
        })
}

fn set_yaml(g: &GenSet) -> String {
    let mut docs = Vec::new();
    for (i, order) in g.tiers.iter().enumerate() {
        let order = order.map_or(String::new(), |o| format!("\n  order: {o:?}"));
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: t{i}}}\nspec:{order}\n  defaultAction: {}\n",
            if i % 2 == 0 { "Deny" } else { "Pass" }
        ));
    }
    for (j, (tier, kind, order, sel, ingress, egress)) in g.policies.iter().enumerate() {
        let tier = if g.tiers.is_empty() {
            None
        } else {
            Some(tier % g.tiers.len())
        };
        let (kind, ns) = match kind {
            0 => ("GlobalNetworkPolicy", ""),
            1 => ("NetworkPolicy", "\n  namespace: demo"),
            2 => ("StagedGlobalNetworkPolicy", ""),
            _ => ("StagedNetworkPolicy", "\n  namespace: other"),
        };
        let name = tier.map_or(format!("p{j}"), |t| format!("t{t}.p{j}"));
        let mut s = format!(
            "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: {name}{ns}\n  labels: {{n: \"{j}\"}}\nspec:\n"
        );
        if let Some(t) = tier {
            s += &format!("  tier: t{t}\n");
        }
        if let Some(o) = order {
            s += &format!("  order: {o:?}\n");
        }
        s += &format!("  selector: \"{}\"\n", SELECTORS[*sel]);
        if !ingress.is_empty() {
            s += "  ingress:\n";
            for r in ingress {
                s += &rule_yaml(r);
            }
        }
        if !egress.is_empty() {
            s += "  egress:\n";
            for r in egress {
                s += &rule_yaml(r);
            }
        }
        docs.push(s);
    }
    for (k, (nets, global)) in g.sets.iter().enumerate() {
        let nets: Vec<&str> = nets.iter().map(|&i| NETS[i]).collect();
        let (kind, ns) = if *global {
            ("GlobalNetworkSet", "")
        } else {
            ("NetworkSet", ", namespace: demo")
        };
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: s{k}{ns}, labels: {{trust: x}}}}\nspec:\n  nets: [{}]\n",
            nets.join(", ")
        ));
    }
    docs.join("---\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Commit then open gives back the same store, for random stores.
    #[test]
    fn commit_then_open_round_trips(g in gen_set()) {
        let yaml = set_yaml(&g);
        let store = match policy::load_text(&yaml, "gen.yaml", Format::Yaml) {
            Ok(s) => s.store,
            Err(e) => {
                // The generator writes valid sets; a refusal is a generator bug.
                panic!("{}\n{yaml}", e.lines().join("\n"));
            }
        };
        let t = TempDir::new("prop");
        let (mut sd, _) = StateDir::open(&t.0).unwrap();
        sd.commit_store(&store).unwrap();
        drop(sd);
        let (_, restored) = StateDir::open(&t.0).unwrap();
        prop_assert_eq!(resources(&restored.unwrap()), resources(&store));
    }
}

/// Commit and restore times of a 10 000-policy store (a measurement, not a check):
/// `cargo test --release -p control --lib state::tests::commit_and_restore_times -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run by hand in release mode"]
// The number goes to the test harness's captured output (`--nocapture`).
#[allow(clippy::disallowed_macros)]
fn commit_and_restore_times() {
    use std::time::Instant;
    let n = 10_000;
    let mut yaml = String::new();
    for i in 0..n {
        yaml += &format!(
            "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p{i}}}\nspec:\n  order: {i}\n  selector: app == 'a{}'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{nets: [10.{}.{}.0/24]}}\n    destination: {{ports: [{}]}}\n",
            i % 100,
            i / 256 % 256,
            i % 256,
            1 + i % 60000
        );
    }
    let store = store_of(&yaml);
    let t = TempDir::new("timing");
    let (mut sd, _) = StateDir::open(&t.0).unwrap();
    let mut commits = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        sd.commit_store(&store).unwrap();
        commits.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let bytes = fs::metadata(t.0.join(file_name(sd.generation())))
        .unwrap()
        .len();
    drop(sd);
    let mut encodes = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let b = encode(&store, 1);
        encodes.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(!b.is_empty());
    }
    let mut opens = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let (_sd, restored) = StateDir::open(&t.0).unwrap();
        opens.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(restored.unwrap().len(), store.len());
    }
    for v in [&mut commits, &mut encodes, &mut opens] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "{n} policies, {bytes} bytes per generation: commit median {:.1} ms (min {:.1}, max {:.1}), of which encode median {:.1} ms; open+restore median {:.1} ms",
        commits[commits.len() / 2],
        commits[0],
        commits[commits.len() - 1],
        encodes[encodes.len() / 2],
        opens[opens.len() / 2]
    );
}

#[test]
fn the_keys_from_the_files_survive_a_restart_and_old_headers_have_none() {
    let t = TempDir::new("files");
    let (mut sd, _) = StateDir::open(&t.0).unwrap();
    let mut s = store_of(A);
    let keys: std::collections::BTreeSet<ResourceKey> = s
        .entries()
        .filter(|(_, e)| e.origin.is_some())
        .map(|(k, _)| k.clone())
        .take(1)
        .collect();
    assert_eq!(keys.len(), 1);
    s.set_file_keys(keys.clone());
    sd.commit_store(&s).unwrap();
    // No keys from files: no `files` in the header, as files written before it.
    sd.commit_store(&store_of(A)).unwrap();
    let text = fs::read_to_string(t.0.join(file_name(2))).unwrap();
    assert!(!text.lines().next().unwrap().contains("files"), "{text}");
    drop(sd);
    let (mut sd, restored) = StateDir::open(&t.0).unwrap();
    assert!(restored.unwrap().file_keys().is_empty());
    sd.commit_store(&s).unwrap();
    drop(sd);
    let (_, restored) = StateDir::open(&t.0).unwrap();
    let restored = restored.unwrap();
    assert_eq!(*restored.file_keys(), keys);
    assert_eq!(resources(&restored), resources(&s));
}
