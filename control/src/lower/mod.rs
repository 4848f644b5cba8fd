//! Lowering: a normalised policy store ([`Cluster`]) → the data plane's [`PolicySet`]
//! (one [`Program`] per local endpoint and direction, deduplicated) plus the [`Names`]
//! that turn the data plane's opaque ids back into Calico hit strings and flow-log
//! endpoint names.
//!
//! # What it promises
//! For every flow, classifying it over the lowered set (with any [`Classify`]
//! implementation that follows the contract in `dataplane::program`) and rendering the
//! result with [`Lowered::evaluation`] gives exactly what [`crate::eval::evaluate`] gives:
//! the same reporters, endpoints, verdicts and hit strings in both views. The property
//! test in this module checks it on random stores and flows.
//!
//! # How
//! - **Which policies, in which order**: exactly the evaluator's building blocks in
//!   `crate::cluster` — [`Cluster::tiers_for`] (applies-to, tier and policy order,
//!   staged and enforced interleaved; called as [`Cluster::tiers_where`] with
//!   [`Cluster::policy_applies_by`], so that policies sharing an applies-to selector
//!   match it once per endpoint identity) and [`Cluster::profiles_for`]; nothing is
//!   re-derived here. A profile
//!   an endpoint names that does not exist lowers to a profile without rules.
//! - **Rules** (see the `rules` submodule): selectors, `notSelector`,
//!   `namespaceSelector` and service accounts (already scoped by
//!   [`crate::cluster::PeerMatch`]) become the prefixes of the endpoints and network sets
//!   they select; named ports split a rule into several IR rules with the same index.
//!   Rules with `services` never match (Kubernetes Services are not modelled) and lower
//!   to nothing; `http` criteria are L7 and ignored, as felix's data plane ignores them;
//!   Log rules are left out (they never decide).
//! - **Endpoints**: workload endpoints (`ipNetworks`) and host endpoints
//!   (`expectedIPs`). The data plane finds an address's endpoint by longest prefix;
//!   `eval` takes the first endpoint in store order that has the address. Each distinct
//!   endpoint prefix is therefore bound to the first endpoint whose prefixes contain it,
//!   which gives the same owner for every address.
//! - **Deduplication**: policy ids are global, rules do not depend on the local
//!   endpoint, so endpoints with the same applicable policies and profiles get
//!   identical Programs; each distinct Program is stored once. The work is shared too:
//!   what applies is computed once per distinct (labels, profiles) endpoint identity
//!   (each distinct applies-to selector matched once), a peer selector is matched
//!   once per such identity, a Program is built once per distinct (direction, tiers,
//!   policies, profiles) skeleton, and each rule is lowered once.
//! - **Names**: [`Names`] renders hits through `eval`'s [`PolicyHit`] (one rendering
//!   of hit strings in tiergate), and names flow ends for flow logs as felix does
//!   (`generateName*` for pods, the node for host endpoints, the longest-prefix
//!   network set, else `pub`/`pvt`).
//!
//! # How a generation is split, so that common changes are cheap
//! A cluster changes mostly by pods arriving and leaving; policies change a few times a
//! day. The published generation is therefore two layers (measured in BENCHMARKS.md
//! "Cluster scale", `bench scale`):
//! - **identity stage + trees** (`dataplane::classifier::IdentityClassifier`): the
//!   lowered set's address lists (selectors, named ports, CIDRs) are cut into
//!   *identities* — addresses in exactly the same lists — by one LPM, and the decision
//!   trees cut on identity ids. Replicas of a pod are one identity. Candidates weighed
//!   on the lowering bench's 5000 pods × 200 policies with named ports: the
//!   per-endpoint trees over the addresses themselves (8.5 s to build, 12.3 MB, one
//!   box edge per pod `/32` in every program naming it) against the identity stage
//!   (0.17 s, 1.4 MB, 842 identities, lookups 1.6× faster on the same keys, no
//!   verdict differs). Named ports need nothing of their own: a named port's
//!   endpoints are one more address list, resolved by the same stage. Endpoint
//!   bindings stay out of the trees (the stage's LPM gives the binding too), so the
//!   trees do not change when a pod comes or goes.
//! - **live state** ([`Live`]): the store, the names and, per *behaviour* (what
//!   lowering reads of an endpoint besides its addresses: kind, namespace, profiles,
//!   named ports, every selector's result on its labels), the bound hosts and their
//!   programs. An endpoint whose behaviour exists binds its host prefixes to that
//!   identity and those programs (one LPM insert, the trees shared); removal unbinds.
//!   A new behaviour joins the identity of a host with its *peer class* (how rules
//!   read it as a peer) if one exists — a build lowers a few spare endpoints for
//!   that, then unbinds them — with programs of its own.
//!   Everything else is a full rebuild, which stays the fallback and the oracle.
//!
//! - **incremental policy changes** ([`Live::update`]): lowering keeps a memo (policy
//!   ids stable across generations, every policy's lowered rules, programs by skeleton
//!   and content, the interned address lists); a policy change lowers that policy
//!   again and assembles programs only for the endpoints it applies to (before or
//!   after), and the identity classifier builds trees only for programs it has not
//!   seen.
//!
//! # Shared address lists
//! A rule's address lists ([`dataplane::program::Nets`], an `Arc<[IpNet]>`) are
//! shared, not copied: a named port expands into every endpoint defining it (about
//! 2,800 `/32`s per port number at 20,000 pods), and the same list is named by every
//! rule choice, rule list and program that uses it. Lowering interns each list it
//! produces (one allocation per content, kept in the memo) and computes set
//! operations once per pair of interned operands (see the `rules` submodule); rule
//! lists and programs are then compared by list address, and
//! `IdentityClassifier::build` looks each allocation up once. Cloning the lists per
//! rule choice and per program was most of a 20,000 / 1,000 generation (8 s, 2.3 GB
//! of peak memory; now about 0.3 s and 0.15 GB, BENCHMARKS.md "Cluster scale").
//!
//! Not done: a policy change whose peers split an identity (name some replicas of a
//! label set and not others, or a CIDR no rule named), a new behaviour that rules
//! read as a peer class no bound host and no spare of the build has (see [`Live`]),
//! a namespace, tier, profile or network set change are full rebuilds.

