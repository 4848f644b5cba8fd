use std::io::Cursor;

use super::*;
use crate::model::types::{PolicyType, Protocol, StagedAction};

fn errs(text: &str) -> Vec<String> {
    match load_str(text, "f.yaml") {
        Ok(v) => panic!("expected errors, loaded {v:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn ok(text: &str) -> Vec<Loaded> {
    match load_str(text, "f.yaml") {
        Ok(v) => v,
        Err(e) => panic!("expected success:\n{e}"),
    }
}

const NP: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-tcp-6379
  namespace: prod
spec:
  tier: default
  order: 100
  selector: role == 'db'
  ingress:
  - action: Allow
    protocol: tcp
    source:
      selector: role == 'frontend'
    destination:
      ports: [6379, \"7000:7010\", redis]
";

const TIER: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
";

/// A minimal valid NetworkPolicy named `name`.
fn np(name: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: {name}}}\n")
}

#[test]
fn loads_a_policy_with_defaults_applied() {
    let v = ok(NP);
    assert_eq!(v.len(), 1);
    assert_eq!(
        v[0].origin,
        Origin {
            source: "f.yaml".into(),
            document: 1,
            item: None
        }
    );
    let Resource::NetworkPolicy(o) = &v[0].resource else {
        panic!("wrong kind")
    };
    assert_eq!(o.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(o.spec.order, Some(100.0));
    assert_eq!(o.spec.types.as_deref(), Some(&[PolicyType::Ingress][..]));
    assert_eq!(o.spec.ingress[0].protocol, Some(Protocol(6)));
    assert_eq!(
        o.spec.ingress[0].destination.ports,
        vec![
            crate::model::types::Port::Number(6379),
            crate::model::types::Port::Range(7000, 7010),
            crate::model::types::Port::Named("redis".into()),
        ]
    );
    assert_eq!(
        o.metadata
            .labels
            .get("projectcalico.org/tier")
            .map(String::as_str),
        Some("default")
    );
}

#[test]
fn parse_str_does_not_default() {
    let v = parse_str(&np("p"), "f.yaml").unwrap();
    assert_eq!(v[0].resource.metadata().namespace, None);
}

#[test]
fn multi_document_numbering_counts_empty_documents() {
    let text = format!(
        "---\n---\n{}---\n# only a comment\n---\n{}",
        np("a"),
        np("b")
    );
    let v = ok(&text);
    let docs: Vec<usize> = v.iter().map(|l| l.origin.document).collect();
    assert_eq!(docs, vec![2, 4]);
}

#[test]
fn empty_input_loads_nothing() {
    assert!(ok("").is_empty());
    assert!(ok("---\n").is_empty());
    assert!(ok("# comment\n---\n~\n---\nnull\n").is_empty());
}

#[test]
fn every_error_is_reported_and_nothing_is_loaded() {
    let text = format!(
        "{}---\nkind: Foo\napiVersion: v9\n---\n{}---\n{}",
        np("good"),
        np("Bad_Name"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {a: 1}\n"
    );
    assert_eq!(
        errs(&text),
        vec![
            "f.yaml:2: kind: unknown kind \"Foo\" (apiVersion \"v9\"); accepted: projectcalico.org/v3 NetworkPolicy, projectcalico.org/v3 GlobalNetworkPolicy, projectcalico.org/v3 StagedNetworkPolicy, projectcalico.org/v3 StagedGlobalNetworkPolicy, projectcalico.org/v3 StagedKubernetesNetworkPolicy, networking.k8s.io/v1 NetworkPolicy, projectcalico.org/v3 Tier, projectcalico.org/v3 NetworkSet, projectcalico.org/v3 GlobalNetworkSet, projectcalico.org/v3 HostEndpoint, projectcalico.org/v3 WorkloadEndpoint, projectcalico.org/v3 Profile, v1 Namespace, and List",
            "f.yaml:3: metadata.name: invalid name \"Bad_Name\": expected lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form), or a knp.default./ossg.default. prefix (regex ^(L(\\.L)?|(knp|ossg)\\.default\\.L(\\.L)*)$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)",
            "f.yaml:4: metadata.labels.a: invalid type: integer `1`, expected a string",
        ]
    );
}

#[test]
fn wrong_api_version_for_a_known_kind() {
    assert_eq!(
        errs("apiVersion: projectcalico.org/v2\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\n"),
        vec![
            "f.yaml:1: apiVersion: apiVersion \"projectcalico.org/v2\" is not accepted for kind GlobalNetworkPolicy; expected projectcalico.org/v3"
        ]
    );
    assert_eq!(
        errs("apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: a}\n"),
        vec![
            "f.yaml:1: apiVersion: apiVersion \"v1\" is not accepted for kind NetworkPolicy; expected projectcalico.org/v3 or networking.k8s.io/v1"
        ]
    );
}

#[test]
fn missing_or_mistyped_type_meta() {
    assert_eq!(
        errs("kind: Tier\nmetadata: {name: a}\n"),
        vec![
            "f.yaml:1: apiVersion: missing field `apiVersion`: every resource needs apiVersion and kind"
        ]
    );
    assert_eq!(
        errs("apiVersion: projectcalico.org/v3\nkind: [Tier]\n"),
        vec!["f.yaml:1: kind: invalid type: a sequence, expected a string"]
    );
    assert_eq!(
        errs("just a string\n"),
        vec![
            "f.yaml:1: expected a resource (a mapping with apiVersion, kind, metadata and spec), found a string"
        ]
    );
}

#[test]
fn unknown_and_mistyped_fields_name_their_path() {
    let base =
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n";
    assert_eq!(
        errs(&format!("{base}  ingres: []\n")),
        vec![
            "f.yaml:1: spec.ingres: unknown field `ingres`, expected one of `tier`, `order`, `selector`, `types`, `ingress`, `egress`, `serviceAccountSelector`, `performanceHints`, `namespaceSelector`, `doNotTrack`, `preDNAT`, `applyOnForward`, `stagedAction`"
        ]
    );
    assert_eq!(
        errs(&format!(
            "{base}  ingress:\n  - action: Allow\n    protocol: TCPX\n"
        )),
        vec![
            "f.yaml:1: spec.ingress[0].protocol: invalid protocol \"TCPX\": expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"
        ]
    );
    assert_eq!(
        errs(&format!(
            "{base}  ingress:\n  - action: Allow\n    protocol: 0\n"
        )),
        vec![
            "f.yaml:1: spec.ingress[0].protocol: invalid protocol 0: expected a protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or a number 1-255"
        ]
    );
    assert_eq!(
        errs(&format!("{base}  egress:\n  - action: Allowed\n")),
        vec![
            "f.yaml:1: spec.egress[0].action: unknown variant `Allowed`, expected one of `Allow`, `Deny`, `Log`, `Pass`"
        ]
    );
    assert_eq!(
        errs(&format!("{base}  order: first\n")),
        vec![
            "f.yaml:1: spec.order: invalid order \"first\": expected a finite number such as 100 or 2.5, found a string"
        ]
    );
    assert_eq!(
        errs(&format!(
            "{base}  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {{ports: [70000]}}\n"
        )),
        vec![
            "f.yaml:1: spec.ingress[0].destination.ports[0]: invalid port 70000: expected 1-65535"
        ]
    );
    assert_eq!(
        errs(&format!(
            "{base}  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {{ports: [\"90:80\"]}}\n"
        )),
        vec![
            "f.yaml:1: spec.ingress[0].destination.ports[0]: invalid port range \"90:80\": min 90 is greater than max 80"
        ]
    );
    assert_eq!(
        errs(&format!(
            "{base}  ingress:\n  - action: Allow\n    source: {{nets: [10.0.0.0/33]}}\n"
        )),
        vec![
            "f.yaml:1: spec.ingress[0].source.nets[0]: invalid CIDR \"10.0.0.0/33\": expected an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64, or a bare address"
        ]
    );
    assert_eq!(
        errs("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a, colour: red}\n"),
        vec![
            "f.yaml:1: metadata.colour: unknown field `colour`, expected one of `name`, `namespace`, `labels`, `annotations`, `uid`, `resourceVersion`, `creationTimestamp`, `generation`, `generateName`, `managedFields`, `ownerReferences`, `finalizers`, `selfLink`, `deletionTimestamp`, `deletionGracePeriodSeconds`"
        ]
    );
    assert_eq!(
        errs("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\nspecs: {}\n"),
        vec![
            "f.yaml:1: specs: unknown field `specs`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
        ]
    );
}

#[test]
fn status_and_bookkeeping_are_ignored() {
    let v = ok(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  uid: '1234'\n  resourceVersion: '7'\n  managedFields: [{manager: kubectl}]\nspec: {finalizers: [kubernetes]}\nstatus: {phase: Active}\n",
    );
    assert_eq!(v[0].resource.metadata().name, "prod");
}

#[test]
fn lists_number_their_items() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: projectcalico.org/v3
  kind: Tier
  metadata: {name: security}
  spec: {order: 100}
- apiVersion: projectcalico.org/v3
  kind: Tier
  metadata: {name: t2}
  spec: {order: x}
- apiVersion: projectcalico.org/v3
  kind: NetworkPolicy
  metadata: {name: p, namespace: Prod}
";
    assert_eq!(
        errs(text),
        vec![
            "f.yaml:1: items[1].spec.order: invalid order \"x\": expected a finite number such as 100 or 2.5, found a string",
            "f.yaml:1: items[2].metadata.namespace: invalid namespace \"Prod\": expected lower-case alphanumerics and '-', starting and ending with an alphanumeric",
        ]
    );
    let v = ok(&text.replace("order: x", "order: 3").replace("Prod", "prod"));
    assert_eq!(v.len(), 3);
    assert_eq!(v[2].origin.item, Some(2));
    assert_eq!(v[2].origin.to_string(), "f.yaml:1 items[2]");
}

#[test]
fn typed_lists_may_omit_item_types() {
    let v = ok("apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicyList
metadata: {resourceVersion: '1'}
items:
- metadata: {name: a}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: b}
");
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .all(|l| l.resource.kind() == Kind::GlobalNetworkPolicy)
    );
    assert_eq!(
        errs(
            "apiVersion: projectcalico.org/v3\nkind: TierList\nitems:\n- kind: Profile\n  metadata: {name: a}\n"
        ),
        vec![
            "f.yaml:1: items[0].kind: item of kind \"Profile\" (apiVersion \"projectcalico.org/v3\") in a list of Tier"
        ]
    );
    assert_eq!(
        errs("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n"),
        vec!["f.yaml:1: items[0].kind: a List cannot be an item of a List"]
    );
    assert_eq!(
        errs("apiVersion: v1\nkind: List\nitems: {a: 1}\n"),
        vec!["f.yaml:1: items: invalid type: a mapping, expected a sequence of resources"]
    );
}

#[test]
fn json_documents_and_lists() {
    let json = r#"{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"security"},"spec":{"order":100}}
{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"prod"}}]}"#;
    let mut loader = Loader::new(true);
    loader.text(json, "p.json", true);
    let v = loader.finish().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].origin.document, 2);
    let mut loader = Loader::new(true);
    loader.text("{\"apiVersion\": \"v1\",\n \"kind\": }", "p.json", true);
    assert_eq!(
        loader.finish().unwrap_err().to_string(),
        "p.json:1: JSON syntax error at line 2 column 10: expected value"
    );
}

