//! The set-associative table of [`FlowEntry`]s: placement, lookup, insertion with
//! eviction, expiry sweeps and interval export.

use super::conntrack::{TimeoutTable, Timeouts};
use super::entry::{EndReason, FlowEntry, FlowRecord};
use super::key::{ConnKey, KeyHasher};
use crate::arch::huge::{AllocError, HugeSlice};
use crate::arch::tags::match_tags;

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Metadata of one bucket: one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    /// 0 = empty slot; otherwise the key's tag (never 0).
    tags: [u16; WAYS],
    /// Coarse last-seen stamp per slot ([`stamp`]).
    stamps: [u32; WAYS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

/// The coarse time used for LRU choice: packet time in units of 2^20 ns (≈1 ms).
/// Ages are compared with wrapping arithmetic, so the ~52-day wrap is harmless for
/// anything idle less than half of that.
#[inline]
pub const fn stamp(now: u64) -> u32 {
    (now >> 20) as u32
}

/// Where a key may live and how it is tagged, all from one hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// First-choice bucket.
    pub b1: usize,
    /// Second-choice bucket (may equal `b1`).
    pub b2: usize,
    /// Tag (never 0).
    pub tag: u16,
}

/// Bucket choice from a key hash for a table of `nbuckets` (shared with the model).
#[inline]
pub fn placement(hash: u64, nbuckets: usize) -> Placement {
    let n = nbuckets as u64;
    let b1 = ((hash & 0xffff_ffff) * n) >> 32;
    let b2 = ((hash >> 32) * n) >> 32;
    let tag = ((hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16) | 1;
    Placement {
        b1: b1 as usize,
        b2: b2 as usize,
        tag,
    }
}

/// Configuration of a [`FlowTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// Maximum number of tracked connections (rounded up to a multiple of [`WAYS`]).
    pub capacity: usize,
    /// Hash seed (use a random one in production; fixed in tests).
    pub seed: u64,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            capacity: 1 << 16,
            seed: 0x7469_6572_6761_7465,
            timeouts: Timeouts::default(),
        }
    }
}

/// Counters of a flow table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    /// Lookups that found their connection.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Connections inserted.
    pub inserts: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Inserts refused because every candidate was awaiting its verdict.
    pub insert_failures: u64,
    /// Entries retired by timeout (sweep or reuse).
    pub expired: u64,
}

impl FlowTableStats {
    /// Adds another table's counters.
    pub fn add(&mut self, o: &FlowTableStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.inserts += o.inserts;
        self.evictions += o.evictions;
        self.insert_failures += o.insert_failures;
        self.expired += o.expired;
    }
}

/// A slot index in a [`FlowTable`].
pub type Slot = u32;

/// Connection state kept outside the table (a flow offload counting packets it
/// forwards itself). The table calls it only for entries marked offloaded
/// ([`FlowEntry::is_offloaded`]): `sync` before it judges such an entry's expiry or
/// picks an eviction victim among entries that may have been busy outside, and before
/// an interval record, so the entry holds every packet and the latest time; `end`
/// when it has decided to end the entry, *before* the final record is written: the
/// connection leaves the outside state and what was counted there since the last
/// `sync` (packets forwarded in between) is brought into the entry, so the final
/// record holds every packet counted outside.
pub trait EntryHook {
    /// Brings what was counted outside into `e` (at `now`).
    fn sync(&mut self, slot: Slot, e: &mut FlowEntry, now: u64);
    /// The connection in `slot` ends: removes it from the outside state and brings
    /// its last counters into `e` (its final record is written next).
    fn end(&mut self, slot: Slot, e: &mut FlowEntry);
}

/// No state outside the table.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl EntryHook for NoHook {
    fn sync(&mut self, _: Slot, _: &mut FlowEntry, _: u64) {}
    fn end(&mut self, _: Slot, _: &mut FlowEntry) {}
}

/// A hook that may be absent (a worker with or without an offload).
impl<H: EntryHook> EntryHook for Option<H> {
    fn sync(&mut self, slot: Slot, e: &mut FlowEntry, now: u64) {
        if let Some(h) = self {
            h.sync(slot, e, now);
        }
    }
    fn end(&mut self, slot: Slot, e: &mut FlowEntry) {
        if let Some(h) = self {
            h.end(slot, e);
        }
    }
}