mod live;
mod nets;
mod rules;

pub use live::{Applied, Live, LiveError};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use dataplane::lpm::Lpm;
use dataplane::program::{
    Classify, EndpointBinding, EndpointId, FlowVerdicts, Hit, Nets, Policy, PolicyId, PolicySet,
    Program, ProgramId, Tier, TierDefault, TierId,
};
use ipnet::IpNet;
use thiserror::Error;

use crate::cluster::{
    self, Cluster, Endpoint, EndpointKind, EndpointMeta, EndpointType, Evaluation, Flow,
    MixedFamilies, NO_MATCH_NAME, Outcome, PolicyHit, Reporter, ReporterOutcome, Verdict,
};
use crate::model::{Kind, PolicyType, ResourceKey, TierDefaultAction};
use crate::selector::Selector;
#[cfg(test)]
pub(crate) use rules::peer_index_agrees;
use rules::{Interner, Resolver, match_eq, match_hash};
pub(crate) use rules::{PeerGroup, PeerIndex};

/// The tier name of profile hits.
const PROFILE_TIER: &str = cluster::PROFILE_TIER;

/// Why a store could not be lowered.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LowerError {
    /// One rule would need too many data-plane rules (named ports on both sides of
    /// many peer endpoints multiply).
    #[error(
        "{policy}: {direction} rule {rule} would lower to {count} data-plane rules (limit {limit}); split it or use fewer named ports"
    )]
    RuleTooLarge {
        /// The policy or profile.
        policy: ResourceKey,
        /// `ingress` or `egress`.
        direction: &'static str,
        /// Index of the rule in its list.
        rule: usize,
        /// Data-plane rules it would need, at least.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More policies, tiers or endpoints than the data plane's 32-bit ids can number.
    #[error("too many {what} to number ({count})")]
    TooMany {
        /// Policies, tiers or endpoints.
        what: &'static str,
        /// How many there are.
        count: usize,
    },
}

/// A lowered store: what the classifier is built from, and how to name its results.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// Programs and endpoint bindings.
    pub set: PolicySet,
    /// Id → name tables.
    pub names: Names,
}

/// What a [`PolicyId`] stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyName {
    /// Tier, or `__PROFILE__` for profiles.
    pub tier: String,
    /// Kind (or [`Kind::Profile`]), namespace, name.
    pub key: ResourceKey,
}

/// What an [`EndpointId`] stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointName {
    /// The resource.
    pub key: ResourceKey,
    /// Workload or host endpoint.
    pub kind: EndpointKind,
    /// `<ns>/<name>` or `<name>`, as `eval` reports it.
    pub display: String,
    /// The flow-log view of it.
    pub meta: EndpointMeta,
}

/// Id → name tables of one lowered store.
///
/// A clone shares the names themselves (the endpoint names in chunks, the policy
/// table until it is written): a live generation's names are copied for every
/// published generation, so that flow records are named as the generation that
/// classified them.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Indexed by [`PolicyId`]: policies, then profiles.
    policies: Arc<Vec<PolicyName>>,
    /// Indexed by [`TierId`].
    tiers: Vec<String>,
    /// Indexed by [`EndpointId`] (the store's endpoints in `eval` order).
    endpoints: EndpointNames,
    /// Endpoint prefix → owning endpoint id.
    owners: Option<Lpm>,
    /// Network set prefix → index into `network_set_meta` (first set in store order
    /// when several have the prefix).
    network_sets: Option<Lpm>,
    network_set_meta: Vec<EndpointMeta>,
}

/// Endpoint names per [`EndpointId`], in chunks of [`NAMES_CHUNK`] shared between
/// clones: a clone copies one pointer per chunk, a push copies at most the last
/// chunk's pointers.
#[derive(Clone, Debug, Default)]
struct EndpointNames {
    /// Every chunk full but the last.
    chunks: Vec<Arc<Vec<Arc<EndpointName>>>>,
    len: usize,
}

const NAMES_CHUNK: usize = 256;

impl EndpointNames {
    fn get(&self, i: usize) -> Option<&EndpointName> {
        self.chunks
            .get(i / NAMES_CHUNK)?
            .get(i % NAMES_CHUNK)
            .map(|e| &**e)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, e: EndpointName) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < NAMES_CHUNK => Arc::make_mut(c).push(Arc::new(e)),
            _ => self.chunks.push(Arc::new(vec![Arc::new(e)])),
        }
        self.len += 1;
    }

    /// Keeps the first `len` names (no change if there are fewer).
    fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let full = len / NAMES_CHUNK;
        let rest = len % NAMES_CHUNK;
        self.chunks.truncate(full + usize::from(rest > 0));
        if rest > 0
            && let Some(c) = self.chunks.last_mut()
        {
            Arc::make_mut(c).truncate(rest);
        }
        self.len = len;
    }
}

impl Names {
    /// The policy or profile behind an id.
    pub fn policy(&self, id: PolicyId) -> Option<&PolicyName> {
        self.policies.get(id.0 as usize)
    }

    /// The tier behind an id.
    pub fn tier(&self, id: TierId) -> Option<&str> {
        self.tiers.get(id.0 as usize).map(String::as_str)
    }

    /// The endpoint behind an id.
    pub fn endpoint(&self, id: EndpointId) -> Option<&EndpointName> {
        self.endpoints.get(id.0 as usize)
    }

    /// A data-plane hit as `eval` reports it. The "no profile matched" hit is
    /// `__NO_MATCH__` with rule index 0 (enforced view) and `__PROFILE__` with -1
    /// (pending view), per the contract in `dataplane::program`.
    pub fn policy_hit(&self, h: &Hit) -> PolicyHit {
        let profile = |name: &str| PolicyHit {
            tier: PROFILE_TIER.to_string(),
            kind: Kind::Profile,
            namespace: None,
            name: name.to_string(),
            action: h.action,
            rule_index: h.rule_index,
        };
        if h.policy == PolicyId::NO_PROFILE_MATCH {
            return profile(if h.rule_index == 0 {
                NO_MATCH_NAME
            } else {
                PROFILE_TIER
            });
        }
        match self.policy(h.policy) {
            Some(p) => PolicyHit {
                tier: p.tier.clone(),
                kind: p.key.kind,
                namespace: p.key.namespace.clone(),
                name: p.key.name.clone(),
                action: h.action,
                rule_index: h.rule_index,
            },
            // Only a hit from another generation's classifier can get here.
            None => profile(&format!("__UNKNOWN_{}__", h.policy.0)),
        }
    }

