//! The slow, obviously-correct twin of [`FlowTable`](super::FlowTable)'s
//! placement and eviction: a vector of buckets holding `(key, last_seen,
//! awaiting)` in plain slots, no tags, no packing, no metadata lines.

use super::{ConnKey, KeyHasher, WAYS, placement, stamp};

/// One occupied slot of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSlot {
    /// The key held.
    pub key: ConnKey,
    /// Last time it was used (ns).
    pub last_ns: u64,
    /// Inserted in the current batch, no verdict yet.
    pub awaiting: bool,
}

/// The model table.
#[derive(Clone, Debug)]
pub struct ModelTable {
    /// `buckets[b][w]`.
    pub buckets: Vec<[Option<ModelSlot>; WAYS]>,
    hasher: KeyHasher,
}

impl ModelTable {
    /// A model of a table with `capacity` and `seed` (same rounding as the table).
    pub fn new(capacity: usize, seed: u64) -> Self {
        let n = capacity.max(1).div_ceil(WAYS);
        ModelTable {
            buckets: vec![[None; WAYS]; n],
            hasher: KeyHasher::new(seed),
        }
    }

    fn candidates(&self, k: &ConnKey) -> [usize; 2] {
        let p = placement(self.hasher.hash(k), self.buckets.len());
        [p.b1, p.b2]
    }

    /// The slot (bucket * WAYS + way) holding `k`.
    pub fn lookup(&self, k: &ConnKey) -> Option<usize> {
        for b in self.candidates(k) {
            for w in 0..WAYS {
                if self.buckets[b][w].is_some_and(|s| s.key == *k) {
                    return Some(b * WAYS + w);
                }
            }
        }
        None
    }

    /// Marks `k` used at `now`.
    pub fn touch(&mut self, k: &ConnKey, now: u64) {
        if let Some(s) = self.lookup(k)
            && let Some(slot) = self.buckets[s / WAYS][s % WAYS].as_mut()
        {
            slot.last_ns = now;
        }
    }

    /// Marks `k`'s verdict as known.
    pub fn settle(&mut self, k: &ConnKey) {
        if let Some(s) = self.lookup(k)
            && let Some(slot) = self.buckets[s / WAYS][s % WAYS].as_mut()
        {
            slot.awaiting = false;
        }
    }

    /// Inserts `k` (absent) at `now`: the first free way of the first bucket, else
    /// of the second, else replaces the candidate idle the longest (ages measured in
    /// the table's coarse stamps; the earliest in bucket order wins ties) that is not
    /// awaiting a verdict. Returns (slot, evicted key).
    pub fn insert(&mut self, k: ConnKey, now: u64) -> Option<(usize, Option<ConnKey>)> {
        let new = ModelSlot {
            key: k,
            last_ns: now,
            awaiting: true,
        };
        for b in self.candidates(&k) {
            for w in 0..WAYS {
                if self.buckets[b][w].is_none() {
                    self.buckets[b][w] = Some(new);
                    return Some((b * WAYS + w, None));
                }
            }
        }
        let mut best: Option<(u32, usize)> = None;
        for b in self.candidates(&k) {
            for w in 0..WAYS {
                if let Some(s) = self.buckets[b][w]
                    && !s.awaiting
                {
                    let age = stamp(now).wrapping_sub(stamp(s.last_ns));
                    if best.is_none_or(|(a, _)| age > a) {
                        best = Some((age, b * WAYS + w));
                    }
                }
            }
        }
        let (_, victim) = best?;
        let old = self.buckets[victim / WAYS][victim % WAYS].replace(new);
        Some((victim, old.map(|s| s.key)))
    }

    /// Removes `k`.
    pub fn remove(&mut self, k: &ConnKey) {
        if let Some(s) = self.lookup(k) {
            self.buckets[s / WAYS][s % WAYS] = None;
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.buckets.iter().flatten().flatten().count()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
