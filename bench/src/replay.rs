//! `bench replay`: worker-pipeline throughput on 64-byte frames.
//!
//! Each measurement prints one line. Three kinds of run, all over the same
//! in-memory frames (no I/O), each next to a parse-only pass over the same frames in
//! the same process (the ceiling the pipeline is compared to):
//!
//! - `hits`: `--flows` flows, `--packets` frames choosing a flow uniformly at random,
//!   replayed `--loops` times: after the first packet of each flow every lookup hits.
//! - `misses`: every frame is a new flow (unique 5-tuples), so every packet is a
//!   flow-table miss, a classification and an insert (an eviction once the table is
//!   full): new flows per second.
//! - `scaling`: the `hits` run with 1 worker and with `--workers` workers, each
//!   worker on its own core with its own queue of disjoint flows (as NIC RSS would
//!   feed them); aggregate Mpps and the ratio. Then `--repeat` interleaved pairs (a
//!   1-worker run right before each N-worker run) and the median of the pairs' ratios,
//!   which the machine's slow drifts affect less than the ratio of two series.
//!
//! Each worker is a `dataplane::worker::Worker` on its own pinned thread (worker k on
//! core k) and its own in-memory port; records are counted, not collected. Besides
//! wall-clock Mpps, each line reports Mpps per second of on-CPU time of the worker
//! threads (`/proc/thread-self/schedstat`) and the share of time they sat runnable
//! waiting for a CPU: on a shared machine the wall figure measures the neighbours too. Misses are
//! classified by the compiled decision tree (`--classifier tree`, the default) or the
//! linear reference (`--classifier linear`) over [`bench_policy`].

use std::sync::Arc;
use std::sync::Barrier;
use std::time::Instant;

use dataplane::classifier::{BuildConfig, Classifier};
use dataplane::flow::FlowTableConfig;
use dataplane::linear::LinearClassifier;
use dataplane::packet::parse;
use dataplane::program::{
    Action, Classify, EndpointBinding, EndpointId, Match, Policy, PolicyId, PolicySet, PortRange,
    Program, ProgramId, Rule, Tier, TierDefault, TierId, proto,
};
use dataplane::worker::{ClassifierSlot, MemPort, Published, RecordOut, Worker, WorkerConfig};
use pcap::capture::Frames;
use pcap::synth::{Rng, TraceTuple, tuples_to_frames};

/// Arguments of `bench replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which measurement: hits, misses, scaling or all.
    #[arg(long, default_value = "all")]
    pub mode: String,
    /// Flows in the hit run (per worker).
    #[arg(long, default_value_t = 10_000)]
    pub flows: u32,
    /// Distinct frames per worker (hit run) / new flows (miss run).
    #[arg(long, default_value_t = 1_000_000)]
    pub packets: u32,
    /// Times the frames are replayed in the hit run.
    #[arg(long, default_value_t = 5)]
    pub loops: usize,
    /// Workers in the scaling run.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Frames per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Flow-table capacity per worker.
    #[arg(long, default_value_t = 1 << 16)]
    pub capacity: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Disable the batch prefetch of flow-table lines (to measure what it buys).
    #[arg(long)]
    pub no_prefetch: bool,
    /// Classifier for the misses: `tree` (the compiled decision tree) or `linear`
    /// (the reference).
    #[arg(long, default_value = "tree")]
    pub classifier: String,
}

