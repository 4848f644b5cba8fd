//! Maps keyed by slices, every key packed in one vector: the build's indexes (the
//! subtree memo, the node and leaf-list keys) hold hundreds of thousands of short
//! keys, and a `HashMap<Box<[K]>, V>` allocates each one on insert and frees each one
//! when a dropped attempt's workspace goes (a profile of a 100K-rule build put
//! allocation and freeing at about a fifth of its time). Here a key is a range of
//! one vector, found by its hash in a [`HashTable`].

use std::hash::{BuildHasher, Hash};

use foldhash::fast::FixedState;
use hashbrown::HashTable;

/// A map from slices of `K` to `V`.
pub(crate) struct SliceMap<K, V> {
    /// The keys, one after another.
    words: Vec<K>,
    /// Per entry: where its key starts in `words`, its length, its value.
    table: HashTable<(usize, u32, V)>,
}

impl<K, V> Default for SliceMap<K, V> {
    fn default() -> Self {
        SliceMap {
            words: Vec::new(),
            table: HashTable::new(),
        }
    }
}

impl<K, V> std::fmt::Debug for SliceMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceMap")
            .field("len", &self.table.len())
            .field("key_words", &self.words.len())
            .finish()
    }
}

/// A key stored ahead of its entry ([`SliceMap::stage`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Staged {
    start: usize,
    len: u32,
}

/// The hash of a key (one fixed hasher: the maps are never iterated in hash order
/// for anything that is kept).
fn hash<K: Hash>(key: &[K]) -> u64 {
    FixedState::default().hash_one(key)
}

impl<K: Copy + Hash + Eq, V: Copy> SliceMap<K, V> {
    fn key(&self, start: usize, len: u32) -> &[K] {
        &self.words[start..start + len as usize]
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &[K]) -> Option<&V> {
        let words = &self.words;
        self.table
            .find(hash(key), |&(s, l, _)| {
                words.get(s..s + l as usize) == Some(key)
            })
            .map(|e| &e.2)
    }

    /// Sets `key`'s value to `v`.
    pub(crate) fn insert(&mut self, key: &[K], v: V) {
        let words = &self.words;
        if let Some(e) = self.table.find_mut(hash(key), |&(s, l, _)| {
            words.get(s..s + l as usize) == Some(key)
        }) {
            e.2 = v;
            return;
        }
        let staged = self.stage(key);
        self.insert_staged(staged, v);
    }

    /// Stores `key`'s words ahead of its entry, for a caller that looks the key up,
    /// builds its value (inserting other keys meanwhile) and then inserts it with
    /// [`SliceMap::insert_staged`] without keeping a copy of the key in between.
    pub(crate) fn stage(&mut self, key: &[K]) -> Staged {
        let start = self.words.len();
        self.words.extend_from_slice(key);
        Staged {
            start,
            len: key.len() as u32,
        }
    }

    /// Sets the value of a key stored by [`SliceMap::stage`] to `v`.
    pub(crate) fn insert_staged(&mut self, key: Staged, v: V) {
        let Staged { start, len } = key;
        let words = &self.words;
        let Some(k) = words.get(start..start + len as usize) else {
            return;
        };
        let h = hash(k);
        if let Some(e) = self
            .table
            .find_mut(h, |&(s, l, _)| words.get(s..s + l as usize) == Some(k))
        {
            e.2 = v;
            return;
        }
        self.table.insert_unique(h, (start, len, v), |&(s, l, _)| {
            hash(&words[s..s + l as usize])
        });
    }

    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it has no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The keys, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[K]> {
        self.table.iter().map(|&(s, l, _)| self.key(s, l))
    }

    /// Adds the entries of `top` whose keys it does not hold (taken as it is when
    /// empty).
    pub(crate) fn extend(&mut self, top: SliceMap<K, V>) {
        if self.is_empty() {
            *self = top;
            return;
        }
        self.words.reserve(top.words.len());
        self.table
            .reserve(top.len(), |&(s, l, _)| hash(&self.words[s..s + l as usize]));
        for &(s, l, v) in &top.table {
            let key = top.key(s, l);
            if self.get(key).is_none() {
                let staged = self.stage(key);
                self.insert_staged(staged, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// The slow twin: a `HashMap` of boxed keys, through inserts, lookups and
        /// extends.
        #[test]
        fn agrees_with_a_map_of_boxed_keys(
            a in prop::collection::vec((prop::collection::vec(0u32..4, 0..4), any::<u16>()), 0..64),
            b in prop::collection::vec((prop::collection::vec(0u32..4, 0..4), any::<u16>()), 0..64),
            probes in prop::collection::vec(prop::collection::vec(0u32..4, 0..4), 0..32),
        ) {
            let (mut fast, mut slow) = (SliceMap::default(), HashMap::new());
            for (i, (k, v)) in a.iter().enumerate() {
                if i % 2 == 0 {
                    fast.insert(k, *v);
                } else {
                    let staged = fast.stage(k);
                    fast.insert_staged(staged, *v);
                }
                slow.insert(k.clone(), *v);
            }
            let (mut top, mut slow_top) = (SliceMap::default(), HashMap::new());
            for (k, v) in &b {
                top.insert(k, *v);
                slow_top.insert(k.clone(), *v);
            }
            fast.extend(top);
            for (k, v) in slow_top {
                slow.entry(k).or_insert(v);
            }
            prop_assert_eq!(fast.len(), slow.len());
            prop_assert_eq!(fast.is_empty(), slow.is_empty());
            for k in probes.iter().chain(a.iter().map(|x| &x.0)).chain(b.iter().map(|x| &x.0)) {
                prop_assert_eq!(fast.get(k), slow.get(k));
            }
            let mut keys: Vec<Vec<u32>> = fast.keys().map(<[u32]>::to_vec).collect();
            let mut want: Vec<Vec<u32>> = slow.keys().cloned().collect();
            keys.sort();
            want.sort();
            prop_assert_eq!(keys, want);
        }
    }
}
