//! The ClassBench suite: `classbench-oracle` (first-match oracle by brute force) and
//! `classbench-suite DIR` (every set of a directory, our classifier alternating with
//! DPDK rte_acl's best two-category algorithm; see BENCHMARKS.md "ClassBench suite").

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use pcap::classbench::{Filter, Header};

#[derive(clap::Args, Debug)]
pub struct OracleArgs {
    /// ClassBench filter set.
    rules: PathBuf,
    /// ClassBench trace.
    trace: PathBuf,
    /// Output file (default: `<TRACE>.firstmatch`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Threads scanning the trace.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// The first filter (0-based) matching `h`, by brute force. A trace line's FILTER
/// column names a filter that contains the header (ClassBench draws the header from
/// it), so no later filter can be the first match: the scan stops there; when that
/// filter does not contain the header (a foreign trace), every filter is scanned.
pub fn first_match(filters: &[Filter], h: &Header) -> Option<u32> {
    let end = match filters.get(h.filter as usize) {
        Some(f) if f.matches(h) => h.filter as usize + 1,
        _ => filters.len(),
    };
    filters[..end]
        .iter()
        .position(|f| f.matches(h))
        .map(|i| i as u32)
}

/// Whether `f` matches `h` the way a tiergate program of it does
/// (`dataplane::classbench::program_of`): as [`Filter::matches`], except that a filter
/// with a port range (not `0 : 65535`) needs a port-carrying protocol (TCP, UDP,
/// SCTP), as a Calico rule with ports does. ClassBench (and rte_acl) match the port
/// columns of any protocol.
pub fn tiergate_matches(f: &Filter, h: &Header) -> bool {
    let ports = f.sport != (0, 65535) || f.dport != (0, 65535);
    f.matches(h) && (!ports || dataplane::program::proto::has_ports(h.proto))
}

/// The first filter from `from` on (0-based) that matches `h` as a tiergate program
/// does and is not staged (`staged_every`: index % K == K-1; 0 = none staged). Every
/// tiergate match is a ClassBench match, so with `from` = the ClassBench first match
/// this is the tiergate first match (of that view).
pub fn first_from(
    filters: &[Filter],
    h: &Header,
    from: Option<u32>,
    staged_every: usize,
) -> Option<u32> {
    let staged = |j: usize| staged_every != 0 && j % staged_every == staged_every - 1;
    let from = from? as usize;
    (from..filters.len())
        .find(|&j| !staged(j) && tiergate_matches(&filters[j], h))
        .map(|j| j as u32)
}

/// First matches of every header, on `threads` threads.
pub fn first_matches(filters: &[Filter], trace: &[Header], threads: usize) -> Vec<Option<u32>> {
    let threads = threads.max(1);
    let chunk = trace.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = trace
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|h| first_match(filters, h)).collect()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|_| Vec::new()))
            .collect()
    })
}

