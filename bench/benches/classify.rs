//! Criterion: compiled classifier vs linear reference on the shipped ClassBench sets.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataplane::classbench::{key_of, program_of};
use dataplane::classifier::{BuildConfig, Classifier};
use dataplane::linear::evaluate;
use dataplane::program::{FlowKey, PolicySet, ProgramId, Verdicts, View};

fn sets(c: &mut Criterion) {
    let Some(dir) = pcap::shared::find(Path::new(env!("CARGO_MANIFEST_DIR")), "classbench") else {
        eprintln!("skipped: shared/data/classbench not found");
        return;
    };
    for set in ["acl1_1k", "fw1_1k", "acl1_10k", "fw1_10k"] {
        let filters = pcap::classbench::read_filters(&dir.join(set)).expect("filters parse");
        let trace =
            pcap::classbench::read_trace(&dir.join(format!("{set}_trace"))).expect("trace parses");
        let keys: Vec<FlowKey> = trace.iter().map(key_of).collect();
        let program = program_of(&filters, 10);
        let ps = PolicySet {
            programs: vec![program.clone()],
            endpoints: vec![],
        };
        let cl = Classifier::build(&ps, &BuildConfig::default()).expect("builds");
        let mut g = c.benchmark_group(set);
        g.throughput(Throughput::Elements(keys.len() as u64));
        let mut out = vec![Verdicts { ..dummy() }; 64];
        g.bench_function("tree", |b| {
            b.iter(|| {
                for ch in keys.chunks(64) {
                    cl.classify_program(ProgramId(0), ch, &mut out[..ch.len()]);
                }
            })
        });
        g.bench_function("build", |b| {
            b.iter(|| Classifier::build(&ps, &BuildConfig::default()).expect("builds"))
        });
        g.throughput(Throughput::Elements(64));
        g.bench_function("linear", |b| {
            b.iter(|| {
                for k in &keys[..64] {
                    std::hint::black_box((
                        evaluate(&program, k, View::Enforced),
                        evaluate(&program, k, View::Pending),
                    ));
                }
            })
        });
        g.finish();
    }
}

fn dummy() -> Verdicts {
    let d = dataplane::program::Decision {
        verdict: dataplane::program::Verdict::Deny,
        trace: dataplane::program::TraceId(0),
    };
    Verdicts {
        enforced: d,
        pending: d,
    }
}

criterion_group!(benches, sets);
criterion_main!(benches);
