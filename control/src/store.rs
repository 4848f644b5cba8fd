//! The resource store: every applied resource keyed by (kind, namespace, name), changed
//! only by atomic [`Store::apply`] and [`Store::delete`], with a generation counter.
//!
//! Promises:
//! - The built-in tiers `kube-admin` (order 1000, Pass), `default` (order 1 000 000,
//!   Deny) and `kube-baseline` (order 10 000 000, Pass) always exist and cannot be
//!   deleted; re-applying them is allowed only with exactly those values (validation).
//! - Everything in the store is defaulted and valid: `apply` re-runs
//!   [`model::defaults`](crate::model::defaults) and [`model::validate`](crate::model::validate)
//!   on every resource, whatever produced it. Only the crate's own path from the loader
//!   to a fresh store (`policy::read_and_store`, which hands `model::load_set`'s output
//!   over untouched) skips that second run, through the crate-private `apply_validated`.
//! - A Calico policy (NetworkPolicy, GlobalNetworkPolicy and their staged kinds) may only
//!   be applied into a tier that exists in the store or in the same apply, as
//!   libcalico-go's clients require (`Create`: "Before creating the policy, check that
//!   the tier exists"). Kubernetes policies always live in `default`.
//! - A tier cannot be deleted while any policy is in it (libcalico-go `tiers.Delete`:
//!   "Cannot delete a non-empty tier"), unless the same delete removes those policies.
//! - `apply` and `delete` are all-or-nothing: on any error nothing changes and every
//!   error is returned. Each change that alters the store increments the generation.
//! - Applying an existing key replaces it (like `calicoctl apply`). A staged policy and an
//!   enforced policy with the same name are different keys.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::model::Loaded;
use crate::model::defaults::{self, DEFAULT_TIER};
use crate::model::load::Origin;
use crate::model::types::{
    HostEndpointSpec, K8sPolicySpec, Kind, NamespaceSpec, NetworkSetSpec, Object, ObjectMeta,
    PolicySpec, ProfileSpec, Resource, ResourceKey, TierDefaultAction, TierSpec,
    WorkloadEndpointSpec,
};
use crate::model::validate::{self, BUILTIN_TIERS};

mod keymap;
use keymap::KeyMap;

/// A stored resource and where it came from (`None` for the built-in tiers).
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The resource, defaulted and valid.
    pub resource: Resource,
    /// Where it was loaded from, if anywhere.
    pub origin: Option<Origin>,
}

/// A tier as the evaluator sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TierInfo<'a> {
    /// Tier name.
    pub name: &'a str,
    /// Order; `None` sorts after every ordered tier.
    pub order: Option<f64>,
    /// What happens when no policy in the tier decides.
    pub default_action: TierDefaultAction,
}

/// What an [`Store::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplySummary {
    /// Keys that did not exist before.
    pub created: usize,
    /// Keys whose resource changed.
    pub updated: usize,
    /// Keys applied with an identical resource.
    pub unchanged: usize,
    /// The store's generation after the apply.
    pub generation: u64,
}

/// One reason an apply or delete was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    /// The resource concerned.
    pub key: ResourceKey,
    /// Where the offending resource came from (apply of loaded resources).
    pub origin: Option<Origin>,
    /// Field path inside the resource, when one field is at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => {
                write!(f, "{}:{}", o.source, o.document)?;
                let field = format!(
                    "{}{}",
                    o.field_prefix(),
                    self.field.as_deref().unwrap_or("")
                );
                let field = field.trim_end_matches('.');
                if !field.is_empty() {
                    write!(f, ": {field}")?;
                }
            }
            None => {
                write!(f, "{}", self.key)?;
                if let Some(field) = &self.field {
                    write!(f, ": {field}")?;
                }
            }
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every reason an apply or delete was refused. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct StoreErrors(pub Vec<StoreError>);

impl fmt::Display for StoreErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The resource store. Entries are shared (`Arc`) and so is the key index, in chunks
/// ([`keymap`]): a clone copies one pointer per few dozen keys, a change to the clone
/// copies the chunk it touches, so a change can be prepared on a copy and dropped on
/// error cheaply, at any store size.
#[derive(Clone, Debug)]
pub struct Store {
    objects: KeyMap<Arc<Stored>>,
    generation: u64,
    /// Keys of the resources the daemon last read from its `-f` sources (at start or
    /// at a SIGHUP reload): what a reload deletes when the files no longer hold them.
    file_keys: Arc<BTreeSet<ResourceKey>>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// A store holding only the built-in tiers, at generation 0.
    pub fn new() -> Store {
        let mut objects = KeyMap::new();
        for r in builtin_tiers() {
            objects.insert(
                r.key(),
                Arc::new(Stored {
                    resource: r,
                    origin: None,
                }),
            );
        }
        Store {
            objects,
            generation: 0,
            file_keys: Arc::new(BTreeSet::new()),
        }
    }

