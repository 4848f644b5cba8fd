//! `tiergate run`: the live data plane between two interfaces (AF_XDP).
//!
//! Loads and compiles the policy set as `replay` does, starts the pinned workers of
//! `dataplane::port::afxdp` on the two interfaces and forwards what the enforced verdict
//! allows from each interface to the other, with conntrack (replies of allowed
//! connections pass) and flow logs in `replay`'s record format and aggregation
//! (wall-clock intervals; an interval is written once it is over, the rest at exit).
//!
//! Signals: SIGUSR1 prints the live counters; SIGTERM or SIGINT stop the run (the
//! workers drain their flow tables into final flow-log records, the XDP programs are
//! detached, the counters printed). Counters go to stdout (`-o json` for one JSON
//! document per print), or to stderr when the flow log is written to stdout (then
//! `-o json|yaml` is a usage error: stdout carries one kind of data).
//!
//! The flow log is opened before anything is attached and written in place, a flush
//! per interval, so it can be read (`tail -f`) while the run goes on; unlike the
//! outputs of `replay` it is not staged in a temporary file and renamed at the end.
//! A regular file is appended to, never truncated (a run that fails to start leaves
//! it as it was, and removes one it created); a FIFO nobody reads is refused instead
//! of waited for (see `out::Log`). A failed write stops the run the normal way (the
//! workers drain, the XDP programs are detached) with exit 2.
//!
//! `--state-dir` and `--metrics` live in `run_state` and `run_metrics`.
//!
//! Exit codes: 0 stopped by a signal or `--duration`, 1 invalid policy set or an
//! unusable `--state-dir` generation, 2 a state directory in use, usage
//! error, unwritable flow log, or anything the run needs that is missing
//! (capabilities, memlock, an interface, a queue, an interface already running an XDP
//! program).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Global;
use crate::persist::NoPersist;
use crate::server::{ControlThread, Daemon, Engine, Identity, Trees, client};

mod pcap;
mod serve;

/// How frames are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Bump in the wire: frames untouched; non-IP frames (ARP, LLDP) forwarded too.
    Wire,
    /// Router-style MAC rewrite (needs --next-hop for both interfaces); non-IP frames
    /// go to the kernel's stack on each interface.
    Router,
}

/// The classifier the workers run, and how policy changes reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifierArg {
    /// An address → identity stage before the decision trees (`lower::Live`): a pod
    /// added or removed with a label set that exists is published without building
    /// trees, a policy change builds trees only for the programs it changes.
    Identity,
    /// Per-endpoint decision trees: every change lowers the whole store and compiles
    /// it incrementally (subtrees of unchanged programs are reused).
    Tree,
}

/// How the AF_XDP workers are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedArg {
    /// Real-time SCHED_FIFO (priority 1) workers that sleep as soon as their rings are
    /// empty: on a core shared with the driver's receive work (NAPI) the overload is
    /// then refused before the kernel receives it. Needs CAP_SYS_NICE (else `other`).
    Fifo,
    /// Normal time-sharing workers (an idle worker polls a while before sleeping).
    Other,
}

