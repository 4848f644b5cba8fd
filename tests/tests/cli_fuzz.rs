//! The `tiergate` binary driven with random subcommands, flags and paths: full
//! devices as outputs, FIFOs with no writer or reader (alone and inside a `-f`
//! directory), outputs that are the same file as an input, missing paths, empty
//! directories and files, garbage numbers, `-` for stdin and stdout. `run` is driven
//! on interfaces that do not exist, so every flag is parsed and checked but nothing is
//! ever attached (also when the tests run as root).
//!
//! Every run must end by itself within 10 s with exit 0, 1 or 2: no panic message, no
//! death by signal (abort, out of memory), no hang. Inputs are never modified.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use tests::{temp_dir, tiergate_bin};

/// Longest a run may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Files every case may name. Made once per test process.
#[derive(Debug)]
struct Fixture {
    dir: PathBuf,
    policies: PathBuf,
    policy_file: PathBuf,
    pcap: PathBuf,
    pcap_bytes: Vec<u8>,
    policy_bytes: Vec<u8>,
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", p.display());
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = temp_dir("cli-fuzz");
        let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed");
        let policies = dir.join("policies");
        std::fs::create_dir(&policies).unwrap();
        for e in std::fs::read_dir(&seed).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
            }
        }
        let policy_file = policies.join("20-enforced.yaml");
        let pcap = dir.join("seed.pcap");
        let st = Command::new(tiergate_bin())
            .args(["gen", "--scenario", "seed", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::create_dir(dir.join("empty-dir")).unwrap();
        let fifo_dir = dir.join("fifo-dir");
        std::fs::create_dir(&fifo_dir).unwrap();
        mkfifo(&fifo_dir.join("x.yaml"));
        mkfifo(&dir.join("fifo"));
        std::fs::write(
            dir.join("garbage"),
            b"\x00\xffnot: [valid\n\x0a\x0d\x0d\x0a",
        )
        .unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        Fixture {
            pcap_bytes: std::fs::read(&pcap).unwrap(),
            policy_bytes: std::fs::read(&policy_file).unwrap(),
            dir,
            policies,
            policy_file,
            pcap,
        }
    })
}

/// A path an argument may take; resolved against the fixture and the case's own
/// output directory.
#[derive(Clone, Copy, Debug)]
enum P {
    Policies,
    PolicyFile,
    Pcap,
    EmptyDir,
    FifoDir,
    Fifo,
    Garbage,
    Empty,
    Missing,
    MissingDir,
    Dash,
    DevNull,
    DevFull,
    /// A fresh path in the case's directory (`n` picks one of a few).
    Fresh(u8),
}

impl P {
    fn resolve(self, out: &Path) -> String {
        let f = fixture();
        let p = match self {
            P::Policies => f.policies.clone(),
            P::PolicyFile => f.policy_file.clone(),
            P::Pcap => f.pcap.clone(),
            P::EmptyDir => f.dir.join("empty-dir"),
            P::FifoDir => f.dir.join("fifo-dir"),
            P::Fifo => f.dir.join("fifo"),
            P::Garbage => f.dir.join("garbage"),
            P::Empty => f.dir.join("empty"),
            P::Missing => f.dir.join("missing.yaml"),
            P::MissingDir => f.dir.join("no/such/dir/x"),
            P::Dash => return "-".into(),
            P::DevNull => "/dev/null".into(),
            P::DevFull => "/dev/full".into(),
            P::Fresh(n) => out.join(format!("out{n}")),
        };
        p.to_str().unwrap().to_string()
    }
}

/// Paths read as input (no `/dev/full`: it reads as endless zeros, like `/dev/zero`).
fn input() -> impl Strategy<Value = P> {
    select(vec![
        P::Policies,
        P::PolicyFile,
        P::Pcap,
        P::EmptyDir,
        P::FifoDir,
        P::Fifo,
        P::Garbage,
        P::Empty,
        P::Missing,
        P::Dash,
        P::DevNull,
        P::Fresh(0),
    ])
}

/// Paths written as output by `replay` (including its possible inputs: same-file
/// outputs).
fn output() -> impl Strategy<Value = P> {
    select(vec![
        P::Pcap,
        P::PolicyFile,
        P::Policies,
        P::EmptyDir,
        P::Fifo,
        P::MissingDir,
        P::Dash,
        P::DevNull,
        P::DevFull,
        P::Fresh(0),
        P::Fresh(1),
        P::Fresh(1),
    ])
}

/// Paths `gen -w` writes: never a fixture file unless it is also the trace read
/// (see [`same_file_gen`]).
fn gen_output() -> impl Strategy<Value = P> {
    select(vec![
        P::EmptyDir,
        P::Fifo,
        P::MissingDir,
        P::Dash,
        P::DevNull,
        P::DevFull,
        P::Fresh(0),
        P::Fresh(1),
    ])
}

/// `gen` writing over the trace it reads.
fn same_file_gen() -> BoxedStrategy<Vec<A>> {
    select(vec![P::Pcap, P::PolicyFile])
        .prop_map(|p| {
            vec![
                A::Lit("--classbench-trace"),
                A::Path(p),
                A::Lit("-w"),
                A::Path(p),
            ]
        })
        .boxed()
}