#[test]
fn yaml_also_reads_json() {
    assert_eq!(
        ok(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"prod"}}"#).len(),
        1
    );
}

#[test]
fn duplicates_are_rejected() {
    let text = format!("{}---\n{}", np("a"), np("a"));
    assert_eq!(
        errs(&text),
        vec![
            "f.yaml:2: metadata.name: NetworkPolicy default/a is defined twice (first at f.yaml:1)"
        ]
    );
    // A staged and an enforced policy of the same name are different resources.
    let text = format!(
        "{}---\n{}",
        np("a"),
        np("a").replace("NetworkPolicy", "StagedNetworkPolicy")
    );
    assert_eq!(ok(&text).len(), 2);
}

#[test]
fn syntax_errors_keep_earlier_documents_and_stop() {
    let text = format!("{}---\na: [1, 2\n---\n{}", np("Bad"), np("c"));
    assert_eq!(
        errs(&text),
        vec![
            "f.yaml:1: metadata.name: invalid name \"Bad\": expected lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form), or a knp.default./ossg.default. prefix (regex ^(L(\\.L)?|(knp|ossg)\\.default\\.L(\\.L)*)$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)",
            "f.yaml:2: YAML syntax error at line 5 column 4: unclosed bracket '['",
        ]
    );
}

#[test]
fn duplicate_keys_are_rejected() {
    assert_eq!(
        errs("apiVersion: v1\nkind: Namespace\nkind: Namespace\n"),
        vec!["f.yaml:1: YAML error at line 3 column 1: duplicate mapping key: kind"]
    );
}

