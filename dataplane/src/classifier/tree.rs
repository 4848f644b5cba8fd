//! The cut tree: a HiCuts-style multi-way decision tree over the flattened enforced
//! and pending lists of one program in one family.
//!
//! A node cuts one field into 2^b equal parts by taking the next b bits of it below
//! the bits already fixed by its ancestors (so every region is a product of prefixes,
//! and a child index is `(lane >> shift) & mask` of the key). The field and b are
//! chosen per node: among fields where some candidate has a boundary inside the
//! region, the most bits (down to the boundaries' alignment, at most
//! `CutParams::max_bits`) whose node stays cheap, then the field whose largest child
//! is smallest. Each child keeps, per view, the candidates that intersect it, in
//! order, up to the first that covers it. A region becomes a leaf when
//! - in both views its first candidate covers it: a *precomputed* leaf holding the
//!   pair of decisions (like an rte_acl result with two categories), or
//! - its candidates are at most `CutParams::binth` distinct boxes: a *leaf list* of
//!   [`Item`]s checked in order at lookup (HiCuts' binth).
//!
//! Every region can be cut down to a single point, so the build terminates; the slot
//! limit (from the memory budget) bounds how far it may go.
//!
//! Storage is one arena of `u64` slots (plus one of items), in the format of `slot`:
//! a pointer to a node carries the node's cut in its spare bits, so a lookup step
//! needs no node header. A node is stored either as its full child array, or — when
//! its children form at most [`MAX_RUNS`] runs of equal slots — as one child per run,
//! the run starts in the pointer (up to 4 runs) or in the arena's starts table (found
//! by a count of the starts `<=` the key bits). A *dense* node (more than
//! [`MAX_RUNS`], at most [`SPLIT_MAX_RUNS`] runs: on the ClassBench sets most
//! plain nodes have 10-16 runs of at most 8 distinct children) may instead be split
//! into two levels of ranged nodes on the same cut value (a few dozen slots instead
//! of 256, one more walk step): it is once the tree's output has reached
//! `CutParams::split_from` bytes, when the deepest path through it stays within
//! `CutParams::split_slack` levels of the deepest path built so far (subtree heights
//! are kept with the memo for this). Identical
//! nodes and lists are stored once (hash-consing), a node whose children are all the
//! same slot is replaced by that slot, and subproblems already built (same candidate
//! lists, same region in the fields that still matter) are reused (memo).
//!
//! The builder reads the boxes from one flat table ([`Boxes`]) and reuses its scratch
//! vectors (distinct boxes, cut boundaries, cells and runs) from node to node; the
//! largest child count of a cut it weighs comes from the sorted count changes when
//! they are few (`child_counts`), else from a pass over the children
//! (`max_child_count`, its twin in the property test).

use foldhash::HashMap;

use super::flatten::{DIMS, Iv, MBox, max_of};
use super::slices::SliceMap;
use super::slot::{self, INLINE_STARTS, LEAF, LIST, MAX_RUNS, MAX_TABLE, Slot};
use crate::program::Family;

/// "No decision" in an [`Item`].
pub(crate) const NONE: u32 = u32::MAX;

/// The lanes of a key for leaf-list items: 32-bit words. IPv4: src, dst, sport,
/// dport, proto. IPv6: src (4 words, most significant first), dst (4), sport, dport,
/// proto.
pub(crate) type Lanes = [u32; 16];

/// First lane of each field.
const fn lane_base(f: Family) -> [u32; DIMS] {
    match f {
        Family::V4 => [0, 1, 2, 3, 4],
        Family::V6 => [0, 4, 8, 9, 10],
    }
}

/// Lanes an [`Item`] checks (IPv6 uses 11, IPv4 5; the rest are padding).
pub(crate) const ITEM_LANES: usize = 12;

/// One entry of a leaf list: a box that is a product of one interval per key lane
/// (`lo[i] <= lanes[i] <= lo[i] + span[i]`), and the decision it gives in each view
/// (`NONE` if the entry is not in that view's list). Within a list, each view's
/// entries keep their first-match order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Item {
    pub(crate) lo: [u32; ITEM_LANES],
    pub(crate) span: [u32; ITEM_LANES],
    pub(crate) enforced: u32,
    pub(crate) pending: u32,
}

impl Item {
    #[inline(always)]
    pub(crate) fn contains(&self, l: &Lanes) -> bool {
        // Unsigned range check without branches: x in [lo, lo + span] <=> x - lo <= span.
        let mut ok = true;
        for ((x, lo), span) in l.iter().zip(&self.lo).zip(&self.span) {
            ok &= x.wrapping_sub(*lo) <= *span;
        }
        ok
    }
}

/// The first decision of each view among `items` for the key with lanes `l` (`NONE`
/// where no item of that view contains it).
#[inline]
pub(crate) fn scan(items: &[Item], l: &Lanes) -> (u32, u32) {
    let (mut e, mut p) = (NONE, NONE);
    for it in items {
        let wanted = (e == NONE && it.enforced != NONE) | (p == NONE && it.pending != NONE);
        if wanted && it.contains(l) {
            if e == NONE {
                e = it.enforced;
            }
            if p == NONE {
                p = it.pending;
            }
            if (e != NONE) & (p != NONE) {
                break;
            }
        }
    }
    (e, p)
}

/// Writes the interval `[a, z]` of a field of `width` bits, starting at lane `base`,
/// as one interval per lane; `false` if it is not such a product (an IPv6 interval
/// that is not prefix-shaped at 32-bit granularity).
fn lane_intervals(
    a: u128,
    z: u128,
    width: u32,
    base: usize,
    lo: &mut [u32; ITEM_LANES],
    span: &mut [u32; ITEM_LANES],
) -> bool {
    if width <= 32 {
        lo[base] = a as u32;
        span[base] = (z - a) as u32;
        return true;
    }
    let lane = |x: u128, k: usize| (x >> (96 - 32 * k)) as u32;
    let mut differ = false;
    for k in 0..4 {
        let (x, y) = (lane(a, k), lane(z, k));
        if differ {
            if x != 0 || y != u32::MAX {
                return false;
            }
            lo[base + k] = 0;
            span[base + k] = u32::MAX;
        } else {
            lo[base + k] = x;
            span[base + k] = y.wrapping_sub(x);
            differ = x != y;
        }
    }
    true
}

/// The interned boxes of one family in one flat table: box `b`'s intervals in field
/// `d` are `ivs[at[b][d]..at[b][d + 1]]`. The build's hot loops (boundaries, cut
/// counts, cells, covers) read a box's fields side by side instead of through one
/// heap pointer per field.
#[derive(Debug, Default)]
pub(crate) struct Boxes {
    at: Vec<[u32; DIMS + 1]>,
    ivs: Vec<Iv>,
}

impl Boxes {
    /// Appends `b` as the next box (its id is the count of boxes before it).
    pub(crate) fn push(&mut self, b: &MBox) {
        // Offsets fit in 32 bits: 2^32 intervals would take 128 GiB.
        let mut at = [self.ivs.len() as u32; DIMS + 1];
        for d in 0..DIMS {
            self.ivs.extend_from_slice(&b.0[d].0);
            at[d + 1] = self.ivs.len() as u32;
        }
        self.at.push(at);
    }

