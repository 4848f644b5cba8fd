//! `cargo fuzz run packet_parse`: `dataplane::packet::parse` must not panic on any
//! bytes, with any wire length, and its outcome must be counted exactly once; the
//! fast path (`parse_common`) must agree with the full parser whenever it answers.
//! A wire length shorter than the captured bytes (a capture that lies) parses as if
//! nothing was cut. And the same bytes also describe one datagram (family, protocol,
//! ports, id, payload, fragment size, order, time gaps) cut into real IPv4 or IPv6
//! fragments: the first parses as the datagram does, every later one as a later
//! fragment of the same id, and the `FragmentTracker` gives a later fragment the first
//! one's ports exactly when the first came before it and less than the fragment
//! timeout ago.
#![no_main]

use dataplane::packet::{
    FRAGMENT_TIMEOUT_NS, Fragment, FragmentTracker, L4, ParseCounters, parse, parse_common,
    parse_full,
};
use dataplane::program::{Family, proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick how much longer than the capture the wire frame was,
    // so both strict and lax (snapped) parsing are exercised.
    let (extra, frame) = match data {
        [a, b, rest @ ..] => (u32::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let len = frame.len() as u32;
    let mut counters = ParseCounters::default();
    let mut frags = FragmentTracker::new(16, 0);
    for wire in [len, len + extra] {
        // The fast path is a shortcut of the full parser, never a different answer.
        if let Some(fast) = parse_common(frame, wire, 0) {
            assert_eq!(Ok(fast), parse_full(frame, wire, 0));
        }
        let r = parse(frame, wire, 0);
        counters.record(&r);
        if let Ok(mut p) = r {
            assert!(p.wire_len >= len && p.snapped == (wire > len));
            let _ = p.conn();
            let _ = p.related();
            frags.resolve(&mut p, 0);
        }
    }
    assert_eq!(counters.total(), 2);

    // A wire length shorter than the captured bytes: the frame is taken as whole.
    let shorter = len.saturating_sub(extra.max(1));
    if shorter < len {
        assert_eq!(parse(frame, shorter, 0), parse(frame, len, 0));
    }

    fragments(frame);
});

/// Bytes read front to back; zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet frame carrying `chunk` of a datagram's transport bytes at `offset`
/// (bytes, a multiple of 8), with `more` fragments to come (`None`: not fragmented).
fn frame(
    v6: bool,
    p: u8,
    src: u32,
    dst: u32,
    id: u32,
    frag: Option<(usize, bool)>,
    chunk: &[u8],
) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd]);
        let payload = chunk.len() + if frag.is_some() { 8 } else { 0 };
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload as u16).to_be_bytes());
        f.push(if frag.is_some() { 44 } else { p });
        f.push(64);
        for a in [src, dst] {
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            f.extend_from_slice(&a.to_be_bytes());
        }
        if let Some((offset, more)) = frag {
            f.extend_from_slice(&[p, 0]);
            f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
    } else {
        f.extend_from_slice(&[0x08, 0x00]);
        let (offset, more) = frag.unwrap_or((0, false));
        let flags = ((offset / 8) as u16) | if more { 0x2000 } else { 0 };
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
        h.extend_from_slice(&(id as u16).to_be_bytes());
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&[64, p, 0, 0]);
        h.extend_from_slice(&src.to_be_bytes());
        h.extend_from_slice(&dst.to_be_bytes());
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&h);
    }
    f.extend_from_slice(chunk);
    f
}

