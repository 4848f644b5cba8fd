//! `tiergate eval -f FILE|DIR|- [-f ...] --src IP --dst IP --proto P [--sport N]
//! [--dport N] [--icmp-type T [--icmp-code C]] [--compiled] [-o table|json|yaml]`:
//! load a policy set as one apply into an empty store (exactly as `check` does),
//! evaluate one flow with the reference evaluator, and print both reporters' enforced
//! and pending verdicts and traces.
//!
//! With `--compiled` the flow goes through the data plane's path instead (lowering to
//! rule programs, the compiled decision-tree classifier) and the report is printed the
//! same way.
//!
//! Output: `-o table` (default) for people; `-o json` is the stable document described
//! in `control::eval::report` and the README; `-o yaml` is the same document as YAML.
//!
//! Exit codes: 0 the flow was evaluated (whatever the verdicts), 1 the policy set is
//! invalid (every problem on stderr, as `check` prints them), 2 usage error (bad flag
//! combination, mixed address families) or unreadable input.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use dataplane::classifier::{BuildConfig, IdentityClassifier as Classifier};
use dataplane::program::proto;

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Global, Output, PolicyFiles, print_structured};
use crate::eval::{self, Cluster, Flow, report};
use crate::lower;
use crate::model::Protocol;
use crate::policy;
use crate::{errln, out};

/// Source port used when `--sport` is not given (the first IANA ephemeral port).
pub const DEFAULT_SPORT: u16 = 49152;

/// Arguments of `tiergate eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The policy set.
    #[command(flatten)]
    pub policy: PolicyFiles,
    /// Source address of the flow.
    #[arg(long, value_name = "IP")]
    pub src: IpAddr,
    /// Destination address of the flow.
    #[arg(long, value_name = "IP")]
    pub dst: IpAddr,
    /// Protocol: tcp, udp, sctp, icmp (IPv4), icmpv6 (IPv6), udplite, or a number 1-255.
    #[arg(long, value_name = "PROTO", value_parser = parse_protocol)]
    pub proto: Protocol,
    /// Source port (TCP, UDP, SCTP) [default: 49152].
    #[arg(long, value_name = "N")]
    pub sport: Option<u16>,
    /// Destination port (required for TCP, UDP, SCTP).
    #[arg(long, value_name = "N")]
    pub dport: Option<u16>,
    /// ICMP type, 0-255 (required for icmp/icmpv6).
    #[arg(long, value_name = "T", value_parser = icmp_type)]
    pub icmp_type: Option<u8>,
    /// ICMP code, 0-255 [default: 0].
    #[arg(long, value_name = "C", requires = "icmp_type", value_parser = icmp_code)]
    pub icmp_code: Option<u8>,
    /// Evaluate through the data plane's path instead of the reference evaluator:
    /// lower the set to rule programs, build the classifier, classify the flow. The
    /// report is the same (and must be: they are tested to agree).
    #[arg(long)]
    pub compiled: bool,
}

fn icmp_field(s: &str, what: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .map_err(|_| format!("{s:?} is not an ICMP {what}: expected a number from 0 to 255"))
}

fn icmp_type(s: &str) -> Result<u8, String> {
    icmp_field(s, "type")
}

fn icmp_code(s: &str) -> Result<u8, String> {
    icmp_field(s, "code")
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| {
        format!("invalid protocol {s:?}: expected tcp, udp, sctp, icmp, icmpv6, udplite or a number 1-255")
    })
}

/// The flow the arguments describe, or a usage error.
pub fn flow(args: &Args) -> Result<Flow, String> {
    if args.src.is_ipv4() != args.dst.is_ipv4() {
        return Err(format!(
            "--src {} and --dst {} are of different address families",
            args.src, args.dst
        ));
    }
    let p = args.proto.0;
    let v4 = args.src.is_ipv4();
    let name = args.proto.to_string();
    if proto::has_ports(p) {
        if args.icmp_type.is_some() || args.icmp_code.is_some() {
            return Err(format!(
                "--icmp-type/--icmp-code apply to icmp and icmpv6, not {name}"
            ));
        }
        let Some(dport) = args.dport else {
            return Err(format!("--dport is required for {name}"));
        };
        let sport = args.sport.unwrap_or(DEFAULT_SPORT);
        return Flow::new(args.src, args.dst, p, sport, dport).map_err(|e| e.to_string());
    }
    if args.sport.is_some() || args.dport.is_some() {
        return Err(format!(
            "--sport/--dport apply to tcp, udp and sctp, not {name}"
        ));
    }
    match (p, v4) {
        (proto::ICMP, false) => {
            return Err("icmp is ICMP for IPv4; use --proto icmpv6 with IPv6 addresses".into());
        }
        (proto::ICMPV6, true) => {
            return Err("icmpv6 needs IPv6 addresses; use --proto icmp with IPv4".into());
        }
        (proto::ICMP | proto::ICMPV6, _) => {
            let Some(t) = args.icmp_type else {
                return Err(format!("--icmp-type is required for {name}"));
            };
            let code = args.icmp_code.unwrap_or(0);
            return Flow::new(args.src, args.dst, p, u16::from(t), u16::from(code))
                .map_err(|e| e.to_string());
        }
        _ => {}
    }
    if args.icmp_type.is_some() || args.icmp_code.is_some() {
        return Err(format!(
            "--icmp-type/--icmp-code apply to icmp and icmpv6, not {name}"
        ));
    }
    Flow::new(args.src, args.dst, p, 0, 0).map_err(|e| e.to_string())
}