/// The per-worker flow table (see the module documentation).
#[derive(Debug)]
pub struct FlowTable {
    /// Both in transparent huge pages when large (`arch::huge`): lookups land on
    /// random buckets and entries.
    buckets: HugeSlice<Bucket>,
    entries: HugeSlice<FlowEntry>,
    hasher: KeyHasher,
    timeouts: Timeouts,
    timeout_table: TimeoutTable,
    len: usize,
    sweep_cursor: usize,
    stats: FlowTableStats,
}

impl FlowTable {
    /// Allocates a table (all memory is allocated here, never later). Panics if the
    /// memory cannot be allocated; [`FlowTable::try_new`] reports it instead.
    pub fn new(cfg: FlowTableConfig) -> Self {
        Self::try_new(cfg).unwrap_or_else(|e| panic!("flow table: {e}"))
    }

    /// Bytes a table of `capacity` slots holds (entries and bucket metadata), `None`
    /// when that overflows.
    pub fn memory_for(capacity: usize) -> Option<usize> {
        let nbuckets = capacity.max(1).div_ceil(WAYS);
        let entries = nbuckets
            .checked_mul(WAYS)?
            .checked_mul(size_of::<FlowEntry>())?;
        entries.checked_add(nbuckets.checked_mul(size_of::<Bucket>())?)
    }

    /// Allocates a table, or reports that its memory cannot be allocated (the
    /// capacity is often a user's choice).
    pub fn try_new(cfg: FlowTableConfig) -> Result<Self, AllocError> {
        let nbuckets = cfg.capacity.max(1).div_ceil(WAYS);
        let too_big = AllocError {
            items: cfg.capacity,
            item_bytes: size_of::<FlowEntry>(),
        };
        // Slots are addressed by a `Slot` (u32).
        let slots = nbuckets
            .checked_mul(WAYS)
            .filter(|&n| Slot::try_from(n).is_ok())
            .ok_or(too_big)?;
        Ok(FlowTable {
            buckets: HugeSlice::try_from_elem(
                Bucket {
                    tags: [0; WAYS],
                    stamps: [0; WAYS],
                },
                nbuckets,
            )?,
            entries: HugeSlice::try_from_elem(FlowEntry::EMPTY, slots)?,
            hasher: KeyHasher::new(cfg.seed),
            timeouts: cfg.timeouts,
            timeout_table: TimeoutTable::from(&cfg.timeouts),
            len: 0,
            sweep_cursor: 0,
            stats: FlowTableStats::default(),
        })
    }

