//! A live policy generation: the store, the published [`IdentityClassifier`] and its
//! [`Names`], kept together so that the common change — a pod arriving or leaving
//! with a label set that already exists — costs one LPM insert instead of a new
//! generation.
//!
//! # What a change costs
//! - **Endpoint added** whose *label key* (kind, namespace, labels, profiles, named
//!   ports: everything selectors, named ports and applies-to read) another bound
//!   endpoint already has, with host prefixes (/32, /128) that no rule, network set
//!   or other endpoint names and that lie in the same rule CIDRs as that endpoint's
//!   ([`IdentityClassifier::with_host`] checks the last): the new generation shares
//!   the trees; its addresses join the exemplar's identity and programs. The
//!   endpoint's id is the next in [`Names`].
//! - **Endpoint removed** whose host prefixes no rule or network set names and no
//!   other endpoint has ([`IdentityClassifier::without_host`]): same. Its id stays
//!   as an unused entry of [`Names`].
//! - **Endpoint relabelled**: removed, then added.
//! - Everything else — a new label key, a namespace or profile relabel, a network set
//!   or policy change, an address shared by two endpoints — is a full rebuild
//!   ([`Live::set_cluster`], [`lower`] then [`IdentityClassifier::build`]), which is
//!   also what the fast path must equal: the property test below checks, after random
//!   sequences of changes, that the live generation classifies every flow as a fresh
//!   build and [`crate::eval::evaluate`] do.
//!
//! Endpoints added on the fast path are appended to [`Cluster::endpoints`]: `eval`
//! uses the store order only to pick the owner of an address several endpoints
//! have, and such addresses never take the fast path.

use std::sync::Arc;

use dataplane::classifier::{BuildConfig, BuildError, IdentityClassifier};
use dataplane::program::{Classify, EndpointId, FlowVerdicts, ProgramId};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ipnet::IpNet;
use thiserror::Error;

use super::{EndpointName, LowerError, Names, endpoint_meta, id32, lower};
use crate::cluster::{Cluster, Endpoint, EndpointKind, Evaluation, Flow, MixedFamilies};
use crate::model::{EndpointPort, ResourceKey};

/// Why a live change failed (the previous generation stays published).
#[derive(Debug, Error)]
pub enum LiveError {
    /// The store does not lower.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// The lowered store does not compile.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// No endpoint has this key.
    #[error("no endpoint {0}")]
    UnknownEndpoint(ResourceKey),
}

/// How a change was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// On the fast path: the trees were kept.
    Fast,
    /// By a full rebuild.
    Rebuilt,
}

/// What selectors, named ports and applies-to read of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LabelKey {
    kind: EndpointKind,
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    profiles: Vec<String>,
    ports: Vec<EndpointPort>,
}

impl LabelKey {
    fn of(e: &Endpoint) -> LabelKey {
        LabelKey {
            kind: e.kind,
            namespace: e.key.namespace.clone(),
            labels: e
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            profiles: e.profiles.clone(),
            ports: e.ports.clone(),
        }
    }
}

/// Bound host prefixes of one label key, and the programs they share.
#[derive(Clone, Debug)]
struct Group {
    hosts: Vec<IpNet>,
    ingress: Option<ProgramId>,
    egress: Option<ProgramId>,
}

fn is_host(n: &IpNet) -> bool {
    n.prefix_len() == n.max_prefix_len()
}

/// A store with its published generation (see the module doc).
pub struct Live {
    cluster: Cluster,
    names: Names,
    classifier: Arc<IdentityClassifier>,
    cfg: BuildConfig,
    groups: HashMap<LabelKey, Group>,
    /// Prefixes rules (`nets`, `notNets`) and network sets name.
    named: HashSet<IpNet>,
    /// How many endpoints have each prefix.
    nets: HashMap<IpNet, u32>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("endpoints", &self.cluster.endpoints.len())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Lowers and compiles `cluster`.
    pub fn new(cluster: Cluster, cfg: BuildConfig) -> Result<Live, LiveError> {
        let (names, classifier, groups) = Self::build(&cluster, &cfg)?;
        let mut live = Live {
            cluster,
            names,
            classifier: Arc::new(classifier),
            cfg,
            groups,
            named: HashSet::new(),
            nets: HashMap::new(),
        };
        live.index();
        Ok(live)
    }