/// The policy used: one local endpoint (10.2.0.1) whose ingress allows TCP 80 and,
/// staged, TCP 6379, end-of-tier deny otherwise; an egress program on the clients'
/// /16 allowing everything. A small but real two-view policy for the linear
/// reference classifier.
pub fn bench_policy() -> PolicySet {
    let tcp_port = |p: u16| Match {
        protocol: Some(proto::TCP),
        dst_ports: Some(vec![PortRange::single(p)]),
        ..Default::default()
    };
    let ingress = Program {
        tiers: vec![Tier {
            id: TierId(0),
            default_action: TierDefault::Deny,
            policies: vec![
                Policy {
                    id: PolicyId(1),
                    staged: false,
                    rules: vec![Rule {
                        index: 0,
                        action: Action::Allow,
                        matches: tcp_port(80),
                    }],
                },
                Policy {
                    id: PolicyId(2),
                    staged: true,
                    rules: vec![Rule {
                        index: 0,
                        action: Action::Allow,
                        matches: tcp_port(6379),
                    }],
                },
            ],
        }],
        profiles: vec![],
    };
    let egress = Program {
        tiers: vec![Tier {
            id: TierId(0),
            default_action: TierDefault::Deny,
            policies: vec![Policy {
                id: PolicyId(3),
                staged: false,
                rules: vec![Rule {
                    index: 0,
                    action: Action::Allow,
                    matches: Match::default(),
                }],
            }],
        }],
        profiles: vec![],
    };
    PolicySet {
        programs: vec![ingress, egress],
        endpoints: vec![
            EndpointBinding {
                net: "10.2.0.1/32".parse().unwrap_or_else(|_| unreachable!()),
                endpoint: EndpointId(1),
                ingress: Some(ProgramId(0)),
                egress: None,
            },
            EndpointBinding {
                net: "10.1.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
                endpoint: EndpointId(2),
                ingress: None,
                egress: Some(ProgramId(1)),
            },
        ],
    }
}

/// `n` distinct flows from worker `w`'s client range to a few servers and ports.
fn flow_tuples(n: u32, w: u32, rng: &mut Rng) -> Vec<TraceTuple> {
    let servers = [0x0a02_0001u32, 0x0a02_0002, 0x0a02_0003, 0x0a02_0004];
    let ports = [80u16, 443, 6379, 53];
    (0..n)
        .map(|i| {
            let proto = if rng.chance(0.5) { 6 } else { 17 };
            TraceTuple {
                // Unique per (worker, flow): client address and port encode the index.
                src: 0x0a01_0000 | ((w & 0x3f) << 10) | ((i >> 16) & 0x3ff),
                dst: servers[rng.below(4) as usize],
                sport: 1024u16.wrapping_add(i as u16),
                dport: ports[rng.below(4) as usize],
                proto,
            }
        })
        .collect()
}

fn hit_frames(flows: u32, packets: u32, w: u32) -> Frames {
    let mut rng = Rng::new(0x5eed + u64::from(w));
    let tuples = flow_tuples(flows, w, &mut rng);
    let seq: Vec<TraceTuple> = (0..packets)
        .map(|_| tuples[rng.below(tuples.len() as u64) as usize])
        .collect();
    tuples_to_frames(&seq, 1_700_000_000_000_000_000, 100)
}