    /// Keys the daemon last read from its `-f` sources (see [`Store::set_file_keys`]).
    /// Applies and deletes leave them as they are.
    pub fn file_keys(&self) -> &BTreeSet<ResourceKey> {
        &self.file_keys
    }

    /// Records which keys came from the `-f` sources (kept with the store, and so in
    /// `--state-dir`, for the next reload to know what the files dropped).
    pub fn set_file_keys(&mut self, keys: BTreeSet<ResourceKey>) {
        self.file_keys = Arc::new(keys);
    }

    /// Whether `key` is a built-in tier (always present, never deleted).
    pub fn is_builtin(key: &ResourceKey) -> bool {
        key.kind == Kind::Tier && BUILTIN_TIERS.iter().any(|(n, _, _)| *n == key.name)
    }

    /// The generation: 0 for a new store, +1 for every apply or delete that changed it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Applies `items` atomically: all are stored, or none (and every error is returned).
    /// The keys a change touched are [`Store::changed_keys`] of the store before and after.
    pub fn apply(&mut self, items: Vec<Loaded>) -> Result<ApplySummary, StoreErrors> {
        self.apply_items(items, true)
    }

    /// [`Store::apply`] of resources the loader has just defaulted and validated
    /// (`model::load_*` with processing, handed over untouched): they are not defaulted
    /// and validated a second time. Crate-private, so nothing else can skip validation.
    pub(crate) fn apply_validated(
        &mut self,
        items: Vec<Loaded>,
    ) -> Result<ApplySummary, StoreErrors> {
        self.apply_items(items, false)
    }

    fn apply_items(
        &mut self,
        items: Vec<Loaded>,
        validate: bool,
    ) -> Result<ApplySummary, StoreErrors> {
        let mut errors = Vec::new();
        let mut batch: BTreeMap<ResourceKey, Stored> = BTreeMap::new();
        for Loaded {
            mut resource,
            origin,
        } in items
        {
            if validate {
                defaults::apply(&mut resource);
            }
            let key = resource.key();
            if validate {
                for p in validate::validate(&resource) {
                    errors.push(StoreError {
                        key: key.clone(),
                        origin: Some(origin.clone()),
                        field: Some(p.field),
                        reason: p.reason,
                    });
                }
            }
            if let Some(first) = batch.get(&key) {
                errors.push(applied_twice(&key, &origin, first.origin.as_ref()));
                continue;
            }
            batch.insert(
                key,
                Stored {
                    resource,
                    origin: Some(origin),
                },
            );
        }
        for (key, stored) in &batch {
            let Some(tier) = policy_tier(&stored.resource) else {
                continue;
            };
            if !self.objects.contains_key(&tier_key(tier)) && !batch.contains_key(&tier_key(tier)) {
                errors.push(missing_tier(key, stored.origin.clone(), tier));
            }
        }
        if !errors.is_empty() {
            return Err(StoreErrors(errors));
        }
        let mut summary = ApplySummary::default();
        for (key, stored) in batch {
            match self.objects.get(&key) {
                None => summary.created += 1,
                Some(old) if old.resource == stored.resource => {
                    summary.unchanged += 1;
                    // The same resource from a new origin: stored, but not a change.
                    self.objects.insert(key, Arc::new(stored));
                    continue;
                }
                Some(_) => summary.updated += 1,
            }
            self.objects.insert(key, Arc::new(stored));
        }
        if summary.created + summary.updated > 0 {
            self.generation += 1;
        }
        summary.generation = self.generation;
        Ok(summary)
    }

