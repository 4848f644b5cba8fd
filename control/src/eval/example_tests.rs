//! Every directory under `examples/` evaluated with the flows its README names; each
//! case asserts the whole `tiergate eval -o json` document.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{Cluster, Flow, evaluate, report};

/// Loads an example exactly as `tiergate eval -f examples/<dir>` does (loader, store,
/// evaluator input); problems are printed on stderr.
fn example(dir: &str) -> Cluster {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(dir);
    crate::cli::eval::load_cluster(&[path])
        .unwrap_or_else(|code| panic!("examples/{dir} does not load (exit {code})"))
}

fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> Flow {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    Flow::new(ip(src), ip(dst), proto, 40000, dport).expect("flow")
}

/// One view: action and hit strings.
fn view(action: &str, hits: &[&str]) -> Value {
    json!({"action": action, "policies": hits})
}

fn side(reporter: &str, endpoint: &str, enforced: Value, pending: Value) -> Value {
    json!({"reporter": reporter, "endpoint": endpoint, "enforced": enforced, "pending": pending})
}

fn doc(verdicts: Vec<Value>, enforced: &str, pending: &str) -> Value {
    json!({"verdicts": verdicts, "final": {"enforced": enforced, "pending": pending}})
}

#[track_caller]
fn check(c: &Cluster, f: Flow, want: Value) {
    let got: Value = serde_json::from_str(&report::to_json(&evaluate(c, &f))).expect("json");
    assert_eq!(
        got,
        want,
        "flow {f}\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&got).unwrap_or_default(),
        serde_json::to_string_pretty(&want).unwrap_or_default()
    );
}

const TCP: u8 = 6;
const KNS_DEMO: &str = "0|__PROFILE__|pro:kns.demo|allow|0";
const KNS_DEFAULT: &str = "0|__PROFILE__|pro:kns.default|allow|0";

fn both(action: &str, hits: &[&str]) -> (Value, Value) {
    (view(action, hits), view(action, hits))
}

fn client_src() -> Value {
    let (e, p) = both("allow", &[KNS_DEMO]);
    side("src", "demo/client", e, p)
}

// ---------------------------------------------------------------------------------
// The seed