fn miss_frames(packets: u32, w: u32) -> Frames {
    let mut rng = Rng::new(0xbad5eed + u64::from(w));
    let tuples = flow_tuples(packets, w, &mut rng);
    tuples_to_frames(&tuples, 1_700_000_000_000_000_000, 100)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Parse-only pass: every frame parsed `loops` times on a pinned thread; (Mpps per
/// wall second, Mpps per on-CPU second).
fn parse_only(frames: &Arc<Frames>, loops: usize) -> (f64, f64) {
    let f = Arc::clone(frames);
    std::thread::spawn(move || {
        if let Some(c) = core_affinity::get_core_ids().and_then(|c| c.first().copied()) {
            core_affinity::set_for_current(c);
        }
        let (c0, _) = sched_ns();
        let t = Instant::now();
        let mut ok = 0u64;
        for _ in 0..loops {
            for fr in f.iter() {
                ok += u64::from(parse(std::hint::black_box(fr.data), fr.orig_len, 0).is_ok());
            }
        }
        std::hint::black_box(ok);
        let wall = t.elapsed().as_secs_f64();
        let cpu = sched_ns().0.saturating_sub(c0) as f64 / 1e9;
        let n = (f.len() * loops) as f64 / 1e6;
        (n / wall, if cpu > 0.0 { n / cpu } else { 0.0 })
    })
    .join()
    .unwrap_or((0.0, 0.0))
}

/// (on-CPU ns, runnable-but-waiting ns) of the calling thread so far, from
/// `/proc/thread-self/schedstat`; zeros where the kernel does not provide it.
fn sched_ns() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

struct Run {
    /// Aggregate frames per wall-clock second, all workers.
    mpps_wall: f64,
    /// Frames per second of on-CPU time, summed over workers (what a core delivers
    /// when it is not shared).
    mpps_cpu: f64,
    /// Share of the run the workers spent runnable but waiting for a CPU.
    wait_share: f64,
    hit_rate: f64,
    classified: u64,
    evictions: u64,
    p50_us: f64,
    p99_us: f64,
}

fn run_workers(frames: &[Arc<Frames>], loops: usize, a: &Args) -> Run {
    match a.classifier.as_str() {
        "linear" => {
            let c = LinearClassifier::new(bench_policy()).unwrap_or_else(|e| {
                eprintln!("bench policy rejected: {e}");
                std::process::exit(2)
            });
            run_with(c, frames, loops, a)
        }
        "tree" => {
            let c =
                Classifier::build(&bench_policy(), &BuildConfig::default()).unwrap_or_else(|e| {
                    eprintln!("bench policy rejected: {e}");
                    std::process::exit(2)
                });
            run_with(c, frames, loops, a)
        }
        other => {
            eprintln!("--classifier {other:?}: expected tree or linear");
            std::process::exit(2)
        }
    }
}

/// One pinned thread per frame set, each running a `Worker` on its own in-memory
/// port (records counted, not collected: no collector thread competes for the two
/// cores). Timing starts after every worker allocated its table (barrier).
fn run_with<C: Classify + 'static>(
    classifier: C,
    frames: &[Arc<Frames>],
    loops: usize,
    a: &Args,
) -> Run {
    let slot = Arc::new(ClassifierSlot::new(Published {
        generation: 1,
        classifier,
    }));
    let cfg = WorkerConfig {
        batch: a.batch,
        flow: FlowTableConfig {
            capacity: a.capacity,
            ..Default::default()
        },
        export_interval_ns: None,
        prefetch: !a.no_prefetch,
        ..Default::default()
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let barrier = Arc::new(Barrier::new(frames.len()));
    let handles: Vec<_> = frames
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let f = Arc::clone(f);
            let slot = Arc::clone(&slot);
            let barrier = Arc::clone(&barrier);
            let core = (!cores.is_empty()).then(|| cores[k % cores.len()]);
            std::thread::spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let order = (0..f.len() as u32).collect();
                let mut port = MemPort::new(f, order, loops);
                let w = Worker::new(cfg, slot, RecordOut::none());
                barrier.wait();
                let (c0, w0) = sched_ns();
                let t0 = Instant::now();
                let rep = w.run(&mut port, &|| true);
                let wall = t0.elapsed();
                let (c1, w1) = sched_ns();
                (rep, wall, c1.saturating_sub(c0), w1.saturating_sub(w0))
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| {
                eprintln!("worker thread panicked");
                std::process::exit(1)
            })
        })
        .collect();
    let wall = results
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let packets: u64 = results.iter().map(|r| r.0.stats.rx.packets).sum();
    let mpps_cpu: f64 = results
        .iter()
        .map(|r| {
            if r.2 > 0 {
                r.0.stats.rx.packets as f64 / (r.2 as f64 / 1e9) / 1e6
            } else {
                0.0
            }
        })
        .sum();
    let (cpu, wait): (u64, u64) = results
        .iter()
        .fold((0, 0), |acc, r| (acc.0 + r.2, acc.1 + r.3));
    let mut hits = 0;
    let mut lookups = 0;
    let mut classified = 0;
    let mut evictions = 0;
    for r in &results {
        let s = r.0.stats.flows;
        hits += s.hits;
        lookups += s.hits + s.misses;
        classified += r.0.stats.classified;
        evictions += s.evictions;
    }
    let lat = &results[0].0.latency;
    Run {
        mpps_wall: if wall > 0.0 {
            packets as f64 / wall / 1e6
        } else {
            0.0
        },
        mpps_cpu,
        wait_share: if cpu + wait > 0 {
            wait as f64 / (cpu + wait) as f64
        } else {
            0.0
        },
        hit_rate: hits as f64 / lookups.max(1) as f64,
        classified,
        evictions,
        p50_us: lat.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: lat.value_at_quantile(0.99) as f64 / 1e3,
    }
}