    fn build(
        cluster: &Cluster,
        cfg: &BuildConfig,
    ) -> Result<(Names, IdentityClassifier, HashMap<LabelKey, Group>), LiveError> {
        let lowered = lower(cluster)?;
        let classifier = IdentityClassifier::build(&lowered.set, cfg)?;
        let mut groups: HashMap<LabelKey, Group> = HashMap::new();
        for b in &lowered.set.endpoints {
            let Some(owner) = cluster.endpoints.get(b.endpoint.0 as usize) else {
                continue;
            };
            if !is_host(&b.net) || !owner.nets.iter().any(|n| n.trunc() == b.net) {
                continue;
            }
            groups
                .entry(LabelKey::of(owner))
                .or_insert_with(|| Group {
                    hosts: Vec::new(),
                    ingress: b.ingress,
                    egress: b.egress,
                })
                .hosts
                .push(b.net);
        }
        Ok((lowered.names, classifier, groups))
    }

    /// The prefix indexes the fast path consults.
    fn index(&mut self) {
        self.named.clear();
        self.nets.clear();
        let c = &self.cluster;
        let rules = c
            .policies
            .iter()
            .flat_map(|p| p.ingress.iter().chain(&p.egress))
            .chain(
                c.profiles
                    .values()
                    .flat_map(|p| p.ingress.iter().chain(&p.egress)),
            );
        for r in rules {
            for m in [&r.source, &r.destination] {
                self.named
                    .extend(m.nets.iter().chain(&m.not_nets).map(IpNet::trunc));
            }
        }
        for s in &c.network_sets {
            self.named.extend(s.nets.iter().map(IpNet::trunc));
        }
        for e in &c.endpoints {
            for n in &e.nets {
                *self.nets.entry(n.trunc()).or_insert(0) += 1;
            }
        }
    }

    /// The store as the live generation sees it.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The published classifier.
    pub fn classifier(&self) -> &Arc<IdentityClassifier> {
        &self.classifier
    }

    /// Names of the published classifier's ids.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Replaces the whole store: a full rebuild.
    pub fn set_cluster(&mut self, cluster: Cluster) -> Result<Applied, LiveError> {
        let (names, classifier, groups) = Self::build(&cluster, &self.cfg)?;
        self.cluster = cluster;
        self.names = names;
        self.classifier = Arc::new(classifier);
        self.groups = groups;
        self.index();
        Ok(Applied::Rebuilt)
    }

    fn rebuild(&mut self) -> Result<Applied, LiveError> {
        let cluster = std::mem::take(&mut self.cluster);
        match Self::build(&cluster, &self.cfg) {
            Ok((names, classifier, groups)) => {
                self.cluster = cluster;
                self.names = names;
                self.classifier = Arc::new(classifier);
                self.groups = groups;
                self.index();
                Ok(Applied::Rebuilt)
            }
            Err(e) => {
                self.cluster = cluster;
                Err(e)
            }
        }
    }

    /// Adds an endpoint (a replaced one of the same key is [`Live::replace_endpoint`]).
    pub fn add_endpoint(&mut self, ep: Endpoint) -> Result<Applied, LiveError> {
        if self.try_add(&ep) {
            self.cluster.endpoints.push(ep);
            return Ok(Applied::Fast);
        }
        let before = self.cluster.endpoints.len();
        self.cluster.endpoints.push(ep);
        self.rebuild().inspect_err(|_| {
            self.cluster.endpoints.truncate(before);
        })
    }

    /// Removes the endpoint with this key.
    pub fn remove_endpoint(&mut self, key: &ResourceKey) -> Result<Applied, LiveError> {
        let i = self
            .cluster
            .endpoints
            .iter()
            .position(|e| &e.key == key)
            .ok_or_else(|| LiveError::UnknownEndpoint(key.clone()))?;
        if self.try_remove(i) {
            self.cluster.endpoints.remove(i);
            return Ok(Applied::Fast);
        }
        let gone = self.cluster.endpoints.remove(i);
        self.rebuild().inspect_err(|_| {
            self.cluster.endpoints.insert(i, gone.clone());
        })
    }

    /// Replaces the endpoint with `ep`'s key (a relabel, a move): removed, then added.
    pub fn replace_endpoint(&mut self, ep: Endpoint) -> Result<Applied, LiveError> {
        let i = self
            .cluster
            .endpoints
            .iter()
            .position(|e| e.key == ep.key)
            .ok_or_else(|| LiveError::UnknownEndpoint(ep.key.clone()))?;
        if self.try_remove(i) {
            self.cluster.endpoints.remove(i);
            if self.try_add(&ep) {
                self.cluster.endpoints.push(ep);
                return Ok(Applied::Fast);
            }
            self.cluster.endpoints.push(ep);
            return self.rebuild();
        }
        let old = std::mem::replace(&mut self.cluster.endpoints[i], ep);
        self.rebuild().inspect_err(|_| {
            self.cluster.endpoints[i] = old.clone();
        })
    }

