//! `bench classify --rules FILE --trace FILE`: compiles a ClassBench set (every 10th
//! filter staged, as `rte_acl_bench -c 2`) and prints, per run,
//! `classify set=... rules=... mlps=... build_ms=... bytes=... depth=...`: lookups per
//! second of thread CPU time (median of 9 slices) over the whole trace in batches,
//! both verdicts per lookup, and `build_rss_mib`: the process's peak RSS over the
//! build (reset before it; the trace is read after the first build), and
//! `build_cpu_ms`: the building thread's CPU time (the whole build with one build
//! thread; `build_ms` is wall time, inflated on a loaded machine). Runs: `classify`
//! (program lookup, the rte_acl comparison), `classify-flow` (the full `Classify` path
//! with an endpoint lookup), `recompile` (build after one filter changed) and `linear`
//! (the reference evaluator, both views).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::classbench::{key_of, program_of};
use dataplane::classifier::{BuildConfig, Classifier, Compiler, Kernel};
use dataplane::linear::evaluate;
use dataplane::program::{
    Classify, EndpointBinding, EndpointId, FlowKey, FlowVerdicts, HitAction, PolicySet, ProgramId,
    Verdicts, View,
};

use crate::cputime;

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// ClassBench filter set.
    #[arg(long)]
    rules: PathBuf,
    /// ClassBench trace; `<trace>.firstmatch`, if present, is checked first.
    #[arg(long)]
    trace: PathBuf,
    /// Every K-th filter (index % K == K-1) is staged; 0 = none.
    #[arg(long, default_value_t = 10)]
    staged_every: usize,
    /// Keys per classify call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seconds per timed run (split into 9 slices; the median slice is reported).
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds for the linear reference (0 = skip).
    #[arg(long, default_value_t = 1.0)]
    linear_duration: f64,
    /// Memory budget of the build, bytes.
    #[arg(long, default_value_t = BuildConfig::default().memory_budget)]
    budget: usize,
    /// Leaf list size (BuildConfig::binth).
    #[arg(long, default_value_t = BuildConfig::default().binth)]
    binth: usize,
    /// Space factor (BuildConfig::spfac).
    #[arg(long, default_value_t = BuildConfig::default().spfac)]
    spfac: f64,
    /// Most bits per cut (BuildConfig::max_cut_bits).
    #[arg(long, default_value_t = BuildConfig::default().max_cut_bits)]
    max_cut_bits: u32,
    /// BuildConfig::single_tree_bytes_per_entry.
    #[arg(long, default_value_t = BuildConfig::default().single_tree_bytes_per_entry)]
    single_tree_bytes: usize,
    /// BuildConfig::single_tree_bytes_factor (0 = no cap).
    #[arg(long, default_value_t = BuildConfig::default().single_tree_bytes_factor)]
    single_tree_factor: usize,
    /// BuildConfig::single_tree_skip_factor (0 = always try the single tree again).
    #[arg(long, default_value_t = BuildConfig::default().single_tree_skip_factor)]
    single_tree_skip_factor: f64,
    /// BuildConfig::build_threads (1 = build on the calling thread only).
    #[arg(long, default_value_t = BuildConfig::default().build_threads)]
    build_threads: usize,
    /// BuildConfig::split_dense_slack: levels a split dense node's path may reach
    /// beyond the deepest path built so far (negative: short of it); `off` never
    /// splits; default: the config's default.
    #[arg(long, allow_hyphen_values = true)]
    split_dense_slack: Option<String>,
    /// BuildConfig::split_dense_from_bytes.
    #[arg(long, default_value_t = BuildConfig::default().split_dense_from_bytes)]
    split_dense_from: usize,
    /// Pin the process's main thread to this CPU after the first build (so that a
    /// parallel build may use every CPU and the lookups still run on one). Refused
    /// with `--build-threads` > 1 and `--repeat` > 1 (later builds would inherit the pin).
    #[arg(long)]
    pin_after_build: Option<usize>,
    /// Skip the full-path, recompile runs.
    #[arg(long)]
    core_only: bool,
    /// Walk kernel: scalar, avx2, avx512, avx512vbmi (default: the fastest this CPU runs).
    #[arg(long)]
    kernel: Option<String>,
    /// Repeat the whole measurement this many times.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// Runs `f` (which processes `per_call` lookups) for `secs`, in 9 slices; returns the