    /// One view's result as `eval` reports it.
    pub fn outcome(&self, verdict: Verdict, trace: &[Hit]) -> Outcome {
        Outcome {
            verdict,
            hits: trace.iter().map(|h| self.policy_hit(h)).collect(),
        }
    }

    /// A trace as Calico hit strings (`eval`'s rendering).
    pub fn hit_strings(&self, trace: &[Hit]) -> Vec<String> {
        // The verdict plays no part in the rendering.
        self.outcome(Verdict::Deny, trace).hit_strings()
    }

    /// How flow logs name the end of a flow at `ip`: the endpoint that owns it, else the
    /// network set with the longest prefix containing it (first in store order on a
    /// tie), else a plain network (`pub`/`pvt`).
    pub fn peer(&self, ip: IpAddr) -> EndpointMeta {
        if let Some(e) =
            lookup(self.owners.as_ref(), ip).and_then(|id| self.endpoint(EndpointId(id)))
        {
            return e.meta.clone();
        }
        lookup(self.network_sets.as_ref(), ip)
            .and_then(|i| self.network_set_meta.get(i as usize).cloned())
            .unwrap_or_else(|| EndpointMeta::network(ip))
    }
}

fn lookup(lpm: Option<&Lpm>, ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => lpm?.lookup_v4(a.into()),
        IpAddr::V6(a) => lpm?.lookup_v6(a.into()),
    }
}

/// An LPM table; `None` if a value does not fit its encoding (ids beyond 2^31, which
/// [`lower`] refuses earlier).
fn lpm_of(entries: &[(IpNet, u32)]) -> Option<Lpm> {
    Lpm::new(entries).ok()
}

fn endpoint_meta(e: &Endpoint) -> EndpointMeta {
    let labels = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match e.kind {
        // felix GetMetadata: pods aggregate under `generateName*`.
        EndpointKind::Workload => EndpointMeta {
            kind: EndpointType::Workload,
            name: match &e.generate_name {
                Some(g) => format!("{g}*"),
                None => e.key.name.clone(),
            },
            namespace: e.key.namespace.clone().unwrap_or_else(|| "-".to_string()),
            labels,
        },
        // felix names a host endpoint by its node; without one, by its own name.
        EndpointKind::Host => EndpointMeta {
            kind: EndpointType::Host,
            name: if e.node.is_empty() {
                e.key.name.clone()
            } else {
                e.node.clone()
            },
            namespace: "-".to_string(),
            labels,
        },
    }
}

impl Lowered {
    /// The evaluation of one flow from a classifier built over [`Lowered::set`]: the
    /// same shape and content as [`crate::eval::evaluate`] gives for it.
    pub fn evaluation(
        &self,
        classifier: &dyn Classify,
        flow: &Flow,
    ) -> Result<Evaluation, MixedFamilies> {
        let key = flow.key().ok_or(MixedFamilies {
            src: flow.src,
            dst: flow.dst,
        })?;
        let mut out = [FlowVerdicts::default()];
        classifier.classify(&[key], &mut out);
        Ok(self.evaluation_of(classifier, flow, &out[0]))
    }

    /// [`Lowered::evaluation`] for verdicts already classified.
    pub fn evaluation_of(
        &self,
        classifier: &dyn Classify,
        flow: &Flow,
        verdicts: &FlowVerdicts,
    ) -> Evaluation {
        self.names.evaluation_of(classifier, flow, verdicts)
    }
}

impl Names {
    /// The evaluation of one flow from verdicts a classifier of this generation gave:
    /// the same shape and content as [`crate::eval::evaluate`] gives for it.
    pub fn evaluation_of(
        &self,
        classifier: &dyn Classify,
        flow: &Flow,
        verdicts: &FlowVerdicts,
    ) -> Evaluation {
        let mut reporters = Vec::new();
        for (reporter, side) in [
            (Reporter::Src, verdicts.egress),
            (Reporter::Dst, verdicts.ingress),
        ] {
            let Some((id, v)) = side else { continue };
            let Some(ep) = self.endpoint(id) else {
                continue;
            };
            reporters.push(ReporterOutcome {
                reporter,
                endpoint: ep.key.clone(),
                endpoint_kind: ep.kind,
                endpoint_name: ep.display.clone(),
                enforced: self.outcome(v.enforced.verdict, classifier.trace(v.enforced.trace)),
                pending: self.outcome(v.pending.verdict, classifier.trace(v.pending.trace)),
            });
        }
        Evaluation {
            flow: *flow,
            reporters,
        }
    }
}

fn id32(what: &'static str, n: usize) -> Result<u32, LowerError> {
    // u32::MAX is PolicyId::NO_PROFILE_MATCH; the LPM tables that name peers hold
    // values below 2^31. Both are far beyond any real store.
    u32::try_from(n)
        .ok()
        .filter(|&i| i < 1 << 31)
        .ok_or(LowerError::TooMany { what, count: n })
}

fn direction_name(d: PolicyType) -> &'static str {
    match d {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}

/// Builds Programs, interning policies, profiles and tiers.
struct Builder<'c, 'm> {
    cluster: &'c Cluster,
    resolver: Resolver<'c>,
    names: &'m mut Names,
    m: &'m mut Memo,
    /// Per policy of the cluster, the number of its applies-to selector among the
    /// distinct ones (policies often share one), and how many there are; numbered on
    /// first use (a change whose programs all come from skeletons needs none).
    applies: Option<(Vec<u32>, usize)>,
}