    /// The intervals of box `b` in field `d`.
    #[inline]
    pub(crate) fn ivs(&self, b: u32, d: usize) -> &[Iv] {
        let at = &self.at[b as usize];
        &self.ivs[at[d] as usize..at[d + 1] as usize]
    }

    /// Bytes of the table.
    pub(crate) fn bytes(&self) -> usize {
        self.at.len() * size_of::<[u32; DIMS + 1]>() + self.ivs.len() * size_of::<Iv>()
    }

    /// Whether box `b` is empty (some field has no interval).
    fn is_empty(&self, b: u32) -> bool {
        let at = &self.at[b as usize];
        (0..DIMS).any(|d| at[d] == at[d + 1])
    }
}

/// Bytes of one slot.
pub(crate) const SLOT_BYTES: usize = size_of::<Slot>();

/// Children of a plain node: one per value of its 8-bit window.
const PLAIN_MAX_CHILDREN: usize = 256;

/// Count changes [`TreeBuilder::child_counts`] sorts on the stack (two per box
/// interval in the region); with more it takes a pass over the children.
const COUNT_EVENTS: usize = 64;
const _: () = assert!(1 << slot::MAX_CUT_BITS == PLAIN_MAX_CHILDREN);

/// Tuning of the cut heuristic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CutParams {
    /// Space factor: a cut may multiply the number of (child, entry) pairs by at
    /// most this much (HiCuts' `spfac`).
    pub(crate) spfac: f64,
    /// A region with at most this many distinct candidate boxes becomes a leaf list.
    pub(crate) binth: usize,
    /// Most bits one node cuts.
    pub(crate) max_bits: u32,
    /// Dense nodes (more than [`MAX_RUNS`], at most [`SPLIT_MAX_RUNS`] runs of
    /// children) are stored as two levels of ranged nodes instead of a 256-slot
    /// plain node when the deepest path through them stays within this many levels
    /// of the deepest path built so far; `None`: never.
    pub(crate) split_slack: Option<i32>,
    /// ... once the tree's own output has reached this many bytes.
    pub(crate) split_from: usize,
}

/// Most runs of children a dense node split into two levels of ranged nodes may
/// have: [`INLINE_STARTS`]` + 1` groups of at most [`MAX_RUNS`] runs.
pub(crate) const SPLIT_MAX_RUNS: usize = (INLINE_STARTS + 1) * MAX_RUNS;

/// The shared output of all tree builds of one classifier.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    pub(crate) slots: Vec<Slot>,
    /// Stored nodes by (children, cut): their slot and offset.
    nodes: SliceMap<Slot, (Slot, usize)>,
    pub(crate) items: Vec<Item>,
    lists: SliceMap<Item, u32>,
    /// Most slots the arena may hold.
    pub(crate) slot_limit: usize,
    pub(crate) inner_nodes: usize,
    /// The starts words of tabled nodes, each stored once.
    pub(crate) table: Vec<u64>,
    table_index: HashMap<u64, u32>,
    /// The buffer node keys are built in for lookups.
    key_buf: Vec<Slot>,
    /// Bytes the current tree attempt holds in build indexes (memo entries, node and
    /// list keys) besides the arena: counted against the slot limit with the arena, so
    /// that the limit bounds the build's memory, not only its output.
    pub(crate) scratch: usize,
    /// Most slots the arena's output (slots, items, starts table; not the build
    /// indexes) may take, when the current attempt bounds its output apart from
    /// what it holds in all ([`Arena::slot_limit`]).
    pub(crate) out_limit: Option<usize>,
    /// Where this arena's own slots, items and starts begin: zero for a classifier's
    /// arena, its length for a workspace built over it ([`Arena::over`]), whose
    /// offsets continue it so that it can be appended as it is ([`Arena::absorb`]).
    base: Base,
}

/// See [`Arena::base`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Base {
    slots: usize,
    items: usize,
    table: usize,
}

/// The committed state a workspace builds over, read only: its arena (nodes, lists
/// and starts are looked up there before being made anew), memo and candidates.
/// Several workspaces may build over the same state at once, each on its own thread;
/// what one builds depends only on that state and its own inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Below<'a> {
    pub(crate) arena: &'a Arena,
    pub(crate) memo: &'a Memo,
    pub(crate) cands: &'a Cands,
}

impl Arena {
    /// Lets the arena hold at most `slot_limit` slots (counting what it holds).
    pub(crate) fn set_limit(&mut self, slot_limit: usize) {
        // Node offsets have `slot::OFFSET_BITS` bits: past that many slots (128 MiB)
        // a build fails over budget whatever the budget.
        self.slot_limit = slot_limit.min(slot::MAX_SLOTS);
    }

    /// An empty workspace over `below`: its offsets continue `below`'s, it finds
    /// `below`'s nodes, lists and starts (passed to each call), and its limits count
    /// only what it holds itself.
    pub(crate) fn over(below: &Arena) -> Arena {
        Arena {
            base: below.end(),
            ..Arena::default()
        }
    }

    /// Where the next own slot, item and starts word go.
    fn end(&self) -> Base {
        Base {
            slots: self.base.slots + self.slots.len(),
            items: self.base.items + self.items.len(),
            table: self.base.table + self.table.len(),
        }
    }

    /// Whether `top` is a workspace built over this arena as it is now.
    pub(crate) fn extends_to(&self, top: &Arena) -> bool {
        top.base == self.end()
    }

    /// Appends `top`, a workspace built over this arena as it is now, with its
    /// indexes; `false` (nothing appended) if this arena changed since.
    pub(crate) fn absorb(&mut self, top: Arena) -> bool {
        if !self.extends_to(&top) {
            return false;
        }
        append(&mut self.slots, top.slots);
        append(&mut self.items, top.items);
        append(&mut self.table, top.table);
        self.inner_nodes += top.inner_nodes;
        self.nodes.extend(top.nodes);
        self.lists.extend(top.lists);
        extend(&mut self.table_index, top.table_index);
        true
    }

