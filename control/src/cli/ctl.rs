//! The verbs that talk to a running `tiergate run` over its control socket
//! (`--socket PATH`, else `$TIERGATE_SOCKET`, else /run/tiergate/tiergate.sock):
//! `apply`, `delete`, `get`, `flows`, `impact --live`, `stats`, `health`, `version`.
//!
//! Exit codes: 0 done, 1 the daemon refused the input (invalid resources, a resource
//! not found; nothing changed), 2 usage error, unreadable input or no daemon.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Global, Output, structured};
use crate::server::client::{Client, ClientError, socket_path};
use crate::server::proto::{FlowFilter, KeyRef, MAX_REQUEST_BYTES, Op, SourceText};
use crate::{errln, outln};

/// Where the daemon is.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The daemon's control socket (default: $TIERGATE_SOCKET, else
    /// /run/tiergate/tiergate.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Arguments of `tiergate apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// Resources: a YAML/JSON file, a directory (every *.yaml, *.yml, *.json below it)
    /// or `-` (stdin); repeatable. Everything given is one change: all or nothing.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `tiergate delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Kind of the resource (`networkpolicy`, `gnp`, `tier`, ...).
    #[arg(required_unless_present = "files", requires = "name")]
    pub kind: Option<String>,
    /// Name of the resource.
    pub name: Option<String>,
    /// Namespace of a namespaced kind.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Delete the resources these files define (their kinds, namespaces and names).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        conflicts_with = "kind"
    )]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `tiergate get`.
#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// Kind (`networkpolicy`/`np`, `globalnetworkpolicy`/`gnp`, `tier`, `knp`, ...).
    pub kind: String,
    /// One resource's name.
    pub name: Option<String>,
    /// Namespace of a namespaced kind.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `tiergate flows`.
