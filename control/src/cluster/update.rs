//! Keeping a [`Cluster`] up to date with a [`Store`] change without normalising every
//! resource again: the fast twin of [`Cluster::from_resources`].
//!
//! A policy or tier change re-normalises that resource only (a policy's selectors are
//! parsed again; the others are kept). A change of workload endpoints only that
//! leaves the implicit profiles (`kns.<ns>`, `ksa.<ns>.<sa>`) as they are puts those
//! endpoints in place (a pod coming or going in a namespace that keeps others, or a
//! Namespace resource): an insert or a removal in the sorted endpoint list, which
//! moves one pointer per endpoint after it (endpoints are `Arc`'d). A change of any other kind (host endpoint, network set,
//! namespace, profile, or a workload endpoint that adds or drops an implicit
//! profile) rebuilds the endpoints, network sets and profiles from the store, which
//! never parses a policy selector. The property test in `proptests.rs`
//! checks that after any sequence of applies and deletes the result is exactly
//! `Cluster::from_resources` of the store.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    BUILTIN_TIERS, Cluster, ClusterError, Endpoint, EndpointKind, Policy, builtin_tier,
    is_policy_kind, namespace_of, namespace_profile_name, policy_of, service_account_profile_name,
    tier_of, workload_endpoint,
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
        // Workload endpoints alone that leave the profiles as they are: only those
        // endpoints are normalised and put in place (`members` stays false).
        let workloads = members && keys.iter().all(|k| k.kind == Kind::WorkloadEndpoint);
        let patch = if workloads {
            self.workload_patch(store, &keys)
        } else {
            None
        };
        let members = members && patch.is_none();
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
        if let Some(patch) = patch {
            self.apply_workload_patch(patch);
        }
        if let Some(c) = rebuilt {
            self.endpoints = c.endpoints;
            self.network_sets = c.network_sets;
            self.profiles = c.profiles;
        }
        Ok(())
    }

    /// The workload endpoints under `keys` (all workload endpoint keys, in key order)
    /// as `store` holds them (`None`: deleted), when putting them in place of the
    /// current ones leaves the profiles unchanged: every implicit profile a new
    /// endpoint implies (`kns.<ns>`, `ksa.<ns>.<sa>`) exists already, and every one
    /// an old endpoint implied is still implied by a Namespace, an explicit Profile or
    /// another workload endpoint of its namespace, or is implied by a new one. `None`
    /// when that cannot be shown cheaply, or for more than [`MERGE_ABOVE`] keys (each
    /// is put in place by an insert or a removal; the caller rebuilds the members).
    fn workload_patch<'k>(
        &self,
        store: &Store,
        keys: &[&'k ResourceKey],
    ) -> Option<Vec<(&'k ResourceKey, Option<Endpoint>)>> {
        if keys.len() > MERGE_ABOVE {
            return None;
        }
        // The implicit profiles of a stored workload endpoint.
        let implied = |r: Option<&Resource>| -> Vec<String> {
            let Some(Resource::WorkloadEndpoint(o)) = r else {
                return Vec::new();
            };
            let ns = namespace_of(&o.metadata);
            let sa = o.spec.service_account_name.as_str();
            let mut names = vec![namespace_profile_name(ns)];
            if !sa.is_empty() {
                names.push(service_account_profile_name(ns, sa));
            }
            names
        };
        let mut patch = Vec::with_capacity(keys.len());
        let mut added: HashSet<String> = HashSet::new();
        let mut old_names: Vec<(String, Option<String>)> = Vec::new();
        for key in keys {
            let new = match store.get(key) {
                Some(Resource::WorkloadEndpoint(o)) => Some(workload_endpoint(key, o)),
                Some(_) => return None,
                None => None,
            };
            if new.is_some() {
                for name in implied(store.get(key)) {
                    if !self.profiles.contains_key(&name) {
                        return None;
                    }
                    added.insert(name);
                }
            }
            if let Ok(i) = self.workload_index(key) {
                // The old endpoint's implicit profiles, from its normalised form: the
                // namespace and the service account from their labels (a
                // user label of that name without a service account makes the check
                // stricter, never looser).
                let old = &self.endpoints[i];
                let ns = old.labels.get(super::NAMESPACE_LABEL)?.clone();
                let sa = old.labels.get(super::SERVICE_ACCOUNT_LABEL).cloned();
                old_names.push((ns, sa));
            }
            patch.push((*key, new));
        }
        let changed = |k: &ResourceKey| keys.binary_search(&k).is_ok();
        // Each implicit profile is checked once, however many endpoints implied it.
        old_names.sort_unstable();
        old_names.dedup();
        for (ns, sa) in old_names {
            let kns = namespace_profile_name(&ns);
            let still = |name: &str, sa: Option<&str>| {
                added.contains(name)
                    || store
                        .get(&ResourceKey {
                            kind: Kind::Profile,
                            namespace: None,
                            name: name.to_string(),
                        })
                        .is_some()
                    || (sa.is_none()
                        && store
                            .get(&ResourceKey {
                                kind: Kind::Namespace,
                                namespace: None,
                                name: ns.clone(),
                            })
                            .is_some())
                    || self.namespace_workloads(&ns).any(|e| {
                        !changed(&e.key)
                            && sa.is_none_or(|sa| match store.get(&e.key) {
                                Some(Resource::WorkloadEndpoint(o)) => {
                                    o.spec.service_account_name == sa
                                }
                                _ => false,
                            })
                    })
            };
            if !still(&kns, None) {
                return None;
            }
            if let Some(sa) = sa.as_deref() {
                let ksa = service_account_profile_name(&ns, sa);
                // An old profile list without it: the label was a user label.
                if !still(&ksa, Some(sa)) {
                    return None;
                }
            }
        }
        Some(patch)
    }

    /// Index of the workload endpoint under `key` in `endpoints` (workloads first,
    /// in key order), or where it would be inserted.
    fn workload_index(&self, key: &ResourceKey) -> Result<usize, usize> {
        let workloads = self
            .endpoints
            .partition_point(|e| e.kind == EndpointKind::Workload);
        self.endpoints[..workloads].binary_search_by(|e| e.key.cmp(key))
    }

    /// The workload endpoints of namespace `ns` (adjacent in key order).
    fn namespace_workloads<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        let workloads = self
            .endpoints
            .partition_point(|e| e.kind == EndpointKind::Workload);
        let list = &self.endpoints[..workloads];
        let start = list.partition_point(|e| e.key.namespace.as_deref() < Some(ns));
        list[start..]
            .iter()
            .take_while(move |e| e.key.namespace.as_deref() == Some(ns))
            .map(|e| &**e)
    }

    /// Puts the endpoints of a [`Cluster::workload_patch`] in place.
    fn apply_workload_patch(&mut self, patch: Vec<(&ResourceKey, Option<Endpoint>)>) {
        for (key, new) in patch {
            match (self.workload_index(key), new) {
                (Ok(i), Some(e)) => self.endpoints[i] = Arc::new(e),
                (Ok(i), None) => {
                    self.endpoints.remove(i);
                }
                (Err(i), Some(e)) => self.endpoints.insert(i, Arc::new(e)),
                (Err(_), None) => {}
            }
        }
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
