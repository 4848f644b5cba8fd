//! Criterion micro benches of the packet path: parse one 64-byte frame, one
//! flow-table hit, and one worker batch of 64 cached packets.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataplane::flow::{ConnKey, Dir, FlowTable, FlowTableConfig};
use dataplane::linear::LinearClassifier;
use dataplane::packet::parse;
use dataplane::program::FlowVerdicts;
use dataplane::worker::{ClassifierSlot, MemPort, Published, RecordOut, Rx, Worker, WorkerConfig};
use pcap::synth::{TraceTuple, tuples_to_frames};

fn frames(n: u32) -> pcap::capture::Frames {
    let t: Vec<TraceTuple> = (0..n)
        .map(|i| TraceTuple {
            src: 0x0a01_0000 | (i >> 12),
            dst: 0x0a02_0001,
            sport: 1024 + (i & 0xfff) as u16,
            dport: 80,
            proto: 6,
        })
        .collect();
    tuples_to_frames(&t, 1_700_000_000_000_000_000, 100)
}

fn benches(c: &mut Criterion) {
    let f = frames(4096);
    let one = f.get(7).map(|x| x.data.to_vec()).unwrap_or_default();
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_64B_tcp4", |b| {
        b.iter(|| parse(std::hint::black_box(&one), 60, 0))
    });
    g.finish();

    // Flow table: 4096 connections, look one up (hit).
    let mut table = FlowTable::new(FlowTableConfig::default());
    let mut keys = Vec::new();
    for fr in f.iter() {
        let Ok(p) = parse(fr.data, fr.orig_len, 0) else {
            continue;
        };
        let (k, dir) = ConnKey::canonical(&p.conn());
        let h = table.hash(&k);
        if let Some(s) = table.claim(h, 0, &mut |_| {})
            && let Some(e) = table.entry_mut(s)
        {
            e.start(&k, dir, &p.key, p.tcp_flags, 0);
            e.set_verdicts(&FlowVerdicts::default(), 1, true);
        }
        keys.push((k, h));
    }
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("lookup_hit_4k_flows", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let (k, h) = keys[i];
            let s = table.lookup(&k, h);
            if let Some(s) = s
                && let Some(e) = table.entry_mut(s)
            {
                e.on_packet(Dir::AtoB, 0x10, 60, 1);
            }
            s
        })
    });
    g.finish();

    // Worker: batches of 64 over 4096 cached flows.
    let classifier = LinearClassifier::new(dataplane::program::PolicySet::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let slot = Arc::new(ClassifierSlot::new(Published {
        generation: 1,
        classifier,
    }));
    let mut w = Worker::new(WorkerConfig::default(), slot, RecordOut::none());
    let frames = Arc::new(f);
    let order: Vec<u32> = (0..frames.len() as u32).collect();
    let mut port = MemPort::new(Arc::clone(&frames), order.clone(), usize::MAX);
    while let Rx::Frames(_) = w.poll(&mut port) {
        if w.stats().rx.packets >= 4096 {
            break;
        }
    }
    let mut g = c.benchmark_group("worker");
    g.throughput(Throughput::Elements(64));
    g.bench_function("batch64_cached", |b| b.iter(|| w.poll(&mut port)));
    g.finish();
}

criterion_group! {
    name = pipeline;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(2))
        .warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(pipeline);