/// `classbench-oracle RULES TRACE`: writes one 0-based first-match index per trace
/// line.
pub fn oracle(a: &OracleArgs) -> Result<(), String> {
    let filters = pcap::classbench::read_filters(&a.rules).map_err(|e| e.to_string())?;
    let trace = pcap::classbench::read_trace(&a.trace).map_err(|e| e.to_string())?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.firstmatch", a.trace.display())));
    let t0 = std::time::Instant::now();
    let fm = first_matches(&filters, &trace, a.threads);
    let mut text = String::with_capacity(fm.len() * 6);
    let mut differ = 0usize;
    for (i, (m, h)) in fm.iter().zip(&trace).enumerate() {
        let Some(m) = m else {
            return Err(format!(
                "{}:{}: no filter of {} matches this header, so it has no first match",
                a.trace.display(),
                i + 1,
                a.rules.display()
            ));
        };
        differ += usize::from(*m != h.filter);
        let _ = writeln!(text, "{m}");
    }
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "oracle rules={} trace={} headers={} out={} first_match_is_not_filter_column={differ} secs={:.1}",
        a.rules.display(),
        a.trace.display(),
        trace.len(),
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SuiteArgs {
    /// Directory of sets: every file `X` with an `X_trace` next to it is a set
    /// (`X_trace.firstmatch`, written by the oracle if missing).
    dir: PathBuf,
    /// Only these sets (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    sets: Vec<String>,
    /// Alternating (ours, rte_acl) pairs per set.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Seconds per timed run (each side).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// CPU both sides are pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// The rte_acl_bench binary (built as ../shared/tools/rte_acl_bench/README.md says).
    #[arg(long, default_value = "/tmp/rte_acl_bench/rte_acl_bench")]
    rte_acl: PathBuf,
    /// rte_acl algorithms tried (the best two-category one is reported).
    #[arg(long, default_value = "avx2,avx512x16,avx512x32")]
    algs: String,
    /// Trace lines rte_acl_bench checks against its own brute force.
    #[arg(long, default_value_t = 20000)]
    rte_verify: usize,
    /// Another `bench` binary (an earlier build of tiergate) run in each pair too,
    /// after ours and before rte_acl: its median and the median of our per-pair
    /// ratios to it are printed (`vs baseline`), to check a change on every set.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Build our classifier on this many threads (`BuildConfig::build_threads`),
    /// unpinned, then pin to `--cpu` for the lookups; without it ours is pinned
    /// throughout like the other sides (a one-thread build). The baseline is always
    /// pinned throughout.
    #[arg(long)]
    build_threads: Option<usize>,
}

/// `key=value` fields of a line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn num(line: &str, key: &str) -> f64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One set's measurements over the pairs.
#[derive(Default)]
struct Row {
    name: String,
    rules: usize,
    ours: Vec<f64>,
    theirs: Vec<f64>,
    alg: String,
    correct: f64,
    rte_correct: f64,
    bytes: f64,
    rte_bytes: f64,
    build_ms: Vec<f64>,
    rte_build_ms: Vec<f64>,
    rss_mib: f64,
    depth: f64,
    trees: f64,
    base: Vec<f64>,
    /// Ours / baseline, per pair.
    base_ratios: Vec<f64>,
    base_bytes: f64,
    base_build_ms: Vec<f64>,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `classify` line of `bench classify --core-only` (binary `bin`) on one set,
/// pinned to the suite's CPU.
fn classify(
    bin: &std::path::Path,
    a: &SuiteArgs,
    rules: &std::path::Path,
    trace: &std::path::Path,
    name: &str,
    threads: Option<usize>,
) -> Result<String, String> {
    let mut cmd = match threads {
        Some(n) => {
            let mut c = Command::new(bin);
            c.arg("classify")
                .args(["--build-threads", &n.to_string()])
                .args(["--pin-after-build", &a.cpu.to_string()]);
            c
        }
        None => {
            let mut c = Command::new("taskset");
            c.args(["-c", &a.cpu.to_string()]).arg(bin).arg("classify");
            c
        }
    };
    let out = run(cmd
        .arg("--rules")
        .arg(rules)
        .arg("--trace")
        .arg(trace)
        .args(["--core-only", "--linear-duration", "0", "--duration"])
        .arg(a.duration.to_string()))?;
    let line = out
        .lines()
        .find(|l| l.starts_with("classify "))
        .ok_or_else(|| format!("{name}: no classify line in {out:?}"))?;
    Ok(line.to_string())
}

/// `classbench-suite DIR`.
pub fn suite(a: &SuiteArgs) -> Result<(), String> {
    let mut names: Vec<String> = std::fs::read_dir(&a.dir)
        .map_err(|e| format!("{}: {e}", a.dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.contains('.') && !n.ends_with("_trace"))
        .filter(|n| a.dir.join(format!("{n}_trace")).exists())
        .filter(|n| a.sets.is_empty() || a.sets.contains(n))
        .collect();
    // By size, then family, then name: acl1_1k .. ipc2_1k, acl1_10k ..
    let size = |n: &str| {
        let s = n.rsplit('_').next().unwrap_or("");
        s.trim_end_matches('k').parse::<u64>().unwrap_or(u64::MAX)
    };
    names.sort_by_key(|n| (size(n), n.clone()));
    if names.is_empty() {
        return Err(format!("{}: no set (file X with X_trace)", a.dir.display()));
    }
    if !a.rte_acl.exists() {
        return Err(format!(
            "{}: no rte_acl_bench (build it: make -C ../shared/tools/rte_acl_bench OUT=/tmp/rte_acl_bench)",
            a.rte_acl.display()
        ));
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for name in &names {
        let rules = a.dir.join(name);
        let trace = a.dir.join(format!("{name}_trace"));
        let fm = a.dir.join(format!("{name}_trace.firstmatch"));
        if !fm.exists() {
            print!(
                "{}",
                run(Command::new(&me)
                    .arg("classbench-oracle")
                    .arg(&rules)
                    .arg(&trace))?
            );
        }
        let mut row = Row {
            name: name.clone(),
            ..Row::default()
        };
        for pair in 0..a.pairs {
            let line = classify(&me, a, &rules, &trace, name, a.build_threads)?;
            println!("{line}");
            let line_ours = line.clone();
            row.ours.push(num(&line, "mlps"));
            row.rules = num(&line, "rules") as usize;
            row.correct = num(&line, "correct");
            row.bytes = num(&line, "bytes");
            row.build_ms.push(num(&line, "build_ms"));
            row.rss_mib = num(&line, "build_rss_mib");
            row.depth = num(&line, "depth");
            row.trees = num(&line, "trees");
            if let Some(base) = &a.baseline {
                let line = classify(base, a, &rules, &trace, name, None)?;
                println!("baseline {line}");
                row.base.push(num(&line, "mlps"));
                row.base_ratios
                    .push(num(&line_ours, "mlps") / num(&line, "mlps"));
                row.base_bytes = num(&line, "bytes");
                row.base_build_ms.push(num(&line, "build_ms"));
            }
            let theirs = run(Command::new(&a.rte_acl)
                .args(["-c", "2", "-L", "0", "-a", &a.algs, "-d"])
                .arg(a.duration.to_string())
                .args(["-C", &a.cpu.to_string(), "-v", &a.rte_verify.to_string()])
                .arg(&rules)
                .arg(&trace))?;
            let best = theirs
                .lines()
                .filter(|l| l.starts_with("RESULT ") && field(l, "cats") == Some("2"))
                .max_by(|x, y| num(x, "mlps").total_cmp(&num(y, "mlps")))
                .ok_or_else(|| format!("{name}: no rte_acl RESULT line"))?;
            let m = num(best, "mlps");
            println!(
                "rte_acl set={name} pair={pair} alg={} mlps={m:.2} build_ms={} mem_bytes={} acl_vs_bf={} pending_vs_bf={}",
                field(best, "alg").unwrap_or("?"),
                num(best, "build_ms"),
                num(best, "mem_bytes"),
                field(best, "acl_vs_bf").unwrap_or("?"),
                field(best, "pending_vs_bf").unwrap_or("?"),
            );
            row.theirs.push(m);
            row.alg = field(best, "alg").unwrap_or("?").to_string();
            row.rte_bytes = num(best, "mem_bytes");
            row.rte_build_ms.push(num(best, "build_ms"));
            row.rte_correct = num(best, "acl_vs_bf").min(num(best, "pending_vs_bf"));
        }
        rows.push(row);
    }
    println!(
        "\n| set | rules | ours Mlookups/s | rte_acl best (alg) | ratio (median of pairs) | correct (ours / rte) | bytes ours | bytes rte_acl | mem ratio | build ms ours / rte | build peak RSS MiB | depth | trees |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &mut rows {
        let mut ratios: Vec<f64> = r.ours.iter().zip(&r.theirs).map(|(o, t)| o / t).collect();
        println!(
            "| {} | {} | {:.1} | {:.1} ({}) | {:.2}x | {:.6} / {:.4} | {:.0} | {:.0} | {:.2}x | {:.0} / {:.0} | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.rules,
            median(&mut r.ours),
            median(&mut r.theirs),
            r.alg,
            median(&mut ratios),
            r.correct,
            r.rte_correct,
            r.bytes,
            r.rte_bytes,
            r.bytes / r.rte_bytes,
            median(&mut r.build_ms),
            median(&mut r.rte_build_ms),
            r.rss_mib,
            r.depth,
            r.trees,
        );
    }
    if a.baseline.is_some() {
        println!(
            "\n| set | ours Mlookups/s | baseline Mlookups/s | ours / baseline (median of pairs) | bytes ours / baseline | build ms ours / baseline |"
        );
        println!("|---|---|---|---|---|---|");
        for r in &mut rows {
            println!(
                "| {} | {:.1} | {:.1} | {:.2}x | {:.0} / {:.0} | {:.0} / {:.0} |",
                r.name,
                median(&mut r.ours),
                median(&mut r.base),
                median(&mut r.base_ratios),
                r.bytes,
                r.base_bytes,
                median(&mut r.build_ms),
                median(&mut r.base_build_ms),
            );
        }
    }
    Ok(())
}

/// Peak resident set size of this process (`VmHWM`), MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` 5); false if refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filt(src: (u32, u8), dport: (u16, u16)) -> Filter {
        Filter {
            src,
            dst: (0, 0),
            sport: (0, 65535),
            dport,
            proto: (0, 0),
            flags: (0, 0),
        }
    }

    fn hdr(src: u32, dport: u16, filter: u32) -> Header {
        Header {
            src,
            dst: 7,
            sport: 1,
            dport,
            proto: 6,
            flags: 0,
            filter,
        }
    }

    #[test]
    fn oracle_is_the_first_match_not_the_filter_column() {
        let f = vec![
            filt((0x0a00_0000, 8), (80, 80)),
            filt((0x0a01_0000, 16), (0, 65535)),
            filt((0, 0), (0, 65535)),
        ];
        // Drawn from filter 1, but filter 0 matches first.
        assert_eq!(first_match(&f, &hdr(0x0a01_0203, 80, 1)), Some(0));
        assert_eq!(first_match(&f, &hdr(0x0a01_0203, 81, 1)), Some(1));
        // A FILTER column naming a filter that does not contain the header: full scan.
        assert_eq!(first_match(&f, &hdr(0x0b00_0000, 81, 0)), Some(2));
        assert_eq!(first_match(&f[..2], &hdr(0x0b00_0000, 81, 0)), None);
        // Staged every 2nd (index 1): the enforced match skips it.
        let h = hdr(0x0a01_0203, 81, 1);
        assert_eq!(first_from(&f, &h, first_match(&f, &h), 2), Some(2));
        assert_eq!(first_from(&f, &h, first_match(&f, &h), 0), Some(1));
        // A port-carrying filter matches ClassBench's protocol 2, not tiergate's.
        let igmp = Header {
            proto: 2,
            ..hdr(0x0a01_0203, 80, 1)
        };
        assert_eq!(first_match(&f, &igmp), Some(0));
        assert!(!tiergate_matches(&f[0], &igmp));
        assert_eq!(first_from(&f, &igmp, first_match(&f, &igmp), 0), Some(1));
        let all = first_matches(&f, &[h, hdr(0x0a01_0203, 80, 1)], 2);
        assert_eq!(all, vec![Some(1), Some(0)]);
    }

    #[test]
    fn reads_key_value_fields() {
        let l = "classify set=a mlps=12.5 correct=1.000000";
        assert_eq!(num(l, "mlps"), 12.5);
        assert_eq!(field(l, "set"), Some("a"));
        assert!(num(l, "nope").is_nan());
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