#[test]
fn stdin_reader_is_named() {
    let e = load_reader(Cursor::new("kind: X\n"), STDIN_NAME).unwrap_err();
    assert_eq!(
        e.to_string(),
        "<stdin>:1: apiVersion: missing field `apiVersion`: every resource needs apiVersion and kind"
    );
}

#[test]
fn limits_are_errors_not_crashes() {
    let big = "#".repeat(MAX_FILE_BYTES as usize + 1);
    assert_eq!(
        load_reader(Cursor::new(big), "big.yaml")
            .unwrap_err()
            .to_string(),
        format!("big.yaml: input is larger than the {MAX_FILE_BYTES}-byte limit")
    );
    let many = "---\n".repeat(MAX_DOCUMENTS + 1);
    assert_eq!(
        errs(&many),
        vec![format!(
            "f.yaml:{}: more than {MAX_DOCUMENTS} documents in one file",
            MAX_DOCUMENTS + 1
        )]
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = errs(&deep);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("f.yaml:1: YAML syntax error at line 1 column "),
        "{e:?}"
    );
    // Deeper than a document may nest (but within the syntax limit): the message
    // says what was exceeded and the limit, not the YAML library's internal name.
    let deep = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}{}\n",
        "[".repeat(70),
        "]".repeat(70)
    );
    assert_eq!(
        errs(&deep),
        vec![
            "f.yaml:1: YAML error at line 4 column 71: nested 65 levels deep, more than the limit of 64 mappings/sequences inside one document (a policy needs about 10): check for runaway brackets or indentation"
        ]
    );
    // Block style, a list at its key's indent on every level: the small reader
    // refuses it too, so the parser reports its nesting limit.
    let mut block = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\nspec:\n");
    for level in 0..70 {
        block.push_str(&format!("{}- a:\n", "  ".repeat(level)));
    }
    assert_eq!(super::simple_yaml::parse(&block), None);
    let e = errs(&block);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("f.yaml:1: YAML") && e[0].contains("limit"),
        "{e:?}"
    );
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
";
    let e = errs(bomb);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("f.yaml:1: YAML error"), "{e:?}");
}

#[test]
fn non_utf8_input_is_rejected() {
    let e = load_reader(Cursor::new(b"kind: \xff\n".to_vec()), "bin.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bin.yaml: not valid UTF-8 (first bad byte at offset 6)"
    );
    assert!(!e.is_io());
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tiergate-load-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn directories_load_recursively_in_sorted_order() {
    let d = temp_dir("dir");
    std::fs::create_dir_all(d.join("b/c")).unwrap();
    std::fs::write(d.join("b/c/z.yml"), np("z")).unwrap();
    std::fs::write(
        d.join("b/a.json"),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns"}}"#,
    )
    .unwrap();
    std::fs::write(d.join("a.yaml"), TIER).unwrap();
    std::fs::write(d.join("README.md"), "not policy").unwrap();
    let v = load_path(&d).unwrap();
    let names: Vec<&str> = v
        .iter()
        .map(|l| l.resource.metadata().name.as_str())
        .collect();
    assert_eq!(names, vec!["security", "ns", "z"]);
    assert!(v[2].origin.source.ends_with("b/c/z.yml"));
    std::fs::write(d.join("b/bad.yaml"), "kind: Tier\n").unwrap();
    let e = load_path(&d).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: apiVersion: missing field `apiVersion`: every resource needs apiVersion and kind",
            d.join("b/bad.yaml").display().to_string() + ":1"
        )
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn missing_files_are_io_errors() {
    let e = load_path(Path::new("/nonexistent/tiergate/p.yaml")).unwrap_err();
    assert!(e.is_io());
    assert_eq!(
        e.to_string(),
        "/nonexistent/tiergate/p.yaml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn several_paths_load_as_one_set() {
    let d = temp_dir("paths");
    std::fs::write(d.join("1.yaml"), np("a")).unwrap();
    std::fs::write(d.join("2.yaml"), np("a")).unwrap();
    let e = load_paths(&[d.join("1.yaml"), d.join("2.yaml")]).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].reason.contains("is defined twice"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn staged_kinds_load() {
    let v = ok("apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: security.block}
spec:
  tier: security
  stagedAction: Delete
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: 80, endPort: 90}]
");
    let Resource::StagedGlobalNetworkPolicy(o) = &v[0].resource else {
        panic!()
    };
    assert_eq!(o.spec.staged_action, Some(StagedAction::Delete));
    assert_eq!(o.spec.types, None);
}

#[test]
fn yaml_1_1_booleans_are_strings() {
    let v = ok(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: 'no', labels: {enabled: yes, x: n}}\n",
    );
    assert_eq!(v[0].resource.metadata().labels["enabled"], "yes");
    assert_eq!(v[0].resource.metadata().labels["x"], "n");
    assert_eq!(
        errs(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec: {doNotTrack: yes}\n"
        ),
        vec!["f.yaml:1: spec.doNotTrack: invalid type: string \"yes\", expected a boolean"]
    );
}

mod fuzzish {
    //! Property tests: random bytes and mutated near-valid YAML never panic the loader,
    //! every error names the input, and whatever loads holds the model's invariants.
    use proptest::prelude::*;

    use super::*;
    use crate::model::{defaults, validate};

    const SEEDS: [&str; 4] = [
        NP,
        TIER,
        "apiVersion: v1
kind: List
items:
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: g, labels: {a: b}}
  spec:
    selector: has(x) && y in {'1', '2'}
    preDNAT: true
    applyOnForward: true
    ingress:
    - {action: Deny, protocol: ICMP, icmp: {type: 8}, source: {nets: [10.0.0.0/8]}}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: k, namespace: n}
  spec:
    podSelector: {matchExpressions: [{key: a, operator: In, values: [b]}]}
    ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80, endPort: 90}]}]