    /// What [`Store::apply_validated`] of the resources outlined in `items` would do
    /// beyond storing them: the same errors (a key applied twice, a policy in a tier
    /// that neither the store nor `items` defines), or the resources per kind of the
    /// store after it ([`Store::counts`]). The store is not changed, and nothing but
    /// the outlines is held.
    pub(crate) fn check_apply(
        &self,
        items: Vec<Outline>,
    ) -> Result<BTreeMap<Kind, usize>, StoreErrors> {
        // The batch in key order (first occurrence first), without copying the keys.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_unstable_by(|&a, &b| items[a].key.cmp(&items[b].key).then(a.cmp(&b)));
        let mut twice: Vec<(usize, StoreError)> = Vec::new();
        let mut batch: Vec<usize> = Vec::with_capacity(order.len());
        for i in order {
            match batch.last() {
                Some(&first) if items[first].key == items[i].key => {
                    let item = &items[i];
                    let e = applied_twice(&item.key, &item.origin, Some(&items[first].origin));
                    twice.push((i, e));
                }
                _ => batch.push(i),
            }
        }
        // In input order, as `apply` finds them.
        twice.sort_unstable_by_key(|(i, _)| *i);
        let mut errors: Vec<StoreError> = twice.into_iter().map(|(_, e)| e).collect();
        let tiers: HashSet<&str> = batch
            .iter()
            .map(|&i| &items[i].key)
            .chain(self.objects.iter().map(|(k, _)| k))
            .filter(|k| k.kind == Kind::Tier && k.namespace.is_none())
            .map(|k| k.name.as_str())
            .collect();
        for &i in &batch {
            let item = &items[i];
            let Some(tier) = item.tier.as_deref() else {
                continue;
            };
            if !tiers.contains(tier) {
                errors.push(missing_tier(&item.key, Some(item.origin.clone()), tier));
            }
        }
        if !errors.is_empty() {
            return Err(StoreErrors(errors));
        }
        let mut counts = BTreeMap::new();
        for &i in &batch {
            *counts.entry(items[i].key.kind).or_insert(0) += 1;
        }
        let in_batch = |k: &ResourceKey| batch.binary_search_by(|&i| items[i].key.cmp(k)).is_ok();
        for (key, stored) in self.objects.iter() {
            if stored.origin.is_some() && !in_batch(key) {
                *counts.entry(key.kind).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Deletes `keys` atomically; returns how many were deleted (all of them).
    pub fn delete(&mut self, keys: &[ResourceKey]) -> Result<usize, StoreErrors> {
        let mut errors = Vec::new();
        let doomed: BTreeSet<&ResourceKey> = keys.iter().collect();
        for key in &doomed {
            if !self.objects.contains_key(key) {
                errors.push(key_error(key, "not found"));
            } else if key.kind == Kind::Tier && BUILTIN_TIERS.iter().any(|(n, _, _)| *n == key.name)
            {
                errors.push(key_error(
                    key,
                    format!("cannot delete the built-in tier {:?}", key.name),
                ));
            }
        }
        for key in doomed.iter().filter(|k| k.kind == Kind::Tier) {
            let remaining: Vec<&ResourceKey> = self
                .objects
                .iter()
                .filter(|(k, s)| {
                    !doomed.contains(k) && policy_tier(&s.resource) == Some(key.name.as_str())
                })
                .map(|(k, _)| k)
                .collect();
            if let Some(first) = remaining.first() {
                errors.push(key_error(
                    key,
                    format!(
                        "cannot delete a non-empty tier: {} policies are in it (first: {first})",
                        remaining.len()
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(StoreErrors(errors));
        }
        for key in &doomed {
            self.objects.remove(key);
        }
        if !doomed.is_empty() {
            self.generation += 1;
        }
        Ok(doomed.len())
    }

    /// The keys whose entries differ between `self` and `other` (in one of them only,
    /// or with a different resource; a new origin alone is no difference), in key
    /// order. Chunks of the key index and entries a copy shares with its original are
    /// skipped without comparing them, so comparing a store with a copy changed in a
    /// few keys costs a walk of the chunk pointers and of the chunks the change copied.
    pub fn changed_keys(&self, other: &Store) -> Vec<ResourceKey> {
        let mut out = Vec::new();
        self.objects.diff(&other.objects, |k, a, b| match (a, b) {
            (Some(sa), Some(sb)) if Arc::ptr_eq(sa, sb) || sa.resource == sb.resource => {}
            _ => out.push(k.clone()),
        });
        out
    }

    /// The resource stored under `key`.
    pub fn get(&self, key: &ResourceKey) -> Option<&Resource> {
        self.objects.get(key).map(|s| &s.resource)
    }

    /// The stored entry (resource and origin) under `key`.
    pub fn entry(&self, key: &ResourceKey) -> Option<&Stored> {
        self.objects.get(key).map(|s| &**s)
    }

    /// Number of stored resources, built-in tiers included.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store holds nothing but the built-in tiers.
    pub fn is_empty(&self) -> bool {
        self.objects.values().all(|s| s.origin.is_none())
    }

    /// Every stored resource, in key order (kind, namespace, name).
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.objects.values().map(|s| &s.resource)
    }

    /// Every stored entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&ResourceKey, &Stored)> {
        self.objects.iter().map(|(k, s)| (k, &**s))
    }

    /// The resources of one kind, in (namespace, name) order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.objects
            .iter()
            .filter(move |(k, _)| k.kind == kind)
            .map(|(_, s)| &s.resource)
    }

    /// Every tier, built-ins included, in key (name) order.
    pub fn tiers(&self) -> impl Iterator<Item = TierInfo<'_>> {
        self.of_kind(Kind::Tier).filter_map(|r| match r {
            Resource::Tier(o) => Some(tier_info(o)),
            _ => None,
        })
    }

    /// Tiers in evaluation order: `order` ascending with `None` last, ties by name
    /// (felix `TierLess`).
    pub fn tiers_in_order(&self) -> Vec<TierInfo<'_>> {
        let mut tiers: Vec<TierInfo<'_>> = self.tiers().collect();
        tiers.sort_by(|a, b| {
            let ord = match (a.order, b.order) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            ord.then_with(|| a.name.cmp(b.name))
        });
        tiers
    }

    /// The tier named `name`.
    pub fn tier(&self, name: &str) -> Option<TierInfo<'_>> {
        match self.get(&tier_key(name)) {
            Some(Resource::Tier(o)) => Some(tier_info(o)),
            _ => None,
        }
    }

    /// Calico policies (NetworkPolicy, GlobalNetworkPolicy, StagedNetworkPolicy,
    /// StagedGlobalNetworkPolicy) with their kind, in key order.
    pub fn calico_policies(&self) -> impl Iterator<Item = (Kind, &Object<PolicySpec>)> {
        self.resources().filter_map(|r| match r {
            Resource::NetworkPolicy(o)
            | Resource::GlobalNetworkPolicy(o)
            | Resource::StagedNetworkPolicy(o)
            | Resource::StagedGlobalNetworkPolicy(o) => Some((r.kind(), o)),
            _ => None,
        })
    }

    /// Kubernetes policies (`networking.k8s.io/v1` NetworkPolicy and
    /// StagedKubernetesNetworkPolicy) with their kind, in key order.
    pub fn k8s_policies(&self) -> impl Iterator<Item = (Kind, &Object<K8sPolicySpec>)> {
        self.resources().filter_map(|r| match r {
            Resource::KubernetesNetworkPolicy(o) | Resource::StagedKubernetesNetworkPolicy(o) => {
                Some((r.kind(), o))
            }
            _ => None,
        })
    }

    /// Namespaces.
    pub fn namespaces(&self) -> impl Iterator<Item = &Object<NamespaceSpec>> {
        self.of_kind(Kind::Namespace).filter_map(|r| match r {
            Resource::Namespace(o) => Some(o),
            _ => None,
        })
    }

    /// Workload endpoints.
    pub fn workload_endpoints(&self) -> impl Iterator<Item = &Object<WorkloadEndpointSpec>> {
        self.of_kind(Kind::WorkloadEndpoint)
            .filter_map(|r| match r {
                Resource::WorkloadEndpoint(o) => Some(o),
                _ => None,
            })
    }

    /// Host endpoints.
    pub fn host_endpoints(&self) -> impl Iterator<Item = &Object<HostEndpointSpec>> {
        self.of_kind(Kind::HostEndpoint).filter_map(|r| match r {
            Resource::HostEndpoint(o) => Some(o),
            _ => None,
        })
    }

    /// Network sets (NetworkSet and GlobalNetworkSet) with their kind.
    pub fn network_sets(&self) -> impl Iterator<Item = (Kind, &Object<NetworkSetSpec>)> {
        self.resources().filter_map(|r| match r {
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => Some((r.kind(), o)),
            _ => None,
        })
    }

    /// Profiles stored explicitly (the implicit `kns.<namespace>` / `ksa.<ns>.<sa>`
    /// profiles of CALICO_SEMANTICS §1 are derived by the evaluator, not stored).
    pub fn profiles(&self) -> impl Iterator<Item = &Object<ProfileSpec>> {
        self.of_kind(Kind::Profile).filter_map(|r| match r {
            Resource::Profile(o) => Some(o),
            _ => None,
        })
    }

    /// Number of stored resources of each kind, built-in tiers excluded.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for s in self.objects.values().filter(|s| s.origin.is_some()) {
            *counts.entry(s.resource.kind()).or_insert(0) += 1;
        }
        counts
    }
}

