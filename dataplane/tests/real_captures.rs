//! Every real capture parses without panic; per-reason counters add up to the file's
//! packet count (from its README, `capinfos`), and the layer mix matches what the README
//! (tshark) reports for each file. The BSD-licensed captures are the repository's
//! fixtures (`tests/data/pcap`); the GPL-3.0 tcpreplay capture is read from the
//! workspace's `shared/data/pcap` when it is there (see `pcap::shared`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dataplane::packet::{Fragment, FragmentTracker, L4, ParseCounters, ParseError, parse};
use dataplane::program::{Family, proto};
use pcap::capture::Frames;

/// One vendored capture, by file name.
fn fixture(name: &str) -> PathBuf {
    pcap::shared::fixtures("pcap").join(name)
}

/// Every vendored capture, sorted by name.
fn fixture_captures() -> Vec<PathBuf> {
    let dir = pcap::shared::fixtures("pcap");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 7, "tests/data/pcap/README.md lists 7 captures");
    paths
}

/// `shared/data/pcap/tcpreplay_test.pcap`; `None` = skip the test.
fn tcpreplay_capture() -> Option<PathBuf> {
    pcap::shared::data_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        "pcap",
        "tcpreplay capture tests",
    )
    .map(|d| d.join("tcpreplay_test.pcap"))
}

#[derive(Default, Debug)]
struct Mix {
    counters: ParseCounters,
    /// (family, proto) → packets
    protos: BTreeMap<(u8, u8), u64>,
    icmp_errors_related: u64,
    icmp_queries: u64,
    first_fragments: u64,
    later_fragments: u64,
    later_resolved: u64,
}

fn mix(path: &Path) -> (usize, Mix) {
    let name = path.display();
    let frames = Frames::read(path).unwrap_or_else(|e| panic!("{e}"));
    let mut m = Mix::default();
    let mut frags = FragmentTracker::new(1024, 1);
    for f in frames.iter() {
        let r = parse(f.data, f.orig_len, 0);
        m.counters.record(&r);
        if let Ok(mut p) = r {
            let fam = match p.key.family {
                Family::V4 => 4,
                Family::V6 => 6,
            };
            *m.protos.entry((fam, p.key.proto)).or_default() += 1;
            match p.l4 {
                L4::IcmpError { .. } => m.icmp_errors_related += 1,
                L4::IcmpQuery { .. } => m.icmp_queries += 1,
                _ => {}
            }
            match p.fragment {
                Fragment::First { .. } => m.first_fragments += 1,
                Fragment::Later { .. } => m.later_fragments += 1,
                Fragment::None => {}
            }
            let before = frags.resolved;
            frags.resolve(&mut p, f.ts_ns);
            m.later_resolved += frags.resolved - before;
        }
    }
    assert_eq!(
        m.counters.total(),
        frames.len() as u64,
        "{name}: counters add up"
    );
    (frames.len(), m)
}

fn protos(m: &Mix, fam: u8, p: u8) -> u64 {
    m.protos.get(&(fam, p)).copied().unwrap_or(0)
}

#[test]
fn every_capture_parses_and_counts_add_up() {
    for path in fixture_captures() {
        let (n, m) = mix(&path);
        assert_eq!(m.counters.total(), n as u64);
    }
}

#[test]
#[cfg_attr(
    not(tiergate_shared),
    ignore = "needs shared/ data: set TIERGATE_SHARED_DIR"
)]
fn tcpreplay_mixed_traffic() {
    let Some(path) = tcpreplay_capture() else {
        return;
    };
    let (n, m) = mix(&path);
    assert_eq!(n, 179);
    // 10 MPLS pseudowire frames (and 9 ARP/other) are not IP at the top level.
    assert_eq!(m.counters.non_ip, 19);
    assert_eq!(m.counters.parsed, 160);
    // README: TCP 116 = 106 over IPv4 + 10 over IPv6.
    assert_eq!(protos(&m, 4, proto::TCP) + protos(&m, 6, proto::TCP), 116);
    assert_eq!(protos(&m, 6, proto::TCP), 10);
    // README: UDP 34 = 28 top-level + 6 quoted inside ICMP errors.
    assert_eq!(protos(&m, 4, proto::UDP), 28);
    assert_eq!(m.icmp_errors_related, 6);
    replays_through_the_pipeline(&path);
}

#[test]
fn communityid_reference_capture() {
    let (n, m) = mix(&fixture("communityid_combined.pcap"));
    assert_eq!(n, 68);
    assert_eq!(m.counters.non_ip, 6, "6 ARP frames");
    assert_eq!(
        m.counters.snapped, 3,
        "3 TCP frames cut at caplen 96 still parse"
    );
    assert_eq!(protos(&m, 4, proto::TCP) + protos(&m, 6, proto::TCP), 29);
    assert_eq!(protos(&m, 4, proto::SCTP), 5);
    assert_eq!(protos(&m, 4, proto::ICMP), 4);
    assert_eq!(protos(&m, 6, proto::ICMPV6), 20);
    assert_eq!(protos(&m, 4, 46), 2, "RSVP");
    // ICMPv6 errors quote inner IPv6/UDP; one ICMPv4 error quotes its packet.
    assert_eq!(m.icmp_errors_related, 7);
}

