//! `tiergate run --pcap`: the daemon (control socket, live reload, flow records) over
//! the capture source of [`super::pcap`].

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::bounded;
use dataplane::flow::FlowRecord;
use dataplane::worker::WorkerConfig;
use pcap::capture::Frames;

use super::super::out::{self, Log};
use super::super::{EXIT_OK, EXIT_USAGE, Global, Output};
use super::pcap::PcapSource;
use super::{Args, Signals, now_ns, start_daemon};
use crate::flowlog::Aggregator;
use crate::server::{Daemon, DataplaneInfo, Engine};

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    crate::errln!("tiergate run: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn print_counters(doc: &serde_json::Value, text: &str, output: Output, to_stderr: bool) {
    let s = match output {
        Output::Table => text.to_string(),
        o => super::super::structured(doc, o),
    };
    if to_stderr {
        crate::errln!("{s}");
    } else {
        crate::outln!("{s}");
    }
}

/// Applies the `-f` sources again (SIGHUP) and says what happened on stderr.
pub(super) fn reload<E: Engine>(daemon: &Daemon<E>, paths: &[std::path::PathBuf]) {
    if paths.is_empty() {
        crate::errln!("tiergate run: SIGHUP: no -f sources to reload");
        return;
    }
    match daemon.reload(paths) {
        Ok(r) => crate::errln!(
            "tiergate run: SIGHUP: reloaded the -f sources: {} created, {} updated, {} unchanged, {} deleted (no longer in the files); policy generation {}",
            r["created"],
            r["updated"],
            r["unchanged"],
            r["deleted"],
            r["generation"]
        ),
        Err(e) => {
            crate::errln!("tiergate run: SIGHUP: {}", e.message);
            for p in e.problems.iter().skip(1) {
                crate::errln!("  {p}");
            }
        }
    }
}

pub(super) fn run<E: Engine>(args: &Args, global: &Global) -> ExitCode {
    let Some(path) = args.pcap.as_deref() else {
        return usage("--pcap is missing");
    };
    if args.metrics.is_some() {
        return usage("--metrics needs --iface: a --pcap run has no worker counters to serve");
    }
    let frames = match Frames::read(path) {
        Ok(f) => f,
        Err(e) => return usage(format!("--pcap {}: {e}", path.display())),
    };
    if let Err(e) = super::check_outputs(args, global) {
        return usage(e);
    }
    let to_stdout = args.flowlog.as_deref().is_some_and(out::is_dash);
    let mut agg = match Aggregator::new(args.interval) {
        Ok(a) => a,
        Err(e) => return usage(format!("--interval: {e}")),
    };
    // Appended to, never truncated; given up (a file it created removed) when the run
    // cannot start.
    let mut log = match args.flowlog.as_deref().map(Log::open).transpose() {
        Ok(l) => l,
        Err(e) => return usage(format!("--flowlog: {e}")),
    };
    let give_up = |log: Option<Log>, code: ExitCode| {
        if let Some(l) = log {
            l.discard();
        }
        code
    };
    let Signals { term, usr1, hup } = match Signals::install(true) {
        Ok(s) => s,
        Err(e) => return give_up(log, usage(e)),
    };
    let (daemon, control) = match start_daemon::<E>(args) {
        Ok(d) => d,
        Err(code) => return give_up(log, code),
    };
    let mut cfg = WorkerConfig {
        batch: usize::from(args.batch),
        reevaluate_enforced: args.reevaluate,
        export_interval_ns: Some(args.interval.saturating_mul(1_000_000_000)),
        ..WorkerConfig::default()
    };
    if let Some(n) = args.flow_capacity {
        cfg.flow.capacity = n;
    }
    let (tx, rx) = bounded::<FlowRecord>(1 << 16);
    let mut source = match PcapSource::start(
        path.display().to_string(),
        frames,
        args.looping,
        args.pcap_rate,
        cfg,
        daemon.slot(),
        tx,
    ) {
        Ok(s) => s,
        Err(e) => return give_up(log, usage(e)),
    };
    // Flow-log records aggregated and written (or, without --flowlog, that would have
    // been), for `stats`.
    let written = Arc::new(AtomicU64::new(0));
    let counters = source.counters_fn();
    let written2 = Arc::clone(&written);
    daemon.set_dataplane(DataplaneInfo {
        generations: Box::new(source.generations_fn()),
        stats: Box::new(move || {
            let (mut doc, text) = counters();
            let n = written2.load(Ordering::Relaxed);
            doc["flow_log_records"] = serde_json::json!(n);
            (doc, format!("{text}  flow-log records {n}"))
        }),
    });
    crate::errln!(
        "tiergate run: feeding {} to 1 worker{}{}; pid {}: SIGHUP reloads -f, SIGUSR1 prints counters, SIGTERM stops",
        path.display(),
        if args.looping { " in a loop" } else { "" },
        args.pcap_rate
            .map_or(String::new(), |r| format!(" at {r} frames/s")),
        std::process::id()
    );
    let started = Instant::now();
    let deadline = args.duration.and_then(|d| started.checked_add(d));
    let mut failed = None;
    let grace = 2_000_000_000;
    let write = |logs: Vec<crate::flowlog::FlowLog>, log: &mut Option<Log>| {
        written.fetch_add(logs.len() as u64, Ordering::Relaxed);
        match log {
            Some(l) => l.write_records(&logs).and_then(|()| l.flush()),
            None => Ok(()),
        }
    };
    loop {
        std::thread::sleep(Duration::from_millis(20));
        for a in daemon.ingest(rx.try_iter()) {
            agg.add(&a);
        }
        if let Err(e) = write(agg.drain_ended(now_ns().saturating_sub(grace)), &mut log) {
            failed = Some(e.to_string());
            break;
        }
        if usr1.swap(false, Ordering::Relaxed) {
            let (doc, text) = source.counters();
            print_counters(&doc, &text, global.output, to_stdout);
        }
        if hup.swap(false, Ordering::Relaxed) {
            reload(&daemon, &args.policies);
        }
        if term.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if source.finished() {
            failed = Some("the worker stopped unexpectedly".to_string());
            break;
        }
    }
    if let Err(e) = source.stop() {
        failed.get_or_insert(e);
    }
    for a in daemon.ingest(rx.try_iter()) {
        agg.add(&a);
    }
    if let Err(e) = write(agg.drain(), &mut log) {
        failed.get_or_insert(e.to_string());
    }
    // Stops the control socket (its file is removed).
    drop(control);
    let (doc, text) = source.counters();
    print_counters(&doc, &text, global.output, to_stdout);
    match failed {
        Some(e) => usage(e),
        None => ExitCode::from(EXIT_OK),
    }
}