",
        "---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w, namespace: n}
spec: {ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h}
spec: {node: n, expectedIPs: ['fd00::1'], ports: [{name: ssh, protocol: TCP, port: 22}]}
",
    ];

    const INSERTS: [&str; 16] = [
        ":", "- ", "[", "]", "{", "}", "'", "\"", "\n", "  ", "#", "&a ", "*a", "!!str ", "---\n",
        "0",
    ];

    #[derive(Clone, Debug)]
    enum Edit {
        Delete(usize),
        Insert(usize, usize),
        DupLine(usize),
        DropLine(usize),
        Truncate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            any::<usize>().prop_map(Edit::Delete),
            (any::<usize>(), 0..INSERTS.len()).prop_map(|(a, b)| Edit::Insert(a, b)),
            any::<usize>().prop_map(Edit::DupLine),
            any::<usize>().prop_map(Edit::DropLine),
            any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    fn char_boundary(s: &str, at: usize) -> usize {
        let mut i = at % (s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    fn mutate(seed: &str, edits: &[Edit]) -> String {
        let mut s = seed.to_string();
        for e in edits {
            match *e {
                Edit::Delete(at) => {
                    let i = char_boundary(&s, at);
                    if i < s.len() {
                        s.remove(i);
                    }
                }
                Edit::Insert(at, what) => {
                    let i = char_boundary(&s, at);
                    s.insert_str(i, INSERTS[what]);
                }
                Edit::DupLine(at) | Edit::DropLine(at) => {
                    let mut lines: Vec<&str> = s.lines().collect();
                    if !lines.is_empty() {
                        let i = at % lines.len();
                        if matches!(e, Edit::DupLine(_)) {
                            lines.insert(i, lines[i]);
                        } else {
                            lines.remove(i);
                        }
                    }
                    s = lines.join("\n");
                }
                Edit::Truncate(at) => {
                    let i = char_boundary(&s, at);
                    s.truncate(i);
                }
            }
        }
        s
    }

    fn check_outcome(text: &str, source: &str) {
        match load_str(text, source) {
            Ok(loaded) => {
                for l in &loaded {
                    assert!(
                        validate::validate(&l.resource).is_empty(),
                        "loaded an invalid resource: {l:?}"
                    );
                    let mut again = l.resource.clone();
                    defaults::apply(&mut again);
                    assert_eq!(again, l.resource, "defaulting is not idempotent");
                    assert_eq!(l.origin.source, source);
                }
            }
            Err(e) => {
                assert!(!e.0.is_empty());
                for err in &e.0 {
                    assert!(
                        err.to_string().starts_with(&format!("{source}:")),
                        "error does not name the input: {err}"
                    );
                    assert!(!err.reason.is_empty());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = load_reader(&bytes[..], "r.yaml");
            if let Ok(text) = std::str::from_utf8(&bytes) {
                check_outcome(text, "r.yaml");
                let _ = load_text(text, "r.json", Format::Json);
            }
        }

        #[test]
        fn near_valid_yaml_never_panics(
            seed in 0..SEEDS.len(),
            edits in proptest::collection::vec(edit(), 1..6),
        ) {
            let text = mutate(SEEDS[seed], &edits);
            check_outcome(&text, "m.yaml");
        }

        #[test]
        fn yamlish_token_soup_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("apiVersion: projectcalico.org/v3\n".to_string()),
                    Just("kind: NetworkPolicy\n".to_string()),
                    Just("metadata: {name: a}\n".to_string()),
                    Just("spec:\n".to_string()),
                    Just("  ingress:\n  - action: Allow\n".to_string()),
                    Just("    protocol: TCP\n".to_string()),
                    Just("    destination: {ports: [80]}\n".to_string()),
                    Just("---\n".to_string()),
                    "[ -~]{0,12}\n",
                ],
                0..16,
            )
        ) {
            check_outcome(&parts.concat(), "s.yaml");
        }
    }

    #[test]
    fn seeds_are_valid() {
        for s in SEEDS {
            ok(s);
        }
    }
}

#[test]
fn every_decode_problem_of_a_document_is_reported() {
    let text = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: Bad_Name}
spec:
  order: 1e400
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 300, code: 256}
    source:
      nets: [1.2.3.4/33, 10.0.0.0/8, bad, 10.0.0.0/99]
    destination:
      nets: [zz]
  egress:
  - action: Allow
    destination:
      ports: [80]
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t}
spec: {order: .nan}
";
    let mut e = errs(text);
    e.sort();
    let cidr = |f: &str, v: &str| {
        format!(
            "f.yaml:1: spec.ingress[0].{f}: invalid CIDR \"{v}\": expected an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64, or a bare address"
        )
    };
    let mut want = vec![
        cidr("destination.nets[0]", "zz"),
        "f.yaml:1: spec.ingress[0].icmp.code: invalid ICMP code 256: expected 0-255".to_string(),
        "f.yaml:1: spec.ingress[0].icmp.type: invalid ICMP type 300: expected 0-254".to_string(),
        cidr("source.nets[0]", "1.2.3.4/33"),
        cidr("source.nets[2]", "bad"),
        cidr("source.nets[3]", "10.0.0.0/99"),
        "f.yaml:1: spec.order: invalid order \".inf\" (infinity, or a number beyond about 1.8e308): expected a finite number such as 100 or 2.5".to_string(),
        // Validation still runs on what decoded, away from the dropped values.
        "f.yaml:1: metadata.name: invalid name \"Bad_Name\": expected lower-case alphanumerics and '-', at most one '.' (the legacy <tier>.<name> form) (regex ^(L\\.)?L$, L = [a-z0-9]([-a-z0-9]*[a-z0-9])?)".to_string(),
        "f.yaml:1: spec.egress[0].destination.ports: rules with numeric port or port range must set protocol to TCP or UDP or SCTP".to_string(),
        "f.yaml:2: spec.order: invalid order \".nan\" (NaN): expected a finite number such as 100 or 2.5".to_string(),
    ];
    want.sort();
    assert_eq!(e, want);
}