fn round2(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 100.0).round() / 100.0).collect()
}

fn measure(name: &str, frames: Vec<Arc<Frames>>, loops: usize, a: &Args) {
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    let mut wait = Vec::new();
    let mut ceil = Vec::new();
    let mut ceil_cpu = Vec::new();
    let mut last = None;
    for _ in 0..a.repeat.max(1) {
        let (pw, pc) = parse_only(&frames[0], loops);
        ceil.push(pw);
        ceil_cpu.push(pc);
        let r = run_workers(&frames, loops, a);
        wall.push(r.mpps_wall);
        cpu.push(r.mpps_cpu);
        wait.push(r.wait_share);
        last = Some(r);
    }
    let Some(r) = last else { return };
    let (m, c) = (median(wall.clone()), median(ceil.clone()));
    let (mc, cc) = (median(cpu.clone()), median(ceil_cpu.clone()));
    println!(
        "bench replay mode={name} classifier={} workers={} frames_per_worker={} loops={loops} batch={} \
         capacity={} prefetch={} hit_rate={:.4} classified={} evictions={} \
         mpps_wall_median={:.2} mpps_wall_runs={:?} mpps_per_cpu_second_median={:.2} mpps_per_cpu_second_runs={:?} \
         wait_share_median={:.2} parse_only_mpps_median={:.2} parse_only_runs={:?} \
         parse_only_mpps_per_cpu_second_median={:.2} pipeline_vs_parse_per_cpu_second={:.2} \
         batch_p50_us={:.1} batch_p99_us={:.1}",
        a.classifier,
        frames.len(),
        frames[0].len(),
        a.batch,
        a.capacity,
        !a.no_prefetch,
        r.hit_rate,
        r.classified,
        r.evictions,
        m,
        round2(&wall),
        mc,
        round2(&cpu),
        median(wait),
        c,
        round2(&ceil),
        cc,
        if cc > 0.0 { mc / cc } else { 0.0 },
        r.p50_us,
        r.p99_us,
    );
}

/// Runs the harness.
pub fn main(a: &Args) {
    let all = a.mode == "all";
    if all || a.mode == "hits" {
        let f = Arc::new(hit_frames(a.flows, a.packets, 0));
        measure("hits", vec![f], a.loops, a);
    }
    if all || a.mode == "misses" {
        let f = Arc::new(miss_frames(a.packets, 0));
        measure("misses", vec![f], 1, a);
    }
    if all || a.mode == "scaling" {
        let one = vec![Arc::new(hit_frames(a.flows, a.packets, 0))];
        let many: Vec<Arc<Frames>> = (0..a.workers.max(1) as u32)
            .map(|w| Arc::new(hit_frames(a.flows, a.packets, w)))
            .collect();
        measure("scaling-1", one.clone(), a.loops, a);
        measure(&format!("scaling-{}", many.len()), many.clone(), a.loops, a);
        pairs(&one, &many, a.loops, a);
    }
}

/// `--repeat` pairs of runs, 1 worker then `many.len()` workers back to back: the
/// ratios of the pairs (aggregate over single), per CPU-second and wall.
fn pairs(one: &[Arc<Frames>], many: &[Arc<Frames>], loops: usize, a: &Args) {
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..a.repeat.max(1) {
        let single = run_workers(one, loops, a);
        let multi = run_workers(many, loops, a);
        if single.mpps_cpu > 0.0 && single.mpps_wall > 0.0 {
            cpu.push(multi.mpps_cpu / single.mpps_cpu);
            wall.push(multi.mpps_wall / single.mpps_wall);
        }
    }
    println!(
        "bench replay mode=scaling-pairs workers={} loops={loops} pairs={} \
         ratio_per_cpu_second_median={:.2} ratios_per_cpu_second={:?} \
         ratio_wall_median={:.2} ratios_wall={:?}",
        many.len(),
        cpu.len(),
        median(cpu.clone()),
        round2(&cpu),
        median(wall.clone()),
        round2(&wall),
    );
}