    /// The slot of a node cutting `bits` bits at `shift` of key word `word`, whose
    /// children form `runs` (first child index, slot; the first at 0, neighbours
    /// differ), stored once (in `below` or here).
    fn node(
        &mut self,
        below: Option<&Arena>,
        word: u32,
        shift: u32,
        bits: u32,
        runs: &[(usize, Slot)],
        split: bool,
    ) -> Result<Slot, OverBudget> {
        if runs.len() == 1 {
            return Ok(runs[0].1);
        }
        let split = split && runs.len() > MAX_RUNS && runs.len() <= SPLIT_MAX_RUNS;
        let hdr = slot::plain(word, shift, bits, 0).ok_or(OverBudget)?;
        let mut key = std::mem::take(&mut self.key_buf);
        key.clear();
        // A split node and the plain node of the same children are different
        // nodes (the split one is a level deeper): `RANGED` marks the split one's
        // key (a plain header never has it).
        key.push(if split { hdr | slot::RANGED } else { hdr });
        for &(at, child) in runs {
            key.extend([at as u64, child]);
        }
        let n = 1usize << bits;
        if let Some(&(slot, _)) = below
            .and_then(|b| b.nodes.get(&key[..]))
            .or_else(|| self.nodes.get(&key[..]))
        {
            self.key_buf = key;
            return Ok(slot);
        }
        // Stored as one child per run when there are few runs, else as the full array
        // of the window's 256 values: each of the `n` children `2^(8 - bits)` times.
        let mark = self.end().slots;
        let slot = if runs.len() <= MAX_RUNS || split {
            let mut short = [(0u8, 0 as Slot); SPLIT_MAX_RUNS];
            for (s, &(at, c)) in short.iter_mut().zip(runs) {
                *s = (at as u8, c);
            }
            self.runs_node(below, word, shift, bits, &short[..runs.len()])?
        } else {
            let repeat = PLAIN_MAX_CHILDREN / n;
            let mut children = Vec::with_capacity(PLAIN_MAX_CHILDREN);
            for (k, &(at, child)) in runs.iter().enumerate() {
                let end = runs.get(k + 1).map_or(n, |r| r.0);
                children.extend(std::iter::repeat_n(child, (end - at) * repeat));
            }
            self.store(&children, |off| slot::plain(word, shift, bits, off))?
        };
        self.scratch += key.len() * SLOT_BYTES + NODE_KEY_OVERHEAD;
        self.nodes.insert(&key, (slot, mark));
        self.key_buf = key;
        Ok(slot)
    }

    /// A ranged node (or a tree of them) over `runs` (start, child), the first start 0.
    fn runs_node(
        &mut self,
        below: Option<&Arena>,
        word: u32,
        shift: u32,
        bits: u32,
        runs: &[(u8, Slot)],
    ) -> Result<Slot, OverBudget> {
        if runs.len() == 1 {
            return Ok(runs[0].1);
        }
        // At most `MAX_RUNS` runs here; more are split into groups below.
        let (mut starts_buf, mut children_buf) = ([0u8; MAX_RUNS], [0 as Slot; MAX_RUNS]);
        let (starts, children) = if runs.len() <= MAX_RUNS {
            for (k, &(at, child)) in runs.iter().enumerate() {
                children_buf[k] = child;
                if k > 0 {
                    starts_buf[k - 1] = at;
                }
            }
            (&starts_buf[..runs.len() - 1], &children_buf[..runs.len()])
        } else {
            (&starts_buf[..0], &children_buf[..0])
        };
        if runs.len() <= MAX_RUNS && starts.len() <= INLINE_STARTS {
            return self.store(children, |off| slot::ranged(word, shift, bits, off, starts));
        }
        if runs.len() <= MAX_RUNS
            && let Some(entry) =
                slot::starts_word(starts, bits).and_then(|w| self.table_entry(below, w))
        {
            return self.store(children, |off| slot::tabled(word, shift, bits, off, entry));
        }
        // The starts table is full: a tree of ranged nodes on the same cut value, at
        // most `INLINE_STARTS + 1` groups under an inline node.
        let per = runs.len().div_ceil(INLINE_STARTS + 1);
        let mut top = Vec::with_capacity(INLINE_STARTS + 1);
        for g in runs.chunks(per) {
            top.push((g[0].0, self.runs_node(below, word, shift, bits, g)?));
        }
        self.runs_node(below, word, shift, bits, &top)
    }

    /// The starts-table entry holding starts word `w`, added if there is room.
    fn table_entry(&mut self, below: Option<&Arena>, w: u64) -> Option<usize> {
        if let Some(&i) = below
            .and_then(|b| b.table_index.get(&w))
            .or_else(|| self.table_index.get(&w))
        {
            return Some(i as usize);
        }
        let at = self.end().table;
        if at >= MAX_TABLE {
            return None;
        }
        self.table.push(w);
        self.table_index.insert(w, at as u32);
        Some(at)
    }

    /// Appends a node body; `slot_of(offset)` makes its slot.
    fn store(
        &mut self,
        body: &[Slot],
        slot_of: impl FnOnce(usize) -> Option<Slot>,
    ) -> Result<Slot, OverBudget> {
        if !self.fits(body.len(), body.len()) {
            return Err(OverBudget);
        }
        let slot = slot_of(self.end().slots).ok_or(OverBudget)?;
        self.slots.extend_from_slice(body);
        self.inner_nodes += 1;
        Ok(slot)
    }

    /// The slot of a leaf list, stored once.
    fn list(&mut self, below: Option<&Arena>, items: Vec<Item>) -> Result<Slot, OverBudget> {
        // The count has 30 bits in the slot (`LIST` and `LEAF` above it).
        if items.len() >= 1 << 30 {
            return Err(OverBudget);
        }
        let count = items.len() as u64;
        if let Some(&off) = below
            .and_then(|b| b.lists.get(&items))
            .or_else(|| self.lists.get(&items))
        {
            return Ok(LEAF | LIST | (count << 32) | u64::from(off));
        }
        // Items are counted against the slot limit at their size in slots.
        // (once in the arena, once as the key of `lists`).
        let cost = 2 * items.len() * size_of::<Item>() / SLOT_BYTES;
        let at = self.end().items;
        if !self.fits(cost, cost / 2) || at + items.len() > u32::MAX as usize {
            return Err(OverBudget);
        }
        let off = at as u32;
        self.items.extend_from_slice(&items);
        self.scratch += items.len() * size_of::<Item>() + NODE_KEY_OVERHEAD;
        self.lists.insert(&items, off);
        Ok(LEAF | LIST | (count << 32) | u64::from(off))
    }

    /// Whether `held` more slots in all, `out` of them output, stay within the limits.
    fn fits(&self, held: usize, out: usize) -> bool {
        self.held() / SLOT_BYTES + held <= self.slot_limit
            && self
                .out_limit
                .is_none_or(|l| self.bytes() / SLOT_BYTES + out <= l)
    }

    /// Bytes held: the arena and the current attempt's build indexes.
    pub(crate) fn held(&self) -> usize {
        self.bytes() + self.scratch
    }

    /// Bytes of slots and items.
    pub(crate) fn bytes(&self) -> usize {
        (self.slots.len() + self.table.len()) * SLOT_BYTES + self.items.len() * size_of::<Item>()
    }
}

/// Bytes a hash-map entry costs beyond its key (bucket, hash, allocation header).
const NODE_KEY_OVERHEAD: usize = 48;

/// The arena would exceed its slot limit.
#[derive(Debug)]
pub(crate) struct OverBudget;

/// A node's region: per field, the value of its fixed leading bits and their count.
#[derive(Clone, Copy)]
struct Region {
    lo: [u128; DIMS],
    len: [u32; DIMS],
}

/// A candidate of a region: a box and what it decides in each view — an index into
/// the verdict side (a decision, or in a partitioned program a list position), `NONE`
/// if the candidate does not stand for that view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cand {
    pub(crate) bx: u32,
    pub(crate) e: u32,
    pub(crate) p: u32,
}

/// Interned candidates: equal candidates share an id, so equal candidate lists are
/// equal id lists (the memo's key).
#[derive(Debug, Default)]
pub(crate) struct Cands {
    all: Vec<Cand>,
    ids: HashMap<Cand, u32>,
    /// The id of `all[0]`: zero, or for a workspace's candidates the count of the
    /// candidates it builds over ([`Cands::over`]).
    base: usize,
}