#[test]
fn a_dropped_value_does_not_make_its_neighbours_wrong() {
    // Dropping the only (bad) address would leave a host endpoint with neither
    // interfaceName nor expectedIPs: that consequence is not reported.
    let e = errs(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h}
spec:
  node: n
  expectedIPs: [not-an-ip]
",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("f.yaml:1: spec.expectedIPs[0]: "), "{e:?}");
    // A required field whose value is wrong is reported once, not also as missing.
    let e = errs(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  ingress:
  - action: Bogus
",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("f.yaml:1: spec.ingress[0].action: "),
        "{e:?}"
    );
}

#[test]
fn errors_are_capped_with_a_count_of_the_rest() {
    let nets: Vec<String> = (0..150).map(|i| format!("bad{i}")).collect();
    let text = format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: p}}
spec:
  ingress:
  - action: Allow
    source:
      nets: [{}]
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {{name: T}}
",
        nets.join(", ")
    );
    let e = errs(&text);
    assert_eq!(e.len(), MAX_REPORTED_ERRORS + 1);
    assert!(e[0].contains("nets[0]: invalid CIDR \"bad0\""), "{}", e[0]);
    assert!(
        e[99].contains("nets[99]: invalid CIDR \"bad99\""),
        "{}",
        e[99]
    );
    // The decode stops at the cap; the second document's bad name is counted.
    assert_eq!(
        e[100],
        "...: and 1 more errors (only the first 100 are reported)"
    );
}

#[test]
fn only_regular_files_are_read() {
    use std::os::unix::fs::symlink;
    let d = temp_dir("special");
    std::fs::write(d.join("a.yaml"), np("a")).unwrap();
    symlink(d.join("a.yaml"), d.join("link.yaml")).unwrap();
    // A symlink to a regular file is read (here: a duplicate of a.yaml).
    let e = load_path(&d).unwrap_err();
    assert!(e.0[0].reason.contains("defined twice"), "{e}");
    std::fs::remove_file(d.join("link.yaml")).unwrap();
    // A dangling symlink with a policy name is an I/O error naming it; one without is
    // not looked at.
    symlink(d.join("gone"), d.join("README")).unwrap();
    assert_eq!(load_path(&d).unwrap().len(), 1);
    symlink(d.join("gone"), d.join("b.yaml")).unwrap();
    let e = load_path(&d).unwrap_err();
    assert!(e.is_io());
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read: a symlink to {} that cannot be followed (No such file or directory (os error 2))",
            d.join("b.yaml").display(),
            d.join("gone").display()
        )
    );
    std::fs::remove_file(d.join("b.yaml")).unwrap();
    // A FIFO, in a directory or named explicitly, is refused without opening it (which
    // would block).
    let fifo = d.join("x.yaml");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    for e in [load_path(&d).unwrap_err(), load_path(&fifo).unwrap_err()] {
        assert!(e.is_io());
        assert_eq!(
            e.to_string(),
            format!(
                "{}: cannot read: a FIFO; only regular files (or symlinks to them), directories and - (stdin) are read",
                fifo.display()
            )
        );
    }
    let e = load_path(Path::new("/dev/null")).unwrap_err();
    assert!(e.to_string().contains("a character device"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_empty_set_is_an_error_unless_allowed() {
    let d = temp_dir("empty");
    let e = load_set(&[&d], false).unwrap_err();
    assert!(!e.is_io());
    assert_eq!(
        e.to_string(),
        format!(
            "{}: no resources found (0 files read, 0 documents with a resource; a directory is searched for *.yaml, *.yml and *.json): check the -f path, or pass --allow-empty if an empty set is intended",
            d.display()
        )
    );
    std::fs::write(d.join("empty.yaml"), "---\n# nothing\n").unwrap();
    std::fs::write(d.join("notes.txt"), np("a")).unwrap();
    let e = load_set(&[&d], false).unwrap_err();
    assert!(e.to_string().contains("(1 file read, 0 documents"), "{e}");
    let (v, report) = load_set(&[&d], true).unwrap();
    assert!(v.is_empty());
    assert_eq!((report.files, report.documents), (1, 0));
}

#[test]
fn resources_placed_in_default_are_counted_per_file() {
    let d = temp_dir("nsnote");
    std::fs::write(
        d.join("a.yaml"),
        format!(
            "{}---\n{}---\n{}",
            np("a"),
            np("b"),
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: c, namespace: prod}\n"
        ),
    )
    .unwrap();
    std::fs::write(d.join("b.yaml"), TIER).unwrap();
    std::fs::write(d.join("c.yaml"), np("d")).unwrap();
    let (v, report) = load_set(&[&d], false).unwrap();
    assert_eq!(v.len(), 5);
    assert_eq!(
        report.notes(),
        vec![
            format!(
                "{}: note: 2 namespaced resources without metadata.namespace placed in namespace default",
                d.join("a.yaml").display()
            ),
            format!(
                "{}: note: 1 namespaced resource without metadata.namespace placed in namespace default",
                d.join("c.yaml").display()
            ),
        ]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn every_bad_ip_block_exception_is_named() {
    let e = errs(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: ns}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, x, 10.2.0.0/33]}
",
    );
    assert_eq!(
        e,
        vec![
            "f.yaml:1: spec.ingress[0].from[0].ipBlock.except: [1] invalid CIDR \"x\": expected a prefix such as 10.0.0.0/8 or fd00::/64; [2] invalid CIDR \"10.2.0.0/33\": expected a prefix such as 10.0.0.0/8 or fd00::/64"
        ]
    );
}

/// A load of `text` through the `---` split when it applies, and through the event
/// parser's split alone: results, errors and report.
fn fast_and_event_split(text: &str) -> [(Result<Vec<Loaded>, LoadErrors>, LoadReport); 2] {
    let mut fast = Loader::new(true);
    fast.text(text, "f.yaml", false);
    let mut event = Loader::new(true);
    let mut items = SourceItems {
        process: true,
        ..SourceItems::default()
    };
    items.yaml_text(text, "f.yaml");
    event.merge(items);
    let split = |l: Loader| match l.finish_with_report() {
        Ok((v, r)) => (Ok(v), r),
        Err(e) => (Err(e), LoadReport::default()),
    };
    [split(fast), split(event)]
}