impl<'c, 'm> Builder<'c, 'm> {
    /// A builder over `cluster`, taking the memo's interned lists (given back by
    /// [`Builder::finish`]).
    fn new(cluster: &'c Cluster, names: &'m mut Names, m: &'m mut Memo) -> Self {
        let interner = std::mem::take(&mut m.interner);
        Builder {
            cluster,
            resolver: Resolver::new(cluster, interner),
            names,
            m,
            applies: None,
        }
    }

    /// See `applies`.
    fn applies(&mut self) -> &(Vec<u32>, usize) {
        let cluster = self.cluster;
        self.applies.get_or_insert_with(|| {
            let mut ids: HashMap<&Selector, u32> = HashMap::new();
            let applies = cluster
                .policies
                .iter()
                .map(|p| {
                    let next = ids.len() as u32;
                    *ids.entry(&p.applies_to).or_insert(next)
                })
                .collect();
            (applies, ids.len())
        })
    }

    /// Gives the interned lists back to the memo (after the resolver's caches, which
    /// hold lists too, are gone).
    fn finish(self) {
        let Builder { resolver, m, .. } = self;
        m.keep(resolver.into_interner());
    }
}

/// One policy-direction's lowered rules, shared by the memo's two maps.
type RuleList = Arc<Vec<dataplane::program::Rule>>;

/// A rule list as a map key, compared and hashed with its address lists by address
/// (they are interned, so equal lists are one allocation): hashing the lists
/// themselves, thousands of prefixes each, was a large part of the lowering time.
#[derive(Debug)]
struct ByLists(RuleList);

impl PartialEq for ByLists {
    fn eq(&self, o: &Self) -> bool {
        self.0.len() == o.0.len()
            && self.0.iter().zip(o.0.iter()).all(|(a, b)| {
                a.index == b.index && a.action == b.action && match_eq(&a.matches, &b.matches)
            })
    }
}

impl Eq for ByLists {}

impl std::hash::Hash for ByLists {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.len().hash(h);
        for r in self.0.iter() {
            r.index.hash(h);
            r.action.hash(h);
            match_hash(&r.matches, h);
        }
    }
}

/// What lowering learned, kept by [`Live`] so that a policy change re-lowers only
/// that policy and the programs it is in: interned ids, every policy's lowered
/// rules, and the programs by skeleton and by content. Policy ids stay stable
/// across changes (a new policy gets the next id, a deleted one leaves a hole), so
/// unchanged programs keep their ids and their trees.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    policy_ids: HashMap<ResourceKey, PolicyId>,
    profile_ids: HashMap<String, PolicyId>,
    tier_ids: HashMap<String, TierId>,
    /// Lowered rules per (policy or profile, direction), with the id of their content
    /// (equal rule lists share one id).
    rules: HashMap<(PolicyId, PolicyType), (RuleList, u32)>,
    rule_lists: HashMap<ByLists, u32>,
    /// Every address list the rules name, once per content (see `rules`).
    interner: Interner,
    /// Programs numbered so far.
    programs: u32,
    /// Programs assembled since the last [`Memo::take_programs`].
    new_programs: Vec<Program>,
    /// Programs by skeleton, and by content: what a program holds is its tiers and
    /// defaults, each policy's id, staged flag and rule list id, and its profiles'.
    skeletons: HashMap<Skeleton, ProgramId>,
    /// The skeleton of each program, per direction: a program's content (tier ids,
    /// defaults, policy ids, profiles) determines its skeleton, so this never goes
    /// out of date, and it outlives [`Memo::forget`] (a change that keeps every
    /// endpoint's policies reassembles a program from its old one's skeleton).
    skeleton_of: HashMap<(ProgramId, PolicyType), Skeleton>,
    by_content: HashMap<Content, ProgramId>,
    /// The policies and profiles whose rules were lowered since the last
    /// [`Memo::take_lowered`] (or forgotten and lowered again), each once.
    lowered: Vec<(PolicyId, ResourceKey)>,
}

impl Memo {
    /// The programs assembled since the last call (numbered from
    /// `programs() - len`).
    pub(crate) fn take_programs(&mut self) -> Vec<Program> {
        std::mem::take(&mut self.new_programs)
    }

    /// The policies and profiles (by id and key: a profile's key is of kind
    /// `Profile`) whose rules, in either direction, were lowered since the last call:
    /// from the store as it was then.
    pub(crate) fn take_lowered(&mut self) -> Vec<(PolicyId, ResourceKey)> {
        let mut out = std::mem::take(&mut self.lowered);
        out.sort_unstable_by_key(|(id, _)| *id);
        out.dedup_by_key(|(id, _)| *id);
        out
    }

    /// Whether the rules of the policy `key` in `direction` are lowered (kept in the
    /// memo).
    pub(crate) fn has_policy_rules(&self, key: &ResourceKey, direction: PolicyType) -> bool {
        self.policy_ids
            .get(key)
            .is_some_and(|id| self.rules.contains_key(&(*id, direction)))
    }

    /// Whether the rules of the profile `name` in both directions are lowered.
    pub(crate) fn has_profile_rules(&self, name: &str) -> bool {
        self.profile_ids.get(name).is_some_and(|id| {
            self.rules.contains_key(&(*id, PolicyType::Ingress))
                && self.rules.contains_key(&(*id, PolicyType::Egress))
        })
    }

    /// The id of a policy.
    pub(crate) fn policy(&self, key: &ResourceKey) -> Option<PolicyId> {
        self.policy_ids.get(key).copied()
    }

    /// The distinct non-empty address lists of the lowered rules of `ids` (both
    /// directions).
    pub(crate) fn lists_of(&self, ids: &[PolicyId]) -> Vec<Nets> {
        // The memo's lists are interned: one allocation per content, so the address
        // tells them apart without hashing their contents.
        let mut seen: foldhash::HashSet<*const IpNet> = foldhash::HashSet::default();
        let mut out = Vec::new();
        for id in ids {
            for d in [PolicyType::Ingress, PolicyType::Egress] {
                let Some((rules, _)) = self.rules.get(&(*id, d)) else {
                    continue;
                };
                for l in rules.iter().flat_map(rule_nets) {
                    if !l.is_empty() && seen.insert(Arc::as_ptr(l).cast::<IpNet>()) {
                        out.push(l.clone());
                    }
                }
            }
        }
        out
    }