/// (median, min, max) slice's lookups per second of thread CPU time. The clock is read
/// once per ~8K lookups (rte_acl_bench reads it once per pass over the trace), so
/// reading it costs next to nothing.
fn rates(secs: f64, per_call: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    let mut rates = Vec::with_capacity(9);
    let slice = Duration::from_secs_f64(secs / 9.0);
    let group = (8192 / per_call.max(1)).max(1);
    for _ in 0..9 {
        let (w0, c0) = (Instant::now(), cputime::thread_cpu());
        let mut n = 0usize;
        while w0.elapsed() < slice {
            for _ in 0..group {
                f();
            }
            n += group * per_call;
        }
        let cpu = (cputime::thread_cpu() - c0).as_secs_f64().max(1e-9);
        rates.push(n as f64 / cpu);
    }
    rates.sort_by(f64::total_cmp);
    (rates[4], rates[0], rates[8])
}

/// The median of [`rates`].
fn rate(secs: f64, per_call: usize, f: impl FnMut()) -> f64 {
    rates(secs, per_call, f).0
}

fn set_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Runs the harness.
pub fn main(a: &ClassifyArgs) -> Result<(), String> {
    let filters = pcap::classbench::read_filters(&a.rules).map_err(|e| e.to_string())?;
    let program = program_of(&filters, a.staged_every);
    let set = PolicySet {
        programs: vec![program.clone()],
        endpoints: vec![EndpointBinding {
            net: "0.0.0.0/0".parse().map_err(|e| format!("{e}"))?,
            endpoint: EndpointId(0),
            ingress: Some(ProgramId(0)),
            egress: None,
        }],
    };
    let cfg = BuildConfig {
        memory_budget: a.budget,
        binth: a.binth,
        spfac: a.spfac,
        max_cut_bits: a.max_cut_bits,
        single_tree_bytes_per_entry: a.single_tree_bytes,
        single_tree_bytes_factor: a.single_tree_factor,
        single_tree_skip_factor: a.single_tree_skip_factor,
        build_threads: a.build_threads,
        split_dense_slack: match a.split_dense_slack.as_deref() {
            None => BuildConfig::default().split_dense_slack,
            Some("off") => None,
            Some(n) => Some(
                n.parse()
                    .map_err(|e| format!("--split-dense-slack {n}: {e}"))?,
            ),
        },
        split_dense_from_bytes: a.split_dense_from,
    };
    // Threads a later build starts inherit the pinned thread's CPU mask: the builds
    // after the first would share one CPU.
    if a.pin_after_build.is_some() && a.repeat > 1 && a.build_threads > 1 {
        return Err(
            "--pin-after-build with --build-threads > 1 and --repeat > 1: the builds after the first would run on the pinned CPU only; use --repeat 1".into(),
        );
    }
    let name = set_name(&a.rules);
    let batch = a.batch.max(1);
    // The trace is read after the first build, so that the build's peak RSS (the
    // process's, reset just before it) holds the rules, the program and the build.
    let mut loaded: Option<Loaded> = None;
    for _ in 0..a.repeat {
        let rss_reset = crate::suite::reset_peak_rss();
        let cpu0 = cputime::thread_cpu();
        let mut c = Classifier::build(&set, &cfg).map_err(|e| e.to_string())?;
        // The calling thread's CPU time: all of the build with one build thread, and
        // unlike `build_ms` not inflated by other jobs on a shared machine.
        let build_cpu_ms = (cputime::thread_cpu() - cpu0).as_secs_f64() * 1e3;
        let rss = if rss_reset {
            crate::suite::peak_rss_mib()
        } else {
            f64::NAN
        };
        if loaded.is_none() {
            if let Some(cpu) = a.pin_after_build
                && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
            {
                return Err(format!(
                    "--pin-after-build {cpu}: could not pin to that CPU"
                ));
            }
            loaded = Some(load_trace(a, &filters)?);
        }
        let Some((keys, want, fm)) = loaded.as_ref() else {
            unreachable!()
        };
        if let Some(k) = &a.kernel {
            c.set_kernel(Kernel::by_name(k).ok_or_else(|| {
                format!(
                    "--kernel {k}: not available here (try one of scalar, avx2, avx512, avx512vbmi)"
                )
            })?);
        }
        let st = *c.stats();
        // Correctness over the whole trace first: the pending hit is the first
        // matching filter, the enforced hit the first matching non-staged one.
        let mut out = vec![Verdicts { ..FIRST }; keys.len()];
        c.classify_program(ProgramId(0), keys, &mut out);
        let first = |v: &Verdicts, view: View| {
            let d = if view == View::Enforced {
                v.enforced
            } else {
                v.pending
            };
            c.trace(d.trace)
                .first()
                .filter(|h| h.action == HitAction::Allow)
                .map(|h| h.policy.0)
        };
        let mut ok = 0usize;
        for (v, &(want_pending, want_enforced)) in out.iter().zip(want) {
            ok += usize::from(
                first(v, View::Pending) == want_pending
                    && first(v, View::Enforced) == want_enforced,
            );
        }
        let correct = ok as f64 / keys.len() as f64;
        // Lines whose tiergate first match is not ClassBench's (rte_acl's).
        let differ =
            want.iter().zip(fm).filter(|(w, f)| w.0 != **f).count() as f64 / keys.len() as f64;
        let mut res = vec![FIRST; batch];
        let mut i = 0usize;
        let (mlps, lo, hi) = rates(a.duration, batch, || {
            let n = batch.min(keys.len() - i);
            c.classify_program(ProgramId(0), &keys[i..i + n], &mut res[..n]);
            i = if i + n >= keys.len() { 0 } else { i + n };
            std::hint::black_box(&res);
        });
        let (mlps, lo, hi) = (mlps / 1e6, lo / 1e6, hi / 1e6);
        println!(
            "classify set={name} kernel={} rules={} mlps={mlps:.2} mlps_min={lo:.2} mlps_max={hi:.2} build_ms={:.1} build_cpu_ms={build_cpu_ms:.1} bytes={} depth={} nodes={} slots={} items={} trees={} attempts={} entries={} batch={batch} correct={correct:.6} semantics_differ={differ:.4} build_rss_mib={rss:.0}",
            c.kernel().name(),
            filters.len(),
            st.build_time.as_secs_f64() * 1e3,
            st.bytes,
            st.depth,
            st.nodes,
            st.slots,
            st.items,
            st.trees,
            st.attempts,
            st.entries,
        );
        if std::env::var_os("BENCH_PATHS").is_some() {
            let mut hist = std::collections::BTreeMap::new();
            let mut lens = std::collections::BTreeMap::new();
            let mut cuts = std::collections::BTreeMap::new();
            for k in keys {
                let (p, n) = c.path_of(ProgramId(0), k);
                *hist.entry(p.len()).or_insert(0usize) += 1;
                *lens.entry(n).or_insert(0usize) += 1;
                for x in p {
                    *cuts.entry(x).or_insert(0usize) += 1;
                }
            }
            println!("depths {hist:?}\nlist lens {lens:?}\ncuts (lane, bits, ranged) {cuts:?}");
        }
        if a.core_only {
            continue;
        }
        let mut fres = vec![FlowVerdicts::default(); batch];
        let mut i = 0usize;
        let mlps = rate(a.duration, batch, || {
            let n = batch.min(keys.len() - i);
            c.classify(&keys[i..i + n], &mut fres[..n]);
            i = if i + n >= keys.len() { 0 } else { i + n };
            std::hint::black_box(&fres);
        }) / 1e6;
        println!(
            "classify-flow set={name} rules={} mlps={mlps:.2} batch={batch}",
            filters.len()
        );
        // Recompile after changing one filter's destination port: a full build, and an
        // incremental one by a `Compiler` that built the unchanged set before (the last,
        // a middle and the first filter; the first precedes every other in the lists).
        let n_policies = set.programs[0]
            .tiers
            .first()
            .map_or(0, |t| t.policies.len());
        let change = |at: usize| {
            let mut changed = set.clone();
            if let Some(r) = changed.programs[0]
                .tiers
                .first_mut()
                .and_then(|t| t.policies.get_mut(at))
                .and_then(|p| p.rules.first_mut())
            {
                r.matches.dst_ports = Some(vec![dataplane::program::PortRange::single(4242)]);
            }
            changed
        };
        let last = change(n_policies.saturating_sub(1));
        let t0 = Instant::now();
        let c2 = Classifier::build(&last, &cfg).map_err(|e| e.to_string())?;
        println!(
            "recompile set={name} rules={} ms={:.1} bytes={}",
            filters.len(),
            t0.elapsed().as_secs_f64() * 1e3,
            c2.stats().bytes
        );
        for (which, at) in [
            ("last", n_policies.saturating_sub(1)),
            ("middle", n_policies / 2),
            ("first", 0),
        ] {
            let changed = change(at);
            let mut compiler = Compiler::new(cfg);
            compiler.build(&set).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let inc = compiler.build(&changed).map_err(|e| e.to_string())?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let fresh = Classifier::build(&changed, &cfg).map_err(|e| e.to_string())?;
            // The incremental classifier must answer exactly as a fresh one.
            let (mut x, mut y) = (vec![FIRST; keys.len()], vec![FIRST; keys.len()]);
            inc.classify_program(ProgramId(0), keys, &mut x);
            fresh.classify_program(ProgramId(0), keys, &mut y);
            let same = x.iter().zip(&y).all(|(p, q)| {
                p.enforced.verdict == q.enforced.verdict
                    && p.pending.verdict == q.pending.verdict
                    && inc.trace(p.enforced.trace) == fresh.trace(q.enforced.trace)
                    && inc.trace(p.pending.trace) == fresh.trace(q.pending.trace)
            });
            if !same {
                return Err(format!(
                    "{name}: incremental recompile ({which} filter) differs from a fresh build"
                ));
            }
            println!(
                "recompile-incremental set={name} rules={} changed={which} ms={ms:.1} bytes={} fresh_bytes={} agrees=true",
                filters.len(),
                inc.stats().bytes,
                fresh.stats().bytes,
            );
        }
        if a.linear_duration > 0.0 {
            let mut i = 0usize;
            let mlps = rate(a.linear_duration, 1, || {
                let k = &keys[i];
                std::hint::black_box((
                    evaluate(&program, k, View::Enforced),
                    evaluate(&program, k, View::Pending),
                ));
                i = (i + 1) % keys.len();
            }) / 1e6;
            println!("linear set={name} rules={} mlps={mlps:.4}", filters.len());
        }
    }
    Ok(())
}