/// Pieces of YAML streams: documents of every shape the `---` split must number, skip
/// or leave to the event parser.
const STREAM_PIECES: &[&str] = &[
    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\n",
    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: b, namespace: x}\nspec: {selector: \"a == 'b'\"}\n",
    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: Bad}\n",
    "apiVersion: v1\nkind: List\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: Tier\n  metadata: {name: t}\n",
    "",
    "\n",
    "# only a comment\n",
    "  # indented comment\n\n",
    "~\n",
    "null\n",
    "NULL # trailing comment\n",
    "!!null ~\n",
    "&a ~\n",
    "a: [1, 2\n",
    "a: \"open\n",
    "kind: |\n  # not a comment\n  x\n",
    "- 1\n- 2\n",
    "just a string\n",
    "kind: Namespace\nkind: Namespace\n",
    "...\n",
    "%YAML 1.2\n",
    "----\n",
    "a: b\n...\n",
];

const STREAM_MARKERS: &[&str] = &[
    "---\n",
    "--- \n",
    "---\t\n",
    "---\r\n",
    "--- # c\n",
    "--- a: b\n",
    "---",
];

proptest::proptest! {
    #[test]
    fn marked_split_loads_as_the_event_split_does(
        lead in proptest::bool::ANY,
        parts in proptest::collection::vec(
            (0..STREAM_PIECES.len(), 0..STREAM_MARKERS.len()), 0..6),
    ) {
        let mut text = String::new();
        for (i, (piece, marker)) in parts.iter().enumerate() {
            if i > 0 || lead {
                text.push_str(STREAM_MARKERS[*marker]);
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
            text.push_str(STREAM_PIECES[*piece]);
        }
        let [fast, event] = fast_and_event_split(&text);
        proptest::prop_assert_eq!(fast, event, "stream:\n{}", text);
    }
}

#[test]
fn marked_split_numbers_documents_as_the_event_parser_does() {
    for text in [
        "",
        "# c\n",
        "# c\n---\na: 1\n",
        "a: 1\n---\n",
        "---\n---\n~\n---\na: 1\n",
        "a: 1\n---\nb: 2\n---\n# c\n",
        "---\r\na: 1\r\n---\r\nb: 2\r\n",
    ] {
        let marked = split_marked_documents(text).expect("a marked stream");
        let event = split_yaml_documents(text);
        assert!(event.error.is_none());
        let numbers = |v: Vec<(usize, bool)>| v;
        assert_eq!(
            numbers(
                marked
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (i + 1, d.null))
                    .collect()
            ),
            numbers(event.documents.iter().map(|d| (d.number, d.null)).collect()),
            "{text:?}"
        );
    }
    // Streams the `---` split leaves to the event parser.
    for text in [
        "%YAML 1.2\n---\na: 1\n",
        "a: 1\n...\n",
        "--- a\n",
        "--- # c\na: 1\n",
    ] {
        assert!(split_marked_documents(text).is_none(), "{text:?}");
    }
    let many = "---\n".repeat(MAX_DOCUMENTS + 1);
    assert!(split_marked_documents(&many).is_none());
    assert_eq!(
        split_marked_documents(&"---\n".repeat(MAX_DOCUMENTS)).map(|d| d.len()),
        Some(MAX_DOCUMENTS)
    );
}

/// serde-saphyr's reading of one document, as the loader configures it.
fn saphyr_value(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str_with_options::<Value>(text, saphyr_options()).map_err(|e| e.to_string())
}

/// Scalars as written: plain words, numbers and addresses, and everything the simple
/// reader must leave to serde-saphyr.
const SCALARS: &[&str] = &[
    // Read by the simple reader (the first SIMPLE_SCALARS).
    "web",
    "Ingress",
    "TCP",
    "a-b.c/d",
    "app == 'a0' && tier in {'web', 'db'}",
    "role == \"x\"",
    "all()",
    "0",
    "7",
    "-5",
    "65535",
    "10.0.0.0/24",
    "'q'",
    "'it''s'",
    "\"dq\"",
    "\"a'b\"",
    "''",
    "\"\"",
    "[a, b]",
    "[]",
    "['8000:8100', 80]",
    "é",
    "a  b",
    "[ 'x' ,y ]",
    "=",
    "<<",
    "a=b",
    "x!",
    "x&y",
    "x*",
    "x|y",
    "x>y",
    "100%",
    "a'b",
    "a\"b",
    "a,b",
    "a]",
    "a}",
    "v1.2.3",
    "1.2.3.4/32",
    "-1",
    "x-",
    "a - b",
    "a -b",
    "é: x",
    // Left to serde-saphyr.
    "007",
    "-0",
    "+1",
    "1.5",
    "1e3",
    ".5",
    "0x10",
    "0o7",
    "1_000",
    "99999999999999999999",
    "10.0.0.1",
    "fe80::1/64",
    "8000:8100",
    "x:y",
    "a: b",
    "a #b",
    "#x",
    "true",
    "True",
    "FALSE",
    "null",
    "Null",
    "~",
    "yes",
    "NO",
    "on",
    "y",
    "n",
    "inf",
    ".inf",
    "-.inf",
    ".nan",
    "NaN",
    "'open",
    "\"a\\tb\"",
    "-",
    "- x",
    "!tag x",
    "!!str 5",
    "&a x",
    "*a",
    "|",
    ">-",
    "[a, [b]]",
    "[a,]",
    "[a, {b: c}]",
    "{a: b}",
    "{}",
    ",x",
    "?x",
    ":x",
    "@x",
    "%x",
    "`x",
    "2001:db8::/32",
    "1:2",
    "a\u{1}b",
    "a\u{7f}b",
    "a\u{85}b",
    "a\u{feff}b",
    "a\rb",
    "a\tb",
];
const SIMPLE_SCALARS: usize = 45;

const KEYS: &[&str] = &[
    "name",
    "selector",
    "a-b",
    "x.y/z",
    "projectcalico.org/tier",
    "Key",
    "k_1",
    // Left to serde-saphyr.
    "1abc",
    "true",
    "null",
    "k k",
    "'q'",
    "\"q\"",
    "? k",
    "<<",
    "-k",
];
const SIMPLE_KEYS: usize = 7;

/// An index into `all`, mostly among its first `simple`.
fn pick(all: usize, simple: usize) -> impl proptest::strategy::Strategy<Value = usize> {
    use proptest::prelude::*;
    prop_oneof![12 => 0..simple, 1 => 0..all]
}

