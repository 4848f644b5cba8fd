//! A worker's counters ([`WorkerStats`], [`Count`]): plain integers written only by
//! their worker and summed on read, and the batch-latency histogram.

use hdrhistogram::Histogram;

use crate::flow::FlowTableStats;
use crate::packet::ParseCounters;
use crate::program::Verdict;

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes (wire length).
    pub bytes: u64,
}

impl Count {
    #[inline]
    pub(super) fn add(&mut self, len: u32) {
        self.packets += 1;
        self.bytes += u64::from(len);
    }

    pub(super) fn merge(&mut self, o: &Count) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// Per-worker counters: plain integers written only by their worker, summed on read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames received (with a flow offload: also those it forwarded, as merged).
    pub rx: Count,
    /// Frames forwarded (tx).
    pub forwarded: Count,
    /// Frames dropped.
    pub dropped: Count,
    /// Parse outcomes (sum = `rx.packets` less `offloaded.packets`).
    pub parse: ParseCounters,
    /// Unparsed frames passed by [`UnparsedPolicy`](crate::packet::UnparsedPolicy).
    pub unparsed_passed: u64,
    /// Parsed packets by (enforced, pending) outcome: `[enforced][pending]`, index 0 =
    /// allow, 1 = deny.
    pub outcome: [[Count; 2]; 2],
    /// Reply packets passed by an allowed connection (subset of `outcome`).
    pub replies: Count,
    /// ICMP errors passed as related to an allowed connection (subset of `outcome`).
    pub related: Count,
    /// Keys handed to the classifier.
    pub classified: u64,
    /// Classifier calls (one per batch with misses).
    pub classify_calls: u64,
    /// Entries re-classified after a policy change.
    pub reevaluated: u64,
    /// Responder packets of a denied flow classified as new connections.
    pub reverse_attempts: u64,
    /// Packets classified without a flow entry (table could not take them).
    pub uncached: u64,
    /// Batches processed.
    pub batches: u64,
    /// Policy generations picked up.
    pub generation_swaps: u64,
    /// Flow records handed to the record channel.
    pub records_sent: u64,
    /// Flow records lost because the channel was full or gone.
    pub records_dropped: u64,
    /// Later fragments that found their first fragment.
    pub fragments_resolved: u64,
    /// Later fragments that did not.
    pub fragments_unresolved: u64,
    /// Flow table counters.
    pub flows: FlowTableStats,
    /// Packets a flow offload forwarded without the worker, as merged into their
    /// flow entries so far (also counted in `rx`, `forwarded`, `outcome` and, for
    /// responders, `replies`).
    pub offloaded: Count,
}

pub(super) const fn vidx(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
    }
}

impl WorkerStats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &WorkerStats) {
        self.rx.merge(&o.rx);
        self.forwarded.merge(&o.forwarded);
        self.dropped.merge(&o.dropped);
        self.parse.add(&o.parse);
        self.unparsed_passed += o.unparsed_passed;
        for e in 0..2 {
            for p in 0..2 {
                self.outcome[e][p].merge(&o.outcome[e][p]);
            }
        }
        self.replies.merge(&o.replies);
        self.related.merge(&o.related);
        self.classified += o.classified;
        self.classify_calls += o.classify_calls;
        self.reevaluated += o.reevaluated;
        self.reverse_attempts += o.reverse_attempts;
        self.uncached += o.uncached;
        self.batches += o.batches;
        self.generation_swaps += o.generation_swaps;
        self.records_sent += o.records_sent;
        self.records_dropped += o.records_dropped;
        self.fragments_resolved += o.fragments_resolved;
        self.fragments_unresolved += o.fragments_unresolved;
        self.flows.add(&o.flows);
        self.offloaded.merge(&o.offloaded);
    }

    /// Packets by outcome.
    pub fn outcome(&self, enforced: Verdict, pending: Verdict) -> Count {
        self.outcome[vidx(enforced)][vidx(pending)]
    }
}
/// A batch-latency histogram (ns), 1 ns .. 10 s at 2 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, 10_000_000_000, 2).expect("valid histogram bounds")
}