/// One datagram described by `b`, cut into fragments and fed through the tracker in a
/// shuffled order with time gaps.
fn fragments(b: &[u8]) {
    let mut b = Bytes(b);
    let pick = b.u8();
    let v6 = pick & 1 != 0;
    let (src, dst) = (b.u32(), b.u32());
    let id = if v6 { b.u32() } else { u32::from(b.u16()) };
    let (sport, dport) = (b.u16(), b.u16());
    let icmp = if v6 { proto::ICMPV6 } else { proto::ICMP };
    // The transport header, then the payload.
    let (p, mut l4) = match (pick >> 1) % 5 {
        0 => {
            let mut h = Vec::new();
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, b.u8(), 0xff, 0xff, 0, 0, 0, 0]);
            (proto::TCP, h)
        }
        1 => {
            // The length field is filled in once the payload is known.
            let h = [sport.to_be_bytes(), dport.to_be_bytes(), [0, 0], [0, 0]].concat();
            (proto::UDP, h)
        }
        2 => {
            let mut h = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
            h.extend_from_slice(&[0; 8]);
            (proto::SCTP, h)
        }
        3 => {
            // Echo request or reply.
            let t = match (v6, pick & 0x80 != 0) {
                (false, false) => 8,
                (false, true) => 0,
                (true, false) => 128,
                (true, true) => 129,
            };
            let mut h = vec![t, 0, 0, 0];
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&[0, 1]);
            (icmp, h)
        }
        _ => (112, Vec::new()),
    };
    let header = l4.len();
    let payload = usize::from(b.u8()) * 4;
    l4.extend((0..payload).map(|i| i as u8));
    if p == proto::UDP {
        let n = (l4.len() as u16).to_be_bytes();
        l4[4..6].copy_from_slice(&n);
    }
    // Fragment size: a multiple of 8, smaller than the datagram so it is cut.
    let size = 8 * (1 + usize::from(b.u8() % 16));
    if l4.len() <= size {
        return;
    }
    let chunks: Vec<(usize, &[u8])> = l4
        .chunks(size)
        .enumerate()
        .map(|(i, c)| (i * size, c))
        .collect();
    let n = chunks.len();
    let whole = frame(v6, p, src, dst, id, None, &l4);
    let want = parse(&whole, whole.len() as u32, 0);

    // Order: a rotation and, optionally, the first fragment moved to the end, plus
    // time gaps of up to 2^16 ms (the fragment timeout is 30 s).
    let rot = usize::from(b.u8()) % n;
    let mut order: Vec<usize> = (0..n).map(|i| (i + rot) % n).collect();
    if b.u8() & 1 != 0 {
        order.retain(|&i| i != 0);
        order.push(0);
    }
    let mut tracker = FragmentTracker::new(usize::from(b.u8() % 8) + 1, u64::from(b.u8()));
    let mut now = 1_000_000_000u64;
    let mut first_seen: Option<u64> = None;
    for i in order {
        now += u64::from(b.u16()) * 1_000_000;
        let (offset, chunk) = chunks[i];
        let f = frame(v6, p, src, dst, id, Some((offset, i + 1 < n)), chunk);
        let r = parse(&f, f.len() as u32, 0);
        let Ok(mut got) = r else {
            // Only a first fragment too short for its transport header may be refused.
            assert!(i == 0 && chunk.len() < header, "fragment {i} of {n}: {r:?}");
            continue;
        };
        assert_eq!(got.key.proto, p);
        if i == 0 {
            assert_eq!(got.fragment, Fragment::First { id });
            if chunk.len() >= header
                && let Ok(w) = want
            {
                assert_eq!((got.key, got.l4), (w.key, w.l4), "first fragment");
            }
            tracker.resolve(&mut got, now);
            first_seen = Some(now);
        } else {
            assert_eq!(got.fragment, Fragment::Later { id });
            assert_eq!((got.key.sport, got.key.dport, got.l4), (0, 0, L4::NoPorts));
            let before = tracker.resolved;
            tracker.resolve(&mut got, now);
            let resolved = tracker.resolved > before;
            let expect = first_seen.is_some_and(|t| now <= t + FRAGMENT_TIMEOUT_NS);
            assert_eq!(resolved, expect, "later fragment {i} of {n}");
            if resolved
                && chunks[0].1.len() >= header
                && let Ok(w) = want
            {
                assert_eq!((got.key, got.l4), (w.key, w.l4), "resolved fragment {i}");
            }
        }
        assert_eq!(got.key.family, if v6 { Family::V6 } else { Family::V4 });
    }
}
