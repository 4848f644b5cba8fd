//! The store's key index: a sorted map from resource keys to entries kept in shared
//! (`Arc`) chunks of a few dozen entries, so that a copy of the store costs one
//! pointer per chunk and a change to the copy copies only the chunk it touches (the
//! daemon prepares every change on a copy of the store). Comparing a copy with its
//! original skips the chunks both still share.
//!
//! The slow twin is `BTreeMap`: the property test below checks that after any
//! sequence of inserts and removes, on copies too, the map holds what a `BTreeMap`
//! holds and [`KeyMap::diff`] reports every key whose entries differ.

use std::fmt;
use std::sync::Arc;

use crate::model::ResourceKey;

/// Entries per chunk a split leaves (a chunk splits above twice this).
const CHUNK: usize = 48;

/// A sorted map from [`ResourceKey`]s to `V`, in shared chunks (see the module doc).
/// Invariants: every chunk is non-empty and sorted, and the chunks are in key order.
#[derive(Clone)]
pub(crate) struct KeyMap<V> {
    chunks: Vec<Arc<Vec<(ResourceKey, V)>>>,
    len: usize,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<V: Clone + fmt::Debug> fmt::Debug for KeyMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Equal when both hold the same entries in key order, however they are chunked.
impl<V: Clone + PartialEq> PartialEq for KeyMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<V: Clone> KeyMap<V> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        KeyMap::default()
    }

    /// The chunk `key` is in or belongs in: the first whose last key is not below
    /// it, else the last chunk.
    fn chunk_of(&self, key: &ResourceKey) -> usize {
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|(last, _)| last < key));
        i.min(self.chunks.len().saturating_sub(1))
    }

    /// The entry under `key`.
    pub(crate) fn get(&self, key: &ResourceKey) -> Option<&V> {
        let c = self.chunks.get(self.chunk_of(key))?;
        let i = c.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&c[i].1)
    }

    /// Whether there is an entry under `key`.
    pub(crate) fn contains_key(&self, key: &ResourceKey) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`; returns the entry it replaced.
    pub(crate) fn insert(&mut self, key: ResourceKey, value: V) -> Option<V> {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(vec![(key, value)]));
            self.len = 1;
            return None;
        }
        let ci = self.chunk_of(&key);
        let c = Arc::make_mut(&mut self.chunks[ci]);
        match c.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut c[i].1, value)),
            Err(i) => {
                c.insert(i, (key, value));
                self.len += 1;
                if c.len() > 2 * CHUNK {
                    let tail = c.split_off(c.len() / 2);
                    self.chunks.insert(ci + 1, Arc::new(tail));
                }
                None
            }
        }
    }

    /// Removes the entry under `key` and returns it.
    pub(crate) fn remove(&mut self, key: &ResourceKey) -> Option<V> {
        let ci = self.chunk_of(key);
        let i = self
            .chunks
            .get(ci)?
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()?;
        let c = Arc::make_mut(&mut self.chunks[ci]);
        let (_, value) = c.remove(i);
        self.len -= 1;
        if c.is_empty() {
            self.chunks.remove(ci);
        } else if c.len() < CHUNK / 4 {
            // A small chunk joins a neighbour when both fit in one.
            let n = c.len();
            let join = [ci.checked_sub(1), Some(ci + 1)]
                .into_iter()
                .flatten()
                .find(|&j| self.chunks.get(j).is_some_and(|d| d.len() + n <= 2 * CHUNK));
            if let Some(j) = join {
                let (lo, hi) = (ci.min(j), ci.max(j));
                let upper = self.chunks.remove(hi);
                let lower = Arc::make_mut(&mut self.chunks[lo]);
                lower.extend(upper.iter().cloned());
            }
        }
        Some(value)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every entry in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ResourceKey, &V)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter().map(|(k, v)| (k, v)))
    }

    /// Every value in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Calls `f(key, entry in self, entry in other)`, in key order, for every key of
    /// either map except those in a chunk both maps share: each key whose entries
    /// may differ (a key in both with identical entries may be reported too).
    pub(crate) fn diff(
        &self,
        other: &KeyMap<V>,
        mut f: impl FnMut(&ResourceKey, Option<&V>, Option<&V>),
    ) {
        let (a, b) = (&self.chunks, &other.chunks);
        let (mut ai, mut ao, mut bi, mut bo) = (0, 0, 0, 0);
        let step = |c: &[Arc<Vec<(ResourceKey, V)>>], i: &mut usize, o: &mut usize| {
            *o += 1;
            if *o == c[*i].len() {
                *i += 1;
                *o = 0;
            }
        };
        loop {
            if ao == 0 && bo == 0 && ai < a.len() && bi < b.len() && Arc::ptr_eq(&a[ai], &b[bi]) {
                ai += 1;
                bi += 1;
                continue;
            }
            match (a.get(ai).map(|c| &c[ao]), b.get(bi).map(|c| &c[bo])) {
                (None, None) => return,
                (Some((k, v)), None) => {
                    f(k, Some(v), None);
                    step(a, &mut ai, &mut ao);
                }
                (None, Some((k, v))) => {
                    f(k, None, Some(v));
                    step(b, &mut bi, &mut bo);
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => {
                        f(ka, Some(va), None);
                        step(a, &mut ai, &mut ao);
                    }
                    std::cmp::Ordering::Greater => {
                        f(kb, None, Some(vb));
                        step(b, &mut bi, &mut bo);
                    }
                    std::cmp::Ordering::Equal => {
                        f(ka, Some(va), Some(vb));
                        step(a, &mut ai, &mut ao);
                        step(b, &mut bi, &mut bo);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::model::Kind;

    fn key(i: u16) -> ResourceKey {
        ResourceKey {
            kind: [Kind::Tier, Kind::WorkloadEndpoint, Kind::NetworkPolicy][usize::from(i % 3)],
            namespace: (!i.is_multiple_of(5)).then(|| format!("ns{}", i % 7)),
            name: format!("r{i}"),
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        /// Keep a copy and carry on with it (the old one is kept for `diff`).
        Copy,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u16..600).prop_map(Op::Remove),
            1 => Just(Op::Copy),
        ]
    }

    fn check(m: &KeyMap<u32>, want: &BTreeMap<ResourceKey, u32>) -> Result<(), TestCaseError> {
        prop_assert_eq!(m.len(), want.len());
        let got: Vec<(&ResourceKey, &u32)> = m.iter().collect();
        let exp: Vec<(&ResourceKey, &u32)> = want.iter().collect();
        prop_assert_eq!(got, exp);
        prop_assert!(
            m.chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= 2 * CHUNK)
        );
        for i in 0..600 {
            prop_assert_eq!(m.get(&key(i)), want.get(&key(i)));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn keymap_is_a_btreemap_and_diff_finds_every_difference(
            ops in prop::collection::vec(op(), 1..1500),
        ) {
            let mut m = KeyMap::new();
            let mut want = BTreeMap::new();
            let mut copies: Vec<(KeyMap<u32>, BTreeMap<ResourceKey, u32>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(m.insert(key(k), v), want.insert(key(k), v));
                    }
                    Op::Remove(k) => prop_assert_eq!(m.remove(&key(k)), want.remove(&key(k))),
                    Op::Copy => copies.push((m.clone(), want.clone())),
                }
            }
            check(&m, &want)?;
            copies.push((KeyMap::new(), BTreeMap::new()));
            for (old, old_want) in &copies {
                // The copies are unchanged by the changes made after them.
                check(old, old_want)?;
                let mut reported = BTreeSet::new();
                let mut last: Option<ResourceKey> = None;
                old.diff(&m, |k, x, y| {
                    assert_eq!(x, old_want.get(k));
                    assert_eq!(y, want.get(k));
                    assert!(last.as_ref().is_none_or(|l| l < k), "diff out of key order");
                    last = Some(k.clone());
                    reported.insert(k.clone());
                });
                let keys: BTreeSet<&ResourceKey> = old_want.keys().chain(want.keys()).collect();
                for k in keys {
                    if old_want.get(k) != want.get(k) {
                        prop_assert!(reported.contains(k), "{k} differs but was not reported");
                    }
                }
            }
        }
    }

    #[test]
    fn removing_most_keys_joins_small_chunks_and_keeps_the_map() {
        let mut m = KeyMap::new();
        let mut want = BTreeMap::new();
        for i in 0..3000u16 {
            m.insert(key(i), u32::from(i));
            want.insert(key(i), u32::from(i));
        }
        let full = m.clone();
        let chunks = m.chunks.len();
        for step in 0..2900u32 {
            let i = ((step * 7919) % 3000) as u16;
            assert_eq!(m.remove(&key(i)), want.remove(&key(i)));
            if step % 97 == 0 {
                check(&m, &want).unwrap();
            }
        }
        check(&m, &want).unwrap();
        assert!(
            m.chunks.len() < chunks / 4,
            "{} of {chunks} chunks left",
            m.chunks.len()
        );
        let mut gone = 0;
        full.diff(&m, |k, x, y| {
            assert_eq!(y, want.get(k));
            assert!(x.is_some());
            gone += usize::from(y.is_none());
        });
        assert_eq!(gone, 3000 - want.len());
        check(&full, &(0..3000).map(|i| (key(i), u32::from(i))).collect()).unwrap();
    }

    #[test]
    fn a_copy_changed_once_shares_all_other_chunks() {
        let mut m = KeyMap::new();
        for i in 0..3000 {
            m.insert(key(i), u32::from(i));
        }
        let mut next = m.clone();
        next.insert(key(3001), 1);
        let mut seen = 0;
        m.diff(&next, |_, _, _| seen += 1);
        // Only the keys of the chunk the insert copied are compared.
        assert!(seen <= 2 * CHUNK + 1, "{seen} keys compared");
        assert!(seen >= 1);
        let shared = m
            .chunks
            .iter()
            .filter(|c| next.chunks.iter().any(|d| Arc::ptr_eq(c, d)))
            .count();
        assert!(shared + 1 >= m.chunks.len());
    }
}