#[test]
fn qinq_frames_are_walked_to_their_arp_payload() {
    let (n, m) = mix(&fixture("tcpdump_802.1ad_QinQ.pcap"));
    assert_eq!((n, m.counters.non_ip), (2, 2));
}

#[test]
fn vlan_tagged_ldp() {
    let (n, m) = mix(&fixture("tcpdump_ldp-common-session.pcap"));
    assert_eq!((n, m.counters.parsed), (22, 22));
    assert_eq!(protos(&m, 4, proto::TCP), 13);
    assert_eq!(protos(&m, 4, proto::UDP), 9);
}

#[test]
fn afs_fragments_follow_their_first_fragment() {
    let (n, m) = mix(&fixture("tcpdump_afs.pcap"));
    assert_eq!((n, m.counters.parsed), (601, 601));
    assert_eq!(m.first_fragments + m.later_fragments, 200);
    assert_eq!((m.first_fragments, m.later_fragments), (51, 149));
    // Every later fragment in this capture follows a first fragment it saw.
    assert_eq!(m.later_resolved, 149);
    assert_eq!(m.icmp_errors_related, 25);
}

#[test]
fn vrrp_has_no_ports() {
    let (n, m) = mix(&fixture("tcpdump_vrrp.pcap"));
    assert_eq!(n, 165);
    assert_eq!(protos(&m, 4, 112), 101);
    assert_eq!(protos(&m, 6, 112), 64);
}

#[test]
fn snaplen_69_capture_is_parsed_laxly() {
    let (n, m) = mix(&fixture("tcpdump_babel_update_oobr.pcap"));
    assert_eq!(n, 107);
    assert_eq!(
        m.counters.snapped, m.counters.parsed,
        "every parsed frame was cut"
    );
    assert_eq!(m.counters.parsed + m.counters.non_ip, 107);
    assert_eq!(m.later_fragments, 2, "README: 2 IPv4 fragments");
}

#[test]
fn bad_ipv6_version_is_malformed() {
    let (n, m) = mix(&fixture("tcpdump_ipv6-bad-version.pcap"));
    assert_eq!(n, 4);
    assert_eq!(m.counters.rejected(ParseError::Malformed), 2);
    assert_eq!(m.counters.parsed, 2);
}

/// Every capture replays through the full pipeline (file source, two workers):
/// every frame is received once and gets a verdict; nothing is lost.
#[test]
fn every_capture_replays_through_the_pipeline() {
    for path in fixture_captures() {
        replays_through_the_pipeline(&path);
    }
}

fn replays_through_the_pipeline(path: &Path) {
    use dataplane::linear::LinearClassifier;
    use dataplane::pipeline::{FrameVerdict, Pipeline, PipelineConfig, ReplaySource};
    use dataplane::program::PolicySet;
    use dataplane::worker::{ClassifierSlot, Published};
    use std::sync::Arc;

    let n = Frames::read(path).expect("read").len() as u64;
    let classifier = LinearClassifier::new(PolicySet::default()).expect("empty policy");
    let slot = Arc::new(ClassifierSlot::new(Published {
        generation: 1,
        classifier,
    }));
    let cfg = PipelineConfig {
        workers: 2,
        pin: false,
        chunk_frames: 50,
        frame_verdicts: true,
        ..Default::default()
    };
    let r = Pipeline::run(ReplaySource::File(path.to_path_buf()), slot, &cfg)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(r.totals.rx.packets, n, "{}", path.display());
    assert_eq!(r.totals.parse.total(), n);
    assert_eq!(r.totals.forwarded.packets + r.totals.dropped.packets, n);
    // No policy anywhere: every parsed frame is allowed, unparsed ones dropped.
    assert_eq!(r.totals.forwarded.packets, r.totals.parse.parsed);
    let v = r.frame_verdicts.expect("verdicts");
    assert_eq!(v.len() as u64, n);
    assert!(v.iter().all(|x| *x != FrameVerdict::Unseen));
}

mod mutated {
    use super::*;
    use dataplane::packet::{parse_common, parse_full};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Every frame of every vendored capture, with its original length.
    fn real_frames() -> &'static Vec<(Vec<u8>, u32)> {
        static FRAMES: OnceLock<Vec<(Vec<u8>, u32)>> = OnceLock::new();
        FRAMES.get_or_init(|| {
            let mut out = Vec::new();
            for p in fixture_captures() {
                for f in Frames::read(&p).expect("read").iter() {
                    out.push((f.data.to_vec(), f.orig_len));
                }
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Real frames with random byte flips and cuts: never a panic, exactly one
        /// outcome per frame, and the fast path never disagrees with the full parser.
        #[test]
        fn mutated_real_frames(
            pick in any::<usize>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
            wire_extra in 0u32..64,
        ) {
            let frames = real_frames();
            let (orig, orig_len) = &frames[pick % frames.len()];
            let mut f = orig.clone();
            for (i, b) in flips {
                if !f.is_empty() {
                    let n = f.len();
                    f[i % n] = b;
                }
            }
            f.truncate(cut % (f.len() + 1));
            let mut c = ParseCounters::default();
            for wire in [f.len() as u32, (*orig_len).max(f.len() as u32) + wire_extra] {
                if let Some(fast) = parse_common(&f, wire, 0) {
                    prop_assert_eq!(Ok(fast), parse_full(&f, wire, 0));
                }
                c.record(&parse(&f, wire, 0));
            }
            prop_assert_eq!(c.total(), 2);
        }
    }
}