/// Arguments of `tiergate run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// An interface to forward between; give exactly two. Frames from one go out of
    /// the other. Required unless --pcap.
    #[arg(
        long = "iface",
        value_name = "IF",
        required_unless_present = "pcap",
        conflicts_with = "pcap"
    )]
    pub ifaces: Vec<String>,
    /// Feed the frames of this capture to one worker instead of forwarding between
    /// interfaces (needs no privilege; "forwarded" frames are counted, per frame in
    /// `tiergate stats` for captures of at most 65536 frames).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// With --pcap: replay the capture in a loop until stopped.
    #[arg(long = "loop", requires = "pcap")]
    pub looping: bool,
    /// With --pcap: frames per second (default: as fast as the worker takes them).
    #[arg(long, value_name = "PPS", requires = "pcap", value_parser = clap::value_parser!(u64).range(1..))]
    pub pcap_rate: Option<u64>,
    /// The control socket (`tiergate apply/get/flows/...` talk to it). Default
    /// $TIERGATE_SOCKET, else /run/tiergate/tiergate.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve no control socket.
    #[arg(long, conflicts_with = "socket")]
    pub no_socket: bool,
    /// Permission bits of the control socket (octal). Only uid 0 and the daemon's own
    /// uid are served whatever the mode.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = octal_mode, hide = true)]
    pub socket_mode: u32,
    /// Re-decide the enforced verdict of established connections when policy
    /// changes (default: an established connection keeps the verdict it was allowed
    /// with, as Calico's conntrack does; pending verdicts always follow changes).
    #[arg(long)]
    pub reevaluate: bool,
    /// Policy set: a YAML/JSON file, a directory, or `-` (stdin); repeatable. Default:
    /// no policy (every connection is unpoliced and forwarded).
    #[arg(
        short = 'f',
        long = "filename",
        alias = "policies",
        value_name = "FILE|DIR|-"
    )]
    pub policies: Vec<PathBuf>,
    /// Accept a policy set of zero resources read from `-f` (by default an error: a
    /// wrong path must not pass as "no policy").
    #[arg(long)]
    pub allow_empty: bool,
    /// Queues used on each interface (0..N); one socket per interface and queue.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: u32,
    /// Worker threads, each owning whole queues on both interfaces. Default: one per
    /// queue.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    /// Cores to pin the workers to, e.g. `2,3` (worker k on the k-th, cycling).
    /// Default: every core, in order.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Write flow logs (JSON lines) to this file (`-` = stdout).
    #[arg(long, value_name = "FILE|-")]
    pub flowlog: Option<PathBuf>,
    /// Flow-log aggregation interval in seconds of wall clock (1-86400).
    #[arg(long, default_value_t = crate::flowlog::DEFAULT_INTERVAL_SECS, value_parser = super::values::interval())]
    pub interval: u64,
    /// Flow-table capacity per worker, in connections (1-16777216) [default: 65536].
    #[arg(long, value_name = "N", value_parser = super::values::flow_capacity)]
    pub flow_capacity: Option<usize>,
    /// Busy-poll the sockets (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, SO_BUSY_POLL_BUDGET)
    /// and never sleep when idle: lowest latency, a core per worker at 100 %.
    #[arg(long)]
    pub busy_poll: bool,
    /// Worker scheduling [default: fifo; other with --busy-poll].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub sched: Option<SchedArg>,
    /// Frames per batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch: u16,
    /// Forwarding mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Wire)]
    pub mode: ModeArg,
    /// Router mode: the MAC address frames leaving IF are sent to (`IF=MAC`; one per
    /// interface).
    #[arg(long = "next-hop", value_name = "IF=MAC")]
    pub next_hop: Vec<String>,
    /// Bind the sockets in copy mode even if the driver offers zero-copy.
    #[arg(long)]
    pub copy: bool,
    /// Attach the XDP program in generic (skb) mode even if the driver has native XDP.
    #[arg(long)]
    pub generic_xdp: bool,
    /// Flow offload: once a connection is established and allowed, the XDP program
    /// forwards its packets (TCP without SYN/FIN/RST, UDP) to the other interface
    /// itself, counting them for the flow log; handshakes, teardowns, denied flows and
    /// a connection's packets after a policy change (until it is installed again) still
    /// go through the workers. On veth the
    /// peers of both interfaces need NAPI (GRO on, or an XDP program) to accept
    /// redirected frames. Off by default.
    #[arg(long, overrides_with = "no_offload")]
    pub offload: bool,
    /// No flow offload (the default): every packet goes through the workers.
    #[arg(long, overrides_with = "offload")]
    pub no_offload: bool,
    /// Stop after this many seconds, fractions allowed (0-315360000; default: run
    /// until SIGTERM/SIGINT).
    #[arg(long, value_name = "SECONDS", value_parser = super::values::duration)]
    pub duration: Option<std::time::Duration>,
    /// Keep the applied policy set in DIR (created if missing) and restore it on start.
    /// A DIR holding a generation wins over -f; an empty one is seeded from -f. See
    /// `tiergate state check|repair`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Off by
    /// default; a loopback address unless --metrics-allow-remote.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics on a non-loopback address (metrics name every policy and rule).
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// The classifier the workers run and how changes reach it: `identity` (pod churn
    /// and policy changes published incrementally) or `tree` (every change lowers and
    /// compiles the whole store).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ClassifierArg::Identity)]
    pub classifier: ClassifierArg,
    /// The nice value (-20..=19) a policy or endpoint change runs at on its control
    /// thread while it lasts, or `off` for the thread's own: on a node running other
    /// work a change then waits for its own CPU time, not for a share of a busy core.
    /// Below 0 needs CAP_SYS_NICE; refused, changes run at normal priority (a notice
    /// says so). Workers and background compaction are not affected.
    #[arg(long, value_name = "N|off", default_value = "-10", allow_hyphen_values = true, value_parser = super::values::change_nice)]
    pub change_nice: super::values::NiceArg,
}

/// The flags a run's signal handlers set: `term` on SIGTERM and SIGINT, `usr1` on
/// SIGUSR1 (print the counters), `hup` on SIGHUP (reload the policy files).
#[derive(Debug, Default)]
struct Signals {
    term: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers; SIGHUP's only with `hup` (otherwise it keeps its
    /// default action, ending the process).
    fn install(hup: bool) -> Result<Signals, String> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let s = Signals::default();
        let mut wanted = vec![(SIGTERM, &s.term), (SIGINT, &s.term), (SIGUSR1, &s.usr1)];
        if hup {
            wanted.push((SIGHUP, &s.hup));
        }
        for (sig, flag) in wanted {
            signal_hook::flag::register(sig, Arc::clone(flag))
                .map_err(|e| format!("cannot install the handler of signal {sig}: {e}"))?;
        }
        Ok(s)
    }
}

fn octal_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a permission mode (octal, e.g. 600)"))
}