#[derive(Debug, Clone, clap::Args)]
pub struct FlowsArgs {
    /// Enforced action: allow or deny.
    #[arg(long)]
    pub action: Option<String>,
    /// Pending action (staged policies as if enforced): allow or deny.
    #[arg(long)]
    pub pending_action: Option<String>,
    /// A policy in the enforced or pending trace (name, ns/name or part of a hit
    /// string).
    #[arg(long)]
    pub policy: Option<String>,
    /// Namespace of either end.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Address of either end.
    #[arg(long)]
    pub ip: Option<String>,
    /// Port of either end.
    #[arg(long)]
    pub port: Option<u16>,
    /// Most records shown (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Keep printing new records as they arrive (one JSON line each with -o json).
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `tiergate stats`, `health`, `version`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlainArgs {
    #[command(flatten)]
    pub conn: Conn,
}

fn usage(cmd: &str, msg: impl std::fmt::Display) -> ExitCode {
    errln!("tiergate {cmd}: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn failed(cmd: &str, e: ClientError) -> ExitCode {
    match e {
        ClientError::Connect(m) => usage(cmd, m),
        ClientError::Remote(e) => {
            errln!("tiergate {cmd}: {}", e.message);
            for p in e.problems.iter().skip(1) {
                errln!("  {p}");
            }
            ExitCode::from(match e.code.as_str() {
                "invalid" | "not_found" | "persist" => EXIT_INVALID,
                _ => EXIT_USAGE,
            })
        }
    }
}

fn connect(cmd: &str, conn: &Conn) -> Result<Client, ExitCode> {
    Client::connect(&socket_path(conn.socket.as_deref())).map_err(|e| failed(cmd, e))
}

fn call(cmd: &str, conn: &Conn, op: Op) -> Result<Value, ExitCode> {
    let mut c = connect(cmd, conn)?;
    c.call(op).map_err(|e| failed(cmd, e))
}

/// Reads the `-f` sources as the daemon will read them (a directory: every *.yaml,
/// *.yml, *.json below it, in name order).
fn read_sources(paths: &[PathBuf]) -> Result<Vec<SourceText>, String> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for p in paths {
        let mut files = Vec::new();
        if p == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("<stdin>: {e}"))?;
            total += text.len();
            out.push(SourceText {
                source: "<stdin>".into(),
                text,
                json: false,
            });
            continue;
        }
        if p.is_dir() {
            walk(p, &mut files).map_err(|e| format!("{}: {e}", p.display()))?;
            files.sort();
            if files.is_empty() {
                return Err(format!(
                    "{}: no *.yaml, *.yml or *.json file in the directory",
                    p.display()
                ));
            }
        } else {
            files.push(p.clone());
        }
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            total += text.len();
            out.push(SourceText {
                json: f.extension().is_some_and(|x| x == "json"),
                source: f.display().to_string(),
                text,
            });
        }
    }
    if total + 4096 > MAX_REQUEST_BYTES {
        return Err(format!(
            "the resources add up to {total} bytes, more than a request may carry ({MAX_REQUEST_BYTES}): apply them in parts"
        ));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn print_change(what: &str, r: &Value, output: Output) {
    if !matches!(output, Output::Table | Output::Wide) {
        outln!("{}", structured(r, output));
        return;
    }
    let counts = if what == "deleted" {
        format!("{} deleted", r["deleted"])
    } else {
        format!(
            "{} created, {} updated, {} unchanged",
            r["created"], r["updated"], r["unchanged"]
        )
    };
    if r["changed"] == json!(true) {
        outln!(
            "{counts}; policy generation {} running on {}/{} workers after {:.1} ms",
            r["generation"],
            r["workers"]["running_generation"],
            r["workers"]["total"],
            r["timings"]["total_ms"].as_f64().unwrap_or(0.0)
        );
    } else {
        outln!(
            "{counts}; nothing changed (policy generation {})",
            r["generation"]
        );
    }
}

/// Runs `tiergate apply`.
pub fn apply(args: &ApplyArgs, global: &Global) -> ExitCode {
    let files = match read_sources(&args.files) {
        Ok(f) => f,
        Err(e) => return usage("apply", e),
    };
    match call(
        "apply",
        &args.conn,
        Op::Apply {
            text: None,
            source: None,
            files,
        },
    ) {
        Ok(r) => {
            print_change("applied", &r, global.output);
            ExitCode::from(EXIT_OK)
        }
        Err(c) => c,
    }
}

/// Runs `tiergate delete`.
pub fn delete(args: &DeleteArgs, global: &Global) -> ExitCode {
    let files = match read_sources(&args.files) {
        Ok(f) => f,
        Err(e) => return usage("delete", e),
    };
    let keys = match (&args.kind, &args.name) {
        (Some(kind), Some(name)) => vec![KeyRef {
            kind: kind.clone(),
            namespace: Some(args.namespace.clone()),
            name: name.clone(),
        }],
        _ => Vec::new(),
    };
    match call(
        "delete",
        &args.conn,
        Op::Delete {
            keys,
            text: None,
            source: None,
            files,
        },
    ) {
        Ok(r) => {
            print_change("deleted", &r, global.output);
            ExitCode::from(EXIT_OK)
        }
        Err(c) => c,
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, x)| format!("{x:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs `tiergate get`.
pub fn get(args: &GetArgs, global: &Global) -> ExitCode {
    let r = match call(
        "get",
        &args.conn,
        Op::Get {
            kind: args.kind.clone(),
            name: args.name.clone(),
            namespace: (!args.all_namespaces).then(|| args.namespace.clone()),
        },
    ) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let items = r["items"].as_array().cloned().unwrap_or_default();
    match global.output {
        Output::Json | Output::Yaml => {
            let doc = match (&args.name, items.as_slice()) {
                (Some(_), [one]) => one.clone(),
                _ => json!({ "apiVersion": "v1", "kind": "List", "items": items }),
            };
            outln!("{}", structured(&doc, global.output));
        }
        Output::Table | Output::Wide => {
            let wide = global.output == Output::Wide;
            let namespaced = items
                .iter()
                .any(|i| !s(i, &["metadata", "namespace"]).is_null());
            let policy = items.iter().any(|i| {
                i["kind"]
                    .as_str()
                    .is_some_and(|k| k.ends_with("NetworkPolicy"))
            });
            let mut head = vec!["NAME"];
            if namespaced {
                head.insert(0, "NAMESPACE");
            }
            if policy {
                head.extend(["TIER", "ORDER"]);
                if wide {
                    head.extend(["SELECTOR", "TYPES", "INGRESS", "EGRESS"]);
                }
            } else if wide {
                head.push("LABELS");
            }
            let mut rows = vec![head.iter().map(|h| (*h).to_string()).collect::<Vec<_>>()];
            for i in &items {
                let mut row = vec![cell(s(i, &["metadata", "name"]))];
                if namespaced {
                    row.insert(0, cell(s(i, &["metadata", "namespace"])));
                }
                if policy {
                    row.push(cell(s(i, &["spec", "tier"])));
                    row.push(cell(s(i, &["spec", "order"])));
                    if wide {
                        let sel = s(i, &["spec", "selector"]);
                        let sel = if sel.is_null() {
                            s(i, &["spec", "podSelector"]).to_string()
                        } else {
                            cell(sel)
                        };
                        row.push(sel);
                        let types = s(i, &["spec", "types"]);
                        row.push(cell(if types.is_null() {
                            s(i, &["spec", "policyTypes"])
                        } else {
                            types
                        }));
                        for dir in ["ingress", "egress"] {
                            row.push(
                                s(i, &["spec", dir])
                                    .as_array()
                                    .map_or(0, Vec::len)
                                    .to_string(),
                            );
                        }
                    }
                } else if wide {
                    let labels = s(i, &["metadata", "labels"])
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", cell(v)))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    row.push(if labels.is_empty() {
                        "-".into()
                    } else {
                        labels
                    });
                }
                rows.push(row);
            }
            crate::out!("{}", table(&rows));
        }
    }
    ExitCode::from(EXIT_OK)
}

fn flow_row(f: &Value) -> Vec<String> {
    let end = |ns: &Value, name: &Value, ip: &Value, port: &Value| {
        let who = match (cell(ns).as_str(), cell(name)) {
            (_, n) if n == "pub" || n == "pvt" => cell(ip),
            ("-", n) => n,
            (ns, n) => format!("{ns}/{n}"),
        };
        format!("{who} ({}:{})", cell(ip), cell(port))
    };
    let policies: Vec<String> = f["ends"]
        .as_array()
        .map(|ends| {
            ends.iter()
                .filter_map(|e| e["enforced"].as_array()?.last().map(cell))
                .collect()
        })
        .unwrap_or_default();
    vec![
        cell(&f["seq"]),
        end(
            &f["src_namespace"],
            &f["src_name"],
            &f["src_ip"],
            &f["src_port"],
        ),
        end(
            &f["dst_namespace"],
            &f["dst_name"],
            &f["dst_ip"],
            &f["dst_port"],
        ),
        cell(&f["proto"]),
        cell(&f["action"]),
        cell(&f["pending_action"]),
        format!(
            "{}/{}",
            f["packets_fwd"].as_u64().unwrap_or(0),
            f["packets_rev"].as_u64().unwrap_or(0)
        ),
        if policies.is_empty() {
            "-".into()
        } else {
            policies.join(" ")
        },
    ]
}

const FLOW_HEAD: [&str; 8] = [
    "SEQ",
    "SOURCE",
    "DESTINATION",
    "PROTO",
    "ACTION",
    "PENDING",
    "PACKETS",
    "POLICY",
];

/// Runs `tiergate flows`.
pub fn flows(args: &FlowsArgs, global: &Global) -> ExitCode {
    let filter = FlowFilter {
        action: args.action.clone(),
        pending_action: args.pending_action.clone(),
        policy: args.policy.clone(),
        namespace: args.namespace.clone(),
        ip: args.ip.clone(),
        port: args.port,
    };
    if let Err(e) = filter.validate() {
        return usage("flows", e);
    }
    let op = Op::Flows {
        filter,
        limit: Some(args.limit),
        follow: args.follow,
    };
    let mut c = match connect("flows", &args.conn) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let output = global.output;
    let mut first = true;
    let r = c.stream(op, |v| {
        let flows = v["flows"].as_array().cloned().unwrap_or_default();
        match output {
            Output::Json if args.follow => {
                for f in &flows {
                    outln!("{f}");
                }
            }
            Output::Json | Output::Yaml => outln!("{}", structured(&flows, output)),
            Output::Table | Output::Wide => {
                let mut rows = Vec::new();
                if first {
                    rows.push(FLOW_HEAD.iter().map(|h| (*h).to_string()).collect());
                }
                rows.extend(flows.iter().map(flow_row));
                if !rows.is_empty() {
                    crate::out!("{}", table(&rows));
                }
                if let Some(n) = v["lost"].as_u64() {
                    errln!("tiergate flows: {n} records were not shown (this client fell behind)");
                }
            }
        }
        first = false;
        super::out::flush_stdout();
        true
    });
    match r {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => failed("flows", e),
    }
}

/// Runs `tiergate impact --live`.
pub fn impact(conn: &Conn, top: usize, global: &Global) -> ExitCode {
    match call("impact", conn, Op::Impact { top: Some(top) }) {
        Ok(r) => {
            match global.output {
                Output::Table | Output::Wide => crate::out!("{}", cell(&r["text"])),
                o => outln!("{}", structured(&r["report"], o)),
            }
            ExitCode::from(EXIT_OK)
        }
        Err(c) => c,
    }
}

/// Runs `tiergate stats`.
pub fn stats(args: &PlainArgs, global: &Global) -> ExitCode {
    match call("stats", &args.conn, Op::Stats) {
        Ok(r) => {
            match global.output {
                Output::Table | Output::Wide => outln!("{}", cell(&r["text"]).trim_end()),
                o => outln!("{}", structured(&r["counters"], o)),
            }
            ExitCode::from(EXIT_OK)
        }
        Err(c) => c,
    }
}

/// Runs `tiergate health`.
pub fn health(args: &PlainArgs, global: &Global) -> ExitCode {
    match call("health", &args.conn, Op::Health) {
        Ok(r) => {
            match global.output {
                Output::Table | Output::Wide => outln!(
                    "{}: policy generation {} ({} resources), workers on generations {}, up {:.0} s",
                    cell(&r["status"]),
                    r["generation"],
                    r["resources"],
                    cell(&r["worker_generations"]),
                    r["uptime_s"].as_f64().unwrap_or(0.0)
                ),
                o => outln!("{}", structured(&r, o)),
            }
            ExitCode::from(EXIT_OK)
        }
        Err(c) => c,
    }
}

/// Runs `tiergate version`.
pub fn version(args: &PlainArgs, global: &Global) -> ExitCode {
    let client = env!("CARGO_PKG_VERSION");
    match call("version", &args.conn, Op::Version) {
        Ok(r) => {
            match global.output {
                Output::Table | Output::Wide => outln!(
                    "client {client}, daemon {} (protocol {})",
                    cell(&r["version"]),
                    r["protocol"]
                ),
                o => outln!(
                    "{}",
                    structured(&json!({ "client": client, "daemon": r }), o)
                ),
            }
            ExitCode::from(EXIT_OK)
        }
        Err(c) => c,
    }
}