    /// The policies and profiles whose lowered rules name one of `lists` (by
    /// allocation: the memo's lists are interned), ascending.
    pub(crate) fn naming(&self, lists: &[Nets]) -> Vec<PolicyId> {
        let want = allocations(lists);
        let mut out: Vec<PolicyId> = self
            .rules
            .iter()
            .filter(|(_, (rules, _))| names_one(rules, &want))
            .map(|((id, _), _)| *id)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Forgets the programs whose rules name one of `lists` (by allocation), so that
    /// the next assembly of the same content is numbered anew and gets trees of its
    /// own: for lists whose identity form changed (the classifier forgot the form the
    /// old programs' trees were built with). The programs stay bound where they are.
    pub(crate) fn renumber_programs_naming(&mut self, lists: &[Nets]) {
        let want = allocations(lists);
        let hit: foldhash::HashSet<u32> = self
            .rule_lists
            .iter()
            .filter(|(k, _)| names_one(&k.0, &want))
            .map(|(_, &i)| i)
            .collect();
        if hit.is_empty() {
            return;
        }
        let mut gone: foldhash::HashSet<ProgramId> = foldhash::HashSet::default();
        self.by_content.retain(|(tiers, profiles), p| {
            let names = tiers
                .iter()
                .flat_map(|t| &t.2)
                .any(|(_, _, l)| hit.contains(l))
                || profiles.iter().any(|(_, l)| hit.contains(l));
            if names {
                gone.insert(*p);
            }
            !names
        });
        self.skeletons.retain(|_, p| !gone.contains(p));
    }

    /// The key of the policy `id` (`None` for a profile's id or a hole).
    pub(crate) fn policy_key(&self, id: PolicyId) -> Option<&ResourceKey> {
        self.policy_ids
            .iter()
            .find_map(|(k, &p)| (p == id).then_some(k))
    }

    /// Bytes of what is kept (rules, the distinct address lists they share, the
    /// maps), roughly.
    pub(crate) fn bytes(&self) -> usize {
        let rules: usize = self
            .rule_lists
            .keys()
            .map(|l| l.0.len() * size_of::<dataplane::program::Rule>())
            .sum::<usize>()
            + self.interner.bytes();
        let size = |k: &Skeleton| {
            size_of::<Skeleton>()
                + k.tiers.iter().map(|t| 48 + 4 * t.2.len()).sum::<usize>()
                + 4 * k.profiles.len()
        };
        let skeletons: usize = self.skeletons.keys().map(size).sum();
        // `skeleton_of` keeps one per program and direction, of programs no longer
        // assembled too (until the classifier drops them), so it is counted apart;
        // `by_content` holds about what `skeletons` does.
        let skeleton_of: usize = self
            .skeleton_of
            .values()
            .map(|k| size(k) + size_of::<(ProgramId, PolicyType)>())
            .sum();
        rules
            + 2 * skeletons
            + skeleton_of
            + self.policy_ids.len() * (size_of::<ResourceKey>() + 40)
    }

    /// Takes the interned lists back from a resolver, without those nothing holds any
    /// more.
    fn keep(&mut self, mut interner: Interner) {
        interner.prune();
        self.interner = interner;
    }

    /// Forgets what the policies `ids` lowered to and the programs that hold them.
    /// Forgets programs the classifier dropped
    /// ([`dataplane::classifier::IdentityClassifier::with_programs_merged`]): a later
    /// program of the same content is numbered anew (and gets trees), never one of
    /// these.
    pub(crate) fn drop_programs(&mut self, ids: &[ProgramId]) {
        if ids.is_empty() {
            return;
        }
        let gone: foldhash::HashSet<ProgramId> = ids.iter().copied().collect();
        self.skeletons.retain(|_, p| !gone.contains(p));
        self.by_content.retain(|_, p| !gone.contains(p));
        self.skeleton_of.retain(|(p, _), _| !gone.contains(p));
    }

    fn forget(&mut self, ids: &[PolicyId]) {
        if ids.is_empty() {
            return;
        }
        for id in ids {
            self.rules.remove(&(*id, PolicyType::Ingress));
            self.rules.remove(&(*id, PolicyType::Egress));
        }
        self.skeletons
            .retain(|k, _| !k.tiers.iter().any(|t| t.2.iter().any(|p| ids.contains(p))));
    }
}

/// The address lists a lowered rule names (empty ones too).
fn rule_nets(r: &dataplane::program::Rule) -> impl Iterator<Item = &Nets> {
    let m = &r.matches;
    [
        m.src_nets.as_ref(),
        Some(&m.not_src_nets),
        m.dst_nets.as_ref(),
        Some(&m.not_dst_nets),
    ]
    .into_iter()
    .flatten()
}

/// The allocations of `lists` (the memo's lists are interned: one per content).
fn allocations(lists: &[Nets]) -> foldhash::HashSet<*const IpNet> {
    lists
        .iter()
        .map(|l| Arc::as_ptr(l).cast::<IpNet>())
        .collect()
}

/// Whether `rules` name a list whose allocation is in `want`.
fn names_one(rules: &[dataplane::program::Rule], want: &foldhash::HashSet<*const IpNet>) -> bool {
    rules
        .iter()
        .flat_map(rule_nets)
        .any(|l| want.contains(&Arc::as_ptr(l).cast::<IpNet>()))
}

/// The content of a program, with rule lists by id (hashing the lists themselves,
/// thousands of prefixes each, for every program was most of the lowering time).
type Content = (
    Vec<(TierId, TierDefault, Vec<(PolicyId, bool, u32)>)>,
    Vec<(PolicyId, u32)>,
);

impl<'c> Builder<'c, '_> {
    fn lower_rules(
        &mut self,
        id: PolicyId,
        key: &ResourceKey,
        direction: PolicyType,
        rules: &[cluster::PolicyRule],
    ) -> Result<u32, LowerError> {
        if let Some(r) = self.m.rules.get(&(id, direction)) {
            return Ok(r.1);
        }
        let mut out = Vec::new();
        for (i, pr) in rules.iter().enumerate() {
            let index = id32("rules", i)?;
            let lowered =
                self.resolver
                    .lower_rule(pr, index)
                    .map_err(|e| LowerError::RuleTooLarge {
                        policy: key.clone(),
                        direction: direction_name(direction),
                        rule: i,
                        count: e.count,
                        limit: self.resolver.max_rules,
                    })?;
            out.extend(lowered);
        }
        let out = Arc::new(out);
        let next = self.m.rule_lists.len() as u32;
        let list = *self
            .m
            .rule_lists
            .entry(ByLists(out.clone()))
            .or_insert(next);
        self.m.rules.insert((id, direction), (out, list));
        self.m.lowered.push((id, key.clone()));
        Ok(list)
    }