/// Mostly valid numbers, some garbage.
fn number() -> impl Strategy<Value = &'static str> {
    select(vec![
        "1",
        "2",
        "3",
        "5",
        "20",
        "100",
        "1000",
        "0",
        "1",
        "2",
        "-1",
        "7",
        "65536",
        "18446744073709551615",
        "18446744073709551616",
        "nan",
        "1e400",
        "0.5",
        "abc",
        "",
        "0x10",
    ])
}

/// One argument of a command line, before paths are resolved.
#[derive(Clone, Debug)]
enum A {
    Lit(&'static str),
    Path(P),
}

fn flag_with<S: Strategy<Value = A> + 'static>(
    flag: &'static str,
    value: S,
) -> BoxedStrategy<Vec<A>> {
    value.prop_map(move |v| vec![A::Lit(flag), v]).boxed()
}

fn num(flag: &'static str) -> BoxedStrategy<Vec<A>> {
    flag_with(flag, number().prop_map(A::Lit))
}

fn lit(flag: &'static str, values: Vec<&'static str>) -> BoxedStrategy<Vec<A>> {
    flag_with(flag, select(values).prop_map(A::Lit))
}

fn inp(flag: &'static str) -> BoxedStrategy<Vec<A>> {
    flag_with(flag, input().prop_map(A::Path))
}

fn outp(flag: &'static str) -> BoxedStrategy<Vec<A>> {
    flag_with(flag, output().prop_map(A::Path))
}

fn alone(flag: &'static str) -> BoxedStrategy<Vec<A>> {
    Just(vec![A::Lit(flag)]).boxed()
}

fn format() -> BoxedStrategy<Vec<A>> {
    lit("-o", vec!["table", "json", "yaml", "xml"])
}

fn ip(flag: &'static str) -> BoxedStrategy<Vec<A>> {
    lit(
        flag,
        vec![
            "10.0.1.10",
            "10.0.1.20",
            "10.10.0.2",
            "fd00::1",
            "300.1.1.1",
            "x",
        ],
    )
}

/// The flags of one subcommand, each a strategy for `[flag, value]`.
fn flags(cmd: &str) -> Vec<BoxedStrategy<Vec<A>>> {
    let mut v = vec![format()];
    match cmd {
        "check" => v.extend([inp("-f"), inp("--filename")]),
        "eval" => v.extend([
            inp("-f"),
            num("--dport"),
            num("--sport"),
            num("--icmp-type"),
            num("--icmp-code"),
            alone("--compiled"),
        ]),
        "replay" | "impact" => v.extend([
            inp("-f"),
            inp("--policies"),
            inp("--pcap"),
            num("--workers"),
            lit("--pace", vec!["max", "recorded", "slow"]),
            outp("--allowed-out"),
            outp("--denied-out"),
            outp("--flowlog"),
            num("--interval"),
            num("--flow-capacity"),
            num("--top"),
            lit("--classifier", vec!["tree", "linear", "fast"]),
        ]),
        // Interfaces that do not exist (see `base`): every run ends before it would
        // attach anything, also as root.
        "run" => v.extend([
            inp("-f"),
            inp("--policies"),
            alone("--allow-empty"),
            num("--queues"),
            num("--workers"),
            lit("--cores", vec!["0", "0,1", "1,x", "18446744073709551616"]),
            outp("--flowlog"),
            num("--interval"),
            num("--flow-capacity"),
            alone("--busy-poll"),
            num("--batch"),
            lit("--mode", vec!["wire", "router", "bridge"]),
            lit(
                "--next-hop",
                vec!["tgfz-nosuch0=02:00:00:00:00:01", "tgfz-nosuch1=zz", "x"],
            ),
            alone("--copy"),
            alone("--generic-xdp"),
            num("--duration"),
            lit("--duration", vec!["1e20", "-inf", "0.001", "315360001"]),
        ]),
        _ => v.extend([
            same_file_gen(),
            lit("--format", vec!["pcap", "pcapng", "tar"]),
            lit("--scenario", vec!["seed", "other"]),
            inp("--classbench-trace"),
            num("--seed"),
            num("--flows"),
            num("--packets"),
            num("--zipf"),
            num("--ipv6-share"),
            num("--vlan-share"),
            num("--malformed-share"),
            lit("--size", vec!["min", "imix", "64", "12", "9019"]),
            alone("--no-handshakes"),
        ]),
    }
    v
}