#[derive(Clone, Debug)]
enum Node {
    Scalar(usize),
    Map(Vec<(usize, Node)>),
    Seq(bool, Vec<Node>),
}

fn node_strategy() -> impl proptest::strategy::Strategy<Value = Node> {
    use proptest::prelude::*;
    let leaf = pick(SCALARS.len(), SIMPLE_SCALARS).prop_map(Node::Scalar);
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec((pick(KEYS.len(), SIMPLE_KEYS), inner.clone()), 1..4)
                .prop_map(Node::Map),
            (proptest::bool::ANY, proptest::collection::vec(inner, 1..4))
                .prop_map(|(same, v)| Node::Seq(same, v)),
        ]
    })
}

/// Writes `node` as the value of a key (after `key:`) or of an item (after `-`), in
/// block style at `indent`.
fn render(node: &Node, indent: usize, out: &mut String, comment: bool) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => {
            out.push(' ');
            out.push_str(SCALARS[*s]);
            out.push('\n');
        }
        Node::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                if comment {
                    out.push_str(&format!("{pad}# note\n\n"));
                }
                out.push_str(&format!("{pad}{}:", KEYS[*k]));
                render(v, indent + 2, out, comment);
            }
        }
        Node::Seq(same, items) => {
            out.push('\n');
            let at = if *same {
                indent.saturating_sub(2)
            } else {
                indent
            };
            let pad = " ".repeat(at);
            for item in items {
                match item {
                    Node::Map(entries) => {
                        // `- key: value`, the other keys under the first.
                        let mut first = true;
                        for (k, v) in entries {
                            let lead = if first {
                                format!("{pad}- ")
                            } else {
                                " ".repeat(at + 2)
                            };
                            first = false;
                            out.push_str(&format!("{lead}{}:", KEYS[*k]));
                            render(v, at + 4, out, comment);
                        }
                    }
                    other => {
                        out.push_str(&format!("{pad}-"));
                        render(other, at + 2, out, comment);
                    }
                }
            }
        }
    }
}

/// How [`render_flow`] writes keys and separators.
#[derive(Clone, Copy, Debug)]
struct FlowStyle {
    /// Keys double-quoted, as JSON has them.
    json_keys: bool,
    /// No space after `,`, nor after the `:` of a quoted key (`{"a":"b","c":1}`).
    tight: bool,
}

/// Writes `node` in flow style on one line.
fn render_flow(node: &Node, style: FlowStyle, out: &mut String) {
    let comma = if style.tight { "," } else { ", " };
    match node {
        Node::Scalar(s) => out.push_str(SCALARS[*s]),
        Node::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(comma);
                }
                if style.json_keys {
                    out.push_str(&format!("\"{}\":", KEYS[*k]));
                    if !style.tight {
                        out.push(' ');
                    }
                } else {
                    out.push_str(&format!("{}: ", KEYS[*k]));
                }
                render_flow(v, style, out);
            }
            out.push('}');
        }
        Node::Seq(_, items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(comma);
                }
                render_flow(v, style, out);
            }
            out.push(']');
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// Whatever the simple reader reads, serde-saphyr reads as the same value: block
    /// documents, block documents whose values are flow collections, and documents
    /// that are one flow mapping on a line (keys plain or quoted, JSON's tight
    /// separators too).
    #[test]
    fn simple_yaml_reads_what_saphyr_reads(
        entries in proptest::collection::vec((pick(KEYS.len(), SIMPLE_KEYS), node_strategy()), 1..5),
        marker in proptest::bool::ANY,
        comment in proptest::bool::ANY,
        crlf in proptest::bool::ANY,
        flow in 0u8..3,
        json_keys in proptest::bool::ANY,
        tight in proptest::bool::ANY,
    ) {
        let mut text = String::new();
        if marker {
            text.push_str("---\n");
        }
        if comment {
            text.push_str("# a document\n");
        }
        let style = FlowStyle { json_keys, tight: tight && json_keys };
        match flow {
            0 => {
                for (k, v) in &entries {
                    text.push_str(&format!("{}:", KEYS[*k]));
                    render(v, 2, &mut text, comment);
                }
            }
            1 => {
                for (k, v) in &entries {
                    text.push_str(&format!("{}: ", KEYS[*k]));
                    render_flow(v, style, &mut text);
                    text.push('\n');
                }
            }
            _ => {
                render_flow(&Node::Map(entries.clone()), style, &mut text);
                text.push('\n');
            }
        }
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        if let Some(simple) = simple_yaml::parse(&text) {
            proptest::prop_assert_eq!(Ok(simple), saphyr_value(&text), "document:\n{}", text);
            // The nodes counted while reading are those of the value read.
            proptest::prop_assert_eq!(simple_yaml::counts_agree(&text), Some(true));
        }
    }
}

#[test]
fn simple_yaml_reads_policy_documents() {
    let docs = [
        NP.to_string(),
        TIER.to_string(),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p0\nspec:\n  order: 0\n  selector: app == 'a0' && tier in {'web', 'db'}\n  types: [Ingress, Egress]\n  ingress:\n  - action: Deny\n    protocol: TCP\n    source:\n      nets: [10.0.0.0/24]\n      selector: role == 'r0'\n    destination:\n      ports: [1000, '8000:8100']\n  egress:\n  - action: Allow\n    protocol: UDP\n    destination:\n      notNets: [192.168.0.0/24]\n      ports: [53]\n".to_string(),
        "---\nkind: NetworkPolicy\nspec:\n  ingress:\n    - action: Allow\n      source: {}\n".to_string(),
    ];
    let mut read = 0;
    for doc in &docs {
        if let Some(v) = simple_yaml::parse(doc) {
            read += 1;
            assert_eq!(Ok(v), saphyr_value(doc), "{doc}");
        }
    }
    // The benchmark's shape (the third) and the plain ones are read here.
    assert!(simple_yaml::parse(&docs[2]).is_some());
    // Flow mappings as values (the tier's metadata and spec) are read here too.
    assert!(simple_yaml::parse(&docs[1]).is_some());
    assert!(read >= 3);
    // A document that is one JSON object on a line (as `jq -c` or `json.dumps` write
    // it) is read here, as serde-saphyr reads it; what it cannot type (`true`, a
    // float), a trailing comma, an empty value or a second line is left to it.
    let json = r#"{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "p0"}, "spec": {"order": 10, "selector": "app == 'a0'", "types": ["Ingress"], "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"nets": ["10.0.0.0/24"]}, "destination": {"ports": [80, "8000:8100"]}}]}}"#;
    let tight = json.replace(", ", ",").replace(": ", ":");
    for doc in [json.to_string(), tight, format!("---\n# c\n{json}\n")] {
        let v = simple_yaml::parse(&doc);
        assert!(v.is_some(), "{doc}");
        assert_eq!(v.ok_or(String::new()), saphyr_value(&doc), "{doc}");
    }
    for doc in [
        r#"{"a": true}"#,
        r#"{"a": 1.5}"#,
        r#"{"a": [1, 2,]}"#,
        r#"{"a": }"#,
        r#"{"a": 1, "a": 2}"#,
        "{\"a\": 1,\n \"b\": 2}",
        "{a:b}",
        r#"{"a": "b"} # c"#,
    ] {
        assert!(simple_yaml::parse(doc).is_none(), "{doc}");
    }
    // Every document of the examples: whatever is read agrees.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(dir).expect("examples") {
        let Ok(files) = std::fs::read_dir(entry.expect("entry").path()) else {
            continue;
        };
        for f in files {
            let path = f.expect("file").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for doc in split_marked_documents(&text).unwrap_or_default() {
                if let Some(v) = simple_yaml::parse(doc.text) {
                    assert_eq!(Ok(v), saphyr_value(doc.text), "{}", path.display());
                }
            }
        }
    }
}