fn builtin_tiers() -> impl Iterator<Item = Resource> {
    BUILTIN_TIERS.iter().map(|(name, order, action)| {
        Resource::Tier(Object {
            metadata: ObjectMeta {
                name: (*name).to_string(),
                ..Default::default()
            },
            spec: TierSpec {
                order: Some(*order),
                default_action: Some(*action),
            },
        })
    })
}

/// What an apply looks at of a defaulted and validated resource beyond storing it
/// (see [`Store::check_apply`]): its key, where it came from, and the tier it must go
/// in if it is a policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outline {
    /// The resource's key.
    pub key: ResourceKey,
    /// Where it was loaded from.
    pub origin: Origin,
    /// The tier a policy goes in (`None` for other kinds).
    pub tier: Option<String>,
}

impl Outline {
    /// The outline of `resource` (defaulted) loaded from `origin`: the plain twin of
    /// [`Outline::key_and_tier`], which the loader uses.
    #[cfg(test)]
    pub(crate) fn of(resource: &Resource, origin: Origin) -> Outline {
        Outline {
            key: resource.key(),
            origin,
            tier: policy_tier(resource).map(str::to_string),
        }
    }

    /// The key and tier of [`Outline::of`], of a resource no longer needed: its name,
    /// namespace and tier are moved out, not copied.
    pub(crate) fn key_and_tier(mut resource: Resource) -> (ResourceKey, Option<String>) {
        let tier = match &mut resource {
            Resource::NetworkPolicy(o)
            | Resource::GlobalNetworkPolicy(o)
            | Resource::StagedNetworkPolicy(o)
            | Resource::StagedGlobalNetworkPolicy(o) => Some(match o.spec.tier.take() {
                Some(t) if !t.is_empty() => t,
                _ => DEFAULT_TIER.to_string(),
            }),
            r => policy_tier(r).map(str::to_string),
        };
        let kind = resource.kind();
        let meta = resource.metadata_mut();
        let key = ResourceKey {
            kind,
            namespace: if kind.is_namespaced() {
                meta.namespace.take()
            } else {
                None
            },
            name: std::mem::take(&mut meta.name),
        };
        (key, tier)
    }
}

