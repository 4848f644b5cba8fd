//! `cargo fuzz run pcap_read`: the capture reader (`pcap::capture`, on top of
//! `pcap-file`) on any bytes as a pcap or pcapng file — hostile block and capture
//! lengths, timestamps, link types, truncated tails. It must never panic, never allocate
//! more than a bound proportional to the input (plus `pcap-file`'s fixed 8 MB read
//! buffer), and the frames it returns must be consistent with the input: for classic
//! pcap exactly the records an independent parser finds before the first bad one, with
//! the same timestamps and lengths; for pcapng, each frame's bytes are a piece of the
//! input and all of them together fit in it. The capture is read from memory, as
//! `--pcap -` reads standard input (a file goes through the same reader).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use pcap::capture::{CaptureReader, Frames};

/// Counts live heap bytes and their peak (the peak is reset at the start of every input).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grow(l.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grow(l.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new >= l.size() {
            grow(new - l.size());
        } else {
            LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
        }
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `pcap-file`'s read buffer: allocated once per reader, whatever the input.
const READ_BUFFER: usize = 8_000_000;

/// One frame as the reference parser sees it.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
}

/// Classic pcap, read independently: the 24-byte header (magic in either byte order,
/// micro- or nanosecond timestamps, Ethernet only), then 16-byte record headers and
/// their bytes. Returns the records before the first bad or cut one, and whether the
/// file ended cleanly after them; `None` when the header itself is not accepted.
fn reference_pcap(b: &[u8]) -> Option<(Vec<Frame>, bool)> {
    let magic = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let (le, nano) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        _ => return None,
    };
    let u32_at = |off: usize| -> Option<u32> {
        let w: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    if b.len() < 24 || u32_at(20)? != 1 {
        return None;
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while off < b.len() {
        if b.len() - off < 16 {
            return Some((frames, false)); // a cut record header
        }
        let (ts_sec, ts_frac) = (u32_at(off)?, u32_at(off + 4)?);
        let (incl, orig_len) = (u32_at(off + 8)?, u32_at(off + 12)?);
        let start = off + 16;
        let Some(data) = b.get(start..start.saturating_add(incl as usize)) else {
            return Some((frames, false)); // cut record bytes
        };
        let frac = u64::from(ts_frac) * if nano { 1 } else { 1_000 };
        frames.push(Frame {
            ts_ns: u64::from(ts_sec)
                .saturating_mul(1_000_000_000)
                .saturating_add(frac),
            orig_len,
            data: data.to_vec(),
        });
        off = start + data.len();
    }
    Some((frames, true))
}

fuzz_target!(|data: &[u8]| {
    // What `--pcap -` reads: the capture in memory (a file goes through the same reader).
    let name = "fuzz.pcap";
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut read: Vec<Frame> = Vec::new();
    let mut clean = true;
    let whole;
    match CaptureReader::from_bytes(name, data.to_vec()) {
        Err(_) => {
            clean = false;
            whole = Frames::from_bytes(name, data.to_vec());
            assert!(whole.is_err(), "open failed but read succeeded");
        }
        Ok(mut r) => {
            while let Some(f) = r.next_frame() {
                match f {
                    Ok(f) => read.push(Frame {
                        ts_ns: f.ts_ns,
                        orig_len: f.orig_len,
                        data: f.data.to_vec(),
                    }),
                    Err(e) => {
                        // The error names the file, and asking again does not panic.
                        assert!(e.to_string().starts_with("fuzz.pcap: "), "{e}");
                        clean = false;
                        for _ in 0..3 {
                            if r.next_frame().is_none() {
                                break;
                            }
                        }
                        break;
                    }
                }
                assert!(read.len() <= data.len() / 12, "more frames than blocks fit");
            }
            drop(r);
            whole = Frames::from_bytes(name, data.to_vec());
        }
    }
    let peak = PEAK.load(Ordering::Relaxed).wrapping_sub(base);
    let bound = READ_BUFFER + 64 * data.len() + (1 << 20);
    assert!(
        peak <= bound,
        "peak heap {peak} B for a {} B input",
        data.len()
    );

    // `Frames` is the same walk, kept in one buffer: same frames, or the same error.
    match &whole {
        Ok(w) => {
            assert!(clean, "Frames succeeded where the reader failed");
            assert_eq!(w.len(), read.len());
            for (a, b) in w.iter().zip(&read) {
                assert_eq!(
                    (a.ts_ns, a.orig_len, a.data),
                    (b.ts_ns, b.orig_len, &b.data[..])
                );
            }
        }
        Err(_) => assert!(!clean, "Frames failed where the reader did not"),
    }

    // Every frame's bytes come from the input, and together they fit in it.
    let total: usize = read.iter().map(|f| f.data.len()).sum();
    assert!(total <= data.len());
    for f in &read {
        assert!(
            f.data.is_empty() || data.windows(f.data.len()).any(|w| w == f.data),
            "frame bytes not found in the input"
        );
    }

    // Classic pcap: exactly the records of the independent reading.
    if data.get(..4) != Some(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        match reference_pcap(data) {
            None => assert!(read.is_empty() && !clean, "a header the reference rejects"),
            Some((want, ended)) => {
                assert_eq!(read, want);
                assert_eq!(
                    clean, ended,
                    "the reader and the reference disagree on the end"
                );
            }
        }
    }
});
