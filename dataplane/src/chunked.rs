//! A vector that generations share: fixed-size chunks behind [`Arc`]s, so a clone
//! copies one pointer per chunk and a write copies only the chunk it lands in
//! (copy on write, [`Arc::make_mut`]).
//!
//! The identity classifier keeps the class data only changes read this way: the next
//! generation after a pod change is a clone with a handful of entries written, which
//! costs one pointer per chunk and a copy of the chunks written instead of a copy of
//! the table. A read is one more load than a flat vector's (the chunk pointer), which
//! is why the tables lookups read stay flat. The slow twin is a plain [`Vec`]: the property test below
//! applies random writes, pushes and clones to both.

use std::sync::Arc;

/// A vector of `T` in chunks of `N` entries (`N` a power of two); see the module doc.
#[derive(Clone, Debug)]
pub(crate) struct Chunked<T, const N: usize> {
    chunks: Vec<Arc<[T; N]>>,
    len: usize,
}

impl<T: Copy, const N: usize> Default for Chunked<T, N> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Copy, const N: usize> Chunked<T, N> {
    const _POWER_OF_TWO: () = assert!(N.is_power_of_two());

    /// The entries of `v`, in order.
    pub(crate) fn from_slice(v: &[T]) -> Self {
        let mut out = Chunked::default();
        for &x in v {
            out.push(x);
        }
        out
    }

    /// Entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entry `i`, if `i < len`.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        self.chunks.get(i / N).map(|c| &c[i % N])
    }

    /// Entry `i` to write, copying its chunk first if another clone shares it.
    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        self.chunks
            .get_mut(i / N)
            .map(|c| &mut Arc::make_mut(c)[i % N])
    }

    /// Appends `x`.
    pub(crate) fn push(&mut self, x: T) {
        let () = Self::_POWER_OF_TWO;
        let at = self.len % N;
        if at == 0 {
            // A fresh chunk, filled with `x` (entries past `len` are never read).
            self.chunks.push(Arc::new([x; N]));
        } else if let Some(c) = self.chunks.last_mut() {
            Arc::make_mut(c)[at] = x;
        }
        self.len += 1;
    }

    /// The entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    /// Bytes of the chunks and the pointer array (a clone shares the chunks).
    pub(crate) fn bytes(&self) -> usize {
        self.chunks.len() * (N * size_of::<T>() + size_of::<Arc<[T; N]>>())
    }
}

impl<T: Copy, const N: usize> std::ops::Index<usize> for Chunked<T, N> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(x) => x,
            None => panic!("index {i} out of {}", self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32),
        Set(prop::sample::Index, u32),
        /// Keep a clone of both; later writes must not reach it.
        Snapshot,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            4 => (any::<prop::sample::Index>(), any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
            1 => Just(Op::Snapshot),
        ]
    }

    fn same(c: &Chunked<u32, 4>, v: &[u32]) -> Result<(), TestCaseError> {
        prop_assert_eq!(c.len(), v.len());
        prop_assert_eq!(c.iter().copied().collect::<Vec<_>>(), v.to_vec());
        for (i, x) in v.iter().enumerate() {
            prop_assert_eq!(c.get(i), Some(x));
            prop_assert_eq!(c[i], *x);
        }
        prop_assert_eq!(c.get(v.len()), None);
        Ok(())
    }

    proptest! {
        /// Every operation gives what the same operation on a `Vec` gives, and a
        /// clone taken before a write still reads what it read then.
        #[test]
        fn agrees_with_vec_and_clones_stay(ops in prop::collection::vec(arb_op(), 0..80)) {
            let mut c: Chunked<u32, 4> = Chunked::from_slice(&[7, 8, 9]);
            let mut v = vec![7, 8, 9];
            let mut snaps = Vec::new();
            for op in ops {
                match op {
                    Op::Push(x) => {
                        c.push(x);
                        v.push(x);
                    }
                    Op::Set(i, x) => {
                        let i = i.index(v.len());
                        *c.get_mut(i).expect("in range") = x;
                        v[i] = x;
                    }
                    Op::Snapshot => snaps.push((c.clone(), v.clone())),
                }
                same(&c, &v)?;
            }
            for (c, v) in &snaps {
                same(c, v)?;
            }
            prop_assert!(c.get_mut(v.len()).is_none());
        }
    }
}