impl Cands {
    /// Candidates interned over `below` (ids continue `below`'s).
    pub(crate) fn over(below: &Cands) -> Cands {
        Cands {
            base: below.base + below.all.len(),
            ..Cands::default()
        }
    }

    /// The id of `c`, found in `below` or here, else added here.
    fn id(&mut self, below: Option<&Cands>, c: Cand) -> u32 {
        if let Some(&id) = below.and_then(|b| b.ids.get(&c)) {
            return id;
        }
        let next = (self.base + self.all.len()) as u32;
        *self.ids.entry(c).or_insert_with(|| {
            self.all.push(c);
            next
        })
    }

    /// Candidate `id`, held here or in `below`.
    fn get(&self, below: Option<&Cands>, id: u32) -> Cand {
        match (id as usize).checked_sub(self.base) {
            Some(i) => self.all[i],
            // Not reached: a candidate id below `base` was found in `below`.
            None => below.map_or(
                Cand {
                    bx: 0,
                    e: NONE,
                    p: NONE,
                },
                |b| b.get(None, id),
            ),
        }
    }

    /// Whether `top` holds candidates interned over these as they are now.
    pub(crate) fn extends_to(&self, top: &Cands) -> bool {
        top.base == self.base + self.all.len()
    }

    /// Appends `top`, candidates interned over these as they are now; `false`
    /// (nothing appended) if these changed since.
    pub(crate) fn absorb(&mut self, top: Cands) -> bool {
        if !self.extends_to(&top) {
            return false;
        }
        append(&mut self.all, top.all);
        extend(&mut self.ids, top.ids);
        true
    }
}

/// Subtrees already built, by what determines them: the candidate list and the region
/// in the fields where some candidate still has a boundary (in the other fields every
/// candidate covers the region, so no descendant cuts them), packed into one key of
/// words ([`TreeBuilder::memo_key`]; one memo serves one family), with the subtree's
/// height (walk steps from its slot to its deepest leaf).
pub(crate) type Memo = SliceMap<u32, (Slot, u32)>;

/// Bytes a memo entry holds besides its key's words: the key's start and length,
/// the slot and height, and the hash table's overhead (an estimate, as before the
/// keys were packed: the compiler's reported bytes stay comparable).
pub(crate) const MEMO_ENTRY_BYTES: usize =
    size_of::<Box<[u32]>>() + size_of::<(Slot, u32)>() + NODE_KEY_OVERHEAD;

/// Bytes a memo entry counts against an attempt's room besides its candidate list:
/// what an entry took before the keys were packed (list, region of five 128-bit
/// starts and lengths, slot, two marks: 200 bytes, plus [`NODE_KEY_OVERHEAD`]),
/// with which the rooms of the arrangement choice were measured. A packed entry
/// takes about half, so a room now bounds about half the memory it did, and the
/// same attempts fit or fail as before.
const MEMO_ENTRY_COUNTED: usize = 200 + NODE_KEY_OVERHEAD;

/// Adds the entries of `top`, a workspace's memo, to `memo`.
pub(crate) fn absorb_memo(memo: &mut Memo, top: Memo) {
    memo.extend(top);
}

/// `v` followed by `top` (taken as it is when `v` is empty).
fn append<T: Copy>(v: &mut Vec<T>, top: Vec<T>) {
    if v.is_empty() {
        *v = top;
    } else {
        v.extend_from_slice(&top);
    }
}

/// `m` with the entries of `top`, whose keys it does not hold (taken as it is when
/// `m` is empty).
fn extend<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>, top: HashMap<K, V>) {
    if m.is_empty() {
        *m = top;
    } else {
        m.extend(top);
    }
}

/// Builds the tree of one candidate list in one family.
///
/// A candidate list is canonical: it holds, in first-match order, the candidates that
/// intersect the region up to each view's first covering candidate, and a candidate
/// after its view's cover stands only for the other view. So the list determines the
/// subtree, and the memo can reuse subtrees across regions, programs and builds.
pub(crate) struct TreeBuilder<'a> {
    pub(crate) family: Family,
    pub(crate) boxes: &'a Boxes,
    pub(crate) cands: &'a mut Cands,
    pub(crate) params: CutParams,
    /// Interns a (enforced, pending) pair of verdict-side indices into a leaf index.
    pub(crate) leaf: &'a mut dyn FnMut(u32, u32) -> u32,
    pub(crate) arena: &'a mut Arena,
    pub(crate) memo: &'a mut Memo,
    /// The committed state `arena`, `memo` and `cands` build over, if they are a
    /// workspace's.
    pub(crate) below: Option<Below<'a>>,
    /// The buffer memo keys are packed into for lookups.
    key_buf: Vec<u32>,
    /// A node's distinct boxes (scratch).
    box_buf: Vec<u32>,
    /// A cut's cell boundaries (scratch).
    bp_buf: Vec<usize>,
    /// Cells and runs of the nodes above that finished, for the next nodes to reuse
    /// (with their lists' room).
    cell_pool: Vec<Vec<Cell>>,
    run_pool: Vec<Vec<(usize, Slot)>>,
    /// Walk steps from the root to the deepest leaf (split dense nodes count two;
    /// a memoised subtree counts with its height where it is reused).
    pub(crate) max_depth: u32,
    /// The deepest level at which a region was cut or became a leaf (a memoised
    /// subtree counts at its own level only): the depth the arrangement choice
    /// compares, which splitting dense nodes does not change.
    pub(crate) cut_depth: u32,
    /// Progress of the build: the share of the root's work (a node's share split
    /// among its children by candidate-list length) in finished subtrees of the top
    /// levels, and the arena size at the start. When the arena's growth projected to
    /// the whole tree exceeds the slot limit, the build gives up early instead of
    /// when it hits the limit.
    pub(crate) progress: Progress,
}

/// See [`TreeBuilder::progress`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    /// Finished shares summed over the counted levels: a finished subtree counts
    /// once per counted level it and its counted ancestors are on, so this runs up
    /// to `PROGRESS_DEPTH + 1` (an overcount). Its projection is low, so it can only
    /// abort attempts that grow far too fast (`EARLY_CHECKS`).
    done: f64,
    /// Finished shares, each finished subtree counted once (a parent's share
    /// replaces its children's): the true share of the work done, within 0..=1.
    exact: f64,
    start: usize,
    /// The arena's output bytes at the start.
    out_start: usize,
}