/// The trace's keys and per header the wanted (pending, enforced) first matches.
/// Also the ClassBench first matches.
type Loaded = (
    Vec<FlowKey>,
    Vec<(Option<u32>, Option<u32>)>,
    Vec<Option<u32>>,
);

/// The trace's keys, and per header the wanted (pending, enforced) first matches as a
/// tiergate program of the set matches (`suite::tiergate_matches`: a port range needs
/// TCP, UDP or SCTP), each found by scanning on from the ClassBench first match, read
/// from `<TRACE>.firstmatch` if present (`classbench-oracle`), else by brute force.
fn load_trace(a: &ClassifyArgs, filters: &[pcap::classbench::Filter]) -> Result<Loaded, String> {
    let trace = pcap::classbench::read_trace(&a.trace).map_err(|e| e.to_string())?;
    if trace.is_empty() {
        return Err(format!("{}: empty trace", a.trace.display()));
    }
    let keys: Vec<FlowKey> = trace.iter().map(key_of).collect();
    let oracle = PathBuf::from(format!("{}.firstmatch", a.trace.display()));
    let pending: Vec<Option<u32>> = if oracle.exists() {
        let fm = pcap::classbench::read_first_match(&oracle).map_err(|e| e.to_string())?;
        if fm.len() != trace.len() {
            return Err(format!(
                "{}: {} lines for a trace of {} headers",
                oracle.display(),
                fm.len(),
                trace.len()
            ));
        }
        fm.into_iter().map(Some).collect()
    } else {
        crate::suite::first_matches(filters, &trace, 2)
    };
    let want: Vec<_> = trace
        .iter()
        .zip(&pending)
        .map(|(h, &p)| {
            (
                crate::suite::first_from(filters, h, p, 0),
                crate::suite::first_from(filters, h, p, a.staged_every),
            )
        })
        .collect();
    Ok((keys, want, pending))
}

/// Placeholder contents of result buffers before the first classification.
const FIRST: Verdicts = Verdicts {
    enforced: dataplane::program::Decision {
        verdict: dataplane::program::Verdict::Deny,
        trace: dataplane::program::TraceId(0),
    },
    pending: dataplane::program::Decision {
        verdict: dataplane::program::Verdict::Deny,
        trace: dataplane::program::TraceId(0),
    },
};