/// Now, in ns since the UNIX epoch.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Loads the `-f` sources into the daemon (generation 1) and starts the control
/// thread with the control socket. On error, what to exit with (already printed).
fn start_daemon<E: Engine>(args: &Args) -> Result<(Arc<Daemon<E>>, ControlThread), ExitCode> {
    // The restored --state-dir generation (or the -f sources), before any packet.
    let initial =
        super::run_state::initial(&args.policies, args.allow_empty, args.state_dir.as_deref())
            .map_err(ExitCode::from)?;
    let persist: Box<dyn crate::persist::Persist> = match initial.state {
        Some(sd) => Box::new(sd),
        None => Box::new(NoPersist),
    };
    let daemon = match Daemon::new(initial.store, persist) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            crate::errln!("tiergate: {e}");
            return Err(ExitCode::from(super::EXIT_INVALID));
        }
    };
    let usage = |e: String| {
        crate::errln!("tiergate run: {e}");
        ExitCode::from(super::EXIT_USAGE)
    };
    if let Err(e) = daemon.set_change_nice(args.change_nice.0) {
        crate::errln!("tiergate run: --change-nice: {e}; changes run at normal priority");
    }
    let control = ControlThread::start().map_err(usage)?;
    control.housekeeping(&daemon);
    if !args.no_socket {
        let path = client::socket_path(args.socket.as_deref());
        control
            .serve(&path, args.socket_mode, &daemon)
            .map_err(usage)?;
        // A client that goes away must be a failed write, not the daemon's death.
        crate::sys::ignore_sigpipe();
    }
    Ok((daemon, control))
}

/// The output checks every kind of run makes before it loads anything: the flow log is
/// none of the `-f` inputs (it would be appended to the policy), and stdout carries
/// one kind of data.
fn check_outputs(args: &Args, global: &Global) -> Result<(), String> {
    if let Some(log) = &args.flowlog {
        let inputs: Vec<(&str, &std::path::Path)> =
            args.policies.iter().map(|p| ("-f", p.as_path())).collect();
        super::out::refuse_same_files(&inputs, &[("--flowlog", log)])?;
    }
    super::out::one_writer_on_stdout(&[("--flowlog", args.flowlog.as_deref())], global.output)
}

/// Runs `tiergate run`.
pub fn run(args: &Args, global: &Global) -> ExitCode {
    match args.classifier {
        ClassifierArg::Identity => run_with::<Identity>(args, global),
        ClassifierArg::Tree => run_with::<Trees>(args, global),
    }
}