/// Levels whose finished subtrees count as progress.
const PROGRESS_DEPTH: u32 = 8;
/// (progress, factor) on the overcounted [`Progress::done`]: from that progress on,
/// a projection above `factor` times the room aborts (early projections are rough,
/// so they must overshoot more). The first catches a hopeless tree at once (a
/// 100K-rule single tree projecting 10^4 times its room spent 0.4-0.7 s filling
/// it): on the fifth ClassBench suite (29 sets, 1K-100K) the attempts that fitted
/// projected at most 19.5x their room from 10^-6 of the work on (fw4_10k's small
/// partitions), on the held-out sixth at most 9.2x (BENCHMARKS.md).
const EARLY_CHECKS: [(f64, f64); 4] = [(1e-6, 100.0), (0.001, 8.0), (0.01, 3.0), (0.05, 1.5)];
/// The same on [`Progress::exact`]. Candidate-list length is a rough measure of a
/// subtree's work, so even the true share projects successful attempts above their
/// room: on the ClassBench 1K and 10K sets (all twelve families, 26 sets) by at most
/// 2.9x from 1 % of the work on, 1.9x from 10 %, 1.1x from 30 % (fw1_1k's single
/// tree, fw4_10k's small partition); these factors leave a margin of 1.3-1.5x over
/// that. Attempts failing at their room project 1.9-5.4x there (fw1/fw3_10k's
/// plans and merges, which ran to the room before).
const EXACT_CHECKS: [(f64, f64); 3] = [(0.01, 4.5), (0.1, 2.5), (0.3, 1.6)];

/// Whether `set` contains all of `[lo, hi]`.
fn covers(set: &[Iv], lo: u128, hi: u128) -> bool {
    set.iter().any(|&(a, b)| a <= lo && hi <= b)
}

/// One cell of a cut: the children from `first` up to the next cell's with the same
/// candidates and no candidate boundary inside any of them, or a single child with a
/// boundary inside.
struct Cell {
    first: usize,
    list: Vec<u32>,
    enforced_covered: bool,
    pending_covered: bool,
}