    /// The fast path of an add; on success the classifier, names and indexes are
    /// updated (the caller appends the endpoint to the store).
    fn try_add(&mut self, ep: &Endpoint) -> bool {
        if ep.nets.is_empty() || !ep.nets.iter().all(is_host) {
            return false;
        }
        let key = LabelKey::of(ep);
        let Some(group) = self.groups.get(&key) else {
            return false;
        };
        let Ok(id) = id32("endpoints", self.names.endpoints.len()) else {
            return false;
        };
        let mut next: Option<IdentityClassifier> = None;
        for n in &ep.nets {
            let n = n.trunc();
            if self.named.contains(&n) || self.nets.contains_key(&n) {
                return false;
            }
            let Some(like) = group.hosts.iter().find(|h| {
                matches!(
                    (h, &n),
                    (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                )
            }) else {
                return false;
            };
            let from = next.as_ref().unwrap_or(&self.classifier);
            match from.with_host(n, EndpointId(id), group.ingress, group.egress, *like) {
                Ok(c) => next = Some(c),
                Err(_) => return false,
            }
        }
        let Some(next) = next else { return false };
        let Some(owners) = self.names.owners.as_mut() else {
            return false;
        };
        for n in &ep.nets {
            let n = n.trunc();
            if owners
                .set_host(matches!(n, IpNet::V6(_)), addr_bits(&n), Some(id))
                .is_err()
            {
                return false;
            }
        }
        self.names.endpoints.push(EndpointName {
            key: ep.key.clone(),
            kind: ep.kind,
            display: ep.display_name(),
            meta: endpoint_meta(ep),
        });
        self.classifier = Arc::new(next);
        let group = self.groups.get_mut(&key).expect("looked up above");
        for n in &ep.nets {
            group.hosts.push(n.trunc());
            *self.nets.entry(n.trunc()).or_insert(0) += 1;
        }
        true
    }

    /// The fast path of removing endpoint `i`; on success the classifier, names and
    /// indexes are updated (the caller removes it from the store).
    fn try_remove(&mut self, i: usize) -> bool {
        let ep = &self.cluster.endpoints[i];
        if ep.nets.is_empty() || !ep.nets.iter().all(is_host) {
            return false;
        }
        let mut next: Option<IdentityClassifier> = None;
        for n in &ep.nets {
            let n = n.trunc();
            if self.named.contains(&n) || self.nets.get(&n).is_none_or(|&c| c != 1) {
                return false;
            }
            let from = next.as_ref().unwrap_or(&self.classifier);
            match from.without_host(n) {
                Ok(c) => next = Some(c),
                Err(_) => return false,
            }
        }
        let Some(next) = next else { return false };
        let Some(owners) = self.names.owners.as_mut() else {
            return false;
        };
        for n in &ep.nets {
            let n = n.trunc();
            if owners
                .set_host(matches!(n, IpNet::V6(_)), addr_bits(&n), None)
                .is_err()
            {
                return false;
            }
        }
        self.classifier = Arc::new(next);
        let key = LabelKey::of(ep);
        let nets: Vec<IpNet> = ep.nets.iter().map(IpNet::trunc).collect();
        if let Some(g) = self.groups.get_mut(&key) {
            g.hosts.retain(|h| !nets.contains(h));
            if g.hosts.is_empty() {
                self.groups.remove(&key);
            }
        }
        for n in nets {
            self.nets.remove(&n);
        }
        true
    }

    /// The evaluation of one flow by the published generation, as
    /// [`crate::eval::evaluate`] reports it.
    pub fn evaluation(&self, flow: &Flow) -> Result<Evaluation, MixedFamilies> {
        let key = flow.key().ok_or(MixedFamilies {
            src: flow.src,
            dst: flow.dst,
        })?;
        let mut out = [FlowVerdicts::default()];
        self.classifier.classify(&[key], &mut out);
        Ok(self
            .names
            .evaluation_of(self.classifier.as_ref(), flow, &out[0]))
    }
}

fn addr_bits(n: &IpNet) -> u128 {
    match n {
        IpNet::V4(n) => u32::from(n.addr()).into(),
        IpNet::V6(n) => n.addr().into(),
    }
}

#[cfg(test)]
mod tests;
