use std::io::{Read, Write};

use super::*;
use crate::flowlog::{EndpointMeta, Verdict};
use dataplane::port::counters::QueueCounters;

fn activity(
    reporter: Reporter,
    enforced: &[&str],
    pending: &[&str],
    p: u64,
    b: u64,
) -> FlowActivity {
    let ip = "10.0.0.1".parse().unwrap();
    FlowActivity {
        first_ns: 0,
        last_ns: 1,
        src: EndpointMeta::network(ip),
        dst: EndpointMeta::network(ip),
        proto: 6,
        dst_port: 80,
        reporter,
        action: Verdict::Allow,
        pending_action: Verdict::Deny,
        enforced: enforced.iter().map(|s| s.to_string()).collect(),
        pending: pending.iter().map(|s| s.to_string()).collect(),
        packets_fwd: p,
        bytes_fwd: b,
        packets_rev: 1000,
        bytes_rev: 100_000,
        started: true,
        completed: false,
        live: true,
    }
}

fn worker() -> WorkerSnapshot {
    WorkerSnapshot {
        worker: 0,
        forwarded: 90,
        dropped_policy: 7,
        dropped_parse: 3,
        latency_ns: [1000, 2000, 3000, 4000, 50_000],
        flows: 5,
        flow_capacity: 1024,
        generation: 2,
        queues: vec![
            QueueSnapshot {
                iface: 0,
                queue: 0,
                port: QueueCounters {
                    rx: 100,
                    tx: 40,
                    ..QueueCounters::default()
                },
                ..QueueSnapshot::default()
            },
            QueueSnapshot {
                iface: 1,
                queue: 0,
                port: QueueCounters {
                    rx: 11,
                    tx: 60,
                    fill_ring_empty: 4,
                    ..QueueCounters::default()
                },
                ..QueueSnapshot::default()
            },
        ],
        ..WorkerSnapshot::default()
    }
}