impl<'a> TreeBuilder<'a> {
    /// A builder for one tree over `boxes`, memoising subtrees in `memo` (whose
    /// candidate ids are `cands`'), writing to `arena`, leaves made by `leaf`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        family: Family,
        boxes: &'a Boxes,
        cands: &'a mut Cands,
        memo: &'a mut Memo,
        params: CutParams,
        leaf: &'a mut dyn FnMut(u32, u32) -> u32,
        arena: &'a mut Arena,
        below: Option<Below<'a>>,
    ) -> Self {
        TreeBuilder {
            family,
            boxes,
            cands,
            params,
            leaf,
            arena,
            memo,
            below,
            key_buf: Vec::new(),
            box_buf: Vec::new(),
            bp_buf: Vec::new(),
            cell_pool: Vec::new(),
            run_pool: Vec::new(),
            max_depth: 0,
            cut_depth: 0,
            progress: Progress::default(),
        }
    }

    /// What the whole tree would hold, projected from what this build holds now
    /// over the true share of its work done ([`Progress::exact`]): infinite before
    /// any share is done. Rough (a list's length is a rough measure of its work),
    /// but far above the room on attempts that fail early in it.
    pub(crate) fn projected_bytes(&self) -> f64 {
        if self.progress.exact > 0.0 {
            self.grown() / self.progress.exact
        } else {
            f64::INFINITY
        }
    }

    /// Bytes this build holds beyond what the arena held at its start.
    fn grown(&self) -> f64 {
        self.arena.held().saturating_sub(self.progress.start) as f64
    }

    /// Candidate `id`.
    fn cand(&self, id: u32) -> Cand {
        self.cands.get(self.below.map(|b| b.cands), id)
    }

    /// The id of candidate `c`.
    fn cand_id(&mut self, c: Cand) -> u32 {
        self.cands.id(self.below.map(|b| b.cands), c)
    }

    fn width(&self, d: usize) -> u32 {
        super::flatten::widths(self.family)[d]
    }

    fn span(&self, r: &Region, d: usize) -> (u128, u128) {
        let rest = self.width(d) - r.len[d];
        let hi = if rest >= 128 {
            u128::MAX
        } else {
            r.lo[d] | max_of(rest)
        };
        (r.lo[d], hi)
    }

    /// Whether box `b` covers region `r` in every field but `skip`.
    fn covers_except(&self, b: u32, r: &Region, skip: usize) -> bool {
        (0..DIMS).all(|d| {
            let (lo, hi) = self.span(r, d);
            d == skip || covers(self.boxes.ivs(b, d), lo, hi)
        })
    }

    fn covers_region(&self, b: u32, r: &Region) -> bool {
        (0..DIMS).all(|d| {
            let (lo, hi) = self.span(r, d);
            covers(self.boxes.ivs(b, d), lo, hi)
        })
    }

    /// Builds the tree for the whole key space over `list` (candidates in first-match
    /// order, each standing for one or both views) and returns its root slot.
    pub(crate) fn build(&mut self, list: &[Cand]) -> Result<Slot, OverBudget> {
        let root = Region {
            lo: [0; DIMS],
            len: [0; DIMS],
        };
        let (mut e_cov, mut p_cov) = (false, false);
        let mut canonical = Vec::with_capacity(list.len());
        for c in list {
            if self.boxes.is_empty(c.bx) {
                continue;
            }
            let keep = Cand {
                bx: c.bx,
                e: if e_cov { NONE } else { c.e },
                p: if p_cov { NONE } else { c.p },
            };
            if keep.e == NONE && keep.p == NONE {
                continue;
            }
            canonical.push(self.cand_id(keep));
            if self.covers_region(c.bx, &root) {
                e_cov |= keep.e != NONE;
                p_cov |= keep.p != NONE;
                if e_cov && p_cov {
                    break;
                }
            }
        }
        self.progress = Progress {
            done: 0.0,
            exact: 0.0,
            start: self.arena.held(),
            out_start: self.arena.bytes(),
        };
        Ok(self.node(&root, &canonical, 0, 1.0)?.0)
    }

    /// The first candidate of each view in `list`.
    fn firsts(&self, list: &[u32]) -> (Option<Cand>, Option<Cand>) {
        let (mut fe, mut fp) = (None, None);
        for &i in list {
            let c = self.cand(i);
            if fe.is_none() && c.e != NONE {
                fe = Some(c);
            }
            if fp.is_none() && c.p != NONE {
                fp = Some(c);
            }
            if fe.is_some() && fp.is_some() {
                break;
            }
        }
        (fe, fp)
    }

    /// The subtree of region `r` over `list`, which is `share` of the root's work:
    /// its slot and height.
    fn node(
        &mut self,
        r: &Region,
        list: &[u32],
        depth: u32,
        share: f64,
    ) -> Result<(Slot, u32), OverBudget> {
        let before = self.progress.exact;
        let (slot, height) = self.node_inner(r, list, depth, share)?;
        self.max_depth = self.max_depth.max(depth + height);
        if depth <= PROGRESS_DEPTH {
            self.progress.done += share;
            // The counted children's shares (summing to `share`) become this one.
            self.progress.exact = before + share;
            let grown = self.grown();
            let room = (self.arena.slot_limit * SLOT_BYTES).saturating_sub(self.progress.start);
            // The output alone, when the attempt bounds it.
            let (out_grown, out_room) = self.arena.out_limit.map_or((0.0, 1.0), |l| {
                let grown = self.arena.bytes().saturating_sub(self.progress.out_start) as f64;
                let room = (l * SLOT_BYTES).saturating_sub(self.progress.out_start);
                (grown, room as f64)
            });
            let over = |checks: &[(f64, f64)], done: f64| {
                checks.iter().any(|&(at, factor)| {
                    done >= at
                        && (grown / done > factor * room as f64
                            || out_grown / done > factor * out_room)
                })
            };
            if over(&EARLY_CHECKS, self.progress.done) || over(&EXACT_CHECKS, self.progress.exact) {
                return Err(OverBudget);
            }
        }
        Ok((slot, height))
    }

    fn node_inner(
        &mut self,
        r: &Region,
        list: &[u32],
        depth: u32,
        share: f64,
    ) -> Result<(Slot, u32), OverBudget> {
        self.cut_depth = self.cut_depth.max(depth);
        // A leaf when each view's first candidate covers the region (a partition's
        // lists have no catch-all, so a view may have none).
        let (fe, fp) = self.firsts(list);
        if fe.is_none_or(|c| self.covers_region(c.bx, r))
            && fp.is_none_or(|c| self.covers_region(c.bx, r))
        {
            let ed = fe.map_or(NONE, |c| c.e);
            let pd = fp.map_or(NONE, |c| c.p);
            return Ok((slot::leaf((self.leaf)(ed, pd)), 0));
        }
        // Scratch buffers are reused from node to node: the build allocates little
        // beyond what it keeps.
        let mut boxes = std::mem::take(&mut self.box_buf);
        boxes.clear();
        boxes.extend(list.iter().map(|&i| self.cand(i).bx));
        boxes.sort_unstable();
        boxes.dedup();
        if boxes.len() <= self.params.binth
            && let Some(items) = self.leaf_items(r, list)
        {
            self.box_buf = boxes;
            return Ok((self.arena.list(self.below.map(|b| b.arena), items)?, 0));
        }
        let align = self.boundaries(r, &boxes);
        let region: [(u128, u32); DIMS] = std::array::from_fn(|d| {
            if align[d].is_some() {
                (r.lo[d], r.len[d])
            } else {
                (0, u32::MAX)
            }
        });
        // The key is packed in a reused buffer: nothing is allocated unless the node
        // is new.
        let mut key = std::mem::take(&mut self.key_buf);
        self.memo_key(list, &region, &mut key);
        let found = self
            .below
            .and_then(|b| b.memo.get(&key[..]))
            .or_else(|| self.memo.get(&key[..]))
            .copied();
        if let Some(found) = found {
            self.key_buf = key;
            self.box_buf = boxes;
            return Ok(found);
        }
        // The key's words go into the memo now, its entry once the subtree is built.
        let staged = self.memo.stage(&key);
        self.key_buf = key;
        let (d, bits) = self.choose_cut(r, &boxes, &align);
        self.box_buf = boxes;
        let width = self.width(d);
        let below = width - r.len[d] - bits; // bits under the cut
        let mut cells = self.cell_pool.pop().unwrap_or_default();
        self.cells(r, d, bits, list, &mut cells);
        let weight: usize = cells.iter().map(|c| c.list.len()).sum();
        // One subtree per cell; neighbouring cells with the same subtree form one run.
        let mut runs = self.run_pool.pop().unwrap_or_default();
        runs.clear();
        let mut below_height = 0;
        for cell in &cells {
            let mut cr = *r;
            cr.lo[d] = r.lo[d] | ((cell.first as u128) << below);
            cr.len[d] = r.len[d] + bits;
            let part = share * cell.list.len() as f64 / weight.max(1) as f64;
            let (child, h) = self.node(&cr, &cell.list, depth + 1, part)?;
            below_height = below_height.max(h);
            if runs.last().is_none_or(|l| l.1 != child) {
                runs.push((cell.first, child));
            }
        }
        let base = lane_base(self.family)[d];
        let (lane, shift) = if width > 32 {
            (base + r.len[d] / 32, 32 - r.len[d] % 32 - bits)
        } else {
            (base, below)
        };
        let (word, at) = slot::lane_position(self.family, lane);
        // A dense node is split into two levels when the tree has grown past
        // `split_from` and its deepest path then stays within the slack of the
        // deepest one built so far.
        let split = runs.len() > MAX_RUNS
            && runs.len() <= SPLIT_MAX_RUNS
            && self.arena.bytes().saturating_sub(self.progress.out_start) >= self.params.split_from
            && self.params.split_slack.is_some_and(|s| {
                i64::from(depth + 2 + below_height) <= i64::from(self.max_depth) + i64::from(s)
            });
        let slot = self.arena.node(
            self.below.map(|b| b.arena),
            word,
            at + shift,
            bits,
            &runs,
            split,
        )?;
        let height = match runs.len() {
            1 => below_height,
            _ => below_height + 1 + u32::from(split),
        };
        self.cell_pool.push(cells);
        self.run_pool.push(runs);
        self.arena.scratch += std::mem::size_of_val(list) + MEMO_ENTRY_COUNTED;
        self.memo.insert_staged(staged, (slot, height));
        Ok((slot, height))
    }

    /// Packs the memo key of `list` over `region` into `key`: the list's length and
    /// ids, then per field the region's prefix length and its start in as many
    /// 32-bit words as the field is wide (most significant first).
    fn memo_key(&self, list: &[u32], region: &[(u128, u32); DIMS], key: &mut Vec<u32>) {
        key.clear();
        key.push(list.len() as u32);
        key.extend_from_slice(list);
        for (d, &(lo, len)) in region.iter().enumerate() {
            key.push(len);
            for w in (0..self.width(d).div_ceil(32)).rev() {
                key.push((lo >> (32 * w)) as u32);
            }
        }
    }

    /// Splits `list` among the children of a `bits`-bit cut of region `r` on field
    /// `d`: the children are grouped into cells (no candidate boundary inside a cell
    /// of several children), and each cell gets its canonical candidate list; into
    /// `cells` (whose entries' lists are reused).
    fn cells(&mut self, r: &Region, d: usize, bits: u32, list: &[u32], cells: &mut Vec<Cell>) {
        let below = self.width(d) - r.len[d] - bits;
        let (rlo, rhi) = self.span(r, d);
        let n = 1usize << bits;
        // Each candidate interval as (first child, last child, boundary inside first,
        // boundary inside last).
        let child_span = |a: u128, z: u128| {
            let (a, z) = (a.max(rlo), z.min(rhi));
            let (c0, c1) = (((a - rlo) >> below) as usize, ((z - rlo) >> below) as usize);
            let cut0 = a != rlo + ((c0 as u128) << below);
            let cut1 = z != rlo + ((c1 as u128) << below) + max_of(below);
            (c0, c1, cut0, cut1)
        };
        let boxes = self.boxes;
        let mut bp = std::mem::take(&mut self.bp_buf);
        bp.clear();
        bp.extend([0, n]);
        for &i in list {
            for &(a, z) in boxes.ivs(self.cand(i).bx, d) {
                if a > rhi || z < rlo {
                    continue;
                }
                let (c0, c1, cut0, cut1) = child_span(a, z);
                bp.extend([c0, c1 + 1]);
                if cut0 {
                    bp.push(c0 + 1);
                }
                if cut1 {
                    bp.push(c1);
                }
            }
        }
        bp.sort_unstable();
        bp.dedup();
        cells.truncate(bp.len() - 1);
        for (k, w) in bp.windows(2).enumerate() {
            match cells.get_mut(k) {
                Some(cell) => {
                    cell.first = w[0];
                    cell.list.clear();
                    cell.enforced_covered = false;
                    cell.pending_covered = false;
                }
                None => cells.push(Cell {
                    first: w[0],
                    list: Vec::new(),
                    enforced_covered: false,
                    pending_covered: false,
                }),
            }
        }
        let cell_of = |c: usize| bp.partition_point(|&x| x <= c) - 1;
        let mut open = cells.len();
        for &i in list {
            if open == 0 {
                break; // every cell already has both covers
            }
            let c = self.cand(i);
            let others = self.covers_except(c.bx, r, d);
            let mut last = usize::MAX;
            let intervals = boxes.ivs(c.bx, d);
            for &(a, z) in intervals {
                if a > rhi || z < rlo {
                    continue;
                }
                let (c0, c1, cut0, cut1) = child_span(a, z);
                let (k0, k1) = (cell_of(c0), cell_of(c1));
                for (k, cell) in cells.iter_mut().enumerate().take(k1 + 1).skip(k0) {
                    let need_e = c.e != NONE && !cell.enforced_covered;
                    let need_p = c.p != NONE && !cell.pending_covered;
                    if k == last || !(need_e || need_p) {
                        continue;
                    }
                    last = k;
                    let keep = Cand {
                        bx: c.bx,
                        e: if need_e { c.e } else { NONE },
                        p: if need_p { c.p } else { NONE },
                    };
                    let id = if keep == c { i } else { self.cand_id(keep) };
                    cell.list.push(id);
                    let full = others && !(cut0 && k == k0) && !(cut1 && k == k1);
                    if full {
                        cell.enforced_covered |= need_e;
                        cell.pending_covered |= need_p;
                        if cell.enforced_covered && cell.pending_covered {
                            open -= 1;
                        }
                    }
                }
            }
        }
        self.bp_buf = bp;
    }

    /// Per field: `None` if every box covers the region there, else the alignment
    /// (trailing zero bits, relative to the region's start) of the finest boundary.
    fn boundaries(&self, r: &Region, boxes: &[u32]) -> [Option<u32>; DIMS] {
        let spans: [(u128, u128); DIMS] = std::array::from_fn(|d| self.span(r, d));
        // One pass over the boxes (their fields lie side by side); `u32::MAX` = none.
        let mut align = [u32::MAX; DIMS];
        for &b in boxes {
            for (d, &(rlo, rhi)) in spans.iter().enumerate() {
                for &(a, z) in self.boxes.ivs(b, d) {
                    if a > rhi || z < rlo {
                        continue;
                    }
                    if a > rlo {
                        align[d] = align[d].min((a - rlo).trailing_zeros());
                    }
                    if z < rhi {
                        align[d] = align[d].min((z + 1 - rlo).trailing_zeros());
                    }
                }
            }
        }
        align.map(|a| (a != u32::MAX).then_some(a))
    }

    /// The leaf list of region `r`: each candidate clipped to the region and split
    /// into single-interval items, in order. `None` if that makes more than
    /// `4 * binth` items.
    fn leaf_items(&self, r: &Region, list: &[u32]) -> Option<Vec<Item>> {
        let cap = self.params.binth.max(1).saturating_mul(4);
        let mut items = Vec::new();
        for &i in list {
            let c = self.cand(i);
            // Where the box covers the region the field needs no check (and must not
            // get one: a memoised list is shared by regions that differ in such fields).
            let clipped: [Vec<Iv>; DIMS] = std::array::from_fn(|d| {
                let (lo, hi) = self.span(r, d);
                let ivs = self.boxes.ivs(c.bx, d);
                if covers(ivs, lo, hi) {
                    return vec![(0, max_of(self.width(d)))];
                }
                ivs.iter()
                    .filter(|&&(a, z)| a <= hi && lo <= z)
                    .map(|&(a, z)| (a.max(lo), z.min(hi)))
                    .collect()
            });
            let count: usize = clipped.iter().map(Vec::len).product();
            if items.len() + count > cap {
                return None;
            }
            for a in &clipped[0] {
                for b in &clipped[1] {
                    for cc in &clipped[2] {
                        for dd in &clipped[3] {
                            for f in &clipped[4] {
                                let mut lo = [0u32; ITEM_LANES];
                                let mut span = [u32::MAX; ITEM_LANES];
                                let base = lane_base(self.family);
                                let widths = super::flatten::widths(self.family);
                                for (dim, iv) in [a, b, cc, dd, f].into_iter().enumerate() {
                                    if !lane_intervals(
                                        iv.0,
                                        iv.1,
                                        widths[dim],
                                        base[dim] as usize,
                                        &mut lo,
                                        &mut span,
                                    ) {
                                        return None;
                                    }
                                }
                                items.push(Item {
                                    lo,
                                    span,
                                    enforced: c.e,
                                    pending: c.p,
                                });
                            }
                        }
                    }
                }
            }
        }
        Some(items)
    }

    /// Picks the field and the number of bits to cut: in each field with a boundary,
    /// the most bits (down to the boundaries' alignment) whose replication stays within
    /// `spfac`; then the field whose largest child is smallest.
    fn choose_cut(&self, r: &Region, boxes: &[u32], align: &[Option<u32>; DIMS]) -> (usize, u32) {
        let n = boxes.len();
        let mut best: Option<(usize, usize, u32, usize)> = None; // (max child, sum, bits, field)
        for (d, al) in align.iter().enumerate() {
            let Some(al) = *al else { continue };
            let width = self.width(d);
            let lane_room = if width > 32 {
                32 - r.len[d] % 32
            } else {
                width - r.len[d]
            };
            let cap = lane_room
                .min(width - r.len[d] - al)
                .min(self.params.max_bits)
                .max(1);
            // The most bits whose node is cheap: few runs of children (stored ranged,
            // whatever the fan-out) or at most 2^8 children with bounded replication.
            // (Counted for one bit only when no wider cut is cheap.)
            let limit = (self.params.spfac * n as f64) as usize;
            let (chosen, chosen_bits) = (2..=cap)
                .rev()
                .map(|bits| (self.child_counts(r, d, bits, boxes), bits))
                .find(|&(c, bits)| c.2 < MAX_RUNS || (bits <= self.params.max_bits && c.1 <= limit))
                .unwrap_or_else(|| (self.child_counts(r, d, 1, boxes), 1));
            let cand = (chosen.0, chosen.1, chosen_bits, d);
            if best.is_none_or(|b| {
                (cand.0, cand.1, std::cmp::Reverse(cand.2)) < (b.0, b.1, std::cmp::Reverse(b.2))
            }) {
                best = Some(cand);
            }
        }
        match best {
            Some((_, _, bits, d)) => (d, bits),
            // Unreachable for a non-leaf region (some first entry is partial, so it has
            // a boundary in some field); cut the first field that has room.
            None => (0..DIMS)
                .find(|&d| r.len[d] < self.width(d))
                .map_or((0, 1), |d| (d, 1)),
        }
    }

    /// For a `bits`-bit cut on `d`: the largest number of boxes in one child, and the
    /// number of (child, box) pairs where the box has a boundary inside the child
    /// (boxes spanning a whole child cost nothing there: the child's subtree does not
    /// depend on them beyond their order, and equal subtrees are shared).
    fn child_counts(
        &self,
        r: &Region,
        d: usize,
        bits: u32,
        boxes: &[u32],
    ) -> (usize, usize, usize) {
        let below = self.width(d) - r.len[d] - bits;
        let (rlo, rhi) = self.span(r, d);
        let n = 1usize << bits;
        // Where the count of boxes per child changes, as `child << 1 | starts`: few
        // boxes (most nodes) need only these sorted, not a pass over all `n` children.
        let mut events = [0u32; COUNT_EVENTS];
        let mut nev = 0usize;
        let mut partial = 0usize;
        // Child indices where the children may change (capped: only "few" matters).
        let mut edges = [0usize; 2 * MAX_RUNS + 1];
        let mut found = 0usize;
        let mut edge = |c: usize| {
            if c > 0 && c < n && found < edges.len() && !edges[..found].contains(&c) {
                edges[found] = c;
                found += 1;
            }
        };
        for &b in boxes {
            let mut next = 0usize; // first child this box has not been counted in
            for &(a, z) in self.boxes.ivs(b, d) {
                let (a, z) = (a.max(rlo), z.min(rhi));
                if a > z {
                    continue;
                }
                let (c0, c1) = (((a - rlo) >> below) as usize, ((z - rlo) >> below) as usize);
                let cut_in_c0 = a != rlo + ((c0 as u128) << below);
                let cut_in_c1 = z != rlo + ((c1 as u128) << below) + max_of(below);
                partial += usize::from(cut_in_c0) + usize::from(cut_in_c1);
                edge(c0);
                edge(c0 + usize::from(cut_in_c0));
                edge(c1 + 1);
                edge(c1 + usize::from(!cut_in_c1));
                let c0 = c0.max(next);
                if c0 <= c1 {
                    if nev + 2 <= COUNT_EVENTS {
                        events[nev] = (c0 as u32) << 1 | 1;
                        events[nev + 1] = ((c1 + 1) as u32) << 1;
                    }
                    nev += 2;
                    next = c1 + 1;
                }
            }
        }
        let mx = if nev <= COUNT_EVENTS {
            // Sorted, a child's decrements come before its increments, so the running
            // count after each event never exceeds a child's count.
            let events = &mut events[..nev];
            events.sort_unstable();
            let (mut cur, mut mx) = (0usize, 0usize);
            for &e in events.iter() {
                if (e >> 1) as usize >= n {
                    break;
                }
                if e & 1 == 1 {
                    cur += 1;
                    mx = mx.max(cur);
                } else {
                    cur -= 1;
                }
            }
            mx
        } else {
            self.max_child_count(r, d, bits, boxes)
        };
        (mx, partial, found)
    }

    /// The largest number of boxes in one child of a `bits`-bit cut on `d` (the
    /// first value of [`TreeBuilder::child_counts`], by a pass over the children).
    fn max_child_count(&self, r: &Region, d: usize, bits: u32, boxes: &[u32]) -> usize {
        let below = self.width(d) - r.len[d] - bits;
        let (rlo, rhi) = self.span(r, d);
        let n = 1usize << bits;
        let mut diff = [0isize; PLAIN_MAX_CHILDREN + 1];
        for &b in boxes {
            let mut next = 0usize; // first child this box has not been counted in
            for &(a, z) in self.boxes.ivs(b, d) {
                let (a, z) = (a.max(rlo), z.min(rhi));
                if a > z {
                    continue;
                }
                let (c0, c1) = (((a - rlo) >> below) as usize, ((z - rlo) >> below) as usize);
                let c0 = c0.max(next);
                if c0 <= c1 {
                    diff[c0] += 1;
                    diff[c1 + 1] -= 1;
                    next = c1 + 1;
                }
            }
        }
        let (mut cur, mut mx) = (0isize, 0usize);
        for v in &diff[..n] {
            cur += v;
            mx = mx.max(cur as usize);
        }
        mx
    }
}

