//! Keeping a [`Cluster`] up to date with a [`Store`] change without normalising every
//! resource again: the fast twin of [`Cluster::from_resources`].
//!
//! A policy or tier change re-normalises that resource only (a policy's selectors are
//! parsed again; the others are kept). A change of any other kind (endpoint, network
//! set, namespace, profile) rebuilds the endpoints, network sets and profiles from the
//! store, which never parses a policy selector. The property test in `proptests.rs`
//! checks that after any sequence of applies and deletes the result is exactly
//! `Cluster::from_resources` of the store.

use super::{
    BUILTIN_TIERS, Cluster, ClusterError, Policy, builtin_tier, is_policy_kind, policy_of, tier_of,
};
use crate::model::{Kind, Resource, ResourceKey};
use crate::store::Store;

/// Above this many policy changes, the policy list is rebuilt by one merge instead of
/// one insertion or removal per change.
const MERGE_ABOVE: usize = 16;

impl Cluster {
    /// Brings the cluster up to date with `store` after the resources under `changed`
    /// were created, replaced or deleted in it. `self` must be the cluster of the store
    /// before that change (from [`Cluster::from_resources`] or an earlier `update`), and
    /// `changed` must name every key whose resource differs (more keys are harmless).
    /// The result equals `Cluster::from_resources(store.resources())`.
    ///
    /// On error (the first, in the order `from_resources` would report it) `self` is
    /// unchanged.
    pub fn update(&mut self, store: &Store, changed: &[ResourceKey]) -> Result<(), ClusterError> {
        let mut keys: Vec<&ResourceKey> = changed.iter().collect();
        keys.sort();
        keys.dedup();

        // Everything that can fail first; `self` is changed only once nothing can.
        let mut policies: Vec<(&ResourceKey, Option<Policy>)> = Vec::new();
        let mut members = false;
        for key in &keys {
            if is_policy_kind(key.kind) {
                let p = match store.get(key) {
                    Some(r) => policy_of(key, r)?,
                    None => None,
                };
                policies.push((key, p));
            } else if key.kind != Kind::Tier {
                members = true;
            }
        }
        let rebuilt = if members {
            let mut c = Cluster::default();
            c.set_members(
                store
                    .entries()
                    .filter(|(k, _)| !is_policy_kind(k.kind) && k.kind != Kind::Tier)
                    .map(|(k, s)| (k, &s.resource)),
            )?;
            Some(c)
        } else {
            None
        };

        self.patch_policies(policies);
        for key in keys.iter().filter(|k| k.kind == Kind::Tier) {
            match store.get(key) {
                Some(Resource::Tier(o)) => {
                    self.tiers.insert(key.name.clone(), tier_of(o));
                }
                _ => match BUILTIN_TIERS.iter().find(|(n, _, _)| *n == key.name) {
                    Some((name, order, action)) => {
                        self.tiers
                            .insert(key.name.clone(), builtin_tier(name, *order, *action));
                    }
                    None => {
                        self.tiers.remove(&key.name);
                    }
                },
            }
        }
        if let Some(c) = rebuilt {
            self.endpoints = c.endpoints;
            self.network_sets = c.network_sets;
            self.profiles = c.profiles;
        }
        Ok(())
    }

    /// Replaces, inserts or removes the policy of each key (`changes` in key order),
    /// keeping `policies` in key order.
    fn patch_policies(&mut self, changes: Vec<(&ResourceKey, Option<Policy>)>) {
        if changes.len() <= MERGE_ABOVE {
            for (key, p) in changes {
                match (self.policies.binary_search_by(|q| q.key.cmp(key)), p) {
                    (Ok(i), Some(p)) => self.policies[i] = p,
                    (Ok(i), None) => {
                        self.policies.remove(i);
                    }
                    (Err(i), Some(p)) => self.policies.insert(i, p),
                    (Err(_), None) => {}
                }
            }
            return;
        }
        let old = std::mem::take(&mut self.policies);
        let mut out = Vec::with_capacity(old.len() + changes.len());
        let mut old = old.into_iter().peekable();
        for (key, p) in changes {
            while let Some(q) = old.next_if(|q| q.key < *key) {
                out.push(q);
            }
            // The old policy of a changed key is replaced (or dropped).
            let _ = old.next_if(|q| q.key == *key);
            out.extend(p);
        }
        out.extend(old);
        self.policies = out;
    }
}

#[cfg(test)]
mod proptests;
