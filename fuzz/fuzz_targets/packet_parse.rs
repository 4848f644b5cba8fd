//! `cargo fuzz run packet_parse`: `dataplane::packet::parse` must not panic on any
//! bytes, with any wire length, and its outcome must be counted exactly once; the
//! fast path (`parse_common`) must agree with the full parser whenever it answers.
#![no_main]

use dataplane::packet::{FragmentTracker, ParseCounters, parse, parse_common, parse_full};
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
        // The fast path is a shortcut of the full parser, never a different answer.
        if let Some(fast) = parse_common(frame, wire, 0) {
            assert_eq!(Ok(fast), parse_full(frame, wire, 0));
        }
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