#[cfg(test)]
mod tests {
    use super::super::flatten::{IvSet, widths};
    use super::*;
    use proptest::prelude::*;

    /// Intervals of one field inside or around the region `[rlo, rhi]`: each pair of
    /// offsets becomes an interval (clipped to the field, so some span the region's
    /// edges), normalised into a sorted set.
    fn field_set(rlo: u128, rhi: u128, max: u128, offs: &[(u64, u64)]) -> IvSet {
        let span = rhi - rlo + 1;
        let at = |x: u64| -> u128 {
            // Mostly inside the region, sometimes a little before or after it.
            let x = u128::from(x);
            let inside = rlo + x % span;
            match x % 8 {
                0 => rlo.saturating_sub(x % 4),
                1 => (rhi + x % 4).min(max),
                _ => inside,
            }
        };
        IvSet::from_unsorted(
            offs.iter()
                .map(|&(a, b)| {
                    let (a, b) = (at(a), at(b));
                    (a.min(b), a.max(b))
                })
                .collect(),
        )
    }

    proptest! {
        /// `child_counts`' largest child count, from the sorted count changes when
        /// there are few, agrees with the pass over every child (`max_child_count`)
        /// for boxes of one or more intervals around a region at any depth, with few
        /// boxes and with more than the sorted path holds.
        #[test]
        fn child_counts_agrees_with_the_pass_over_children(
            lens in proptest::array::uniform5(0u32..32),
            seed in any::<u128>(),
            d in 0usize..DIMS,
            bits in 1u32..=8,
            specs in proptest::collection::vec(
                proptest::collection::vec((any::<u64>(), any::<u64>()), 1..4), 1..48),
        ) {
            let w = widths(Family::V4);
            let len: [u32; DIMS] = std::array::from_fn(|f| lens[f] % w[f]);
            prop_assume!(w[d] - len[d] >= bits);
            let lo: [u128; DIMS] = std::array::from_fn(|f| {
                let keep = max_of(len[f]) << (w[f] - len[f]);
                seed & max_of(w[f]) & keep
            });
            let r = Region { lo, len };
            let mut flat = Boxes::default();
            for spec in &specs {
                let b = MBox(std::array::from_fn(|f| {
                    let rhi = lo[f] | max_of(w[f] - len[f]);
                    if f == d {
                        field_set(lo[f], rhi, max_of(w[f]), spec)
                    } else {
                        IvSet::full(w[f])
                    }
                }));
                flat.push(&b);
            }
            let ids: Vec<u32> = (0..specs.len() as u32).collect();
            let (mut cands, mut memo, mut arena) =
                (Cands::default(), Memo::default(), Arena::default());
            let mut leaf = |e: u32, _p: u32| e;
            let params = CutParams { spfac: 4.0, binth: 1, max_bits: 8, split_slack: None, split_from: 0 };
            let t = TreeBuilder::new(
                Family::V4, &flat, &mut cands, &mut memo, params, &mut leaf, &mut arena, None,
            );
            let (mx, _, _) = t.child_counts(&r, d, bits, &ids);
            prop_assert_eq!(mx, t.max_child_count(&r, d, bits, &ids));
        }
    }
}