/// [`run`] with the generation engine `E` (the workers' classifier type follows).
fn run_with<E: Engine>(args: &Args, global: &Global) -> ExitCode {
    if args.pcap.is_some() {
        return serve::run::<E>(args, global);
    }
    #[cfg(all(feature = "afxdp", target_os = "linux"))]
    {
        if args.socket.is_some() {
            return live::serve::<E>(args, global);
        }
        live::run::<E>(args, global)
    }
    #[cfg(not(all(feature = "afxdp", target_os = "linux")))]
    {
        let _ = (args, global);
        crate::errln!(
            "tiergate run: this tiergate was built without AF_XDP support (Linux, feature `afxdp`)"
        );
        ExitCode::from(super::EXIT_USAGE)
    }
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
mod live {
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use crossbeam::channel::{Receiver, bounded};
    use dataplane::flow::FlowRecord;
    use dataplane::port::afxdp::{self, AfXdpConfig, Forwarding, IfaceInfo, WorkerSnapshot};
    use dataplane::worker::{ClassifierSlot, Published};
    use serde::Serialize;

    use super::super::out::{self, Log, WriteError};
    use super::super::run_metrics::RunMetrics;
    use super::super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Global, Output};
    use super::{Args, ModeArg, Signals};
    use crate::flowlog::{Aggregator, FlowLog};
    use crate::lower::Names;
    use crate::replay::activities;
    use crate::server::Engine;

    /// Says when a worker could not get the scheduling policy asked for.
    fn sched_note(running: &afxdp::Running) {
        if let Some(n) = &running.sched_note {
            crate::errln!("tiergate run: workers: {n}");
        }
    }

    fn usage(msg: impl std::fmt::Display) -> ExitCode {
        crate::errln!("tiergate run: {msg}");
        ExitCode::from(EXIT_USAGE)
    }

    fn config(args: &Args) -> Result<AfXdpConfig, String> {
        let [a, b] = <[String; 2]>::try_from(args.ifaces.clone()).map_err(|v| {
            format!(
                "give exactly two interfaces (--iface IF --iface IF), got {}",
                v.len()
            )
        })?;
        let forwarding = match args.mode {
            ModeArg::Wire => {
                if !args.next_hop.is_empty() {
                    return Err("--next-hop only applies with --mode router".into());
                }
                Forwarding::Wire
            }
            ModeArg::Router => {
                let mut next_hop = [None, None];
                for nh in &args.next_hop {
                    let (ifname, mac) = nh.split_once('=').ok_or_else(|| {
                        format!("--next-hop {nh:?}: expected IF=MAC, e.g. eth1=02:00:00:00:00:01")
                    })?;
                    let mac = afxdp::parse_mac(mac).ok_or_else(|| {
                        format!(
                            "--next-hop {nh:?}: {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
                        )
                    })?;
                    let i = [&a, &b]
                        .iter()
                        .position(|x| x.as_str() == ifname)
                        .ok_or_else(|| {
                            format!(
                                "--next-hop {nh:?}: {ifname:?} is not one of the --iface interfaces"
                            )
                        })?;
                    next_hop[i] = Some(mac);
                }
                match next_hop {
                    [Some(x), Some(y)] => Forwarding::Router { next_hop: [x, y] },
                    _ => {
                        return Err(format!(
                            "--mode router needs --next-hop IF=MAC for both {a} and {b}"
                        ));
                    }
                }
            }
        };
        let workers = args.workers.unwrap_or(args.queues);
        let sched = match (args.sched, args.busy_poll) {
            (Some(super::SchedArg::Fifo), true) => {
                return Err(
                    "--sched fifo with --busy-poll: a busy-polling worker never sleeps and would starve its core; use --sched other".into(),
                );
            }
            (Some(super::SchedArg::Other), _) | (None, true) => afxdp::Sched::Other,
            (Some(super::SchedArg::Fifo), false) | (None, false) => afxdp::Sched::Fifo,
        };
        let mut cfg = AfXdpConfig {
            ifaces: [a, b],
            queues: args.queues,
            workers: workers as usize,
            cores: args.cores.clone(),
            batch: usize::from(args.batch),
            busy_poll: args.busy_poll,
            force_copy: args.copy,
            generic_xdp: args.generic_xdp,
            sched,
            forwarding,
            offload: args.offload && !args.no_offload,
            ..AfXdpConfig::default()
        };
        cfg.worker.export_interval_ns = Some(args.interval.saturating_mul(1_000_000_000));
        cfg.worker.reevaluate_enforced = args.reevaluate;
        if let Some(n) = args.flow_capacity {
            cfg.worker.flow.capacity = n;
        }
        Ok(cfg)
    }

    fn now_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Why a run stopped on its own.
    enum Failure {
        /// A message for stderr.
        Msg(String),
        /// A failed flow-log write (reported as `out` reports write errors).
        Log(WriteError),
        /// A failed write of the counters.
        Counters(WriteError),
    }

    /// Folds flow records into the aggregator.
    struct Logs<'a, C> {
        names: &'a Names,
        classifier: &'a C,
        agg: Aggregator,
        out: Option<Log>,
        written: u64,
        metrics: Option<crate::metrics::Metrics>,
    }

    impl<C: dataplane::program::Classify> Logs<'_, C> {
        fn take(&mut self, rx: &Receiver<FlowRecord>) {
            for rec in rx.try_iter() {
                for a in activities(&rec, self.names, self.classifier) {
                    if let Some(m) = &self.metrics {
                        m.add_activity(&a);
                    }
                    self.agg.add(&a);
                }
            }
        }

        fn flush(&mut self, logs: Vec<FlowLog>) -> Result<(), WriteError> {
            self.written += logs.len() as u64;
            match &mut self.out {
                Some(o) => o.write_records(&logs),
                None => Ok(()),
            }
        }
    }

    /// The counters document (`-o json`).
    #[derive(Serialize)]
    struct CountersDoc<'a> {
        uptime_s: f64,
        final_counters: bool,
        interfaces: Vec<IfaceDoc>,
        workers: Vec<WorkerDoc<'a>>,
        flow_log_records: u64,
    }

    #[derive(Serialize)]
    struct IfaceDoc {
        name: String,
        ifindex: u32,
        xdp_mode: &'static str,
        bind_mode: &'static str,
    }

    #[derive(Serialize)]
    struct WorkerDoc<'a> {
        worker: usize,
        core: Option<usize>,
        sched: &'static str,
        rx: u64,
        forwarded: u64,
        dropped_policy: u64,
        dropped_parse: u64,
        non_ip_passed: u64,
        pending_deny: u64,
        offloaded: u64,
        batches: u64,
        frames_per_batch: f64,
        batch_latency_ns: LatencyDoc,
        flows: u64,
        flow_capacity: u64,
        evictions: u64,
        insert_failures: u64,
        policy_generation: u64,
        records_dropped: u64,
        /// With `--offload` only.
        #[serde(skip_serializing_if = "Option::is_none")]
        offload: Option<OffloadDoc>,
        queues: Vec<QueueDoc<'a>>,
    }

    /// A worker's flow-offload counters.
    #[derive(Serialize)]
    struct OffloadDoc {
        packets: u64,
        bytes: u64,
        installs: u64,
        install_failures: u64,
        held_elsewhere: u64,
        removals: u64,
    }

    #[derive(Serialize)]
    struct LatencyDoc {
        p50: u64,
        p90: u64,
        p99: u64,
        p999: u64,
        max: u64,
    }

    #[derive(Serialize)]
    struct QueueDoc<'a> {
        iface: &'a str,
        queue: u32,
        rx: u64,
        tx: u64,
        tx_ring_full: u64,
        fill_ring_empty: u64,
        kernel_rx_dropped: u64,
        kernel_rx_ring_full: u64,
        kernel_rx_fill_ring_empty: u64,
        kernel_tx_ring_empty: u64,
        kernel_invalid_descs: u64,
    }

    fn doc<'a>(
        ifaces: &[IfaceInfo],
        names: &'a [String; 2],
        snaps: &[WorkerSnapshot],
        uptime: Duration,
        final_counters: bool,
        records: u64,
    ) -> CountersDoc<'a> {
        CountersDoc {
            uptime_s: uptime.as_secs_f64(),
            final_counters,
            interfaces: ifaces
                .iter()
                .map(|i| IfaceDoc {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    xdp_mode: i.xdp.name(),
                    bind_mode: i.bind.name(),
                })
                .collect(),
            workers: snaps
                .iter()
                .map(|s| WorkerDoc {
                    worker: s.worker,
                    core: s.core,
                    sched: s.sched.name(),
                    rx: s.rx,
                    forwarded: s.forwarded,
                    dropped_policy: s.dropped_policy,
                    dropped_parse: s.dropped_parse,
                    non_ip_passed: s.non_ip_passed,
                    pending_deny: s.pending_deny,
                    offloaded: s.offloaded,
                    batches: s.batches,
                    frames_per_batch: s.frames_per_batch(),
                    batch_latency_ns: LatencyDoc {
                        p50: s.latency_ns[0],
                        p90: s.latency_ns[1],
                        p99: s.latency_ns[2],
                        p999: s.latency_ns[3],
                        max: s.latency_ns[4],
                    },
                    flows: s.flows,
                    flow_capacity: s.flow_capacity,
                    evictions: s.evictions,
                    insert_failures: s.insert_failures,
                    policy_generation: s.generation,
                    records_dropped: s.records_dropped,
                    offload: s.offload.map(|o| OffloadDoc {
                        packets: o.packets,
                        bytes: o.bytes,
                        installs: o.installs,
                        install_failures: o.install_failures,
                        held_elsewhere: o.held_elsewhere,
                        removals: o.removals,
                    }),
                    queues: s
                        .queues
                        .iter()
                        .map(|q| QueueDoc {
                            iface: names.get(q.iface).map_or("?", String::as_str),
                            queue: q.queue,
                            rx: q.port.rx,
                            tx: q.port.tx,
                            tx_ring_full: q.port.tx_ring_full,
                            fill_ring_empty: q.port.fill_ring_empty,
                            kernel_rx_dropped: q.kernel.rx_dropped,
                            kernel_rx_ring_full: q.kernel.rx_ring_full,
                            kernel_rx_fill_ring_empty: q.kernel.rx_fill_ring_empty,
                            kernel_tx_ring_empty: q.kernel.tx_ring_empty,
                            kernel_invalid_descs: q.kernel.invalid_descs,
                        })
                        .collect(),
                })
                .collect(),
            flow_log_records: records,
        }
    }

    /// Prints the counters; a failed write is returned (the run then stops the
    /// normal way), not the end of the process.
    fn print_counters(
        d: &CountersDoc<'_>,
        output: Output,
        to_stderr: bool,
    ) -> Result<(), WriteError> {
        let text = match output {
            Output::Json => serde_json::to_string(d).unwrap_or_default(),
            Output::Yaml => serde_saphyr::to_string(d).unwrap_or_default(),
            Output::Table | Output::Wide => table(d),
        };
        let line = format_args!("{}\n", text.trim_end());
        if to_stderr {
            out::try_stderr(line)
        } else {
            out::try_stdout(line)
        }
    }

    fn table(d: &CountersDoc<'_>) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let what = if d.final_counters {
            "final counters"
        } else {
            "counters"
        };
        let _ = writeln!(s, "tiergate run: {what} after {:.1} s", d.uptime_s);
        for i in &d.interfaces {
            let _ = writeln!(
                s,
                "  {} (ifindex {}): XDP {}, sockets in {} mode",
                i.name, i.ifindex, i.xdp_mode, i.bind_mode
            );
        }
        for w in &d.workers {
            let core = w
                .core
                .map_or("unpinned".to_string(), |c| format!("core {c}"));
            let _ = writeln!(
                s,
                "  worker {} ({core}, scheduling {}, policy generation {})",
                w.worker, w.sched, w.policy_generation
            );
            let _ = writeln!(
                s,
                "    rx {}  forwarded {}  dropped by policy {}  dropped unparsed {}  non-IP passed {}  pending deny {}  offloaded {}",
                w.rx,
                w.forwarded,
                w.dropped_policy,
                w.dropped_parse,
                w.non_ip_passed,
                w.pending_deny,
                w.offloaded
            );
            let l = &w.batch_latency_ns;
            let _ = writeln!(
                s,
                "    batches {}  frames/batch {:.1}  batch latency ns p50 {} p90 {} p99 {} p99.9 {} max {}",
                w.batches, w.frames_per_batch, l.p50, l.p90, l.p99, l.p999, l.max
            );
            let _ = writeln!(
                s,
                "    flows {}/{}  evictions {}  insert failures {}  flow records lost {}",
                w.flows, w.flow_capacity, w.evictions, w.insert_failures, w.records_dropped
            );
            if let Some(o) = &w.offload {
                let _ = writeln!(
                    s,
                    "    offload: packets {}  bytes {}  installs {}  install failures {}  held elsewhere {}  removals {}",
                    o.packets,
                    o.bytes,
                    o.installs,
                    o.install_failures,
                    o.held_elsewhere,
                    o.removals
                );
            }
            for q in &w.queues {
                let _ = writeln!(
                    s,
                    "    {} q{}: rx {} tx {} tx-ring-full {} fill-ring-empty {} | kernel: rx-dropped {} rx-ring-full {} fill-ring-empty {} tx-ring-empty {} invalid {}",
                    q.iface,
                    q.queue,
                    q.rx,
                    q.tx,
                    q.tx_ring_full,
                    q.fill_ring_empty,
                    q.kernel_rx_dropped,
                    q.kernel_rx_ring_full,
                    q.kernel_rx_fill_ring_empty,
                    q.kernel_tx_ring_empty,
                    q.kernel_invalid_descs
                );
            }
        }
        let _ = writeln!(s, "  flow-log records written: {}", d.flow_log_records);
        s
    }

    /// `run --iface ... --socket`: the daemon of [`super::start_daemon`] (control
    /// socket, applies, live flows, SIGHUP reload) over the AF_XDP workers.
    pub(super) fn serve<E: Engine>(args: &Args, global: &Global) -> ExitCode {
        let cfg = match config(args) {
            Ok(c) => c,
            Err(e) => return usage(e),
        };
        if let Err(e) = super::check_outputs(args, global) {
            return usage(e);
        }
        let counters_to_stderr = args.flowlog.as_deref().is_some_and(out::is_dash);
        let mut agg = match Aggregator::new(args.interval) {
            Ok(a) => a,
            Err(e) => return usage(format!("--interval: {e}")),
        };
        if let Some(addr) = args.metrics
            && let Err(e) = crate::metrics::check_addr(addr, args.metrics_allow_remote)
        {
            return usage(e);
        }
        if let Err(e) =
            super::super::values::check_flow_memory(cfg.workers, cfg.worker.flow.capacity)
        {
            return usage(e);
        }
        let Signals { term, usr1, hup } = match Signals::install(true) {
            Ok(s) => s,
            Err(e) => return usage(e),
        };
        let (daemon, control) = match super::start_daemon::<E>(args) {
            Ok(d) => d,
            Err(code) => return code,
        };
        // Metrics on the control thread's runtime, listening before the first packet.
        let mut metrics = match args.metrics {
            None => None,
            Some(addr) => match RunMetrics::start_announced(
                &control.handle(),
                addr,
                args.metrics_allow_remote,
            ) {
                Ok(m) => Some(m),
                Err(e) => return usage(e),
            },
        };
        let mut log = match args.flowlog.as_deref().map(Log::open).transpose() {
            Ok(l) => l,
            Err(e) => return usage(format!("--flowlog: {e}")),
        };
        let (tx, rx) = bounded::<FlowRecord>(1 << 16);
        let running = match afxdp::start(&cfg, daemon.slot(), tx) {
            Ok(r) => r,
            Err(e) => {
                if let Some(l) = log {
                    l.discard();
                }
                return usage(e.to_string());
            }
        };
        let started = Instant::now();
        sched_note(&running);
        if cfg.offload {
            crate::errln!(
                "tiergate run: flow offload on: established allowed connections are forwarded by the XDP program"
            );
        }
        let (live, ifaces, names) = (
            running.live.clone(),
            running.ifaces.clone(),
            cfg.ifaces.clone(),
        );
        let snaps = |live: &[Arc<crossbeam::utils::CachePadded<afxdp::LiveWorker>>]| -> Vec<WorkerSnapshot> {
            live.iter().map(|w| w.snapshot()).collect()
        };
        // Flow-log records aggregated and written (or, without --flowlog, that would
        // have been): `stats`, SIGUSR1, the final counters and the metrics report it.
        let written = Arc::new(AtomicU64::new(0));
        let live2 = live.clone();
        let written2 = Arc::clone(&written);
        daemon.set_dataplane(crate::server::DataplaneInfo {
            generations: Box::new(move || snaps(&live2).iter().map(|s| s.generation).collect()),
            stats: Box::new(move || {
                let records = written2.load(Ordering::Relaxed);
                let d = doc(
                    &ifaces,
                    &names,
                    &snaps(&live),
                    started.elapsed(),
                    false,
                    records,
                );
                (serde_json::to_value(&d).unwrap_or_default(), table(&d))
            }),
        });
        crate::errln!(
            "tiergate run: forwarding between {} with {} worker(s); pid {}: SIGHUP reloads -f, SIGUSR1 prints counters, SIGTERM stops",
            cfg.ifaces.join(" and "),
            running.live.len(),
            std::process::id()
        );
        let deadline = args.duration.and_then(|d| started.checked_add(d));
        let mut failed = None;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let acts = daemon.ingest(rx.try_iter());
            for a in &acts {
                agg.add(a);
            }
            // Drained also without a flow log: the aggregator must not grow forever.
            let done = agg.drain_ended(now_ns().saturating_sub(2_000_000_000));
            written.fetch_add(done.len() as u64, Ordering::Relaxed);
            if let Some(l) = log.as_mut()
                && let Err(e) = l.write_records(&done)
            {
                failed = Some(ExitCode::from(out::report(&e)));
                break;
            }
            if let Some(m) = metrics.as_mut() {
                for a in &acts {
                    m.metrics().add_activity(a);
                }
                m.refresh(
                    || running.snapshot(),
                    &cfg.ifaces,
                    written.load(Ordering::Relaxed),
                );
            }
            if usr1.swap(false, Ordering::Relaxed) {
                let d = doc(
                    &running.ifaces,
                    &cfg.ifaces,
                    &running.snapshot(),
                    started.elapsed(),
                    false,
                    written.load(Ordering::Relaxed),
                );
                if let Err(e) = print_counters(&d, global.output, counters_to_stderr) {
                    failed = Some(ExitCode::from(out::report(&e)));
                    break;
                }
            }
            if hup.swap(false, Ordering::Relaxed) {
                super::serve::reload(&daemon, &args.policies);
            }
            if term.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if running.finished() {
                failed = Some(usage("a worker stopped unexpectedly"));
                break;
            }
        }
        running.request_stop();
        while !running.finished() {
            for a in daemon.ingest(rx.try_iter()) {
                agg.add(&a);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let d_snaps = running.snapshot();
        let ifaces = running.ifaces.clone();
        let uptime = started.elapsed();
        if let Err(e) = running.stop() {
            failed.get_or_insert(usage(e));
        }
        for a in daemon.ingest(rx.try_iter()) {
            agg.add(&a);
        }
        let rest = agg.drain();
        written.fetch_add(rest.len() as u64, Ordering::Relaxed);
        if failed.is_none()
            && let Some(l) = log.as_mut()
            && let Err(e) = l.write_records(&rest).and_then(|()| l.flush())
        {
            failed = Some(ExitCode::from(out::report(&e)));
        }
        // Stops the control socket (its file is removed).
        drop(control);
        let records = written.load(Ordering::Relaxed);
        let d = doc(&ifaces, &cfg.ifaces, &d_snaps, uptime, true, records);
        if failed.is_none()
            && let Err(e) = print_counters(&d, global.output, counters_to_stderr)
        {
            failed = Some(ExitCode::from(out::report(&e)));
        }
        failed.unwrap_or(ExitCode::from(EXIT_OK))
    }

    pub(super) fn run<E: Engine>(args: &Args, global: &Global) -> ExitCode {
        let cfg = match config(args) {
            Ok(c) => c,
            Err(e) => return usage(e),
        };
        if let Err(e) =
            super::super::values::check_flow_memory(cfg.workers, cfg.worker.flow.capacity)
        {
            return usage(e);
        }
        if let Some(addr) = args.metrics
            && let Err(e) = crate::metrics::check_addr(addr, args.metrics_allow_remote)
        {
            return usage(e);
        }
        // The flow log is written in place: never over a policy file the run reads.
        if let Err(e) = super::check_outputs(args, global) {
            return usage(e);
        }
        // Held to the end of the run: the state directory's lock.
        let initial = match super::super::run_state::initial(
            &args.policies,
            args.allow_empty,
            args.state_dir.as_deref(),
        ) {
            Ok(i) => i,
            Err(code) => return ExitCode::from(code),
        };
        let built = match E::start(&initial.cluster) {
            Ok((_, b)) => b,
            Err(e) => {
                crate::errln!("tiergate: cannot compile the policy set: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let (names, classifier) = (built.names, built.classifier);
        let counters_to_stderr = args.flowlog.as_deref().is_some_and(out::is_dash);
        // Appended to, never truncated: a run that fails to start leaves an existing
        // log as it was (and removes one it created).
        let log = match args.flowlog.as_deref().map(Log::open).transpose() {
            Ok(l) => l,
            Err(e) => return usage(format!("--flowlog: {e}")),
        };
        let give_up = |log: Option<Log>, e: String| {
            if let Some(l) = log {
                l.discard();
            }
            usage(e)
        };
        let agg = match Aggregator::new(args.interval) {
            Ok(a) => a,
            Err(e) => return give_up(log, format!("--interval: {e}")),
        };
        // No control socket to reload: SIGHUP keeps its default action.
        let Signals { term, usr1, .. } = match Signals::install(false) {
            Ok(s) => s,
            Err(e) => return give_up(log, e),
        };
        // Metrics on a control thread of their own (this run serves no socket),
        // listening before the first packet is forwarded.
        let metrics_rt;
        let mut metrics = match args.metrics {
            None => None,
            Some(addr) => {
                metrics_rt = match crate::server::ControlThread::start() {
                    Ok(rt) => rt,
                    Err(e) => return give_up(log, e),
                };
                match RunMetrics::start_announced(
                    &metrics_rt.handle(),
                    addr,
                    args.metrics_allow_remote,
                ) {
                    Ok(m) => Some(m),
                    Err(e) => return give_up(log, e),
                }
            }
        };
        let slot = Arc::new(ClassifierSlot::new(Published {
            generation: 1,
            classifier,
        }));
        let published = slot.load();
        let (tx, rx) = bounded::<FlowRecord>(1 << 16);
        let running = match afxdp::start(&cfg, Arc::clone(&slot), tx) {
            Ok(r) => r,
            Err(e) => return give_up(log, e.to_string()),
        };
        let started = Instant::now();
        sched_note(&running);
        if cfg.offload {
            crate::errln!(
                "tiergate run: flow offload on: established allowed connections are forwarded by the XDP program"
            );
        }
        let desc: Vec<String> = running
            .ifaces
            .iter()
            .map(|i| format!("{} (XDP {}, {} mode)", i.name, i.xdp.name(), i.bind.name()))
            .collect();
        crate::errln!(
            "tiergate run: forwarding between {} with {} worker(s), {} mode; pid {}: SIGUSR1 prints counters, SIGTERM stops",
            desc.join(" and "),
            running.live.len(),
            match args.mode {
                ModeArg::Wire => "wire",
                ModeArg::Router => "router",
            },
            std::process::id()
        );
        let mut logs = Logs {
            names: &names,
            classifier: &published.classifier,
            agg,
            out: log,
            written: 0,
            metrics: metrics.as_ref().map(|m| m.metrics().clone()),
        };
        // An instant beyond the clock's range is no deadline (the run goes on).
        let deadline = args.duration.and_then(|d| started.checked_add(d));
        let mut failed = None;
        // Records of an interval arrive when the workers next pass a batch boundary
        // after it ended: give them a moment before writing the interval.
        let grace = 2_000_000_000;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            logs.take(&rx);
            if let Some(m) = metrics.as_mut() {
                m.refresh(|| running.snapshot(), &cfg.ifaces, logs.written);
            }
            let done = logs.agg.drain_ended(now_ns().saturating_sub(grace));
            if let Err(e) = logs.flush(done) {
                failed = Some(Failure::Log(e));
                break;
            }
            if usr1.swap(false, Ordering::Relaxed) {
                let snaps = running.snapshot();
                let d = doc(
                    &running.ifaces,
                    &cfg.ifaces,
                    &snaps,
                    started.elapsed(),
                    false,
                    logs.written,
                );
                if let Err(e) = print_counters(&d, global.output, counters_to_stderr) {
                    failed = Some(Failure::Counters(e));
                    break;
                }
            }
            if term.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if running.finished() {
                failed = Some(Failure::Msg("a worker stopped unexpectedly".to_string()));
                break;
            }
        }
        // Stop: the workers drain their flow tables into final records; keep taking
        // them so the bounded channel never fills while they do.
        running.request_stop();
        while !running.finished() {
            logs.take(&rx);
            std::thread::sleep(Duration::from_millis(5));
        }
        let uptime = started.elapsed();
        let snaps = running.snapshot();
        let ifaces = running.ifaces.clone();
        // Joins the workers and detaches the XDP programs.
        if let Err(e) = running.stop() {
            failed.get_or_insert(Failure::Msg(e));
        }
        logs.take(&rx);
        let rest = logs.agg.drain();
        // After a failed flow-log write, the records left are not written (they
        // would fail the same way, or land after a gap).
        if !matches!(failed, Some(Failure::Log(_))) {
            if let Err(e) = logs.flush(rest) {
                failed.get_or_insert(Failure::Log(e));
            }
            if let Some(o) = &mut logs.out
                && let Err(e) = o.flush()
            {
                failed.get_or_insert(Failure::Log(e));
            }
        }
        let d = doc(&ifaces, &cfg.ifaces, &snaps, uptime, true, logs.written);
        // Counters that already failed to print are not tried again.
        if !matches!(failed, Some(Failure::Counters(_)))
            && let Err(e) = print_counters(&d, global.output, counters_to_stderr)
        {
            failed.get_or_insert(Failure::Counters(e));
        }
        match failed {
            Some(Failure::Msg(e)) => usage(e),
            Some(Failure::Log(e) | Failure::Counters(e)) => ExitCode::from(out::report(&e)),
            None => ExitCode::from(EXIT_OK),
        }
    }

    #[cfg(test)]
    mod tests {
        use dataplane::port::afxdp::WorkerSnapshot;
        use dataplane::worker::OffloadStats;

        use super::{doc, table};

        /// The offload's counters are in the counters printout (text and JSON, the
        /// `stats` reply too: one document) of a worker that has an offload, and
        /// absent for one that has none.
        #[test]
        fn offload_counters_are_printed_when_the_worker_has_an_offload() {
            let names = ["a".to_string(), "b".to_string()];
            let with = WorkerSnapshot {
                worker: 0,
                offloaded: 7,
                offload: Some(OffloadStats {
                    packets: 7,
                    bytes: 700,
                    installs: 3,
                    install_failures: 1,
                    held_elsewhere: 2,
                    removals: 2,
                }),
                ..WorkerSnapshot::default()
            };
            let without = WorkerSnapshot {
                worker: 1,
                ..WorkerSnapshot::default()
            };
            let d = doc(
                &[],
                &names,
                &[with, without],
                std::time::Duration::ZERO,
                false,
                0,
            );
            let text = table(&d);
            assert!(
                text.contains(
                    "offload: packets 7  bytes 700  installs 3  install failures 1  held elsewhere 2  removals 2"
                ),
                "{text}"
            );
            assert_eq!(text.matches("offload:").count(), 1, "{text}");
            let v = serde_json::to_value(&d).unwrap();
            let o = &v["workers"][0]["offload"];
            assert_eq!(
                (o["installs"].as_u64(), o["install_failures"].as_u64()),
                (Some(3), Some(1))
            );
            assert_eq!(
                (
                    o["held_elsewhere"].as_u64(),
                    o["removals"].as_u64(),
                    o["bytes"].as_u64()
                ),
                (Some(2), Some(2), Some(700))
            );
            assert!(v["workers"][1].get("offload").is_none(), "{v}");
        }
    }
}