/// What every command line of `cmd` starts with (its required flags, most of the
/// time), so that most runs get past argument parsing.
fn base(cmd: &'static str) -> BoxedStrategy<Vec<A>> {
    match cmd {
        "check" => inp("-f"),
        "eval" => (
            inp("-f"),
            ip("--src"),
            ip("--dst"),
            lit(
                "--proto",
                vec!["tcp", "tcp", "udp", "icmp", "icmpv6", "47", "300"],
            ),
        )
            .prop_map(|(a, b, c, d)| [a, b, c, d].concat())
            .boxed(),
        "run" => prop_oneof![
            8 => Just(vec![
                A::Lit("--iface"),
                A::Lit("tgfz-nosuch0"),
                A::Lit("--iface"),
                A::Lit("tgfz-nosuch1"),
            ]),
            1 => Just(vec![A::Lit("--iface"), A::Lit("tgfz-nosuch0")]),
            1 => Just(vec![
                A::Lit("--iface"),
                A::Lit("tgfz-nosuch0"),
                A::Lit("--iface"),
                A::Lit("tgfz-nosuch0"),
            ]),
        ]
        .boxed(),
        "gen" => prop_oneof![
            4 => flag_with("-w", gen_output().prop_map(A::Path)),
            1 => same_file_gen(),
        ]
        .boxed(),
        _ => Just(Vec::new()).boxed(),
    }
}

/// A whole command line: a subcommand, its base flags and up to four more.
fn command_line() -> impl Strategy<Value = Vec<A>> {
    select(vec![
        "check", "eval", "replay", "replay", "impact", "gen", "gen", "run", "run",
    ])
    .prop_flat_map(|cmd| {
        let extra = proptest::collection::vec(proptest::strategy::Union::new(flags(cmd)), 0..4);
        let rare = select(vec![
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some("--help"),
            Some("--bogus"),
        ]);
        (base(cmd), extra, rare).prop_map(move |(base, extra, rare)| {
            let mut args = vec![A::Lit(cmd)];
            args.extend(base);
            args.extend(extra.into_iter().flatten());
            args.extend(rare.map(A::Lit));
            args
        })
    })
}

/// What stdin holds.
fn stdin() -> impl Strategy<Value = u8> {
    0u8..4
}

struct Ran {
    status: Option<ExitStatus>,
    stderr: String,
    elapsed: Duration,
}

/// Runs `args` with `input` on stdin; kills the process after [`DEADLINE`].
fn run(args: &[String], input: Vec<u8>, cwd: &Path) -> Ran {
    let start = Instant::now();
    let mut child = Command::new(tiergate_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tiergate");
    let mut sin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // The command may never read stdin: a broken pipe here is fine.
        let _ = sin.write_all(&input);
    });
    let mut sout = child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = sout.read_to_end(&mut sink);
    });
    let mut serr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = serr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let _ = feeder.join();
    let _ = drain.join();
    Ran {
        status,
        stderr: errs.join().unwrap_or_default(),
        elapsed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // A shrinking step can cost a full deadline: keep the search short.
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_command_line_ends_in_time_with_0_1_or_2(line in command_line(), sin in stdin()) {
        let f = fixture();
        let case = tempfile_dir();
        let args: Vec<String> = line
            .iter()
            .map(|a| match a {
                A::Lit(s) => (*s).to_string(),
                A::Path(p) => p.resolve(&case),
            })
            .collect();
        let input = match sin {
            0 => Vec::new(),
            1 => f.policy_bytes.clone(),
            2 => f.pcap_bytes.clone(),
            _ => b"\x0a\x0d\x0d\x0a garbage".to_vec(),
        };
        let ran = run(&args, input, &case);
        let shown = format!("tiergate {}", args.join(" "));
        let status = ran
            .status
            .unwrap_or_else(|| panic!("{shown}: still running after {DEADLINE:?}: killed"));
        prop_assert!(
            status.signal().is_none(),
            "{shown}: killed by signal {:?}\n{}", status.signal(), ran.stderr
        );
        prop_assert!(
            matches!(status.code(), Some(0..=2)),
            "{shown}: exit {:?}\n{}", status.code(), ran.stderr
        );
        prop_assert!(!ran.stderr.contains("panicked at"), "{shown}: {}", ran.stderr);
        prop_assert!(ran.elapsed <= DEADLINE, "{shown}: {:?}", ran.elapsed);
        // A fixture file the run read must be intact; one it only wrote (an output
        // naming it while the run read other inputs) is put back for the next case.
        let read = |flags: &[&str], which: &[P]| {
            line.windows(2).any(|w| match (&w[0], &w[1]) {
                (A::Lit(flag), A::Path(p)) => {
                    flags.contains(flag) && which.iter().any(|x| std::mem::discriminant(x) == std::mem::discriminant(p))
                }
                _ => false,
            })
        };
        let pcap_read = read(&["--pcap", "--classbench-trace"], &[P::Pcap]);
        let policy_read =
            read(&["-f", "--filename", "--policies"], &[P::Policies, P::PolicyFile])
                || read(&["--classbench-trace"], &[P::PolicyFile]);
        for (path, bytes, was_read) in [
            (&f.pcap, &f.pcap_bytes, pcap_read),
            (&f.policy_file, &f.policy_bytes, policy_read),
        ] {
            let now = std::fs::read(path).unwrap_or_default();
            if now != *bytes {
                prop_assert!(!was_read, "{shown}: changed its input {}", path.display());
                std::fs::write(path, bytes).unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(&case);
    }
}

/// A fresh directory for one case's outputs (and its working directory, so a stray
/// file named `-` would land there).
fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = fixture()
        .dir
        .join(format!("case-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}