fn applied_twice(key: &ResourceKey, origin: &Origin, first: Option<&Origin>) -> StoreError {
    StoreError {
        key: key.clone(),
        origin: Some(origin.clone()),
        field: Some("metadata.name".into()),
        reason: format!(
            "{key} is applied twice (first at {})",
            first.map_or_else(String::new, ToString::to_string)
        ),
    }
}

fn missing_tier(key: &ResourceKey, origin: Option<Origin>, tier: &str) -> StoreError {
    StoreError {
        key: key.clone(),
        origin,
        field: Some("spec.tier".into()),
        reason: format!(
            "tier {tier:?} does not exist: apply a Tier named {tier:?} first (or in the same apply)"
        ),
    }
}

fn tier_key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::Tier,
        namespace: None,
        name: name.to_string(),
    }
}

fn tier_info(o: &Object<TierSpec>) -> TierInfo<'_> {
    TierInfo {
        name: &o.metadata.name,
        order: o.spec.order,
        default_action: o.spec.default_action.unwrap_or_default(),
    }
}

/// The tier a stored policy belongs to (Kubernetes policies: `default`).
fn policy_tier(r: &Resource) -> Option<&str> {
    match r {
        Resource::NetworkPolicy(o)
        | Resource::GlobalNetworkPolicy(o)
        | Resource::StagedNetworkPolicy(o)
        | Resource::StagedGlobalNetworkPolicy(o) => Some(defaults::tier_of(&o.spec)),
        Resource::KubernetesNetworkPolicy(_) | Resource::StagedKubernetesNetworkPolicy(_) => {
            Some(DEFAULT_TIER)
        }
        _ => None,
    }
}

fn key_error(key: &ResourceKey, reason: impl Into<String>) -> StoreError {
    StoreError {
        key: key.clone(),
        origin: None,
        field: None,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests;