/// Loads the set named by `files` into a fresh store and normalises it for the
/// evaluator. Errors are printed on stderr; the `Err` is the exit code.
pub fn load_cluster(files: &[PathBuf]) -> Result<Cluster, u8> {
    load_policy_set(files, false)
}

/// [`load_cluster`]; an empty set is accepted only if `allow_empty`.
pub fn load_policy_set(files: &[PathBuf], allow_empty: bool) -> Result<Cluster, u8> {
    policy::load_paths(files, allow_empty)
        .map(|set| set.cluster)
        .map_err(|e| print_error(&e))
}

/// Prints every line of `e` on stderr and returns its exit code.
pub fn print_error(e: &policy::PolicyError) -> u8 {
    for line in e.lines() {
        errln!("{line}");
    }
    e.exit_code()
}

/// Runs `tiergate eval`.
pub fn run(args: &Args, global: &Global) -> ExitCode {
    let flow = match flow(args) {
        Ok(f) => f,
        Err(msg) => {
            errln!("tiergate eval: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cluster = match load_policy_set(&args.policy.files, args.policy.allow_empty) {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    let evaluation = if args.compiled {
        match compiled(&cluster, &flow) {
            Ok(e) => e,
            Err(msg) => {
                errln!("tiergate eval: {msg}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    } else {
        eval::evaluate(&cluster, &flow)
    };
    match global.output {
        Output::Table => out!("{}", report::to_table(&evaluation)),
        out => print_structured(&report::EvalReport::from(&evaluation), out),
    }
    ExitCode::from(EXIT_OK)
}

/// The evaluation of `flow` through lowering and the compiled classifier (the decision
/// trees the data plane runs).
pub fn compiled(cluster: &Cluster, flow: &Flow) -> Result<eval::Evaluation, String> {
    let lowered = lower::lower(cluster).map_err(|e| e.to_string())?;
    let classifier =
        Classifier::build(&lowered.set, &BuildConfig::default()).map_err(|e| e.to_string())?;
    lowered
        .evaluation(&classifier, flow)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(proto: &str, extra: &[(&str, u16)]) -> Args {
        let get = |k: &str| extra.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        Args {
            policy: PolicyFiles {
                files: vec![],
                allow_empty: false,
            },
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            proto: parse_protocol(proto).unwrap(),
            sport: get("sport"),
            dport: get("dport"),
            icmp_type: get("type").map(|v| v as u8),
            icmp_code: get("code").map(|v| v as u8),
            compiled: false,
        }
    }

    #[test]
    fn flows_from_flags() {
        let f = flow(&args("tcp", &[("dport", 80)])).unwrap();
        assert_eq!(f.to_string(), "10.0.0.1:49152 -> 10.0.0.2:80 TCP");
        let f = flow(&args("ICMP", &[("type", 8)])).unwrap();
        assert_eq!(f.to_string(), "10.0.0.1 -> 10.0.0.2 ICMP type 8 code 0");
        let f = flow(&args("47", &[])).unwrap();
        assert_eq!(f.to_string(), "10.0.0.1 -> 10.0.0.2 47");
    }

    #[test]
    fn usage_errors_say_what_is_needed() {
        for (a, want) in [
            (args("tcp", &[]), "--dport is required for TCP"),
            (
                args("udp", &[("dport", 1), ("type", 3)]),
                "--icmp-type/--icmp-code apply to icmp and icmpv6, not UDP",
            ),
            (args("icmp", &[]), "--icmp-type is required for ICMP"),
            (
                args("icmp", &[("type", 8), ("dport", 1)]),
                "--sport/--dport apply to tcp, udp and sctp, not ICMP",
            ),
            (
                args("icmpv6", &[("type", 128)]),
                "icmpv6 needs IPv6 addresses; use --proto icmp with IPv4",
            ),
        ] {
            assert_eq!(flow(&a).unwrap_err(), want);
        }
        assert!(parse_protocol("gre").is_err());
        let mut mixed = args("tcp", &[("dport", 1)]);
        mixed.dst = "fd00::1".parse().unwrap();
        assert!(
            flow(&mixed)
                .unwrap_err()
                .contains("different address families")
        );
    }
}