    /// The lowered rules of (policy, direction), after [`Builder::lower_rules`].
    fn rules_of(&self, id: PolicyId, direction: PolicyType) -> Vec<dataplane::program::Rule> {
        self.m
            .rules
            .get(&(id, direction))
            .map(|r| r.0.to_vec())
            .unwrap_or_default()
    }

    fn tier_id(&mut self, name: &str) -> Result<TierId, LowerError> {
        if let Some(id) = self.m.tier_ids.get(name) {
            return Ok(*id);
        }
        let id = TierId(id32("tiers", self.names.tiers.len())?);
        self.names.tiers.push(name.to_string());
        self.m.tier_ids.insert(name.to_string(), id);
        Ok(id)
    }

    fn profile_id(&mut self, name: &str) -> Result<PolicyId, LowerError> {
        if let Some(id) = self.m.profile_ids.get(name) {
            return Ok(*id);
        }
        let id = PolicyId(id32("policies and profiles", self.names.policies.len())?);
        Arc::make_mut(&mut self.names.policies).push(PolicyName {
            tier: PROFILE_TIER.to_string(),
            key: ResourceKey {
                kind: Kind::Profile,
                namespace: None,
                name: name.to_string(),
            },
        });
        self.m.profile_ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// The program of an endpoint-direction. Two endpoint-directions with the same
    /// policies (in the same tiers, same order) and profiles get the same program, so
    /// the program is built only for a skeleton not seen before.
    fn program(
        &mut self,
        ep: &'c Endpoint,
        direction: PolicyType,
    ) -> Result<ProgramId, LowerError> {
        let cluster = self.cluster;
        let mut skeleton = Skeleton {
            direction,
            tiers: Vec::new(),
            profiles: Vec::new(),
        };
        let mut by_id: HashMap<PolicyId, &'c cluster::Policy> = HashMap::new();
        // `Cluster::tiers_for`, with each distinct applies-to selector matched once.
        let labels = cluster.endpoint_labels(ep);
        let (applies, selectors) = self.applies();
        let mut known = vec![0u8; *selectors];
        let tiers = cluster.tiers_where(|i, p| {
            Cluster::policy_applies_by(p, direction, |s| match known[applies[i] as usize] {
                1 => false,
                2 => true,
                _ => {
                    let r = s.matches(&labels);
                    known[applies[i] as usize] = 1 + u8::from(r);
                    r
                }
            })
        });
        for applied in tiers {
            let mut policies = Vec::with_capacity(applied.policies.len());
            for p in &applied.policies {
                let id = self.policy_id(&p.key)?;
                by_id.insert(id, p);
                policies.push(id);
            }
            let default = match applied.tier.default_action {
                TierDefaultAction::Deny => TierDefault::Deny,
                TierDefaultAction::Pass => TierDefault::Pass,
            };
            skeleton
                .tiers
                .push((self.tier_id(&applied.tier.name)?, default, policies));
        }
        for (name, _) in cluster.profiles_for(ep) {
            skeleton.profiles.push(self.profile_id(name)?);
        }
        if let Some(id) = self.m.skeletons.get(&skeleton) {
            return Ok(*id);
        }
        self.assemble(skeleton, &by_id)
    }

    /// The program of a skeleton not in the memo's skeletons (`by_id` has each of its
    /// policies).
    fn assemble(
        &mut self,
        skeleton: Skeleton,
        by_id: &HashMap<PolicyId, &'c cluster::Policy>,
    ) -> Result<ProgramId, LowerError> {
        let cluster = self.cluster;
        let direction = skeleton.direction;
        // The content first (rule lists by id); the program is only assembled when no
        // earlier program has that content.
        let mut content: Content = (Vec::with_capacity(skeleton.tiers.len()), Vec::new());
        for (id, default_action, ids) in &skeleton.tiers {
            let mut policies = Vec::with_capacity(ids.len());
            for pid in ids {
                let p = by_id[pid];
                let list = self.lower_rules(*pid, &p.key, direction, p.rules(direction))?;
                policies.push((*pid, p.is_staged(), list));
            }
            content.0.push((*id, *default_action, policies));
        }
        for pid in &skeleton.profiles {
            let key = self.names.policies[pid.0 as usize].key.clone();
            let list = match cluster.profile(&key.name) {
                Some(info) => self.lower_rules(*pid, &key, direction, info.rules(direction))?,
                None => {
                    let next = self.m.rule_lists.len() as u32;
                    *self
                        .m
                        .rule_lists
                        .entry(ByLists(Arc::new(Vec::new())))
                        .or_insert(next)
                }
            };
            content.1.push((*pid, list));
        }
        let id = match self.m.by_content.get(&content) {
            Some(id) => *id,
            None => {
                let tiers = content
                    .0
                    .iter()
                    .map(|(id, default_action, ps)| Tier {
                        id: *id,
                        default_action: *default_action,
                        policies: ps
                            .iter()
                            .map(|&(pid, staged, _)| Policy {
                                id: pid,
                                staged,
                                rules: self.rules_of(pid, direction),
                            })
                            .collect(),
                    })
                    .collect();
                let profiles = content
                    .1
                    .iter()
                    .map(|&(pid, _)| Policy {
                        id: pid,
                        staged: false,
                        rules: self.rules_of(pid, direction),
                    })
                    .collect();
                let id = ProgramId(id32("programs", self.m.programs as usize)?);
                self.m.programs += 1;
                self.m.new_programs.push(Program { tiers, profiles });
                self.m.by_content.insert(content, id);
                id
            }
        };
        self.m
            .skeleton_of
            .entry((id, direction))
            .or_insert_with(|| skeleton.clone());
        self.m.skeletons.insert(skeleton, id);
        Ok(id)
    }

    /// The program of an endpoint-direction whose skeleton is that of program `was`
    /// (its policies and their order unchanged since `was` was assembled for it),
    /// without matching applies-to selectors: [`Builder::program`] with the skeleton
    /// known. `None` when the memo has no skeleton for `was`, or the store lacks one of
    /// its policies.
    fn program_like(
        &mut self,
        was: ProgramId,
        direction: PolicyType,
    ) -> Option<Result<ProgramId, LowerError>> {
        let skeleton = self.m.skeleton_of.get(&(was, direction))?.clone();
        if let Some(id) = self.m.skeletons.get(&skeleton) {
            return Some(Ok(*id));
        }
        let cluster = self.cluster;
        let names = &self.names.policies;
        let find = |pid: PolicyId| {
            let key = &names.get(pid.0 as usize)?.key;
            let i = cluster.policies.binary_search_by(|p| p.key.cmp(key)).ok()?;
            cluster.policies.get(i)
        };
        // `find` borrows the names, which `assemble` may extend (profiles): look the
        // policies up first.
        let mut by_id: HashMap<PolicyId, &'c cluster::Policy> = HashMap::new();
        for &pid in skeleton.tiers.iter().flat_map(|t| t.2.iter()) {
            by_id.insert(pid, find(pid)?);
        }
        Some(self.assemble(skeleton, &by_id))
    }

    /// The id of a policy: kept across generations, the next free one for a new key.
    fn policy_id(&mut self, key: &ResourceKey) -> Result<PolicyId, LowerError> {
        if let Some(id) = self.m.policy_ids.get(key) {
            return Ok(*id);
        }
        let id = PolicyId(id32("policies and profiles", self.names.policies.len())?);
        let p = self
            .cluster
            .policies
            .binary_search_by(|p| p.key.cmp(key))
            .ok()
            .map(|i| &self.cluster.policies[i]);
        Arc::make_mut(&mut self.names.policies).push(PolicyName {
            tier: p.map(|p| p.tier.clone()).unwrap_or_default(),
            key: key.clone(),
        });
        self.m.policy_ids.insert(key.clone(), id);
        Ok(id)
    }
}

/// What determines a program: direction, tiers with their policies, profiles.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Skeleton {
    direction: PolicyType,
    tiers: Vec<(TierId, TierDefault, Vec<PolicyId>)>,
    profiles: Vec<PolicyId>,
}

