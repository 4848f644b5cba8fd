//! `cargo fuzz run packet_parse`: `dataplane::packet::parse` must not panic on any
//! bytes, with any wire length, and its outcome must be counted exactly once.
#![no_main]

use dataplane::packet::{FragmentTracker, ParseCounters, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick how much longer than the capture the wire frame was,
    // so both strict and lax (snapped) parsing are exercised.
    let (extra, frame) = match data {
        [a, b, rest @ ..] => (u32::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let mut counters = ParseCounters::default();
    let mut frags = FragmentTracker::new(16, 0);
    for wire in [frame.len() as u32, frame.len() as u32 + extra] {
        let r = parse(frame, wire, 0);
        counters.record(&r);
        if let Ok(mut p) = r {
            let _ = p.conn();
            let _ = p.related();
            frags.resolve(&mut p, 0);
        }
    }
    assert_eq!(counters.total(), 2);
});