/// The interface names of [`worker`]'s slots.
fn ifaces() -> Vec<String> {
    vec!["veth-a".into(), "veth-b".into()]
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn fed() -> Metrics {
    let m = Metrics::new();
    m.set_workers(vec![worker()], &ifaces());
    m.set_flow_log_records(12);
    let enf = "0|security|gnp:security.block|allow|-1";
    let pend = "0|security|sgnp:security.staged|deny|0";
    m.add_activity(&activity(Reporter::Dst, &[enf], &[pend], 10, 1500));
    m.add_activity(&activity(Reporter::Dst, &[enf], &[pend], 5, 500));
    m.add_activity(&activity(Reporter::Src, &[enf], &[enf], 2, 100));
    m
}

#[test]
fn the_exposition_parses_and_carries_every_family() {
    let text = fed().encode();
    let s = parse(&text);
    let q = [("worker", "0"), ("iface", "veth-a"), ("queue", "0")];
    assert_eq!(
        value(&s, "tiergate_rx_packets_total", &q),
        Some(100.0),
        "{text}"
    );
    assert_eq!(value(&s, "tiergate_tx_packets_total", &q), Some(40.0));
    let qb = [("iface", "veth-b")];
    assert_eq!(
        value(&s, "tiergate_fill_ring_empty_events_total", &qb),
        Some(4.0)
    );
    let w = [("worker", "0")];
    assert_eq!(
        value(&s, "tiergate_policy_dropped_packets_total", &w),
        Some(7.0)
    );
    assert_eq!(value(&s, "tiergate_parse_errors_total", &w), Some(3.0));
    assert_eq!(
        value(&s, "tiergate_forwarded_packets_total", &w),
        Some(90.0)
    );
    assert_eq!(value(&s, "tiergate_flow_table_entries", &w), Some(5.0));
    assert_eq!(
        value(&s, "tiergate_flow_table_capacity_entries", &w),
        Some(1024.0)
    );
    assert_eq!(value(&s, "tiergate_policy_generation", &w), Some(2.0));
    assert_eq!(
        value(
            &s,
            "tiergate_batch_latency_seconds",
            &[("quantile", "0.99")]
        ),
        Some(3e-6)
    );
    assert_eq!(
        value(&s, "tiergate_batch_latency_seconds", &[("quantile", "1")]),
        Some(5e-5)
    );
    assert_eq!(
        value(&s, "tiergate_flow_log_records_total", &[]),
        Some(12.0)
    );
    for name in [
        "tiergate_tx_ring_full_events_total",
        "tiergate_kernel_rx_dropped_packets_total",
        "tiergate_flow_table_evictions_total",
        "tiergate_pending_deny_packets_total",
        "tiergate_batches_total",
    ] {
        assert!(value(&s, name, &w).is_some(), "{name} missing:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        value(&s, "tiergate_offload_installs_total", &w),
        None,
        "no offload series without --offload:\n{text}"
    );
}

#[test]
fn offload_counters_are_exported_for_the_workers_that_run_it() {
    let m = Metrics::new();
    let with = WorkerSnapshot {
        offload: Some(OffloadStats {
            packets: 70,
            bytes: 7000,
            installs: 4,
            install_failures: 1,
            held_elsewhere: 2,
            removals: 3,
        }),
        ..worker()
    };
    let without = WorkerSnapshot {
        worker: 1,
        ..worker()
    };
    m.set_workers(vec![with, without], &ifaces());
    let text = m.encode();
    let s = parse(&text);
    let w0 = [("worker", "0")];
    for (name, want) in [
        ("tiergate_offload_bytes_total", 7000.0),
        ("tiergate_offload_installs_total", 4.0),
        ("tiergate_offload_install_failures_total", 1.0),
        ("tiergate_offload_held_elsewhere_total", 2.0),
        ("tiergate_offload_removals_total", 3.0),
    ] {
        assert_eq!(value(&s, name, &w0), Some(want), "{name}:\n{text}");
        assert_eq!(value(&s, name, &[("worker", "1")]), None, "{name}:\n{text}");
    }
}

#[test]
fn hits_count_the_initiators_packets_per_view_direction_policy_and_rule() {
    let s = parse(&fed().encode());
    let enf_in = [
        ("view", "enforced"),
        ("direction", "ingress"),
        ("tier", "security"),
        ("policy", "gnp:security.block"),
    ];
    assert_eq!(
        value(&s, "tiergate_policy_hit_packets_total", &enf_in),
        Some(15.0)
    );
    assert_eq!(
        value(&s, "tiergate_policy_hit_bytes_total", &enf_in),
        Some(2000.0)
    );
    let mut rule = enf_in.to_vec();
    rule.extend([("rule", "-1"), ("action", "allow")]);
    assert_eq!(
        value(&s, "tiergate_rule_hit_packets_total", &rule),
        Some(15.0)
    );
    let pend = [
        ("view", "pending"),
        ("direction", "ingress"),
        ("policy", "sgnp:security.staged"),
        ("rule", "0"),
        ("action", "deny"),
    ];
    assert_eq!(
        value(&s, "tiergate_rule_hit_packets_total", &pend),
        Some(15.0)
    );
    assert_eq!(
        value(&s, "tiergate_rule_hit_bytes_total", &pend),
        Some(2000.0)
    );
    let egress = [
        ("view", "pending"),
        ("direction", "egress"),
        ("policy", "gnp:security.block"),
    ];
    assert_eq!(
        value(&s, "tiergate_policy_hit_packets_total", &egress),
        Some(2.0)
    );
    // The staged policy was not in the egress traces.
    let none = [("direction", "egress"), ("policy", "sgnp:security.staged")];
    assert_eq!(value(&s, "tiergate_policy_hit_packets_total", &none), None);
}

#[test]
fn hit_strings_parse_or_are_skipped() {
    assert_eq!(
        parse_hit("1|default|np:ns/p|deny|3"),
        Some(("default", "np:ns/p", "deny", "3"))
    );
    assert_eq!(parse_hit("1|default|np:ns/p|deny"), None);
    assert_eq!(parse_hit("1|a|b|c|d|e"), None);
}

#[test]
fn only_loopback_without_the_flag() {
    assert!(check_addr("127.0.0.1:9464".parse().unwrap(), false).is_ok());
    assert!(check_addr("[::1]:9464".parse().unwrap(), false).is_ok());
    let e = check_addr("0.0.0.0:9464".parse().unwrap(), false).unwrap_err();
    assert!(e.contains("--metrics-allow-remote"), "{e}");
    assert!(check_addr("0.0.0.0:9464".parse().unwrap(), true).is_ok());
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn serve_answers_get_metrics_and_stops() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let m = fed();
    let mut server = serve(rt.handle(), "127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    let addr = server.local_addr();
    let resp = get(addr, "/metrics");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{resp}"
    );
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let s = parse(body);
    assert_eq!(
        value(&s, "tiergate_flow_log_records_total", &[]),
        Some(12.0)
    );
    // Later feeds show in the next scrape.
    m.set_flow_log_records(13);
    let resp = get(addr, "/metrics");
    assert!(
        resp.contains("tiergate_flow_log_records_total 13"),
        "{resp}"
    );
    assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    // A second server on the same port fails at once.
    assert!(serve(rt.handle(), addr, m).is_err());
    server.stop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "still listening");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