/// Lowers a store: see the module documentation.
pub fn lower(cluster: &Cluster) -> Result<Lowered, LowerError> {
    lower_keeping(cluster).map(|(l, _)| l)
}

/// [`lower`], and what it learned for the next change.
pub(crate) fn lower_keeping(cluster: &Cluster) -> Result<(Lowered, Memo), LowerError> {
    let mut names = Names::default();
    let mut memo = Memo::default();
    let mut b = Builder::new(cluster, &mut names, &mut memo);
    for p in &cluster.policies {
        b.policy_id(&p.key)?;
    }

    // Endpoint ids follow the store's endpoint order, which is `eval`'s lookup order.
    for (i, e) in cluster.endpoints.iter().enumerate() {
        id32("endpoints", i)?;
        b.names.endpoints.push(EndpointName {
            key: e.key.clone(),
            kind: e.kind,
            display: e.display_name(),
            meta: endpoint_meta(e),
        });
    }

    // Each distinct endpoint prefix belongs to the first endpoint containing all of it
    // (see the module doc).
    let mut prefixes: BTreeMap<IpNet, usize> = BTreeMap::new();
    for e in &cluster.endpoints {
        for n in &e.nets {
            prefixes.entry(n.trunc()).or_insert(usize::MAX);
        }
    }
    let first: HashMap<IpNet, usize> = {
        let mut m = HashMap::new();
        for (i, e) in cluster.endpoints.iter().enumerate() {
            for n in &e.nets {
                m.entry(n.trunc()).or_insert(i);
            }
        }
        m
    };
    for (q, owner) in &mut prefixes {
        // The endpoint prefixes containing q are q and its supernets that are endpoint
        // prefixes: look each length up.
        *owner = (0..=q.prefix_len())
            .filter_map(|len| q.supernet_of_len(len))
            .filter_map(|a| first.get(&a))
            .copied()
            .min()
            .unwrap_or(usize::MAX);
    }

    let mut endpoints = Vec::with_capacity(prefixes.len());
    let mut owners: Vec<(IpNet, u32)> = Vec::with_capacity(prefixes.len());
    // What applies to an endpoint depends only on its labels and profiles (which also
    // give its inherited labels): replicas share the work.
    type Identity<'a> = (&'a BTreeMap<String, String>, &'a [String]);
    let mut programs_of: HashMap<Identity<'_>, (ProgramId, ProgramId)> = HashMap::new();
    for (net, owner) in &prefixes {
        let Some(ep) = cluster.endpoints.get(*owner) else {
            continue;
        };
        let key = (&ep.labels, ep.profiles.as_slice());
        let (ingress, egress) = match programs_of.get(&key) {
            Some(p) => *p,
            None => {
                let p = (
                    b.program(ep, PolicyType::Ingress)?,
                    b.program(ep, PolicyType::Egress)?,
                );
                programs_of.insert(key, p);
                p
            }
        };
        let endpoint = EndpointId(id32("endpoints", *owner)?);
        endpoints.push(EndpointBinding {
            net: *net,
            endpoint,
            ingress: Some(ingress),
            egress: Some(egress),
        });
        owners.push((*net, endpoint.0));
    }
    b.names.owners = lpm_of(&owners);

    let mut set_prefixes: BTreeMap<IpNet, u32> = BTreeMap::new();
    for set in &cluster.network_sets {
        let i = b.names.network_set_meta.len();
        b.names.network_set_meta.push(EndpointMeta {
            kind: EndpointType::NetworkSet,
            name: set.key.name.clone(),
            namespace: set.key.namespace.clone().unwrap_or_else(|| "-".to_string()),
            labels: set.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        });
        let i = id32("network sets", i)?;
        for n in &set.nets {
            set_prefixes.entry(n.trunc()).or_insert(i);
        }
    }
    let set_prefixes: Vec<(IpNet, u32)> = set_prefixes.into_iter().collect();
    b.names.network_sets = lpm_of(&set_prefixes);
    b.finish();

    let set = PolicySet {
        programs: memo.take_programs(),
        endpoints,
    };
    Ok((Lowered { set, names }, memo))
}