/// A long stream read in runs of documents on several threads loads as the event split
/// reads it in one: numbers, errors (over the reported cap too), report and resources.
#[test]
fn marked_stream_read_in_runs_loads_as_one() {
    let mut text = String::new();
    for i in 0..700 {
        match i % 7 {
            0 => text.push_str("# a comment\n"),
            1 => text.push_str(&np(&format!("Bad{i}"))),
            2 => text.push_str("~\n"),
            3 => text.push_str(&format!(
                "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: n}}\nspec:\n  selector: a == 'b'\n"
            )),
            _ => text.push_str(&np(&format!("p{i}"))),
        }
        text.push_str("---\n");
    }
    for threads in [1, 2, 3, 8] {
        for outline in [false, true] {
            let mut runs = Loader::new(true);
            runs.outline = outline;
            runs.merge(SourceItems::parse(
                &text, "f.yaml", false, true, outline, threads,
            ));
            let mut event = Loader::new(true);
            event.outline = outline;
            let mut items = SourceItems {
                process: true,
                outline,
                ..SourceItems::default()
            };
            items.yaml_text(&text, "f.yaml");
            event.merge(items);
            let (a, b) = (runs.finish_all(), event.finish_all());
            assert!(a.is_err());
            assert_eq!(a, b, "threads {threads}");
        }
    }
    // Without the invalid documents both load, every resource numbered alike.
    let valid: String = text
        .split("---\n")
        .filter(|d| !d.contains("Bad"))
        .collect::<Vec<_>>()
        .join("---\n");
    let mut runs = Loader::new(true);
    runs.merge(SourceItems::parse(&valid, "f.yaml", false, true, false, 4));
    let mut event = Loader::new(true);
    let mut items = SourceItems {
        process: true,
        ..SourceItems::default()
    };
    items.yaml_text(&valid, "f.yaml");
    event.merge(items);
    let (a, b) = (runs.finish_all(), event.finish_all());
    assert_eq!(a.as_ref().map(|(l, _, _)| l.len()), Ok(400));
    assert_eq!(a, b);
}

/// A document near the full parser's node and event limits (1 000 000) is never read by
/// the small reader, so the full parser refuses it as before: the small reader stops
/// at 900 000 nodes or events, nine tenths of the full parser's limits.
#[test]
fn simple_yaml_leaves_huge_documents_to_saphyr() {
    // Past serde-saphyr's node limit: left to it, and it refuses the document.
    let many_lines = format!("items:\n{}", "- a\n".repeat(1_000_000));
    assert!(simple_yaml::parse(&many_lines).is_none());
    assert!(saphyr_value(&many_lines).is_err());
    let long_flow = format!("items: [{}]\n", vec!["a"; 1_000_000].join(", "));
    assert!(simple_yaml::parse(&long_flow).is_none());
    assert!(saphyr_value(&long_flow).is_err());
    let flows = format!(
        "items:\n{}",
        format!("- [{}]\n", vec!["1"; 100].join(", ")).repeat(10_000)
    );
    assert!(simple_yaml::parse(&flows).is_none());
    assert!(saphyr_value(&flows).is_err());
    // Within nine tenths of it (900 000 nodes, and events: a collection's end counts
    // too), read here, as serde-saphyr reads it.
    for (items, per, read) in [(899_991, 0, true), (899_992, 0, false), (8_000, 100, true)] {
        let text = if per == 0 {
            format!("items:\n{}", "- a\n".repeat(items))
        } else {
            format!(
                "items:\n{}",
                format!("- [{}]\n", vec!["1"; per].join(", ")).repeat(items)
            )
        };
        let simple = simple_yaml::parse(&text);
        assert_eq!(simple.is_some(), read, "{items} x {per}");
        if let Some(v) = simple {
            assert_eq!(Ok(v), saphyr_value(&text));
        }
    }
    // Characters YAML does not allow, and tabs, are left to serde-saphyr.
    for c in [
        '\u{0}', '\u{7}', '\t', '\u{7f}', '\u{85}', '\u{9f}', '\u{feff}', '\u{fffe}', '\r',
    ] {
        let text = format!("a: x{c}y\n");
        assert!(simple_yaml::parse(&text).is_none(), "{c:?}");
    }
    assert_eq!(
        simple_yaml::parse("a: é€𝄞\n"),
        Some(serde_json::json!({"a": "é€𝄞"}))
    );
    // Keys past serde-saphyr's 1 024-character lookahead are its to refuse.
    let long_key = format!("{}: x\n", "k".repeat(2_000));
    assert!(simple_yaml::parse(&long_key).is_none());
    assert!(saphyr_value(&long_key).is_err());
    let small = format!("items:\n{}", "- a\n".repeat(1_000));
    assert!(simple_yaml::parse(&small).is_some());
}