    /// Number of slots (the hard bound on tracked connections).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Number of tracked connections.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory held by the table (entries + bucket metadata).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries) + std::mem::size_of_val(&*self.buckets)
    }

    /// Counters so far.
    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The timeouts in force, by [`timeout_class`](super::timeout_class).
    pub fn timeout_table(&self) -> &TimeoutTable {
        &self.timeout_table
    }

    /// The table's key hash (seeded).
    #[inline]
    pub fn hash(&self, k: &ConnKey) -> u64 {
        self.hasher.hash(k)
    }

    /// Bucket choice for a hash in this table.
    #[inline]
    pub fn placement(&self, hash: u64) -> Placement {
        placement(hash, self.buckets.len())
    }

    /// Starts loading the metadata line of a key's first bucket (a worker's parse
    /// phase).
    #[inline]
    pub fn prefetch_bucket(&self, p: &Placement) {
        if let Some(b) = self.buckets.get(p.b1) {
            crate::arch::prefetch(b);
        }
    }

    /// Starts loading the entries whose tag matches in the key's first bucket (the start
    /// of a worker's lookup phase, after [`FlowTable::prefetch_bucket`] brought the tags
    /// in).
    #[inline]
    pub fn prefetch_entry(&self, p: &Placement) {
        let Some(b) = self.buckets.get(p.b1) else {
            return;
        };
        let mut m = match_tags(&b.tags, p.tag);
        while m != 0 {
            let way = m.trailing_zeros() as usize;
            if let Some(e) = self.entries.get(p.b1 * WAYS + way) {
                crate::arch::prefetch(e);
                crate::arch::prefetch(&e.bytes);
            }
            m &= m - 1;
        }
    }

    #[inline]
    fn find_in(&self, bucket: usize, tag: u16, k: &ConnKey) -> Option<Slot> {
        let b = self.buckets.get(bucket)?;
        let mut m = match_tags(&b.tags, tag);
        while m != 0 {
            let way = m.trailing_zeros() as usize;
            let slot = bucket * WAYS + way;
            if self.entries.get(slot).is_some_and(|e| e.key_eq(k)) {
                return Some(slot as Slot);
            }
            m &= m - 1;
        }
        None
    }

    /// Finds a connection; counts a hit or a miss. Does not look at expiry (the
    /// caller decides what an expired hit means) and does not touch the LRU stamp.
    #[inline]
    pub fn lookup(&mut self, k: &ConnKey, hash: u64) -> Option<Slot> {
        let p = self.placement(hash);
        self.lookup_placed(k, &p)
    }

    /// [`FlowTable::lookup`] with the placement already computed.
    #[inline]
    pub fn lookup_placed(&mut self, k: &ConnKey, p: &Placement) -> Option<Slot> {
        let r = self
            .find_in(p.b1, p.tag, k)
            .or_else(|| self.find_in(p.b2, p.tag, k));
        if r.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        r
    }

    /// Like [`FlowTable::lookup`] but without counting (for related-packet lookups).
    #[inline]
    pub fn find(&self, k: &ConnKey, hash: u64) -> Option<Slot> {
        let p = self.placement(hash);
        self.find_in(p.b1, p.tag, k)
            .or_else(|| self.find_in(p.b2, p.tag, k))
    }

    /// Marks a slot as used at `now` (the LRU stamp).
    #[inline]
    pub fn touch(&mut self, slot: Slot, now: u64) {
        let s = slot as usize;
        if let Some(b) = self.buckets.get_mut(s / WAYS) {
            b.stamps[s % WAYS] = stamp(now);
        }
    }

    /// The entry in a slot.
    #[inline]
    pub fn entry(&self, slot: Slot) -> Option<&FlowEntry> {
        self.entries.get(slot as usize)
    }

    /// The entry in a slot, mutably.
    #[inline]
    pub fn entry_mut(&mut self, slot: Slot) -> Option<&mut FlowEntry> {
        self.entries.get_mut(slot as usize)
    }

    /// Claims a slot for a key with `hash` (the key must not be present) at `now`. When both buckets
    /// are full, the least recently used candidate not awaiting a verdict is evicted
    /// and its final record passed to `on_end`. Returns `None` only when every
    /// candidate is awaiting its verdict (counted as an insert failure). The caller
    /// then fills the entry with [`FlowEntry::start`].
    pub fn claim(
        &mut self,
        hash: u64,
        now: u64,
        on_end: &mut impl FnMut(FlowRecord),
    ) -> Option<Slot> {
        let p = self.placement(hash);
        self.claim_placed(&p, now, on_end)
    }

    /// [`FlowTable::claim`] with the placement already computed.
    pub fn claim_placed(
        &mut self,
        p: &Placement,
        now: u64,
        on_end: &mut impl FnMut(FlowRecord),
    ) -> Option<Slot> {
        self.claim_hooked(p, now, &mut NoHook, on_end)
    }

    /// [`FlowTable::claim_placed`] with state outside the table: when the victim
    /// the table's own LRU stamps point at is offloaded, it is synced (its stamp
    /// renewed from its last packet) and the choice made again, until the choice is
    /// an entry whose stamp is exact; an offloaded victim is ended through `hook`
    /// before its final record.
    pub fn claim_hooked(
        &mut self,
        p: &Placement,
        now: u64,
        hook: &mut impl EntryHook,
        on_end: &mut impl FnMut(FlowRecord),
    ) -> Option<Slot> {
        let free = |b: &Bucket| {
            let m = match_tags(&b.tags, 0);
            (m != 0).then(|| m.trailing_zeros() as usize)
        };
        let slot = if let Some(w) = self.buckets.get(p.b1).and_then(free) {
            p.b1 * WAYS + w
        } else if let Some(w) = self.buckets.get(p.b2).and_then(free) {
            p.b2 * WAYS + w
        } else {
            let Some(victim) = self.pick_victim(p, now, hook) else {
                self.stats.insert_failures += 1;
                return None;
            };
            if let Some(e) = self.entries.get_mut(victim) {
                if e.is_offloaded() {
                    hook.end(victim as Slot, e);
                }
                let reason = if e.is_expired(now, &self.timeouts) {
                    self.stats.expired += 1;
                    if e.state.is_closed() {
                        EndReason::Closed
                    } else {
                        EndReason::Timeout
                    }
                } else {
                    self.stats.evictions += 1;
                    EndReason::Evicted
                };
                on_end(e.record(Some(reason)));
            }
            self.len -= 1;
            victim
        };
        if let Some(b) = self.buckets.get_mut(slot / WAYS) {
            b.tags[slot % WAYS] = p.tag;
            b.stamps[slot % WAYS] = stamp(now);
        }
        self.len += 1;
        self.stats.inserts += 1;
        Some(slot as Slot)
    }

    /// The least recently used candidate of `p`'s two (full) buckets that is not
    /// awaiting its verdict, by last-seen time.
    ///
    /// The LRU stamps are exact for entries the worker sees every packet of; an
    /// offloaded entry's stamp only lags (its packets since the last sync renew it
    /// only when synced), so its real age is at most its stamp's. Hence when the
    /// oldest candidate by stamp is not offloaded — or is offloaded and was just
    /// synced — no other candidate can be older: it is the victim, and nothing else
    /// needs a sync (each sync is two map lookups, i.e. two syscalls). Otherwise that
    /// one candidate is synced, its stamp renewed, and the choice made again; every
    /// candidate is synced at most once per claim. This picks the same victim as
    /// syncing every offloaded candidate first (up to ties), and in the common cases
    /// — an idle offloaded connection is the oldest, or a connection the worker sees
    /// is — syncs one entry or none. The worst case (every offloaded candidate looks
    /// older than the oldest exact one and turns out busy) syncs each of them, as
    /// syncing everything did; their renewed stamps then keep them from looking
    /// oldest again until they have been idle longer than the others (an idle
    /// worker's round-robin merges renew stamps too).
    fn pick_victim(&mut self, p: &Placement, now: u64, hook: &mut impl EntryHook) -> Option<usize> {
        let now_stamp = stamp(now);
        let buckets = if p.b1 == p.b2 {
            &[p.b1][..]
        } else {
            &[p.b1, p.b2][..]
        };
        // Candidates synced so far (bit `i * WAYS + way` for bucket `buckets[i]`).
        let mut synced = 0u32;
        loop {
            let mut best: Option<(u32, usize, usize)> = None;
            for (i, &b) in buckets.iter().enumerate() {
                let Some(bucket) = self.buckets.get(b) else {
                    continue;
                };
                for w in 0..WAYS {
                    let slot = b * WAYS + w;
                    if self.entries.get(slot).is_none_or(|e| e.awaiting_verdict()) {
                        continue;
                    }
                    let age = now_stamp.wrapping_sub(bucket.stamps[w]);
                    if best.is_none_or(|(a, _, _)| age > a) {
                        best = Some((age, slot, i * WAYS + w));
                    }
                }
            }
            let (_, victim, bit) = best?;
            let Some(e) = self.entries.get_mut(victim) else {
                return Some(victim);
            };
            if !e.is_offloaded() || synced & (1 << bit) != 0 {
                return Some(victim);
            }
            synced |= 1 << bit;
            hook.sync(victim as Slot, e, now);
            let last = e.last_ns;
            if let Some(bucket) = self.buckets.get_mut(victim / WAYS) {
                bucket.stamps[victim % WAYS] = stamp(last);
            }
        }
    }

    /// Removes the entry in `slot`, if any.
    pub fn remove(&mut self, slot: Slot) {
        let s = slot as usize;
        if let Some(b) = self.buckets.get_mut(s / WAYS)
            && b.tags[s % WAYS] != 0
        {
            b.tags[s % WAYS] = 0;
            self.len -= 1;
        }
    }

    fn is_used(&self, slot: usize) -> bool {
        self.buckets
            .get(slot / WAYS)
            .is_some_and(|b| b.tags[slot % WAYS] != 0)
    }

    /// Retires expired entries in the next `buckets` buckets (round robin), passing
    /// their final records to `on_end`. Call once per batch to keep the table clean
    /// at a bounded cost.
    pub fn sweep(&mut self, now: u64, buckets: usize, on_end: &mut impl FnMut(FlowRecord)) {
        self.sweep_hooked(now, buckets, &mut NoHook, on_end);
    }

    /// [`FlowTable::sweep`] with state outside the table: an offloaded entry that
    /// looks expired is synced first (it may have been busy outside).
    pub fn sweep_hooked(
        &mut self,
        now: u64,
        buckets: usize,
        hook: &mut impl EntryHook,
        on_end: &mut impl FnMut(FlowRecord),
    ) {
        let n = self.buckets.len();
        for _ in 0..buckets.min(n) {
            let b = self.sweep_cursor;
            self.sweep_cursor = (b + 1) % n;
            for w in 0..WAYS {
                let slot = b * WAYS + w;
                if !self.is_used(slot) {
                    continue;
                }
                let timeouts = self.timeouts;
                let Some(e) = self.entries.get_mut(slot) else {
                    continue;
                };
                if !e.awaiting_verdict() && e.is_expired(now, &timeouts) {
                    if e.is_offloaded() {
                        hook.sync(slot as Slot, e, now);
                        if !e.is_expired(now, &timeouts) {
                            continue;
                        }
                        // Out of the offload, with what it counted since the sync.
                        hook.end(slot as Slot, e);
                        if !e.is_expired(now, &timeouts) {
                            // A packet came in between: alive after all (its next
                            // packet reaches the worker, which installs it again).
                            continue;
                        }
                    }
                    let reason = if e.state.is_closed() {
                        EndReason::Closed
                    } else {
                        EndReason::Timeout
                    };
                    on_end(e.record(Some(reason)));
                    self.stats.expired += 1;
                    self.remove(slot as Slot);
                }
            }
        }
    }

    /// Ends an interval: every active entry's record goes to `on_record` (expired
    /// entries as final records, which frees them) and interval counters restart.
    pub fn export_interval(&mut self, now: u64, on_record: &mut impl FnMut(FlowRecord)) {
        self.export_hooked(now, &mut NoHook, on_record);
    }

    /// [`FlowTable::export_interval`] with state outside the table: every offloaded
    /// entry is synced before it is judged and recorded.
    pub fn export_hooked(
        &mut self,
        now: u64,
        hook: &mut impl EntryHook,
        on_record: &mut impl FnMut(FlowRecord),
    ) {
        for slot in 0..self.entries.len() {
            if !self.is_used(slot) {
                continue;
            }
            let timeouts = self.timeouts;
            let Some(e) = self.entries.get_mut(slot) else {
                continue;
            };
            if e.awaiting_verdict() {
                continue;
            }
            if e.is_offloaded() {
                hook.sync(slot as Slot, e, now);
                if e.is_expired(now, &timeouts) {
                    // Out of the offload, with what it counted since the sync.
                    hook.end(slot as Slot, e);
                }
            }
            if e.is_expired(now, &timeouts) {
                let reason = if e.state.is_closed() {
                    EndReason::Closed
                } else {
                    EndReason::Timeout
                };
                on_record(e.record(Some(reason)));
                self.stats.expired += 1;
                self.remove(slot as Slot);
            } else if e.is_active() {
                on_record(e.record(None));
                e.reset_interval();
            }
        }
    }

    /// Ends every tracked connection (end of a replay): each gets a final record
    /// with [`EndReason::Drained`] (or `Closed`/`Timeout` if already over) and the
    /// table is emptied.
    pub fn drain(&mut self, now: u64, on_end: &mut impl FnMut(FlowRecord)) {
        self.drain_hooked(now, &mut NoHook, on_end);
    }

    /// [`FlowTable::drain`] with state outside the table: offloaded entries leave
    /// it (their last counters merged) before their final record is written.
    pub fn drain_hooked(
        &mut self,
        now: u64,
        hook: &mut impl EntryHook,
        on_end: &mut impl FnMut(FlowRecord),
    ) {
        for slot in 0..self.entries.len() {
            if !self.is_used(slot) {
                continue;
            }
            let timeouts = self.timeouts;
            if let Some(e) = self.entries.get_mut(slot) {
                if e.is_offloaded() {
                    hook.end(slot as Slot, e);
                }
                if !e.awaiting_verdict() {
                    let reason = if e.is_expired(now, &timeouts) {
                        if e.state.is_closed() {
                            EndReason::Closed
                        } else {
                            EndReason::Timeout
                        }
                    } else {
                        EndReason::Drained
                    };
                    on_end(e.record(Some(reason)));
                }
            }
            self.remove(slot as Slot);
        }
    }

    /// Records of every tracked connection without changing anything (snapshot).
    pub fn snapshot(&self) -> impl Iterator<Item = FlowRecord> + '_ {
        (0..self.entries.len())
            .filter(|&s| self.is_used(s))
            .filter_map(|s| self.entries.get(s))
            .filter(|e| !e.awaiting_verdict())
            .map(|e| e.record(None))
    }

    /// The slots currently in use and their keys, in slot order (for tests).
    pub fn keys(&self) -> impl Iterator<Item = (Slot, ConnKey)> + '_ {
        (0..self.entries.len())
            .filter(|&s| self.is_used(s))
            .filter_map(|s| self.entries.get(s).map(|e| (s as Slot, e.key())))
    }
}