/// After changes to the policies `changed` (added, modified or deleted) and nothing
/// else, the programs of `endpoints` (the endpoints the old or the new version of a
/// changed policy applies to), re-lowered over `next` with `memo` from the last
/// lowering: only the changed policies' rules are lowered again, and a program is
/// assembled only for content not seen before (the new ones are in
/// [`Memo::take_programs`]). Per endpoint, its ingress and egress program. With
/// `peers`, the changed policies' selectors and named ports are resolved from it
/// instead of by matching every endpoint ([`PeerIndex`]; the lists are the same).
/// An endpoint given with its programs before the change, when the change left its
/// policies as they were (an endpoint added: no applies-to changed), gets its
/// programs from their skeletons ([`Memo`] keeps them) instead of matching every
/// policy's applies-to selector.
pub(crate) fn relower_policies(
    next: &Cluster,
    names: &mut Names,
    memo: &mut Memo,
    changed: &[ResourceKey],
    endpoints: &[(&Endpoint, Option<(ProgramId, ProgramId)>)],
    peers: Option<PeerIndex<'_>>,
    applies: Option<&[u32]>,
) -> Result<Vec<(ProgramId, ProgramId)>, LowerError> {
    let mut ids = Vec::new();
    for k in changed {
        if let Some(id) = memo.policy_ids.get(k) {
            ids.push(*id);
        }
        if next.policies.binary_search_by(|p| p.key.cmp(k)).is_err() {
            // Deleted: its id is a hole from now on.
            memo.policy_ids.remove(k);
        }
    }
    memo.forget(&ids);
    let mut b = Builder::new(next, names, memo);
    if let Some(p) = peers {
        b.resolver.set_peers(p);
    }
    // The caller's numbering of the applies-to selectors, when it keeps one for this
    // cluster's policies (numbered as `Builder::applies` does: on first use, in
    // policy order), so that the policies' selectors are not hashed again.
    if let Some(a) = applies {
        let count = a.iter().max().map_or(0, |&m| m as usize + 1);
        let given = (a.to_vec(), count);
        debug_assert_eq!(
            given,
            *Builder::new(next, &mut Names::default(), &mut Memo::default()).applies(),
            "the caller's applies-to numbering is the builder's"
        );
        b.applies = Some(given);
    }
    let out = relower_programs(&mut b, changed, endpoints);
    b.finish();
    out
}

fn relower_programs<'c>(
    b: &mut Builder<'c, '_>,
    changed: &[ResourceKey],
    endpoints: &[(&'c Endpoint, Option<(ProgramId, ProgramId)>)],
) -> Result<Vec<(ProgramId, ProgramId)>, LowerError> {
    let next = b.cluster;
    for k in changed {
        if next.policies.binary_search_by(|p| p.key.cmp(k)).is_ok() {
            b.policy_id(k)?;
        }
    }
    let mut out = Vec::with_capacity(endpoints.len());
    type Identity<'a> = (&'a BTreeMap<String, String>, &'a [String]);
    let mut programs_of: HashMap<Identity<'_>, (ProgramId, ProgramId)> = HashMap::new();
    let mut like: HashMap<(ProgramId, ProgramId), (ProgramId, ProgramId)> = HashMap::new();
    for &(ep, was) in endpoints {
        let key = (&ep.labels, ep.profiles.as_slice());
        if let Some(p) = programs_of.get(&key) {
            out.push(*p);
            continue;
        }
        // An endpoint whose policies are those of its programs `was`: their skeletons,
        // without matching applies-to selectors (once per pair).
        let hinted = match was {
            Some(w) => match like.get(&w) {
                Some(p) => Some(*p),
                None => match (
                    b.program_like(w.0, PolicyType::Ingress),
                    b.program_like(w.1, PolicyType::Egress),
                ) {
                    (Some(i), Some(e)) => {
                        let p = (i?, e?);
                        like.insert(w, p);
                        Some(p)
                    }
                    _ => None,
                },
            },
            None => None,
        };
        let p = match hinted {
            Some(p) => {
                // The slow twin: the endpoint's own skeletons give these programs.
                #[cfg(test)]
                assert_eq!(
                    p,
                    (
                        b.program(ep, PolicyType::Ingress)?,
                        b.program(ep, PolicyType::Egress)?
                    ),
                    "a program reassembled from its old skeleton differs from the endpoint's"
                );
                p
            }
            None => (
                b.program(ep, PolicyType::Ingress)?,
                b.program(ep, PolicyType::Egress)?,
            ),
        };
        programs_of.insert(key, p);
        out.push(p);
    }
    Ok(out)
}

/// `IpNet::supernet` repeated down to a given length.
trait SupernetOfLen {
    fn supernet_of_len(&self, len: u8) -> Option<IpNet>;
}

impl SupernetOfLen for IpNet {
    fn supernet_of_len(&self, len: u8) -> Option<IpNet> {
        if len > self.prefix_len() {
            return None;
        }
        match self {
            IpNet::V4(n) => ipnet::Ipv4Net::new(n.addr(), len)
                .ok()
                .map(|n| IpNet::V4(n.trunc())),
            IpNet::V6(n) => ipnet::Ipv6Net::new(n.addr(), len)
                .ok()
                .map(|n| IpNet::V6(n.trunc())),
        }
    }
}