#[test]
fn seed_staged_global_policy_allows_frontend_to_database() {
    let c = example("seed");
    let frontend = || {
        let (e, p) = both("allow", &[KNS_DEFAULT]);
        side("src", "default/frontend", e, p)
    };
    // Denied today (end of the default tier), allowed by the staged policy.
    check(
        &c,
        flow("10.0.1.10", "10.0.1.20", TCP, 6379),
        doc(
            vec![
                frontend(),
                side(
                    "dst",
                    "default/database",
                    view(
                        "deny",
                        &["0|default|np:default/database-allow-backend|deny|-1"],
                    ),
                    view("allow", &["0|default|sgnp:default.allow-tcp-6379|allow|0"]),
                ),
            ],
            "deny",
            "allow",
        ),
    );
    // Other traffic to the database: end of tier in both views.
    let eot = "0|default|np:default/database-allow-backend|deny|-1";
    let (e, p) = both("deny", &[eot]);
    check(
        &c,
        flow("10.0.1.10", "10.0.1.20", TCP, 5432),
        doc(
            vec![frontend(), side("dst", "default/database", e, p)],
            "deny",
            "deny",
        ),
    );
    // The backend keeps its access.
    let (e, p) = both(
        "allow",
        &["0|default|np:default/database-allow-backend|allow|0"],
    );
    let (be, bp) = both("allow", &[KNS_DEFAULT]);
    check(
        &c,
        flow("10.0.1.11", "10.0.1.20", TCP, 5432),
        doc(
            vec![
                side("src", "default/backend", be, bp),
                side("dst", "default/database", e, p),
            ],
            "allow",
            "allow",
        ),
    );
    // The database's egress: only the staged policies govern it.
    let (fe, fp) = both("allow", &[KNS_DEFAULT]);
    check(
        &c,
        flow("10.0.1.20", "10.0.1.10", TCP, 80),
        doc(
            vec![
                side(
                    "src",
                    "default/database",
                    view("allow", &[KNS_DEFAULT]),
                    view("allow", &["0|default|sgnp:default.allow-tcp-6379|allow|0"]),
                ),
                side("dst", "default/frontend", fe, fp),
            ],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn seed_staged_kubernetes_policy_on_db() {
    let c = example("seed");
    let db_dst = |pending: Value| side("dst", "default/db", view("allow", &[KNS_DEFAULT]), pending);
    let sknp = |hit: &'static str, action: &str| view(action, &[hit]);
    let frontend = || {
        let (e, p) = both("allow", &[KNS_DEFAULT]);
        side("src", "default/frontend", e, p)
    };
    // From the frontend pod (peer 2), from the myproject namespace (peer 1), from the
    // ipBlock (peer 0) — and not from the ipBlock's except range.
    check(
        &c,
        flow("10.0.1.10", "10.0.1.30", TCP, 6379),
        doc(
            vec![
                frontend(),
                db_dst(sknp(
                    "0|default|sknp:default/test-network-policy|allow|2",
                    "allow",
                )),
            ],
            "allow",
            "allow",
        ),
    );
    let (ce, cp) = both("allow", &["0|__PROFILE__|pro:kns.myproject|allow|0"]);
    check(
        &c,
        flow("10.0.2.10", "10.0.1.30", TCP, 6379),
        doc(
            vec![
                side("src", "myproject/client", ce, cp),
                db_dst(sknp(
                    "0|default|sknp:default/test-network-policy|allow|1",
                    "allow",
                )),
            ],
            "allow",
            "allow",
        ),
    );
    check(
        &c,
        flow("172.17.0.5", "10.0.1.30", TCP, 6379),
        doc(
            vec![db_dst(sknp(
                "0|default|sknp:default/test-network-policy|allow|0",
                "allow",
            ))],
            "allow",
            "allow",
        ),
    );
    let eot = "0|default|sknp:default/test-network-policy|deny|-1";
    check(
        &c,
        flow("172.17.1.5", "10.0.1.30", TCP, 6379),
        doc(vec![db_dst(sknp(eot, "deny"))], "allow", "deny"),
    );
    check(
        &c,
        flow("10.0.1.10", "10.0.1.30", TCP, 80),
        doc(vec![frontend(), db_dst(sknp(eot, "deny"))], "allow", "deny"),
    );
    // Egress of db: only 10.0.0.0/24 on 5978/TCP.
    check(
        &c,
        flow("10.0.1.30", "10.0.0.7", TCP, 5978),
        doc(
            vec![side(
                "src",
                "default/db",
                view("allow", &[KNS_DEFAULT]),
                view(
                    "allow",
                    &["0|default|sknp:default/test-network-policy|allow|0"],
                ),
            )],
            "allow",
            "allow",
        ),
    );
    check(
        &c,
        flow("10.0.1.30", "10.0.0.7", TCP, 443),
        doc(
            vec![side(
                "src",
                "default/db",
                view("allow", &[KNS_DEFAULT]),
                view("deny", &[eot]),
            )],
            "allow",
            "deny",
        ),
    );
}

// ---------------------------------------------------------------------------------
// One directory per feature

#[test]
fn tiers_pass() {
    let c = example("tiers-pass");
    let passes = [
        "0|security|gnp:security.blocklist|pass|1",
        "1|platform|gnp:platform.no-telnet|pass|-1",
    ];
    let (e, p) = both(
        "allow",
        &[
            passes[0],
            passes[1],
            "2|default|np:demo/api-allow-client|allow|0",
        ],
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
    let (e, p) = both(
        "deny",
        &[
            passes[0],
            passes[1],
            "2|default|np:demo/api-allow-client|deny|-1",
        ],
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 9090),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "deny",
            "deny",
        ),
    );
    let (e, p) = both("deny", &["0|security|gnp:security.blocklist|deny|0"]);
    check(
        &c,
        flow("192.0.2.7", "10.10.0.2", TCP, 8080),
        doc(vec![side("dst", "demo/api", e, p)], "deny", "deny"),
    );
}

#[test]
fn log() {
    let c = example("log");
    let (e, p) = both("allow", &["0|default|gnp:audit-api|allow|1"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
    let (e, p) = both("deny", &["0|default|gnp:audit-api|deny|-1"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 80),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "deny",
            "deny",
        ),
    );
}

#[test]
fn staged_only_tier() {
    let c = example("staged-only-tier");
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 443),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "demo/api",
                    view("allow", &[KNS_DEMO]),
                    view("deny", &["0|quarantine|sgnp:quarantine.api|deny|-1"]),
                ),
            ],
            "allow",
            "deny",
        ),
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "demo/api",
                    view("allow", &[KNS_DEMO]),
                    view("allow", &["0|quarantine|sgnp:quarantine.api|allow|0"]),
                ),
            ],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn staged_deny_over_allow() {
    let c = example("staged-deny-over-allow");
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 9000),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "demo/api",
                    view("allow", &["0|default|np:demo/api-allow-all|allow|0"]),
                    view("deny", &["0|default|snp:demo/api-block-admin|deny|0"]),
                ),
            ],
            "allow",
            "deny",
        ),
    );
    let (e, p) = both("allow", &["0|default|np:demo/api-allow-all|allow|0"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn profiles() {
    let c = example("profiles");
    let (e, p) = both("allow", &["0|__PROFILE__|pro:ssh-only|allow|0"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.9.1", TCP, 22),
        doc(
            vec![client_src(), side("dst", "gateway", e, p)],
            "allow",
            "allow",
        ),
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.9.1", TCP, 80),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "gateway",
                    view("deny", &["0|__PROFILE__|pro:__NO_MATCH__|deny|0"]),
                    view("deny", &[]),
                ),
            ],
            "deny",
            "deny",
        ),
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.9.2", TCP, 22),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "bare",
                    view("deny", &["0|__PROFILE__|pro:__NO_MATCH__|deny|0"]),
                    view("deny", &["0|__PROFILE__|pro:__PROFILE__|deny|-1"]),
                ),
            ],
            "deny",
            "deny",
        ),
    );
    let (ge, gp) = both("allow", &["0|__PROFILE__|pro:ssh-only|allow|0"]);
    let (de, dp) = both("allow", &[KNS_DEMO]);
    check(
        &c,
        flow("10.10.9.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![
                side("src", "gateway", ge, gp),
                side("dst", "demo/api", de, dp),
            ],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn gnp_namespace_selector() {
    let c = example("gnp-namespace-selector");
    let (se, sp) = both("allow", &["0|__PROFILE__|pro:kns.dev|allow|0"]);
    let (e, p) = both("deny", &["0|default|gnp:prod-isolation|deny|-1"]);
    check(
        &c,
        flow("10.10.2.1", "10.10.1.2", TCP, 80),
        doc(
            vec![
                side("src", "dev/client", se, sp),
                side("dst", "prod/web", e, p),
            ],
            "deny",
            "deny",
        ),
    );
    let (se, sp) = both("allow", &["0|__PROFILE__|pro:kns.prod|allow|0"]);
    let (e, p) = both("allow", &["0|default|gnp:prod-isolation|allow|0"]);
    check(
        &c,
        flow("10.10.1.1", "10.10.1.2", TCP, 80),
        doc(
            vec![
                side("src", "prod/client", se, sp),
                side("dst", "prod/web", e, p),
            ],
            "allow",
            "allow",
        ),
    );
    let (se, sp) = both("allow", &["0|__PROFILE__|pro:kns.dev|allow|0"]);
    let (e, p) = both("allow", &["0|__PROFILE__|pro:kns.dev|allow|0"]);
    check(
        &c,
        flow("10.10.2.1", "10.10.2.2", TCP, 80),
        doc(
            vec![
                side("src", "dev/client", se, sp),
                side("dst", "dev/web", e, p),
            ],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn service_accounts() {
    let c = example("service-accounts");
    let (e, p) = both("allow", &["0|default|np:demo/api-from-frontend-sa|allow|0"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
    let (be, bp) = both("allow", &[KNS_DEMO]);
    let (e, p) = both("deny", &["0|default|np:demo/api-from-frontend-sa|deny|-1"]);
    check(
        &c,
        flow("10.10.0.3", "10.10.0.2", TCP, 8080),
        doc(
            vec![
                side("src", "demo/batch", be, bp),
                side("dst", "demo/api", e, p),
            ],
            "deny",
            "deny",
        ),
    );
}

#[test]
fn named_ports() {
    let c = example("named-ports");
    let (e, p) = both("allow", &["0|default|np:demo/api-http|allow|0"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
    let (e, p) = both("deny", &["0|default|np:demo/api-http|deny|-1"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 80),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "deny",
            "deny",
        ),
    );
}

#[test]
fn network_sets() {
    let c = example("network-sets");
    let (e, p) = both("allow", &["0|default|np:demo/api-trusted|allow|0"]);
    check(
        &c,
        flow("198.51.100.9", "10.10.0.2", TCP, 80),
        doc(vec![side("dst", "demo/api", e, p)], "allow", "allow"),
    );
    check(
        &c,
        flow("203.0.113.9", "10.10.0.2", TCP, 80),
        doc(
            vec![side(
                "dst",
                "demo/api",
                view("deny", &["0|default|np:demo/api-trusted|deny|-1"]),
                view("deny", &["0|default|gnp:api-partners|deny|-1"]),
            )],
            "deny",
            "deny",
        ),
    );
    let (e, p) = both("allow", &["0|default|gnp:api-partners|allow|0"]);
    check(
        &c,
        flow("203.0.113.9", "10.10.0.2", TCP, 443),
        doc(vec![side("dst", "demo/api", e, p)], "allow", "allow"),
    );
}

#[test]
fn k8s_default_deny() {
    let c = example("k8s-default-deny");
    let (e, p) = both("allow", &["0|default|knp:demo/allow-client-to-api|allow|0"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 22),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "demo/api",
                    view("deny", &["0|default|knp:demo/default-deny-api|deny|-1"]),
                    view("deny", &["0|default|knp:demo/allow-client-to-api|deny|-1"]),
                ),
            ],
            "deny",
            "deny",
        ),
    );
    // The client is selected by no policy: its namespace profile allows.
    let (ae, ap) = both("allow", &[KNS_DEMO]);
    let (ce, cp) = both("allow", &[KNS_DEMO]);
    check(
        &c,
        flow("10.10.0.2", "10.10.0.1", TCP, 80),
        doc(
            vec![
                side("src", "demo/api", ae, ap),
                side("dst", "demo/client", ce, cp),
            ],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn staged_k8s_policy() {
    let c = example("staged-k8s-policy");
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 8080),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "demo/api",
                    view("allow", &[KNS_DEMO]),
                    view("allow", &["0|default|sknp:demo/api-lockdown|allow|0"]),
                ),
            ],
            "allow",
            "allow",
        ),
    );
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 22),
        doc(
            vec![
                client_src(),
                side(
                    "dst",
                    "demo/api",
                    view("allow", &[KNS_DEMO]),
                    view("deny", &["0|default|sknp:demo/api-lockdown|deny|-1"]),
                ),
            ],
            "allow",
            "deny",
        ),
    );
}

#[test]
fn delete_staged() {
    let c = example("delete-staged");
    let (e, p) = both("allow", &["0|default|np:demo/api-allow-all|allow|0"]);
    check(
        &c,
        flow("10.10.0.1", "10.10.0.2", TCP, 80),
        doc(
            vec![client_src(), side("dst", "demo/api", e, p)],
            "allow",
            "allow",
        ),
    );
}

#[test]
fn every_example_directory_is_tested() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .expect("examples/")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let tested = [
        "delete-staged",
        "gnp-namespace-selector",
        "k8s-default-deny",
        "log",
        "named-ports",
        "network-sets",
        "profiles",
        "seed",
        "service-accounts",
        "staged-deny-over-allow",
        "staged-k8s-policy",
        "staged-only-tier",
        "tiers-pass",
    ];
    assert_eq!(dirs, tested, "a new example directory needs a test here");
}
